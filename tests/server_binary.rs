//! The `yaad` binary: flags, signals (SIGUSR1 drains, SIGTERM exits 0 after a flush).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str]) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_yaad"))
        .args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, port)
}

fn connect(port: u16) -> TcpStream {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > give_up => panic!("yaad did not start: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn cmd(r: &mut BufReader<TcpStream>, line: &str) -> String {
    r.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .unwrap();
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.trim_end().to_string()
}

fn stats_value(r: &mut BufReader<TcpStream>, key: &str) -> String {
    let head = cmd(r, "stats");
    let n: usize = head.strip_prefix("OK ").unwrap().parse().unwrap();
    let mut body = vec![0u8; n + 2];
    r.read_exact(&mut body).unwrap();
    let body = String::from_utf8(body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
        .unwrap()
}

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_yaad"))
        .arg("-v")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("yaad {}", env!("CARGO_PKG_VERSION"))
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_yaad"))
        .args(["--mode", "nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--mode"));
}

#[test]
fn signals_drain_and_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (mut child, port) = spawn(&["--mode", "mem", "-F", "-b", data]);
    let mut r = BufReader::new(connect(port));
    assert_eq!(cmd(&mut r, "put 0 0 10 4\r\nkeep"), "INSERTED 1");

    signal(&child, "-USR1");
    // The signal is handled asynchronously: wait for its effect.
    let give_up = Instant::now() + Duration::from_secs(10);
    while stats_value(&mut r, "draining") != "true" {
        assert!(Instant::now() < give_up, "SIGUSR1 not handled");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(cmd(&mut r, "put 0 0 10 1\r\nx"), "DRAINING");

    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");

    // Mem mode with -F: the shutdown flush wrote the job; -r restores it.
    let (mut child, port) = spawn(&["--mode", "mem", "-r", "-b", data]);
    let mut r = BufReader::new(connect(port));
    assert_eq!(cmd(&mut r, "peek 1"), "FOUND 1 4");
    signal(&child, "-INT");
    assert!(child.wait().unwrap().success());
}
