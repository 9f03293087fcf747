//! A spoke: one time bucket `[start, start + span)` and the segment holding its job records.
//!
//! A job's record goes to the spoke whose bucket holds its trigger time (`now + delay`).
//! Spokes starting before the hub's horizon (`now + NEAR_SPOKES * span`; it only moves forward)
//! are *loaded*: every live job of theirs is resident in RAM, delayed ones in a set ordered by
//! (trigger time, id). Spokes beyond it are *far*: a segment (closed when not recently used)
//! plus per-tube counts of its delayed jobs, so a far job costs no RAM; lookups by id go
//! through the id index. A far spoke is loaded (scanned once) when the horizon reaches its
//! start, i.e. `NEAR_SPOKES` spans before its first job can be due.
//!
//! Edges. A put with no delay lands in the spoke holding `now`, which is always loaded, and is
//! ready at once. There is no separate past spoke: trigger times in the past only appear at
//! recovery or when the hub ticks late, and those jobs become ready in (trigger time, id) order
//! from the spoke they are in. Ready, reserved and buried jobs keep their record where it is,
//! so a past spoke lives as long as one of its jobs does. A spoke whose live count drops to 0
//! is retired (segment destroyed): at once when far, else once it is entirely past (so the
//! current spoke is not destroyed and recreated by put/delete cycles). Spokes of another span
//! (an earlier configuration) keep theirs; the horizon rule applies to their start.

use std::collections::HashMap;
use std::sync::Arc;

use super::compact::COMPACT_MIN_BYTES;
use super::job::{FarInfo, Job, Phase};
use super::{DelayedJob, FarJob, Hub, HubError, Micros, SyncFile, meta_of, secs_floor};
use crate::segment::{JobState, RecordMeta, Segment, SpokeId, StorageError};

/// Number of spokes ahead of the current one that are kept loaded.
pub const NEAR_SPOKES: u64 = 2;

/// At most this many far segments stay open at once (the least recently used is closed: lazy
/// mode then holds neither a file descriptor nor a mapping for it).
pub const MAX_OPEN_FAR_SPOKES: usize = 64;

pub(super) struct Spoke<S> {
    pub seg: S,
    /// Records in this segment that are the current record of a job that is not deleted.
    pub live: u64,
    /// Records in the segment (live or dead) as far as the hub knows: appended since open or
    /// compaction, plus those found by recovery's scan. Cheap trigger for compaction.
    pub records: u64,
    pub loaded: bool,
    /// Jobs resident in RAM whose record is in this segment (a far spoke holding one is
    /// left out of the start-up summary).
    pub resident: u64,
    /// Far spokes only: delayed jobs per tube.
    pub far_counts: HashMap<Arc<str>, u64>,
}

impl<S: Segment> Spoke<S> {
    pub fn new(seg: S, loaded: bool) -> Self {
        Spoke {
            seg,
            live: 0,
            records: 0,
            loaded,
            resident: 0,
            far_counts: HashMap::new(),
        }
    }

    pub fn end(id: SpokeId) -> Micros {
        id.start.saturating_add(id.span)
    }
}

/// The spoke of span `span` whose bucket holds `t`.
pub fn spoke_for(t: Micros, span: Micros) -> SpokeId {
    let span = span.max(1);
    SpokeId {
        start: t - t % span,
        span,
    }
}

impl<S: Segment> Hub<S> {
    /// Makes `job` resident, counted in its spoke.
    pub(super) fn insert_job(&mut self, id: u64, job: Job) {
        if let Some(s) = self.spokes.get_mut(&job.spoke) {
            s.resident += 1;
        }
        if let Some(old) = self.jobs.insert(id, job) {
            self.uncount_resident(old.spoke);
        }
    }

    /// Forgets resident job `id`.
    pub(super) fn remove_job(&mut self, id: u64) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        self.uncount_resident(job.spoke);
        Some(job)
    }

    fn uncount_resident(&mut self, spoke: SpokeId) {
        if let Some(s) = self.spokes.get_mut(&spoke) {
            s.resident = s.resident.saturating_sub(1);
        }
    }

    /// Resident job `id`'s record moved to `spoke`.
    pub(super) fn move_resident(&mut self, from: SpokeId, to: SpokeId) {
        self.uncount_resident(from);
        if let Some(s) = self.spokes.get_mut(&to) {
            s.resident += 1;
        }
    }

    /// Adds `delta` far delayed jobs of `tube` to far spoke `spoke`.
    pub(super) fn count_far(&mut self, spoke: SpokeId, tube: &Arc<str>, delta: i64) {
        if let Some(s) = self.spokes.get_mut(&spoke) {
            let n = s.far_counts.entry(tube.clone()).or_insert(0);
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                s.far_counts.remove(tube);
            }
        }
        if let Some(t) = self.tubes.get_mut(tube) {
            t.far_delayed = t.far_delayed.saturating_add_signed(delta);
        }
    }

    /// A record of `spoke` stopped being live; retire the spoke when none is left.
    pub(super) fn spoke_lost_live(&mut self, id: SpokeId) {
        let Some(s) = self.spokes.get_mut(&id) else {
            return;
        };
        s.live = s.live.saturating_sub(1);
        if s.live > 0
            && self.cfg.persist
            && s.live * 2 < s.records
            && s.seg.byte_size() >= COMPACT_MIN_BYTES
        {
            self.queue_compaction(id);
        }
        self.maybe_retire(id);
    }

    /// Retires spoke `id` if it has no live record: at once when far or past, else when past.
    pub(super) fn maybe_retire(&mut self, id: SpokeId) {
        let Some(s) = self.spokes.get(&id) else {
            return;
        };
        if s.live == 0 {
            if s.loaded && Spoke::<S>::end(id) > self.now {
                self.retire.insert(id);
                self.note_deadline(Spoke::<S>::end(id));
            } else {
                self.retire_spoke(id);
            }
        }
    }

    pub(super) fn retire_spoke(&mut self, id: SpokeId) {
        if self.has_pending_move(id) {
            // Retried once the mark is written (`write_moved`).
            return;
        }
        self.retire.remove(&id);
        self.compact_due.remove(&id);
        self.compact_later.remove(&id);
        let unsynced = self.unflushed.remove(&id);
        self.open_far.retain(|&s| s != id);
        if let Some(s) = self.spokes.remove(&id) {
            for (tube, n) in &s.far_counts {
                if let Some(t) = self.tubes.get_mut(tube) {
                    t.far_delayed = t.far_delayed.saturating_sub(*n);
                }
            }
            if let Err(e) = self.note_change(Some(id)) {
                // Nothing else can be written either: the files stay as the summary says.
                tracing::warn!(spoke = ?id, "segment kept: {e}");
                return;
            }
            self.work.spokes_retired += 1;
            self.dir_dirty = true;
            if !self.cfg.persist {
                // Mem mode: the file belongs to the last snapshot; the next flush drops it.
                drop(s.seg);
            } else if self.deferred_removal && Spoke::<S>::end(id) <= self.now {
                // Removed later, maybe after the next sync: until then the file must hold its
                // last changes (a Deleted slot) durably.
                if unsynced {
                    let file = s.seg.sync_handle().map_or_else(
                        || SyncFile::Closed(self.dir.segment_path(id)),
                        SyncFile::Open,
                    );
                    self.retired_unsynced.push(file);
                }
                self.retired.push(s.seg);
            } else {
                // A file that cannot be removed is harmless: it holds no live record.
                let _ = s.seg.destroy();
            }
        }
    }

    /// Marks far spoke `id` as recently used; closes the least recently used beyond the limit.
    pub(super) fn touch_far(&mut self, id: SpokeId) {
        if self.spokes.get(&id).is_none_or(|s| s.loaded) {
            return;
        }
        self.open_far.retain(|&s| s != id);
        self.open_far.push(id);
        while self.open_far.len() > MAX_OPEN_FAR_SPOKES {
            let old = self.open_far.remove(0);
            if let Some(s) = self.spokes.get_mut(&old) {
                // Closing only releases memory; if it fails the segment just stays open.
                let _ = s.seg.close();
            }
        }
    }

    /// Makes a far delayed job ready: persisted as Ready in its record, and resident from now
    /// on. `counted`: a kick (not a reserve-job), counted in the job's kicks.
    pub(super) fn kick_far(&mut self, far: FarJob, counted: bool) -> Result<(), HubError> {
        let mut m = far.meta;
        if counted {
            m.slot.counters.kicks = m.slot.counters.kicks.saturating_add(1);
        }
        m.slot.version = m.slot.version.saturating_add(1);
        m.slot.state = JobState::Ready;
        self.update_slot(far.spoke, m.offset, m.slot)?;
        self.touch_far(far.spoke);
        let tube = self.intern(&String::from_utf8_lossy(&m.tube));
        self.count_far(far.spoke, &tube, -1);
        self.insert_resident(far.spoke, &m, tube, Phase::Ready);
        Ok(())
    }

    /// Finds job `id` in a far spoke (it is not resident) through the id index; a damaged
    /// index entry, or one an id index write failure may have left out of date, falls back
    /// to scanning the far spokes.
    pub(super) fn find_far(&mut self, id: u64) -> Result<Option<FarJob>, HubError> {
        if id == 0 || id >= self.next_id || self.jobs.contains_key(&id) {
            return Ok(None);
        }
        match self.find_far_indexed(id)? {
            None if self.index_incomplete => self.scan_far(id),
            found => Ok(found),
        }
    }

    fn find_far_indexed(&mut self, id: u64) -> Result<Option<FarJob>, HubError> {
        match self.index.get(id) {
            Ok(None) => Ok(None),
            Ok(Some(loc)) => {
                if self.spokes.get(&loc.spoke).is_none_or(|s| s.loaded) {
                    return Ok(None);
                }
                let rec = match self.segment(loc.spoke)?.read(loc.offset) {
                    Ok(r) => r,
                    Err(StorageError::Corrupted { .. }) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                self.touch_far(loc.spoke);
                if rec.id != id || rec.slot.state != JobState::Waiting {
                    return Ok(None);
                }
                Ok(Some(FarJob {
                    spoke: loc.spoke,
                    meta: meta_of(rec),
                }))
            }
            Err(StorageError::Corrupted { .. }) => self.scan_far(id),
            Err(e) => Err(e.into()),
        }
    }

    /// Finds job `id` by scanning every far spoke (slow path).
    pub(super) fn scan_far(&mut self, id: u64) -> Result<Option<FarJob>, HubError> {
        let far: Vec<SpokeId> = self
            .spokes
            .iter()
            .filter(|(_, s)| !s.loaded && s.live > 0)
            .map(|(k, _)| *k)
            .collect();
        for sid in far {
            let metas = self.segment(sid)?.scan()?;
            self.touch_far(sid);
            if let Some(meta) = metas.into_iter().flatten().find(|m| {
                m.id == id && m.slot.state == JobState::Waiting && !self.jobs.contains_key(&id)
            }) {
                return Ok(Some(FarJob { spoke: sid, meta }));
            }
        }
        Ok(None)
    }

    /// Up to `n` delayed jobs of `tube`, earliest (trigger time, id) first, near and far.
    /// Near ones are usually earlier, but a spoke of a longer span (an older configuration)
    /// can be loaded and still hold later triggers than a far spoke, so the two are merged;
    /// far spokes are scanned only while they may hold something earlier than the n-th found.
    pub(super) fn delayed_of_tube(
        &mut self,
        tube: &Arc<str>,
        n: u64,
    ) -> Result<Vec<DelayedJob>, HubError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let mut out: Vec<((Micros, u64), DelayedJob)> = match self.tubes.get(tube) {
            Some(t) => t
                .delayed
                .iter()
                .take(n)
                .map(|&(at, id)| ((at, id), DelayedJob::Near(id)))
                .collect(),
            None => return Ok(Vec::new()),
        };
        let far: Vec<SpokeId> = self
            .spokes
            .iter()
            .filter(|(_, s)| !s.loaded && s.far_counts.get(tube).is_some_and(|&c| c > 0))
            .map(|(k, _)| *k)
            .collect();
        for sid in far {
            if out.len() >= n && out.last().is_some_and(|(key, _)| key.0 < sid.start) {
                break;
            }
            let metas = self.segment(sid)?.scan()?;
            self.touch_far(sid);
            for m in metas.into_iter().flatten() {
                if m.slot.state == JobState::Waiting
                    && m.tube == tube.as_bytes()
                    && !self.jobs.contains_key(&m.id)
                {
                    out.push((
                        (m.trigger_at, m.id),
                        DelayedJob::Far(FarJob {
                            spoke: sid,
                            meta: m,
                        }),
                    ));
                }
            }
            out.sort_by_key(|(key, _)| *key);
            out.truncate(n);
        }
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }

    /// Loads far spoke `id`: every live record of its not yet resident jobs becomes resident.
    pub(super) fn load_spoke(&mut self, id: SpokeId) {
        if !self.spokes.contains_key(&id) {
            return;
        }
        // A summary on disk may still list it as far, its jobs found through their id index
        // entries, which `trim_index` is about to empty: recovery must read it instead.
        if let Err(e) = self.note_change(Some(id)) {
            tracing::warn!(spoke = ?id, "change journal: {e}");
        }
        let Some(s) = self.spokes.get_mut(&id) else {
            return;
        };
        s.loaded = true;
        let counts = std::mem::take(&mut s.far_counts);
        let metas = s.seg.scan();
        self.open_far.retain(|&x| x != id);
        for (tube, n) in counts {
            if let Some(t) = self.tubes.get_mut(&tube) {
                t.far_delayed = t.far_delayed.saturating_sub(n);
            }
        }
        let metas = match metas {
            Ok(m) => m,
            Err(e) => {
                // Its jobs stay unreachable until a restart recovers them.
                tracing::error!(spoke = ?id, "cannot load spoke: {e}");
                self.corrupt_records += 1;
                return;
            }
        };
        self.work.spokes_loaded += 1;
        self.work.records_loaded += metas.len() as u64;
        for m in metas {
            match m {
                Err(e) => self.note_corrupt(&e),
                Ok(m) => {
                    self.index_trim.push(m.id);
                    self.make_resident(id, m);
                }
            }
        }
    }

    /// Makes a scanned record resident if it is the live record of a job not yet resident.
    pub(super) fn make_resident(&mut self, spoke: SpokeId, m: RecordMeta) {
        let phase = match m.slot.state {
            JobState::Deleted | JobState::Moved => return,
            JobState::Waiting => Phase::Delayed,
            JobState::Ready => Phase::Ready,
            // Recovered buried jobs keep id order, before any buried from now on.
            JobState::Buried => Phase::Buried { seq: 0 },
        };
        if self.jobs.contains_key(&m.id) || self.is_pending_move(spoke, m.offset) {
            return;
        }
        let tube = self.intern(&String::from_utf8_lossy(&m.tube));
        self.insert_resident(spoke, &m, tube, phase);
    }

    /// Puts a job read from its record into RAM in `phase`, with the version and counters of
    /// its slot and the delay kept for it while it was far (`far_info`).
    fn insert_resident(&mut self, spoke: SpokeId, m: &RecordMeta, tube: Arc<str>, phase: Phase) {
        let info = self.far_info.remove(&m.id).unwrap_or(FarInfo {
            delay_s: u32::try_from(secs_floor(m.trigger_at.saturating_sub(m.created_at)))
                .unwrap_or(u32::MAX),
        });
        self.insert_job(
            m.id,
            Job {
                tube,
                pri: m.slot.priority,
                ttr_s: m.ttr.max(1),
                delay_s: info.delay_s,
                created_at: m.created_at,
                trigger_at: m.trigger_at,
                spoke,
                offset: m.offset,
                version: m.slot.version,
                phase,
                counters: m.slot.counters,
                // The record may come from a change not known to be durable yet.
                change: self.latest_change,
            },
        );
        self.link(m.id, phase);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn spoke_for_buckets() {
        assert_eq!(spoke_for(0, 10), SpokeId { start: 0, span: 10 });
        assert_eq!(spoke_for(9, 10), SpokeId { start: 0, span: 10 });
        assert_eq!(
            spoke_for(10, 10),
            SpokeId {
                start: 10,
                span: 10
            }
        );
        assert_eq!(spoke_for(5, 0), SpokeId { start: 5, span: 1 });
        for t in 0..100 {
            let s = spoke_for(t, 7);
            assert!(s.start <= t && t < s.start + s.span);
        }
    }
}
