//! What the correlator reads from the node besides kernel events: pid files and process
//! cgroups (bundles are read by `oci::attribute`). A trait so tests can hand in a node of their own.

use std::path::{Path, PathBuf};

use crate::hostfs::{self, HostFsError, StateRoots};

/// Larger pid files are refused: a pid file holds one decimal number.
pub const MAX_PID_FILE_BYTES: u64 = 32;
/// Larger `/proc/<pid>/cgroup` files are refused (one line per hierarchy; a few hundred bytes
/// with cgroup v1, one line with v2).
pub const MAX_PROC_CGROUP_BYTES: u64 = 64 << 10;

/// Read access to the node's files that attribute runtime runs to pods.
pub trait NodeView {
    /// The pid written to a runtime's `--pid-file`.
    fn pid_file(&self, path: &Path) -> Option<u32>;
    /// The content of `/proc/<pid>/cgroup`, while the process lives.
    fn process_cgroups(&self, pid: u32) -> Option<String>;
}

/// The real node, seen through `proc_root` (usually `/proc`; `/host/proc` in a container). Pid
/// files are read only beneath `state_roots`.
#[derive(Clone, Debug)]
pub struct HostNode {
    pub proc_root: PathBuf,
    pub state_roots: StateRoots,
}

impl HostNode {
    /// The node seen through `/proc`, reading pid files beneath `state_roots`.
    pub fn new(state_roots: StateRoots) -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            state_roots,
        }
    }
}

fn not_read(what: &'static str, err: &HostFsError) {
    tracing::debug!(reason = err.reason(), error = %err, "{what} not read");
}

impl NodeView for HostNode {
    fn pid_file(&self, path: &Path) -> Option<u32> {
        let bytes = self
            .state_roots
            .read_file(path, MAX_PID_FILE_BYTES)
            .inspect_err(|err| not_read("pid file", err))
            .ok()?;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    fn process_cgroups(&self, pid: u32) -> Option<String> {
        let bytes = hostfs::read_proc_file(&self.proc_root, pid, "cgroup", MAX_PROC_CGROUP_BYTES)
            .inspect_err(|err| not_read("process cgroup", err))
            .ok()?;
        String::from_utf8(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::mpsc, time::Duration};

    struct Node {
        state: tempfile::TempDir,
        host: HostNode,
    }

    fn node() -> Node {
        let state = tempfile::tempdir().expect("tempdir");
        let roots = StateRoots::new([state.path().to_owned()]).expect("a valid root");
        Node {
            host: HostNode::new(roots),
            state,
        }
    }

    /// `pid_file(path)` on a thread: fails the test rather than hanging it if the read blocks.
    fn pid_file_without_blocking(host: &HostNode, path: &Path) -> Option<u32> {
        let (tx, rx) = mpsc::channel();
        let (host, path) = (host.clone(), path.to_owned());
        std::thread::spawn(move || {
            let _ = tx.send(host.pid_file(&path));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("reading the pid file blocked")
    }

    #[test]
    fn a_pid_file_beneath_a_state_root_gives_its_pid() {
        let n = node();
        let pid_file = n.state.path().join("init.pid");
        std::fs::write(&pid_file, b"4242").expect("write");
        assert_eq!(n.host.pid_file(&pid_file), Some(4242));
        std::fs::write(&pid_file, b"4243\n").expect("write");
        assert_eq!(n.host.pid_file(&pid_file), Some(4243));
    }

    #[test]
    fn pid_files_that_are_not_a_number_give_nothing() {
        let n = node();
        let pid_file = n.state.path().join("init.pid");
        for content in [&b"not a pid"[..], b"-1", b"", b"\xff\xfe"] {
            std::fs::write(&pid_file, content).expect("write");
            assert_eq!(n.host.pid_file(&pid_file), None, "{content:?}");
        }
    }

    #[test]
    fn hostile_pid_files_are_refused_at_once() {
        let n = node();
        let outside = tempfile::tempdir().expect("tempdir");
        let elsewhere = outside.path().join("pid");
        std::fs::write(&elsewhere, b"1").expect("write");

        let huge = n.state.path().join("huge.pid");
        std::fs::File::create(&huge)
            .and_then(|f| f.set_len(1 << 30))
            .expect("sparse file");
        let padded = n.state.path().join("padded.pid");
        std::fs::write(&padded, format!("{:>40}", 7)).expect("write");
        let link = n.state.path().join("link.pid");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        let fifo = n.state.path().join("fifo.pid");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");

        for path in [
            Path::new("/dev/zero"),
            Path::new("/dev/ptmx"),
            elsewhere.as_path(),
            huge.as_path(),
            padded.as_path(),
            link.as_path(),
            fifo.as_path(),
            Path::new("init.pid"),
        ] {
            assert_eq!(
                pid_file_without_blocking(&n.host, path),
                None,
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn a_process_s_cgroups_are_read_from_proc_with_a_cap() {
        let n = node();
        let own = n
            .host
            .process_cgroups(std::process::id())
            .expect("this process's cgroups");
        assert!(own.ends_with('\n'), "{own:?}");
        assert_eq!(n.host.process_cgroups(u32::MAX), None);

        // A fake /proc whose cgroup file is over the cap.
        let proc_root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(proc_root.path().join("42")).expect("mkdir");
        let line = "0::/kubepods/pod1/c\n";
        let too_long =
            line.repeat(usize::try_from(MAX_PROC_CGROUP_BYTES).expect("fits") / line.len() + 1);
        std::fs::write(proc_root.path().join("42/cgroup"), &too_long).expect("write");
        let host = HostNode {
            proc_root: proc_root.path().to_owned(),
            ..n.host.clone()
        };
        assert_eq!(host.process_cgroups(42), None);
        std::fs::write(proc_root.path().join("42/cgroup"), line).expect("write");
        assert_eq!(host.process_cgroups(42).as_deref(), Some(line));
    }
}
