//! Keeping the start-up summary current while running, so that a restart after `kill -9` or
//! a crash of yaad reads headers and a few segments, not every far segment.
//!
//! Once a second the server asks for a checkpoint: [`Store::checkpoint`] takes a [`Summary`]
//! of the far spokes under the hub lock (O(spokes), no I/O) and starts a new *generation*;
//! [`PendingCheckpoint::write`] then writes it outside the lock (temporary file and rename,
//! no fsync) and removes the change journals of older generations. Before its first change
//! to a segment in a generation, the store appends that spoke to the generation's journal
//! ([`Store::note_change`]). So the summary on disk plus the journals of its generation and
//! later name every segment that may differ from the summary; recovery scans those and
//! trusts the summary for the rest (see `recovery`). A change that moves a job (a release
//! with delay) notes both spokes before writing either.
//!
//! Why no fsync: journal entries and checkpoints are in the page cache once written, which
//! survives the death of the process (`kill -9`, a panic) but not of the machine. A
//! checkpoint records the boot it was written in, and recovery trusts it only in the same
//! boot; after a reboot (power loss, OS crash) it scans every segment, as without a summary.
//! A *clean* summary (written by [`Store::flush`] once everything is synced, durably) is
//! trusted after a reboot too, so it is removed durably before the next change.
//!
//! Ids: every id issued is at most the id index's high-water, its reservation (see
//! `Store::reserve_id`), so recovery continues above the higher of the summary's next id and the
//! high-water it finds. A flush sets the reservation to exactly the last id issued before its
//! clean summary: after a clean shutdown ids continue exactly from the summary's next id.
//!
//! Names: a far spoke holding named jobs is listed only with its names file (its live named
//! jobs as (name key, id), [`crate::segment::spoke_names`]), which the writer makes outside
//! the lock from a scan of the segment file, once the spoke's entry has outlived a generation
//! unchanged (a spoke changed every second is never scanned: it stays unlisted, and a restart
//! scans it). The scan may see changes made after the summary was taken; they are in its
//! generation's journal, so recovery does not use the entry. A clean summary scans what is
//! left under the lock. Names files are not synced: one lost or torn fails its checks at
//! start-up and the spoke is scanned.
//!
//! Failures lose nothing, only start-up speed: a journal entry that cannot be written
//! removes the summary (the next start scans everything) until the next checkpoint; a
//! checkpoint that cannot be written leaves the older summary and its journals in place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustc_hash::FxHashSet;

use super::Store;
use crate::segment::spoke_names::{self, SpokeNames};
use crate::segment::{
    ChangeJournal, DataDir, Segment, SpokeId, SpokeSummary, StorageError, Summary, boot_id,
    journal, segment_file_name,
};

/// The store's side of the checkpoints (see the module documentation).
pub(super) struct Checkpoints {
    /// Generation of the newest summary taken; changes are noted in its journal.
    pub generation: u64,
    journal: Option<ChangeJournal>,
    /// Spokes already in this generation's journal.
    noted: FxHashSet<SpokeId>,
    /// A change was made since the newest summary was taken.
    pub changed: bool,
    /// A clean summary may be on disk: removed durably before the next change.
    pub clean_on_disk: bool,
    /// This generation's journal could not be written: its summary was withdrawn.
    broken: bool,
    boot_id: Option<Vec<u8>>,
    writer: Arc<Mutex<Writer>>,
    /// Each far spoke's summary entry as of the newest summary. Only spokes noted since are
    /// recomputed (an entry can only go stale through a change, and every change is noted);
    /// an entry kept for a spoke loaded since is harmless: recovery scans every spoke that is
    /// near at its `now`, and an unchanged segment still reads as its entry says.
    entries: BTreeMap<SpokeId, Arc<SpokeSummary>>,
    /// Recompute every entry at the next summary (after open).
    rebuild: bool,
    /// Spokes changed since their entry was last computed: left out of summaries (always
    /// safe: recovery scans an unlisted segment) until a checkpoint recomputes the entry, at
    /// most [`ENTRIES_PER_CHECKPOINT`] per checkpoint.
    stale: FxHashSet<SpokeId>,
}

/// How many summary entries one checkpoint recomputes under the hub lock (about 1 µs each):
/// when far puts touch every far spoke within a second, the rest wait for later checkpoints
/// instead of holding the lock for milliseconds.
pub const ENTRIES_PER_CHECKPOINT: usize = 256;

/// Serialises summary writes and removals; remembers the newest generation on disk.
#[derive(Default)]
struct Writer {
    /// The newest generation written or withdrawn: an older pending one is stale.
    done: u64,
    /// The names files that may be on disk (found at open, or written since).
    names_files: BTreeSet<SpokeId>,
}

impl Checkpoints {
    pub fn new(generation: u64, clean_on_disk: bool, dir: &std::path::Path) -> Self {
        Checkpoints {
            generation,
            journal: None,
            noted: FxHashSet::default(),
            changed: !clean_on_disk,
            clean_on_disk,
            broken: false,
            boot_id: boot_id(dir),
            writer: Arc::new(Mutex::new(Writer {
                done: generation,
                names_files: names_files_in(dir),
            })),
            entries: BTreeMap::new(),
            rebuild: true,
            stale: FxHashSet::default(),
        }
    }

    /// Starts the next generation: nothing noted in it yet.
    fn advance(&mut self) {
        self.generation += 1;
        self.journal = None;
        self.noted.clear();
        self.broken = false;
        self.changed = false;
    }

    /// Keeps the entry of a spoke recovery took from the trusted summary (unchanged since), so
    /// that its names need no new scan.
    pub(super) fn adopt(&mut self, entry: Arc<SpokeSummary>) {
        self.entries.insert(entry.spoke, entry);
    }

    /// Removes the summary (durably) and makes every pending one of this generation or
    /// older stale, so none can be written after this.
    pub(super) fn withdraw(&mut self, dir: &DataDir) -> Result<(), StorageError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        Summary::remove(&dir.summary_path())?;
        w.done = w.done.max(self.generation);
        self.clean_on_disk = false;
        Ok(())
    }
}

/// A summary taken under the hub lock, to be written (or removed) outside it.
#[must_use]
pub struct PendingCheckpoint {
    generation: u64,
    /// `None`: the summary must go (a full scan is needed at the next start).
    summary: Option<Summary>,
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
}

impl PendingCheckpoint {
    /// Writes the summary (temporary file and rename, no fsync), then removes the journals
    /// it makes obsolete. Skipped if a newer summary was written or withdrawn meanwhile.
    pub fn write(self) -> Result<(), StorageError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation <= w.done {
            return Ok(());
        }
        let path = self.dir.join(crate::segment::SUMMARY_FILE);
        match &self.summary {
            Some(s) => {
                settle_names(s, &self.dir, self.generation, &mut w);
                Summary::write_unsynced(&path, &s.encode())?;
            }
            None => Summary::remove_unsynced(&path)?,
        }
        w.done = self.generation;
        journal::remove_before(&self.dir, self.generation);
        remove_unlisted_names(self.summary.as_ref(), &self.dir, &mut w);
        Ok(())
    }
}

/// The spokes of the names files in `dir`.
fn names_files_in(dir: &Path) -> BTreeSet<SpokeId> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    rd.filter_map(|e| spoke_names::parse_names_file_name(&e.ok()?.file_name().to_string_lossy()))
        .collect()
}

/// Finds the names of the entries of `summary` not known yet and born before `generation`
/// (`u64::MAX`: all): scans each one's segment file and writes its names file (not synced).
/// A failure leaves the entry out of every summary until it is recomputed.
fn settle_names(summary: &Summary, dir: &Path, generation: u64, w: &mut Writer) {
    for e in &summary.spokes {
        if e.names.get().is_some() || e.born >= generation {
            continue;
        }
        let names = match names_of_spoke(e, dir) {
            Ok(n) => {
                if n.count > 0 {
                    w.names_files.insert(e.spoke);
                }
                Some(n)
            }
            Err(why) => {
                tracing::debug!(spoke = e.spoke.start, "no names file: {why}");
                None
            }
        };
        // Set by this writer only (under its lock): a second set cannot happen.
        let _ = e.names.set(names);
    }
}

/// Scans spoke `e`'s segment file for its named jobs and writes their names file.
fn names_of_spoke(e: &SpokeSummary, dir: &Path) -> Result<SpokeNames, String> {
    let path = dir.join(segment_file_name(e.spoke));
    let of = e.names_of();
    let pairs = spoke_names::scan_named(&path, &of)?;
    if pairs.is_empty() {
        return Ok(SpokeNames::NONE);
    }
    let (file, names) = spoke_names::encode(&of, &pairs);
    let out = dir.join(spoke_names::names_file_name(e.spoke));
    spoke_names::write_unsynced(&out, &file).map_err(|err| err.to_string())?;
    Ok(names)
}

/// Removes the names files `summary` does not list (all of them without a summary).
fn remove_unlisted_names(summary: Option<&Summary>, dir: &Path, w: &mut Writer) {
    let listed: BTreeSet<SpokeId> = summary
        .map(|s| {
            s.spokes
                .iter()
                .filter(|e| e.known_names().is_some_and(|n| n.count > 0))
                .map(|e| e.spoke)
                .collect()
        })
        .unwrap_or_default();
    w.names_files.retain(|spoke| {
        if listed.contains(spoke) {
            return true;
        }
        let _ = std::fs::remove_file(dir.join(spoke_names::names_file_name(*spoke)));
        false
    });
}

impl<S: Segment> Store<S> {
    /// Called before every change on disk; `spoke`: the segment about to change (a new
    /// segment's spoke before it is created, a removed one's before removal).
    pub(super) fn note_change(&mut self, spoke: Option<SpokeId>) -> Result<(), StorageError> {
        if !S::FILE_BACKED {
            return Ok(());
        }
        let c = &mut self.ckpt;
        if c.clean_on_disk {
            c.withdraw(&self.dir)?;
        }
        c.changed = true;
        let Some(spoke) = spoke else {
            return Ok(());
        };
        // Noted even when the journal is broken: the summary entries follow `noted`.
        if !c.noted.insert(spoke) || c.broken {
            return Ok(());
        }
        let noted = match &mut c.journal {
            Some(j) => j.record(spoke),
            None => ChangeJournal::open(self.dir.path(), c.generation).and_then(|mut j| {
                j.record(spoke)?;
                c.journal = Some(j);
                Ok(())
            }),
        };
        if let Err(e) = noted {
            // Without the entry the summary would vouch for a segment that changed.
            tracing::warn!("change journal not written ({e}): the next start scans every segment");
            c.broken = true;
            c.journal = None;
            c.withdraw(&self.dir)?;
        }
        Ok(())
    }

    /// Takes a checkpoint if anything changed since the last one: a summary of the far spokes
    /// to write outside the hub lock with [`PendingCheckpoint::write`]. Persisted modes only.
    pub fn checkpoint(&mut self) -> Option<PendingCheckpoint> {
        // Entries whose names the writer has not looked for yet: the next write does (if a
        // summary can be written at all, see `take_summary`).
        let names_due = !self.needs_full_scan
            && !self.index_incomplete
            && self.ckpt.entries.values().any(|e| e.names.get().is_none());
        let due = self.ckpt.changed || !self.ckpt.stale.is_empty() || names_due;
        if !S::FILE_BACKED || !due {
            return None;
        }
        // The summary vouches for far spokes whose jobs are found through their entries.
        self.write_index_pending();
        self.refresh_entries();
        self.ckpt.advance();
        // The spokes of a move whose Moved mark is not written yet must be read by recovery:
        // the one holding the new record may win against a scanned record, and the one holding
        // the old record looks live (a summary would vouch for it, and a restart would bring
        // back a job deleted since). So they are in the new journal.
        for spoke in self.pending_move_spokes() {
            if let Err(e) = self.note_change(Some(spoke)) {
                tracing::warn!("checkpoint: {e}");
            }
        }
        let summary = self.take_summary(false);
        Some(PendingCheckpoint {
            generation: self.ckpt.generation,
            summary,
            dir: self.dir.path().to_path_buf(),
            writer: self.ckpt.writer.clone(),
        })
    }

    /// Writes the clean summary (a flush, after every change was synced): durably, trusted
    /// after a reboot too, removed durably before the next change. If the hub cannot vouch
    /// for the files (see [`Store::take_summary`]), removes any summary instead.
    pub(super) fn write_clean_summary(&mut self) -> Result<(), StorageError> {
        self.ckpt.rebuild = true;
        self.refresh_entries();
        self.ckpt.advance();
        let Some(summary) = self.take_summary(true) else {
            return self.ckpt.withdraw(&self.dir);
        };
        let mut w = self.ckpt.writer.lock().unwrap_or_else(|e| e.into_inner());
        settle_names(&summary, self.dir.path(), u64::MAX, &mut w);
        // Set first: should the write fail halfway, a later change still removes the file.
        self.ckpt.clean_on_disk = true;
        summary.write(&self.dir.summary_path())?;
        w.done = self.ckpt.generation;
        journal::remove_before(self.dir.path(), self.ckpt.generation);
        remove_unlisted_names(Some(&summary), self.dir.path(), &mut w);
        Ok(())
    }

    /// Brings the summary entries up to date: those of the spokes noted since the last
    /// summary, or all of them after open (and at a flush).
    fn refresh_entries(&mut self) {
        // The generation of the summary taken next (after `advance`).
        let born = self.ckpt.generation + 1;
        let entry = |id: SpokeId, s: &super::spoke::Spoke<S>| {
            (!s.loaded && s.resident == 0).then(|| {
                let mut delayed: Vec<(Vec<u8>, u64)> = s
                    .far_counts
                    .iter()
                    .map(|(t, &n)| (t.as_bytes().to_vec(), n))
                    .collect();
                delayed.sort();
                Arc::new(SpokeSummary {
                    spoke: id,
                    byte_size: s.seg.byte_size(),
                    live: s.live,
                    records: s.records,
                    delayed,
                    // A spoke that never held a named record needs no scan for names.
                    names: if s.named {
                        OnceLock::new()
                    } else {
                        OnceLock::from(Some(SpokeNames::NONE))
                    },
                    born,
                })
            })
        };
        let c = &mut self.ckpt;
        if std::mem::take(&mut c.rebuild) {
            // An entry of a spoke unchanged since it was computed is kept, with its names.
            let old = std::mem::take(&mut c.entries);
            let changed = |id: &SpokeId| c.stale.contains(id) || c.noted.contains(id);
            c.entries = self
                .spokes
                .iter()
                .filter_map(|(&id, s)| {
                    let e = entry(id, s)?;
                    match old.get(&id) {
                        Some(o) if !changed(&id) && o.same_figures(&e) => Some((id, o.clone())),
                        _ => Some((id, e)),
                    }
                })
                .collect();
            c.stale.clear();
            return;
        }
        c.stale.extend(c.noted.iter().copied());
        let mut done = Vec::with_capacity(c.stale.len().min(ENTRIES_PER_CHECKPOINT));
        for &id in &c.stale {
            if done.len() == ENTRIES_PER_CHECKPOINT {
                break;
            }
            match self.spokes.get(&id).and_then(|s| entry(id, s)) {
                Some(e) => c.entries.insert(id, e),
                None => c.entries.remove(&id),
            };
            done.push(id);
        }
        for id in done {
            c.stale.remove(&id);
        }
    }

    /// The summary of the far spokes holding no resident job, for the current generation
    /// (from the entries: call [`Store::refresh_entries`] first); `None` when a tolerated write
    /// failure left records only a full scan settles (two live records of one job, a far job
    /// without its index entry).
    pub(super) fn take_summary(&self, clean: bool) -> Option<Summary> {
        if self.needs_full_scan || self.index_incomplete {
            return None;
        }
        Some(Summary {
            clean,
            generation: self.ckpt.generation,
            boot_id: self.ckpt.boot_id.clone().unwrap_or_default(),
            next_id: self.next_id,
            id_high_water: self.index.high_water().ok()?,
            spokes: self
                .ckpt
                .entries
                .iter()
                .filter(|(id, _)| !self.ckpt.stale.contains(id))
                .map(|(_, e)| e.clone())
                .collect(),
        })
    }
}
