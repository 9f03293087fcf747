//! One client connection: read bytes, decode commands, apply them to the hub, write replies.
//!
//! Replies of pipelined commands are batched into one write (never split: each reply goes out
//! whole). A blocking reserve waits on the connection's wake-up channel, fed by the hub's
//! wake-ups; meanwhile the socket is still read so that a client closing it is noticed.
//!
//! A server stop aborts the connection tasks (at their next `.await`) rather than having each
//! read select on a shutdown signal, which cost a registration per request; dropping the
//! [`Conn`] forgets the connection in the hub.

use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::core::{Core, Waiter, Wakeup, WakeupReceiver, now};
use super::reply::{found, released, reserve_reply, reserved, result_reply, unit_reply};
use super::stats::{self, Cmd};
use crate::hub::{ConnId, Hub, HubError, JobView, ReserveOutcome, SECOND};
use crate::observe;
use crate::protocol::{Command, Decoder, Response};
use crate::segment::Segment;

/// Flush the pending replies once they reach this size, even mid-pipeline.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// While a reserve waits, read at most this much of further pipelined input.
const MAX_PENDING_INPUT: usize = 64 * 1024;

/// Serves one connection until the client quits or closes, or the server shuts down.
pub async fn serve<S, T>(core: Arc<Core<S>>, stream: T)
where
    S: Segment,
    T: AsyncRead + AsyncWrite + AsFd + Unpin,
{
    let (tx, rx) = mpsc::unbounded_channel();
    // Without a second handle (no file descriptor left) the task writes every reply itself.
    let socket = stream.as_fd().try_clone_to_owned().ok();
    let id = core.connect(Waiter::new(tx, socket));
    let mut conn = Conn {
        decoder: Decoder::new(core.max_job_size),
        core,
        id,
        stream,
        wakeups: rx,
        input: BytesMut::with_capacity(4096),
        out: Vec::with_capacity(4096),
        eof: false,
        change: 0,
    };
    if let Err(e) = conn.run().await {
        tracing::debug!(conn = id, "connection ended: {e}");
    }
    // Dropping `conn` disconnects it.
}

/// One connection's state, owned by its task.
struct Conn<S: Segment, T> {
    core: Arc<Core<S>>,
    id: ConnId,
    stream: T,
    decoder: Decoder,
    wakeups: WakeupReceiver,
    input: BytesMut,
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

impl<S: Segment, T: AsyncRead + AsyncWrite + Unpin> Conn<S, T> {
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
                        // Named only when metrics are on (a string match per command).
                        let name = match started {
                            Some(_) => observe::command_metric(&cmd),
                            None => "",
                        };
                        let step = self.execute(cmd);
                        observe::command(name, started);
                        step
                    }
                };
                let resp = match step {
                    Step::Reply(r) => r,
                    Step::Close => return self.write_out().await,
                    Step::Wait => {
                        self.write_out().await?;
                        match self.wait_reserve().await? {
                            Some(Wakeup::Outcome { outcome, change }) => {
                                self.change = self.change.max(change);
                                reserve_reply(outcome)
                            }
                            Some(Wakeup::Sent { reply, sent }) => {
                                self.out.extend_from_slice(&reply[sent..]);
                                continue;
                            }
                            None => return Ok(()),
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
            if self.eof {
                return Ok(());
            }
            self.make_room();
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Keeps a read-sized free space in the input buffer (`read_buf` would otherwise grow it by
    /// a few bytes at a time once full).
    fn make_room(&mut self) {
        const READ_SIZE: usize = 16 * 1024;
        if self.input.capacity() - self.input.len() < READ_SIZE / 2 {
            self.input.reserve(READ_SIZE);
        }
    }

    /// Writes the pending replies, once the change they depend on is durable (`-f 0`).
    async fn write_out(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            // A failed sync closes the connection without the replies it covers.
            self.core.wait_durable(self.change).await?;
            // A client that does not read holds up no shutdown: the task is aborted.
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Waits for the hub to hand this connection a job, a `DEADLINE_SOON` or a timeout.
    /// `None`: the wake-up channel closed (not while this connection is registered).
    async fn wait_reserve(&mut self) -> std::io::Result<Option<Wakeup>> {
        loop {
            let may_read = !self.eof && self.input.len() < MAX_PENDING_INPUT;
            self.make_room();
            tokio::select! {
                wakeup = self.wakeups.recv() => match wakeup {
                    Some(Wakeup::Outcome { outcome: ReserveOutcome::Wait, .. }) => continue,
                    // The sender lives until disconnect, which happens after this task.
                    w => return Ok(w),
                },
                n = self.stream.read_buf(&mut self.input), if may_read => {
                    if n? == 0 {
                        // Half-closed while waiting: beanstalkd answers TIMED_OUT. A job handed
                        // out just before the cancel is answered instead.
                        self.eof = true;
                        self.core.with_hub(|h| h.cancel_wait(self.id));
                        return Ok(Some(
                            self.wakeups
                                .try_recv()
                                .unwrap_or(Wakeup::Outcome {
                                    outcome: ReserveOutcome::TimedOut,
                                    change: 0,
                                }),
                        ));
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
