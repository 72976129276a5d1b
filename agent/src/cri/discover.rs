//! Finds the process serving a CRI unix socket: the socket's inode from `/proc/net/unix`, then
//! the process holding a descriptor `socket:[inode]` in `/proc/<pid>/fd`.

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

    /// The process serving `socket`.
    pub fn discover(&self, socket: &Path) -> Result<RuntimeProcess, DiscoverError> {
        let inode = self.socket_inode(socket)?;
        let pid = self
            .socket_owner(inode)?
            .ok_or_else(|| DiscoverError::NoProcess {
                socket: socket.to_path_buf(),
                inode,
            })?;
        Ok(RuntimeProcess::read(&self.root, pid)?)
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

    /// The inode of the socket bound to `socket`, the listening one first.
    ///
    /// `/proc/net/unix` lists the sockets of the reader's network namespace; an agent in a pod
    /// without the host network reads the host's through PID 1 (with `hostPID`).
    pub fn socket_inode(&self, socket: &Path) -> Result<u64, DiscoverError> {
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
            if let Some(inode) = find_socket(&text, socket) {
                return Ok(inode);
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

/// The inode of `socket` in the text of `/proc/net/unix`, preferring a listening entry.
///
/// Lines: `Num RefCount Protocol Flags Type St Inode [Path]`, numbers in hex except the inode.
fn find_socket(table: &str, socket: &Path) -> Option<u64> {
    let mut fallback = None;
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
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & LISTENING != 0);
        if listening {
            return Some(inode);
        }
        fallback.get_or_insert(inode);
    }
    fallback
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
    fn prefers_the_listening_entry() {
        let inode = find_socket(TABLE, Path::new("/run/containerd/containerd.sock"));
        assert_eq!(inode, Some(40000));
    }

    #[test]
    fn paths_may_contain_spaces() {
        assert_eq!(
            find_socket(TABLE, Path::new("/tmp/with space/cri.sock")),
            Some(40002)
        );
        assert_eq!(find_socket(TABLE, Path::new("/run/crio/crio.sock")), None);
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
