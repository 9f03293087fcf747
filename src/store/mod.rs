//! The job store: persists what the scheduler decides.
//!
//! The scheduler ([`crate::hub`]) decides what happens to jobs (put, reserve, release, bury,
//! delete, kick, TTR, waiters); the store keeps their records: one [`Segment`] per spoke (a
//! time bucket, see `spoke`), the id index for far jobs, the durable id reservation, the sync
//! batches that make changes durable, the start-up summary, compaction and retirement. A job
//! is known to the scheduler by where its current record is ([`JobLocation`]); the store never
//! holds a job in RAM, and the scheduler never touches a file.
//!
//! Everything that differs between storage modes lives here and in the segment implementations
//! (`S::FILE_BACKED`): mem mode keeps no id index file, no summary and no sync batches while
//! running, and writes all-or-nothing snapshots at [`Store::flush`]. Like the scheduler, the
//! store never reads a clock: it is told the time ([`Store::set_now`]) and says when it next
//! has something to do ([`Store::next_deadline`]).
//!
//! Every method that changes a record writes it (to the page cache, or the heap in mem mode)
//! before it returns; durability comes from the sync batches ([`Store::take_sync_batch`],
//! [`Store::synced`]) or a flush. Every sync goes through [`crate::segment::fsio`].

mod checkpoint;
mod compact;
mod free;
mod lru;
mod recovery;
mod split;
mod spoke;
mod sync;

use std::collections::{BTreeMap, BTreeSet};

use crate::segment::{
    Covered, DataDir, DurableIds, IdIndex, IdReservation, JobLocation, JobState, Micros, NewRecord,
    Record, SECOND, Segment, SpokeId, StateSlot, StorageError, fsio,
};
use checkpoint::Checkpoints;
pub use checkpoint::{ENTRIES_PER_CHECKPOINT, PendingCheckpoint};
pub use compact::COMPACT_AFTER_PAST;
pub use free::{FREE_MIN, HOT_FOR, PunchJob, ROLL_BYTES};
use lru::SpokeLru;
pub use recovery::Recovery;
use split::Split;
pub use split::{ReadFrom, SPLIT_CREATES, SPLIT_MOVES_MAX, SPLIT_STEP, SplitReadAhead, place};
use spoke::Spoke;
pub use spoke::spoke_for;
pub use spoke::{DelayedJob, FAR_IDLE, FarJob, MAX_OPEN_FAR_SPOKES, NEAR_SPOKES};
use sync::Moves;
pub use sync::{MARKS_PER_CALL, SyncBatch, SyncFile};

/// Default spoke span: 1 s, chosen by measurement (`tests/span_bench.rs`, NOTES.md "Hub").
///
/// The span trades files against stalls. With 10M jobs one to two hours out, spokes (segment
/// files, ~500 B of RAM each, 64 KiB preallocated per mapped file) number 3600 s / span:
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

/// Errors of the store: the storage layer's, or a broken invariant of the store itself.
#[derive(Debug)]
pub enum StoreError {
    Storage(StorageError),
    Internal(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Storage(e) => e.fmt(f),
            StoreError::Internal(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        StoreError::Storage(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How often the store did its slower kinds of work since it was opened: counts that explain
/// a long call (each of these touches files or scans a segment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreWork {
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
    /// Wide spokes whose records were all moved to finer ones (see `split`).
    pub spokes_split: u64,
    /// Records moved to finer spokes by splits.
    pub records_split: u64,
    /// Syncs of the id index by a put whose id was past the durable reservation (see
    /// [`crate::segment::DurableIds`]): the puts outran the sync batches, or none are made.
    pub id_index_syncs: u64,
}

/// Where a job's new record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub loc: JobLocation,
    /// Its spoke is loaded: the job must be resident in the scheduler. Otherwise it is far:
    /// the store keeps it (counted, found through the id index) and the scheduler forgets it.
    pub resident: bool,
}

/// The store's figures for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub spokes: u64,
    /// Spokes whose segment is open: loaded ones and the recently used far ones.
    pub spokes_open: u64,
    pub corrupt_records_skipped: u64,
    /// Bytes held by every segment (the job data in the data dir; mem mode: in memory): their
    /// lengths less what freed runs gave back.
    pub data_bytes: u64,
}

/// The records of the jobs of a data dir (see the module documentation).
pub struct Store<S: Segment> {
    span: Micros,
    /// Holds the data dir's lock for the store's lifetime.
    pub(crate) dir: DataDir,
    /// Job id → current record, for jobs in far spokes (file in persisted modes).
    pub(crate) index: IdIndex,
    /// Persisted modes: the ids the index's length reserves, and how much of that is durable
    /// (see `reserve_id`).
    ids_durable: DurableIds,
    /// Memory mode: `ids.yaad`, whose high-water is kept a block ahead of the ids issued
    /// (see `reserve_id`); None in persisted modes.
    ids_reserved: Option<IdReservation>,
    next_id: u64,
    now: Micros,
    /// Spokes starting before this are loaded; it only grows.
    horizon_end: Micros,
    /// No spoke starts in `horizon_end..far_start` (`Micros::MAX`: none after it), so moving
    /// the horizon below it loads nothing and skips the search. May be early (a spoke since
    /// retired; the next search corrects it), never late: lowered when a far spoke is created.
    far_start: Micros,
    pub(crate) spokes: BTreeMap<SpokeId, Spoke<S>>,
    /// Far spokes wider than the base span by the time they are to be split (see `split`).
    splits: BTreeSet<(Micros, SpokeId)>,
    /// The split under way, if any.
    splitting: Option<Split>,
    /// The spokes the split under way appended to, with how far their tails were faulted in
    /// for writing and the durable epoch then ([`Store::split_read_ahead`]).
    split_targets: rustc_hash::FxHashMap<SpokeId, split::Faulted>,
    /// Split work waits for a read-ahead after each completed sync
    /// ([`Store::set_read_ahead_first`]).
    read_ahead_first: bool,
    /// The durable epoch when [`Store::split_read_ahead`] last ran.
    ahead_epoch: u64,
    /// No split step runs while set ([`Store::hold_splits`]).
    splits_held: bool,
    /// Delayed jobs in far spokes per tube (the sum of the spokes' `far_counts`).
    far_by_tube: spoke::FarCounts,
    /// Loaded spokes with no live job, retired once entirely past: by end, then id (spokes of
    /// different spans overlap, so the order of their starts is not that of their ends).
    retire: BTreeSet<(Micros, SpokeId)>,
    /// The earliest deadline of the store added since [`Store::take_added_deadline`] (a spoke
    /// to retire, a far spoke that may load); `Micros::MAX`: none.
    added_deadline: Micros,
    /// Segments of retired spokes not destroyed yet (see [`Store::set_deferred_removal`]).
    retired: Vec<S>,
    deferred_removal: bool,
    /// How many retired segment files this store renamed aside ([`DataDir::dead_path`]).
    dead_files: u64,
    /// Spokes that may be mostly dead: compacted at the start of the next call.
    compact_due: BTreeSet<SpokeId>,
    /// Loaded spokes that may be mostly dead: compacted once long past (see `compact`).
    compact_later: BTreeSet<SpokeId>,
    /// Spokes changed since the last flush or sync batch.
    unflushed: BTreeSet<SpokeId>,
    /// The id index changed since the last flush or sync batch.
    index_dirty: bool,
    /// Ids of records in spokes loaded since the last [`Store::trim_index`]: their index
    /// entries, if any, point at a loaded spoke now and can go.
    index_trim: Vec<u64>,
    /// A write to the id index failed (disk full) in compaction or recovery, so an entry may
    /// be missing or stale: lookups it cannot answer fall back to scanning far spokes, and no
    /// summary is written (the next open scans everything and rewrites the entries).
    pub(crate) index_incomplete: bool,
    /// Segment files were created or removed since the last flush or sync batch.
    dir_dirty: bool,
    /// The start-up summary kept current (see `checkpoint`).
    ckpt: Checkpoints,
    /// A write whose failure was tolerated left records only a full scan settles (two live
    /// records of one job, a far job without its index entry): no summary is written.
    needs_full_scan: bool,
    /// Far spokes opened recently, least recently used first.
    pub(crate) open_far: SpokeLru,
    /// At most this many far segments stay open ([`Store::set_max_open_far`]).
    max_open_far: usize,
    corrupt_records: u64,
    work: StoreWork,
    /// The sync batch being filled: changes made now are in the batch of this number.
    epoch: u64,
    /// The newest sync batch known durable ([`Store::synced`]).
    durable_epoch: u64,
    /// `Moved` marks waiting for the record that replaces theirs to be durable, and those
    /// written but not durable yet: the spoke holding the replacing record is neither retired
    /// nor compacted before they are (else a power cut could keep the old record live and
    /// lose the new one's file).
    moves: Moves,
    /// Runs of dead records of loaded spokes, freed as they grow (see `free`).
    frees: free::Frees,
}

impl<S: Segment> Store<S> {
    /// Opens the store of `data_dir` at `now`: persisted modes recover every record the data
    /// dir holds, mem mode only with `restore`. The records of jobs that must be resident are
    /// listed in the [`Recovery`]: read them with [`Store::read_recovered`], then call
    /// [`Store::finish_open`].
    pub fn open(
        data_dir: &std::path::Path,
        span: Micros,
        restore: bool,
        now: Micros,
    ) -> Result<(Self, Recovery)> {
        let span = span.max(1);
        let dir = DataDir::open(data_dir)?;
        let (index, index_found) = if S::FILE_BACKED {
            recovery::open_index(&dir)?
        } else {
            (IdIndex::in_memory(), recovery::IndexFound::Created)
        };
        let found = recovery::read_summary(&dir, &index, index_found, S::FILE_BACKED)?;
        let ckpt = Checkpoints::new(found.generation, found.clean_on_disk, dir.path());
        let clean = found.clean_on_disk;
        let mut store = Store {
            span,
            dir,
            index,
            ids_durable: DurableIds::new(0, ID_BLOCK),
            ids_reserved: None,
            next_id: 1,
            now,
            horizon_end: now.saturating_add(NEAR_SPOKES.saturating_mul(span)),
            // Recovery adds spokes: the first advance searches.
            far_start: 0,
            spokes: BTreeMap::new(),
            splits: BTreeSet::new(),
            splitting: None,
            split_targets: Default::default(),
            read_ahead_first: false,
            ahead_epoch: 0,
            splits_held: false,
            far_by_tube: spoke::FarCounts::default(),
            retire: BTreeSet::new(),
            added_deadline: 0,
            retired: Vec::new(),
            deferred_removal: false,
            dead_files: 0,
            compact_due: BTreeSet::new(),
            compact_later: BTreeSet::new(),
            unflushed: BTreeSet::new(),
            index_dirty: false,
            index_trim: Vec::new(),
            index_incomplete: false,
            dir_dirty: false,
            ckpt,
            needs_full_scan: false,
            open_far: SpokeLru::new(),
            max_open_far: MAX_OPEN_FAR_SPOKES,
            corrupt_records: 0,
            work: StoreWork::default(),
            epoch: 1,
            durable_epoch: 0,
            moves: Moves::default(),
            frees: free::Frees::default(),
        };
        if S::FILE_BACKED && !clean {
            // After a crash the segments may hold changes acknowledged before it that only
            // reached the page cache (`-f MS`): this run's syncs would not cover them. Before
            // recovery changes anything: its retires remove files whose records are only
            // superseded once those changes are durable. Also with no segment left: the removal
            // of the last one may be what is not durable yet.
            let path = store.dir.path();
            fsio::sync_tree(path).map_err(|e| StorageError::io(path, e))?;
        }
        if S::FILE_BACKED {
            // Sized once, here (see `SPLIT_MOVES_MAX`).
            store
                .moves
                .reserve_total(split::SPLIT_MOVES_MAX + split::SPLIT_STEP);
        }
        let recovered = if S::FILE_BACKED || restore {
            store.recover(found)?
        } else {
            Recovery::default()
        };
        Ok((store, recovered))
    }

    /// Ends [`Store::open`] once the scheduler holds the recovered resident jobs: retires the
    /// spokes left without a live record, queues mostly dead ones for compaction, closes far
    /// segments and sets up the id reservation.
    pub fn finish_open(&mut self, recovered: Recovery) -> Result<()> {
        self.settle_recovered(recovered);
        if S::FILE_BACKED {
            self.open_durable_ids()
        } else {
            self.open_id_reservation()
        }
    }

    /// The store's clock (never backwards): what is past and what is near follow from it.
    pub fn set_now(&mut self, now: Micros) {
        self.now = self.now.max(now);
    }

    /// Hands out a new job id, reserved before it is returned (see `reserve_id`). Ids are
    /// never handed out twice, even when the put that asked for one fails.
    pub fn new_id(&mut self) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.reserve_id(id)?;
        Ok(id)
    }

    /// Whether `id` may name a job: handed out already.
    pub fn issued(&self, id: u64) -> bool {
        id > 0 && id < self.next_id
    }

    /// Appends a new job's record to the spoke of its trigger time (a far job is counted in its
    /// tube's far delayed jobs by the append) and indexes a far job.
    pub fn put(&mut self, rec: &NewRecord<'_>) -> Result<Placed> {
        let placed = self.append(rec)?;
        let loc = placed.loc;
        if placed.resident {
            return Ok(placed);
        }
        if let Err(e) = self.set_index(rec.id, loc) {
            // Undo: the record must not come back as a job the client was told failed.
            let undo = StateSlot {
                version: rec.slot.version.saturating_add(1),
                state: JobState::Deleted,
                ..rec.slot
            };
            if self.update(loc, undo).is_err() {
                self.needs_full_scan = true;
            }
            // Uncounted first: losing its last live record retires the spoke.
            self.count_far(loc.spoke, rec.tube, -1);
            self.lost_live(loc.spoke);
            return Err(e.into());
        }
        Ok(placed)
    }

    /// Moves a job to a new record `rec` (a release with delay; the trigger time of a record
    /// never changes): appends it, then marks the old record at `from` with `moved` (a `Moved`
    /// slot) once the new one is durable. The old record counts as live until then.
    pub fn relocate(
        &mut self,
        from: JobLocation,
        rec: &NewRecord<'_>,
        moved: StateSlot,
    ) -> Result<Placed> {
        // Both spokes are in the change journal before either is written.
        self.note_change(Some(from.spoke))?;
        let Placed { loc, resident } = self.append(rec)?;
        let indexed = self.set_index(rec.id, loc);
        if !resident && let Err(e) = indexed {
            // A far job is found by id only through its entry (disk full writing it): undo
            // the move (Moved never wins); the caller keeps the job where it was.
            let undo = StateSlot {
                state: JobState::Moved,
                ..rec.slot
            };
            if self.update(loc, undo).is_err() {
                self.needs_full_scan = true;
            }
            self.count_far(loc.spoke, rec.tube, -1);
            self.lost_live(loc.spoke);
            return Err(e.into());
        }
        // A near target needs no entry (its jobs are resident); a stale one is harmless. If the
        // index write failed, the next start scans every segment (no summary): the new record
        // wins (higher version, Moved never wins) and the index entry is rewritten.
        if indexed.is_err() {
            self.needs_full_scan = true;
        }
        self.mark_moved(from, moved, loc, true);
        Ok(Placed { loc, resident })
    }

    /// Moves far job `far` to a new record `rec` (a put that replaces a named job), as
    /// [`Store::relocate`] does, no longer counted far in its old spoke.
    pub fn relocate_far(
        &mut self,
        far: &FarJob,
        rec: &NewRecord<'_>,
        moved: StateSlot,
    ) -> Result<Placed> {
        // Uncounted first: the mark (at once in mem mode) may retire the old spoke.
        self.count_far(far.spoke, &far.meta.tube, -1);
        self.relocate(far.loc(), rec, moved).inspect_err(|_| {
            self.count_far(far.spoke, &far.meta.tube, 1);
        })
    }

    /// Writes a new state slot for the record at `loc`.
    pub fn update(&mut self, loc: JobLocation, slot: StateSlot) -> Result<()> {
        self.note_change(Some(loc.spoke))?;
        self.segment(loc.spoke)?.update(loc.offset, slot)?;
        self.unflushed.insert(loc.spoke);
        Ok(())
    }

    /// Writes `Deleted` for a resident job's record at `loc` (`slot`: its new slot) and
    /// counts the record dead.
    pub fn delete(&mut self, loc: JobLocation, slot: StateSlot) -> Result<()> {
        self.update(loc, slot)?;
        self.record_dead(loc);
        self.lost_live(loc.spoke);
        Ok(())
    }

    /// Deletes far job `far`: its record `Deleted`, its index entry and its count gone.
    pub fn delete_far(&mut self, far: &FarJob) -> Result<()> {
        let slot = StateSlot {
            version: far.meta.slot.version.saturating_add(1),
            state: JobState::Deleted,
            ..far.meta.slot
        };
        self.update(far.loc(), slot)?;
        if self.index.remove(far.meta.id).is_ok() {
            self.index_dirty = true;
        }
        self.count_far(far.spoke, &far.meta.tube, -1);
        self.lost_live(far.spoke);
        Ok(())
    }

    /// Reads and verifies the record at `loc`.
    pub fn read(&mut self, loc: JobLocation) -> Result<Record> {
        Ok(self.segment(loc.spoke)?.read(loc.offset)?)
    }

    /// Reads far job `far`'s record (a peek), keeping its segment among the recently used.
    pub fn read_far(&mut self, far: &FarJob) -> Result<Record> {
        let rec = self.read(far.loc())?;
        self.touch_far(far.spoke);
        Ok(rec)
    }

    /// A resident job whose record at `loc` cannot be read back was dropped by the scheduler
    /// (counted, not persisted).
    pub fn dropped_unreadable(&mut self, loc: JobLocation) {
        self.corrupt_records += 1;
        self.lost_live(loc.spoke);
    }

    /// Delayed jobs of `tube` in far spokes.
    pub fn far_delayed(&self, tube: &str) -> u64 {
        self.far_by_tube.get(tube).copied().unwrap_or(0)
    }

    /// The tubes with delayed jobs in far spokes.
    pub fn far_tubes(&self) -> impl Iterator<Item = &str> {
        self.far_by_tube.keys().map(|t| &**t)
    }

    /// How often the store did its slower kinds of work so far.
    pub fn work(&self) -> StoreWork {
        self.work
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            spokes: self.spokes.len() as u64,
            spokes_open: self.spokes.values().filter(|s| s.loaded).count() as u64
                + self.open_far.len() as u64,
            corrupt_records_skipped: self.corrupt_records,
            data_bytes: self
                .spokes
                .values()
                .map(|s| s.seg.byte_size())
                .sum::<u64>()
                .saturating_sub(self.bytes_given_back()),
        }
    }

    /// The earliest instant at which the store has something to do at [`Store::set_now`]: a
    /// spoke to retire, a far spoke to load ([`Store::loads_due`]) or to split
    /// ([`Store::split_step`]).
    pub fn next_deadline(&self) -> Option<Micros> {
        let horizon = NEAR_SPOKES.saturating_mul(self.span);
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
        let retire = self.retire.first().map(|&(end, _)| end);
        let marks = self.marks_due().then_some(self.now);
        [retire, far_load, self.next_split(), marks]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest deadline added since the last call (`Micros::MAX`: none), and forgets it.
    pub fn take_added_deadline(&mut self) -> Micros {
        std::mem::replace(&mut self.added_deadline, Micros::MAX)
    }

    fn note_deadline(&mut self, t: Micros) {
        self.added_deadline = self.added_deadline.min(t);
    }

    /// Counts (and logs) a record that failed verification and was skipped.
    fn note_corrupt(&mut self, what: &dyn std::fmt::Display) {
        self.corrupt_records += 1;
        tracing::warn!("skipping corrupt record: {what}");
    }

    fn set_index(&mut self, id: u64, loc: JobLocation) -> Result<(), StorageError> {
        self.note_change(None)?;
        // A failed write may have lost other entries set before (`IdIndex::write_pending`).
        self.index
            .set(id, loc)
            .inspect_err(|_| self.index_incomplete = true)?;
        self.index_dirty = true;
        Ok(())
    }

    /// Writes the id index entries set and not written yet; if that fails (disk full), the
    /// index is incomplete from then on (see `index_incomplete`).
    pub(crate) fn write_index_pending(&mut self) {
        if let Err(e) = self.index.write_pending() {
            tracing::warn!("id index entries lost ({e}): far jobs are looked up by scanning");
            self.index_incomplete = true;
        }
    }

    fn segment(&mut self, id: SpokeId) -> Result<&mut S> {
        self.spokes
            .get_mut(&id)
            .map(|s| &mut s.seg)
            .ok_or_else(|| StoreError::Internal(format!("spoke {id:?} missing")))
    }

    /// Appends a record to the spoke its trigger time is placed in now (created if needed);
    /// `resident`: the spoke is loaded (its jobs are the scheduler's).
    fn append(&mut self, rec: &NewRecord<'_>) -> Result<Placed> {
        let id = self.roll(place(rec.trigger_at, self.now, self.span), rec.trigger_at);
        self.note_change(Some(id))?;
        let now = self.now;
        let spoke = match self.spokes.get_mut(&id) {
            Some(spoke) => spoke,
            None => {
                self.create_spoke(id)?;
                self.spokes
                    .get_mut(&id)
                    .ok_or_else(|| StoreError::Internal("spoke vanished".into()))?
            }
        };
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
        spoke.named |= !rec.name.is_empty();
        spoke.last_append = now;
        let loaded = spoke.loaded;
        if !loaded {
            // Every record appended to a far spoke is a delayed job's.
            spoke::add_far(
                Some(&mut spoke.far_counts),
                &mut self.far_by_tube,
                rec.tube,
                1,
            );
        }
        self.unflushed.insert(id);
        if loaded {
            // Only a loaded spoke waits there (`maybe_retire`).
            self.retire.remove(&(spoke::end(id), id));
        } else {
            self.touch_open_far(id);
        }
        Ok(Placed {
            loc: JobLocation { spoke: id, offset },
            resident: loaded,
        })
    }

    /// Creates spoke `id`, with its segment, for a record to be appended to it.
    fn create_spoke(&mut self, id: SpokeId) -> Result<()> {
        let seg = S::create(self.dir.path(), id)?;
        self.work.spokes_created += 1;
        self.dir_dirty = true;
        let loaded = id.start < self.horizon_end;
        if !loaded {
            self.far_start = self.far_start.min(id.start);
            self.note_wide(id);
        }
        // A far spoke's load time (or its retirement) may come before anything else.
        self.note_deadline(0);
        self.spokes.insert(id, Spoke::new(seg, loaded));
        Ok(())
    }

    /// Reserves `id` before it is handed out. Persisted modes: durably (see [`DurableIds`]):
    /// the reservation is raised through the page cache half its lead (a block at first)
    /// before the ids reach it, and the sync batches make it durable; a put whose id is past
    /// the durable reservation (the puts outran the syncs, or none are made) syncs the index
    /// itself, and the lead doubles.
    /// Memory mode: once per [`ID_BLOCK`] ids, a write through the page cache, so a restart
    /// after `kill -9` continues above it.
    fn reserve_id(&mut self, id: u64) -> Result<()> {
        if let Some(ids) = &mut self.ids_reserved {
            ids.cover(id, ID_BLOCK)?;
            return Ok(());
        }
        if !S::FILE_BACKED {
            return Ok(());
        }
        if self.ids_durable.due(id) {
            // A change on disk: a clean summary goes first.
            self.note_change(None)?;
        }
        // Syncing the index writes its pending entries: if that fails they are lost.
        let covered = self
            .ids_durable
            .cover(&mut self.index, id)
            .inspect_err(|_| self.index_incomplete = true)?;
        match covered {
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
        self.write_index_pending();
        let spokes = &self.spokes;
        let far = |loc: &JobLocation| spokes.get(&loc.spoke).is_some_and(|s| !s.loaded);
        match self.index.trim(&ids, far) {
            Ok(changed) => self.index_dirty |= changed,
            Err(e) => tracing::debug!("trimming the id index: {e}"),
        }
        self.index_trim.len()
    }

    /// With `on`, the segment of a retired spoke is not destroyed (unmapped, file removed) by
    /// the call that retires it but handed out by [`Store::take_retired`], so that a caller
    /// holding the store behind a lock can destroy it outside (removing a file can block for
    /// milliseconds: ext4 discards its blocks). Its file is renamed aside first
    /// ([`DataDir::dead_path`]): a put into the spoke at once creates a new file, and a restart
    /// never reads the old one. [`Store::flush`] destroys whatever is left. Off by default.
    pub fn set_deferred_removal(&mut self, on: bool) {
        self.deferred_removal = on;
    }

    /// Segments of spokes retired since the last take: the caller must `destroy` them.
    pub fn take_retired(&mut self) -> Vec<S> {
        std::mem::take(&mut self.retired)
    }

    /// Whether [`Store::take_retired`] has something to hand out.
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// A sync of the files failed (after a failed fdatasync the kernel may have dropped the
    /// dirty pages, so a later sync that succeeds proves nothing): the store stops vouching
    /// for its files. No summary is written from now on (a flush or checkpoint removes any),
    /// so the next open scans every segment.
    pub fn distrust_files(&mut self) {
        self.needs_full_scan = true;
        // Removes any summary now, and makes every checkpoint taken before stale: one taken
        // before the failed sync must not be written after it.
        let withdrawn = self
            .note_change(None)
            .and_then(|()| self.ckpt.withdraw(&self.dir));
        if let Err(e) = withdrawn {
            tracing::warn!("cannot remove the start-up summary: {e}");
        }
    }
}
