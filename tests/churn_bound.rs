//! Memory and disk follow the live jobs, not the throughput: a long random mix of puts,
//! reserves, deletes, releases (with and without a delay), buries and kicks, driven through a
//! hub far faster than its spokes turn over, never holds more than a bound made of the live
//! jobs' bytes and a constant. Measured every 50 steps: the bytes the segments hold (every
//! mode: in memory for mem mode), and the data dir's allocated blocks (mapped and lazy).
//! Without freed runs the spoke being filled would hold everything put into it.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::hub::{START, sync};
use yaad::hub::{Hub, HubConfig, ReserveOutcome, SECOND};
use yaad::segment::format::record_len;
use yaad::segment::{LazySegment, MappedSegment, MemSegment, Segment};
use yaad::store::FREE_MIN;

const MILLI: u64 = SECOND / 1000;
/// Steps of 1 ms: 8 simulated seconds, all inside one or two 10 s spokes (and the finer
/// spokes they roll over to).
const STEPS: u64 = 8000;
/// The roll-over size of the spokes (the server's is `yaad::store::ROLL_BYTES`): smaller, so
/// that the spoke appended to rolls over many times.
const ROLL: u64 = 2 << 20;
/// Jobs alive at once, at most (ready, reserved, delayed or buried).
const LIVE_MAX: usize = 24;
const BODY_MAX: usize = 24_000;
/// What the bound allows beyond three times the live jobs' records, the dead bytes a run
/// gathers before it is freed (`FREE_MIN`, for each run: at most one more than the live jobs
/// that separate them) and those of the file being appended to, whose punches wait until it
/// rolls over (`ROLL`): mapped files' reserve ahead (up to 4 MiB each: the spoke of now, the
/// spokes it rolled over from that are not past yet, one a release goes to), the id index,
/// summary and journals.
const SLACK: u64 = 16 << 20;

/// Allocated bytes of every file in `dir`.
fn allocated(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                allocated(&e.path())
            } else {
                m.blocks() * 512
            }
        })
        .sum()
}

/// `outside`: as the server with a sync thread, punches are taken from the hub after each
/// sync and made outside it (`Hub::take_punches`).
fn churn<S: Segment>(outside: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HubConfig {
        data_dir: dir.path().to_path_buf(),
        spoke_span: 10 * SECOND,
        restore: false,
    };
    let mut now = START;
    let mut hub: Hub<S> = Hub::open(cfg, now).unwrap();
    hub.set_roll_bytes(ROLL);
    if outside {
        hub.set_punch_outside();
    }
    let c = hub.connect();
    let mut rng = fastrand::Rng::with_seed(20);
    // Live jobs and their bodies' lengths; buried ones.
    let mut live: HashMap<u64, usize> = HashMap::new();
    let mut buried = 0usize;
    let mut put_bytes = 0u64;
    let mut worst = (0u64, 0u64, 0u64);
    for step in 0..STEPS {
        now += MILLI;
        for _ in 0..3 {
            if live.len() < LIVE_MAX {
                let len = rng.usize(1..=BODY_MAX);
                // Now and then a delayed one (few: a delayed job stays live for seconds).
                let delay = if step % 250 == 0 { rng.u32(1..=3) } else { 0 };
                let id = hub.put(c, 1, delay, 60, &vec![b'x'; len], now).unwrap();
                live.insert(id, len);
                put_bytes += len as u64;
            }
            let ReserveOutcome::Reserved(job) = hub.reserve(c, Some(now), now) else {
                continue;
            };
            match rng.u8(..10) {
                0 => hub.release(c, job.id, 1, 0, now).map(drop).unwrap(),
                1 if step % 100 == 0 => hub
                    .release(c, job.id, 1, rng.u32(1..=2), now)
                    .map(drop)
                    .unwrap(),
                2 if buried < 4 => {
                    hub.bury(c, job.id, 1, now).unwrap();
                    buried += 1;
                }
                _ => {
                    hub.delete(c, job.id, now).unwrap();
                    live.remove(&job.id);
                }
            }
        }
        if step % 50 == 0 {
            // The server's periodic sync (`-f 50`) and timer.
            if S::FILE_BACKED {
                sync(&mut hub);
            }
            hub.take_punches().into_iter().for_each(|p| p.run());
            hub.tick(now);
            if rng.u8(..4) == 0 {
                buried -= hub.kick(c, 2, now).min(buried as u64) as usize;
            }
            let records: u64 = live.values().map(|&len| record_len(7, len)).sum();
            let bound = 3 * records + FREE_MIN * (live.len() as u64 + 1) + ROLL + SLACK;
            let held = hub.stats(now).data_bytes;
            let disk = if S::FILE_BACKED {
                allocated(dir.path())
            } else {
                0
            };
            assert!(
                held <= bound && disk <= bound,
                "step {step}: segments hold {held} bytes, the data dir {disk}, for {} live \
                 jobs of {records} bytes (bound {bound})",
                live.len()
            );
            worst = worst.max((held.max(disk), records, bound));
        }
    }
    let (most, records, bound) = worst;
    eprintln!("put {put_bytes} bytes; held at most {most} (live records {records}, bound {bound})");
    // The bound means something only if what went through is far above it.
    assert!(put_bytes > 3 * bound, "put only {put_bytes} bytes");
}

#[test]
fn churn_is_bounded_by_live_jobs_mapped() {
    churn::<MappedSegment>(false);
}

#[test]
fn churn_is_bounded_by_live_jobs_lazy() {
    churn::<LazySegment>(false);
}

#[test]
fn churn_is_bounded_by_live_jobs_mem() {
    churn::<MemSegment>(false);
}

#[test]
fn churn_is_bounded_with_punches_made_outside_the_hub_mapped() {
    churn::<MappedSegment>(true);
}

#[test]
fn churn_is_bounded_with_punches_made_outside_the_hub_lazy() {
    churn::<LazySegment>(true);
}
