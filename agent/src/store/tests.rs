//! Tests of the store's behaviour: queries, retention, the size bound, reopening, the writer.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::model::{Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId, keys as attr};

const SECOND: u64 = 1_000_000_000;

pub(super) fn pod(uid: &str, namespace: &str, name: &str) -> Option<PodRef> {
    Some(PodRef {
        uid: uid.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

pub(super) fn span(id: u64, pod: Option<PodRef>, start: u64, end: u64) -> Span {
    Span {
        trace_id: TraceId([7; 16]),
        span_id: SpanId(id.to_be_bytes()),
        parent_span_id: None,
        name: format!("span {id}"),
        service: "runc".to_owned(),
        kind: SpanKind::Internal,
        start_unix_ns: start,
        end_unix_ns: end,
        pod,
        attributes: Vec::new(),
        status: SpanStatus::Unset,
    }
}

/// A span as the correlator builds one for `runc create`.
pub(super) fn runc_span(id: u64, uid: &str, start: u64) -> Span {
    let container_id = format!("{:064x}", u128::from(id) * 0x9e37_79b9_7f4a_7c15);
    Span {
        trace_id: TraceId::from_pod_uid(uid),
        span_id: SpanId(id.to_be_bytes()),
        parent_span_id: Some(SpanId((id ^ 0xffff).to_be_bytes())),
        name: "runc create".to_owned(),
        service: "runc".to_owned(),
        kind: SpanKind::Internal,
        start_unix_ns: start,
        end_unix_ns: start + 48_000_000,
        pod: pod(uid, "default", &format!("web-{}", id % 97)),
        attributes: vec![
            Attribute::str(attr::CONTAINER_ID, container_id.clone()),
            Attribute::str(attr::CONTAINER_NAME, "nginx"),
            Attribute::str(attr::CONTAINER_RUNTIME, "containerd"),
            Attribute::int(attr::PROCESS_PID, 41_000 + (id % 1000) as i64),
            Attribute::str(attr::PROCESS_EXECUTABLE_NAME, "runc"),
            Attribute::str_list(
                attr::PROCESS_COMMAND_ARGS,
                [
                    "runc",
                    "--root",
                    "/run/containerd/runc/k8s.io",
                    "--log-format",
                    "json",
                    "create",
                    "--bundle",
                    &format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{container_id}"),
                    &container_id,
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
            Attribute::int(attr::PROCESS_EXIT_CODE, 0),
            Attribute::str(attr::OCI_VERB, "create"),
        ],
        status: SpanStatus::Ok,
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreConfig::default()).expect("store opens")
}

fn ids(spans: &[Span]) -> Vec<u64> {
    spans
        .iter()
        .map(|s| u64::from_be_bytes(s.span_id.0))
        .collect()
}

#[test]
fn a_store_is_shared_between_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Store>();
    shareable::<SpanSink>();
}

#[test]
fn spans_of_a_pod_that_overlap_a_window_come_ordered_by_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let web = || pod("uid-web", "default", "web");
    store
        .put_batch(&[
            span(3, web(), 500, 600),
            span(1, web(), 100, 200),
            span(2, web(), 150, 400),
            span(4, web(), 0, 10_000),
            span(5, pod("uid-other", "default", "other"), 300, 300),
            span(6, None, 300, 300),
        ])
        .expect("put");

    let query = |start, end, limit| {
        ids(&store
            .spans_for_pod("uid-web", start, end, limit)
            .expect("query"))
    };
    assert_eq!(query(210, 450, 100), [4, 2], "ended before / started after");
    assert_eq!(query(200, 500, 100), [4, 1, 2, 3], "bounds are inclusive");
    assert_eq!(query(200, 500, 2), [4, 1], "limit keeps the earliest");
    assert_eq!(query(9_000, 9_500, 100), [4], "a long span reaches far");
    assert_eq!(query(10_001, 20_000, 100), Vec::<u64>::new());
    assert_eq!(query(0, u64::MAX, 0), Vec::<u64>::new());
    assert!(
        store
            .spans_for_pod("uid-nope", 0, u64::MAX, 10)
            .expect("query")
            .is_empty()
    );
    let full = store
        .spans_for_pod("uid-web", 0, u64::MAX, 10)
        .expect("query");
    assert_eq!(full[0], span(4, web(), 0, 10_000), "spans round-trip");
}

#[test]
fn a_reused_pod_name_gives_every_uid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .put_batch(&[
            span(1, pod("uid-b", "prod", "web"), 2_000, 2_100),
            span(2, pod("uid-a", "prod", "web"), 1_000, 1_100),
            span(3, pod("uid-c", "dev", "web"), 1_000, 1_100),
            span(4, pod("uid-d", "prod", "web-1"), 1_000, 1_100),
            span(5, pod("uid-e", "pro", "dweb"), 1_000, 1_100),
        ])
        .expect("put");
    assert_eq!(
        store.pod_uids_by_name("prod", "web").expect("query"),
        ["uid-a", "uid-b"],
        "both UIDs, oldest first, and no other pod"
    );
    assert_eq!(
        store.pod_uids_by_name("prod", "we").expect("query"),
        Vec::<String>::new()
    );
}

#[test]
fn a_pod_first_seen_without_a_name_is_found_by_name_once_it_has_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .put_batch(&[span(1, pod("uid-a", "", ""), 10, 20)])
        .expect("put");
    store
        .put_batch(&[span(2, pod("uid-a", "prod", "web"), 30, 40)])
        .expect("put");
    assert_eq!(
        store.pod_uids_by_name("prod", "web").expect("query"),
        ["uid-a"]
    );
    assert_eq!(
        store.pod_uids_by_name("", "").expect("query"),
        Vec::<String>::new()
    );
    let pods = store.pods(0, u64::MAX).expect("pods");
    assert_eq!(pods[0].pod, pod("uid-a", "prod", "web").expect("pod"));
}

#[test]
fn pods_lists_the_pods_seen_in_a_window_with_their_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = || pod("uid-a", "prod", "a");
    store
        .put_batch(&[
            span(1, a(), 100, 150),
            span(2, a(), 120, 400),
            span(3, pod("uid-b", "prod", "b"), 1_000, 1_100),
            span(4, None, 50, 5_000),
        ])
        .expect("put");
    store.put_batch(&[span(5, a(), 90, 95)]).expect("put");

    let all = store.pods(0, u64::MAX).expect("pods");
    assert_eq!(
        all,
        [
            PodSummary {
                pod: a().expect("pod"),
                first_unix_ns: 90,
                last_unix_ns: 400,
                span_count: 3,
            },
            PodSummary {
                pod: pod("uid-b", "prod", "b").expect("pod"),
                first_unix_ns: 1_000,
                last_unix_ns: 1_100,
                span_count: 1,
            },
        ],
        "summaries follow every batch; unattributed spans are no pod"
    );
    let late = store.pods(401, 2_000).expect("pods");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].pod.uid, "uid-b");
    assert!(store.pods(1_101, 2_000).expect("pods").is_empty());
    assert_eq!(store.stats().expect("stats").pod_count, 2);
}

#[test]
fn unattributed_spans_are_kept_apart_from_pods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .put_batch(&[
            span(1, None, 100, 200),
            span(2, pod("uid-a", "prod", "a"), 100, 200),
            span(3, None, 300, 400),
            span(4, None, 900, 950),
        ])
        .expect("put");
    assert_eq!(
        ids(&store.unattributed_spans(150, 350, 10).expect("query")),
        [1, 3]
    );
    assert_eq!(
        ids(&store.spans_for_pod("uid-a", 0, 1_000, 10).expect("query")),
        [2]
    );
    assert!(
        store
            .spans_for_pod("", 0, 1_000, 10)
            .expect("query")
            .is_empty()
    );
}

#[test]
fn a_span_stored_twice_counts_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let once = span(1, pod("uid-a", "prod", "a"), 100, 200);
    store.put_batch(&[once.clone(), once.clone()]).expect("put");
    store.put_batch(&[once]).expect("put");
    assert_eq!(store.stats().expect("stats").span_count, 1);
    assert_eq!(store.pods(0, u64::MAX).expect("pods")[0].span_count, 1);
}

#[test]
fn over_long_pod_uids_are_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let long = "u".repeat(keys::MAX_UID_LEN + 1);
    store
        .put_batch(&[
            span(1, pod(&long, "prod", "a"), 100, 200),
            span(2, pod("uid-b", "prod", "b"), 100, 200),
        ])
        .expect("the batch commits without the bad span");
    let stats = store.stats().expect("stats");
    assert_eq!((stats.span_count, stats.rejected_spans), (1, 1));
    assert!(
        store
            .spans_for_pod(&long, 0, u64::MAX, 10)
            .expect("query")
            .is_empty()
    );
}

#[test]
fn retention_deletes_spans_older_than_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        retention: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    let now = 1_700_000_000 * SECOND;
    let old = || pod("uid-old", "prod", "old");
    let mixed = || pod("uid-mixed", "prod", "mixed");
    store
        .put_batch(&[
            span(1, old(), now - 7200 * SECOND, now - 7100 * SECOND),
            span(2, old(), now - 5400 * SECOND, now - 5300 * SECOND),
            span(3, mixed(), now - 4000 * SECOND, now - 3900 * SECOND),
            span(4, mixed(), now - 1800 * SECOND, now - 1700 * SECOND),
            span(5, None, now - 3601 * SECOND, now - 3500 * SECOND),
            span(6, None, now - 60 * SECOND, now),
        ])
        .expect("put");

    let report = store.apply_retention(now).expect("retention");
    assert_eq!((report.evicted_by_age, report.evicted_by_size), (4, 0));

    let pods = store.pods(0, u64::MAX).expect("pods");
    assert_eq!(pods.len(), 1, "a pod whose spans are all gone is gone");
    assert_eq!(pods[0].pod.uid, "uid-mixed");
    assert_eq!(pods[0].span_count, 1);
    assert_eq!(pods[0].first_unix_ns, now - 1800 * SECOND);
    assert!(
        store
            .pod_uids_by_name("prod", "old")
            .expect("query")
            .is_empty()
    );
    assert_eq!(
        ids(&store
            .spans_for_pod("uid-mixed", 0, u64::MAX, 10)
            .expect("query")),
        [4]
    );
    assert_eq!(
        ids(&store.unattributed_spans(0, u64::MAX, 10).expect("query")),
        [6]
    );
    let stats = store.stats().expect("stats");
    assert_eq!(stats.span_count, 2);
    assert_eq!(stats.oldest_start_unix_ns, Some(now - 1800 * SECOND));
    assert_eq!(stats.evicted_by_age, 4);
    assert_eq!(
        store
            .apply_retention(now)
            .expect("retention")
            .evicted_by_age,
        0
    );
}

#[test]
fn a_full_store_evicts_the_oldest_spans_and_keeps_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        max_size_bytes: 1024 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    let batches = 100_u64;
    let per_batch = 100_u64;
    for batch in 0..batches {
        let spans: Vec<_> = (0..per_batch)
            .map(|i| {
                let id = batch * per_batch + i;
                runc_span(id, &format!("uid-{batch}"), id * SECOND)
            })
            .collect();
        store
            .put_batch(&spans)
            .unwrap_or_else(|error| panic!("batch {batch} failed: {error:?}"));
    }
    let stats = store.stats().expect("stats");
    let written = batches * per_batch;
    assert!(stats.evicted_by_size > 0, "nothing was evicted: {stats:?}");
    assert!(stats.span_count < written, "{stats:?}");
    assert_eq!(stats.span_count + stats.evicted_by_size, written);
    assert!(stats.used_bytes <= stats.map_size_bytes, "{stats:?}");
    let newest = store
        .spans_for_pod(&format!("uid-{}", batches - 1), 0, u64::MAX, 1_000)
        .expect("query");
    assert_eq!(newest.len() as u64, per_batch, "the newest batch is whole");
    assert!(
        store
            .spans_for_pod("uid-0", 0, u64::MAX, 1_000)
            .expect("query")
            .is_empty()
    );
    let oldest = stats.oldest_start_unix_ns.expect("spans left");
    let left = store.pods(0, u64::MAX).expect("pods");
    assert_eq!(
        left.iter().map(|p| p.span_count).sum::<u64>(),
        stats.span_count
    );
    assert_eq!(left[0].first_unix_ns, oldest, "summaries follow eviction");
}

#[test]
fn batches_larger_than_the_headroom_evict_instead_of_failing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        max_size_bytes: 1024 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    // Each batch is about half the map: commits meet MDB_MAP_FULL and evict to make room.
    let per_batch = 500_u64;
    for batch in 0..12_u64 {
        let spans: Vec<_> = (0..per_batch)
            .map(|i| {
                let id = batch * per_batch + i;
                runc_span(id, &format!("uid-{batch}"), id * SECOND)
            })
            .collect();
        store
            .put_batch(&spans)
            .unwrap_or_else(|error| panic!("batch {batch} failed: {error:?}"));
        let newest = store
            .spans_for_pod(&format!("uid-{batch}"), 0, u64::MAX, 1_000)
            .expect("query");
        assert_eq!(newest.len() as u64, per_batch, "batch {batch} is whole");
    }
    let stats = store.stats().expect("stats");
    assert_eq!(stats.span_count + stats.evicted_by_size, 12 * per_batch);
}

#[test]
fn a_span_too_large_for_the_map_is_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        max_size_bytes: 256 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    store
        .put_batch(&[runc_span(1, "uid-a", SECOND)])
        .expect("put");
    let mut huge = runc_span(2, "uid-a", 2 * SECOND);
    huge.attributes
        .push(Attribute::str("big", "x".repeat(64 * 1024)));
    store
        .put_batch(&[runc_span(3, "uid-a", 3 * SECOND), huge])
        .expect("the batch commits without the huge span");
    assert_eq!(
        ids(&store
            .spans_for_pod("uid-a", 0, u64::MAX, 10)
            .expect("query")),
        [1, 3],
        "nothing was evicted for it"
    );
    let stats = store.stats().expect("stats");
    assert_eq!((stats.rejected_spans, stats.evicted_by_size), (1, 0));
}

#[test]
fn spans_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = runc_span(1, "uid-a", 5 * SECOND);
    {
        let store = open(dir.path());
        store
            .put_batch(std::slice::from_ref(&written))
            .expect("put");
    }
    let store = open(dir.path());
    assert_eq!(
        store
            .spans_for_pod("uid-a", 0, u64::MAX, 10)
            .expect("query"),
        [written]
    );
}

#[test]
fn a_store_of_another_layout_is_emptied_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        store
            .put_batch(&[runc_span(1, "uid-a", SECOND)])
            .expect("put");
        let mut wtxn = store.inner.env.write_txn().expect("txn");
        store
            .inner
            .tables
            .overwrite_layout(&mut wtxn, b"an older layout")
            .expect("write");
        wtxn.commit().expect("commit");
    }
    let store = open(dir.path());
    assert_eq!(store.stats().expect("stats").span_count, 0);
    assert!(store.pods(0, u64::MAX).expect("pods").is_empty());
    store
        .put_batch(&[runc_span(2, "uid-a", SECOND)])
        .expect("put");
}

#[test]
fn bytes_per_span_is_measured() {
    let sample = runc_span(
        12_345,
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        1_700_000_000 * SECOND,
    );
    let bincode_len = codec::encode_span(&sample).expect("encode").len();
    let json_len = serde_json::to_vec(&sample).expect("json").len();
    assert!(
        bincode_len * 3 < json_len * 2,
        "bincode {bincode_len} vs json {json_len}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let empty = store.stats().expect("stats").used_bytes;
    let count = 10_000_u64;
    let spans: Vec<_> = (0..count)
        .map(|i| {
            let uid = format!("0f1e2d3c-4b5a-6978-8796-{:012x}", i / 20);
            runc_span(i, &uid, 1_700_000_000 * SECOND + i * 10_000_000)
        })
        .collect();
    for batch in spans.chunks(512) {
        store.put_batch(batch).expect("put");
    }
    let used = store.stats().expect("stats").used_bytes - empty;
    let per_span = used / count;
    println!(
        "value: {bincode_len} bytes (serde_json: {json_len}); store: {per_span} bytes per span \
         with keys, indexes and summaries"
    );
    assert!(
        per_span < 2 * bincode_len as u64,
        "{per_span} bytes per span"
    );
}

/// A start time `seconds` after an hour ago: recent enough for the writer's retention.
fn recent(seconds: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    (now.as_secs() - 3600 + seconds) * SECOND
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

fn stored(store: &Store) -> u64 {
    store.stats().expect("stats").span_count
}

#[tokio::test]
async fn the_writer_commits_full_batches_at_once_and_the_rest_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        batch_max_spans: 4,
        batch_max_delay: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    let (sink, writer) = store.start_writer(64);
    for id in 0..8 {
        sink.send(runc_span(id, "uid-a", recent(id))).expect("room");
    }
    eventually("two full batches are committed", || stored(&store) == 8).await;
    for id in 8..10 {
        sink.send(runc_span(id, "uid-a", recent(id))).expect("room");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored(&store), 8, "a partial batch waits for its delay");
    let stats = writer.shutdown().await;
    assert_eq!(stored(&store), 10, "shutdown flushes the partial batch");
    assert_eq!(
        stats,
        WriterStats {
            committed: 10,
            dropped: 0,
            lost: 0
        }
    );
    assert!(
        sink.send(runc_span(11, "uid-a", recent(11))).is_err(),
        "a stopped writer refuses"
    );
    assert_eq!(sink.dropped(), 1);
}

#[tokio::test]
async fn the_writer_commits_a_partial_batch_after_its_delay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        batch_max_delay: Duration::from_millis(50),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    let (sink, writer) = store.start_writer(64);
    sink.send(runc_span(1, "uid-a", recent(1))).expect("room");
    eventually("the span is committed", || stored(&store) == 1).await;
    assert_eq!(writer.shutdown().await.committed, 1);
}

#[tokio::test]
async fn a_full_queue_drops_spans_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (sink, writer) = store.start_writer(4);
    // The test runtime has one thread: the writer cannot run before this task yields.
    let refused = (0..7)
        .filter(|&id| sink.send(runc_span(id, "uid-a", recent(id))).is_err())
        .count();
    assert_eq!(refused, 3);
    assert_eq!(sink.dropped(), 3);
    let stats = writer.shutdown().await;
    assert_eq!((stats.committed, stats.dropped), (4, 3));
    assert_eq!(stored(&store), 4);
}

#[tokio::test]
async fn a_queue_full_in_bytes_drops_spans_and_gives_room_back_once_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one_span = runc_span(0, "uid-a", recent(0)).approx_bytes();
    let config = StoreConfig {
        // Room for three spans of this size, whatever the queue's count.
        queue_max_bytes: 3 * one_span + one_span / 2,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    let (sink, writer) = store.start_writer(1024);
    // The test runtime has one thread: the writer cannot run before this task yields.
    let refused = (0..7)
        .filter(|&id| sink.send(runc_span(id, "uid-a", recent(id))).is_err())
        .count();
    assert_eq!(refused, 4);
    eventually("the queued spans are committed", || stored(&store) == 3).await;
    sink.send(runc_span(9, "uid-a", recent(9)))
        .expect("room again once the batch is committed");
    let stats = writer.shutdown().await;
    assert_eq!((stats.committed, stats.dropped), (4, 4));
}

#[tokio::test]
async fn the_writer_flushes_and_ends_when_every_sink_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        batch_max_delay: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open");
    let (sink, writer) = store.start_writer(16);
    sink.send(runc_span(1, "uid-a", recent(1))).expect("room");
    drop(sink);
    eventually("the span is committed", || stored(&store) == 1).await;
    assert_eq!(writer.shutdown().await.committed, 1);
}
