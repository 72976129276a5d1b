//! Exponential backoff with jitter between export retries.

use rand::Rng;
use std::time::Duration;

/// Delays that double from `initial` up to `max`; each delay is drawn from the upper half of
/// the current step (`step/2 ..= step`), so agents that lost the same collector spread out.
#[derive(Clone, Debug)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            step: initial,
        }
    }

    /// The delay before the next attempt; the step after it doubles.
    pub(super) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let jitter_ns = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::rng().random_range(0..=jitter_ns))
    }

    /// Back to the initial step after a success.
    pub(super) fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let steps: Vec<u64> = (0..12).map(|i| (100u64 << i).min(30_000)).collect();
        for step in steps {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                (step / 2..=step).contains(&delay),
                "delay {delay} ms for step {step} ms"
            );
        }
        assert_eq!(backoff.step, Duration::from_secs(30));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
