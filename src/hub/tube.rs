//! A tube: its ready queue, delayed and buried sets, waiters and counters.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{ConnId, Micros};

/// Jobs below this priority count as urgent in stats.
pub const URGENT_PRIORITY: u32 = 1024;

/// The name of the tube every connection uses and watches at first; it always exists.
pub const DEFAULT_TUBE: &str = "default";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pause {
    pub until: Micros,
    pub delay_s: u32,
}

#[derive(Debug)]
pub(super) struct Tube {
    pub name: Arc<str>,
    /// Ready jobs by (priority, id): the first is handed out next.
    pub ready: BTreeSet<(u32, u64)>,
    /// Ready jobs with priority < [`URGENT_PRIORITY`].
    pub urgent: u64,
    /// Resident delayed jobs by (trigger time, id) (far ones are counted by the store).
    pub delayed: BTreeSet<(Micros, u64)>,
    pub reserved: u64,
    /// Buried jobs by (bury sequence, id): kicked first-buried first.
    pub buried: BTreeSet<(u64, u64)>,
    /// Waiting reservers watching this tube, oldest first: (wait sequence, connection).
    pub waiters: BTreeSet<(u64, ConnId)>,
    pub using: u64,
    pub watching: u64,
    pub total_jobs: u64,
    pub cmd_delete: u64,
    pub cmd_pause_tube: u64,
    pub pause: Option<Pause>,
}

impl Tube {
    pub fn new(name: Arc<str>) -> Self {
        Tube {
            name,
            ready: BTreeSet::new(),
            urgent: 0,
            delayed: BTreeSet::new(),
            reserved: 0,
            buried: BTreeSet::new(),
            waiters: BTreeSet::new(),
            using: 0,
            watching: 0,
            total_jobs: 0,
            cmd_delete: 0,
            cmd_pause_tube: 0,
            pause: None,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.pause.is_some()
    }

    /// Resident jobs in the tube.
    pub fn job_count(&self) -> u64 {
        self.ready.len() as u64
            + self.delayed.len() as u64
            + self.reserved
            + self.buried.len() as u64
    }

    /// Nothing uses, watches or waits on it and it holds no resident job ("default" is never
    /// idle). A tube disappears when it is idle and holds no far job either.
    pub fn is_idle(&self) -> bool {
        &*self.name != DEFAULT_TUBE
            && self.using == 0
            && self.watching == 0
            && self.waiters.is_empty()
            && self.job_count() == 0
    }
}
