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
//!    the old name, and the data dir is fsynced;
//! 4. the new file is opened and replaces the old segment, which is dropped (unmapped, never
//!    truncated: the old inode lives until its last mapping is gone); if the open fails, the
//!    old file is renamed back, so the segment in use is always the one named on disk;
//! 5. resident jobs get their new offsets; far jobs get new id index entries.
//!
//! A crash before step 3 leaves the old file in place and a leftover in `compact/`, which
//! `DataDir::open` removes. After step 3 the new file is complete and durable; the id index
//! may point at old offsets, which recovery detects (entry ≠ record found) and rewrites.
//! Compaction is an optimisation: any error leaves the old segment in use.
//! Mem mode never compacts (nothing is on disk while it runs).
//!
//! When. A far spoke is compacted at once (its jobs may wait for hours). A loaded spoke (near
//! or past) waits until it has been past for [`COMPACT_AFTER_PAST`]: its jobs are due, and
//! consumers usually delete them all within moments, after which the whole file is retired;
//! compacting it meanwhile would rewrite and fsync, under the hub's lock, a file about to be
//! deleted (measured: a 20-30 ms stall every second under a steady delayed-job flow). Only
//! stragglers (jobs buried or kept ready for long) get their spoke compacted after the wait.

use super::spoke::Spoke;
use super::{Hub, HubError, Micros, SECOND};
use crate::segment::format::{FILE_HEADER_LEN, record_len};
use crate::segment::{JobLocation, JobState, NewRecord, RecordOffset, Segment, SpokeId};

/// Segments smaller than this are never compacted (the gain would not pay for the rewrite).
pub const COMPACT_MIN_BYTES: u64 = 256 * 1024;

/// A loaded spoke is compacted only once its end is at least this far in the past.
pub const COMPACT_AFTER_PAST: Micros = 10 * SECOND;

impl<S: Segment> Hub<S> {
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
    pub(super) fn compact_pending(&mut self) {
        let now = self.now;
        let ripe: Vec<SpokeId> = self
            .compact_later
            .iter()
            .filter(|&&id| Spoke::<S>::end(id).saturating_add(COMPACT_AFTER_PAST) <= now)
            .copied()
            .collect();
        for id in ripe {
            self.compact_later.remove(&id);
            self.compact_due.insert(id);
        }
        while let Some(id) = self.compact_due.pop_first() {
            if let Err(e) = self.compact_spoke(id) {
                tracing::warn!(spoke = ?id, "compaction failed, old segment kept: {e}");
                // Count the segment as if compacted: the next try waits until half of its live
                // records are gone too. Retrying at every delete would scan and rewrite the
                // whole segment per delete for as long as the disk stays full.
                if let Some(s) = self.spokes.get_mut(&id) {
                    s.records = s.live;
                }
            }
        }
    }

    /// Rewrites spoke `id`'s segment with only its live records, if more than half of its
    /// bytes are dead. Returns whether it did.
    pub(super) fn compact_spoke(&mut self, id: SpokeId) -> Result<bool, HubError> {
        if !self.cfg.persist {
            return Ok(false);
        }
        let Some(s) = self.spokes.get_mut(&id) else {
            return Ok(false);
        };
        let used = s.seg.byte_size();
        let metas = s.seg.scan()?;
        let mut keep: Vec<RecordOffset> = Vec::new();
        let mut live_bytes = 0u64;
        let mut records = 0u64;
        for m in metas.into_iter().flatten() {
            records += 1;
            if matches!(m.slot.state, JobState::Deleted | JobState::Moved) {
                continue;
            }
            // A resident job whose current record is elsewhere: this one is a stale copy.
            if let Some(j) = self.jobs.get(&m.id)
                && (j.spoke != id || j.offset != m.offset)
            {
                continue;
            }
            live_bytes += record_len(m.tube.len(), m.body_len as usize);
            keep.push(m.offset);
        }
        if keep.is_empty() || used.saturating_sub(FILE_HEADER_LEN) < 2 * live_bytes {
            // Not worth it (dead records are small ones). Count the segment as if it held
            // only its live records, so the next check waits until half of those are gone:
            // a scan per lost record would make deletes O(records).
            if let Some(s) = self.spokes.get_mut(&id) {
                s.records = records.min(keep.len() as u64);
            }
            return Ok(false);
        }
        self.note_change(Some(id))?;
        let tmp_dir = self.dir.compact_dir();
        std::fs::create_dir_all(&tmp_dir)
            .map_err(|e| HubError::Internal(format!("{}: {e}", tmp_dir.display())))?;
        let tmp_path = tmp_dir.join(crate::segment::segment_file_name(id));
        let _ = std::fs::remove_file(&tmp_path);
        let mut moved: Vec<(u64, RecordOffset, RecordOffset)> = Vec::with_capacity(keep.len());
        let built = (|| -> Result<(), HubError> {
            let mut new = S::create(&tmp_dir, id)?;
            for &off in &keep {
                let r = self.segment(id)?.read(off)?;
                let at = new.append(&NewRecord {
                    id: r.id,
                    trigger_at: r.trigger_at,
                    created_at: r.created_at,
                    ttr: r.ttr,
                    tube: &r.tube,
                    body: &r.body,
                    slot: r.slot,
                })?;
                moved.push((r.id, off, at));
            }
            new.flush()?;
            new.close()?;
            Ok(())
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
        let path = self.dir.segment_path(id);
        // A second name for the old file, so a failed open of the new one can be undone: the
        // old segment's mapping and fd must keep pointing at the file named `path`.
        let keep_old = tmp_dir.join(format!("{}.old", crate::segment::segment_file_name(id)));
        let _ = std::fs::remove_file(&keep_old);
        let sync_dir = |dir: &std::path::Path| std::fs::File::open(dir)?.sync_all();
        std::fs::hard_link(&path, &keep_old)
            .and_then(|()| std::fs::rename(&tmp_path, &path))
            .and_then(|()| sync_dir(self.dir.path()))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp_path);
                HubError::Internal(format!("{}: {e}", path.display()))
            })?;
        let new = match S::open(&path) {
            Ok(n) => n,
            Err(e) => {
                // Put the old file back under its name: the segment in use stays the one on disk.
                let undo =
                    std::fs::rename(&keep_old, &path).and_then(|()| sync_dir(self.dir.path()));
                if let Err(u) = undo {
                    tracing::error!(spoke = ?id, "compaction cannot be undone: {u}");
                }
                return Err(e.into());
            }
        };
        let _ = std::fs::remove_file(&keep_old);
        let far = match self.spokes.get_mut(&id) {
            Some(s) => {
                let old = std::mem::replace(&mut s.seg, new);
                drop(old);
                s.records = keep.len() as u64;
                !s.loaded
            }
            None => return Ok(false),
        };
        for (job, from, to) in moved {
            match self.jobs.get_mut(&job) {
                Some(j) if j.spoke == id && j.offset == from => j.offset = to,
                Some(_) => {}
                None => {
                    // The index is derived data; recovery rewrites a stale entry, and until
                    // then lookups by id scan the far spokes.
                    let loc = JobLocation {
                        spoke: id,
                        offset: to,
                    };
                    if let Err(e) = self.set_index(job, loc) {
                        tracing::warn!(job, "id index entry not updated: {e}");
                        self.index_incomplete = true;
                    }
                }
            }
        }
        if far {
            self.touch_far(id);
        }
        self.work.segments_compacted += 1;
        tracing::info!(spoke = ?id, before = used, after = live_bytes + FILE_HEADER_LEN, "compacted segment");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{HubConfig, SECOND};
    use super::*;
    use crate::segment::LazySegment;

    const T0: Micros = 1_700_000_000 * SECOND;

    fn cfg(dir: &std::path::Path) -> HubConfig {
        HubConfig {
            data_dir: dir.to_path_buf(),
            spoke_span: SECOND,
            restore: false,
            persist: true,
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
        assert_eq!(hub.spokes.len(), 1);
        let id = *hub.spokes.keys().next().unwrap();
        assert!(
            !hub.compact_spoke(id).unwrap(),
            "a mostly live segment was compacted"
        );
        assert_eq!(hub.work.segments_compacted, 0);
    }
}
