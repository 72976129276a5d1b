//! Retention: deletes the oldest spans, by age (started longer ago than the configured
//! retention) and by size (once the data file reaches 90% of the map, the used pages are kept
//! under 80% of it).

use std::collections::HashMap;
use std::ops::Bound;

use super::keys::{self, OwnerKey, TimeEntry};
use super::{Counters, Store, StoreError, lmdb};

/// A data file past this share of the map (per mille) starts eviction.
const HIGH_WATER_PER_MILLE: u64 = 900;
/// Eviction keeps the used pages below this share of the map (per mille).
const LOW_WATER_PER_MILLE: u64 = 800;
/// Most spans deleted in one transaction, so that the pages a deletion dirties stay well inside
/// the map's free headroom; halved when even a deletion meets a full map.
const EVICT_TXN_MAX: usize = 4096;

/// What one run of retention deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Spans deleted because they started before `now - retention`.
    pub evicted_by_age: u64,
    /// Spans deleted, oldest first, to bring the store back under its size bound.
    pub evicted_by_size: u64,
    /// Bytes in the pages the store uses afterwards.
    pub used_bytes: u64,
}

impl Store {
    /// Deletes the spans that started before `now_unix_ns - retention`, then, once the data file
    /// has reached 90% of the map, the oldest spans until the used pages are under 80% of it.
    pub fn apply_retention(&self, now_unix_ns: u64) -> Result<RetentionReport, StoreError> {
        let retention_ns =
            u64::try_from(self.inner.config.retention.as_nanos()).unwrap_or(u64::MAX);
        let cutoff = now_unix_ns.saturating_sub(retention_ns);
        let evicted_by_age = self.evict_oldest(u64::MAX, cutoff)?;
        Counters::add(&self.inner.counters.evicted_by_age, evicted_by_age);
        let evicted_by_size = self.evict_for_size()?;
        Ok(RetentionReport {
            evicted_by_age,
            evicted_by_size,
            used_bytes: self.used_bytes()?,
        })
    }

    /// Evicts the oldest spans to keep the store under its size bound: once the data file has
    /// reached 90% of the map, the used pages are brought back under 80% of it after every commit.
    ///
    /// The data file's size is the trigger rather than the used pages alone because LMDB reuses a
    /// freed page only two commits later: pages counted as free are not all free to allocate, and
    /// a map whose never-used tail is gone can be full well before its used pages reach 100%.
    pub(super) fn evict_for_size(&self) -> Result<u64, StoreError> {
        let map = self.inner.map_size_bytes;
        let high = map / 1000 * HIGH_WATER_PER_MILLE;
        let low = map / 1000 * LOW_WATER_PER_MILLE;
        // The pages ever used bound the pages in use: until the file reaches the high-water
        // mark, commits stop here, cheaply.
        if self.high_water_bytes() <= high {
            return Ok(0);
        }
        let mut evicted = 0;
        loop {
            let used = self.used_bytes()?;
            if used <= low {
                break;
            }
            // Deleting a share of the spans frees about that share of the pages.
            let stored = u128::from(self.span_count()?);
            let share = (stored * u128::from(used - low)).div_ceil(u128::from(used));
            let evict = u64::try_from(share).unwrap_or(u64::MAX).max(1);
            let n = self.evict_oldest(evict, u64::MAX)?;
            if n == 0 {
                break;
            }
            evicted += n;
        }
        if evicted > 0 {
            Counters::add(&self.inner.counters.evicted_by_size, evicted);
            tracing::debug!(
                evicted,
                "evicted the oldest spans to stay under the size bound"
            );
        }
        Ok(evicted)
    }

    /// Deletes up to `limit` of the oldest spans that started before `before`, in transactions of
    /// at most [`EVICT_TXN_MAX`] spans. Returns how many it deleted.
    pub(super) fn evict_oldest(&self, limit: u64, before: u64) -> Result<u64, StoreError> {
        let mut evicted = 0;
        let mut txn_max = EVICT_TXN_MAX;
        while evicted < limit {
            let want = usize::try_from(limit - evicted)
                .unwrap_or(usize::MAX)
                .min(txn_max);
            txn_max = want;
            match self.try_evict(want, before) {
                Ok(deleted) => {
                    evicted += deleted as u64;
                    if deleted < want {
                        break;
                    }
                }
                Err(error) if error.is_map_full() && txn_max > 1 => txn_max /= 2,
                Err(error) => return Err(error),
            }
        }
        Ok(evicted)
    }

    /// One transaction of `evict_oldest`; returns how many time index entries it deleted (each
    /// for one span, unless the index was damaged).
    fn try_evict(&self, limit: usize, before: u64) -> Result<usize, StoreError> {
        let tables = &self.inner.tables;
        let mut wtxn = self
            .inner
            .env
            .write_txn()
            .map_err(lmdb("begin write transaction"))?;
        let before = before.to_be_bytes();
        let oldest = tables
            .spans_by_start
            .range(
                &wtxn,
                &(Bound::Unbounded, Bound::Excluded(before.as_slice())),
            )
            .map_err(lmdb("scan time index"))?
            .take(limit)
            .map(|entry| entry.map(|(key, _)| key.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(lmdb("scan time index"))?;
        let mut removed: HashMap<OwnerKey, u64> = HashMap::new();
        for time_key in &oldest {
            tables
                .spans_by_start
                .delete(&mut wtxn, time_key)
                .map_err(lmdb("delete time index"))?;
            let Some(entry) = TimeEntry::decode(time_key) else {
                tracing::warn!(key = ?time_key, "deleted a malformed time index key");
                continue;
            };
            let deleted = tables
                .spans
                .delete(&mut wtxn, &entry.span_key())
                .map_err(lmdb("delete span"))?;
            if deleted {
                *removed.entry(entry.owner).or_default() += 1;
            }
        }
        for (owner, count) in &removed {
            let Some(mut record) = tables.summary(&wtxn, owner)? else {
                continue;
            };
            let previous = record.clone();
            record.span_count = record.span_count.saturating_sub(*count);
            let (first, last) = keys::span_range(owner, 0, u64::MAX);
            let first_left = tables
                .spans
                .range(
                    &wtxn,
                    &(
                        Bound::Included(first.as_slice()),
                        Bound::Included(last.as_slice()),
                    ),
                )
                .map_err(lmdb("scan spans"))?
                .next()
                .transpose()
                .map_err(lmdb("scan spans"))?
                .and_then(|(key, _)| keys::span_key_start(owner, key));
            match first_left {
                Some(start) if record.span_count > 0 => {
                    record.first_start_unix_ns = start;
                    tables.put_summary(&mut wtxn, owner, &record, Some(&previous))?;
                }
                _ => tables.delete_summary(&mut wtxn, owner, &previous)?,
            }
        }
        wtxn.commit().map_err(lmdb("commit"))?;
        Ok(oldest.len())
    }

    /// Spans in the store.
    pub(super) fn span_count(&self) -> Result<u64, StoreError> {
        let rtxn = self
            .inner
            .env
            .read_txn()
            .map_err(lmdb("begin read transaction"))?;
        self.inner
            .tables
            .spans
            .len(&rtxn)
            .map_err(lmdb("count spans"))
    }

    /// Bytes in the pages the databases use (free pages excluded).
    pub(super) fn used_bytes(&self) -> Result<u64, StoreError> {
        self.inner
            .env
            .non_free_pages_size()
            .map_err(lmdb("measure used pages"))
    }

    /// Bytes up to the highest page ever used: the size of the data file's written part.
    fn high_water_bytes(&self) -> u64 {
        let env = &self.inner.env;
        let pages = env.info().last_page_number as u64 + 1;
        pages * u64::from(env.stat().page_size)
    }
}
