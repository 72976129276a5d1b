//! The CRI field offsets the agent reads from a real runtime's own getters ([`cri_types`]) are
//! the offsets Go itself gives the same version of the CRI types. For each runtime binary, the
//! version of `k8s.io/cri-api` it was built with is taken from its build information (`go
//! version -m`), or, when it vendors the types without listing them (Debian's containerd, built
//! in GOPATH mode), from the go.mod of the module that vendors them at the binary's version. A
//! small Go module requiring that version (and the binary's protobuf runtimes) prints
//! `unsafe.Offsetof` and the Go type of every field [`CriOffsets`] names; every offset must have
//! been read, equal Go's, and be of the type the eBPF program reads there (string, pointer,
//! uint32, int64).
//!
//! The runtimes: Debian's `/usr/bin/containerd` when installed, and every `containerd` and `crio`
//! under `$NODETRACE_RUNTIMES_DIR/<name>-<version>/` (`cargo xtask setup` builds them there).
//! Skipped, saying so, without `go` (unless `NODETRACE_REQUIRE_GO` is set) or without the
//! binaries.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::offsets::{CriOffsets, UNKNOWN_OFFSET, cri_types};
use super::symbols::GoBinary;

/// The module of the CRI types, and its Go package.
const CRI_API: &str = "k8s.io/cri-api";
const CRI_API_V1: &str = "k8s.io/cri-api/pkg/apis/runtime/v1";
/// The protobuf runtimes whose types the generated messages embed: pinned to the binary's
/// versions too, so that the layout is computed with everything the binary had.
const PROTOBUF_RUNTIMES: [&str; 3] = [
    "google.golang.org/protobuf",
    "github.com/gogo/protobuf",
    "github.com/golang/protobuf",
];
/// Longest a `go` command may take (downloads and a build of grpc on a busy machine).
const GO_TIMEOUT: Duration = Duration::from_secs(600);

/// One field of [`CriOffsets`]: the Go type and field it is the offset of, and the Go type the
/// eBPF program reads there (as `reflect` names it).
struct Field {
    slot: &'static str,
    type_name: &'static str,
    field: &'static str,
    go_type: &'static str,
    get: fn(&CriOffsets) -> u32,
}

impl Field {
    fn name(&self) -> String {
        format!("{}.{}", self.type_name, self.field)
    }
}

macro_rules! fields {
    ($($slot:ident => $type_name:literal . $field:literal : $go_type:literal,)*) => {
        /// Every field of [`CriOffsets`], written here independently of the agent's table.
        const FIELDS: &[Field] = &[$(Field {
            slot: stringify!($slot),
            type_name: $type_name,
            field: $field,
            go_type: $go_type,
            get: |offsets| offsets.$slot,
        },)*];

        /// A field added to [`CriOffsets`] without a line here does not compile.
        const _EVERY_FIELD_IS_LISTED: fn(CriOffsets) = |CriOffsets { $($slot: _,)* }| {};
    };
}

fields! {
    run_pod_sandbox_request_config => "RunPodSandboxRequest"."Config": "*v1.PodSandboxConfig",
    run_pod_sandbox_request_runtime_handler => "RunPodSandboxRequest"."RuntimeHandler": "string",
    pod_sandbox_config_metadata => "PodSandboxConfig"."Metadata": "*v1.PodSandboxMetadata",
    pod_sandbox_metadata_name => "PodSandboxMetadata"."Name": "string",
    pod_sandbox_metadata_uid => "PodSandboxMetadata"."Uid": "string",
    pod_sandbox_metadata_namespace => "PodSandboxMetadata"."Namespace": "string",
    pod_sandbox_metadata_attempt => "PodSandboxMetadata"."Attempt": "uint32",
    run_pod_sandbox_response_pod_sandbox_id => "RunPodSandboxResponse"."PodSandboxId": "string",
    create_container_request_pod_sandbox_id => "CreateContainerRequest"."PodSandboxId": "string",
    create_container_request_config => "CreateContainerRequest"."Config": "*v1.ContainerConfig",
    create_container_request_sandbox_config =>
        "CreateContainerRequest"."SandboxConfig": "*v1.PodSandboxConfig",
    container_config_metadata => "ContainerConfig"."Metadata": "*v1.ContainerMetadata",
    container_config_image => "ContainerConfig"."Image": "*v1.ImageSpec",
    container_metadata_name => "ContainerMetadata"."Name": "string",
    container_metadata_attempt => "ContainerMetadata"."Attempt": "uint32",
    image_spec_image => "ImageSpec"."Image": "string",
    create_container_response_container_id => "CreateContainerResponse"."ContainerId": "string",
    start_container_request_container_id => "StartContainerRequest"."ContainerId": "string",
    stop_container_request_container_id => "StopContainerRequest"."ContainerId": "string",
    stop_container_request_timeout => "StopContainerRequest"."Timeout": "int64",
    remove_container_request_container_id => "RemoveContainerRequest"."ContainerId": "string",
    stop_pod_sandbox_request_pod_sandbox_id => "StopPodSandboxRequest"."PodSandboxId": "string",
    remove_pod_sandbox_request_pod_sandbox_id =>
        "RemovePodSandboxRequest"."PodSandboxId": "string",
    pull_image_request_image => "PullImageRequest"."Image": "*v1.ImageSpec",
    pull_image_request_sandbox_config => "PullImageRequest"."SandboxConfig": "*v1.PodSandboxConfig",
    pull_image_response_image_ref => "PullImageResponse"."ImageRef": "string",
    exec_sync_request_container_id => "ExecSyncRequest"."ContainerId": "string",
    exec_sync_request_timeout => "ExecSyncRequest"."Timeout": "int64",
}

/// The Go program printing every field's offset and type, and the modules it was built with.
fn go_program() -> String {
    let mut types: Vec<&str> = Vec::new();
    for field in FIELDS {
        if !types.contains(&field.type_name) {
            types.push(field.type_name);
        }
    }
    let mut vars = String::new();
    for (i, type_name) in types.iter().enumerate() {
        vars.push_str(&format!("\tvar t{i} v1.{type_name}\n"));
    }
    let mut entries = String::new();
    for field in FIELDS {
        let i = types
            .iter()
            .position(|t| *t == field.type_name)
            .expect("listed");
        let f = field.field;
        entries.push_str(&format!(
            "\t\t{{{:?}, unsafe.Offsetof(t{i}.{f}), reflect.TypeOf(t{i}.{f}).String()}},\n",
            field.name()
        ));
    }
    format!(
        r#"package main

import (
	"encoding/json"
	"os"
	"reflect"
	"runtime/debug"
	"unsafe"

	v1 "{CRI_API_V1}"
)

type field struct {{
	Name   string  `json:"name"`
	Offset uintptr `json:"offset"`
	Type   string  `json:"type"`
}}

func main() {{
{vars}	fields := []field{{
{entries}	}}
	// The version of each module the program was built with (the replacement's, if replaced).
	modules := map[string]string{{}}
	if info, ok := debug.ReadBuildInfo(); ok {{
		for _, d := range info.Deps {{
			if d.Replace != nil {{
				d = d.Replace
			}}
			modules[d.Path] = d.Version
		}}
	}}
	out := map[string]any{{"fields": fields, "modules": modules}}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {{
		panic(err)
	}}
}}
"#
    )
}

#[derive(Clone, Debug, serde::Deserialize)]
struct GoField {
    name: String,
    offset: u64,
    #[serde(rename = "type")]
    type_name: String,
}

/// What Go says of the CRI types at one set of module versions.
#[derive(Clone, Debug, serde::Deserialize)]
struct GoLayout {
    fields: Vec<GoField>,
    /// Module path → the version the program was built with.
    modules: BTreeMap<String, String>,
}

/// A module version a binary was built with; `replacement` when a `replace` directive swapped
/// in another module (path, version).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    version: String,
    replacement: Option<(String, String)>,
}

impl Requirement {
    /// The version of the code actually built.
    fn effective(&self) -> &str {
        self.replacement
            .as_ref()
            .map_or(&self.version, |(_, version)| version)
    }
}

/// The module versions to build the layout program with: `k8s.io/cri-api` and the protobuf
/// runtimes, as the binary had them.
type Requirements = BTreeMap<String, Requirement>;

/// The `go.mod` of the layout program.
fn go_mod(requirements: &Requirements) -> String {
    let mut text = "module nodetrace.test/layout\n\ngo 1.22\n".to_owned();
    for (path, r) in requirements {
        text.push_str(&format!("\nrequire {path} {}\n", r.version));
        if let Some((to, version)) = &r.replacement {
            text.push_str(&format!("replace {path} => {to} {version}\n"));
        }
    }
    text
}

/// Runs a command to its end or `GO_TIMEOUT`, and gives its standard output; panics, with its
/// standard error, when it fails.
fn run(command: &mut Command, what: &str) -> String {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped")));
    let stderr = read(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + GO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (
        stdout.join().expect("stdout reader"),
        stderr.join().expect("stderr reader"),
    );
    match status {
        Some(status) if status.success() => stdout,
        Some(status) => panic!("{what}: {status}\n{stderr}"),
        None => panic!("{what}: still running after {GO_TIMEOUT:?}, killed\n{stderr}"),
    }
}

/// A `go` command, in module mode whatever the environment says, with the machine's toolchain.
fn go(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("go");
    command
        .args(args)
        .current_dir(dir)
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .env("GOWORK", "off")
        .env("GOTOOLCHAIN", "local");
    command
}

/// Whether `go` can be run; without it the test is skipped, unless `NODETRACE_REQUIRE_GO` says
/// it must not be.
fn have_go() -> bool {
    if Command::new("go").arg("version").output().is_ok() {
        return true;
    }
    // `cargo xtask test` requires it: the machine kind has Go.
    assert!(
        std::env::var_os("NODETRACE_REQUIRE_GO").is_none(),
        "no Go toolchain (`go`) on PATH, and NODETRACE_REQUIRE_GO is set"
    );
    eprintln!("skipped: no Go toolchain (`go`) on PATH");
    false
}

/// Builds and runs the layout program for these requirements (once per test process for each
/// set of versions: several binaries share one).
fn go_layout(requirements: &Requirements) -> GoLayout {
    type Cache = Mutex<HashMap<String, Arc<OnceLock<GoLayout>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let go_mod = go_mod(requirements);
    let slot = CACHE
        .get_or_init(Cache::default)
        .lock()
        .expect("layout cache")
        .entry(go_mod.clone())
        .or_default()
        .clone();
    slot.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("go.mod"), &go_mod).expect("go.mod");
        std::fs::write(dir.path().join("main.go"), go_program()).expect("main.go");
        run(&mut go(dir.path(), &["mod", "tidy"]), "go mod tidy");
        let out = run(&mut go(dir.path(), &["run", "."]), "go run");
        let layout: GoLayout = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("the layout program's output: {e}\n{out}"));
        // The CRI types are the binary's version; so are the protobuf runtimes they use (one
        // they do not use is left out by `go mod tidy`).
        for (path, r) in requirements {
            let built = layout.modules.get(path).map(String::as_str);
            if path == CRI_API || built.is_some() {
                assert_eq!(
                    built,
                    Some(r.effective()),
                    "the layout program was built with the binary's {path}\n{go_mod}"
                );
            }
        }
        layout
    })
    .clone()
}

/// The `dep` lines of `go version -m`: module path → version (and replacement).
fn build_deps(binary: &Path) -> Requirements {
    let out = run(
        Command::new("go").arg("version").arg("-m").arg(binary),
        "go version -m",
    );
    let mut deps = Requirements::new();
    let mut last: Option<String> = None;
    for line in out.lines() {
        let fields: Vec<&str> = line.trim_start().split('\t').collect();
        match fields.as_slice() {
            ["dep", path, version, ..] => {
                deps.insert(
                    (*path).to_owned(),
                    Requirement {
                        version: (*version).to_owned(),
                        replacement: None,
                    },
                );
                last = Some((*path).to_owned());
            }
            ["=>", to, rest @ ..] => {
                let replaced = last.as_ref().and_then(|path| deps.get_mut(path));
                if let Some(replaced) = replaced {
                    let version = rest.first().copied().unwrap_or_default();
                    replaced.replacement = Some(((*to).to_owned(), version.to_owned()));
                }
            }
            _ => last = None,
        }
    }
    deps
}

/// The `require` and `replace` directives of a go.mod, as [`Requirements`].
fn go_mod_requirements(text: &str) -> Requirements {
    let mut requires = Requirements::new();
    let mut replaces: HashMap<String, (String, String)> = HashMap::new();
    let mut block: Option<&str> = None;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or_default().trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        let (directive, words) = match (block, words.as_slice()) {
            (_, [")"]) => {
                block = None;
                continue;
            }
            (None, [directive, "("]) => {
                block = Some(if *directive == "require" {
                    "require"
                } else if *directive == "replace" {
                    "replace"
                } else {
                    "other"
                });
                continue;
            }
            (Some(directive), words) => (directive, words),
            (None, [directive, words @ ..]) => (*directive, words),
            (None, []) => continue,
        };
        match (directive, words) {
            ("require", [path, version, ..]) => {
                requires.insert(
                    (*path).to_owned(),
                    Requirement {
                        version: (*version).to_owned(),
                        replacement: None,
                    },
                );
            }
            ("replace", [path, "=>", to, version]) | ("replace", [path, _, "=>", to, version]) => {
                replaces.insert(
                    (*path).to_owned(),
                    ((*to).to_owned(), (*version).to_owned()),
                );
            }
            _ => {}
        }
    }
    for (path, replacement) in replaces {
        if let Some(r) = requires.get_mut(&path) {
            r.replacement = Some(replacement);
        }
    }
    requires
}

/// Where a binary's CRI types come from: the requirements to rebuild them with, and how they
/// were found; `Err` (why) when they cannot be told.
fn cri_api_of(binary: &GoBinary, package: &str) -> Result<(Requirements, String), String> {
    let keep = |all: Requirements| -> Requirements {
        all.into_iter()
            .filter(|(path, _)| path == CRI_API || PROTOBUF_RUNTIMES.contains(&path.as_str()))
            .collect()
    };
    let deps = build_deps(binary.path());
    if let Some(cri_api) = deps.get(CRI_API) {
        if let Some((to, "")) = cri_api.replacement.as_ref().map(|(p, v)| (p, v.as_str())) {
            return Err(format!(
                "its {CRI_API} was replaced by the directory {to}, whose code is not here"
            ));
        }
        return Ok((keep(deps), "build info".to_owned()));
    }
    // Not listed: vendored by a module built without module information (GOPATH mode, as
    // Debian builds). The vendored copy is the version that module's go.mod requires.
    let Some((module, _)) = package.split_once("/vendor/") else {
        return Err(format!(
            "its build info lists no {CRI_API}, and its CRI types ({package}) are not vendored"
        ));
    };
    let info = binary.build_info();
    let version = match info.and_then(|i| i.module.as_ref()) {
        Some((path, version)) if path == module && version != "(devel)" => version.clone(),
        _ => version_from_cli(binary.path(), module).ok_or_else(|| {
            format!(
                "its build info lists no {CRI_API} and no version of {module}, which vendors \
                 it, and `{} --version` does not tell one",
                binary.path().display()
            )
        })?,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let listed = run(
        &mut go(
            dir.path(),
            &["list", "-m", "-json", &format!("{module}@{version}")],
        ),
        "go list -m",
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("go list -m -json");
    let go_mod_path = listed["GoMod"].as_str().expect("GoMod");
    let text = std::fs::read_to_string(go_mod_path).expect("the vendoring module's go.mod");
    let requirements = keep(go_mod_requirements(&text));
    if !requirements.contains_key(CRI_API) {
        return Err(format!(
            "{module}@{version}'s go.mod does not require {CRI_API}"
        ));
    }
    Ok((
        requirements,
        format!("vendored by {module} {version} (its go.mod)"),
    ))
}

/// The release a runtime's `--version` names after its module path (containerd prints
/// `containerd github.com/containerd/containerd 1.6.20~ds1 <revision>`), without a distribution's
/// suffix (`~ds1`, `+dfsg`).
fn version_from_cli(binary: &Path, module: &str) -> Option<String> {
    let out = run(Command::new(binary).arg("--version"), "--version");
    let mut words = out.split_whitespace();
    words.find(|w| *w == module)?;
    let word = words.next()?;
    let release = word.trim_start_matches('v').split(['~', '+']).next()?;
    let numbers: Vec<&str> = release.split('.').collect();
    (numbers.len() == 3 && numbers.iter().all(|n| n.parse::<u32>().is_ok()))
        .then(|| format!("v{release}"))
}

/// One binary checked: its row of the table.
struct Checked {
    binary: String,
    module_version: String,
    go_version: String,
    cri_api: String,
    source: String,
    generator: String,
    compared: usize,
}

/// Compares the offsets the agent reads from `path` with Go's layout; the differences go to
/// `wrong`. `None` (and a message) when the binary's CRI types cannot be told.
fn check(path: &Path, wrong: &mut Vec<String>) -> Option<Checked> {
    let shown = path.display().to_string();
    let binary = GoBinary::open(path).unwrap_or_else(|e| panic!("{shown}: {e}"));
    let types = cri_types(&binary).unwrap_or_else(|e| panic!("{shown}: {e}"));
    let (requirements, source) = match cri_api_of(&binary, &types.package) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("skipped {shown}: {why}");
            return None;
        }
    };
    let layout = go_layout(&requirements);
    assert_eq!(
        layout.fields.len(),
        FIELDS.len(),
        "the layout program prints every field"
    );
    let mut compared = 0;
    for field in FIELDS {
        let name = field.name();
        let go = layout
            .fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("Go printed no {name}"));
        let read = (field.get)(&types.offsets);
        if go.type_name != field.go_type {
            wrong.push(format!(
                "{shown}: {name} is `{}` in Go, the agent reads it as `{}` ({})",
                go.type_name, field.go_type, field.slot
            ));
        }
        if read == UNKNOWN_OFFSET {
            wrong.push(format!(
                "{shown}: {name} ({}) not read from its getter (Go: {}); unknown: {:?}",
                field.slot, go.offset, types.unknown
            ));
        } else if u64::from(read) != go.offset {
            wrong.push(format!(
                "{shown}: {name} ({}) read as {read}, Go says {}",
                field.slot, go.offset
            ));
        } else {
            compared += 1;
        }
    }
    let info = binary.build_info();
    Some(Checked {
        binary: shown,
        module_version: info
            .and_then(|i| i.module_version())
            .unwrap_or("-")
            .to_owned(),
        go_version: info.map_or("-", |i| i.go_version.as_str()).to_owned(),
        cri_api: requirements[CRI_API].effective().to_owned(),
        source,
        generator: format!("{:?}", types.generator),
        compared,
    })
}

/// Checks the binaries, prints the table and fails with every difference.
fn check_all(binaries: &[PathBuf]) {
    let mut wrong = Vec::new();
    let rows: Vec<Checked> = binaries
        .iter()
        .filter_map(|path| check(path, &mut wrong))
        .collect();
    let width = rows.iter().map(|r| r.binary.len()).max().unwrap_or(6);
    eprintln!(
        "{:<width$}  {:<9} {:<10} {:<9} {:<10} {:<8} from",
        "binary", "version", "go", "cri-api", "generator", "equal"
    );
    for r in &rows {
        let equal = format!("{}/{}", r.compared, FIELDS.len());
        eprintln!(
            "{:<width$}  {:<9} {:<10} {:<9} {:<10} {:<8} {}",
            r.binary, r.module_version, r.go_version, r.cri_api, r.generator, equal, r.source
        );
    }
    assert!(
        wrong.is_empty(),
        "{} offsets differ from Go's layout:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_debian_containerd_reads_the_offsets_go_gives_its_vendored_cri_api() {
    let path = Path::new("/usr/bin/containerd");
    if !path.exists() {
        eprintln!("skipped: /usr/bin/containerd is not installed");
        return;
    }
    if !have_go() {
        return;
    }
    check_all(&[path.to_owned()]);
}

#[test]
fn every_runtime_built_from_the_go_module_proxy_reads_the_offsets_go_gives_its_cri_api() {
    let Some(dir) = std::env::var_os("NODETRACE_RUNTIMES_DIR") else {
        eprintln!("skipped: NODETRACE_RUNTIMES_DIR is not set (cargo xtask test sets it)");
        return;
    };
    if !have_go() {
        return;
    }
    let entries = std::fs::read_dir(&dir).expect("the runtimes cache (cargo xtask setup)");
    let mut binaries: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
        .flat_map(|e| ["containerd", "crio"].map(|name| e.path().join(name)))
        .filter(|path| path.is_file())
        .collect();
    binaries.sort();
    assert!(
        !binaries.is_empty(),
        "no containerd or crio in {}",
        dir.to_string_lossy()
    );
    check_all(&binaries);
}

#[test]
fn a_go_mod_gives_its_requirements_and_their_replacements() {
    let text = "module github.com/containerd/containerd\n\ngo 1.17\n\n\
                require (\n\tgithub.com/gogo/protobuf v1.3.2\n\
                \tk8s.io/cri-api v0.25.0 // indirect\n)\n\n\
                require google.golang.org/protobuf v1.28.1\n\n\
                replace (\n\t// a comment\n\tgithub.com/gogo/protobuf => github.com/x/protobuf v1.3.3\n)\n";
    let requirements = go_mod_requirements(text);
    assert_eq!(requirements[CRI_API].effective(), "v0.25.0");
    assert_eq!(
        requirements["google.golang.org/protobuf"].version,
        "v1.28.1"
    );
    let gogo = &requirements["github.com/gogo/protobuf"];
    assert_eq!(gogo.version, "v1.3.2");
    assert_eq!(gogo.effective(), "v1.3.3");
    assert_eq!(
        go_mod(&requirements),
        "module nodetrace.test/layout\n\ngo 1.22\n\n\
         require github.com/gogo/protobuf v1.3.2\n\
         replace github.com/gogo/protobuf => github.com/x/protobuf v1.3.3\n\n\
         require google.golang.org/protobuf v1.28.1\n\n\
         require k8s.io/cri-api v0.25.0\n"
    );
}
