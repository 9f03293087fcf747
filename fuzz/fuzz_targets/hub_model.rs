//! Arbitrary operation sequences (put / reserve / delete / release / bury / touch / kick /
//! disconnect / time advancing / restart) against the hub in each storage mode, checked against
//! a `BTreeMap` model after every step: the same replies, the same counts per state, no job
//! ready before its trigger time, no deleted job coming back, no job lost (also across a
//! restart, which in the persisted modes is a kill: nothing flushed, so it restarts from the
//! last start-up checkpoint and its change journals).
//! One tube and non-blocking reserves only; tests/hub_model.rs covers tubes, waits and pauses.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use yaad::hub::{
    ConnId, DEADLINE_SOON_MARGIN, Hub, HubConfig, HubError, PendingCheckpoint, ReserveOutcome,
    SECOND,
};
use yaad::segment::{LazySegment, MappedSegment, MemSegment, Segment};

const START: u64 = 1_700_000_000 * SECOND;
const CONNS: usize = 2;

#[derive(Arbitrary, Debug)]
enum Op {
    Put {
        conn: u8,
        pri: u8,
        delay: Delay,
        ttr: u8,
        body: Body,
    },
    Reserve {
        conn: u8,
    },
    Delete {
        conn: u8,
        pick: u16,
    },
    Release {
        conn: u8,
        pick: u16,
        pri: u8,
        delay: Delay,
    },
    Bury {
        conn: u8,
        pick: u16,
        pri: u8,
    },
    Touch {
        conn: u8,
        pick: u16,
    },
    Kick {
        conn: u8,
        n: u8,
    },
    KickJob {
        pick: u16,
    },
    Disconnect {
        conn: u8,
    },
    /// Advance by `dt` µs (at most ~65 ms).
    Tick {
        dt: u16,
    },
    /// Advance by whole seconds.
    TickSeconds {
        s: u8,
    },
    /// Advance to the model's next event, or 1 µs before it.
    TickToEvent {
        before: bool,
    },
    /// Take a start-up checkpoint (the server does once a second); write it now or at the
    /// next one (changes made meanwhile go to the next generation's journal).
    Checkpoint {
        write_now: bool,
    },
    /// Restart with spoke span `span` (old spokes keep theirs).
    Restart {
        span: Span,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Delay {
    Zero,
    /// Within the loaded (near) spokes.
    Near(u8),
    /// Beyond them.
    Far(u8),
    Hour,
}

impl Delay {
    fn seconds(self) -> u32 {
        match self {
            Delay::Zero => 0,
            Delay::Near(d) => 1 + u32::from(d % 3),
            Delay::Far(d) => 4 + u32::from(d % 60),
            Delay::Hour => 3600,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Body {
    Text,
    /// 0 bytes (beanstalkd allows it).
    Empty,
    /// Text then this many zero bytes (binary bodies may end in zeros).
    ZeroTail(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Span {
    Quarter,
    One,
    Three,
}

impl Span {
    fn micros(self) -> u64 {
        match self {
            Span::Quarter => SECOND / 4,
            Span::One => SECOND,
            Span::Three => 3 * SECOND,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    mode: u8,
    span: Span,
    ops: Vec<Op>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Delayed,
    Ready,
    Reserved { conn: usize, deadline: u64 },
    Buried { seq: u64 },
}

#[derive(Debug)]
struct MJob {
    pri: u32,
    ttr: u32,
    trigger: u64,
    state: St,
    body: Vec<u8>,
}

#[derive(Default, Debug)]
struct Model {
    now: u64,
    jobs: BTreeMap<u64, MJob>,
    seq: u64,
    /// Every id the hub handed out: a deleted one must stay gone.
    issued: u64,
}

impl Model {
    fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
        for j in self.jobs.values_mut() {
            match j.state {
                St::Delayed if j.trigger <= self.now => j.state = St::Ready,
                St::Reserved { deadline, .. } if deadline <= self.now => j.state = St::Ready,
                _ => {}
            }
        }
    }

    fn next_event(&self) -> Option<u64> {
        self.jobs
            .values()
            .filter_map(|j| match j.state {
                St::Delayed => Some(j.trigger),
                St::Reserved { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    fn reserve(&mut self, c: usize) -> ReserveOutcome {
        let best = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state == St::Ready)
            .map(|(&id, j)| (j.pri, id))
            .min();
        if let Some((_, id)) = best {
            let now = self.now;
            let j = self.jobs.get_mut(&id).expect("listed above");
            j.state = St::Reserved {
                conn: c,
                deadline: now + u64::from(j.ttr) * SECOND,
            };
            return ReserveOutcome::Reserved(yaad::hub::JobView {
                id,
                body: j.body.clone().into(),
            });
        }
        let soon = self.jobs.values().any(|j| {
            matches!(j.state, St::Reserved { conn, deadline }
                if conn == c && deadline.saturating_sub(DEADLINE_SOON_MARGIN) <= self.now)
        });
        if soon {
            ReserveOutcome::DeadlineSoon
        } else {
            ReserveOutcome::TimedOut
        }
    }

    fn held_by(&self, c: usize, id: u64) -> bool {
        matches!(self.jobs.get(&id).map(|j| j.state), Some(St::Reserved { conn, .. }) if conn == c)
    }

    fn kick(&mut self, n: u8) -> u64 {
        let mut buried: Vec<(u64, u64)> = self
            .jobs
            .iter()
            .filter_map(|(&id, j)| match j.state {
                St::Buried { seq } => Some((seq, id)),
                _ => None,
            })
            .collect();
        if buried.is_empty() {
            buried = self
                .jobs
                .iter()
                .filter(|(_, j)| j.state == St::Delayed)
                .map(|(&id, j)| (j.trigger, id))
                .collect();
        }
        buried.sort();
        let ids: Vec<u64> = buried
            .into_iter()
            .take(usize::from(n))
            .map(|(_, id)| id)
            .collect();
        for id in &ids {
            self.jobs.get_mut(id).expect("listed above").state = St::Ready;
        }
        ids.len() as u64
    }

    /// A restart: reserved jobs are ready again; buried ones keep their order by id.
    fn restart(&mut self) {
        for j in self.jobs.values_mut() {
            match j.state {
                St::Reserved { .. } => j.state = St::Ready,
                St::Buried { .. } => {
                    self.seq += 1;
                    j.state = St::Buried { seq: self.seq };
                }
                _ => {}
            }
        }
    }

    /// An id: mostly a job the model has (preferring ones `conn` holds), sometimes any.
    fn pick(&self, conn: Option<usize>, pick: u16) -> u64 {
        let pick = usize::from(pick);
        if pick.is_multiple_of(7) {
            return (pick / 7) as u64 % (self.issued + 2);
        }
        if let Some(c) = conn {
            let held: Vec<u64> = self
                .jobs
                .keys()
                .copied()
                .filter(|&id| self.held_by(c, id))
                .collect();
            if !held.is_empty() && !pick.is_multiple_of(3) {
                return held[pick % held.len()];
            }
        }
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        if ids.is_empty() {
            return pick as u64 % (self.issued + 1);
        }
        ids[pick % ids.len()]
    }
}

struct Harness<S: Segment> {
    hub: Option<Hub<S>>,
    pending: Option<PendingCheckpoint>,
    conns: [ConnId; CONNS],
    cfg: HubConfig,
    mem: bool,
    _dir: tempfile::TempDir,
}

impl<S: Segment> Harness<S> {
    fn hub(&mut self) -> &mut Hub<S> {
        self.hub.as_mut().expect("hub open")
    }

    fn restart(&mut self, now: u64, span: u64) {
        let mut hub = self.hub.take().expect("hub open");
        if self.mem {
            // Mem mode keeps only what a flush wrote; the persisted modes restart as after a kill.
            hub.flush().expect("flush");
        }
        drop(hub);
        // A checkpoint taken and not written dies with the process.
        self.pending = None;
        self.cfg.spoke_span = span;
        let mut hub = Hub::<S>::open(self.cfg.clone(), now).expect("reopen");
        self.conns = [hub.connect(), hub.connect()];
        self.hub = Some(hub);
    }
}

fn check_counts<S: Segment>(h: &mut Harness<S>, m: &Model) {
    let s = h.hub().stats(m.now);
    let count = |f: &dyn Fn(&St) -> bool| m.jobs.values().filter(|j| f(&j.state)).count() as u64;
    assert_eq!(s.current_jobs_ready, count(&|s| *s == St::Ready), "ready");
    assert_eq!(
        s.current_jobs_delayed,
        count(&|s| *s == St::Delayed),
        "delayed"
    );
    assert_eq!(
        s.current_jobs_reserved,
        count(&|s| matches!(s, St::Reserved { .. })),
        "reserved"
    );
    assert_eq!(
        s.current_jobs_buried,
        count(&|s| matches!(s, St::Buried { .. })),
        "buried"
    );
    if let (Some(e), next) = (m.next_event(), h.hub().next_deadline()) {
        assert!(
            next.is_some_and(|n| n <= e),
            "next_deadline {next:?} after event {e}"
        );
    }
}

/// Every id ever issued: the hub has exactly the model's jobs, in the model's states.
fn check_all<S: Segment>(h: &mut Harness<S>, m: &Model) {
    for id in 0..=m.issued + 1 {
        let got = h.hub().stats_job(id, m.now);
        match m.jobs.get(&id) {
            None => assert!(got.is_none(), "job {id} deleted or never put, yet {got:?}"),
            Some(j) => {
                let s = got.unwrap_or_else(|| panic!("job {id} lost"));
                let want = match j.state {
                    St::Delayed => "delayed",
                    St::Ready => "ready",
                    St::Reserved { .. } => "reserved",
                    St::Buried { .. } => "buried",
                };
                assert_eq!(s.state, want, "job {id}");
                assert_eq!(s.pri, j.pri, "job {id} priority");
                let body = h.hub().peek(id).map(|v| v.body.to_vec());
                assert_eq!(body.as_deref(), Some(&j.body[..]), "job {id} body");
            }
        }
    }
}

fn run<S: Segment>(mem: bool, span: Span, ops: &[Op]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = HubConfig {
        data_dir: dir.path().to_path_buf(),
        spoke_span: span.micros(),
        restore: mem,
        persist: !mem,
    };
    let mut hub = Hub::<S>::open(cfg.clone(), START).expect("open");
    let conns = [hub.connect(), hub.connect()];
    let mut h = Harness {
        hub: Some(hub),
        pending: None,
        conns,
        cfg,
        mem,
        _dir: dir,
    };
    let mut m = Model {
        now: START,
        ..Model::default()
    };
    let mut body_seq = 0u64;
    for op in ops {
        let now = m.now;
        match *op {
            Op::Put {
                conn,
                pri,
                delay,
                ttr,
                body,
            } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let mut text = format!("body-{body_seq}").into_bytes();
                let body = match body {
                    Body::Text => text,
                    Body::Empty => Vec::new(),
                    Body::ZeroTail(n) => {
                        text.resize(text.len() + usize::from(n % 40), 0);
                        text
                    }
                };
                body_seq += 1;
                let (pri, delay, ttr) = (u32::from(pri % 4), delay.seconds(), u32::from(ttr % 4));
                let id = h.hub().put(cc, pri, delay, ttr, &body, now).expect("put");
                assert!(!m.jobs.contains_key(&id), "put reused live id {id}");
                if !mem {
                    assert!(id > m.issued, "persisted modes never reuse an id ({id})");
                }
                m.issued = m.issued.max(id);
                let trigger = now + u64::from(delay) * SECOND;
                m.jobs.insert(
                    id,
                    MJob {
                        pri,
                        ttr: ttr.max(1),
                        trigger,
                        state: if delay == 0 { St::Ready } else { St::Delayed },
                        body,
                    },
                );
            }
            Op::Reserve { conn } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let got = h.hub().reserve(cc, Some(now), now);
                if let ReserveOutcome::Reserved(v) = &got {
                    let j = m.jobs.get(&v.id);
                    assert!(
                        j.is_some_and(|j| j.state == St::Ready),
                        "reserved job {} is not ready in the model: {j:?}",
                        v.id
                    );
                }
                assert_eq!(got, m.reserve(c));
            }
            Op::Delete { conn, pick } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let id = m.pick(Some(c), pick);
                let want = match m.jobs.get(&id).map(|j| j.state) {
                    None => Err(HubError::NotFound),
                    Some(St::Reserved { conn, .. }) if conn != c => Err(HubError::NotFound),
                    Some(_) => {
                        m.jobs.remove(&id);
                        Ok(())
                    }
                };
                assert_eq!(h.hub().delete(cc, id, now), want, "delete {id}");
            }
            Op::Release {
                conn,
                pick,
                pri,
                delay,
            } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let id = m.pick(Some(c), pick);
                let (pri, delay) = (u32::from(pri % 4), delay.seconds());
                let got = h.hub().release(cc, id, pri, delay, now);
                if m.held_by(c, id) {
                    assert_eq!(got, Ok(yaad::hub::ReleaseOutcome::Released));
                    let j = m.jobs.get_mut(&id).expect("held");
                    j.pri = pri;
                    if delay == 0 {
                        j.state = St::Ready;
                    } else {
                        j.trigger = now + u64::from(delay) * SECOND;
                        j.state = St::Delayed;
                    }
                } else {
                    assert_eq!(got, Err(HubError::NotFound));
                }
            }
            Op::Bury { conn, pick, pri } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let id = m.pick(Some(c), pick);
                let pri = u32::from(pri % 4);
                let got = h.hub().bury(cc, id, pri, now);
                if m.held_by(c, id) {
                    assert_eq!(got, Ok(()));
                    m.seq += 1;
                    let j = m.jobs.get_mut(&id).expect("held");
                    j.pri = pri;
                    j.state = St::Buried { seq: m.seq };
                } else {
                    assert_eq!(got, Err(HubError::NotFound));
                }
            }
            Op::Touch { conn, pick } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let id = m.pick(Some(c), pick);
                let got = h.hub().touch(cc, id, now);
                if m.held_by(c, id) {
                    assert_eq!(got, Ok(()));
                    let j = m.jobs.get_mut(&id).expect("held");
                    j.state = St::Reserved {
                        conn: c,
                        deadline: now + u64::from(j.ttr) * SECOND,
                    };
                } else {
                    assert_eq!(got, Err(HubError::NotFound));
                }
            }
            Op::Kick { conn, n } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let n = n % 5;
                assert_eq!(h.hub().kick(cc, u32::from(n), now), m.kick(n));
            }
            Op::KickJob { pick } => {
                let id = m.pick(None, pick);
                let got = h.hub().kick_job(id, now);
                match m.jobs.get_mut(&id) {
                    Some(j) if matches!(j.state, St::Delayed | St::Buried { .. }) => {
                        assert_eq!(got, Ok(()));
                        j.state = St::Ready;
                    }
                    _ => assert_eq!(got, Err(HubError::NotFound)),
                }
            }
            Op::Disconnect { conn } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                h.hub().disconnect(cc, now);
                h.conns[c] = h.hub().connect();
                for j in m.jobs.values_mut() {
                    if matches!(j.state, St::Reserved { conn, .. } if conn == c) {
                        j.state = St::Ready;
                    }
                }
            }
            Op::Tick { dt } => {
                m.advance(now + u64::from(dt));
                h.hub().tick(m.now);
            }
            Op::TickSeconds { s } => {
                m.advance(now + u64::from(s % 80) * SECOND);
                h.hub().tick(m.now);
            }
            Op::TickToEvent { before } => {
                if let Some(e) = m.next_event() {
                    let t = if before { e - 1 } else { e };
                    m.advance(t);
                    h.hub().tick(m.now);
                }
            }
            Op::Checkpoint { write_now } => {
                // The server trims the id index once a second too: all of it, or a few ids.
                h.hub().trim_index(if write_now { usize::MAX } else { 3 });
                if let Some(p) = h.pending.take() {
                    p.write().expect("checkpoint written");
                }
                if let Some(p) = h.hub().checkpoint() {
                    if write_now {
                        p.write().expect("checkpoint written");
                    } else {
                        h.pending = Some(p);
                    }
                }
            }
            Op::Restart { span } => {
                h.restart(now, span.micros());
                m.restart();
                m.advance(now);
                check_all(&mut h, &m);
            }
        }
        check_counts(&mut h, &m);
    }
    check_all(&mut h, &m);
    let now = m.now;
    h.restart(now, SECOND);
    m.restart();
    m.advance(now);
    check_counts(&mut h, &m);
    check_all(&mut h, &m);
}

fuzz_target!(|input: Input| {
    let ops = &input.ops[..input.ops.len().min(100)];
    match input.mode % 3 {
        0 => run::<MemSegment>(true, input.span, ops),
        1 => run::<MappedSegment>(false, input.span, ops),
        _ => run::<LazySegment>(false, input.span, ops),
    }
});
