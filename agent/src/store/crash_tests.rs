//! Crash test: a writer process killed with SIGKILL in the middle of its commits loses at most
//! the batch it had not committed, and the store reopens with every committed span readable.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tests::runc_span;
use super::{Store, StoreConfig};
use crate::model::Span;

/// Set in the child: the store directory it writes to.
const CHILD_DIR_ENV: &str = "NODETRACE_STORE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "store::crash_tests::a_killed_writer_loses_at_most_its_uncommitted_batch";
const BATCH: u64 = 50;
const COMMITTED: &str = "committed ";

fn config() -> StoreConfig {
    StoreConfig {
        max_size_bytes: 256 * 1024 * 1024,
        ..StoreConfig::default()
    }
}

fn expected(id: u64) -> Span {
    runc_span(id, "uid-crash", (id + 1) * 1_000_000)
}

#[test]
fn a_killed_writer_loses_at_most_its_uncommitted_batch() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        write_until_killed(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    for round in 0..5_u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the writer child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reports = BufReader::new(stdout)
            .lines()
            .map(|line| line.expect("read the child's stdout"))
            .filter_map(|line| line.strip_prefix(COMMITTED).map(str::to_owned));
        let mut reported = 0;
        for _ in 0..3 + round * 4 {
            let report = reports.next().unwrap_or_else(|| {
                let status = child.wait();
                panic!("round {round}: the child ended before reporting: {status:?}")
            });
            reported = report.parse::<u64>().expect("a span count");
        }
        std::thread::sleep(Duration::from_millis(round * 3));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "round {round}: the child was not killed");

        let store = Store::open(dir.path(), config())
            .unwrap_or_else(|error| panic!("round {round}: reopen failed: {error:?}"));
        let spans = store
            .spans_for_pod("uid-crash", 0, u64::MAX, usize::MAX)
            .expect("read back");
        let found = spans.len() as u64;
        assert!(
            found >= reported,
            "round {round}: {reported} spans reported committed, {found} found"
        );
        assert_eq!(
            found % BATCH,
            0,
            "round {round}: a batch was partly committed"
        );
        for (id, span) in (0..).zip(&spans) {
            assert_eq!(span, &expected(id), "round {round}: span {id} differs");
        }
        assert_eq!(store.stats().expect("stats").span_count, found);
        eprintln!("round {round}: {reported} reported, {found} found after SIGKILL");
    }
}

/// The child: commits batches in a loop, printing the number of spans committed after each
/// commit, until it is killed (or gives up after a minute, should the parent be gone).
fn write_until_killed(dir: &Path) {
    let store = Store::open(dir, config()).expect("the child opens the store");
    let mut next = store.stats().expect("stats").span_count;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let batch: Vec<_> = (next..next + BATCH).map(expected).collect();
        store.put_batch(&batch).expect("the child commits");
        next += BATCH;
        println!("{COMMITTED}{next}");
    }
}
