//! The timing mode's bookkeeping: producers stamp each job's body with its intended trigger
//! time, consumers compare it with the time the job arrives.
//!
//! The intended trigger time is the producer's wall clock when the put is queued plus the
//! delay; the server receives the put a little later, so its own trigger time is never earlier.
//! A job arriving before its stamped time was therefore certainly delivered early; lateness
//! includes the put's one-way trip and the consumer's reply handling (microseconds on loopback).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::stats::Latency;
use super::workload::Hooks;

/// Body prefix marking a timing job.
const MAGIC: &[u8; 8] = b"ybtiming";
/// Magic, run id (u32), key (u64), trigger time in µs (u64); little-endian.
pub const STAMP_LEN: usize = 8 + 4 + 8 + 8;

/// Wall-clock microseconds since the Unix epoch.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Writes a stamp followed by filler up to `len` bytes (`len` ≥ [`STAMP_LEN`]).
pub fn write_stamp(out: &mut Vec<u8>, len: usize, run: u32, key: u64, trigger_us: u64) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&run.to_le_bytes());
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&trigger_us.to_le_bytes());
    out.resize(start + len, b'x');
}

/// Reads a stamp: `(run, key, trigger_us)`, or `None` for a body that is not a timing job.
pub fn read_stamp(body: &[u8]) -> Option<(u32, u64, u64)> {
    let rest = body.strip_prefix(MAGIC.as_slice())?;
    let run = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let key = u64::from_le_bytes(rest.get(4..12)?.try_into().ok()?);
    let trigger = u64::from_le_bytes(rest.get(12..20)?.try_into().ok()?);
    Some((run, key, trigger))
}

/// What the whole run has put and received; shared by producers and consumers.
pub struct Book {
    run: u32,
    grace_us: u64,
    acked: HashSet<u64>,
    seen: HashSet<u64>,
    /// Keys both acknowledged and received.
    matched: u64,
    duplicates: u64,
    /// Jobs from another run or not stamped at all (deleted, not judged).
    stale: u64,
    early: u64,
    /// Most negative lateness seen, in µs (0 if none early).
    earliest_us: i64,
    lateness: Latency,
    last_trigger_us: u64,
    producers_done: bool,
}

impl Book {
    pub fn new(run: u32, grace_us: u64) -> Self {
        Book {
            run,
            grace_us,
            acked: HashSet::new(),
            seen: HashSet::new(),
            matched: 0,
            duplicates: 0,
            stale: 0,
            early: 0,
            earliest_us: 0,
            lateness: Latency::new(),
            last_trigger_us: 0,
            producers_done: false,
        }
    }

    /// A put with this key and trigger time is about to be sent.
    pub fn planned(&mut self, trigger_us: u64) {
        self.last_trigger_us = self.last_trigger_us.max(trigger_us);
    }

    /// A put was acknowledged.
    pub fn acked(&mut self, key: u64) {
        if self.acked.insert(key) && self.seen.contains(&key) {
            self.matched += 1;
        }
    }

    /// A job with `body` arrived at `now_us`.
    pub fn received(&mut self, body: &[u8], now_us: u64) {
        let Some((run, key, trigger)) = read_stamp(body) else {
            self.stale += 1;
            return;
        };
        if run != self.run {
            self.stale += 1;
            return;
        }
        if !self.seen.insert(key) {
            self.duplicates += 1;
            return;
        }
        if self.acked.contains(&key) {
            self.matched += 1;
        }
        if now_us < trigger {
            self.early += 1;
            self.earliest_us = self.earliest_us.min(now_us as i64 - trigger as i64);
        } else {
            self.lateness.record(now_us - trigger);
        }
    }

    pub fn producers_done(&mut self) {
        self.producers_done = true;
    }

    /// Producers are done and every acknowledged job arrived, or the last one is overdue by
    /// more than the grace period.
    pub fn finished(&self, now_us: u64) -> bool {
        self.producers_done
            && (self.matched == self.acked.len() as u64
                || now_us > self.last_trigger_us.saturating_add(self.grace_us))
    }

    pub fn summary(&self) -> TimingSummary {
        TimingSummary {
            acked: self.acked.len() as u64,
            received: self.seen.len() as u64,
            missing: self.acked.len() as u64 - self.matched,
            unacked: self.seen.len() as u64 - self.matched,
            duplicates: self.duplicates,
            early: self.early,
            earliest_us: self.earliest_us,
            stale: self.stale,
            lateness: self.lateness.clone(),
            host_oversleep: Latency::new(),
        }
    }
}

/// The outcome of a timing run.
pub struct TimingSummary {
    /// Puts acknowledged.
    pub acked: u64,
    /// Distinct jobs of this run received.
    pub received: u64,
    /// Acknowledged but never received.
    pub missing: u64,
    /// Received but never acknowledged (the put's reply was lost or unexpected).
    pub unacked: u64,
    pub duplicates: u64,
    pub early: u64,
    pub earliest_us: i64,
    pub stale: u64,
    pub lateness: Latency,
    /// How late the generator's [`HostProbe`] woke during the run (empty: not measured).
    pub host_oversleep: Latency,
}

impl TimingSummary {
    /// Whether the server broke a promise: early, missing or duplicate deliveries.
    pub fn violations(&self) -> u64 {
        self.early + self.missing + self.duplicates + self.unacked
    }

    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "timing: {} acknowledged, {} received; early {} (earliest {} µs), missing {}, duplicates {}, unacknowledged {}, stale {}",
            self.acked,
            self.received,
            self.early,
            self.earliest_us,
            self.missing,
            self.duplicates,
            self.unacked,
            self.stale
        )];
        lines.extend(self.lateness.line("lateness"));
        lines.extend(self.host_oversleep.line("host nap"));
        lines
    }

    pub fn to_json(&self) -> Value {
        json!({
            "acked": self.acked,
            "received": self.received,
            "missing": self.missing,
            "unacked": self.unacked,
            "duplicates": self.duplicates,
            "early": self.early,
            "earliest_us": self.earliest_us,
            "stale": self.stale,
            "lateness_us": self.lateness.to_json(),
            "host_oversleep_us": self.host_oversleep.to_json(),
        })
    }
}

/// A measure of the machine, not of the server: a thread of the generator that sleeps 1 ms at a
/// time and records how late it wakes (it asks for no timer slack). A server's lateness cannot
/// be expected to beat what a bare thread gets in the same run: where the two maxima are alike,
/// the tail is the machine's (a vCPU not running, a busy core), not the server's.
pub struct HostProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Latency>,
}

impl HostProbe {
    const NAP: Duration = Duration::from_millis(1);

    pub fn start() -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("host-probe".into())
            .spawn(move || {
                // Without this, Linux may end each sleep up to 50 µs late on purpose.
                let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
                let mut late = Latency::new();
                while !flag.load(Ordering::Relaxed) {
                    let due = Instant::now() + Self::NAP;
                    std::thread::sleep(Self::NAP);
                    late.record(due.elapsed().as_micros() as u64);
                }
                late
            })?;
        Ok(HostProbe { stop, thread })
    }

    /// How late the naps ended, in µs.
    pub fn finish(self) -> Latency {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| Latency::new())
    }
}

/// Hooks of one producer connection: stamps bodies and records acknowledgements.
pub struct Producer {
    pub book: Arc<Mutex<Book>>,
    pub run: u32,
    /// Distinguishes producers' keys: key = producer << 40 | sequence.
    pub producer: u64,
    pub next_seq: u64,
}

impl Hooks for Producer {
    fn put_body(&mut self, out: &mut Vec<u8>, len: usize, delay_s: u32) -> u64 {
        let key = (self.producer << 40) | self.next_seq;
        self.next_seq += 1;
        let trigger = wall_us() + u64::from(delay_s) * 1_000_000;
        write_stamp(out, len, self.run, key, trigger);
        lock(&self.book).planned(trigger);
        key
    }

    fn inserted(&mut self, tag: u64) {
        lock(&self.book).acked(tag);
    }
}

/// Hooks of one consumer connection: judges each arrival, stops when the run is complete.
pub struct Consumer {
    pub book: Arc<Mutex<Book>>,
}

impl Hooks for Consumer {
    fn reserved(&mut self, body: &[u8]) {
        let now = wall_us();
        lock(&self.book).received(body, now);
    }

    fn keep_going(&mut self) -> bool {
        !lock(&self.book).finished(wall_us())
    }

    fn on_empty(&mut self) -> bool {
        self.keep_going()
    }
}

/// Locks the book; a panic elsewhere while holding it leaves the data usable for a report.
pub fn lock(book: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(run: u32, key: u64, trigger: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_stamp(&mut out, 100, run, key, trigger);
        out
    }

    #[test]
    fn stamp_round_trip() {
        let b = body(9, 1 << 40 | 5, 1_700_000_000_000_000);
        assert_eq!(b.len(), 100);
        assert_eq!(
            read_stamp(&b),
            Some((9, 1 << 40 | 5, 1_700_000_000_000_000))
        );
        assert_eq!(read_stamp(&b[..STAMP_LEN - 1]), None);
        assert_eq!(read_stamp(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), None);
    }

    #[test]
    fn book_judges_arrivals() {
        let mut book = Book::new(1, 5_000_000);
        for key in 0..4 {
            book.planned(1_000 + key);
            book.acked(key);
        }
        book.received(&body(1, 0, 1_000), 1_500); // 500 µs late
        book.received(&body(1, 1, 1_001), 900); // early by 101 µs
        book.received(&body(1, 1, 1_001), 2_000); // duplicate
        book.received(&body(2, 2, 1_002), 2_000); // another run
        book.received(b"plain", 2_000); // not stamped
        book.received(&body(1, 7, 1_000), 2_000); // never acknowledged
        assert!(!book.finished(2_000), "producers still running");
        book.producers_done();
        assert!(!book.finished(2_000), "keys 2 and 3 outstanding");
        assert!(book.finished(1_003 + 5_000_001), "grace exceeded");
        let s = book.summary();
        assert_eq!((s.acked, s.received, s.missing, s.unacked), (4, 3, 2, 1));
        assert_eq!(
            (s.duplicates, s.early, s.earliest_us, s.stale),
            (1, 1, -101, 2)
        );
        assert_eq!(s.lateness.count(), 2);
        assert_eq!(s.violations(), 1 + 2 + 1 + 1);
    }

    #[test]
    fn arrival_before_acknowledgement_still_matches() {
        let mut book = Book::new(1, 0);
        book.planned(10);
        book.received(&body(1, 3, 10), 10);
        book.acked(3);
        book.producers_done();
        assert!(book.finished(10));
        assert_eq!(book.summary().violations(), 0);
    }
}
