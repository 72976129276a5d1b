//! Files beneath the runtime's state roots: opened with `openat2` relative to the root, so that
//! no `..`, symlink or mount crossing leads elsewhere, and opened for reading only once `fstat`
//! has shown a regular file.

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};
use thiserror::Error;

use super::{HostFsError, read_capped};

/// How a path beneath a root is resolved.
///
/// - `BENEATH`: resolution that would leave the root's directory fails (`EXDEV`). `IN_ROOT` would
///   instead re-anchor an escape at the root, silently reading some other file: refused here.
/// - `NO_SYMLINKS`: no symlink anywhere on the path, not even one that stays beneath the root. A
///   tenant who can write beneath a root could otherwise aim the agent at a file of its choosing;
///   runtimes put no symlinks on the way to bundles and pid files.
/// - `NO_MAGICLINKS`: implied by `NO_SYMLINKS`; stated so the intent survives an edit.
/// - `NO_XDEV`: the places a tenant can write beneath a state root are mounts of their own (the
///   container's rootfs, the sandbox's `/dev/shm` tmpfs), while bundles and pid files sit on
///   the root's own file system. Refusing to cross a mount shuts the tenant's directories out
///   (and any FUSE or network mount that could stall a read) without losing a runtime file.
///   Where a runtime keeps bundles on a mount of their own, that mount is given as a root.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// A `--runtime-state-root` that cannot confine anything.
#[derive(Debug, Error)]
#[error(
    "runtime state root {path} must be an absolute directory other than / with no `.`, `..` or \
     empty components"
)]
pub struct BadStateRoot {
    pub path: PathBuf,
}

/// Checks one state root given as text (a trailing `/` is dropped).
pub fn parse_state_root(text: &str) -> Result<PathBuf, BadStateRoot> {
    checked_root(Path::new(text))
}

fn checked_root(path: &Path) -> Result<PathBuf, BadStateRoot> {
    let bytes = path.as_os_str().as_bytes();
    let trimmed = match bytes.strip_suffix(b"/") {
        Some(without) if !without.is_empty() => Path::new(std::ffi::OsStr::from_bytes(without)),
        _ => path,
    };
    if is_plain_absolute(trimmed) {
        Ok(trimmed.to_owned())
    } else {
        Err(BadStateRoot {
            path: path.to_owned(),
        })
    }
}

/// Whether `path` starts with `/` and every component after it is a name (not empty, `.` or
/// `..`). Checked on the bytes: `Path::components` would quietly drop `.` and empty components.
fn is_plain_absolute(path: &Path) -> bool {
    let Some(rest) = path.as_os_str().as_bytes().strip_prefix(b"/") else {
        return false;
    };
    rest.split(|&b| b == b'/')
        .all(|name| !name.is_empty() && name != b"." && name != b"..")
}

/// The directories the runtimes keep their state in (bundles, pid files): the only places the
/// agent reads files named by runtime command lines from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateRoots {
    roots: Vec<PathBuf>,
}

impl StateRoots {
    /// The roots, each an absolute directory other than `/` (see [`parse_state_root`]). No roots:
    /// every read is refused.
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> Result<Self, BadStateRoot> {
        let roots = roots
            .into_iter()
            .map(|root| checked_root(&root))
            .collect::<Result<_, _>>()?;
        Ok(Self { roots })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The root `path` is beneath (the longest, when roots nest) and the rest of the path.
    fn beneath<'a>(&'a self, path: &'a Path) -> Option<(&'a Path, &'a Path)> {
        self.roots
            .iter()
            .filter_map(|root| Some((root.as_path(), path.strip_prefix(root).ok()?)))
            .filter(|(_, rest)| !rest.as_os_str().is_empty())
            .max_by_key(|(root, _)| root.as_os_str().len())
    }

    /// Reads the regular file at `path` (absolute, no `.`, `..` or empty components, beneath a
    /// root), refusing symlinks anywhere beneath the root, mount crossings, anything but a
    /// regular file, and files larger than `limit` bytes. Nothing but a regular file is ever
    /// opened for reading, so a FIFO cannot block and a device is never opened.
    pub fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>, HostFsError> {
        if !is_plain_absolute(path) {
            return Err(HostFsError::NotNormal {
                path: path.to_owned(),
            });
        }
        let Some((root, rest)) = self.beneath(path) else {
            return Err(HostFsError::OutsideRoots {
                path: path.to_owned(),
            });
        };
        let failed = |errno: rustix::io::Errno| HostFsError::from_io(path, errno.into());
        // The root is the operator's configuration, not a tenant's: it may go through symlinks
        // (`/var/run` -> `/run`).
        let root_dir = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed)?;
        // O_PATH opens nothing for I/O: no FIFO open that waits for a writer, no device driver
        // called. A trailing symlink gives a descriptor of the link itself (O_NOFOLLOW).
        let found = rustix::fs::openat2(
            &root_dir,
            rest,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(failed)?;
        let stat = rustix::fs::fstat(&found).map_err(failed)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::Symlink => {
                return Err(HostFsError::Symlink {
                    path: path.to_owned(),
                });
            }
            other => {
                return Err(HostFsError::NotRegular {
                    path: path.to_owned(),
                    kind: kind_name(other),
                });
            }
        }
        if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > limit {
            return Err(HostFsError::TooLarge {
                path: path.to_owned(),
                limit,
            });
        }
        // Re-opening through the descriptor's /proc link opens exactly the inode checked above,
        // whatever happened to the path since.
        let file = rustix::fs::open(
            format!("/proc/self/fd/{}", found.as_raw_fd()).as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(failed)?;
        // The cap still holds if the file grows after fstat.
        read_capped(File::from(file), path, limit)
    }
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        os::unix::fs::{MetadataExt as _, symlink},
        sync::mpsc,
        time::{Duration, Instant},
    };

    const LIMIT: u64 = 4 << 20;

    fn roots_of(dir: &Path) -> StateRoots {
        StateRoots::new([dir.to_owned()]).expect("a valid root")
    }

    /// Runs `read` on a thread and fails the test, rather than hanging it, if it blocks.
    fn without_blocking<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the read blocked for 10 s")
    }

    #[test]
    fn a_regular_file_beneath_a_root_is_read() {
        let root = tempfile::tempdir().expect("tempdir");
        let bundle = root.path().join("io.containerd.runtime.v2.task/k8s.io/abc");
        std::fs::create_dir_all(&bundle).expect("mkdir");
        std::fs::write(bundle.join("config.json"), b"{\"ociVersion\":\"1.2.0\"}").expect("write");
        let bytes = roots_of(root.path())
            .read_file(&bundle.join("config.json"), LIMIT)
            .expect("read");
        assert_eq!(bytes, b"{\"ociVersion\":\"1.2.0\"}");
    }

    #[test]
    fn a_file_of_exactly_the_cap_is_read_and_one_byte_more_is_too_large() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = root.path().join("init.pid");
        std::fs::write(&file, b"12345").expect("write");
        let roots = roots_of(root.path());
        assert_eq!(roots.read_file(&file, 5).expect("at the cap"), b"12345");
        let err = roots.read_file(&file, 4).expect_err("over the cap");
        assert!(
            matches!(&err, HostFsError::TooLarge { path, limit: 4 } if *path == file),
            "{err:?}"
        );
        assert_eq!(err.reason(), "too_large");
        assert_eq!(
            err.to_string(),
            format!("{} is larger than 4 bytes", file.display())
        );
    }

    #[test]
    fn a_sparse_gibibyte_file_is_refused_as_too_large_at_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = root.path().join("init.pid");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(1 << 30))
            .expect("sparse file");
        let started = Instant::now();
        let err = roots_of(root.path())
            .read_file(&file, 32)
            .expect_err("too large");
        assert!(
            matches!(err, HostFsError::TooLarge { limit: 32, .. }),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        // Still sparse: nothing was written or allocated for it.
        let meta = std::fs::metadata(&file).expect("stat");
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
    }

    #[test]
    fn a_symlink_to_a_file_outside_the_root_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("shadow");
        std::fs::write(&secret, b"root:x:0:0").expect("write");
        let link = root.path().join("init.pid");
        symlink(&secret, &link).expect("symlink");
        let err = roots_of(root.path())
            .read_file(&link, LIMIT)
            .expect_err("symlink");
        assert!(
            matches!(&err, HostFsError::Symlink { path } if *path == link),
            "{err:?}"
        );
        assert_eq!(err.reason(), "symlink");
    }

    #[test]
    fn a_symlink_that_stays_beneath_the_root_is_refused_too() {
        let root = tempfile::tempdir().expect("tempdir");
        let real_dir = root.path().join("real");
        std::fs::create_dir(&real_dir).expect("mkdir");
        std::fs::write(real_dir.join("config.json"), b"{}").expect("write");
        symlink(
            real_dir.join("config.json"),
            root.path().join("config.json"),
        )
        .expect("symlink");
        symlink(&real_dir, root.path().join("linked")).expect("symlink");
        let roots = roots_of(root.path());
        // The last component, then a directory on the way.
        for path in [
            root.path().join("config.json"),
            root.path().join("linked/config.json"),
        ] {
            let err = roots.read_file(&path, LIMIT).expect_err("symlink");
            assert!(
                matches!(err, HostFsError::Symlink { .. }),
                "{path:?}: {err:?}"
            );
        }
        roots
            .read_file(&real_dir.join("config.json"), LIMIT)
            .expect("the real file reads");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let root = tempfile::tempdir().expect("tempdir");
        let fifo = root.path().join("init.pid");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let roots = roots_of(root.path());
        let path = fifo.clone();
        let err = without_blocking(move || roots.read_file(&path, LIMIT)).expect_err("a FIFO");
        assert!(
            matches!(&err, HostFsError::NotRegular { kind: "FIFO", path } if *path == fifo),
            "{err:?}"
        );
        assert_eq!(err.reason(), "not_regular");
    }

    #[test]
    fn a_device_node_is_refused_without_being_opened() {
        let root = tempfile::tempdir().expect("tempdir");
        let device = root.path().join("init.pid");
        // Character device 0:0 has no driver: opening it fails with ENXIO (EACCES on a nodev
        // file system). A refusal as "not a regular file" thus shows it was never opened.
        match rustix::fs::mknodat(
            rustix::fs::CWD,
            &device,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(0, 0),
        ) {
            Ok(()) => {}
            Err(err) if err == rustix::io::Errno::PERM => {
                eprintln!("skipped: creating a device node needs CAP_MKNOD (run as root)");
                return;
            }
            Err(err) => panic!("mknod: {err}"),
        }
        let roots = roots_of(root.path());
        let path = device.clone();
        let err = without_blocking(move || roots.read_file(&path, LIMIT)).expect_err("a device");
        assert!(
            matches!(&err, HostFsError::NotRegular { kind: "character device", path } if *path == device),
            "{err:?}"
        );
    }

    #[test]
    fn directories_are_not_regular_files() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("config.json")).expect("mkdir");
        let err = roots_of(root.path())
            .read_file(&root.path().join("config.json"), LIMIT)
            .expect_err("a directory");
        assert!(
            matches!(
                err,
                HostFsError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn dot_dot_dot_empty_and_relative_paths_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("a")).expect("mkdir");
        std::fs::write(root.path().join("b"), b"1").expect("write");
        let roots = roots_of(root.path());
        let base = root.path().to_str().expect("utf-8");
        for path in [
            format!("{base}/a/../b"),
            format!("{base}/./b"),
            format!("{base}//b"),
            format!("{base}/b/"),
            format!("{base}/a/.."),
            "b".to_owned(),
            "./b".to_owned(),
            String::new(),
        ] {
            let err = roots
                .read_file(Path::new(&path), LIMIT)
                .expect_err("refused");
            assert!(
                matches!(err, HostFsError::NotNormal { .. }),
                "{path:?}: {err:?}"
            );
            assert_eq!(err.reason(), "not_normal");
        }
        roots
            .read_file(&root.path().join("b"), LIMIT)
            .expect("the plain path reads");
    }

    #[test]
    fn a_path_outside_every_root_is_refused() {
        let parent = tempfile::tempdir().expect("tempdir");
        let root = parent.path().join("state");
        let sibling = parent.path().join("state-other");
        for dir in [&root, &sibling] {
            std::fs::create_dir(dir).expect("mkdir");
            std::fs::write(dir.join("config.json"), b"{}").expect("write");
        }
        std::fs::write(parent.path().join("config.json"), b"{}").expect("write");
        let roots = roots_of(&root);
        for path in [
            sibling.join("config.json"),
            parent.path().join("config.json"),
            root.clone(),
            PathBuf::from("/etc/passwd"),
        ] {
            let err = roots.read_file(&path, LIMIT).expect_err("outside");
            assert!(
                matches!(&err, HostFsError::OutsideRoots { path: p } if *p == path),
                "{path:?}: {err:?}"
            );
            assert_eq!(err.reason(), "outside_roots");
        }
        let err = StateRoots::default()
            .read_file(&root.join("config.json"), LIMIT)
            .expect_err("no roots, no reads");
        assert!(matches!(err, HostFsError::OutsideRoots { .. }), "{err:?}");
    }

    #[test]
    fn a_missing_file_or_root_is_missing() {
        let root = tempfile::tempdir().expect("tempdir");
        let roots = roots_of(root.path());
        for path in [
            root.path().join("gone/config.json"),
            root.path().join("init.pid"),
        ] {
            let err = roots.read_file(&path, LIMIT).expect_err("missing");
            assert!(matches!(err, HostFsError::Missing { .. }), "{err:?}");
        }
        let absent = roots_of(&root.path().join("no-runtime"));
        let err = absent
            .read_file(&root.path().join("no-runtime/x/init.pid"), LIMIT)
            .expect_err("missing");
        assert!(matches!(err, HostFsError::Missing { .. }), "{err:?}");
    }

    /// A mount point whose parent directory is on another device (from this process's mount
    /// table), e.g. `/dev/shm` or `/sys/fs/cgroup`.
    fn a_mount_point() -> Option<(PathBuf, PathBuf)> {
        let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        table.lines().find_map(|line| {
            let mount_point = PathBuf::from(line.split(' ').nth(4)?);
            let parent = mount_point.parent()?.to_owned();
            let plain = !line.contains('\\')
                && is_plain_absolute(&mount_point)
                && is_plain_absolute(&parent);
            let inner = std::fs::symlink_metadata(&mount_point).ok()?;
            let outer = std::fs::metadata(&parent).ok()?;
            (plain && inner.is_dir() && inner.dev() != outer.dev()).then_some((parent, mount_point))
        })
    }

    #[test]
    fn crossing_a_mount_beneath_a_root_is_refused() {
        let Some((parent, mount_point)) = a_mount_point() else {
            eprintln!("skipped: no mount point below a directory other than / in this namespace");
            return;
        };
        let err = roots_of(&parent)
            .read_file(&mount_point, LIMIT)
            .expect_err("crosses a mount");
        assert!(
            matches!(err, HostFsError::CrossesMount { .. }),
            "{}: {err:?}",
            mount_point.display()
        );
        assert_eq!(err.reason(), "crosses_mount");
    }

    #[test]
    fn the_innermost_root_of_nested_roots_is_the_one_resolved_from() {
        let roots = StateRoots::new([
            PathBuf::from("/run/containerd"),
            PathBuf::from("/run/containerd/io.containerd.runtime.v2.task"),
        ])
        .expect("valid roots");
        let path = Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/a/init.pid");
        assert_eq!(
            roots.beneath(path),
            Some((
                Path::new("/run/containerd/io.containerd.runtime.v2.task"),
                Path::new("k8s.io/a/init.pid")
            ))
        );
        assert_eq!(
            roots.beneath(Path::new("/run/containerd/runc/k8s.io/a/state.json")),
            Some((
                Path::new("/run/containerd"),
                Path::new("runc/k8s.io/a/state.json")
            ))
        );
        assert_eq!(roots.beneath(Path::new("/run/containerd")), None);
        assert_eq!(roots.beneath(Path::new("/run/containerd2/x")), None);
    }

    #[test]
    fn state_roots_must_be_plain_absolute_directories_other_than_slash() {
        assert_eq!(
            parse_state_root("/run/containerd").expect("valid"),
            PathBuf::from("/run/containerd")
        );
        assert_eq!(
            parse_state_root("/run/containerd/").expect("a trailing slash is dropped"),
            PathBuf::from("/run/containerd")
        );
        for bad in [
            "",
            "/",
            "//",
            "run/containerd",
            "/run/../etc",
            "/run/./crio",
            "/run//crio",
        ] {
            let err = parse_state_root(bad).expect_err("refused");
            assert_eq!(err.path, PathBuf::from(bad));
        }
        let err = StateRoots::new([PathBuf::from("/run/containerd"), PathBuf::from("state")])
            .expect_err("a relative root");
        assert_eq!(
            err.to_string(),
            "runtime state root state must be an absolute directory other than / with no `.`, \
             `..` or empty components"
        );
    }
}
