//! Bounded reads of `/proc/<pid>/<file>` for processes the agent follows.

use rustix::fs::{Mode, OFlags};
use std::{fs::File, path::Path};

use super::{HostFsError, read_capped};

/// Reads `<proc_root>/<pid>/<file>` (`file` is one name, e.g. `cgroup`), at most `limit` bytes.
/// procfs files report a size of 0, so the cap is enforced on the read itself; their content is
/// what the kernel generates, and a tenant controls parts of it (cgroup names), hence the cap.
/// Not following a symlink and not blocking are belt and braces: procfs has neither there.
pub fn read_proc_file(
    proc_root: &Path,
    pid: u32,
    file: &str,
    limit: u64,
) -> Result<Vec<u8>, HostFsError> {
    let path = proc_root.join(pid.to_string()).join(file);
    if file.is_empty() || file.contains('/') || file == "." || file == ".." {
        return Err(HostFsError::NotNormal { path });
    }
    let opened = rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|errno| HostFsError::from_io(&path, errno.into()))?;
    read_capped(File::from(opened), &path, limit)
}

/// Field `field` (numbered from 1, as in proc(5)) of a `/proc/<pid>/stat` line, as a number.
/// The command name (field 2) is in parentheses and may hold spaces and parentheses itself (a
/// tenant names its processes), so fields are counted after its last `)`.
pub fn stat_field(stat: &str, field: usize) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state).
    rest.split_whitespace()
        .nth(field.checked_sub(3)?)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::FileType;
    use std::{sync::mpsc, time::Duration};

    const PROC: &str = "/proc";

    #[test]
    fn reads_this_process_s_cgroup_file() {
        let bytes = read_proc_file(Path::new(PROC), std::process::id(), "cgroup", 64 << 10)
            .expect("own cgroup");
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(
            text.lines().all(|line| line.splitn(3, ':').count() == 3),
            "{text}"
        );
    }

    #[test]
    fn a_proc_file_longer_than_the_cap_is_too_large() {
        // The smallest cgroup file, `0::/\n`, is 5 bytes.
        let err = read_proc_file(Path::new(PROC), std::process::id(), "cgroup", 4)
            .expect_err("over the cap");
        assert!(
            matches!(err, HostFsError::TooLarge { limit: 4, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_gone_process_is_missing() {
        // Above any pid_max (at most 2^22).
        let err = read_proc_file(Path::new(PROC), u32::MAX, "cgroup", 64 << 10)
            .expect_err("no such process");
        assert!(matches!(err, HostFsError::Missing { .. }), "{err:?}");
        assert_eq!(err.reason(), "missing");
    }

    #[test]
    fn only_a_single_file_name_is_read() {
        for file in ["", ".", "..", "../1/cgroup", "task/1/cgroup"] {
            let err = read_proc_file(Path::new(PROC), std::process::id(), file, 64 << 10)
                .expect_err("refused");
            assert!(
                matches!(err, HostFsError::NotNormal { .. }),
                "{file:?}: {err:?}"
            );
        }
    }

    #[test]
    fn in_a_fake_proc_root_a_symlink_is_refused_and_a_fifo_does_not_block() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("42");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(root.path().join("elsewhere"), b"0::/\n").expect("write");
        std::os::unix::fs::symlink(root.path().join("elsewhere"), dir.join("cgroup"))
            .expect("symlink");
        let err = read_proc_file(root.path(), 42, "cgroup", 64 << 10).expect_err("a symlink");
        assert!(matches!(err, HostFsError::Symlink { .. }), "{err:?}");

        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("status"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let (tx, rx) = mpsc::channel();
        let proc_root = root.path().to_owned();
        std::thread::spawn(move || {
            let _ = tx.send(read_proc_file(&proc_root, 42, "status", 64 << 10));
        });
        let read = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the read blocked for 10 s");
        // No writer: a non-blocking FIFO reads as empty.
        assert_eq!(read.expect("read"), b"");
    }
}
