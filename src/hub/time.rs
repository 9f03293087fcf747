//! The one place that turns wall time into hub time, and hub deadlines into timer sleeps.
//!
//! The hub itself never reads a clock: it is driven with `now` values. The server reads
//! [`SystemTimeSource`] and sleeps with [`sleep_until_deadline`], which rounds *up* to the
//! timer's granularity, so a timer never fires before the hub has something to do. If the
//! timer still wakes early (wall clock stepped back), `Hub::next_deadline` simply returns the
//! same future instant again: the hub only acts on `trigger_at <= now`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Micros;

/// Microseconds per second.
pub const SECOND: Micros = 1_000_000;

/// Granularity of tokio's timer wheel (1 ms).
pub const TOKIO_TIMER_GRANULARITY: Micros = 1_000;

/// Something that tells the hub what time it is.
pub trait TimeSource {
    /// Microseconds since the Unix epoch.
    fn now(&self) -> Micros;
}

/// Wall time from `SystemTime`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemTimeSource;

impl TimeSource for SystemTimeSource {
    fn now(&self) -> Micros {
        system_to_micros(SystemTime::now())
    }
}

/// Converts a `SystemTime` to microseconds since the epoch (0 before the epoch, saturating far after).
pub fn system_to_micros(t: SystemTime) -> Micros {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX),
        Err(_) => 0,
    }
}

/// Rounds `t` up to the next multiple of `granularity` (`t` itself when already a multiple;
/// a granularity of 0 or 1 leaves `t` unchanged).
pub fn round_up(t: Micros, granularity: Micros) -> Micros {
    if granularity <= 1 {
        return t;
    }
    match t % granularity {
        0 => t,
        r => t.saturating_add(granularity - r),
    }
}

/// How long to sleep from `now` so that the wake-up is at or after `deadline`, in whole units of
/// `granularity` (rounded up). Zero when the deadline has passed.
pub fn sleep_until_deadline(now: Micros, deadline: Micros, granularity: Micros) -> Duration {
    let wait = deadline.saturating_sub(now);
    Duration::from_micros(round_up(wait, granularity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_up_never_goes_below_the_input() {
        for g in [0u64, 1, 7, 1_000] {
            for t in 0..3_000u64 {
                let r = round_up(t, g);
                assert!(r >= t);
                if g > 1 {
                    assert_eq!(r % g, 0);
                    assert!(r - t < g);
                } else {
                    assert_eq!(r, t);
                }
            }
        }
        assert_eq!(round_up(u64::MAX, 1_000), u64::MAX);
    }

    #[test]
    fn sleep_is_rounded_up_and_zero_when_due() {
        assert_eq!(sleep_until_deadline(10, 5, 1_000), Duration::ZERO);
        assert_eq!(sleep_until_deadline(10, 10, 1_000), Duration::ZERO);
        assert_eq!(sleep_until_deadline(0, 1, 1_000), Duration::from_millis(1));
        assert_eq!(
            sleep_until_deadline(0, 1_000, 1_000),
            Duration::from_millis(1)
        );
        assert_eq!(
            sleep_until_deadline(0, 1_001, 1_000),
            Duration::from_millis(2)
        );
    }

    #[test]
    fn system_time_conversion() {
        assert_eq!(system_to_micros(UNIX_EPOCH), 0);
        assert_eq!(
            system_to_micros(UNIX_EPOCH + Duration::from_micros(1_234_567)),
            1_234_567
        );
        assert_eq!(system_to_micros(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(SystemTimeSource.now() > 1_600_000_000 * SECOND);
    }
}
