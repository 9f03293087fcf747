//! The scheduler: jobs, tubes, reservations and waiters, over a job store.
//!
//! The hub owns every job's life cycle (delayed, ready, reserved, buried, deleted) with
//! beanstalkd 1.12 semantics. It holds in RAM the jobs that can be handed out soon (ready,
//! reserved, buried, and delayed ones due within the near window); the [`Store`] keeps every
//! job's record, the far future on disk only (see [`crate::store`] for the seam). The hub never
//! reads a clock: every call that depends on time takes `now` (µs since the epoch), and before
//! doing anything brings the hub to `now` (delayed jobs due become ready in (trigger time, id)
//! order, TTRs expire, pauses end, waiters time out). [`Hub::tick`] does only that;
//! [`Hub::next_deadline`] says when it next has something to do.
//!
//! Every persisted change is written to its segment before the method returns, so a caller may
//! acknowledge it right after. Reserved is not persisted: after a restart it is ready again.

mod durable;
mod idmap;
mod job;
mod jobs;
mod names;
mod stats;
pub mod time;
mod tube;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::segment::Micros;
use crate::segment::{Segment, StorageError};
pub use crate::store::{
    COMPACT_AFTER_PAST, DEFAULT_SPOKE_SPAN, ENTRIES_PER_CHECKPOINT, ID_BLOCK, MAX_OPEN_FAR_SPOKES,
    NEAR_SPOKES, PendingCheckpoint, StoreWork, SyncBatch, SyncFile,
};
use crate::store::{Store, StoreError};
use idmap::{IdMap, id_map};
use job::{FarInfo, Job, Phase};
pub use names::PutNamed;
pub use time::SECOND;
pub use tube::{DEFAULT_TUBE, URGENT_PRIORITY};
use tube::{Pause, Tube};

/// A client connection, assigned by [`Hub::connect`].
pub type ConnId = u64;

/// A reserver holding a job whose TTR ends within this margin gets `DEADLINE_SOON`.
pub const DEADLINE_SOON_MARGIN: Micros = SECOND;

/// How the hub is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    /// Width of a spoke's time bucket (default [`DEFAULT_SPOKE_SPAN`]).
    pub spoke_span: Micros,
    /// Mem mode: load segment files from `data_dir` at start (persisted modes always
    /// recover what `data_dir` holds).
    pub restore: bool,
}

impl HubConfig {
    /// A persistent hub in `data_dir` with the default spoke span.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            data_dir: data_dir.into(),
            spoke_span: DEFAULT_SPOKE_SPAN,
            restore: false,
        }
    }
}

/// Errors a hub operation reports to its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubError {
    NotFound,
    NotIgnored,
    Draining,
    /// Disk full, or a system limit reached (beanstalkd answers `OUT_OF_MEMORY`).
    OutOfMemory,
    Internal(String),
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::NotFound => f.write_str("not found"),
            HubError::NotIgnored => f.write_str("cannot ignore the last watched tube"),
            HubError::Draining => f.write_str("draining"),
            HubError::OutOfMemory => f.write_str("out of room (disk full or a system limit)"),
            HubError::Internal(s) => write!(f, "internal error: {s}"),
        }
    }
}

impl std::error::Error for HubError {}

impl From<StorageError> for HubError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::DiskFull { .. } | StorageError::Exhausted { .. } => {
                crate::observe::warn_out_of_room(&e);
                HubError::OutOfMemory
            }
            other => HubError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(e) => e.into(),
            StoreError::Internal(s) => HubError::Internal(s),
        }
    }
}

/// What reserve and peek hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub id: u64,
    pub body: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved(JobView),
    DeadlineSoon,
    TimedOut,
    /// The caller must wait; a wake-up is queued later (see [`Hub::take_wakeups`]).
    Wait,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Released,
    /// Disk full while moving the job to its new spoke: it was buried instead (beanstalkd: `BURIED`).
    Buried,
}

/// `stats-job`, one field per beanstalkd key in its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStats {
    pub id: u64,
    pub tube: String,
    /// "ready", "delayed", "reserved" or "buried".
    pub state: &'static str,
    pub pri: u32,
    pub age: u64,
    pub delay: u64,
    pub ttr: u64,
    pub time_left: u64,
    /// Always 0 (beanstalkd's binlog file number).
    pub file: u64,
    pub reserves: u64,
    pub timeouts: u64,
    pub releases: u64,
    pub buries: u64,
    pub kicks: u64,
    /// A named job's name (yaad's; shown as a last `name` key).
    pub name: Option<String>,
}

/// `stats-tube`, one field per beanstalkd key in its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TubeStats {
    pub name: String,
    pub current_jobs_urgent: u64,
    pub current_jobs_ready: u64,
    pub current_jobs_reserved: u64,
    pub current_jobs_delayed: u64,
    pub current_jobs_buried: u64,
    pub total_jobs: u64,
    pub current_using: u64,
    pub current_watching: u64,
    pub current_waiting: u64,
    pub cmd_delete: u64,
    pub cmd_pause_tube: u64,
    pub pause: u64,
    pub pause_time_left: u64,
}

/// The hub's part of global `stats` (cmd-* counters are counted by the server) plus yaad's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubStats {
    pub current_jobs_urgent: u64,
    pub current_jobs_ready: u64,
    pub current_jobs_reserved: u64,
    pub current_jobs_delayed: u64,
    pub current_jobs_buried: u64,
    pub job_timeouts: u64,
    pub total_jobs: u64,
    pub current_tubes: u64,
    pub current_connections: u64,
    pub current_producers: u64,
    pub current_workers: u64,
    pub current_waiting: u64,
    pub total_connections: u64,
    pub draining: bool,
    pub spokes: u64,
    /// Spokes whose segment is open: loaded (near and past) and recently used far ones.
    pub segments_open: u64,
    pub corrupt_records_skipped: u64,
    /// Bytes used by every segment (the job data in the data dir; mem mode: in memory).
    pub data_bytes: u64,
    /// Jobs held in RAM (ready, reserved, buried, and delayed in near spokes).
    pub resident_jobs: u64,
}

/// A blocked reserve.
#[derive(Clone, Copy, Debug)]
struct Wait {
    seq: u64,
    /// When the soonest TTR of the connection's reserved jobs enters the DEADLINE_SOON margin.
    soon_at: Option<Micros>,
    /// min(timeout, soon_at): the key in `Hub::wait_deadlines`.
    key: Option<Micros>,
}

#[derive(Debug)]
struct Conn {
    using: Arc<str>,
    /// In watch order.
    watching: Vec<Arc<str>>,
    reserved: BTreeSet<u64>,
    wait: Option<Wait>,
    producer: bool,
    worker: bool,
}

/// The scheduler. Generic over the storage mode (`S`: mapped, lazy or mem segments), which
/// only its [`Store`] sees.
pub struct Hub<S: Segment> {
    /// The records of every job.
    pub(crate) store: Store<S>,
    now: Micros,
    next_conn: ConnId,
    next_seq: u64,
    /// Resident jobs: every job that is not a delayed job of a far spoke.
    jobs: IdMap<Job>,
    /// Resident delayed jobs by (trigger time, id).
    delayed: BTreeSet<(Micros, u64)>,
    /// Reserved jobs by (TTR deadline, id).
    ttr: BTreeSet<(Micros, u64)>,
    tubes: BTreeMap<Arc<str>, Tube>,
    conns: IdMap<Conn>,
    /// Waiting reservers by the instant their wait ends (timeout or deadline soon).
    wait_deadlines: BTreeSet<(Micros, ConnId)>,
    /// Paused tubes by pause end.
    pauses: BTreeSet<(Micros, Arc<str>)>,
    /// The earliest deadline added to the sets above since [`Hub::take_added_deadline`] last
    /// ran; `Micros::MAX`: none. Only an addition can make [`Hub::next_deadline`] earlier, so
    /// a caller that armed a timer for the earlier of the two need not recompute it otherwise.
    added_deadline: Micros,
    /// Counters of far jobs that have any (see [`FarInfo`]).
    far_info: IdMap<FarInfo>,
    /// The live named jobs by (tube, name).
    names: names::Names,
    /// Tubes in which a job became ready or that were unpaused: their waiters may be served.
    tubes_to_serve: Vec<Arc<str>>,
    /// Connections with a blocked reserve (`Conn::wait` set): none, no waiter to serve.
    waiting: usize,
    wakeups: Vec<(ConnId, ReserveOutcome)>,
    total_jobs: u64,
    job_timeouts: u64,
    total_connections: u64,
    draining: bool,
    /// The number of the change the current call makes (0: none), as the caller counts
    /// changes ([`Hub::set_change`]): every job linked meanwhile carries it.
    change_in_call: u64,
    /// The highest change number set so far: what a job that is not resident may depend on.
    latest_change: u64,
}

/// Counts one more event in a job counter (u32 as in beanstalkd; saturates, never panics).
fn bump(counter: &mut u32) {
    *counter = counter.saturating_add(1);
}

fn secs_floor(us: Micros) -> u64 {
    us / SECOND
}

impl<S: Segment> Hub<S> {
    /// Opens the hub, recovering every job `cfg.data_dir` holds (persisted modes, or mem mode
    /// with `restore`).
    pub fn open(cfg: HubConfig, now: Micros) -> Result<Self, HubError> {
        let (store, mut recovered) = Store::open(&cfg.data_dir, cfg.spoke_span, cfg.restore, now)?;
        let mut hub = Hub {
            store,
            now,
            next_conn: 1,
            next_seq: 1,
            jobs: id_map(),
            delayed: BTreeSet::new(),
            ttr: BTreeSet::new(),
            tubes: BTreeMap::new(),
            conns: id_map(),
            wait_deadlines: BTreeSet::new(),
            pauses: BTreeSet::new(),
            // Whatever recovery put in place is new to the caller.
            added_deadline: 0,
            far_info: id_map(),
            names: names::Names::new(),
            tubes_to_serve: Vec::new(),
            waiting: 0,
            wakeups: Vec::new(),
            total_jobs: 0,
            job_timeouts: 0,
            total_connections: 0,
            draining: false,
            change_in_call: 0,
            latest_change: 0,
        };
        hub.intern(DEFAULT_TUBE);
        let far_tubes: Vec<String> = hub.store.far_tubes().map(str::to_string).collect();
        for t in far_tubes {
            hub.intern(&t);
        }
        for (sid, offsets) in &recovered.resident {
            for m in hub.store.read_recovered(*sid, offsets)? {
                hub.make_resident(*sid, m);
            }
        }
        let far_named = std::mem::take(&mut recovered.far_named);
        hub.store.finish_open(recovered)?;
        hub.names_recovered(far_named);
        hub.delete_lost_duplicates()?;
        hub.settle();
        // A crash from here on restarts from this checkpoint (unless a clean summary stands).
        if let Some(p) = hub.store.checkpoint()
            && let Err(e) = p.write()
        {
            tracing::warn!("cannot write the start-up summary: {e}");
        }
        Ok(hub)
    }

    // ----- connections and tubes -------------------------------------------------------------

    /// A new connection, using and watching "default".
    pub fn connect(&mut self) -> ConnId {
        let c = self.next_conn;
        self.next_conn += 1;
        self.total_connections += 1;
        let name = self.intern(DEFAULT_TUBE);
        if let Some(t) = self.tubes.get_mut(&name) {
            t.using += 1;
            t.watching += 1;
        }
        self.conns.insert(
            c,
            Conn {
                using: name.clone(),
                watching: vec![name],
                reserved: BTreeSet::new(),
                wait: None,
                producer: false,
                worker: false,
            },
        );
        c
    }

    /// Forgets a connection: its reserved jobs are ready again at once, its wait is cancelled.
    pub fn disconnect(&mut self, c: ConnId, now: Micros) {
        self.advance(now);
        self.cancel_wait(c);
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        let reserved: Vec<u64> = conn.reserved.iter().copied().collect();
        for id in reserved {
            self.unlink(id);
            self.link(id, Phase::Ready);
        }
        if let Some(conn) = self.conns.remove(&c) {
            if let Some(t) = self.tubes.get_mut(&conn.using) {
                t.using = t.using.saturating_sub(1);
            }
            for w in &conn.watching {
                if let Some(t) = self.tubes.get_mut(w) {
                    t.watching = t.watching.saturating_sub(1);
                }
            }
            self.drop_if_idle(&conn.using);
            for w in &conn.watching {
                self.drop_if_idle(w);
            }
        }
        self.settle();
    }

    pub fn use_tube(&mut self, c: ConnId, tube: &str) {
        if !self.conns.contains_key(&c) {
            return;
        }
        let name = self.intern(tube);
        if let Some(t) = self.tubes.get_mut(&name) {
            t.using += 1;
        }
        let old = match self.conns.get_mut(&c) {
            Some(conn) => std::mem::replace(&mut conn.using, name),
            None => return,
        };
        if let Some(t) = self.tubes.get_mut(&old) {
            t.using = t.using.saturating_sub(1);
        }
        self.drop_if_idle(&old);
    }

    /// The tube `c` uses ("default" for an unknown connection).
    pub fn used_tube(&self, c: ConnId) -> &str {
        self.conns.get(&c).map_or(DEFAULT_TUBE, |conn| &conn.using)
    }

    /// Watches `tube`; returns the number of tubes watched.
    pub fn watch(&mut self, c: ConnId, tube: &str) -> usize {
        let Some(conn) = self.conns.get(&c) else {
            return 0;
        };
        if conn.watching.iter().any(|w| &**w == tube) {
            return conn.watching.len();
        }
        let wait = conn.wait;
        let name = self.intern(tube);
        if let Some(t) = self.tubes.get_mut(&name) {
            t.watching += 1;
            if let Some(w) = wait {
                t.waiters.insert((w.seq, c));
            }
        }
        if wait.is_some() {
            self.tubes_to_serve.push(name.clone());
        }
        let n = match self.conns.get_mut(&c) {
            Some(conn) => {
                conn.watching.push(name);
                conn.watching.len()
            }
            None => 0,
        };
        self.settle();
        n
    }

    /// Stops watching `tube`; `NotIgnored` if it is the last one watched.
    pub fn ignore(&mut self, c: ConnId, tube: &str) -> Result<usize, HubError> {
        let conn = self.conns.get_mut(&c).ok_or(HubError::NotFound)?;
        let Some(pos) = conn.watching.iter().position(|w| &**w == tube) else {
            return Ok(conn.watching.len());
        };
        if conn.watching.len() == 1 {
            return Err(HubError::NotIgnored);
        }
        let name = conn.watching.remove(pos);
        let n = conn.watching.len();
        let wait = conn.wait;
        if let Some(t) = self.tubes.get_mut(&name) {
            t.watching = t.watching.saturating_sub(1);
            if let Some(w) = wait {
                t.waiters.remove(&(w.seq, c));
            }
        }
        self.drop_if_idle(&name);
        Ok(n)
    }

    /// The tubes `c` watches, in watch order.
    pub fn watched(&self, c: ConnId) -> Vec<String> {
        self.conns.get(&c).map_or_else(Vec::new, |conn| {
            conn.watching.iter().map(|w| w.to_string()).collect()
        })
    }

    /// Every existing tube, by name.
    pub fn list_tubes(&self) -> Vec<String> {
        self.tubes.keys().map(|k| k.to_string()).collect()
    }

    /// Pauses `tube` for `delay_s` seconds (0 unpauses); `NotFound` if the tube does not exist.
    pub fn pause_tube(&mut self, tube: &str, delay_s: u32, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        let t = self.tubes.get_mut(tube).ok_or(HubError::NotFound)?;
        t.cmd_pause_tube += 1;
        let name = t.name.clone();
        if let Some(p) = t.pause.take() {
            self.pauses.remove(&(p.until, name.clone()));
        }
        if delay_s > 0 {
            let until = self.now.saturating_add(u64::from(delay_s) * SECOND);
            if let Some(t) = self.tubes.get_mut(tube) {
                t.pause = Some(Pause { until, delay_s });
            }
            self.pauses.insert((until, name));
            self.note_deadline(until);
        } else {
            self.tubes_to_serve.push(name);
        }
        self.settle();
        Ok(())
    }

    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    /// Cancels the blocked reserve of `c`, if any (no wake-up is queued).
    pub fn cancel_wait(&mut self, c: ConnId) {
        let Some(wait) = self.conns.get_mut(&c).and_then(|conn| conn.wait.take()) else {
            return;
        };
        self.waiting = self.waiting.saturating_sub(1);
        if let Some(k) = wait.key {
            self.wait_deadlines.remove(&(k, c));
        }
        let watching = self
            .conns
            .get(&c)
            .map(|conn| conn.watching.clone())
            .unwrap_or_default();
        for w in &watching {
            if let Some(t) = self.tubes.get_mut(w) {
                t.waiters.remove(&(wait.seq, c));
            }
        }
    }

    // ----- time ------------------------------------------------------------------------------

    /// Brings the hub to `now`: delayed→ready, TTR expiry, unpause, waiter timeouts and
    /// DEADLINE_SOON, wake-ups. `now` earlier than a previous one is treated as that one.
    pub fn tick(&mut self, now: Micros) {
        self.advance(now);
    }

    /// The earliest instant at which [`Hub::tick`] has something to do (None: nothing scheduled).
    /// Always later than the last `now` the hub saw.
    pub fn next_deadline(&self) -> Option<Micros> {
        [
            self.delayed.first().map(|&(t, _)| t),
            self.ttr.first().map(|&(t, _)| t),
            self.wait_deadlines.first().map(|&(t, _)| t),
            self.pauses.first().map(|(t, _)| *t),
            self.store.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .map(|t| t.max(self.now.saturating_add(1)))
        .min()
    }

    /// The earliest deadline added since the last call (`Micros::MAX`: none), and forgets it.
    /// [`Hub::next_deadline`] is never earlier than both its value at the last call and this:
    /// a timer armed for the earlier of those stays early enough, and only when this returns
    /// something earlier than the armed time need `next_deadline` be asked (it walks every
    /// deadline set, about 5 % of a put/reserve/delete cycle's instructions when it ran after
    /// every call).
    pub fn take_added_deadline(&mut self) -> Micros {
        let store = self.store.take_added_deadline();
        std::mem::replace(&mut self.added_deadline, Micros::MAX).min(store)
    }

    fn note_deadline(&mut self, t: Micros) {
        self.added_deadline = self.added_deadline.min(t);
    }

    /// Moves the clock to `now` (never backwards) and does everything due.
    fn advance(&mut self, now: Micros) {
        self.now = self.now.max(now);
        self.store.set_now(self.now);
        // Nothing is in flight here: no record location is held across this call.
        let jobs = &self.jobs;
        let moved = self
            .store
            .compact_pending(&|id| jobs.get(&id).map(Job::loc));
        for (id, from, to) in moved {
            if let Some(j) = self.jobs.get_mut(&id)
                && j.loc() == from
            {
                j.offset = to.offset;
            }
        }
        if self.store.loads_due(self.now) {
            // Spokes starting after now hold nothing due yet: hand out what is due first, so
            // that loading them (a scan of each) does not delay it.
            if self.store.horizon_ahead_of(self.now) {
                self.settle();
            }
            for id in self.store.reach(self.now) {
                for m in self.store.load_spoke(id) {
                    self.make_resident(id, m);
                }
            }
        }
        let jobs = &self.jobs;
        for (id, m) in self.store.split_step(|i| jobs.contains_key(&i)) {
            self.make_resident(id, m);
        }
        self.store.write_due_marks(crate::store::MARKS_PER_CALL);
        self.settle();
    }

    /// Holds split steps back or lets them run again (`store::Store::hold_splits`).
    pub fn hold_splits(&mut self, held: bool) {
        self.store.hold_splits(held);
    }

    /// Whether a split step would run now, were splits not held.
    pub fn split_due(&self) -> bool {
        self.store.split_due()
    }

    /// Does everything due at `self.now` and serves waiters.
    fn settle(&mut self) {
        let now = self.now;
        while let Some(&(t, id)) = self.delayed.first() {
            if t > now {
                break;
            }
            self.unlink(id);
            self.link(id, Phase::Ready);
        }
        while let Some(&(d, id)) = self.ttr.first() {
            if d > now {
                break;
            }
            self.unlink(id);
            if let Some(job) = self.jobs.get_mut(&id) {
                bump(&mut job.counters.timeouts);
            }
            self.job_timeouts += 1;
            self.link(id, Phase::Ready);
        }
        while let Some((t, name)) = self.pauses.first().cloned() {
            if t > now {
                break;
            }
            self.pauses.remove(&(t, name.clone()));
            if let Some(tube) = self.tubes.get_mut(&name) {
                tube.pause = None;
            }
            self.tubes_to_serve.push(name);
        }
        self.serve_waiters();
        while let Some(&(t, c)) = self.wait_deadlines.first() {
            if t > now {
                break;
            }
            let soon = self
                .conns
                .get(&c)
                .and_then(|conn| conn.wait)
                .and_then(|w| w.soon_at)
                .is_some_and(|s| s <= now);
            self.cancel_wait(c);
            self.wait_deadlines.remove(&(t, c));
            let outcome = if soon {
                ReserveOutcome::DeadlineSoon
            } else {
                ReserveOutcome::TimedOut
            };
            self.wakeups.push((c, outcome));
        }
        self.store.retire_due();
    }

    /// Hands ready jobs to waiters, oldest waiter first. Only tubes where a job became ready or
    /// that were unpaused (`tubes_to_serve`) can serve anyone: no other waiter had a job before. The
    /// oldest waiter that can be served is the first waiter of some dirty, unpaused tube with
    /// a ready job, and it gets its best job across all the tubes it watches.
    fn serve_waiters(&mut self) {
        if self.waiting == 0 {
            // Keeps the allocation for the next job that becomes ready.
            self.tubes_to_serve.clear();
            return;
        }
        let mut dirty = std::mem::take(&mut self.tubes_to_serve);
        dirty.sort();
        dirty.dedup();
        loop {
            dirty.retain(|name| {
                self.tubes
                    .get(name)
                    .is_some_and(|t| !t.is_paused() && !t.ready.is_empty() && !t.waiters.is_empty())
            });
            let oldest = dirty
                .iter()
                .filter_map(|name| self.tubes.get(name)?.waiters.first().copied())
                .min();
            let Some((_, c)) = oldest else {
                break;
            };
            let Some(id) = self.best_ready_for(c) else {
                // Cannot happen (c watches an unpaused tube with a ready job); never loop on it.
                self.cancel_wait(c);
                self.wakeups.push((c, ReserveOutcome::TimedOut));
                continue;
            };
            if let Some(view) = self.deliver(c, id) {
                self.cancel_wait(c);
                self.wakeups.push((c, ReserveOutcome::Reserved(view)));
            }
        }
    }

    /// Wake-ups for waiting reservers produced since the last take.
    pub fn take_wakeups(&mut self) -> Vec<(ConnId, ReserveOutcome)> {
        std::mem::take(&mut self.wakeups)
    }

    // ----- the store: durability, files and work ---------------------------------------------

    /// How often the store did its slower kinds of work so far.
    pub fn work(&self) -> StoreWork {
        self.store.work()
    }

    /// See [`Store::set_read_ahead_first`].
    pub fn set_read_ahead_first(&mut self, on: bool) {
        self.store.set_read_ahead_first(on);
    }

    /// See [`Store::set_deferred_removal`].
    pub fn set_deferred_removal(&mut self, on: bool) {
        self.store.set_deferred_removal(on);
    }

    /// Segments of spokes retired since the last take: the caller must `destroy` them
    /// ([`Store::take_retired`]).
    pub fn take_retired(&mut self) -> Vec<S> {
        self.store.take_retired()
    }

    /// Whether [`Hub::take_retired`] has something to hand out.
    pub fn has_retired(&self) -> bool {
        self.store.has_retired()
    }

    /// Makes every change durable ([`Store::flush`]).
    pub fn flush(&mut self) -> Result<(), HubError> {
        Ok(self.store.flush()?)
    }

    /// What to sync outside the lock to make every change so far durable
    /// ([`Store::take_sync_batch`]).
    pub fn take_sync_batch(&mut self) -> SyncBatch {
        self.store.take_sync_batch()
    }

    /// Punches of freed runs are made by the caller outside its lock from now on
    /// ([`Store::set_punch_outside`]).
    pub fn set_punch_outside(&mut self) {
        self.store.set_punch_outside();
    }

    /// The punches of freed runs due, to make outside the lock ([`Store::take_punches`]).
    pub fn take_punches(&mut self) -> Vec<crate::store::PunchJob> {
        self.store.take_punches()
    }

    /// Sets how many dead bytes the store gathers before it frees them (tests: 0, at once).
    pub fn set_free_min(&mut self, bytes: u64) {
        self.store.set_free_min(bytes);
    }

    /// Sets how many bytes a loaded spoke's file holds before it rolls over (tests).
    pub fn set_roll_bytes(&mut self, bytes: u64) {
        self.store.set_roll_bytes(bytes);
    }

    /// Sync batch `epoch` and every earlier one are durable ([`Store::synced`]).
    pub fn synced(&mut self, epoch: u64) {
        self.store.synced(epoch);
    }

    /// Empties id index entries of loaded jobs ([`Store::trim_index`]).
    pub fn trim_index(&mut self, max: usize) -> usize {
        self.store.trim_index(max)
    }

    /// Lets far segments idle since a while before `now` leave resident memory, up to `max`
    /// of them; how many did ([`Store::shed_idle_far`]).
    pub fn shed_idle_far(&mut self, now: Micros, max: usize) -> usize {
        self.store.shed_idle_far(now, max)
    }

    /// A start-up summary to write outside the lock ([`Store::checkpoint`]).
    pub fn checkpoint(&mut self) -> Option<PendingCheckpoint> {
        self.store.checkpoint()
    }

    // ----- internals -------------------------------------------------------------------------

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// The tube named `name`, created if missing; returns its shared name.
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some((k, _)) = self.tubes.get_key_value(name) {
            return k.clone();
        }
        let k: Arc<str> = Arc::from(name);
        self.tubes.insert(k.clone(), Tube::new(k.clone()));
        k
    }

    /// Forgets tube `name` if nothing uses, watches or is in it (far jobs included).
    fn drop_if_idle(&mut self, name: &str) {
        if let Some(t) = self.tubes.get(name)
            && t.is_idle()
            && self.store.far_delayed(name) == 0
        {
            if let Some(p) = t.pause {
                self.pauses.remove(&(p.until, t.name.clone()));
            }
            self.tubes.remove(name);
        }
    }
}

#[cfg(test)]
mod tests;
