//! Keeps secrets in process command lines out of spans: what of an argv is stored, served and
//! exported (`--argv-capture`), and which argument values are replaced by [`REDACTED`].
//!
//! Rules in `redacted` mode, where a *name* is secret when one of the patterns
//! (case-insensitive, anywhere in the name) matches it:
//! - `--name=value`, `-name=value` → `--name=<redacted>`;
//! - `--name value` (two arguments) → the next argument is redacted; when that one is itself a
//!   secret flag without a value, the one after it is too;
//! - `NAME=value` (environment style, also as a flag's value: `--env DB_PASSWORD=x`,
//!   `--env=DB_PASSWORD=x`) → `NAME=<redacted>`;
//! - a URL's userinfo, anywhere in an argument, whatever the pattern:
//!   `scheme://user:pass@host` → `scheme://user:<redacted>@host`, and a user alone (often a
//!   token: `https://<token>@github.com`) → `scheme://<redacted>@host`.
//!
//! The number and positions of arguments are kept, so a reader still sees the command's shape.
//! These are heuristics over text: a secret given as a short flag's value (`-p x`, unless the
//! pattern names `p`), inside a shell script (`sh -c "..."`) or in JSON may stay.
//!
//! The patterns are regular expressions (the `regex` crate: linear-time matching, already in
//! the dependency tree through kube) rather than substrings, so an operator can name short
//! flags exactly (`^p$` for `-p` without `--port`). They are compiled once, into one; matching
//! an argument does not allocate, and an argv where nothing matches is returned borrowed.

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};

use crate::oci::ArgvError;

/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";

/// The names whose values are secrets unless `--redact-pattern` says otherwise (any one
/// matching is enough).
pub const DEFAULT_PATTERNS: [&str; 6] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api[-_]?key",
    "credential",
];

/// Span attribute: how many arguments `--argv-capture none` left out of
/// `process.command_args` (only argv[0] is kept).
pub const ARGS_DROPPED: &str = "nodetrace.process.command_args.dropped";

/// How much of a process's argv is kept (`--argv-capture`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ArgvCapture {
    /// Every argument, as is.
    Full,
    /// Every argument, with the values of secret-looking ones replaced by `<redacted>`.
    #[default]
    Redacted,
    /// Only the program (argv[0]).
    None,
}

/// Why a redaction pattern cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction pattern {pattern:?} is not a valid regular expression")]
    Pattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

/// Applies `--argv-capture` and the secret-name pattern to command lines.
#[derive(Clone, Debug)]
pub struct Redactor {
    capture: ArgvCapture,
    secret_name: Regex,
}

impl Default for Redactor {
    /// `redacted` with [`DEFAULT_PATTERNS`].
    fn default() -> Self {
        Self {
            capture: ArgvCapture::Redacted,
            secret_name: compile(&alternation(&DEFAULT_PATTERNS))
                .expect("the default redaction pattern compiles"),
        }
    }
}

impl Redactor {
    /// A redactor for `capture`, with secret names matching any of `patterns`.
    pub fn new<P: AsRef<str>>(capture: ArgvCapture, patterns: &[P]) -> Result<Self, RedactError> {
        for pattern in patterns {
            check_pattern(pattern.as_ref())?;
        }
        let combined = alternation(patterns);
        let secret_name = compile(&combined).map_err(|source| RedactError::Pattern {
            pattern: combined.clone(),
            source,
        })?;
        Ok(Self {
            capture,
            secret_name,
        })
    }

    pub fn capture(&self) -> ArgvCapture {
        self.capture
    }

    /// The argv to store: as is (`full`, or nothing matched), with secret values replaced
    /// (`redacted`), or only argv[0] (`none`).
    pub fn command_args<'a>(&self, argv: &'a [String]) -> Cow<'a, [String]> {
        match self.capture {
            ArgvCapture::Full => Cow::Borrowed(argv),
            ArgvCapture::None => Cow::Owned(argv.iter().take(1).cloned().collect()),
            ArgvCapture::Redacted => self.redact_argv(argv),
        }
    }

    /// The message of a command line that did not parse, without the argument values it
    /// quotes when they are secrets (`redacted`) or at all (`none`).
    pub fn argv_error(&self, err: &ArgvError) -> String {
        let hidden = |value: &str| match self.capture {
            ArgvCapture::Full => value.to_owned(),
            ArgvCapture::Redacted => self.redact_text(value).unwrap_or_else(|| value.to_owned()),
            ArgvCapture::None => REDACTED.to_owned(),
        };
        let redacted = match err {
            ArgvError::BadFlagSyntax { arg } => ArgvError::BadFlagSyntax {
                arg: match self.capture {
                    ArgvCapture::Redacted => self
                        .redact_arg(arg, &mut false)
                        .unwrap_or_else(|| arg.clone()),
                    _ => hidden(arg),
                },
            },
            ArgvError::InvalidBool { flag, value } => ArgvError::InvalidBool {
                flag: flag.clone(),
                value: self.flag_value(flag, value, hidden),
            },
            ArgvError::InvalidNumber { flag, value } => ArgvError::InvalidNumber {
                flag: flag.clone(),
                value: self.flag_value(flag, value, hidden),
            },
            ArgvError::BadSignal { value } => ArgvError::BadSignal {
                value: hidden(value),
            },
            other => other.clone(),
        };
        redacted.to_string()
    }

    fn flag_value(&self, flag: &str, value: &str, hidden: impl Fn(&str) -> String) -> String {
        let name = flag.trim_start_matches('-');
        if self.capture == ArgvCapture::Redacted && self.is_secret_name(name) {
            REDACTED.to_owned()
        } else {
            hidden(value)
        }
    }

    fn redact_argv<'a>(&self, argv: &'a [String]) -> Cow<'a, [String]> {
        let mut out: Option<Vec<String>> = None;
        let mut value_follows = false;
        for (i, arg) in argv.iter().enumerate() {
            // argv[0] is the program, kept in every mode.
            let changed = if i == 0 {
                None
            } else {
                self.redact_arg(arg, &mut value_follows)
            };
            match (changed, &mut out) {
                (Some(new), Some(out)) => out.push(new),
                (Some(new), None) => {
                    let mut copy = Vec::with_capacity(argv.len());
                    copy.extend_from_slice(&argv[..i]);
                    copy.push(new);
                    out = Some(copy);
                }
                (None, Some(out)) => out.push(arg.clone()),
                (None, None) => {}
            }
        }
        out.map_or(Cow::Borrowed(argv), Cow::Owned)
    }

    /// One argument, redacted if needed (`None`: kept as is). `value_follows` carries "the
    /// previous argument was a secret flag without a value" from one argument to the next.
    fn redact_arg(&self, arg: &str, value_follows: &mut bool) -> Option<String> {
        if std::mem::take(value_follows) {
            *value_follows = self.is_bare_secret_flag(arg);
            return (!arg.is_empty()).then(|| REDACTED.to_owned());
        }
        let body = arg.trim_start_matches('-');
        if body.len() == arg.len() || body.is_empty() {
            return self.redact_text(arg);
        }
        let dashes = arg.len() - body.len();
        match body.split_once('=') {
            Some((name, value)) => {
                let flag = &arg[..dashes + name.len()];
                if self.is_secret_name(name) {
                    (!value.is_empty()).then(|| format!("{flag}={REDACTED}"))
                } else {
                    self.redact_text(value)
                        .map(|value| format!("{flag}={value}"))
                }
            }
            None => {
                *value_follows = self.is_secret_name(body);
                redact_userinfo(arg)
            }
        }
    }

    /// A flag without `=` whose name is secret (its value is the next argument).
    fn is_bare_secret_flag(&self, arg: &str) -> bool {
        let body = arg.trim_start_matches('-');
        body.len() < arg.len() && !body.contains('=') && self.is_secret_name(body)
    }

    /// A value or positional argument: `NAME=value` with a secret name, then URL userinfo.
    fn redact_text(&self, text: &str) -> Option<String> {
        if let Some((name, value)) = text.split_once('=')
            && !value.is_empty()
            && self.is_secret_name(name)
        {
            let kept = format!("{name}={REDACTED}");
            return Some(redact_userinfo(&kept).unwrap_or(kept));
        }
        redact_userinfo(text)
    }

    fn is_secret_name(&self, name: &str) -> bool {
        !name.is_empty() && self.secret_name.is_match(name)
    }
}

/// Checks one `--redact-pattern` value.
pub fn check_pattern(pattern: &str) -> Result<(), RedactError> {
    compile(pattern)
        .map(drop)
        .map_err(|source| RedactError::Pattern {
            pattern: pattern.to_owned(),
            source,
        })
}

/// One regular expression matching where any of `patterns` does.
fn alternation<P: AsRef<str>>(patterns: &[P]) -> String {
    patterns
        .iter()
        .map(|p| format!("(?:{})", p.as_ref()))
        .collect::<Vec<_>>()
        .join("|")
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).case_insensitive(true).build()
}

/// `text` with the userinfo of every `scheme://userinfo@host` in it redacted: the password
/// when there is one, else the user (`None`: nothing to redact). The authority ends at the
/// first `/` or white space; `?` and `#` do not end it, since they are common in unencoded
/// passwords.
fn redact_userinfo(text: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let start = search + found + "://".len();
        let rest = &text[start..];
        let len = rest
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        // The next URL may start inside this authority (`a://u:p@x,b://v:q@y`).
        search = start;
        let Some(at) = rest[..len].rfind('@') else {
            continue;
        };
        let userinfo = &rest[..at];
        let secret_start = start + userinfo.find(':').map_or(0, |colon| colon + 1);
        let secret_end = start + at;
        if secret_start == secret_end || secret_start < copied {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..secret_start]);
        out.push_str(REDACTED);
        copied = secret_end;
    }
    out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    fn redacted(args: &[&str]) -> Vec<String> {
        Redactor::default().command_args(&argv(args)).into_owned()
    }

    fn with_patterns(capture: ArgvCapture, patterns: &[&str]) -> Redactor {
        Redactor::new(capture, patterns).expect("valid patterns")
    }

    #[test]
    fn the_default_redactor_redacts_with_the_default_pattern() {
        let default = Redactor::default();
        assert_eq!(default.capture(), ArgvCapture::Redacted);
        let explicit = with_patterns(ArgvCapture::Redacted, &DEFAULT_PATTERNS);
        let args = argv(&["app", "--password=x", "--api-key", "y", "--port=1"]);
        assert_eq!(default.command_args(&args), explicit.command_args(&args));
    }

    #[test]
    fn flag_equals_value_has_its_value_redacted_when_the_name_matches() {
        assert_eq!(
            redacted(&[
                "app",
                "--password=hunter2",
                "-db-secret=s3",
                "---Token=t",
                "--level=3"
            ]),
            [
                "app",
                "--password=<redacted>",
                "-db-secret=<redacted>",
                "---Token=<redacted>",
                "--level=3"
            ]
        );
    }

    #[test]
    fn a_secret_flag_followed_by_its_value_has_the_next_argument_redacted() {
        assert_eq!(
            redacted(&[
                "app", "--token", "xyz", "--user", "bob", "-passwd", "pw", "last"
            ]),
            [
                "app", "--token", REDACTED, "--user", "bob", "-passwd", REDACTED, "last"
            ]
        );
    }

    #[test]
    fn a_secret_flag_taken_as_a_value_still_redacts_the_argument_after_it() {
        // `--no-token` may be a switch; then `--password` is a flag and `pw` its value.
        assert_eq!(
            redacted(&["app", "--no-token", "--password", "pw", "file"]),
            ["app", "--no-token", REDACTED, REDACTED, "file"]
        );
    }

    #[test]
    fn a_secret_flag_at_the_end_or_with_an_empty_value_changes_nothing() {
        let args = argv(&["app", "--password=", "--token"]);
        assert!(matches!(
            Redactor::default().command_args(&args),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn env_like_arguments_have_their_value_redacted_when_the_key_matches() {
        assert_eq!(
            redacted(&[
                "env",
                "DB_PASSWORD=hunter2",
                "AWS_SECRET_ACCESS_KEY=abc",
                "HOME=/root",
                "--env",
                "GITHUB_TOKEN=ghp",
                "--env=API_KEY=k",
                "-e",
                "LANG=C"
            ]),
            [
                "env",
                "DB_PASSWORD=<redacted>",
                "AWS_SECRET_ACCESS_KEY=<redacted>",
                "HOME=/root",
                "--env",
                "GITHUB_TOKEN=<redacted>",
                "--env=API_KEY=<redacted>",
                "-e",
                "LANG=C"
            ]
        );
    }

    #[test]
    fn url_userinfo_has_its_password_redacted_whatever_the_flag() {
        assert_eq!(
            redacted(&[
                "app",
                "postgres://u:p@db/x",
                "--db=mysql://root:pa#ss@10.0.0.1:3306/shop",
                "DATABASE_URL=redis://:hunter2@cache:6379/0",
                "https://ghp_abc@github.com/org/repo.git",
                "a://u:p@one,b://v:q@two",
                "https://example.com/users/@me",
                "https://user@/path"
            ]),
            [
                "app",
                "postgres://u:<redacted>@db/x",
                "--db=mysql://root:<redacted>@10.0.0.1:3306/shop",
                "DATABASE_URL=redis://:<redacted>@cache:6379/0",
                "https://<redacted>@github.com/org/repo.git",
                "a://u:<redacted>@one,b://v:<redacted>@two",
                "https://example.com/users/@me",
                "https://<redacted>@/path"
            ]
        );
    }

    #[test]
    fn names_match_case_insensitively_anywhere_in_the_name() {
        assert_eq!(
            redacted(&[
                "app",
                "--MySecretValue=a",
                "--x-api-key=b",
                "--ApiKey=c",
                "Credentials_File=d",
                "--monkey=e"
            ]),
            [
                "app",
                "--MySecretValue=<redacted>",
                "--x-api-key=<redacted>",
                "--ApiKey=<redacted>",
                "Credentials_File=<redacted>",
                "--monkey=e"
            ]
        );
    }

    #[test]
    fn an_argv_where_nothing_matches_is_returned_without_a_copy() {
        let args = argv(&[
            "nginx",
            "-g",
            "daemon off;",
            "--port=80",
            "https://example.com/",
        ]);
        assert!(matches!(
            Redactor::default().command_args(&args),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_realistic_runc_exec_keeps_its_shape_and_loses_its_secret() {
        let args = argv(&[
            "runc",
            "--root",
            "/run/containerd/runc/k8s.io",
            "exec",
            "--env",
            "DB_PASSWORD=hunter2",
            "--env",
            "PATH=/usr/bin",
            "--pid-file",
            "/run/x/exec.pid",
            "c0ffee",
            "psql",
        ]);
        let stored = Redactor::default().command_args(&args).into_owned();
        assert_eq!(stored.len(), args.len());
        assert_eq!(stored[5], "DB_PASSWORD=<redacted>");
        let changed: Vec<usize> = (0..args.len()).filter(|&i| stored[i] != args[i]).collect();
        assert_eq!(changed, [5], "only the secret changed");
    }

    #[test]
    fn a_realistic_container_entrypoint_leaks_no_secret() {
        let stored = redacted(&[
            "/app/server",
            "--api-key=abc",
            "--token",
            "xyz",
            "postgres://u:p@db/x",
            "--listen",
            ":8080",
        ]);
        assert_eq!(
            stored,
            [
                "/app/server",
                "--api-key=<redacted>",
                "--token",
                REDACTED,
                "postgres://u:<redacted>@db/x",
                "--listen",
                ":8080"
            ]
        );
        let joined = stored.join(" ");
        for secret in ["abc", "xyz", ":p@"] {
            assert!(!joined.contains(secret), "{secret} leaked: {joined}");
        }
    }

    #[test]
    fn full_keeps_every_argument_and_none_keeps_only_the_program() {
        let args = argv(&["app", "--password=x", "postgres://u:p@db"]);
        let full = with_patterns(ArgvCapture::Full, &DEFAULT_PATTERNS);
        assert!(matches!(full.command_args(&args), Cow::Borrowed(a) if a == args));
        let none = with_patterns(ArgvCapture::None, &DEFAULT_PATTERNS);
        assert_eq!(none.command_args(&args).into_owned(), ["app"]);
        assert!(none.command_args(&[]).is_empty());
    }

    #[test]
    fn given_patterns_replace_the_default_and_can_be_anchored() {
        let redactor = with_patterns(ArgvCapture::Redacted, &["^p$", "dsn"]);
        let args = argv(&[
            "mysql",
            "-p",
            "pw",
            "--port",
            "3306",
            "--DSN=x",
            "--password=y",
        ]);
        assert_eq!(
            redactor.command_args(&args).into_owned(),
            [
                "mysql",
                "-p",
                REDACTED,
                "--port",
                "3306",
                "--DSN=<redacted>",
                "--password=y"
            ]
        );
    }

    #[test]
    fn an_invalid_pattern_is_refused_and_named() {
        let err =
            Redactor::new(ArgvCapture::Redacted, &["ok", "("]).expect_err("unbalanced parenthesis");
        assert!(err.to_string().contains("\"(\""), "{err}");
        assert!(check_pattern("pass(word)?").is_ok());
    }

    #[test]
    fn parse_errors_do_not_quote_secret_values() {
        let bad_syntax = ArgvError::BadFlagSyntax {
            arg: "---password=hunter2".to_owned(),
        };
        let bad_number = ArgvError::InvalidNumber {
            flag: "--preserve-fds".to_owned(),
            value: "TOKEN=abc".to_owned(),
        };
        let bad_signal = ArgvError::BadSignal {
            value: "SIG9".to_owned(),
        };
        let redactor = Redactor::default();
        assert_eq!(
            redactor.argv_error(&bad_syntax),
            "bad flag syntax: ---password=<redacted>"
        );
        assert!(
            redactor
                .argv_error(&bad_number)
                .contains("TOKEN=<redacted>")
        );
        assert!(redactor.argv_error(&bad_signal).contains("SIG9"));
        let none = with_patterns(ArgvCapture::None, &DEFAULT_PATTERNS);
        assert_eq!(
            none.argv_error(&bad_signal),
            "unknown signal \"<redacted>\""
        );
        assert!(!none.argv_error(&bad_syntax).contains("password"));
        let full = with_patterns(ArgvCapture::Full, &DEFAULT_PATTERNS);
        assert!(full.argv_error(&bad_syntax).contains("hunter2"));
    }
}
