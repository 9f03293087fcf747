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
use std::path::{Path, PathBuf};

use super::spoke::Spoke;
use super::{Hub, HubError};
use crate::segment::{JobState, RecordMeta, Segment, SpokeId, StateSlot, StorageError};

/// Segment files in `dir` (`seg-*.yaad`), sorted by name (= by spoke start).
pub(super) fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, HubError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HubError::Internal(format!("{}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| HubError::Internal(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("seg-") && name.ends_with(".yaad") {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

impl<S: Segment> Hub<S> {
    pub(super) fn recover(&mut self) -> Result<(), HubError> {
        let mut best: HashMap<u64, (SpokeId, RecordMeta)> = HashMap::new();
        let mut losers: Vec<(SpokeId, RecordMeta)> = Vec::new();
        let mut max_id = 0u64;
        for path in segment_files(&self.cfg.data_dir)? {
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
