//! crun on a hybrid cgroup layout: crun refuses to run when the cgroup2 hierarchy of a hybrid
//! layout has any controller ("cgroups in hybrid mode not supported, drop all controllers from
//! cgroupv2"). On this machine kind `hugetlb` has no v1 hierarchy, so it sits in cgroup2. The
//! guard here mounts a v1 hierarchy for each such controller (which moves the controller out
//! of cgroup2) and, when dropped, removes the cgroups made below it and unmounts it.
//!
//! The kernel frees an unmounted v1 hierarchy lazily: the controller may stay bound to it
//! (invisible, empty) after the unmount instead of returning to cgroup2 at once. Nothing uses
//! it then; runc and containerd do not need it.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The cgroup2 mount of a hybrid layout.
pub const UNIFIED: &str = "/sys/fs/cgroup/unified";
/// Where v1 hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What can go wrong moving the controllers.
#[derive(Debug, thiserror::Error)]
pub enum ControllersError {
    /// A file could not be read or a directory made.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// mount(2) failed.
    #[error("mount the {controller} controller's v1 hierarchy at {path}: {source}")]
    Mount {
        /// The controller.
        controller: String,
        /// The mount point.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The v1 hierarchies mounted for crun; dropping it unmounts them.
#[derive(Debug, Default)]
pub struct ControllersOnV1 {
    mounted: Vec<PathBuf>,
}

impl ControllersOnV1 {
    /// Mounts a v1 hierarchy for every controller in cgroup2's `cgroup.controllers`, when the
    /// layout is hybrid (a no-op on a pure v1 or pure v2 layout).
    pub fn ensure() -> Result<Self, ControllersError> {
        let controllers_file = Path::new(UNIFIED).join("cgroup.controllers");
        let text = match std::fs::read_to_string(&controllers_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ControllersError::Io {
                    action: "read",
                    path: controllers_file,
                    source,
                });
            }
        };
        let mut guard = Self::default();
        for controller in text.split_whitespace() {
            let path = Path::new(CGROUP_ROOT).join(controller);
            std::fs::create_dir_all(&path).map_err(|source| ControllersError::Io {
                action: "create",
                path: path.clone(),
                source,
            })?;
            mount_v1(controller, &path).map_err(|source| ControllersError::Mount {
                controller: controller.to_owned(),
                path: path.clone(),
                source,
            })?;
            tracing::info!(controller, path = %path.display(), "moved a controller out of cgroup2 for crun");
            guard.mounted.push(path);
        }
        Ok(guard)
    }

    /// The mount points made.
    pub fn mounted(&self) -> &[PathBuf] {
        &self.mounted
    }
}

impl Drop for ControllersOnV1 {
    fn drop(&mut self) {
        for path in self.mounted.drain(..).rev() {
            remove_child_cgroups(&path);
            let Ok(target) = CString::new(path.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2(2) with a NUL-terminated path that outlives the call.
            if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
                tracing::warn!(path = %path.display(), error = %std::io::Error::last_os_error(), "unmount a v1 hierarchy");
                continue;
            }
            let _ = std::fs::remove_dir(&path);
        }
    }
}

fn mount_v1(controller: &str, path: &Path) -> std::io::Result<()> {
    let source = CString::new("cgroup").expect("no NUL");
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let fstype = CString::new("cgroup").expect("no NUL");
    let options = CString::new(controller)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes every cgroup below `root`, deepest first (only empty cgroups can go; one with a
/// process left stays, and is logged).
fn remove_child_cgroups(root: &Path) {
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
                dirs.push(entry.path());
            }
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        if let Err(e) = std::fs::remove_dir(&dir) {
            tracing::warn!(cgroup = %dir.display(), error = %e, "remove a cgroup");
        }
    }
}
