//! System limits: what yaad holds per spoke, and what a client sees when a limit is reached.

mod common;

use common::Yaad;

/// Far spokes beyond the few dozen most recently used hold no open file in mapped mode (nor
/// in lazy mode), so trigger times spread over many seconds do not run into the open-file
/// limit: 600 far spokes under a limit of 256 open files (the 64 most recently used far
/// segments stay open, and a sync may hold as many more until it ends), across a clean restart and a kill.
#[test]
fn far_spokes_need_no_open_file() {
    const JOBS: u32 = 600;
    // With -F nothing syncs until the shutdown flush, which then reopens every segment whose
    // size changed (and must close the far ones again).
    for (mode, sync) in [("mapped", "-f50"), ("lazy", "-f50"), ("mapped", "-F")] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let args = ["--mode", mode, sync, "-b", data];
        let y = Yaad::spawn_with_open_files(&args, 256);
        let mut c = y.connect();
        for i in 0..JOBS {
            // One spoke per job: three days apart, a spoke each whatever its span.
            let body = format!("job {i}");
            assert_eq!(
                c.put(0, (i + 1) * 3 * 86_400, 60, body.as_bytes()),
                format!("INSERTED {}", i + 1),
                "{mode}: put {i}"
            );
        }
        let delayed = |c: &mut common::Client| c.stat("stats", "current-jobs-delayed");
        assert_eq!(delayed(&mut c).as_deref(), Some("600"), "{mode}");
        drop(c);
        assert!(y.terminate().success(), "{mode}: clean exit");

        // A clean restart, then one after kill -9, under the same limit.
        for kill in [false, true] {
            let y = Yaad::spawn_with_open_files(&args, 256);
            let mut c = y.connect();
            assert_eq!(
                delayed(&mut c).as_deref(),
                Some("600"),
                "{mode}, kill {kill}"
            );
            for id in [1, JOBS / 2, JOBS] {
                let body = format!("job {}", id - 1);
                assert_eq!(c.peek(u64::from(id)).as_deref(), Some(body.as_bytes()));
            }
            drop(c);
            if kill {
                drop(y); // SIGKILL
            } else {
                assert!(y.terminate().success(), "{mode}: clean exit");
            }
        }
    }
}

/// Out of file descriptors, a put that needs a new segment file is answered `OUT_OF_MEMORY`
/// (beanstalkd's word for "no room for the job"), with a warning naming the limit; the server
/// keeps serving, and every acknowledged job is there after a restart with room again.
#[test]
fn a_system_limit_answers_out_of_memory_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = ["--mode", "mapped", "-b", data];
    let y = Yaad::spawn_with_open_files(&args, 40);
    let mut c = y.connect();
    // Up to 64 far segments stay open: a limit of 40 files is reached before that.
    let mut acked = Vec::new();
    for i in 0..64u32 {
        let body = format!("job {i}");
        // One spoke per job: three days apart, a spoke each whatever its span.
        let reply = c.put(0, (i + 1) * 3 * 86_400, 60, body.as_bytes());
        if reply == "OUT_OF_MEMORY" {
            break;
        }
        let id: u64 = reply
            .strip_prefix("INSERTED ")
            .unwrap_or_else(|| panic!("put {i}: {reply}"))
            .parse()
            .unwrap();
        acked.push((id, body));
    }
    assert!(acked.len() < 64, "the limit was reached");
    y.wait_log("answering OUT_OF_MEMORY");
    // Still serving: a job into an existing spoke, a delete, stats.
    let (first, _) = acked[0];
    assert_eq!(c.cmd(&format!("delete {first}")), "DELETED");
    acked.remove(0);
    let (id, body) = acked[0].clone();
    assert_eq!(c.peek(id).as_deref(), Some(body.as_bytes()));
    drop(c);
    assert!(y.terminate().success());

    let y = Yaad::spawn_in("mapped", dir.path(), &[]);
    let mut c = y.connect();
    for (id, body) in &acked {
        assert_eq!(c.peek(*id).as_deref(), Some(body.as_bytes()), "job {id}");
    }
    assert_eq!(c.cmd(&format!("peek {first}")), "NOT_FOUND");
    let delayed = c.stat("stats", "current-jobs-delayed").unwrap();
    assert_eq!(delayed, acked.len().to_string());
}

/// yaad raises its soft limit of open files to the hard limit at start (each connection is a
/// file), and warns when the connection limit does not fit under the hard limit either.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_one() {
    let limits = |pid: u32| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a Max open files line")
            .to_string();
        let f: Vec<String> = line.split_whitespace().map(String::from).collect();
        (f[3].clone(), f[4].clone())
    };
    let y = Yaad::spawn_with_ulimit(&[], "-S -n 64");
    y.connect();
    let (soft, hard) = limits(y.child.id());
    assert_eq!(soft, hard, "soft limit raised");
    assert_ne!(soft, "64");

    let y = Yaad::spawn_with_ulimit(&["-c", "1000"], "-n 300");
    y.connect();
    assert_eq!(limits(y.child.id()), ("300".into(), "300".into()));
    y.wait_log("leaves room for fewer than -c 1000 connections");
}

/// Far segments kept open follow the open-file limit: with room for 350 (a limit of 1,000
/// files, 100 connections), puts into 200 far spokes keep all 200 open. A fixed bound of 64
/// made nearly every put with trigger times spread over a year (~340 spokes) reopen its file.
#[test]
fn far_segments_open_follow_the_open_file_limit() {
    const SPOKES: u32 = 200;
    for mode in ["mapped", "lazy"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let y = Yaad::spawn_with_open_files(&["--mode", mode, "-c", "100", "-b", data], 1000);
        let mut c = y.connect();
        for i in 0..SPOKES {
            // One spoke per job: three days apart, a spoke each whatever its span.
            let reply = c.put(0, (i + 1) * 3 * 86_400, 60, b"far");
            assert!(reply.starts_with("INSERTED"), "{mode}: put {i}: {reply}");
        }
        let open: u32 = c.stat("stats", "segments-open").unwrap().parse().unwrap();
        let spokes: u32 = c.stat("stats", "spokes").unwrap().parse().unwrap();
        assert!(spokes >= SPOKES, "{mode}: {spokes} spokes");
        assert!(open >= SPOKES, "{mode}: {open} segments open of {spokes}");
    }
}
