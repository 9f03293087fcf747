//! What the same work costs in CPU time from moment to moment on this machine: runs one fixed
//! chunk of arithmetic over and over (a few registers, no memory traffic, no system call but
//! the clock), sized to take about as long as a split step, and prints how the thread's CPU
//! time per chunk spreads: the median, the max, and how many chunks took 2× and 4× the median
//! and 1 ms or more. The chunk's work never changes, so a chunk far above the median is time
//! the machine took from the thread without the kernel seeing it as steal (a nested virtual
//! machine, a busy sibling hyperthread), not work. Run it alone and beside a split benchmark.
//!
//! Usage: cpu-probe [SECONDS] [CHUNK_US]   (default 60 s, chunks of about 250 µs)

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use rustix::time::{ClockId, clock_gettime};

fn cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// `n` rounds of a xorshift: a dependency chain the CPU cannot skip or overlap.
fn chunk(n: u64) -> u64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args
        .next()
        .map_or(60, |a| a.parse().expect("SECONDS: a number"));
    let chunk_us: u64 = args
        .next()
        .map_or(250, |a| a.parse().expect("CHUNK_US: a number"));
    // Calibrate: the fewest nanoseconds 1M rounds took in 20 tries.
    let per_million = (0..20)
        .map(|_| {
            let t = cpu_ns();
            chunk(1_000_000);
            cpu_ns() - t
        })
        .min()
        .unwrap_or(1)
        .max(1);
    let rounds = chunk_us * 1_000 * 1_000_000 / per_million;
    let start = Instant::now();
    let mut took = Vec::new();
    let mut over_1ms_at = Vec::new();
    while start.elapsed().as_secs() < seconds {
        let t = cpu_ns();
        chunk(rounds);
        let ns = cpu_ns() - t;
        if ns >= 1_000_000 {
            over_1ms_at.push(start.elapsed().as_millis());
        }
        took.push(ns);
    }
    let mut sorted = took.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2].max(1);
    let over = |k: u64| took.iter().filter(|&&t| t >= k * median).count();
    // Written, not printed: a closed pipe (`| head -1`) ends the output, not in a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} chunks of {rounds} rounds: median {:.0} us CPU, p99.9 {:.0} us, max {:.0} us; \
         >= 2x median: {}, >= 4x: {}, >= 1 ms: {}",
        took.len(),
        median as f64 / 1e3,
        sorted[sorted.len() * 999 / 1000] as f64 / 1e3,
        sorted[sorted.len() - 1] as f64 / 1e3,
        over(2),
        over(4),
        over_1ms_at.len(),
    );
    if !over_1ms_at.is_empty() {
        let _ = writeln!(out, "chunks >= 1 ms at (ms from start): {over_1ms_at:?}");
    }
}
