//! Observability: `tracing` logs and statsd metrics through the `metrics` facade.
//!
//! Every metric name yaad emits is a constant here, so the README's table, the code and the
//! tests name the same things. Without `--statsd` no recorder is installed and each metric
//! call is a no-op, so the hot path pays nothing.

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::protocol::{Command, Response};

// Counters `cmd.<command>` (`yaad.cmd.put`) and `error.<REPLY>` (`yaad.error.NOT_FOUND`) are
// named by `command_metric` and `error_metric` below.

// Counters of job life-cycle events, counted by `reply` from the replies sent.
/// Jobs stored (an `INSERTED` or `BURIED <id>` reply).
pub const JOBS_PUT: &str = "jobs.put";
/// Jobs handed out (a `RESERVED` reply, also after a blocked wait and to `reserve-job`).
pub const JOBS_RESERVED: &str = "jobs.reserved";
/// Jobs deleted (a `DELETED` reply).
pub const JOBS_DELETED: &str = "jobs.deleted";
/// Jobs released (a `RELEASED` reply).
pub const JOBS_RELEASED: &str = "jobs.released";
/// Jobs buried (a `BURIED` reply to `bury` or `release`).
pub const JOBS_BURIED: &str = "jobs.buried";
/// Jobs kicked (the count of a `KICKED n` reply, 1 per `kick-job`).
pub const JOBS_KICKED: &str = "jobs.kicked";
/// Reservations whose TTR ran out. Not counted from replies: [`sample`] sends the growth of
/// the hub's running total once a second, so `jobs.timed_out` lags by up to a second.
pub const JOBS_TIMED_OUT: &str = "jobs.timed_out";

// Gauges, set by `sample` once a second.
/// Ready jobs.
pub const JOBS_READY: &str = "jobs.ready";
/// Reserved jobs now (the counter `jobs.reserved` counts reservations).
pub const JOBS_RESERVED_NOW: &str = "jobs.reserved_now";
/// Delayed jobs.
pub const JOBS_DELAYED: &str = "jobs.delayed";
/// Buried jobs now (the counter `jobs.buried` counts buryings).
pub const JOBS_BURIED_NOW: &str = "jobs.buried_now";
/// Open client connections.
pub const CONNECTIONS: &str = "connections";
/// Spokes (time buckets) in the hub.
pub const SPOKES: &str = "spokes";
/// Segments open now: the loaded spokes' and the recently used far ones (mapped in mapped mode).
pub const SEGMENTS_OPEN: &str = "segments.open";
/// Bytes of the live segment files (the sum of every spoke's segment size).
pub const DATA_DIR_BYTES: &str = "data_dir.bytes";

// Timers (histograms, milliseconds).
/// Time to execute one command and build its reply (a blocking reserve: until it starts to
/// wait; not the socket write).
pub const CMD_LATENCY: &str = "cmd.latency";
/// Time of one successful sync of the data files by the sync thread (`-f 0` and `-f MS`;
/// one sync covers every change made before it started).
pub const FLUSH_DURATION: &str = "flush.duration";
/// Time of one timer step (`tick`: expiring reservations, promoting delayed jobs, retiring
/// spokes).
pub const ROTATION_DURATION: &str = "rotation.duration";
/// Time to open the data dir and recover its jobs at start-up (sent once).
pub const RECOVERY_DURATION: &str = "recovery.duration";

/// How log lines are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global `tracing` subscriber on stderr. `RUST_LOG` wins when set; otherwise
/// `verbosity` (the count of `-V`) picks info, debug or trace for yaad.
pub fn init_tracing(verbosity: u8, format: LogFormat) {
    let default = match verbosity {
        0 => "yaad=info",
        1 => "yaad=debug",
        _ => "yaad=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal, not for journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests starting several servers) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Errors starting the statsd exporter.
#[derive(Debug)]
pub struct StatsdSetupError(pub String);

impl std::fmt::Display for StatsdSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "statsd: {}", self.0)
    }
}

impl std::error::Error for StatsdSetupError {}

/// Sends every metric to the statsd server at `addr` (`host:port`), names prefixed with
/// `prefix` (`yaad.cmd.put`). Histograms are sent as timers (`|ms`).
pub fn init_statsd(addr: &str, prefix: &str) -> Result<(), StatsdSetupError> {
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| StatsdSetupError(format!("cannot resolve {addr:?}: {e}")))?
        .next()
        .ok_or_else(|| StatsdSetupError(format!("{addr:?} resolves to no address")))?;
    let recorder =
        metrics_exporter_statsd::StatsdBuilder::from(resolved.ip().to_string(), resolved.port())
            .histogram_is_timer()
            .build(Some(prefix))
            .map_err(|e| StatsdSetupError(e.to_string()))?;
    metrics::set_global_recorder(recorder)
        .map_err(|_| StatsdSetupError("a metrics recorder is already installed".into()))?;
    ENABLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Milliseconds as a float, the unit of every timer.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Set once a recorder is installed: without it the hot path skips even `Instant::now()`.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether `--statsd` installed a recorder (metric calls are no-ops otherwise).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The start of something to time, or `None` when no recorder is installed.
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Records the time since `start` (if any) in the timer `name`.
pub fn finish(name: &'static str, start: Option<Instant>) {
    if let Some(t) = start {
        metrics::histogram!(name).record(millis(t.elapsed()));
    }
}

/// The wire name of a command (`reserve-with-timeout`).
pub fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Put { .. } => "put",
        Command::Use(_) => "use",
        Command::Reserve => "reserve",
        Command::ReserveWithTimeout(_) => "reserve-with-timeout",
        Command::ReserveJob(_) => "reserve-job",
        Command::Delete(_) => "delete",
        Command::Release { .. } => "release",
        Command::Bury { .. } => "bury",
        Command::Touch(_) => "touch",
        Command::Watch(_) => "watch",
        Command::Ignore(_) => "ignore",
        Command::Peek(_) => "peek",
        Command::PeekReady => "peek-ready",
        Command::PeekDelayed => "peek-delayed",
        Command::PeekBuried => "peek-buried",
        Command::Kick(_) => "kick",
        Command::KickJob(_) => "kick-job",
        Command::StatsJob(_) => "stats-job",
        Command::StatsTube(_) => "stats-tube",
        Command::Stats => "stats",
        Command::ListTubes => "list-tubes",
        Command::ListTubeUsed => "list-tube-used",
        Command::ListTubesWatched => "list-tubes-watched",
        Command::PauseTube { .. } => "pause-tube",
        Command::Quit => "quit",
    }
}

/// Statsd has no labels, so each command has a name of its own (`cmd.put`).
pub fn command_metric(cmd: &Command) -> &'static str {
    macro_rules! names {
        ($($wire:literal),* $(,)?) => {
            match command_name(cmd) {
                $($wire => concat!("cmd.", $wire),)*
                _ => "cmd.unknown",
            }
        };
    }
    names!(
        "put",
        "use",
        "reserve",
        "reserve-with-timeout",
        "reserve-job",
        "delete",
        "release",
        "bury",
        "touch",
        "watch",
        "ignore",
        "peek",
        "peek-ready",
        "peek-delayed",
        "peek-buried",
        "kick",
        "kick-job",
        "stats-job",
        "stats-tube",
        "stats",
        "list-tubes",
        "list-tube-used",
        "list-tubes-watched",
        "pause-tube",
        "quit",
    )
}

/// The error counter of a reply (`error.NOT_FOUND`), `None` for a successful reply.
pub fn error_metric(resp: &Response) -> Option<&'static str> {
    Some(match resp {
        Response::BadFormat => "error.BAD_FORMAT",
        Response::UnknownCommand => "error.UNKNOWN_COMMAND",
        Response::ExpectedCrlf => "error.EXPECTED_CRLF",
        Response::JobTooBig => "error.JOB_TOO_BIG",
        Response::Draining => "error.DRAINING",
        Response::NotFound => "error.NOT_FOUND",
        Response::NotIgnored => "error.NOT_IGNORED",
        Response::TimedOut => "error.TIMED_OUT",
        Response::DeadlineSoon => "error.DEADLINE_SOON",
        Response::OutOfMemory => "error.OUT_OF_MEMORY",
        Response::InternalError => "error.INTERNAL_ERROR",
        _ => return None,
    })
}

/// Counts one command (its [`command_metric`] name) and records its latency (from `start`,
/// see [`start`]).
pub fn command(name: &'static str, start: Option<Instant>) {
    if let Some(t) = start {
        metrics::counter!(name).increment(1);
        metrics::histogram!(CMD_LATENCY).record(millis(t.elapsed()));
    }
}

/// Counts one reply: error replies by word, successful job changes by kind.
pub fn reply(resp: &Response) {
    if !enabled() {
        return;
    }
    if let Some(name) = error_metric(resp) {
        metrics::counter!(name).increment(1);
        return;
    }
    let (name, n) = match resp {
        Response::Inserted(_) | Response::InsertedBuried(_) => (JOBS_PUT, 1),
        Response::Reserved { .. } => (JOBS_RESERVED, 1),
        Response::Deleted => (JOBS_DELETED, 1),
        Response::Released => (JOBS_RELEASED, 1),
        Response::Buried => (JOBS_BURIED, 1),
        Response::Kicked(n) => (JOBS_KICKED, *n),
        Response::KickedJob => (JOBS_KICKED, 1),
        _ => return,
    };
    metrics::counter!(name).increment(n);
}

/// Seconds since the epoch of the last [`warn_out_of_room`] warning (one per minute at most).
static LAST_OUT_OF_ROOM_WARNING: AtomicU64 = AtomicU64::new(0);

/// Warns (once a minute at most) that a change is refused for want of room: the disk is full,
/// or a system limit was reached (`e` says which).
pub fn warn_out_of_room(e: &crate::segment::StorageError) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_OUT_OF_ROOM_WARNING.load(Ordering::Relaxed);
    if now >= last.saturating_add(60)
        && LAST_OUT_OF_ROOM_WARNING
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let hint = match e {
            crate::segment::StorageError::Exhausted { .. } => {
                " In --mode mapped every spoke holding jobs (one per second of trigger times) \
                 is a memory mapping: raise vm.max_map_count, or use --mode lazy."
            }
            _ => "",
        };
        tracing::warn!("{e}: answering OUT_OF_MEMORY (warned at most once a minute).{hint}");
    }
}

/// What the sampler reads once a second.
pub struct Sample {
    pub ready: u64,
    pub reserved: u64,
    pub delayed: u64,
    pub buried: u64,
    pub connections: u64,
    pub spokes: u64,
    pub segments_open: u64,
    pub data_bytes: u64,
    /// The hub's running total of TTR expiries.
    pub timeouts: u64,
}

/// Sends the gauges of one sample, and the timeouts since `previous` as a counter.
pub fn sample(s: &Sample, previous: Option<&Sample>) {
    metrics::gauge!(JOBS_READY).set(s.ready as f64);
    metrics::gauge!(JOBS_RESERVED_NOW).set(s.reserved as f64);
    metrics::gauge!(JOBS_DELAYED).set(s.delayed as f64);
    metrics::gauge!(JOBS_BURIED_NOW).set(s.buried as f64);
    metrics::gauge!(CONNECTIONS).set(s.connections as f64);
    metrics::gauge!(SPOKES).set(s.spokes as f64);
    metrics::gauge!(SEGMENTS_OPEN).set(s.segments_open as f64);
    metrics::gauge!(DATA_DIR_BYTES).set(s.data_bytes as f64);
    let before = previous.map_or(0, |p| p.timeouts);
    let timed_out = s.timeouts.saturating_sub(before);
    if timed_out > 0 {
        metrics::counter!(JOBS_TIMED_OUT).increment(timed_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_error_has_a_metric_name() {
        assert_eq!(
            command_metric(&Command::ReserveWithTimeout(1)),
            "cmd.reserve-with-timeout"
        );
        assert_eq!(command_metric(&Command::PeekBuried), "cmd.peek-buried");
        assert_eq!(error_metric(&Response::NotFound), Some("error.NOT_FOUND"));
        assert_eq!(error_metric(&Response::Deleted), None);
    }

    #[test]
    fn log_and_statsd_flags() {
        use clap::Parser;
        let c = crate::server::Config::parse_from(["yaad"]);
        assert_eq!(
            (c.log_format, c.statsd_prefix.as_str()),
            (LogFormat::Text, "yaad")
        );
        let c = crate::server::Config::parse_from([
            "yaad",
            "--log-format",
            "json",
            "--statsd-prefix",
            "q",
        ]);
        assert_eq!(
            (c.log_format, c.statsd_prefix.as_str()),
            (LogFormat::Json, "q")
        );
    }
}
