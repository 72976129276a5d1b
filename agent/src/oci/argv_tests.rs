use super::*;

const SANDBOX: &str = "5c93909cfb10e81c43f714152b5f553ad462af6cd5ca132e8f149ad526015588";
const CTR: &str = "f32e968b097a52e1cf80af265b4545e13e434203fb32412b834b45f6b25a994e";
const ROOT: &str = "/run/containerd/runc/k8s.io";

fn bundle(id: &str) -> String {
    format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}")
}

/// `runc --root ... --log <bundle>/log.json --log-format json <rest>`, as the shim runs it.
fn shim_argv(id: &str, rest: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "runc".into(),
        "--root".into(),
        ROOT.into(),
        "--log".into(),
        format!("{}/log.json", bundle(id)),
        "--log-format".into(),
        "json".into(),
    ];
    argv.extend(rest.iter().map(|s| (*s).to_owned()));
    argv
}

fn parse(argv: &[&str]) -> OciInvocation {
    OciInvocation::parse(argv).expect("argv parses")
}

fn parse_err(argv: &[&str]) -> ArgvError {
    OciInvocation::parse(argv).expect_err("argv is refused")
}

fn other(name: &str, value: Option<&str>, known: bool) -> OtherFlag {
    OtherFlag {
        name: name.to_owned(),
        value: value.map(str::to_owned),
        known,
    }
}

#[test]
fn containerd_create_of_a_sandbox() {
    let b = bundle(SANDBOX);
    let pid_file = format!("{b}/init.pid");
    let argv = shim_argv(
        SANDBOX,
        &["create", "--bundle", &b, "--pid-file", &pid_file, SANDBOX],
    );
    let inv = OciInvocation::parse(&argv).expect("parses");
    assert_eq!(inv.runtime, Runtime::Runc);
    assert_eq!(inv.global.root.as_deref(), Some(ROOT));
    assert_eq!(inv.global.log, Some(format!("{b}/log.json")));
    assert_eq!(inv.global.log_format.as_deref(), Some("json"));
    assert!(!inv.global.systemd_cgroup);
    assert!(inv.global.other.is_empty());
    assert_eq!(
        inv.command,
        OciCommand::Create(CreateArgs {
            id: SANDBOX.to_owned(),
            bundle: Some(b.clone()),
            pid_file: Some(pid_file),
            ..CreateArgs::default()
        })
    );
    assert_eq!(inv.container_id(), Some(SANDBOX));
    assert_eq!(inv.span_name(), "runc create");
    assert!(inv.other_flags.is_empty());
    assert!(inv.extra_args.is_empty());
}

#[test]
fn containerd_start() {
    let inv = OciInvocation::parse(&shim_argv(CTR, &["start", CTR])).expect("parses");
    assert_eq!(inv.command, OciCommand::Start { id: CTR.to_owned() });
    assert_eq!(inv.span_name(), "runc start");
}

#[test]
fn containerd_exec_sync() {
    let pid_file = format!("{}/9b1f0c.pid", bundle(CTR));
    let argv = shim_argv(
        CTR,
        &[
            "exec",
            "--process",
            "/tmp/runc-process1234567",
            "--detach",
            "--pid-file",
            &pid_file,
            CTR,
        ],
    );
    let inv = OciInvocation::parse(&argv).expect("parses");
    assert_eq!(
        inv.command,
        OciCommand::Exec(ExecArgs {
            id: CTR.to_owned(),
            process: Some("/tmp/runc-process1234567".to_owned()),
            detach: true,
            pid_file: Some(pid_file),
            ..ExecArgs::default()
        })
    );
    assert_eq!(inv.span_name(), "runc exec");
}

#[test]
fn containerd_kill_with_a_numeric_signal() {
    let inv = OciInvocation::parse(&shim_argv(CTR, &["kill", CTR, "15"])).expect("parses");
    assert_eq!(
        inv.command,
        OciCommand::Kill {
            id: CTR.to_owned(),
            signal: Signal::TERM,
            all: false
        }
    );
}

#[test]
fn containerd_kill_all() {
    let inv = OciInvocation::parse(&shim_argv(CTR, &["kill", "--all", CTR, "9"])).expect("parses");
    assert_eq!(
        inv.command,
        OciCommand::Kill {
            id: CTR.to_owned(),
            signal: Signal::KILL,
            all: true
        }
    );
    let attributes = inv.attributes();
    assert!(attributes.contains(&Attribute::str(keys::OCI_SIGNAL, "SIGKILL")));
    assert!(attributes.contains(&Attribute::str(keys::CONTAINER_ID, CTR)));
    assert!(attributes.contains(&Attribute::str(keys::OCI_VERB, "kill")));
    assert!(attributes.contains(&Attribute::str(keys::CONTAINER_RUNTIME, "runc")));
}

#[test]
fn kill_without_a_signal_sends_sigterm() {
    let inv = parse(&["runc", "kill", CTR]);
    assert_eq!(
        inv.command,
        OciCommand::Kill {
            id: CTR.to_owned(),
            signal: Signal::TERM,
            all: false
        }
    );
}

#[test]
fn kill_flags_may_follow_the_id_and_signal() {
    let inv = parse(&["runc", "kill", CTR, "KILL", "--all"]);
    assert_eq!(
        inv.command,
        OciCommand::Kill {
            id: CTR.to_owned(),
            signal: Signal::KILL,
            all: true
        }
    );
    let inv = parse(&["runc", "kill", "-a=false", CTR, "SIGKILL"]);
    assert!(matches!(inv.command, OciCommand::Kill { all: false, .. }));
}

#[test]
fn containerd_delete_and_forced_delete() {
    let inv = OciInvocation::parse(&shim_argv(CTR, &["delete", CTR])).expect("parses");
    assert_eq!(
        inv.command,
        OciCommand::Delete {
            id: CTR.to_owned(),
            force: false
        }
    );
    let inv = OciInvocation::parse(&shim_argv(CTR, &["delete", "--force", CTR])).expect("parses");
    assert_eq!(
        inv.command,
        OciCommand::Delete {
            id: CTR.to_owned(),
            force: true
        }
    );
    assert_eq!(inv.span_name(), "runc delete");
    let inv = parse(&["runc", "delete", CTR, "-f"]);
    assert!(matches!(
        inv.command,
        OciCommand::Delete { force: true, .. }
    ));
}

#[test]
fn runc_init() {
    let inv = parse(&["runc", "init"]);
    assert_eq!(inv.command, OciCommand::Init);
    assert_eq!(inv.container_id(), None);
    assert_eq!(inv.span_name(), "runc init");
    assert_eq!(inv.global, GlobalFlags::default());
}

#[test]
fn crun_create_as_containerd_runs_it() {
    let b = bundle(CTR);
    let log = format!("{b}/log.json");
    let pid_file = format!("{b}/init.pid");
    let inv = parse(&[
        "/usr/bin/crun",
        "--root",
        ROOT,
        "--log",
        &log,
        "--log-format",
        "json",
        "create",
        "--bundle",
        &b,
        "--pid-file",
        &pid_file,
        CTR,
    ]);
    assert_eq!(inv.runtime, Runtime::Crun);
    assert_eq!(inv.global.root.as_deref(), Some(ROOT));
    assert_eq!(inv.global.log.as_deref(), Some(log.as_str()));
    assert_eq!(
        inv.command,
        OciCommand::Create(CreateArgs {
            id: CTR.to_owned(),
            bundle: Some(b.clone()),
            pid_file: Some(pid_file),
            ..CreateArgs::default()
        })
    );
    assert_eq!(inv.span_name(), "crun create");
}

#[test]
fn crun_kill_span_name() {
    let inv = parse(&["/usr/bin/crun", "--root", ROOT, "kill", CTR, "9"]);
    assert_eq!(inv.span_name(), "crun kill");
    assert!(matches!(
        inv.command,
        OciCommand::Kill {
            signal: Signal::KILL,
            ..
        }
    ));
}

#[test]
fn crun_global_flags() {
    let inv = parse(&[
        "crun",
        "--systemd-cgroup",
        "--cgroup-manager=systemd",
        "--log-level",
        "debug",
        "--debug",
        "--rootless",
        "delete",
        "-f",
        CTR,
    ]);
    assert!(inv.global.systemd_cgroup);
    assert!(inv.global.debug);
    assert_eq!(inv.global.cgroup_manager.as_deref(), Some("systemd"));
    assert_eq!(inv.global.log_level.as_deref(), Some("debug"));
    assert_eq!(inv.global.rootless.as_deref(), Some("true"));
    assert!(matches!(
        inv.command,
        OciCommand::Delete { force: true, .. }
    ));

    let inv = parse(&["crun", "--rootless=false", "start", CTR]);
    assert_eq!(inv.global.rootless.as_deref(), Some("false"));
}

#[test]
fn crun_optional_argument_never_takes_the_next_word() {
    // argp: `--rootless false` is a bare --rootless followed by the verb "false".
    let inv = parse(&["crun", "--rootless", "false", "start", CTR]);
    assert_eq!(inv.global.rootless.as_deref(), Some("true"));
    assert_eq!(inv.verb(), "false");
}

#[test]
fn runc_rootless_takes_a_value() {
    let inv = parse(&["runc", "--rootless", "auto", "start", CTR]);
    assert_eq!(inv.global.rootless.as_deref(), Some("auto"));
    assert_eq!(inv.verb(), "start");
}

#[test]
fn cri_o_conmon_create() {
    let userdata = format!("/run/containers/storage/overlay-containers/{CTR}/userdata");
    let pid_file = format!("{userdata}/pidfile");
    let socket = "/var/run/crio/0a1b2c3d/attach";
    let inv = parse(&[
        "/usr/bin/runc",
        "--systemd-cgroup",
        "--root=/run/runc",
        "create",
        "--bundle",
        &userdata,
        "--pid-file",
        &pid_file,
        "--console-socket",
        socket,
        "--no-pivot",
        "--no-new-keyring",
        "--preserve-fds=2",
        CTR,
    ]);
    assert!(inv.global.systemd_cgroup);
    assert_eq!(inv.global.root.as_deref(), Some("/run/runc"));
    assert_eq!(
        inv.command,
        OciCommand::Create(CreateArgs {
            id: CTR.to_owned(),
            bundle: Some(userdata.clone()),
            pid_file: Some(pid_file),
            console_socket: Some(socket.to_owned()),
            no_pivot: true,
            no_new_keyring: true,
            preserve_fds: Some(2),
            detach: false,
        })
    );
}

#[test]
fn go_accepts_single_dash_long_flags_and_equals() {
    let inv = parse(&[
        "runc",
        "-root=/r",
        "-log",
        "/l/log.json",
        "create",
        "-bundle",
        "/b",
        "-pid-file=/b/init.pid",
        "--console-socket=/s",
        CTR,
    ]);
    assert_eq!(inv.global.root.as_deref(), Some("/r"));
    assert_eq!(inv.global.log.as_deref(), Some("/l/log.json"));
    assert_eq!(
        inv.command,
        OciCommand::Create(CreateArgs {
            id: CTR.to_owned(),
            bundle: Some("/b".to_owned()),
            pid_file: Some("/b/init.pid".to_owned()),
            console_socket: Some("/s".to_owned()),
            ..CreateArgs::default()
        })
    );
    // Short aliases are plain names to Go: `--b` and `-b` are the same flag.
    let inv = parse(&["runc", "create", "--b", "/b", CTR]);
    assert!(matches!(&inv.command, OciCommand::Create(a) if a.bundle.as_deref() == Some("/b")));
}

#[test]
fn flags_may_follow_the_id_except_for_exec() {
    let inv = parse(&["runc", "create", CTR, "--bundle", "/b"]);
    assert!(
        matches!(&inv.command, OciCommand::Create(a) if a.bundle.as_deref() == Some("/b") && a.id == CTR)
    );
}

#[test]
fn boolean_flags_with_explicit_values() {
    let inv = parse(&[
        "runc",
        "--systemd-cgroup=true",
        "--debug=false",
        "run",
        "-d=1",
        "--bundle",
        "/b",
        CTR,
    ]);
    assert!(inv.global.systemd_cgroup);
    assert!(!inv.global.debug);
    assert!(matches!(&inv.command, OciCommand::Run(a) if a.detach));
    let inv = parse(&["runc", "exec", "--detach=false", "--tty=True", CTR, "true"]);
    assert!(matches!(&inv.command, OciCommand::Exec(a) if !a.detach && a.tty));
    // Go's booleans never take the next word: "false" is the container id here.
    let inv = parse(&["runc", "delete", "--force", "false"]);
    assert_eq!(
        inv.command,
        OciCommand::Delete {
            id: "false".to_owned(),
            force: true
        }
    );
}

#[test]
fn invalid_boolean_is_an_error() {
    assert_eq!(
        parse_err(&["runc", "delete", "--force=yes", CTR]),
        ArgvError::InvalidBool {
            flag: "--force".to_owned(),
            value: "yes".to_owned()
        }
    );
}

#[test]
fn double_dash_ends_the_flags() {
    let inv = parse(&["runc", "delete", "--force", "--", "-odd-id"]);
    assert_eq!(
        inv.command,
        OciCommand::Delete {
            id: "-odd-id".to_owned(),
            force: true
        }
    );
    let inv = parse(&["runc", "--root", "/r", "--", "start", CTR]);
    assert_eq!(inv.command, OciCommand::Start { id: CTR.to_owned() });
}

#[test]
fn exec_arguments_after_the_id_belong_to_the_process() {
    let inv = parse(&[
        "runc",
        "exec",
        "-t",
        "-e",
        "A=1",
        "--env=B=2",
        "-u",
        "1000:1000",
        "--cwd",
        "/tmp",
        CTR,
        "sh",
        "-c",
        "echo --all -d",
    ]);
    assert_eq!(
        inv.command,
        OciCommand::Exec(ExecArgs {
            id: CTR.to_owned(),
            tty: true,
            env: vec!["A=1".to_owned(), "B=2".to_owned()],
            user: Some("1000:1000".to_owned()),
            cwd: Some("/tmp".to_owned()),
            args: vec!["sh".to_owned(), "-c".to_owned(), "echo --all -d".to_owned()],
            ..ExecArgs::default()
        })
    );
    assert!(inv.other_flags.is_empty());
}

#[test]
fn exec_keeps_unmodelled_known_flags() {
    let inv = parse(&[
        "runc",
        "exec",
        "--cap",
        "CAP_NET_ADMIN",
        "-c",
        "CAP_SYS_ADMIN",
        "--no-new-privs",
        CTR,
        "ip",
        "a",
    ]);
    assert_eq!(
        inv.other_flags,
        vec![
            other("cap", Some("CAP_NET_ADMIN"), true),
            other("cap", Some("CAP_SYS_ADMIN"), true),
            other("no-new-privs", None, true),
        ]
    );
}

#[test]
fn unknown_flags_are_kept() {
    let inv = parse(&[
        "runc",
        "--new-global=x",
        "create",
        "--shiny",
        "--bundle",
        "/b",
        "--level=3",
        CTR,
    ]);
    assert_eq!(
        inv.global.other,
        vec![other("new-global", Some("x"), false)]
    );
    assert_eq!(
        inv.other_flags,
        vec![
            other("shiny", None, false),
            other("level", Some("3"), false)
        ]
    );
    assert!(
        matches!(&inv.command, OciCommand::Create(a) if a.id == CTR && a.bundle.as_deref() == Some("/b"))
    );
}

#[test]
fn unknown_verb_flag_takes_a_value_when_there_are_too_many_words() {
    let inv = parse(&[
        "runc",
        "create",
        "--new-flag",
        "value",
        "--bundle",
        "/b",
        CTR,
    ]);
    assert_eq!(
        inv.other_flags,
        vec![other("new-flag", Some("value"), false)]
    );
    assert!(matches!(&inv.command, OciCommand::Create(a) if a.id == CTR));
    assert!(inv.extra_args.is_empty());

    // With exactly as many words as the verb takes, the unknown flag is a boolean.
    let inv = parse(&["runc", "create", "--new-flag", CTR, "--bundle", "/b"]);
    assert_eq!(inv.other_flags, vec![other("new-flag", None, false)]);
    assert!(matches!(&inv.command, OciCommand::Create(a) if a.id == CTR));
}

#[test]
fn unknown_global_flag_takes_a_word_that_is_not_a_verb() {
    let inv = parse(&["runc", "--new-global", "/some/path", "start", CTR]);
    assert_eq!(
        inv.global.other,
        vec![other("new-global", Some("/some/path"), false)]
    );
    assert_eq!(inv.command, OciCommand::Start { id: CTR.to_owned() });

    let inv = parse(&["runc", "--new-global", "start", CTR]);
    assert_eq!(inv.global.other, vec![other("new-global", None, false)]);
    assert_eq!(inv.command, OciCommand::Start { id: CTR.to_owned() });
}

#[test]
fn extra_positional_arguments_are_kept() {
    let inv = parse(&["runc", "start", CTR, "surplus"]);
    assert_eq!(inv.command, OciCommand::Start { id: CTR.to_owned() });
    assert_eq!(inv.extra_args, vec!["surplus".to_owned()]);
}

#[test]
fn value_missing_at_the_end_is_an_error() {
    assert_eq!(
        parse_err(&["runc", "create", CTR, "--bundle"]),
        ArgvError::MissingValue {
            flag: "--bundle".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["runc", "--root"]),
        ArgvError::MissingValue {
            flag: "--root".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["crun", "create", CTR, "-b"]),
        ArgvError::MissingValue {
            flag: "--bundle".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["runc", "exec", "--process"]),
        ArgvError::MissingValue {
            flag: "--process".to_owned()
        }
    );
}

#[test]
fn a_value_flag_takes_the_next_word_even_if_it_looks_like_a_flag() {
    let inv = parse(&["runc", "update", "-r", "-", CTR]);
    assert_eq!(
        inv.command,
        OciCommand::Update {
            id: CTR.to_owned(),
            resources: Some("-".to_owned())
        }
    );
    let inv = parse(&["runc", "create", "--pid-file", "--odd", CTR]);
    assert!(
        matches!(&inv.command, OciCommand::Create(a) if a.pid_file.as_deref() == Some("--odd"))
    );
}

#[test]
fn malformed_command_lines() {
    let empty: [&str; 0] = [];
    assert_eq!(parse_err(&empty), ArgvError::Empty);
    assert_eq!(
        parse_err(&["/bin/bash", "-c", "true"]),
        ArgvError::UnknownRuntime {
            program: "/bin/bash".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["runc"]),
        ArgvError::NoVerb {
            runtime: Runtime::Runc
        }
    );
    assert_eq!(
        parse_err(&["runc", "--root", ROOT, "--debug"]),
        ArgvError::NoVerb {
            runtime: Runtime::Runc
        }
    );
    assert_eq!(
        parse_err(&["crun", ""]),
        ArgvError::NoVerb {
            runtime: Runtime::Crun
        }
    );
    for verb in [
        "create",
        "start",
        "run",
        "exec",
        "kill",
        "delete",
        "state",
        "pause",
        "resume",
        "update",
        "ps",
        "events",
        "checkpoint",
        "restore",
    ] {
        assert_eq!(
            parse_err(&["runc", verb]),
            ArgvError::MissingContainerId {
                verb: verb.to_owned()
            },
            "{verb}"
        );
    }
    assert_eq!(
        parse_err(&["runc", "create", "--bundle", "/b"]),
        ArgvError::MissingContainerId {
            verb: "create".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["runc", "start", ""]),
        ArgvError::MissingContainerId {
            verb: "start".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["runc", "kill", CTR, "SIGFOO"]),
        ArgvError::BadSignal {
            value: "SIGFOO".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["runc", "kill", CTR, "99"]),
        ArgvError::BadSignal {
            value: "99".to_owned()
        }
    );
    assert_eq!(
        parse_err(&[
            "runc",
            "create",
            "--preserve-fds",
            "many",
            "--bundle",
            "/b",
            CTR
        ]),
        ArgvError::InvalidNumber {
            flag: "--preserve-fds".to_owned(),
            value: "many".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["runc", "---root", "/r", "start", CTR]),
        ArgvError::BadFlagSyntax {
            arg: "---root".to_owned()
        }
    );
    assert_eq!(
        parse_err(&["runc", "start", "--=x", CTR]),
        ArgvError::BadFlagSyntax {
            arg: "--=x".to_owned()
        }
    );
}

#[test]
fn error_messages_are_lower_case() {
    let message = parse_err(&["runc", "kill"]).to_string();
    assert_eq!(message, "`kill` needs a container id");
    let message = parse_err(&["runc"]).to_string();
    assert_eq!(message, "runc command line has no verb");
}

#[test]
fn runtime_from_program_name() {
    assert_eq!(Runtime::from_program("runc"), Some(Runtime::Runc));
    assert_eq!(
        Runtime::from_program("/usr/local/sbin/runc.amd64"),
        Some(Runtime::Runc)
    );
    assert_eq!(Runtime::from_program("/usr/bin/crun"), Some(Runtime::Crun));
    assert_eq!(Runtime::from_program("youki"), Some(Runtime::Youki));
    assert_eq!(
        Runtime::from_program("/usr/bin/containerd-shim-runc-v2"),
        None
    );
    assert_eq!(Runtime::from_program("/usr/bin/"), None);

    let inv = parse(&[
        "/usr/local/bin/youki",
        "--root",
        "/run/youki",
        "delete",
        "--force",
        CTR,
    ]);
    assert_eq!(inv.runtime, Runtime::Youki);
    assert_eq!(inv.span_name(), "youki delete");
    let inv =
        OciInvocation::parse_as(Runtime::Crun, &["/proc/self/fd/5", "start", CTR]).expect("parses");
    assert_eq!(inv.span_name(), "crun start");
}

#[test]
fn crun_short_flags_cluster_and_take_attached_values() {
    let inv = parse(&["crun", "exec", "-dt", "-eA=1", "-p/tmp/p.json", CTR]);
    assert_eq!(
        inv.command,
        OciCommand::Exec(ExecArgs {
            id: CTR.to_owned(),
            detach: true,
            tty: true,
            env: vec!["A=1".to_owned()],
            process: Some("/tmp/p.json".to_owned()),
            ..ExecArgs::default()
        })
    );
    let inv = parse(&["crun", "create", "-b/b", CTR]);
    assert!(matches!(&inv.command, OciCommand::Create(a) if a.bundle.as_deref() == Some("/b")));
    // argp has no single-dash long flags: `-bundle` is `-b undle`.
    let inv = parse(&["crun", "create", "-bundle", CTR]);
    assert!(matches!(&inv.command, OciCommand::Create(a) if a.bundle.as_deref() == Some("undle")));
}

#[test]
fn crun_accepts_unambiguous_long_prefixes() {
    let inv = parse(&[
        "crun",
        "--log-l=debug",
        "--roo",
        "create",
        "--bund",
        "/b",
        "--pid=/p",
        CTR,
    ]);
    assert_eq!(inv.global.log_level.as_deref(), Some("debug"));
    // `--roo` could be --root or --rootless.
    assert_eq!(inv.global.root, None);
    assert_eq!(inv.global.other, vec![other("roo", None, false)]);
    assert!(matches!(&inv.command, OciCommand::Create(a)
        if a.bundle.as_deref() == Some("/b") && a.pid_file.as_deref() == Some("/p")));
    // `--p` could be --pid-file or --preserve-fds: not a known flag.
    let inv = parse(&["crun", "create", "--p=/p", "--bundle=/b", CTR]);
    assert_eq!(inv.other_flags, vec![other("p", Some("/p"), false)]);
}

#[test]
fn version_and_help() {
    assert_eq!(parse(&["runc", "--version"]).command, OciCommand::Version);
    assert_eq!(parse(&["runc", "-v"]).command, OciCommand::Version);
    assert_eq!(parse(&["crun", "-V"]).command, OciCommand::Version);
    assert_eq!(
        parse(&["runc", "--help"]).command,
        OciCommand::Help { topic: None }
    );
    let inv = parse(&["runc", "help", "create"]);
    assert_eq!(
        inv.command,
        OciCommand::Help {
            topic: Some("create".to_owned())
        }
    );
    assert_eq!(inv.span_name(), "runc help");
    assert_eq!(parse(&["runc", "--version"]).span_name(), "runc version");
}

#[test]
fn unknown_verbs_keep_their_arguments() {
    let inv = parse(&["crun", "--root", "/r", "mounts", "add", CTR, "/m.json"]);
    assert_eq!(
        inv.command,
        OciCommand::Unknown {
            verb: "mounts".to_owned(),
            args: vec!["add".to_owned(), CTR.to_owned(), "/m.json".to_owned()]
        }
    );
    assert_eq!(inv.container_id(), None);
    assert_eq!(inv.span_name(), "crun mounts");
}

#[test]
fn other_verbs() {
    assert_eq!(
        parse(&["runc", "state", CTR]).command,
        OciCommand::State { id: CTR.to_owned() }
    );
    assert_eq!(
        parse(&["runc", "pause", CTR]).command,
        OciCommand::Pause { id: CTR.to_owned() }
    );
    assert_eq!(
        parse(&["runc", "resume", CTR]).command,
        OciCommand::Resume { id: CTR.to_owned() }
    );
    assert_eq!(parse(&["runc", "features"]).command, OciCommand::Features);
    assert_eq!(
        parse(&["runc", "list", "-q"]).command,
        OciCommand::List {
            format: None,
            quiet: true
        }
    );
    assert_eq!(
        parse(&["runc", "spec", "--rootless", "-b", "/b"]).command,
        OciCommand::Spec {
            bundle: Some("/b".to_owned()),
            rootless: true
        }
    );
    assert_eq!(
        parse(&["runc", "ps", "--format", "json", CTR, "-ef"]).command,
        OciCommand::Ps {
            id: CTR.to_owned(),
            format: Some("json".to_owned()),
            ps_args: vec!["-ef".to_owned()]
        }
    );
    assert_eq!(
        parse(&["runc", "events", "--stats", "--interval", "5s", CTR]).command,
        OciCommand::Events {
            id: CTR.to_owned(),
            stats: true,
            interval: Some("5s".to_owned())
        }
    );
    let inv = parse(&["runc", "update", "--memory", "100M", "--pids-limit=50", CTR]);
    assert_eq!(
        inv.command,
        OciCommand::Update {
            id: CTR.to_owned(),
            resources: None
        }
    );
    assert_eq!(
        inv.other_flags,
        vec![
            other("memory", Some("100M"), true),
            other("pids-limit", Some("50"), true)
        ]
    );
    assert_eq!(
        parse(&[
            "runc",
            "checkpoint",
            "--image-path",
            "/ck",
            "--leave-running",
            CTR
        ])
        .command,
        OciCommand::Checkpoint {
            id: CTR.to_owned(),
            image_path: Some("/ck".to_owned()),
            work_path: None,
            leave_running: true,
            pre_dump: false
        }
    );
    assert_eq!(
        parse(&[
            "runc",
            "restore",
            "-d",
            "--image-path",
            "/ck",
            "-b",
            "/b",
            "--pid-file",
            "/p",
            CTR
        ])
        .command,
        OciCommand::Restore {
            id: CTR.to_owned(),
            bundle: Some("/b".to_owned()),
            pid_file: Some("/p".to_owned()),
            console_socket: None,
            image_path: Some("/ck".to_owned()),
            detach: true
        }
    );
    let inv = parse(&["runc", "run", "-d", "--keep", "-b", "/b", CTR]);
    assert!(matches!(&inv.command, OciCommand::Run(a) if a.detach && a.id == CTR));
    assert_eq!(inv.other_flags, vec![other("keep", None, true)]);
}

#[test]
fn last_occurrence_of_a_flag_wins() {
    let inv = parse(&[
        "runc",
        "--root",
        "/a",
        "--root",
        "/b",
        "create",
        "-b",
        "/x",
        "--bundle=/y",
        CTR,
    ]);
    assert_eq!(inv.global.root.as_deref(), Some("/b"));
    assert!(matches!(&inv.command, OciCommand::Create(a) if a.bundle.as_deref() == Some("/y")));
}

#[test]
fn help_flag_of_a_verb_is_kept() {
    let inv = parse(&["runc", "delete", "-h", CTR]);
    assert_eq!(inv.other_flags, vec![other("help", None, true)]);
}
