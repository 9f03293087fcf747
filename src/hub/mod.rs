//! The scheduler: a hub rotating through time-bucketed spokes.
//!
//! The hub owns every job's life cycle (delayed, ready, reserved, buried, deleted) with
//! beanstalkd 1.12 semantics, and keeps the jobs' data in one [`Segment`] per spoke (see the
//! `spoke` module for the layout in time). It never reads a clock: every call that depends on
//! time takes `now` (µs since the epoch), and before doing anything brings the hub to `now`
//! (delayed jobs due become ready in (trigger time, id) order, TTRs expire, pauses end,
//! waiters time out). [`Hub::tick`] does only that; [`Hub::next_deadline`] says when it next
//! has something to do.
//!
//! Every persisted change is written to its segment before the method returns, so a caller may
//! acknowledge it right after. Reserved is not persisted: after a restart it is ready again.

mod checkpoint;
mod compact;
mod durable;
mod idmap;
mod job;
mod recovery;
mod spoke;
mod stats;
pub mod time;
mod tube;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::segment::Micros;
use crate::segment::fsio;
use crate::segment::{
    Covered, DataDir, DurableIds, IdIndex, IdReservation, JobLocation, JobState, NewRecord, Record,
    RecordMeta, RecordOffset, Segment, SpokeId, StateSlot, StorageError, snapshot,
};
use checkpoint::Checkpoints;
pub use checkpoint::{ENTRIES_PER_CHECKPOINT, PendingCheckpoint};
pub use compact::COMPACT_AFTER_PAST;
use idmap::{IdMap, id_map};
use job::{Counters, FarInfo, Job, Phase};
pub use spoke::{MAX_OPEN_FAR_SPOKES, NEAR_SPOKES};
use spoke::{Spoke, spoke_for};
pub use time::SECOND;
pub use tube::{DEFAULT_TUBE, URGENT_PRIORITY};
use tube::{Pause, Tube};

/// A client connection, assigned by [`Hub::connect`].
pub type ConnId = u64;

/// Default spoke span: 1 s, chosen by measurement (`tests/span_bench.rs`, NOTES.md "Hub").
///
/// The span trades files against stalls. With 10M jobs one to two hours out, spokes (segment
/// files, ~500 B of hub RAM each, 64 KiB preallocated per mapped file) number 3600 s / span:
/// 36 000 at 100 ms, 3 600 at 1 s. Loading a spoke when it comes near takes the hub lock for
/// the time to scan it, proportional to the span at a given trigger density: at 2 778 jobs/s
/// (10M per hour) ~0.2 ms at 100 ms, ~1.7 ms at 1 s, ~25 ms at 5 s, ~250 ms at 30 s, and that
/// stall is lateness for any job due meanwhile. The near window (`NEAR_SPOKES` + the current
/// spoke, all in RAM) grows with the span too: ~9k jobs (~2 MB) at 1 s, 250k (~130 MB) at 30 s.
/// 1 s keeps both the stall and the file count small; `--spoke-span` changes it.
pub const DEFAULT_SPOKE_SPAN: Micros = SECOND;

/// How far ahead of the ids issued `ids.yaad` reserves ids (its length: see
/// [`crate::segment::DurableIds`], mem mode [`IdReservation`]): every id handed out is at
/// most the reservation, so recovery continues above it and ids are never reused, even when
/// every segment has been retired. One `ftruncate` per half block of puts; ids jump by less
/// than a block after a restart that was not clean (persisted modes: less than the lead,
/// which grows when puts outrun the syncs; a block more after a full scan, as files written
/// before the reservation was durable need).
pub const ID_BLOCK: u64 = 4096;

/// A reserver holding a job whose TTR ends within this margin gets `DEADLINE_SOON`.
pub const DEADLINE_SOON_MARGIN: Micros = SECOND;

/// How the hub is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    /// Width of a spoke's time bucket (default [`DEFAULT_SPOKE_SPAN`]).
    pub spoke_span: Micros,
    /// Mem mode: load segment files from `data_dir` at start.
    pub restore: bool,
    /// False for mem mode (no files while running, written by [`Hub::flush`]).
    /// When true, `open` always recovers what `data_dir` holds.
    pub persist: bool,
}

impl HubConfig {
    /// A persistent hub in `data_dir` with the default spoke span.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            data_dir: data_dir.into(),
            spoke_span: DEFAULT_SPOKE_SPAN,
            restore: false,
            persist: true,
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
    /// Spokes whose segment is loaded (near and past spokes).
    pub segments_mapped: u64,
    pub corrupt_records_skipped: u64,
    /// Bytes used by every segment (the job data in the data dir; mem mode: in memory).
    pub data_bytes: u64,
    /// Jobs held in RAM (ready, reserved, buried, and delayed in near spokes).
    pub resident_jobs: u64,
}

/// How often the hub did its slower kinds of work since it was opened: counts that explain a
/// long call (each of these touches files or scans a segment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubWork {
    /// Segments created (a put or move into a spoke that had none).
    pub spokes_created: u64,
    /// Far spokes loaded into RAM as the horizon reached them.
    pub spokes_loaded: u64,
    /// Records scanned while loading spokes.
    pub records_loaded: u64,
    /// Spokes retired (segment destroyed).
    pub spokes_retired: u64,
    /// Segments rewritten by compaction.
    pub segments_compacted: u64,
    /// Syncs of the id index by a put whose id was past the durable reservation (see
    /// [`crate::segment::DurableIds`]): the puts outran the sync batches, or none are made.
    pub id_index_syncs: u64,
}

/// Files to sync so that the changes made before [`Hub::take_sync_batch`] are durable.
#[derive(Clone, Debug, Default)]
pub struct SyncBatch {
    /// Segment files and the id index.
    pub files: Vec<SyncFile>,
    /// The data dir, when files were created or removed in it.
    pub dir: Option<PathBuf>,
    /// Which batch this is: once it is synced, tell the hub ([`Hub::synced`]).
    pub epoch: u64,
}

/// A file of a [`SyncBatch`]: the segment's (or index's) open file when it has one, shared
/// with it (no open and close per sync, and the file synced is the one written even if its
/// name changed), else its path.
#[derive(Clone, Debug)]
pub enum SyncFile {
    Open(Arc<std::fs::File>),
    Closed(PathBuf),
}

impl SyncBatch {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    /// `fdatasync`s every file (it also writes back pages dirtied through a mapping of it), then
    /// the directory. A closed file removed meanwhile is skipped: it held no live job any more.
    /// An error means the durability promise is broken (as with a failed [`Hub::flush`]).
    pub fn sync(&self) -> std::io::Result<()> {
        for f in &self.files {
            match f {
                SyncFile::Open(file) => fsio::sync_file(file)?,
                SyncFile::Closed(path) => match std::fs::File::open(path) {
                    Ok(file) => fsio::sync_file(&file)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
            }
        }
        if let Some(d) = &self.dir {
            fsio::sync_dir(d)?;
        }
        Ok(())
    }
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

/// A job found in a far spoke.
struct FarJob {
    spoke: SpokeId,
    meta: RecordMeta,
}

/// A delayed job, resident (near) or not (far).
enum DelayedJob {
    Near(u64),
    Far(FarJob),
}

/// The scheduler. Generic over the storage mode (`S`: mapped, lazy or mem segments).
pub struct Hub<S: Segment> {
    cfg: HubConfig,
    /// Holds the data dir's lock for the hub's lifetime.
    dir: DataDir,
    /// Job id → current record, for jobs in far spokes (file in persisted modes).
    index: IdIndex,
    /// Persisted modes: the ids the index's length reserves, and how much of that is durable
    /// (see `reserve_id`).
    ids_durable: DurableIds,
    /// Memory mode: `ids.yaad`, whose high-water is kept a block ahead of the ids issued
    /// (see `reserve_id`); None in persisted modes.
    ids_reserved: Option<IdReservation>,
    now: Micros,
    /// Spokes starting before this are loaded; it only grows.
    horizon_end: Micros,
    /// No spoke starts in `horizon_end..far_start` (`Micros::MAX`: none after it), so moving
    /// the horizon below it loads nothing and skips the search. May be early (a spoke since
    /// retired; the next search corrects it), never late: lowered when a far spoke is created.
    far_start: Micros,
    next_id: u64,
    next_conn: ConnId,
    next_seq: u64,
    spokes: BTreeMap<SpokeId, Spoke<S>>,
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
    /// Loaded spokes with no live job, retired once entirely past.
    retire: BTreeSet<SpokeId>,
    /// The earliest deadline added to the sets above (or a spoke that may load earlier) since
    /// [`Hub::take_added_deadline`] last ran; `Micros::MAX`: none. Only an addition can make
    /// [`Hub::next_deadline`] earlier, so a caller that armed a timer for the earlier of the
    /// two need not recompute it otherwise.
    added_deadline: Micros,
    /// Segments of retired spokes not destroyed yet (see [`Hub::set_deferred_removal`]).
    retired: Vec<S>,
    deferred_removal: bool,
    /// Spokes that may be mostly dead: compacted at the start of the next call.
    compact_due: BTreeSet<SpokeId>,
    /// Loaded spokes that may be mostly dead: compacted once long past (see `compact`).
    compact_later: BTreeSet<SpokeId>,
    /// Spokes changed since the last flush.
    unflushed: BTreeSet<SpokeId>,
    /// The id index changed since the last flush or sync batch.
    index_dirty: bool,
    /// Ids of records in spokes loaded since the last [`Hub::trim_index`]: their index
    /// entries, if any, point at a loaded spoke now and can go.
    index_trim: Vec<u64>,
    /// A write to the id index failed (disk full) in compaction or recovery, so an entry may
    /// be missing or stale: lookups it cannot answer fall back to scanning far spokes, and no
    /// summary is written (the next open scans everything and rewrites the entries).
    index_incomplete: bool,
    /// Segment files were created or removed since the last flush or sync batch.
    dir_dirty: bool,
    /// The start-up summary kept current (see `checkpoint`).
    ckpt: Checkpoints,
    /// A write whose failure was tolerated left records only a full scan settles (two live
    /// records of one job, a far job without its index entry): no summary is written.
    needs_full_scan: bool,
    /// Far spokes opened recently, least recently used first.
    open_far: Vec<SpokeId>,
    /// Counters of far jobs that have any (see [`FarInfo`]).
    far_info: IdMap<FarInfo>,
    /// Tubes in which a job became ready or that were unpaused: waiters may be served.
    dirty: Vec<Arc<str>>,
    /// Connections with a blocked reserve (`Conn::wait` set): none, no waiter to serve.
    waiting: usize,
    wakeups: Vec<(ConnId, ReserveOutcome)>,
    total_jobs: u64,
    job_timeouts: u64,
    total_connections: u64,
    corrupt_records: u64,
    draining: bool,
    work: HubWork,
    /// The number of the change the current call makes (0: none), as the caller counts
    /// changes ([`Hub::set_change`]): every job linked meanwhile carries it.
    change_in_call: u64,
    /// The highest change number set so far: what a job that is not resident may depend on.
    latest_change: u64,
    /// Files of past spokes retired with changes not synced yet whose segment was handed out
    /// ([`Hub::take_retired`]): the next sync batch or flush syncs them, else the last delete
    /// could be lost while the file, its removal not durable yet, survives a power loss.
    retired_unsynced: Vec<SyncFile>,
    /// The sync batch being filled: changes made now are in the batch of this number.
    epoch: u64,
    /// `Moved` marks waiting for the record that replaces theirs to be durable.
    pending_moves: Vec<PendingMove>,
    /// `Moved` marks written into the batch of the given epoch, not durable yet: the spoke
    /// holding the replacing record is neither retired nor compacted before they are (else a
    /// power cut could keep the old record live and lose the new one's file).
    marks_in_flight: Vec<(SpokeId, u64)>,
}

/// A `Moved` mark not written yet: the old record of a moved job (a delayed release, or a
/// duplicate found by recovery) is marked only once the sync batch `epoch`, which holds its
/// replacement, has completed. Written at once, the mark could reach the disk before the
/// new record and a power cut would lose the job; until it is written both records are live
/// and recovery keeps the one with the higher version.
#[derive(Clone, Copy, Debug)]
struct PendingMove {
    spoke: SpokeId,
    offset: RecordOffset,
    slot: StateSlot,
    /// The spoke of the record that replaces it: not retired before the mark is written
    /// (its file gone, the old record would be the job again).
    to: SpokeId,
    epoch: u64,
    /// The old record still counts as live in its spoke (a release), so the spoke is neither
    /// retired nor compacted before the mark is written.
    counted: bool,
}

/// Counts one more event in a job counter (u32 as in beanstalkd; saturates, never panics).
fn bump(counter: &mut u32) {
    *counter = counter.saturating_add(1);
}

fn secs_floor(us: Micros) -> u64 {
    us / SECOND
}

fn meta_of(r: Record) -> RecordMeta {
    RecordMeta {
        offset: r.offset,
        id: r.id,
        trigger_at: r.trigger_at,
        created_at: r.created_at,
        ttr: r.ttr,
        tube: r.tube,
        body_len: u32::try_from(r.body.len()).unwrap_or(u32::MAX),
        slot: r.slot,
    }
}

impl<S: Segment> Hub<S> {
    /// Opens the hub, recovering every job `cfg.data_dir` holds (persist, or restore in mem mode).
    pub fn open(cfg: HubConfig, now: Micros) -> Result<Self, HubError> {
        let mut cfg = cfg;
        cfg.spoke_span = cfg.spoke_span.max(1);
        let dir = DataDir::open(&cfg.data_dir)?;
        let (index, index_found) = if cfg.persist {
            recovery::open_index(&dir)?
        } else {
            (IdIndex::in_memory(), recovery::IndexFound::Created)
        };
        let found = recovery::read_summary(&dir, &index, index_found, cfg.persist)?;
        let ckpt = Checkpoints::new(found.generation, found.clean_on_disk, dir.path());
        let clean = found.clean_on_disk;
        let mut hub = Hub {
            dir,
            index,
            ids_durable: DurableIds::new(0, ID_BLOCK),
            ids_reserved: None,
            horizon_end: now.saturating_add(NEAR_SPOKES.saturating_mul(cfg.spoke_span)),
            // Recovery adds spokes: the first advance searches.
            far_start: 0,
            cfg,
            now,
            next_id: 1,
            next_conn: 1,
            next_seq: 1,
            spokes: BTreeMap::new(),
            jobs: id_map(),
            delayed: BTreeSet::new(),
            ttr: BTreeSet::new(),
            tubes: BTreeMap::new(),
            conns: id_map(),
            wait_deadlines: BTreeSet::new(),
            pauses: BTreeSet::new(),
            retire: BTreeSet::new(),
            // Whatever recovery put in place is new to the caller.
            added_deadline: 0,
            retired: Vec::new(),
            deferred_removal: false,
            compact_due: BTreeSet::new(),
            compact_later: BTreeSet::new(),
            unflushed: BTreeSet::new(),
            index_dirty: false,
            index_trim: Vec::new(),
            index_incomplete: false,
            dir_dirty: false,
            ckpt,
            needs_full_scan: false,
            open_far: Vec::new(),
            far_info: id_map(),
            dirty: Vec::new(),
            waiting: 0,
            wakeups: Vec::new(),
            total_jobs: 0,
            job_timeouts: 0,
            total_connections: 0,
            corrupt_records: 0,
            draining: false,
            epoch: 1,
            pending_moves: Vec::new(),
            marks_in_flight: Vec::new(),
            work: HubWork::default(),
            change_in_call: 0,
            latest_change: 0,
            retired_unsynced: Vec::new(),
        };
        hub.intern(DEFAULT_TUBE);
        if hub.cfg.persist && !clean {
            // After a crash the segments may hold changes acknowledged before it that only
            // reached the page cache (`-f MS`): this run's syncs would not cover them. Before
            // recovery changes anything: its retires remove files whose records are only
            // superseded once those changes are durable. Also with no segment left: the removal
            // of the last one may be what is not durable yet.
            fsio::sync_tree(hub.dir.path()).map_err(|e| StorageError::io(hub.dir.path(), e))?;
        }
        if hub.cfg.persist || hub.cfg.restore {
            hub.recover(found)?;
        }
        if hub.cfg.persist {
            hub.open_durable_ids()?;
        } else {
            hub.open_id_reservation()?;
        }
        hub.settle();
        // A crash from here on restarts from this checkpoint (unless a clean summary stands).
        if let Some(p) = hub.checkpoint()
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
            self.dirty.push(name.clone());
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
            self.dirty.push(name);
        }
        self.settle();
        Ok(())
    }

    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    // ----- jobs ------------------------------------------------------------------------------

    /// Puts a job into the tube `c` uses; returns its id. Persisted before returning.
    pub fn put(
        &mut self,
        c: ConnId,
        pri: u32,
        delay_s: u32,
        ttr_s: u32,
        body: &[u8],
        now: Micros,
    ) -> Result<u64, HubError> {
        self.advance(now);
        if self.draining {
            return Err(HubError::Draining);
        }
        let tube = match self.conns.get_mut(&c) {
            Some(conn) => {
                conn.producer = true;
                conn.using.clone()
            }
            None => self.intern(DEFAULT_TUBE),
        };
        let ttr_s = ttr_s.max(1);
        let now = self.now;
        let trigger_at = now.saturating_add(u64::from(delay_s) * SECOND);
        // Ids are never reused, even when the append fails.
        let id = self.next_id;
        self.next_id += 1;
        self.reserve_id(id)?;
        let rec = NewRecord {
            id,
            trigger_at,
            created_at: now,
            ttr: ttr_s,
            tube: tube.as_bytes(),
            body,
            slot: StateSlot {
                version: 1,
                state: JobState::Waiting,
                priority: pri,
                counters: Counters::default(),
            },
        };
        let (spoke, offset) = self.append(&rec)?;
        let far = self.spokes.get(&spoke).is_some_and(|s| !s.loaded);
        if far && let Err(e) = self.set_index(id, JobLocation { spoke, offset }) {
            // Undo: the record must not come back as a job the client was told failed.
            let undo = StateSlot {
                version: 2,
                state: JobState::Deleted,
                priority: pri,
                counters: Counters::default(),
            };
            if self.update_slot(spoke, offset, undo).is_err() {
                self.needs_full_scan = true;
            }
            self.spoke_lost_live(spoke);
            return Err(e.into());
        }
        self.total_jobs += 1;
        if let Some(t) = self.tubes.get_mut(&tube) {
            t.total_jobs += 1;
        }
        if self.spokes.get(&spoke).is_some_and(|s| s.loaded) {
            self.insert_job(
                id,
                Job {
                    tube,
                    pri,
                    ttr_s,
                    delay_s,
                    created_at: now,
                    trigger_at,
                    spoke,
                    offset,
                    version: 1,
                    phase: Phase::Delayed,
                    counters: Counters::default(),
                    change: 0,
                },
            );
            let phase = if trigger_at <= now {
                Phase::Ready
            } else {
                Phase::Delayed
            };
            self.link(id, phase);
        } else {
            self.count_far(spoke, &tube, 1);
        }
        self.settle();
        Ok(id)
    }

    /// Reserves the best ready job across the tubes `c` watches (unpaused ones), or says why not.
    /// `timeout`: None blocks forever, Some(t) is an absolute deadline (t <= now answers now).
    pub fn reserve(&mut self, c: ConnId, timeout: Option<Micros>, now: Micros) -> ReserveOutcome {
        self.advance(now);
        self.cancel_wait(c);
        let Some(conn) = self.conns.get_mut(&c) else {
            return ReserveOutcome::TimedOut;
        };
        conn.worker = true;
        while let Some(id) = self.best_ready_for(c) {
            if let Some(view) = self.deliver(c, id) {
                return ReserveOutcome::Reserved(view);
            }
        }
        let soon_at = self
            .soonest_ttr(c)
            .map(|d| d.saturating_sub(DEADLINE_SOON_MARGIN));
        if soon_at.is_some_and(|s| s <= self.now) {
            return ReserveOutcome::DeadlineSoon;
        }
        if timeout.is_some_and(|t| t <= self.now) {
            return ReserveOutcome::TimedOut;
        }
        let key = match (timeout, soon_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let wait = Wait { seq, soon_at, key };
        let watching = match self.conns.get_mut(&c) {
            Some(conn) => {
                if conn.wait.replace(wait).is_none() {
                    self.waiting += 1;
                }
                conn.watching.clone()
            }
            None => Vec::new(),
        };
        for w in &watching {
            if let Some(t) = self.tubes.get_mut(w) {
                t.waiters.insert((seq, c));
            }
        }
        if let Some(k) = key {
            self.wait_deadlines.insert((k, c));
            self.note_deadline(k);
        }
        ReserveOutcome::Wait
    }

    /// Reserves job `id` whatever tube it is in, if it is ready, delayed or buried.
    pub fn reserve_job(&mut self, c: ConnId, id: u64, now: Micros) -> Result<JobView, HubError> {
        self.advance(now);
        if !self.conns.contains_key(&c) {
            return Err(HubError::NotFound);
        }
        if !self.jobs.contains_key(&id) {
            let far = self.find_far(id)?.ok_or(HubError::NotFound)?;
            self.kick_far(far, false)?;
        }
        let job = self.jobs.get(&id).ok_or(HubError::NotFound)?;
        match job.phase {
            Phase::Reserved { .. } => return Err(HubError::NotFound),
            Phase::Ready => {}
            Phase::Delayed | Phase::Buried { .. } => {
                let pri = job.pri;
                self.persist(id, JobState::Ready, pri, |_| {})?;
                self.unlink(id);
                self.link(id, Phase::Ready);
            }
        }
        if let Some(conn) = self.conns.get_mut(&c) {
            conn.worker = true;
        }
        let view = self.deliver(c, id).ok_or(HubError::NotFound);
        self.settle();
        view
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

    /// Deletes a job in any state; a reserved one only by its holder.
    pub fn delete(&mut self, c: ConnId, id: u64, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        if let Some(job) = self.jobs.get(&id) {
            if let Phase::Reserved { conn, .. } = job.phase
                && conn != c
            {
                return Err(HubError::NotFound);
            }
            let pri = job.pri;
            self.persist(id, JobState::Deleted, pri, |_| {})?;
            self.unlink(id);
            // Any index entry left is harmless: lookups check the record it points at.
            if let Some(job) = self.remove_job(id) {
                self.spoke_lost_live(job.spoke);
                if let Some(t) = self.tubes.get_mut(&job.tube) {
                    t.cmd_delete += 1;
                }
                self.drop_if_idle(&job.tube);
            }
        } else {
            let far = self.find_far(id)?.ok_or(HubError::NotFound)?;
            let slot = StateSlot {
                version: far.meta.slot.version.saturating_add(1),
                state: JobState::Deleted,
                ..far.meta.slot
            };
            self.update_slot(far.spoke, far.meta.offset, slot)?;
            // update_slot dropped the summary already.
            if self.index.remove(id).is_ok() {
                self.index_dirty = true;
            }
            self.far_info.remove(&id);
            let tube: Arc<str> = self.intern(&String::from_utf8_lossy(&far.meta.tube));
            self.count_far(far.spoke, &tube, -1);
            if let Some(t) = self.tubes.get_mut(&tube) {
                t.cmd_delete += 1;
            }
            self.spoke_lost_live(far.spoke);
            self.drop_if_idle(&tube);
        }
        self.settle();
        Ok(())
    }

    /// Releases a job reserved by `c` with a new priority, after `delay_s` seconds.
    pub fn release(
        &mut self,
        c: ConnId,
        id: u64,
        pri: u32,
        delay_s: u32,
        now: Micros,
    ) -> Result<ReleaseOutcome, HubError> {
        self.advance(now);
        let job = self.reserved_by(c, id)?;
        if delay_s == 0 {
            self.persist(id, JobState::Ready, pri, |c| bump(&mut c.releases))?;
            self.unlink(id);
            if let Some(job) = self.jobs.get_mut(&id) {
                job.pri = pri;
                job.delay_s = 0;
            }
            self.link(id, Phase::Ready);
            self.settle();
            return Ok(ReleaseOutcome::Released);
        }
        // A delayed release moves the job: a new record in the target spoke, the old one Moved.
        // Both spokes are in the change journal before either is written.
        self.note_change(Some(job.spoke))?;
        let trigger_at = self.now.saturating_add(u64::from(delay_s) * SECOND);
        let old = self.segment(job.spoke)?.read(job.offset)?;
        let version = job.version.saturating_add(1);
        let mut counters = job.counters;
        bump(&mut counters.releases);
        let rec = NewRecord {
            id,
            trigger_at,
            created_at: job.created_at,
            ttr: job.ttr_s,
            tube: job.tube.as_bytes(),
            body: &old.body,
            slot: StateSlot {
                version,
                state: JobState::Waiting,
                priority: pri,
                counters,
            },
        };
        let (spoke, offset) = match self.append(&rec) {
            Ok(loc) => loc,
            Err(HubError::OutOfMemory) => return self.bury_instead_of_release(id, pri),
            Err(e) => return Err(e),
        };
        let loaded = self.spokes.get(&spoke).is_some_and(|s| s.loaded);
        let indexed = self.set_index(id, JobLocation { spoke, offset });
        if !loaded && let Err(e) = indexed {
            // A far job is found by id only through its entry (disk full writing it): undo the
            // move (Moved never wins) and bury the job where it is, one version above both.
            let undo = StateSlot {
                version,
                state: JobState::Moved,
                priority: pri,
                counters,
            };
            if self.update_slot(spoke, offset, undo).is_err() {
                self.needs_full_scan = true;
            }
            self.spoke_lost_live(spoke);
            if let Some(j) = self.jobs.get_mut(&id) {
                j.version = version;
            }
            return match HubError::from(e) {
                HubError::OutOfMemory => self.bury_instead_of_release(id, pri),
                other => Err(other),
            };
        }
        // A near target needs no entry (its jobs are resident); a stale one is harmless.
        let moved = StateSlot {
            version,
            state: JobState::Moved,
            priority: job.pri,
            counters: job.counters,
        };
        // If the index write failed, the next start scans every segment (no summary): the new
        // record wins (higher version, Moved never wins) and the index entry is rewritten.
        if indexed.is_err() {
            self.needs_full_scan = true;
        }
        self.mark_moved((job.spoke, job.offset), moved, spoke, true);
        self.unlink(id);
        self.move_resident(job.spoke, spoke);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.pri = pri;
            j.delay_s = delay_s;
            j.trigger_at = trigger_at;
            j.spoke = spoke;
            j.offset = offset;
            j.version = version;
            j.counters = counters;
        }
        if loaded {
            self.link(id, Phase::Delayed);
        } else if let Some(j) = self.remove_job(id) {
            self.far_info.insert(id, FarInfo { delay_s });
            self.count_far(spoke, &j.tube, 1);
        }
        self.settle();
        Ok(ReleaseOutcome::Released)
    }

    /// A delayed release that found no room for the job's new record: the job is buried where
    /// it is instead (beanstalkd answers `BURIED` when it is out of memory).
    fn bury_instead_of_release(&mut self, id: u64, pri: u32) -> Result<ReleaseOutcome, HubError> {
        self.bury_resident(id, pri, |c| {
            bump(&mut c.releases);
            bump(&mut c.buries);
        })?;
        Ok(ReleaseOutcome::Buried)
    }

    /// Buries a job reserved by `c` with a new priority.
    pub fn bury(&mut self, c: ConnId, id: u64, pri: u32, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        self.reserved_by(c, id)?;
        self.bury_resident(id, pri, |c| bump(&mut c.buries))
    }

    /// Persists resident job `id` as buried with priority `pri` (counted by `count`) and
    /// moves it to its tube's buried list.
    fn bury_resident(
        &mut self,
        id: u64,
        pri: u32,
        count: impl FnOnce(&mut Counters),
    ) -> Result<(), HubError> {
        self.persist(id, JobState::Buried, pri, count)?;
        self.unlink(id);
        let seq = self.take_seq();
        if let Some(job) = self.jobs.get_mut(&id) {
            job.pri = pri;
        }
        self.link(id, Phase::Buried { seq });
        self.settle();
        Ok(())
    }

    /// Restarts the TTR of a job reserved by `c`.
    pub fn touch(&mut self, c: ConnId, id: u64, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        let job = self.reserved_by(c, id)?;
        self.unlink(id);
        let deadline = self.now.saturating_add(u64::from(job.ttr_s) * SECOND);
        self.link(id, Phase::Reserved { conn: c, deadline });
        self.settle();
        Ok(())
    }

    /// The job `id` in any state.
    pub fn peek(&mut self, id: u64) -> Option<JobView> {
        if self.jobs.contains_key(&id) {
            return self.view(id);
        }
        let far = self.find_far(id).ok()??;
        let rec = self.segment(far.spoke).ok()?.read(far.meta.offset).ok()?;
        self.touch_far(far.spoke);
        Some(JobView {
            id,
            body: Bytes::from(rec.body),
        })
    }

    /// The next ready job of the tube `c` uses (paused or not).
    pub fn peek_ready(&mut self, c: ConnId) -> Option<JobView> {
        let tube = self.conns.get(&c)?.using.clone();
        let &(_, id) = self.tubes.get(&tube)?.ready.first()?;
        self.view(id)
    }

    /// The delayed job of the tube `c` uses with the earliest trigger time.
    pub fn peek_delayed(&mut self, c: ConnId) -> Option<JobView> {
        let tube = self.conns.get(&c)?.using.clone();
        match self.delayed_of_tube(&tube, 1).ok()?.into_iter().next()? {
            DelayedJob::Near(id) => self.view(id),
            DelayedJob::Far(far) => {
                let rec = self.segment(far.spoke).ok()?.read(far.meta.offset).ok()?;
                Some(JobView {
                    id: far.meta.id,
                    body: Bytes::from(rec.body),
                })
            }
        }
    }

    /// The first-buried job of the tube `c` uses.
    pub fn peek_buried(&mut self, c: ConnId) -> Option<JobView> {
        let tube = self.conns.get(&c)?.using.clone();
        let &(_, id) = self.tubes.get(&tube)?.buried.first()?;
        self.view(id)
    }

    /// Kicks up to `bound` jobs of the tube `c` uses: buried ones if it has any, else delayed
    /// ones (earliest trigger first). Returns how many were kicked.
    pub fn kick(&mut self, c: ConnId, bound: u32, now: Micros) -> u64 {
        self.advance(now);
        let Some(tube) = self.conns.get(&c).map(|conn| conn.using.clone()) else {
            return 0;
        };
        let Some(t) = self.tubes.get(&tube) else {
            return 0;
        };
        let bound = u64::from(bound);
        let mut kicked = 0;
        if !t.buried.is_empty() {
            let ids: Vec<u64> = t
                .buried
                .iter()
                .take(bound as usize)
                .map(|&(_, id)| id)
                .collect();
            for id in ids {
                if self.kick_resident(id).is_err() {
                    break;
                }
                kicked += 1;
            }
        } else if let Ok(jobs) = self.delayed_of_tube(&tube, bound) {
            for d in jobs {
                let done = match d {
                    DelayedJob::Near(id) => self.kick_resident(id),
                    DelayedJob::Far(far) => self.kick_far(far, true),
                };
                if done.is_err() {
                    break;
                }
                kicked += 1;
            }
        }
        self.settle();
        kicked
    }

    /// Kicks job `id` if it is buried or delayed.
    pub fn kick_job(&mut self, id: u64, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        if self.jobs.contains_key(&id) {
            self.kick_resident(id)?;
        } else {
            let far = self.find_far(id)?.ok_or(HubError::NotFound)?;
            self.kick_far(far, true)?;
        }
        self.settle();
        Ok(())
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
        let horizon = NEAR_SPOKES.saturating_mul(self.cfg.spoke_span);
        let far_load = self
            .spokes
            .range(
                SpokeId {
                    start: self.horizon_end,
                    span: 0,
                }..,
            )
            .next()
            .map(|(id, _)| id.start.saturating_sub(horizon).saturating_add(1));
        [
            self.delayed.first().map(|&(t, _)| t),
            self.ttr.first().map(|&(t, _)| t),
            self.wait_deadlines.first().map(|&(t, _)| t),
            self.pauses.first().map(|(t, _)| *t),
            self.retire.iter().map(|&id| Spoke::<S>::end(id)).min(),
            far_load,
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
        std::mem::replace(&mut self.added_deadline, Micros::MAX)
    }

    fn note_deadline(&mut self, t: Micros) {
        self.added_deadline = self.added_deadline.min(t);
    }

    /// How often the hub did its slower kinds of work so far.
    pub fn work(&self) -> HubWork {
        self.work
    }

    /// With `on`, the segment of a retired spoke that is entirely past is not destroyed
    /// (unmapped, file removed) by the call that retires it but handed out by
    /// [`Hub::take_retired`], so that a caller holding the hub behind a lock can destroy it
    /// outside (removing a file can block for milliseconds). Only past spokes: no put or
    /// release can reach them again, so their file names are never needed again (a far spoke
    /// emptied by deletes can be put into again at once, and is destroyed in the call).
    /// [`Hub::flush`] destroys whatever is left. Off by default.
    pub fn set_deferred_removal(&mut self, on: bool) {
        self.deferred_removal = on;
    }

    /// Segments of spokes retired since the last take: the caller must `destroy` them.
    pub fn take_retired(&mut self) -> Vec<S> {
        std::mem::take(&mut self.retired)
    }

    /// Whether [`Hub::take_retired`] has something to hand out.
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Wake-ups for waiting reservers produced since the last take.
    pub fn take_wakeups(&mut self) -> Vec<(ConnId, ReserveOutcome)> {
        std::mem::take(&mut self.wakeups)
    }

    /// Makes every change durable (mem mode: writes a new snapshot of every segment file,
    /// all-or-nothing for a restore, see [`crate::segment::snapshot`]).
    pub fn flush(&mut self) -> Result<(), HubError> {
        let retired = SyncBatch {
            files: std::mem::take(&mut self.retired_unsynced),
            dir: None,
            epoch: 0,
        };
        retired
            .sync()
            .map_err(|e| HubError::Internal(format!("syncing a retired segment: {e}")))?;
        for seg in std::mem::take(&mut self.retired) {
            // A file that cannot be removed is harmless: it holds no live record.
            let _ = seg.destroy();
        }
        if !self.cfg.persist {
            return self.flush_snapshot();
        }
        // Synced below with the rest: the clean summary states exactly the next id.
        let issued = self.next_id.saturating_sub(1);
        self.ids_durable.reset_to(&mut self.index, issued)?;
        self.flush_files()?;
        if !self.pending_moves.is_empty() || !self.marks_in_flight.is_empty() {
            // Everything is durable now, the new records of pending moves included: their
            // marks are written, synced, and then durable too.
            self.synced(u64::MAX);
            self.flush_files()?;
            self.synced(u64::MAX);
        }
        if let Err(e) = self.write_clean_summary() {
            // Only start-up time depends on it: the next open scans every segment.
            tracing::warn!("cannot write the start-up summary: {e}");
        }
        Ok(())
    }

    /// Syncs every segment changed since the last flush or sync batch, the id index and the
    /// data dir.
    fn flush_files(&mut self) -> Result<(), HubError> {
        while let Some(&id) = self.unflushed.first() {
            if let Some(s) = self.spokes.get_mut(&id) {
                s.seg.flush()?;
                // Flushing reopened it (lazy: a file descriptor): a far spoke not among the
                // recently used stays closed, or a flush would hold one fd per spoke.
                if !s.loaded && !self.open_far.contains(&id) {
                    let _ = s.seg.close();
                }
            }
            self.unflushed.remove(&id);
        }
        self.index.flush()?;
        self.index_dirty = false;
        self.ids_durable.all_synced();
        if self.dir_dirty {
            fsio::sync_dir(self.dir.path()).map_err(|e| StorageError::io(self.dir.path(), e))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Sync batch `epoch` (and every earlier one) is durable: writes the `Moved` marks that
    /// waited for it (into the next batch). `u64::MAX`: every change so far is durable.
    pub fn synced(&mut self, epoch: u64) {
        self.ids_durable.synced(epoch);
        if self.pending_moves.is_empty() && self.marks_in_flight.is_empty() {
            return;
        }
        let mut durable = Vec::new();
        self.marks_in_flight.retain(|&(to, e)| {
            if e <= epoch {
                durable.push(to);
            }
            e > epoch
        });
        let (due, wait): (Vec<PendingMove>, Vec<PendingMove>) =
            std::mem::take(&mut self.pending_moves)
                .into_iter()
                .partition(|p| p.epoch <= epoch);
        self.pending_moves = wait;
        for p in due {
            self.write_moved(p);
        }
        for to in durable {
            self.maybe_retire(to);
        }
    }

    /// Marks the record at `offset` of `spoke` `Moved` (see [`PendingMove`]): at once in mem
    /// mode (a flush writes a whole snapshot), else once the current sync batch is durable.
    fn mark_moved(
        &mut self,
        (spoke, offset): (SpokeId, RecordOffset),
        slot: StateSlot,
        to: SpokeId,
        counted: bool,
    ) {
        let p = PendingMove {
            spoke,
            offset,
            slot,
            to,
            epoch: self.epoch,
            counted,
        };
        if self.cfg.persist {
            self.pending_moves.push(p);
        } else {
            self.write_moved(p);
        }
    }

    fn write_moved(&mut self, p: PendingMove) {
        if !self.spokes.contains_key(&p.spoke) {
            // Retired meanwhile: the file holds no live record any more.
            return;
        }
        if self.update_slot(p.spoke, p.offset, p.slot).is_err() {
            // Both records stay live: only a full scan settles them.
            self.needs_full_scan = true;
        }
        if self.cfg.persist {
            self.marks_in_flight.push((p.to, self.epoch));
        }
        if p.counted {
            self.spoke_lost_live(p.spoke);
        } else {
            self.maybe_retire(p.spoke);
        }
        self.maybe_retire(p.to);
    }

    /// Whether the record at `offset` of `spoke` waits for its `Moved` mark: it is not the job.
    fn is_pending_move(&self, spoke: SpokeId, offset: RecordOffset) -> bool {
        self.pending_moves
            .iter()
            .any(|p| p.spoke == spoke && p.offset == offset)
    }

    /// Whether a `Moved` mark waits to be written into `spoke` (it must not be compacted:
    /// the mark's offset would move) or for a record in it (it must not be retired).
    fn has_pending_move(&self, spoke: SpokeId) -> bool {
        self.pending_moves
            .iter()
            .any(|p| p.spoke == spoke || p.to == spoke)
            || self.marks_in_flight.iter().any(|&(to, _)| to == spoke)
    }

    /// Empties up to `max` id index entries of jobs whose spoke was loaded (they are in memory
    /// now) and gives the file's emptied blocks back ([`crate::segment::IdIndex::trim`]); an
    /// entry is kept if it points at a far spoke (the job moved there since). Returns how many
    /// ids are left for later calls. Entries are derived data: one left behind (an error here)
    /// is harmless, lookups check the record they point at.
    pub fn trim_index(&mut self, max: usize) -> usize {
        if self.index_trim.is_empty() {
            return 0;
        }
        self.index_trim.sort_unstable();
        self.index_trim.dedup();
        let rest = self.index_trim.split_off(max.min(self.index_trim.len()));
        let ids = std::mem::replace(&mut self.index_trim, rest);
        let spokes = &self.spokes;
        let far = |loc: &JobLocation| spokes.get(&loc.spoke).is_some_and(|s| !s.loaded);
        match self.index.trim(&ids, far) {
            Ok(changed) => self.index_dirty |= changed,
            Err(e) => tracing::debug!("trimming the id index: {e}"),
        }
        self.index_trim.len()
    }

    /// Takes what must be synced to make every change so far durable, without syncing it:
    /// the caller syncs the batch *outside* the hub's lock (group commit: changes made while
    /// one batch syncs go into the next). Persisted modes only; mem mode returns an empty
    /// batch (use [`Hub::flush`], which writes its files). Once the batch is synced, tell the
    /// hub with [`Hub::synced`] and the batch's epoch.
    pub fn take_sync_batch(&mut self) -> SyncBatch {
        if !self.cfg.persist {
            return SyncBatch::default();
        }
        let epoch = self.epoch;
        self.epoch += 1;
        let index = std::mem::take(&mut self.index_dirty).then(|| {
            self.ids_durable.taken(epoch);
            self.index.sync_handle().map_or_else(
                || SyncFile::Closed(self.dir.id_index_path()),
                SyncFile::Open,
            )
        });
        let files = std::mem::take(&mut self.unflushed)
            .into_iter()
            .map(
                |id| match self.spokes.get(&id).and_then(|s| s.seg.sync_handle()) {
                    Some(file) => SyncFile::Open(file),
                    None => SyncFile::Closed(self.dir.segment_path(id)),
                },
            )
            .chain(std::mem::take(&mut self.retired_unsynced))
            .chain(index)
            .collect();
        SyncBatch {
            files,
            dir: std::mem::take(&mut self.dir_dirty).then(|| self.dir.path().to_path_buf()),
            epoch,
        }
    }

    // ----- internals -------------------------------------------------------------------------

    fn set_index(&mut self, id: u64, loc: JobLocation) -> Result<(), StorageError> {
        self.note_change(None)?;
        self.index.set(id, loc)?;
        self.index_dirty = true;
        Ok(())
    }

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

    fn drop_if_idle(&mut self, name: &str) {
        if let Some(t) = self.tubes.get(name)
            && t.is_idle()
        {
            if let Some(p) = t.pause {
                self.pauses.remove(&(p.until, t.name.clone()));
            }
            self.tubes.remove(name);
        }
    }

    fn segment(&mut self, id: SpokeId) -> Result<&mut S, HubError> {
        self.spokes
            .get_mut(&id)
            .map(|s| &mut s.seg)
            .ok_or_else(|| HubError::Internal(format!("spoke {id:?} missing")))
    }

    /// Appends a record to the spoke of its trigger time (created if needed).
    fn append(&mut self, rec: &NewRecord<'_>) -> Result<(SpokeId, u64), HubError> {
        let id = spoke_for(rec.trigger_at, self.cfg.spoke_span);
        self.note_change(Some(id))?;
        if !self.spokes.contains_key(&id) {
            let seg = S::create(&self.cfg.data_dir, id)?;
            self.work.spokes_created += 1;
            self.dir_dirty = true;
            let loaded = id.start < self.horizon_end;
            if !loaded {
                self.far_start = self.far_start.min(id.start);
            }
            self.spokes.insert(id, Spoke::new(seg, loaded));
            // A far spoke's load time (or its retirement) may come before anything else.
            self.note_deadline(0);
        }
        let spoke = self
            .spokes
            .get_mut(&id)
            .ok_or_else(|| HubError::Internal("spoke vanished".into()))?;
        let offset = match spoke.seg.append(rec) {
            Ok(o) => o,
            Err(e) => {
                // A spoke created for this record must not linger empty.
                self.maybe_retire(id);
                return Err(e.into());
            }
        };
        spoke.live += 1;
        spoke.records += 1;
        self.unflushed.insert(id);
        let loaded = spoke.loaded;
        self.retire.remove(&id);
        if !loaded {
            self.touch_far(id);
        }
        Ok((id, offset))
    }

    /// Writes a state slot into a record of `spoke`'s segment.
    fn update_slot(
        &mut self,
        spoke: SpokeId,
        offset: RecordOffset,
        slot: StateSlot,
    ) -> Result<(), HubError> {
        self.note_change(Some(spoke))?;
        self.segment(spoke)?.update(offset, slot)?;
        self.unflushed.insert(spoke);
        Ok(())
    }

    /// Persists a new state slot for resident job `id` (version + 1) with its counters after
    /// `count` (the change's own counter; reserves and timeouts since the last write ride
    /// along), and keeps those counters once the write succeeded.
    fn persist(
        &mut self,
        id: u64,
        state: JobState,
        pri: u32,
        count: impl FnOnce(&mut Counters),
    ) -> Result<(), HubError> {
        let job = self.jobs.get(&id).ok_or(HubError::NotFound)?;
        let mut counters = job.counters;
        count(&mut counters);
        let slot = StateSlot {
            version: job.version.saturating_add(1),
            state,
            priority: pri,
            counters,
        };
        let (spoke, offset) = (job.spoke, job.offset);
        self.update_slot(spoke, offset, slot)?;
        if let Some(job) = self.jobs.get_mut(&id) {
            job.version = slot.version;
            job.counters = counters;
        }
        Ok(())
    }

    /// The job `id` reserved by `c`, or NotFound.
    fn reserved_by(&self, c: ConnId, id: u64) -> Result<Job, HubError> {
        match self.jobs.get(&id) {
            Some(job) if matches!(job.phase, Phase::Reserved { conn, .. } if conn == c) => {
                Ok(job.clone())
            }
            _ => Err(HubError::NotFound),
        }
    }

    /// Removes resident job `id` from the structures of its phase.
    fn unlink(&mut self, id: u64) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let tube = self.tubes.get_mut(&job.tube);
        match job.phase {
            Phase::Delayed => {
                self.delayed.remove(&(job.trigger_at, id));
                if let Some(t) = tube {
                    t.delayed.remove(&(job.trigger_at, id));
                }
            }
            Phase::Ready => {
                if let Some(t) = tube
                    && t.ready.remove(&(job.pri, id))
                    && job.pri < URGENT_PRIORITY
                {
                    t.urgent = t.urgent.saturating_sub(1);
                }
            }
            Phase::Reserved { conn, deadline } => {
                self.ttr.remove(&(deadline, id));
                if let Some(t) = tube {
                    t.reserved = t.reserved.saturating_sub(1);
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.reserved.remove(&id);
                }
            }
            Phase::Buried { seq } => {
                if let Some(t) = tube {
                    t.buried.remove(&(seq, id));
                }
            }
        }
    }

    /// Puts resident job `id` into the structures of `phase` (after [`Hub::unlink`] or creation).
    fn link(&mut self, id: u64, phase: Phase) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.phase = phase;
        job.change = job.change.max(self.change_in_call);
        let tube = self.tubes.get_mut(&job.tube);
        match phase {
            Phase::Delayed => {
                self.delayed.insert((job.trigger_at, id));
                self.added_deadline = self.added_deadline.min(job.trigger_at);
                if let Some(t) = tube {
                    t.delayed.insert((job.trigger_at, id));
                }
            }
            Phase::Ready => {
                if let Some(t) = tube {
                    t.ready.insert((job.pri, id));
                    if job.pri < URGENT_PRIORITY {
                        t.urgent += 1;
                    }
                    self.dirty.push(t.name.clone());
                }
            }
            Phase::Reserved { conn, deadline } => {
                self.ttr.insert((deadline, id));
                self.added_deadline = self.added_deadline.min(deadline);
                if let Some(t) = tube {
                    t.reserved += 1;
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.reserved.insert(id);
                }
            }
            Phase::Buried { seq } => {
                if let Some(t) = tube {
                    t.buried.insert((seq, id));
                }
            }
        }
    }

    /// Reads resident job `id`'s body. A record that fails verification drops the job.
    fn view(&mut self, id: u64) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        let (spoke, offset) = (job.spoke, job.offset);
        match self.segment(spoke).map(|s| s.read(offset)) {
            Ok(Ok(rec)) if rec.id == id => Some(JobView {
                id,
                body: Bytes::from(rec.body),
            }),
            other => {
                let why = match other {
                    Ok(Ok(rec)) => format!("record holds job {}", rec.id),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(job = id, spoke = ?spoke, offset, "dropping unreadable job: {why}");
                self.drop_corrupt(id);
                None
            }
        }
    }

    /// Counts (and logs) a record that failed verification and was skipped.
    fn note_corrupt(&mut self, what: &dyn std::fmt::Display) {
        self.corrupt_records += 1;
        tracing::warn!("skipping corrupt record: {what}");
    }

    /// Forgets a resident job whose record cannot be read back (counted, not persisted).
    fn drop_corrupt(&mut self, id: u64) {
        self.corrupt_records += 1;
        self.unlink(id);
        if let Some(job) = self.remove_job(id) {
            self.spoke_lost_live(job.spoke);
            self.drop_if_idle(&job.tube);
        }
    }

    /// Reserves ready job `id` for `c`; None if its record is unreadable (the job is dropped).
    fn deliver(&mut self, c: ConnId, id: u64) -> Option<JobView> {
        let view = self.view(id)?;
        self.unlink(id);
        let job = self.jobs.get_mut(&id)?;
        bump(&mut job.counters.reserves);
        let deadline = self.now.saturating_add(u64::from(job.ttr_s) * SECOND);
        self.link(id, Phase::Reserved { conn: c, deadline });
        Some(view)
    }

    /// The best ready job across the unpaused tubes `c` watches: lowest (priority, id).
    fn best_ready_for(&self, c: ConnId) -> Option<u64> {
        let conn = self.conns.get(&c)?;
        conn.watching
            .iter()
            .filter_map(|w| self.tubes.get(w))
            .filter(|t| !t.is_paused())
            .filter_map(|t| t.ready.first().copied())
            .min()
            .map(|(_, id)| id)
    }

    /// The earliest TTR deadline among the jobs `c` holds.
    fn soonest_ttr(&self, c: ConnId) -> Option<Micros> {
        let conn = self.conns.get(&c)?;
        conn.reserved
            .iter()
            .filter_map(|id| match self.jobs.get(id)?.phase {
                Phase::Reserved { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Kicks a resident buried or delayed job to ready (persisted as Ready).
    fn kick_resident(&mut self, id: u64) -> Result<(), HubError> {
        let job = self.jobs.get(&id).ok_or(HubError::NotFound)?;
        if !matches!(job.phase, Phase::Delayed | Phase::Buried { .. }) {
            return Err(HubError::NotFound);
        }
        let pri = job.pri;
        self.persist(id, JobState::Ready, pri, |c| bump(&mut c.kicks))?;
        self.unlink(id);
        self.link(id, Phase::Ready);
        Ok(())
    }

    /// Moves the clock to `now` (never backwards) and does everything due.
    fn advance(&mut self, now: Micros) {
        // Nothing is in flight here: no record offset is held across this call.
        self.now = self.now.max(now);
        self.compact_pending();
        let end = self
            .now
            .saturating_add(NEAR_SPOKES.saturating_mul(self.cfg.spoke_span));
        if end > self.horizon_end && end <= self.far_start {
            // Nothing to load (the usual case: the horizon moves with every call).
            self.horizon_end = end;
        } else if end > self.horizon_end {
            // Spokes starting after now hold nothing due yet: hand out what is due first, so
            // that loading them (a scan of each) does not delay it.
            if self.horizon_end > self.now {
                self.settle();
            }
            let from = SpokeId {
                start: self.horizon_end,
                span: 0,
            };
            let to = SpokeId {
                start: end,
                span: 0,
            };
            self.horizon_end = end;
            let ids: Vec<SpokeId> = self.spokes.range(from..to).map(|(k, _)| *k).collect();
            for id in ids {
                self.load_spoke(id);
            }
            self.far_start = self
                .spokes
                .range(to..)
                .next()
                .map_or(Micros::MAX, |(k, _)| k.start);
        }
        self.settle();
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
            self.dirty.push(name);
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
        while let Some(&id) = self.retire.first() {
            if Spoke::<S>::end(id) > now {
                break;
            }
            self.retire.remove(&id);
            if self.spokes.get(&id).is_some_and(|s| s.live == 0) {
                self.retire_spoke(id);
            }
        }
    }

    /// Hands ready jobs to waiters, oldest waiter first. Only tubes where a job became ready or
    /// that were unpaused ("dirty") can serve anyone: no other waiter had a job before. The
    /// oldest waiter that can be served is the first waiter of some dirty, unpaused tube with
    /// a ready job, and it gets its best job across all the tubes it watches.
    fn serve_waiters(&mut self) {
        if self.waiting == 0 {
            // Keeps the allocation for the next job that becomes ready.
            self.dirty.clear();
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
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

    /// Reserves `id` before it is handed out. Persisted modes: durably (see [`DurableIds`]):
    /// the reservation is raised through the page cache half its lead (a block at first)
    /// before the ids reach it, and the sync batches make it durable; a put whose id is past
    /// the durable reservation (the puts outran the syncs, or none are made) syncs the index
    /// itself, and the lead doubles.
    /// Memory mode: once per [`ID_BLOCK`] ids, a write through the page cache, so a restart
    /// after `kill -9` continues above it.
    fn reserve_id(&mut self, id: u64) -> Result<(), HubError> {
        if let Some(ids) = &mut self.ids_reserved {
            ids.cover(id, ID_BLOCK)?;
            return Ok(());
        }
        if !self.cfg.persist {
            return Ok(());
        }
        if self.ids_durable.due(id) {
            // A change on disk: a clean summary goes first.
            self.note_change(None)?;
        }
        match self.ids_durable.cover(&mut self.index, id)? {
            Covered::Nothing => {}
            Covered::Raised => self.index_dirty = true,
            Covered::Synced => {
                self.index_dirty = true;
                self.work.id_index_syncs += 1;
                let lead = self.ids_durable.lead();
                tracing::debug!(id, lead, "id reservation synced by a put");
            }
        }
        Ok(())
    }

    /// Mem-mode flush: stages every changed segment, then commits the set of live spokes.
    /// Changed spokes stay unflushed until the commit succeeds (a retry stages them again).
    fn flush_snapshot(&mut self) -> Result<(), HubError> {
        let dir = self.dir.path().to_path_buf();
        snapshot::begin(&dir)?;
        // The ids handed out so far, before the commit: a restore (`-r`) of this snapshot or
        // of the previous one continues above them, also when the job with the highest id
        // was deleted and its spoke dropped. A crash before the commit only skips ids.
        if let Some(ids) = &mut self.ids_reserved {
            ids.reset_to(self.next_id.saturating_sub(1))?;
        }
        for &id in &self.unflushed {
            if let Some(s) = self.spokes.get_mut(&id) {
                match s.seg.image() {
                    Some(bytes) => snapshot::stage(&dir, id, bytes)?,
                    None => s.seg.flush()?,
                }
            }
        }
        let live: BTreeSet<SpokeId> = self.spokes.keys().copied().collect();
        snapshot::commit(&dir, &live)?;
        self.unflushed.clear();
        self.index.flush()?;
        self.index_dirty = false;
        self.dir_dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
