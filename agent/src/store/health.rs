//! Whether the store can take spans: the disk under it running out of space (which the store
//! answers by evicting its oldest spans, like a full map) and the last commit that failed.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Store, StoreError};

/// Below this much free space on the store's filesystem, a failed write is taken for a full
/// disk (LMDB reports a short write as EIO, not ENOSPC).
const LOW_SPACE_BYTES: u64 = 8 << 20;

/// How long a full disk is reported after the last eviction it caused.
const DISK_FULL_SHOWN_FOR: Duration = Duration::from_secs(120);

/// What went wrong with writes, as the writer saw it.
#[derive(Debug, Default)]
pub(super) struct WriteHealth {
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    last_error: Option<String>,
    disk_full_at: Option<Instant>,
}

impl WriteHealth {
    pub(super) fn disk_full(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.disk_full_at = Some(Instant::now());
        }
    }

    pub(super) fn committed(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.last_error = None;
        }
    }

    pub(super) fn failed(&self, error: &StoreError) {
        if let Ok(mut state) = self.state.lock() {
            state.last_error = Some(crate::correlate::error_chain(error));
        }
    }
}

/// What `/readyz` shows of the store: `None` when writes go through without trouble.
impl Store {
    pub fn write_problem(&self) -> Option<String> {
        let state = self.inner.health.state.lock().ok()?;
        if let Some(error) = &state.last_error {
            return Some(format!("the last commit failed: {error}"));
        }
        state
            .disk_full_at
            .filter(|at| at.elapsed() < DISK_FULL_SHOWN_FOR)
            .map(|_| {
                format!(
                    "the disk under {} is full: the oldest spans are evicted to keep the newest",
                    self.inner.env.path().display()
                )
            })
    }

    /// Whether `error` is a write that failed because the store's filesystem has no room.
    pub(super) fn is_disk_full(&self, error: &StoreError) -> bool {
        let StoreError::Lmdb {
            source: heed::Error::Io(io),
            ..
        } = error
        else {
            return false;
        };
        match io.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => true,
            Some(libc::EIO) => {
                free_bytes(self.inner.env.path()).is_some_and(|f| f < LOW_SPACE_BYTES)
            }
            _ => false,
        }
    }
}

/// Bytes an unprivileged writer could still use on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
