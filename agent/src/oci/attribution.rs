//! Which container and pod a runtime run was about: from the cache, the bundle, or the cgroup.

use std::fmt;

use thiserror::Error;

use super::argv::OciInvocation;
use super::bundle::{BundleError, bundle_dir, read_bundle};
use super::cache::ContainerCache;
use super::cgroup::{PodCgroup, parse_proc_cgroup};
use super::info::{ContainerInfo, ContainerKind};
use crate::hostfs::StateRoots;
use crate::model::{Attribute, PodRef, keys};

/// Where the container's pod was found.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttributionSource {
    /// Learnt earlier (from a bundle, or a sandbox the CRI side reported).
    Cache,
    /// Read now from the bundle's `config.json`.
    Bundle,
    /// Only the process's cgroup path: the pod UID, maybe not its name.
    Cgroup,
}

impl AttributionSource {
    /// The value of `nodetrace.attribution.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Bundle => "bundle",
            Self::Cgroup => "cgroup",
        }
    }
}

/// A run's container and pod, and where they were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub info: ContainerInfo,
    pub source: AttributionSource,
}

impl Attribution {
    /// The container's attributes, plus `nodetrace.attributed` and `nodetrace.attribution.source`.
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut attributes = self.info.attributes();
        attributes.push(Attribute::bool(keys::ATTRIBUTED, true));
        attributes.push(Attribute::str(
            keys::ATTRIBUTION_SOURCE,
            self.source.as_str(),
        ));
        attributes
    }
}

/// Why the process's cgroup did not tell the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupMiss {
    /// The caller had no cgroup for the process.
    NotGiven,
    /// The cgroup is not under a pod's.
    NoPod,
    /// The cgroup is a pod's, but the command names no container and the cgroup none either.
    NoContainer,
    /// The cgroup belongs to another container than the one the command names.
    OtherContainer { container_id: String },
}

impl fmt::Display for CgroupMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGiven => f.write_str("no cgroup was given"),
            Self::NoPod => f.write_str("its cgroup is not a pod's"),
            Self::NoContainer => f.write_str("its cgroup names a pod but no container"),
            Self::OtherContainer { container_id } => {
                write!(f, "its cgroup is container {container_id}'s")
            }
        }
    }
}

/// Why a run could not be tied to a pod. The span is then marked not attributed.
#[derive(Debug, Error)]
pub enum AttributionError {
    #[error("`{span_name}` names no container, and {cgroup}")]
    NoContainerId {
        span_name: String,
        cgroup: CgroupMiss,
    },
    #[error("container {container_id} is not cached, `{span_name}` tells no bundle, and {cgroup}")]
    NoBundle {
        span_name: String,
        container_id: String,
        cgroup: CgroupMiss,
    },
    #[error("container {container_id} is not cached, its bundle tells no pod, and {cgroup}")]
    Bundle {
        container_id: String,
        cgroup: CgroupMiss,
        #[source]
        source: BundleError,
    },
}

impl AttributionError {
    /// A short, fixed label for counters: `no_container_id`, `no_bundle`, `bundle`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoContainerId { .. } => "no_container_id",
            Self::NoBundle { .. } => "no_bundle",
            Self::Bundle { .. } => "bundle",
        }
    }

    /// `nodetrace.attributed = false` and `nodetrace.attribution.error` (the whole chain).
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        vec![
            Attribute::bool(keys::ATTRIBUTED, false),
            Attribute::str(keys::ATTRIBUTION_ERROR, message),
        ]
    }
}

/// Finds the container and pod of a runtime run: first the cache (by the container id the
/// command names, also as a sandbox id), then the bundle (its `--bundle`, or the directory of
/// its `--log`, read only beneath the runtime's `state_roots`; what it tells is cached), then
/// the process's cgroup (`proc_cgroup`: the content of `/proc/<pid>/cgroup`, when the caller
/// has it). A cgroup gives the pod UID; the cache may then add the pod's name. Never panics.
pub fn attribute(
    invocation: &OciInvocation,
    proc_cgroup: Option<&str>,
    state_roots: &StateRoots,
    cache: &mut ContainerCache,
) -> Result<Attribution, AttributionError> {
    let container_id = invocation.container_id();
    if let Some(id) = container_id
        && let Some(found) = from_cache(id, cache)
    {
        return Ok(found);
    }

    let bundle_error = match (container_id, bundle_dir(invocation)) {
        (Some(id), Some(dir)) => match read_bundle(state_roots, &dir, id) {
            Ok(info) => {
                cache.insert(info.clone());
                return Ok(Attribution {
                    info,
                    source: AttributionSource::Bundle,
                });
            }
            Err(error) => Some(error),
        },
        _ => None,
    };

    let cgroup = match proc_cgroup {
        None => Err(CgroupMiss::NotGiven),
        Some(content) => parse_proc_cgroup(content).ok_or(CgroupMiss::NoPod),
    };
    let miss = match cgroup.and_then(|found| from_cgroup(container_id, found, cache)) {
        Ok(found) => return Ok(found),
        Err(miss) => miss,
    };

    Err(match (container_id, bundle_error) {
        (None, _) => AttributionError::NoContainerId {
            span_name: invocation.span_name(),
            cgroup: miss,
        },
        (Some(id), None) => AttributionError::NoBundle {
            span_name: invocation.span_name(),
            container_id: id.to_owned(),
            cgroup: miss,
        },
        (Some(id), Some(source)) => AttributionError::Bundle {
            container_id: id.to_owned(),
            cgroup: miss,
            source,
        },
    })
}

/// A cached container, or a cached sandbox.
fn from_cache(container_id: &str, cache: &mut ContainerCache) -> Option<Attribution> {
    let info = match cache.get(container_id) {
        Some(info) => info.clone(),
        None => ContainerInfo {
            container_id: container_id.to_owned(),
            kind: Some(ContainerKind::Sandbox),
            sandbox_id: Some(container_id.to_owned()),
            pod: cache.sandbox_pod(container_id)?.clone(),
            container_name: None,
            image: None,
        },
    };
    Some(Attribution {
        info,
        source: AttributionSource::Cache,
    })
}

fn from_cgroup(
    container_id: Option<&str>,
    found: PodCgroup,
    cache: &mut ContainerCache,
) -> Result<Attribution, CgroupMiss> {
    let container_id = match (container_id, found.container_id) {
        (Some(named), Some(other)) if named != other => {
            return Err(CgroupMiss::OtherContainer {
                container_id: other,
            });
        }
        (Some(named), _) => named.to_owned(),
        (None, Some(from_cgroup)) => {
            if let Some(cached) = from_cache(&from_cgroup, cache) {
                return Ok(cached);
            }
            from_cgroup
        }
        (None, None) => return Err(CgroupMiss::NoContainer),
    };

    let known = cache.pod(&found.pod_uid).cloned();
    let is_sandbox = cache.sandbox_pod(&container_id).is_some()
        || known.as_ref().and_then(|k| k.sandbox_id.as_deref()) == Some(container_id.as_str());
    let (pod, sandbox_id) = match known {
        Some(known) => (known.pod, known.sandbox_id),
        None => (
            PodRef {
                uid: found.pod_uid,
                ..PodRef::default()
            },
            None,
        ),
    };
    let kind = if is_sandbox {
        Some(ContainerKind::Sandbox)
    } else if sandbox_id.is_some() {
        Some(ContainerKind::Container)
    } else {
        None
    };
    Ok(Attribution {
        info: ContainerInfo {
            container_id,
            kind,
            sandbox_id,
            pod,
            container_name: None,
            image: None,
        },
        source: AttributionSource::Cgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostfs::HostFsError;
    use crate::oci::bundle::CONFIG_FILE;

    const SANDBOX: &str = "5c93909cfb10e81c43f714152b5f553ad462af6cd5ca132e8f149ad526015588";
    const CTR: &str = "f32e968b097a52e1cf80af265b4545e13e434203fb32412b834b45f6b25a994e";
    const OTHER: &str = "960e851cd3e2b7fe1f102831824139ac5c109d9cf404722b3d9839e95b749913";
    const UID: &str = "7f3c1d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f";
    const CONTAINERD_CONTAINER: &str = include_str!("testdata/containerd-container.config.json");
    const CONTAINERD_SANDBOX: &str = include_str!("testdata/containerd-sandbox.config.json");

    fn web_0() -> PodRef {
        PodRef {
            uid: UID.to_owned(),
            namespace: "shop".to_owned(),
            name: "web-0".to_owned(),
        }
    }

    fn inv(argv: &[&str]) -> OciInvocation {
        OciInvocation::parse(argv).expect("argv parses")
    }

    /// The state directory as the only state root.
    fn roots(state: &tempfile::TempDir) -> StateRoots {
        StateRoots::new([state.path().to_owned()]).expect("a valid root")
    }

    /// A containerd-like state directory with one bundle per (id, config).
    fn bundles(configs: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (id, json) in configs {
            let bundle = dir.path().join(id);
            std::fs::create_dir(&bundle).expect("mkdir");
            std::fs::write(bundle.join(CONFIG_FILE), json).expect("write");
        }
        dir
    }

    fn proc_cgroup(id: &str) -> String {
        let path = format!("/kubepods/besteffort/pod{UID}/{id}");
        format!("11:memory:{path}\n4:pids:{path}\n1:name=systemd:{path}\n0::/\n")
    }

    #[test]
    fn create_reads_the_bundle_and_later_runs_hit_the_cache() {
        let state = bundles(&[(CTR, CONTAINERD_CONTAINER)]);
        let roots = roots(&state);
        let bundle = state.path().join(CTR);
        let bundle = bundle.to_str().expect("utf-8");
        let log = format!("{bundle}/log.json");
        let pid_file = format!("{bundle}/init.pid");
        let mut cache = ContainerCache::new(16);

        let create = inv(&[
            "runc",
            "--root",
            "/run/containerd/runc/k8s.io",
            "--log",
            &log,
            "--log-format",
            "json",
            "create",
            "--bundle",
            bundle,
            "--pid-file",
            &pid_file,
            CTR,
        ]);
        let found = attribute(&create, None, &roots, &mut cache).expect("attributed");
        assert_eq!(found.source, AttributionSource::Bundle);
        assert_eq!(found.info.pod, web_0());
        assert_eq!(found.info.container_name.as_deref(), Some("app"));
        assert!(
            found
                .attributes()
                .contains(&Attribute::str(keys::ATTRIBUTION_SOURCE, "bundle"))
        );

        // The bundle is gone after delete: the cache still knows.
        std::fs::remove_dir_all(state.path().join(CTR)).expect("rm bundle");
        for argv in [
            vec!["runc", "--log", log.as_str(), "start", CTR],
            vec!["runc", "--log", log.as_str(), "kill", CTR, "15"],
            vec!["runc", "--log", log.as_str(), "delete", "--force", CTR],
        ] {
            let found = attribute(&inv(&argv), None, &roots, &mut cache).expect("attributed");
            assert_eq!(found.source, AttributionSource::Cache, "{argv:?}");
            assert_eq!(found.info.pod, web_0());
        }
    }

    #[test]
    fn start_finds_the_bundle_through_its_log() {
        let state = bundles(&[(SANDBOX, CONTAINERD_SANDBOX)]);
        let roots = roots(&state);
        let log = state.path().join(SANDBOX).join("log.json");
        let log = log.to_str().expect("utf-8");
        let mut cache = ContainerCache::new(16);
        let found = attribute(
            &inv(&["runc", "--log", log, "start", SANDBOX]),
            None,
            &roots,
            &mut cache,
        )
        .expect("attributed");
        assert_eq!(found.source, AttributionSource::Bundle);
        assert_eq!(found.info.kind, Some(ContainerKind::Sandbox));
        assert_eq!(cache.sandbox_pod(SANDBOX), Some(&web_0()));
    }

    #[test]
    fn runc_init_is_attributed_by_its_cgroup() {
        let mut cache = ContainerCache::new(16);
        let init = inv(&["runc", "init"]);
        let found = attribute(
            &init,
            Some(&proc_cgroup(CTR)),
            &StateRoots::default(),
            &mut cache,
        )
        .expect("attributed");
        assert_eq!(found.source, AttributionSource::Cgroup);
        assert_eq!(found.info.container_id, CTR);
        assert_eq!(found.info.kind, None);
        assert_eq!(
            found.info.pod,
            PodRef {
                uid: UID.to_owned(),
                ..PodRef::default()
            }
        );
        // A cgroup-only answer is not cached.
        assert!(cache.is_empty());
    }

    #[test]
    fn cgroup_container_known_to_the_cache() {
        let state = bundles(&[(CTR, CONTAINERD_CONTAINER)]);
        let roots = roots(&state);
        let mut cache = ContainerCache::new(16);
        let bundle = state.path().join(CTR);
        let create = inv(&[
            "runc",
            "create",
            "--bundle",
            bundle.to_str().expect("utf-8"),
            CTR,
        ]);
        attribute(&create, None, &roots, &mut cache).expect("attributed");

        let found = attribute(
            &inv(&["runc", "init"]),
            Some(&proc_cgroup(CTR)),
            &roots,
            &mut cache,
        )
        .expect("attributed");
        assert_eq!(found.source, AttributionSource::Cache);
        assert_eq!(found.info.container_name.as_deref(), Some("app"));
    }

    #[test]
    fn cgroup_pod_known_to_the_cache() {
        let mut cache = ContainerCache::new(16);
        cache.insert_sandbox(SANDBOX, web_0());
        let found = attribute(
            &inv(&["runc", "init"]),
            Some(&proc_cgroup(CTR)),
            &StateRoots::default(),
            &mut cache,
        )
        .expect("attributed");
        assert_eq!(found.source, AttributionSource::Cgroup);
        assert_eq!(found.info.pod, web_0());
        assert_eq!(found.info.kind, Some(ContainerKind::Container));
        assert_eq!(found.info.sandbox_id.as_deref(), Some(SANDBOX));
    }

    #[test]
    fn a_known_sandbox_is_a_cache_hit() {
        let mut cache = ContainerCache::new(16);
        cache.insert_sandbox(SANDBOX, web_0());
        let found = attribute(
            &inv(&["runc", "kill", SANDBOX, "9"]),
            None,
            &StateRoots::default(),
            &mut cache,
        )
        .expect("attributed");
        assert_eq!(found.source, AttributionSource::Cache);
        assert_eq!(found.info.kind, Some(ContainerKind::Sandbox));
        assert_eq!(found.info.pod, web_0());
    }

    #[test]
    fn cgroup_of_the_pod_only_with_a_named_container() {
        let mut cache = ContainerCache::new(16);
        let content = format!("0::/kubepods/besteffort/pod{UID}\n");
        let found = attribute(
            &inv(&["runc", "kill", CTR]),
            Some(&content),
            &StateRoots::default(),
            &mut cache,
        )
        .expect("attributed");
        assert_eq!(found.source, AttributionSource::Cgroup);
        assert_eq!(found.info.container_id, CTR);
        assert_eq!(found.info.pod.uid, UID);
    }

    #[test]
    fn cgroup_of_another_container_does_not_count() {
        let mut cache = ContainerCache::new(16);
        let err = attribute(
            &inv(&["runc", "kill", CTR]),
            Some(&proc_cgroup(OTHER)),
            &StateRoots::default(),
            &mut cache,
        )
        .expect_err("not attributed");
        assert!(matches!(
            &err,
            AttributionError::NoBundle { cgroup: CgroupMiss::OtherContainer { container_id }, .. }
                if container_id == OTHER
        ));
        assert_eq!(err.reason(), "no_bundle");
    }

    #[test]
    fn nothing_to_go_on() {
        let mut cache = ContainerCache::new(16);
        let err = attribute(
            &inv(&["runc", "--root", "/r", "kill", CTR, "9"]),
            None,
            &StateRoots::default(),
            &mut cache,
        )
        .expect_err("not attributed");
        assert_eq!(
            err.to_string(),
            format!(
                "container {CTR} is not cached, `runc kill` tells no bundle, and no cgroup was given"
            )
        );
        let err = attribute(
            &inv(&["runc", "list"]),
            None,
            &StateRoots::default(),
            &mut cache,
        )
        .expect_err("not attributed");
        assert_eq!(err.reason(), "no_container_id");
        assert_eq!(
            err.to_string(),
            "`runc list` names no container, and no cgroup was given"
        );
        let err = attribute(
            &inv(&["runc", "init"]),
            Some("0::/system.slice/containerd.service\n"),
            &StateRoots::default(),
            &mut cache,
        )
        .expect_err("not attributed");
        assert!(matches!(
            err,
            AttributionError::NoContainerId {
                cgroup: CgroupMiss::NoPod,
                ..
            }
        ));
        let err = attribute(
            &inv(&["runc", "init"]),
            Some(&format!("0::/kubepods/pod{UID}\n")),
            &StateRoots::default(),
            &mut cache,
        )
        .expect_err("not attributed");
        assert!(matches!(
            err,
            AttributionError::NoContainerId {
                cgroup: CgroupMiss::NoContainer,
                ..
            }
        ));
        let err = attribute(
            &inv(&["runc", "init"]),
            Some("\u{0}garbage::\n:::\n"),
            &StateRoots::default(),
            &mut cache,
        )
        .expect_err("not attributed");
        assert!(matches!(
            err,
            AttributionError::NoContainerId {
                cgroup: CgroupMiss::NoPod,
                ..
            }
        ));
    }

    #[test]
    fn a_deleted_bundle_is_reported_with_its_cause() {
        let state = tempfile::tempdir().expect("tempdir");
        let roots = roots(&state);
        let log = state.path().join(CTR).join("log.json");
        let mut cache = ContainerCache::new(16);
        let err = attribute(
            &inv(&["runc", "--log", log.to_str().expect("utf-8"), "delete", CTR]),
            None,
            &roots,
            &mut cache,
        )
        .expect_err("not attributed");
        assert!(matches!(
            &err,
            AttributionError::Bundle {
                source: BundleError::File {
                    source: HostFsError::Missing { .. }
                },
                cgroup: CgroupMiss::NotGiven,
                ..
            }
        ));
        assert_eq!(err.reason(), "bundle");
        let attributes = err.attributes();
        assert_eq!(attributes[0], Attribute::bool(keys::ATTRIBUTED, false));
        let message = match &attributes[1].value {
            crate::model::AttrValue::Str(message) => message.clone(),
            other => panic!("not a string: {other:?}"),
        };
        assert!(message.contains("its bundle tells no pod"), "{message}");
        assert!(message.contains("does not exist"), "{message}");

        // The cgroup still saves it.
        let found = attribute(
            &inv(&["runc", "--log", log.to_str().expect("utf-8"), "delete", CTR]),
            Some(&proc_cgroup(CTR)),
            &roots,
            &mut cache,
        )
        .expect("attributed");
        assert_eq!(found.source, AttributionSource::Cgroup);
    }

    #[test]
    fn a_bundle_outside_the_state_roots_is_not_read_and_the_cgroup_decides() {
        let state = bundles(&[]);
        let planted = bundles(&[(CTR, CONTAINERD_CONTAINER)]);
        let bundle = planted.path().join(CTR);
        let create = inv(&[
            "runc",
            "create",
            "--bundle",
            bundle.to_str().expect("utf-8"),
            CTR,
        ]);
        let mut cache = ContainerCache::new(16);
        let err = attribute(&create, None, &roots(&state), &mut cache).expect_err("refused");
        assert!(
            matches!(
                &err,
                AttributionError::Bundle {
                    source: BundleError::File {
                        source: HostFsError::OutsideRoots { .. }
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            cache.is_empty(),
            "nothing from the planted bundle is cached"
        );
        let found = attribute(&create, Some(&proc_cgroup(CTR)), &roots(&state), &mut cache)
            .expect("attributed");
        assert_eq!(found.source, AttributionSource::Cgroup);
        assert_eq!(found.info.container_name, None);
    }
}
