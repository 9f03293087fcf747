//! yaad-bench: a load generator for any beanstalkd-protocol server.
//!
//! Modes: `cycle` (put → reserve → delete per unit), `put` (optionally delayed), `drain`
//! (reserve-with-timeout + delete until the tube is empty) and `timing` (producers put jobs
//! stamped with their trigger time, consumers measure how late each arrives and count early,
//! missing and duplicate deliveries). It prints human-readable lines and then one JSON line;
//! the exit code is 1 when any reply was unexpected, a connection failed, or (timing) a job
//! arrived early, twice, or not at all.
//!
//! It is a small client of its own ([`conn`], [`reply`]) rather than a user of
//! [`crate::protocol`], and by default runs on one thread, to take as little CPU per operation
//! as it can from the server it measures.

pub mod conn;
pub mod reply;
pub mod stats;
pub mod timing;
pub mod workload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use conn::Conn;
use stats::{Op, Tally, process_cpu_us};
use timing::{Book, Consumer, HostProbe, Producer, STAMP_LEN, TimingSummary, lock};
use workload::{Chain, DelayRange, Hooks, NoHooks, Plan, drive};

/// What the generator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// put → reserve → delete, again and again on every connection.
    Cycle,
    /// put only (with --delay, delayed puts).
    Put,
    /// put → delete by id, again and again (with --named: put-named → delete-name).
    PutDelete,
    /// reserve-with-timeout + delete until the tube stays empty for --timeout seconds.
    Drain,
    /// Producers put jobs stamped with their trigger time; consumers measure lateness.
    Timing,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Cycle => "cycle",
            Mode::Put => "put",
            Mode::PutDelete => "put-delete",
            Mode::Drain => "drain",
            Mode::Timing => "timing",
        }
    }

    /// What one unit of work is called in the output.
    fn unit(self) -> &'static str {
        match self {
            Mode::Cycle => "cycles",
            Mode::Put => "puts",
            Mode::PutDelete => "put/delete cycles",
            Mode::Drain => "jobs drained",
            Mode::Timing => "units (puts and jobs consumed)",
        }
    }
}

/// Command-line options of `yaad-bench`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "yaad-bench",
    version,
    about = "Load generator for beanstalkd-protocol servers (yaad, beanstalkd)"
)]
pub struct Options {
    /// Workload to run.
    #[arg(value_enum)]
    pub mode: Mode,
    /// Server address: HOST:PORT, or unix:PATH for a Unix-domain socket.
    #[arg(long, default_value = "127.0.0.1:11300")]
    pub addr: String,
    /// Connections (in timing mode: consumer connections).
    #[arg(long, default_value_t = 10)]
    pub conns: usize,
    /// Body size in bytes (timing mode needs at least 28).
    #[arg(long, default_value_t = 100)]
    pub body: usize,
    /// Run for this many seconds (cycle and put default to 10 when --count is not given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Units in all (cycles, puts, jobs drained, timing jobs), shared among the connections.
    #[arg(long)]
    pub count: Option<u64>,
    /// Tube to use and watch.
    #[arg(long, default_value = "default")]
    pub tube: String,
    /// Commands in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Put delays in seconds, uniform over A..B inclusive, or a single value
    /// (put: default 0; timing: default 1..2).
    #[arg(long, value_parser = DelayRange::parse)]
    pub delay: Option<DelayRange>,
    /// Units per second over all connections (timing producers: default 1000).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Priority of puts.
    #[arg(long, default_value_t = 1024)]
    pub pri: u32,
    /// Time-to-run of puts, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttr: u32,
    /// reserve-with-timeout seconds (drain, timing consumers).
    #[arg(long, default_value_t = 1)]
    pub timeout: u32,
    /// Timing mode: producer connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Timing mode: put this many far-delayed jobs first (same tube, --background-delay).
    #[arg(long, default_value_t = 0)]
    pub background: u64,
    /// Timing mode: delays of the background jobs, in seconds.
    #[arg(long, default_value = "3600..7200", value_parser = DelayRange::parse)]
    pub background_delay: DelayRange,
    /// Timing mode: seconds to wait past the last trigger time for missing jobs.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    /// Abandon a connection that gets no reply for this many seconds (counted as an error).
    #[arg(long, default_value_t = 10.0)]
    pub idle_timeout: f64,
    /// Count puts the server refuses (OUT_OF_MEMORY, DRAINING, JOB_TOO_BIG, BURIED, ...) under
    /// `refused` without making them errors: for loads meant to find a server's limits.
    #[arg(long)]
    pub refusals_ok: bool,
    /// Named jobs (yaad): every put is a put-named with a name of its own, and put-delete
    /// deletes by name (cycle still deletes the reserved job by id).
    #[arg(long)]
    pub named: bool,
    /// Runtime threads (1: a single-threaded runtime, the cheapest per operation).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl Options {
    fn check(&self) -> Result<(), String> {
        if self.conns == 0 || self.pipeline == 0 || self.threads == 0 || self.producers == 0 {
            return Err("--conns, --pipeline, --threads and --producers must be at least 1".into());
        }
        for (name, v) in [
            ("--duration", self.duration),
            ("--rate", self.rate),
            ("--grace", Some(self.grace)),
            ("--idle-timeout", Some(self.idle_timeout)),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0 || name == "--grace" && v == 0.0)
            {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        if self.mode == Mode::Timing && self.body < STAMP_LEN {
            return Err(format!(
                "timing mode needs --body of at least {STAMP_LEN} bytes"
            ));
        }
        Ok(())
    }
}

/// A finished run.
pub struct Report {
    pub mode: Mode,
    pub addr: String,
    pub conns: usize,
    pub pipeline: usize,
    pub body: usize,
    pub tube: String,
    /// From the start of the workload (connections already open) to its last completed unit.
    pub elapsed: Duration,
    /// From the start of the workload to its end (including a drain's final empty wait).
    pub wall: Duration,
    pub tally: Tally,
    /// CPU time of the generator itself over the run, in µs.
    pub cpu_us: u64,
    pub timing: Option<TimingSummary>,
    /// Timing mode's background load: jobs put and seconds taken.
    pub background: Option<(u64, f64)>,
}

impl Report {
    fn per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.tally.units as f64 / secs
        } else {
            0.0
        }
    }

    /// Commands answered as expected (the latency histograms) plus refused puts.
    fn commands(&self) -> u64 {
        self.tally.ops.iter().map(|h| h.count()).sum::<u64>() + self.tally.refused_total()
    }

    /// Human-readable summary.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "yaad-bench {}: {}, {} conns, pipeline {}, body {} B, tube {}",
            self.mode.name(),
            self.addr,
            self.conns,
            self.pipeline,
            self.body,
            self.tube
        )];
        if let Some((jobs, secs)) = self.background {
            lines.push(format!(
                "background: {jobs} delayed jobs put in {secs:.2} s"
            ));
        }
        lines.push(format!(
            "{} {} in {:.2} s = {:.0}/s (run {:.2} s); errors {}; empty reserves {}",
            self.tally.units,
            self.mode.unit(),
            self.elapsed.as_secs_f64(),
            self.per_s(),
            self.wall.as_secs_f64(),
            self.tally.errors,
            self.tally.timeouts
        ));
        if !self.tally.refused.is_empty() {
            let kinds: Vec<String> = self
                .tally
                .refused
                .iter()
                .map(|(word, n)| format!("{word} {n}"))
                .collect();
            lines.push(format!(
                "refused puts: {} ({})",
                self.tally.refused_total(),
                kinds.join(", ")
            ));
        }
        for (op, name) in [
            (Op::Put, "put"),
            (Op::Reserve, "reserve"),
            (Op::Delete, "delete"),
        ] {
            lines.extend(self.tally.ops[op as usize].line(name));
        }
        if matches!(self.mode, Mode::Cycle | Mode::PutDelete) {
            lines.extend(self.tally.unit.line("cycle"));
        }
        if let Some(t) = &self.timing {
            lines.extend(t.lines());
        }
        let commands = self.commands().max(1);
        lines.push(format!(
            "client cpu: {:.2} s ({:.2} µs per command)",
            self.cpu_us as f64 / 1e6,
            self.cpu_us as f64 / commands as f64
        ));
        lines
    }

    /// The final machine-readable line.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "mode": self.mode.name(),
            "addr": self.addr,
            "conns": self.conns,
            "pipeline": self.pipeline,
            "body": self.body,
            "tube": self.tube,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "wall_s": (self.wall.as_secs_f64() * 1000.0).round() / 1000.0,
            "units": self.tally.units,
            "per_s": self.per_s().round(),
            "commands": self.commands(),
            "errors": self.tally.errors,
            "refused": self.tally.refused_total(),
            "refused_by_reply": self.tally.refused,
            "empty_reserves": self.tally.timeouts,
            "client_cpu_s": self.cpu_us as f64 / 1e6,
            "client_cpu_us_per_command":
                ((self.cpu_us as f64 / self.commands().max(1) as f64) * 100.0).round() / 100.0,
            "latency_us": {
                "put": self.tally.ops[Op::Put as usize].to_json(),
                "reserve": self.tally.ops[Op::Reserve as usize].to_json(),
                "delete": self.tally.ops[Op::Delete as usize].to_json(),
                "unit": self.tally.unit.to_json(),
            },
        });
        if let Some(t) = &self.timing {
            v["timing"] = t.to_json();
        }
        if let Some((jobs, secs)) = self.background {
            v["background"] = json!({ "jobs": jobs, "secs": secs });
        }
        v
    }

    /// 0 when everything went as expected, else 1.
    pub fn exit_code(&self) -> i32 {
        let violations = self.timing.as_ref().map_or(0, |t| t.violations());
        i32::from(self.tally.errors > 0 || violations > 0)
    }
}

/// Runs the generator as the `yaad-bench` binary does and returns its exit code.
pub fn main(opts: Options) -> i32 {
    if let Err(e) = opts.check() {
        eprintln!("yaad-bench: {e}");
        return 2;
    }
    let runtime = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("yaad-bench: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(&opts)) {
        Ok(report) => {
            for line in report.lines() {
                println!("{line}");
            }
            for m in &report.tally.messages {
                eprintln!("yaad-bench: error: {m}");
            }
            println!("{}", report.to_json());
            report.exit_code()
        }
        Err(e) => {
            eprintln!("yaad-bench: {e}");
            println!(
                "{}",
                json!({ "mode": opts.mode.name(), "addr": opts.addr, "errors": 1, "fatal": e })
            );
            1
        }
    }
}

/// Runs one workload and reports on it. `Err` when the run could not start (connection refused,
/// tube setup failed).
pub async fn run(opts: &Options) -> Result<Report, String> {
    let mut cpu_before = process_cpu_us();
    let seed = timing::wall_us();
    let idle = Duration::from_secs_f64(opts.idle_timeout);
    let mut timing_summary = None;
    let mut background = None;
    let (tally, start) = match opts.mode {
        Mode::Cycle | Mode::Put | Mode::PutDelete | Mode::Drain => {
            let (chain, duration) = match opts.mode {
                Mode::Cycle => (Chain::Cycle, default_duration(opts)),
                Mode::Put => (Chain::Put, default_duration(opts)),
                Mode::PutDelete => (Chain::PutDelete, default_duration(opts)),
                _ => (
                    Chain::Consume {
                        timeout: opts.timeout,
                    },
                    opts.duration,
                ),
            };
            let conns = connect_all(opts, opts.conns, chain != Chain::Put).await?;
            let start = Instant::now();
            let plan = Plan {
                chain,
                pipeline: opts.pipeline,
                quota: None,
                deadline: duration.map(|d| start + Duration::from_secs_f64(d)),
                rate: opts.rate.map(|r| r / opts.conns as f64),
                pri: opts.pri,
                ttr: opts.ttr,
                body: opts.body,
                delay: opts.delay.unwrap_or(DelayRange::ZERO),
                seed,
                refusals_ok: opts.refusals_ok,
                named: opts.named,
            };
            let tasks = spawn_all(conns, &plan, opts.count, start, |_| NoHooks);
            let tally = join_watched(tasks, idle).await;
            (tally, start)
        }
        Mode::Timing => {
            if opts.background > 0 {
                let began = Instant::now();
                let conns = connect_all(opts, opts.conns, false).await?;
                let plan = Plan {
                    chain: Chain::Put,
                    pipeline: opts.pipeline.max(32),
                    quota: None,
                    deadline: None,
                    rate: None,
                    pri: opts.pri,
                    ttr: opts.ttr,
                    body: opts.body,
                    delay: opts.background_delay,
                    seed: seed ^ 0xB6,
                    refusals_ok: false,
                    named: false,
                };
                let tasks = spawn_all(conns, &plan, Some(opts.background), began, |_| NoHooks);
                let t = join_watched(tasks, idle).await;
                if t.errors > 0 {
                    return Err(format!(
                        "loading the background jobs failed: {}",
                        t.messages.join("; ")
                    ));
                }
                background = Some((t.units, began.elapsed().as_secs_f64()));
                // The generator's CPU figure covers the timing run, not the background load.
                cpu_before = process_cpu_us();
            }
            let run_id = (seed ^ (seed >> 32)) as u32;
            let book = Arc::new(Mutex::new(Book::new(run_id, (opts.grace * 1e6) as u64)));
            let consumers = connect_all(opts, opts.conns, true).await?;
            let producers = connect_all(opts, opts.producers, false).await?;
            let probe = HostProbe::start().map_err(|e| format!("host probe thread: {e}"))?;
            let start = Instant::now();
            let count = match (opts.count, opts.duration) {
                (None, None) => Some(10_000),
                (count, _) => count,
            };
            let consume = Plan {
                chain: Chain::Consume {
                    timeout: opts.timeout,
                },
                pipeline: opts.pipeline,
                quota: None,
                deadline: None,
                rate: None,
                pri: opts.pri,
                ttr: opts.ttr,
                body: opts.body,
                delay: DelayRange::ZERO,
                seed,
                refusals_ok: opts.refusals_ok,
                named: false,
            };
            let produce = Plan {
                chain: Chain::Put,
                deadline: opts.duration.map(|d| start + Duration::from_secs_f64(d)),
                rate: Some(opts.rate.unwrap_or(1000.0) / opts.producers as f64),
                delay: opts.delay.unwrap_or(DelayRange { lo: 1, hi: 2 }),
                ..consume.clone()
            };
            let consumer_tasks = spawn_all(consumers, &consume, None, start, |_| Consumer {
                book: book.clone(),
            });
            let producer_tasks = spawn_all(producers, &produce, count, start, |i| Producer {
                book: book.clone(),
                run: run_id,
                producer: i as u64,
                next_seq: 0,
            });
            let mut tally = join_watched(producer_tasks, idle).await;
            lock(&book).producers_done();
            tally.merge(&join_watched(consumer_tasks, idle).await);
            let mut summary = lock(&book).summary();
            summary.host_oversleep = probe.finish();
            timing_summary = Some(summary);
            (tally, start)
        }
    };
    Ok(Report {
        mode: opts.mode,
        addr: opts.addr.clone(),
        conns: opts.conns,
        pipeline: opts.pipeline,
        body: opts.body,
        tube: opts.tube.clone(),
        elapsed: tally
            .last_unit
            .map_or(Duration::ZERO, |t| t.duration_since(start)),
        wall: start.elapsed(),
        tally,
        cpu_us: process_cpu_us().saturating_sub(cpu_before),
        timing: timing_summary,
        background,
    })
}

/// Cycle and put run for 10 s unless told a count or a duration.
fn default_duration(opts: &Options) -> Option<f64> {
    match (opts.count, opts.duration) {
        (None, None) => Some(10.0),
        (_, d) => d,
    }
}

/// Opens `n` connections and selects the tube on each (watching it when `watch`).
async fn connect_all(opts: &Options, n: usize, watch: bool) -> Result<Vec<Conn>, String> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let addr = opts.addr.clone();
        let tube = opts.tube.clone();
        set.spawn(async move {
            let mut conn = Conn::connect(&addr).await?;
            conn.select_tube(&tube, watch).await?;
            Ok::<_, conn::ConnError>(conn)
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(e)) => return Err(format!("cannot connect to {}: {e}", opts.addr)),
            Err(e) => return Err(format!("connection task failed: {e}")),
        }
    }
    Ok(conns)
}

/// The share of `total` for connection `i` of `n`.
fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((i as u64) < total % n)
}

struct Watched {
    handle: JoinHandle<Tally>,
    /// Bumped by the connection on every read; a connection whose counter stands still for the
    /// idle timeout is abandoned.
    progress: Arc<AtomicU64>,
}

fn spawn_all<H, F>(
    conns: Vec<Conn>,
    plan: &Plan,
    count: Option<u64>,
    start: Instant,
    mut hooks: F,
) -> Vec<Watched>
where
    H: Hooks + Send + 'static,
    F: FnMut(usize) -> H,
{
    let n = conns.len();
    conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let mut plan = plan.clone();
            plan.quota = count.map(|c| share(c, n, i));
            plan.seed = plan.seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9));
            let mut h = hooks(i);
            let progress = Arc::new(AtomicU64::new(0));
            let p = progress.clone();
            let handle =
                tokio::spawn(async move { drive(&mut conn, &plan, &mut h, start, &p).await });
            Watched { handle, progress }
        })
        .collect()
}

/// Waits for every connection, abandoning one that makes no progress for `idle`.
async fn join_watched(tasks: Vec<Watched>, idle: Duration) -> Tally {
    let mut total = Tally::default();
    for mut task in tasks {
        loop {
            let before = task.progress.load(Ordering::Relaxed);
            match tokio::time::timeout(idle, &mut task.handle).await {
                Ok(Ok(tally)) => {
                    total.merge(&tally);
                    break;
                }
                Ok(Err(e)) => {
                    total.error(format!("connection task failed: {e}"));
                    break;
                }
                Err(_) if task.progress.load(Ordering::Relaxed) == before => {
                    task.handle.abort();
                    total.error(format!(
                        "no reply for {:.1} s; connection abandoned",
                        idle.as_secs_f64()
                    ));
                    break;
                }
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [0, 1, 7, 100, 101] {
            for n in 1..12 {
                let sum: u64 = (0..n).map(|i| share(total, n, i)).sum();
                assert_eq!(sum, total, "total {total} over {n}");
                let max = (0..n).map(|i| share(total, n, i)).max().unwrap_or(0);
                let min = (0..n).map(|i| share(total, n, i)).min().unwrap_or(0);
                assert!(max - min <= 1);
            }
        }
    }

    #[test]
    fn options_are_checked() {
        let parse = |args: &[&str]| {
            Options::try_parse_from(std::iter::once("yaad-bench").chain(args.iter().copied()))
        };
        assert!(parse(&["cycle"]).unwrap().check().is_ok());
        assert!(parse(&["cycle", "--conns", "0"]).unwrap().check().is_err());
        assert!(parse(&["put", "--duration=-1"]).unwrap().check().is_err());
        assert!(parse(&["timing", "--body", "10"]).unwrap().check().is_err());
        assert!(parse(&["timing", "--grace", "0"]).unwrap().check().is_ok());
        assert!(parse(&["put", "--delay", "9..3"]).is_err());
        let o = parse(&["put", "--delay", "3600..7200", "--count", "5"]).unwrap();
        assert_eq!(o.delay, Some(DelayRange { lo: 3600, hi: 7200 }));
        assert_eq!(default_duration(&o), None);
        assert_eq!(default_duration(&parse(&["cycle"]).unwrap()), Some(10.0));
    }
}
