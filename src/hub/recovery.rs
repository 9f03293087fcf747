//! Rebuilding the hub from its segments at start.
//!
//! Segments are scanned (record headers, not bodies) in two passes; see [`Hub::recover`].
//! Per job id the record with the
//! highest version that is not `Moved` wins; a `Deleted` winner drops the job. Winners in loaded
//! spokes become resident (Waiting → delayed or ready by trigger time, Ready → ready, Buried →
//! buried, first-buried order by id); Waiting winners in far spokes are only counted. Ready or
//! Buried winners in far spokes (kicked far jobs) are resident too. Losing records that are still
//! marked live (a crash between a move's append and its `Moved` mark) are marked `Moved` now.
//! Corrupt records are skipped and counted; spokes left without live records are retired.
//! Ids continue above the highest id seen in any record or in the id index (every put writes
//! its entry there, so ids are not reused even when every segment has been retired).

use std::io::Read;
use std::path::Path;

use zerocopy::FromBytes;

use super::spoke::Spoke;
use super::{Hub, HubError, ID_BLOCK};
use crate::segment::{
    DataDir, IdEntry, IdFileHeader, IdIndex, JobLocation, JobState, RecordMeta, RecordOffset,
    Segment, SpokeId, StateSlot, StorageError,
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

const ID_HEADER_LEN: u64 = std::mem::size_of::<IdFileHeader>() as u64;
const ID_ENTRY_LEN: u64 = std::mem::size_of::<IdEntry>() as u64;

/// The highest id the index file has room for (entries are zeroed, never truncated, so this
/// survives even when every segment has been retired).
fn index_high_water(path: &Path) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut head = [0u8; ID_HEADER_LEN as usize];
    if f.read_exact(&mut head).is_err() {
        return 0;
    }
    let Ok((h, _)) = IdFileHeader::read_from_prefix(&head) else {
        return 0;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return 0;
    };
    let entries = len.saturating_sub(ID_HEADER_LEN) / ID_ENTRY_LEN;
    if entries == 0 {
        return 0;
    }
    h.base.get().saturating_add(entries - 1)
}

/// One live-looking record seen by the first recovery pass (32 bytes, no tube or body).
#[derive(Clone, Copy)]
struct Seen {
    id: u64,
    offset: RecordOffset,
    version: u32,
    spoke: u32,
    state: JobState,
}

impl<S: Segment> Hub<S> {
    /// Two passes so that recovery never holds a full record per job: the first scan keeps 32
    /// bytes per record to pick each id's winner (then freed); the second scan of each spoke
    /// with winners makes them resident or counts them as far delayed jobs.
    pub(super) fn recover(&mut self) -> Result<(), HubError> {
        let mut max_id = 0u64;
        if self.cfg.persist {
            let high = index_high_water(&self.dir.id_index_path());
            if high > 0 {
                // Ids up to high + ID_BLOCK - 1 may have been issued (see ID_BLOCK).
                max_id = high.saturating_add(ID_BLOCK - 1);
            }
        }
        let mut order: Vec<SpokeId> = Vec::new();
        let mut seen: Vec<Seen> = Vec::new();
        for (_, path) in self.dir.segments()? {
            let mut seg = match S::open(&path) {
                Ok(s) => s,
                Err(StorageError::Corrupted { .. }) => {
                    // A file whose header is unreadable is left alone for yaad-dump.
                    self.corrupt_records += 1;
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
            for r in seg.scan()? {
                let m = match r {
                    Ok(m) => m,
                    Err(_) => {
                        self.corrupt_records += 1;
                        continue;
                    }
                };
                max_id = max_id.max(m.id);
                if m.slot.state != JobState::Moved {
                    seen.push(Seen {
                        id: m.id,
                        offset: m.offset,
                        version: m.slot.version,
                        spoke: idx,
                        state: m.slot.state,
                    });
                }
            }
            // Closing only releases memory; if it fails the segment stays open.
            let _ = seg.close();
            order.push(sid);
            let loaded = sid.start < self.horizon_end;
            self.spokes.insert(sid, Spoke::new(seg, loaded));
        }
        self.next_id = self.next_id.max(max_id.saturating_add(1));

        // Per id, the highest version wins; a Deleted winner drops the job.
        seen.sort_unstable_by_key(|r| (r.id, std::cmp::Reverse(r.version)));
        let mut winners: Vec<(u32, RecordOffset)> = Vec::new();
        let mut prev = None;
        for r in &seen {
            let first = prev != Some(r.id);
            prev = Some(r.id);
            if first {
                if r.state != JobState::Deleted {
                    winners.push((r.spoke, r.offset));
                }
            } else if r.state != JobState::Deleted {
                // A move whose Moved mark was lost (crash): mark it now.
                let slot = StateSlot {
                    version: r.version.saturating_add(1),
                    state: JobState::Moved,
                    priority: 0,
                };
                self.update_slot(order[r.spoke as usize], r.offset, slot)?;
            }
        }
        drop(seen);
        winners.sort_unstable();

        let mut at = 0;
        for (idx, &sid) in order.iter().enumerate() {
            let start = at;
            while at < winners.len() && winners[at].0 as usize == idx {
                at += 1;
            }
            if start == at {
                continue;
            }
            let mine = &winners[start..at];
            let metas = self.segment(sid)?.scan()?;
            let mut w = 0;
            for m in metas.into_iter().flatten() {
                while w < mine.len() && mine[w].1 < m.offset {
                    w += 1;
                }
                if w == mine.len() {
                    break;
                }
                if mine[w].1 != m.offset {
                    continue;
                }
                self.recover_winner(sid, m)?;
            }
        }
        for sid in order {
            let Some(s) = self.spokes.get_mut(&sid) else {
                continue;
            };
            if s.live == 0 {
                self.retire_spoke(sid);
            } else if !s.loaded {
                // Closing only releases memory; if it fails the segment stays open.
                let _ = s.seg.close();
            }
        }
        Ok(())
    }

    /// The current record of a live job: resident, or counted in its far spoke.
    fn recover_winner(&mut self, sid: SpokeId, m: RecordMeta) -> Result<(), HubError> {
        let Some(s) = self.spokes.get_mut(&sid) else {
            return Ok(());
        };
        s.live += 1;
        if !s.loaded && m.slot.state == JobState::Waiting {
            let tube = self.intern(&String::from_utf8_lossy(&m.tube));
            self.count_far(sid, &tube, 1);
            let loc = JobLocation {
                spoke: sid,
                offset: m.offset,
            };
            if !matches!(self.index.get(m.id), Ok(Some(l)) if l == loc) {
                self.index.set(m.id, loc)?;
            }
        } else {
            self.make_resident(sid, m);
        }
        Ok(())
    }
}
