//! State shared by every task of a server: the hub behind one mutex, the wake-up channels of
//! waiting reservers, the timer's re-arm signal and the command counters.
//!
//! The hub lock is a `std::sync::Mutex` held only for the length of one hub call (plus, with
//! `-f 0`, its flush): never across an `.await` or a socket write, so a slow client cannot stall
//! the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, mpsc};

use super::config::{Durability, Mode};
use super::stats::{self, CmdCounters, ProcessInfo};
use crate::hub::time::{SystemTimeSource, TimeSource};
use crate::hub::{ConnId, Hub, HubError, Micros, ReserveOutcome};
use crate::segment::Segment;

/// Wake-ups of one connection's blocked reserve.
pub type WakeupSender = mpsc::UnboundedSender<ReserveOutcome>;
pub type WakeupReceiver = mpsc::UnboundedReceiver<ReserveOutcome>;

struct Locked<S: Segment> {
    hub: Hub<S>,
    waiters: HashMap<ConnId, WakeupSender>,
    /// The deadline the timer task sleeps until (`u64::MAX`: none). Read and written under the
    /// lock so that a call making the deadline earlier always sees what the timer armed.
    armed: Micros,
}

/// What every task of one server shares.
pub struct Core<S: Segment> {
    locked: Mutex<Locked<S>>,
    /// Wakes the timer task when a call made the hub's next deadline earlier.
    pub timer: Notify,
    pub counters: CmdCounters,
    pub durability: Durability,
    pub max_job_size: u32,
    mode: Mode,
    started: Instant,
    draining: AtomicBool,
    /// A change was made since the last periodic flush.
    dirty: AtomicBool,
    id: String,
    host: (String, String, String),
}

/// The current time in hub units.
pub fn now() -> Micros {
    SystemTimeSource.now()
}

impl<S: Segment> Core<S> {
    pub fn new(hub: Hub<S>, durability: Durability, max_job_size: u32, mode: Mode) -> Self {
        Core {
            locked: Mutex::new(Locked {
                hub,
                waiters: HashMap::new(),
                armed: Micros::MAX,
            }),
            timer: Notify::new(),
            counters: CmdCounters::default(),
            durability,
            max_job_size,
            mode,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            id: stats::instance_id(),
            host: stats::host_facts(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Locked<S>> {
        // A panic inside a hub call poisons the lock; the hub's own invariants are per call, so
        // serving on is better than taking every connection down with it.
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the hub, then hands out the wake-ups it produced and re-arms the timer if the
    /// next deadline moved earlier.
    pub fn with_hub<R>(&self, f: impl FnOnce(&mut Hub<S>) -> R) -> R {
        let mut g = self.lock();
        let r = f(&mut g.hub);
        self.after_call(&mut g);
        r
    }

    /// Like [`Core::with_hub`] for a call that changed persisted state: with `-f 0` the change is
    /// made durable before the caller replies. (The hook where group commit will go.)
    pub fn with_hub_change<R>(&self, f: impl FnOnce(&mut Hub<S>) -> R) -> R {
        let mut g = self.lock();
        let r = f(&mut g.hub);
        if self.durability == Durability::EveryChange {
            self.flush_locked(&mut g);
        } else {
            self.dirty.store(true, Ordering::Relaxed);
        }
        self.after_call(&mut g);
        r
    }

    fn after_call(&self, g: &mut Locked<S>) {
        for (c, outcome) in g.hub.take_wakeups() {
            if let Some(tx) = g.waiters.get(&c) {
                // A closed receiver means the connection is going away; disconnect follows.
                let _ = tx.send(outcome);
            }
        }
        let next = g.hub.next_deadline().unwrap_or(Micros::MAX);
        if next < g.armed {
            g.armed = next;
            self.timer.notify_one();
        }
    }

    fn flush_locked(&self, g: &mut Locked<S>) {
        if let Err(e) = g.hub.flush() {
            tracing::error!("flush failed: {e}");
        }
    }

    /// Registers a connection and its wake-up channel.
    pub fn connect(&self, tx: WakeupSender) -> ConnId {
        let mut g = self.lock();
        let c = g.hub.connect();
        g.waiters.insert(c, tx);
        c
    }

    /// Forgets a connection: its reserved jobs are ready again at once.
    pub fn disconnect(&self, c: ConnId) {
        let mut g = self.lock();
        g.waiters.remove(&c);
        g.hub.disconnect(c, now());
        self.after_call(&mut g);
    }

    /// The timer task's step: brings the hub to `now` and returns its next deadline, which it
    /// records as armed.
    pub fn tick(&self, now: Micros) -> Option<Micros> {
        let mut g = self.lock();
        g.hub.tick(now);
        self.after_call(&mut g);
        let next = g.hub.next_deadline();
        g.armed = next.unwrap_or(Micros::MAX);
        next
    }

    /// Makes every change durable.
    pub fn flush(&self) -> Result<(), HubError> {
        self.dirty.store(false, Ordering::Relaxed);
        self.lock().hub.flush()
    }

    /// The periodic flush (`-f MS`): flushes only if a change was made since the last one.
    pub fn flush_if_dirty(&self) -> Result<(), HubError> {
        if self.dirty.swap(false, Ordering::Relaxed) {
            self.lock().hub.flush()
        } else {
            Ok(())
        }
    }

    /// Drain mode (SIGUSR1): puts are refused from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.with_hub(|h| h.set_draining(true));
    }

    pub fn process_info(&self) -> ProcessInfo {
        let (utime, stime) = stats::rusage();
        ProcessInfo {
            max_job_size: self.max_job_size,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            rusage_utime: utime,
            rusage_stime: stime,
            uptime: self.started.elapsed().as_secs(),
            draining: self.draining.load(Ordering::Relaxed),
            id: self.id.clone(),
            hostname: self.host.0.clone(),
            os: self.host.1.clone(),
            platform: self.host.2.clone(),
            mode: self.mode.name(),
        }
    }
}
