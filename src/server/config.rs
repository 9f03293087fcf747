//! Command-line configuration, drop-in compatible with beanstalkd's flags where they overlap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

/// Storage mode: which segment implementation the hub runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Segments are memory-mapped files (persistent).
    Mapped,
    /// Segments are files read and written with positioned I/O (persistent, low RSS).
    Lazy,
    /// Segments live in memory; files are written only on SIGUSR1 and shutdown (with -b).
    Mem,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Mapped => "mapped",
            Mode::Lazy => "lazy",
            Mode::Mem => "mem",
        }
    }
}

/// When changes are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Before the reply of every change (`-f 0`).
    EveryChange,
    /// Every this many milliseconds (`-f MS`).
    Interval(u64),
    /// Never (`-F`): only at shutdown and on SIGUSR1.
    Never,
}

/// yaad's command line.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "yaad",
    version,
    disable_version_flag = true,
    about = "A persistent delayed-job scheduler speaking the beanstalkd protocol"
)]
pub struct Config {
    /// Listen on ADDR (an IP address, or unix:/path for a Unix socket).
    #[arg(
        short = 'l',
        long = "listen",
        value_name = "ADDR",
        default_value = "0.0.0.0"
    )]
    pub listen: String,

    /// TCP port to listen on (0: any free port).
    #[arg(short = 'p', long = "port", default_value_t = 11300)]
    pub port: u16,

    /// Storage mode [default: mapped with -b, else mem, which keeps nothing, like beanstalkd
    /// without -b].
    #[arg(long = "mode", value_enum)]
    pub mode: Option<Mode>,

    /// Directory holding segment files and the data-dir lock [default with --mode mapped|lazy:
    /// ./data].
    #[arg(
        short = 'b',
        long = "data-dir",
        visible_short_alias = 'd',
        value_name = "DIR"
    )]
    pub data_dir: Option<PathBuf>,

    /// Restore jobs from the data dir at start (mem mode; mapped and lazy modes always do).
    #[arg(short = 'r', long = "restore")]
    pub restore: bool,

    /// Make changes durable every MS milliseconds (0: before every reply).
    #[arg(short = 'f', value_name = "MS", default_value_t = 50)]
    pub fsync_ms: u64,

    /// Never fsync (overrides -f).
    #[arg(short = 'F')]
    pub never_fsync: bool,

    /// Maximum job size in bytes.
    #[arg(short = 'z', value_name = "BYTES", default_value_t = 65535)]
    pub max_job_size: u32,

    /// Send metrics to a statsd server at HOST:PORT.
    #[arg(short = 's', long = "statsd", value_name = "HOST:PORT")]
    pub statsd: Option<String>,

    /// Prefix of every statsd metric name.
    #[arg(long = "statsd-prefix", value_name = "PREFIX", default_value = "yaad")]
    pub statsd_prefix: String,

    /// Serve metrics in the Prometheus text format at http://HOST:PORT/metrics.
    #[arg(long = "metrics-addr", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// Log line format on stderr.
    #[arg(long = "log-format", value_enum, default_value_t = crate::observe::LogFormat::Text)]
    pub log_format: crate::observe::LogFormat,

    /// More verbose logging (repeat for more).
    #[arg(short = 'V', action = ArgAction::Count)]
    pub verbose: u8,

    /// Print the version and exit.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    pub version: Option<bool>,

    /// Width of a near spoke's time bucket, in milliseconds (far spokes are 60, 3,600 or
    /// 216,000 times wider).
    #[arg(long = "spoke-span", value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub spoke_span_ms: u64,

    /// Maximum number of simultaneous client connections.
    #[arg(short = 'c', long = "max-connections", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Event loops serving connections, one thread each (0: one per CPU). Each connection
    /// stays on the loop with the fewest connections when it came. One loop, like beanstalkd,
    /// costs the least CPU per request (every hub call takes one lock anyway); more help only
    /// where one core cannot keep up with the sockets (see NOTES.md, Concurrency). The timer
    /// and, with -f, syncs have threads of their own.
    #[arg(long = "threads", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub threads: u16,

    /// Syncs in flight at once (with -f): while one batch of changes syncs, the next starts on
    /// another thread instead of waiting for it. Helps only where the device completes
    /// overlapping flushes in parallel (on a disk with a volatile write cache flushes queue up,
    /// and each sync takes longer: see bench/README.md); 1: one sync at a time.
    #[arg(long = "sync-threads", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub sync_threads: u16,

    /// With -f: a sync batch of this many files or more is made durable with one syncfs(2) of
    /// the data dir's filesystem instead of an fdatasync per file: one device cache flush
    /// instead of one per file (far puts spread over many spokes write many files). syncfs
    /// also writes back what other processes wrote to that filesystem, and reports their
    /// write errors as this server's (which then refuses changes): 0 turns it off, for a data
    /// dir on a filesystem shared with busy writers. Not used on kernels before 5.8, whose
    /// syncfs reports no errors.
    #[arg(long = "syncfs-from", value_name = "FILES", default_value_t = 4)]
    pub syncfs_from: usize,
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Config {
    /// A configuration with every default (as if started with no flags).
    pub fn defaults() -> Self {
        Config::parse_from(["yaad"])
    }

    /// The storage mode: `--mode`, else mapped when a data dir is given, else mem.
    pub fn storage_mode(&self) -> Mode {
        self.mode.unwrap_or(if self.data_dir.is_some() {
            Mode::Mapped
        } else {
            Mode::Mem
        })
    }

    /// The data dir, or `None` for a mem-mode server without `-b`: it keeps nothing across
    /// restarts (beanstalkd without `-b`), so a client test suite that spawns `beanstalkd -l
    /// -p` gets the fresh, empty server it expects from each start.
    pub fn data_dir(&self) -> Option<PathBuf> {
        match (&self.data_dir, self.storage_mode()) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Mode::Mem) => None,
            (None, _) => Some(PathBuf::from("./data")),
        }
    }

    /// When changes are made durable, from `-f` and `-F`.
    pub fn durability(&self) -> Durability {
        if self.never_fsync {
            Durability::Never
        } else if self.fsync_ms == 0 {
            Durability::EveryChange
        } else {
            Durability::Interval(self.fsync_ms)
        }
    }

    /// Where metrics go, from `--statsd`, `--statsd-prefix` and `--metrics-addr`.
    pub fn metrics(&self) -> crate::observe::MetricsConfig {
        crate::observe::MetricsConfig {
            statsd: self
                .statsd
                .clone()
                .map(|addr| (addr, self.statsd_prefix.clone())),
            prometheus: self.metrics_addr.clone(),
        }
    }

    /// The address to bind, from `-l` and `-p`.
    pub fn listen_addr(&self) -> Result<ListenAddr, String> {
        if let Some(path) = self.listen.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        let ip: std::net::IpAddr = self
            .listen
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|e| format!("bad listen address {:?}: {e}", self.listen))?;
        Ok(ListenAddr::Tcp(SocketAddr::new(ip, self.port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("yaad").chain(args.iter().copied()))
    }

    #[test]
    fn no_flags_is_a_working_default() {
        let c = Config::defaults();
        assert_eq!(c.port, 11300);
        assert_eq!(c.storage_mode(), Mode::Mem);
        assert_eq!(c.data_dir(), None);
        assert_eq!(c.max_job_size, 65535);
        assert_eq!(c.durability(), Durability::Interval(50));
        assert_eq!(c.spoke_span_ms, 1000);
        assert_eq!(c.threads, 1);
        assert_eq!(c.sync_threads, 1);
        assert_eq!(c.syncfs_from, 4);
        assert_eq!(
            c.listen_addr(),
            Ok(ListenAddr::Tcp("0.0.0.0:11300".parse().unwrap()))
        );
    }

    #[test]
    fn flags() {
        let c = parse(&[
            "-l",
            "127.0.0.1",
            "-p",
            "0",
            "--mode",
            "mem",
            "-d",
            "/tmp/x",
            "-r",
            "-f",
            "0",
            "-z",
            "10",
            "-s",
            "h:1",
            "--metrics-addr",
            "127.0.0.1:9",
            "-VV",
            "--spoke-span",
            "250",
            "-c",
            "7",
            "--syncfs-from",
            "0",
        ])
        .unwrap();
        assert_eq!(c.storage_mode(), Mode::Mem);
        assert_eq!(c.data_dir(), Some(PathBuf::from("/tmp/x")));
        assert!(c.restore);
        assert_eq!(c.durability(), Durability::EveryChange);
        assert_eq!(c.max_job_size, 10);
        assert_eq!(c.statsd.as_deref(), Some("h:1"));
        assert_eq!(c.metrics_addr.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(c.verbose, 2);
        assert_eq!(c.spoke_span_ms, 250);
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.syncfs_from, 0);
        assert_eq!(
            c.listen_addr(),
            Ok(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
        );
        let c = parse(&["-b", "d", "-F", "-f", "5", "-l", "unix:/tmp/s"]).unwrap();
        assert_eq!(c.data_dir(), Some(PathBuf::from("d")));
        assert_eq!(c.storage_mode(), Mode::Mapped);
        assert_eq!(c.durability(), Durability::Never);
        assert_eq!(c.listen_addr(), Ok(ListenAddr::Unix("/tmp/s".into())));
        let c = parse(&["--mode", "lazy"]).unwrap();
        assert_eq!(c.data_dir(), Some(PathBuf::from("./data")));
        let c = parse(&["-l", "::1", "-p", "5"]).unwrap();
        assert_eq!(
            c.listen_addr(),
            Ok(ListenAddr::Tcp("[::1]:5".parse().unwrap()))
        );
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(parse(&["--mode", "disk"]).is_err());
        assert!(parse(&["-p", "70000"]).is_err());
        assert!(parse(&["-z", "-1"]).is_err());
        assert!(parse(&["--spoke-span", "0"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--syncfs-from", "-1"]).is_err());
        assert!(parse(&["--threads", "257"]).is_err());
        assert_eq!(parse(&["--threads", "0"]).unwrap().threads, 0);
        assert!(parse(&["-l", "nonsense"]).unwrap().listen_addr().is_err());
        assert!(parse(&["-l", "unix:"]).unwrap().listen_addr().is_err());
    }

    #[test]
    fn version_flag() {
        let e = parse(&["-v"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(
            e.to_string().trim(),
            format!("yaad {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
