//! A job held in RAM: ready, reserved, buried or near-future delayed ones.
//! Far-future jobs have no RAM representation; see [`FarInfo`] for the little they may keep.

use std::sync::Arc;

use super::{ConnId, Micros};
use crate::segment::{JobLocation, RecordOffset, SpokeId};

/// Where a job is in its life cycle, as the hub sees it (reserved is never persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for its trigger time, in the delayed set.
    Delayed,
    Ready,
    Reserved {
        conn: ConnId,
        deadline: Micros,
    },
    /// `seq` orders buried jobs first-buried first.
    Buried {
        seq: u64,
    },
}

/// The per-job counters `stats-job` shows, persisted with each state slot of the job's record.
pub(super) use crate::segment::JobCounters as Counters;

/// What a far-future job keeps in RAM when it has something its record cannot tell: the
/// delay it was last released with (its counters are in the record). Jobs that were only put
/// keep nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FarInfo {
    pub delay_s: u32,
}

/// A job resident in RAM.
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub tube: Arc<str>,
    /// Its name in its tube, if it has one (the name index maps it to the job's id).
    pub name: Option<Box<[u8]>>,
    pub pri: u32,
    pub ttr_s: u32,
    /// The delay of its last put or release, for `stats-job`.
    pub delay_s: u32,
    pub created_at: Micros,
    pub trigger_at: Micros,
    /// The spoke and offset of its current record.
    pub spoke: SpokeId,
    pub offset: RecordOffset,
    /// Version of the state slot last persisted.
    pub version: u32,
    pub phase: Phase,
    pub counters: Counters,
    /// The number of the latest change that linked it ([`super::Hub::set_change`]; an upper
    /// bound for a job loaded from its record): a reply that shows the job waits until that
    /// change is durable.
    pub change: u64,
}

impl Job {
    /// Where its current record is.
    pub fn loc(&self) -> JobLocation {
        JobLocation {
            spoke: self.spoke,
            offset: self.offset,
        }
    }
}
