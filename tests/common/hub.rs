//! Helpers for tests that drive a hub in process, as the server would.

use std::path::Path;

use yaad::hub::{Hub, HubConfig, SECOND};
use yaad::segment::Segment;

/// The tests' clock starts here (any fixed time works: the hub never reads a clock).
pub const START: u64 = 1_700_000_000 * SECOND;

/// A persisted hub (mapped or lazy, by the segment type) in `dir`, with 1 s spokes.
pub fn persisted(dir: &Path) -> HubConfig {
    HubConfig {
        data_dir: dir.to_path_buf(),
        spoke_span: SECOND,
        restore: false,
    }
}

/// The server's sync thread: takes the batch, syncs it and tells the hub it is durable (after
/// every change with `-f 0`, periodically with `-f MS`).
pub fn sync<S: Segment>(hub: &mut Hub<S>) {
    let batch = hub.take_sync_batch();
    batch.sync().unwrap();
    hub.synced(batch.epoch);
}
