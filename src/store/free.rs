//! Giving back the space of dead records while their spoke is still in use.
//!
//! A spoke's file is appended to and its records die in place (deleted, or moved elsewhere
//! by a delayed release or a split); the file goes only when its spoke retires. Under churn
//! (put, reserve, delete as fast as the clients go) the spoke being filled would hold every
//! record put in its span, live or long dead: memory and disk would follow the throughput,
//! not the live jobs. So the store keeps, per loaded spoke, the *runs* of adjacent dead
//! records, and once a run holds enough dead bytes:
//!
//! 1. it writes a `Freed` slot into the run's first record, stating the run's length: the
//!    scanner then steps over the whole run without reading it (storage-format.md, *Freed
//!    runs*);
//! 2. once that slot is durable (the sync batch that holds it completed; at once in mem mode
//!    and under `-F`), it punches the run's pages out, from the page after the first record's
//!    header to the last whole page of the run: holes in the file (mapped, lazy: the blocks go
//!    back to the filesystem, the pages leave the page cache and the mapping), pages given
//!    back to the system (mem).
//!
//! Before step 2 a power cut leaves every byte in place, so recovery reads the run whether it
//! sees the old slot or the new one (a slot lies in one sector). A record whose death is not
//! final stays out of runs: the old record of a move waits for its `Moved` mark, and the new
//! record of a move whose mark is not durable yet stays a record even once deleted (its
//! `Deleted` slot is the tombstone that outvotes the old record, which may still look live
//! after a power cut).

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

use super::spoke::Spoke;
use super::{Store, spoke_for};
use crate::segment::format::{FREED_RUNS_SINCE, RECORD_HEADER_LEN, record_at};
use crate::segment::{JobLocation, Micros, RecordOffset, SECOND, Segment, SpokeId};

/// Dead bytes a run gathers before it is freed (a slot write and a page drop now, a punch
/// once durable): each costs a system call and a walk of the range, so not per record.
pub const FREE_MIN: u64 = 1 << 20;

/// The unit of freeing: bytes are given back in whole pages.
pub const PAGE: u64 = 4096;

/// Bytes a loaded spoke's file holds before the records placed in it go to a finer spoke
/// ([`Store::roll`]): what the punches of the file being appended to may wait for, per file.
pub const ROLL_BYTES: u64 = 16 << 20;

/// How much finer each roll-over spoke is than the one it takes over from.
pub const ROLL_FACTOR: u64 = 8;

/// A spoke appended to this recently is *hot*: its punches wait ([`Store::punch_due`]).
pub const HOT_FOR: Micros = SECOND / 10;

/// Roll-over levels below the base span (with the 1 s default: 125 ms, 15.6 ms, 1.95 ms).
pub const ROLL_LEVELS: u32 = 3;

/// A run of adjacent dead records of one spoke.
#[derive(Clone, Debug, Default)]
struct Run {
    /// One past the last byte of its last record (padding included).
    end: u64,
    /// Dead bytes added since it was last freed.
    unfreed: u64,
    /// Ranges already punched or waiting to be, ascending, disjoint (at most a few: freeing
    /// leaves one).
    holes: Vec<(u64, u64)>,
}

/// A punch to make outside the hub lock: on the segment's own open file, so that a file
/// retired or replaced by compaction meanwhile is the one punched (harmless: its records are
/// gone), never another file that took its name.
pub struct PunchJob {
    file: std::sync::Arc<std::fs::File>,
    from: u64,
    to: u64,
}

impl PunchJob {
    /// Punches the hole (errors only cost the disk space: logged at debug level).
    pub fn run(self) {
        if let Err(e) = crate::segment::punch_file(&self.file, self.from, self.to) {
            tracing::debug!("cannot punch a freed run: {e}");
        }
    }
}

/// A punch that waits for the `Freed` slot of its run to be durable.
#[derive(Clone, Copy, Debug)]
struct Punch {
    spoke: SpokeId,
    from: u64,
    to: u64,
    epoch: u64,
}

/// The store's dead-space bookkeeping (see the module documentation).
pub(super) struct Frees {
    /// Per loaded spoke whose file can hold freed runs: its runs by start offset.
    runs: FxHashMap<SpokeId, BTreeMap<RecordOffset, Run>>,
    /// Dead records kept as records for now (a move's mark not durable), and their lengths.
    blocked: FxHashMap<(SpokeId, RecordOffset), u64>,
    /// In epoch order.
    punches: VecDeque<Punch>,
    /// [`FREE_MIN`], or what a test sets.
    min: u64,
    /// Bytes given back per spoke (holes in its file, pages of its mem segment).
    punched: FxHashMap<SpokeId, u64>,
    /// Punches handed to the caller to make outside the hub lock ([`Store::take_punches`]),
    /// when it asked for that ([`Store::set_punch_outside`]).
    outside: Option<Vec<PunchJob>>,
    /// Punches due whose spoke was hot ([`Store::punch_due`]), in no order.
    waiting: Vec<Punch>,
    /// [`ROLL_BYTES`], or what a test sets.
    roll: u64,
}

impl Default for Frees {
    fn default() -> Self {
        Frees {
            runs: FxHashMap::default(),
            blocked: FxHashMap::default(),
            punches: VecDeque::new(),
            min: FREE_MIN,
            punched: FxHashMap::default(),
            outside: None,
            waiting: Vec::new(),
            roll: ROLL_BYTES,
        }
    }
}

/// What freeing a run takes: a `Freed` slot at `start` stating `run` bytes, then punches.
struct FreeStep {
    start: RecordOffset,
    run: u64,
    punches: Vec<(u64, u64)>,
}

impl Frees {
    /// Adds the dead record `offset..offset + len` of `spoke` (a file of format `version`) to
    /// its runs, merging with the runs before and after it; returns the step that frees the
    /// merged run when it is due.
    fn add(
        &mut self,
        spoke: SpokeId,
        version: u32,
        offset: RecordOffset,
        len: u64,
    ) -> Option<FreeStep> {
        let runs = self.runs.entry(spoke).or_default();
        let mut start = offset;
        let mut run = Run {
            end: offset + len,
            unfreed: len,
            holes: Vec::new(),
        };
        if let Some((&s, prev)) = runs.range(..offset).next_back()
            && record_at(version, prev.end) == offset
        {
            let prev = runs.remove(&s).expect("found just above");
            start = s;
            run.unfreed += prev.unfreed;
            run.holes = prev.holes;
        }
        let next_at = record_at(version, run.end);
        if let Some(next) = runs.remove(&next_at) {
            run.end = next.end;
            run.unfreed += next.unfreed;
            run.holes.extend(next.holes);
        }
        let lo = (start + RECORD_HEADER_LEN).div_ceil(PAGE) * PAGE;
        let hi = run.end / PAGE * PAGE;
        let step = (run.unfreed >= self.min)
            .then(|| gaps(&run.holes, lo, hi))
            .filter(|g| !g.is_empty())
            .map(|punches| FreeStep {
                start,
                run: run.end - start,
                punches,
            });
        if step.is_some() {
            run.unfreed = 0;
            run.holes = vec![(lo, hi)];
        }
        runs.insert(start, run);
        step
    }

    /// Forgets spoke `spoke` (retired, or its file replaced by compaction): its runs, blocked
    /// records and punches (their offsets mean nothing in another file).
    fn forget(&mut self, spoke: SpokeId) {
        self.runs.remove(&spoke);
        self.punched.remove(&spoke);
        self.blocked.retain(|(s, _), _| *s != spoke);
        self.punches.retain(|p| p.spoke != spoke);
        self.waiting.retain(|p| p.spoke != spoke);
    }
}

/// The parts of `lo..hi` not covered by `holes` (ascending, disjoint).
fn gaps(holes: &[(u64, u64)], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = lo;
    for &(a, b) in holes {
        if a > at {
            out.push((at, a.min(hi)));
        }
        at = at.max(b);
        if at >= hi {
            break;
        }
    }
    if at < hi {
        out.push((at, hi));
    }
    out.retain(|&(a, b)| a < b);
    out
}

impl<S: Segment> Store<S> {
    /// Sets how many dead bytes a run gathers before it is freed (tests free at once: 0).
    pub fn set_free_min(&mut self, bytes: u64) {
        self.frees.min = bytes;
    }

    /// Sets how many bytes a loaded spoke's file holds before it rolls over ([`ROLL_BYTES`];
    /// tests roll over sooner).
    pub fn set_roll_bytes(&mut self, bytes: u64) {
        self.frees.roll = bytes;
    }

    /// The spoke a record placed in spoke `id` (by [`super::place`]) goes to in a file-backed
    /// mode: `id`, or, while that is a loaded spoke whose file holds [`ROLL_BYTES`], the spoke
    /// [`ROLL_FACTOR`] times finer that holds `t`, at most [`ROLL_LEVELS`] levels down.
    ///
    /// So the file appended to changes at least every [`ROLL_BYTES`], and the punches of the
    /// one before can go ([`Store::punch_due`]). A finer spoke is a spoke as any other (spans
    /// need not match the base span: recovery takes any), resident like the one it takes over
    /// from; placing by fullness is sound because the scheduler orders every resident job by
    /// (trigger time, id), whichever spoke holds its record. Mem mode punches nothing that an
    /// append waits for, so it does not roll over.
    pub(super) fn roll(&self, id: SpokeId, t: Micros) -> SpokeId {
        let mut id = id;
        if !S::FILE_BACKED || id.span > self.span {
            return id;
        }
        for _ in 0..ROLL_LEVELS {
            let full = self
                .spokes
                .get(&id)
                .is_some_and(|s| s.loaded && self.holds_roll(s));
            let finer = id.span / ROLL_FACTOR;
            if !full || finer == 0 {
                break;
            }
            id = spoke_for(t, finer);
        }
        id
    }

    /// Whether spoke `s`'s file holds the roll-over size: nothing more is placed in it while
    /// it is loaded ([`Store::roll`]).
    fn holds_roll(&self, s: &Spoke<S>) -> bool {
        s.seg.byte_size() >= self.frees.roll
    }

    /// The record at `at` is dead for good (its `Deleted` or `Moved` slot written): its bytes
    /// join the runs of its spoke if that spoke is loaded, and a run with enough dead bytes is
    /// freed.
    pub(super) fn record_dead(&mut self, at: JobLocation) {
        let Some(s) = self.spokes.get_mut(&at.spoke) else {
            return;
        };
        if !s.loaded || s.seg.version() < FREED_RUNS_SINCE {
            return;
        }
        let Ok(len) = s.seg.record_len(at.offset) else {
            return;
        };
        if self.moves.replaces((at.spoke, at.offset)) {
            self.frees.blocked.insert((at.spoke, at.offset), len);
            return;
        }
        self.add_dead(at.spoke, at.offset, len);
    }

    /// A move's mark is durable (or will never be written): the record at `at` that replaced
    /// the moved one may join a run if it died meanwhile.
    pub(super) fn unblock_dead(&mut self, at: (SpokeId, RecordOffset)) {
        if let Some(len) = self.frees.blocked.remove(&at) {
            self.add_dead(at.0, at.1, len);
        }
    }

    /// Adds the dead records a spoke load found (not those that wait for a mark, nor runs
    /// freed before: those stay as they are).
    pub(super) fn note_dead_found(&mut self, spoke: SpokeId, dead: &[(RecordOffset, u64)]) {
        for &(offset, len) in dead {
            if self.moves.replaces((spoke, offset)) {
                self.frees.blocked.insert((spoke, offset), len);
            } else {
                self.add_dead(spoke, offset, len);
            }
        }
    }

    fn add_dead(&mut self, spoke: SpokeId, offset: RecordOffset, len: u64) {
        let Some(s) = self.spokes.get(&spoke) else {
            return;
        };
        let Some(step) = self.frees.add(spoke, s.seg.version(), offset, len) else {
            return;
        };
        if let Err(e) = self.note_change(Some(spoke)) {
            tracing::warn!(?spoke, "change journal: {e}");
            return;
        }
        let Some(s) = self.spokes.get_mut(&spoke) else {
            return;
        };
        if let Err(e) = s.seg.free_run(step.start, step.run) {
            // Nothing is punched without its slot: the bytes just stay.
            tracing::warn!(?spoke, offset = step.start, "cannot free a run: {e}");
            return;
        }
        self.unflushed.insert(spoke);
        let epoch = self.epoch;
        for &(from, to) in &step.punches {
            // Out of resident memory at once; out of the file once the slot is durable.
            s.seg.drop_pages(from, to);
        }
        for (from, to) in step.punches {
            self.frees.punches.push_back(Punch {
                spoke,
                from,
                to,
                epoch,
            });
        }
        if !S::FILE_BACKED {
            // Nothing is durable before a flush, which writes the slot with the holes.
            self.punch_all();
        }
    }

    /// Punches the runs whose `Freed` slot is in batch `durable` or earlier, adjacent ranges
    /// of a spoke as one: a punch costs the filesystem a transaction and the page cache a
    /// walk of the range (in mapped mode it was a third of the server's time when made per
    /// run), and a run growing at its end under churn leaves one range per step.
    ///
    /// The punches of a *hot* spoke, appended to in the last [`HOT_FOR`], wait for a call
    /// when it is not (or a flush, [`Store::punch_all`]). A punch holds the file's locks, which an
    /// append to that file needs, for as long as the filesystem takes to free the blocks: on
    /// ext4 mounted `discard` that is a synchronous discard, 0.2-0.9 ms per MiB (NOTES.md,
    /// *Churn*), and the append waits under the hub lock. The spoke appended to rolls over to
    /// a finer one once it holds [`ROLL_BYTES`] ([`Store::roll`]), so what waits stays bounded.
    pub(super) fn punch_due(&mut self, durable: u64) {
        self.punch(durable, true);
    }

    /// Punches every run whose `Freed` slot is written, hot spokes' too: everything is durable
    /// (a flush, mem mode).
    pub(super) fn punch_all(&mut self) {
        self.punch(u64::MAX, false);
    }

    /// [`Store::punch_due`]; `hot_wait`: a hot spoke's punches wait.
    fn punch(&mut self, durable: u64, hot_wait: bool) {
        let mut due = std::mem::take(&mut self.frees.waiting);
        while let Some(p) = self.frees.punches.front().copied() {
            if p.epoch > durable {
                break;
            }
            self.frees.punches.pop_front();
            due.push(p);
        }
        let hot = |s: &Spoke<S>| {
            S::FILE_BACKED
                && self.now < s.last_append.saturating_add(HOT_FOR)
                && !self.holds_roll(s)
        };
        let (wait, mut due): (Vec<Punch>, Vec<Punch>) = due
            .into_iter()
            .partition(|p| hot_wait && self.spokes.get(&p.spoke).is_some_and(hot));
        self.frees.waiting = wait;
        due.sort_unstable_by_key(|p| (p.spoke, p.from));
        let mut merged: Vec<Punch> = Vec::with_capacity(due.len());
        for p in due {
            match merged.last_mut() {
                Some(m) if m.spoke == p.spoke && p.from <= m.to => m.to = m.to.max(p.to),
                _ => merged.push(p),
            }
        }
        for p in merged {
            let Some(s) = self.spokes.get_mut(&p.spoke) else {
                continue;
            };
            if let (Some(out), Some(file)) = (&mut self.frees.outside, s.seg.sync_handle()) {
                let to = p.to.min(s.seg.byte_size());
                if to > p.from {
                    out.push(PunchJob {
                        file,
                        from: p.from,
                        to,
                    });
                    *self.frees.punched.entry(p.spoke).or_insert(0) += to - p.from;
                }
                continue;
            }
            match s.seg.punch(p.from, p.to) {
                Ok(n) => *self.frees.punched.entry(p.spoke).or_insert(0) += n,
                // The bytes stay allocated; nothing else depends on the hole.
                Err(e) => tracing::debug!(spoke = ?p.spoke, "cannot punch a freed run: {e}"),
            }
        }
    }

    /// From now on, punches of file-backed segments are handed out by [`Store::take_punches`]
    /// for the caller to make outside its lock (a punch walks the page cache of its range and
    /// takes the file's locks against page faults: in the hub call it held up every
    /// connection). The caller must take them after every call that can make a batch durable.
    pub fn set_punch_outside(&mut self) {
        if S::FILE_BACKED {
            self.frees.outside.get_or_insert_with(Vec::new);
        }
    }

    /// The punches due, to make outside the lock ([`Store::set_punch_outside`]).
    pub fn take_punches(&mut self) -> Vec<PunchJob> {
        self.frees
            .outside
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Bytes given back by punching, in the segments of live spokes.
    pub(super) fn bytes_given_back(&self) -> u64 {
        self.frees.punched.values().sum()
    }

    /// Forgets the runs of spoke `id`: it is retired, or compaction replaced its file.
    pub(super) fn forget_runs(&mut self, id: SpokeId) {
        self.frees.forget(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: u32 = FREED_RUNS_SINCE;

    fn spoke() -> SpokeId {
        SpokeId { start: 0, span: 1 }
    }

    #[test]
    fn gaps_of_holes() {
        assert_eq!(gaps(&[], 0, 10), vec![(0, 10)]);
        assert_eq!(gaps(&[(0, 10)], 0, 10), vec![]);
        assert_eq!(
            gaps(&[(2, 4), (6, 8)], 0, 10),
            vec![(0, 2), (4, 6), (8, 10)]
        );
        assert_eq!(gaps(&[(0, 20)], 4, 10), vec![]);
    }

    /// Adjacent dead records merge into one run, in any order, and a run is freed once it
    /// gathers the minimum, over whole pages past its first header only.
    #[test]
    fn runs_merge_and_free_whole_pages() {
        let len = PAGE;
        let mut f = Frees {
            min: 3 * len,
            ..Frees::default()
        };
        // Records at 64, 64+4096, ...: each placed right after the one before.
        let at = |i: u64| 64 + i * len;
        assert_eq!(record_at(V, at(1)), at(1));
        assert!(f.add(spoke(), V, at(1), len).is_none());
        assert!(f.add(spoke(), V, at(0), len).is_none());
        let step = f.add(spoke(), V, at(2), len).expect("12 KiB dead: due");
        assert_eq!(step.start, at(0));
        assert_eq!(step.run, 3 * len);
        assert_eq!(step.punches, vec![(PAGE, (at(3)) / PAGE * PAGE)]);
        // The next record extends the run; only the new pages are punched.
        assert!(f.add(spoke(), V, at(3), len).is_none());
        assert!(f.add(spoke(), V, at(4), len).is_none());
        let step = f.add(spoke(), V, at(5), len).expect("due again");
        assert_eq!(step.start, at(0));
        assert_eq!(
            step.punches,
            vec![(at(3) / PAGE * PAGE, at(6) / PAGE * PAGE)]
        );
    }

    /// A record not adjacent to a run starts its own.
    #[test]
    fn gaps_between_runs_keep_them_apart() {
        let mut f = Frees {
            min: u64::MAX,
            ..Frees::default()
        };
        f.add(spoke(), V, 64, 1024);
        f.add(spoke(), V, 64 + 2048, 1024);
        assert_eq!(f.runs[&spoke()].len(), 2);
        f.add(spoke(), V, 64 + 1024, 1024);
        assert_eq!(f.runs[&spoke()].len(), 1);
        assert_eq!(f.runs[&spoke()][&64].end, 64 + 3072);
    }
}
