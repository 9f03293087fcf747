//! `-f 0` promises that every acknowledged change survives a power loss. Regressions: a flush
//! (SIGUSR1, shutdown) marked the changes of a sync still in flight as synced; `reserve-job`
//! persisted a state change without waiting for its sync; a reply handed out or showed a job
//! whose change (a kick by another connection) was not durable yet, also when the thread that
//! handed the job to a blocked reserve sent the reply itself.
//!
//! Syncs are held by the server's test hook (`Server::hold_syncs`): what must wait for one is
//! seen waiting while it is held, and answered once it completes.

mod server_util;

use std::time::Duration;

use server_util::{Client, TestServer, start_with};
use tokio::io::AsyncReadExt;
use yaad::server::{Mode, Server};

/// How long a reply that must wait for a held sync is watched for. Only a bug can make the
/// reply come (it cannot come early once fixed), so the window bounds how sure a failure is,
/// never whether the fixed code passes.
const WINDOW: Duration = Duration::from_millis(300);

async fn start_every_change(mode: Mode) -> TestServer {
    start_with(mode, |cfg| cfg.fsync_ms = 0).await
}

/// Holds syncs until dropped (also when an assertion fails, so that the server can stop).
struct Held<'a>(&'a Server);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.hold_syncs(false);
    }
}

fn hold(s: &TestServer) -> Held<'_> {
    s.server.hold_syncs(true);
    Held(&s.server)
}

/// Waits until the sync thread holds a batch (the hold is on and a change waits for a sync).
async fn until_sync_held(s: &TestServer) {
    let deadline = tokio::time::Instant::now() + server_util::HANG_GUARD;
    while !s.server.sync_held() {
        assert!(tokio::time::Instant::now() < deadline, "no sync was taken");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Asserts that nothing arrives on `c` for [`WINDOW`].
async fn no_reply_yet(c: &mut Client, what: &str) {
    let mut buf = [0u8; 256];
    if let Ok(r) = tokio::time::timeout(WINDOW, c.stream.read(&mut buf)).await {
        let n = r.expect("read");
        panic!(
            "{what}: answered before the sync it depends on completed: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

/// A buried job 1 (its changes synced), and the connection that buried it.
async fn buried_job(s: &TestServer) -> Client {
    let mut a = Client::connect(s.addr).await;
    assert_eq!(a.cmd("put 0 0 60 1\r\nx").await, "INSERTED 1");
    assert_eq!(a.cmd("reserve-with-timeout 0").await, "RESERVED 1 1");
    assert_eq!(a.line().await, "x");
    assert_eq!(a.cmd("bury 1 0").await, "BURIED");
    a
}

/// A flush (SIGUSR1's drain, a shutdown) while a sync batch is in flight waits for it: the
/// batch took its files out of the hub's sets, so flushing the hub does not sync them, and
/// marking its changes synced then would release their replies before they are durable.
#[test]
fn a_flush_waits_for_the_sync_in_flight() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for mode in [Mode::Mapped, Mode::Lazy] {
        let s = rt.block_on(start_every_change(mode));
        let mut c = rt.block_on(Client::connect(s.addr));
        s.server.hold_syncs(true);
        rt.block_on(async {
            c.send(b"put 0 0 60 1\r\nx\r\n").await;
            until_sync_held(&s).await;
        });
        std::thread::scope(|scope| {
            let flush = scope.spawn(|| s.server.flush());
            let watched = std::time::Instant::now();
            while !flush.is_finished() && watched.elapsed() < WINDOW {
                std::thread::sleep(Duration::from_millis(1));
            }
            let returned_early = flush.is_finished();
            s.server.hold_syncs(false);
            assert!(
                !returned_early,
                "{mode:?}: the flush returned while a sync batch was still being synced"
            );
            flush.join().unwrap().expect("flush");
        });
        rt.block_on(async {
            assert_eq!(c.line().await, "INSERTED 1", "{mode:?}");
            s.server.shutdown().await.expect("clean shutdown");
        });
    }
}

/// `reserve-job` of a buried (or delayed) job persists it as ready: its reply waits for that
/// change's sync like every other change's, and is withheld when the sync fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_job_waits_for_its_sync() {
    for mode in [Mode::Mapped, Mode::Lazy] {
        let s = start_every_change(mode).await;
        let _a = buried_job(&s).await;
        s.server.inject_sync_failures(true);
        let mut b = Client::connect(s.addr).await;
        b.send(b"reserve-job 1\r\n").await;
        assert!(
            b.closed().await,
            "{mode:?}: no reply for a reserve-job whose change was never synced"
        );
    }
}

/// A blocked reserve handed a job by another connection's kick is answered only once the kick
/// is durable: the thread that hands out the job does not send the reply itself then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_reserve_waits_for_the_kick_that_made_its_job_ready() {
    for mode in [Mode::Mapped, Mode::Lazy] {
        let s = start_every_change(mode).await;
        let mut a = buried_job(&s).await;
        let mut b = Client::connect(s.addr).await;
        b.send(b"reserve\r\n").await;
        let mut watcher = Client::connect(s.addr).await;
        while watcher.stat("stats", "current-waiting").await != "1" {
            tokio::task::yield_now().await;
        }
        let held = hold(&s);
        a.send(b"kick-job 1\r\n").await;
        until_sync_held(&s).await;
        no_reply_yet(&mut b, "the blocked reserve").await;
        drop(held);
        assert_eq!(a.line().await, "KICKED", "{mode:?}");
        assert_eq!(b.line().await, "RESERVED 1 1", "{mode:?}");
        assert_eq!(b.line().await, "x");
    }
}

/// Replies that hand out or show a job kicked by another connection (reserve, peek,
/// stats-job) wait until the kick is durable: after a power loss the job would be buried
/// again while a worker holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_showing_a_job_wait_for_the_change_that_wrote_it() {
    for mode in [Mode::Mapped, Mode::Lazy] {
        let s = start_every_change(mode).await;
        let mut a = buried_job(&s).await;
        let held = hold(&s);
        a.send(b"kick-job 1\r\n").await;
        until_sync_held(&s).await;
        let mut clients = Vec::new();
        // Each on its own connection, so no reply waits behind another; each answers the same
        // whichever runs first.
        for cmd in ["peek 1", "stats-job 1", "reserve-with-timeout 0"] {
            let mut c = Client::connect(s.addr).await;
            c.send(format!("{cmd}\r\n").as_bytes()).await;
            clients.push((cmd, c));
        }
        for (cmd, c) in &mut clients {
            no_reply_yet(c, cmd).await;
        }
        drop(held);
        assert_eq!(a.line().await, "KICKED", "{mode:?}");
        for (cmd, c) in &mut clients {
            let want = match *cmd {
                "stats-job 1" => "OK ",
                "reserve-with-timeout 0" => "RESERVED 1 1",
                _ => "FOUND 1 1",
            };
            let got = c.line().await;
            assert!(got.starts_with(want), "{mode:?} {cmd}: {got}");
        }
    }
}
