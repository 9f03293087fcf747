//! The tokio server: listeners, connections, command dispatch, timers, signals.
//!
//! [`start`] opens the hub in the storage mode of the [`Config`], binds the listener and spawns
//! the tasks; it returns a [`Server`] handle (its address, drain, flush, shutdown). [`run`] is
//! what the `yaad` binary calls: it adds logging, a runtime and the signals.
//!
//! Connection tasks (see `conn`) run on the `--threads` event loops of `loops`, one
//! current-thread runtime each. On the runtime of [`run`] (or the caller's): the accept loop,
//! the id index trimmer, in persisted modes the checkpointer, with `-f MS` the flusher and
//! with `--statsd` or `--metrics-addr` the sampler (`spawn_tasks`; with `--metrics-addr` also
//! the endpoint, started by `run`). Threads of their own: the timer, which sleeps until the
//! hub's next deadline and calls `tick` (woken earlier when a call brings the deadline
//! forward; see `core::TimerWake` for why it is a thread), and with `-f 0` or `-f MS` the
//! `--sync-threads` sync threads (`Core::run_syncs`).
//!
//! Module order (each uses only earlier ones): config, lock_stats, loops, reply, stats, core,
//! conn, mod.

pub mod config;
mod conn;
mod core;
mod lock_stats;
mod loops;
mod reply;
pub mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use self::config::{Config, Durability, ListenAddr, Mode};
use self::core::{Core, now};
use self::loops::Loops;
use crate::hub::{Hub, HubConfig, HubError, MAX_OPEN_FAR_SPOKES};
use crate::observe;
use crate::segment::powercut;
use crate::segment::{LazySegment, MappedSegment, MemSegment, Segment};

/// Why the server could not start or stop cleanly.
#[derive(Debug)]
pub enum ServerError {
    Config(String),
    Io(std::io::Error),
    Hub(HubError),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Config(s) => write!(f, "configuration: {s}"),
            ServerError::Io(e) => write!(f, "{e}"),
            ServerError::Hub(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Io(e)
    }
}

impl From<HubError> for ServerError {
    fn from(e: HubError) -> Self {
        ServerError::Hub(e)
    }
}

/// Where a started server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What the handle needs of the core, whatever its segment type.
trait Control: Send + Sync {
    fn drain(&self);
    fn flush(&self) -> Result<(), HubError>;
    fn syncs(&self) -> u64;
    fn inject_sync_failures(&self, fail: bool);
    fn hold_syncs(&self, hold: bool);
    fn sync_held(&self) -> bool;
}

impl<S: Segment + Send + 'static> Control for Core<S> {
    fn drain(&self) {
        self.set_draining();
    }
    fn flush(&self) -> Result<(), HubError> {
        Core::flush(self)
    }
    fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn inject_sync_failures(&self, fail: bool) {
        Core::inject_sync_failures(self, fail);
    }
    fn hold_syncs(&self, hold: bool) {
        Core::hold_syncs(self, hold);
    }
    fn sync_held(&self) -> bool {
        Core::sync_held(self)
    }
}

/// A running server.
pub struct Server {
    addr: BoundAddr,
    shutdown: watch::Sender<bool>,
    control: Arc<dyn Control>,
    tasks: Vec<JoinHandle<()>>,
    /// The private dir of a mem-mode server started without `-b`: nothing is ever flushed
    /// there, and it is removed when the server stops.
    scratch: Option<tempfile::TempDir>,
    /// The power-loss simulator of the data dir, when the environment asks for one
    /// ([`powercut::from_env`]; tests of the binary only): it watches the syncs until the
    /// server is gone.
    _powercut: Option<powercut::Registration>,
}

impl Server {
    pub fn addr(&self) -> &BoundAddr {
        &self.addr
    }

    /// The TCP address (None for a Unix socket).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.addr {
            BoundAddr::Tcp(a) => Some(*a),
            BoundAddr::Unix(_) => None,
        }
    }

    /// What SIGUSR1 does: drain mode (puts answer `DRAINING`), then flush every job to disk.
    pub fn drain(&self) -> Result<(), HubError> {
        self.control.drain();
        self.flush()
    }

    /// Makes every change durable now (a server without a data dir has nothing to keep).
    /// Fails, writing no clean summary, once a sync has failed (the files are not trusted).
    pub fn flush(&self) -> Result<(), HubError> {
        match self.scratch {
            Some(_) => Ok(()),
            None => self.control.flush(),
        }
    }

    /// How many group-commit syncs (`-f 0`, `-f MS`) have completed.
    pub fn syncs(&self) -> u64 {
        self.control.syncs()
    }

    /// Tests of the `-f 0` promise: while `fail` is set, every sync fails (as an fdatasync
    /// error would): the replies it covers are withheld and the files are not trusted any
    /// more (changes are refused, a flush fails and writes no clean summary).
    #[doc(hidden)]
    pub fn inject_sync_failures(&self, fail: bool) {
        self.control.inject_sync_failures(fail);
    }

    /// Tests of the `-f 0` promise: while `hold` is set, a sync waits after taking its batch
    /// (a slow fdatasync), so what must wait for it can be seen waiting.
    #[doc(hidden)]
    pub fn hold_syncs(&self, hold: bool) {
        self.control.hold_syncs(hold);
    }

    /// Tests: whether a sync waits at the hold ([`Server::hold_syncs`]) with its batch taken.
    #[doc(hidden)]
    pub fn sync_held(&self) -> bool {
        self.control.sync_held()
    }

    /// What SIGTERM does: stop accepting, close connections, flush, release the data dir.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            // A task that panicked has nothing left to clean up.
            let _ = t.await;
        }
        let r = match self.scratch {
            Some(_) => Ok(()),
            None => self.control.flush(),
        };
        if let BoundAddr::Unix(path) = &self.addr {
            let _ = std::fs::remove_file(path);
        }
        r.map_err(ServerError::from)
    }
}

/// Starts a server as configured: opens (and recovers) the hub, binds, spawns the tasks.
/// Must be called inside a tokio runtime.
pub async fn start(cfg: Config) -> Result<Server, ServerError> {
    match cfg.storage_mode() {
        Mode::Mapped => start_with::<MappedSegment>(cfg).await,
        Mode::Lazy => start_with::<LazySegment>(cfg).await,
        Mode::Mem => start_with::<MemSegment>(cfg).await,
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn start_with<S: Segment + Send + 'static>(cfg: Config) -> Result<Server, ServerError> {
    let listen = cfg.listen_addr().map_err(ServerError::Config)?;
    let mode = cfg.storage_mode();
    let (data_dir, scratch) = data_dir(&cfg)?;
    // Before the hub opens the data dir, so that the simulator sees every sync of this process.
    let powercut = match scratch {
        Some(_) => None,
        None => powercut::from_env(&data_dir)
            .map_err(|e| ServerError::Config(format!("power-loss simulator: {e}")))?,
    };
    let hub = open_hub::<S>(&cfg, data_dir, scratch.is_some())?;
    // Mem mode writes files only when drained or stopped, whatever -f says.
    let durability = match mode {
        Mode::Mem => Durability::Never,
        Mode::Mapped | Mode::Lazy => cfg.durability(),
    };
    let mut core = Core::new(hub, durability, cfg.max_job_size, mode);
    core.set_syncfs_from(cfg.syncfs_from);
    // Segment files of past spokes are removed on a blocking thread, not under the hub lock.
    let runtime = tokio::runtime::Handle::current();
    core.set_reaper(move |segs: Vec<S>| {
        runtime.spawn_blocking(move || self::core::destroy_all(segs));
    });
    let core = Arc::new(core);
    let (listener, addr) = bind(listen).await?;
    let (tx, rx) = watch::channel(false);
    let loops = Loops::start(usize::from(cfg.threads))?;
    let tasks = spawn_tasks(
        &core,
        listener,
        loops,
        rx,
        mode,
        cfg.max_connections,
        cfg.sync_threads,
    )?;
    Ok(Server {
        addr,
        shutdown: tx,
        control: core,
        tasks,
        scratch,
        _powercut: powercut,
    })
}

/// The data dir of `cfg`, or a private scratch dir (removed with the server) for a mem-mode
/// server without `-b`.
fn data_dir(cfg: &Config) -> Result<(PathBuf, Option<tempfile::TempDir>), ServerError> {
    match cfg.data_dir() {
        Some(dir) => Ok((dir, None)),
        None if cfg.restore => Err(ServerError::Config(
            "-r/--restore needs the data dir to restore from (-b DIR)".into(),
        )),
        None => {
            let scratch = tempfile::Builder::new().prefix("yaad-mem-").tempdir()?;
            Ok((scratch.path().to_path_buf(), Some(scratch)))
        }
    }
}

/// Opens (and recovers) the hub in `data_dir` (`scratch`: a private dir, shown as none), and
/// logs what it found and how long that took.
fn open_hub<S: Segment>(
    cfg: &Config,
    data_dir: PathBuf,
    scratch: bool,
) -> Result<Hub<S>, ServerError> {
    let mode = cfg.storage_mode();
    let shown_dir = if scratch {
        "none (nothing kept)".to_string()
    } else {
        data_dir.display().to_string()
    };
    let hub_cfg = HubConfig {
        data_dir,
        spoke_span: cfg.spoke_span_ms.saturating_mul(1000),
        restore: cfg.restore,
    };
    let opened = std::time::Instant::now();
    let mut hub = Hub::<S>::open(hub_cfg, now())?;
    hub.store
        .set_max_open_far(open_far_limit(cfg.max_connections));
    let recovery = opened.elapsed();
    observe::record(observe::Timer::Recovery, recovery);
    let st = hub.stats(now());
    tracing::info!(
        mode = mode.name(),
        data_dir = %shown_dir,
        ready = st.current_jobs_ready,
        delayed = st.current_jobs_delayed,
        buried = st.current_jobs_buried,
        corrupt_records_skipped = st.corrupt_records_skipped,
        recovery_ms = recovery.as_millis() as u64,
        "recovered"
    );
    Ok(hub)
}

/// Binds the listener (a Unix socket replaces a stale file of its path).
async fn bind(listen: ListenAddr) -> Result<(Listener, BoundAddr), ServerError> {
    Ok(match listen {
        ListenAddr::Tcp(a) => {
            let l = TcpListener::bind(a).await?;
            let bound = l.local_addr()?;
            (Listener::Tcp(l), BoundAddr::Tcp(bound))
        }
        ListenAddr::Unix(path) => {
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            let l = UnixListener::bind(&path)?;
            (Listener::Unix(l), BoundAddr::Unix(path))
        }
    })
}

/// Starts the threads and tasks of a server, each ending once `shutdown` says so: the timer,
/// the sync threads and the flusher (as `core.durability` asks), the checkpointer (persisted
/// modes), the id index trimmer, the metrics sampler (`--statsd`, `--metrics-addr`) and the
/// accept loop.
fn spawn_tasks<S: Segment + Send + 'static>(
    core: &Arc<Core<S>>,
    listener: Listener,
    loops: Loops,
    shutdown: watch::Receiver<bool>,
    mode: Mode,
    max_connections: usize,
    sync_threads: u16,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut tasks = vec![spawn_thread(
        "yaad-timer",
        core.clone(),
        shutdown.clone(),
        timer,
        |c| c.timer.stop(),
    )?];
    if core.durability != Durability::Never {
        // The sync threads of `-f 0` and `-f MS` (`Core::run_syncs`).
        for _ in 0..sync_threads.max(1) {
            tasks.push(spawn_thread(
                "yaad-sync",
                core.clone(),
                shutdown.clone(),
                Core::run_syncs,
                Core::stop_syncs,
            )?);
        }
    }
    if let Durability::Interval(ms) = core.durability {
        tasks.push(tokio::spawn(flusher(core.clone(), ms, shutdown.clone())));
    }
    if mode != Mode::Mem {
        tasks.push(tokio::spawn(checkpointer(core.clone(), shutdown.clone())));
    }
    tasks.push(tokio::spawn(housekeeper(core.clone(), shutdown.clone())));
    if observe::enabled() {
        tasks.push(tokio::spawn(sampler(core.clone(), shutdown.clone())));
    }
    tasks.push(tokio::spawn(accept_loop(
        core.clone(),
        listener,
        loops,
        shutdown,
        max_connections,
    )));
    Ok(tasks)
}

async fn accept_loop<S: Segment + Send + 'static>(
    core: Arc<Core<S>>,
    listener: Listener,
    loops: Loops,
    mut shutdown: watch::Receiver<bool>,
    max_connections: usize,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = accept(&listener) => match accepted {
                Ok(stream) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::warn!("connection limit ({max_connections}) reached: closing a new connection");
                        continue;
                    };
                    let core = core.clone();
                    loops.spawn(&mut conns, async move {
                        // The socket joins the reactor of the loop that runs this task.
                        match stream.register() {
                            Ok(Registered::Tcp(s)) => conn::serve(core, s).await,
                            Ok(Registered::Unix(s)) => conn::serve(core, s).await,
                            Err(e) => tracing::warn!("connection dropped: {e}"),
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    // Connections stop at their next await (a client that does not read holds up nothing);
    // dropping each one's state disconnects it from the hub. The loops run until they have.
    conns.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || loops.stop()).await;
}

/// An accepted socket, not yet registered with any reactor (see [`Loops`]).
enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

enum Registered {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    /// Registers the socket with the reactor of the runtime this is called on.
    fn register(self) -> std::io::Result<Registered> {
        Ok(match self {
            Stream::Tcp(s) => Registered::Tcp(tokio::net::TcpStream::from_std(s)?),
            Stream::Unix(s) => Registered::Unix(tokio::net::UnixStream::from_std(s)?),
        })
    }
}

async fn accept(l: &Listener) -> std::io::Result<Stream> {
    match l {
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s.into_std()?))
        }
        Listener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0.into_std()?)),
    }
}

/// Resolves once the server is told to stop (at once if it already was).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, inside.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The timer thread: sleeps until the hub's next deadline (or until woken because it moved
/// earlier) and ticks, until `TimerWake::stop`.
fn timer<S: Segment>(core: &Core<S>) {
    // Linux lets a timed wait end up to the thread's timer slack (50 µs by default) late, to
    // batch wake-ups; this thread's waits end when jobs are due, so it asks for none.
    if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
        tracing::debug!("timer slack not lowered: {e}");
    }
    while !core.timer.stopped() {
        let started = observe::start();
        let next = core.tick(now());
        observe::finish(observe::Timer::Tick, started);
        core.timer.wait(next);
    }
}

/// Runs `run` on a thread of its own (the timer, a sync thread) until the server stops, then
/// calls `stop`, which makes `run` return, and joins the thread.
fn spawn_thread<S: Segment + Send + 'static>(
    name: &str,
    core: Arc<Core<S>>,
    mut shutdown: watch::Receiver<bool>,
    run: fn(&Core<S>),
    stop: fn(&Core<S>),
) -> std::io::Result<JoinHandle<()>> {
    let for_thread = core.clone();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || run(&for_thread))?;
    Ok(tokio::spawn(async move {
        stopped(&mut shutdown).await;
        stop(&core);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }))
}

/// `-f MS`: makes changes durable every `ms` milliseconds.
async fn flusher<S: Segment>(core: Arc<Core<S>>, ms: u64, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_millis(ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                match core.sync_if_changed().await {
                    Ok(()) => {}
                    // Stopping ends the sync threads before the shutdown flush, which then
                    // syncs everything: nothing failed.
                    Err(e) if *shutdown.borrow() => {
                        tracing::debug!("periodic sync left to the shutdown flush: {e}");
                        return;
                    }
                    Err(e) => tracing::error!("periodic sync failed: {e}"),
                }
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// How often the start-up summary is brought up to date while changes happen: a restart
/// after a crash scans the segments changed in at most about this long.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Persisted modes: keeps the start-up summary current (see `hub::checkpoint`).
async fn checkpointer<S: Segment>(core: Arc<Core<S>>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Logged once per streak of failures (a full disk would repeat it every second).
    let mut failing = false;
    loop {
        tokio::select! {
            _ = every.tick() => match core.checkpoint().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("start-up summary written again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        "cannot write the start-up summary ({e}); a restart after a crash \
                         scans more segments until it can"
                    );
                }
                Err(_) => {}
            },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Id index entries trimmed per hold of the hub lock (each 4 KiB block of 128 entries costs a
/// read and a write or a hole punch: ~0.1-0.3 ms per 2,048 ids).
const TRIM_PER_CALL: usize = 2048;

/// Idle far segments whose pages leave the process per hold of the hub lock (an `madvise`
/// each, a few µs).
const SHED_PER_CALL: usize = 32;

/// Once a second, a bounded amount of work per hold of the hub lock:
/// - empties the id index entries of far jobs whose spoke was loaded since
///   ([`crate::hub::Hub::trim_index`]);
/// - lets the far segments idle for a second drop their pages from the process
///   ([`crate::hub::Hub::shed_idle_far`]).
async fn housekeeper<S: Segment>(core: Arc<Core<S>>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                while core.with_hub(|h| h.trim_index(TRIM_PER_CALL)) > 0 {
                    tokio::task::yield_now().await;
                }
                while core.with_hub(|h| h.shed_idle_far(now(), SHED_PER_CALL)) > 0 {
                    tokio::task::yield_now().await;
                }
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// With metrics on: sends the gauges (and the timeouts since the last sample) once a second,
/// with Prometheus also every tube's.
async fn sampler<S: Segment>(core: Arc<Core<S>>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = None;
    loop {
        tokio::select! {
            _ = every.tick() => {
                let st = core.with_hub(|h| h.stats(now()));
                let s = observe::Sample {
                    ready: st.current_jobs_ready,
                    reserved: st.current_jobs_reserved,
                    delayed: st.current_jobs_delayed,
                    buried: st.current_jobs_buried,
                    connections: st.current_connections,
                    spokes: st.spokes,
                    segments_open: st.segments_open,
                    data_bytes: st.data_bytes,
                    timeouts: st.job_timeouts,
                };
                observe::sample(&s, previous.as_ref());
                previous = Some(s);
                if observe::per_tube() {
                    sample_tubes(&core);
                }
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Sends every tube's jobs by state, one hold of the hub lock per tube.
fn sample_tubes<S: Segment>(core: &Core<S>) {
    for tube in core.with_hub(|h| h.list_tubes()) {
        if let Some(t) = core.with_hub(|h| h.stats_tube(&tube, now())) {
            let jobs = [
                t.current_jobs_ready,
                t.current_jobs_reserved,
                t.current_jobs_delayed,
                t.current_jobs_buried,
            ];
            observe::sample_tube(&t.name, jobs);
        }
    }
}

/// SIGTERM/SIGINT: whether to stop. In mem mode the jobs exist only in memory until written,
/// so a flush that fails (disk full) keeps the server running: free space and signal again
/// (SIGKILL stops it and loses them). Persisted modes stop (their jobs are in their files).
fn may_stop(server: &Server, mode: Mode) -> bool {
    if mode != Mode::Mem {
        return true;
    }
    match server.flush() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(
                "not stopping: flush failed ({e}) and the jobs exist only in memory; \
                 free space and signal again (SIGKILL loses them)"
            );
            false
        }
    }
}

/// Raises the soft limit of open files to the hard limit, as Go programs (goyaad among them)
/// do at start: every connection is a file descriptor, and the usual soft limit (1,024) is far
/// below the default connection limit. Warns when `max_connections` still does not fit.
fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let mut soft = lim.current;
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum)
        && cur < max
    {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        ) {
            Ok(()) => {
                tracing::debug!(from = cur, to = max, "open-file limit raised");
                soft = Some(max);
            }
            Err(e) => tracing::debug!("open-file limit not raised: {e}"),
        }
    }
    // Segments, the id index, the listener and the runtime use about 200 more.
    if let Some(soft) = soft
        && (max_connections as u64).saturating_add(FILES_BESIDES) > soft
    {
        tracing::warn!(
            "the open-file limit ({soft}) leaves room for fewer than -c {max_connections} \
             connections: raise it (ulimit -n) or lower -c"
        );
    }
}

/// Open files a yaad process holds besides its connections and far segments: the loaded
/// spokes' segments, the id index, journals, listeners, the runtime (the same ~200 as the
/// warning of [`raise_open_file_limit`]).
const FILES_BESIDES: u64 = 200;

/// The most far segments kept open whatever the limit: with spans growing with distance a
/// year of trigger times is a few hundred far spokes; in lazy mode each open one holds a
/// mapping too, and these stay far below `vm.max_map_count` (65,530).
const MAX_OPEN_FAR_CEILING: usize = 1024;

/// How many far segments stay open: half of what the open-file limit leaves after
/// `max_connections` and [`FILES_BESIDES`] (a sync batch holds the files it took until it
/// ends, so up to as many again), between [`MAX_OPEN_FAR_SPOKES`] and
/// [`MAX_OPEN_FAR_CEILING`]. A far put whose segment is not open opens and later closes it.
fn open_far_limit(max_connections: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let room = soft
        .saturating_sub(max_connections as u64)
        .saturating_sub(FILES_BESIDES)
        / 2;
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(MAX_OPEN_FAR_SPOKES, MAX_OPEN_FAR_CEILING)
}

/// The `yaad` binary: logging, runtime, server, signals. Returns when SIGTERM/SIGINT stopped it.
pub fn run(cfg: Config) -> Result<(), ServerError> {
    observe::init_tracing(cfg.verbose, cfg.log_format);
    raise_open_file_limit(cfg.max_connections);
    // Connections have event loops of their own (`Loops`, `--threads`); this one runs the
    // accept loop, the signals and the periodic tasks.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mode = cfg.storage_mode();
        // Before the start: recovery time is a metric too.
        observe::init_metrics(&cfg.metrics()).map_err(|e| ServerError::Config(e.to_string()))?;
        if let Some(addr) = &cfg.statsd {
            tracing::info!(statsd = %addr, prefix = %cfg.statsd_prefix, "sending metrics");
        }
        if let Some(addr) = &cfg.metrics_addr {
            tracing::info!(metrics_addr = %addr, "serving metrics at /metrics");
        }
        let server = start(cfg).await?;
        tracing::info!(addr = ?server.addr(), mode = mode.name(), "yaad listening");
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: draining and flushing");
                    let started = std::time::Instant::now();
                    match server.drain() {
                        // Said only once every job is on disk (tests/flush_kill.rs waits for it).
                        Ok(()) => tracing::info!(
                            flush_ms = started.elapsed().as_millis() as u64,
                            "SIGUSR1: drained and flushed"
                        ),
                        Err(e) => tracing::error!("flush failed: {e}"),
                    }
                }
                _ = term.recv() => if may_stop(&server, mode) { break },
                _ = int.recv() => if may_stop(&server, mode) { break },
            }
        }
        tracing::info!("shutting down");
        server.shutdown().await
    })
}
