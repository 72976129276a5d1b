//! Which files on the node are OCI runtime binaries (runc, crun, youki): the allowlist, by
//! device and inode, that the kernel side checks before it follows an exec.
//!
//! Looked for, by name, in the host's usual program directories (seen through
//! `<proc>/1/root`, or `/` when init's root is hidden), in the directories of the container runtime's own `PATH` (seen through
//! `<proc>/<runtime pid>/root`, so a runtime in its own mount namespace is covered), and at the
//! paths given with `--oci-runtime-binary`. Paths are resolved inside those roots (`openat2`
//! with `RESOLVE_IN_ROOT`), so an absolute symlink such as `/usr/bin/runc -> /usr/sbin/runc`
//! names the host's file, not one of the agent's own image. None of these places is writable by
//! a container; a file a container can exec is never allowlisted by its name alone.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nodetrace_common::BinaryKey;
use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The base names of the OCI runtimes nodetrace follows.
pub const RUNTIME_NAMES: [&str; 3] = ["runc", "crun", "youki"];

/// Where runtimes are installed when no `PATH` says otherwise.
pub const HOST_PROGRAM_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Most bytes read of a runtime process's environment (the variables before the cap count).
const ENVIRON_MAX_BYTES: u64 = 256 * 1024;
/// Most `PATH` directories taken from the runtime's environment.
const PATH_DIRS_MAX: usize = 32;

/// Where to look for runtime binaries.
#[derive(Clone, Debug)]
pub struct BinarySearch {
    /// The proc filesystem (`/proc`; the host's, the agent runs with `hostPID`).
    pub proc_root: PathBuf,
    /// Runtime binaries given by the operator: absolute paths on the host.
    pub extra: Vec<PathBuf>,
}

impl Default for BinarySearch {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            extra: Vec::new(),
        }
    }
}

/// The runtime binaries found, by kernel identity, with the path each was found at.
pub type RuntimeBinaries = BTreeMap<BinaryKey, PathBuf>;

impl BinarySearch {
    /// Every runtime binary found now; `runtime_pid` is the container runtime serving CRI,
    /// when one is known, whose `PATH` is searched too. Places that cannot be read are skipped.
    pub fn find(&self, runtime_pid: Option<u32>) -> RuntimeBinaries {
        let mut found = RuntimeBinaries::new();
        let host_root = self.host_root();
        let mut places: Vec<(PathBuf, Vec<PathBuf>)> = vec![(
            host_root.clone(),
            HOST_PROGRAM_DIRS.iter().map(PathBuf::from).collect(),
        )];
        if let Some(pid) = runtime_pid {
            let dir = self.proc_root.join(pid.to_string());
            if let Some(path) = read_environ_path(&dir.join("environ")) {
                places.push((dir.join("root"), path));
            }
        }
        for (root, dirs) in &places {
            let Ok(root_fd) = open_dir(root) else {
                continue;
            };
            for dir in dirs {
                for name in RUNTIME_NAMES {
                    let path = dir.join(name);
                    if let Some(key) = identity_in_root(&root_fd, &path) {
                        found.entry(key).or_insert(path);
                    }
                }
            }
        }
        if let Ok(root_fd) = open_dir(&host_root) {
            for path in &self.extra {
                if let Some(key) = identity_in_root(&root_fd, path) {
                    found.entry(key).or_insert_with(|| path.clone());
                }
            }
        }
        found
    }
}

impl BinarySearch {
    /// The host's root directory: init's (`<proc>/1/root`), which is the host's own from a
    /// container with `hostPID`; the agent's own `/` when init's cannot be opened (a sandbox
    /// that hides pid 1, or an agent that runs on the host itself).
    fn host_root(&self) -> PathBuf {
        let init_root = self.proc_root.join("1").join("root");
        if open_dir(&init_root).is_ok() {
            init_root
        } else {
            PathBuf::from("/")
        }
    }
}

fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The identity of the regular file at `path` inside `root` (symlinks resolved inside it).
fn identity_in_root(root: &OwnedFd, path: &Path) -> Option<BinaryKey> {
    let relative: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if relative.as_os_str().is_empty() {
        return None;
    }
    let fd = rustix::fs::openat2(
        root,
        &relative,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    let is_file =
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile;
    is_file.then(|| BinaryKey::from_stat(stat.st_dev, stat.st_ino))
}

/// The directories of the `PATH` variable in an environment file (`/proc/<pid>/environ`).
fn read_environ_path(environ: &Path) -> Option<Vec<PathBuf>> {
    let mut bytes = Vec::new();
    std::fs::File::open(environ)
        .ok()?
        .take(ENVIRON_MAX_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(path_dirs(&bytes))
}

/// The absolute directories of `PATH` in NUL-separated `KEY=VALUE` entries (at most
/// [`PATH_DIRS_MAX`]); none when there is no `PATH`.
fn path_dirs(environ: &[u8]) -> Vec<PathBuf> {
    let Some(value) = environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"PATH="))
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(value)
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .take(PATH_DIRS_MAX)
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    /// A fake proc filesystem whose pid 1 root is `host` and pid 42's root is `runtime`.
    struct FakeNode {
        proc: tempfile::TempDir,
        host: tempfile::TempDir,
        runtime: tempfile::TempDir,
    }

    impl FakeNode {
        fn new() -> Self {
            let node = Self {
                proc: tempfile::tempdir().expect("tempdir"),
                host: tempfile::tempdir().expect("tempdir"),
                runtime: tempfile::tempdir().expect("tempdir"),
            };
            for (pid, root) in [("1", node.host.path()), ("42", node.runtime.path())] {
                let dir = node.proc.path().join(pid);
                std::fs::create_dir_all(&dir).expect("pid dir");
                std::os::unix::fs::symlink(root, dir.join("root")).expect("root link");
            }
            node
        }

        fn search(&self) -> BinarySearch {
            BinarySearch {
                proc_root: self.proc.path().to_owned(),
                extra: Vec::new(),
            }
        }

        fn install(root: &Path, path: &str) -> BinaryKey {
            let file = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().expect("parent")).expect("dirs");
            std::fs::write(&file, b"\x7fELF").expect("binary");
            let meta = std::fs::metadata(&file).expect("stat");
            BinaryKey::from_stat(meta.dev(), meta.ino())
        }
    }

    #[test]
    fn runtimes_in_the_host_program_directories_are_found() {
        let node = FakeNode::new();
        let runc = FakeNode::install(node.host.path(), "/usr/sbin/runc");
        let crun = FakeNode::install(node.host.path(), "/usr/bin/crun");
        FakeNode::install(node.host.path(), "/usr/bin/sleep");
        let found = node.search().find(None);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[&runc], Path::new("/usr/sbin/runc"));
        assert_eq!(found[&crun], Path::new("/usr/bin/crun"));
    }

    #[test]
    fn an_absolute_symlink_is_resolved_inside_the_host_root() {
        let node = FakeNode::new();
        let runc = FakeNode::install(node.host.path(), "/usr/sbin/runc");
        std::fs::create_dir_all(node.host.path().join("usr/bin")).expect("dir");
        std::os::unix::fs::symlink("/usr/sbin/runc", node.host.path().join("usr/bin/runc"))
            .expect("link");
        let found = node.search().find(None);
        assert_eq!(found.keys().collect::<Vec<_>>(), [&runc]);
    }

    #[test]
    fn the_runtime_path_is_searched_inside_the_runtime_root() {
        let node = FakeNode::new();
        let runc = FakeNode::install(node.runtime.path(), "/opt/runtimes/runc");
        std::fs::write(
            node.proc.path().join("42/environ"),
            b"HOME=/root\0PATH=/opt/runtimes:relative/dir:/usr/bin\0X=1\0",
        )
        .expect("environ");
        assert!(node.search().find(None).is_empty());
        let found = node.search().find(Some(42));
        assert_eq!(found[&runc], Path::new("/opt/runtimes/runc"));
    }

    #[test]
    fn binaries_given_by_the_operator_are_found_under_any_name() {
        let node = FakeNode::new();
        let custom = FakeNode::install(node.host.path(), "/opt/bin/runc-1.5");
        let search = BinarySearch {
            extra: vec![PathBuf::from("/opt/bin/runc-1.5")],
            ..node.search()
        };
        assert_eq!(search.find(None)[&custom], Path::new("/opt/bin/runc-1.5"));
    }

    #[test]
    fn a_directory_named_like_a_runtime_is_not_a_binary() {
        let node = FakeNode::new();
        std::fs::create_dir_all(node.host.path().join("usr/bin/runc")).expect("dir");
        assert!(node.search().find(None).is_empty());
    }

    #[test]
    fn path_keeps_only_absolute_directories() {
        let dirs = path_dirs(b"A=1\0PATH=/a:b:/c::/d\0");
        assert_eq!(dirs, [Path::new("/a"), Path::new("/c"), Path::new("/d")]);
        assert!(path_dirs(b"A=1\0").is_empty());
    }

    #[test]
    fn device_numbers_convert_to_the_kernel_encoding() {
        // major 8, minor 1 (sda1): glibc 0x801, kernel 8 << 20 | 1.
        assert_eq!(BinaryKey::from_stat(0x801, 5).dev, (8 << 20) | 1);
        // major 259, minor 70000 (a large minor): both halves of glibc's split encoding.
        let st_dev = libc::makedev(259, 70_000);
        assert_eq!(BinaryKey::from_stat(st_dev, 5).dev, (259 << 20) | 70_000);
    }
}
