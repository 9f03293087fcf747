//! Runs yaad-bench in every mode against the real beanstalkd 1.12 (`/usr/bin/beanstalkd`), each
//! test with its own server on a free loopback port, and checks the final JSON line.
//! Skips, saying so, where beanstalkd is not installed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const BEANSTALKD: &str = "/usr/bin/beanstalkd";

/// A beanstalkd process, killed on drop.
struct Beanstalkd {
    child: Child,
    addr: String,
}

impl Beanstalkd {
    /// Starts beanstalkd on a free port, or `None` (with a message) when it is not installed.
    fn start(test: &str) -> Option<Beanstalkd> {
        if !Path::new(BEANSTALKD).exists() {
            eprintln!(
                "{test}: skipped: {BEANSTALKD} is not installed (apt-get install beanstalkd)"
            );
            return None;
        }
        let (child, port) = common::spawn_listening(
            Command::new(BEANSTALKD)
                .args(["-l", "127.0.0.1", "-p", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        Some(Beanstalkd {
            child,
            addr: format!("127.0.0.1:{port}"),
        })
    }

    /// Sends one command and returns the reply's text (line and any body).
    fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.write_all(format!("{line}\r\nquit\r\n").as_bytes())
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    /// A counter from `stats-tube <tube>`, or from `stats` when `tube` is `None`. (beanstalkd
    /// forgets a tube that is empty and unused, so a finished run is checked on `stats`.)
    fn stat(&self, tube: Option<&str>, key: &str) -> u64 {
        let text = match tube {
            Some(tube) => self.command(&format!("stats-tube {tube}")),
            None => self.command("stats"),
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text:?}"))
    }
}

impl Drop for Beanstalkd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs yaad-bench against `addr`; returns its exit code and its final JSON line.
fn bench(addr: &str, args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_yaad-bench"))
        .args(args)
        .args(["--addr", addr])
        .output()
        .expect("yaad-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let json: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "last line is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn clean(code: i32, json: &Value) {
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(code, 0, "{json}");
}

#[test]
fn cycle_counts_every_command() {
    let Some(server) = Beanstalkd::start("cycle_counts_every_command") else {
        return;
    };
    let (code, json) = bench(&server.addr, &["cycle", "--count", "500", "--conns", "4"]);
    clean(code, &json);
    assert_eq!(json["mode"], "cycle");
    assert_eq!(json["units"], 500);
    assert_eq!(json["commands"], 1500);
    for op in ["put", "reserve", "delete", "unit"] {
        assert_eq!(json["latency_us"][op]["count"], 500, "{op}: {json}");
    }
    assert_eq!(server.stat(None, "total-jobs"), 500);
    assert_eq!(server.stat(None, "cmd-delete"), 500);
    assert_eq!(server.stat(None, "current-jobs-ready"), 0);
}

#[test]
fn pipelined_cycle_on_its_own_tube() {
    let Some(server) = Beanstalkd::start("pipelined_cycle_on_its_own_tube") else {
        return;
    };
    let args = [
        "cycle",
        "--count",
        "800",
        "--conns",
        "2",
        "--pipeline",
        "8",
        "--tube",
        "smoke.pipe",
    ];
    let (code, json) = bench(&server.addr, &args);
    clean(code, &json);
    assert_eq!(json["units"], 800);
    assert_eq!(server.stat(None, "total-jobs"), 800);
    assert_eq!(server.stat(None, "cmd-delete"), 800);
    assert_eq!(server.stat(None, "cmd-use"), 2);
}

#[test]
fn put_then_drain_empties_the_tube() {
    let Some(server) = Beanstalkd::start("put_then_drain_empties_the_tube") else {
        return;
    };
    let put = [
        "put",
        "--count",
        "300",
        "--conns",
        "3",
        "--pipeline",
        "16",
        "--tube",
        "d",
    ];
    let (code, json) = bench(&server.addr, &put);
    clean(code, &json);
    assert_eq!(json["units"], 300);
    assert_eq!(server.stat(Some("d"), "current-jobs-ready"), 300);

    let drain = ["drain", "--conns", "2", "--pipeline", "8", "--tube", "d"];
    let (code, json) = bench(&server.addr, &drain);
    clean(code, &json);
    assert_eq!(json["units"], 300);
    assert!(json["empty_reserves"].as_u64() >= Some(2), "{json}");
    assert_eq!(server.stat(None, "cmd-delete"), 300);
    assert_eq!(server.stat(None, "current-jobs-ready"), 0);
}

#[test]
fn delayed_puts_stay_delayed() {
    let Some(server) = Beanstalkd::start("delayed_puts_stay_delayed") else {
        return;
    };
    let put = [
        "put",
        "--count",
        "100",
        "--delay",
        "3600..7200",
        "--tube",
        "later",
    ];
    let (code, json) = bench(&server.addr, &put);
    clean(code, &json);
    assert_eq!(server.stat(Some("later"), "current-jobs-delayed"), 100);
    // Nothing is ready, so a drain finds nothing and stops after its timeout.
    let (code, json) = bench(&server.addr, &["drain", "--conns", "1", "--tube", "later"]);
    clean(code, &json);
    assert_eq!(json["units"], 0);
    assert_eq!(json["empty_reserves"], 1);
}

#[test]
fn timing_finds_every_job_on_time() {
    let Some(server) = Beanstalkd::start("timing_finds_every_job_on_time") else {
        return;
    };
    let args = [
        "timing",
        "--count",
        "30",
        "--rate",
        "100",
        "--delay",
        "0..1",
        "--conns",
        "2",
        "--background",
        "200",
        "--tube",
        "t",
    ];
    let (code, json) = bench(&server.addr, &args);
    clean(code, &json);
    let t = &json["timing"];
    assert_eq!(t["acked"], 30, "{json}");
    assert_eq!(t["received"], 30, "{json}");
    for bad in ["missing", "duplicates", "early", "unacked", "stale"] {
        assert_eq!(t[bad], 0, "{bad}: {json}");
    }
    assert_eq!(t["lateness_us"]["count"], 30);
    // The host probe napped 1 ms at a time through the run (at least 0.3 s of puts).
    let naps = t["host_oversleep_us"]["count"].as_u64().unwrap_or(0);
    assert!(naps >= 10, "{json}");
    assert_eq!(json["background"]["jobs"], 200);
    assert_eq!(server.stat(Some("t"), "current-jobs-delayed"), 200);
}

#[test]
fn unexpected_replies_fail_the_run() {
    let Some(server) = Beanstalkd::start("unexpected_replies_fail_the_run") else {
        return;
    };
    // beanstalkd's default max job size is 65535: every put answers JOB_TOO_BIG.
    let (code, json) = bench(
        &server.addr,
        &["put", "--count", "5", "--conns", "1", "--body", "70000"],
    );
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["errors"], 5);
    assert_eq!(json["units"], 0);
}

#[test]
fn refusals_are_counted_and_tolerated_on_request() {
    let Some(server) = Beanstalkd::start("refusals_are_counted_and_tolerated_on_request") else {
        return;
    };
    // The same JOB_TOO_BIG refusals as above: counted by reply, an error only without the flag.
    let args = ["put", "--count", "5", "--conns", "2", "--body", "70000"];
    let (code, json) = bench(&server.addr, &args);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["refused"], 5, "{json}");
    let with_flag: Vec<&str> = args.iter().copied().chain(["--refusals-ok"]).collect();
    let (code, json) = bench(&server.addr, &with_flag);
    clean(code, &json);
    assert_eq!(json["refused"], 5, "{json}");
    assert_eq!(json["refused_by_reply"]["JOB_TOO_BIG"], 5, "{json}");
    assert_eq!(json["units"], 0);
    assert_eq!(
        json["commands"], 5,
        "a refused put is a command sent: {json}"
    );
}

#[test]
fn unix_socket_address() {
    if !Path::new(BEANSTALKD).exists() {
        eprintln!("unix_socket_address: skipped: {BEANSTALKD} is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("beanstalkd.sock");
    let listen = format!("unix:{}", path.display());
    let child = Command::new(BEANSTALKD)
        .args(["-l", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("beanstalkd starts");
    let server = Beanstalkd {
        child,
        addr: listen.clone(),
    };
    let since = Instant::now();
    while !path.exists() && since.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, json) = bench(
        &server.addr,
        &["cycle", "--count", "200", "--conns", "2", "--pipeline", "2"],
    );
    clean(code, &json);
    assert_eq!(json["units"], 200);
    assert_eq!(json["addr"], listen);
}

#[test]
fn refused_connection_is_fatal() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    // Nothing listens on the port once the listener is dropped.
    let (code, json) = bench(&format!("127.0.0.1:{port}"), &["cycle", "--count", "1"]);
    assert_eq!(code, 1);
    assert_eq!(json["errors"], 1);
    assert!(
        json["fatal"]
            .as_str()
            .is_some_and(|s| s.contains("cannot connect"))
    );
}
