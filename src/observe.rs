//! Observability: `tracing` logs and statsd metrics through the `metrics` facade.
//!
//! Every metric name yaad emits is a constant here, so the README's table, the code and the
//! tests name the same things. Without `--statsd` no recorder is installed and each metric
//! call is a no-op, so the hot path pays nothing.

use std::net::ToSocketAddrs;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

// Counters `cmd.<command>` (`yaad.cmd.put`) and `error.<REPLY>` (`yaad.error.NOT_FOUND`) are
// named by `command_metric` and `error_metric` below.
/// Counters: job life-cycle events.
pub const JOBS_PUT: &str = "jobs.put";
pub const JOBS_RESERVED: &str = "jobs.reserved";
pub const JOBS_DELETED: &str = "jobs.deleted";
pub const JOBS_RELEASED: &str = "jobs.released";
pub const JOBS_BURIED: &str = "jobs.buried";
pub const JOBS_KICKED: &str = "jobs.kicked";
pub const JOBS_TIMED_OUT: &str = "jobs.timed_out";
/// Gauges: jobs per state, sampled once a second.
pub const JOBS_READY: &str = "jobs.ready";
pub const JOBS_RESERVED_NOW: &str = "jobs.reserved_now";
pub const JOBS_DELAYED: &str = "jobs.delayed";
pub const JOBS_BURIED_NOW: &str = "jobs.buried_now";
/// Gauges: server and storage state, sampled once a second.
pub const CONNECTIONS: &str = "connections";
pub const SPOKES: &str = "spokes";
pub const SEGMENTS_MAPPED: &str = "segments.mapped";
pub const DATA_DIR_BYTES: &str = "data_dir.bytes";
/// Timers (histograms, milliseconds): command latency, flush, rotation, recovery.
pub const CMD_LATENCY: &str = "cmd.latency";
pub const FLUSH_DURATION: &str = "flush.duration";
pub const ROTATION_DURATION: &str = "rotation.duration";
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
        .with_writer(std::io::stderr);
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
        .map_err(|_| StatsdSetupError("a metrics recorder is already installed".into()))
}

/// Milliseconds as a float, the unit of every timer.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Statsd has no labels, so each command and each error reply has a name of its own.
macro_rules! names {
    ($fn_name:ident, $prefix:literal, [$($wire:literal),* $(,)?]) => {
        /// The metric name for a wire word, or `None` for a word yaad never sends or receives.
        pub fn $fn_name(wire: &str) -> Option<&'static str> {
            match wire {
                $($wire => Some(concat!($prefix, $wire)),)*
                _ => None,
            }
        }
    };
}

names!(
    command_metric,
    "cmd.",
    [
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
    ]
);

names!(
    error_metric,
    "error.",
    [
        "BAD_FORMAT",
        "UNKNOWN_COMMAND",
        "EXPECTED_CRLF",
        "JOB_TOO_BIG",
        "DRAINING",
        "NOT_FOUND",
        "NOT_IGNORED",
        "TIMED_OUT",
        "DEADLINE_SOON",
        "OUT_OF_MEMORY",
        "INTERNAL_ERROR",
    ]
);

/// Counts one command by its wire name (`put`, `reserve-with-timeout`, ...) and times it.
pub fn command(wire: &str, latency: Duration) {
    if let Some(name) = command_metric(wire) {
        metrics::counter!(name).increment(1);
        metrics::histogram!(CMD_LATENCY).record(millis(latency));
    }
}

/// Counts one error reply by its wire word (`BAD_FORMAT`, `NOT_FOUND`, ...).
pub fn error_reply(word: &str) {
    if let Some(name) = error_metric(word) {
        metrics::counter!(name).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_error_has_a_metric_name() {
        assert_eq!(
            command_metric("reserve-with-timeout"),
            Some("cmd.reserve-with-timeout")
        );
        assert_eq!(error_metric("NOT_FOUND"), Some("error.NOT_FOUND"));
        assert_eq!(command_metric("PUT"), None);
    }
}
