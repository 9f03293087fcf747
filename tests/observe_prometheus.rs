//! The `yaad` binary's Prometheus endpoint (`--metrics-addr`), scraped by a real Prometheus
//! server (Debian's `prometheus`): its HTTP API must show the puts this test makes. And a bad
//! `--metrics-addr` stops yaad at start-up with an error naming the flag.
//!
//! Skipped, saying so, where no `prometheus` binary is installed, unless
//! `YAAD_REQUIRE_PROMETHEUS` is set (CI sets it: there it must run).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{CONNECT_GUARD, HANG_GUARD, Yaad, command, free_port};

/// The `prometheus` binary: `$PROMETHEUS`, else the first on the PATH, else Debian's.
fn prometheus_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

/// A Prometheus server of this test: its own config and data in a temp dir, on a loopback
/// port; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `bin` scraping `target` (`host:port`) every second; returns once its API answers.
    fn start(bin: &Path, dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: yaad\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // free_port can hand one port to two processes starting at once: try again then.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("prometheus starts");
            let mut p = Prometheus { child, port };
            let started = Instant::now();
            while started.elapsed() < CONNECT_GUARD {
                if p.child.try_wait().unwrap().is_some() {
                    break;
                }
                if get(port, "/-/ready").is_ok_and(|(status, _)| status == 200) {
                    return p;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("prometheus on port {port} did not start: trying another port");
            let _ = p.child.kill();
        }
        panic!("prometheus did not start in 5 tries");
    }

    /// The value of the instant query `q`, if it has one series (`None`: no series yet).
    fn value(&self, q: &str) -> Option<f64> {
        let query: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = get(self.port, &format!("/api/v1/query?query={query}")).ok()?;
        assert_eq!(status, 200, "query {q}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON reply");
        let result = json["data"]["result"].as_array().expect("a result vector");
        assert!(result.len() <= 1, "query {q}: several series: {body}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until query `q` has a value for which `done` holds, and returns it; fails with the
    /// last value seen once [`HANG_GUARD`] is over.
    fn wait_for(&self, q: &str, done: impl Fn(f64) -> bool) -> f64 {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < HANG_GUARD {
            last = self.value(q);
            if let Some(v) = last
                && done(v)
            {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("query {q}: last value {last:?} after {HANG_GUARD:?}");
    }
}

/// A blocking HTTP/1.0 GET on loopback: (status, body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(HANG_GUARD))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

#[test]
fn prometheus_scrapes_the_puts() {
    let Some(bin) = prometheus_binary() else {
        assert!(
            std::env::var_os("YAAD_REQUIRE_PROMETHEUS").is_none(),
            "YAAD_REQUIRE_PROMETHEUS is set but no prometheus binary is installed"
        );
        eprintln!(
            "SKIPPED prometheus_scrapes_the_puts: no prometheus binary (apt-get install \
             prometheus, or set PROMETHEUS=path)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let yaad = Yaad::launch(&["--metrics-addr", &metrics], false, |_| {});
    let prom = Prometheus::start(&bin, dir.path(), &metrics);

    // A scrape happened: yaad's counters exist from the start.
    prom.wait_for(r#"up{job="yaad"}"#, |v| v == 1.0);
    let before = prom.wait_for("yaad_jobs_put_total", |_| true);
    let mut c = yaad.connect();
    // A worker blocked on tube `later`, which a job delayed by a second reaches: delivered by
    // the timer, it is counted in the delivery lateness.
    let mut worker = yaad.connect();
    assert_eq!(worker.cmd("watch later"), "WATCHING 2");
    assert_eq!(worker.cmd("ignore default"), "WATCHING 1");
    // The worker's connection stays open (its job stays reserved).
    let worker = std::thread::spawn(move || (worker.cmd("reserve-with-timeout 15"), worker));
    let started = Instant::now();
    while c.stat("stats", "current-waiting").as_deref() != Some("1") {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the worker's reserve never waited"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(c.cmd("use later"), "USING later");
    assert_eq!(c.put(0, 1, 60, b"later"), "INSERTED 1");
    assert_eq!(c.cmd("use default"), "USING default");
    const PUTS: u32 = 7;
    for i in 1..PUTS {
        assert_eq!(c.put(0, 0, 60, b"hello"), format!("INSERTED {}", i + 1));
    }
    assert_eq!(c.cmd("peek 999"), "NOT_FOUND");
    let (reserved, _worker) = worker.join().unwrap();
    assert_eq!(reserved, "RESERVED 1 5");

    let want = before + f64::from(PUTS);
    prom.wait_for("yaad_jobs_put_total", |v| v >= want);
    assert_eq!(prom.value("yaad_jobs_put_total"), Some(want));
    assert_eq!(
        prom.value(r#"yaad_commands_total{command="put"}"#),
        Some(f64::from(PUTS))
    );
    assert_eq!(
        prom.value(r#"yaad_errors_total{reply="NOT_FOUND"}"#),
        Some(1.0)
    );
    // The gauges are sampled once a second: wait for the sample after the puts.
    let ready = f64::from(PUTS - 1);
    prom.wait_for(r#"yaad_jobs{state="ready"}"#, |v| v == ready);
    prom.wait_for(r#"yaad_tube_jobs{tube="default",state="ready"}"#, |v| {
        v == ready
    });
    prom.wait_for(r#"yaad_tube_jobs{tube="later",state="reserved"}"#, |v| {
        v == 1.0
    });
    prom.wait_for("yaad_connections", |v| v == 2.0);
    // The delayed job, handed out by the timer well within its second.
    prom.wait_for("yaad_delivery_lateness_seconds_count", |v| v == 1.0);
    let late = prom.value("yaad_delivery_lateness_seconds_sum").unwrap();
    assert!((0.0..1.0).contains(&late), "{late} s late");
    // Histograms in seconds: every command timed, each well under a second. The commands:
    // the worker's 3, then `stats` (at least once), `use`, 7 puts, `use` and `peek`.
    let timed = prom.wait_for("yaad_command_duration_seconds_count", |v| v >= 14.0);
    let seconds = prom.value("yaad_command_duration_seconds_sum").unwrap();
    assert!(
        seconds > 0.0 && seconds < timed,
        "{seconds} s for {timed} commands"
    );
    assert_eq!(
        prom.value("yaad_recovery_duration_seconds_count"),
        Some(1.0)
    );
}

#[test]
fn bad_metrics_addr_is_a_start_up_error() {
    for bad in ["no-port-here", "127.0.0.1:notaport", "256.0.0.1:9100"] {
        let out = command(free_port())
            .args(["--metrics-addr", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}: yaad started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--metrics-addr"), "{bad}: {err}");
    }
    // A port in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let out = command(free_port())
        .args(["--metrics-addr", &at])
        .output()
        .unwrap();
    assert!(!out.status.success(), "yaad started on a port in use");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics-addr") && err.contains(&at),
        "port in use: {err}"
    );
}
