//! Rebuilding the hub from its segments at start.
//!
//! Segments are scanned for record headers (not bodies); see [`Hub::recover`]. Per job id the
//! record with the highest version that is not `Moved` wins; a `Deleted` winner drops the job. Winners in loaded
//! spokes become resident (Waiting → delayed or ready by trigger time, Ready → ready, Buried →
//! buried, first-buried order by id); Waiting winners in far spokes are only counted. Ready or
//! Buried winners in far spokes (kicked far jobs) are resident too. Losing records that are still
//! marked live (a crash between a move's append and its `Moved` mark) are marked `Moved` now.
//! Corrupt records are skipped and counted; spokes left without live records are retired.
//! Ids continue above the highest id seen in any record and above the id index's high-water
//! mark + [`ID_BLOCK`], so they are not reused even when every segment has been retired.

use std::collections::HashMap;

use super::compact::COMPACT_MIN_BYTES;
use super::spoke::Spoke;
use super::{Hub, HubError, ID_BLOCK};
use crate::segment::format::FILE_HEADER_LEN;
use crate::segment::{
    DataDir, IdIndex, JobLocation, JobState, RecordOffset, Segment, SpokeId, StateSlot,
    StorageError,
};

/// Opens the data dir's id index; a damaged one is derived data, so it is started afresh.
pub(super) fn open_index(dir: &DataDir) -> Result<IdIndex, HubError> {
    let path = dir.id_index_path();
    match IdIndex::open(&path) {
        Ok(i) => Ok(i),
        Err(StorageError::Corrupted { .. }) => {
            std::fs::remove_file(&path)
                .map_err(|e| HubError::Internal(format!("{}: {e}", path.display())))?;
            Ok(IdIndex::open(&path)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// One live-looking record seen by the scan (32 bytes: no tube name, no body).
#[derive(Clone, Copy)]
struct Seen {
    id: u64,
    offset: RecordOffset,
    version: u32,
    spoke: u32,
    /// Index into the tube names met during the scan.
    tube: u32,
    state: JobState,
}

impl<S: Segment> Hub<S> {
    /// Recovery never holds a full record per job: one scan of every segment keeps 32 bytes
    /// per record, enough to pick each id's winner and to count far delayed jobs per spoke and
    /// tube. Only spokes whose winners become resident (loaded spokes, and far spokes holding
    /// kicked or buried jobs) are scanned a second time for those winners' full headers.
    pub(super) fn recover(&mut self) -> Result<(), HubError> {
        let mut max_id = 0u64;
        if self.cfg.persist {
            let high = self.index.high_water()?;
            if high > 0 {
                // Ids up to high + ID_BLOCK - 1 may have been issued (see ID_BLOCK).
                max_id = high.saturating_add(ID_BLOCK - 1);
            }
        }
        let mut order: Vec<SpokeId> = Vec::new();
        let mut seen: Vec<Seen> = Vec::new();
        let mut tube_names: Vec<Vec<u8>> = Vec::new();
        let mut tube_idx: HashMap<Vec<u8>, u32> = HashMap::new();
        for (_, path) in self.dir.segments()? {
            let mut seg = match S::open(&path) {
                Ok(s) => s,
                Err(e @ StorageError::Corrupted { .. }) => {
                    if std::fs::metadata(&path).is_ok_and(|m| m.len() < FILE_HEADER_LEN) {
                        // A create cut short (crash or disk full): no record can be in it, and
                        // left in place it would make every create of its spoke fail.
                        std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
                        self.dir_dirty = true;
                        continue;
                    }
                    // A file whose header is unreadable is left alone for yaad-dump.
                    self.note_corrupt(&e);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let sid = seg.spoke();
            if self.spokes.contains_key(&sid) {
                continue;
            }
            let idx = u32::try_from(order.len())
                .map_err(|_| HubError::Internal("more than 2^32 segments".into()))?;
            let mut records = 0u64;
            for r in seg.scan()? {
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
                max_id = max_id.max(m.id);
                if m.slot.state == JobState::Moved {
                    continue;
                }
                let tube = match tube_idx.get(&m.tube) {
                    Some(&t) => t,
                    None => {
                        let t = u32::try_from(tube_names.len())
                            .map_err(|_| HubError::Internal("more than 2^32 tubes".into()))?;
                        tube_names.push(m.tube.clone());
                        tube_idx.insert(m.tube, t);
                        t
                    }
                };
                seen.push(Seen {
                    id: m.id,
                    offset: m.offset,
                    version: m.slot.version,
                    spoke: idx,
                    tube,
                    state: m.slot.state,
                });
            }
            // Closing only releases memory; if it fails the segment stays open.
            let _ = seg.close();
            order.push(sid);
            let loaded = sid.start < self.horizon_end;
            let mut spoke = Spoke::new(seg, loaded);
            spoke.records = records;
            self.spokes.insert(sid, spoke);
        }
        drop(tube_idx);
        self.next_id = self.next_id.max(max_id.saturating_add(1));

        // Per id, the highest version wins; a Deleted winner drops the job.
        seen.sort_unstable_by_key(|r| (r.id, std::cmp::Reverse(r.version)));
        let mut resident: Vec<(u32, RecordOffset)> = Vec::new();
        let mut prev = None;
        for r in &seen {
            let first = prev != Some(r.id);
            prev = Some(r.id);
            let sid = order[r.spoke as usize];
            if !first {
                if r.state != JobState::Deleted {
                    // A move whose Moved mark was lost (crash): mark it now.
                    let slot = StateSlot {
                        version: r.version.saturating_add(1),
                        state: JobState::Moved,
                        priority: 0,
                    };
                    self.update_slot(sid, r.offset, slot)?;
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
            let tube = self.intern(&String::from_utf8_lossy(&tube_names[r.tube as usize]));
            self.count_far(sid, &tube, 1);
            // The entry may be missing (mem mode, a job put near under a longer horizon, a
            // crash between append and index write) or point at a moved job's old record.
            let loc = JobLocation {
                spoke: sid,
                offset: r.offset,
            };
            if !matches!(self.index.get(r.id), Ok(Some(l)) if l == loc)
                && let Err(e) = self.set_index(r.id, loc)
            {
                // Start anyway (a full disk must not keep yaad down); lookups by id that the
                // index cannot answer scan the far spokes instead.
                tracing::warn!(job = r.id, "id index entry not written: {e}");
                self.index_incomplete = true;
            }
        }
        drop(seen);
        resident.sort_unstable();

        let mut at = 0;
        for (idx, &sid) in order.iter().enumerate() {
            let start = at;
            while at < resident.len() && resident[at].0 as usize == idx {
                at += 1;
            }
            if start == at {
                continue;
            }
            let mine = &resident[start..at];
            let metas = self.segment(sid)?.scan()?;
            let mut w = 0;
            for m in metas.into_iter().flatten() {
                while w < mine.len() && mine[w].1 < m.offset {
                    w += 1;
                }
                if w == mine.len() {
                    break;
                }
                if mine[w].1 == m.offset {
                    self.make_resident(sid, m);
                }
            }
        }
        let persist = self.cfg.persist;
        for sid in order {
            let Some(s) = self.spokes.get_mut(&sid) else {
                continue;
            };
            if s.live == 0 {
                self.retire_spoke(sid);
            } else {
                if persist && s.live * 2 < s.records && s.seg.byte_size() >= COMPACT_MIN_BYTES {
                    self.compact_due.insert(sid);
                }
                if s.loaded {
                    continue;
                }
                // Closing only releases memory; if it fails the segment stays open.
                let _ = s.seg.close();
            }
        }
        Ok(())
    }
}
