//! Each connection held a second descriptor of its socket (for the replies the hub's wake-ups
//! send), so 10,000 connections needed 20,000 open files: more than a common hard limit, and
//! twice what the open-file warning assumed. A connection now costs one descriptor.
//!
//! Alone in its file: it counts this process's open files, which other tests would change.

mod server_util;

use server_util::{Client, start};
use yaad::server::Mode;

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_costs_one_descriptor() {
    let s = start(Mode::Mem).await;
    // The first connection may open lazily made files of the runtime: not counted.
    let mut first = Client::connect(s.addr).await;
    assert_eq!(first.cmd("list-tube-used").await, "USING default");
    let before = open_files();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect(s.addr).await;
        // Answered: the server has accepted it and runs its task.
        assert_eq!(c.cmd("list-tube-used").await, "USING default");
        clients.push(c);
    }
    // 20 client sockets and the server's 20.
    assert_eq!(open_files() - before, 40);
}
