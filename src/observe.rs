//! Observability: `tracing` logs, and metrics through the `metrics` facade to statsd
//! (`--statsd`) and to a Prometheus endpoint (`--metrics-addr`), or both.
//!
//! Every metric name yaad emits is a constant here, so the README's table, the code and the
//! tests name the same things. The names are statsd's (`jobs.put`, histograms in
//! milliseconds); [`prometheus_name`] says what each becomes in Prometheus (`yaad_jobs_put_total`,
//! seconds), and the Prometheus recorder renames through it. Without either flag no recorder
//! is installed and each metric call is a no-op, so the hot path pays nothing. With one, the
//! handles of the per-command metrics are registered once ([`Handles`]): a command costs a
//! few atomic adds, no lookup and no allocation.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, HistogramFn, Key, KeyName, Label, Metadata, Recorder};
use metrics::{SharedString, Unit};
use tracing_subscriber::EnvFilter;

use crate::protocol::{Command, Response};

/// The wire names of the commands, in [`command_index`] order. statsd counts each as
/// `cmd.<name>` (`yaad.cmd.put`), Prometheus as `yaad_commands_total{command="<name>"}`.
pub const COMMANDS: [&str; 31] = [
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
    "put-named",
    "put-replace",
    "delete-name",
    "peek-name",
    "kick-name",
    "touch-name",
];

/// The error replies counted, in [`error_index`] order. statsd counts each as
/// `error.<REPLY>` (`yaad.error.NOT_FOUND`), Prometheus as `yaad_errors_total{reply="<REPLY>"}`.
pub const ERRORS: [&str; 11] = [
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
];

// Counters of job life-cycle events, counted by `reply` from the replies sent.
/// Jobs stored (an `INSERTED` or `BURIED <id>` reply).
pub const JOBS_PUT: &str = "jobs.put";
/// Jobs handed out (a `RESERVED` reply, also after a blocked wait and to `reserve-job`).
pub const JOBS_RESERVED: &str = "jobs.reserved";
/// Named jobs given a new body and schedule (a `REPLACED <id>` reply to `put-replace`).
pub const JOBS_REPLACED: &str = "jobs.replaced";
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
/// Changes made durable by the syncs of `-f 0` and `-f MS` (changes per sync: this over the
/// count of `sync.duration`).
pub const SYNC_CHANGES: &str = "sync.changes";

// Gauges, set by `sample` once a second.
/// Ready jobs.
pub const JOBS_READY: &str = "jobs.ready";
/// Reserved jobs now (the counter `jobs.reserved` counts reservations).
pub const JOBS_RESERVED_NOW: &str = "jobs.reserved_now";
/// Delayed jobs.
pub const JOBS_DELAYED: &str = "jobs.delayed";
/// Buried jobs now (the counter `jobs.buried` counts buryings).
pub const JOBS_BURIED_NOW: &str = "jobs.buried_now";
/// Jobs of one tube in one state (labels `tube`, `state`). Prometheus only: statsd has no
/// labels ([`STATSD_SKIPS`]).
pub const TUBE_JOBS: &str = "tube.jobs";
/// Open client connections.
pub const CONNECTIONS: &str = "connections";
/// Spokes (time buckets) in the hub.
pub const SPOKES: &str = "spokes";
/// Segments open now: the loaded spokes' and the recently used far ones (mapped in mapped mode).
pub const SEGMENTS_OPEN: &str = "segments.open";
/// Bytes of the live segment files (the sum of every spoke's segment size).
pub const DATA_DIR_BYTES: &str = "data_dir.bytes";

// Timers: histograms of milliseconds (Prometheus: seconds).
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
/// Time a caller waited for the hub lock, one value per wait (an uncontended lock: none).
pub const HUB_LOCK_WAIT: &str = "hub_lock.wait";
/// Delivery lateness: for each timer step that hands out jobs to blocked reserves, the time
/// from the deadline the timer woke for (the earliest trigger time due) to the replies handed
/// out. Jobs nobody was waiting for are late through no fault of the server: not counted.
pub const DELIVERY_LATENESS: &str = "delivery.lateness";

/// The metrics not sent to statsd (it has no labels).
pub const STATSD_SKIPS: [&str; 1] = [TUBE_JOBS];

/// What a statsd-named metric is called in Prometheus: its name and, for the metrics one
/// Prometheus name stands for, the label that tells them apart (`cmd.put`:
/// `yaad_commands_total` with `command="put"`). `None`: not a metric of yaad's.
pub fn prometheus_name(statsd: &str) -> Option<(&'static str, Option<(&'static str, &str)>)> {
    let (name, label) = match statsd {
        JOBS_PUT => ("yaad_jobs_put_total", None),
        JOBS_RESERVED => ("yaad_jobs_reserved_total", None),
        JOBS_DELETED => ("yaad_jobs_deleted_total", None),
        JOBS_RELEASED => ("yaad_jobs_released_total", None),
        JOBS_BURIED => ("yaad_jobs_buried_total", None),
        JOBS_KICKED => ("yaad_jobs_kicked_total", None),
        JOBS_REPLACED => ("yaad_jobs_replaced_total", None),
        JOBS_TIMED_OUT => ("yaad_jobs_timed_out_total", None),
        SYNC_CHANGES => ("yaad_sync_changes_total", None),
        JOBS_READY => ("yaad_jobs", Some(("state", "ready"))),
        JOBS_RESERVED_NOW => ("yaad_jobs", Some(("state", "reserved"))),
        JOBS_DELAYED => ("yaad_jobs", Some(("state", "delayed"))),
        JOBS_BURIED_NOW => ("yaad_jobs", Some(("state", "buried"))),
        TUBE_JOBS => ("yaad_tube_jobs", None),
        CONNECTIONS => ("yaad_connections", None),
        SPOKES => ("yaad_spokes", None),
        SEGMENTS_OPEN => ("yaad_segments_open", None),
        DATA_DIR_BYTES => ("yaad_data_dir_bytes", None),
        CMD_LATENCY => ("yaad_command_duration_seconds", None),
        FLUSH_DURATION => ("yaad_sync_duration_seconds", None),
        ROTATION_DURATION => ("yaad_tick_duration_seconds", None),
        RECOVERY_DURATION => ("yaad_recovery_duration_seconds", None),
        HUB_LOCK_WAIT => ("yaad_hub_lock_wait_seconds", None),
        DELIVERY_LATENESS => ("yaad_delivery_lateness_seconds", None),
        _ => {
            if let Some(c) = statsd.strip_prefix("cmd.")
                && COMMANDS.contains(&c)
            {
                return Some(("yaad_commands_total", Some(("command", c))));
            }
            if let Some(r) = statsd.strip_prefix("error.")
                && ERRORS.contains(&r)
            {
                return Some(("yaad_errors_total", Some(("reply", r))));
            }
            return None;
        }
    };
    Some((name, label))
}

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

/// Where metrics go: `--statsd` (address and name prefix) and `--metrics-addr`.
#[derive(Clone, Debug, Default)]
pub struct MetricsConfig {
    pub statsd: Option<(String, String)>,
    pub prometheus: Option<String>,
}

/// A metrics destination that could not be set up; the message names its flag.
#[derive(Debug)]
pub struct MetricsSetupError(pub String);

impl std::fmt::Display for MetricsSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetricsSetupError {}

/// The first address `addr` (`host:port`) resolves to; errors name `flag`.
fn resolve(flag: &str, addr: &str) -> Result<SocketAddr, MetricsSetupError> {
    addr.to_socket_addrs()
        .map_err(|e| MetricsSetupError(format!("{flag} {addr:?}: cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| MetricsSetupError(format!("{flag} {addr:?} resolves to no address")))
}

/// The upper bounds of the Prometheus histograms' buckets, in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Installs the metrics recorder `cfg` asks for (none: metric calls stay no-ops): statsd lines
/// to `--statsd` (histograms as timers, `|ms`), and `/metrics` served on `--metrics-addr`
/// (bound now: a port in use is an error here). With both, every metric call goes to both.
/// Must be called inside a tokio runtime when `cfg.prometheus` is set (the endpoint is a task).
pub fn init_metrics(cfg: &MetricsConfig) -> Result<(), MetricsSetupError> {
    let mut fanout = metrics_util::layers::FanoutBuilder::default();
    if let Some((addr, prefix)) = &cfg.statsd {
        let to = resolve("--statsd", addr)?;
        let statsd = metrics_exporter_statsd::StatsdBuilder::from(to.ip().to_string(), to.port())
            .histogram_is_timer()
            .build(Some(prefix))
            .map_err(|e| MetricsSetupError(format!("--statsd {addr:?}: {e}")))?;
        let skips = metrics_util::layers::FilterLayer::from_patterns(STATSD_SKIPS);
        fanout = fanout.add_recorder(metrics_util::layers::Layer::layer(&skips, statsd));
    }
    if let Some(addr) = &cfg.prometheus {
        let at = resolve("--metrics-addr", addr)?;
        let matcher = metrics_exporter_prometheus::Matcher::Suffix("_seconds".into());
        let (recorder, endpoint) = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(at)
            .set_buckets_for_metric(matcher, &BUCKETS)
            .map_err(|e| MetricsSetupError(format!("--metrics-addr: {e}")))?
            // A tube's gauges go when the tube does (every gauge is set once a second).
            .idle_timeout(
                metrics_util::MetricKindMask::GAUGE,
                Some(Duration::from_secs(5)),
            )
            .build()
            .map_err(|e| MetricsSetupError(format!("--metrics-addr {addr:?}: {e}")))?;
        let addr = addr.clone();
        tokio::spawn(async move {
            if let Err(e) = endpoint.await {
                tracing::error!("--metrics-addr {addr}: the metrics endpoint stopped: {e:?}");
            }
        });
        fanout = fanout.add_recorder(PrometheusNames(recorder));
        PER_TUBE.store(true, Ordering::Relaxed);
    }
    if cfg.statsd.is_none() && cfg.prometheus.is_none() {
        return Ok(());
    }
    metrics::set_global_recorder(fanout.build())
        .map_err(|_| MetricsSetupError("a metrics recorder is already installed".into()))?;
    let _ = HANDLES.set(Handles::register());
    describe();
    Ok(())
}

/// The Prometheus side of the recorder: renames each metric by [`prometheus_name`] and records
/// the histograms, which are milliseconds, in seconds.
struct PrometheusNames<R>(R);

/// A histogram of milliseconds recorded as seconds.
struct MillisToSeconds(Histogram);

impl HistogramFn for MillisToSeconds {
    fn record(&self, ms: f64) {
        self.0.record(ms / 1000.0);
    }
}

/// `key` under its Prometheus name, its own labels kept (a name yaad does not know: as is).
fn prometheus_key(key: &Key) -> Key {
    let Some((name, label)) = prometheus_name(key.name()) else {
        return key.clone();
    };
    let mut labels: Vec<Label> = key.labels().cloned().collect();
    if let Some((k, v)) = label {
        labels.push(Label::new(k, v.to_string()));
    }
    Key::from_parts(name, labels)
}

impl<R: Recorder> PrometheusNames<R> {
    fn name(key: KeyName) -> KeyName {
        match prometheus_name(key.as_str()) {
            Some((name, _)) => KeyName::from_const_str(name),
            None => key,
        }
    }
}

impl<R: Recorder> Recorder for PrometheusNames<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe_counter(Self::name(key), unit, help);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe_gauge(Self::name(key), unit, help);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe_histogram(Self::name(key), unit, help);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.0.register_counter(&prometheus_key(key), metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> metrics::Gauge {
        self.0.register_gauge(&prometheus_key(key), metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let seconds = self.0.register_histogram(&prometheus_key(key), metadata);
        Histogram::from_arc(Arc::new(MillisToSeconds(seconds)))
    }
}

/// The Prometheus `# HELP` lines (statsd has none), one per Prometheus name.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("cmd.put", "Commands received, by wire name.");
    describe_counter!("error.NOT_FOUND", "Error replies sent, by reply word.");
    describe_counter!(JOBS_PUT, "Jobs stored.");
    describe_counter!(JOBS_RESERVED, "Jobs handed out.");
    describe_counter!(JOBS_DELETED, "Jobs deleted.");
    describe_counter!(JOBS_RELEASED, "Jobs released.");
    describe_counter!(JOBS_BURIED, "Jobs buried.");
    describe_counter!(JOBS_KICKED, "Jobs kicked.");
    describe_counter!(JOBS_REPLACED, "Named jobs replaced by put-replace.");
    describe_counter!(JOBS_TIMED_OUT, "Reservations whose TTR ran out.");
    describe_counter!(SYNC_CHANGES, "Changes made durable by syncs.");
    describe_gauge!(JOBS_READY, "Jobs by state, sampled once a second.");
    describe_gauge!(TUBE_JOBS, "Jobs by tube and state, sampled once a second.");
    describe_gauge!(CONNECTIONS, "Open client connections.");
    describe_gauge!(SPOKES, "Spokes (time buckets) in the hub.");
    describe_gauge!(SEGMENTS_OPEN, "Segments open now.");
    describe_gauge!(
        DATA_DIR_BYTES,
        Unit::Bytes,
        "Bytes of the live segment files."
    );
    describe_histogram!(CMD_LATENCY, Unit::Seconds, "Time to execute a command.");
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "Time of one sync of the data files."
    );
    describe_histogram!(ROTATION_DURATION, Unit::Seconds, "Time of one timer step.");
    describe_histogram!(
        RECOVERY_DURATION,
        Unit::Seconds,
        "Time to recover at start-up."
    );
    describe_histogram!(
        HUB_LOCK_WAIT,
        Unit::Seconds,
        "Time waited for the hub lock."
    );
    describe_histogram!(
        DELIVERY_LATENESS,
        Unit::Seconds,
        "Time from a due deadline to the jobs handed out to blocked reserves."
    );
}

/// The handles of the metrics recorded per command or per event, registered once when the
/// recorder is installed: recording through them costs no lookup and no allocation.
struct Handles {
    commands: Vec<Counter>,
    errors: Vec<Counter>,
    /// By [`Event`].
    events: Vec<Counter>,
    /// By [`Timer`].
    timers: Vec<Histogram>,
}

impl Handles {
    fn register() -> Handles {
        Handles {
            commands: COMMANDS
                .iter()
                .map(|c| metrics::counter!(format!("cmd.{c}")))
                .collect(),
            errors: ERRORS
                .iter()
                .map(|r| metrics::counter!(format!("error.{r}")))
                .collect(),
            events: Event::NAMES.iter().map(|&n| metrics::counter!(n)).collect(),
            timers: Timer::NAMES
                .iter()
                .map(|&n| metrics::histogram!(n))
                .collect(),
        }
    }
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// Set when Prometheus is on: the sampler then also reads every tube's figures.
static PER_TUBE: AtomicBool = AtomicBool::new(false);

/// Whether a recorder is installed (metric calls are no-ops otherwise).
pub fn enabled() -> bool {
    HANDLES.get().is_some()
}

/// Whether the per-tube gauges are wanted (Prometheus is on).
pub fn per_tube() -> bool {
    PER_TUBE.load(Ordering::Relaxed)
}

/// Counted events, by index in [`Event::NAMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    JobsPut,
    JobsReserved,
    JobsDeleted,
    JobsReleased,
    JobsBuried,
    JobsKicked,
    JobsTimedOut,
    SyncChanges,
    JobsReplaced,
}

impl Event {
    const NAMES: [&str; 9] = [
        JOBS_PUT,
        JOBS_RESERVED,
        JOBS_DELETED,
        JOBS_RELEASED,
        JOBS_BURIED,
        JOBS_KICKED,
        JOBS_TIMED_OUT,
        SYNC_CHANGES,
        JOBS_REPLACED,
    ];
}

/// Counts `n` events of a kind.
pub fn count(e: Event, n: u64) {
    if let Some(h) = HANDLES.get() {
        h.events[e as usize].increment(n);
    }
}

/// Timers, by index in [`Timer::NAMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Command,
    Sync,
    Tick,
    Recovery,
    HubLockWait,
    DeliveryLateness,
}

impl Timer {
    const NAMES: [&str; 6] = [
        CMD_LATENCY,
        FLUSH_DURATION,
        ROTATION_DURATION,
        RECOVERY_DURATION,
        HUB_LOCK_WAIT,
        DELIVERY_LATENESS,
    ];
}

/// Records `d` in a timer.
pub fn record(t: Timer, d: Duration) {
    if let Some(h) = HANDLES.get() {
        h.timers[t as usize].record(millis(d));
    }
}

/// Milliseconds as a float, the unit of every timer.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The start of something to time, or `None` when no recorder is installed.
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Records the time since `start` (if any) in a timer.
pub fn finish(t: Timer, start: Option<Instant>) {
    if let Some(s) = start {
        record(t, s.elapsed());
    }
}

/// The index of a command in [`COMMANDS`].
pub fn command_index(cmd: &Command) -> usize {
    match cmd {
        Command::Put { .. } => 0,
        Command::Use(_) => 1,
        Command::Reserve => 2,
        Command::ReserveWithTimeout(_) => 3,
        Command::ReserveJob(_) => 4,
        Command::Delete(_) => 5,
        Command::Release { .. } => 6,
        Command::Bury { .. } => 7,
        Command::Touch(_) => 8,
        Command::Watch(_) => 9,
        Command::Ignore(_) => 10,
        Command::Peek(_) => 11,
        Command::PeekReady => 12,
        Command::PeekDelayed => 13,
        Command::PeekBuried => 14,
        Command::Kick(_) => 15,
        Command::KickJob(_) => 16,
        Command::StatsJob(_) => 17,
        Command::StatsTube(_) => 18,
        Command::Stats => 19,
        Command::ListTubes => 20,
        Command::ListTubeUsed => 21,
        Command::ListTubesWatched => 22,
        Command::PauseTube { .. } => 23,
        Command::Quit => 24,
        Command::PutNamed { replace: false, .. } => 25,
        Command::PutNamed { replace: true, .. } => 26,
        Command::DeleteName(_) => 27,
        Command::PeekName(_) => 28,
        Command::KickName(_) => 29,
        Command::TouchName(_) => 30,
    }
}

/// The wire name of a command (`reserve-with-timeout`).
pub fn command_name(cmd: &Command) -> &'static str {
    COMMANDS[command_index(cmd)]
}

/// The index in [`ERRORS`] of an error reply, `None` for a successful reply.
pub fn error_index(resp: &Response) -> Option<usize> {
    Some(match resp {
        Response::BadFormat => 0,
        Response::UnknownCommand => 1,
        Response::ExpectedCrlf => 2,
        Response::JobTooBig => 3,
        Response::Draining => 4,
        Response::NotFound => 5,
        Response::NotIgnored => 6,
        Response::TimedOut => 7,
        Response::DeadlineSoon => 8,
        Response::OutOfMemory => 9,
        Response::InternalError => 10,
        _ => return None,
    })
}

/// Counts one command (an index in [`COMMANDS`]) and records its latency (from `start`, see
/// [`start`]).
pub fn command(index: usize, start: Option<Instant>) {
    if let (Some(h), Some(t)) = (HANDLES.get(), start) {
        h.commands[index].increment(1);
        h.timers[Timer::Command as usize].record(millis(t.elapsed()));
    }
}

/// Counts one reply: error replies by word, successful job changes by kind.
pub fn reply(resp: &Response) {
    let Some(h) = HANDLES.get() else {
        return;
    };
    if let Some(i) = error_index(resp) {
        h.errors[i].increment(1);
        return;
    }
    let (e, n) = match resp {
        Response::Inserted(_) | Response::InsertedBuried(_) => (Event::JobsPut, 1),
        Response::Reserved { .. } => (Event::JobsReserved, 1),
        Response::Deleted => (Event::JobsDeleted, 1),
        Response::Released => (Event::JobsReleased, 1),
        Response::Buried => (Event::JobsBuried, 1),
        Response::Kicked(n) => (Event::JobsKicked, *n),
        Response::KickedJob => (Event::JobsKicked, 1),
        Response::Replaced(_) => (Event::JobsReplaced, 1),
        _ => return,
    };
    h.events[e as usize].increment(n);
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
        count(Event::JobsTimedOut, timed_out);
    }
}

/// Sends one tube's jobs by state (`[ready, reserved, delayed, buried]`).
pub fn sample_tube(tube: &str, jobs: [u64; 4]) {
    for (state, n) in ["ready", "reserved", "delayed", "buried"]
        .into_iter()
        .zip(jobs)
    {
        metrics::gauge!(TUBE_JOBS, "tube" => tube.to_string(), "state" => state).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_error_has_a_metric_name() {
        assert_eq!(
            command_name(&Command::ReserveWithTimeout(1)),
            "reserve-with-timeout"
        );
        assert_eq!(command_name(&Command::PeekBuried), "peek-buried");
        assert_eq!(command_name(&Command::Quit), "quit");
        assert_eq!(
            error_index(&Response::NotFound).map(|i| ERRORS[i]),
            Some("NOT_FOUND")
        );
        assert_eq!(
            error_index(&Response::InternalError).map(|i| ERRORS[i]),
            Some("INTERNAL_ERROR")
        );
        assert_eq!(error_index(&Response::Deleted), None);
        // Every reply word in ERRORS is the reply's own.
        for (i, word) in ERRORS.iter().enumerate() {
            let resp = [
                Response::BadFormat,
                Response::UnknownCommand,
                Response::ExpectedCrlf,
                Response::JobTooBig,
                Response::Draining,
                Response::NotFound,
                Response::NotIgnored,
                Response::TimedOut,
                Response::DeadlineSoon,
                Response::OutOfMemory,
                Response::InternalError,
            ];
            assert_eq!(error_index(&resp[i]), Some(i));
            assert_eq!(resp[i].to_bytes(), format!("{word}\r\n").into_bytes());
        }
    }

    #[test]
    fn prometheus_names() {
        assert_eq!(
            prometheus_name("jobs.put"),
            Some(("yaad_jobs_put_total", None))
        );
        assert_eq!(
            prometheus_name("cmd.put"),
            Some(("yaad_commands_total", Some(("command", "put"))))
        );
        assert_eq!(
            prometheus_name("error.NOT_FOUND"),
            Some(("yaad_errors_total", Some(("reply", "NOT_FOUND"))))
        );
        assert_eq!(
            prometheus_name("cmd.latency"),
            Some(("yaad_command_duration_seconds", None))
        );
        assert_eq!(prometheus_name("cmd.bogus"), None);
        assert_eq!(prometheus_name("jobs.bogus"), None);
        let key = prometheus_key(&Key::from_static_name("jobs.ready"));
        assert_eq!(key.name(), "yaad_jobs");
        assert_eq!(
            key.labels()
                .map(|l| (l.key(), l.value()))
                .collect::<Vec<_>>(),
            [("state", "ready")]
        );
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
