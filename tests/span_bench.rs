//! What the spoke span trades, measured on the hub alone (no server, no sleeps: explicit `now`).
//! Prints figures; asserts only that every job came back. Run:
//!
//! `cargo test --release --test span_bench -- --ignored --nocapture`
//!
//! Per span (100 ms, 250 ms, 1 s, 5 s, 30 s):
//! - *horizon* (lazy mode): `YAAD_SPAN_JOBS` (default 200 000) 100-byte jobs with trigger times
//!   spread over one to two hours: spokes and segment files, bytes on disk, open descriptors,
//!   RSS growth and put cost. Files and per-spoke costs scale with 1 h / span, not with the job
//!   count, so they hold for 10M jobs as they are.
//! - *rotation* (mapped and lazy): the trigger density of 10M jobs per hour (2 778/s) over
//!   `YAAD_SPAN_WINDOW` seconds (default 120) of trigger times, then the clock is driven through
//!   them as the server's timer does (`now = next_deadline()`, `tick(now)`) while one consumer
//!   reserves and deletes every ready job. Reported: the largest near window (resident jobs,
//!   and the RSS growth it costs), the CPU time `tick` takes per simulated second (spoke loads,
//!   retirement, ready transitions; this thread's scheduler clock, so other processes on a
//!   busy machine do not inflate it), and the wall time of the ticks that load a spoke
//!   (median, robust to preemption): the hub lock is held that long, which is what a spoke
//!   load can add to the lateness of a job due meanwhile.
//!
//! RSS is the process's: heap freed by one configuration is reused by the next, so only the
//! first line of each part shows the per-spoke heap cost (spans run smallest first).

use std::path::Path;
use std::time::{Duration, Instant};

use yaad::hub::{Hub, HubConfig, NEAR_SPOKES, ReserveOutcome, SECOND};
use yaad::segment::{LazySegment, MappedSegment, Segment};

const START: u64 = 1_700_000_000 * SECOND;
const SPANS_MS: [u64; 5] = [100, 250, 1000, 5000, 30_000];
const BODY: [u8; 100] = [b'j'; 100];
/// 10M jobs over one hour.
const DENSITY_PER_S: u64 = 10_000_000 / 3600;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process, bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// CPU time this thread has run, from the scheduler (ns): unlike wall time it does not count
/// the time other processes on a busy machine took the core.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// (segment files, bytes allocated on disk for them).
fn segment_files(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut files = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).expect("data dir is readable") {
        let e = e.expect("dir entry");
        if e.file_name().to_string_lossy().starts_with("seg-") {
            files += 1;
            bytes += e.metadata().expect("metadata").blocks() * 512;
        }
    }
    (files, bytes)
}

/// A small deterministic generator (no dependency, same sequence every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn config(dir: &Path, span_ms: u64) -> HubConfig {
    let mut cfg = HubConfig::new(dir);
    cfg.spoke_span = span_ms * 1000;
    cfg
}

/// Far puts over a 1-2 h horizon.
fn horizon(span_ms: u64, jobs: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fds0 = open_fds();
    let rss0 = rss();
    let mut hub: Hub<LazySegment> = Hub::open(config(tmp.path(), span_ms), START).expect("open");
    let c = hub.connect();
    let mut rng = Lcg(7);
    // Two halves: the first creates most spokes (a file each), the second mostly appends to
    // existing ones (the steady state of a long-running server).
    let mut cpu = [0u64; 2];
    for (half, cpu) in cpu.iter_mut().enumerate() {
        let t = cpu_ns();
        for i in half as u64 * jobs / 2..(half as u64 + 1) * jobs / 2 {
            // Arrivals spread over 10 s, so trigger times are spread to the microsecond.
            let now = START + i * 10 * SECOND / jobs;
            let delay = 3600 + (rng.next() % 3600) as u32;
            hub.put(c, 0, delay, 60, &BODY, now).expect("put");
        }
        *cpu = cpu_ns() - t;
    }
    let fds = open_fds().saturating_sub(fds0);
    hub.flush().expect("flush");
    let fds_flushed = open_fds().saturating_sub(fds0);
    let st = hub.stats(START + 10 * SECOND);
    assert_eq!(st.current_jobs_delayed, jobs);
    let (files, disk) = segment_files(tmp.path());
    let grown = rss().saturating_sub(rss0);
    let half = (jobs / 2) as f64;
    eprintln!(
        "horizon  span {span_ms:>6} ms | spokes {:>6} (10M jobs: {:>6}) files {files:>6} | disk {:>6.1} MB = {:>4.0} B/job | fds {fds:>3}, after flush {fds_flushed:>3} | RSS +{:>5.1} MB = {:>4.0} B/spoke | put cpu {:>6.2} us/job first half, {:>5.2} second",
        st.spokes,
        3600 * 1000 / span_ms,
        disk as f64 / 1e6,
        disk as f64 / jobs as f64,
        grown as f64 / 1e6,
        grown as f64 / st.spokes.max(1) as f64,
        cpu[0] as f64 / 1e3 / half,
        cpu[1] as f64 / 1e3 / half,
    );
}

/// Rotation through a window of trigger times at the density of 10M jobs per hour.
fn rotation<S: Segment>(mode: &str, span_ms: u64, window_s: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut hub: Hub<S> = Hub::open(config(tmp.path(), span_ms), START).expect("open");
    let producer = hub.connect();
    let consumer = hub.connect();
    let jobs = DENSITY_PER_S * window_s;
    let mut rng = Lcg(11);
    let t = cpu_ns();
    for i in 0..jobs {
        // Arrivals spread over 1 s; delays cover the window: triggers spread to the µs.
        let now = START + i * SECOND / jobs;
        let delay = 3600 + (rng.next() % window_s) as u32;
        hub.put(producer, 0, delay, 60, &BODY, now).expect("put");
    }
    let put = cpu_ns() - t;
    let rss0 = rss();
    let mut now = START + SECOND;
    let mut in_tick = 0u64;
    let mut longest_wall = Duration::ZERO;
    // Wall time of the ticks that loaded a spoke (resident jobs grew): the median is robust to
    // this thread being preempted on a busy machine, the max is not.
    let mut loads: Vec<Duration> = Vec::new();
    let mut ticks = 0u64;
    let mut done = 0u64;
    let mut peak_resident = 0u64;
    let mut peak_rss = 0u64;
    let first_due = START + 3600 * SECOND;
    let mut rotating_from = None;
    while let Some(d) = hub.next_deadline() {
        now = d;
        let before = hub.stats(now).resident_jobs;
        let (t, w) = (cpu_ns(), Instant::now());
        hub.tick(now);
        let (took, wall) = (cpu_ns() - t, w.elapsed());
        let after = hub.stats(now).resident_jobs;
        if after > before {
            loads.push(wall);
        }
        if now + NEAR_SPOKES * span_ms * 1000 >= first_due {
            // Only the rotation through the window counts (not the idle hour before it).
            rotating_from.get_or_insert(now);
            in_tick += took;
            longest_wall = longest_wall.max(wall);
            ticks += 1;
        }
        peak_resident = peak_resident.max(after);
        if ticks.is_multiple_of(64) {
            peak_rss = peak_rss.max(rss());
        }
        while let ReserveOutcome::Reserved(v) = hub.reserve(consumer, Some(now), now) {
            hub.delete(consumer, v.id, now).expect("delete");
            done += 1;
        }
    }
    assert_eq!(done, jobs, "every job came back");
    let simulated = (now - rotating_from.unwrap_or(now)) as f64 / SECOND as f64;
    loads.sort();
    let load_median = loads.get(loads.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "rotation span {span_ms:>6} ms {mode:>6} | near window peak {peak_resident:>7} jobs, RSS +{:>5.1} MB | tick cpu {:>6.0} us per simulated s, spoke loads {:>4}: median {:>6.2} ms, longest tick wall {:>6.2} ms | put cpu {:>5.2} us/job",
        peak_rss.saturating_sub(rss0) as f64 / 1e6,
        in_tick as f64 / 1e3 / simulated.max(1e-9),
        loads.len(),
        load_median.as_secs_f64() * 1e3,
        longest_wall.as_secs_f64() * 1e3,
        put as f64 / 1e3 / jobs as f64,
    );
}

#[test]
#[ignore = "benchmark: prints figures, takes about a minute"]
fn span_tradeoffs() {
    let jobs = env("YAAD_SPAN_JOBS", 200_000);
    let window = env("YAAD_SPAN_WINDOW", 120);
    for span in SPANS_MS {
        horizon(span, jobs);
    }
    for span in SPANS_MS {
        rotation::<MappedSegment>("mapped", span, window);
        rotation::<LazySegment>("lazy", span, window);
    }
}
