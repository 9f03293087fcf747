//! Spans that grow with distance: the far future costs by jobs, not by seconds.
//!
//! A record goes to the widest spoke that is not due to be split yet ([`place`]): spans are
//! the base span (`--spoke-span`) times [`SPAN_FACTOR`]^k for k up to [`SPAN_LEVELS`] - 1 (with
//! the 1 s default: 1 s, 1 min, 1 h, 60 h), aligned to their own span, so the buckets of one
//! level nest in those of the next. A spoke wider than the base span is *split* one span before
//! it starts (`split_at`): each of its far delayed records is moved, as a delayed release moves
//! a job, to the spoke [`place`] picks for it then (one level or more finer), and the wide
//! spoke retires once every record is gone. Jobs spread over days thus take a few hundred
//! files, and a job is copied at most once per level on its way to the near window, where
//! every spoke has the base span and loading works as before.
//!
//! A split runs in bounded steps ([`SPLIT_STEP`] records at the start of a hub call, the store
//! asking to be called again at once while one is under way), so the hub lock is never held
//! for a whole wide spoke. Each moved record is a new record (version + 1) in the finer spoke
//! plus a `Moved` mark on the old one written once the new one is durable (`PendingMove`):
//! the same protocol as a release, which the power-loss simulator cuts inside. A split cut
//! short (crash) is redone at the next start from what recovery finds: records already moved
//! lose to their copies. Records of resident jobs (kicked or buried far jobs) stay where they
//! are; a wide spoke reached by the horizon before its split ends (the store was down) is
//! loaded as any spoke.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::spoke::spoke_for;
use super::sync::MARKS_PER_CALL;
use super::{Placed, Result, Store};
use crate::segment::format::RECORD_HEADER_LEN;
use crate::segment::{
    Access, JobLocation, JobState, Micros, NewRecord, Prefault, Record, RecordMeta, RecordOffset,
    Segment, SpokeId, StateSlot,
};

/// How much wider each level's spokes are than the level below.
pub const SPAN_FACTOR: u64 = 60;

/// Levels of spans: base × [`SPAN_FACTOR`]^k for k in `0..SPAN_LEVELS`.
pub const SPAN_LEVELS: u32 = 4;

/// Records moved per split step (one per hub call): about half the hub lock hold of 64 (0.35
/// ms measured at 64, 0.68 ms at 128). Shorter holds are preempted less often on busy cores: at
/// 64, 19-36 steps of a 1M-record split held the lock ≥ 1 ms, at 32, 5-7 (bench/README.md,
/// *Split holds*).
pub const SPLIT_STEP: usize = 32;

/// Most moves a split lets wait for their `Moved` marks ([`Store::split_waits_for_moves`]):
/// its steps wait while more are pending or in flight, and the tables that hold them are
/// sized for this many when the store opens and kept (~3 MiB of address space, resident as
/// far as splits used it), so that no step grows them: a table grown by a step rehashed every
/// move in it under the hub lock (0.8-1.8 ms at 7,000-16,000), one sized again after being
/// let go faulted in its pages while rehashing (1.3-1.7 ms), and sizing them in a split's
/// first step took ~530 page faults in that hold (1.4 ms). A split at full speed keeps about
/// this many (a second of steps) before its first batches are durable.
pub const SPLIT_MOVES_MAX: usize = 16 * 1024;

/// Most segments a split step creates: a step stops early after the record that created the
/// last one (about 40 µs each, plus their first reservation and mapping: a split's first step
/// into 20-27 new 1-second spokes held the hub lock 1.3-2.7 ms, measured).
pub const SPLIT_CREATES: u64 = 4;

/// When spoke `id` is split: one span before it starts.
pub fn split_at(id: SpokeId) -> Micros {
    id.start.saturating_sub(id.span)
}

/// The spoke a record triggering at `t` goes to at `now`, with base span `base`: the widest
/// level whose spoke holding `t` is not due to be split yet.
pub fn place(t: Micros, now: Micros, base: Micros) -> SpokeId {
    let base = base.max(1);
    for k in (1..SPAN_LEVELS).rev() {
        let span = base.saturating_mul(SPAN_FACTOR.saturating_pow(k));
        let id = spoke_for(t, span);
        if split_at(id) > now {
            return id;
        }
    }
    spoke_for(t, base)
}

/// A split under way.
#[derive(Clone, Copy, Debug)]
pub(super) struct Split {
    pub spoke: SpokeId,
    /// Where the scan continues.
    pub next: RecordOffset,
    /// The lowest and highest id the last step moved (for [`Store::split_read_ahead`]).
    pub ids: Option<(u64, u64)>,
    /// Where the bytes read ahead end, in the wide spoke and in the id index.
    pub ahead: (u64, u64),
}

/// Bytes of the wide spoke read ahead of a split step: more than [`SPLIT_STEP`] records of a
/// few hundred bytes.
const READ_AHEAD_WIDE: u64 = 32 * 1024;

/// Most bytes of the id index read ahead of a split step.
const READ_AHEAD_INDEX: u64 = 256 * 1024;

/// Bytes past a split target's tail faulted in for writing ahead of the steps: a few pages,
/// so that the call is made once per few pages of appends, not per step.
const PREFAULT_AHEAD: u64 = 32 * 1024;

/// A split target's tail is faulted in again once appends come this close to where the last
/// prefault ended: more than a step's appends of records of a few hundred bytes.
const PREFAULT_SLACK: u64 = 12 * 1024;

/// How far a split target's tail was faulted in for writing, and the durable epoch then: a
/// sync written back since has made its pages read-only again (the next write faults).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Faulted {
    to: u64,
    epoch: u64,
}

/// What the next split step will read and write, to be read or faulted in outside the hub lock
/// just before it (see [`Store::split_read_ahead`]).
#[derive(Debug, Default)]
pub struct SplitReadAhead {
    reads: Vec<(ReadFrom, Range<u64>)>,
    prefaults: Vec<(SpokeId, Prefault)>,
}

/// What to read ahead from: a mapped segment, whose pages are faulted in for reading (read
/// into the page cache and mapped: the step's reads through the mapping take no fault); an
/// open file, or a closed one (a lazy segment not in use), opened by the read-ahead outside
/// the lock (the open reads its inode, which may have left the cache), read into the page cache.
#[derive(Debug)]
pub enum ReadFrom {
    Mapping(Prefault),
    File(Arc<File>),
    Path(PathBuf),
}

impl ReadFrom {
    /// The file, opened if it was closed; `None` for a mapping.
    pub fn open(&self) -> Option<std::io::Result<Arc<File>>> {
        match self {
            ReadFrom::Mapping(_) => None,
            ReadFrom::File(f) => Some(Ok(f.clone())),
            ReadFrom::Path(p) => Some(File::open(p).map(Arc::new)),
        }
    }
}

impl SplitReadAhead {
    /// The files and byte ranges to read.
    pub fn reads(&self) -> impl Iterator<Item = (&ReadFrom, &Range<u64>)> {
        self.reads.iter().map(|(f, r)| (f, r))
    }

    /// The spokes and byte ranges [`Self::run`] faults in for writing.
    pub fn prefaults(&self) -> impl Iterator<Item = (SpokeId, Range<u64>)> + '_ {
        self.prefaults.iter().map(|(id, p)| (*id, p.bytes()))
    }

    /// Faults the pages to be written in, and reads every range: a mapping's pages faulted in
    /// for reading, a file's bytes into `buf` (errors are left to the step, which meets them
    /// again).
    pub fn run(&self, buf: &mut Vec<u8>) {
        self.prefaults.iter().for_each(|(_, p)| p.run());
        for (from, range) in &self.reads {
            if let ReadFrom::Mapping(p) = from {
                p.run();
                continue;
            }
            let Some(Ok(file)) = from.open() else {
                continue;
            };
            let len = (range.end - range.start) as usize;
            buf.resize(len, 0);
            let mut done = 0;
            while done < len {
                match file.read_at(&mut buf[done..], range.start + done as u64) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => done += n,
                }
            }
        }
    }
}

impl<S: Segment> Store<S> {
    /// Whether spoke `id` (far) is wider than the base span and so will be split.
    pub(super) fn is_wide(&self, id: SpokeId) -> bool {
        id.span > self.span
    }

    /// Remembers far spoke `id` for its split if it is wide.
    pub(super) fn note_wide(&mut self, id: SpokeId) {
        if self.is_wide(id) {
            self.splits.insert((split_at(id), id));
            self.note_deadline(split_at(id));
        }
    }

    /// Spoke `id` is loaded or retired: it is not split.
    pub(super) fn forget_wide(&mut self, id: SpokeId) {
        self.splits.remove(&(split_at(id), id));
        if self.splitting.is_some_and(|s| s.spoke == id) {
            self.splitting = None;
        }
    }

    /// Holds split steps back (`true`) or lets them run again: the caller holds them while a
    /// sync batch is being written back, whose page locks a step's writes would wait for under
    /// the hub lock. While held, no step runs and no split deadline is due.
    pub fn hold_splits(&mut self, held: bool) {
        self.splits_held = held;
    }

    /// Makes split work (a step, `Moved` marks) wait after each completed sync until the caller
    /// has read ahead ([`Store::split_read_ahead`]) and run what it returned: a sync writes
    /// back the pages faulted in for writing (read-only again, the next write faults) and makes
    /// new marks due, whose pages nothing faulted in. The server's timer thread reads ahead
    /// after each of its calls, so the work runs a call later, outside of which the faults were
    /// taken. Off by default: a caller that never reads ahead would wait for ever.
    pub fn set_read_ahead_first(&mut self, on: bool) {
        self.read_ahead_first = on;
    }

    /// Whether split work waits for a read-ahead ([`Store::set_read_ahead_first`]). Never while
    /// splits are held: the caller does not read ahead then, and marks are written as usual.
    pub(super) fn awaits_read_ahead(&self) -> bool {
        S::FILE_BACKED
            && self.read_ahead_first
            && !self.splits_held
            && self.ahead_epoch != self.durable_epoch
    }

    /// Whether split steps wait for `Moved` marks to be written and made durable: a step
    /// would take the moves past [`SPLIT_MOVES_MAX`]. Settling marks wakes them
    /// ([`Store::write_due_marks`]).
    pub(super) fn split_waits_for_moves(&self) -> bool {
        S::FILE_BACKED && self.moves.len() + SPLIT_STEP > SPLIT_MOVES_MAX
    }

    /// Where the `Moved` marks the next call writes go.
    #[cfg(test)]
    pub(crate) fn due_marks(&self) -> Vec<JobLocation> {
        self.moves.due(self.durable_epoch, MARKS_PER_CALL).collect()
    }

    /// Moves waiting for their `Moved` marks, and how many fit without growing a table.
    #[cfg(test)]
    pub(crate) fn moves_and_room(&self) -> (usize, usize) {
        (self.moves.len(), self.moves.room())
    }

    /// Whether a split step would run now, were splits not held.
    pub fn split_due(&self) -> bool {
        self.splitting.is_some() || self.splits.first().is_some_and(|&(at, _)| at <= self.now)
    }

    /// What the next step of the split under way will read: the wide spoke's next bytes, and
    /// the id index entries of the ids that follow the last step's (ids grow along a spoke's
    /// file; the step writes their entries). Read outside the hub lock just before the step, it
    /// finds them in the page cache: a 32-byte index write to a page that has left it reads
    /// the whole block first, under the lock (pages idle for a minute leave it here: DAMON;
    /// elsewhere memory pressure). And the pages the step and the next call's `Moved` marks
    /// write, to be faulted in ([`Store::prefault_split`]), also once the split is over while
    /// its marks are being written. `None` when there is nothing to read or fault in.
    pub fn split_read_ahead(&mut self) -> Option<SplitReadAhead> {
        self.ahead_epoch = self.durable_epoch;
        let mut ahead = SplitReadAhead::default();
        if let Some(split) = self.splitting.as_mut()
            && let Some(spoke) = self.spokes.get(&split.spoke)
        {
            let seg = &spoke.seg;
            // Bytes read ahead for an earlier step are not read again.
            let (wide_from, index_from) = split.ahead;
            let from = split.next.max(wide_from);
            let end = seg
                .byte_size()
                .min(split.next.saturating_add(READ_AHEAD_WIDE));
            let wide = if from >= end {
                None
            } else if let Some(p) = seg.prefault(from, end, Access::Read) {
                Some(ReadFrom::Mapping(p))
            } else if let Some(file) = seg.sync_handle() {
                Some(ReadFrom::File(file))
            } else if S::FILE_BACKED {
                Some(ReadFrom::Path(self.dir.segment_path(split.spoke)))
            } else {
                None
            };
            if let Some(wide) = wide {
                ahead.reads.push((wide, from..end));
                split.ahead.0 = end;
            }
            if let Some((lo, hi)) = split.ids
                && let Some((file, range)) = self.index.entry_range(hi + 1..hi + 2 + (hi - lo))
            {
                let from = range.start.max(index_from);
                let end = range.end.min(range.start + READ_AHEAD_INDEX);
                if from < end {
                    ahead.reads.push((ReadFrom::File(file), from..end));
                    split.ahead.1 = end;
                }
            }
        }
        self.prefault_split(&mut ahead.prefaults);
        (!ahead.reads.is_empty() || !ahead.prefaults.is_empty()).then_some(ahead)
    }

    /// The pages the next step and the `Moved` marks due are written into, to be faulted in
    /// for writing outside the lock: the tails of the spokes the split appends to (again once
    /// appends near the end of what was faulted in, or a sync wrote them back), and the
    /// records whose marks the next call writes, a page run at a time. Each is a write fault
    /// the call then does not take under the lock: a split step took ~2 and the marks ~2 per
    /// step, one per page (bench/README.md, *Split holds*).
    fn prefault_split(&mut self, out: &mut Vec<(SpokeId, Prefault)>) {
        let durable = self.durable_epoch;
        for (id, faulted) in &mut self.split_targets {
            let Some(seg) = self.spokes.get_mut(id).map(|s| &mut s.seg) else {
                continue;
            };
            let end = seg.byte_size();
            if faulted.epoch == durable && end.saturating_add(PREFAULT_SLACK) <= faulted.to {
                continue;
            }
            let to = end.saturating_add(PREFAULT_AHEAD);
            // The file is grown now, not by a step: only pages the file holds can be faulted in.
            // On failure (disk full) the step meets the error again.
            if let Err(e) = seg.reserve_ahead(to) {
                tracing::debug!(spoke = ?id, "reserving ahead of a split's appends: {e}");
            }
            let prefault = seg.prefault(end, to, Access::Write);
            let to = prefault.as_ref().map_or(end, |p| p.bytes().end);
            *faulted = Faulted { to, epoch: durable };
            out.extend(prefault.map(|p| (*id, p)));
        }
        let mut runs: Vec<(SpokeId, u64, u64)> = Vec::new();
        let page = crate::segment::page_size() as u64;
        for at in self.moves.due(durable, MARKS_PER_CALL) {
            let reach = at.offset.saturating_add(RECORD_HEADER_LEN);
            match runs.last_mut() {
                // The same page as the run's last or the next one: a run never spans a page
                // it has no mark in (it may be a hole punched in a freed run, which faulting
                // it in for writing would fill with a block again).
                Some((spoke, _, to))
                    if *spoke == at.spoke && at.offset / page <= (*to - 1) / page + 1 =>
                {
                    *to = (*to).max(reach);
                }
                _ => runs.push((at.spoke, at.offset, reach)),
            }
        }
        for (id, from, to) in runs {
            if let Some(s) = self.spokes.get(&id) {
                out.extend(s.seg.prefault(from, to, Access::Write).map(|p| (id, p)));
            }
        }
    }

    /// When the next split step is due: now while one is under way, else at the first wide
    /// spoke's split time; never while splits are held.
    pub(super) fn next_split(&self) -> Option<Micros> {
        if self.splits_held || self.split_waits_for_moves() {
            return None;
        }
        if self.splitting.is_some() {
            return Some(self.now);
        }
        self.splits.first().map(|&(at, _)| at)
    }

    /// One bounded step of splitting: moves up to [`SPLIT_STEP`] records of the wide spoke
    /// being split (starting the next one due). Returns the records moved into a loaded spoke
    /// (the split ran late): the scheduler makes their jobs resident. `is_resident`: whether
    /// the scheduler holds a job (its record then stays).
    pub fn split_step(&mut self, is_resident: impl Fn(u64) -> bool) -> Vec<(SpokeId, RecordMeta)> {
        let mut near = Vec::new();
        if self.splits_held || self.split_waits_for_moves() || self.awaits_read_ahead() {
            return near;
        }
        let split = match self.splitting {
            Some(s) => s,
            None => match self.splits.first() {
                Some(&(at, id)) if at <= self.now => {
                    // The first step comes in the next call: the read-ahead reads the start of
                    // the wide file first (written a span ago, it may have left the page
                    // cache: a first step read 364 KiB from disk under the lock, 3.3 ms).
                    self.splits.remove(&(at, id));
                    self.split_targets.clear();
                    self.splitting = Some(Split {
                        spoke: id,
                        next: 0,
                        ids: None,
                        ahead: (0, 0),
                    });
                    self.note_deadline(self.now);
                    return near;
                }
                _ => return near,
            },
        };
        self.splitting = None;
        if self.spokes.get(&split.spoke).is_none_or(|s| s.loaded) {
            return near;
        }
        let scanned = self
            .segment(split.spoke)
            .and_then(|seg| Ok(seg.scan_records_from(split.next, SPLIT_STEP)?));
        let (records, next) = match scanned {
            Ok(r) => r,
            Err(e) => {
                // Loaded as it is when the horizon reaches it, or split after a restart.
                tracing::warn!(spoke = ?split.spoke, "cannot split spoke: {e}");
                return near;
            }
        };
        let created = self.work.spokes_created;
        let mut next = next;
        let mut ids: Option<(u64, u64)> = None;
        for r in records {
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    self.note_corrupt(&e);
                    continue;
                }
            };
            if self.work.spokes_created >= created + SPLIT_CREATES {
                // Enough new files for one step: the next step goes on from this record.
                next = Some(r.offset);
                break;
            }
            if r.slot.state != JobState::Waiting
                || is_resident(r.id)
                || self.is_pending_move(split.spoke, r.offset)
            {
                continue;
            }
            self.work.records_split += 1;
            ids = Some(ids.map_or((r.id, r.id), |(lo, hi)| (lo.min(r.id), hi.max(r.id))));
            match self.move_far(split.spoke, &r) {
                Ok((p, slot)) if p.resident => {
                    let moved = RecordMeta {
                        offset: p.loc.offset,
                        slot,
                        ..r.meta()
                    };
                    near.push((p.loc.spoke, moved));
                }
                Ok((p, _)) => {
                    self.split_targets.entry(p.loc.spoke).or_default();
                }
                Err(e) => {
                    // Disk full: try again later, from here.
                    tracing::warn!(spoke = ?split.spoke, "split paused: {e}");
                    let retry = self.now.saturating_add(crate::segment::SECOND);
                    self.splits.insert((retry, split.spoke));
                    self.note_deadline(retry);
                    return near;
                }
            }
        }
        match next {
            Some(next) => {
                self.splitting = Some(Split {
                    spoke: split.spoke,
                    next,
                    ids,
                    ahead: split.ahead,
                });
                self.note_deadline(self.now);
            }
            None => {
                self.work.spokes_split += 1;
                self.split_targets.clear();
                self.maybe_retire(split.spoke);
            }
        }
        near
    }

    /// Moves far record `rec` of wide spoke `from` (as the step's scan read it) to the spoke
    /// its trigger time is placed in now: a new record one version up (its slot returned),
    /// indexed and counted there, and the old one marked `Moved` once the new one is durable.
    fn move_far(&mut self, from: SpokeId, rec: &Record) -> Result<(Placed, StateSlot)> {
        let old = JobLocation {
            spoke: from,
            offset: rec.offset,
        };
        let slot = StateSlot {
            version: rec.slot.version.saturating_add(1),
            ..rec.slot
        };
        let new = NewRecord {
            id: rec.id,
            trigger_at: rec.trigger_at,
            created_at: rec.created_at,
            ttr: rec.ttr,
            tube: &rec.tube,
            name: &rec.name,
            body: &rec.body,
            slot,
        };
        let moved = StateSlot {
            state: JobState::Moved,
            ..slot
        };
        // Uncounted first: the mark (at once in mem mode) may retire the wide spoke.
        self.count_far(from, &rec.tube, -1);
        match self.relocate(old, &new, moved) {
            Ok(placed) => Ok((placed, slot)),
            Err(e) => {
                self.count_far(from, &rec.tube, 1);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::spoke::end;
    use super::*;
    use crate::segment::SECOND;

    const T0: Micros = 1_700_000_000 * SECOND;

    #[test]
    fn near_triggers_get_the_base_span() {
        for d in [0, 1, 59, 60] {
            let t = T0 + d * SECOND;
            assert_eq!(place(t, T0, SECOND).span, SECOND, "delay {d} s");
        }
    }

    #[test]
    fn a_placed_spoke_holds_its_trigger_and_is_not_due_to_split() {
        let mut spans = std::collections::BTreeSet::new();
        for d in (0..400 * 86_400u64).step_by(997) {
            let t = T0 + d * SECOND + 123;
            let id = place(t, T0, SECOND);
            assert!(id.start <= t && t < end(id), "delay {d} s: {id:?}");
            assert!(
                id.span == SECOND || split_at(id) > T0,
                "delay {d} s: {id:?}"
            );
            spans.insert(id.span);
        }
        assert_eq!(spans.len(), SPAN_LEVELS as usize, "{spans:?}");
    }

    #[test]
    fn spokes_for_a_year_are_few() {
        let ids: std::collections::BTreeSet<SpokeId> = (0..365 * 86_400u64)
            .step_by(7)
            .map(|d| place(T0 + d * SECOND, T0, SECOND))
            .collect();
        assert!(ids.len() < 400, "{} spokes", ids.len());
    }

    #[test]
    fn placement_at_split_time_is_finer() {
        // When a wide spoke is split, each of its triggers goes to a narrower spoke.
        for d in [200u64, 4_000, 90_000, 300_000, 5_000_000] {
            let t = T0 + d * SECOND;
            let wide = place(t, T0, SECOND);
            let finer = place(t, split_at(wide), SECOND);
            assert!(
                finer.span < wide.span,
                "delay {d} s: {wide:?} then {finer:?}"
            );
            assert!(finer.start >= wide.start && end(finer) <= end(wide));
        }
    }
}
