//! Wall-clock windows around calls, so a test can check that whatever a call caused
//! (spans, events) happened between the moment it was sent and the moment it returned.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall-clock interval a call took, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CallWindow {
    /// Taken just before the request was sent.
    pub start_unix_ns: u64,
    /// Taken just after the response (or error) came back.
    pub end_unix_ns: u64,
}

impl CallWindow {
    /// Whether `unix_ns` lies inside the window (both ends included).
    pub fn contains(&self, unix_ns: u64) -> bool {
        self.start_unix_ns <= unix_ns && unix_ns <= self.end_unix_ns
    }

    /// Whether the interval `[start_unix_ns, end_unix_ns]` lies entirely inside the window.
    pub fn encloses(&self, start_unix_ns: u64, end_unix_ns: u64) -> bool {
        self.contains(start_unix_ns) && self.contains(end_unix_ns) && start_unix_ns <= end_unix_ns
    }

    /// How long the call took.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_ns.saturating_sub(self.start_unix_ns))
    }

    /// Runs `call` and measures the window around it.
    pub async fn measure<T, F>(call: F) -> (T, CallWindow)
    where
        F: Future<Output = T>,
    {
        let start_unix_ns = now_unix_ns();
        let value = call.await;
        let end_unix_ns = now_unix_ns();
        (
            value,
            CallWindow {
                start_unix_ns,
                end_unix_ns,
            },
        )
    }
}

/// A call's result together with the window it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed<T> {
    /// What the call returned.
    pub value: T,
    /// When it was sent and when it returned.
    pub window: CallWindow,
}

impl<T> Timed<T> {
    /// Splits into the value and the window.
    pub fn into_parts(self) -> (T, CallWindow) {
        (self.value, self.window)
    }
}

/// Nanoseconds since the Unix epoch, now (0 if the clock is before the epoch).
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
