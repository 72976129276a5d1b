//! `nodetrace agent --config FILE`: a TOML file whose keys are the agent's long flag names
//! (`listen = "0.0.0.0:9750"`, `cri-socket = ["/run/containerd/containerd.sock"]`,
//! `insecure-no-auth = true`). Its settings become flags placed before the command line's, so
//! the command line wins; both win over environment variables, which win over defaults.

use clap::CommandFactory as _;
use std::{ffi::OsString, path::PathBuf};

use crate::cli::Cli;

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("--config needs a file")]
    MissingPath,
    #[error("cannot read the configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: unknown setting `{key}`; the settings are the agent's flags: {known}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("{path}: `{key}` must be a string, number, boolean or a list of them")]
    BadValue { path: PathBuf, key: String },
}

/// The agent's long flag names (without `--config`, `--help`, `--version`).
pub fn agent_flags() -> Vec<String> {
    let command = Cli::command();
    let Some(agent) = command.find_subcommand("agent") else {
        return Vec::new();
    };
    agent
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .filter(|l| !matches!(l.as_str(), "config" | "help" | "version"))
        .collect()
}

/// The command line with the settings of `--config FILE` (if given, after `agent`) inserted
/// right after the `agent` subcommand.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, ConfigFileError> {
    let Some(agent_at) = args.iter().position(|a| a == "agent") else {
        return Ok(args);
    };
    let mut path = None;
    let mut rest = args[agent_at + 1..].iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            path = Some(PathBuf::from(
                rest.next().ok_or(ConfigFileError::MissingPath)?,
            ));
        } else if let Some(value) = text.strip_prefix("--config=") {
            path = Some(PathBuf::from(value));
        }
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    let flags = settings_as_flags(&path, &text)?;
    let mut expanded = args[..=agent_at].to_vec();
    expanded.extend(flags);
    expanded.extend_from_slice(&args[agent_at + 1..]);
    Ok(expanded)
}

/// The file's settings as `--key=value` flags.
pub fn settings_as_flags(
    path: &std::path::Path,
    text: &str,
) -> Result<Vec<OsString>, ConfigFileError> {
    let table: toml::Table = text.parse().map_err(|source| ConfigFileError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let known = agent_flags();
    let mut flags = Vec::new();
    for (key, value) in table {
        if !known.contains(&key) {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_owned(),
                key,
                known: known.join(", "),
            });
        }
        let bad = || ConfigFileError::BadValue {
            path: path.to_owned(),
            key: key.clone(),
        };
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => flags.push(format!("--{key}").into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => flags.push(format!("--{key}={s}").into()),
                toml::Value::Integer(i) => flags.push(format!("--{key}={i}").into()),
                toml::Value::Float(f) => flags.push(format!("--{key}={f}").into()),
                _ => return Err(bad()),
            }
        }
    }
    Ok(flags)
}

/// The reference of every agent setting (flag, environment variable, default, meaning), as
/// docs/configuration.md holds it; a test keeps the file equal to this.
pub fn reference() -> String {
    let command = Cli::command();
    let mut out = String::from(
        "# nodetrace agent configuration\n\n\
         Generated from the agent's own flag definitions (`cargo test` fails when this file is \
         out of date; `NODETRACE_UPDATE_GOLDEN=1 cargo test -p nodetrace --lib config_file` \
         rewrites it).\n\n\
         Every setting can be given three ways: as a flag (`--listen 0.0.0.0:9750`), as an \
         environment variable where one is listed, or in the TOML file named by `--config` \
         (`listen = \"0.0.0.0:9750\"`; flags that can repeat take a list, switches take \
         `true`). The command line wins over the file (for flags that \
         can repeat, its values are added to the file's), the file over the environment, and \
         the environment over the default.\n\n\
         | setting | environment | default | meaning |\n|---|---|---|---|\n",
    );
    let Some(agent) = command.find_subcommand("agent") else {
        return out;
    };
    for arg in agent.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") || arg.is_hide_set() {
            continue;
        }
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if defaults.is_empty() {
            String::new()
        } else {
            format!("`{}`", defaults.join(","))
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string().replace('\n', " "))
            .unwrap_or_default();
        out.push_str(&format!("| `{long}` | {env} | {default} | {help} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use clap::Parser as _;

    fn parse(args: Vec<OsString>) -> crate::cli::AgentArgs {
        match Cli::try_parse_from(args).expect("valid flags").command {
            Command::Agent(args) => args,
            _ => panic!("not the agent command"),
        }
    }

    #[test]
    fn file_settings_apply_and_the_command_line_wins() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.2:9000\"\nretention = \"2h\"\nno-kube = true\n\
             cri-socket = [\"/a.sock\", \"/b.sock\"]\nmax-store-mib = 64\n",
        )
        .expect("write");
        let args = |extra: &[&str]| {
            let mut argv: Vec<OsString> = ["nodetrace", "agent", "--config"]
                .iter()
                .map(OsString::from)
                .collect();
            argv.push(file.clone().into());
            argv.extend(extra.iter().map(OsString::from));
            parse(expand(argv).expect("expand"))
        };
        let from_file = args(&[]);
        assert_eq!(from_file.listen.to_string(), "127.0.0.2:9000");
        assert_eq!(from_file.retention.as_secs(), 7200);
        assert!(from_file.no_kube);
        assert_eq!(from_file.max_store_mib, 64);
        assert_eq!(
            from_file.cri_sockets,
            [PathBuf::from("/a.sock"), PathBuf::from("/b.sock")]
        );
        let overridden = args(&["--listen", "127.0.0.3:9001"]);
        assert_eq!(overridden.listen.to_string(), "127.0.0.3:9001");
    }

    #[test]
    fn unknown_settings_and_bad_files_are_clear_errors() {
        let path = std::path::Path::new("agent.toml");
        let err = settings_as_flags(path, "lisen = \"x\"").expect_err("typo");
        assert!(err.to_string().contains("unknown setting `lisen`"), "{err}");
        assert!(err.to_string().contains("listen"), "{err}");
        let err = settings_as_flags(path, "listen = ").expect_err("not TOML");
        assert!(err.to_string().contains("not valid TOML"), "{err}");
        let err = settings_as_flags(path, "listen = { a = 1 }").expect_err("a table");
        assert!(err.to_string().contains("must be a string"), "{err}");
        let missing = expand(vec!["nodetrace".into(), "agent".into(), "--config".into()]);
        assert!(matches!(missing, Err(ConfigFileError::MissingPath)));
    }

    #[test]
    fn the_configuration_reference_matches_the_code() {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let generated = reference();
        if std::env::var_os("NODETRACE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&file, &generated).expect("write the reference");
            return;
        }
        let current = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            current == generated,
            "docs/configuration.md is out of date: run \
             NODETRACE_UPDATE_GOLDEN=1 cargo test -p nodetrace --lib config_file"
        );
    }
}
