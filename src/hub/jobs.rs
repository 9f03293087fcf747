//! The jobs' commands: put, reserve, delete, release, bury, touch, peek, kick, and the
//! resident jobs' bookkeeping (their phase's sets, their records through the store).

use std::sync::Arc;

use bytes::Bytes;

use super::job::{Counters, FarInfo, Job, Phase};
use super::{
    ConnId, DEADLINE_SOON_MARGIN, DEFAULT_TUBE, Hub, HubError, JobView, Micros, ReleaseOutcome,
    ReserveOutcome, SECOND, URGENT_PRIORITY, Wait, bump, secs_floor,
};
use crate::segment::{JobState, NewRecord, RecordMeta, Segment, SpokeId, StateSlot};
use crate::store::{DelayedJob, FarJob};

impl<S: Segment> Hub<S> {
    /// Puts a job into the tube `c` uses; returns its id. Persisted before returning.
    pub fn put(
        &mut self,
        c: ConnId,
        pri: u32,
        delay_s: u32,
        ttr_s: u32,
        body: &[u8],
        now: Micros,
    ) -> Result<u64, HubError> {
        self.advance(now);
        if self.draining {
            return Err(HubError::Draining);
        }
        let tube = match self.conns.get(&c) {
            Some(conn) => conn.using.clone(),
            None => self.intern(DEFAULT_TUBE),
        };
        let id = self.put_record(c, tube, &[], pri, delay_s, ttr_s, body)?;
        self.settle();
        Ok(id)
    }

    /// Writes a new job's record (named `name` unless empty) into `tube` and makes it resident
    /// if its spoke is loaded; returns its id. The caller settles.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_record(
        &mut self,
        c: ConnId,
        tube: Arc<str>,
        name: &[u8],
        pri: u32,
        delay_s: u32,
        ttr_s: u32,
        body: &[u8],
    ) -> Result<u64, HubError> {
        if let Some(conn) = self.conns.get_mut(&c) {
            conn.producer = true;
        }
        let ttr_s = ttr_s.max(1);
        let now = self.now;
        let trigger_at = now.saturating_add(u64::from(delay_s) * SECOND);
        // Ids are never reused, even when the append fails.
        let id = self.store.new_id()?;
        let rec = NewRecord {
            id,
            trigger_at,
            created_at: now,
            ttr: ttr_s,
            tube: tube.as_bytes(),
            name,
            body,
            slot: StateSlot {
                version: 1,
                state: JobState::Waiting,
                priority: pri,
                counters: Counters::default(),
            },
        };
        let placed = self.store.put(&rec)?;
        self.total_jobs += 1;
        if let Some(t) = self.tubes.get_mut(&tube) {
            t.total_jobs += 1;
        }
        if placed.resident {
            self.insert_job(
                id,
                Job {
                    tube,
                    name: (!name.is_empty()).then(|| Box::from(name)),
                    pri,
                    ttr_s,
                    delay_s,
                    created_at: now,
                    trigger_at,
                    spoke: placed.loc.spoke,
                    offset: placed.loc.offset,
                    version: 1,
                    phase: Phase::Delayed,
                    counters: Counters::default(),
                    change: 0,
                },
            );
            let phase = if trigger_at <= now {
                Phase::Ready
            } else {
                Phase::Delayed
            };
            self.link(id, phase);
        }
        Ok(id)
    }

    /// Reserves the best ready job across the tubes `c` watches (unpaused ones), or says why not.
    /// `timeout`: None blocks forever, Some(t) is an absolute deadline (t <= now answers now).
    pub fn reserve(&mut self, c: ConnId, timeout: Option<Micros>, now: Micros) -> ReserveOutcome {
        self.advance(now);
        self.cancel_wait(c);
        let Some(conn) = self.conns.get_mut(&c) else {
            return ReserveOutcome::TimedOut;
        };
        conn.worker = true;
        while let Some(id) = self.best_ready_for(c) {
            if let Some(view) = self.deliver(c, id) {
                return ReserveOutcome::Reserved(view);
            }
        }
        let soon_at = self
            .soonest_ttr(c)
            .map(|d| d.saturating_sub(DEADLINE_SOON_MARGIN));
        if soon_at.is_some_and(|s| s <= self.now) {
            return ReserveOutcome::DeadlineSoon;
        }
        if timeout.is_some_and(|t| t <= self.now) {
            return ReserveOutcome::TimedOut;
        }
        let key = match (timeout, soon_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let wait = Wait { seq, soon_at, key };
        let watching = match self.conns.get_mut(&c) {
            Some(conn) => {
                if conn.wait.replace(wait).is_none() {
                    self.waiting += 1;
                }
                conn.watching.clone()
            }
            None => Vec::new(),
        };
        for w in &watching {
            if let Some(t) = self.tubes.get_mut(w) {
                t.waiters.insert((seq, c));
            }
        }
        if let Some(k) = key {
            self.wait_deadlines.insert((k, c));
            self.note_deadline(k);
        }
        ReserveOutcome::Wait
    }

    /// Reserves job `id` whatever tube it is in, if it is ready, delayed or buried.
    pub fn reserve_job(&mut self, c: ConnId, id: u64, now: Micros) -> Result<JobView, HubError> {
        self.advance(now);
        if !self.conns.contains_key(&c) {
            return Err(HubError::NotFound);
        }
        if !self.jobs.contains_key(&id) {
            let far = self.find_far(id)?.ok_or(HubError::NotFound)?;
            self.kick_far(far, false)?;
        }
        let job = self.jobs.get(&id).ok_or(HubError::NotFound)?;
        match job.phase {
            Phase::Reserved { .. } => return Err(HubError::NotFound),
            Phase::Ready => {}
            Phase::Delayed | Phase::Buried { .. } => {
                let pri = job.pri;
                self.persist(id, JobState::Ready, pri, |_| {})?;
                self.unlink(id);
                self.link(id, Phase::Ready);
            }
        }
        if let Some(conn) = self.conns.get_mut(&c) {
            conn.worker = true;
        }
        let view = self.deliver(c, id).ok_or(HubError::NotFound);
        self.settle();
        view
    }

    /// Deletes a job in any state; a reserved one only by its holder.
    pub fn delete(&mut self, c: ConnId, id: u64, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        if let Some(job) = self.jobs.get(&id)
            && let Phase::Reserved { conn, .. } = job.phase
            && conn != c
        {
            return Err(HubError::NotFound);
        }
        let tube = self.delete_live(id)?;
        if let Some(t) = self.tubes.get_mut(&tube) {
            t.cmd_delete += 1;
        }
        self.drop_if_idle(&tube);
        self.settle();
        Ok(())
    }

    /// Deletes live job `id` (resident or far) and unindexes its name; returns its tube.
    pub(super) fn delete_live(&mut self, id: u64) -> Result<Arc<str>, HubError> {
        if let Some(job) = self.jobs.get(&id) {
            let pri = job.pri;
            self.persist(id, JobState::Deleted, pri, |_| {})?;
            self.unlink(id);
            // Any index entry left is harmless: lookups check the record it points at.
            let job = self
                .remove_job(id)
                .expect("a job persisted above is resident");
            if let Some(name) = &job.name {
                self.name_remove(job.tube.as_bytes(), name, id);
            }
            Ok(job.tube)
        } else {
            let far = self.find_far(id)?.ok_or(HubError::NotFound)?;
            self.store.delete_far(&far)?;
            self.far_info.remove(&id);
            if !far.meta.name.is_empty() {
                self.name_remove(&far.meta.tube, &far.meta.name, id);
            }
            Ok(self.intern(&String::from_utf8_lossy(&far.meta.tube)))
        }
    }

    /// Releases a job reserved by `c` with a new priority, after `delay_s` seconds.
    pub fn release(
        &mut self,
        c: ConnId,
        id: u64,
        pri: u32,
        delay_s: u32,
        now: Micros,
    ) -> Result<ReleaseOutcome, HubError> {
        self.advance(now);
        let job = self.reserved_by(c, id)?;
        if delay_s == 0 {
            self.persist(id, JobState::Ready, pri, |c| bump(&mut c.releases))?;
            self.unlink(id);
            if let Some(job) = self.jobs.get_mut(&id) {
                job.pri = pri;
                job.delay_s = 0;
            }
            self.link(id, Phase::Ready);
            self.settle();
            return Ok(ReleaseOutcome::Released);
        }
        // A delayed release moves the job: a new record in the target spoke, the old one Moved.
        let trigger_at = self.now.saturating_add(u64::from(delay_s) * SECOND);
        let old = self.store.read(job.loc())?;
        let version = job.version.saturating_add(1);
        let mut counters = job.counters;
        bump(&mut counters.releases);
        let rec = NewRecord {
            id,
            trigger_at,
            created_at: job.created_at,
            ttr: job.ttr_s,
            tube: job.tube.as_bytes(),
            name: &old.name,
            body: &old.body,
            slot: StateSlot {
                version,
                state: JobState::Waiting,
                priority: pri,
                counters,
            },
        };
        let moved = StateSlot {
            version,
            state: JobState::Moved,
            priority: job.pri,
            counters: job.counters,
        };
        let placed = match self.store.relocate(job.loc(), &rec, moved) {
            Ok(p) => p,
            Err(e) => {
                // The job stays where it was. `version` may be on disk (a new record undone):
                // its next change goes above it.
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.version = version;
                }
                return match HubError::from(e) {
                    HubError::OutOfMemory => self.bury_instead_of_release(id, pri),
                    other => Err(other),
                };
            }
        };
        self.unlink(id);
        if !placed.resident {
            // Far: the store keeps it, counted in its tube.
            self.remove_job(id);
            self.far_info.insert(id, FarInfo { delay_s });
            self.settle();
            return Ok(ReleaseOutcome::Released);
        }
        self.store.resident_gone(job.spoke);
        self.store.resident_added(placed.loc.spoke);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.pri = pri;
            j.delay_s = delay_s;
            j.trigger_at = trigger_at;
            j.spoke = placed.loc.spoke;
            j.offset = placed.loc.offset;
            j.version = version;
            j.counters = counters;
        }
        self.link(id, Phase::Delayed);
        self.settle();
        Ok(ReleaseOutcome::Released)
    }

    /// A delayed release that found no room for the job's new record: the job is buried where
    /// it is instead (beanstalkd answers `BURIED` when it is out of memory).
    fn bury_instead_of_release(&mut self, id: u64, pri: u32) -> Result<ReleaseOutcome, HubError> {
        self.bury_resident(id, pri, |c| {
            bump(&mut c.releases);
            bump(&mut c.buries);
        })?;
        Ok(ReleaseOutcome::Buried)
    }

    /// Buries a job reserved by `c` with a new priority.
    pub fn bury(&mut self, c: ConnId, id: u64, pri: u32, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        self.reserved_by(c, id)?;
        self.bury_resident(id, pri, |c| bump(&mut c.buries))
    }

    /// Persists resident job `id` as buried with priority `pri` (counted by `count`) and
    /// moves it to its tube's buried list.
    fn bury_resident(
        &mut self,
        id: u64,
        pri: u32,
        count: impl FnOnce(&mut Counters),
    ) -> Result<(), HubError> {
        self.persist(id, JobState::Buried, pri, count)?;
        self.unlink(id);
        let seq = self.take_seq();
        if let Some(job) = self.jobs.get_mut(&id) {
            job.pri = pri;
        }
        self.link(id, Phase::Buried { seq });
        self.settle();
        Ok(())
    }

    /// Restarts the TTR of a job reserved by `c`.
    pub fn touch(&mut self, c: ConnId, id: u64, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        let job = self.reserved_by(c, id)?;
        self.unlink(id);
        let deadline = self.now.saturating_add(u64::from(job.ttr_s) * SECOND);
        self.link(id, Phase::Reserved { conn: c, deadline });
        self.settle();
        Ok(())
    }

    /// The job `id` in any state.
    pub fn peek(&mut self, id: u64) -> Option<JobView> {
        if self.jobs.contains_key(&id) {
            return self.view(id);
        }
        let far = self.find_far(id).ok()??;
        let rec = self.store.read_far(&far).ok()?;
        Some(JobView {
            id,
            body: Bytes::from(rec.body),
        })
    }

    /// The next ready job of the tube `c` uses (paused or not).
    pub fn peek_ready(&mut self, c: ConnId) -> Option<JobView> {
        let tube = self.conns.get(&c)?.using.clone();
        let &(_, id) = self.tubes.get(&tube)?.ready.first()?;
        self.view(id)
    }

    /// The delayed job of the tube `c` uses with the earliest trigger time.
    pub fn peek_delayed(&mut self, c: ConnId) -> Option<JobView> {
        let tube = self.conns.get(&c)?.using.clone();
        match self.delayed_of_tube(&tube, 1).ok()?.into_iter().next()? {
            DelayedJob::Near(id) => self.view(id),
            DelayedJob::Far(far) => {
                let rec = self.store.read(far.loc()).ok()?;
                Some(JobView {
                    id: far.meta.id,
                    body: Bytes::from(rec.body),
                })
            }
        }
    }

    /// The first-buried job of the tube `c` uses.
    pub fn peek_buried(&mut self, c: ConnId) -> Option<JobView> {
        let tube = self.conns.get(&c)?.using.clone();
        let &(_, id) = self.tubes.get(&tube)?.buried.first()?;
        self.view(id)
    }

    /// Kicks up to `bound` jobs of the tube `c` uses: buried ones if it has any, else delayed
    /// ones (earliest trigger first). Returns how many were kicked.
    pub fn kick(&mut self, c: ConnId, bound: u32, now: Micros) -> u64 {
        self.advance(now);
        let Some(tube) = self.conns.get(&c).map(|conn| conn.using.clone()) else {
            return 0;
        };
        let Some(t) = self.tubes.get(&tube) else {
            return 0;
        };
        let bound = u64::from(bound);
        let mut kicked = 0;
        if !t.buried.is_empty() {
            let ids: Vec<u64> = t
                .buried
                .iter()
                .take(bound as usize)
                .map(|&(_, id)| id)
                .collect();
            for id in ids {
                if self.kick_resident(id).is_err() {
                    break;
                }
                kicked += 1;
            }
        } else if let Ok(jobs) = self.delayed_of_tube(&tube, bound) {
            for d in jobs {
                let done = match d {
                    DelayedJob::Near(id) => self.kick_resident(id),
                    DelayedJob::Far(far) => self.kick_far(far, true),
                };
                if done.is_err() {
                    break;
                }
                kicked += 1;
            }
        }
        self.settle();
        kicked
    }

    /// Kicks job `id` if it is buried or delayed.
    pub fn kick_job(&mut self, id: u64, now: Micros) -> Result<(), HubError> {
        self.advance(now);
        if self.jobs.contains_key(&id) {
            self.kick_resident(id)?;
        } else {
            let far = self.find_far(id)?.ok_or(HubError::NotFound)?;
            self.kick_far(far, true)?;
        }
        self.settle();
        Ok(())
    }

    // ----- resident jobs ---------------------------------------------------------------------

    /// Persists a new state slot for resident job `id` (version + 1) with its counters after
    /// `count` (the change's own counter; reserves and timeouts since the last write ride
    /// along), and keeps those counters once the write succeeded.
    fn persist(
        &mut self,
        id: u64,
        state: JobState,
        pri: u32,
        count: impl FnOnce(&mut Counters),
    ) -> Result<(), HubError> {
        let job = self.jobs.get(&id).ok_or(HubError::NotFound)?;
        let mut counters = job.counters;
        count(&mut counters);
        let slot = StateSlot {
            version: job.version.saturating_add(1),
            state,
            priority: pri,
            counters,
        };
        let loc = job.loc();
        if state == JobState::Deleted {
            self.store.delete(loc, slot)?;
        } else {
            self.store.update(loc, slot)?;
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.version = slot.version;
            job.counters = counters;
        }
        Ok(())
    }

    /// The job `id` reserved by `c`, or NotFound.
    fn reserved_by(&self, c: ConnId, id: u64) -> Result<Job, HubError> {
        match self.jobs.get(&id) {
            Some(job) if matches!(job.phase, Phase::Reserved { conn, .. } if conn == c) => {
                Ok(job.clone())
            }
            _ => Err(HubError::NotFound),
        }
    }

    /// Removes resident job `id` from the structures of its phase.
    pub(super) fn unlink(&mut self, id: u64) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let tube = self.tubes.get_mut(&job.tube);
        match job.phase {
            Phase::Delayed => {
                self.delayed.remove(&(job.trigger_at, id));
                if let Some(t) = tube {
                    t.delayed.remove(&(job.trigger_at, id));
                }
            }
            Phase::Ready => {
                if let Some(t) = tube
                    && t.ready.remove(&(job.pri, id))
                    && job.pri < URGENT_PRIORITY
                {
                    t.urgent = t.urgent.saturating_sub(1);
                }
            }
            Phase::Reserved { conn, deadline } => {
                self.ttr.remove(&(deadline, id));
                if let Some(t) = tube {
                    t.reserved = t.reserved.saturating_sub(1);
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.reserved.remove(&id);
                }
            }
            Phase::Buried { seq } => {
                if let Some(t) = tube {
                    t.buried.remove(&(seq, id));
                }
            }
        }
    }

    /// Puts resident job `id` into the structures of `phase` (after [`Hub::unlink`] or creation).
    pub(super) fn link(&mut self, id: u64, phase: Phase) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.phase = phase;
        job.change = job.change.max(self.change_in_call);
        let tube = self.tubes.get_mut(&job.tube);
        match phase {
            Phase::Delayed => {
                self.delayed.insert((job.trigger_at, id));
                self.added_deadline = self.added_deadline.min(job.trigger_at);
                if let Some(t) = tube {
                    t.delayed.insert((job.trigger_at, id));
                }
            }
            Phase::Ready => {
                if let Some(t) = tube {
                    t.ready.insert((job.pri, id));
                    if job.pri < URGENT_PRIORITY {
                        t.urgent += 1;
                    }
                    self.tubes_to_serve.push(t.name.clone());
                }
            }
            Phase::Reserved { conn, deadline } => {
                self.ttr.insert((deadline, id));
                self.added_deadline = self.added_deadline.min(deadline);
                if let Some(t) = tube {
                    t.reserved += 1;
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.reserved.insert(id);
                }
            }
            Phase::Buried { seq } => {
                if let Some(t) = tube {
                    t.buried.insert((seq, id));
                }
            }
        }
    }

    /// Reads resident job `id`'s body. A record that fails verification drops the job.
    fn view(&mut self, id: u64) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        let loc = job.loc();
        match self.store.read(loc) {
            Ok(rec) if rec.id == id => Some(JobView {
                id,
                body: Bytes::from(rec.body),
            }),
            other => {
                let why = match other {
                    Ok(rec) => format!("record holds job {}", rec.id),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(job = id, spoke = ?loc.spoke, loc.offset, "dropping unreadable job: {why}");
                self.drop_corrupt(id);
                None
            }
        }
    }

    /// Forgets a resident job whose record cannot be read back (counted, not persisted).
    fn drop_corrupt(&mut self, id: u64) {
        self.unlink(id);
        if let Some(job) = self.remove_job(id) {
            if let Some(name) = &job.name {
                self.name_remove(job.tube.as_bytes(), name, id);
            }
            self.store.dropped_unreadable(job.loc());
            self.drop_if_idle(&job.tube);
        }
    }

    /// Reserves ready job `id` for `c`; None if its record is unreadable (the job is dropped).
    pub(super) fn deliver(&mut self, c: ConnId, id: u64) -> Option<JobView> {
        let view = self.view(id)?;
        self.unlink(id);
        let job = self.jobs.get_mut(&id)?;
        bump(&mut job.counters.reserves);
        let deadline = self.now.saturating_add(u64::from(job.ttr_s) * SECOND);
        self.link(id, Phase::Reserved { conn: c, deadline });
        Some(view)
    }

    /// The best ready job across the unpaused tubes `c` watches: lowest (priority, id).
    pub(super) fn best_ready_for(&self, c: ConnId) -> Option<u64> {
        let conn = self.conns.get(&c)?;
        conn.watching
            .iter()
            .filter_map(|w| self.tubes.get(w))
            .filter(|t| !t.is_paused())
            .filter_map(|t| t.ready.first().copied())
            .min()
            .map(|(_, id)| id)
    }

    /// The earliest TTR deadline among the jobs `c` holds.
    fn soonest_ttr(&self, c: ConnId) -> Option<Micros> {
        let conn = self.conns.get(&c)?;
        conn.reserved
            .iter()
            .filter_map(|id| match self.jobs.get(id)?.phase {
                Phase::Reserved { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Kicks a resident buried or delayed job to ready (persisted as Ready).
    fn kick_resident(&mut self, id: u64) -> Result<(), HubError> {
        let job = self.jobs.get(&id).ok_or(HubError::NotFound)?;
        if !matches!(job.phase, Phase::Delayed | Phase::Buried { .. }) {
            return Err(HubError::NotFound);
        }
        let pri = job.pri;
        self.persist(id, JobState::Ready, pri, |c| bump(&mut c.kicks))?;
        self.unlink(id);
        self.link(id, Phase::Ready);
        Ok(())
    }

    /// Makes `job` resident, counted in its spoke.
    pub(super) fn insert_job(&mut self, id: u64, job: Job) {
        self.store.resident_added(job.spoke);
        if let Some(old) = self.jobs.insert(id, job) {
            self.store.resident_gone(old.spoke);
        }
    }

    /// Forgets resident job `id`.
    pub(super) fn remove_job(&mut self, id: u64) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        self.store.resident_gone(job.spoke);
        Some(job)
    }

    /// Makes a record read from the store resident if it is the live record of a job not yet
    /// resident.
    pub(super) fn make_resident(&mut self, spoke: SpokeId, m: RecordMeta) {
        let phase = match m.slot.state {
            JobState::Deleted | JobState::Moved | JobState::Freed => return,
            JobState::Waiting => Phase::Delayed,
            JobState::Ready => Phase::Ready,
            // Recovered buried jobs keep id order, before any buried from now on.
            JobState::Buried => Phase::Buried { seq: 0 },
        };
        if self.jobs.contains_key(&m.id) {
            return;
        }
        let tube = self.intern(&String::from_utf8_lossy(&m.tube));
        if !m.name.is_empty() {
            self.name_insert(&m.tube, &m.name, m.id);
        }
        self.insert_resident(spoke, &m, tube, phase);
    }

    /// Puts a job read from its record into RAM in `phase`, with the version and counters of
    /// its slot and the delay kept for it while it was far (`far_info`).
    fn insert_resident(&mut self, spoke: SpokeId, m: &RecordMeta, tube: Arc<str>, phase: Phase) {
        let info = self.far_info.remove(&m.id).unwrap_or(FarInfo {
            delay_s: u32::try_from(secs_floor(m.trigger_at.saturating_sub(m.created_at)))
                .unwrap_or(u32::MAX),
        });
        self.insert_job(
            m.id,
            Job {
                tube,
                name: (!m.name.is_empty()).then(|| m.name.clone().into_boxed_slice()),
                pri: m.slot.priority,
                ttr_s: m.ttr.max(1),
                delay_s: info.delay_s,
                created_at: m.created_at,
                trigger_at: m.trigger_at,
                spoke,
                offset: m.offset,
                version: m.slot.version,
                phase,
                counters: m.slot.counters,
                // The record may come from a change not known to be durable yet.
                change: self.latest_change,
            },
        );
        self.link(m.id, phase);
    }

    /// Makes a far delayed job ready: persisted as Ready in its record, and resident from now
    /// on. `counted`: a kick (not a reserve-job), counted in the job's kicks.
    fn kick_far(&mut self, far: FarJob, counted: bool) -> Result<(), HubError> {
        let mut m = far.meta.clone();
        if counted {
            m.slot.counters.kicks = m.slot.counters.kicks.saturating_add(1);
        }
        m.slot.version = m.slot.version.saturating_add(1);
        m.slot.state = JobState::Ready;
        self.store.take_far(&far, m.slot)?;
        let tube = self.intern(&String::from_utf8_lossy(&m.tube));
        self.insert_resident(far.spoke, &m, tube, Phase::Ready);
        Ok(())
    }

    /// Job `id` in a far spoke, if it is not resident.
    pub(super) fn find_far(&mut self, id: u64) -> Result<Option<FarJob>, HubError> {
        let jobs = &self.jobs;
        Ok(self.store.find_far(id, |i| jobs.contains_key(&i))?)
    }

    /// Up to `n` delayed jobs of `tube`, earliest (trigger time, id) first, near and far.
    fn delayed_of_tube(&mut self, tube: &Arc<str>, n: u64) -> Result<Vec<DelayedJob>, HubError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let near: Vec<(Micros, u64)> = match self.tubes.get(tube) {
            Some(t) => t.delayed.iter().take(n).copied().collect(),
            None => return Ok(Vec::new()),
        };
        let jobs = &self.jobs;
        Ok(self
            .store
            .delayed_of_tube(tube, n, near, |id| jobs.contains_key(&id))?)
    }
}
