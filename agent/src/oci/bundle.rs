//! A container's bundle: the pod it belongs to, read from the annotations of its `config.json`.
//!
//! containerd's CRI plugin writes `io.kubernetes.cri.*` annotations (sandbox id, name,
//! namespace and UID, container type and name, image). CRI-O writes `io.kubernetes.pod.*`,
//! `io.kubernetes.container.name` and `io.kubernetes.cri-o.*` (also the pod labels as JSON in
//! `io.kubernetes.cri-o.Labels`). When no annotation carries the pod UID, the spec's
//! `linux.cgroupsPath` may still (`.../pod<uid>/<id>`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::argv::{OciCommand, OciInvocation};
use super::cgroup::parse_cgroups_path;
use super::info::{ContainerInfo, ContainerKind};
use crate::hostfs::{HostFsError, StateRoots};
use crate::model::PodRef;

/// The spec's file name inside a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// Larger `config.json` files are refused (real ones are a few tens of KiB).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// containerd's CRI annotations.
pub mod containerd_keys {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// CRI-O's annotations (and the kubelet labels it copies).
pub mod crio_keys {
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri-o.ImageName";
    /// The pod labels, as a JSON object.
    pub const LABELS: &str = "io.kubernetes.cri-o.Labels";
    /// The pod's name, on the sandbox.
    pub const KUBE_NAME: &str = "io.kubernetes.cri-o.KubeName";
    /// The pod's namespace, on the sandbox.
    pub const NAMESPACE: &str = "io.kubernetes.cri-o.Namespace";
}

/// Why a bundle told no pod.
#[derive(Debug, Error)]
pub enum BundleError {
    /// `config.json` was refused (not beneath a state root, a symlink, not a regular file, too
    /// large) or could not be read.
    #[error(transparent)]
    File {
        #[from]
        source: HostFsError,
    },
    #[error("bundle config {path} is not a valid OCI spec")]
    BadJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("spec of container {container_id} names no pod (no pod annotations or pod cgroup)")]
    NoPod { container_id: String },
    #[error(
        "bundle {bundle} is not container {container_id}'s (a bundle is <state root>/.../<id>, \
         or .../<id>/userdata for CRI-O)"
    )]
    NotThisContainer {
        bundle: PathBuf,
        container_id: String,
    },
}

/// The parts of an OCI runtime spec (`config.json`) that nodetrace reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleConfig {
    pub annotations: BTreeMap<String, String>,
    /// `process.args`: what the container runs.
    pub process_args: Vec<String>,
    /// `linux.cgroupsPath`.
    pub cgroups_path: Option<String>,
}

#[derive(Deserialize)]
struct RawSpec {
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    process: Option<RawProcess>,
    #[serde(default)]
    linux: Option<RawLinux>,
}

#[derive(Deserialize)]
struct RawProcess {
    #[serde(default)]
    args: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLinux {
    #[serde(default)]
    cgroups_path: Option<String>,
}

impl BundleConfig {
    /// Parses the content of a `config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: RawSpec = serde_json::from_slice(bytes)?;
        Ok(Self {
            annotations: raw.annotations.unwrap_or_default(),
            process_args: raw.process.and_then(|p| p.args).unwrap_or_default(),
            cgroups_path: raw.linux.and_then(|l| l.cgroups_path),
        })
    }
}

/// Reads `<bundle>/config.json`, only beneath one of the runtime's state roots and under the
/// rules of [`StateRoots::read_file`] (`bundle` comes from a command line a tenant can write).
pub fn read_config(roots: &StateRoots, bundle: &Path) -> Result<BundleConfig, BundleError> {
    read_config_limited(roots, bundle, MAX_CONFIG_BYTES)
}

fn read_config_limited(
    roots: &StateRoots,
    bundle: &Path,
    limit: u64,
) -> Result<BundleConfig, BundleError> {
    let path = bundle.join(CONFIG_FILE);
    let bytes = roots.read_file(&path, limit)?;
    BundleConfig::from_json(&bytes).map_err(|source| BundleError::BadJson { path, source })
}

/// Reads the bundle of container `container_id` (see [`read_config`]) and tells its pod.
pub fn read_bundle(
    roots: &StateRoots,
    bundle: &Path,
    container_id: &str,
) -> Result<ContainerInfo, BundleError> {
    if !names_container(bundle, container_id) {
        return Err(BundleError::NotThisContainer {
            bundle: bundle.to_owned(),
            container_id: container_id.to_owned(),
        });
    }
    container_info(&read_config(roots, bundle)?, container_id)
}

/// Whether `bundle` is where runtimes keep container `container_id`'s bundle: a directory named
/// after the container (containerd: `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`),
/// or its `userdata` directory (CRI-O: `<runroot>/overlay-containers/<id>/userdata`). A run
/// that names another container's bundle (or any other directory) reads nothing.
fn names_container(bundle: &Path, container_id: &str) -> bool {
    let mut names = bundle.components().rev().map(|c| c.as_os_str());
    match names.next() {
        Some(last) if last == container_id => true,
        Some(last) if last == "userdata" => names.next().is_some_and(|id| id == container_id),
        _ => false,
    }
}

/// The container and pod a spec describes (containerd or CRI-O annotations).
pub fn container_info(
    config: &BundleConfig,
    container_id: &str,
) -> Result<ContainerInfo, BundleError> {
    use {containerd_keys as containerd, crio_keys as crio};

    let annotations = &config.annotations;
    let labels: BTreeMap<String, String> = annotations
        .get(crio::LABELS)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let get = |keys: &[&str]| -> Option<String> {
        keys.iter()
            .find_map(|key| {
                annotations
                    .get(*key)
                    .or_else(|| labels.get(*key))
                    .filter(|value| !value.is_empty())
            })
            .map(|value| crate::model::capped(value))
    };

    let uid = get(&[containerd::SANDBOX_UID, crio::POD_UID]).or_else(|| {
        let cgroup = parse_cgroups_path(config.cgroups_path.as_deref()?)?;
        // The cgroup must be this container's (or its pod's), not some other one.
        match &cgroup.container_id {
            Some(id) if id != container_id => None,
            _ => Some(cgroup.pod_uid),
        }
    });
    let Some(uid) = uid else {
        return Err(BundleError::NoPod {
            container_id: container_id.to_owned(),
        });
    };

    let mut sandbox_id = get(&[containerd::SANDBOX_ID, crio::SANDBOX_ID]);
    let kind = get(&[containerd::CONTAINER_TYPE, crio::CONTAINER_TYPE])
        .and_then(|kind| ContainerKind::parse(&kind))
        .or_else(|| match sandbox_id.as_deref() {
            Some(id) if id == container_id => Some(ContainerKind::Sandbox),
            Some(_) => Some(ContainerKind::Container),
            None => None,
        });
    let is_sandbox = kind == Some(ContainerKind::Sandbox);
    if is_sandbox && sandbox_id.is_none() {
        sandbox_id = Some(container_id.to_owned());
    }

    // CRI-O's KubeName is the pod's name on the sandbox only.
    let name_keys: &[&str] = if is_sandbox {
        &[containerd::SANDBOX_NAME, crio::POD_NAME, crio::KUBE_NAME]
    } else {
        &[containerd::SANDBOX_NAME, crio::POD_NAME]
    };
    let pod = PodRef {
        uid,
        namespace: get(&[
            containerd::SANDBOX_NAMESPACE,
            crio::POD_NAMESPACE,
            crio::NAMESPACE,
        ])
        .unwrap_or_default(),
        name: get(name_keys).unwrap_or_default(),
    };
    let container_name = if is_sandbox {
        None
    } else {
        get(&[containerd::CONTAINER_NAME, crio::CONTAINER_NAME])
    };
    Ok(ContainerInfo {
        container_id: container_id.to_owned(),
        kind,
        sandbox_id,
        pod,
        container_name,
        image: get(&[containerd::IMAGE_NAME, crio::IMAGE_NAME]),
    })
}

/// The bundle directory of a runtime run, when the command line tells it: the `--bundle` of
/// `create`, `run` and `restore`, else the directory of a `--log .../log.json` (containerd keeps
/// the log in the bundle). A relative path is returned as is (it is relative to the runtime
/// process's working directory, so [`read_config`] refuses it). `None` otherwise (the runtime's
/// state directory does not tell the bundle).
pub fn bundle_dir(invocation: &OciInvocation) -> Option<PathBuf> {
    let flag = match &invocation.command {
        OciCommand::Create(args) | OciCommand::Run(args) => args.bundle.as_deref(),
        OciCommand::Restore { bundle, .. } => bundle.as_deref(),
        _ => None,
    };
    if let Some(bundle) = flag.filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bundle));
    }
    let log = Path::new(invocation.global.log.as_deref()?);
    if log.file_name()? != "log.json" {
        return None;
    }
    log.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SANDBOX: &str = "5c93909cfb10e81c43f714152b5f553ad462af6cd5ca132e8f149ad526015588";
    const CTR: &str = "f32e968b097a52e1cf80af265b4545e13e434203fb32412b834b45f6b25a994e";
    const UID: &str = "7f3c1d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f";
    const CRIO_SANDBOX: &str = "0d4b8f62b0aa3feaa523bd8239cb01185dcc9e1ae0210a8bb64b214df32e8552";
    const CRIO_CTR: &str = "4752b346644196ff60260fde3b5b7f6cc69b28bb4d5a96c198fde74396c2c14d";
    const CRIO_UID: &str = "b2e4c6a8-1d3f-4a5b-8c7d-9e0f1a2b3c4d";

    const CONTAINERD_SANDBOX: &str = include_str!("testdata/containerd-sandbox.config.json");
    const CONTAINERD_CONTAINER: &str = include_str!("testdata/containerd-container.config.json");
    const CRIO_SANDBOX_JSON: &str = include_str!("testdata/crio-sandbox.config.json");
    const CRIO_CONTAINER_JSON: &str = include_str!("testdata/crio-container.config.json");
    const RUNC_SPEC: &str = include_str!("testdata/runc-spec.config.json");

    fn config(json: &str) -> BundleConfig {
        BundleConfig::from_json(json.as_bytes()).expect("valid spec")
    }

    fn web_0() -> PodRef {
        PodRef {
            uid: UID.to_owned(),
            namespace: "shop".to_owned(),
            name: "web-0".to_owned(),
        }
    }

    fn node_exporter() -> PodRef {
        PodRef {
            uid: CRIO_UID.to_owned(),
            namespace: "monitoring".to_owned(),
            name: "node-exporter-x7k2p".to_owned(),
        }
    }

    fn write_bundle(dir: &Path, json: &str) {
        std::fs::write(dir.join(CONFIG_FILE), json).expect("write config.json");
    }

    #[test]
    fn containerd_sandbox() {
        let info = container_info(&config(CONTAINERD_SANDBOX), SANDBOX).expect("a pod");
        assert_eq!(
            info,
            ContainerInfo {
                container_id: SANDBOX.to_owned(),
                kind: Some(ContainerKind::Sandbox),
                sandbox_id: Some(SANDBOX.to_owned()),
                pod: web_0(),
                container_name: None,
                image: None,
            }
        );
    }

    #[test]
    fn containerd_container() {
        let info = container_info(&config(CONTAINERD_CONTAINER), CTR).expect("a pod");
        assert_eq!(
            info,
            ContainerInfo {
                container_id: CTR.to_owned(),
                kind: Some(ContainerKind::Container),
                sandbox_id: Some(SANDBOX.to_owned()),
                pod: web_0(),
                container_name: Some("app".to_owned()),
                image: Some("docker.io/library/busybox:1.36".to_owned()),
            }
        );
    }

    #[test]
    fn crio_sandbox() {
        let info = container_info(&config(CRIO_SANDBOX_JSON), CRIO_SANDBOX).expect("a pod");
        assert_eq!(
            info,
            ContainerInfo {
                container_id: CRIO_SANDBOX.to_owned(),
                kind: Some(ContainerKind::Sandbox),
                sandbox_id: Some(CRIO_SANDBOX.to_owned()),
                pod: node_exporter(),
                // The label says "POD": not a container name.
                container_name: None,
                image: None,
            }
        );
    }

    #[test]
    fn crio_container() {
        let info = container_info(&config(CRIO_CONTAINER_JSON), CRIO_CTR).expect("a pod");
        assert_eq!(
            info,
            ContainerInfo {
                container_id: CRIO_CTR.to_owned(),
                kind: Some(ContainerKind::Container),
                sandbox_id: Some(CRIO_SANDBOX.to_owned()),
                pod: node_exporter(),
                container_name: Some("node-exporter".to_owned()),
                image: Some("quay.io/prometheus/node-exporter:v1.6.0".to_owned()),
            }
        );
    }

    #[test]
    fn crio_labels_stand_in_for_missing_annotations() {
        let labels = serde_json::json!({
            "io.kubernetes.pod.uid": CRIO_UID,
            "io.kubernetes.pod.name": "node-exporter-x7k2p",
            "io.kubernetes.pod.namespace": "monitoring",
            "io.kubernetes.container.name": "node-exporter",
        });
        let spec = serde_json::json!({
            "ociVersion": "1.0.2-dev",
            "annotations": {
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.cri-o.SandboxID": CRIO_SANDBOX,
                "io.kubernetes.cri-o.Labels": labels.to_string(),
            }
        });
        let info = container_info(&config(&spec.to_string()), CRIO_CTR).expect("a pod");
        assert_eq!(info.pod, node_exporter());
        assert_eq!(info.container_name.as_deref(), Some("node-exporter"));
    }

    #[test]
    fn an_annotation_value_of_any_length_is_kept_to_the_cap() {
        let huge = "x".repeat(1 << 20);
        let spec = serde_json::json!({
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": SANDBOX,
                "io.kubernetes.cri.sandbox-uid": UID,
                "io.kubernetes.cri.sandbox-name": huge,
                "io.kubernetes.cri.image-name": huge,
            },
        });
        let info = container_info(&config(&spec.to_string()), CTR).expect("a pod");
        assert!(info.pod.name.len() <= crate::model::MAX_TENANT_TEXT_BYTES);
        assert!(info.pod.name.ends_with('…'));
        assert!(info.image.expect("image").len() <= crate::model::MAX_TENANT_TEXT_BYTES);
    }

    #[test]
    fn pod_uid_from_the_cgroups_path_when_no_annotation_has_it() {
        // containerd before sandbox-uid existed: name and namespace, no UID.
        let spec = serde_json::json!({
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": SANDBOX,
                "io.kubernetes.cri.sandbox-name": "web-0",
                "io.kubernetes.cri.sandbox-namespace": "shop",
            },
            "linux": { "cgroupsPath": format!("/kubepods/besteffort/pod{UID}/{CTR}") }
        });
        let info = container_info(&config(&spec.to_string()), CTR).expect("a pod");
        assert_eq!(info.pod, web_0());
        assert_eq!(info.kind, Some(ContainerKind::Container));

        // A cgroup path of another container does not count.
        let spec = serde_json::json!({
            "linux": { "cgroupsPath": format!("/kubepods/besteffort/pod{UID}/{SANDBOX}") }
        });
        let err = container_info(&config(&spec.to_string()), CTR).expect_err("no pod");
        assert!(matches!(err, BundleError::NoPod { .. }));
    }

    #[test]
    fn kind_from_the_sandbox_id_when_no_type_annotation() {
        let spec = serde_json::json!({
            "annotations": {
                "io.kubernetes.cri.sandbox-id": SANDBOX,
                "io.kubernetes.cri.sandbox-uid": UID,
            }
        });
        let config = config(&spec.to_string());
        let info = container_info(&config, SANDBOX).expect("a pod");
        assert_eq!(info.kind, Some(ContainerKind::Sandbox));
        let info = container_info(&config, CTR).expect("a pod");
        assert_eq!(info.kind, Some(ContainerKind::Container));
        assert_eq!(info.pod.name, "");
    }

    #[test]
    fn spec_without_a_pod() {
        let err = container_info(&config(RUNC_SPEC), CTR).expect_err("no pod");
        assert!(matches!(&err, BundleError::NoPod { container_id } if container_id == CTR));
        assert_eq!(
            err.to_string(),
            format!("spec of container {CTR} names no pod (no pod annotations or pod cgroup)")
        );
        let err = container_info(&config(r#"{"annotations": null}"#), CTR).expect_err("no pod");
        assert!(matches!(err, BundleError::NoPod { .. }));
    }

    #[test]
    fn spec_fields() {
        let config = config(CONTAINERD_CONTAINER);
        assert_eq!(
            config.process_args,
            vec!["sh", "-c", "while true; do sleep 3600; done"]
        );
        assert_eq!(
            config.cgroups_path,
            Some(format!("/kubepods/besteffort/pod{UID}/{CTR}"))
        );
        assert_eq!(config.annotations.len(), 7);
        assert_eq!(
            BundleConfig::from_json(b"{}").expect("valid"),
            BundleConfig::default()
        );
    }

    /// A runtime state root in a temporary directory, with containerd's bundle layout.
    struct State {
        dir: tempfile::TempDir,
        roots: StateRoots,
    }

    impl State {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let roots = StateRoots::new([dir.path().to_owned()]).expect("a valid root");
            Self { dir, roots }
        }

        /// `<state>/io.containerd.runtime.v2.task/k8s.io/<id>`, created.
        fn bundle(&self, id: &str) -> PathBuf {
            let bundle = self
                .dir
                .path()
                .join("io.containerd.runtime.v2.task/k8s.io")
                .join(id);
            std::fs::create_dir_all(&bundle).expect("mkdir");
            bundle
        }
    }

    fn hostfs_error(err: &BundleError) -> &HostFsError {
        match err {
            BundleError::File { source } => source,
            other => panic!("not a file error: {other:?}"),
        }
    }

    #[test]
    fn reads_a_bundle_from_disk() {
        let state = State::new();
        let bundle = state.bundle(CTR);
        write_bundle(&bundle, CONTAINERD_CONTAINER);
        let info = read_bundle(&state.roots, &bundle, CTR).expect("a pod");
        assert_eq!(info.pod, web_0());
        assert_eq!(info.container_name.as_deref(), Some("app"));
    }

    #[test]
    fn missing_bundle() {
        let state = State::new();
        let gone = state
            .dir
            .path()
            .join("io.containerd.runtime.v2.task/k8s.io")
            .join(CTR);
        let err = read_bundle(&state.roots, &gone, CTR).expect_err("no bundle");
        assert!(
            matches!(hostfs_error(&err), HostFsError::Missing { path } if *path == gone.join(CONFIG_FILE)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("{} does not exist", gone.join(CONFIG_FILE).display())
        );
        let err = read_bundle(&state.roots, &state.bundle(CTR), CTR).expect_err("no config.json");
        assert!(matches!(hostfs_error(&err), HostFsError::Missing { .. }));
    }

    #[test]
    fn a_directory_as_config_is_refused() {
        let state = State::new();
        let bundle = state.bundle(CTR);
        std::fs::create_dir(bundle.join(CONFIG_FILE)).expect("mkdir");
        let err = read_bundle(&state.roots, &bundle, CTR).expect_err("not a file");
        assert!(
            matches!(
                hostfs_error(&err),
                HostFsError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_bundle_of_another_container_is_not_read() {
        let state = State::new();
        let other = state.bundle(SANDBOX);
        write_bundle(&other, CONTAINERD_CONTAINER);
        let err = read_bundle(&state.roots, &other, CTR).expect_err("another container's");
        assert!(
            matches!(err, BundleError::NotThisContainer { .. }),
            "{err:?}"
        );
        // CRI-O keeps the bundle in the container's `userdata` directory.
        assert!(names_container(
            Path::new("/run/containers/storage/overlay-containers/abc/userdata"),
            "abc"
        ));
        assert!(!names_container(Path::new("/run/x/userdata"), "abc"));
    }

    #[test]
    fn a_bundle_outside_the_state_roots_is_not_read() {
        let state = State::new();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let planted = elsewhere.path().join(CTR);
        std::fs::create_dir(&planted).expect("mkdir");
        write_bundle(&planted, CONTAINERD_CONTAINER);
        let err = read_bundle(&state.roots, &planted, CTR).expect_err("outside");
        assert!(
            matches!(hostfs_error(&err), HostFsError::OutsideRoots { .. }),
            "{err:?}"
        );
        // A relative --bundle (relative to the runtime's working directory, not the agent's).
        let err = read_bundle(&state.roots, Path::new(CTR), CTR).expect_err("relative");
        assert!(
            matches!(hostfs_error(&err), HostFsError::NotNormal { .. }),
            "{err:?}"
        );
        // `..` out of a root.
        let escape = state
            .dir
            .path()
            .join("..")
            .join(
                elsewhere
                    .path()
                    .file_name()
                    .expect("a temporary directory has a name"),
            )
            .join(CTR);
        let err = read_bundle(&state.roots, &escape, CTR).expect_err("escape");
        assert!(
            matches!(hostfs_error(&err), HostFsError::NotNormal { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_planted_symlink_or_fifo_as_config_is_refused_without_blocking() {
        let state = State::new();
        let outside = tempfile::tempdir().expect("tempdir");
        write_bundle(outside.path(), CONTAINERD_CONTAINER);
        let linked = state.bundle(CTR);
        std::os::unix::fs::symlink(outside.path().join(CONFIG_FILE), linked.join(CONFIG_FILE))
            .expect("symlink");
        let err = read_bundle(&state.roots, &linked, CTR).expect_err("a symlink");
        assert!(
            matches!(hostfs_error(&err), HostFsError::Symlink { .. }),
            "{err:?}"
        );

        let fifo = state.bundle(SANDBOX);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fifo.join(CONFIG_FILE),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let roots = state.roots.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_bundle(&roots, &fifo, SANDBOX));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO config.json blocked")
            .expect_err("a FIFO");
        assert!(
            matches!(
                hostfs_error(&err),
                HostFsError::NotRegular { kind: "FIFO", .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_json() {
        let state = State::new();
        let bundle = state.bundle(CTR);
        write_bundle(&bundle, r#"{"annotations": {"a": "#);
        let err = read_bundle(&state.roots, &bundle, CTR).expect_err("bad json");
        assert!(matches!(err, BundleError::BadJson { .. }));
        assert!(std::error::Error::source(&err).is_some());
        // Annotations must be strings.
        write_bundle(&bundle, r#"{"annotations": {"a": 1}}"#);
        let err = read_bundle(&state.roots, &bundle, CTR).expect_err("bad json");
        assert!(matches!(err, BundleError::BadJson { .. }));
    }

    #[test]
    fn too_large_config() {
        let state = State::new();
        let bundle = state.bundle(CTR);
        write_bundle(&bundle, CONTAINERD_CONTAINER);
        let err = read_config_limited(&state.roots, &bundle, 100).expect_err("too large");
        assert!(
            matches!(hostfs_error(&err), HostFsError::TooLarge { limit: 100, .. }),
            "{err:?}"
        );
        let size = u64::try_from(CONTAINERD_CONTAINER.len()).expect("fits");
        read_config_limited(&state.roots, &bundle, size).expect("exactly at the limit");
    }

    fn invocation(argv: &[&str]) -> OciInvocation {
        OciInvocation::parse(argv).expect("argv parses")
    }

    #[test]
    fn bundle_dir_from_the_bundle_flag() {
        let b = format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}");
        let log = format!("{b}/log.json");
        let inv = invocation(&[
            "runc",
            "--log",
            "/elsewhere/log.json",
            "create",
            "--bundle",
            &b,
            CTR,
        ]);
        assert_eq!(bundle_dir(&inv), Some(PathBuf::from(&b)));
        let inv = invocation(&["runc", "--log", &log, "start", CTR]);
        assert_eq!(bundle_dir(&inv), Some(PathBuf::from(&b)));
        let inv = invocation(&["runc", "restore", "-b", "/r", CTR]);
        assert_eq!(bundle_dir(&inv), Some(PathBuf::from("/r")));
        let inv = invocation(&["runc", "create", "--bundle", ".", CTR]);
        assert_eq!(bundle_dir(&inv), Some(PathBuf::from(".")));
    }

    #[test]
    fn no_bundle_dir() {
        for argv in [
            vec!["runc", "init"],
            vec!["runc", "--root", "/run/runc", "kill", CTR, "9"],
            vec!["runc", "--log", "/var/log/runc.log", "delete", CTR],
            vec!["runc", "--log", "log.json", "delete", CTR],
            vec!["runc", "create", CTR],
        ] {
            assert_eq!(bundle_dir(&invocation(&argv)), None, "{argv:?}");
        }
    }
}
