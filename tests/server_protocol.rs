//! Raw-bytes tests of the whole protocol against a server on port 0, in every storage mode.

mod server_util;

use std::time::{Duration, Instant};

use server_util::{Client, start, start_with};
use tokio::io::AsyncWriteExt;
use yaad::server::Mode;

/// Runs each listed `async fn(Mode)` as a test in each of the three modes.
macro_rules! in_all_modes {
    ($($name:ident),* $(,)?) => {
        mod mapped { $( #[tokio::test] async fn $name() { super::$name(yaad::server::Mode::Mapped).await } )* }
        mod lazy { $( #[tokio::test] async fn $name() { super::$name(yaad::server::Mode::Lazy).await } )* }
        mod mem { $( #[tokio::test] async fn $name() { super::$name(yaad::server::Mode::Mem).await } )* }
    };
}

in_all_modes!(
    job_life_cycle,
    tubes_and_lists,
    peeks_and_kicks,
    error_replies,
    pipelining_and_split_packets,
    binary_bodies,
    limits,
    stats_counters_and_lengths,
    blocking_reserve_wakes_on_put,
    disconnect_and_quit_release_at_once,
    reserve_with_timeout,
    ttr_expiry_and_delayed_jobs,
    pause_tube,
    draining,
    restart_keeps_jobs,
);

async fn job_life_cycle(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("put 5 0 10 3\r\nabc").await, "INSERTED 1");
    assert_eq!(c.cmd("put 1 0 10 2\r\nhi").await, "INSERTED 2");
    // Lowest priority first.
    c.expect(b"reserve\r\n", b"RESERVED 2 2\r\nhi\r\n").await;
    assert_eq!(c.cmd("touch 2").await, "TOUCHED");
    assert_eq!(c.cmd("release 2 7 0").await, "RELEASED");
    // Released keeps its id, now behind job 1 (pri 5 < 7).
    c.expect(b"reserve-with-timeout 0\r\n", b"RESERVED 1 3\r\nabc\r\n")
        .await;
    assert_eq!(c.cmd("bury 1 9").await, "BURIED");
    assert_eq!(c.stat("stats-job 1", "state").await, "buried");
    assert_eq!(c.stat("stats-job 1", "pri").await, "9");
    assert_eq!(c.cmd("kick-job 1").await, "KICKED");
    assert_eq!(c.stat("stats-job 1", "state").await, "ready");
    // reserve-job takes a given job.
    c.expect(b"reserve-job 1\r\n", b"RESERVED 1 3\r\nabc\r\n")
        .await;
    assert_eq!(c.cmd("delete 1").await, "DELETED");
    assert_eq!(c.cmd("delete 1").await, "NOT_FOUND");
    // Another connection cannot delete a job this one reserved.
    c.expect(b"reserve\r\n", b"RESERVED 2 2\r\nhi\r\n").await;
    let mut other = Client::connect(s.addr).await;
    assert_eq!(other.cmd("delete 2").await, "NOT_FOUND");
    assert_eq!(other.cmd("release 2 0 0").await, "NOT_FOUND");
    assert_eq!(other.cmd("touch 2").await, "NOT_FOUND");
    assert_eq!(other.cmd("bury 2 0").await, "NOT_FOUND");
    assert_eq!(c.cmd("delete 2").await, "DELETED");
    assert_eq!(c.cmd("stats-job 99").await, "NOT_FOUND");
}

async fn tubes_and_lists(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    c.expect(b"list-tubes\r\n", b"OK 14\r\n---\n- default\n\r\n")
        .await;
    assert_eq!(c.cmd("list-tube-used").await, "USING default");
    assert_eq!(c.cmd("use a-tube").await, "USING a-tube");
    assert_eq!(c.cmd("list-tube-used").await, "USING a-tube");
    assert_eq!(c.cmd("watch b").await, "WATCHING 2");
    assert_eq!(c.cmd("watch b").await, "WATCHING 2");
    c.expect(
        b"list-tubes-watched\r\n",
        b"OK 18\r\n---\n- default\n- b\n\r\n",
    )
    .await;
    c.expect(
        b"list-tubes\r\n",
        b"OK 27\r\n---\n- a-tube\n- b\n- default\n\r\n",
    )
    .await;
    assert_eq!(c.cmd("ignore nope").await, "WATCHING 2");
    assert_eq!(c.cmd("ignore default").await, "WATCHING 1");
    assert_eq!(c.cmd("ignore b").await, "NOT_IGNORED");
    // A put goes to the used tube; a reserve sees only watched tubes.
    assert_eq!(c.cmd("put 0 0 10 1\r\nx").await, "INSERTED 1");
    assert_eq!(c.cmd("reserve-with-timeout 0").await, "TIMED_OUT");
    assert_eq!(c.cmd("watch a-tube").await, "WATCHING 2");
    c.expect(b"reserve-with-timeout 0\r\n", b"RESERVED 1 1\r\nx\r\n")
        .await;
    assert_eq!(c.stat("stats-job 1", "tube").await, "a-tube");
    let t = c.yaml("stats-tube a-tube").await;
    let keys: Vec<&str> = t.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "name",
            "current-jobs-urgent",
            "current-jobs-ready",
            "current-jobs-reserved",
            "current-jobs-delayed",
            "current-jobs-buried",
            "total-jobs",
            "current-using",
            "current-watching",
            "current-waiting",
            "cmd-delete",
            "cmd-pause-tube",
            "pause",
            "pause-time-left"
        ]
    );
    assert_eq!(
        c.stat("stats-tube a-tube", "current-jobs-reserved").await,
        "1"
    );
    assert_eq!(c.stat("stats-tube a-tube", "current-using").await, "1");
    assert_eq!(c.cmd("stats-tube nope").await, "NOT_FOUND");
}

async fn peeks_and_kicks(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("peek-ready").await, "NOT_FOUND");
    assert_eq!(c.cmd("peek-delayed").await, "NOT_FOUND");
    assert_eq!(c.cmd("peek-buried").await, "NOT_FOUND");
    assert_eq!(c.cmd("peek 1").await, "NOT_FOUND");
    assert_eq!(c.cmd("put 3 0 10 1\r\na").await, "INSERTED 1");
    assert_eq!(c.cmd("put 2 100 10 1\r\nb").await, "INSERTED 2");
    assert_eq!(c.cmd("put 1 200 10 1\r\nc").await, "INSERTED 3");
    c.expect(b"peek-ready\r\n", b"FOUND 1 1\r\na\r\n").await;
    // The delayed job that is due first.
    c.expect(b"peek-delayed\r\n", b"FOUND 2 1\r\nb\r\n").await;
    c.expect(b"peek 3\r\n", b"FOUND 3 1\r\nc\r\n").await;
    c.expect(b"reserve\r\n", b"RESERVED 1 1\r\na\r\n").await;
    assert_eq!(c.cmd("bury 1 0").await, "BURIED");
    c.expect(b"peek-buried\r\n", b"FOUND 1 1\r\na\r\n").await;
    // Buried jobs first...
    assert_eq!(c.cmd("kick 10").await, "KICKED 1");
    assert_eq!(c.stat("stats-job 1", "kicks").await, "1");
    // ...then delayed ones.
    assert_eq!(c.cmd("kick 1").await, "KICKED 1");
    assert_eq!(c.stat("stats-job 2", "state").await, "ready");
    assert_eq!(c.stat("stats-job 3", "state").await, "delayed");
    assert_eq!(c.cmd("kick-job 3").await, "KICKED");
    assert_eq!(c.cmd("kick-job 3").await, "NOT_FOUND");
    assert_eq!(c.cmd("kick 5").await, "KICKED 0");
    // peek-* look at the used tube only.
    assert_eq!(c.cmd("use other").await, "USING other");
    assert_eq!(c.cmd("peek-ready").await, "NOT_FOUND");
}

async fn error_replies(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    for (send, want) in [
        (&b"PUT 0 0 0 1\r\n"[..], &b"UNKNOWN_COMMAND\r\n"[..]),
        (b"\r\n", b"UNKNOWN_COMMAND\r\n"),
        (b"delete\r\n", b"UNKNOWN_COMMAND\r\n"),
        (b"reservex\r\n", b"BAD_FORMAT\r\n"),
        (b"stats-foo\r\n", b"BAD_FORMAT\r\n"),
        (b"delete 1 x\r\n", b"BAD_FORMAT\r\n"),
        (b"delete -1\r\n", b"BAD_FORMAT\r\n"),
        (b"put 4294967296 0 0 1\r\n", b"BAD_FORMAT\r\n"),
        (b"use -bad\r\n", b"BAD_FORMAT\r\n"),
        (
            b"put 0 0 0 1\r\nxyz\r\n",
            b"EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n",
        ),
        (
            b"put 0 0 0 1 x\r\nx\r\n",
            b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n",
        ),
        (b"delete 12345\r\n", b"NOT_FOUND\r\n"),
        (b"ignore default\r\n", b"NOT_IGNORED\r\n"),
        (b"reserve-with-timeout 0\r\n", b"TIMED_OUT\r\n"),
        (b"pause-tube nope 1\r\n", b"NOT_FOUND\r\n"),
    ] {
        c.expect(send, want).await;
    }
    let mut big = b"put 0 0 0 65536\r\n".to_vec();
    big.extend(vec![b'z'; 65536]);
    big.extend(b"\r\n");
    c.expect(&big, b"JOB_TOO_BIG\r\n").await;
    // DEADLINE_SOON: the only job reserved has a 1 s TTR, so it is already inside the margin.
    assert_eq!(c.cmd("put 0 0 1 1\r\nx").await, "INSERTED 1");
    c.expect(b"reserve\r\n", b"RESERVED 1 1\r\nx\r\n").await;
    assert_eq!(c.cmd("reserve").await, "DEADLINE_SOON");
    // The connection survived every error.
    assert_eq!(c.cmd("list-tube-used").await, "USING default");
}

async fn pipelining_and_split_packets(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    let mut input = Vec::new();
    let mut want = Vec::new();
    for i in 1..=50u32 {
        input.extend(format!("put {i} 0 10 2\r\nj{}\r\n", i % 10).into_bytes());
        want.extend(format!("INSERTED {i}\r\n").into_bytes());
    }
    input.extend(b"use x\r\nlist-tube-used\r\npeek 3\r\n");
    want.extend(b"USING x\r\nUSING x\r\nFOUND 3 2\r\nj3\r\n");
    c.expect(&input, &want).await;
    // Byte by byte: the server must wait for each command to complete.
    let mut c2 = Client::connect(s.addr).await;
    let input = b"put 0 0 10 5\r\nab\r\nc\r\nreserve-job 51\r\ndelete 51\r\n";
    for &b in input.iter() {
        c2.send(&[b]).await;
        tokio::task::yield_now().await;
    }
    let want = b"INSERTED 51\r\nRESERVED 51 5\r\nab\r\nc\r\nDELETED\r\n";
    assert_eq!(c2.read_exact(want.len()).await, want);
}

async fn binary_bodies(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    let body: Vec<u8> = (0..=255u8).chain(*b"\r\n\0\r\n").collect();
    let mut put = format!("put 0 0 10 {}\r\n", body.len()).into_bytes();
    put.extend(&body);
    put.extend(b"\r\n");
    c.expect(&put, b"INSERTED 1\r\n").await;
    let (l, got) = c.with_body("reserve").await;
    assert_eq!(l, format!("RESERVED 1 {}", body.len()));
    assert_eq!(got, body);
    let (_, got) = c.with_body("peek 1").await;
    assert_eq!(got, body);
    // Empty body.
    c.expect(b"put 0 0 10 0\r\n\r\n", b"INSERTED 2\r\n").await;
    c.expect(b"peek 2\r\n", b"FOUND 2 0\r\n\r\n").await;
}

async fn limits(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    let line = |len: usize| {
        let mut l = b"delete ".to_vec();
        l.extend(vec![b'0'; len - 10]);
        l.extend(b"1\r\n");
        l
    };
    c.expect(&line(224), b"NOT_FOUND\r\n").await;
    let mut l = line(225);
    l.extend(b"list-tube-used\r\n");
    c.expect(&l, b"BAD_FORMAT\r\nUSING default\r\n").await;
    let mut l = vec![b'x'; 5000];
    l.extend(b"\r\nlist-tube-used\r\n");
    c.expect(&l, b"BAD_FORMAT\r\nUSING default\r\n").await;
    let mut ok = b"put 0 0 10 65535\r\n".to_vec();
    ok.extend(vec![b'a'; 65535]);
    ok.extend(b"\r\n");
    c.expect(&ok, b"INSERTED 1\r\n").await;
    let mut big = b"put 0 0 10 65536\r\n".to_vec();
    big.extend(vec![b'a'; 65536]);
    big.extend(b"\r\nlist-tube-used\r\n");
    c.expect(&big, b"JOB_TOO_BIG\r\nUSING default\r\n").await;
    let (l, body) = c.with_body("reserve").await;
    assert_eq!(l, "RESERVED 1 65535");
    assert_eq!(body.len(), 65535);
    // A tube name of 200 bytes is fine, 201 is not.
    let t200 = "t".repeat(200);
    assert_eq!(c.cmd(&format!("use {t200}")).await, format!("USING {t200}"));
    assert_eq!(c.cmd(&format!("use {t200}x")).await, "BAD_FORMAT");
    // -z is honoured.
    let s2 = start_with(mode, |cfg| cfg.max_job_size = 3).await;
    let mut c2 = Client::connect(s2.addr).await;
    c2.expect(b"put 0 0 1 3\r\nabc\r\n", b"INSERTED 1\r\n")
        .await;
    c2.expect(b"put 0 0 1 4\r\nabcd\r\n", b"JOB_TOO_BIG\r\n")
        .await;
    let info = c2.stat("stats", "max-job-size").await;
    assert_eq!(info, "3");
}

async fn stats_counters_and_lengths(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("put 0 0 10 1\r\na").await, "INSERTED 1");
    assert_eq!(c.cmd("put 2000 0 10 1\r\nb").await, "INSERTED 2");
    // A put whose body is too big still counts in cmd-put, as in beanstalkd.
    let mut big = b"put 0 0 10 65536\r\n".to_vec();
    big.extend(vec![b'z'; 65536]);
    big.extend(b"\r\n");
    c.expect(&big, b"JOB_TOO_BIG\r\n").await;
    assert_eq!(c.cmd("peek 1").await, "FOUND 1 1");
    let _ = c.line().await;
    assert_eq!(c.cmd("use t").await, "USING t");
    // `yaml` checks that OK <n> is the body length (it reads exactly n bytes + CRLF).
    let st = c.yaml("stats").await;
    let get = |k: &str| {
        st.iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("cmd-put"), "3");
    assert_eq!(get("cmd-peek"), "1");
    assert_eq!(get("cmd-use"), "1");
    assert_eq!(get("cmd-stats"), "1");
    assert_eq!(get("current-jobs-ready"), "2");
    assert_eq!(get("current-jobs-urgent"), "1");
    assert_eq!(get("total-jobs"), "2");
    assert_eq!(get("current-connections"), "1");
    assert_eq!(get("current-producers"), "1");
    assert_eq!(get("draining"), "false");
    assert_eq!(get("mode"), mode.name());
    assert_eq!(get("version"), format!("\"{}\"", env!("CARGO_PKG_VERSION")));
    assert_eq!(get("pid"), std::process::id().to_string());
    let keys: Vec<&str> = st.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.first(), Some(&"current-jobs-urgent"));
    let platform = keys.iter().position(|k| *k == "platform").unwrap();
    let mut want: Vec<String> = [
        "mode",
        "spokes",
        "segments-open",
        "corrupt-records-skipped",
        "data-bytes",
        "hub-lock-acquisitions",
        "hub-lock-contended",
        "hub-lock-held-us",
        "hub-lock-wait-us",
    ]
    .map(String::from)
    .to_vec();
    for kind in ["create", "load", "compact", "retire", "split", "other"] {
        want.push(format!("hub-lock-holds-over-1ms-{kind}"));
        want.push(format!("hub-lock-holds-over-5ms-{kind}"));
    }
    for kind in ["create", "load", "compact", "retire", "split", "other"] {
        want.push(format!("hub-lock-timer-cpu-over-1ms-{kind}"));
        want.push(format!("hub-lock-timer-cpu-over-5ms-{kind}"));
    }
    want.extend(["syncs", "sync-changes", "sync-us"].map(String::from));
    assert_eq!(&keys[platform + 1..], want);
    let job = c.yaml("stats-job 2").await;
    let keys: Vec<&str> = job.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "id",
            "tube",
            "state",
            "pri",
            "age",
            "delay",
            "ttr",
            "time-left",
            "file",
            "reserves",
            "timeouts",
            "releases",
            "buries",
            "kicks"
        ]
    );
}

async fn blocking_reserve_wakes_on_put(mode: Mode) {
    let s = start(mode).await;
    let mut worker = Client::connect(s.addr).await;
    assert_eq!(worker.cmd("watch jobs").await, "WATCHING 2");
    worker.send(b"reserve\r\n").await;
    let mut producer = Client::connect(s.addr).await;
    // Wait until the server has registered the waiter, through stats (no sleeping).
    while producer.stat("stats", "current-waiting").await != "1" {
        tokio::task::yield_now().await;
    }
    assert_eq!(producer.cmd("use jobs").await, "USING jobs");
    assert_eq!(producer.cmd("put 0 0 10 4\r\nwake").await, "INSERTED 1");
    assert_eq!(worker.line().await, "RESERVED 1 4");
    assert_eq!(worker.read_exact(6).await, b"wake\r\n");
    // Commands pipelined behind a blocked reserve run after it.
    worker.send(b"reserve\r\nlist-tube-used\r\n").await;
    while producer.stat("stats", "current-waiting").await != "1" {
        tokio::task::yield_now().await;
    }
    assert_eq!(producer.cmd("put 0 0 10 1\r\nz").await, "INSERTED 2");
    worker
        .expect(b"", b"RESERVED 2 1\r\nz\r\nUSING default\r\n")
        .await;
}

async fn disconnect_and_quit_release_at_once(mode: Mode) {
    let s = start(mode).await;
    let mut a = Client::connect(s.addr).await;
    assert_eq!(a.cmd("put 0 0 100 1\r\nx").await, "INSERTED 1");
    a.expect(b"reserve\r\n", b"RESERVED 1 1\r\nx\r\n").await;
    let mut b = Client::connect(s.addr).await;
    b.send(b"reserve-with-timeout 5\r\n").await;
    drop(a);
    // Released at once, long before its 100 s TTR: b gets it.
    assert_eq!(b.line().await, "RESERVED 1 1");
    assert_eq!(b.read_exact(3).await, b"x\r\n");
    assert_eq!(b.stat("stats-job 1", "timeouts").await, "0");
    // quit does the same and closes the connection.
    let mut c = Client::connect(s.addr).await;
    c.send(b"reserve-with-timeout 5\r\n").await;
    b.send(b"quit\r\n").await;
    assert!(b.closed().await);
    assert_eq!(c.line().await, "RESERVED 1 1");
    let _ = c.read_exact(3).await;
    // A reserve waiting on a half-closed connection answers TIMED_OUT.
    let mut d = Client::connect(s.addr).await;
    d.send(b"reserve\r\n").await;
    while c.stat("stats", "current-waiting").await != "1" {
        tokio::task::yield_now().await;
    }
    d.stream.shutdown().await.unwrap();
    assert_eq!(d.line().await, "TIMED_OUT");
    assert!(d.closed().await);
}

async fn reserve_with_timeout(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("reserve-with-timeout 0").await, "TIMED_OUT");
    let t0 = Instant::now();
    assert_eq!(c.cmd("reserve-with-timeout 1").await, "TIMED_OUT");
    assert!(t0.elapsed() >= Duration::from_secs(1), "timed out early");
    // A job put during the wait ends it.
    c.send(b"reserve-with-timeout 30\r\n").await;
    let mut p = Client::connect(s.addr).await;
    while p.stat("stats", "current-waiting").await != "1" {
        tokio::task::yield_now().await;
    }
    assert_eq!(p.cmd("put 0 0 10 1\r\nq").await, "INSERTED 1");
    assert_eq!(c.line().await, "RESERVED 1 1");
}

async fn ttr_expiry_and_delayed_jobs(mode: Mode) {
    let s = start(mode).await;
    let mut a = Client::connect(s.addr).await;
    let mut b = Client::connect(s.addr).await;
    // A delayed job (1 s) and a job with a 1 s TTR, waited for concurrently.
    let t0 = Instant::now();
    assert_eq!(a.cmd("use d").await, "USING d");
    assert_eq!(a.cmd("put 0 1 10 1\r\nd").await, "INSERTED 1");
    assert_eq!(a.stat("stats-job 1", "state").await, "delayed");
    assert_eq!(a.cmd("put 0 0 1 1\r\nt").await, "INSERTED 2");
    assert_eq!(b.cmd("watch d").await, "WATCHING 2");
    assert_eq!(b.cmd("ignore default").await, "WATCHING 1");
    // Job 2 is in "d" too (a uses d); b reserves it, then a's watcher gets it back after TTR.
    b.expect(b"reserve\r\n", b"RESERVED 2 1\r\nt\r\n").await;
    assert_eq!(a.cmd("watch d").await, "WATCHING 2");
    assert_eq!(a.cmd("ignore default").await, "WATCHING 1");
    let (l1, _) = a.with_body("reserve").await;
    let (l2, _) = a.with_body("reserve").await;
    let mut got = [l1, l2];
    got.sort();
    assert_eq!(got, ["RESERVED 1 1", "RESERVED 2 1"]);
    assert!(t0.elapsed() >= Duration::from_secs(1), "fired early");
    assert_eq!(a.stat("stats-job 2", "timeouts").await, "1");
    assert_eq!(a.stat("stats", "job-timeouts").await, "1");
    // b no longer holds job 2.
    assert_eq!(b.cmd("delete 2").await, "NOT_FOUND");
    assert_eq!(a.cmd("delete 2").await, "DELETED");
}

async fn pause_tube(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("put 0 0 10 1\r\np").await, "INSERTED 1");
    assert_eq!(c.cmd("pause-tube default 100").await, "PAUSED");
    assert_eq!(c.stat("stats-tube default", "pause").await, "100");
    assert_eq!(c.cmd("reserve-with-timeout 0").await, "TIMED_OUT");
    c.send(b"reserve\r\n").await;
    let mut o = Client::connect(s.addr).await;
    while o.stat("stats", "current-waiting").await != "1" {
        tokio::task::yield_now().await;
    }
    // Unpausing hands the job to the waiting reserve.
    assert_eq!(o.cmd("pause-tube default 0").await, "PAUSED");
    assert_eq!(c.line().await, "RESERVED 1 1");
    assert_eq!(o.stat("stats-tube default", "cmd-pause-tube").await, "2");
}

async fn draining(mode: Mode) {
    let s = start(mode).await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("put 0 0 10 1\r\na").await, "INSERTED 1");
    s.server.drain().expect("flush");
    assert_eq!(c.cmd("put 0 0 10 1\r\nb").await, "DRAINING");
    assert_eq!(c.stat("stats", "draining").await, "true");
    // Everything else still works.
    c.expect(b"reserve\r\n", b"RESERVED 1 1\r\na\r\n").await;
    assert_eq!(c.cmd("delete 1").await, "DELETED");
}

async fn restart_keeps_jobs(mode: Mode) {
    let s = start(mode).await;
    let dir = s.dir;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("use keep").await, "USING keep");
    assert_eq!(c.cmd("put 7 0 10 4\r\nkept").await, "INSERTED 1");
    assert_eq!(c.cmd("put 8 0 10 4\r\ngone").await, "INSERTED 2");
    assert_eq!(c.cmd("delete 2").await, "DELETED");
    assert_eq!(c.cmd("put 9 0 10 3\r\nres").await, "INSERTED 3");
    c.expect(b"reserve-job 3\r\n", b"RESERVED 3 3\r\nres\r\n")
        .await;
    drop(c);
    s.server.shutdown().await.expect("clean shutdown");

    let cfg = {
        let mut cfg = server_util::config(mode, dir.path());
        cfg.restore = true;
        cfg
    };
    let server = yaad::server::start(cfg).await.expect("restart");
    let mut c = Client::connect(server.tcp_addr().unwrap()).await;
    assert_eq!(c.cmd("watch keep").await, "WATCHING 2");
    // The reserved job is ready again; the deleted one is gone; ids go on.
    c.expect(b"reserve\r\n", b"RESERVED 1 4\r\nkept\r\n").await;
    c.expect(b"reserve\r\n", b"RESERVED 3 3\r\nres\r\n").await;
    assert_eq!(c.cmd("peek 2").await, "NOT_FOUND");
    assert_eq!(c.stat("stats-job 1", "pri").await, "7");
    let id: u64 = c.cmd("put 0 0 10 1\r\nn").await["INSERTED ".len()..]
        .parse()
        .unwrap();
    assert!(id > 3, "ids continue above those issued before the restart");
    drop(c);
    server.shutdown().await.expect("clean shutdown");
}
