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

/// SIGTERM while `-f MS` syncs are under way: the shutdown flush syncs every change, so the
/// periodic sync it cuts short is no failure and logs no error. With `-f 1` a periodic sync
/// is nearly always under way; the error showed in about one stop of six under these puts,
/// so twelve stops.
#[test]
fn stopping_during_periodic_syncs_logs_no_error() {
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let mut y = Yaad::spawn_in("lazy", dir.path(), &["-f", "1"]);
        let port = y.port;
        let putters: Vec<_> = (0..4u32)
            .map(|t| {
                std::thread::spawn(move || {
                    let Ok(mut c) = common::Client::try_connect(port) else {
                        return 0;
                    };
                    let mut n = 0u32;
                    // Until the server is gone.
                    while c
                        .try_put(0, 60 + (n * 7919 + t * 104_729) % 86_400, 5, b"far")
                        .is_ok_and(|r| r.starts_with("INSERTED"))
                    {
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        y.signal("-TERM");
        let status = y.wait_exit();
        assert!(status.success(), "round {round}: {status}");
        let puts: u32 = putters.into_iter().map(|p| p.join().unwrap()).sum();
        assert!(puts > 0, "round {round}: no put went in before the stop");
        // The stderr reader may lag the exit by a moment.
        std::thread::sleep(Duration::from_millis(100));
        let errors: Vec<String> = y
            .logs_so_far()
            .into_iter()
            .filter(|l| l.contains("ERROR"))
            .collect();
        assert!(errors.is_empty(), "round {round}: {errors:#?}");
    }
}
