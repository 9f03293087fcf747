//! Micro-benchmarks of the hub, one row per storage mode (the hub's segment type): put (ready,
//! into a near spoke, into a far spoke), rotation (ticks across spokes whose jobs become ready),
//! delete of a delayed job (near and far), reserve + delete of ready jobs, and the start-up
//! checkpoint (under the lock, and its write).
//!
//! `cargo bench --bench hub` (under a minute). The hub is driven with explicit `now` values,
//! never a clock. Each sample times a batch of `N` operations on a hub set up for that sample
//! (untimed, in a temp dir); per-operation figures are the reported time ÷ `N`.

use divan::Bencher;
use divan::counter::ItemsCount;
use tempfile::TempDir;
use yaad::hub::{ConnId, Hub, HubConfig, NEAR_SPOKES, ReserveOutcome, SECOND};
use yaad::segment::{LazySegment, MappedSegment, MemSegment, Segment};

fn main() {
    divan::main();
}

/// Operations per sample.
const N: usize = 1000;
/// Samples per benchmark: keeps each one short (CI never runs them, see bench/README.md).
const SAMPLES: u32 = 20;
const START: u64 = 1_700_000_000 * SECOND;
const BODY: [u8; 100] = [b'x'; 100];
/// A delay (seconds) whose spoke is far: beyond the `NEAR_SPOKES` loaded spokes.
const FAR_DELAY: u32 = 3600;
/// A delay (seconds) whose spoke is near (loaded, jobs in RAM) with the default 1 s span.
const NEAR_DELAY: u32 = 1;
const _: () = assert!((NEAR_DELAY as u64) < NEAR_SPOKES && FAR_DELAY as u64 > NEAR_SPOKES);

/// A hub in its own temp dir (dropped before the dir), with one connection.
struct Fixture<S: Segment> {
    hub: Hub<S>,
    conn: ConnId,
    ids: Vec<u64>,
    now: u64,
    _dir: TempDir,
}

impl<S: Segment> Fixture<S> {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = HubConfig {
            ..HubConfig::new(dir.path())
        };
        let mut hub = Hub::<S>::open(cfg, START).expect("open hub");
        let conn = hub.connect();
        Fixture {
            hub,
            conn,
            ids: Vec::new(),
            now: START,
            _dir: dir,
        }
    }

    /// A hub already holding `N` jobs put at `START` with `delay(i)` seconds.
    fn with_jobs(delay: impl Fn(usize) -> u32) -> Self {
        let mut f = Self::new();
        f.ids = (0..N)
            .map(|i| {
                f.hub
                    .put(f.conn, 1024, delay(i), 60, &BODY, START)
                    .expect("put")
            })
            .collect();
        f
    }
}

fn put_batch<S: Segment>(bencher: Bencher, delay: u32) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(Fixture::<S>::new)
        .bench_local_refs(|f| {
            for _ in 0..N {
                divan::black_box(
                    f.hub
                        .put(f.conn, 1024, delay, 60, &BODY, f.now)
                        .expect("put"),
                );
            }
        });
}

/// `put` with no delay: the job is ready at once.
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn put_ready<S: Segment>(bencher: Bencher) {
    put_batch::<S>(bencher, 0);
}

/// `put` into a near spoke (1 s ahead): record appended, job kept in RAM.
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn put_near<S: Segment>(bencher: Bencher) {
    put_batch::<S>(bencher, NEAR_DELAY);
}

/// `put` into a far spoke (1 h ahead): record appended and id index entry written, no job in RAM.
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn put_far<S: Segment>(bencher: Bencher) {
    put_batch::<S>(bencher, FAR_DELAY);
}

/// Spokes the rotation benchmark's jobs are spread over (1 s span).
const ROTATION_SPOKES: usize = 20;

/// `N` jobs spread over `ROTATION_SPOKES` one-second spokes (most of them far when put);
/// ticks every 100 ms until all are ready: far spokes are loaded as they come near, jobs
/// become ready, past spokes retire. Counted per job made ready; ends with every job ready.
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn rotation<S: Segment>(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| Fixture::<S>::with_jobs(|i| 1 + (i % ROTATION_SPOKES) as u32))
        .bench_local_refs(|f| {
            let end = START + (ROTATION_SPOKES as u64 + 1) * SECOND;
            let mut now = START;
            while now < end {
                now += SECOND / 10;
                f.hub.tick(now);
            }
            let ready = f.hub.stats(now).current_jobs_ready;
            assert_eq!(ready, N as u64, "every job is ready after the last tick");
        });
}

/// Deletes all but the last of `N` jobs put with `delay`: the last one keeps their spoke alive,
/// so no spoke is retired inside the timed batch (see `retire_far_spoke` for that).
fn delete_batch<S: Segment>(bencher: Bencher, delay: u32) {
    bencher
        .counter(ItemsCount::new(N - 1))
        .with_inputs(|| Fixture::<S>::with_jobs(|_| delay))
        .bench_local_refs(|f| {
            for &id in &f.ids[..N - 1] {
                f.hub.delete(f.conn, id, f.now).expect("delete");
            }
        });
}

/// `delete` of a delayed job in a near spoke (in RAM).
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn delete_near<S: Segment>(bencher: Bencher) {
    delete_batch::<S>(bencher, NEAR_DELAY);
}

/// `delete` of a delayed job in a far spoke (found through the id index, record updated).
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn delete_far<S: Segment>(bencher: Bencher) {
    delete_batch::<S>(bencher, FAR_DELAY);
}

/// `delete` of the last live job of a far spoke that held `records` records: the spoke is
/// retired at once. As the server runs the hub (`set_deferred_removal`): the file is renamed
/// aside inside the call and removed outside it. One operation per sample.
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], args = [1, 1000], sample_count = SAMPLES, sample_size = 1)]
fn retire_far_spoke<S: Segment>(bencher: Bencher, records: usize) {
    retire_far::<S>(bencher, records, true);
}

/// `retire_far_spoke` with the file removed inside the call (a hub without a reaper).
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], args = [1, 1000], sample_count = SAMPLES, sample_size = 1)]
fn retire_far_spoke_in_call<S: Segment>(bencher: Bencher, records: usize) {
    retire_far::<S>(bencher, records, false);
}

fn retire_far<S: Segment>(bencher: Bencher, records: usize, deferred: bool) {
    bencher
        .with_inputs(|| {
            let mut f = Fixture::<S>::new();
            f.hub.set_deferred_removal(deferred);
            for _ in 0..records {
                let id = f.hub.put(f.conn, 1024, FAR_DELAY, 60, &BODY, START);
                f.ids.push(id.expect("put"));
            }
            let last = f.ids.pop().expect("at least one record");
            for &id in &f.ids {
                f.hub.delete(f.conn, id, f.now).expect("delete");
            }
            f.ids = vec![last];
            f
        })
        .bench_local_refs(|f| {
            f.hub.delete(f.conn, f.ids[0], f.now).expect("delete");
        });
}

/// `reserve` (non-blocking) then `delete` of each of `N` ready jobs: the ready pop.
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn reserve_delete<S: Segment>(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| Fixture::<S>::with_jobs(|_| 0))
        .bench_local_refs(|f| {
            for _ in 0..N {
                let ReserveOutcome::Reserved(job) = f.hub.reserve(f.conn, Some(f.now), f.now)
                else {
                    panic!("a ready job is left to reserve");
                };
                f.hub.delete(f.conn, job.id, f.now).expect("delete");
            }
        });
}

/// `Hub::checkpoint`, the part under the hub lock, with 3600 far spokes of which `changed`
/// changed since the last checkpoint (one put each); the server takes one a second. At most
/// `ENTRIES_PER_CHECKPOINT` entries are recomputed per checkpoint.
#[divan::bench(types = [MappedSegment, LazySegment], args = [1, 100, 3600], sample_count = SAMPLES, sample_size = 1)]
fn checkpoint<S: Segment>(bencher: Bencher, changed: u32) {
    bencher
        .with_inputs(|| {
            let mut f = far_spokes::<S>(3600);
            // Steady state: every entry computed (a checkpoint recomputes a bounded number).
            while let Some(p) = f.hub.checkpoint() {
                p.write().expect("written");
            }
            for s in 0..changed {
                f.hub
                    .put(f.conn, 1024, FAR_DELAY + s, 60, &BODY, START)
                    .expect("put");
            }
            f
        })
        .bench_local_refs(|f| divan::black_box(f.hub.checkpoint()));
}

/// Writing a checkpoint of 3600 far spokes taken under the lock (encode, temporary file,
/// rename): outside the lock.
#[divan::bench(types = [LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn checkpoint_write<S: Segment>(bencher: Bencher) {
    bencher
        .with_inputs(|| {
            let mut f = far_spokes::<S>(3600);
            let p = f.hub.checkpoint().expect("changes");
            (f, Some(p))
        })
        .bench_local_refs(|(_, p)| p.take().expect("once").write().expect("written"));
}

/// A hub with one job in each of `spokes` far spokes.
fn far_spokes<S: Segment>(spokes: u32) -> Fixture<S> {
    let mut f = Fixture::<S>::new();
    for s in 0..spokes {
        let id = f.hub.put(f.conn, 1024, FAR_DELAY + s, 60, &BODY, START);
        f.ids.push(id.expect("put"));
    }
    f
}
