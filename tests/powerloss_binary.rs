//! The power-loss test of the `yaad` binary with `-f 0`, mapped and lazy mode: four clients
//! load it while the power-loss simulator (src/segment/powercut.rs, `YAAD_POWERCUT`) cuts the
//! power at a random sync event: the process builds the image of what the data dir may hold
//! after the cut and dies (SIGKILL), so no reply covering a later sync ever leaves. yaad is
//! then started on the image in a new boot (`YAAD_BOOT_ID`) and every change a client got a
//! reply for is checked over the wire, job by job (`stats-job`, `peek`):
//! - an acknowledged put exists (tube, body, priority) unless an acknowledged delete removed
//!   it; an acknowledged delete stays gone; no job appears that no client put;
//! - states: a delayed put or release shows delayed until its trigger time, ready after;
//!   buried stays buried unless kicked; a reserved job is ready again (reservations are not
//!   kept, as in beanstalkd); the counters a restart keeps (releases, buries, kicks, and the
//!   reserves counted up to the job's last persisted change) are exact;
//! - a command in flight at the cut (no reply) may have happened or not: its job shows
//!   one of the two; a put in flight may have created a job, found by id and body;
//! - each tube holds exactly the jobs of the model (`stats-tube`);
//! - named jobs (`put-named`, `put-replace`, `delete-name`, from four names per tube): each
//!   job shows its name, a name is held by at most one live job of the tube, and `peek-name`
//!   finds that job (an acknowledged replace shows its new body, priority and schedule, with
//!   its id and counters kept);
//! - a put after the restart gets an id above every acknowledged id;
//! - while running, no job is handed out twice or before its trigger time, and a reserve
//!   never times out while a job of the tube is surely ready.
//!
//! Mem mode with `-b` keeps jobs only in snapshot flushes (SIGUSR1, SIGTERM): a cut during
//! one must leave exactly the previous snapshot or exactly the new one for `-r`.
//!
//! Rounds chain: the restored dir is loaded again in the next round (in the boot of the
//! process that checked it), so cuts also hit recovery, far spokes kept across restarts and
//! the start-up summary. The simulator counts what a process finds at its start as durable
//! (so a cut loses only what the cut process wrote, also after the checker was killed -9).
//! `YAAD_POWERLOSS_CUTS` sets the cuts per mode (default 20, mem 12), `YAAD_POWERLOSS_SEED`
//! the seed; scripts/powerloss.sh runs many.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Client, Rng, Yaad};

const WORKERS: usize = 4;
/// Long enough that no reservation times out within a round.
const TTR: u32 = 120;
const SECOND: u64 = 1_000_000;
/// The server and this test read the same clock (`SystemTime`), the server in microseconds
/// rounded up: a trigger time is bounded by the clock before the request and after the reply,
/// give or take this much.
const SLACK_US: u64 = 2_000;
/// Rounds on one data dir before a fresh one (bounds the model, and the checks per round).
const CHAIN: usize = 40;
/// How long a round's load may run before the cut: past it the process is killed (-9) and
/// the round checked as a kill test, with the planned event lowered for the next rounds.
const LOAD_GUARD: Duration = Duration::from_secs(15);
/// Rounds without a cut in a row that mean the cut never fires (each halves the planned
/// event, down to start-up's few syncs).
const MISSES: usize = 8;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Ready,
    /// Due somewhere in `[from, to]` (µs): the delay added to the server's clock, read
    /// between the request and the reply.
    Delayed {
        from: u64,
        to: u64,
    },
    Buried,
    /// Reserved by its client: not persisted, ready again after a restart.
    Reserved,
}

#[derive(Clone, PartialEq)]
struct Job {
    body: Vec<u8>,
    pri: u32,
    state: State,
    /// Reserves counted so far, and as of the job's last persisted change (what a restart
    /// keeps: a reserve alone writes nothing).
    reserves: u64,
    reserves_kept: u64,
    releases: u64,
    buries: u64,
    kicks: u64,
    name: Option<String>,
}

/// Names per tube for `put-named`, `put-replace` and `delete-name`: few, so that they meet.
const NAMES: u64 = 4;

/// A body by its tag (`tube-seq:`) and length.
fn show(body: &[u8]) -> String {
    let tag = body
        .iter()
        .position(|&b| b == b':')
        .map_or(body, |i| &body[..i]);
    format!("{}… ({} bytes)", String::from_utf8_lossy(tag), body.len())
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("body", &show(&self.body))
            .field("pri", &self.pri)
            .field("state", &self.state)
            .field("reserves", &(self.reserves, self.reserves_kept))
            .field("releases", &self.releases)
            .field("buries", &self.buries)
            .field("kicks", &self.kicks)
            .field("name", &self.name)
            .finish()
    }
}

impl Job {
    fn new(body: Vec<u8>, pri: u32, state: State) -> Job {
        Job {
            body,
            pri,
            state,
            reserves: 0,
            reserves_kept: 0,
            releases: 0,
            buries: 0,
            kicks: 0,
            name: None,
        }
    }

    /// The job as a restart finds it: no reservation (a reserved job was due, so it is
    /// ready), and only the reserves persisted with a change.
    fn restarted(&self) -> Job {
        let mut j = self.clone();
        if j.state == State::Reserved {
            j.state = State::Ready;
        }
        j.reserves = j.reserves_kept;
        j
    }

    /// After a persisted change (release, bury, kick) to `state`: its reserves are on disk.
    fn changed(&self, state: State, pri: u32) -> Job {
        let mut j = self.clone();
        j.state = state;
        j.pri = pri;
        j.reserves_kept = j.reserves;
        j
    }
}

fn delayed(sent: u64, replied: u64, delay_s: u32) -> State {
    let d = u64::from(delay_s) * SECOND;
    State::Delayed {
        from: sent + d,
        to: replied + d,
    }
}

/// One client's tube and what the client was told about its jobs (clients never touch each
/// other's jobs, so each model is exact).
#[derive(Clone)]
struct Tube {
    name: String,
    jobs: BTreeMap<u64, Job>,
    deleted: BTreeSet<u64>,
    /// Jobs whose last command got no reply: what a restart may show (None: deleted).
    unsure: BTreeMap<u64, Vec<Option<Job>>>,
    /// A put that got no reply: the job it may have created (id unknown), and the highest id
    /// acknowledged to any client before it was sent.
    unsure_put: Option<(Job, u64)>,
    max_id: u64,
    seq: u64,
    acked: u64,
    /// Puts in flight at a cut whose job was there after the restart.
    puts_in_flight_kept: u64,
}

impl Tube {
    fn new(w: usize) -> Tube {
        Tube {
            name: format!("powerloss-{w}"),
            jobs: BTreeMap::new(),
            deleted: BTreeSet::new(),
            unsure: BTreeMap::new(),
            unsure_put: None,
            max_id: 0,
            seq: 0,
            acked: 0,
            puts_in_flight_kept: 0,
        }
    }

    fn knows(&self, id: u64) -> bool {
        self.jobs.contains_key(&id) || self.deleted.contains(&id) || self.unsure.contains_key(&id)
    }

    /// The command changing job `id` got no reply: a restart shows it as before or `after`.
    fn unsure(&mut self, id: u64, after: Option<Job>) {
        let before = self.jobs.remove(&id).expect("a job of the model");
        let after = after.map(|j| j.restarted());
        self.unsure
            .insert(id, vec![Some(before.restarted()), after]);
    }

    /// The live job named `name`.
    fn named(&self, name: &str) -> Option<u64> {
        self.jobs
            .iter()
            .find(|(_, j)| j.name.as_deref() == Some(name))
            .map(|(&id, _)| id)
    }

    fn pick(&self, rng: &mut Rng, want: impl Fn(&Job) -> bool) -> Option<u64> {
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| want(j))
            .map(|(&id, _)| id)
            .collect();
        (!ids.is_empty()).then(|| ids[rng.below(ids.len() as u64) as usize])
    }
}

fn expect(reply: &str, want: &str, what: &str) {
    assert_eq!(reply, want, "{what}");
}

/// One client's load: `commands` commands, or until the server dies (the cut). Every reply
/// is checked and applied to `t`; the command left without a reply is recorded as unsure.
fn load(
    c: &mut Client,
    t: &mut Tube,
    rng: &mut Rng,
    max_acked: &AtomicU64,
    commands: u64,
) -> std::io::Result<()> {
    let name = t.name.clone();
    expect(
        &c.try_cmd(&format!("use {name}"))?,
        &format!("USING {name}"),
        "use",
    );
    expect(&c.try_cmd(&format!("watch {name}"))?, "WATCHING 2", "watch");
    expect(&c.try_cmd("ignore default")?, "WATCHING 1", "ignore");
    for _ in 0..commands {
        match rng.below(24) {
            20 | 21 => put_named(c, t, rng, max_acked)?,
            22 | 23 => delete_name(c, t, rng)?,
            0..=7 => put(c, t, rng, max_acked)?,
            8..=12 => reserve(c, t, rng)?,
            13..=15 => {
                if let Some(id) = t.pick(rng, |j| j.state == State::Reserved) {
                    act(c, t, rng, id)?;
                }
            }
            16 => {
                if let Some(id) = t.pick(rng, |j| j.state != State::Reserved) {
                    let r = c.try_cmd(&format!("delete {id}")).inspect_err(|_| {
                        t.unsure(id, None);
                    })?;
                    expect(&r, "DELETED", &format!("{name}: delete {id}"));
                    t.jobs.remove(&id);
                    t.deleted.insert(id);
                    t.acked += 1;
                }
            }
            17 | 18 => kick_job(c, t, rng)?,
            _ => kick(c, t, rng)?,
        }
    }
    Ok(())
}

/// A new body, priority and delay for a put.
fn new_job(t: &mut Tube, rng: &mut Rng) -> (Vec<u8>, u32, u32) {
    t.seq += 1;
    let mut body = format!("{}-{}:", t.name, t.seq).into_bytes();
    // Random bytes, zeros included (a body may end in zero bytes).
    let extra = rng.below(300);
    body.extend((0..extra).map(|_| (rng.next() % 4 * 70) as u8));
    let pri = rng.below(2000) as u32;
    // Ready, near (loaded spokes) and far (2 s and more: far spokes, found through the id
    // index after a restart).
    let delay = match rng.below(4) {
        0 | 1 => 0,
        2 => 1 + rng.below(2) as u32,
        _ => 3 + rng.below(28) as u32,
    };
    (body, pri, delay)
}

/// The id of an `INSERTED <id>` reply, checked as never issued before.
fn inserted(t: &mut Tube, r: &str, what: &str, max_acked: &AtomicU64) -> u64 {
    let id: u64 = r
        .strip_prefix("INSERTED ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{}: {what}: {r}", t.name));
    assert!(
        id > t.max_id && !t.knows(id),
        "{}: {what} got id {id}, issued before (highest so far {})",
        t.name,
        t.max_id
    );
    t.max_id = id;
    max_acked.fetch_max(id, Ordering::SeqCst);
    id
}

fn put(c: &mut Client, t: &mut Tube, rng: &mut Rng, max_acked: &AtomicU64) -> std::io::Result<()> {
    let (body, pri, delay) = new_job(t, rng);
    let before = max_acked.load(Ordering::SeqCst);
    let sent = now_us();
    let r = match c.try_put(pri, delay, TTR, &body) {
        Ok(r) => r,
        Err(e) => {
            let state = match delay {
                0 => State::Ready,
                d => delayed(sent, now_us(), d),
            };
            t.unsure_put = Some((Job::new(body, pri, state), before));
            return Err(e);
        }
    };
    let replied = now_us();
    let id = inserted(t, &r, "put", max_acked);
    let state = match delay {
        0 => State::Ready,
        d => delayed(sent, replied, d),
    };
    t.jobs.insert(id, Job::new(body, pri, state));
    t.acked += 1;
    Ok(())
}

/// `put-named` or `put-replace` of one of the tube's names: inserted, or the job holding the
/// name left as it is (`EXISTS`, `BUSY` while reserved) or given the new body, priority and
/// delay (`REPLACED`: same id, counters kept).
fn put_named(
    c: &mut Client,
    t: &mut Tube,
    rng: &mut Rng,
    max_acked: &AtomicU64,
) -> std::io::Result<()> {
    let name = format!("job-{}", rng.below(NAMES));
    let replace = rng.below(2) == 0;
    let (body, pri, delay) = new_job(t, rng);
    let holder = t.named(&name);
    let verb = if replace { "put-replace" } else { "put-named" };
    let mut m = format!("{verb} {name} {pri} {delay} {TTR} {}\r\n", body.len()).into_bytes();
    m.extend_from_slice(&body);
    m.extend_from_slice(b"\r\n");
    let what = format!("{verb} {name}");
    let before = max_acked.load(Ordering::SeqCst);
    let sent = now_us();
    let state_after = |replied: u64| match delay {
        0 => State::Ready,
        d => delayed(sent, replied, d),
    };
    let replaced = |t: &Tube, id: u64, state: State| {
        let mut after = t.jobs[&id].changed(state, pri);
        after.body = body.clone();
        after
    };
    let r = match c.send(&m) {
        Ok(r) => r,
        Err(e) => {
            let state = state_after(now_us());
            match holder {
                None => {
                    let mut job = Job::new(body.clone(), pri, state);
                    job.name = Some(name);
                    t.unsure_put = Some((job, before));
                }
                Some(id) if replace && t.jobs[&id].state != State::Reserved => {
                    let after = replaced(t, id, state);
                    t.unsure(id, Some(after));
                }
                // EXISTS or BUSY: nothing changes.
                Some(_) => {}
            }
            return Err(e);
        }
    };
    let state = state_after(now_us());
    match holder {
        None => {
            let id = inserted(t, &r, &what, max_acked);
            let mut job = Job::new(body, pri, state);
            job.name = Some(name);
            t.jobs.insert(id, job);
            t.acked += 1;
        }
        Some(id) if !replace => expect(&r, &format!("EXISTS {id}"), &format!("{}: {what}", t.name)),
        Some(id) if t.jobs[&id].state == State::Reserved => {
            expect(&r, &format!("BUSY {id}"), &format!("{}: {what}", t.name));
        }
        Some(id) => {
            expect(
                &r,
                &format!("REPLACED {id}"),
                &format!("{}: {what}", t.name),
            );
            let after = replaced(t, id, state);
            t.jobs.insert(id, after);
            t.acked += 1;
        }
    }
    Ok(())
}

/// `delete-name` of one of the tube's names (a reserved job too: this client holds it).
fn delete_name(c: &mut Client, t: &mut Tube, rng: &mut Rng) -> std::io::Result<()> {
    let name = format!("job-{}", rng.below(NAMES));
    let holder = t.named(&name);
    let r = c.try_cmd(&format!("delete-name {name}")).inspect_err(|_| {
        if let Some(id) = holder {
            t.unsure(id, None);
        }
    })?;
    let what = format!("{}: delete-name {name} ({holder:?})", t.name);
    match holder {
        None => expect(&r, "NOT_FOUND", &what),
        Some(id) => {
            expect(&r, "DELETED", &what);
            t.jobs.remove(&id);
            t.deleted.insert(id);
            t.acked += 1;
        }
    }
    Ok(())
}

fn reserve(c: &mut Client, t: &mut Tube, rng: &mut Rng) -> std::io::Result<()> {
    let sent = now_us();
    let r = c.try_cmd("reserve-with-timeout 0")?;
    let Some(rest) = r.strip_prefix("RESERVED ") else {
        assert_eq!(r, "TIMED_OUT", "{}: reserve", t.name);
        // Nothing was ready: no job may have been surely ready.
        for (id, j) in &t.jobs {
            let surely = match j.state {
                State::Ready => true,
                State::Delayed { to, .. } => to + SLACK_US < sent,
                _ => false,
            };
            assert!(
                !surely,
                "{}: reserve timed out, job {id} is {:?}",
                t.name, j.state
            );
        }
        return Ok(());
    };
    let (id, n) = rest
        .split_once(' ')
        .and_then(|(id, n)| Some((id.parse::<u64>().ok()?, n.parse::<usize>().ok()?)))
        .unwrap_or_else(|| panic!("{}: reserve: {r}", t.name));
    let body = c.body(n)?;
    let replied = now_us();
    let name = t.name.clone();
    let job = t
        .jobs
        .get_mut(&id)
        .unwrap_or_else(|| panic!("{name}: reserve handed out job {id}, not one of the tube"));
    assert!(job.body == body, "{name}: reserved job {id}: body differs");
    match job.state {
        State::Ready => {}
        State::Delayed { from, .. } => assert!(
            from <= replied + SLACK_US,
            "{name}: job {id} handed out {} µs before its trigger time",
            from - replied
        ),
        s => panic!("{name}: reserve handed out job {id} while {s:?}"),
    }
    job.state = State::Reserved;
    job.reserves += 1;
    let held = t
        .jobs
        .values()
        .filter(|j| j.state == State::Reserved)
        .count();
    // Most reservations end at once; a few are held (ready again after a restart).
    if held > 3 || rng.below(4) > 0 {
        act(c, t, rng, id)?;
    }
    Ok(())
}

/// Ends (or touches) the reservation of job `id`.
fn act(c: &mut Client, t: &mut Tube, rng: &mut Rng, id: u64) -> std::io::Result<()> {
    let job = t.jobs[&id].clone();
    let what = format!("{}: job {id}", t.name);
    let pri = rng.below(2000) as u32;
    match rng.below(10) {
        0..=2 => {
            let r = c.try_cmd(&format!("delete {id}")).inspect_err(|_| {
                t.unsure(id, None);
            })?;
            expect(&r, "DELETED", &format!("{what}: delete"));
            t.jobs.remove(&id);
            t.deleted.insert(id);
        }
        3 | 4 => {
            let mut after = job.changed(State::Ready, pri);
            after.releases += 1;
            let r = c
                .try_cmd(&format!("release {id} {pri} 0"))
                .inspect_err(|_| t.unsure(id, Some(after.clone())))?;
            expect(&r, "RELEASED", &format!("{what}: release"));
            t.jobs.insert(id, after);
        }
        5 | 6 => {
            let delay = 1 + rng.below(30) as u32;
            let sent = now_us();
            let r = match c.try_cmd(&format!("release {id} {pri} {delay}")) {
                Ok(r) => r,
                Err(e) => {
                    let mut after = job.changed(delayed(sent, now_us(), delay), pri);
                    after.releases += 1;
                    t.unsure(id, Some(after));
                    return Err(e);
                }
            };
            let mut after = job.changed(delayed(sent, now_us(), delay), pri);
            after.releases += 1;
            expect(
                &r,
                "RELEASED",
                &format!("{what}: release with delay {delay}"),
            );
            t.jobs.insert(id, after);
        }
        7 | 8 => {
            let mut after = job.changed(State::Buried, pri);
            after.buries += 1;
            let r = c
                .try_cmd(&format!("bury {id} {pri}"))
                .inspect_err(|_| t.unsure(id, Some(after.clone())))?;
            expect(&r, "BURIED", &format!("{what}: bury"));
            t.jobs.insert(id, after);
        }
        _ => {
            // Persists nothing: a touch in flight leaves the job as it was.
            let r = c.try_cmd(&format!("touch {id}"))?;
            expect(&r, "TOUCHED", &format!("{what}: touch"));
            return Ok(());
        }
    }
    t.acked += 1;
    Ok(())
}

/// `kick-job` of a buried or delayed job.
fn kick_job(c: &mut Client, t: &mut Tube, rng: &mut Rng) -> std::io::Result<()> {
    let Some(id) = t.pick(rng, |j| {
        matches!(j.state, State::Buried | State::Delayed { .. })
    }) else {
        return Ok(());
    };
    let job = t.jobs[&id].clone();
    let mut after = job.changed(State::Ready, job.pri);
    after.kicks += 1;
    let sent = now_us();
    let r = c
        .try_cmd(&format!("kick-job {id}"))
        .inspect_err(|_| t.unsure(id, Some(after.clone())))?;
    let replied = now_us();
    let what = format!("{}: kick-job {id} ({:?}): {r}", t.name, job.state);
    match (job.state, r.as_str()) {
        (State::Buried, "KICKED") => {}
        // Still delayed when the server looked: its trigger time was after `sent`.
        (State::Delayed { to, .. }, "KICKED") => assert!(sent < to + SLACK_US, "{what}"),
        // Due already (ready): nothing to kick, nothing changed.
        (State::Delayed { from, .. }, "NOT_FOUND") => {
            assert!(from <= replied + SLACK_US, "{what}");
            t.jobs.get_mut(&id).expect("picked").state = State::Ready;
            return Ok(());
        }
        _ => panic!("{what}"),
    }
    t.jobs.insert(id, after);
    t.acked += 1;
    Ok(())
}

/// `kick N` with N at least the tube's buried jobs: kicks all of them.
fn kick(c: &mut Client, t: &mut Tube, rng: &mut Rng) -> std::io::Result<()> {
    let buried: Vec<u64> = t
        .jobs
        .iter()
        .filter(|(_, j)| j.state == State::Buried)
        .map(|(&id, _)| id)
        .collect();
    if buried.is_empty() {
        return Ok(());
    }
    let kicked = |j: &Job| {
        let mut after = j.changed(State::Ready, j.pri);
        after.kicks += 1;
        after
    };
    let bound = buried.len() as u64 + rng.below(2);
    let r = match c.try_cmd(&format!("kick {bound}")) {
        Ok(r) => r,
        Err(e) => {
            // One sync batch, but each job's slot on its own page(s): any subset may stay.
            for id in &buried {
                let after = kicked(&t.jobs[id]);
                t.unsure(*id, Some(after));
            }
            return Err(e);
        }
    };
    expect(
        &r,
        &format!("KICKED {}", buried.len()),
        &format!("{}: kick {bound}", t.name),
    );
    for id in buried {
        let after = kicked(&t.jobs[&id]);
        t.jobs.insert(id, after);
        t.acked += 1;
    }
    Ok(())
}

/// What the server shows of a job.
struct Seen {
    tube: String,
    state: String,
    pri: u32,
    reserves: u64,
    timeouts: u64,
    releases: u64,
    buries: u64,
    kicks: u64,
    body: Vec<u8>,
    name: Option<String>,
    /// The clock before the request and after the reply of `stats-job` (µs).
    asked: u64,
    answered: u64,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("tube", &self.tube)
            .field("body", &show(&self.body))
            .field("state", &self.state)
            .field("pri", &self.pri)
            .field("reserves", &self.reserves)
            .field("timeouts", &self.timeouts)
            .field("releases", &self.releases)
            .field("buries", &self.buries)
            .field("kicks", &self.kicks)
            .field("name", &self.name)
            .field("asked", &(self.asked, self.answered))
            .finish()
    }
}

fn yaml(c: &mut Client, line: &str) -> Option<BTreeMap<String, String>> {
    let r = c.cmd(line);
    if r == "NOT_FOUND" {
        return None;
    }
    let n: usize = r
        .strip_prefix("OK ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}: {r}"));
    let body = String::from_utf8(c.body(n).unwrap()).expect("utf-8 yaml");
    Some(
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn look(c: &mut Client, id: u64) -> Option<Seen> {
    let asked = now_us();
    let y = yaml(c, &format!("stats-job {id}"))?;
    let answered = now_us();
    let num = |k: &str| -> u64 {
        y.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("stats-job {id}: {k}"))
    };
    let body = c
        .peek(id)
        .unwrap_or_else(|| panic!("job {id}: stats-job found, peek did not"));
    Some(Seen {
        tube: y["tube"].clone(),
        state: y["state"].clone(),
        pri: num("pri") as u32,
        reserves: num("reserves"),
        timeouts: num("timeouts"),
        releases: num("releases"),
        buries: num("buries"),
        kicks: num("kicks"),
        body,
        name: y.get("name").cloned(),
        asked,
        answered,
    })
}

/// Whether what the server shows is `want` (None: no such job).
fn fits(seen: &Option<Seen>, want: &Option<Job>, tube: &str) -> Result<(), String> {
    let (s, j) = match (seen, want) {
        (None, None) => return Ok(()),
        (Some(s), Some(j)) => (s, j),
        _ => return Err("exists ≠ expected".into()),
    };
    let state_ok = match (j.state, s.state.as_str()) {
        (State::Ready, "ready") | (State::Buried, "buried") => true,
        (State::Delayed { from, .. }, "ready") => from <= s.answered + SLACK_US,
        (State::Delayed { to, .. }, "delayed") => s.asked < to + SLACK_US,
        _ => false,
    };
    let fields = (s.pri, s.reserves, s.timeouts, s.releases, s.buries, s.kicks);
    let model = (j.pri, j.reserves, 0, j.releases, j.buries, j.kicks);
    if s.tube != tube || s.body != j.body {
        Err(format!("tube {:?} or body differs", s.tube))
    } else if s.name != j.name {
        Err(format!("name {:?} (expected {:?})", s.name, j.name))
    } else if !state_ok {
        Err(format!("state {} (expected {:?})", s.state, j.state))
    } else if fields != model {
        Err(format!(
            "(pri, reserves, timeouts, releases, buries, kicks) {fields:?}, expected {model:?}"
        ))
    } else {
        Ok(())
    }
}

/// The model after a restart that showed `seen` for a job expected as `j`.
fn adopt(seen: &Seen, j: &Job) -> Job {
    let mut j = j.clone();
    if seen.state == "ready" {
        j.state = State::Ready;
    }
    j
}

/// Checks the restarted server against every tube's model; settles what was unsure.
fn verify(port: u16, tubes: &mut [Tube], max_acked: &AtomicU64, what: &str) {
    let mut c = common::connect(port);
    let probe_id = probe(&mut c, max_acked, what);
    // Puts in flight at the cut, in the tubes holding one job more than the model: their ids
    // lie above the highest id acknowledged before they were sent and below the probe's
    // (ids are never issued twice; not just above the highest acknowledged: ids jump after a
    // restart, and a cut run may have had no put acknowledged).
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for t in tubes.iter() {
        if t.unsure_put.is_some() && tube_jobs(&mut c, &t.name).0 > t.jobs.len() + t.unsure.len() {
            wanted.insert(t.name.clone());
        }
    }
    let lowest = tubes
        .iter()
        .filter_map(|t| t.unsure_put.as_ref().map(|(_, low)| *low))
        .min()
        .unwrap_or(probe_id);
    let mut id = probe_id;
    while !wanted.is_empty() && id > lowest + 1 {
        id -= 1;
        if tubes.iter().any(|t| t.knows(id)) {
            continue;
        }
        let Some(seen) = look(&mut c, id) else {
            continue;
        };
        let t = tubes
            .iter_mut()
            .find(|t| t.name == seen.tube)
            .unwrap_or_else(|| panic!("{what}: job {id} in tube {}", seen.tube));
        let job = match &t.unsure_put {
            Some((job, low)) if *low < id && wanted.remove(&t.name) => job.clone(),
            _ => panic!("{what}: job {id} appeared that no client put ({seen:?})"),
        };
        if let Err(e) = fits(&Some(seen), &Some(job.clone()), &t.name) {
            panic!("{what}: job {id} of a put in flight: {e}\n  model {job:?}");
        }
        t.unsure_put = None;
        t.max_id = t.max_id.max(id);
        t.jobs.insert(id, job);
        t.puts_in_flight_kept += 1;
    }
    assert!(
        wanted.is_empty(),
        "{what}: tubes {wanted:?} hold a job more than acknowledged, no put in flight made it"
    );
    for t in tubes.iter_mut() {
        // Lost, as it may be: it was never acknowledged.
        t.unsure_put = None;
        let jobs = std::mem::take(&mut t.jobs);
        for (id, job) in jobs {
            let want = job.restarted();
            let seen = look(&mut c, id);
            if let Err(e) = fits(&seen, &Some(want.clone()), &t.name) {
                panic!(
                    "{what}: {}: acknowledged job {id}: {e}\n  model {want:?}\n  server {seen:?}",
                    t.name
                );
            }
            t.jobs
                .insert(id, adopt(seen.as_ref().expect("fits"), &want));
        }
        for (id, candidates) in std::mem::take(&mut t.unsure) {
            let seen = look(&mut c, id);
            let Some(found) = candidates.iter().find(|j| fits(&seen, j, &t.name).is_ok()) else {
                panic!(
                    "{what}: {}: job {id} (last command unanswered) is neither as before nor \
                     as after it\n  candidates {candidates:?}\n  server {seen:?}",
                    t.name
                );
            };
            match (found, &seen) {
                (Some(j), Some(s)) => {
                    t.jobs.insert(id, adopt(s, j));
                }
                _ => {
                    t.deleted.insert(id);
                }
            }
        }
        if let Err(e) = gone_and_counted(&mut c, t) {
            panic!("{what}: {}: {e}", t.name);
        }
        if let Err(e) = names_resolve(&mut c, t) {
            panic!("{what}: {}: {e}", t.name);
        }
    }
}

/// Whether every job deleted (acknowledged) is gone and the tube holds exactly the model's
/// jobs (none that no client knows of).
fn gone_and_counted(c: &mut Client, t: &Tube) -> Result<(), String> {
    if let Some(id) = t
        .deleted
        .iter()
        .find(|id| yaml(c, &format!("stats-job {id}")).is_some())
    {
        return Err(format!("job {id}, deleted (acknowledged), came back"));
    }
    let seen = tube_jobs(c, &t.name);
    let buried = t.jobs.values().filter(|j| j.state == State::Buried).count();
    if seen != (t.jobs.len(), buried, 0) {
        return Err(format!(
            "(jobs, buried, reserved) in the tube: {seen:?}, expected {:?}",
            (t.jobs.len(), buried, 0)
        ));
    }
    Ok(())
}

/// Whether each of the tube's names is held by at most one job of the model (which the
/// server matched job by job) and `peek-name` finds that job, or none.
fn names_resolve(c: &mut Client, t: &Tube) -> Result<(), String> {
    expect(
        &c.cmd(&format!("use {}", t.name)),
        &format!("USING {}", t.name),
        "use",
    );
    for n in 0..NAMES {
        let name = format!("job-{n}");
        let holders: Vec<u64> = t
            .jobs
            .iter()
            .filter(|(_, j)| j.name.as_deref() == Some(&name))
            .map(|(&id, _)| id)
            .collect();
        if holders.len() > 1 {
            return Err(format!("jobs {holders:?} share the name {name}"));
        }
        let found = match c.with_body(&format!("peek-name {name}")) {
            (r, _) if r == "NOT_FOUND" => None,
            (r, body) => {
                let id = r
                    .strip_prefix("FOUND ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|id| id.parse::<u64>().ok())
                    .ok_or_else(|| format!("peek-name {name}: {r}"))?;
                if t.jobs.get(&id).is_none_or(|j| j.body != body) {
                    return Err(format!(
                        "peek-name {name}: job {id} or its body is not the model's"
                    ));
                }
                Some(id)
            }
        };
        if found != holders.first().copied() {
            return Err(format!("peek-name {name}: {found:?}, expected {holders:?}"));
        }
    }
    Ok(())
}

/// A tube's (jobs, buried jobs, reserved jobs) by `stats-tube`.
fn tube_jobs(c: &mut Client, tube: &str) -> (usize, usize, usize) {
    let Some(y) = yaml(c, &format!("stats-tube {tube}")) else {
        return (0, 0, 0);
    };
    let count = |k: &str| -> usize {
        y.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("stats-tube: {k}"))
    };
    let total = ["ready", "delayed", "buried"]
        .iter()
        .map(|s| count(&format!("current-jobs-{s}")))
        .sum();
    (
        total,
        count("current-jobs-buried"),
        count("current-jobs-reserved"),
    )
}

/// A put after a restart gets an id above every acknowledged one (`max_acked`); returns it.
fn probe(c: &mut Client, max_acked: &AtomicU64, what: &str) -> u64 {
    expect(
        &c.cmd("use powerloss-probe"),
        "USING powerloss-probe",
        "use",
    );
    let r = c.put(0, 0, 60, b"probe");
    let id: u64 = r
        .strip_prefix("INSERTED ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("put: {r}"));
    let top = max_acked.load(Ordering::SeqCst);
    assert!(
        id > top,
        "{what}: a put after the restart got id {id}, acknowledged before: up to {top}"
    );
    expect(&c.cmd(&format!("delete {id}")), "DELETED", "delete probe");
    max_acked.fetch_max(id, Ordering::SeqCst);
    id
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: want a number"))
    })
}

/// The last lines `y` wrote to stderr (for a failure message).
fn last_words(y: &Yaad) -> Vec<String> {
    let logs = y.logs_so_far();
    logs[logs.len().saturating_sub(5)..].to_vec()
}

fn panicked(y: &Yaad) -> Option<String> {
    y.logs_so_far().into_iter().find(|l| l.contains("panicked"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Starts yaad (`args`) in boot `boot` with a power cut planned at sync event `event`;
/// returns it, the image its cut builds and the plan. Each start builds its own image
/// (`image.N`): one abandoned because another process answered on its port may have cut too.
fn start_cut(
    args: &[&str],
    event: u64,
    seed: u64,
    image: &Path,
    boot: u64,
) -> (Yaad, PathBuf, String) {
    let plan = RefCell::new((PathBuf::new(), String::new()));
    let tries = Cell::new(0);
    let y = Yaad::launch_own_may_exit(args, |c| {
        tries.set(tries.get() + 1);
        let image = image.with_extension(tries.get().to_string());
        let p = format!("{event}:{seed}:{}", path_str(&image));
        c.env("YAAD_POWERCUT", &p)
            .env("YAAD_BOOT_ID", format!("boot{boot}"));
        *plan.borrow_mut() = (image, p);
    });
    let (image, plan) = plan.into_inner();
    (y, image, plan)
}

/// With `YAAD_POWERLOSS_PROGRESS=N` (scripts/powerloss.sh): a line every N cuts.
fn progress(mode: &str, fired: u64, started: Instant) {
    if env_u64("YAAD_POWERLOSS_PROGRESS").is_some_and(|n| n > 0 && fired.is_multiple_of(n)) {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{mode}: {fired} power cuts checked, {secs:.0} s");
    }
}

/// Waits until `y` exits, at most `guard`.
fn exit_within(y: &mut Yaad, guard: Duration) -> Option<ExitStatus> {
    let give_up = Instant::now() + guard;
    loop {
        if let Some(st) = y.child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > give_up {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Cut rounds in `mode`, with `sync_threads` syncs in flight at once, until `cuts` cuts were
/// checked.
fn power_cuts(mode: &str, sync_threads: &str, seed: u64) {
    let seed = env_u64("YAAD_POWERLOSS_SEED").unwrap_or(seed);
    let cuts = env_u64("YAAD_POWERLOSS_CUTS").unwrap_or(20);
    // Sync events: a few at start-up, then about one per file synced per group commit.
    let mut max_event = env_u64("YAAD_POWERLOSS_MAX_EVENT").unwrap_or(1500);
    let root = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let mut fresh = 0;
    let new_dir = |fresh: &mut usize| {
        *fresh += 1;
        let d = root.path().join(format!("fresh{fresh}"));
        std::fs::create_dir(&d).unwrap();
        d
    };
    let mut dir = new_dir(&mut fresh);
    let mut tubes: Vec<Tube> = (0..WORKERS).map(Tube::new).collect();
    let max_acked = Arc::new(AtomicU64::new(0));
    let (mut fired, mut missed, mut acked, mut round, mut chained) = (0, 0, 0, 0, 0);
    let (mut in_a_row, mut kept) = (0, 0);
    // Cuts before any reply of the round (at start-up or recovery).
    let mut early = 0;
    let mut boot = 0;
    let started = Instant::now();
    while fired < cuts {
        round += 1;
        chained += 1;
        if chained > CHAIN {
            chained = 1;
            std::fs::remove_dir_all(&dir).unwrap();
            dir = new_dir(&mut fresh);
            acked += tubes.iter().map(|t| t.acked).sum::<u64>();
            kept += tubes.iter().map(|t| t.puts_in_flight_kept).sum::<u64>();
            tubes = (0..WORKERS).map(Tube::new).collect();
            max_acked.store(0, Ordering::SeqCst);
        }
        // A quarter of the cuts among the first syncs: recovery, start-up, the first batches
        // (where a put in flight gets an id far above the last acknowledged one).
        let early_cut = rng.below(4) == 0;
        let event = 1 + rng.below(if early_cut { 20 } else { max_event });
        let cut_seed = rng.next();
        let image = root.path().join(format!("image{round}"));
        let args = [
            "--mode",
            mode,
            "-b",
            path_str(&dir),
            "-f",
            "0",
            "--sync-threads",
            sync_threads,
        ];
        let (mut y, image, plan) = start_cut(&args, event, cut_seed, &image, boot);
        let what = format!("{mode} round {round} (seed {seed:#x}, YAAD_POWERCUT={plan})");
        let (port, pid) = (y.port, y.child.id().to_string());
        let acked_before: u64 = tubes.iter().map(|t| t.acked).sum();
        let workers: Vec<_> = std::mem::take(&mut tubes)
            .into_iter()
            .map(|mut t| {
                let mut r = Rng(rng.next() | 1);
                let (max, pid) = (max_acked.clone(), pid.clone());
                std::thread::spawn(move || {
                    // A server already gone (a cut at start-up) leaves nothing to do; one
                    // that is not ours (its port taken again since) must not be loaded.
                    if let Ok(mut c) = Client::try_connect(port)
                        && c.try_stat("stats", "pid").ok().flatten() == Some(pid)
                    {
                        let _ = load(&mut c, &mut t, &mut r, &max, u64::MAX);
                    }
                    t
                })
            })
            .collect();
        let status = exit_within(&mut y, LOAD_GUARD);
        let cut = status.is_some();
        if !cut {
            // The event was not reached: a kill -9 round; later rounds plan earlier events.
            y.child.kill().unwrap();
            y.child.wait().unwrap();
            missed += 1;
            max_event = (event / 2).max(20);
            in_a_row += 1;
            assert!(
                in_a_row < MISSES,
                "{what}: no cut in {MISSES} rounds: is the hook wired?"
            );
        }
        for w in workers {
            tubes.push(
                w.join()
                    .unwrap_or_else(|_| panic!("{what}: a client failed")),
            );
        }
        let data = if cut {
            let status = status.expect("exited");
            assert!(
                status.signal() == Some(9) && image.is_dir(),
                "{what}: yaad exited ({status}) without a power-cut image; its last words: {:?}",
                last_words(&y)
            );
            assert_eq!(panicked(&y), None, "{what}: yaad panicked before the cut");
            fired += 1;
            in_a_row = 0;
            progress(mode, fired, started);
            early += usize::from(tubes.iter().map(|t| t.acked).sum::<u64>() == acked_before);
            // A power cut is a reboot: a new boot id (checkpoints of the old one untrusted).
            boot += 1;
            std::fs::remove_dir_all(&dir).unwrap();
            image
        } else {
            dir.clone()
        };
        drop(y);
        let checker_boot = format!("boot{boot}");
        let args = ["--mode", mode, "-b", path_str(&data), "-f", "0"];
        let mut v = Yaad::launch_own_may_exit(&args, |c| {
            c.env("YAAD_BOOT_ID", &checker_boot);
        });
        if let Some(st) = v.child.try_wait().unwrap() {
            panic!(
                "{what}: restart on the image failed ({st}): {:?}",
                v.logs_so_far()
            );
        }
        verify(v.port, &mut tubes, &max_acked, &what);
        // The next round starts in this boot, after a clean stop or a kill -9.
        if rng.below(2) == 0 {
            v.signal("-TERM");
            let st = exit_within(&mut v, common::HANG_GUARD).expect("exit after SIGTERM");
            assert!(st.success(), "{what}: SIGTERM after the restart: {st}");
        }
        assert_eq!(panicked(&v), None, "{what}: the restarted yaad panicked");
        drop(v);
        dir = data;
    }
    acked += tubes.iter().map(|t| t.acked).sum::<u64>();
    kept += tubes.iter().map(|t| t.puts_in_flight_kept).sum::<u64>();
    eprintln!(
        "{mode}: {fired} power cuts checked ({early} before any reply of their round), {missed} \
         rounds without a cut (kill -9), {acked} acknowledged changes, {kept} unanswered puts \
         kept, {:.1} s, seed {seed:#x}",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn mapped_power_cut_keeps_every_acknowledged_change() {
    power_cuts("mapped", "1", 0x5eed_7001);
}

#[test]
fn lazy_power_cut_keeps_every_acknowledged_change() {
    power_cuts("lazy", "1", 0x5eed_7002);
}

/// Syncs in flight at once (`--sync-threads`): batches complete out of order, are published
/// in order; cuts land between them.
#[test]
fn overlapping_syncs_power_cut_keeps_every_acknowledged_change() {
    power_cuts("mapped", "3", 0x5eed_7003);
}

/// Whether the restarted server holds exactly `tubes` (every command answered); returns the
/// model as found.
fn check_whole(c: &mut Client, tubes: &[Tube]) -> Result<Vec<Tube>, String> {
    let mut out = vec![];
    for t in tubes {
        let mut t = t.clone();
        assert!(
            t.unsure.is_empty() && t.unsure_put.is_none(),
            "all answered"
        );
        for (id, job) in std::mem::take(&mut t.jobs) {
            let want = job.restarted();
            let seen = look(c, id);
            fits(&seen, &Some(want.clone()), &t.name).map_err(|e| {
                format!(
                    "{}: job {id}: {e}\n  model {want:?}\n  server {seen:?}",
                    t.name
                )
            })?;
            t.jobs
                .insert(id, adopt(seen.as_ref().expect("fits"), &want));
        }
        gone_and_counted(c, &t).map_err(|e| format!("{}: {e}", t.name))?;
        names_resolve(c, &t).map_err(|e| format!("{}: {e}", t.name))?;
        out.push(t);
    }
    Ok(out)
}

/// Mem mode with `-b`: jobs reach the data dir only in a snapshot flush (SIGUSR1, SIGTERM),
/// all or nothing. Each round restores the last snapshot (`-r`), loads it (every command
/// answered), sends SIGUSR1 and cuts the power at a random sync event (often inside the
/// flush, also inside the start-up restore); yaad started with `-r` on the image must hold
/// exactly the previous snapshot or exactly the new one, and the new one if the log said the
/// flush was done.
fn mem_flush_cuts(seed: u64) {
    let seed = env_u64("YAAD_POWERLOSS_SEED").unwrap_or(seed);
    let cuts = env_u64("YAAD_POWERLOSS_CUTS").unwrap_or(12);
    // A flush syncs each spoke's staged file, the id index, the commit record and the dir.
    let mut max_event = 150;
    let root = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let mut dir = root.path().join("fresh");
    std::fs::create_dir(&dir).unwrap();
    let mut tubes: Vec<Tube> = (0..WORKERS).map(Tube::new).collect();
    let max_acked = Arc::new(AtomicU64::new(0));
    let (mut fired, mut missed, mut round, mut boot) = (0, 0, 0, 0);
    let mut in_a_row = 0;
    let (mut kept_new, mut kept_old) = (0, 0);
    let started = Instant::now();
    while fired < cuts {
        round += 1;
        let event = 1 + rng.below(max_event);
        let image = root.path().join(format!("image{round}"));
        let args = ["--mode", "mem", "-b", path_str(&dir), "-r"];
        let (mut y, image, plan) = start_cut(&args, event, rng.next(), &image, boot);
        let what = format!("mem round {round} (seed {seed:#x}, YAAD_POWERCUT={plan})");
        let (old, old_max) = (tubes.clone(), max_acked.load(Ordering::SeqCst));
        let mut flushed = false;
        if y.child.try_wait().unwrap().is_none() {
            let (port, pid) = (y.port, y.child.id().to_string());
            let workers: Vec<_> = std::mem::take(&mut tubes)
                .into_iter()
                .map(|mut t| {
                    let mut r = Rng(rng.next() | 1);
                    let commands = 40 + r.below(80);
                    let (max, pid) = (max_acked.clone(), pid.clone());
                    std::thread::spawn(move || {
                        let mut c = Client::try_connect(port).expect("no cut before the flush");
                        let answer = c.try_stat("stats", "pid").unwrap();
                        assert_eq!(answer, Some(pid), "our yaad");
                        load(&mut c, &mut t, &mut r, &max, commands).expect("every reply");
                        t
                    })
                })
                .collect();
            for w in workers {
                tubes.push(
                    w.join()
                        .unwrap_or_else(|_| panic!("{what}: a client failed")),
                );
            }
            y.signal("-USR1");
            let give_up = Instant::now() + common::HANG_GUARD;
            while y.child.try_wait().unwrap().is_none() {
                let done = |l: &String| l.contains("SIGUSR1: drained and flushed");
                if !flushed && y.logs_so_far().iter().any(done) {
                    // Not cut yet: the SIGTERM flush may be.
                    flushed = true;
                    y.signal("-TERM");
                }
                assert!(Instant::now() < give_up, "{what}: yaad did not exit");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let status = y.child.try_wait().unwrap().expect("exited");
        assert_eq!(panicked(&y), None, "{what}: yaad panicked");
        let cut = status.signal() == Some(9);
        let data = if cut {
            assert!(image.is_dir(), "{what}: killed without a power-cut image");
            fired += 1;
            in_a_row = 0;
            progress("mem", fired, started);
            boot += 1;
            std::fs::remove_dir_all(&dir).unwrap();
            image
        } else {
            assert!(status.success(), "{what}: {status}");
            missed += 1;
            max_event = (event * 3 / 4).max(4);
            in_a_row += 1;
            assert!(
                in_a_row < MISSES,
                "{what}: no cut in {MISSES} rounds: is the hook wired?"
            );
            dir.clone()
        };
        drop(y);
        let checker_boot = format!("boot{boot}");
        let args = ["--mode", "mem", "-b", path_str(&data), "-r"];
        let mut v = Yaad::launch_own_may_exit(&args, |c| {
            c.env("YAAD_BOOT_ID", &checker_boot);
        });
        if let Some(st) = v.child.try_wait().unwrap() {
            panic!(
                "{what}: restore of the image failed ({st}): {:?}",
                v.logs_so_far()
            );
        }
        let mut c = v.connect();
        match check_whole(&mut c, &tubes) {
            Ok(found) => {
                tubes = found;
                kept_new += usize::from(cut);
            }
            Err(new) if !flushed => match check_whole(&mut c, &old) {
                Ok(found) => {
                    // Ids issued since the previous snapshot are unknown to it and are
                    // issued again (as by beanstalkd without a binlog).
                    tubes = found;
                    max_acked.store(old_max, Ordering::SeqCst);
                    kept_old += usize::from(cut);
                }
                Err(old) => {
                    panic!("{what}: neither the new snapshot ({new}) nor the previous one ({old})")
                }
            },
            Err(new) => panic!("{what}: the flush was done, its snapshot is not there: {new}"),
        }
        probe(&mut c, &max_acked, &what);
        drop(c);
        // The next round restores the snapshot this stop writes (the probe's id included).
        v.signal("-TERM");
        let st = exit_within(&mut v, common::HANG_GUARD).expect("exit after SIGTERM");
        assert!(st.success(), "{what}: SIGTERM after the restore: {st}");
        assert_eq!(panicked(&v), None, "{what}: the restored yaad panicked");
        drop(v);
        dir = data;
    }
    eprintln!(
        "mem: {fired} power cuts checked ({kept_new} kept the new snapshot, {kept_old} the \
         previous one), {missed} rounds without a cut, {:.1} s, seed {seed:#x}",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn mem_power_cut_during_a_flush_keeps_one_whole_snapshot() {
    mem_flush_cuts(0x5eed_7003);
}

#[test]
fn a_bad_powercut_value_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::yaad_bin()
        .args(["-p", "0", "-b", path_str(dir.path())])
        .env("YAAD_POWERCUT", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("YAAD_POWERCUT=soon: want EVENT:SEED:DIR"),
        "{err}"
    );
}
