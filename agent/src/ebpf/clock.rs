//! Converts the kernel's CLOCK_MONOTONIC event times to Unix wall-clock time.

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, sampled when created.
#[derive(Copy, Clone, Debug)]
pub struct WallClock {
    realtime_minus_monotonic_ns: i128,
}

impl WallClock {
    /// Samples both clocks now (monotonic read on both sides of the realtime read).
    pub fn sample() -> Self {
        let before = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let after = clock_ns(libc::CLOCK_MONOTONIC);
        Self {
            realtime_minus_monotonic_ns: real - (before + after) / 2,
        }
    }

    /// Unix epoch nanoseconds of a CLOCK_MONOTONIC time.
    pub fn to_unix_ns(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns).unwrap_or(0)
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_monotonic_now_to_about_system_time_now() {
        let clock = WallClock::sample();
        let unix = clock.to_unix_ns(clock_ns(libc::CLOCK_MONOTONIC) as u64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        assert!(unix.abs_diff(now) < 50_000_000, "{unix} vs {now}");
    }
}
