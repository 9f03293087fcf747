//! The `yaad` binary: flags, signals (SIGUSR1 drains, SIGTERM exits 0 after a flush).

mod common;

use std::time::{Duration, Instant};

use common::{Yaad, yaad_bin};

#[test]
fn version_flag() {
    let out = yaad_bin().arg("-v").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("yaad {}", env!("CARGO_PKG_VERSION"))
    );
    let bad = yaad_bin().args(["--mode", "nope"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--mode"));
}

#[test]
fn signals_drain_and_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut y = Yaad::spawn(&["--mode", "mem", "-F", "-b", data]);
    let mut c = y.connect();
    assert_eq!(c.cmd("put 0 0 10 4\r\nkeep"), "INSERTED 1");

    y.signal("-USR1");
    // The signal is handled asynchronously: wait for its effect.
    let give_up = Instant::now() + Duration::from_secs(10);
    while c.stat("stats", "draining").unwrap() != "true" {
        assert!(Instant::now() < give_up, "SIGUSR1 not handled");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(c.cmd("put 0 0 10 1\r\nx"), "DRAINING");

    y.signal("-TERM");
    let status = y.wait_exit();
    assert!(status.success(), "{status}");

    // Mem mode with -F: the shutdown flush wrote the job; -r restores it.
    let mut y = Yaad::spawn(&["--mode", "mem", "-r", "-b", data]);
    let mut c = y.connect();
    assert_eq!(c.cmd("peek 1"), "FOUND 1 4");
    y.signal("-INT");
    assert!(y.wait_exit().success());
}
