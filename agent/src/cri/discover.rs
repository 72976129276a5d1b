//! Finds the process serving a CRI unix socket: the sockets bound to that path in
//! `/proc/net/unix`, the process holding a descriptor `socket:[inode]` on each in
//! `/proc/<pid>/fd`, and of those the one that sees the socket file itself at that path (the
//! same device and inode through `/proc/<pid>/root` as the agent's own `stat` of the path). A
//! process in another mount namespace can bind the same path text; it is not the runtime.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::process::{ProcessError, RuntimeProcess};

/// Where containerd and CRI-O listen by default.
pub const DEFAULT_SOCKETS: [&str; 2] = ["/run/containerd/containerd.sock", "/run/crio/crio.sock"];

/// `__SO_ACCEPTCON` in `/proc/net/unix` flags: the socket is listening.
const LISTENING: u32 = 0x0001_0000;

/// Why no runtime process was found.
#[derive(Debug, Error)]
pub enum DiscoverError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no unix socket is bound to {socket}")]
    NoSocket { socket: PathBuf },
    #[error("no process holds socket {socket} (inode {inode})")]
    NoProcess { socket: PathBuf, inode: u64 },
    #[error(
        "the processes bound to {socket} ({pids:?}) do not see the socket file the agent sees \
         there (another mount namespace): none is taken for the runtime"
    )]
    NotTheSocketFile { socket: PathBuf, pids: Vec<u32> },
    #[error("none of the CRI sockets {tried:?} has a process")]
    NoRuntime { tried: Vec<PathBuf> },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// Where to read process information: `/proc` normally, another mount in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/proc"),
        }
    }
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The process serving `socket`: of the processes holding a socket bound to that path, the
    /// one for which the path names the socket file the agent sees there.
    pub fn discover(&self, socket: &Path) -> Result<RuntimeProcess, DiscoverError> {
        let no_socket = || DiscoverError::NoSocket {
            socket: socket.to_path_buf(),
        };
        let file = std::fs::metadata(socket).map_err(|_| no_socket())?;
        let inodes = self.socket_inodes(socket)?;
        let mut impostors = Vec::new();
        for inode in &inodes {
            let Some(pid) = self.socket_owner(*inode)? else {
                continue;
            };
            if self.sees_same_file(pid, socket, &file) {
                return Ok(RuntimeProcess::read(&self.root, pid)?);
            }
            impostors.push(pid);
        }
        match (inodes.first(), impostors.is_empty()) {
            (Some(&inode), true) => Err(DiscoverError::NoProcess {
                socket: socket.to_path_buf(),
                inode,
            }),
            (Some(_), false) => Err(DiscoverError::NotTheSocketFile {
                socket: socket.to_path_buf(),
                pids: impostors,
            }),
            (None, _) => Err(no_socket()),
        }
    }

    /// Whether `path`, seen from process `pid`'s root, is the file `file`.
    fn sees_same_file(&self, pid: u32, path: &Path, file: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(relative) = path.strip_prefix("/") else {
            return false;
        };
        let seen = self.root.join(pid.to_string()).join("root").join(relative);
        std::fs::symlink_metadata(seen)
            .is_ok_and(|m| m.dev() == file.dev() && m.ino() == file.ino())
    }

    /// The process serving the first of [`DEFAULT_SOCKETS`] that has one.
    pub fn discover_default(&self) -> Result<RuntimeProcess, DiscoverError> {
        for socket in DEFAULT_SOCKETS {
            match self.discover(Path::new(socket)) {
                Err(DiscoverError::NoSocket { .. } | DiscoverError::NoProcess { .. }) => {}
                other => return other,
            }
        }
        Err(DiscoverError::NoRuntime {
            tried: DEFAULT_SOCKETS.iter().map(PathBuf::from).collect(),
        })
    }

    /// The inodes of the sockets bound to `socket`, listening ones first.
    ///
    /// `/proc/net/unix` lists the sockets of the reader's network namespace; an agent in a pod
    /// without the host network reads the host's through PID 1 (with `hostPID`).
    pub fn socket_inodes(&self, socket: &Path) -> Result<Vec<u64>, DiscoverError> {
        for table in [self.root.join("net/unix"), self.root.join("1/net/unix")] {
            let text = match std::fs::read_to_string(&table) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(DiscoverError::Read {
                        path: table,
                        source,
                    });
                }
            };
            let inodes = find_sockets(&text, socket);
            if !inodes.is_empty() {
                return Ok(inodes);
            }
        }
        Err(DiscoverError::NoSocket {
            socket: socket.to_path_buf(),
        })
    }

    /// The lowest pid with a descriptor on socket `inode` (children that inherited it come
    /// after their parent).
    pub fn socket_owner(&self, inode: u64) -> Result<Option<u32>, DiscoverError> {
        let target = format!("socket:[{inode}]");
        let entries = std::fs::read_dir(&self.root).map_err(|source| DiscoverError::Read {
            path: self.root.clone(),
            source,
        })?;
        let mut pids: Vec<u32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        // Processes come and go, and some fd tables are unreadable: skip those.
        Ok(pids.into_iter().find(|pid| self.holds(*pid, &target)))
    }

    fn holds(&self, pid: u32, target: &str) -> bool {
        let Ok(fds) = std::fs::read_dir(self.root.join(pid.to_string()).join("fd")) else {
            return false;
        };
        fds.filter_map(Result::ok)
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|link| link.as_os_str() == target)
    }
}

/// The inodes of the sockets bound to `socket` in the text of `/proc/net/unix`, listening
/// entries first.
///
/// Lines: `Num RefCount Protocol Flags Type St Inode [Path]`, numbers in hex except the inode.
fn find_sockets(table: &str, socket: &Path) -> Vec<u64> {
    let (mut listening, mut others) = (Vec::new(), Vec::new());
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().take(7).collect();
        let [_num, _refs, _proto, flags, _type, _state, inode] = fields[..] else {
            continue;
        };
        let Some(path) = line_path(line) else {
            continue;
        };
        if Path::new(path) != socket {
            continue;
        }
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        if u32::from_str_radix(flags, 16).is_ok_and(|f| f & LISTENING != 0) {
            listening.push(inode);
        } else {
            others.push(inode);
        }
    }
    listening.extend(others);
    listening
}

/// The path column (the rest of the line after the seventh field), if any.
fn line_path(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..7 {
        let end = rest.find(' ')?;
        rest = rest[end..].trim_start();
    }
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    const TABLE: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000003 00000000 00000000 0001 03 40001 /run/containerd/containerd.sock
0000000000000000: 00000002 00000000 00010000 0001 01 40000 /run/containerd/containerd.sock
0000000000000000: 00000002 00000000 00010000 0001 01 40002 /tmp/with space/cri.sock
0000000000000000: 00000002 00000000 00000000 0002 01 40003
";

    #[test]
    fn listening_entries_come_first() {
        let inodes = find_sockets(TABLE, Path::new("/run/containerd/containerd.sock"));
        assert_eq!(inodes, [40000, 40001]);
    }

    #[test]
    fn paths_may_contain_spaces() {
        assert_eq!(
            find_sockets(TABLE, Path::new("/tmp/with space/cri.sock")),
            [40002]
        );
        assert!(find_sockets(TABLE, Path::new("/run/crio/crio.sock")).is_empty());
    }

    /// A process in its own mount namespace binds a socket at the same path text (over a tmpfs
    /// of its own); it is not taken for the runtime, the process serving the real file is.
    #[test]
    fn a_socket_bound_to_the_same_path_in_another_mount_namespace_is_not_the_runtime() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: a private mount namespace needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cri.sock");
        let script = format!(
            "mount -t tmpfs impostor {dir} && exec python3 -c 'import socket,time; \
             s=socket.socket(socket.AF_UNIX); s.bind(\"{sock}\"); s.listen(); print(\"bound\", flush=True); \
             time.sleep(60)'",
            dir = dir.path().display(),
            sock = socket.display()
        );
        let mut impostor = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(impostor.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "bound");
        // Only the impostor: the path is not even a socket file here.
        let alone = ProcFs::default().discover(&socket);
        assert!(
            matches!(alone, Err(DiscoverError::NoSocket { .. })),
            "{alone:?}"
        );
        let _listener = UnixListener::bind(&socket).unwrap();
        let proc = ProcFs::default();
        assert_eq!(
            proc.socket_inodes(&socket).unwrap().len(),
            2,
            "both are bound"
        );
        let file = std::fs::metadata(&socket).unwrap();
        assert!(!proc.sees_same_file(impostor.id(), &socket, &file));
        assert!(proc.sees_same_file(std::process::id(), &socket, &file));
        let found = proc.discover(&socket);
        let _ = impostor.kill();
        let _ = impostor.wait();
        assert_eq!(found.unwrap().pid, std::process::id());
    }

    #[test]
    fn discovers_the_process_listening_on_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cri.sock");
        let _listener = UnixListener::bind(&socket).unwrap();

        let process = ProcFs::default().discover(&socket).unwrap();
        assert_eq!(process.pid, std::process::id());
        let own_exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        assert_eq!(process.exe_path, own_exe);
        let meta = std::fs::metadata(&own_exe).unwrap();
        assert_eq!(
            process.identity.inode,
            std::os::unix::fs::MetadataExt::ino(&meta)
        );
        assert!(process.start_time > 0);
        // The path to open resolves to the same file.
        let opened = std::fs::metadata(&process.open_path).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&opened),
            process.identity.inode
        );
    }

    #[test]
    fn an_unbound_socket_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = ProcFs::default()
            .discover(&dir.path().join("none.sock"))
            .unwrap_err();
        assert!(matches!(err, DiscoverError::NoSocket { .. }), "{err:?}");
    }
}
