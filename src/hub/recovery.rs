//! Rebuilding the hub from its segments at start.
//!
//! Every segment is scanned once (record headers, not bodies). Per job id the record with the
//! highest version that is not `Moved` wins; a `Deleted` winner drops the job. Winners in loaded
//! spokes become resident (Waiting → delayed or ready by trigger time, Ready → ready, Buried →
//! buried, first-buried order by id); Waiting winners in far spokes are only counted. Ready or
//! Buried winners in far spokes (kicked far jobs) are resident too. Losing records that are still
//! marked live (a crash between a move's append and its `Moved` mark) are marked `Moved` now.
//! Corrupt records are skipped and counted; spokes left without live records are retired.
//! Ids continue above the highest id seen in any record.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use zerocopy::FromBytes;

use super::spoke::Spoke;
use super::{Hub, HubError};
use crate::segment::{
    DataDir, IdEntry, IdFileHeader, IdIndex, JobLocation, JobState, RecordMeta, Segment, SpokeId,
    StateSlot, StorageError,
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

/// The highest id the index file has room for: every put writes its entry, and entries are
/// zeroed, never truncated, so this survives even when every segment has been retired.
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

impl<S: Segment> Hub<S> {
    pub(super) fn recover(&mut self) -> Result<(), HubError> {
        let mut best: HashMap<u64, (SpokeId, RecordMeta)> = HashMap::new();
        let mut losers: Vec<(SpokeId, RecordMeta)> = Vec::new();
        let mut max_id = 0u64;
        if self.cfg.persist {
            max_id = index_high_water(&self.dir.id_index_path());
        }
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
            for r in seg.scan()? {
                let m = match r {
                    Ok(m) => m,
                    Err(_) => {
                        self.corrupt_records += 1;
                        continue;
                    }
                };
                max_id = max_id.max(m.id);
                if m.slot.state == JobState::Moved {
                    continue;
                }
                match best.get(&m.id) {
                    Some((_, cur)) if cur.slot.version >= m.slot.version => {
                        losers.push((sid, m));
                    }
                    _ => {
                        if let Some(old) = best.insert(m.id, (sid, m)) {
                            losers.push(old);
                        }
                    }
                }
            }
            let loaded = sid.start < self.horizon_end;
            self.spokes.insert(sid, Spoke::new(seg, loaded));
        }
        self.next_id = self.next_id.max(max_id.saturating_add(1));
        for (sid, m) in losers {
            if m.slot.state == JobState::Deleted {
                continue;
            }
            let slot = StateSlot {
                version: m.slot.version.saturating_add(1),
                state: JobState::Moved,
                priority: m.slot.priority,
            };
            if let Some(s) = self.spokes.get_mut(&sid) {
                s.seg.update(m.offset, slot)?;
            }
        }
        let mut winners: Vec<(SpokeId, RecordMeta)> = best
            .into_values()
            .filter(|(_, m)| m.slot.state != JobState::Deleted)
            .collect();
        // Id order gives buried jobs a stable first-buried order.
        winners.sort_by_key(|(_, m)| m.id);
        for (sid, m) in winners {
            let Some(s) = self.spokes.get_mut(&sid) else {
                continue;
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
        }
        let ids: Vec<SpokeId> = self.spokes.keys().copied().collect();
        for sid in ids {
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
}
