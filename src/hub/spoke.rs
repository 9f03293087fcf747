//! A spoke: one time bucket `[start, start + span)` and the segment holding its job records.
//!
//! Spokes starting before the hub's horizon (`now + NEAR_SPOKES * span`, never moving back) are
//! *loaded*: every live job of theirs is resident in RAM. Spokes beyond it are *far*: just a
//! segment (closed when idle) plus per-tube counts of their delayed jobs, so a far job costs no RAM.
//! Jobs whose trigger time has passed stay in their (past) spoke until deleted; a put with no
//! delay goes to the spoke holding `now`. A spoke whose live count drops to 0 is retired (its
//! segment destroyed) once it is entirely past, or at once when it is far.

use std::collections::HashMap;
use std::sync::Arc;

use super::Micros;
use crate::segment::{Segment, SpokeId};

/// Number of spokes ahead of the current one that are kept loaded.
pub const NEAR_SPOKES: u64 = 2;

/// At most this many far segments stay open at once (lazy mode closes the least recently used).
pub const MAX_OPEN_FAR_SPOKES: usize = 8;

pub(super) struct Spoke<S> {
    pub seg: S,
    /// Records in this segment that are the current record of a job that is not deleted.
    pub live: u64,
    pub loaded: bool,
    /// Far spokes only: delayed jobs per tube.
    pub far_counts: HashMap<Arc<str>, u64>,
}

impl<S: Segment> Spoke<S> {
    pub fn new(seg: S, loaded: bool) -> Self {
        Spoke {
            seg,
            live: 0,
            loaded,
            far_counts: HashMap::new(),
        }
    }

    pub fn end(id: SpokeId) -> Micros {
        id.start.saturating_add(id.span)
    }
}

/// The spoke of span `span` whose bucket holds `t`.
pub fn spoke_for(t: Micros, span: Micros) -> SpokeId {
    let span = span.max(1);
    SpokeId {
        start: t - t % span,
        span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoke_for_buckets() {
        assert_eq!(spoke_for(0, 10), SpokeId { start: 0, span: 10 });
        assert_eq!(spoke_for(9, 10), SpokeId { start: 0, span: 10 });
        assert_eq!(
            spoke_for(10, 10),
            SpokeId {
                start: 10,
                span: 10
            }
        );
        assert_eq!(spoke_for(5, 0), SpokeId { start: 5, span: 1 });
        for t in 0..100 {
            let s = spoke_for(t, 7);
            assert!(s.start <= t && t < s.start + s.span);
        }
    }
}
