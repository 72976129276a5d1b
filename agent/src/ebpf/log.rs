//! The eBPF programs' own diagnostics (aya-log records from the rare paths of the CRI probes,
//! see the eBPF crate's `diag`), at the level `--ebpf-log-level` sets when the programs are
//! loaded: off by default, so that the verifier removes the logging code. Records become
//! `tracing` events with the target `nodetrace::ebpf` and are counted by level.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

use super::EbpfError;

/// How much the eBPF programs report (`--ebpf-log-level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EbpfLogLevel {
    /// Nothing; the logging code is removed at load time.
    #[default]
    Off,
    Error,
    /// Failed reads of CRI fields, string lengths that betray a wrong field offset.
    Warn,
    /// Also handler entries whose earlier call on the goroutine had no exit.
    Info,
    /// Also strings cut to their slot, exits of another call than the one in flight.
    Debug,
}

impl EbpfLogLevel {
    /// The value of aya-log's `AYA_LOG_LEVEL` in the programs (0: nothing).
    pub fn aya_level(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Error => aya_log::Level::Error as u8,
            Self::Warn => aya_log::Level::Warn as u8,
            Self::Info => aya_log::Level::Info as u8,
            Self::Debug => aya_log::Level::Debug as u8,
        }
    }
}

/// Records received, by level (index: aya-log's level number, 1 = error … 5 = trace).
#[derive(Debug, Default)]
pub struct EbpfLogCounts {
    by_level: [AtomicU64; 6],
}

impl EbpfLogCounts {
    /// (level name, records) for every level.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ["error", "warn", "info", "debug", "trace"]
            .into_iter()
            .enumerate()
            .map(|(i, name)| (name, self.by_level[i + 1].load(Ordering::Relaxed)))
            .collect()
    }
}

/// Hands aya-log's records to `tracing`.
struct ToTracing {
    counts: Arc<EbpfLogCounts>,
}

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let index = match record.level() {
            log::Level::Error => 1,
            log::Level::Warn => 2,
            log::Level::Info => 3,
            log::Level::Debug => 4,
            log::Level::Trace => 5,
        };
        self.counts.by_level[index].fetch_add(1, Ordering::Relaxed);
        let message = record.args().to_string();
        match record.level() {
            log::Level::Error => tracing::error!(target: "nodetrace::ebpf", "{message}"),
            log::Level::Warn => tracing::warn!(target: "nodetrace::ebpf", "{message}"),
            log::Level::Info => tracing::info!(target: "nodetrace::ebpf", "{message}"),
            log::Level::Debug | log::Level::Trace => {
                tracing::debug!(target: "nodetrace::ebpf", "{message}")
            }
        }
    }

    fn flush(&self) {}
}

/// The reader of the programs' log records, taken once the programs are loaded.
pub struct EbpfLogReader {
    logger: EbpfLogger<ToTracing>,
}

impl EbpfLogReader {
    /// Takes the log map out of `ebpf` (after its programs were loaded: they keep the map).
    pub(super) fn take(ebpf: &mut Ebpf, counts: Arc<EbpfLogCounts>) -> Result<Self, EbpfError> {
        let logger = EbpfLogger::init_with_logger(ebpf, ToTracing { counts })
            .map_err(|source| EbpfError::Log { source })?;
        Ok(Self { logger })
    }

    /// Reads records as they come, until the task is dropped.
    pub async fn run(self) -> Result<(), EbpfError> {
        // SAFETY: the logger owns its ring buffer's map fd, which stays open and unchanged
        // until the AsyncFd (which owns the logger) is dropped.
        let mut fd =
            unsafe { AsyncFd::register_with_interest(self.logger, tokio::io::Interest::READABLE) }
                .map_err(|err| EbpfError::Poll { source: err.into() })?;
        loop {
            let mut guard = fd
                .readable_mut()
                .await
                .map_err(|source| EbpfError::Poll { source })?;
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }
}
