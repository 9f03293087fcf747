//! One client connection: read bytes, decode commands, apply them to the hub, write replies.
//!
//! Replies of pipelined commands are batched into one write (never split: each reply goes out
//! whole). A blocking reserve waits on the connection's wake-up queue, fed by the hub's
//! wake-ups; meanwhile the socket is still read so that a client closing it is noticed.
//!
//! An idle connection holds no buffer: the input and reply buffers are given back whenever
//! everything read has been answered and sent, and the connection waits for the socket to be
//! readable before it allocates one again (see `read`).
//!
//! A server stop aborts the connection tasks (at their next `.await`) rather than having each
//! read select on a shutdown signal, which cost a registration per request; dropping the
//! [`Conn`] forgets the connection in the hub.

use std::future::poll_fn;
use std::io::ErrorKind;
use std::mem::MaybeUninit;
use std::sync::Arc;

use bytes::BytesMut;
use rustix::net::RecvFlags;

use super::core::{Core, Socket, Waiter, Wakeup, Wakeups, now};
use super::reply::{
    found, put_named_reply, released, reserve_reply, reserved, result_reply, unit_reply,
};
use super::stats::{self, Cmd};
use crate::hub::{ConnId, Hub, HubError, JobView, ReserveOutcome, SECOND};
use crate::observe;
use crate::protocol::{Command, Decoder, Response};
use crate::segment::Segment;

/// Flush the pending replies once they reach this size, even mid-pipeline.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// While a reserve waits, read at most this much of further pipelined input.
const MAX_PENDING_INPUT: usize = 64 * 1024;

/// Bytes read at a time (into a buffer on the thread's stack, see `Conn::try_read`).
const READ_SIZE: usize = 16 * 1024;

/// The reply buffer's first allocation, when a connection has something to answer again.
const OUT_SIZE: usize = 4 * 1024;

/// Buffers given back by the connections of this thread that went idle, for the next one that
/// reads: a connection with one command in flight goes idle between its requests, and would
/// otherwise free and allocate both its buffers on each. At most [`SPARES`] of each per
/// thread, none bigger than [`SPARE_MAX`].
#[derive(Default)]
struct Spares {
    input: Vec<BytesMut>,
    out: Vec<Vec<u8>>,
}

/// Spare buffers kept per thread, of each kind.
const SPARES: usize = 16;

/// A bigger buffer (grown by a big job) is freed rather than kept.
const SPARE_MAX: usize = 64 * 1024;

thread_local! {
    static SPARES_OF_THREAD: std::cell::RefCell<Spares> = std::cell::RefCell::default();
}

impl Spares {
    fn with<R>(f: impl FnOnce(&mut Spares) -> R) -> R {
        SPARES_OF_THREAD.with(|s| f(&mut s.borrow_mut()))
    }

    fn give_input(b: BytesMut) {
        if b.capacity() <= SPARE_MAX {
            Spares::with(|s| (s.input.len() < SPARES).then(|| s.input.push(b)));
        }
    }

    fn give_out(b: Vec<u8>) {
        if b.capacity() <= SPARE_MAX {
            Spares::with(|s| (s.out.len() < SPARES).then(|| s.out.push(b)));
        }
    }

    fn take_input() -> BytesMut {
        Spares::with(|s| s.input.pop()).unwrap_or_default()
    }

    fn take_out() -> Vec<u8> {
        Spares::with(|s| s.out.pop()).unwrap_or_default()
    }
}

/// Serves one connection until the client quits or closes, or the server shuts down.
pub async fn serve<S: Segment, T: Socket>(core: Arc<Core<S>>, stream: T) {
    let mut conn = Conn::new(core, stream);
    let id = conn.id;
    if let Err(e) = conn.run().await {
        tracing::debug!(conn = id, "connection ended: {e}");
    }
    // Dropping `conn` disconnects it.
}

/// One connection's state, owned by its task.
struct Conn<S: Segment, T> {
    core: Arc<Core<S>>,
    id: ConnId,
    stream: Arc<T>,
    decoder: Decoder,
    wakeups: Arc<Wakeups>,
    /// Bytes read and not yet decoded; no allocation while there are none ([`Conn::read`]).
    input: BytesMut,
    /// Replies not yet written; no allocation while there are none.
    out: Vec<u8>,
    /// The client closed its sending side.
    eof: bool,
    /// The latest change the pending replies depend on: the connection's own latest change, or
    /// the one that last wrote a job a reply shows. Replies wait until it is durable (`-f 0`).
    change: u64,
}

/// What a command asks of the connection.
enum Step {
    Reply(Response),
    /// A reserve with no job now: wait for a wake-up.
    Wait,
    /// `quit`: send what is pending and close.
    Close,
}

impl<S: Segment, T> Drop for Conn<S, T> {
    /// Forgets the connection (its reserved jobs are ready again), also when the task is
    /// aborted at a server stop.
    fn drop(&mut self) {
        self.core.disconnect(self.id);
    }
}

impl<S: Segment, T: Socket> Conn<S, T> {
    /// A connection registered with the hub, nothing read yet.
    fn new(core: Arc<Core<S>>, stream: T) -> Self {
        let wakeups = Arc::new(Wakeups::default());
        let stream = Arc::new(stream);
        let id = core.connect(Waiter::new(wakeups.clone(), stream.clone()));
        Conn {
            decoder: Decoder::new(core.max_job_size),
            core,
            id,
            stream,
            wakeups,
            input: BytesMut::new(),
            out: Vec::new(),
            eof: false,
            change: 0,
        }
    }

    /// Reads, runs and answers commands until the client quits or closes.
    async fn run(&mut self) -> std::io::Result<()> {
        loop {
            while let Some(decoded) = self.decoder.decode(&mut self.input) {
                let step = match decoded {
                    // beanstalkd counts a put whose arguments parsed, even when its body is
                    // too big (seen with ruby-beaneater's differential test).
                    Err(Response::JobTooBig) => {
                        self.core.counters.count(Cmd::Put);
                        Step::Reply(Response::JobTooBig)
                    }
                    Err(resp) => Step::Reply(resp),
                    Ok(cmd) => {
                        let started = observe::start();
                        let index = observe::command_index(&cmd);
                        let step = self.execute(cmd);
                        observe::command(index, started);
                        step
                    }
                };
                let resp = match step {
                    Step::Reply(r) => r,
                    Step::Close => return self.write_out().await,
                    Step::Wait => {
                        self.write_out().await?;
                        match self.wait_reserve().await? {
                            Wakeup::Outcome { outcome, change } => {
                                self.change = self.change.max(change);
                                reserve_reply(outcome)
                            }
                            Wakeup::Sent { reply, sent } => {
                                self.out.extend_from_slice(&reply[sent..]);
                                continue;
                            }
                        }
                    }
                };
                observe::reply(&resp);
                resp.encode(&mut self.out);
                if self.out.len() >= OUT_HIGH_WATER {
                    self.write_out().await?;
                }
            }
            self.write_out().await?;
            if self.eof || self.read().await? == 0 {
                return Ok(());
            }
        }
    }

    /// Reads more input (0: the client closed its side). While nothing read is left to decode
    /// and no reply is pending, the buffers are given back before the wait for the socket to
    /// become readable: an idle connection costs no buffer memory.
    async fn read(&mut self) -> std::io::Result<usize> {
        loop {
            self.release_if_idle();
            poll_fn(|cx| self.stream.poll_read_ready(cx)).await?;
            if let Some(n) = self.try_read()? {
                return Ok(n);
            }
        }
    }

    /// One non-blocking read into the input buffer (`None`: nothing to read after all).
    ///
    /// It reads into a buffer on the thread's stack and appends what came, so the input buffer
    /// is as big as what is pending, not a read's size. A read that did not fill that buffer
    /// emptied the socket: it clears the socket's readiness, as tokio's own reads do, so the
    /// next read waits for data instead of first asking the kernel in vain (a `recv` answering
    /// `EAGAIN` per request: about 8 % more server CPU per put/reserve/delete cycle).
    fn try_read(&mut self) -> std::io::Result<Option<usize>> {
        self.make_room();
        let mut buf = [MaybeUninit::<u8>::uninit(); READ_SIZE];
        let (input, stream) = (&mut self.input, &*self.stream);
        let mut read = None;
        let outcome = stream.try_io_read(&mut || {
            let ((got, _), _) = rustix::net::recv(stream, &mut buf[..], RecvFlags::empty())?;
            input.extend_from_slice(got);
            read = Some(got.len());
            if got.is_empty() || got.len() == READ_SIZE {
                Ok(())
            } else {
                Err(ErrorKind::WouldBlock.into())
            }
        });
        match outcome {
            Ok(()) => Ok(read),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                Ok(read)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the buffers back (to this thread's spares) when they hold nothing.
    fn release_if_idle(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            Spares::give_input(std::mem::take(&mut self.input));
        }
        if self.out.is_empty() && self.out.capacity() > 0 {
            Spares::give_out(std::mem::take(&mut self.out));
        }
    }

    /// Takes spare buffers (if this thread has some) for the input to read and the replies to
    /// it.
    fn make_room(&mut self) {
        if self.input.capacity() == 0 {
            self.input = Spares::take_input();
        }
        if self.out.capacity() == 0 {
            self.out = Spares::take_out();
            self.out.reserve(OUT_SIZE);
        }
    }

    /// Writes the pending replies, once the change they depend on is durable (`-f 0`).
    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // A failed sync closes the connection without the replies it covers.
        self.core.wait_durable(self.change).await?;
        // A client that does not read holds up no shutdown: the task is aborted.
        let mut sent = 0;
        while sent < self.out.len() {
            match self.stream.try_write(&self.out[sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    poll_fn(|cx| self.stream.poll_write_ready(cx)).await?;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Waits for the hub to hand this connection a job, a `DEADLINE_SOON` or a timeout.
    async fn wait_reserve(&mut self) -> std::io::Result<Wakeup> {
        loop {
            let may_read = !self.eof && self.input.len() < MAX_PENDING_INPUT;
            // A worker blocked in a reserve is the usual idle connection: no buffers held.
            self.release_if_idle();
            let stream = &self.stream;
            tokio::select! {
                wakeup = self.wakeups.recv() => match wakeup {
                    Wakeup::Outcome { outcome: ReserveOutcome::Wait, .. } => continue,
                    w => return Ok(w),
                },
                ready = poll_fn(|cx| stream.poll_read_ready(cx)), if may_read => {
                    ready?;
                    let Some(n) = self.try_read()? else { continue };
                    if n == 0 {
                        // Half-closed while waiting: beanstalkd answers TIMED_OUT. A job handed
                        // out just before the cancel is answered instead.
                        self.eof = true;
                        self.core.with_hub(|h| h.cancel_wait(self.id));
                        return Ok(self.wakeups.try_recv().unwrap_or(Wakeup::Outcome {
                            outcome: ReserveOutcome::TimedOut,
                            change: 0,
                        }));
                    }
                }
            }
        }
    }

    /// Runs one command: counts it ([`Cmd::of`]), calls the hub, and says what to send.
    fn execute(&mut self, cmd: Command) -> Step {
        if let Some(k) = Cmd::of(&cmd) {
            self.core.counters.count(k);
        }
        let c = self.id;
        let core = &*self.core;
        let reply = match cmd {
            Command::Reserve => return self.reserve(None),
            Command::ReserveWithTimeout(t) => return self.reserve(Some(u64::from(t) * SECOND)),
            Command::Quit => return Step::Close,
            // Changes: the reply waits until they are durable (`-f 0`).
            Command::Put {
                pri,
                delay,
                ttr,
                body,
            } => result_reply(
                self.make_change(|h| h.put(c, pri, delay, ttr, &body, now())),
                Response::Inserted,
            ),
            // A change: a delayed or buried job is persisted as ready first.
            Command::ReserveJob(id) => {
                result_reply(self.make_change(|h| h.reserve_job(c, id, now())), reserved)
            }
            Command::Delete(id) => unit_reply(
                self.make_change(|h| h.delete(c, id, now())),
                Response::Deleted,
            ),
            Command::Release { id, pri, delay } => result_reply(
                self.make_change(|h| h.release(c, id, pri, delay, now())),
                released,
            ),
            Command::Bury { id, pri } => unit_reply(
                self.make_change(|h| h.bury(c, id, pri, now())),
                Response::Buried,
            ),
            Command::Kick(bound) => result_reply(
                self.make_change(|h| Ok(h.kick(c, bound, now()))),
                Response::Kicked,
            ),
            Command::KickJob(id) => unit_reply(
                self.make_change(|h| h.kick_job(id, now())),
                Response::KickedJob,
            ),
            // Named jobs. `EXISTS` and `BUSY` change nothing but show a job: waiting for this
            // call's change number covers the change that put it.
            Command::PutNamed {
                name,
                replace,
                pri,
                delay,
                ttr,
                body,
            } => result_reply(
                self.make_change(|h| {
                    h.put_named(c, name.as_bytes(), replace, pri, delay, ttr, &body, now())
                }),
                put_named_reply,
            ),
            Command::DeleteName(name) => unit_reply(
                self.make_change(|h| h.delete_named(c, name.as_bytes(), now())),
                Response::Deleted,
            ),
            Command::KickName(name) => unit_reply(
                self.make_change(|h| h.kick_named(c, name.as_bytes(), now())),
                Response::KickedJob,
            ),
            Command::PeekName(name) => self.peek(|h| {
                let id = h.job_named(c, name.as_bytes()).ok()??;
                h.peek(id)
            }),
            Command::TouchName(name) => unit_reply(
                core.with_hub(|h| h.touch_named(c, name.as_bytes(), now())),
                Response::Touched,
            ),
            // Reads that show a job: the reply waits until the job's last change is durable.
            Command::Peek(id) => self.peek(|h| h.peek(id)),
            Command::PeekReady => self.peek(|h| h.peek_ready(c)),
            Command::PeekDelayed => self.peek(|h| h.peek_delayed(c)),
            Command::PeekBuried => self.peek(|h| h.peek_buried(c)),
            Command::StatsJob(id) => self.stats_job(id),
            // The rest changes nothing that is persisted.
            Command::Use(tube) => {
                core.with_hub(|h| h.use_tube(c, &tube));
                Response::Using(tube)
            }
            Command::Touch(id) => {
                unit_reply(core.with_hub(|h| h.touch(c, id, now())), Response::Touched)
            }
            Command::Watch(tube) => Response::Watching(core.with_hub(|h| h.watch(c, &tube))),
            Command::Ignore(tube) => {
                result_reply(core.with_hub(|h| h.ignore(c, &tube)), Response::Watching)
            }
            Command::StatsTube(tube) => match core.with_hub(|h| h.stats_tube(&tube, now())) {
                Some(s) => Response::Ok(stats::tube_yaml(&s)),
                None => Response::NotFound,
            },
            Command::Stats => global_stats(core),
            Command::ListTubes => {
                Response::Ok(stats::list_yaml(&core.with_hub(|h| h.list_tubes())))
            }
            Command::ListTubeUsed => Response::Using(core.with_hub(|h| h.used_tube(c).to_string())),
            Command::ListTubesWatched => {
                Response::Ok(stats::list_yaml(&core.with_hub(|h| h.watched(c))))
            }
            Command::PauseTube { tube, delay } => unit_reply(
                core.with_hub(|h| h.pause_tube(&tube, delay, now())),
                Response::Paused,
            ),
        };
        Step::Reply(reply)
    }

    /// A call that changes persisted state (see [`Core::with_hub_change`]): the pending
    /// replies wait for it.
    fn make_change<R>(
        &mut self,
        f: impl FnOnce(&mut Hub<S>) -> Result<R, HubError>,
    ) -> Result<R, HubError> {
        self.core.with_hub_change(&mut self.change, f)
    }

    /// A peek: `FOUND` with the job `f` finds, which the reply waits for like a change of its
    /// own (see [`Core::with_hub_showing`]).
    fn peek(&mut self, f: impl FnOnce(&mut Hub<S>) -> Option<JobView>) -> Response {
        found(self.core.with_hub_showing(&mut self.change, f, shown_job))
    }

    /// `stats-job`: shows the job's figures, so the reply waits like a peek's.
    fn stats_job(&mut self, id: u64) -> Response {
        let figures = self.core.with_hub_showing(
            &mut self.change,
            |h| h.stats_job(id, now()),
            |s| s.as_ref().map(|s| s.id),
        );
        match figures {
            Some(s) => Response::Ok(stats::job_yaml(&s)),
            None => Response::NotFound,
        }
    }

    /// `reserve` (`timeout` None) and `reserve-with-timeout` (`timeout`: µs from now): the
    /// reply of a job handed out now, or a wait.
    fn reserve(&mut self, timeout: Option<u64>) -> Step {
        // With no reply pending, all earlier ones are sent (`write_out` empties `out` only
        // once its bytes are written).
        let idle = self.out.is_empty();
        match self.core.reserve(self.id, timeout, idle, &mut self.change) {
            ReserveOutcome::Wait => Step::Wait,
            o => Step::Reply(reserve_reply(o)),
        }
    }
}

/// `stats`: the hub's figures, the command counters (this `stats` counted) and the process's.
fn global_stats<S: Segment>(core: &Core<S>) -> Response {
    let hub = core.with_hub(|h| h.stats(now()));
    let cmds = core.counters.snapshot();
    Response::Ok(stats::global_yaml(&hub, &cmds, &core.process_info()))
}

/// The job a peek shows (see [`Core::with_hub_showing`]).
fn shown_job(job: &Option<JobView>) -> Option<u64> {
    job.as_ref().map(|j| j.id)
}

#[cfg(test)]
mod tests {
    //! An idle connection held a 16 KiB input buffer and a 4 KiB reply buffer for its whole
    //! life (about 16 KB of RSS per idle connection): they are given back once everything read
    //! is answered, and taken again when the socket has something to read. And a read that
    //! empties the socket clears its readiness (a first version of the above did one `recv`
    //! in vain per request).

    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;
    use crate::hub::HubConfig;
    use crate::segment::MemSegment;
    use crate::server::{Durability, Mode};

    fn conn(dir: &std::path::Path, stream: UnixStream) -> Conn<MemSegment, UnixStream> {
        let hub = Hub::<MemSegment>::open(HubConfig::new(dir), now()).unwrap();
        let core = Arc::new(Core::new(hub, Durability::Never, 65535, Mode::Mem));
        Conn::new(core, stream)
    }

    /// Polls `f` once: whether it is still waiting (it is dropped either way).
    async fn waits(f: impl Future) -> bool {
        let mut f = pin!(f);
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await
    }

    fn buffer_bytes<S: Segment, T>(c: &Conn<S, T>) -> usize {
        c.input.capacity() + c.out.capacity()
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut client) = UnixStream::pair().unwrap();
        let mut c = conn(dir.path(), server);
        assert_eq!(buffer_bytes(&c), 0, "a new connection has no buffer");

        client.write_all(b"use a\r\n").await.unwrap();
        assert_eq!(c.read().await.unwrap(), 7);
        assert!(c.input.capacity() >= 7 && c.out.capacity() >= OUT_SIZE);
        // A read that emptied the socket cleared its readiness: the next read waits for data
        // rather than first calling `recv` for nothing (once per request).
        let stream = c.stream.clone();
        assert!(waits(poll_fn(|cx| stream.poll_read_ready(cx))).await);

        // Answered and sent: the next read waits with no buffer held.
        let Some(Ok(cmd)) = c.decoder.decode(&mut c.input) else {
            panic!("`use a` decodes")
        };
        let Step::Reply(resp) = c.execute(cmd) else {
            panic!("`use` replies")
        };
        resp.encode(&mut c.out);
        c.write_out().await.unwrap();
        let mut reply = [0; 9];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"USING a\r\n");
        assert!(waits(c.read()).await, "nothing more to read");
        assert_eq!(buffer_bytes(&c), 0, "an idle connection holds a buffer");

        // Half a command read: its buffer is kept while the rest is awaited.
        client.write_all(b"list-tu").await.unwrap();
        assert_eq!(c.read().await.unwrap(), 7);
        assert!(c.decoder.decode(&mut c.input).is_none());
        assert!(waits(c.read()).await);
        assert!(!c.input.is_empty() && c.input.capacity() > 0);
    }

    #[tokio::test]
    async fn a_reserve_waiting_for_a_job_holds_no_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut client) = UnixStream::pair().unwrap();
        let mut c = conn(dir.path(), server);
        client.write_all(b"reserve\r\n").await.unwrap();
        c.read().await.unwrap();
        let Some(Ok(cmd)) = c.decoder.decode(&mut c.input) else {
            panic!("`reserve` decodes")
        };
        assert!(
            matches!(c.execute(cmd), Step::Wait),
            "no job: the reserve waits"
        );
        assert!(waits(c.wait_reserve()).await);
        assert_eq!(buffer_bytes(&c), 0, "a waiting reserve holds a buffer");
    }
}
