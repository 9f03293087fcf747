//! Rebuilding the store (and, through [`Recovery`], the scheduler's resident jobs) from the
//! segments at start.
//!
//! Segments are scanned for record headers (not bodies); see [`Store::recover`]. Per job id the
//! record with the highest version that is not `Moved` wins; a `Deleted` winner drops the job. Winners in loaded
//! spokes become resident (Waiting → delayed or ready by trigger time, Ready → ready, Buried →
//! buried, first-buried order by id); Waiting winners in far spokes are only counted. Ready or
//! Buried winners in far spokes (kicked far jobs) are resident too. Losing records that are still
//! marked live (a crash between a move's append and its `Moved` mark) are marked `Moved` now.
//! Corrupt records are skipped and counted; spokes left without live records are retired.
//! Ids continue above the highest id seen in any record and above the id index's high-water
//! mark, the durable id reservation (see `Store::reserve_id`), so they are not reused even when
//! every segment has been retired, nor after a power loss. Without a trusted summary (a full
//! scan) they continue above the high-water + [`ID_BLOCK`] - 1: files written by a build that
//! wrote an index entry once per block of ids, not a durable reservation, need that. An index
//! whose header is damaged still shows its high-water (its length, see [`damaged_high_water`]);
//! it is rebuilt keeping that, and ids then continue above the highest id found + [`ID_BLOCK`]
//! too. A summary's next id is a floor even when it is not trusted.
//! Memory mode keeps no index file while running, only its high-water as a reservation of
//! ids ([`IdReservation`], `Store::open_id_reservation`).
//!
//! The data dir usually holds a [`Summary`] (see `checkpoint`: clean after a flush, else a
//! checkpoint kept current while running) and the change journals that follow it: the far
//! spokes it lists that no journal names are not read at all, only their segment headers are
//! opened. Their live and per-tube delayed counts come from the summary. That is sound
//! because such a segment is byte for byte what it was when the summary was taken (every
//! change is noted in the journal first), and the store's state then was whole (summaries are
//! taken between hub calls): those spokes hold no record that could win against a scanned one
//! (every moved record is marked `Moved`, every far job has its id index entry) and no job
//! resident in RAM. A far spoke is read when it comes near or a command needs it, as during
//! any run. Without a summary it may rely on (first start, a checkpoint from another boot,
//! a damaged journal) every segment is scanned.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::spoke::Spoke;
use super::{ID_BLOCK, Result, Store, StoreError};
use crate::segment::format::{FILE_HEADER_LEN, name_key};
use crate::segment::spoke_names;
use crate::segment::{
    ChangeJournal, DataDir, DurableIds, IdIndex, IdReader, IdReservation, JobLocation, JobState,
    RecordMeta, RecordOffset, Segment, SpokeId, SpokeSummary, StateSlot, StorageError, Summary,
    boot_id, damaged_high_water,
};

/// Far named jobs as ([`name_key`] of their tube and name, id).
pub type FarNamed = Vec<(u64, u64)>;

/// What recovery leaves for the scheduler: the records of the jobs that must be resident
/// (winners in loaded spokes, and kicked or buried far jobs), per spoke in offset order.
#[derive(Default)]
pub struct Recovery {
    pub resident: Vec<(SpokeId, Vec<RecordOffset>)>,
    /// The far named jobs, for the name index.
    pub far_named: FarNamed,
    /// Every spoke recovery opened, for [`Store::finish_open`].
    order: Vec<SpokeId>,
}

impl Recovery {
    /// Groups `resident` (index into `order`, offset; sorted) by spoke.
    fn of(order: Vec<SpokeId>, resident: Vec<(u32, RecordOffset)>) -> Self {
        let mut out: Vec<(SpokeId, Vec<RecordOffset>)> = Vec::new();
        for (idx, offset) in resident {
            let sid = order[idx as usize];
            match out.last_mut() {
                Some((last, offsets)) if *last == sid => offsets.push(offset),
                _ => out.push((sid, vec![offset])),
            }
        }
        Recovery {
            resident: out,
            far_named: Vec::new(),
            order,
        }
    }
}

/// How [`open_index`] found the id index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IndexFound {
    /// As it was left.
    Kept,
    /// Created: there was none (or memory mode, which keeps none while running).
    Created,
    /// Damaged: started afresh, keeping the high-water mark its length showed.
    Rebuilt,
}

/// Opens the data dir's id index; a damaged one is derived data, so it is started afresh,
/// but never below the high-water it still shows: ids are not handed out twice.
/// An index not `Kept` holds no entry: nothing may rely on it.
pub(super) fn open_index(dir: &DataDir) -> Result<(IdIndex, IndexFound)> {
    let path = dir.id_index_path();
    let existed = path.exists();
    match IdIndex::open(&path) {
        Ok(i) if existed => Ok((i, IndexFound::Kept)),
        Ok(i) => Ok((i, IndexFound::Created)),
        Err(StorageError::Corrupted { reason, .. }) => {
            let high = damaged_high_water(&path)?;
            tracing::warn!(
                high_water = high,
                "{}: {reason}; started afresh, ids continue above the high-water it shows",
                path.display()
            );
            std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            let mut index = IdIndex::open(&path)?;
            index.raise_high_water(high)?;
            // Synced at once: the high-water is all that is left of the ids it bounded.
            index.flush()?;
            Ok((index, IndexFound::Rebuilt))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the segment file at `path` is shorter than its header or its header is all zeros:
/// a create whose header never reached the disk (a power cut before its first sync), so no
/// record in it was ever acknowledged as durable.
fn never_written(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = vec![0u8; FILE_HEADER_LEN as usize];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) => head.iter().all(|&b| b == 0),
        Err(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
    }
}

/// What open found of the summary and the change journals.
pub(super) struct Found {
    /// A summary recovery may rely on, with the spokes changed since it was taken.
    pub trusted: Option<Trusted>,
    /// The newest generation seen (summary or journal): this run continues from it.
    pub generation: u64,
    /// The trusted summary is a clean one (removed durably before the next change).
    pub clean_on_disk: bool,
    /// The id index was damaged and rebuilt (see [`open_index`]).
    index_rebuilt: bool,
    /// The next id a readable summary states, trusted or not (0: none): ids below it may
    /// have been handed out.
    summary_next_id: u64,
}

pub(super) struct Trusted {
    summary: Summary,
    /// Spokes named in the change journals of the summary's generation and later.
    changed: HashSet<SpokeId>,
}

/// Reads the start-up summary and the change journals that follow it, and decides whether
/// recovery may rely on them (see `checkpoint`). A summary that may not be relied on is
/// removed (durably) before anything is written.
pub(super) fn read_summary(
    dir: &DataDir,
    index: &IdIndex,
    index_found: IndexFound,
    persist: bool,
) -> Result<Found> {
    let path = dir.summary_path();
    let journals = dir.journals()?;
    let newest_journal = journals.last().map_or(0, |&(g, _)| g);
    let read = Summary::read(&path)?;
    let exists = read.is_some();
    let summary_next_id = match &read {
        Some(Ok(s)) => s.next_id,
        _ => 0,
    };
    let index_rebuilt = index_found == IndexFound::Rebuilt;
    let verdict = match read {
        None => Err("no summary".to_string()),
        Some(Err(why)) => Err(why),
        // Mem mode writes segment files at its flushes, under any summary.
        Some(Ok(_)) if !persist => Err("mem mode".into()),
        Some(Ok(_)) if index_found != IndexFound::Kept => Err("the id index was rebuilt".into()),
        Some(Ok(s)) => trust(s, dir, index, &journals),
    };
    match verdict {
        Ok(t) => Ok(Found {
            generation: t.summary.generation.max(newest_journal),
            clean_on_disk: t.summary.clean,
            trusted: Some(t),
            index_rebuilt,
            summary_next_id,
        }),
        Err(why) => {
            if exists {
                if persist {
                    tracing::warn!(
                        "{}: ignored ({why}), scanning every segment",
                        path.display()
                    );
                }
                Summary::remove(&path)?;
            }
            Ok(Found {
                trusted: None,
                generation: newest_journal,
                clean_on_disk: false,
                index_rebuilt,
                summary_next_id,
            })
        }
    }
}

fn trust(
    s: Summary,
    dir: &DataDir,
    index: &IdIndex,
    journals: &[(u64, PathBuf)],
) -> std::result::Result<Trusted, String> {
    let boot = boot_id(dir.path());
    if !s.clean && (s.boot_id.is_empty() || boot.as_deref() != Some(&s.boot_id[..])) {
        return Err("a checkpoint from before the machine restarted".into());
    }
    let high = index
        .high_water()
        .map_err(|e| format!("id index unreadable: {e}"))?;
    // A clean summary is removed before any change, so the index cannot have moved; a
    // checkpoint's reservation covers every id issued before it, and it only grows since.
    let matches = if s.clean {
        high == s.id_high_water && s.next_id > high
    } else {
        high >= s.id_high_water && s.next_id <= s.id_high_water.saturating_add(1)
    };
    if !matches {
        return Err(format!("does not match the id index (high-water {high})"));
    }
    let mut changed = HashSet::new();
    for (g, p) in journals {
        if *g < s.generation {
            continue;
        }
        match ChangeJournal::read(p, *g) {
            Ok(Ok(spokes)) => changed.extend(spokes),
            Ok(Err(why)) => return Err(format!("{}: {why}", p.display())),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(Trusted {
        summary: s,
        changed,
    })
}

/// Records a recovery scan reads at a time.
const SCAN_STEP: usize = 4096;

/// One live-looking record seen by the scan (32 bytes: no tube name, no body).
#[derive(Clone, Copy)]
struct Seen {
    id: u64,
    offset: RecordOffset,
    version: u32,
    spoke: u32,
    /// Index into the name keys of the scan ([`Scanned::name_keys`]); [`NO_NAME`]: unnamed.
    name: u32,
    /// Index into the tube names met during the scan, 24 bits (little-endian): with a `u32`
    /// the struct would be 40 bytes.
    tube: [u8; 3],
    state: JobState,
}

const _: () = assert!(size_of::<Seen>() == 32);

/// [`Seen::name`] of an unnamed record.
const NO_NAME: u32 = u32::MAX;

impl Seen {
    fn tube(&self) -> usize {
        let [a, b, c] = self.tube;
        usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16
    }
}

/// What the scan of every segment found.
#[derive(Default)]
struct Scanned {
    /// Every spoke opened, in the order met; `Seen::spoke` indexes it.
    order: Vec<SpokeId>,
    /// The records that may be a job's current one (not `Moved`), scanned spokes only.
    seen: Vec<Seen>,
    /// The tube names met; `Seen::tube` indexes it.
    tube_names: Vec<Vec<u8>>,
    /// The highest id of any record scanned.
    found_id: u64,
    /// The [`name_key`] of each named record in `seen` ([`Seen::name`] indexes it). A `Vec`
    /// grows in place; a map grown while scanning freed each smaller table, and glibc raises
    /// its mmap threshold to the size of each freed table (up to 32 MiB): what is allocated
    /// after that (the name index, hub maps) comes from the heap and leaves freed space there
    /// (bench/README.md, *Named jobs*).
    name_keys: Vec<u64>,
    /// The far named jobs of the spokes taken from the summary, from their names files.
    summarised_named: FarNamed,
}

impl<S: Segment> Store<S> {
    /// Recovery never holds a full record per job: one scan of every segment keeps 32 bytes
    /// per record, enough to pick each id's winner and to count far delayed jobs per spoke and
    /// tube. Only spokes whose winners become resident (loaded spokes, and far spokes holding
    /// kicked or buried jobs) are scanned a second time for those winners' full headers.
    pub(super) fn recover(&mut self, found: Found) -> Result<Recovery> {
        let Found {
            trusted,
            index_rebuilt,
            summary_next_id,
            ..
        } = found;
        let high = if S::FILE_BACKED {
            self.index.high_water()?
        } else {
            0
        };
        // Without a trusted summary, ids up to high + ID_BLOCK - 1 may have been issued by a
        // build that did not reserve them durably (see the module documentation).
        let block_end = if high > 0 {
            high.saturating_add(ID_BLOCK - 1)
        } else {
            0
        };
        let mut max_id = block_end.max(summary_next_id.saturating_sub(1));
        let mut skip: HashMap<SpokeId, Arc<SpokeSummary>> = HashMap::new();
        if let Some(t) = trusted {
            let s = t.summary;
            // The reservation covers every id issued since the summary (a clean one's is
            // exactly its last id).
            max_id = s.next_id.saturating_sub(1).max(high);
            skip = s
                .spokes
                .into_iter()
                .filter(|p| !t.changed.contains(&p.spoke))
                .map(|p| (p.spoke, p))
                .collect();
        }
        let scanned = self.scan_segments(skip)?;
        max_id = max_id.max(scanned.found_id);
        if index_rebuilt && scanned.found_id > 0 {
            // The index entries past the highest id found are lost: as past any high-water
            // mark, ids may have been issued up to a block beyond it.
            max_id = max_id.max(scanned.found_id.saturating_add(ID_BLOCK - 1));
        }
        self.next_id = self.next_id.max(max_id.saturating_add(1));
        let Scanned {
            order,
            seen,
            tube_names,
            name_keys,
            mut summarised_named,
            ..
        } = scanned;
        let (resident, far_named) = self.pick_winners(&order, seen, &tube_names, &name_keys);
        let mut recovery = Recovery::of(order, resident);
        summarised_named.extend(far_named);
        recovery.far_named = summarised_named;
        Ok(recovery)
    }

    /// Opens every segment: a far one the summary vouches for (in `skip`, unchanged since)
    /// with its figures, every other scanned once.
    fn scan_segments(&mut self, mut skip: HashMap<SpokeId, Arc<SpokeSummary>>) -> Result<Scanned> {
        let mut out = Scanned::default();
        let mut tube_idx: HashMap<Vec<u8>, u32> = HashMap::new();
        let (mut scanned, mut summarised) = (0u64, 0u64);
        for (listed, path) in self.dir.segments()? {
            // A segment the summary vouches for is opened at the size it states.
            let sized = skip
                .get(&listed)
                .filter(|_| listed.start >= self.horizon_end)
                .map(|p| p.byte_size);
            let Some(mut seg) = self.open_segment(listed, &path, sized)? else {
                continue;
            };
            let sid = seg.spoke();
            if self.spokes.contains_key(&sid) {
                continue;
            }
            let idx = u32::try_from(out.order.len())
                .map_err(|_| StoreError::Internal("more than 2^32 segments".into()))?;
            out.order.push(sid);
            if sid.start >= self.horizon_end
                && let Some(p) = skip.remove(&sid)
                && p.byte_size == seg.byte_size()
            {
                match self.summarised_names(&p, &mut out.summarised_named) {
                    Ok(()) => {
                        self.add_summarised(seg, p);
                        summarised += 1;
                        continue;
                    }
                    Err(why) => tracing::info!(
                        spoke = sid.start,
                        "names file not used ({why}): scanning the segment"
                    ),
                }
            }
            scanned += 1;
            let mut records = 0u64;
            let mut named = false;
            // In steps: a whole segment's records at once, each with its tube and name on the
            // heap, left their freed space on glibc's heap (bench/README.md, *Named jobs*).
            let mut next = Some(0);
            while let Some(from) = next {
                let (chunk, rest) = seg.scan_from(from, SCAN_STEP)?;
                next = rest;
                // Pages read leave this process (a mapping would keep the whole file).
                seg.drop_pages(from, rest.unwrap_or(u64::MAX));
                for r in chunk {
                    let m = match r {
                        Ok(m) => {
                            records += 1;
                            m
                        }
                        Err(e) => {
                            self.note_corrupt(&e);
                            continue;
                        }
                    };
                    out.found_id = out.found_id.max(m.id);
                    if matches!(m.slot.state, JobState::Moved | JobState::Freed) {
                        continue;
                    }
                    let name = if m.name.is_empty() {
                        NO_NAME
                    } else {
                        named = true;
                        out.name_keys.push(name_key(&m.tube, &m.name));
                        u32::try_from(out.name_keys.len() - 1)
                            .ok()
                            .filter(|&n| n != NO_NAME)
                            .ok_or_else(|| {
                                StoreError::Internal("more than 2^32 - 1 named records".into())
                            })?
                    };
                    let tube = match tube_idx.get(&m.tube) {
                        Some(&t) => t,
                        None => {
                            let t = u32::try_from(out.tube_names.len())
                                .ok()
                                .filter(|&t| t < 1 << 24)
                                .ok_or_else(|| {
                                    StoreError::Internal("more than 2^24 tubes".into())
                                })?;
                            out.tube_names.push(m.tube.clone());
                            tube_idx.insert(m.tube, t);
                            t
                        }
                    };
                    out.seen.push(Seen {
                        id: m.id,
                        offset: m.offset,
                        version: m.slot.version,
                        spoke: idx,
                        name,
                        tube: [tube as u8, (tube >> 8) as u8, (tube >> 16) as u8],
                        state: m.slot.state,
                    });
                }
            }
            // Closing only releases memory; if it fails the segment stays open.
            let _ = seg.close();
            let loaded = sid.start < self.horizon_end;
            let mut spoke = Spoke::new(seg, loaded);
            spoke.records = records;
            spoke.named = named;
            self.spokes.insert(sid, spoke);
            if !loaded {
                self.note_wide(sid);
            }
        }
        if scanned + summarised > 0 {
            tracing::info!(
                segments_scanned = scanned,
                segments_from_summary = summarised,
                "segments opened"
            );
        }
        Ok(out)
    }

    /// Opens the segment file at `path`, named for spoke `listed`; at `sized` bytes when a
    /// summary states its size. `None`: skipped (a create cut short is removed, a file whose
    /// header is unreadable is left alone for yaad-dump).
    fn open_segment(
        &mut self,
        listed: SpokeId,
        path: &std::path::Path,
        sized: Option<u64>,
    ) -> Result<Option<S>> {
        let opened = match sized {
            Some(size) => S::open_sized(path, size).and_then(|s| {
                // A file under another spoke's name: open it as any other.
                if s.spoke() == listed {
                    Ok(s)
                } else {
                    S::open(path)
                }
            }),
            None => S::open(path),
        };
        match opened {
            Ok(s) => Ok(Some(s)),
            Err(e @ StorageError::Corrupted { .. }) => {
                if never_written(path) {
                    // A create cut short (crash, power cut or disk full): no record of it was
                    // ever synced, and left in place it would make every create of its spoke
                    // fail.
                    std::fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
                    self.dir_dirty = true;
                } else {
                    self.note_corrupt(&e);
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Per id, the highest version wins; a `Deleted` winner drops the job, and live losers
    /// (a move whose `Moved` mark was lost) are marked once the winner is durable. Counts
    /// the live records of each spoke, counts and indexes far delayed winners, and returns
    /// the winners that must be resident, as (index into `order`, offset), sorted, and the
    /// far winners with a name as (name key, id). `seen` is consumed: it is the
    /// largest allocation of a start-up (32 bytes per record).
    fn pick_winners(
        &mut self,
        order: &[SpokeId],
        mut seen: Vec<Seen>,
        tube_names: &[Vec<u8>],
        name_keys: &[u64],
    ) -> (Vec<(u32, RecordOffset)>, FarNamed) {
        let mut far_named = Vec::new();
        seen.sort_unstable_by_key(|r| (r.id, std::cmp::Reverse(r.version)));
        let mut resident: Vec<(u32, RecordOffset)> = Vec::new();
        let mut prev = None;
        let mut winner = None;
        // Ids ascend: the entries are read a chunk at a time.
        let mut ids = IdReader::new();
        for r in &seen {
            let first = prev != Some(r.id);
            prev = Some(r.id);
            let sid = order[r.spoke as usize];
            if first {
                winner = Some(JobLocation {
                    spoke: sid,
                    offset: r.offset,
                });
            } else {
                if r.state != JobState::Deleted
                    && let Some(w) = winner
                {
                    self.mark_lost_move(sid, r, w);
                }
                continue;
            }
            if r.state == JobState::Deleted {
                continue;
            }
            let Some(s) = self.spokes.get_mut(&sid) else {
                continue;
            };
            s.live += 1;
            if s.loaded || r.state != JobState::Waiting {
                resident.push((r.spoke, r.offset));
                continue;
            }
            self.count_far(sid, &tube_names[r.tube()], 1);
            if r.name != NO_NAME {
                far_named.push((name_keys[r.name as usize], r.id));
            }
            // The entry may be missing (mem mode, a job put near under a longer horizon, a
            // crash between append and index write) or point at a moved job's old record.
            let loc = JobLocation {
                spoke: sid,
                offset: r.offset,
            };
            if !matches!(ids.get(&self.index, r.id), Ok(Some(l)) if l == loc)
                && let Err(e) = self.set_index(r.id, loc)
            {
                // Start anyway (a full disk must not keep yaad down); lookups by id that the
                // index cannot answer scan the far spokes instead.
                tracing::warn!(job = r.id, "id index entry not written: {e}");
                self.index_incomplete = true;
            }
        }
        resident.sort_unstable();
        (resident, far_named)
    }

    /// A loser `r` of spoke `sid` still marked live: a move whose `Moved` mark was lost
    /// (crash). Marked once the winner's segment `winner`, which may hold it only in the page
    /// cache, is synced.
    fn mark_lost_move(&mut self, sid: SpokeId, r: &Seen, winner: JobLocation) {
        let slot = StateSlot {
            version: r.version.saturating_add(1),
            state: JobState::Moved,
            priority: 0,
            counters: Default::default(),
        };
        self.unflushed.insert(winner.spoke);
        let at = JobLocation {
            spoke: sid,
            offset: r.offset,
        };
        self.mark_moved(at, slot, winner, false);
    }

    /// The records at `offsets` (ascending) of spoke `sid`, from a [`Recovery`]: the
    /// scheduler makes them resident.
    pub fn read_recovered(
        &mut self,
        sid: SpokeId,
        offsets: &[RecordOffset],
    ) -> Result<Vec<RecordMeta>> {
        let metas = self.segment(sid)?.scan()?;
        let mut out = Vec::with_capacity(offsets.len());
        let mut w = 0;
        for m in metas.into_iter().flatten() {
            while w < offsets.len() && offsets[w] < m.offset {
                w += 1;
            }
            if w == offsets.len() {
                break;
            }
            if offsets[w] == m.offset && !self.is_pending_move(sid, m.offset) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// After recovery: retires the spokes left without a live record, queues mostly dead
    /// ones for compaction and closes far segments.
    pub(super) fn settle_recovered(&mut self, recovered: Recovery) {
        for sid in recovered.order {
            let Some(s) = self.spokes.get_mut(&sid) else {
                continue;
            };
            if s.live == 0 {
                self.retire_spoke(sid);
                continue;
            }
            if !s.loaded {
                // Closing only releases memory; if it fails the segment stays open.
                let _ = s.seg.close();
            }
            if self.mostly_dead(sid) {
                // At the next call, loaded or not: a restart is the time to reclaim the space.
                self.compact_due.insert(sid);
            }
        }
    }

    /// Memory mode: opens `ids.yaad`, whose high-water bounds every id an earlier run of this
    /// data dir handed out (flushed or not, see [`IdReservation`]), continues above it, and
    /// keeps it to reserve the ids this run hands out (`Store::reserve_id`). With or without
    /// `-r`: a later restore may bring back jobs of any run.
    pub(super) fn open_id_reservation(&mut self) -> Result<()> {
        let (file, _) = open_index(&self.dir)?;
        let ids = IdReservation::new(file)?;
        self.next_id = self.next_id.max(ids.reserved().saturating_add(1));
        self.ids_reserved = Some(ids);
        Ok(())
    }

    /// Persisted modes: the durable id reservation starts at the last id recovery rules out
    /// (durable: `Store::open` synced the data dir after a crash, a flush before a clean
    /// summary); the first put raises and syncs it. The index's high-water is raised to it
    /// (ids found above it, or a summary's next id), so a summary taken now agrees.
    pub(super) fn open_durable_ids(&mut self) -> Result<()> {
        let issued = self.next_id.saturating_sub(1);
        if self.index.high_water()? < issued {
            self.note_change(None)?;
            self.index.raise_high_water(issued)?;
            self.index_dirty = true;
        }
        self.ids_durable = DurableIds::new(issued, ID_BLOCK);
        Ok(())
    }

    /// Adds the far named jobs of summary entry `p` to `out` from its names file.
    fn summarised_names(
        &self,
        p: &SpokeSummary,
        out: &mut FarNamed,
    ) -> std::result::Result<(), String> {
        match p.known_names() {
            None => Err("no names file stated".into()),
            Some(n) if n.count == 0 => Ok(()),
            Some(n) => spoke_names::read(&self.dir.names_path(p.spoke), &p.names_of(), n, out),
        }
    }

    /// Adds far spoke `seg` with the figures of its summary, without reading its records.
    fn add_summarised(&mut self, mut seg: S, p: Arc<SpokeSummary>) {
        // Closing only releases memory; if it fails the segment stays open.
        let _ = seg.close();
        let mut spoke = Spoke::new(seg, false);
        spoke.live = p.live;
        spoke.records = p.records;
        spoke.named = p.known_names().is_some_and(|n| n.count > 0);
        self.spokes.insert(p.spoke, spoke);
        self.note_wide(p.spoke);
        for (tube, n) in &p.delayed {
            self.count_far(p.spoke, tube, i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.ckpt.adopt(p);
    }
}
