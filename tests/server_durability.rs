//! `-f 0` promises that every acknowledged change survives a power loss. Regressions: a flush
//! (SIGUSR1, shutdown) marked the changes of a sync still in flight as synced; `reserve-job`
//! persisted a state change without waiting for its sync.
//!
//! Syncs are held by the server's test hook (`Server::hold_syncs`): what must wait for one is
//! seen waiting while it is held, and answered once it completes.

mod server_util;

use std::time::Duration;

use server_util::{Client, TestServer, start_with};
use yaad::server::Mode;

/// How long a flush that must wait for a held sync is watched for. Only a bug can make it
/// return (it cannot return early once fixed), so the window bounds how sure a failure is,
/// never whether the fixed code passes.
const WINDOW: Duration = Duration::from_millis(300);

async fn start_every_change(mode: Mode) -> TestServer {
    start_with(mode, |cfg| cfg.fsync_ms = 0).await
}

/// Waits until the sync thread holds a batch (the hold is on and a change waits for a sync).
async fn until_sync_held(s: &TestServer) {
    let deadline = tokio::time::Instant::now() + server_util::HANG_GUARD;
    while !s.server.sync_held() {
        assert!(tokio::time::Instant::now() < deadline, "no sync was taken");
        tokio::time::sleep(Duration::from_millis(1)).await;
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
