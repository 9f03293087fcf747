//! Arbitrary operation sequences (put / reserve / delete / release / bury / touch / kick /
//! disconnect / time advancing / restart) against the hub in each storage mode, checked against
//! a `BTreeMap` model after every step: the same replies, the same counts per state, no job
//! ready before its trigger time, no deleted job coming back, no job lost (also across a
//! restart, which in the persisted modes is a kill: nothing flushed, so it restarts from the
//! last start-up checkpoint and its change journals).
//!
//! With power cuts (by `Input::mode`, see [`Power`]), the power-loss simulator
//! (`yaad::segment::powercut`) watches the data dir: a `Cut` cuts the power at a coming sync
//! event (inside a sync batch, a flush, a checkpoint, a restart), a hub recovers the image in
//! a new boot, and every job must be in a state it had since the last completed sync
//! (persisted modes, syncing after every operation as `-f 0` does or only at `Sync` as
//! `-f MS` does; no id handed out again once acknowledged) or the cut must show one whole
//! snapshot (mem mode: the last completed flush or the one in progress).
//! Named jobs too: put-named / put-replace (inserted, exists, replaced, busy) and delete, kick,
//! touch and peek by name, from three names; after every step and every recovery a name is
//! held by at most one live job and resolves to it.
//! One tube and non-blocking reserves only; tests/hub_model.rs covers tubes, waits and pauses.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use yaad::hub::{
    ConnId, DEADLINE_SOON_MARGIN, Hub, HubConfig, HubError, PendingCheckpoint, PutNamed,
    ReserveOutcome, SECOND,
};
use yaad::segment::powercut::{self, Registration};
use yaad::segment::{LazySegment, MappedSegment, MemSegment, Segment};

const START: u64 = 1_700_000_000 * SECOND;
const CONNS: usize = 2;
const NAMES: [&str; 3] = ["n1", "n2", "order-3"];

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
    /// Cut the power at sync event `1 + ahead % 12` from now, if the next operation gets that
    /// far; `seed` picks what of the unsynced writes survives. Only with power cuts.
    Cut {
        ahead: u8,
        seed: u16,
    },
    /// The periodic sync of `-f MS` (persisted modes: take the sync batch, sync it, tell the
    /// hub), a SIGUSR1 flush (mem mode).
    Sync,
    /// `put-named` (`replace` false) or `put-replace` of `NAMES[name % 3]`.
    PutNamed {
        conn: u8,
        name: u8,
        replace: bool,
        pri: u8,
        delay: Delay,
        ttr: u8,
        body: Body,
    },
    /// A command by name: `what % 4`: 0 delete, 1 kick, 2 touch, 3 peek.
    ByName {
        conn: u8,
        name: u8,
        what: u8,
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
    /// Hours to days: wide spokes, split as they come nearer.
    Days(u16),
}

impl Delay {
    fn seconds(self) -> u32 {
        match self {
            Delay::Zero => 0,
            Delay::Near(d) => 1 + u32::from(d % 3),
            Delay::Far(d) => 4 + u32::from(d % 60),
            Delay::Hour => 3600,
            Delay::Days(d) => 60 + u32::from(d) * 7,
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
    /// Text then this many KiB of filler: records spanning pages, so that runs of dead
    /// records get punched (the harness frees at once).
    Pages(u8),
}

impl Body {
    /// The body of the `seq`-th put.
    fn bytes(self, seq: u64) -> Vec<u8> {
        let mut text = format!("body-{seq}").into_bytes();
        match self {
            Body::Text => text,
            Body::Empty => Vec::new(),
            Body::ZeroTail(n) => {
                text.resize(text.len() + usize::from(n % 40), 0);
                text
            }
            Body::Pages(k) => {
                text.resize(text.len() + 1024 * usize::from(k % 24), b'.');
                text
            }
        }
    }
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
    /// `mode % 3`: mem, mapped, lazy; `mode / 3 % 3`: the [`Power`] style.
    mode: u8,
    span: Span,
    ops: Vec<Op>,
}

/// How syncs and power cuts are driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    /// No simulator: `Cut` does nothing, `Sync` syncs (or flushes, in mem mode).
    Off,
    /// Cuts checked; persisted modes sync after every operation (`-f 0`).
    SyncEveryOp,
    /// Cuts checked; persisted modes sync only at `Sync` (`-f MS`). In mem mode the same as
    /// [`Power::SyncEveryOp`]: only `Sync` and restarts flush.
    SyncAtSyncOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Delayed,
    Ready,
    Reserved { conn: usize, deadline: u64 },
    Buried { seq: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct MJob {
    pri: u32,
    ttr: u32,
    trigger: u64,
    state: St,
    body: Vec<u8>,
    /// An index into `NAMES`.
    name: Option<usize>,
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

    /// The live job named `NAMES[name]`.
    fn named(&self, name: usize) -> Option<u64> {
        self.jobs
            .iter()
            .find(|(_, j)| j.name == Some(name))
            .map(|(&id, _)| id)
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
    /// The power-loss simulator of the data dir, and where cut images are built.
    sim: Option<(Registration, tempfile::TempDir)>,
    pending: Option<PendingCheckpoint>,
    /// Retired segments handed out and not destroyed yet: the server's reaper, here at the
    /// next checkpoint (a restart drops them, files and all, as a kill).
    reaped: Vec<S>,
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
        // A checkpoint taken and not written dies with the process, as do segments the reaper
        // had not destroyed yet.
        self.pending = None;
        self.reaped.clear();
        self.cfg.spoke_span = span;
        let mut hub = Hub::<S>::open(self.cfg.clone(), now).expect("reopen");
        hub.set_free_min(0);
        hub.set_deferred_removal(true);
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
                let name = j.name.map(|n| NAMES[n].to_string());
                assert_eq!(s.name, name, "job {id} name");
            }
        }
    }
    let c = h.conns[0];
    for (n, name) in NAMES.iter().enumerate() {
        let got = h.hub().job_named(c, name.as_bytes()).expect("job_named");
        assert_eq!(got, m.named(n), "the job named {name}");
    }
}

/// After a recovery: a name is held by at most one live job (`live`: every live job the
/// recovered hub shows), and it resolves to that job; a name no live job holds, to none.
fn check_names<S: Segment>(hub: &mut Hub<S>, live: &[(u64, Durable)]) {
    let c = hub.connect();
    for name in NAMES {
        let ids: Vec<u64> = live
            .iter()
            .filter(|(_, d)| d.name.as_deref() == Some(name))
            .map(|(id, _)| *id)
            .collect();
        assert!(
            ids.len() <= 1,
            "live jobs {ids:?} share the name {name} after a recovery"
        );
        let got = hub.job_named(c, name.as_bytes()).expect("job_named");
        assert_eq!(
            got,
            ids.first().copied(),
            "the job named {name} after a recovery"
        );
    }
}

/// What a recovery may show of a job: the fields a restart keeps, as of `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Durable {
    state: &'static str,
    pri: u32,
    ttr: u64,
    time_left: u64,
    body: Vec<u8>,
    name: Option<String>,
}

fn durable_form(j: &MJob, now: u64) -> Durable {
    let (state, left) = match j.state {
        St::Buried { .. } => ("buried", 0),
        St::Delayed if j.trigger > now => ("delayed", j.trigger - now),
        _ => ("ready", 0),
    };
    Durable {
        state,
        pri: j.pri,
        ttr: u64::from(j.ttr),
        time_left: left / SECOND,
        body: j.body.clone(),
        name: j.name.map(|n| NAMES[n].to_string()),
    }
}

/// What a recovered hub shows of job `id`.
fn recovered<S: Segment>(hub: &mut Hub<S>, id: u64, now: u64) -> Option<Durable> {
    let s = hub.stats_job(id, now)?;
    let body = hub.peek(id).map(|v| v.body.to_vec()).unwrap_or_default();
    Some(Durable {
        state: s.state,
        pri: s.pri,
        ttr: s.ttr,
        time_left: s.time_left,
        body,
        name: s.name,
    })
}

/// The states a power cut may leave. Persisted modes: per job, any state it had since the
/// last completed sync (every change acknowledged before it is durable; the changes since are
/// each there or not). Mem mode: one whole snapshot, the last completed flush or the one in
/// progress.
struct PowerCuts {
    /// Persisted modes: job id → its states since the last completed sync (`None`: no job).
    since_sync: BTreeMap<u64, Vec<Option<MJob>>>,
    /// Mem mode: the last completed flush's jobs, then the one being flushed.
    snapshots: Vec<BTreeMap<u64, MJob>>,
    /// Ids below this were acknowledged (their put's sync completed).
    acked_next: u64,
}

impl PowerCuts {
    fn new() -> Self {
        PowerCuts {
            since_sync: BTreeMap::new(),
            snapshots: vec![BTreeMap::new()],
            acked_next: 1,
        }
    }

    /// Records the state of every job after an operation.
    fn note(&mut self, m: &Model) {
        for id in 1..=m.issued {
            let now = m.jobs.get(&id).cloned();
            let seen = self.since_sync.entry(id).or_insert_with(|| vec![None]);
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
    }

    /// A sync (or flush) completed: what the model holds now is durable.
    fn synced(&mut self, m: &Model) {
        for (id, seen) in self.since_sync.iter_mut() {
            *seen = vec![m.jobs.get(id).cloned()];
        }
        self.snapshots = vec![m.jobs.clone()];
        self.acked_next = m.issued + 1;
    }
}

/// A sync as the server's sync thread makes it: the batch is taken, synced, and its changes
/// count as acknowledged. Mem mode: a SIGUSR1 flush.
fn sync<S: Segment>(h: &mut Harness<S>, m: &Model, cuts: &mut PowerCuts) {
    if h.mem {
        cuts.snapshots.push(m.jobs.clone());
        h.hub().flush().expect("flush");
    } else {
        let batch = h.hub().take_sync_batch();
        // Every other batch as one `syncfs` when it has two files or more (`--syncfs-from`).
        let syncfs_from = if batch.epoch.is_multiple_of(2) { 2 } else { 0 };
        batch.sync_grouped(syncfs_from).expect("sync batch");
        h.hub().synced(batch.epoch);
    }
}

/// Recovers the image of a power cut in a new boot and compares it with what may survive.
fn check_cut<S: Segment>(h: &Harness<S>, m: &Model, cuts: &PowerCuts, image: &std::path::Path) {
    let cfg = HubConfig {
        data_dir: image.to_path_buf(),
        ..h.cfg.clone()
    };
    let now = m.now;
    let mut hub =
        Hub::<S>::open(cfg, now).unwrap_or_else(|e| panic!("recovery after a power cut: {e}"));
    let last = m.issued + 1;
    if h.mem {
        let got: Vec<(u64, Durable)> = (0..=last)
            .filter_map(|id| Some((id, recovered(&mut hub, id, now)?)))
            .collect();
        let whole = cuts.snapshots.iter().any(|snap| {
            let want: Vec<(u64, Durable)> = snap
                .iter()
                .map(|(&id, j)| (id, durable_form(j, now)))
                .collect();
            want == got
        });
        assert!(whole, "mem mode restored no whole snapshot: {got:?}");
        check_names(&mut hub, &got);
    } else {
        let mut live = Vec::new();
        for id in 0..=last {
            let got = recovered(&mut hub, id, now);
            if let Some(d) = &got {
                live.push((id, d.clone()));
            }
            let allowed: Vec<Option<Durable>> = cuts.since_sync.get(&id).map_or(vec![None], |v| {
                v.iter()
                    .map(|j| j.as_ref().map(|j| durable_form(j, now)))
                    .collect()
            });
            assert!(
                allowed.contains(&got),
                "job {id} after a power cut: {got:?}, want one of {allowed:?}"
            );
        }
        check_names(&mut hub, &live);
        // Ids are never handed out twice: ids of puts not yet acknowledged may be issued
        // again, acknowledged ones never.
        let c = hub.connect();
        let id = hub
            .put(c, 0, 0, 1, b"after the cut", now)
            .expect("put after a power cut");
        assert!(
            id >= cuts.acked_next,
            "id {id} handed out again after a power cut"
        );
    }
    drop(hub);
    let _ = std::fs::remove_dir_all(image);
}

fn run<S: Segment>(mem: bool, power: Power, span: Span, ops: &[Op]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = (power != Power::Off).then(|| {
        let reg = powercut::register(dir.path(), b"boot-before-the-cut").expect("simulator");
        (reg, tempfile::tempdir().expect("temp dir"))
    });
    let cfg = HubConfig {
        data_dir: dir.path().to_path_buf(),
        spoke_span: span.micros(),
        restore: mem,
    };
    let mut hub = Hub::<S>::open(cfg.clone(), START).expect("open");
    hub.set_free_min(0);
    hub.set_deferred_removal(true);
    let conns = [hub.connect(), hub.connect()];
    let mut h = Harness {
        hub: Some(hub),
        sim,
        pending: None,
        reaped: Vec::new(),
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
    let mut cuts = PowerCuts::new();
    for op in ops {
        let now = m.now;
        let mut synced = false;
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
                let body = body.bytes(body_seq);
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
                        name: None,
                    },
                );
            }
            Op::PutNamed {
                conn,
                name,
                replace,
                pri,
                delay,
                ttr,
                body,
            } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let name = usize::from(name) % NAMES.len();
                let body = body.bytes(body_seq);
                body_seq += 1;
                let (pri, delay, ttr) = (u32::from(pri % 4), delay.seconds(), u32::from(ttr % 4));
                let got = h
                    .hub()
                    .put_named(
                        cc,
                        NAMES[name].as_bytes(),
                        replace,
                        pri,
                        delay,
                        ttr,
                        &body,
                        now,
                    )
                    .expect("put-named");
                let trigger = now + u64::from(delay) * SECOND;
                let state = if delay == 0 { St::Ready } else { St::Delayed };
                let want = match m.named(name) {
                    None => {
                        let PutNamed::Inserted(id) = got else {
                            panic!("no job is named {}, yet {got:?}", NAMES[name]);
                        };
                        assert!(!m.jobs.contains_key(&id), "put-named reused live id {id}");
                        if !mem {
                            assert!(id > m.issued, "persisted modes never reuse an id ({id})");
                        }
                        m.issued = m.issued.max(id);
                        let ttr = ttr.max(1);
                        let name = Some(name);
                        m.jobs.insert(
                            id,
                            MJob {
                                pri,
                                ttr,
                                trigger,
                                state,
                                body,
                                name,
                            },
                        );
                        PutNamed::Inserted(id)
                    }
                    Some(id) if !replace => PutNamed::Exists(id),
                    Some(id) if matches!(m.jobs[&id].state, St::Reserved { .. }) => {
                        PutNamed::Busy(id)
                    }
                    Some(id) => {
                        let j = m.jobs.get_mut(&id).expect("named above");
                        (j.pri, j.ttr, j.trigger, j.state, j.body) =
                            (pri, ttr.max(1), trigger, state, body);
                        PutNamed::Replaced(id)
                    }
                };
                assert_eq!(got, want, "put-named {}", NAMES[name]);
            }
            Op::ByName { conn, name, what } => {
                let c = usize::from(conn) % CONNS;
                let cc = h.conns[c];
                let name = usize::from(name) % NAMES.len();
                let bytes = NAMES[name].as_bytes();
                let id = m.named(name);
                let state = id.map(|id| m.jobs[&id].state);
                match what % 4 {
                    0 => {
                        let got = h.hub().delete_named(cc, bytes, now);
                        let want = match (id, state) {
                            (Some(id), Some(s)) if !matches!(s, St::Reserved { conn, .. } if conn != c) =>
                            {
                                m.jobs.remove(&id);
                                Ok(())
                            }
                            _ => Err(HubError::NotFound),
                        };
                        assert_eq!(got, want, "delete-name {}", NAMES[name]);
                    }
                    1 => {
                        let got = h.hub().kick_named(cc, bytes, now);
                        let want = match (id, state) {
                            (Some(id), Some(St::Delayed | St::Buried { .. })) => {
                                m.jobs.get_mut(&id).expect("named").state = St::Ready;
                                Ok(())
                            }
                            _ => Err(HubError::NotFound),
                        };
                        assert_eq!(got, want, "kick-name {}", NAMES[name]);
                    }
                    2 => {
                        let got = h.hub().touch_named(cc, bytes, now);
                        let want = match id {
                            Some(id) if m.held_by(c, id) => {
                                let j = m.jobs.get_mut(&id).expect("held");
                                j.state = St::Reserved {
                                    conn: c,
                                    deadline: now + u64::from(j.ttr) * SECOND,
                                };
                                Ok(())
                            }
                            _ => Err(HubError::NotFound),
                        };
                        assert_eq!(got, want, "touch-name {}", NAMES[name]);
                    }
                    _ => {
                        let hub = h.hub();
                        let got = hub
                            .job_named(cc, bytes)
                            .expect("peek-name")
                            .and_then(|id| hub.peek(id))
                            .map(|v| (v.id, v.body.to_vec()));
                        let want = id.map(|id| (id, m.jobs[&id].body.clone()));
                        assert_eq!(got, want, "peek-name {}", NAMES[name]);
                    }
                }
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
                // The server trims the id index once a second too: all of it, or a few ids;
                // and lets idle far spokes drop their pages: every open one, or a few.
                h.hub().trim_index(if write_now { usize::MAX } else { 3 });
                if write_now {
                    h.hub().shed_idle_far(u64::MAX, usize::MAX);
                } else {
                    h.hub().shed_idle_far(m.now, 3);
                }
                for seg in h.reaped.drain(..) {
                    seg.destroy().expect("retired segment removed");
                }
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
                if mem {
                    // The restart flushes: a cut inside it may leave this snapshot.
                    cuts.snapshots.push(m.jobs.clone());
                }
                synced = mem;
                h.restart(now, span.micros());
                m.restart();
                m.advance(now);
                check_all(&mut h, &m);
            }
            Op::Cut { ahead, seed } => {
                if let Some((sim, images)) = &h.sim {
                    let at = sim.events() + 1 + u64::from(ahead % 12);
                    sim.plan_cut(
                        at,
                        u64::from(seed),
                        images.path().join(format!("cut-{at}-{seed}")),
                    );
                    // The plan stands through the next operation.
                    continue;
                }
            }
            Op::Sync => {
                if power == Power::Off {
                    sync(&mut h, &m, &mut cuts);
                }
            }
        }
        let retired = h.hub().take_retired();
        h.reaped.extend(retired);
        check_counts(&mut h, &m);
        if power != Power::Off {
            cuts.note(&m);
            if (power == Power::SyncEveryOp && !mem) || matches!(op, Op::Sync) {
                sync(&mut h, &m, &mut cuts);
                synced = true;
            }
            let image = h.sim.as_ref().and_then(|(sim, _)| sim.take_cut());
            if let Some(image) = image {
                check_cut(&h, &m, &cuts, &image);
            }
        }
        if synced {
            cuts.synced(&m);
        }
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
    let power = match input.mode / 3 % 3 {
        0 => Power::Off,
        1 => Power::SyncEveryOp,
        _ => Power::SyncAtSyncOp,
    };
    match input.mode % 3 {
        0 => run::<MemSegment>(true, power, input.span, ops),
        1 => run::<MappedSegment>(false, power, input.span, ops),
        _ => run::<LazySegment>(false, power, input.span, ops),
    }
});
