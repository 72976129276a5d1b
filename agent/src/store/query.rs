//! Reading the store: spans of a pod or unattributed spans in a time window, pods by name, the
//! pods seen in a window, and the store's own statistics.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use super::keys::{self, OwnerKey, TimeEntry};
use super::tables::decode_summary;
use super::{Store, StoreError, lmdb};
use crate::model::{PodRef, Span};

/// One pod the store holds spans of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSummary {
    pub pod: PodRef,
    /// Earliest start of the pod's stored spans.
    pub first_unix_ns: u64,
    /// Latest end of the pod's spans.
    pub last_unix_ns: u64,
    pub span_count: u64,
}

/// The store's size and contents, for `/metrics` and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStats {
    pub span_count: u64,
    /// Pods with at least one stored span.
    pub pod_count: u64,
    /// Bytes in the pages the store uses (what eviction bounds).
    pub used_bytes: u64,
    /// Size of the data file on disk (LMDB never shrinks it; freed pages are reused).
    pub disk_bytes: u64,
    /// The map size: the most the store can hold.
    pub map_size_bytes: u64,
    /// Start of the oldest stored span.
    pub oldest_start_unix_ns: Option<u64>,
    /// Spans skipped since the store was opened: pod UID too long, or span too large.
    pub rejected_spans: u64,
    /// Spans deleted since the store was opened because they were older than the retention.
    pub evicted_by_age: u64,
    /// Spans deleted since the store was opened to stay under the size bound.
    pub evicted_by_size: u64,
}

impl Store {
    /// The spans of the pod with this UID that overlap `[start, end]` (inclusive: a span counts
    /// when it starts at or before `end` and ends at or after `start`), ordered by start, at most
    /// `limit` of them.
    pub fn spans_for_pod(
        &self,
        pod_uid: &str,
        start_unix_ns: u64,
        end_unix_ns: u64,
        limit: usize,
    ) -> Result<Vec<Span>, StoreError> {
        self.spans_for_pod_within(pod_uid, start_unix_ns, end_unix_ns, limit, usize::MAX)
    }

    /// [`Store::spans_for_pod`], also stopping after the span that brings the spans read to
    /// `max_bytes` (by [`Span::approx_bytes`]), so one answer's memory is bounded whatever the
    /// spans hold.
    pub fn spans_for_pod_within(
        &self,
        pod_uid: &str,
        start_unix_ns: u64,
        end_unix_ns: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Span>, StoreError> {
        match OwnerKey::pod(pod_uid) {
            Some(owner) => self.spans_of(&owner, start_unix_ns, end_unix_ns, limit, max_bytes),
            None => Ok(Vec::new()),
        }
    }

    /// The spans that could not be tied to a pod and overlap `[start, end]`, as
    /// [`Store::spans_for_pod`] selects and orders them.
    pub fn unattributed_spans(
        &self,
        start_unix_ns: u64,
        end_unix_ns: u64,
        limit: usize,
    ) -> Result<Vec<Span>, StoreError> {
        self.spans_of(
            &OwnerKey::unattributed(),
            start_unix_ns,
            end_unix_ns,
            limit,
            usize::MAX,
        )
    }

    fn spans_of(
        &self,
        owner: &OwnerKey,
        start: u64,
        end: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Span>, StoreError> {
        if limit == 0 || start > end {
            return Ok(Vec::new());
        }
        let tables = &self.inner.tables;
        let rtxn = self
            .inner
            .env
            .read_txn()
            .map_err(lmdb("begin read transaction"))?;
        let Some(summary) = tables.summary(&rtxn, owner)? else {
            return Ok(Vec::new());
        };
        // No span of the owner is longer than its longest, so none that started earlier than
        // this can reach into the window.
        let scan_from = start.saturating_sub(summary.max_duration_ns);
        let (first, last) = keys::span_range(owner, scan_from, end);
        let mut spans = Vec::new();
        let mut bytes = 0usize;
        for entry in tables
            .spans
            .range(
                &rtxn,
                &(
                    Bound::Included(first.as_slice()),
                    Bound::Included(last.as_slice()),
                ),
            )
            .map_err(lmdb("scan spans"))?
        {
            let (_, value) = entry.map_err(lmdb("scan spans"))?;
            let span = decode_span(value)?;
            if span.end_unix_ns >= start {
                bytes = bytes.saturating_add(span.approx_bytes());
                spans.push(span);
                if spans.len() == limit || bytes >= max_bytes {
                    break;
                }
            }
        }
        Ok(spans)
    }

    /// The UIDs of the pods stored under this namespace and name (a name reused by a new pod has
    /// several), ordered by their first span.
    pub fn pod_uids_by_name(&self, namespace: &str, name: &str) -> Result<Vec<String>, StoreError> {
        let Some(prefix) = keys::name_prefix(namespace, name) else {
            return Ok(Vec::new());
        };
        let tables = &self.inner.tables;
        let rtxn = self
            .inner
            .env
            .read_txn()
            .map_err(lmdb("begin read transaction"))?;
        let mut pods = Vec::new();
        for entry in tables
            .pods_by_name
            .prefix_iter(&rtxn, &prefix)
            .map_err(lmdb("scan name index"))?
        {
            let (key, _) = entry.map_err(lmdb("scan name index"))?;
            let Some(uid) = keys::name_key_uid(&prefix, key) else {
                continue;
            };
            let first = OwnerKey::pod(uid)
                .map(|owner| tables.summary(&rtxn, &owner))
                .transpose()?
                .flatten()
                .map_or(u64::MAX, |summary| summary.first_start_unix_ns);
            pods.push((first, uid.to_owned()));
        }
        pods.sort();
        Ok(pods.into_iter().map(|(_, uid)| uid).collect())
    }

    /// The pods with spans between their first start and last end that overlap `[start, end]`,
    /// ordered by their first span.
    pub fn pods(
        &self,
        start_unix_ns: u64,
        end_unix_ns: u64,
    ) -> Result<Vec<PodSummary>, StoreError> {
        let tables = &self.inner.tables;
        let rtxn = self
            .inner
            .env
            .read_txn()
            .map_err(lmdb("begin read transaction"))?;
        let mut pods = Vec::new();
        for entry in tables
            .summaries
            .iter(&rtxn)
            .map_err(lmdb("scan summaries"))?
        {
            let (key, value) = entry.map_err(lmdb("scan summaries"))?;
            let Some(uid) =
                OwnerKey::split_front(key).and_then(|(owner, _)| owner.uid().map(str::to_owned))
            else {
                continue;
            };
            let record = decode_summary(value)?;
            if record.first_start_unix_ns <= end_unix_ns && record.last_end_unix_ns >= start_unix_ns
            {
                pods.push(PodSummary {
                    pod: PodRef {
                        uid,
                        namespace: record.namespace,
                        name: record.name,
                    },
                    first_unix_ns: record.first_start_unix_ns,
                    last_unix_ns: record.last_end_unix_ns,
                    span_count: record.span_count,
                });
            }
        }
        pods.sort_by(|a, b| (a.first_unix_ns, &a.pod.uid).cmp(&(b.first_unix_ns, &b.pod.uid)));
        Ok(pods)
    }

    /// Counts and sizes of the store.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let inner = &*self.inner;
        let tables = &inner.tables;
        let (span_count, owners, has_unattributed, oldest_start_unix_ns) = {
            let rtxn = inner
                .env
                .read_txn()
                .map_err(lmdb("begin read transaction"))?;
            let oldest = tables
                .spans_by_start
                .first(&rtxn)
                .map_err(lmdb("read time index"))?
                .and_then(|(key, _)| TimeEntry::decode(key))
                .map(|entry| entry.start_unix_ns);
            (
                tables.spans.len(&rtxn).map_err(lmdb("count spans"))?,
                tables.summaries.len(&rtxn).map_err(lmdb("count pods"))?,
                tables
                    .summaries
                    .get(&rtxn, OwnerKey::unattributed().as_bytes())
                    .map_err(lmdb("read summary"))?
                    .is_some(),
                oldest,
            )
        };
        let counters = &inner.counters;
        Ok(StoreStats {
            span_count,
            pod_count: owners.saturating_sub(u64::from(has_unattributed)),
            used_bytes: self.used_bytes()?,
            disk_bytes: inner
                .env
                .real_disk_size()
                .map_err(lmdb("measure data file"))?,
            map_size_bytes: inner.env.info().map_size as u64,
            oldest_start_unix_ns,
            rejected_spans: counters.rejected.load(Ordering::Relaxed),
            evicted_by_age: counters.evicted_by_age.load(Ordering::Relaxed),
            evicted_by_size: counters.evicted_by_size.load(Ordering::Relaxed),
        })
    }
}

fn decode_span(bytes: &[u8]) -> Result<Span, StoreError> {
    super::codec::decode_span(bytes).map_err(|source| StoreError::Decode {
        record: "span",
        source,
    })
}
