//! Disk full: the store's directory on a tmpfs far smaller than the store's configured size.
//! The store must keep the newest spans by evicting the oldest, say so in its health, and
//! never crash. Needs root (it mounts a tmpfs); skips otherwise.

use nodetrace::model::{Attribute, PodRef, Span, SpanId, SpanKind, SpanStatus, TraceId};
use nodetrace::store::{Store, StoreConfig};
use std::path::Path;
use std::process::Command;

const POD_UID: &str = "6f2b7d3a-1c9e-4b8f-9a0d-2e5f7c1b3a94";

fn span(n: u64) -> Span {
    Span {
        trace_id: TraceId::from_pod_uid(POD_UID),
        span_id: SpanId::random(),
        parent_span_id: None,
        name: "runc create".to_owned(),
        service: "runc".to_owned(),
        kind: SpanKind::Internal,
        start_unix_ns: 1_000_000_000 + n * 1_000,
        end_unix_ns: 1_000_000_000 + n * 1_000 + 500,
        pod: Some(PodRef {
            uid: POD_UID.to_owned(),
            namespace: "shop".to_owned(),
            name: "web-0".to_owned(),
        }),
        // Some bulk, so that the small disk fills in a few thousand spans.
        attributes: vec![Attribute::str("filler", format!("{n:0>1000}"))],
        status: SpanStatus::Unset,
    }
}

/// A tmpfs of `size` mounted on a new temporary directory, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "nodetrace-full",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs");
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_evicts_the_oldest_spans_and_is_reported() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let disk = SmallDisk::mount("4m");
    let store = Store::open(
        &disk.path().join("store"),
        StoreConfig {
            max_size_bytes: 256 << 20,
            ..StoreConfig::default()
        },
    )
    .expect("open the store");
    assert_eq!(store.write_problem(), None);
    // 40 batches of 256 spans of ~1 KiB: ten times what the disk holds.
    for batch in 0..40u64 {
        let spans: Vec<Span> = (0..256).map(|i| span(batch * 256 + i)).collect();
        store
            .put_batch(&spans)
            .unwrap_or_else(|e| panic!("batch {batch} is stored by evicting older spans: {e:#}"));
    }
    let stats = store.stats().expect("stats");
    assert!(stats.evicted_by_size > 0, "{stats:?}");
    let newest = store
        .spans_for_pod(POD_UID, 0, u64::MAX, usize::MAX)
        .expect("query");
    let last_start = span(40 * 256 - 1).start_unix_ns;
    assert_eq!(
        newest.last().map(|s| s.start_unix_ns),
        Some(last_start),
        "the newest span is kept"
    );
    assert!(
        newest
            .first()
            .is_some_and(|s| s.start_unix_ns > span(0).start_unix_ns),
        "the oldest spans were evicted"
    );
    let problem = store.write_problem().expect("the full disk is reported");
    assert!(problem.contains("is full"), "{problem}");
}
