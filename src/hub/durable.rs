//! What a caller that acknowledges changes only once they are durable (`-f 0`) needs of the
//! hub: the number of the change that last wrote a job, and a way to stop vouching for the
//! files after a failed sync.
//!
//! The caller numbers the calls that change persisted state (the hub does not count them:
//! calls that change nothing are not numbered) and tells the hub each number before the call
//! ([`Hub::set_change`]). Every job the call links into a phase (put, kicked, buried, released,
//! reserved by id, or handed to a waiter) carries that number, so a reply that shows the job
//! can wait for exactly the sync it depends on ([`Hub::job_change`]).

use super::Hub;
use crate::segment::Segment;

impl<S: Segment> Hub<S> {
    /// The number (as the caller counts changes; 1 and up) of the change the calls from now on
    /// make, until the next `set_change`; 0: the calls change nothing persisted (ticks,
    /// reserves, disconnects), and the jobs they link keep their number.
    pub fn set_change(&mut self, change: u64) {
        self.change_in_call = change;
        self.latest_change = self.latest_change.max(change);
    }

    /// The number of the latest change that job `id` may depend on: the one that last linked
    /// it when it is resident; otherwise (a far job, or none) the latest change set, an upper
    /// bound. A reply that shows the job (reserve, peek, stats-job) must wait until that change
    /// is durable.
    pub fn job_change(&self, id: u64) -> u64 {
        self.jobs.get(&id).map_or(self.latest_change, |j| j.change)
    }

    /// A sync of the files failed (after a failed fdatasync the kernel may have dropped the
    /// dirty pages, so a later sync that succeeds proves nothing): the hub stops vouching for
    /// its files. No summary is written from now on (a flush or checkpoint removes any), so the
    /// next open scans every segment.
    pub fn distrust_files(&mut self) {
        self.store.distrust_files();
    }
}
