//! What a caller that acknowledges changes only once they are durable (`-f 0`) needs of the
//! hub beyond the sync batches: a way to stop vouching for the files after a failed sync.

use super::Hub;
use crate::segment::Segment;

impl<S: Segment> Hub<S> {
    /// A sync of the files failed (after a failed fdatasync the kernel may have dropped the
    /// dirty pages, so a later sync that succeeds proves nothing): the hub stops vouching for
    /// its files. No summary is written from now on (a flush or checkpoint removes any), so the
    /// next open scans every segment.
    pub fn distrust_files(&mut self) {
        self.needs_full_scan = true;
        // Withdraws a clean summary now and makes the next checkpoint remove any other.
        if let Err(e) = self.note_change(None) {
            tracing::warn!("cannot remove the start-up summary: {e}");
        }
    }
}
