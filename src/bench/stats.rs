//! Counters and latency histograms a connection collects, merged at the end of a run.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Highest latency recorded exactly, in microseconds (60 s); larger values saturate.
const MAX_US: u64 = 60_000_000;
/// How many error messages are kept for the report.
const KEPT_ERRORS: usize = 5;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latency(Histogram<u32>);

impl Latency {
    pub fn new() -> Self {
        // Invariant: 1 ≤ 60e6 and 3 significant digits are valid bounds.
        Latency(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn merge(&mut self, other: &Latency) {
        // Invariant: histograms built by `new` share bounds, so addition cannot fail.
        self.0.add(&other.0).expect("same histogram bounds");
    }

    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// `{count, mean, p50, p90, p99, p999, max}` in microseconds.
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count(),
            "mean": (self.0.mean() * 10.0).round() / 10.0,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "p999": self.quantile(0.999),
            "max": self.0.max(),
        })
    }

    /// One human-readable line, or nothing when empty.
    pub fn line(&self, name: &str) -> Option<String> {
        (self.count() > 0).then(|| {
            format!(
                "  {name:<8} latency µs: p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
                self.quantile(0.5),
                self.quantile(0.9),
                self.quantile(0.99),
                self.quantile(0.999),
                self.0.max(),
                self.count()
            )
        })
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// Which command a latency belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put = 0,
    Reserve = 1,
    Delete = 2,
}

/// What one connection (or, merged, a whole run) did.
#[derive(Default)]
pub struct Tally {
    /// Completed units of work (a cycle, a put, a reserve+delete).
    pub units: u64,
    /// Unexpected replies and failed connections.
    pub errors: u64,
    /// `reserve-with-timeout` that answered TIMED_OUT.
    pub timeouts: u64,
    /// Puts the server answered with something other than INSERTED (`OUT_OF_MEMORY`,
    /// `DRAINING`, `JOB_TOO_BIG`, beanstalkd's `BURIED <id>`, ...), by the reply's first word.
    /// They are errors too unless the run tolerates refusals.
    pub refused: BTreeMap<String, u64>,
    /// The first few error messages.
    pub messages: Vec<String>,
    /// Latency per command (send → reply), indexed by [`Op`].
    pub ops: [Latency; 3],
    /// Latency of whole units (first command sent → last reply).
    pub unit: Latency,
    /// When the last unit completed.
    pub last_unit: Option<Instant>,
}

impl Tally {
    pub fn error(&mut self, message: String) {
        self.errors += 1;
        if self.messages.len() < KEPT_ERRORS {
            self.messages.push(message);
        }
    }

    /// A put answered by `reply` (a line other than INSERTED).
    pub fn refusal(&mut self, reply: &str) {
        *self.refused.entry(refusal_word(reply)).or_default() += 1;
    }

    /// Refused puts of every kind.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// One unit completed at `now`, having taken `us`.
    pub fn unit_done(&mut self, now: Instant, us: u64) {
        self.units += 1;
        self.unit.record(us);
        self.last_unit = Some(now);
    }

    pub fn merge(&mut self, other: &Tally) {
        self.units += other.units;
        self.last_unit = self.last_unit.max(other.last_unit);
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        for (word, n) in &other.refused {
            *self.refused.entry(word.clone()).or_default() += n;
        }
        for m in &other.messages {
            if self.messages.len() < KEPT_ERRORS {
                self.messages.push(m.clone());
            }
        }
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            mine.merge(theirs);
        }
        self.unit.merge(&other.unit);
    }
}

/// The key a refusal is counted under: the reply's first word (`BURIED 17` → `BURIED`), at most
/// 32 characters, `?` when empty.
fn refusal_word(reply: &str) -> String {
    let word: String = reply
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .chars()
        .take(32)
        .collect();
    word
}

/// CPU time used so far by this process (all threads, user + system), in microseconds; 0 where
/// unknown. Resolution is the kernel's clock tick (10 ms), fine for runs of a second or more.
pub fn process_cpu_us() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_us_from_stat(&s))
        .unwrap_or(0)
}

/// User + system time from a `/proc/PID/stat` line, in microseconds (clock ticks of 1/100 s,
/// the fixed USER_HZ of the proc interface).
pub fn cpu_us_from_stat(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_and_merge() {
        let mut a = Latency::new();
        for us in 1..=100 {
            a.record(us);
        }
        let mut b = Latency::new();
        b.record(0); // counted as 1 µs
        b.record(u64::MAX); // saturates at the top
        a.merge(&b);
        assert_eq!(a.count(), 102);
        assert_eq!(a.quantile(0.5), 50);
        assert!(a.quantile(1.0) >= MAX_US);
        assert_eq!(a.to_json()["count"], 102);
    }

    #[test]
    fn tally_keeps_a_few_messages() {
        let mut t = Tally::default();
        for i in 0..10 {
            t.error(format!("e{i}"));
        }
        let mut total = Tally::default();
        total.merge(&t);
        total.merge(&t);
        assert_eq!(total.errors, 20);
        assert_eq!(total.messages.len(), KEPT_ERRORS);
    }

    #[test]
    fn refusals_are_counted_by_first_word() {
        let mut t = Tally::default();
        t.refusal("OUT_OF_MEMORY");
        t.refusal("BURIED 17");
        t.refusal("BURIED 18");
        t.refusal("");
        let mut total = Tally::default();
        total.merge(&t);
        total.merge(&t);
        assert_eq!(total.refused_total(), 8);
        assert_eq!(total.refused["OUT_OF_MEMORY"], 2);
        assert_eq!(total.refused["BURIED"], 4);
        assert_eq!(total.refused["?"], 2);
        assert_eq!(refusal_word(&"X".repeat(100)).len(), 32);
    }

    #[test]
    fn cpu_from_stat_line() {
        let line = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0";
        assert_eq!(cpu_us_from_stat(line), Some(267 * 10_000));
        assert_eq!(cpu_us_from_stat("1234 (x) S 1 2"), None);
        assert_eq!(cpu_us_from_stat("garbage"), None);
    }
}
