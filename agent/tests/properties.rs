//! Property tests of the parsers that read what tenants control (DESIGN.md "Trust boundary"):
//! runtime command lines, bundle specs, ring-buffer records and HTTP query parameters. Each one
//! must answer any input with a value or an error, never a panic, and must read well-formed
//! input back exactly.
//!
//! Every property runs a few hundred generated cases, so the file takes seconds. For a longer
//! run set `PROPTEST_CASES` (`PROPTEST_CASES=100000 cargo test -p nodetrace --test properties`);
//! `cargo xtask fuzz` runs coverage-guided fuzzers over the same parsers. A failure prints the
//! smallest input proptest found; add it to the unit tests of the parser before fixing it.

use std::collections::BTreeMap;
use std::fmt;

use nodetrace::api::params::{
    DEFAULT_LIMIT, DEFAULT_WINDOW_NS, MAX_LIMIT, ParamError, PodSelector, parse_count,
    parse_trace_query, parse_window,
};
use nodetrace::ebpf::{CriRecord, ExecRecord, ExitRecord, KernelEvent, parse_record};
use nodetrace::oci::bundle::{containerd_keys, crio_keys};
use nodetrace::oci::cgroup::parse_cgroups_path;
use nodetrace::oci::{
    BundleConfig, BundleError, ContainerKind, CreateArgs, ExecArgs, OciCommand, OciInvocation,
    Runtime, Signal, bundle_dir, container_info, parse_proc_cgroup,
};
use nodetrace_common::{
    ARGV_MAX_ARGS, ARGV_MAX_BYTES, CNI_OUTPUT_MAX_BYTES, CRI_FLAG_ERROR, CRI_STR_MAX,
    CRI_STR_SLOTS, CniOutputEvent, CriEvent, CriMethod, EXEC_FLAG_ARGV_IS_CNI_ENV,
    EXEC_FLAG_ARGV_TRUNCATED, EventHeader, EventKind, ExecEvent, ExecRole, ExitEvent,
    FILENAME_MAX_BYTES, TrackedKind,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use serde_json::{Value, json};

/// `cases` generated inputs per property, unless `PROPTEST_CASES` asks for another number.
/// Failures are not written to `proptest-regressions/` (the minimal case is printed instead).
fn config(cases: u32) -> Config {
    let from_env = std::env::var_os("PROPTEST_CASES").is_some();
    Config {
        cases: if from_env {
            Config::default().cases
        } else {
            cases
        },
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// runtime command lines

const RUNTIMES: [Runtime; 3] = [Runtime::Runc, Runtime::Crun, Runtime::Youki];

/// Flags of runc and crun as they are written, and malformed ones.
const FLAG_WORDS: &[&str] = &[
    "--root",
    "-root",
    "--log",
    "--log-format",
    "--log-level",
    "--criu",
    "--debug",
    "--debug=false",
    "--debug=maybe",
    "--systemd-cgroup",
    "--rootless",
    "--rootless=auto",
    "--cgroup-manager",
    "--help",
    "-h",
    "-?",
    "--version",
    "-v",
    "-V",
    "--bundle",
    "--bundle=",
    "-b",
    "-bundle",
    "-b/run/x",
    "--bun",
    "--pid-file",
    "--pid-file=",
    "--console-socket",
    "--no-pivot",
    "--no",
    "--no-new-keyring",
    "--preserve-fds",
    "--preserve-fds=3",
    "--preserve-fds=-1",
    "--preserve-fds=99999999999",
    "--detach",
    "-d",
    "-dt",
    "-td",
    "-dtb",
    "--tty",
    "-t",
    "--env",
    "-e",
    "--cwd",
    "--user",
    "-u",
    "--process",
    "-p",
    "--all",
    "-a",
    "--force",
    "-f",
    "--format",
    "--quiet",
    "-q",
    "--stats",
    "--interval",
    "--image-path",
    "--leave-running",
    "--pre-dump",
    "--resources",
    "-r",
    "--unknown",
    "--unknown=value",
    "-z",
    "-zz",
    "--",
    "-",
    "--=",
    "-=",
    "---",
    "---x",
    "=",
    "",
    "-\u{e9}",
    "--\u{e9}=\u{e9}",
];

const VERBS: &[&str] = &[
    "create",
    "run",
    "start",
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
    "features",
    "list",
    "spec",
    "init",
    "help",
    "mounts",
    "version",
    "frobnicate",
];

/// Container ids, paths, signals and numbers as they follow a verb or a flag.
const OPERANDS: &[&str] = &[
    "f32e968b097a52e1cf80af265b4545e13e434203fb32412b834b45f6b25a994e",
    "web",
    "/run/containerd/io.containerd.runtime.v2.task/k8s.io/web",
    "/run/containerd/io.containerd.runtime.v2.task/k8s.io/web/log.json",
    "log.json",
    "/",
    ".",
    "json",
    "9",
    "KILL",
    "sigterm",
    "RTMIN+3",
    "RTMAX-99",
    "65",
    "256",
    "-9",
    "true",
    "0",
    "18446744073709551616",
];

const PROGRAMS: &[&str] = &[
    "runc",
    "crun",
    "youki",
    "/usr/bin/runc",
    "/usr/local/bin/crun",
    "runc.amd64",
    "notrunc",
    "",
    "/",
];

/// One word of a runtime command line, from the grammar of real flags or anything at all.
fn argv_word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(FLAG_WORDS).prop_map(str::to_owned),
        2 => select(VERBS).prop_map(str::to_owned),
        2 => select(OPERANDS).prop_map(str::to_owned),
        1 => (select(FLAG_WORDS), any::<String>()).prop_map(|(flag, value)| format!("{flag}={value}")),
        2 => any::<String>(),
    ]
}

/// A word of the grammar only (cheap to generate by the thousand).
fn grammar_word() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => select(FLAG_WORDS),
        2 => select(VERBS),
        2 => select(OPERANDS),
    ]
}

/// What holds of every command line the parser accepts.
fn check_invocation(argv: &[String], inv: &OciInvocation) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        inv.span_name(),
        format!("{} {}", inv.runtime, inv.verb()),
        "span name"
    );
    // A container id is a whole word of the command line, never an empty one.
    if let Some(id) = inv.command.container_id() {
        prop_assert!(!id.is_empty(), "empty container id in {:?}", inv);
        prop_assert!(
            argv[1..].iter().any(|word| word == id),
            "id {:?} not a word",
            id
        );
    }
    let attributes = inv.attributes();
    prop_assert!(attributes.len() >= 2, "runtime and verb attributes");
    // A bundle path is a word of the command line or its end (`--bundle=B`, `-bB`).
    if let Some(dir) = bundle_dir(inv) {
        let dir = dir.to_string_lossy().into_owned();
        prop_assert!(
            argv[1..].iter().any(|word| word.contains(&dir)),
            "bundle {:?} not from the command line",
            dir
        );
    }
    Ok(())
}

/// Parses with the runtime argv[0] names, then as each runtime; errors must have a message.
fn parse_every_way(argv: &[String]) -> Result<(), TestCaseError> {
    match OciInvocation::parse(argv) {
        Ok(inv) => {
            prop_assert_eq!(Some(inv.runtime), Runtime::from_program(&argv[0]));
            check_invocation(argv, &inv)?;
        }
        Err(err) => prop_assert!(!err.to_string().is_empty()),
    }
    for runtime in RUNTIMES {
        match OciInvocation::parse_as(runtime, argv) {
            Ok(inv) => {
                prop_assert_eq!(inv.runtime, runtime);
                check_invocation(argv, &inv)?;
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }
    Ok(())
}

/// A word the runtimes read as an operand, not a flag: not empty, not starting with `-`.
fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_filter("an operand", |s| !s.is_empty() && !s.starts_with('-')),
        select(
            OPERANDS
                .iter()
                .copied()
                .filter(|s| !s.starts_with('-'))
                .collect::<Vec<_>>()
        )
        .prop_map(str::to_owned),
        Just("-".to_owned()),
    ]
}

/// How a value flag is written: `--flag V`, `--flag=V`, `-f V`, or crun's `-fV`.
#[derive(Clone, Copy, Debug)]
enum FlagForm {
    Spaced,
    Inline,
    Short,
    ShortAttached,
}

fn flag_form() -> impl Strategy<Value = FlagForm> {
    select(vec![
        FlagForm::Spaced,
        FlagForm::Inline,
        FlagForm::Short,
        FlagForm::ShortAttached,
    ])
}

/// `long`/`short` with `value` in `form`, as words; the form falls back to `--long V` where the
/// runtime's syntax has no such form (Go flags do not cluster, `-b` needs a non-empty value).
fn value_flag(
    runtime: Runtime,
    long: &str,
    short: Option<char>,
    value: &str,
    form: FlagForm,
) -> Vec<String> {
    match (form, short) {
        (FlagForm::Inline, _) => vec![format!("--{long}={value}")],
        (FlagForm::Short, Some(short)) => vec![format!("-{short}"), value.to_owned()],
        (FlagForm::ShortAttached, Some(short)) if runtime == Runtime::Crun && !value.is_empty() => {
            vec![format!("-{short}{value}")]
        }
        _ => vec![format!("--{long}"), value.to_owned()],
    }
}

fn runtime() -> impl Strategy<Value = Runtime> {
    select(RUNTIMES.to_vec())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn argv_of_arbitrary_strings_never_panics(
        argv in prop::collection::vec(any::<String>(), 1..24),
    ) {
        parse_every_way(&argv)?;
    }

    #[test]
    fn argv_built_from_real_flags_and_verbs_never_panics(
        program in select(PROGRAMS),
        words in prop::collection::vec(argv_word(), 0..40),
    ) {
        let mut argv = vec![program.to_owned()];
        argv.extend(words);
        parse_every_way(&argv)?;
    }

    #[test]
    fn a_verb_followed_by_flag_soup_never_panics(
        program in select(&PROGRAMS[..6]),
        globals in prop::collection::vec(select(FLAG_WORDS), 0..4),
        verb in select(VERBS),
        words in prop::collection::vec(argv_word(), 0..24),
    ) {
        let mut argv = vec![program.to_owned()];
        argv.extend(globals.into_iter().map(str::to_owned));
        argv.push(verb.to_owned());
        argv.extend(words);
        parse_every_way(&argv)?;
    }

    #[test]
    fn a_well_formed_create_yields_its_id_bundle_pid_file_and_root(
        runtime in runtime(),
        root in any::<String>(),
        bundle in any::<String>(),
        pid_file in any::<String>(),
        id in operand(),
        forms in (flag_form(), flag_form(), flag_form()),
        order in Just([0, 1, 2]).prop_shuffle(),
    ) {
        // `<runtime> --root R create --bundle B --pid-file P ID`, verb flags and the id in any
        // order (both syntaxes allow flags after the operand), each flag in any form.
        let mut argv = vec![runtime.as_str().to_owned()];
        argv.extend(value_flag(runtime, "root", None, &root, forms.0));
        argv.push("create".to_owned());
        for part in order {
            match part {
                0 => argv.extend(value_flag(runtime, "bundle", Some('b'), &bundle, forms.1)),
                1 => argv.extend(value_flag(runtime, "pid-file", None, &pid_file, forms.2)),
                _ => argv.push(id.clone()),
            }
        }
        let inv = OciInvocation::parse(&argv)
            .map_err(|err| TestCaseError::fail(format!("{argv:?}: {err}")))?;
        prop_assert_eq!(inv.global.root.as_deref(), Some(root.as_str()));
        prop_assert_eq!(
            &inv.command,
            &OciCommand::Create(CreateArgs {
                id: id.clone(),
                bundle: Some(bundle),
                pid_file: Some(pid_file),
                ..CreateArgs::default()
            }),
            "{:?}",
            argv
        );
        prop_assert_eq!(inv.container_id(), Some(id.as_str()));
        prop_assert!(inv.other_flags.is_empty() && inv.extra_args.is_empty());
    }

    #[test]
    fn exec_keeps_every_word_after_the_id_as_the_process_command_line(
        runtime in runtime(),
        pid_file in any::<String>(),
        id in operand(),
        args in prop::collection::vec(argv_word(), 0..16),
    ) {
        let mut argv = vec![
            runtime.as_str().to_owned(),
            "exec".to_owned(),
            "--pid-file".to_owned(),
            pid_file.clone(),
            id.clone(),
        ];
        argv.extend(args.iter().cloned());
        let inv = OciInvocation::parse(&argv)
            .map_err(|err| TestCaseError::fail(format!("{argv:?}: {err}")))?;
        prop_assert_eq!(
            inv.command,
            OciCommand::Exec(ExecArgs {
                id,
                pid_file: Some(pid_file),
                args,
                ..ExecArgs::default()
            })
        );
    }

    #[test]
    fn kill_reads_back_every_signal_number_and_conventional_name(
        runtime in runtime(),
        id in operand(),
        number in 0u8..=64,
        spelling in 0..4,
    ) {
        let signal = Signal::from_number(number)
            .ok_or_else(|| TestCaseError::fail("0 to 64 are signals"))?;
        // 0, 32 and 33 have no conventional name (glibc keeps 32 and 33): only their number.
        let named = !matches!(number, 0 | 32 | 33);
        let word = match spelling {
            1 if named => signal.name().into_owned(),
            2 if named => signal.name().to_ascii_lowercase(),
            3 if named => signal.name().trim_start_matches("SIG").to_owned(),
            _ => number.to_string(),
        };
        let argv = [runtime.as_str(), "kill", &id, &word];
        let inv = OciInvocation::parse(&argv)
            .map_err(|err| TestCaseError::fail(format!("{argv:?}: {err}")))?;
        prop_assert_eq!(
            inv.command,
            OciCommand::Kill { id, signal, all: false },
            "{:?}",
            word
        );
    }
}

proptest! {
    #![proptest_config(config(8))]

    #[test]
    fn thousands_of_words_parse_in_bounded_time(
        program in select(&PROGRAMS[..3]),
        verb in select(VERBS),
        words in prop::collection::vec(grammar_word(), 1000..3000),
    ) {
        // The kernel hands over at most ARGV_MAX_ARGS words; the parser must cope with more.
        // (Unknown flags each followed by a word cost it quadratic time: 16,000 such pairs take
        // about 1.4 s in a debug build; no argv from the kernel comes near.)
        let mut argv = vec![program.to_owned(), verb.to_owned()];
        argv.extend(words.into_iter().map(str::to_owned));
        let started = std::time::Instant::now();
        parse_every_way(&argv)?;
        prop_assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{} words took {:?}",
            argv.len(),
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// bundle specs

/// Keys of the OCI spec and of the pod annotations, so generated JSON reaches the fields read.
const SPEC_KEYS: &[&str] = &[
    "annotations",
    "process",
    "args",
    "linux",
    "cgroupsPath",
    "ociVersion",
    containerd_keys::CONTAINER_TYPE,
    containerd_keys::SANDBOX_ID,
    containerd_keys::SANDBOX_UID,
    containerd_keys::SANDBOX_NAME,
    crio_keys::POD_UID,
    crio_keys::CONTAINER_TYPE,
    crio_keys::LABELS,
    crio_keys::KUBE_NAME,
];

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![select(SPEC_KEYS).prop_map(str::to_owned), any::<String>(),]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        select(vec![
            "sandbox",
            "container",
            "podsandbox",
            "/kubepods/pod1234abcd/x"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A spec whose top-level fields exist but may have any shape.
fn spec_shaped_json() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            json_value(),
            prop::collection::btree_map(json_key(), any::<String>(), 0..8)
                .prop_map(|map| json!(map)),
        ],
        json_value(),
        json_value(),
    )
        .prop_map(|(annotations, args, cgroups_path)| {
            json!({
                "ociVersion": "1.0.2",
                "annotations": annotations,
                "process": { "args": args },
                "linux": { "cgroupsPath": cgroups_path },
            })
        })
}

/// A pod UID as kubelet writes it, and a runtime's 64-hex container id.
fn pod_uid() -> impl Strategy<Value = String> {
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
}

fn container_id() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

/// A non-empty annotation value (empty ones count as absent).
fn annotation_value() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("not empty", |s| !s.is_empty())
}

fn check_container_info(config: &BundleConfig, id: &str) -> Result<(), TestCaseError> {
    match container_info(config, id) {
        Ok(info) => {
            prop_assert_eq!(&info.container_id, id);
            prop_assert!(!info.pod.uid.is_empty(), "a pod without a UID: {:?}", info);
            if info.kind == Some(ContainerKind::Sandbox) {
                prop_assert!(info.container_name.is_none());
                prop_assert!(info.sandbox_id.is_some());
            }
            let _ = info.attributes();
        }
        Err(err) => {
            prop_assert!(matches!(err, BundleError::NoPod { .. }), "{:?}", err);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn bundle_config_of_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        id in any::<String>(),
    ) {
        if let Ok(config) = BundleConfig::from_json(&bytes) {
            check_container_info(&config, &id)?;
        }
    }

    #[test]
    fn bundle_config_of_arbitrary_json_never_panics(
        value in prop_oneof![json_value(), spec_shaped_json()],
        id in prop_oneof![any::<String>(), container_id()],
    ) {
        let bytes = serde_json::to_vec(&value).map_err(|err| TestCaseError::fail(err.to_string()))?;
        if let Ok(config) = BundleConfig::from_json(&bytes) {
            check_container_info(&config, &id)?;
        }
    }

    #[test]
    fn annotations_args_and_cgroups_path_round_trip_through_config_json(
        annotations in prop::collection::btree_map(any::<String>(), any::<String>(), 0..12),
        process_args in prop::collection::vec(any::<String>(), 0..8),
        cgroups_path in proptest::option::of(any::<String>()),
    ) {
        let spec = json!({
            "ociVersion": "1.2.0",
            "annotations": annotations,
            "process": { "args": process_args, "cwd": "/" },
            "linux": { "cgroupsPath": cgroups_path, "namespaces": [] },
        });
        let bytes = serde_json::to_vec_pretty(&spec)
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        let config = BundleConfig::from_json(&bytes)
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(config, BundleConfig { annotations, process_args, cgroups_path });
    }

    #[test]
    fn containerd_annotations_name_the_pod_and_container(
        uid in pod_uid(),
        sandbox in container_id(),
        id in container_id(),
        namespace in annotation_value(),
        pod_name in annotation_value(),
        container_name in annotation_value(),
        image in annotation_value(),
        noise in prop::collection::btree_map("[a-z./-]{1,30}", any::<String>(), 0..6),
    ) {
        let mut annotations = noise;
        for (key, value) in [
            (containerd_keys::CONTAINER_TYPE, "container"),
            (containerd_keys::SANDBOX_ID, sandbox.as_str()),
            (containerd_keys::SANDBOX_UID, uid.as_str()),
            (containerd_keys::SANDBOX_NAMESPACE, namespace.as_str()),
            (containerd_keys::SANDBOX_NAME, pod_name.as_str()),
            (containerd_keys::CONTAINER_NAME, container_name.as_str()),
            (containerd_keys::IMAGE_NAME, image.as_str()),
        ] {
            annotations.insert(key.to_owned(), value.to_owned());
        }
        let config = BundleConfig { annotations, ..BundleConfig::default() };
        let info = container_info(&config, &id)
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(&info.container_id, &id);
        prop_assert_eq!(info.sandbox_id.as_deref(), Some(sandbox.as_str()));
        prop_assert_eq!(&info.pod.uid, &uid);
        prop_assert_eq!(&info.pod.namespace, &namespace);
        prop_assert_eq!(&info.pod.name, &pod_name);
        prop_assert_eq!(info.kind, Some(ContainerKind::Container));
        prop_assert_eq!(info.container_name.as_deref(), Some(container_name.as_str()));
        prop_assert_eq!(info.image.as_deref(), Some(image.as_str()));
    }

    #[test]
    fn a_sandbox_spec_names_its_pod_and_no_container(
        uid in pod_uid(),
        id in container_id(),
        namespace in annotation_value(),
        pod_name in annotation_value(),
        crio in any::<bool>(),
    ) {
        let annotations: BTreeMap<String, String> = if crio {
            [
                (crio_keys::CONTAINER_TYPE, "sandbox"),
                (crio_keys::SANDBOX_ID, id.as_str()),
                (crio_keys::POD_UID, uid.as_str()),
                (crio_keys::NAMESPACE, namespace.as_str()),
                (crio_keys::KUBE_NAME, pod_name.as_str()),
                (crio_keys::CONTAINER_NAME, "POD"),
            ]
        } else {
            [
                (containerd_keys::CONTAINER_TYPE, "sandbox"),
                (containerd_keys::SANDBOX_ID, id.as_str()),
                (containerd_keys::SANDBOX_UID, uid.as_str()),
                (containerd_keys::SANDBOX_NAMESPACE, namespace.as_str()),
                (containerd_keys::SANDBOX_NAME, pod_name.as_str()),
                (containerd_keys::CONTAINER_NAME, "POD"),
            ]
        }
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = BundleConfig { annotations, ..BundleConfig::default() };
        let info = container_info(&config, &id)
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(info.kind, Some(ContainerKind::Sandbox));
        prop_assert_eq!(info.sandbox_id.as_deref(), Some(id.as_str()));
        prop_assert_eq!((info.pod.uid, info.pod.namespace, info.pod.name), (uid, namespace, pod_name));
        prop_assert_eq!(info.container_name, None);
    }

    #[test]
    fn the_pod_uid_comes_from_the_cgroups_path_of_this_container_only(
        uid in pod_uid(),
        id in container_id(),
        other in container_id(),
        systemd in any::<bool>(),
    ) {
        let path_of = |container: &str| {
            if systemd {
                let uid = uid.replace('-', "_");
                format!("kubepods-besteffort-pod{uid}.slice:cri-containerd:{container}")
            } else {
                format!("/kubepods/besteffort/pod{uid}/{container}")
            }
        };
        let config = BundleConfig {
            cgroups_path: Some(path_of(&id)),
            ..BundleConfig::default()
        };
        let info = container_info(&config, &id).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(&info.pod.uid, &uid);
        if other != id {
            let config = BundleConfig {
                cgroups_path: Some(path_of(&other)),
                ..BundleConfig::default()
            };
            let refused = matches!(container_info(&config, &id), Err(BundleError::NoPod { .. }));
            prop_assert!(refused, "another container's cgroup named the pod");
        }
    }

    #[test]
    fn cgroup_paths_and_proc_cgroup_files_never_panic(
        path in prop_oneof![
            any::<String>(),
            prop::collection::vec(
                prop_oneof![
                    select(vec!["kubepods", "kubepods.slice", "besteffort", "pod", ".slice", ".scope", "crio-", ":", ""]).prop_map(str::to_owned),
                    pod_uid().prop_map(|uid| format!("pod{uid}")),
                    pod_uid().prop_map(|uid| format!("kubepods-pod{}.slice", uid.replace('-', "_"))),
                    container_id(),
                    any::<String>(),
                ],
                0..8,
            )
            .prop_map(|segments| segments.join("/")),
        ],
        lines in prop::collection::vec(any::<String>(), 0..6),
    ) {
        if let Some(found) = parse_cgroups_path(&path) {
            prop_assert!(!found.pod_uid.is_empty());
        }
        let content = lines.join("\n") + "\n0::" + &path + "\n";
        let _ = parse_proc_cgroup(&content);
    }
}

// ---------------------------------------------------------------------------------------------
// ring-buffer records

/// The `#[repr(C)]` records of nodetrace-common, which have no padding (their `_pad` fields are
/// explicit), so every byte of one is initialised.
trait Record: Copy {}
impl Record for ExecEvent {}
impl Record for ExitEvent {}
impl Record for CriEvent {}

/// The bytes of a record as the eBPF programs put it in the ring buffer.
fn bytes_of<T: Record>(record: &T) -> Vec<u8> {
    // SAFETY: `T` is a padding-free plain-data record (see `Record`); the slice covers exactly
    // the value and does not outlive the borrow.
    unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn header(kind: EventKind, tgid: u32, ktime_ns: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid,
        ktime_ns,
    }
}

/// Copies `src` into the start of a fixed buffer (callers keep `src` within it).
fn filled<const N: usize>(src: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out[..src.len()].copy_from_slice(src);
    out
}

/// A record with the `Debug` that nodetrace-common's records lack, for proptest to print a
/// failing input: the fields the decoder checks, and the start of the byte arrays.
#[derive(Clone, Copy)]
struct Shown<T>(T);

impl fmt::Debug for Shown<ExecEvent> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        f.debug_struct("ExecEvent")
            .field("header", &e.header)
            .field("role", &e.role)
            .field("flags", &e.flags)
            .field("argv_len", &e.argv_len)
            .field("filename_len", &e.filename_len)
            .field("filename", &String::from_utf8_lossy(&e.filename[..32]))
            .field("argv", &String::from_utf8_lossy(&e.argv[..64]))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Shown<CriEvent> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        f.debug_struct("CriEvent")
            .field("header", &e.header)
            .field("method", &e.method)
            .field("flags", &e.flags)
            .field("lens", &e.lens)
            .finish_non_exhaustive()
    }
}

/// A `u32` that is often at or near `bound`, the edge a length field is checked against.
fn length_near(bound: usize) -> impl Strategy<Value = u32> {
    let bound = u32::try_from(bound).unwrap_or(u32::MAX);
    prop_oneof![
        0..=bound,
        bound.saturating_sub(2)..=bound.saturating_add(2),
        any::<u32>(),
    ]
}

/// Up to `max` bytes repeating a short pattern that is rich in NULs and invalid UTF-8 (long
/// buffers at a fraction of the cost of generating each byte).
fn byte_block(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 1..48),
        prop_oneof![0..=max, Just(max)],
    )
        .prop_map(|(pattern, len)| pattern.iter().copied().cycle().take(len).collect())
}

/// An exec record with arbitrary field values and argument bytes (NULs, invalid UTF-8).
fn raw_exec_event() -> impl Strategy<Value = Shown<ExecEvent>> {
    (
        (any::<u32>(), any::<u64>(), any::<u32>(), any::<u64>()),
        prop_oneof![Just(1u32), Just(2), Just(3), any::<u32>()],
        prop_oneof![any::<u32>(), Just(EXEC_FLAG_ARGV_IS_CNI_ENV)],
        length_near(ARGV_MAX_BYTES),
        length_near(FILENAME_MAX_BYTES),
        byte_block(FILENAME_MAX_BYTES),
        byte_block(ARGV_MAX_BYTES),
    )
        .prop_map(
            |(
                (tgid, ktime_ns, ppid, cgroup_id),
                role,
                flags,
                argv_len,
                filename_len,
                filename,
                argv,
            )| {
                Shown(ExecEvent {
                    header: header(EventKind::Exec, tgid, ktime_ns),
                    ppid,
                    role,
                    cgroup_id,
                    flags,
                    argv_len,
                    filename_len,
                    _pad: 0,
                    filename: filled(&filename),
                    argv: filled(&argv),
                })
            },
        )
}

fn raw_cri_event() -> impl Strategy<Value = Shown<CriEvent>> {
    (
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<bool>()),
        prop_oneof![
            select(CriMethod::ALL.to_vec()).prop_map(|m| m as u32),
            any::<u32>()
        ],
        any::<u32>(),
        any::<[u64; 2]>(),
        prop::array::uniform5(length_near(CRI_STR_MAX)),
        byte_block(CRI_STR_MAX * CRI_STR_SLOTS),
    )
        .prop_map(
            |((tgid, ktime_ns, goroutine, start), method, flags, numbers, lens, strs)| {
                let kind = if start {
                    EventKind::CriStart
                } else {
                    EventKind::CriEnd
                };
                let mut event = CriEvent {
                    header: header(kind, tgid, ktime_ns),
                    goroutine,
                    method,
                    flags,
                    numbers,
                    lens,
                    _pad: 0,
                    strs: [[0; CRI_STR_MAX]; CRI_STR_SLOTS],
                };
                for (slot, chunk) in event.strs.iter_mut().zip(strs.chunks(CRI_STR_MAX)) {
                    slot[..chunk.len()].copy_from_slice(chunk);
                }
                Shown(event)
            },
        )
}

/// Record sizes, so that lengths around each one come up often.
fn record_length() -> impl Strategy<Value = usize> {
    let around = |size: usize| size.saturating_sub(8)..size + 8;
    prop_oneof![
        0..64usize,
        around(size_of::<ExitEvent>()),
        around(size_of::<CriEvent>()),
        around(size_of::<ExecEvent>()),
        0..size_of::<ExecEvent>() + 256,
    ]
}

/// Arguments as the kernel copies them: NUL-terminated, no NUL inside, at most ARGV_MAX_BYTES
/// in all (40 × 97 bytes fits); a first argument so that an argv is never just `[""]`.
fn exec_args() -> impl Strategy<Value = Vec<String>> {
    ("[^\0]{1,24}", prop::collection::vec("[^\0]{0,24}", 0..40)).prop_map(|(first, mut rest)| {
        rest.insert(0, first);
        rest
    })
}

fn exec_record() -> impl Strategy<Value = ExecRecord> {
    (
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()),
        select(vec![
            ExecRole::Runtime,
            ExecRole::ContainerProcess,
            ExecRole::CniPlugin,
        ]),
        "[^\0]{0,64}",
        prop_oneof![Just(Vec::new()), exec_args()],
        any::<bool>(),
    )
        .prop_map(
            |((tgid, ppid, cgroup_id, ktime_ns), role, filename, argv, argv_truncated)| {
                ExecRecord {
                    tgid,
                    ppid,
                    role,
                    cgroup_id,
                    ktime_ns,
                    filename,
                    argv,
                    argv_truncated,
                }
            },
        )
}

fn encode_exec(record: &ExecRecord) -> ExecEvent {
    let block: Vec<u8> = record
        .argv
        .iter()
        .flat_map(|arg| arg.bytes().chain([0]))
        .collect();
    ExecEvent {
        header: header(EventKind::Exec, record.tgid, record.ktime_ns),
        ppid: record.ppid,
        role: record.role as u32,
        cgroup_id: record.cgroup_id,
        flags: if record.argv_truncated {
            EXEC_FLAG_ARGV_TRUNCATED
        } else {
            0
        } | if record.role == ExecRole::CniPlugin {
            EXEC_FLAG_ARGV_IS_CNI_ENV
        } else {
            0
        },
        argv_len: u32::try_from(block.len()).unwrap_or(u32::MAX),
        filename_len: u32::try_from(record.filename.len()).unwrap_or(u32::MAX),
        _pad: 0,
        filename: filled(record.filename.as_bytes()),
        argv: filled(&block),
    }
}

/// How a process ended, as `task_struct.exit_code` encodes it.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Exited(u8),
    Signalled { signal: u8, core_dump: bool },
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        any::<u8>().prop_map(Ending::Exited),
        (1u8..=64, any::<bool>())
            .prop_map(|(signal, core_dump)| Ending::Signalled { signal, core_dump }),
    ]
}

fn cri_record() -> impl Strategy<Value = CriRecord> {
    (
        (any::<u32>(), any::<u64>(), any::<u64>()),
        select(CriMethod::ALL.to_vec()),
        any::<bool>(),
        prop::array::uniform5("(?s).{0,64}"),
        any::<[u64; 2]>(),
    )
        .prop_map(
            |((tgid, goroutine, ktime_ns), method, error, strings, numbers)| CriRecord {
                tgid,
                goroutine,
                ktime_ns,
                method,
                error,
                strings,
                numbers,
            },
        )
}

fn encode_cri(record: &CriRecord, kind: EventKind) -> CriEvent {
    let mut event = CriEvent {
        header: header(kind, record.tgid, record.ktime_ns),
        goroutine: record.goroutine,
        method: record.method as u32,
        flags: if record.error { CRI_FLAG_ERROR } else { 0 },
        numbers: record.numbers,
        lens: [0; CRI_STR_SLOTS],
        _pad: 0,
        strs: [[0; CRI_STR_MAX]; CRI_STR_SLOTS],
    };
    for (slot, text) in record.strings.iter().enumerate() {
        event.lens[slot] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        event.strs[slot] = filled(text.as_bytes());
    }
    event
}

/// What holds of every record the decoder accepts, and that a shorter copy is refused.
fn check_decoded(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(event) = parse_record(bytes) else {
        return Ok(());
    };
    let size = match &event {
        KernelEvent::Exec(exec) => {
            prop_assert!(exec.argv.len() <= ARGV_MAX_ARGS);
            prop_assert!(!exec.filename.contains('\0'));
            prop_assert!(exec.argv.iter().all(|arg| !arg.contains('\0')));
            size_of::<ExecEvent>()
        }
        KernelEvent::Exit(exit) => {
            prop_assert!(exit.exit_status.is_some() != exit.signal.is_some());
            size_of::<ExitEvent>()
        }
        KernelEvent::CriStart(cri) | KernelEvent::CriEnd(cri) => {
            prop_assert!(cri.strings.iter().all(|s| s.len() <= 3 * CRI_STR_MAX));
            size_of::<CriEvent>()
        }
        KernelEvent::KubeletStart(kubelet) | KernelEvent::KubeletEnd(kubelet) => {
            prop_assert!(kubelet.strings.iter().all(|s| s.len() <= 3 * CRI_STR_MAX));
            size_of::<CriEvent>()
        }
        KernelEvent::CniOutput(output) => {
            prop_assert!(output.data.len() <= CNI_OUTPUT_MAX_BYTES);
            size_of::<CniOutputEvent>()
        }
    };
    prop_assert!(bytes.len() >= size);
    prop_assert!(
        parse_record(&bytes[..size - 1]).is_err(),
        "a cut record was accepted"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn records_of_arbitrary_bytes_of_any_length_never_panic(
        kind in prop_oneof![1u32..=7, any::<u32>()],
        len in record_length(),
        fill in any::<u8>(),
        seed in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // A known kind in the header most of the time, so the decoder gets past it.
        let mut bytes: Vec<u8> = (0..len)
            .map(|i| seed.get(i % seed.len().max(1)).copied().unwrap_or(fill) ^ (i as u8))
            .collect();
        if bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&kind.to_ne_bytes());
        }
        check_decoded(&bytes)?;
    }

    #[test]
    fn records_of_fully_random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..size_of::<ExecEvent>() + 64),
    ) {
        check_decoded(&bytes)?;
    }

    #[test]
    fn exec_records_with_any_field_values_decode_or_are_refused_by_rule(event in raw_exec_event()) {
        let Shown(event) = event;
        let bytes = bytes_of(&event);
        // The CNI environment flag goes with the CNI plugin role, and only with it.
        let valid = matches!(event.role, 1..=3)
            && (event.role == 3) == (event.flags & EXEC_FLAG_ARGV_IS_CNI_ENV != 0)
            && event.argv_len as usize <= ARGV_MAX_BYTES
            && event.filename_len as usize <= FILENAME_MAX_BYTES;
        prop_assert_eq!(parse_record(&bytes).is_ok(), valid);
        check_decoded(&bytes)?;
    }

    #[test]
    fn cri_records_with_any_field_values_decode_or_are_refused_by_rule(event in raw_cri_event()) {
        let Shown(event) = event;
        let bytes = bytes_of(&event);
        let valid = CriMethod::from_u32(event.method).is_some()
            && event.lens.iter().all(|len| *len as usize <= CRI_STR_MAX);
        prop_assert_eq!(parse_record(&bytes).is_ok(), valid);
        check_decoded(&bytes)?;
    }

    #[test]
    fn an_encoded_exec_record_decodes_to_the_same_fields(
        record in exec_record(),
        trailing in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut bytes = bytes_of(&encode_exec(&record));
        // The ring buffer rounds records up to 8 bytes: what follows one is not part of it.
        bytes.extend(trailing);
        let expected = ExecRecord {
            argv: record.argv.iter().take(ARGV_MAX_ARGS).cloned().collect(),
            argv_truncated: record.argv_truncated || record.argv.len() > ARGV_MAX_ARGS,
            ..record.clone()
        };
        prop_assert_eq!(parse_record(&bytes).ok(), Some(KernelEvent::Exec(expected)));
        check_decoded(&bytes)?;
    }

    #[test]
    fn an_encoded_exit_record_decodes_to_its_status_or_signal(
        tgid in any::<u32>(),
        ktime_ns in any::<u64>(),
        ending in ending(),
        tracked in select(vec![
            TrackedKind::Runtime,
            TrackedKind::RuntimeChild,
            TrackedKind::ContainerProcess,
            TrackedKind::CriDaemon,
            TrackedKind::CriDaemonChild,
            TrackedKind::CniPlugin,
        ]),
    ) {
        let (exit_code, exit_status, signal) = match ending {
            Ending::Exited(status) => (u32::from(status) << 8, Some(i32::from(status)), None),
            Ending::Signalled { signal, core_dump } => (
                u32::from(signal) | if core_dump { 0x80 } else { 0 },
                None,
                Some(i32::from(signal)),
            ),
        };
        let event = ExitEvent {
            header: header(EventKind::Exit, tgid, ktime_ns),
            exit_code,
            tracked: tracked as u32,
        };
        let expected = ExitRecord { tgid, ktime_ns, exit_status, signal, tracked };
        prop_assert_eq!(parse_record(&bytes_of(&event)).ok(), Some(KernelEvent::Exit(expected)));
    }

    #[test]
    fn an_encoded_cri_record_decodes_to_the_same_fields(
        record in cri_record(),
        start in any::<bool>(),
    ) {
        let (kind, wrap): (_, fn(CriRecord) -> KernelEvent) = if start {
            (EventKind::CriStart, KernelEvent::CriStart)
        } else {
            (EventKind::CriEnd, KernelEvent::CriEnd)
        };
        let bytes = bytes_of(&encode_cri(&record, kind));
        prop_assert_eq!(parse_record(&bytes).ok(), Some(wrap(record)));
        check_decoded(&bytes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP query parameters

const NOW_NS: u64 = 1_715_700_000_000_000_000;

const PARAM_KEYS: &[&str] = &["pod", "pod_uid", "start", "end", "limit", "format", "node"];

const PARAM_VALUES: &[&str] = &[
    "",
    "0",
    "00",
    "007",
    "1",
    "10000",
    "10001",
    "-1",
    "+5",
    "1.5",
    "1e3",
    " 5",
    "5 ",
    "\u{ff11}",
    "18446744073709551615",
    "18446744073709552",
    "99999999999999999999999",
    "kelemetry",
    "otlp",
    "jaeger",
    "zipkin",
    "default/web-0",
    "a/b/c",
    "A/b",
    "/x",
    "x/",
    "7f3c1d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f",
];

fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(PARAM_VALUES).prop_map(str::to_owned),
        "[0-9]{0,25}",
        any::<u64>().prop_map(|n| n.to_string()),
        (0..=MAX_LIMIT + 2).prop_map(|n| n.to_string()),
        "[a-z0-9.-]{1,8}/[a-z0-9.-]{1,8}",
        any::<String>(),
    ]
}

fn param_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        4 => select(PARAM_KEYS).prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop::collection::vec((key, param_value()), 0..10)
}

/// The value of `name` when it is given exactly once.
fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut values = pairs.iter().filter(|(k, _)| k == name);
    let first = values.next();
    match values.next() {
        Some(_) => None,
        None => first.map(|(_, v)| v.as_str()),
    }
}

fn micros_as_ns(text: &str) -> Option<u64> {
    text.parse::<u64>().ok()?.checked_mul(1000)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn trace_queries_never_panic_and_accepted_ones_hold_their_bounds(
        pairs in param_pairs(),
        now in prop_oneof![Just(NOW_NS), any::<u64>()],
    ) {
        match parse_trace_query(&pairs, now) {
            Ok(request) => {
                prop_assert!((1..=MAX_LIMIT).contains(&request.limit), "limit {}", request.limit);
                prop_assert!(request.start_unix_ns <= request.end_unix_ns);
                let end = match single(&pairs, "end") {
                    Some(text) => micros_as_ns(text),
                    None => Some(now),
                };
                prop_assert_eq!(Some(request.end_unix_ns), end);
                let start = match single(&pairs, "start") {
                    Some(text) => micros_as_ns(text),
                    None => Some(request.end_unix_ns.saturating_sub(DEFAULT_WINDOW_NS)),
                };
                prop_assert_eq!(Some(request.start_unix_ns), start);
                match single(&pairs, "limit") {
                    Some(text) => prop_assert_eq!(text.parse::<usize>().ok(), Some(request.limit)),
                    None => prop_assert_eq!(request.limit, DEFAULT_LIMIT),
                }
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn limit_is_accepted_exactly_from_1_to_the_cap(
        digits in prop_oneof!["[0-9]{1,30}", (0..=MAX_LIMIT + 2).prop_map(|n| n.to_string())],
    ) {
        let pairs = vec![
            ("pod_uid".to_owned(), "u".to_owned()),
            ("limit".to_owned(), digits.clone()),
        ];
        // At most 30 digits: always fits a u128.
        let number: u128 = digits.parse().map_err(|_| TestCaseError::fail("digits"))?;
        let result = parse_trace_query(&pairs, NOW_NS).map(|request| request.limit);
        if number == 0 {
            prop_assert_eq!(result, Err(ParamError::BadLimit { value: digits }));
        } else if number <= MAX_LIMIT as u128 {
            prop_assert_eq!(result, Ok(number as usize));
        } else {
            prop_assert_eq!(result, Err(ParamError::LimitAboveCap { value: digits }));
        }
    }

    #[test]
    fn start_and_end_are_microseconds_and_start_never_follows_end(
        start in proptest::option::of(any::<u64>()),
        end in proptest::option::of(any::<u64>()),
        now in any::<u64>(),
    ) {
        let mut pairs = vec![("pod".to_owned(), "default/web-0".to_owned())];
        pairs.extend(start.map(|us| ("start".to_owned(), us.to_string())));
        pairs.extend(end.map(|us| ("end".to_owned(), us.to_string())));
        let result = parse_trace_query(&pairs, now).map(|r| (r.start_unix_ns, r.end_unix_ns));
        let window = parse_window(&pairs, now);
        prop_assert_eq!(&result, &window, "both routes read the window alike");
        let overflow = |us: Option<u64>| us.is_some_and(|us| us.checked_mul(1000).is_none());
        if overflow(end) || overflow(start) {
            prop_assert!(matches!(result, Err(ParamError::BadTime { .. })), "{:?}", result);
            return Ok(());
        }
        let end_ns = end.map_or(now, |us| us * 1000);
        let start_ns = start.map_or(end_ns.saturating_sub(DEFAULT_WINDOW_NS), |us| us * 1000);
        if start_ns > end_ns {
            prop_assert!(matches!(result, Err(ParamError::StartAfterEnd { .. })), "{:?}", result);
        } else {
            prop_assert_eq!(result, Ok((start_ns, end_ns)));
        }
    }

    #[test]
    fn counts_stay_within_their_bounds_or_take_the_default(
        pairs in param_pairs(),
        name in select(PARAM_KEYS),
        default in any::<usize>(),
        bounds in (any::<usize>(), any::<usize>()),
    ) {
        let (min, max) = (bounds.0.min(bounds.1), bounds.0.max(bounds.1));
        match parse_count(&pairs, name, default, min, max) {
            Ok(n) if pairs.iter().any(|(k, _)| k == name) => {
                prop_assert!((min..=max).contains(&n), "{} outside {}..={}", n, min, max);
            }
            Ok(n) => prop_assert_eq!(n, default),
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn lower_case_names_select_their_pod_and_anything_else_is_an_error(
        namespace in "[a-z0-9.-]{1,63}",
        name in "[a-z0-9.-]{1,63}",
        text in any::<String>(),
    ) {
        prop_assert_eq!(
            PodSelector::parse_name(&format!("{namespace}/{name}")),
            Ok(PodSelector::Name { namespace, name })
        );
        if let Ok(PodSelector::Uid(uid)) = PodSelector::parse_uid(&text) {
            prop_assert_eq!(&uid, &text);
        }
        match PodSelector::parse_name(&text) {
            Ok(PodSelector::Name { namespace, name }) => {
                prop_assert_eq!(format!("{namespace}/{name}"), text);
            }
            Ok(other) => prop_assert!(false, "parse_name gave {:?}", other),
            Err(err) => prop_assert_eq!(err, ParamError::BadPod { value: text }),
        }
    }
}
