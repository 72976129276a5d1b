//! OCI runtime command lines (runc, crun, youki), parsed from the argv of an exec.
//!
//! Global flags end at the verb. Verb flags may follow the container id (urfave/cli and argp
//! move them ahead of it), except for `exec` and `ps`, where everything after the id belongs to
//! the process. The flag grammar of each runtime is in the private `flags` module; flags the
//! parser does not know are kept in [`OtherFlag`]s, never fatal.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::flags::{self, Scan};
use super::signal::Signal;
use crate::model::{Attribute, keys};

/// Why a command line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgvError {
    #[error("argv is empty")]
    Empty,
    #[error("{program:?} is not an OCI runtime this parser knows (runc, crun, youki)")]
    UnknownRuntime { program: String },
    #[error("{runtime} command line has no verb")]
    NoVerb { runtime: Runtime },
    #[error("flag {flag} needs a value")]
    MissingValue { flag: String },
    #[error("bad flag syntax: {arg}")]
    BadFlagSyntax { arg: String },
    #[error("invalid boolean value {value:?} for flag {flag}")]
    InvalidBool { flag: String, value: String },
    #[error("invalid number {value:?} for flag {flag}")]
    InvalidNumber { flag: String, value: String },
    #[error("`{verb}` needs a container id")]
    MissingContainerId { verb: String },
    #[error("unknown signal {value:?}")]
    BadSignal { value: String },
}

/// The OCI runtime a command line belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Runtime {
    Runc,
    Crun,
    Youki,
}

impl Runtime {
    /// The runtime named by argv[0] (`runc`, `/usr/bin/crun`, `runc.amd64`), if any.
    pub fn from_program(program: &str) -> Option<Self> {
        let base = program.rsplit('/').next().unwrap_or(program);
        let stem = base.split('.').next().unwrap_or(base);
        match stem {
            "runc" => Some(Self::Runc),
            "crun" => Some(Self::Crun),
            "youki" => Some(Self::Youki),
            _ => None,
        }
    }

    /// The runtime's name, as used for `container.runtime` and as the span's service.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runc => "runc",
            Self::Crun => "crun",
            Self::Youki => "youki",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flag that the parsed fields do not model (a known one, or one this parser does not know).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherFlag {
    /// The long name for known flags, the name as written (without dashes) otherwise.
    pub name: String,
    pub value: Option<String>,
    /// Whether the runtime defines this flag (as far as this parser knows).
    pub known: bool,
}

/// The runtime's global flags (those before the verb).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalFlags {
    pub root: Option<String>,
    pub log: Option<String>,
    pub log_format: Option<String>,
    /// crun only.
    pub log_level: Option<String>,
    pub systemd_cgroup: bool,
    /// crun only: `cgroupfs`, `systemd`, `disabled`.
    pub cgroup_manager: Option<String>,
    pub debug: bool,
    /// runc: `true`, `false` or `auto`; crun's bare `--rootless` reads as `true`.
    pub rootless: Option<String>,
    /// runc only: path of the criu binary.
    pub criu: Option<String>,
    pub help: bool,
    pub version: bool,
    /// Global flags not modelled above, in command-line order.
    pub other: Vec<OtherFlag>,
}

/// Arguments of `create` and `run`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateArgs {
    pub id: String,
    pub bundle: Option<String>,
    pub pid_file: Option<String>,
    pub console_socket: Option<String>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: Option<u32>,
    /// `run --detach` (always false for `create`).
    pub detach: bool,
}

/// Arguments of `exec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecArgs {
    pub id: String,
    /// Path of a process.json that describes the process (then `args` is usually empty).
    pub process: Option<String>,
    pub detach: bool,
    pub pid_file: Option<String>,
    pub tty: bool,
    pub console_socket: Option<String>,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    /// The command and its arguments, after the container id.
    pub args: Vec<String>,
}

/// The runtime verb and what it was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciCommand {
    Create(CreateArgs),
    Start {
        id: String,
    },
    Run(CreateArgs),
    Exec(ExecArgs),
    Kill {
        id: String,
        /// SIGTERM when the command line names none.
        signal: Signal,
        all: bool,
    },
    Delete {
        id: String,
        force: bool,
    },
    State {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Update {
        id: String,
        /// Path of a resources JSON file (`-` for stdin); single limits are in `other_flags`.
        resources: Option<String>,
    },
    Ps {
        id: String,
        format: Option<String>,
        /// Arguments for ps(1), after the container id.
        ps_args: Vec<String>,
    },
    Events {
        id: String,
        stats: bool,
        interval: Option<String>,
    },
    Checkpoint {
        id: String,
        image_path: Option<String>,
        work_path: Option<String>,
        leave_running: bool,
        pre_dump: bool,
    },
    Restore {
        id: String,
        bundle: Option<String>,
        pid_file: Option<String>,
        console_socket: Option<String>,
        image_path: Option<String>,
        detach: bool,
    },
    Features,
    List {
        format: Option<String>,
        quiet: bool,
    },
    Spec {
        bundle: Option<String>,
        rootless: bool,
    },
    /// `runc init`: runc re-executing itself to become the container's first process.
    Init,
    /// `runc help [verb]`, or only `--help` without a verb.
    Help {
        topic: Option<String>,
    },
    /// Only `--version` without a verb.
    Version,
    /// A verb this parser does not know; its arguments are kept unparsed.
    Unknown {
        verb: String,
        args: Vec<String>,
    },
}

impl OciCommand {
    /// The verb as the runtime calls it (`create`, `kill`, ...).
    pub fn verb(&self) -> &str {
        match self {
            Self::Create(_) => "create",
            Self::Start { .. } => "start",
            Self::Run(_) => "run",
            Self::Exec(_) => "exec",
            Self::Kill { .. } => "kill",
            Self::Delete { .. } => "delete",
            Self::State { .. } => "state",
            Self::Pause { .. } => "pause",
            Self::Resume { .. } => "resume",
            Self::Update { .. } => "update",
            Self::Ps { .. } => "ps",
            Self::Events { .. } => "events",
            Self::Checkpoint { .. } => "checkpoint",
            Self::Restore { .. } => "restore",
            Self::Features => "features",
            Self::List { .. } => "list",
            Self::Spec { .. } => "spec",
            Self::Init => "init",
            Self::Help { .. } => "help",
            Self::Version => "version",
            Self::Unknown { verb, .. } => verb,
        }
    }

    /// The container the command acts on, for the verbs that name one.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Self::Create(args) | Self::Run(args) => Some(&args.id),
            Self::Exec(args) => Some(&args.id),
            Self::Start { id }
            | Self::Kill { id, .. }
            | Self::Delete { id, .. }
            | Self::State { id }
            | Self::Pause { id }
            | Self::Resume { id }
            | Self::Update { id, .. }
            | Self::Ps { id, .. }
            | Self::Events { id, .. }
            | Self::Checkpoint { id, .. }
            | Self::Restore { id, .. } => Some(id),
            Self::Features
            | Self::List { .. }
            | Self::Spec { .. }
            | Self::Init
            | Self::Help { .. }
            | Self::Version
            | Self::Unknown { .. } => None,
        }
    }
}

/// One parsed run of an OCI runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciInvocation {
    pub runtime: Runtime,
    pub global: GlobalFlags,
    pub command: OciCommand,
    /// Verb flags that `command` does not model, known or unknown, in command-line order.
    pub other_flags: Vec<OtherFlag>,
    /// Positional arguments beyond those the verb takes (the runtime itself refuses them).
    pub extra_args: Vec<String>,
}

impl OciInvocation {
    /// Parses a full argv; argv[0] names the runtime.
    pub fn parse<S: AsRef<str>>(argv: &[S]) -> Result<Self, ArgvError> {
        let program = argv.first().ok_or(ArgvError::Empty)?.as_ref();
        let runtime = Runtime::from_program(program).ok_or_else(|| ArgvError::UnknownRuntime {
            program: program.to_owned(),
        })?;
        Self::parse_as(runtime, argv)
    }

    /// Parses a full argv as a command line of `runtime`, whatever argv[0] says (for callers
    /// that know the runtime from the executable's path).
    pub fn parse_as<S: AsRef<str>>(runtime: Runtime, argv: &[S]) -> Result<Self, ArgvError> {
        if argv.is_empty() {
            return Err(ArgvError::Empty);
        }
        let tokens: Vec<String> = argv.iter().skip(1).map(|s| s.as_ref().to_owned()).collect();
        let scan = flags::scan_global(runtime, &tokens)?;
        let mut bag = scan.flags;
        let mut global = GlobalFlags {
            root: bag.value("root"),
            log: bag.value("log"),
            log_format: bag.value("log-format"),
            log_level: bag.value("log-level"),
            systemd_cgroup: bag.flag("systemd-cgroup"),
            cgroup_manager: bag.value("cgroup-manager"),
            debug: bag.flag("debug"),
            rootless: bag.optional("rootless"),
            criu: bag.value("criu"),
            help: bag.flag("help"),
            version: bag.flag("version"),
            other: Vec::new(),
        };
        global.other = bag.into_other();

        let mut rest = scan.positionals.into_iter();
        let verb = match rest.next() {
            Some(verb) if !verb.is_empty() => verb,
            _ => {
                let command = if global.version {
                    OciCommand::Version
                } else if global.help {
                    OciCommand::Help { topic: None }
                } else {
                    return Err(ArgvError::NoVerb { runtime });
                };
                return Ok(Self::new(runtime, global, command));
            }
        };
        let rest: Vec<String> = rest.collect();
        let Some(scan) = flags::scan_verb(runtime, &verb, &rest) else {
            let command = OciCommand::Unknown { verb, args: rest };
            return Ok(Self::new(runtime, global, command));
        };
        let (command, other_flags, extra_args) = build_command(&verb, scan?)?;
        Ok(Self {
            runtime,
            global,
            command,
            other_flags,
            extra_args,
        })
    }

    fn new(runtime: Runtime, global: GlobalFlags, command: OciCommand) -> Self {
        Self {
            runtime,
            global,
            command,
            other_flags: Vec::new(),
            extra_args: Vec::new(),
        }
    }

    pub fn verb(&self) -> &str {
        self.command.verb()
    }

    /// The container the command acts on, if it names one (never empty).
    pub fn container_id(&self) -> Option<&str> {
        self.command.container_id().filter(|id| !id.is_empty())
    }

    /// The span name: runtime and verb, `runc create`, `crun kill`.
    pub fn span_name(&self) -> String {
        format!("{} {}", self.runtime, self.verb())
    }

    /// The span attributes the command line itself tells: runtime, verb, container id, signal.
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut attributes = vec![
            Attribute::str(keys::CONTAINER_RUNTIME, self.runtime.as_str()),
            Attribute::str(keys::OCI_VERB, self.verb()),
        ];
        if let Some(id) = self.container_id() {
            attributes.push(Attribute::str(keys::CONTAINER_ID, id));
        }
        if let OciCommand::Kill { signal, .. } = &self.command {
            attributes.push(Attribute::str(keys::OCI_SIGNAL, signal.name()));
        }
        attributes
    }
}

type Built = (OciCommand, Vec<OtherFlag>, Vec<String>);

fn container_id(
    verb: &str,
    positionals: &mut impl Iterator<Item = String>,
) -> Result<String, ArgvError> {
    positionals
        .next()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ArgvError::MissingContainerId {
            verb: verb.to_owned(),
        })
}

fn build_command(verb: &str, scan: Scan) -> Result<Built, ArgvError> {
    let mut flags = scan.flags;
    let mut positionals = scan.positionals.into_iter();
    let command = match verb {
        "create" | "run" => {
            let args = CreateArgs {
                id: container_id(verb, &mut positionals)?,
                bundle: flags.value("bundle"),
                pid_file: flags.value("pid-file"),
                console_socket: flags.value("console-socket"),
                no_pivot: flags.flag("no-pivot"),
                no_new_keyring: flags.flag("no-new-keyring"),
                preserve_fds: flags.number("preserve-fds")?,
                detach: flags.flag("detach"),
            };
            if verb == "create" {
                OciCommand::Create(args)
            } else {
                OciCommand::Run(args)
            }
        }
        "start" => OciCommand::Start {
            id: container_id(verb, &mut positionals)?,
        },
        "exec" => OciCommand::Exec(ExecArgs {
            id: container_id(verb, &mut positionals)?,
            process: flags.value("process"),
            detach: flags.flag("detach"),
            pid_file: flags.value("pid-file"),
            tty: flags.flag("tty"),
            console_socket: flags.value("console-socket"),
            cwd: flags.value("cwd"),
            env: flags.values("env"),
            user: flags.value("user"),
            args: positionals.by_ref().collect(),
        }),
        "kill" => {
            let id = container_id(verb, &mut positionals)?;
            let signal = match positionals.next() {
                None => Signal::TERM,
                Some(text) => Signal::parse(&text).ok_or(ArgvError::BadSignal { value: text })?,
            };
            OciCommand::Kill {
                id,
                signal,
                all: flags.flag("all"),
            }
        }
        "delete" => OciCommand::Delete {
            id: container_id(verb, &mut positionals)?,
            force: flags.flag("force"),
        },
        "state" => OciCommand::State {
            id: container_id(verb, &mut positionals)?,
        },
        "pause" => OciCommand::Pause {
            id: container_id(verb, &mut positionals)?,
        },
        "resume" => OciCommand::Resume {
            id: container_id(verb, &mut positionals)?,
        },
        "update" => OciCommand::Update {
            id: container_id(verb, &mut positionals)?,
            resources: flags.value("resources"),
        },
        "ps" => OciCommand::Ps {
            id: container_id(verb, &mut positionals)?,
            format: flags.value("format"),
            ps_args: positionals.by_ref().collect(),
        },
        "events" => OciCommand::Events {
            id: container_id(verb, &mut positionals)?,
            stats: flags.flag("stats"),
            interval: flags.value("interval"),
        },
        "checkpoint" => OciCommand::Checkpoint {
            id: container_id(verb, &mut positionals)?,
            image_path: flags.value("image-path"),
            work_path: flags.value("work-path"),
            leave_running: flags.flag("leave-running"),
            pre_dump: flags.flag("pre-dump"),
        },
        "restore" => OciCommand::Restore {
            id: container_id(verb, &mut positionals)?,
            bundle: flags.value("bundle"),
            pid_file: flags.value("pid-file"),
            console_socket: flags.value("console-socket"),
            image_path: flags.value("image-path"),
            detach: flags.flag("detach"),
        },
        "features" => OciCommand::Features,
        "list" => OciCommand::List {
            format: flags.value("format"),
            quiet: flags.flag("quiet"),
        },
        "spec" => OciCommand::Spec {
            bundle: flags.value("bundle"),
            rootless: flags.flag("rootless"),
        },
        "init" => OciCommand::Init,
        "help" => OciCommand::Help {
            topic: positionals.next(),
        },
        other => OciCommand::Unknown {
            verb: other.to_owned(),
            args: positionals.by_ref().collect(),
        },
    };
    Ok((command, flags.into_other(), positionals.collect()))
}

#[cfg(test)]
#[path = "argv_tests.rs"]
mod tests;
