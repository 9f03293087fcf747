//! The event loops that serve connections: `--threads` threads, each running a current-thread
//! tokio runtime, and each connection pinned for its life to the loop that had the fewest
//! connections when it was accepted.
//!
//! One loop is the default: it serves every socket an `epoll_wait` reports in one pass, on a
//! thread that stays busy. On 2 cores shared with the clients a second serving thread, a
//! second loop or a second worker of tokio's multi-threaded runtime alike, cost 35-55 % more
//! server CPU per request in wake-ups (bench/README.md, *Event loops*). More loops are for
//! machines where one core cannot keep up with the sockets. Pinned connections are never
//! stolen: a loop is woken only by its own sockets and by hub wake-ups of its waiting
//! reserves.
//!
//! The accept loop hands a loop the accepted socket ([`Loops::spawn`]); the socket joins that
//! loop's reactor inside the task. Stopping: the accept loop aborts the connection tasks and
//! waits for them while the loops still run, then [`Loops::stop`] ends the loops' threads.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// The connection loops of a server.
pub(super) struct Loops {
    loops: Vec<Loop>,
}

struct Loop {
    handle: Handle,
    /// Connections served by this loop now.
    conns: Arc<AtomicUsize>,
    /// Dropping (or sending) it ends the loop's `block_on`.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts one connection on its loop until dropped.
struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Loops {
    /// Starts `n` loops (0: one per CPU), each on a thread named `yaad-conn`.
    pub(super) fn start(n: usize) -> io::Result<Loops> {
        let n = match n {
            0 => std::thread::available_parallelism().map_or(1, |p| p.get()),
            n => n,
        };
        let mut loops = Vec::with_capacity(n);
        for _ in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("yaad-conn".into())
                .spawn(move || {
                    // Either way (sent or dropped) the loop is done.
                    let _ = runtime.block_on(stopped);
                })?;
            loops.push(Loop {
                handle,
                conns: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Loops { loops })
    }

    /// Runs a new connection's task on the loop with the fewest connections, as a task of
    /// `set`. The task runs on that loop's thread, so a socket it registers joins that loop.
    pub(super) fn spawn(
        &self,
        set: &mut JoinSet<()>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let target = self
            .loops
            .iter()
            .min_by_key(|l| l.conns.load(Ordering::Relaxed))
            .expect("a server has at least one loop");
        target.conns.fetch_add(1, Ordering::Relaxed);
        let load = Load(target.conns.clone());
        set.spawn_on(
            async move {
                let _load = load;
                task.await;
            },
            &target.handle,
        );
    }

    /// Ends every loop and waits for its thread. Call once the connection tasks have ended:
    /// a task still on a loop is dropped with it.
    pub(super) fn stop(mut self) {
        for l in &mut self.loops {
            l.stop.take();
        }
        for l in &mut self.loops {
            if let Some(t) = l.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Loops {
    /// A server dropped without [`Loops::stop`] (its start failed) still ends the loops; their
    /// threads end on their own.
    fn drop(&mut self) {
        for l in &mut self.loops {
            l.stop.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(loops: &Loops) -> Vec<usize> {
        loops
            .loops
            .iter()
            .map(|l| l.conns.load(Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn connections_go_to_the_least_loaded_loop_and_run_on_its_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let loops = Loops::start(2).unwrap();
            assert_eq!(loops.loops.len(), 2);
            let mut set = JoinSet::new();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let release = Arc::new(tokio::sync::Notify::new());
            for _ in 0..4 {
                let tx = tx.clone();
                let release = release.clone();
                loops.spawn(&mut set, async move {
                    let me = std::thread::current();
                    tx.send((me.name().map(str::to_owned), me.id())).unwrap();
                    release.notified().await;
                });
            }
            let mut threads = Vec::new();
            for _ in 0..4 {
                threads.push(rx.recv().await.unwrap());
            }
            assert!(
                threads
                    .iter()
                    .all(|(name, _)| name.as_deref() == Some("yaad-conn"))
            );
            let mut ids: Vec<_> = threads.iter().map(|(_, id)| *id).collect();
            ids.sort_unstable_by_key(|id| format!("{id:?}"));
            ids.dedup();
            assert_eq!(ids.len(), 2, "four connections spread over both loops");
            assert_eq!(counts(&loops), [2, 2]);
            // Aborted tasks end while the loops run, and give back their load.
            set.shutdown().await;
            assert_eq!(counts(&loops), [0, 0]);
            loops.stop();
        });
    }
}
