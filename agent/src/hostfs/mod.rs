//! Reads host files that runtime activity names (pid files, bundle `config.json`, `/proc` files of
//! followed processes) under the trust boundary's rules: no symlinks, no FIFOs or devices, only
//! beneath the runtime's state roots, never more than a size cap.
//!
//! The paths come from the argv of processes a hostile container can start, so nothing about
//! them is trusted: [`StateRoots::read_file`] opens a file only through `openat2` beneath one of
//! the roots, checks with `fstat` that it is a regular file before opening it for reading, and
//! reads at most the cap. [`read_proc_file`] reads `/proc/<pid>/<file>` with a cap (procfs files
//! report no size, so the cap is the only bound). Every refusal is an [`HostFsError`] variant with
//! a short [`HostFsError::reason`] label for counters.

mod confined;
mod proc;

pub use confined::{BadStateRoot, StateRoots, parse_state_root};
pub use proc::{read_proc_file, stat_field};

use std::{
    io::Read,
    path::{Path, PathBuf},
};
use thiserror::Error;

/// Why a host file was not read.
#[derive(Debug, Error)]
pub enum HostFsError {
    #[error("{path} is not an absolute path free of `.`, `..` and empty components")]
    NotNormal { path: PathBuf },
    #[error("{path} is not beneath a runtime state root")]
    OutsideRoots { path: PathBuf },
    #[error("{path} goes through a symbolic link")]
    Symlink { path: PathBuf },
    #[error("{path} crosses a mount point beneath its state root")]
    CrossesMount { path: PathBuf },
    #[error("{path} is a {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HostFsError {
    /// A short, fixed label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotNormal { .. } => "not_normal",
            Self::OutsideRoots { .. } => "outside_roots",
            Self::Symlink { .. } => "symlink",
            Self::CrossesMount { .. } => "crosses_mount",
            Self::NotRegular { .. } => "not_regular",
            Self::TooLarge { .. } => "too_large",
            Self::Missing { .. } => "missing",
            Self::Io { .. } => "io",
        }
    }

    /// The error of a failed open or read of `path`.
    fn from_io(path: &Path, source: std::io::Error) -> Self {
        let path = path.to_owned();
        match source.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Self::Missing { path },
            // RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS, or O_NOFOLLOW on a symlink.
            Some(libc::ELOOP) => Self::Symlink { path },
            // RESOLVE_NO_XDEV. RESOLVE_BENEATH also answers EXDEV for an escape, but the path was
            // checked to have no `..` and symlinks are refused, so nothing can escape.
            Some(libc::EXDEV) => Self::CrossesMount { path },
            _ => Self::Io { path, source },
        }
    }
}

/// Reads all of `reader`, refusing more than `limit` bytes: `limit + 1` are asked for, so a file
/// of exactly `limit` bytes is read and a longer one is an error, never cut short.
fn read_capped(reader: impl Read, path: &Path, limit: u64) -> Result<Vec<u8>, HostFsError> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| HostFsError::from_io(path, source))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(HostFsError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}
