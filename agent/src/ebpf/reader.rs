//! Drains the ring buffer into a bounded channel without ever blocking the kernel side.

use aya::maps::{MapData, RingBuf};
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{EbpfError, KernelEvent, parse_record};
use crate::budget::ByteBudget;

/// Counts of what the reader saw.
#[derive(Debug, Default)]
pub struct ReaderStats {
    pub received: AtomicU64,
    /// Records dropped because the correlator's queue was full.
    pub queue_full: AtomicU64,
    pub malformed: AtomicU64,
}

/// Reads records until the channel closes. Records that do not fit in the channel (its count
/// or `budget`, in bytes: the consumer gives each event's [`KernelEvent::approx_bytes`] back
/// once done with it) are counted and dropped rather than waited for, so the ring buffer keeps
/// draining.
pub async fn run_reader<T: From<KernelEvent>>(
    ring: RingBuf<MapData>,
    events: mpsc::Sender<T>,
    stats: Arc<ReaderStats>,
    budget: ByteBudget,
) -> Result<(), EbpfError> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged until the
    // AsyncFd (which owns the ring buffer) is dropped.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|err| EbpfError::Poll { source: err.into() })?;
    loop {
        let mut guard = tokio::select! {
            guard = fd.readable_mut() => guard.map_err(|source| EbpfError::Poll { source })?,
            () = events.closed() => return Ok(()),
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            stats.received.fetch_add(1, Ordering::Relaxed);
            match parse_record(&item) {
                Ok(event) => {
                    let bytes = event.approx_bytes();
                    if !budget.try_take(bytes) {
                        stats.queue_full.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match events.try_send(T::from(event)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            budget.release(bytes);
                            stats.queue_full.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                    }
                }
                Err(err) => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, "dropping a malformed ring-buffer record");
                }
            }
        }
        guard.clear_ready();
    }
}
