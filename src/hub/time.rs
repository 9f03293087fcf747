//! The one place that turns wall time into hub time.
//!
//! The hub itself never reads a clock: it is driven with `now` values. The server reads
//! [`SystemTimeSource`]; its timer thread (`server::core::TimerWake`) waits until the clock has
//! reached the hub's next deadline, re-checking after every wake-up, so it never ticks early.
//! Should it wake early anyway (wall clock stepped back), `Hub::next_deadline` simply returns
//! the same future instant again: the hub only acts on `trigger_at <= now`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Micros;
pub use crate::segment::SECOND;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
