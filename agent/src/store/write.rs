//! Committing spans: one transaction per batch writes each span, its time index entry and its
//! owner's summary; a full map evicts the oldest spans and retries instead of failing.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::codec::{self, SummaryRecord};
use super::keys::{self, OwnerKey};
use super::{Counters, Store, StoreError, lmdb};
use crate::model::Span;

/// Share of the stored spans (per mille) evicted after a first `MDB_MAP_FULL`; it doubles on
/// every further one.
const FIRST_EVICTION_PER_MILLE: u64 = 50;

/// A span whose encoding takes more than this fraction of the map (1/N) is skipped: it could
/// only be stored by evicting a large part of the store, if at all.
const MAP_SHARE_PER_SPAN_MAX: u64 = 16;

/// An owner's summary as the transaction changes it, and as it was stored before.
struct Touched {
    record: SummaryRecord,
    stored: Option<SummaryRecord>,
}

impl Store {
    /// Commits one batch of spans in one transaction, then evicts the oldest spans when the
    /// store has passed its size bound.
    ///
    /// A span already stored (same owner, start and id) is left as it is. A span whose pod UID is
    /// longer than a key allows, or whose encoding takes more than 1/16 of the map, is skipped and
    /// counted (`StoreStats::rejected_spans`). When the map is full, the oldest spans are evicted
    /// and the batch is retried; a batch that does not fit in an empty store is committed in
    /// halves.
    pub fn put_batch(&self, spans: &[Span]) -> Result<(), StoreError> {
        if spans.is_empty() {
            return Ok(());
        }
        let result = self
            .put_evicting(spans)
            .and_then(|()| self.evict_for_size().map(|_| ()));
        match &result {
            Ok(()) => self.inner.health.committed(),
            Err(error) => self.inner.health.failed(error),
        }
        result
    }

    fn put_evicting(&self, spans: &[Span]) -> Result<(), StoreError> {
        let mut per_mille = FIRST_EVICTION_PER_MILLE;
        loop {
            match self.try_put(spans) {
                Err(error) if error.is_map_full() => {}
                Err(error) if self.is_disk_full(&error) => self.inner.health.disk_full(),
                other => return other,
            }
            let stored = self.span_count()?;
            let evict = (stored * per_mille).div_ceil(1000);
            per_mille = (per_mille * 2).min(1000);
            let evicted = self.evict_oldest(evict, u64::MAX)?;
            if evicted > 0 {
                Counters::add(&self.inner.counters.evicted_by_size, evicted);
                tracing::debug!(
                    evicted,
                    "the store's map was full; evicted the oldest spans"
                );
                continue;
            }
            return match spans {
                [span] => Err(StoreError::SpanTooLarge {
                    span_id: span.span_id,
                    map_size_bytes: self.inner.map_size_bytes,
                }),
                _ => {
                    let (first, second) = spans.split_at(spans.len() / 2);
                    self.put_evicting(first)?;
                    self.put_evicting(second)
                }
            };
        }
    }

    fn try_put(&self, spans: &[Span]) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let tables = &inner.tables;
        let mut wtxn = inner
            .env
            .write_txn()
            .map_err(lmdb("begin write transaction"))?;
        let mut touched: HashMap<OwnerKey, Touched> = HashMap::new();
        let mut rejected = 0;
        for span in spans {
            let Some(owner) = OwnerKey::of(span) else {
                rejected += 1;
                continue;
            };
            let key = keys::span_key(&owner, span.start_unix_ns, span.span_id);
            if tables
                .spans
                .get(&wtxn, &key)
                .map_err(lmdb("read span"))?
                .is_some()
            {
                continue;
            }
            let value = codec::encode_span(span).map_err(|source| StoreError::Encode {
                record: "span",
                source,
            })?;
            if value.len() as u64 > inner.map_size_bytes / MAP_SHARE_PER_SPAN_MAX {
                rejected += 1;
                continue;
            }
            tables
                .spans
                .put(&mut wtxn, &key, &value)
                .map_err(lmdb("write span"))?;
            let time_key = keys::time_key(span.start_unix_ns, span.span_id, &owner);
            tables
                .spans_by_start
                .put(&mut wtxn, &time_key, &[])
                .map_err(lmdb("write time index"))?;
            let entry = match touched.entry(owner) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let stored = tables.summary(&wtxn, entry.key())?;
                    let record = stored.clone().unwrap_or_else(SummaryRecord::empty);
                    entry.insert(Touched { record, stored })
                }
            };
            entry.record.absorb(span);
        }
        for (owner, Touched { record, stored }) in &touched {
            tables.put_summary(&mut wtxn, owner, record, stored.as_ref())?;
        }
        wtxn.commit().map_err(lmdb("commit"))?;
        if rejected > 0 {
            Counters::add(&inner.counters.rejected, rejected);
            tracing::warn!(
                rejected,
                max_uid_len = keys::MAX_UID_LEN,
                max_span_bytes = inner.map_size_bytes / MAP_SHARE_PER_SPAN_MAX,
                "skipped spans whose pod UID is too long or that are too large to store"
            );
        }
        Ok(())
    }
}
