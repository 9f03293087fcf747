//! Making changes durable: sync batches (group commit outside the hub lock), the `Moved`
//! marks that wait for them, and flushes.
//!
//! A change is written before the call that makes it returns; [`Store::take_sync_batch`]
//! names the files written since the last batch, the caller syncs them outside the lock and
//! reports the batch's epoch to [`Store::synced`]. A moved job's old record is marked `Moved`
//! only once the batch holding its new record is durable ([`PendingMove`]), and the spoke of
//! the new record is neither retired nor compacted until the mark is durable too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use super::{Result, Store};
use crate::segment::{
    JobLocation, RecordOffset, Segment, SpokeId, StateSlot, StorageError, fsio, snapshot,
};

/// Files to sync so that the changes made before [`Store::take_sync_batch`] are durable.
#[derive(Clone, Debug, Default)]
pub struct SyncBatch {
    /// Segment files and the id index.
    pub files: Vec<SyncFile>,
    /// The data dir, when files were created or removed in it.
    pub dir: Option<PathBuf>,
    /// Which batch this is: once it is synced, tell the store ([`Store::synced`]).
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
    /// An error means the durability promise is broken (as with a failed [`Store::flush`]).
    pub fn sync(&self) -> std::io::Result<()> {
        self.sync_grouped(0)
    }

    /// [`Self::sync`], except that a batch of `syncfs_from` files or more (0: never) is synced
    /// with one `syncfs` ([`Self::sync_filesystem`]): far puts spread over many spokes leave
    /// many files in a batch, and each `fdatasync` is a write-back pass and a device cache
    /// flush of its own.
    pub fn sync_grouped(&self, syncfs_from: usize) -> std::io::Result<()> {
        let rest = if syncfs_from > 0 && self.files.len() >= syncfs_from {
            self.sync_filesystem()?
        } else {
            self.files.iter().collect()
        };
        for f in rest {
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

    /// One `syncfs` for the files of the batch on the filesystem of its first open file (a
    /// closed one is not opened: `syncfs` covers it); returns the others (on another
    /// filesystem, or all of them when none is open), which need an `fdatasync` each.
    fn sync_filesystem(&self) -> std::io::Result<Vec<&SyncFile>> {
        let handle = self.files.iter().find_map(|f| match f {
            SyncFile::Open(file) => Some(file),
            SyncFile::Closed(_) => None,
        });
        let Some(handle) = handle else {
            return Ok(self.files.iter().collect());
        };
        let dev = handle.metadata()?.dev();
        let (mut open, mut closed, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for f in &self.files {
            match f {
                SyncFile::Open(file) => match file.metadata() {
                    Ok(m) if m.dev() == dev => open.push(&**file),
                    _ => rest.push(f),
                },
                SyncFile::Closed(path) => match std::fs::metadata(path) {
                    Ok(m) if m.dev() == dev => closed.push(path.as_path()),
                    Ok(_) => rest.push(f),
                    // Removed meanwhile: it held no live job any more.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
            }
        }
        fsio::sync_filesystem(handle, &open, &closed)?;
        Ok(rest)
    }
}

/// `Moved` marks written per call once their replacement is durable: each is a slot write,
/// and a split leaves one per record moved.
pub const MARKS_PER_CALL: usize = 256;

/// A `Moved` mark not written yet: the old record of a moved job (a delayed release, or a
/// duplicate found by recovery) is marked only once the sync batch `epoch`, which holds its
/// replacement, has completed. Written at once, the mark could reach the disk before the
/// new record and a power cut would lose the job; until it is written both records are live
/// and recovery keeps the one with the higher version.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingMove {
    spoke: SpokeId,
    offset: RecordOffset,
    slot: StateSlot,
    /// The spoke of the record that replaces it: not retired before the mark is written
    /// (its file gone, the old record would be the job again).
    pub to: SpokeId,
    /// Where that record is in `to`: while the mark is not durable it stays a record (a
    /// tombstone if the job is deleted meanwhile), never inside a freed run.
    new: RecordOffset,
    epoch: u64,
    /// The old record still counts as live in its spoke (a release), so the spoke is neither
    /// retired nor compacted before the mark is written.
    counted: bool,
}

/// The `Moved` marks not written yet and those written but not durable, indexed so that the
/// checks made per record (spoke load, recovery, splits) and per spoke (retire, compaction)
/// do not walk them all.
#[derive(Default)]
pub(super) struct Moves {
    /// In epoch order (a split adds thousands, written a few hundred per call from the front).
    pending: VecDeque<PendingMove>,
    /// Marks written into the batch of the given epoch, not durable yet: the replacing
    /// records per (epoch, `to` spoke).
    in_flight: BTreeMap<(u64, SpokeId), Vec<RecordOffset>>,
    /// The replacing records of `pending` and `in_flight` marks (how many marks each): an older
    /// record of their job may still look live after a power cut, so they must stay records.
    replacing: FxHashMap<(SpokeId, RecordOffset), u32>,
    /// The records of `pending`.
    at: FxHashSet<(SpokeId, RecordOffset)>,
    /// Per spoke: entries of `pending` whose record is in it or whose `to` it is, and marks
    /// of `in_flight` to it.
    touching: FxHashMap<SpokeId, usize>,
}

impl Moves {
    fn touch(&mut self, spoke: SpokeId, add: bool) {
        self.touch_by(spoke, add, 1);
    }

    fn touch_by(&mut self, spoke: SpokeId, add: bool, by: usize) {
        let n = self.touching.entry(spoke).or_insert(0);
        if add {
            *n += by;
        } else {
            *n = n.saturating_sub(by);
            if *n == 0 {
                self.touching.remove(&spoke);
            }
        }
    }

    fn push(&mut self, p: PendingMove) {
        self.at.insert((p.spoke, p.offset));
        self.touch(p.spoke, true);
        self.touch(p.to, true);
        *self.replacing.entry((p.to, p.new)).or_insert(0) += 1;
        self.pending.push_back(p);
    }

    /// A mark no longer keeps its replacing record a record (durable, or never to be written).
    fn release(&mut self, to: SpokeId, new: RecordOffset) {
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.replacing.entry((to, new))
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Whether the record at `at` replaces one whose `Moved` mark is not durable yet.
    pub(super) fn replaces(&self, at: (SpokeId, RecordOffset)) -> bool {
        self.replacing.contains_key(&at)
    }

    /// Up to `max` pending marks whose replacement is in batch `epoch` or earlier (a prefix:
    /// marks are pushed in epoch order).
    fn take_due(&mut self, epoch: u64, max: usize) -> Vec<PendingMove> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.pending.front() {
                Some(p) if p.epoch <= epoch => {}
                _ => break,
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.at.remove(&(p.spoke, p.offset));
            self.touch(p.spoke, false);
            self.touch(p.to, false);
            due.push(p);
        }
        due
    }

    fn written(&mut self, to: SpokeId, new: RecordOffset, epoch: u64) {
        self.in_flight.entry((epoch, to)).or_default().push(new);
        self.touch(to, true);
    }

    /// The `to` spokes of marks made durable by batch `epoch` (or earlier), and their
    /// replacing records, which need not stay records any more: the earliest batches' marks,
    /// whole batches per spoke, until at least `max` marks are taken (a split leaves thousands
    /// per batch; the next calls take the rest, see [`Moves::any_durable`]).
    fn take_durable(
        &mut self,
        epoch: u64,
        max: usize,
    ) -> (Vec<SpokeId>, Vec<(SpokeId, RecordOffset)>) {
        let mut durable = Vec::new();
        let mut released = Vec::new();
        let mut taken = 0;
        while taken < max {
            let Some(entry) = self.in_flight.first_entry() else {
                break;
            };
            if entry.key().0 > epoch {
                break;
            }
            let ((_, to), news) = entry.remove_entry();
            taken += news.len();
            self.touch_by(to, false, news.len());
            durable.push(to);
            for new in news {
                self.release(to, new);
                if !self.replaces((to, new)) {
                    released.push((to, new));
                }
            }
        }
        durable.sort_unstable();
        durable.dedup();
        (durable, released)
    }

    /// Whether marks made durable by batch `epoch` or earlier are left to take.
    fn any_durable(&self, epoch: u64) -> bool {
        self.in_flight
            .first_key_value()
            .is_some_and(|(&(e, _), _)| e <= epoch)
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.in_flight.is_empty()
    }

    /// Moves whose replacing record must stay a record: pending marks and marks in flight.
    pub(super) fn len(&self) -> usize {
        self.replacing.len().max(self.pending.len())
    }

    /// Makes room for `n` moves in all, so that adding moves up to that many reallocates
    /// nothing: growing a hash table rehashes every entry and faults in the new table's pages
    /// in one call (0.8-1.8 ms under the hub lock at 7,000-16,000 moves, measured).
    pub(super) fn reserve_total(&mut self, n: usize) {
        if self.replacing.capacity() < n {
            self.replacing.reserve(n - self.replacing.len());
        }
        if self.at.capacity() < n {
            self.at.reserve(n - self.at.len());
        }
        if self.pending.capacity() < n {
            self.pending.reserve(n - self.pending.len());
        }
    }

    /// How many moves fit without growing a table.
    #[cfg(test)]
    pub(super) fn room(&self) -> usize {
        self.replacing
            .capacity()
            .min(self.at.capacity())
            .min(self.pending.capacity())
    }

    /// Where the next `max` marks due at `epoch` go (what [`Moves::take_due`] would take).
    pub(super) fn due(&self, epoch: u64, max: usize) -> impl Iterator<Item = JobLocation> {
        self.pending
            .iter()
            .take_while(move |p| p.epoch <= epoch)
            .take(max)
            .map(|p| JobLocation {
                spoke: p.spoke,
                offset: p.offset,
            })
    }

    /// Whether a pending mark's replacement is in batch `epoch` or earlier.
    fn any_due(&self, epoch: u64) -> bool {
        self.pending.front().is_some_and(|p| p.epoch <= epoch)
    }
}

impl<S: Segment> Store<S> {
    /// Takes what must be synced to make every change so far durable, without syncing it:
    /// the caller syncs the batch *outside* the hub's lock (group commit: changes made while
    /// one batch syncs go into the next). Persisted modes only; mem mode returns an empty
    /// batch (use [`Store::flush`], which writes its files). Once the batch is synced, tell
    /// the store with [`Store::synced`] and the batch's epoch.
    pub fn take_sync_batch(&mut self) -> SyncBatch {
        if !S::FILE_BACKED {
            return SyncBatch::default();
        }
        let epoch = self.epoch;
        self.epoch += 1;
        self.write_index_pending();
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
            .chain(index)
            .collect();
        SyncBatch {
            files,
            dir: std::mem::take(&mut self.dir_dirty).then(|| self.dir.path().to_path_buf()),
            epoch,
        }
    }

    /// Whether something written is not durable yet, or waits for a sync to go on: files
    /// changed since the last batch (records a split copied, `Moved` marks, retirements) or
    /// `Moved` marks pending or in flight. The server's periodic sync syncs when this is true
    /// even if no client changed anything: a split's marks, and the retirement of the wide
    /// file it emptied, wait for the batch holding the copies and then for their own. Once
    /// nothing is written any more it turns false within two batches (the second tells the
    /// store the first is durable).
    pub fn has_unsynced_work(&self) -> bool {
        S::FILE_BACKED
            && (!self.unflushed.is_empty()
                || self.index_dirty
                || self.dir_dirty
                || !self.moves.is_empty())
    }

    /// Sync batch `epoch` (and every earlier one) is durable: writes the `Moved` marks that
    /// waited for it (into the next batch). `u64::MAX`: every change so far is durable.
    ///
    /// At most [`MARKS_PER_CALL`] marks are written here (a split leaves thousands per batch);
    /// the rest by the next calls ([`Store::write_due_marks`]). `u64::MAX` writes them all.
    /// With [`Store::set_read_ahead_first`] on, none but for `u64::MAX`: the next call after
    /// the read-ahead writes them.
    pub fn synced(&mut self, epoch: u64) {
        self.ids_durable.synced(epoch);
        self.durable_epoch = self.durable_epoch.max(epoch);
        self.punch_due(self.durable_epoch);
        if self.moves.is_empty() {
            return;
        }
        let max = if epoch == u64::MAX {
            usize::MAX
        } else {
            MARKS_PER_CALL
        };
        self.write_due_marks(max);
    }

    /// Settles up to about `max` written `Moved` marks that are durable now (their replacing
    /// records may be freed, their spokes retired), then writes up to `max` marks whose
    /// replacement is durable (see [`Store::synced`]).
    pub fn write_due_marks(&mut self, max: usize) {
        if self.moves.is_empty() {
            // Nothing is settled, written or waited for (once per hub call).
            return;
        }
        let split_waited = self.split_waits_for_moves();
        let (durable, released) = self.moves.take_durable(self.durable_epoch, max);
        for to in durable {
            self.maybe_retire(to);
        }
        for at in released {
            self.unblock_dead(at);
        }
        // Marks wait for the read-ahead of their pages, except all at once (a flush).
        if max == usize::MAX || !self.awaits_read_ahead() {
            for p in self.moves.take_due(self.durable_epoch, max) {
                self.write_moved(p);
            }
        }
        if split_waited && self.split_due() && !self.split_waits_for_moves() {
            // A split step waiting for room among the moves may go on.
            self.note_deadline(self.now);
        }
        if self.marks_due() {
            // The rest at the next call: a caller's timer armed for later must come back now.
            self.note_deadline(self.now);
        }
    }

    /// Whether `Moved` marks are due to be written or settled ([`Store::write_due_marks`]).
    pub(super) fn marks_due(&self) -> bool {
        self.moves.any_due(self.durable_epoch) || self.moves.any_durable(self.durable_epoch)
    }

    /// Marks the record at `at` `Moved` (see [`PendingMove`]), replaced by a record in spoke
    /// `to`: at once in mem mode (a flush writes a whole snapshot), else once the current sync
    /// batch is durable. `counted`: the old record still counts as live in its spoke.
    pub(super) fn mark_moved(
        &mut self,
        at: JobLocation,
        slot: StateSlot,
        to: JobLocation,
        counted: bool,
    ) {
        let p = PendingMove {
            spoke: at.spoke,
            offset: at.offset,
            slot,
            to: to.spoke,
            new: to.offset,
            epoch: self.epoch,
            counted,
        };
        if S::FILE_BACKED {
            self.moves.push(p);
        } else {
            self.write_moved(p);
        }
    }

    fn write_moved(&mut self, p: PendingMove) {
        if !self.spokes.contains_key(&p.spoke) {
            // Retired meanwhile: the file holds no live record any more.
            if S::FILE_BACKED {
                self.moves.release(p.to, p.new);
                if !self.moves.replaces((p.to, p.new)) {
                    self.unblock_dead((p.to, p.new));
                }
            }
            return;
        }
        let at = JobLocation {
            spoke: p.spoke,
            offset: p.offset,
        };
        match self.update(at, p.slot) {
            Ok(()) => {
                self.record_dead(at);
                if S::FILE_BACKED {
                    self.moves.written(p.to, p.new, self.epoch);
                }
            }
            // Both records stay live: only a full scan settles them (and the new one is never
            // freed: it stays in `replacing`).
            Err(_) => self.needs_full_scan = true,
        }
        if p.counted {
            self.lost_live(p.spoke);
        } else {
            self.maybe_retire(p.spoke);
        }
        self.maybe_retire(p.to);
    }

    /// Whether the record at `offset` of `spoke` waits for its `Moved` mark: it is not the job.
    pub(super) fn is_pending_move(&self, spoke: SpokeId, offset: RecordOffset) -> bool {
        self.moves.at.contains(&(spoke, offset))
    }

    /// Whether a `Moved` mark waits to be written into `spoke` (it must not be compacted:
    /// the mark's offset would move) or for a record in it (it must not be retired).
    pub(super) fn has_pending_move(&self, spoke: SpokeId) -> bool {
        self.moves.touching.contains_key(&spoke)
    }

    /// The spokes of the moves whose `Moved` mark is not written yet: those holding the old
    /// record (it looks live) and those holding the new one; also those of marks written but
    /// not durable (one entry per spoke, not per move: a split leaves thousands of moves).
    pub(super) fn pending_move_spokes(&self) -> Vec<SpokeId> {
        self.moves.touching.keys().copied().collect()
    }

    /// Makes every change durable (mem mode: writes a new snapshot of every segment file,
    /// all-or-nothing for a restore, see [`crate::segment::snapshot`]).
    pub fn flush(&mut self) -> Result<()> {
        if !S::FILE_BACKED {
            // Mem mode retires nothing into `retired`: its files belong to the snapshot.
            return self.flush_snapshot();
        }
        // Closed, their files end where their data ends (a lazy segment cuts the tail it
        // reserved for appends), as long as the clean summary says: start-up opens them
        // without looking for their end.
        self.close_far_beyond(0);
        // Synced below with the rest: the clean summary states exactly the next id.
        let issued = self.next_id.saturating_sub(1);
        self.ids_durable.reset_to(&mut self.index, issued)?;
        self.flush_files()?;
        if !self.moves.is_empty() {
            // Everything is durable now, the new records of pending moves included: their
            // marks are written, synced, and then durable too.
            self.synced(u64::MAX);
            self.flush_files()?;
            self.synced(u64::MAX);
        }
        // Retired spokes' files go before the clean summary, which does not list them (a
        // restart would scan them again): those not handed out, and those of spokes the marks
        // above emptied just now.
        self.destroy_retired();
        if self.dir_dirty {
            self.flush_files()?;
        }
        self.punch_all();
        if let Err(e) = self.write_clean_summary() {
            // Only start-up time depends on it: the next open scans every segment.
            tracing::warn!("cannot write the start-up summary: {e}");
        }
        Ok(())
    }

    /// Destroys the segments of retired spokes not handed out ([`Store::take_retired`]).
    fn destroy_retired(&mut self) {
        self.dir_dirty |= !self.retired.is_empty();
        for seg in std::mem::take(&mut self.retired) {
            // A file that cannot be removed is harmless: it holds no live record.
            let _ = seg.destroy();
        }
    }

    /// Syncs every segment changed since the last flush or sync batch, the id index and the
    /// data dir.
    fn flush_files(&mut self) -> Result<()> {
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
        self.write_index_pending();
        self.index.flush()?;
        self.index_dirty = false;
        self.ids_durable.all_synced();
        if self.dir_dirty {
            fsio::sync_dir(self.dir.path()).map_err(|e| StorageError::io(self.dir.path(), e))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Mem-mode flush: stages every changed segment, then commits the set of live spokes.
    /// Changed spokes stay unflushed until the commit succeeds (a retry stages them again).
    fn flush_snapshot(&mut self) -> Result<()> {
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
        self.write_index_pending();
        self.index.flush()?;
        self.index_dirty = false;
        self.dir_dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{JobCounters, JobState};

    /// Marks written into batch 1 for two spokes, a batch's marks to one spoke more than a
    /// call settles: each call takes whole batches per spoke until it has `max`, the rest stay
    /// for the next call, and nothing is taken before its batch is durable.
    #[test]
    fn durable_marks_are_settled_a_bounded_number_per_call() {
        let mut moves = Moves::default();
        let (from, a, b) = (
            SpokeId::second_at(0),
            SpokeId::second_at(10_000_000),
            SpokeId::second_at(20_000_000),
        );
        let slot = StateSlot {
            version: 2,
            state: JobState::Moved,
            priority: 0,
            counters: JobCounters::default(),
        };
        for i in 0..200u64 {
            moves.push(PendingMove {
                spoke: from,
                offset: 64 + i * 100,
                slot,
                to: if i < 100 { a } else { b },
                new: 64 + i * 100,
                epoch: 0,
                counted: false,
            });
        }
        for p in moves.take_due(0, usize::MAX) {
            moves.written(p.to, p.new, 1);
        }
        assert!(!moves.any_durable(0));
        assert_eq!(moves.take_durable(0, usize::MAX), (vec![], vec![]));
        assert!(moves.any_durable(1));
        let (durable, released) = moves.take_durable(1, 50);
        assert_eq!(durable, [a]);
        assert_eq!(released.len(), 100);
        assert!(moves.replaces((b, 64 + 150 * 100)));
        assert!(!moves.replaces((a, 64)));
        assert!(moves.any_durable(1));
        let (durable, released) = moves.take_durable(1, 50);
        assert_eq!(durable, [b]);
        assert_eq!(released.len(), 100);
        assert!(!moves.any_durable(u64::MAX));
        assert!(moves.is_empty());
    }
}
