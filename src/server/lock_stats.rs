//! Counters of the hub lock ([`LockStats`]): kept by `core`, shown by `stats`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::hub::StoreWork;

/// Counters of the hub lock, always on (two clock reads per acquisition, ~50 ns): how often it
/// is taken, how often a caller found it held, and the total time it was held and waited for.
/// `held_ns` over wall time is the lock's utilisation; near 100 % it would be the ceiling.
#[derive(Default)]
pub struct LockStats {
    pub acquisitions: AtomicU64,
    pub contended: AtomicU64,
    pub held_ns: AtomicU64,
    pub wait_ns: AtomicU64,
    /// Holds of at least 1 ms and of at least 5 ms, by [`HOLD_KINDS`]: what a lateness tail
    /// can be blamed on (`stats`: `hub-lock-holds-over-1ms-KIND`, `...-over-5ms-KIND`).
    pub long_holds: [[AtomicU64; 2]; HOLD_KINDS.len()],
    /// Of the timer thread's holds (its ticks: deliveries, split steps, loads), those whose
    /// thread CPU time reached 1 ms and 5 ms, by kind: the part of a long hold that is work,
    /// not waiting. A hold longer in wall time than in CPU time was preempted, blocked, or
    /// (on a virtual machine) lost its virtual CPU to the host (`stats`:
    /// `hub-lock-timer-cpu-over-1ms-KIND`, `...-over-5ms-KIND`).
    pub timer_cpu_holds: [[AtomicU64; 2]; HOLD_KINDS.len()],
}

/// What a long hub-lock hold did, named after the first of the store's slow kinds of work
/// ([`StoreWork`]) counted during it: a segment created in the call (`create`), a far spoke
/// loaded (`load`), a segment compacted (`compact`), a spoke retired (`retire`), records moved
/// by a split of a wide spoke (`split`); `other` did none of these (preempted holder, page
/// faults, a write blocked by writeback, a big call).
pub const HOLD_KINDS: [&str; 6] = ["create", "load", "compact", "retire", "split", "other"];

/// The index in [`HOLD_KINDS`] of a hold during which the hub's work went from `a` to `b`.
pub fn hold_kind(a: &StoreWork, b: &StoreWork) -> usize {
    [
        b.spokes_created > a.spokes_created,
        b.spokes_loaded > a.spokes_loaded,
        b.segments_compacted > a.segments_compacted,
        b.spokes_retired > a.spokes_retired,
        b.records_split > a.records_split,
    ]
    .iter()
    .position(|&did| did)
    .unwrap_or(HOLD_KINDS.len() - 1)
}

/// The hold lengths [`LockStats::long_holds`] counts (index 0: at least 1 ms, index 1: at
/// least 5 ms): the delivery timing target is a lateness p99 of 1 ms and a max of 5 ms.
pub const LONG_HOLDS: [Duration; 2] = [Duration::from_millis(1), Duration::from_millis(5)];

impl LockStats {
    /// `[acquisitions, contended, held µs, wait µs]`.
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.acquisitions.load(Ordering::Relaxed),
            self.contended.load(Ordering::Relaxed),
            self.held_ns.load(Ordering::Relaxed) / 1000,
            self.wait_ns.load(Ordering::Relaxed) / 1000,
        ]
    }

    /// [`LockStats::long_holds`]: per kind, holds of at least 1 ms and of at least 5 ms.
    pub fn long_holds(&self) -> [[u64; 2]; HOLD_KINDS.len()] {
        self.long_holds
            .each_ref()
            .map(|k| k.each_ref().map(|n| n.load(Ordering::Relaxed)))
    }

    /// [`LockStats::timer_cpu_holds`], as [`LockStats::long_holds`].
    pub fn timer_cpu_holds(&self) -> [[u64; 2]; HOLD_KINDS.len()] {
        self.timer_cpu_holds
            .each_ref()
            .map(|k| k.each_ref().map(|n| n.load(Ordering::Relaxed)))
    }

    /// Counts a hold of length `held` and of kind `kind` (an index in [`HOLD_KINDS`]) in
    /// [`LockStats::long_holds`], under each of the [`LONG_HOLDS`] it reaches.
    pub fn count_long_hold(&self, kind: usize, held: Duration) {
        count(&self.long_holds[kind], held);
    }

    /// Counts a timer thread's hold that took `cpu` of its CPU time in
    /// [`LockStats::timer_cpu_holds`].
    pub fn count_timer_cpu(&self, kind: usize, cpu: Duration) {
        count(&self.timer_cpu_holds[kind], cpu);
    }
}

fn count(counters: &[AtomicU64; 2], d: Duration) {
    for (limit, n) in LONG_HOLDS.iter().zip(counters) {
        if d >= *limit {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}
