//! A running container runtime process: its executable (a path the agent can open, also from
//! a container with `hostPID`), its start time and the identity of its binary, which together
//! tell a restart or an upgrade.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// What `readlink /proc/<pid>/exe` appends when the file was replaced or removed.
const DELETED_SUFFIX: &str = " (deleted)";

/// Why a process could not be described.
#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no start time field")]
    BadStat { path: PathBuf },
}

/// Which file a binary is: a replaced binary (an upgrade) gets a new inode or mtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BinaryIdentity {
    pub dev: u64,
    pub inode: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub size: u64,
}

impl BinaryIdentity {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            inode: metadata.ino(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
            size: metadata.size(),
        }
    }

    fn same_file(&self, other: &Self) -> bool {
        self.dev == other.dev && self.inode == other.inode
    }
}

/// A process serving CRI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeProcess {
    pub pid: u32,
    /// The executable as the process sees it (`readlink /proc/<pid>/exe`, without
    /// ` (deleted)`).
    pub exe_path: PathBuf,
    /// A path to the same file that the agent can open and attach uprobes to: `exe_path` when
    /// it names that file here too, else through `/proc/<pid>/root`, else `/proc/<pid>/exe`.
    pub open_path: PathBuf,
    /// The executable was replaced or removed since the process started.
    pub exe_deleted: bool,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22): with the pid, it
    /// names one process run, so a restart under the same pid is told apart.
    pub start_time: u64,
    pub identity: BinaryIdentity,
}

impl RuntimeProcess {
    /// Describes process `pid` from the proc filesystem mounted at `proc_root`.
    pub fn read(proc_root: &Path, pid: u32) -> Result<Self, ProcessError> {
        let dir = proc_root.join(pid.to_string());
        let exe_link = dir.join("exe");
        let target = read(&exe_link, std::fs::read_link)?;
        let identity = BinaryIdentity::of(&read(&exe_link, std::fs::metadata)?);
        let (exe_path, exe_deleted) =
            match target.to_str().and_then(|t| t.strip_suffix(DELETED_SUFFIX)) {
                Some(stripped) => (PathBuf::from(stripped), true),
                None => (target, false),
            };
        let open_path = open_path(&dir, &exe_path, &identity).unwrap_or(exe_link);
        let stat_path = dir.join("stat");
        let stat = read(&stat_path, std::fs::read_to_string)?;
        let start_time = start_time(&stat).ok_or(ProcessError::BadStat { path: stat_path })?;
        Ok(Self {
            pid,
            exe_path,
            open_path,
            exe_deleted,
            start_time,
            identity,
        })
    }

    /// Whether `other` is the same run of the same process.
    pub fn same_run(&self, other: &Self) -> bool {
        self.pid == other.pid && self.start_time == other.start_time
    }

    /// Whether `other` runs the same binary file, unchanged.
    pub fn same_binary(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

fn read<'p, T>(
    path: &'p Path,
    f: impl FnOnce(&'p Path) -> std::io::Result<T>,
) -> Result<T, ProcessError> {
    f(path).map_err(|source| ProcessError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The first of `exe_path` and `<proc>/<pid>/root/<exe_path>` that is the running file.
fn open_path(dir: &Path, exe_path: &Path, identity: &BinaryIdentity) -> Option<PathBuf> {
    let relative = exe_path.strip_prefix("/").ok()?;
    [exe_path.to_path_buf(), dir.join("root").join(relative)]
        .into_iter()
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| BinaryIdentity::of(&m).same_file(identity))
        })
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks after boot.
fn start_time(stat: &str) -> Option<u64> {
    crate::hostfs::stat_field(stat, 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 987654 \
                    1000 100 18446744073709551615";
        assert_eq!(start_time(stat), Some(987_654));
        assert_eq!(start_time("1 (x) S 0"), None);
    }

    #[test]
    fn describes_its_own_process() {
        let me = RuntimeProcess::read(Path::new("/proc"), std::process::id()).unwrap();
        assert!(!me.exe_deleted);
        assert_eq!(
            me.open_path, me.exe_path,
            "the agent's own binary is in its namespace"
        );
        let again = RuntimeProcess::read(Path::new("/proc"), std::process::id()).unwrap();
        assert!(me.same_run(&again) && me.same_binary(&again));
    }
}
