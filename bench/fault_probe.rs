//! What a page fault costs on this machine, in CPU time: touches every page of a fresh
//! anonymous mapping, one write each, and prints the mean CPU time per fault and how many
//! took over 100 µs and over 1 ms. No file, no I/O, no lock: a long fault here is the machine
//! (its virtualization, its memory), not yaad. Run it beside a split benchmark to see what
//! share of long hub-lock holds a fault alone can explain.
//!
//! Usage: fault-probe [MIB] [ROUNDS]   (default 2048 MiB, 3 rounds)

use rustix::time::{ClockId, clock_gettime};

fn cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args
        .next()
        .map_or(2048, |a| a.parse().expect("MIB: a number"));
    let rounds: usize = args
        .next()
        .map_or(3, |a| a.parse().expect("ROUNDS: a number"));
    let page = rustix::param::page_size();
    for round in 1..=rounds {
        let mut map = memmap2::MmapMut::map_anon(mib << 20).expect("anonymous mapping");
        // Base pages only: a huge page would take one fault for 512 of them.
        if let Err(e) = map.advise(memmap2::Advice::NoHugePage) {
            eprintln!("madvise(MADV_NOHUGEPAGE): {e}");
        }
        let pages = map.len() / page;
        let (mut max, mut over_100us, mut over_1ms) = (0u64, 0u64, 0u64);
        let start = cpu_ns();
        for i in 0..pages {
            let before = cpu_ns();
            map[i * page] = 1;
            let took = cpu_ns() - before;
            max = max.max(took);
            over_100us += u64::from(took > 100_000);
            over_1ms += u64::from(took > 1_000_000);
        }
        let total = cpu_ns() - start;
        println!(
            "round {round}: {pages} faults, {:.2} us CPU each, max {:.0} us, over 100 us: {over_100us}, over 1 ms: {over_1ms}",
            total as f64 / pages as f64 / 1000.0,
            max as f64 / 1000.0,
        );
    }
}
