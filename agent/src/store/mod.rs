//! The span store: pod spans kept in one LMDB environment (heed) under the data directory,
//! written in batches by one writer task, queried by pod, by pod name and by time window, and
//! bounded by age and by size.
//!
//! Layout (see `tables.rs` for the database names, `keys.rs` for the encodings): spans keyed by
//! `(owner, start, span id)` where the owner is a pod UID or the reserved "unattributed" owner; a
//! time index `(start, span id, owner)` that retention walks from the oldest; a
//! `(namespace, name, uid)` index; and a summary per owner (first start, last end, span count,
//! longest duration) maintained on every write and eviction. Times are big-endian so that key
//! order is time order.
//!
//! Durability: every batch is one LMDB transaction committed with a sync, so a crash loses at
//! most the batch being committed and the environment always reopens.

mod codec;
mod health;
mod keys;
mod query;
mod retention;
mod tables;
mod write;
mod writer;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use heed::{Env, EnvOpenOptions, WithoutTls};

use crate::model::SpanId;

pub use query::{PodSummary, StoreStats};
pub use retention::RetentionReport;
pub use writer::{SinkFull, SpanSink, WriterHandle, WriterStats};

use tables::Tables;

/// How much the store keeps and how it batches writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Spans that started longer ago than this are deleted. Default: 24 hours.
    pub retention: Duration,
    /// Size of the LMDB map, the most the store can hold. Once the data file reaches 90% of it,
    /// the oldest spans are evicted after every commit to keep the used pages under 80% of it.
    /// Rounded up to a multiple of 64 KiB. Default: 1 GiB.
    pub max_size_bytes: u64,
    /// The writer commits as soon as it holds this many spans. Default: 512.
    pub batch_max_spans: usize,
    /// The writer commits at the latest this long after the first span of a batch arrived.
    /// Default: 50 ms (a span is queryable at most that long after it ended; a commit costs ~2 ms).
    pub batch_max_delay: Duration,
    /// Bytes of spans queued for the writer and not yet committed; a span beyond is dropped and
    /// counted. Default: 16 MiB.
    pub queue_max_bytes: usize,
    /// LMDB reader slots: read transactions open at once (API queries, metrics, retention).
    /// A query beyond fails with "readers full" instead of waiting. Default: 16.
    pub max_readers: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 60 * 60),
            max_size_bytes: 1024 * 1024 * 1024,
            batch_max_spans: 512,
            batch_max_delay: Duration::from_millis(50),
            max_readers: 16,
            queue_max_bytes: 16 << 20,
        }
    }
}

/// Map sizes are rounded up to this, a multiple of every page size Linux uses.
const MAP_SIZE_GRANULE: u64 = 64 * 1024;

/// Errors of the span store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the LMDB environment in {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: heed::Error,
    },
    #[error("store size of {bytes} bytes is not usable as an LMDB map size")]
    MapSize { bytes: u64 },
    #[error("LMDB operation failed: {operation}")]
    Lmdb {
        operation: &'static str,
        #[source]
        source: heed::Error,
    },
    #[error("cannot encode a {record}")]
    Encode {
        record: &'static str,
        #[source]
        source: bincode::Error,
    },
    #[error("cannot decode a stored {record}")]
    Decode {
        record: &'static str,
        #[source]
        source: bincode::Error,
    },
    #[error("span {span_id:?} does not fit in an empty store of {map_size_bytes} bytes")]
    SpanTooLarge {
        span_id: SpanId,
        map_size_bytes: u64,
    },
}

impl StoreError {
    /// The map ran out of pages (LMDB's `MDB_MAP_FULL`).
    fn is_map_full(&self) -> bool {
        matches!(
            self,
            Self::Lmdb {
                source: heed::Error::Mdb(heed::MdbError::MapFull),
                ..
            }
        )
    }
}

/// Wraps a heed error with the operation that failed.
fn lmdb(operation: &'static str) -> impl FnOnce(heed::Error) -> StoreError {
    move |source| StoreError::Lmdb { operation, source }
}

/// The span store. Cheap to clone; every clone uses the same environment.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    env: Env<WithoutTls>,
    tables: Tables,
    config: StoreConfig,
    /// The configured map size, rounded: eviction thresholds are fractions of it.
    map_size_bytes: u64,
    counters: Counters,
    health: health::WriteHealth,
}

/// What the store has counted since it was opened.
#[derive(Default)]
struct Counters {
    rejected: AtomicU64,
    evicted_by_age: AtomicU64,
    evicted_by_size: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Store {
    /// Opens the store in `dir`, creating the directory and the environment when missing. Open
    /// it once per process and clone the `Store`: heed refuses a second open of the same
    /// environment while the first is alive.
    ///
    /// A store written with another layout (see `codec::layout_fingerprint`) is emptied, with a
    /// warning: the store is a bounded buffer of recent traces, not a record to keep.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let map_size_bytes = config
            .max_size_bytes
            .max(1)
            .checked_next_multiple_of(MAP_SIZE_GRANULE)
            .ok_or(StoreError::MapSize {
                bytes: config.max_size_bytes,
            })?;
        let map_size = usize::try_from(map_size_bytes).map_err(|_| StoreError::MapSize {
            bytes: config.max_size_bytes,
        })?;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(map_size)
            .max_dbs(tables::DATABASE_COUNT)
            .max_readers(config.max_readers.max(1));
        // SAFETY: the directory is the agent's own; nothing but LMDB, through its lock file,
        // writes the files in it, and it is a local filesystem (the DaemonSet's host path).
        let env = unsafe { options.open(dir) }.map_err(|source| StoreError::Open {
            path: dir.to_owned(),
            source,
        })?;
        let (tables, cleared) = Tables::open(&env)?;
        if cleared {
            tracing::warn!(
                path = %dir.display(),
                "the store was written with another layout; its spans were deleted"
            );
        }
        Ok(Store {
            inner: Arc::new(Inner {
                env,
                tables,
                config,
                map_size_bytes,
                counters: Counters::default(),
                health: health::WriteHealth::default(),
            }),
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }
}
