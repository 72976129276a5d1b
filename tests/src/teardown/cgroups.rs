//! Locates a pod cgroup (`/kubepods/besteffort/pod<uid>`) in every mounted hierarchy
//! (the v1 controllers and cgroup2 at `/sys/fs/cgroup/unified` on this hybrid layout)
//! and removes it with the container cgroups below it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::mounts::read_mountinfo;
use super::processes::subdirectories;
use crate::pod_cgroups::is_pod_cgroup_parent;

/// The mount points of every cgroup hierarchy (v1 and v2) whose root is mounted.
pub fn hierarchy_mounts() -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = read_mountinfo()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| (m.fs_type == "cgroup" || m.fs_type == "cgroup2") && m.root == "/")
        .map(|m| m.mount_point)
        .collect();
    mounts.sort();
    mounts.dedup();
    mounts
}

/// The directories of cgroup `path` (e.g. `/kubepods/besteffort/pod<uid>`) that exist,
/// one per hierarchy.
pub fn existing_dirs(path: &str) -> Vec<PathBuf> {
    let relative = path.trim_start_matches('/');
    hierarchy_mounts()
        .into_iter()
        .map(|mount| mount.join(relative))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Removes the pod cgroup `parent` and everything below it in every hierarchy. Refuses
/// anything that is not a pod cgroup. Retries while the kernel still reports it busy (a
/// killed process leaves its cgroup a moment later), at most `timeout`.
pub fn remove_pod_cgroup(parent: &str, timeout: Duration) -> Result<Vec<PathBuf>, String> {
    if !is_pod_cgroup_parent(parent) {
        return Err(format!("refusing to remove {parent}: not a pod cgroup"));
    }
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    for dir in existing_dirs(parent) {
        match remove_tree(&dir, timeout) {
            Ok(mut dirs) => removed.append(&mut dirs),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(removed)
    } else {
        Err(problems.join("; "))
    }
}

/// `rmdir` of every cgroup below `dir` (deepest first), then of `dir`.
fn remove_tree(dir: &Path, timeout: Duration) -> Result<Vec<PathBuf>, String> {
    let mut order = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(cgroup) = stack.pop() {
        stack.extend(subdirectories(&cgroup));
        order.push(cgroup);
    }
    order.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut removed = Vec::new();
    for cgroup in order {
        let started = Instant::now();
        loop {
            match std::fs::remove_dir(&cgroup) {
                Ok(()) => {
                    removed.push(cgroup);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if started.elapsed() < timeout => {
                    tracing::debug!(cgroup = %cgroup.display(), error = %e, "cgroup busy, retrying");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("rmdir {}: {e}", cgroup.display())),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_pod_cgroups() {
        assert!(remove_pod_cgroup("/kubepods", Duration::ZERO).is_err());
        assert!(remove_pod_cgroup("/", Duration::ZERO).is_err());
    }

    #[test]
    fn a_missing_pod_cgroup_is_already_removed() {
        let removed = remove_pod_cgroup(
            "/kubepods/besteffort/pod00000000-0000-4000-8000-nonexistent",
            Duration::ZERO,
        )
        .expect("nothing to remove");
        assert!(removed.is_empty());
    }
}
