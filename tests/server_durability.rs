//! `-f 0` promises that every acknowledged change survives a power loss. Regression: a flush
//! (SIGUSR1, shutdown) marked the changes of a sync still in flight as synced.
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
