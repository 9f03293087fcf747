//! Compaction: a segment that is mostly dead is rewritten with only its live records.
//!
//! Trigger: a spoke whose live count fell below half of its known records and whose segment
//! holds at least [`COMPACT_MIN_BYTES`] is queued; at the start of the next hub call (when no
//! record offset is held anywhere) its segment is scanned, and if more than half of its bytes
//! belong to dead records (Deleted, Moved, or a stale copy of a resident job) it is compacted:
//!
//! 1. the live records are appended, with their ids, trigger times, versions, states and
//!    priorities unchanged, to a new segment for the same spoke in `<data dir>/compact/`;
//! 2. that file is flushed (fdatasync) and closed;
//! 3. the old file gets a second name in `compact/` (hard link), the new file is renamed over
//!    the old name (the commit point, see [`commit`]), and the data dir is fsynced;
//! 4. the new file is opened and replaces the old segment, which is dropped (unmapped, never
//!    truncated: the old inode lives until its last mapping is gone); if the open fails, the
//!    old file is renamed back, so the segment in use is always the one named on disk;
//! 5. resident jobs get their new offsets; far jobs get new id index entries.
//!
//! A crash before step 3 leaves the old file in place and a leftover in `compact/`, which
//! `DataDir::open` removes. After step 3 the new file is complete and durable; the id index
//! may point at old offsets, which recovery detects (entry ≠ record found) and rewrites.
//! Compaction is an optimisation: an error before the rename leaves the old segment in use.
//! Once the rename is done the new file is the segment whatever fails next: a failed fsync
//! of the data dir is reported ([`CompactError::NotDurable`]) and the dir is marked for the
//! next sync batch, which tries again (the rename may not survive a machine crash until then;
//! either file holds every job acknowledged before the compaction).
//! Mem mode never compacts (nothing is on disk while it runs).
//!
//! When. A far spoke is compacted at once (its jobs may wait for hours). A loaded spoke (near
//! or past) waits until it has been past for [`COMPACT_AFTER_PAST`]: its jobs are due, and
//! consumers usually delete them all within moments, after which the whole file is retired;
//! compacting it meanwhile would rewrite and fsync, under the hub's lock, a file about to be
//! deleted (measured: a 20-30 ms stall every second under a steady delayed-job flow). Only
//! stragglers (jobs buried or kept ready for long) get their spoke compacted after the wait.

use std::fs;
use std::io;
use std::path::Path;

use super::spoke::end;
use super::{Store, StoreError};
use crate::segment::format::{FILE_HEADER_LEN, record_len};
use crate::segment::{
    JobLocation, JobState, Micros, NewRecord, RecordOffset, SECOND, Segment, SpokeId, StorageError,
};

/// Segments smaller than this are never compacted (the gain would not pay for the rewrite).
pub const COMPACT_MIN_BYTES: u64 = 256 * 1024;

/// A loaded spoke is compacted only once its end is at least this far in the past.
pub const COMPACT_AFTER_PAST: Micros = 10 * SECOND;

/// An fsync of a directory (a parameter, so that tests can make it fail).
type SyncDir<'a> = &'a dyn Fn(&Path) -> io::Result<()>;

/// How a compaction failed.
#[derive(Debug)]
pub(super) enum CompactError {
    /// Before its commit point (the rename): the old segment is still the spoke's.
    Kept(StoreError),
    /// After it: the new segment is the spoke's, but the data dir's fsync failed, so the
    /// rename may not survive a machine crash until a later sync of the dir (marked due).
    NotDurable(StorageError),
}

impl From<StoreError> for CompactError {
    fn from(e: StoreError) -> Self {
        CompactError::Kept(e)
    }
}

impl From<StorageError> for CompactError {
    fn from(e: StorageError) -> Self {
        CompactError::Kept(e.into())
    }
}

/// Where the scheduler holds a job's current record: `None` when the job is not resident.
pub type Residency<'a> = &'a dyn Fn(u64) -> Option<JobLocation>;

/// A resident job's record moved by compaction: `(job, from, to)`.
pub type Moved = (u64, JobLocation, JobLocation);

/// Where [`commit`] failed.
#[derive(Debug)]
enum CommitError {
    /// Before the rename: the old file still has the segment's name (and no second one).
    NotDone(io::Error),
    /// After the rename, the commit point: the new file has the segment's name, but the
    /// directory was not synced.
    NotSynced(io::Error),
}

/// Renames the compacted file `new` over the segment file `path` (in directory `dir`) and
/// fsyncs `dir`. The old file first gets the second name `keep_old`, so that the swap can be
/// undone while the old segment is still in use. The rename is the commit point: if it
/// succeeds, `path` names the new file whatever happens after.
fn commit(
    new: &Path,
    path: &Path,
    keep_old: &Path,
    dir: &Path,
    sync_dir: SyncDir<'_>,
) -> Result<(), CommitError> {
    let _ = fs::remove_file(keep_old);
    fs::hard_link(path, keep_old).map_err(CommitError::NotDone)?;
    if let Err(e) = fs::rename(new, path) {
        let _ = fs::remove_file(keep_old);
        return Err(CommitError::NotDone(e));
    }
    sync_dir(dir).map_err(CommitError::NotSynced)
}

impl<S: Segment> Store<S> {
    /// Whether spoke `id` may be mostly dead: fewer than half of its known records live, and
    /// at least [`COMPACT_MIN_BYTES`] (cheap figures; compaction checks the bytes).
    pub(super) fn mostly_dead(&self, id: SpokeId) -> bool {
        S::FILE_BACKED
            && self
                .spokes
                .get(&id)
                .is_some_and(|s| s.live * 2 < s.records && s.seg.byte_size() >= COMPACT_MIN_BYTES)
    }

    /// Queues spoke `id` for compaction: far ones for the next call, loaded ones for when they
    /// have been past for [`COMPACT_AFTER_PAST`].
    pub(super) fn queue_compaction(&mut self, id: SpokeId) {
        match self.spokes.get(&id) {
            Some(s) if s.loaded => {
                self.compact_later.insert(id);
            }
            Some(_) => {
                self.compact_due.insert(id);
            }
            None => {}
        }
    }

    /// Compacts every queued spoke that is still mostly dead (loaded ones once long past).
    /// Call it when no record location is held across the call. Returns the resident jobs
    /// whose records moved: the scheduler updates their locations.
    pub fn compact_pending(&mut self, resident: Residency<'_>) -> Vec<Moved> {
        let mut out = Vec::new();
        if self.compact_due.is_empty() && self.compact_later.is_empty() {
            return out;
        }
        let now = self.now;
        let ripe: Vec<SpokeId> = self
            .compact_later
            .iter()
            .filter(|&&id| end(id).saturating_add(COMPACT_AFTER_PAST) <= now)
            .copied()
            .collect();
        for id in ripe {
            self.compact_later.remove(&id);
            self.compact_due.insert(id);
        }
        while let Some(id) = self.compact_due.pop_first() {
            match self.compact_spoke(id, resident, &mut out) {
                Ok(_) => {}
                Err(CompactError::Kept(e)) => {
                    tracing::warn!(spoke = ?id, "compaction failed, old segment kept: {e}");
                    // Count the segment as if compacted: the next try waits until half of its
                    // live records are gone too. Retrying at every delete would scan and
                    // rewrite the whole segment per delete for as long as the disk stays full.
                    if let Some(s) = self.spokes.get_mut(&id) {
                        s.records = s.live;
                    }
                }
                Err(CompactError::NotDurable(e)) => {
                    tracing::error!(
                        spoke = ?id,
                        "segment compacted, but the data dir was not synced ({e}): the \
                         compacted file's name is durable only after the next sync of the dir"
                    );
                }
            }
        }
        out
    }

    /// Rewrites spoke `id`'s segment with only its live records, if more than half of its
    /// bytes are dead. Returns whether it did; resident jobs whose records moved are added
    /// to `moved`.
    pub(super) fn compact_spoke(
        &mut self,
        id: SpokeId,
        resident: Residency<'_>,
        moved: &mut Vec<Moved>,
    ) -> Result<bool, CompactError> {
        self.compact_spoke_with(id, resident, moved, &crate::segment::fsio::sync_dir)
    }

    /// [`Store::compact_spoke`], syncing the data dir with `sync_dir`.
    fn compact_spoke_with(
        &mut self,
        id: SpokeId,
        resident: Residency<'_>,
        moved_jobs: &mut Vec<Moved>,
        sync_dir: SyncDir<'_>,
    ) -> Result<bool, CompactError> {
        // A spoke being split is scanned by offset across calls: its records must stay put.
        if !S::FILE_BACKED
            || self.has_pending_move(id)
            || self.splitting.is_some_and(|s| s.spoke == id)
        {
            return Ok(false);
        }
        let Some((used, keep, live_bytes)) = self.live_records(id, resident)? else {
            return Ok(false);
        };
        self.note_change(Some(id))?;
        let tmp_dir = self.dir.compact_dir();
        fs::create_dir_all(&tmp_dir).map_err(|e| StorageError::io(&tmp_dir, e))?;
        let tmp_path = tmp_dir.join(crate::segment::segment_file_name(id));
        let _ = fs::remove_file(&tmp_path);
        let moved = match self.write_compacted(id, &keep, &tmp_dir) {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e.into());
            }
        };
        let not_synced = match self.swap_in(id, &tmp_path, sync_dir)? {
            Some(seg) => seg,
            None => return Ok(false),
        };
        if let Some(s) = self.spokes.get_mut(&id) {
            s.records = keep.len() as u64;
        }
        self.remap(id, moved, resident, moved_jobs);
        self.work.segments_compacted += 1;
        tracing::info!(spoke = ?id, before = used, after = live_bytes + FILE_HEADER_LEN, "compacted segment");
        match not_synced {
            Some(e) => Err(CompactError::NotDurable(e)),
            None => Ok(true),
        }
    }

    /// The offsets of spoke `id`'s live records, with the segment's bytes used and the live
    /// records' bytes; `None` when more than half of the bytes are live (not worth it: the
    /// segment is then counted as if it held only its live records, so the next check waits
    /// until half of those are gone, as a scan per lost record would make deletes
    /// O(records)).
    fn live_records(
        &mut self,
        id: SpokeId,
        resident: Residency<'_>,
    ) -> Result<Option<(u64, Vec<RecordOffset>, u64)>, StoreError> {
        let Some(s) = self.spokes.get_mut(&id) else {
            return Ok(None);
        };
        let used = s.seg.byte_size();
        let metas = s.seg.scan()?;
        let mut keep: Vec<RecordOffset> = Vec::new();
        let mut live_bytes = 0u64;
        let mut records = 0u64;
        for m in metas.into_iter().flatten() {
            records += 1;
            if matches!(
                m.slot.state,
                JobState::Deleted | JobState::Moved | JobState::Freed
            ) {
                continue;
            }
            // A resident job whose current record is elsewhere: this one is a stale copy.
            if let Some(j) = resident(m.id)
                && (j.spoke != id || j.offset != m.offset)
            {
                continue;
            }
            live_bytes += record_len(m.tube.len(), m.body_len as usize);
            keep.push(m.offset);
        }
        if keep.is_empty() || used.saturating_sub(FILE_HEADER_LEN) < 2 * live_bytes {
            s.records = records.min(keep.len() as u64);
            return Ok(None);
        }
        Ok(Some((used, keep, live_bytes)))
    }

    /// Writes the records at `keep` of spoke `id` to a new segment in `tmp_dir`, flushed and
    /// closed; returns (job, old offset, new offset) for each.
    fn write_compacted(
        &mut self,
        id: SpokeId,
        keep: &[RecordOffset],
        tmp_dir: &Path,
    ) -> Result<Vec<(u64, RecordOffset, RecordOffset)>, StoreError> {
        let mut moved = Vec::with_capacity(keep.len());
        let mut new = S::create(tmp_dir, id)?;
        for &off in keep {
            let r = self.segment(id)?.read(off)?;
            let at = new.append(&NewRecord {
                id: r.id,
                trigger_at: r.trigger_at,
                created_at: r.created_at,
                ttr: r.ttr,
                tube: &r.tube,
                name: &r.name,
                body: &r.body,
                slot: r.slot,
            })?;
            moved.push((r.id, off, at));
        }
        new.flush()?;
        new.close()?;
        Ok(moved)
    }

    /// Renames the compacted file `tmp_path` over spoke `id`'s segment ([`commit`]) and makes
    /// it the spoke's segment. `None`: the spoke is gone (nothing to do); `Some(Some(e))`: it
    /// is done but the data dir's sync failed (marked for the next batch).
    fn swap_in(
        &mut self,
        id: SpokeId,
        tmp_path: &Path,
        sync_dir: SyncDir<'_>,
    ) -> Result<Option<Option<StorageError>>, CompactError> {
        let path = self.dir.segment_path(id);
        // A second name for the old file, so a failed open of the new one can be undone: the
        // old segment's mapping and fd must keep pointing at the file named `path`.
        let keep_old = self
            .dir
            .compact_dir()
            .join(format!("{}.old", crate::segment::segment_file_name(id)));
        let data_dir = self.dir.path().to_path_buf();
        let not_synced = match commit(tmp_path, &path, &keep_old, &data_dir, sync_dir) {
            Ok(()) => None,
            Err(CommitError::NotDone(e)) => {
                let _ = fs::remove_file(tmp_path);
                return Err(StorageError::io(&path, e).into());
            }
            Err(CommitError::NotSynced(e)) => {
                self.dir_dirty = true;
                Some(StorageError::io(&data_dir, e))
            }
        };
        let new = match S::open(&path) {
            Ok(n) => n,
            Err(e) => {
                // Put the old file back under its name: the segment in use stays the one on
                // disk. Nothing else happened since the rename, so this undoes the commit.
                match fs::rename(&keep_old, &path) {
                    Ok(()) => {
                        if sync_dir(&data_dir).is_err() {
                            self.dir_dirty = true;
                        }
                    }
                    Err(u) => {
                        tracing::error!(spoke = ?id, "compaction cannot be undone: {u}");
                    }
                }
                return Err(e.into());
            }
        };
        let _ = fs::remove_file(&keep_old);
        // The new file has no dead records, and offsets of the old one mean nothing in it.
        self.forget_runs(id);
        match self.spokes.get_mut(&id) {
            Some(s) => {
                let old = std::mem::replace(&mut s.seg, new);
                drop(old);
                Ok(Some(not_synced))
            }
            None => match not_synced {
                Some(e) => Err(CompactError::NotDurable(e)),
                None => Ok(None),
            },
        }
    }

    /// After compacting spoke `id`: resident jobs whose records moved go to `moved_jobs` (the
    /// scheduler updates them), far ones get new id index entries.
    fn remap(
        &mut self,
        id: SpokeId,
        moved: Vec<(u64, RecordOffset, RecordOffset)>,
        resident: Residency<'_>,
        moved_jobs: &mut Vec<Moved>,
    ) {
        for (job, from, to) in moved {
            let (from, to) = (
                JobLocation {
                    spoke: id,
                    offset: from,
                },
                JobLocation {
                    spoke: id,
                    offset: to,
                },
            );
            match resident(job) {
                Some(j) if j == from => moved_jobs.push((job, from, to)),
                Some(_) => {}
                None => {
                    // The index is derived data; recovery rewrites a stale entry, and until
                    // then lookups by id scan the far spokes.
                    if let Err(e) = self.set_index(job, to) {
                        tracing::warn!(job, "id index entry not updated: {e}");
                        self.index_incomplete = true;
                    }
                }
            }
        }
        if self.spokes.get(&id).is_some_and(|s| !s.loaded) {
            self.touch_far(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, HubConfig};
    use crate::segment::LazySegment;

    const T0: Micros = 1_700_000_000 * SECOND;

    fn cfg(dir: &std::path::Path) -> HubConfig {
        HubConfig {
            data_dir: dir.to_path_buf(),
            spoke_span: SECOND,
            restore: false,
        }
    }

    /// Compaction sized records with format v1's 80-byte record header (128 since v2): small
    /// live records counted too small made a segment more than half live look mostly dead,
    /// so it was rewritten for nothing.
    #[test]
    fn a_segment_more_than_half_live_is_not_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = Hub::<LazySegment>::open(cfg(dir.path()), T0).unwrap();
        let c = hub.connect();
        let big: Vec<u64> = (0..100)
            .map(|_| hub.put(c, 0, 3_600, 60, &[b'x'; 1024], T0).unwrap())
            .collect();
        for _ in 0..2_000 {
            hub.put(c, 0, 3_600, 60, b"y", T0).unwrap();
        }
        for id in big {
            hub.delete(c, id, T0).unwrap();
        }
        let live = 2_000 * record_len(7, 1);
        let dead = 100 * record_len(7, 1024);
        assert!(dead < live && live + dead >= COMPACT_MIN_BYTES);
        assert_eq!(hub.store.spokes.len(), 1);
        let id = *hub.store.spokes.keys().next().unwrap();
        assert!(
            !hub.store
                .compact_spoke(id, &|_| None, &mut Vec::new())
                .unwrap(),
            "a mostly live segment was compacted"
        );
        assert_eq!(hub.store.work.segments_compacted, 0);
    }

    /// Puts 400 jobs of 1 KiB an hour ahead and deletes three in four: a far spoke, mostly
    /// dead, not compacted yet (the test does it). Returns its id.
    fn mostly_dead_far_spoke<S: Segment>(hub: &mut Hub<S>) -> SpokeId {
        let c = hub.connect();
        for i in 1..=400u64 {
            assert_eq!(hub.put(c, 0, 3_600, 60, &body(i), T0).unwrap(), i);
        }
        for id in (1..=400u64).filter(|id| id % 4 != 0) {
            hub.delete(c, id, T0).unwrap();
            // Or the next call would compact it.
            hub.store.compact_due.clear();
        }
        assert_eq!(hub.store.spokes.len(), 1);
        *hub.store.spokes.keys().next().unwrap()
    }

    fn body(id: u64) -> Vec<u8> {
        format!("{id:>1024}").into_bytes()
    }

    /// The data dir's fsync after compaction's rename shared the error path of the link and
    /// the rename: when it failed, the hub went on with the old segment, by then named only
    /// in `compact/` (deleted at the next start), while the new file held the segment's name,
    /// so every later change of the spoke was lost at a restart.
    fn dir_sync_failure_after_the_rename<S: Segment>() {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = Hub::<S>::open(cfg(dir.path()), T0).unwrap();
        let id = mostly_dead_far_spoke(&mut hub);
        let before = hub.store.spokes[&id].seg.byte_size();
        let syncs = std::cell::Cell::new(0);
        let failing = |_: &std::path::Path| {
            syncs.set(syncs.get() + 1);
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        };
        let r = hub
            .store
            .compact_spoke_with(id, &|_| None, &mut Vec::new(), &failing);
        assert!(matches!(r, Err(CompactError::NotDurable(_))), "{r:?}");
        assert_eq!(hub.store.work.segments_compacted, 1);
        assert_eq!(syncs.get(), 1);
        // The new file is the segment, and the directory is synced again by the next batch.
        assert!(hub.store.spokes[&id].seg.byte_size() < before / 2);
        assert!(hub.take_sync_batch().dir.is_some());
        let c = hub.connect();
        hub.delete(c, 4, T0).unwrap();
        // No second compaction (which would paper over a wrong segment): after a failed one,
        // compact_pending waits until half of the live records are gone too.
        hub.store.compact_due.clear();
        let next = hub.put(c, 0, 3_600, 60, &body(401), T0).unwrap();
        drop(hub);
        let mut hub = Hub::<S>::open(cfg(dir.path()), T0).unwrap();
        for id in 1..=next {
            let live = id % 4 == 0 && id != 4 || id == next;
            match hub.peek(id) {
                Some(j) => {
                    assert!(live, "deleted job {id} is back");
                    assert_eq!(j.body.as_ref(), body(id).as_slice());
                }
                None => assert!(!live, "job {id} lost"),
            }
        }
    }

    #[test]
    fn lazy_dir_sync_failure_after_the_rename() {
        dir_sync_failure_after_the_rename::<LazySegment>();
    }

    #[test]
    fn mapped_dir_sync_failure_after_the_rename() {
        dir_sync_failure_after_the_rename::<crate::segment::MappedSegment>();
    }

    /// The rename is `commit`'s commit point: a failure before it leaves the old file named
    /// (and no second name); a failed directory sync after it leaves the new one named.
    #[test]
    fn commit_fails_before_or_after_its_rename() {
        let dir = tempfile::tempdir().unwrap();
        let (path, new) = (dir.path().join("seg"), dir.path().join("new"));
        let keep_old = dir.path().join("seg.old");
        std::fs::write(&path, b"old").unwrap();
        std::fs::write(&new, b"new").unwrap();
        let eio = |_: &Path| Err(io::Error::from_raw_os_error(libc::EIO));
        // The second name cannot be made (no such directory): nothing changes.
        let nowhere = dir.path().join("missing/seg.old");
        let r = commit(&new, &path, &nowhere, dir.path(), &eio);
        assert!(matches!(r, Err(CommitError::NotDone(_))), "{r:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        // The rename cannot be made (no new file): the second name is taken back.
        let r = commit(&dir.path().join("gone"), &path, &keep_old, dir.path(), &eio);
        assert!(matches!(r, Err(CommitError::NotDone(_))), "{r:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!keep_old.exists());
        // The sync fails after the rename: committed all the same.
        let r = commit(&new, &path, &keep_old, dir.path(), &eio);
        assert!(matches!(r, Err(CommitError::NotSynced(_))), "{r:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read(&keep_old).unwrap(), b"old");
        assert!(!new.exists());
    }
}
