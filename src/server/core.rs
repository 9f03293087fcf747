//! State shared by every task of a server: the hub behind one mutex, the wake-up channels of
//! waiting reservers, the timer's re-arm signal, the group commit of the sync threads and the
//! counters of commands and of the hub lock.
//!
//! The hub lock is a `std::sync::Mutex` held only for the length of one hub call: never across
//! an `.await` or a blocking socket write, so a slow client cannot stall the others. The one
//! write under it is the non-blocking write of a blocked reserve's reply ([`Waiter`]), which
//! never waits for the client: what the socket does not take at once, the connection writes.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::config::{Durability, Mode};
use super::lock_stats::{HOLD_KINDS, LONG_HOLDS, LockStats, hold_kind};
use super::reply::reserve_reply;
use super::stats::{self, CmdCounters, ProcessInfo};
use crate::hub::time::{SystemTimeSource, TimeSource};
use crate::hub::{ConnId, Hub, HubError, Micros, ReserveOutcome, StoreWork};
use crate::segment::{Deferral, Segment};
use crate::store::PunchJob;

/// The wake-ups of one connection's blocked reserve, from the hub ([`Waiter`]) to the
/// connection's task. A queue that holds no allocation while empty and a [`Notify`], rather
/// than a channel: a tokio channel allocates a block of 32 slots (about 2 KB) up front, which
/// every idle connection would hold.
#[derive(Default)]
pub struct Wakeups {
    queue: Mutex<VecDeque<Wakeup>>,
    ready: Notify,
}

impl Wakeups {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Wakeup>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, w: Wakeup) {
        self.queue().push_back(w);
        self.ready.notify_one();
    }

    /// The next wake-up, if one is queued.
    pub fn try_recv(&self) -> Option<Wakeup> {
        self.queue().pop_front()
    }

    /// Waits for the next wake-up.
    pub async fn recv(&self) -> Wakeup {
        loop {
            if let Some(w) = self.try_recv() {
                return w;
            }
            // A wake-up sent since the check left a permit: this returns at once.
            self.ready.notified().await;
        }
    }
}

/// How a blocked reserve ends.
pub enum Wakeup {
    /// The connection replies once change `change` (the one that last wrote the job handed
    /// out; 0: none) is durable.
    Outcome {
        outcome: ReserveOutcome,
        change: u64,
    },
    /// The reply was sent up to byte `sent` by the thread that handed out the job; the
    /// connection sends the rest.
    Sent { reply: Vec<u8>, sent: usize },
}

/// A client socket as a connection and the hub's wake-ups use it: through a shared reference,
/// readiness first, then a non-blocking read or write. The connection waits for readiness
/// before it allocates a buffer, so an idle connection holds none; the thread that hands out a
/// job to a blocked reserve writes its reply on the same socket ([`Waiter`]), without a second
/// file descriptor.
pub trait Socket: AsFd + Send + Sync + 'static {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    /// Runs the non-blocking read `f` if the socket is readable (`WouldBlock` otherwise); `f`
    /// answering `WouldBlock` clears the readiness, so the next read waits for more data.
    fn try_io_read(&self, f: &mut dyn FnMut() -> std::io::Result<()>) -> std::io::Result<()>;
    /// Writes what the socket takes now (`WouldBlock`: nothing).
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;
}

macro_rules! socket {
    ($t:ty) => {
        impl Socket for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn try_io_read(
                &self,
                f: &mut dyn FnMut() -> std::io::Result<()>,
            ) -> std::io::Result<()> {
                <$t>::try_io(self, tokio::io::Interest::READABLE, f)
            }
            fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
                <$t>::try_write(self, buf)
            }
        }
    };
}
socket!(tokio::net::TcpStream);
socket!(tokio::net::UnixStream);

/// A connection as the hub's wake-ups reach it.
///
/// A job that becomes due is handed out by the timer thread (or by the task of the put that
/// made it ready). Waking the connection's task to write the reply costs a second thread
/// wake-up on the way to the client, and on a busy machine each wake-up can be late; so when
/// the connection is `idle` (blocked in a reserve with every earlier reply sent) the reply is
/// sent right there on its socket. The task, blocked until its wake-up arrives, writes nothing
/// meanwhile, so replies stay in order. With `-f 0` that happens only if the change that last
/// wrote the job is durable already (usually: a job made ready by time or a timeout); if not (a
/// put or kick in flight), the task replies once it is.
pub struct Waiter {
    wakeups: Arc<Wakeups>,
    socket: Arc<dyn Socket>,
    idle: bool,
}

impl Waiter {
    pub fn new(wakeups: Arc<Wakeups>, socket: Arc<dyn Socket>) -> Self {
        Waiter {
            wakeups,
            socket,
            idle: false,
        }
    }

    /// Hands over a wake-up, sending its reply at once when the connection is idle and the
    /// change it shows (`change`, see [`Wakeup::Outcome`]) is `durable` already; otherwise the
    /// connection replies once it is.
    fn wake(&mut self, outcome: ReserveOutcome, change: u64, durable: bool) {
        let idle = std::mem::take(&mut self.idle);
        let wakeup = if idle && durable && !matches!(outcome, ReserveOutcome::Wait) {
            let resp = reserve_reply(outcome);
            crate::observe::reply(&resp);
            let mut reply = Vec::with_capacity(64);
            resp.encode(&mut reply);
            // Non-blocking: a full socket buffer or an error leaves the rest to the
            // connection, which meets the error itself.
            let sent = self.socket.try_write(&reply).unwrap_or(0);
            Wakeup::Sent { reply, sent }
        } else {
            Wakeup::Outcome { outcome, change }
        };
        self.wakeups.send(wakeup);
    }
}

/// What the hub lock guards.
struct Locked<S: Segment> {
    hub: Hub<S>,
    /// How each connection's blocked reserve is woken.
    waiters: HashMap<ConnId, Waiter>,
    /// The deadline the timer thread sleeps until (`u64::MAX`: none). Read and written under the
    /// lock so that a call making the deadline earlier always sees what the timer armed.
    armed: Micros,
}

/// What every task of one server shares.
pub struct Core<S: Segment> {
    locked: Mutex<Locked<S>>,
    /// How the hub lock is used (`stats`: `hub-lock-*`): the measured argument for one lock.
    pub lock_stats: LockStats,
    /// Wakes the timer thread when a call made the hub's next deadline earlier.
    pub timer: TimerWake,
    pub counters: CmdCounters,
    pub durability: Durability,
    pub max_job_size: u32,
    mode: Mode,
    started: Instant,
    draining: AtomicBool,
    /// Changes of persisted state so far; bumped under the hub lock.
    changes: AtomicU64,
    /// Every change numbered up to this one is durable (synced). It stops moving once the
    /// files are untrusted.
    synced: AtomicU64,
    /// A sync (or a flush) failed: the files may have lost acknowledged-to-be changes, so the
    /// server stops trusting them ([`Core::distrust`]): no later change is acknowledged (they
    /// are refused), no reply waiting for a change not synced before is sent, and no clean
    /// summary is written, so the next start scans every segment.
    untrusted: AtomicBool,
    /// Held (shared) by each sync thread for the whole of a sync, from taking the batch to
    /// publishing its outcome, and (exclusive) by [`Core::flush`]: a flush never marks as
    /// synced the changes of a batch still being synced (their files left the hub's sets with
    /// the batch).
    sync_lock: RwLock<()>,
    /// Tests: syncs fail without syncing ([`Core::inject_sync_failures`]).
    failing_syncs: AtomicBool,
    /// Sync batches of this many files or more use one `syncfs` (`--syncfs-from`; 0: never).
    syncfs_from: usize,
    /// The timer holds a due split step back while a periodic sync runs ([`Core::tick`]):
    /// since when (µs; 0: not holding), and whether the sync thread is to wake it.
    split_held_since: AtomicU64,
    split_waits: AtomicBool,
    /// Tests: syncs wait after taking their batch ([`Core::hold_syncs`]).
    hold: SyncHold,
    /// The tasks waiting for a sync, the batches in flight, and the sync threads' wake-up
    /// ([`Core::run_syncs`]).
    sync_queue: SyncQueue,
    /// Completed syncs (a group commit makes far fewer than changes).
    pub syncs: AtomicU64,
    /// Changes made durable by those syncs, and the µs they took (`stats`: `syncs`,
    /// `sync-changes`, `sync-us`): changes per sync and the sync's cost, what group commit
    /// is judged by.
    sync_changes: AtomicU64,
    sync_ns: AtomicU64,
    /// The epoch of the last sync batch that completed, told to the hub ([`Hub::synced`])
    /// when the next batch is taken, in the same hold of the lock.
    synced_epoch: AtomicU64,
    /// This process's instance id (`stats`: `id`).
    id: String,
    /// Host name, OS version and machine (`stats`: `hostname`, `os`, `platform`).
    host: (String, String, String),
    /// Destroys the segments of retired spokes, outside the hub lock (see [`Core::set_reaper`]).
    reap: Option<Box<dyn Fn(Vec<S>) + Send + Sync>>,
}

/// Tests: holds the sync threads between taking a batch and syncing it.
#[derive(Default)]
struct SyncHold {
    state: Mutex<HoldState>,
    cv: Condvar,
}

#[derive(Default)]
struct HoldState {
    on: bool,
    /// The epochs of the batches waiting at the hold.
    held: BTreeSet<u64>,
    /// Batches let through while the hold is on, and whether each then fails.
    let_through: HashMap<u64, bool>,
}

impl SyncHold {
    fn lock(&self) -> MutexGuard<'_, HoldState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the hold is on and batch `epoch` is not let through; returns whether the
    /// batch was let through to fail.
    fn pass(&self, epoch: u64) -> bool {
        let mut st = self.lock();
        loop {
            if let Some(fail) = st.let_through.remove(&epoch) {
                st.held.remove(&epoch);
                return fail;
            }
            if !st.on {
                st.held.remove(&epoch);
                return false;
            }
            st.held.insert(epoch);
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Tasks waiting for their changes to be synced, the batches in flight, and the sync threads'
/// condition variable.
#[derive(Default)]
struct SyncQueue {
    waiters: Mutex<SyncWaiters>,
    cv: Condvar,
}

#[derive(Default)]
struct SyncWaiters {
    /// `(change, task)`: the task waits until that change is synced (or its sync failed).
    waiting: Vec<(u64, Waker)>,
    /// The highest change a task waits (or waited) for.
    wanted: u64,
    /// The last change covered by a batch taken so far (in flight or synced).
    taken: u64,
    /// A sync thread is taking a batch: the others wait until it is registered.
    taking: bool,
    /// A sleeping sync thread was woken to take a batch and has not looked yet (so that a
    /// burst of waiters wakes one thread, not all).
    summoned: bool,
    /// Sync threads asleep on the condition variable.
    idle: usize,
    /// Batches taken and not published yet, in the order taken (their epochs and changes
    /// ascending), each with its outcome once its sync returned. Published in that order: a
    /// change is synced only once every batch up to its own completed.
    in_flight: VecDeque<InFlight>,
    /// A batch failed: no more batches are taken.
    failed: bool,
    /// The sync threads are stopping: nobody will sync changes not taken yet.
    stopped: bool,
    /// Sync threads running ([`Core::run_syncs`]).
    threads: usize,
    /// When the last batch was taken.
    last_taken: Option<Instant>,
    /// A moving average of how long a sync takes, in ns.
    sync_ns: u64,
}

/// When a sync thread should take a batch ([`SyncWaiters::batch_due`]).
enum Due {
    No,
    Now,
    At(Instant),
}

/// A sync batch being synced.
struct InFlight {
    epoch: u64,
    /// The last change it covers.
    target: u64,
    /// `None` while its sync runs.
    outcome: Option<std::io::Result<()>>,
}

impl SyncWaiters {
    /// Whether a sync thread should take a batch: a task waits for a change no batch taken
    /// covers, and no other thread is taking one. At once if no batch is in flight, else a
    /// share of a sync's duration (one per thread) after the last batch was taken: the
    /// threads' syncs are spread over a sync's duration, each taking what came since the one
    /// before. Started back to back, the second would cover the few changes made while the
    /// first was taken, and the changes after it would wait for most of two syncs again.
    fn batch_due(&self) -> Due {
        if self.taking || self.failed || self.wanted <= self.taken {
            return Due::No;
        }
        match self.last_taken {
            Some(last) if !self.in_flight.is_empty() => {
                let share = self.sync_ns / self.threads.max(1) as u64;
                Due::At(last + Duration::from_nanos(share))
            }
            _ => Due::Now,
        }
    }

    /// Takes the outcomes of the batches completed in order from the front: the last change
    /// and epoch synced, and the error of the first failed batch (every batch after it is
    /// dropped: after a failed sync a later one proves nothing).
    fn publish(&mut self) -> (Option<(u64, u64)>, Option<std::io::Error>) {
        let mut synced = None;
        while self.in_flight.front().is_some_and(|b| b.outcome.is_some()) {
            let Some(b) = self.in_flight.pop_front() else {
                break;
            };
            match b.outcome {
                Some(Err(e)) => {
                    self.failed = true;
                    self.in_flight.clear();
                    return (synced, Some(e));
                }
                _ => synced = Some((b.target, b.epoch)),
            }
        }
        (synced, None)
    }

    /// Removes the tasks waiting for changes up to `synced`.
    fn covered(&mut self, synced: u64) -> Vec<Waker> {
        let mut woken = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].0 <= synced {
                woken.push(self.waiting.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        woken
    }
}

impl SyncQueue {
    fn lock(&self) -> MutexGuard<'_, SyncWaiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, SyncWaiters>) -> MutexGuard<'a, SyncWaiters> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    fn wait_until<'a>(
        &self,
        g: MutexGuard<'a, SyncWaiters>,
        at: Instant,
    ) -> MutexGuard<'a, SyncWaiters> {
        let left = at.saturating_duration_since(Instant::now());
        match self.cv.wait_timeout(g, left) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        }
    }

    /// Wakes a sleeping sync thread if one should take a batch (called with the queue locked).
    fn summon(&self, q: &mut SyncWaiters) {
        if q.idle > 0 && !q.summoned && !matches!(q.batch_due(), Due::No) {
            q.summoned = true;
            self.cv.notify_one();
        }
    }
}

/// Hub-lock holds longer than this are logged (debug level) with what the hub did meanwhile.
const SLOW_HOLD: Duration = Duration::from_micros(500);

/// The hub lock, held: adds its hold time to [`LockStats`] when dropped, and counts a hold of
/// 1 ms or more by kind. With debug logging on, a hold longer than [`SLOW_HOLD`] is logged
/// with its kind, when it started (ms since the server started) and the hub's slow work done
/// meanwhile ([`StoreWork`]): what to look at first when lateness or latency has a tail.
struct HubGuard<'a, S: Segment> {
    guard: MutexGuard<'a, Locked<S>>,
    since: Instant,
    stats: &'a LockStats,
    /// When the server started (the log's time origin).
    origin: Instant,
    /// The hub's work counters when the lock was taken (a 48-byte copy).
    before: StoreWork,
    debug: bool,
    /// The thread's CPU time when the lock was taken, for the timer thread's holds only
    /// ([`thread_cpu`]: a system call).
    cpu_since: Option<Duration>,
    /// Unmaps and page drops of lazy mappings made during the hold, run once the lock is
    /// released: the last field, so it is dropped after `guard`.
    _deferral: Deferral,
}

/// The calling thread's CPU time so far (excludes time the host took from a virtual CPU where
/// the kernel accounts steal time).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl<S: Segment> Deref for HubGuard<'_, S> {
    type Target = Locked<S>;
    fn deref(&self) -> &Locked<S> {
        &self.guard
    }
}

impl<S: Segment> DerefMut for HubGuard<'_, S> {
    fn deref_mut(&mut self) -> &mut Locked<S> {
        &mut self.guard
    }
}

impl<S: Segment> Drop for HubGuard<'_, S> {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        self.stats
            .held_ns
            .fetch_add(held.as_nanos() as u64, Ordering::Relaxed);
        if held < SLOW_HOLD || (!self.debug && held < LONG_HOLDS[0]) {
            return;
        }
        let (before, w) = (self.before, self.guard.hub.work());
        let kind = hold_kind(&before, &w);
        self.stats.count_long_hold(kind, held);
        let cpu = self.cpu_since.map(|t| thread_cpu().saturating_sub(t));
        if let Some(cpu) = cpu {
            self.stats.count_timer_cpu(kind, cpu);
        }
        if !self.debug {
            return;
        }
        tracing::debug!(
            held_us = held.as_micros() as u64,
            timer_cpu_us = cpu.map(|c| c.as_micros() as u64),
            kind = HOLD_KINDS[kind],
            at_ms = self
                .since
                .saturating_duration_since(self.origin)
                .as_millis() as u64,
            spokes_created = w.spokes_created - before.spokes_created,
            spokes_loaded = w.spokes_loaded - before.spokes_loaded,
            records_loaded = w.records_loaded - before.records_loaded,
            spokes_retired = w.spokes_retired - before.spokes_retired,
            segments_compacted = w.segments_compacted - before.segments_compacted,
            records_split = w.records_split - before.records_split,
            "long hub lock hold"
        );
    }
}

/// How the timer thread sleeps until the hub's next deadline and is woken earlier.
///
/// A thread, not a tokio timer: tokio's timer wheel has millisecond granularity, so a job
/// would become ready up to 1-2 ms after its trigger time; a condition variable's timed wait
/// sleeps to the microsecond (it never returns before the deadline without being woken, and
/// the loop re-checks the clock after a spurious wake-up).
#[derive(Default)]
pub struct TimerWake {
    woken: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
}

impl TimerWake {
    /// Ends the current wait (a call moved the next deadline earlier).
    pub fn wake(&self) {
        *self.woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_one();
    }

    /// Makes the timer thread return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits until `deadline` (None: until woken), or until woken.
    pub fn wait(&self, deadline: Option<Micros>) {
        let mut woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        while !*woken {
            match deadline {
                None => woken = self.cv.wait(woken).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = now();
                    if d <= now {
                        break;
                    }
                    let wait = Duration::from_micros(d - now);
                    woken = match self.cv.wait_timeout(woken, wait) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                }
            }
        }
        *woken = false;
    }
}

/// Destroys segments of retired spokes; a file that cannot be removed holds no live record.
pub fn destroy_all<S: Segment>(segs: Vec<S>) {
    for seg in segs {
        if let Err(e) = seg.destroy() {
            tracing::debug!("removing a retired segment: {e}");
        }
    }
}

/// The current time in hub units.
pub fn now() -> Micros {
    SystemTimeSource.now()
}

/// The longest a due split step waits for a periodic sync to end ([`Core::tick`]).
const SPLIT_HOLD_MAX: Micros = 20_000;

thread_local! {
    /// The timer thread's buffer for reading ahead of split steps.
    static READ_AHEAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<S: Segment> Core<S> {
    pub fn new(hub: Hub<S>, durability: Durability, max_job_size: u32, mode: Mode) -> Self {
        let mut hub = hub;
        if durability != Durability::Never {
            // The sync threads make the punches of freed runs, outside the hub lock.
            hub.set_punch_outside();
        }
        if matches!(durability, Durability::Interval(_)) {
            // The timer thread reads ahead after each call (`Core::tick`). Not under `-f 0`:
            // syncs complete all the time there, and each would cost the split a call.
            hub.set_read_ahead_first(true);
        }
        Core {
            locked: Mutex::new(Locked {
                hub,
                waiters: HashMap::new(),
                armed: Micros::MAX,
            }),
            lock_stats: LockStats::default(),
            timer: TimerWake::default(),
            counters: CmdCounters::default(),
            durability,
            max_job_size,
            mode,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            untrusted: AtomicBool::new(false),
            sync_lock: RwLock::new(()),
            failing_syncs: AtomicBool::new(false),
            syncfs_from: 0,
            split_held_since: AtomicU64::new(0),
            split_waits: AtomicBool::new(false),
            hold: SyncHold::default(),
            sync_queue: SyncQueue::default(),
            syncs: AtomicU64::new(0),
            sync_changes: AtomicU64::new(0),
            sync_ns: AtomicU64::new(0),
            synced_epoch: AtomicU64::new(0),
            id: stats::instance_id(),
            host: stats::host_facts(),
            reap: None,
        }
    }

    /// Sync batches of `files` files or more are synced with one `syncfs` (0: never), where
    /// the kernel's `syncfs` reports write-back errors; elsewhere an `fdatasync` per file.
    pub fn set_syncfs_from(&mut self, files: usize) {
        self.syncfs_from = if files > 0 && !crate::segment::fsio::syncfs_reports_errors() {
            tracing::info!("syncfs does not report write errors on this kernel: not used");
            0
        } else {
            files
        };
    }

    /// Has the segments of retired past spokes destroyed by `reap` (e.g. on a blocking thread)
    /// instead of in the hub call: removing a file can block for milliseconds, which must not
    /// happen under the hub lock. `reap` itself is called under the lock: it must only hand
    /// the segments over. Without a reaper the hub destroys them in the call.
    pub fn set_reaper(&mut self, reap: impl Fn(Vec<S>) + Send + Sync + 'static) {
        self.locked
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .hub
            .set_deferred_removal(true);
        self.reap = Some(Box::new(reap));
    }

    fn lock(&self) -> HubGuard<'_, S> {
        let deferral = Deferral::begin();
        // A panic inside a hub call poisons the lock; the hub's own invariants are per call, so
        // serving on is better than taking every connection down with it.
        let st = &self.lock_stats;
        st.acquisitions.fetch_add(1, Ordering::Relaxed);
        let guard = match self.locked.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                st.contended.fetch_add(1, Ordering::Relaxed);
                let asked = Instant::now();
                let g = self.locked.lock().unwrap_or_else(|e| e.into_inner());
                let waited = asked.elapsed();
                st.wait_ns
                    .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
                crate::observe::record(crate::observe::Timer::HubLockWait, waited);
                g
            }
        };
        let since = Instant::now();
        let before = guard.hub.work();
        HubGuard {
            guard,
            since,
            stats: st,
            origin: self.started,
            before,
            debug: tracing::enabled!(tracing::Level::DEBUG),
            cpu_since: None,
            _deferral: deferral,
        }
    }

    /// Runs `f` on the hub, then hands out the wake-ups it produced and re-arms the timer if the
    /// next deadline moved earlier.
    pub fn with_hub<R>(&self, f: impl FnOnce(&mut Hub<S>) -> R) -> R {
        let mut g = self.lock();
        let r = f(&mut g.hub);
        self.after_call(&mut g);
        r
    }

    /// Like [`Core::with_hub`] for a call that changes persisted state: sets `seq` to the
    /// change's number, which [`Core::wait_durable`] waits for before the reply (`-f 0`), and
    /// which the jobs the call links carry ([`Hub::job_change`]). Once the files are untrusted
    /// (a sync failed) the change is refused without calling `f`.
    pub fn with_hub_change<R>(
        &self,
        seq: &mut u64,
        f: impl FnOnce(&mut Hub<S>) -> Result<R, HubError>,
    ) -> Result<R, HubError> {
        if self.untrusted() {
            return Err(HubError::Internal(
                "change refused: a sync failed, the data files are not trusted until a restart"
                    .into(),
            ));
        }
        let mut g = self.lock();
        // Numbered under the lock, in the order the changes are made.
        let n = self.changes.load(Ordering::Relaxed) + 1;
        g.hub.set_change(n);
        let r = f(&mut g.hub);
        g.hub.set_change(0);
        self.changes.store(n, Ordering::Relaxed);
        *seq = n;
        self.after_call(&mut g);
        r
    }

    /// Like [`Core::with_hub`] for a call whose reply shows a job (`job` of its result):
    /// raises `shown` to the number of the change that last wrote that job, which the reply
    /// waits for like one of its own changes (`-f 0`): a reply must not reveal a change that
    /// a power loss can still undo.
    pub fn with_hub_showing<R>(
        &self,
        shown: &mut u64,
        f: impl FnOnce(&mut Hub<S>) -> R,
        job: impl FnOnce(&R) -> Option<u64>,
    ) -> R {
        let mut g = self.lock();
        let r = f(&mut g.hub);
        if let Some(id) = job(&r) {
            *shown = (*shown).max(g.hub.job_change(id));
        }
        self.after_call(&mut g);
        r
    }

    /// Whether change `change` is durable as far as replies are concerned (always, unless
    /// `-f 0`).
    fn is_durable(&self, change: u64) -> bool {
        self.durability != Durability::EveryChange || change <= self.synced.load(Ordering::Acquire)
    }

    /// Whether a sync failed: the files are not trusted any more (see [`Core::distrust`]).
    pub fn untrusted(&self) -> bool {
        self.untrusted.load(Ordering::Acquire)
    }

    /// A sync or flush failed with `e`: stops trusting the files (logged once). Changes not
    /// synced before are never acknowledged, later ones are refused, and the hub writes no
    /// summary from now on, so the next start does a full recovery scan.
    fn distrust(&self, hub: &mut Hub<S>, e: &dyn std::fmt::Display) {
        // The summary goes first: a waiter that sees the flag may tell its client at once.
        hub.distrust_files();
        if !self.untrusted.swap(true, Ordering::AcqRel) {
            tracing::error!(
                "syncing the data files failed ({e}): they are not trusted any more; \
                 replies to unsynced changes are withheld, changes are refused and no clean \
                 summary is written: restart yaad (its start scans every segment)"
            );
        }
    }

    /// With `-f 0`, returns once change `seq` is synced to the device. Group commit: the sync
    /// threads ([`Core::run_syncs`]) sync outside the hub lock every change made before they
    /// take a batch; changes made while a batch syncs go into the next one, which another
    /// thread starts at once.
    ///
    /// An error means change `seq` was not synced before a sync failed: its reply must not be
    /// sent (the caller drops the connection, so the client cannot take the change as
    /// acknowledged). A later sync succeeding would prove nothing about it (after a failed
    /// fdatasync the kernel may have dropped the dirty pages), so none is tried.
    pub async fn wait_durable(&self, seq: u64) -> std::io::Result<()> {
        if self.durability != Durability::EveryChange {
            return Ok(());
        }
        self.durable(seq).await
    }

    /// Resolves once change `seq` is synced, or with an error once a sync failed or the sync
    /// threads stopped first.
    async fn durable(&self, seq: u64) -> std::io::Result<()> {
        std::future::poll_fn(|cx| {
            let done = |q: &SyncWaiters| {
                if self.synced.load(Ordering::Acquire) >= seq {
                    Some(Ok(()))
                } else if self.untrusted() {
                    Some(Err(std::io::Error::other(format!(
                        "a sync failed before change {seq} was synced: reply withheld"
                    ))))
                } else if q.stopped {
                    Some(Err(std::io::Error::other(format!(
                        "server stopping before change {seq} was synced: reply withheld"
                    ))))
                } else {
                    None
                }
            };
            let mut q = self.sync_queue.lock();
            // Checked under the queue lock: a sync thread publishes a sync's outcome under it
            // and then wakes the waiters it covers, so none is missed.
            if let Some(r) = done(&q) {
                return Poll::Ready(r);
            }
            q.waiting.push((seq, cx.waker().clone()));
            q.wanted = q.wanted.max(seq);
            self.sync_queue.summon(&mut q);
            Poll::Pending
        })
        .await
    }

    /// A sync thread (`-f 0`, `-f MS`; the server runs `--sync-threads` of them): while tasks
    /// wait for changes no batch covers yet, takes a batch of every change made so far, syncs
    /// it outside the hub lock and wakes the waiters that completed; returns once
    /// [`Core::stop_syncs`] was called and nothing is left in flight. While one thread syncs a
    /// batch, another takes the changes made meanwhile, a share of a sync's duration later
    /// ([`SyncWaiters::batch_due`]), and syncs them at the same time (a change waits for about
    /// one sync plus that share, not the rest of the one in flight and then its own).
    /// Outcomes are published in the order the batches were taken: a change is synced only
    /// once every batch up to its own completed, and a failed batch fails its changes and
    /// every later one. Threads of their own rather than a blocking task per sync: under load
    /// a thread goes from one sync to the next without a hand-over.
    pub fn run_syncs(&self) {
        // A timed wait may end up to the thread's timer slack (50 µs by default) late: about
        // half of a sync's duration here. This thread's waits start syncs; it asks for none.
        if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
            tracing::debug!("timer slack not lowered: {e}");
        }
        let mut q = self.sync_queue.lock();
        q.threads += 1;
        loop {
            let due = match q.batch_due() {
                Due::At(at) if at <= Instant::now() => Due::Now,
                due => due,
            };
            if let Due::Now = due {
                // Once stopped, one last batch for the tasks already waiting; later ones get
                // an error (`durable`).
                q.taking = true;
                drop(q);
                self.sync();
                q = self.sync_queue.lock();
                continue;
            }
            if q.stopped && !q.taking && q.in_flight.is_empty() {
                let woken: Vec<Waker> = q.waiting.drain(..).map(|(_, w)| w).collect();
                self.sync_queue.cv.notify_all();
                drop(q);
                woken.into_iter().for_each(Waker::wake);
                return;
            }
            q.idle += 1;
            q = match due {
                Due::At(at) => self.sync_queue.wait_until(q, at),
                _ => self.sync_queue.wait(q),
            };
            q.idle -= 1;
            q.summoned = false;
        }
    }

    /// Tests: while `fail` is set, every sync fails as an fdatasync error would (a real one
    /// cannot be caused on demand: the files synced are the open ones, whatever their names).
    pub fn inject_sync_failures(&self, fail: bool) {
        self.failing_syncs.store(fail, Ordering::Relaxed);
    }

    /// Tests: while `hold` is set, a sync waits after taking its batch (its changes are then
    /// neither in the hub's sets nor synced: what a slow fdatasync looks like).
    pub fn hold_syncs(&self, hold: bool) {
        self.hold.lock().on = hold;
        self.hold.cv.notify_all();
    }

    /// Tests: whether a sync waits at the hold ([`Core::hold_syncs`]) with its batch.
    pub fn sync_held(&self) -> bool {
        !self.hold.lock().held.is_empty()
    }

    /// Tests: the epochs of the batches waiting at the hold.
    #[cfg(test)]
    fn held_batches(&self) -> Vec<u64> {
        self.hold.lock().held.iter().copied().collect()
    }

    /// Tests: lets batch `epoch` through the hold; `fail`: its sync fails.
    #[cfg(test)]
    fn let_batch_through(&self, epoch: u64, fail: bool) {
        self.hold.lock().let_through.insert(epoch, fail);
        self.hold.cv.notify_all();
    }

    /// Makes [`Core::run_syncs`] return once nothing is in flight; tasks still waiting for a
    /// change no batch covers get an error (no reply).
    pub fn stop_syncs(&self) {
        let mut q = self.sync_queue.lock();
        q.stopped = true;
        self.sync_queue.cv.notify_all();
    }

    /// Takes a batch of every change made so far, syncs it outside the hub lock and publishes
    /// the batches completed in order (see [`Core::run_syncs`]). Called with `taking` set.
    fn sync(&self) {
        let _shared = self.sync_lock.read().unwrap_or_else(|e| e.into_inner());
        if self.untrusted() {
            // A flush failed: nothing is synced any more.
            let woken: Vec<Waker> = {
                let mut q = self.sync_queue.lock();
                q.taking = false;
                q.failed = true;
                q.waiting.drain(..).map(|(_, w)| w).collect()
            };
            woken.into_iter().for_each(Waker::wake);
            return;
        }
        let (batch, target, punches) = {
            let mut g = self.lock();
            // The Moved marks that waited for the batches published so far go into this one.
            g.hub.synced(self.synced_epoch.load(Ordering::Acquire));
            (
                g.hub.take_sync_batch(),
                self.changes.load(Ordering::Relaxed),
                g.hub.take_punches(),
            )
        };
        let from = {
            let mut q = self.sync_queue.lock();
            let from = q.taken;
            q.in_flight.push_back(InFlight {
                epoch: batch.epoch,
                target,
                outcome: None,
            });
            q.taken = target;
            q.taking = false;
            q.last_taken = Some(Instant::now());
            // Changes made while this batch was taken go to another thread at once.
            self.sync_queue.summon(&mut q);
            from
        };
        punches.into_iter().for_each(PunchJob::run);
        let fail = self.hold.pass(batch.epoch);
        let started = crate::observe::start();
        let clock = Instant::now();
        let outcome = if fail || self.failing_syncs.load(Ordering::Relaxed) {
            Err(std::io::Error::other("sync failure injected"))
        } else {
            batch.sync_grouped(self.syncfs_from)
        };
        let took = clock.elapsed().as_nanos() as u64;
        if outcome.is_ok() {
            crate::observe::finish(crate::observe::Timer::Sync, started);
            let changes = target.saturating_sub(from);
            crate::observe::count(crate::observe::Event::SyncChanges, changes);
            self.sync_ns.fetch_add(took, Ordering::Relaxed);
            self.sync_changes.fetch_add(changes, Ordering::Relaxed);
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let (published, failed, mut woken) = {
            let mut q = self.sync_queue.lock();
            // Not there once an earlier batch failed: its outcome no longer matters.
            if let Some(b) = q.in_flight.iter_mut().find(|b| b.epoch == batch.epoch) {
                b.outcome = Some(outcome);
            }
            q.sync_ns = if q.sync_ns == 0 {
                took
            } else {
                (q.sync_ns * 7 + took) / 8
            };
            let (published, failed) = q.publish();
            if let Some((target, epoch)) = published {
                self.synced_epoch.store(epoch, Ordering::Release);
                self.synced.fetch_max(target, Ordering::Release);
            }
            let woken = q.covered(self.synced.load(Ordering::Acquire));
            if q.stopped {
                // A thread waiting for the batches in flight before it returns.
                self.sync_queue.cv.notify_all();
            }
            (published, failed, woken)
        };
        if let Some(e) = failed {
            // The batch's files left the hub's sets: untrusted, they are never synced again.
            // Every task still waiting fails (`durable` sees the flag).
            self.distrust(&mut self.lock().hub, &e);
            woken.extend(self.sync_queue.lock().waiting.drain(..).map(|(_, w)| w));
        }
        woken.into_iter().for_each(Waker::wake);
        if self.split_waits.swap(false, Ordering::AcqRel) {
            // A split step waited for this sync (`Core::tick`).
            self.timer.wake();
        }
        if let Some((_, epoch)) = published
            && matches!(self.durability, Durability::Interval(_))
        {
            // What waited for this batch (Moved marks, punches of freed runs) goes on now, not
            // at the next periodic sync: an idle server would otherwise hold it indefinitely.
            // Under `-f 0` the next batch, never far off, does it.
            let punches = {
                let mut g = self.lock();
                g.hub.synced(epoch);
                self.after_call(&mut g);
                g.hub.take_punches()
            };
            punches.into_iter().for_each(PunchJob::run);
        }
    }

    /// The end of every hub call, under the lock: marks moves as synced when nothing syncs
    /// (`-F`, mem mode), hands retired segments to the reaper, sends the wake-ups the call
    /// produced and re-arms the timer if the next deadline moved earlier. Returns how many
    /// jobs the wake-ups handed out.
    fn after_call(&self, g: &mut Locked<S>) -> usize {
        if self.durability == Durability::Never {
            // No sync to wait for (`-F`): moves are marked at once.
            g.hub.synced(u64::MAX);
        }
        if let Some(reap) = &self.reap
            && g.hub.has_retired()
        {
            reap(g.hub.take_retired());
        }
        let mut handed_out = 0;
        for (c, outcome) in g.hub.take_wakeups() {
            let change = match &outcome {
                ReserveOutcome::Reserved(job) => {
                    handed_out += 1;
                    g.hub.job_change(job.id)
                }
                _ => 0,
            };
            if let Some(w) = g.waiters.get_mut(&c) {
                w.wake(outcome, change, self.is_durable(change));
            }
        }
        // Only an added deadline can bring the next one before the armed one.
        if g.hub.take_added_deadline() < g.armed {
            let next = g.hub.next_deadline().unwrap_or(Micros::MAX);
            if next < g.armed {
                g.armed = next;
                self.timer.wake();
            }
        }
        handed_out
    }

    /// Registers a connection and how its wake-ups reach it.
    pub fn connect(&self, waiter: Waiter) -> ConnId {
        let mut g = self.lock();
        let c = g.hub.connect();
        g.waiters.insert(c, waiter);
        c
    }

    /// A reserve (`timeout`: µs from now after which a reserve-with-timeout gives up). `idle`:
    /// every earlier reply of the connection is sent, so if it has to wait, its reply may be
    /// sent by whichever thread hands out the job ([`Waiter`]). A job handed out now raises
    /// `shown` to the change that last wrote it (see [`Core::with_hub_showing`]).
    pub fn reserve(
        &self,
        c: ConnId,
        timeout: Option<Micros>,
        idle: bool,
        shown: &mut u64,
    ) -> ReserveOutcome {
        let mut g = self.lock();
        let now = now();
        let outcome = g
            .hub
            .reserve(c, timeout.map(|t| now.saturating_add(t)), now);
        match &outcome {
            // Only a waiting reserve gets a wake-up, and each sets the flag afresh.
            ReserveOutcome::Wait => {
                if let Some(w) = g.waiters.get_mut(&c) {
                    w.idle = idle;
                }
            }
            ReserveOutcome::Reserved(job) => *shown = (*shown).max(g.hub.job_change(job.id)),
            _ => {}
        }
        self.after_call(&mut g);
        outcome
    }

    /// Forgets a connection: its reserved jobs are ready again at once.
    pub fn disconnect(&self, c: ConnId) {
        let mut g = self.lock();
        g.waiters.remove(&c);
        g.hub.disconnect(c, now());
        self.after_call(&mut g);
    }

    /// The timer thread's step: brings the hub to `now` and returns its next deadline, which it
    /// records as armed. When it hands out jobs to blocked reserves, records their delivery
    /// lateness: from the deadline the timer slept until to the replies handed out.
    /// While a split is under way or its `Moved` marks are being written, it then reads ahead
    /// and faults in, outside the lock, the pages the next step and marks will read and write
    /// (`Store::split_read_ahead`); after a sync, that work waits for this
    /// (`Store::set_read_ahead_first`).
    pub fn tick(&self, now: Micros) -> Option<Micros> {
        // With -f MS, a split step run while a periodic sync writes its pages back waits under
        // the hub lock for their page locks (its appends, its id index writes): a due step
        // waits for the sync to end (the sync thread wakes the timer), at most SPLIT_HOLD_MAX.
        // Under -f 0 a sync nearly always runs: steps never wait.
        let since = self.split_held_since.load(Ordering::Relaxed);
        let hold = matches!(self.durability, Durability::Interval(_))
            && (since == 0 || now.saturating_sub(since) < SPLIT_HOLD_MAX)
            && !self.sync_queue.lock().in_flight.is_empty();
        let mut g = self.lock();
        g.cpu_since = Some(thread_cpu());
        g.hub.hold_splits(hold);
        let due = g.armed;
        g.hub.tick(now);
        if self.after_call(&mut g) > 0 && due <= now && crate::observe::enabled() {
            let late = self::now().saturating_sub(due);
            crate::observe::record(
                crate::observe::Timer::DeliveryLateness,
                Duration::from_micros(late),
            );
        }
        let mut next = g.hub.next_deadline();
        if hold && g.hub.split_due() {
            let since = if since == 0 {
                self.split_held_since.store(now, Ordering::Relaxed);
                now
            } else {
                since
            };
            self.split_waits.store(true, Ordering::Release);
            let limit = since.saturating_add(SPLIT_HOLD_MAX);
            next = Some(next.map_or(limit, |n| n.min(limit)));
        } else {
            self.split_held_since.store(0, Ordering::Relaxed);
        }
        g.armed = next.unwrap_or(Micros::MAX);
        let ahead = (!hold).then(|| g.hub.store.split_read_ahead()).flatten();
        drop(g);
        if let Some(ahead) = ahead {
            READ_AHEAD.with_borrow_mut(|buf| ahead.run(buf));
        }
        next
    }

    /// Makes every change durable (drain, shutdown; mem mode: writes the segment files).
    /// Waits for the syncs in flight first: the files of their batches are no longer in the hub's
    /// sets, so the hub's flush would not sync them. Once the files are untrusted (a sync
    /// failed) it still flushes what it can but fails: no clean summary is written.
    pub fn flush(&self) -> Result<(), HubError> {
        let _all = self.sync_lock.write().unwrap_or_else(|e| e.into_inner());
        let mut g = self.lock();
        let target = self.changes.load(Ordering::Relaxed);
        let flushed = g.hub.flush();
        // Everything is durable: the holes can go (under the lock: a flush is rare).
        g.hub.take_punches().into_iter().for_each(PunchJob::run);
        if let Err(e) = &flushed
            && self.mode != Mode::Mem
        {
            // As after a failed sync (mem mode writes new files each time: a retry is sound).
            self.distrust(&mut g.hub, e);
        }
        if self.untrusted() {
            return Err(HubError::Internal(
                "a sync failed earlier: the data files are not trusted (no clean summary \
                 written; the next start scans every segment)"
                    .into(),
            ));
        }
        flushed?;
        self.synced.fetch_max(target, Ordering::Release);
        Ok(())
    }

    /// Keeps the start-up summary current: takes a checkpoint under the hub lock if anything
    /// changed, and writes it on a blocking thread (see `hub::checkpoint`). An error costs
    /// only start-up time (the next checkpoint tries again).
    pub async fn checkpoint(&self) -> Result<(), String> {
        let Some(pending) = self.with_hub(|h| h.checkpoint()) else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || pending.write()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("writer task failed: {e}")),
        }
    }

    /// The periodic sync (`-f MS`): syncs only if a change was made since the last one, or
    /// the store has work of its own to make durable (a split's copies and `Moved` marks,
    /// retirements: [`crate::store::Store::has_unsynced_work`]), which then counts as a
    /// change so the sync threads sync it as any other.
    pub async fn sync_if_changed(&self) -> std::io::Result<()> {
        if self.untrusted() {
            // Said once, when the files stopped being trusted.
            return Ok(());
        }
        let mut last = self.changes.load(Ordering::Relaxed);
        if self.synced.load(Ordering::Acquire) >= last {
            let g = self.lock();
            if !g.hub.store.has_unsynced_work() {
                return Ok(());
            }
            // Numbered under the lock, as every change.
            last = self.changes.load(Ordering::Relaxed) + 1;
            self.changes.store(last, Ordering::Relaxed);
        }
        self.durable(last).await
    }

    /// Drain mode (SIGUSR1): puts are refused from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.with_hub(|h| h.set_draining(true));
    }

    /// The process's figures for `stats`.
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
            hub_lock: self.lock_stats.snapshot(),
            long_holds: self.lock_stats.long_holds(),
            timer_cpu_holds: self.lock_stats.timer_cpu_holds(),
            syncs: [
                self.syncs.load(Ordering::Relaxed),
                self.sync_changes.load(Ordering::Relaxed),
                self.sync_ns.load(Ordering::Relaxed) / 1000,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hub::{HubConfig, SECOND};
    use crate::segment::{MappedSegment, SpokeId, segment_file_name};

    /// A `-f 0` core with `threads` sync threads, on a fresh mapped data dir.
    fn every_change(
        threads: usize,
    ) -> (
        tempfile::TempDir,
        Arc<Core<MappedSegment>>,
        Vec<std::thread::JoinHandle<()>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::<MappedSegment>::open(HubConfig::new(dir.path()), now()).unwrap();
        let core = Arc::new(Core::new(
            hub,
            Durability::EveryChange,
            65_535,
            Mode::Mapped,
        ));
        let syncers = (0..threads)
            .map(|_| {
                let core = core.clone();
                std::thread::spawn(move || core.run_syncs())
            })
            .collect();
        (dir, core, syncers)
    }

    /// A put; returns a task waiting for it to be durable, once its batch waits at the hold
    /// (the hold is on), and the batch's epoch.
    async fn put_held(
        core: &Arc<Core<MappedSegment>>,
    ) -> (tokio::task::JoinHandle<std::io::Result<()>>, u64) {
        let held = core.held_batches();
        let mut seq = 0;
        core.with_hub_change(&mut seq, |h| {
            let c = h.connect();
            h.put(c, 0, 0, 60, b"x", now())
        })
        .unwrap();
        let waiter = {
            let core = core.clone();
            tokio::spawn(async move { core.wait_durable(seq).await })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(&e) = core.held_batches().iter().find(|e| !held.contains(e)) {
                return (waiter, e);
            }
            assert!(Instant::now() < deadline, "no batch taken for change {seq}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Lets batch `epoch` through the hold and returns once its outcome is recorded (and what
    /// it allowed published, in the same hold of the queue lock).
    async fn complete(core: &Core<MappedSegment>, epoch: u64, fail: bool) {
        core.let_batch_through(epoch, fail);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let recorded = core
                .sync_queue
                .lock()
                .in_flight
                .iter()
                .find(|b| b.epoch == epoch)
                .is_none_or(|b| b.outcome.is_some());
            if recorded && !core.held_batches().contains(&epoch) {
                return;
            }
            assert!(Instant::now() < deadline, "batch {epoch} did not complete");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn stop(core: &Core<MappedSegment>, syncers: Vec<std::thread::JoinHandle<()>>) {
        core.hold_syncs(false);
        core.stop_syncs();
        syncers.into_iter().for_each(|t| t.join().unwrap());
    }

    /// With two syncs in flight, the later batch completing first must not make its changes
    /// (nor the earlier batch's) count as synced: a change is acknowledged only once every
    /// batch up to its own completed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_batch_completing_first_waits_for_the_earlier() {
        let (_dir, core, syncers) = every_change(2);
        core.hold_syncs(true);
        let (first, e1) = put_held(&core).await;
        let (second, e2) = put_held(&core).await;
        assert!(e1 < e2, "batches taken in order");

        complete(&core, e2, false).await;
        assert_eq!(core.synced.load(Ordering::Acquire), 0, "nothing published");
        assert!(
            !first.is_finished() && !second.is_finished(),
            "no waiter woken"
        );

        complete(&core, e1, false).await;
        first.await.unwrap().expect("the first change is synced");
        second.await.unwrap().expect("the second change is synced");
        assert_eq!(core.synced.load(Ordering::Acquire), 2);
        assert!(!core.untrusted());
        stop(&core, syncers);
    }

    /// A failed batch fails exactly its changes and every later batch's, even those that
    /// completed first; the changes of earlier batches that completed are acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_fails_its_changes_and_later_ones_only() {
        let (_dir, core, syncers) = every_change(3);
        core.hold_syncs(true);
        let (first, e1) = put_held(&core).await;
        let (second, e2) = put_held(&core).await;
        let (third, e3) = put_held(&core).await;

        complete(&core, e3, false).await;
        complete(&core, e2, true).await;
        assert!(
            !core.untrusted(),
            "the failure waits for the batch before it"
        );
        assert!(!first.is_finished() && !second.is_finished() && !third.is_finished());

        complete(&core, e1, false).await;
        first.await.unwrap().expect("the first change is synced");
        assert!(second.await.unwrap().is_err(), "the failed batch's change");
        assert!(
            third.await.unwrap().is_err(),
            "a later batch proves nothing"
        );
        assert_eq!(core.synced.load(Ordering::Acquire), 1);
        assert!(core.untrusted());
        stop(&core, syncers);
    }

    /// A split in an idle server waited for a client change to be synced: the periodic sync
    /// did nothing without one, so the split's `Moved` marks were never written and the wide
    /// file it emptied stayed on disk. Two periodic syncs, with no client change, now retire it
    /// (the hub is driven with its own times; nothing waits for the clock).
    /// A hold of the hub lock defers the unmaps and page drops of lazy mappings made in it
    /// until the lock is released: a lazy segment closed in a hold is still mapped when the
    /// hold ends and gone after.
    #[test]
    fn lazy_unmaps_run_after_the_hub_lock_is_released() {
        use crate::segment::{LazySegment, deferring};
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::<LazySegment>::open(HubConfig::new(dir.path()), now()).unwrap();
        let core = Core::new(hub, Durability::Interval(50), 65_535, Mode::Lazy);
        assert!(!deferring());
        let g = core.lock();
        assert!(deferring());
        let spoke = SpokeId {
            start: 0,
            span: SECOND,
        };
        let mut seg = LazySegment::create(dir.path(), spoke).unwrap();
        let rec = crate::segment::NewRecord {
            id: 1,
            trigger_at: 0,
            created_at: 0,
            ttr: 60,
            tube: b"default",
            name: b"",
            body: b"x",
            slot: crate::segment::StateSlot {
                version: 1,
                state: crate::segment::JobState::Waiting,
                priority: 0,
                counters: Default::default(),
            },
        };
        let at = seg.append(&rec).unwrap();
        seg.read(at).unwrap();
        let addr = seg.mapping_address().expect("mapped by the read");
        seg.close().unwrap();
        let mapped = |addr: usize| {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once(' ')?.0.split_once('-'))
                .any(|(lo, hi)| {
                    let lo = usize::from_str_radix(lo, 16).unwrap();
                    let hi = usize::from_str_radix(hi, 16).unwrap();
                    (lo..hi).contains(&addr)
                })
        };
        assert!(mapped(addr), "unmapped under the lock");
        drop(g);
        assert!(!deferring());
        assert!(!mapped(addr), "still mapped after the lock was released");
    }

    #[tokio::test]
    async fn the_periodic_sync_syncs_a_split_without_client_changes() {
        // On an hour: a job 300 s out goes to the 1-minute spoke [T0 + 300 s, T0 + 360 s),
        // split one span before it starts.
        const T0: Micros = 1_700_000_000 / 3600 * 3600 * SECOND;
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::<MappedSegment>::open(HubConfig::new(dir.path()), T0).unwrap();
        let core = Arc::new(Core::new(
            hub,
            Durability::Interval(50),
            65_535,
            Mode::Mapped,
        ));
        let syncer = {
            let core = core.clone();
            std::thread::spawn(move || core.run_syncs())
        };
        let mut seq = 0;
        core.with_hub_change(&mut seq, |h| {
            let c = h.connect();
            h.put(c, 0, 300, 60, b"far", T0)
        })
        .unwrap();
        let wide = dir.path().join(segment_file_name(SpokeId {
            start: T0 + 300 * SECOND,
            span: 60 * SECOND,
        }));
        assert!(wide.exists(), "the job went to a 1-minute spoke");
        core.sync_if_changed().await.unwrap();

        // The split: the record is copied into a 1 s spoke, its mark waits for a sync.
        let split = T0 + 240 * SECOND;
        for _ in 0..4 {
            core.tick(split);
        }
        assert!(core.with_hub(|h| h.work().spokes_split) > 0, "split");
        // Each sync lets the marks go on, a call after the read-ahead (the periodic syncs of
        // the sync thread too): a few rounds retire the wide file and settle every mark.
        for _ in 0..10 {
            if !wide.exists() && !core.with_hub(|h| h.store.has_unsynced_work()) {
                break;
            }
            core.sync_if_changed().await.unwrap();
            core.tick(split);
            core.tick(split);
        }
        assert!(!wide.exists(), "the split wide file is retired");
        assert!(!core.with_hub(|h| h.store.has_unsynced_work()));
        // Then the periodic sync rests.
        let syncs = core.syncs.load(Ordering::Relaxed);
        core.sync_if_changed().await.unwrap();
        assert_eq!(
            core.syncs.load(Ordering::Relaxed),
            syncs,
            "nothing left to sync"
        );
        core.stop_syncs();
        syncer.join().unwrap();
    }
}
