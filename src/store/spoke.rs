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

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{Result, Store};
use crate::segment::format::{FREED_RUNS_SINCE, record_len};
use crate::segment::{
    JobLocation, JobState, Micros, Record, RecordMeta, Segment, SpokeId, StateSlot, StorageError,
};

/// Number of spokes ahead of the current one that are kept loaded.
pub const NEAR_SPOKES: u64 = 2;

/// By default at most this many far segments stay open at once (the least recently used is
/// closed: lazy mode then holds neither a file descriptor nor a mapping for it); the server
/// raises it from its open-file limit ([`Store::set_max_open_far`]).
pub const MAX_OPEN_FAR_SPOKES: usize = 64;

/// A far spoke unused this long is idle: its segment's pages leave the process
/// ([`Store::shed_idle_far`]).
pub const FAR_IDLE: Micros = 1_000_000;

pub(crate) struct Spoke<S> {
    pub seg: S,
    /// Records in this segment that are the current record of a job that is not deleted.
    pub live: u64,
    /// Records in the segment (live or dead) as far as the store knows: appended since open or
    /// compaction, plus those found by recovery's scan. Cheap trigger for compaction.
    pub records: u64,
    pub loaded: bool,
    /// Jobs resident in the scheduler whose record is in this segment (a far spoke holding
    /// one is left out of the start-up summary).
    pub resident: u64,
    /// Far spokes only: delayed jobs per tube.
    pub far_counts: FarCounts,
    /// It holds, or held, a record of a named job: its start-up summary entry waits for a
    /// scan for its names (`checkpoint`), so that recovery finds the names of its far jobs.
    pub named: bool,
    /// When a record was last appended (the store's clock): a spoke appended to in the last
    /// `free::HOT_FOR` is *hot*, its punches wait.
    pub last_append: Micros,
}

impl<S: Segment> Spoke<S> {
    pub fn new(seg: S, loaded: bool) -> Self {
        Spoke {
            seg,
            live: 0,
            records: 0,
            loaded,
            resident: 0,
            far_counts: FarCounts::default(),
            named: false,
            last_append: 0,
        }
    }
}

/// Far delayed jobs per tube, of one spoke or of the store.
pub(super) type FarCounts = FxHashMap<Arc<str>, u64>;

/// Adds `delta` far delayed jobs of `tube` to a far spoke's `counts` (if it has them) and to
/// the store's total per tube, `by_tube`. Once per far put: the counts are looked up by the
/// name as it comes; a key is made only for a tube the store does not count yet, and shared.
pub(super) fn add_far(
    counts: Option<&mut FarCounts>,
    by_tube: &mut FarCounts,
    tube: &[u8],
    delta: i64,
) {
    let name = match std::str::from_utf8(tube) {
        Ok(name) => std::borrow::Cow::Borrowed(name),
        Err(_) => String::from_utf8_lossy(tube),
    };
    add_count(by_tube, &name, delta);
    let Some(counts) = counts else {
        return;
    };
    match counts.get_mut(&*name) {
        Some(n) => {
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                counts.remove(&*name);
            }
        }
        None if delta > 0 => {
            let key = by_tube
                .get_key_value(&*name)
                .map_or_else(|| Arc::from(&*name), |(k, _)| k.clone());
            counts.insert(key, delta.unsigned_abs());
        }
        None => {}
    }
}

/// Adds `delta` to `tube`'s count in `map`: a count reaching 0 goes, a missing one is made
/// only for a positive `delta`.
fn add_count(map: &mut FarCounts, tube: &str, delta: i64) {
    match map.get_mut(tube) {
        Some(n) => {
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                map.remove(tube);
            }
        }
        None if delta > 0 => {
            map.insert(Arc::from(tube), delta.unsigned_abs());
        }
        None => {}
    }
}

/// The end of spoke `id`'s bucket.
pub fn end(id: SpokeId) -> Micros {
    id.start.saturating_add(id.span)
}

/// The spoke of span `span` whose bucket holds `t`.
pub fn spoke_for(t: Micros, span: Micros) -> SpokeId {
    let span = span.max(1);
    SpokeId {
        start: t - t % span,
        span,
    }
}

/// A record's metadata, without its body.
fn meta_of(r: Record) -> RecordMeta {
    RecordMeta {
        offset: r.offset,
        id: r.id,
        trigger_at: r.trigger_at,
        created_at: r.created_at,
        ttr: r.ttr,
        tube: r.tube,
        body_len: u32::try_from(r.name.len() + r.body.len()).unwrap_or(u32::MAX),
        name: r.name,
        slot: r.slot,
    }
}

/// A delayed job found in a far spoke: not resident, its record read from the segment.
#[derive(Clone, Debug)]
pub struct FarJob {
    pub spoke: SpokeId,
    pub meta: RecordMeta,
}

impl FarJob {
    pub fn loc(&self) -> JobLocation {
        JobLocation {
            spoke: self.spoke,
            offset: self.meta.offset,
        }
    }
}

/// A delayed job, resident (near: its id) or not (far).
pub enum DelayedJob {
    Near(u64),
    Far(FarJob),
}

impl<S: Segment> Store<S> {
    /// A resident job's record is in `spoke` (the scheduler counts what it holds, so that a far
    /// spoke holding one stays out of the start-up summary).
    pub fn resident_added(&mut self, spoke: SpokeId) {
        if let Some(s) = self.spokes.get_mut(&spoke) {
            s.resident += 1;
        }
    }

    /// A resident job whose record is in `spoke` is no longer resident (or moved elsewhere).
    pub fn resident_gone(&mut self, spoke: SpokeId) {
        if let Some(s) = self.spokes.get_mut(&spoke) {
            s.resident = s.resident.saturating_sub(1);
        }
    }

    /// Adds `delta` far delayed jobs of `tube` to far spoke `spoke` (see [`add_far`]).
    pub(super) fn count_far(&mut self, spoke: SpokeId, tube: &[u8], delta: i64) {
        let counts = self.spokes.get_mut(&spoke).map(|s| &mut s.far_counts);
        add_far(counts, &mut self.far_by_tube, tube, delta);
    }

    /// Forgets the far counts of spoke `id` (loaded or retired).
    fn uncount_far(&mut self, id: SpokeId) {
        let Some(s) = self.spokes.get_mut(&id) else {
            return;
        };
        for (tube, n) in std::mem::take(&mut s.far_counts) {
            add_count(
                &mut self.far_by_tube,
                &tube,
                -i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
    }

    /// A record of `spoke` stopped being live; retire the spoke when none is left.
    pub(super) fn lost_live(&mut self, id: SpokeId) {
        let Some(s) = self.spokes.get_mut(&id) else {
            return;
        };
        s.live = s.live.saturating_sub(1);
        if s.live > 0 && self.mostly_dead(id) {
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
            if s.loaded && end(id) > self.now {
                self.retire.insert((end(id), id));
                self.note_deadline(end(id));
            } else {
                self.retire_spoke(id);
            }
        }
    }

    /// Retires the spokes waiting for their end whose end has come (at `set_now`'s time).
    pub fn retire_due(&mut self) {
        while let Some(&(end, id)) = self.retire.first() {
            if end > self.now {
                break;
            }
            self.retire.remove(&(end, id));
            if self.spokes.get(&id).is_some_and(|s| s.live == 0) {
                self.retire_spoke(id);
            }
        }
    }

    pub(super) fn retire_spoke(&mut self, id: SpokeId) {
        if self.has_pending_move(id) {
            // Retried once the mark is written (`write_moved`).
            return;
        }
        self.retire.remove(&(end(id), id));
        self.compact_due.remove(&id);
        self.compact_later.remove(&id);
        self.forget_runs(id);
        self.unflushed.remove(&id);
        self.open_far.remove(&id);
        self.uncount_far(id);
        self.forget_wide(id);
        if let Some(s) = self.spokes.remove(&id) {
            if let Err(e) = self.note_change(Some(id)) {
                // Nothing else can be written either: the files stay as the summary says.
                tracing::warn!(spoke = ?id, "segment kept: {e}");
                return;
            }
            self.work.spokes_retired += 1;
            self.dir_dirty = true;
            if !S::FILE_BACKED {
                // Mem mode: the file belongs to the last snapshot; the next flush drops it.
                drop(s.seg);
            } else if self.deferred_removal {
                // Renamed aside now, removed later (outside the hub lock). The old name is free
                // at once for a new file of the spoke (a far spoke emptied by deletes can be
                // put into again), and a renamed file is never read again: a restart before
                // its removal cannot take a record left in it (a copy's loser whose `Moved`
                // mark was never written) for a live job. Its last changes need no sync: the
                // next batch syncs the directory, which makes the rename durable.
                let mut seg = s.seg;
                let to = self.dir.dead_path(id, self.dead_files);
                self.dead_files += 1;
                match seg.rename(&to) {
                    Ok(()) => self.retired.push(seg),
                    Err(e) => {
                        tracing::debug!(spoke = ?id, "removing the segment in the call: {e}");
                        let _ = seg.destroy();
                    }
                }
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
        self.touch_open_far(id);
    }

    /// [`Store::touch_far`] of a spoke known to be far.
    pub(super) fn touch_open_far(&mut self, id: SpokeId) {
        self.open_far.touch(id, self.now);
        self.close_far_beyond(self.max_open_far);
    }

    /// Sets how many far segments may stay open at once (the default is
    /// [`MAX_OPEN_FAR_SPOKES`]; the server derives it from its open-file limit), closing the
    /// least recently used beyond it.
    pub fn set_max_open_far(&mut self, max: usize) {
        self.max_open_far = max.max(1);
        self.close_far_beyond(self.max_open_far);
    }

    /// Lets up to `max` far segments unused for [`FAR_IDLE`] before `now` drop their pages
    /// from the process ([`Segment::drop_pages`] over the whole segment: the page cache keeps
    /// them), each once until it is used again; returns how many did. An idle far spoke then
    /// costs no resident memory in lazy and mapped mode, whatever its appends and reads left
    /// mapped. It stays open: reopening would cost a file's open, mapping and reservation.
    pub fn shed_idle_far(&mut self, now: Micros, max: usize) -> usize {
        let before = now.saturating_sub(FAR_IDLE);
        let spokes = &mut self.spokes;
        self.open_far.shed_idle(before, max, |id| {
            if let Some(s) = spokes.get_mut(&id) {
                s.seg.drop_pages(0, u64::MAX);
            }
        })
    }

    pub(super) fn close_far_beyond(&mut self, max: usize) {
        while self.open_far.len() > max {
            let Some(old) = self.open_far.pop_oldest() else {
                break;
            };
            if let Some(s) = self.spokes.get_mut(&old) {
                // Closing only releases memory; if it fails the segment just stays open.
                let _ = s.seg.close();
            }
        }
    }

    /// Makes far job `far` resident-to-be with the new slot `slot` (a kick or a reserve by
    /// id: `Ready`): written to its record, no longer counted far. The caller makes it
    /// resident (and counts it with [`Store::resident_added`]).
    pub fn take_far(&mut self, far: &FarJob, slot: StateSlot) -> Result<()> {
        self.update(far.loc(), slot)?;
        self.touch_far(far.spoke);
        self.count_far(far.spoke, &far.meta.tube, -1);
        Ok(())
    }

    /// Finds job `id` in a far spoke through the id index, if it is not resident
    /// (`is_resident`); a damaged index entry, or one an id index write failure may have left
    /// out of date, falls back to scanning the far spokes.
    pub fn find_far(
        &mut self,
        id: u64,
        is_resident: impl Fn(u64) -> bool,
    ) -> Result<Option<FarJob>> {
        if !self.issued(id) || is_resident(id) {
            return Ok(None);
        }
        match self.find_far_indexed(id)? {
            None if self.index_incomplete => self.scan_far(id),
            found => Ok(found),
        }
    }

    fn find_far_indexed(&mut self, id: u64) -> Result<Option<FarJob>> {
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
                // A record whose `Moved` mark is pending is not the job's: after a power cut
                // the index may still point at the old record of a job moved, then deleted.
                if rec.id != id
                    || rec.slot.state != JobState::Waiting
                    || self.is_pending_move(loc.spoke, loc.offset)
                {
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

    /// Finds job `id` (not resident) by scanning every far spoke (slow path).
    pub(super) fn scan_far(&mut self, id: u64) -> Result<Option<FarJob>> {
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
                m.id == id
                    && m.slot.state == JobState::Waiting
                    && !self.is_pending_move(sid, m.offset)
            }) {
                return Ok(Some(FarJob { spoke: sid, meta }));
            }
        }
        Ok(None)
    }

    /// Merges the far delayed jobs of `tube` into `near` (the resident delayed jobs of the
    /// tube, earliest (trigger time, id) first, at most `n`): the first `n` of both. Near ones
    /// are usually earlier, but a spoke of a longer span (an older configuration) can be
    /// loaded and still hold later triggers than a far spoke, so the two are merged; far
    /// spokes are scanned only while they may hold something earlier than the n-th found.
    pub fn delayed_of_tube(
        &mut self,
        tube: &str,
        n: usize,
        near: Vec<(Micros, u64)>,
        is_resident: impl Fn(u64) -> bool,
    ) -> Result<Vec<DelayedJob>> {
        let mut out: Vec<((Micros, u64), DelayedJob)> = near
            .into_iter()
            .map(|(at, id)| ((at, id), DelayedJob::Near(id)))
            .collect();
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
                // A moved job's old record (a replace by name, a split) still reads Waiting
                // until its Moved mark is written: the job is its new record.
                if m.slot.state == JobState::Waiting
                    && m.tube == tube.as_bytes()
                    && !is_resident(m.id)
                    && !self.is_pending_move(sid, m.offset)
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

    /// Whether far spokes must be loaded before the scheduler can rely on holding every job
    /// due by `now` + the near window; if none, the horizon just moves.
    pub fn loads_due(&mut self, now: Micros) -> bool {
        let end = now.saturating_add(NEAR_SPOKES.saturating_mul(self.span));
        if end > self.horizon_end && end <= self.far_start {
            // Nothing to load (the usual case: the horizon moves with every call).
            self.horizon_end = end;
            return false;
        }
        end > self.horizon_end
    }

    /// Whether the horizon is ahead of `now` (spokes starting after now hold nothing due yet).
    pub fn horizon_ahead_of(&self, now: Micros) -> bool {
        self.horizon_end > now
    }

    /// Moves the horizon to `now` + the near window and returns the far spokes it reached:
    /// load each with [`Store::load_spoke`].
    pub fn reach(&mut self, now: Micros) -> Vec<SpokeId> {
        let end = now.saturating_add(NEAR_SPOKES.saturating_mul(self.span));
        if end <= self.horizon_end {
            return Vec::new();
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
        self.far_start = self
            .spokes
            .range(to..)
            .next()
            .map_or(Micros::MAX, |(k, _)| k.start);
        ids
    }

    /// Loads far spoke `id`: returns the live records of its jobs (those not waiting for a
    /// `Moved` mark); the scheduler makes those of jobs not yet resident resident.
    pub fn load_spoke(&mut self, id: SpokeId) -> Vec<RecordMeta> {
        if !self.spokes.contains_key(&id) {
            return Vec::new();
        }
        // A summary on disk may still list it as far, its jobs found through their id index
        // entries, which `trim_index` is about to empty: recovery must read it instead.
        if let Err(e) = self.note_change(Some(id)) {
            tracing::warn!(spoke = ?id, "change journal: {e}");
        }
        self.uncount_far(id);
        self.forget_wide(id);
        self.open_far.remove(&id);
        let Some(s) = self.spokes.get_mut(&id) else {
            return Vec::new();
        };
        s.loaded = true;
        let metas = match s.seg.scan() {
            Ok(m) => m,
            Err(e) => {
                // Its jobs stay unreachable until a restart recovers them.
                tracing::error!(spoke = ?id, "cannot load spoke: {e}");
                self.corrupt_records += 1;
                return Vec::new();
            }
        };
        self.work.spokes_loaded += 1;
        self.work.records_loaded += metas.len() as u64;
        let mut live = Vec::with_capacity(metas.len());
        let mut dead = Vec::new();
        for m in metas {
            match m {
                Err(e) => self.note_corrupt(&e),
                Ok(m) => {
                    self.index_trim.push(m.id);
                    match m.slot.state {
                        JobState::Deleted | JobState::Moved => {
                            dead.push((m.offset, record_len(m.tube.len(), m.body_len as usize)));
                        }
                        JobState::Freed => {}
                        _ if self.is_pending_move(id, m.offset) => {}
                        _ => live.push(m),
                    }
                }
            }
        }
        if self
            .spokes
            .get(&id)
            .is_some_and(|s| s.seg.version() >= FREED_RUNS_SINCE)
        {
            self.note_dead_found(id, &dead);
        }
        live
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
