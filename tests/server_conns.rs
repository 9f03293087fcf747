//! Connection handling: slow clients, the connection limit, Unix sockets, flush policies.

mod server_util;

use server_util::{Client, start, start_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yaad::server::{self, Mode};

/// A client that pipelines big replies and never reads must not stall anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_does_not_stall_others() {
    let s = start(Mode::Mem).await;
    let mut c = Client::connect(s.addr).await;
    let mut put = b"put 0 0 100 60000\r\n".to_vec();
    put.extend(vec![b'b'; 60000]);
    put.extend(b"\r\n");
    c.expect(&put, b"INSERTED 1\r\n").await;
    // ~2000 peeks of 60 kB each: ~120 MB of replies the hostile client never reads.
    let mut hostile = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let peeks = b"peek 1\r\n".repeat(2000);
    let writer = tokio::spawn(async move {
        // The server stops reading once its writes block; so may this write. Keep the socket.
        let _ = hostile.write_all(&peeks).await;
        hostile
    });
    for i in 0..20 {
        assert_eq!(
            c.cmd("put 0 0 10 1\r\nx").await,
            format!("INSERTED {}", i + 2)
        );
        assert_eq!(c.cmd(&format!("delete {}", i + 2)).await, "DELETED");
    }
    // The hostile connection is counted once the server has accepted it.
    let mut stats = c.stat("stats", "current-connections").await;
    for _ in 0..200 {
        if stats == "2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        stats = c.stat("stats", "current-connections").await;
    }
    assert_eq!(stats, "2");
    writer.abort();

    // A shutdown is not held up by a connection blocked writing to a client that never reads.
    let peeks = |v: String| v.parse::<u64>().unwrap();
    let before = peeks(c.stat("stats", "cmd-peek").await);
    let mut stuck = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // 500 replies of 60 kB: far more than socket buffers hold.
    stuck.write_all(&b"peek 1\r\n".repeat(500)).await.unwrap();
    while peeks(c.stat("stats", "cmd-peek").await) <= before {
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(server_util::HANG_GUARD, s.server.shutdown())
        .await
        .expect("shutdown finished")
        .expect("clean shutdown");
    drop(stuck);
}

/// The reply to a blocked reserve is sent by the thread that hands out the job when every
/// earlier reply of the connection is out; what the socket does not take at once, the
/// connection sends. Either way replies stay whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_a_blocked_reserve_stay_whole_and_in_order() {
    let s = start_with(Mode::Mapped, |cfg| cfg.max_job_size = 4 << 20).await;
    let mut producer = Client::connect(s.addr).await;
    let waiting = |n: &'static str| {
        let addr = s.addr;
        async move {
            let mut c = Client::connect(addr).await;
            while c.stat("stats", "current-waiting").await != n {
                tokio::task::yield_now().await;
            }
        }
    };
    // A consumer that reads slowly: the reply is far more than its socket buffers take.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = Client::on(socket.connect(s.addr).await.unwrap());
    // Pipelined behind the reserve: answered only after it, and after the whole body.
    slow.send(b"reserve\r\nlist-tube-used\r\n").await;
    waiting("1").await;
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut put = format!("put 0 0 60 {}\r\n", body.len()).into_bytes();
    put.extend_from_slice(&body);
    put.extend_from_slice(b"\r\n");
    producer.expect(&put, b"INSERTED 1\r\n").await;
    assert_eq!(slow.line().await, format!("RESERVED 1 {}", body.len()));
    let got = slow.read_exact(body.len() + 2).await;
    assert!(got[..body.len()] == body[..], "body intact");
    assert_eq!(&got[body.len()..], b"\r\n");
    assert_eq!(slow.line().await, "USING default");

    // A reserve pipelined behind another command waits with that reply already sent; the
    // job's reply follows it.
    let mut c = Client::connect(s.addr).await;
    c.send(b"list-tube-used\r\nreserve-with-timeout 100\r\nlist-tubes-watched\r\n")
        .await;
    assert_eq!(c.line().await, "USING default");
    waiting("1").await;
    producer
        .expect(b"put 0 0 60 2\r\nhi\r\n", b"INSERTED 2\r\n")
        .await;
    assert_eq!(c.line().await, "RESERVED 2 2");
    assert_eq!(c.read_exact(4).await, b"hi\r\n");
    assert_eq!(c.line().await, "OK 14");
    assert_eq!(c.read_exact(16).await, b"---\n- default\n\r\n");
}

#[tokio::test]
async fn connection_limit() {
    let s = start_with(Mode::Mem, |cfg| cfg.max_connections = 2).await;
    let mut a = Client::connect(s.addr).await;
    let mut b = Client::connect(s.addr).await;
    assert_eq!(a.cmd("list-tube-used").await, "USING default");
    assert_eq!(b.cmd("list-tube-used").await, "USING default");
    // The third is closed without a reply.
    let mut c = Client::connect(s.addr).await;
    c.send(b"list-tube-used\r\n").await;
    assert!(c.closed().await);
    // Once one leaves, a new one is served.
    a.send(b"quit\r\n").await;
    assert!(a.closed().await);
    loop {
        let mut d = Client::connect(s.addr).await;
        d.send(b"list-tube-used\r\n").await;
        // The server may not have noticed a's exit yet: then d is closed; try again.
        let mut buf = [0u8; 64];
        let n = d.stream.read(&mut buf).await.unwrap_or(0);
        if n > 0 {
            assert_eq!(&buf[..n], b"USING default\r\n");
            break;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("yaad.sock");
    let mut cfg = server_util::config(Mode::Mapped, &dir.path().join("data"));
    cfg.listen = format!("unix:{}", sock.display());
    let server = server::start(cfg).await.unwrap();
    assert_eq!(server.addr(), &server::BoundAddr::Unix(sock.clone()));
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(b"put 0 0 1 2\r\nhi\r\npeek 1\r\n")
        .await
        .unwrap();
    let want = b"INSERTED 1\r\nFOUND 1 2\r\nhi\r\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, want);
    drop(s);
    server.shutdown().await.unwrap();
    assert!(!sock.exists());
}

/// Mem mode writes no file while it runs, whatever `-f` says (`-f 0`, `-f 5`, `-F`): only
/// SIGUSR1's drain (and shutdown) write the segment files.
#[tokio::test]
async fn mem_mode_writes_files_only_when_drained() {
    let segment_files = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("seg-")
            })
            .count()
    };
    let every = start_with(Mode::Mem, |cfg| cfg.fsync_ms = 0).await;
    let periodic = start_with(Mode::Mem, |cfg| cfg.fsync_ms = 5).await;
    let never = start_with(Mode::Mem, |cfg| cfg.never_fsync = true).await;
    for s in [&every, &periodic, &never] {
        let mut c = Client::connect(s.addr).await;
        assert_eq!(c.cmd("put 0 0 10 1\r\nx").await, "INSERTED 1");
        // A round trip after the put: a periodic flusher had ticks to act in, and did not.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert_eq!(c.cmd("put 0 0 10 1\r\ny").await, "INSERTED 2");
        assert_eq!(segment_files(s.dir.path()), 0, "no file while running");
        s.server.drain().unwrap();
        assert!(segment_files(s.dir.path()) > 0, "the drain wrote the job");
    }
}

/// Two servers cannot share a data dir.
#[tokio::test]
async fn data_dir_is_locked() {
    let s = start(Mode::Mapped).await;
    let cfg = server_util::config(Mode::Mapped, s.dir.path());
    assert!(server::start(cfg).await.is_err());
}

/// `-f 0` is a group commit: a reply waits for a sync covering its change, and changes that
/// arrive together share one sync instead of one each.
#[tokio::test]
async fn every_change_sync_is_a_group_commit() {
    for mode in [Mode::Mapped, Mode::Lazy] {
        let s = start_with(mode, |cfg| cfg.fsync_ms = 0).await;
        let mut c = Client::connect(s.addr).await;
        assert_eq!(c.cmd("put 0 0 10 1\r\nx").await, "INSERTED 1");
        assert_eq!(s.server.syncs(), 1, "the reply came after its sync");

        // 100 pipelined puts reach the server in one read: one sync covers them all.
        let mut batch = Vec::new();
        for _ in 0..100 {
            batch.extend_from_slice(b"put 0 0 10 1\r\ny\r\n");
        }
        c.send(&batch).await;
        for id in 2..=101 {
            assert_eq!(c.line().await, format!("INSERTED {id}"));
        }
        let syncs = s.server.syncs();
        assert!(syncs < 50, "{syncs} syncs for 100 pipelined changes");

        // Many connections at once: every one gets its replies.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let addr = s.addr;
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                for _ in 0..10 {
                    assert!(c.cmd("put 0 0 10 1\r\nz").await.starts_with("INSERTED "));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(s.server.syncs() > syncs);
    }
}

/// `-f 0`: when the sync covering a change fails, its reply is never sent (the connection is
/// closed instead), so a client never takes an unsynced change as acknowledged. The sync is
/// made to fail by the server's fault injection (the files synced are the open ones: renaming
/// them does not make a real fdatasync fail).
///
/// Regression: afterwards the server trusted its files again. A failed batch had dropped the
/// sets it took (its spokes, the index, the directory), so later puts into a file it created
/// were acknowledged without a directory sync, and a flush wrote a clean summary over files
/// never synced. Now the server stops trusting them: later changes are refused
/// (`INTERNAL_ERROR`, not applied), a flush or shutdown fails and leaves no summary, and the
/// next start scans every segment.
#[tokio::test]
async fn a_failed_sync_withholds_the_reply_and_the_files_are_untrusted_from_then_on() {
    for mode in [Mode::Mapped, Mode::Lazy] {
        let s = start_with(mode, |cfg| cfg.fsync_ms = 0).await;
        let summary = s.dir.path().join(yaad::segment::SUMMARY_FILE);
        let mut c = Client::connect(s.addr).await;
        assert_eq!(c.cmd("put 0 100 10 1\r\nx").await, "INSERTED 1");
        s.server.flush().expect("flush");
        assert!(
            summary.exists(),
            "{mode:?}: a flush writes the clean summary"
        );

        s.server.inject_sync_failures(true);
        let syncs = s.server.syncs();
        c.send(b"put 0 100 10 1\r\ny\r\n").await;
        assert!(
            c.closed().await,
            "{mode:?}: no reply for a change whose sync failed"
        );
        assert_eq!(s.server.syncs(), syncs, "{mode:?}: no sync completed");
        assert!(
            !summary.exists(),
            "{mode:?}: the clean summary is withdrawn"
        );

        // The server is still there: a command that changes nothing is answered at once, but
        // even once syncs would work again, changes are refused.
        s.server.inject_sync_failures(false);
        let mut c = Client::connect(s.addr).await;
        assert_eq!(c.cmd("use other").await, "USING other");
        assert_eq!(
            c.stat("stats", "current-jobs-delayed").await,
            "2",
            "{mode:?}"
        );
        assert_eq!(c.cmd("put 0 100 10 1\r\nz").await, "INTERNAL_ERROR");
        assert_eq!(c.cmd("peek 3").await, "NOT_FOUND", "{mode:?}: not applied");
        assert_eq!(c.cmd("delete 1").await, "INTERNAL_ERROR");
        assert_eq!(s.server.syncs(), syncs, "{mode:?}");
        assert!(s.server.flush().is_err(), "{mode:?}: the flush reports it");
        assert!(!summary.exists(), "{mode:?}: no clean summary");
        let dir = s.dir;
        assert!(
            s.server.shutdown().await.is_err(),
            "{mode:?}: so does the stop"
        );
        assert!(!summary.exists(), "{mode:?}: no clean summary at the stop");

        // A restart scans the files and trusts them again.
        let restarted = server::start(server_util::config(mode, dir.path()))
            .await
            .expect("restart");
        let mut c = Client::connect(restarted.tcp_addr().unwrap()).await;
        assert_eq!(c.cmd("delete 1").await, "DELETED", "{mode:?}");
        restarted.shutdown().await.expect("clean shutdown");
    }
}

/// With several event loops (`--threads 3`), connections spread over them: a reserve blocked
/// on one loop is answered by puts from connections on the others, every job once, and a
/// server with connections open on every loop stops cleanly.
#[tokio::test(flavor = "current_thread")]
async fn connections_on_several_loops_hand_jobs_to_each_other() {
    for mode in [Mode::Mem, Mode::Mapped, Mode::Lazy] {
        let s = start_with(mode, |c| c.threads = 3).await;
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let mut w = Client::connect(s.addr).await;
            w.send(b"reserve-with-timeout 10\r\n").await;
            waiters.push(w);
        }
        // Wait until all three reserves are blocked before putting.
        let mut c = Client::connect(s.addr).await;
        tokio::time::timeout(server_util::HANG_GUARD, async {
            while c.stat("stats", "current-waiting").await != "3" {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("three reserves waiting");
        let mut putters = Vec::new();
        for i in 0..3 {
            let mut p = Client::connect(s.addr).await;
            assert_eq!(
                p.cmd(&format!("put 0 0 0 1\r\n{i}")).await,
                format!("INSERTED {}", i + 1)
            );
            putters.push(p);
        }
        let mut got = Vec::new();
        for w in &mut waiters {
            let line = w.line().await;
            assert!(
                line.starts_with("RESERVED ") && line.ends_with(" 1"),
                "{mode:?}: {line}"
            );
            let body = w.read_exact(3).await;
            got.push(String::from_utf8(body[..1].to_vec()).unwrap());
        }
        got.sort();
        assert_eq!(got, ["0", "1", "2"], "{mode:?}");
        assert_eq!(c.stat("stats", "current-connections").await, "7");
        tokio::time::timeout(server_util::HANG_GUARD, s.server.shutdown())
            .await
            .expect("shutdown finished")
            .expect("clean shutdown");
    }
}
