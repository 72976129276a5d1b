//! How runtimes read flags: the flag tables of runc and crun, and a scanner for each syntax.
//!
//! runc and youki read flags the way Go's `flag` package does under urfave/cli: `-flag` and
//! `--flag` mean the same, values come as `--flag value` or `--flag=value`, and booleans take
//! only `--flag` or `--flag=true|false` (never the next word). crun reads flags with GNU argp:
//! `--long`, `--long=value`, `--long value`, unambiguous prefixes of long names, short flags
//! that cluster (`-dt`) and take attached values (`-b/path`); `-bundle` is `-b undle`.
//!
//! Unknown flags are kept. Without `=value` one is taken for a boolean, unless the command then
//! has more positional arguments than its verb takes: the word after it is then its value (for
//! global flags: when that word is not a verb).

use super::argv::{ArgvError, OtherFlag, Runtime};

/// Scans the global flags of `runtime`: they end at the first word, the verb. The verb and
/// everything after it are the positional arguments.
pub(super) fn scan_global(runtime: Runtime, tokens: &[String]) -> Result<Scan, ArgvError> {
    let tables = [global_flags(runtime)];
    Scanner {
        syntax: syntax(runtime),
        tables: &tables,
        order: Order::InOrder,
        unknown_takes_next: |next| !is_verb(next),
    }
    .scan(tokens)
}

/// Scans the arguments of `verb`; `None` when the verb is not one this parser models.
pub(super) fn scan_verb(
    runtime: Runtime,
    verb: &str,
    tokens: &[String],
) -> Option<Result<Scan, ArgvError>> {
    let spec = verb_spec(verb)?;
    let scanner = Scanner {
        syntax: syntax(runtime),
        tables: spec.tables,
        order: spec.order,
        unknown_takes_next: |_| false,
    };
    Some(scanner.scan(tokens).map(|mut scan| {
        if spec.order == Order::Interspersed {
            scan.reclaim_unknown_values(spec.max_positionals);
        }
        scan
    }))
}

fn syntax(runtime: Runtime) -> Syntax {
    match runtime {
        Runtime::Crun => Syntax::Argp,
        Runtime::Runc | Runtime::Youki => Syntax::Go,
    }
}

fn global_flags(runtime: Runtime) -> &'static [FlagSpec] {
    match runtime {
        Runtime::Crun => CRUN_GLOBAL,
        Runtime::Runc | Runtime::Youki => RUNC_GLOBAL,
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Arity {
    /// `--flag`, `--flag=true|false`.
    Bool,
    /// `--flag value`, `--flag=value`.
    Value,
    /// argp's optional argument: `--flag` or `--flag=value`, never the next word.
    Optional,
}

#[derive(Debug)]
struct FlagSpec {
    /// The long name, used as the key of the parsed flag.
    name: &'static str,
    /// Other names, short ones included (`b` for `bundle`).
    aliases: &'static [&'static str],
    arity: Arity,
}

impl FlagSpec {
    fn is_named(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    fn long_names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.aliases.iter().copied().filter(|a| a.len() > 1))
    }

    fn display(&self) -> String {
        format!("--{}", self.name)
    }
}

const fn flag(name: &'static str, aliases: &'static [&'static str], arity: Arity) -> FlagSpec {
    FlagSpec {
        name,
        aliases,
        arity,
    }
}

use Arity::{Bool, Optional, Value};

const RUNC_GLOBAL: &[FlagSpec] = &[
    flag("debug", &[], Bool),
    flag("log", &[], Value),
    flag("log-format", &[], Value),
    flag("root", &[], Value),
    flag("criu", &[], Value),
    flag("systemd-cgroup", &[], Bool),
    flag("rootless", &[], Value),
    flag("help", &["h"], Bool),
    flag("version", &["v"], Bool),
];

const CRUN_GLOBAL: &[FlagSpec] = &[
    flag("debug", &[], Bool),
    flag("log", &[], Value),
    flag("log-format", &[], Value),
    flag("log-level", &[], Value),
    flag("root", &[], Value),
    flag("rootless", &[], Optional),
    flag("systemd-cgroup", &[], Bool),
    flag("cgroup-manager", &[], Value),
    flag("help", &["?"], Bool),
    flag("usage", &[], Bool),
    flag("version", &["V"], Bool),
];

/// Every verb takes `--help` (`-h` in runc, `-?` in crun).
const HELP: &[FlagSpec] = &[flag("help", &["h", "?"], Bool)];

/// `create`, and the base of `run`; the union of runc's and crun's flags.
const CREATE: &[FlagSpec] = &[
    flag("bundle", &["b"], Value),
    flag("console-socket", &[], Value),
    flag("pid-file", &[], Value),
    flag("no-pivot", &[], Bool),
    flag("no-new-keyring", &[], Bool),
    flag("preserve-fds", &[], Value),
    flag("config", &["f"], Value),
    flag("no-subreaper", &[], Bool),
];

const RUN: &[FlagSpec] = &[flag("detach", &["d"], Bool), flag("keep", &[], Bool)];

const EXEC: &[FlagSpec] = &[
    flag("console-socket", &[], Value),
    flag("cwd", &[], Value),
    flag("env", &["e"], Value),
    flag("tty", &["t"], Bool),
    flag("user", &["u"], Value),
    flag("additional-gids", &["g"], Value),
    flag("process", &["p"], Value),
    flag("detach", &["d"], Bool),
    flag("pid-file", &[], Value),
    flag("process-label", &[], Value),
    flag("apparmor", &[], Value),
    flag("no-new-privs", &[], Bool),
    flag("cap", &["c"], Value),
    flag("preserve-fds", &[], Value),
    flag("cgroup", &[], Value),
    flag("ignore-paused", &[], Bool),
];

const KILL: &[FlagSpec] = &[flag("all", &["a"], Bool), flag("regex", &["r"], Bool)];

const DELETE: &[FlagSpec] = &[flag("force", &["f"], Bool), flag("regex", &["r"], Bool)];

const UPDATE: &[FlagSpec] = &[
    flag("resources", &["r"], Value),
    flag("blkio-weight", &[], Value),
    flag("cpu-period", &[], Value),
    flag("cpu-quota", &[], Value),
    flag("cpu-share", &[], Value),
    flag("cpu-rt-period", &[], Value),
    flag("cpu-rt-runtime", &[], Value),
    flag("cpu-idle", &[], Value),
    flag("cpuset-cpus", &[], Value),
    flag("cpuset-mems", &[], Value),
    flag("kernel-memory", &[], Value),
    flag("kernel-memory-tcp", &[], Value),
    flag("memory", &[], Value),
    flag("memory-reservation", &[], Value),
    flag("memory-swap", &[], Value),
    flag("pids-limit", &[], Value),
    flag("l3-cache-schema", &[], Value),
    flag("mem-bw-schema", &[], Value),
];

const PS: &[FlagSpec] = &[flag("format", &["f"], Value)];

const EVENTS: &[FlagSpec] = &[flag("interval", &[], Value), flag("stats", &[], Bool)];

const CHECKPOINT: &[FlagSpec] = &[
    flag("image-path", &[], Value),
    flag("work-path", &[], Value),
    flag("parent-path", &[], Value),
    flag("leave-running", &[], Bool),
    flag("tcp-established", &[], Bool),
    flag("ext-unix-sk", &[], Bool),
    flag("shell-job", &[], Bool),
    flag("lazy-pages", &[], Bool),
    flag("status-fd", &[], Value),
    flag("page-server", &[], Value),
    flag("file-locks", &[], Bool),
    flag("pre-dump", &[], Bool),
    flag("manage-cgroups-mode", &[], Value),
    flag("empty-ns", &[], Value),
    flag("auto-dedup", &[], Bool),
];

const RESTORE: &[FlagSpec] = &[
    flag("console-socket", &[], Value),
    flag("image-path", &[], Value),
    flag("work-path", &[], Value),
    flag("tcp-established", &[], Bool),
    flag("ext-unix-sk", &[], Bool),
    flag("shell-job", &[], Bool),
    flag("file-locks", &[], Bool),
    flag("manage-cgroups-mode", &[], Value),
    flag("bundle", &["b"], Value),
    flag("detach", &["d"], Bool),
    flag("pid-file", &[], Value),
    flag("no-subreaper", &[], Bool),
    flag("no-pivot", &[], Bool),
    flag("empty-ns", &[], Value),
    flag("auto-dedup", &[], Bool),
    flag("lazy-pages", &[], Bool),
    flag("lsm-profile", &[], Value),
    flag("lsm-mount-context", &[], Value),
];

const LIST: &[FlagSpec] = &[flag("format", &["f"], Value), flag("quiet", &["q"], Bool)];

const SPEC: &[FlagSpec] = &[flag("bundle", &["b"], Value), flag("rootless", &[], Bool)];

/// Where a verb's flags may stand.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Order {
    /// Flags stop at the first positional argument (global flags, `exec`, `ps`).
    InOrder,
    /// Flags may come anywhere before `--`.
    Interspersed,
}

struct VerbSpec {
    tables: &'static [&'static [FlagSpec]],
    order: Order,
    /// For interspersed verbs: how many positional arguments the verb takes.
    max_positionals: usize,
}

fn verb_spec(verb: &str) -> Option<VerbSpec> {
    use Order::{InOrder, Interspersed};
    let (tables, order, max_positionals): (&'static [&'static [FlagSpec]], _, _) = match verb {
        "create" => (&[CREATE, HELP], Interspersed, 1),
        "run" => (&[CREATE, RUN, HELP], Interspersed, 1),
        "start" | "state" | "pause" | "resume" => (&[HELP], Interspersed, 1),
        "exec" => (&[EXEC, HELP], InOrder, usize::MAX),
        "kill" => (&[KILL, HELP], Interspersed, 2),
        "delete" => (&[DELETE, HELP], Interspersed, 1),
        "update" => (&[UPDATE, HELP], Interspersed, 1),
        "ps" => (&[PS, HELP], InOrder, usize::MAX),
        "events" => (&[EVENTS, HELP], Interspersed, 1),
        "checkpoint" => (&[CHECKPOINT, HELP], Interspersed, 1),
        "restore" => (&[RESTORE, HELP], Interspersed, 1),
        "features" | "init" => (&[HELP], Interspersed, 0),
        "list" => (&[LIST, HELP], Interspersed, 0),
        "spec" => (&[SPEC, HELP], Interspersed, 0),
        "help" => (&[HELP], Interspersed, 1),
        _ => return None,
    };
    Some(VerbSpec {
        tables,
        order,
        max_positionals,
    })
}

/// Verbs of runc and crun, modelled or not (for the global unknown-flag rule).
fn is_verb(word: &str) -> bool {
    verb_spec(word).is_some() || word == "mounts"
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Syntax {
    /// Go's flag package (urfave/cli): runc, youki.
    Go,
    /// GNU argp: crun.
    Argp,
}

#[derive(Debug)]
enum Hit {
    Known {
        spec: &'static FlagSpec,
        value: Option<String>,
    },
    Unknown {
        name: String,
        value: Option<String>,
        /// Index of the positional argument that came right after this bare flag.
        next_positional: Option<usize>,
    },
}

#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) flags: FlagBag,
    pub(super) positionals: Vec<String>,
}

impl Scan {
    /// When there are more positional arguments than the verb takes, the words that followed
    /// bare unknown flags were probably their values: give them back, first flags first.
    fn reclaim_unknown_values(&mut self, max_positionals: usize) {
        let mut excess = self.positionals.len().saturating_sub(max_positionals);
        let mut reclaimed = Vec::new();
        for hit in &mut self.flags.hits {
            if excess == 0 {
                break;
            }
            if let Hit::Unknown {
                value,
                next_positional: next @ Some(_),
                ..
            } = hit
            {
                let index = next.take().unwrap_or_default();
                if let Some(word) = self.positionals.get(index) {
                    *value = Some(word.clone());
                    reclaimed.push(index);
                    excess -= 1;
                }
            }
        }
        let mut index = 0;
        self.positionals.retain(|_| {
            let keep = !reclaimed.contains(&index);
            index += 1;
            keep
        });
    }
}

type Tokens<'a> = std::slice::Iter<'a, String>;

struct Scanner<'t> {
    syntax: Syntax,
    tables: &'t [&'static [FlagSpec]],
    order: Order,
    /// In-order scans: whether a bare unknown flag takes the next (non-flag) word as its value.
    unknown_takes_next: fn(&str) -> bool,
}

impl Scanner<'_> {
    fn scan(&self, tokens: &[String]) -> Result<Scan, ArgvError> {
        let mut out = Scan::default();
        let mut rest = tokens.iter();
        while let Some(token) = rest.next() {
            if token == "--" {
                out.positionals.extend(rest.by_ref().cloned());
                break;
            }
            if is_positional(token) {
                out.positionals.push(token.clone());
                if self.order == Order::InOrder {
                    out.positionals.extend(rest.by_ref().cloned());
                    break;
                }
                continue;
            }
            match self.syntax {
                Syntax::Go => self.go_flag(token, &mut rest, &mut out)?,
                Syntax::Argp => self.argp_flag(token, &mut rest, &mut out)?,
            }
        }
        Ok(out)
    }

    fn go_flag(&self, token: &str, rest: &mut Tokens<'_>, out: &mut Scan) -> Result<(), ArgvError> {
        let body = token
            .strip_prefix("--")
            .or_else(|| token.strip_prefix('-'))
            .unwrap_or(token);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ArgvError::BadFlagSyntax {
                arg: token.to_owned(),
            });
        }
        let (name, inline) = split_inline(body);
        let spec = self
            .tables
            .iter()
            .flat_map(|t| t.iter())
            .find(|s| s.is_named(name));
        match spec {
            Some(spec) => self.known(spec, inline, rest, out),
            None => {
                self.unknown(name.to_owned(), inline, rest, out);
                Ok(())
            }
        }
    }

    fn argp_flag(
        &self,
        token: &str,
        rest: &mut Tokens<'_>,
        out: &mut Scan,
    ) -> Result<(), ArgvError> {
        if let Some(body) = token.strip_prefix("--") {
            let (name, inline) = split_inline(body);
            return match self.argp_long(name) {
                Some(spec) => self.known(spec, inline, rest, out),
                None => {
                    self.unknown(name.to_owned(), inline, rest, out);
                    Ok(())
                }
            };
        }
        let cluster = token.strip_prefix('-').unwrap_or(token);
        for (at, short) in cluster.char_indices() {
            let attached = cluster.get(at + short.len_utf8()..).unwrap_or_default();
            let mut buf = [0; 4];
            let short_name: &str = short.encode_utf8(&mut buf);
            let spec = self
                .tables
                .iter()
                .flat_map(|t| t.iter())
                .find(|s| s.aliases.contains(&short_name));
            let Some(spec) = spec else {
                out.flags.hits.push(Hit::Unknown {
                    name: short_name.to_owned(),
                    value: None,
                    next_positional: None,
                });
                continue;
            };
            match spec.arity {
                Arity::Bool => out.flags.hits.push(Hit::Known { spec, value: None }),
                Arity::Value => {
                    let value = if attached.is_empty() {
                        take_value(spec, rest)?
                    } else {
                        attached.to_owned()
                    };
                    out.flags.hits.push(Hit::Known {
                        spec,
                        value: Some(value),
                    });
                    break;
                }
                Arity::Optional => {
                    let value = (!attached.is_empty()).then(|| attached.to_owned());
                    out.flags.hits.push(Hit::Known { spec, value });
                    break;
                }
            }
        }
        Ok(())
    }

    /// argp's long-name lookup: the exact name, else a prefix of exactly one flag's names.
    fn argp_long(&self, name: &str) -> Option<&'static FlagSpec> {
        let specs = || self.tables.iter().flat_map(|t| t.iter());
        if let Some(spec) = specs().find(|s| s.long_names().any(|n| n == name)) {
            return Some(spec);
        }
        if name.is_empty() {
            return None;
        }
        let mut matches = specs().filter(|s| s.long_names().any(|n| n.starts_with(name)));
        let first = matches.next()?;
        matches.all(|s| std::ptr::eq(s, first)).then_some(first)
    }

    fn known(
        &self,
        spec: &'static FlagSpec,
        inline: Option<&str>,
        rest: &mut Tokens<'_>,
        out: &mut Scan,
    ) -> Result<(), ArgvError> {
        let value = match spec.arity {
            Arity::Bool => {
                if let Some(text) = inline
                    && parse_bool(text).is_none()
                {
                    return Err(ArgvError::InvalidBool {
                        flag: spec.display(),
                        value: text.to_owned(),
                    });
                }
                inline.map(str::to_owned)
            }
            Arity::Value => Some(match inline {
                Some(text) => text.to_owned(),
                None => take_value(spec, rest)?,
            }),
            Arity::Optional => inline.map(str::to_owned),
        };
        out.flags.hits.push(Hit::Known { spec, value });
        Ok(())
    }

    fn unknown(&self, name: String, inline: Option<&str>, rest: &mut Tokens<'_>, out: &mut Scan) {
        let mut value = inline.map(str::to_owned);
        let mut next_positional = None;
        if value.is_none()
            && let Some(next) = rest.as_slice().first().filter(|n| is_positional(n))
        {
            match self.order {
                Order::InOrder => {
                    if (self.unknown_takes_next)(next) {
                        value = rest.next().cloned();
                    }
                }
                Order::Interspersed => next_positional = Some(out.positionals.len()),
            }
        }
        out.flags.hits.push(Hit::Unknown {
            name,
            value,
            next_positional,
        });
    }
}

fn is_positional(token: &str) -> bool {
    token == "-" || !token.starts_with('-')
}

fn split_inline(body: &str) -> (&str, Option<&str>) {
    match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    }
}

fn take_value(spec: &FlagSpec, rest: &mut Tokens<'_>) -> Result<String, ArgvError> {
    rest.next().cloned().ok_or_else(|| ArgvError::MissingValue {
        flag: spec.display(),
    })
}

/// The scanned flags, taken out one by one into typed fields; the rest become `OtherFlag`s.
#[derive(Debug, Default)]
pub(super) struct FlagBag {
    hits: Vec<Hit>,
}

impl FlagBag {
    /// Removes every occurrence of the known flag `name`; returns their values in order.
    fn take(&mut self, name: &str) -> Vec<Option<String>> {
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.hits.len());
        for hit in self.hits.drain(..) {
            match hit {
                Hit::Known { spec, value } if spec.name == name => taken.push(value),
                other => kept.push(other),
            }
        }
        self.hits = kept;
        taken
    }

    /// A boolean flag: the last occurrence wins.
    pub(super) fn flag(&mut self, name: &str) -> bool {
        self.take(name)
            .pop()
            .is_some_and(|value| value.as_deref().is_none_or(|v| parse_bool(v) == Some(true)))
    }

    /// A value flag: the last occurrence wins.
    pub(super) fn value(&mut self, name: &str) -> Option<String> {
        self.take(name).into_iter().flatten().next_back()
    }

    /// A repeatable value flag, all occurrences in order.
    pub(super) fn values(&mut self, name: &str) -> Vec<String> {
        self.take(name).into_iter().flatten().collect()
    }

    /// A flag with an optional value; bare means `true`.
    pub(super) fn optional(&mut self, name: &str) -> Option<String> {
        self.take(name)
            .pop()
            .map(|value| value.unwrap_or_else(|| "true".to_owned()))
    }

    pub(super) fn number(&mut self, name: &str) -> Result<Option<u32>, ArgvError> {
        self.value(name)
            .map(|text| {
                text.parse().map_err(|_| ArgvError::InvalidNumber {
                    flag: format!("--{name}"),
                    value: text.clone(),
                })
            })
            .transpose()
    }

    pub(super) fn into_other(self) -> Vec<OtherFlag> {
        self.hits
            .into_iter()
            .map(|hit| match hit {
                Hit::Known { spec, value } => OtherFlag {
                    name: spec.name.to_owned(),
                    value,
                    known: true,
                },
                Hit::Unknown { name, value, .. } => OtherFlag {
                    name,
                    value,
                    known: false,
                },
            })
            .collect()
    }
}
