//! The per-connection engine: runs chains of commands ("units") with up to `pipeline` units in
//! flight, each unit having exactly one command outstanding at a time.
//!
//! Per round the engine starts new units, sends everything queued in one write (once at least
//! half of the window is free), reads once, and handles every complete reply in the read
//! buffer. With `pipeline` 1 this is a plain request/reply client; with K it keeps between K/2
//! and K commands in flight per connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::reply::Reply;
use super::stats::{Op, Tally};

/// The commands making up one unit of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// `put` → `reserve` → `delete`.
    Cycle,
    /// `put`.
    Put,
    /// `put` → `delete <id>` (with [`Plan::named`]: `put-named` → `delete-name`).
    PutDelete,
    /// `reserve-with-timeout` → `delete`; TIMED_OUT ends the unit without error.
    ///
    /// A server handles one connection's commands in order, so a blocking reserve would hold
    /// up the deletes pipelined behind it. With `pipeline` > 1 the reserves therefore ask with
    /// timeout 0; the first empty answer switches the connection to a single "probe"
    /// reserve with the full `timeout`, and a job arriving on the probe switches back.
    Consume { timeout: u32 },
}

/// Delays for puts, uniform over whole seconds `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayRange {
    pub lo: u32,
    pub hi: u32,
}

impl DelayRange {
    pub const ZERO: DelayRange = DelayRange { lo: 0, hi: 0 };

    /// Parses `A..B` (inclusive) or a single `A`, in seconds.
    pub fn parse(s: &str) -> Result<DelayRange, String> {
        let number = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("bad delay {t:?}: want seconds as an unsigned 32-bit integer"))
        };
        let (lo, hi) = match s.split_once("..") {
            Some((a, b)) => (number(a)?, number(b.strip_prefix('=').unwrap_or(b))?),
            None => {
                let v = number(s)?;
                (v, v)
            }
        };
        if lo > hi {
            return Err(format!("bad delay range {s:?}: start above end"));
        }
        Ok(DelayRange { lo, hi })
    }

    pub fn sample(&self, rng: &mut SplitMix) -> u32 {
        let span = u64::from(self.hi - self.lo) + 1;
        self.lo + (rng.next_u64() % span) as u32
    }
}

/// A small, fast, non-cryptographic generator (SplitMix64) for delays.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What one connection does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub chain: Chain,
    /// Units in flight at once (≥ 1).
    pub pipeline: usize,
    /// Units this connection may start; `None` for no limit.
    pub quota: Option<u64>,
    /// No unit starts at or after this instant.
    pub deadline: Option<Instant>,
    /// Units per second this connection may start; `None` for as fast as possible.
    pub rate: Option<f64>,
    pub pri: u32,
    pub ttr: u32,
    pub body: usize,
    pub delay: DelayRange,
    pub seed: u64,
    /// A put answered with something other than INSERTED is counted as refused
    /// ([`Tally::refused`]) but not as an error.
    pub refusals_ok: bool,
    /// Puts are `put-named`, each with a name of its own (from `seed` and a count).
    pub named: bool,
}

/// Extension points for the timing mode; the defaults suit the plain modes.
pub trait Hooks {
    /// Appends exactly `len` body bytes for a put with `delay_s`; returns a tag handed back to
    /// [`Hooks::inserted`].
    fn put_body(&mut self, out: &mut Vec<u8>, len: usize, _delay_s: u32) -> u64 {
        out.resize(out.len() + len, b'x');
        0
    }
    /// A put was acknowledged.
    fn inserted(&mut self, _tag: u64) {}
    /// A job was reserved (its delete is queued next).
    fn reserved(&mut self, _body: &[u8]) {}
    /// Whether to start further units.
    fn keep_going(&mut self) -> bool {
        true
    }
    /// Whether a consumer goes on after a reserve timed out on an empty tube.
    fn on_empty(&mut self) -> bool {
        false
    }
}

/// The hooks of the plain modes.
pub struct NoHooks;
impl Hooks for NoHooks {}

struct InFlight {
    op: Op,
    sent: Instant,
    unit_start: Instant,
    /// First command of its unit: the unit starts when it is sent.
    first: bool,
    /// A put: the tag from [`Hooks::put_body`]. A reserve: 1 when it waits the full timeout.
    tag: u64,
    /// A named put and its delete: the count its name is made of.
    name: u64,
}

/// Runs `plan` on `conn` until its quota, deadline or hooks stop it and nothing is in flight.
/// `start` is the run's common start (the origin of the rate schedule); `progress` is bumped
/// on every read so that a watcher can tell a stuck connection.
pub async fn drive<H: Hooks>(
    conn: &mut Conn,
    plan: &Plan,
    hooks: &mut H,
    start: Instant,
    progress: &AtomicU64,
) -> Tally {
    let mut tally = Tally::default();
    let pipeline = plan.pipeline.max(1);
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(pipeline);
    let mut unsent = 0usize;
    let mut started: u64 = 0;
    let mut stopped = false;
    // Consume chains: only one full-timeout reserve in flight (see `Chain::Consume`).
    let mut probing = pipeline == 1;
    let mut rng = SplitMix::new(plan.seed);
    loop {
        if !stopped {
            let now = Instant::now();
            // Every active unit has exactly one command in flight.
            let limit = if probing { 1 } else { pipeline };
            while inflight.len() < limit {
                if plan.quota.is_some_and(|q| started >= q)
                    || plan.deadline.is_some_and(|d| now >= d)
                    || !hooks.keep_going()
                {
                    stopped = true;
                    break;
                }
                if let Some(rate) = plan.rate
                    && started as f64 >= now.duration_since(start).as_secs_f64() * rate + 1.0
                {
                    break;
                }
                let (op, tag) = match plan.chain {
                    Chain::Cycle | Chain::Put | Chain::PutDelete => {
                        let delay = plan.delay.sample(&mut rng);
                        let mut tag = 0;
                        let name = plan.named.then_some((plan.seed, started));
                        conn.queue_put(name, plan.pri, delay, plan.ttr, plan.body, |w| {
                            tag = hooks.put_body(w, plan.body, delay);
                        });
                        (Op::Put, tag)
                    }
                    Chain::Consume { timeout } => {
                        conn.queue_reserve(Some(if probing { timeout } else { 0 }));
                        (Op::Reserve, u64::from(probing))
                    }
                };
                inflight.push_back(InFlight {
                    op,
                    sent: now,
                    unit_start: now,
                    first: true,
                    tag,
                    name: started,
                });
                unsent += 1;
                started += 1;
            }
        }
        if inflight.is_empty() {
            match plan.rate {
                Some(rate) if !stopped => {
                    // Only the rate holds the next unit back.
                    let due = start + Duration::from_secs_f64(started as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    continue;
                }
                _ => break,
            }
        }
        // Send once at least half the window is free (with pipeline 1: once nothing is in
        // flight), so that a server answering each command with its own write does not turn
        // the pipeline into one small write per reply.
        if unsent > 0 && inflight.len() - unsent <= pipeline / 2 {
            let sent = Instant::now();
            for e in inflight.iter_mut().rev().take(unsent) {
                e.sent = sent;
                if e.first {
                    e.unit_start = sent;
                }
            }
            unsent = 0;
            if let Err(e) = conn.flush().await {
                tally.error(format!("write: {e}"));
                return tally;
            }
        }
        if let Err(e) = conn.read_more().await {
            tally.error(format!("read: {e}"));
            return tally;
        }
        progress.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        loop {
            let reply = match conn.try_reply() {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(e) => {
                    tally.error(format!("read: {e}"));
                    return tally;
                }
            };
            let Some(e) = inflight.pop_front() else {
                tally.error(format!(
                    "reply with no command outstanding: {}",
                    conn.describe(&reply)
                ));
                return tally;
            };
            let us = now.duration_since(e.sent).as_micros() as u64;
            let next = match (e.op, &reply) {
                (Op::Put, Reply::Inserted(id)) => {
                    tally.ops[Op::Put as usize].record(us);
                    hooks.inserted(e.tag);
                    if plan.chain == Chain::Cycle {
                        conn.queue_reserve(None);
                        Some(Op::Reserve)
                    } else if plan.chain == Chain::PutDelete {
                        if plan.named {
                            conn.queue_delete_name(plan.seed, e.name);
                        } else {
                            conn.queue_delete(*id);
                        }
                        Some(Op::Delete)
                    } else {
                        tally.unit_done(now, us);
                        None
                    }
                }
                (Op::Reserve, Reply::Reserved { id, body }) => {
                    tally.ops[Op::Reserve as usize].record(us);
                    probing = pipeline == 1;
                    hooks.reserved(conn.slice(body.clone()));
                    conn.queue_delete(*id);
                    Some(Op::Delete)
                }
                (Op::Reserve, Reply::TimedOut) if matches!(plan.chain, Chain::Consume { .. }) => {
                    if e.tag == 0 {
                        // A zero-timeout reserve found nothing: probe before giving up.
                        probing = true;
                    } else {
                        tally.timeouts += 1;
                        if !hooks.on_empty() {
                            stopped = true;
                        }
                    }
                    None
                }
                (Op::Delete, Reply::Deleted) => {
                    tally.ops[Op::Delete as usize].record(us);
                    tally.unit_done(now, now.duration_since(e.unit_start).as_micros() as u64);
                    None
                }
                (Op::Put, reply) => {
                    let text = conn.describe(reply);
                    tally.refusal(&text);
                    if !plan.refusals_ok {
                        tally.error(format!("Put: unexpected reply {text}"));
                    }
                    None
                }
                (op, reply) => {
                    tally.error(format!("{op:?}: unexpected reply {}", conn.describe(reply)));
                    None
                }
            };
            if let Some(op) = next {
                inflight.push_back(InFlight {
                    op,
                    sent: now,
                    unit_start: e.unit_start,
                    first: false,
                    tag: 0,
                    name: e.name,
                });
                unsent += 1;
            }
        }
    }
    if let Err(e) = conn.flush().await {
        tally.error(format!("write: {e}"));
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_ranges() {
        assert_eq!(
            DelayRange::parse("3600..7200"),
            Ok(DelayRange { lo: 3600, hi: 7200 })
        );
        assert_eq!(DelayRange::parse("1..=2"), Ok(DelayRange { lo: 1, hi: 2 }));
        assert_eq!(DelayRange::parse("5"), Ok(DelayRange { lo: 5, hi: 5 }));
        assert!(DelayRange::parse("7..3").is_err());
        assert!(DelayRange::parse("-1..3").is_err());
        assert!(DelayRange::parse("1..").is_err());
        assert!(DelayRange::parse("4294967296").is_err());
    }

    #[test]
    fn delays_cover_the_range_and_stay_inside() {
        let range = DelayRange { lo: 10, hi: 13 };
        let mut rng = SplitMix::new(7);
        let mut seen = [0u32; 4];
        for _ in 0..1000 {
            let d = range.sample(&mut rng);
            assert!((10..=13).contains(&d));
            seen[(d - 10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        let full = DelayRange {
            lo: 0,
            hi: u32::MAX,
        };
        full.sample(&mut rng);
    }
}
