//! The pod and container a process belongs to, read from its cgroup path.
//!
//! kubelet puts every pod in a cgroup named after its UID, and the runtime puts each container
//! in one named after the container id under it:
//! - cgroupfs driver: `/kubepods/besteffort/pod<uid>/<64-hex id>` (`/kubepods/pod<uid>/...` for
//!   guaranteed pods; CRI-O names the container cgroup `crio-<id>`);
//! - systemd driver: `/kubepods.slice/kubepods-besteffort.slice/
//!   kubepods-besteffort-pod<uid with _ for ->.slice/cri-containerd-<id>.scope` (`crio-<id>.scope`,
//!   `crio-conmon-<id>.scope`, `docker-<id>.scope`).
//!
//! The same names may sit deeper (a node in a container: `/docker/<id>/kubepods/...`), so only
//! what follows the last pod segment counts.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a process's cgroups could not be read.
#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine {
    /// 0 for the cgroup v2 line.
    pub hierarchy_id: u32,
    /// `memory`, `cpu,cpuacct`, `name=systemd`; empty for cgroup v2.
    pub controllers: Vec<String>,
    pub path: String,
}

impl CgroupLine {
    /// Parses one line; `None` when it is not of the form `number:controllers:path`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.trim_end_matches(['\n', '\r']).splitn(3, ':');
        let hierarchy_id = parts.next()?.parse().ok()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        Some(Self {
            hierarchy_id,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: path.to_owned(),
        })
    }
}

/// What a cgroup path tells about the pod of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod UID, with dashes (the systemd form's underscores undone).
    pub pod_uid: String,
    /// The container id, when the process is in a container's cgroup (not the pod's own).
    pub container_id: Option<String>,
}

/// The pod (and container) of a cgroup path; `None` when the path is not under a pod cgroup.
pub fn parse_cgroup_path(path: &str) -> Option<PodCgroup> {
    let mut found: Option<PodCgroup> = None;
    for segment in path.split('/') {
        if let Some(pod_uid) = pod_uid_of_segment(segment) {
            found = Some(PodCgroup {
                pod_uid,
                container_id: None,
            });
        } else if let (Some(pod), Some(id)) = (found.as_mut(), container_id_of_segment(segment)) {
            pod.container_id = Some(id.to_owned());
        }
    }
    found
}

/// The pod of an OCI spec's `linux.cgroupsPath`: a path, or systemd's `slice:prefix:name`
/// (`kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`).
pub fn parse_cgroups_path(cgroups_path: &str) -> Option<PodCgroup> {
    if !cgroups_path.contains('/') {
        let mut parts = cgroups_path.split(':');
        if let (Some(slice), Some(prefix), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            let scope = if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            return parse_cgroup_path(&format!("{slice}/{scope}"));
        }
    }
    parse_cgroup_path(cgroups_path)
}

/// The pod of a process from the content of its `/proc/<pid>/cgroup` (v1, hybrid or v2): the
/// first line that names a container, else the first that names a pod.
pub fn parse_proc_cgroup(content: &str) -> Option<PodCgroup> {
    let mut pod_only = None;
    for line in content.lines().filter_map(CgroupLine::parse) {
        match parse_cgroup_path(&line.path) {
            Some(found) if found.container_id.is_some() => return Some(found),
            Some(found) => {
                pod_only.get_or_insert(found);
            }
            None => {}
        }
    }
    pod_only
}

/// Reads `/proc/<pid>/cgroup`.
pub fn read_proc_cgroup(pid: u32) -> Result<String, CgroupError> {
    read_proc_cgroup_in(Path::new("/proc"), pid)
}

/// Reads `<proc_root>/<pid>/cgroup` (a different proc mount, or a test directory).
pub fn read_proc_cgroup_in(proc_root: &Path, pid: u32) -> Result<String, CgroupError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

/// The pod a running process is in, from `/proc/<pid>/cgroup`.
pub fn pod_cgroup_of_pid(pid: u32) -> Result<Option<PodCgroup>, CgroupError> {
    Ok(parse_proc_cgroup(&read_proc_cgroup(pid)?))
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of_segment(segment: &str) -> Option<String> {
    let uid = match segment.strip_suffix(".slice") {
        Some(slice) => slice
            .rsplit('-')
            .next()?
            .strip_prefix("pod")?
            .replace('_', "-"),
        None => segment.strip_prefix("pod")?.to_owned(),
    };
    let uid_like = (8..=64).contains(&uid.len())
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && !uid.starts_with('-')
        && !uid.ends_with('-');
    uid_like.then_some(uid)
}

/// `<id>`, `<prefix>-<id>` or `<prefix>-<id>.scope`, where the id is 64 hex digits.
fn container_id_of_segment(segment: &str) -> Option<&str> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = name.rsplit('-').next()?;
    is_container_id(id).then_some(id)
}

/// Whether `text` looks like a runtime's container id: 64 lower-case hex digits.
pub fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "7f3c1d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f";
    const UID_SYSTEMD: &str = "7f3c1d2e_8a4b_4c5d_9e6f_0a1b2c3d4e5f";
    const ID: &str = "f32e968b097a52e1cf80af265b4545e13e434203fb32412b834b45f6b25a994e";
    const OTHER_ID: &str = "960e851cd3e2b7fe1f102831824139ac5c109d9cf404722b3d9839e95b749913";

    fn pod(container: Option<&str>) -> Option<PodCgroup> {
        Some(PodCgroup {
            pod_uid: UID.to_owned(),
            container_id: container.map(str::to_owned),
        })
    }

    #[test]
    fn cgroupfs_paths() {
        for qos in ["/kubepods/besteffort", "/kubepods/burstable", "/kubepods"] {
            let path = format!("{qos}/pod{UID}/{ID}");
            assert_eq!(parse_cgroup_path(&path), pod(Some(ID)), "{path}");
            assert_eq!(parse_cgroup_path(&format!("{qos}/pod{UID}")), pod(None));
        }
        let crio = format!("/kubepods/burstable/pod{UID}/crio-{ID}");
        assert_eq!(parse_cgroup_path(&crio), pod(Some(ID)));
    }

    #[test]
    fn systemd_paths() {
        for (runtime_prefix, qos) in [
            ("cri-containerd", "besteffort"),
            ("crio", "burstable"),
            ("crio-conmon", "besteffort"),
            ("docker", "burstable"),
        ] {
            let path = format!(
                "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_SYSTEMD}.slice/{runtime_prefix}-{ID}.scope"
            );
            assert_eq!(parse_cgroup_path(&path), pod(Some(ID)), "{path}");
        }
        let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-{ID}.scope");
        assert_eq!(parse_cgroup_path(&guaranteed), pod(Some(ID)));
        // CRI-O with cgroup v2 can nest the container's processes one level deeper.
        let nested = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-{ID}.scope/container"
        );
        assert_eq!(parse_cgroup_path(&nested), pod(Some(ID)));
    }

    #[test]
    fn static_pod_uids_are_bare_hashes() {
        let uid = "3c0b4d8f9e1a2b7c6d5e4f3a2b1c0d9e";
        let path = format!("/kubepods/burstable/pod{uid}/{ID}");
        let found = parse_cgroup_path(&path).expect("a pod");
        assert_eq!(found.pod_uid, uid);
    }

    #[test]
    fn only_what_follows_the_pod_segment_counts() {
        // A node inside a container (kind): the outer container's id comes first.
        let path = format!("/docker/{OTHER_ID}/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(parse_cgroup_path(&path), pod(Some(ID)));
        let path = format!("/docker/{OTHER_ID}/kubepods/besteffort/pod{UID}");
        assert_eq!(parse_cgroup_path(&path), pod(None));
    }

    #[test]
    fn paths_outside_pods() {
        for path in [
            "/",
            "",
            "/system.slice/containerd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods",
            "/kubepods/besteffort",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/pods/x",
            "/podcast",
            &format!("/docker/{ID}"),
            &format!("/system.slice/docker-{ID}.scope"),
        ] {
            assert_eq!(parse_cgroup_path(path), None, "{path}");
        }
    }

    #[test]
    fn short_or_upper_case_ids_are_not_container_ids() {
        let path = format!("/kubepods/besteffort/pod{UID}/abc123");
        assert_eq!(parse_cgroup_path(&path), pod(None));
        let path = format!("/kubepods/besteffort/pod{UID}/{}", ID.to_uppercase());
        assert_eq!(parse_cgroup_path(&path), pod(None));
        assert!(is_container_id(ID));
        assert!(!is_container_id(&ID[1..]));
    }

    #[test]
    fn spec_cgroups_paths() {
        assert_eq!(
            parse_cgroups_path(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            pod(Some(ID))
        );
        assert_eq!(
            parse_cgroups_path(&format!(
                "kubepods-besteffort-pod{UID_SYSTEMD}.slice:cri-containerd:{ID}"
            )),
            pod(Some(ID))
        );
        assert_eq!(
            parse_cgroups_path(&format!(
                "kubepods-burstable-pod{UID_SYSTEMD}.slice:crio:{ID}"
            )),
            pod(Some(ID))
        );
        assert_eq!(parse_cgroups_path("system.slice:runc:abc"), None);
    }

    #[test]
    fn proc_cgroup_of_a_v1_hybrid_node() {
        let path = format!("/kubepods/besteffort/pod{UID}/{ID}");
        let content = format!(
            "12:hugetlb:{path}\n11:memory:{path}\n10:cpu,cpuacct:{path}\n4:pids:{path}\n\
             1:name=systemd:{path}\n0::/\n"
        );
        assert_eq!(parse_proc_cgroup(&content), pod(Some(ID)));
        let lines: Vec<CgroupLine> = content.lines().filter_map(CgroupLine::parse).collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(lines[4].controllers, vec!["name=systemd"]);
        assert_eq!(lines[5].hierarchy_id, 0);
        assert!(lines[5].controllers.is_empty());
    }

    #[test]
    fn proc_cgroup_of_a_v2_node() {
        let content = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(parse_proc_cgroup(&content), pod(Some(ID)));
    }

    #[test]
    fn proc_cgroup_prefers_a_line_that_names_the_container() {
        let content = format!(
            "5:memory:/kubepods/besteffort/pod{UID}\n4:pids:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        assert_eq!(parse_proc_cgroup(&content), pod(Some(ID)));
        let content = format!("5:memory:/kubepods/besteffort/pod{UID}\n0::/\n");
        assert_eq!(parse_proc_cgroup(&content), pod(None));
    }

    #[test]
    fn proc_cgroup_outside_pods_or_malformed() {
        assert_eq!(
            parse_proc_cgroup("0::/system.slice/containerd.service\n"),
            None
        );
        assert_eq!(parse_proc_cgroup(""), None);
        assert_eq!(parse_proc_cgroup("garbage\nx:y:z\n"), None);
        assert_eq!(CgroupLine::parse("garbage"), None);
        assert_eq!(CgroupLine::parse("x:memory:/"), None);
        // A path may contain colons.
        let line = CgroupLine::parse("3:cpuset:/a:b").expect("a line");
        assert_eq!(line.path, "/a:b");
    }

    #[test]
    fn reads_proc_cgroup_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("42")).expect("mkdir");
        let content = format!("0::/kubepods/besteffort/pod{UID}/{ID}\n");
        std::fs::write(dir.path().join("42/cgroup"), &content).expect("write");
        assert_eq!(read_proc_cgroup_in(dir.path(), 42).expect("reads"), content);
        let err = read_proc_cgroup_in(dir.path(), 43).expect_err("no such pid");
        assert!(matches!(err, CgroupError::Read { .. }));
        assert!(err.to_string().starts_with("cannot read "));
    }

    #[test]
    fn reads_own_proc_cgroup() {
        let content = read_proc_cgroup(std::process::id()).expect("own cgroup is readable");
        assert!(content.lines().any(|l| CgroupLine::parse(l).is_some()));
        // The test runner itself is not in a pod (or, if it is, this still parses).
        let _ = pod_cgroup_of_pid(std::process::id()).expect("reads");
    }
}
