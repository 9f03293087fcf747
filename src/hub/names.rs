//! Named jobs: the name index and the commands that address a job by its name in a tube.
//!
//! A name is unique among the live jobs of a tube (ready, delayed, reserved, buried); once its
//! job is deleted the name is free again. The index maps a 64-bit key of (tube, name)
//! ([`name_key`]) to the job's id, not to a location, so moves (releases, splits, compaction,
//! spoke loads) never touch it; only a put and a delete do. A hit is checked against the job's
//! own tube and name: in RAM for a resident job, from its record for a far one (a disk read in
//! lazy mode). Names whose key another live name holds (a hash collision) go to `overflow`,
//! keyed by their bytes. RAM per far named job: one `u64 → u64` entry (16 bytes and a control
//! byte at a load factor of 7/16 to 7/8).

use std::collections::HashMap;
use std::sync::Arc;

use super::idmap::{IdMap, id_map};
use super::job::{FarInfo, Job, Phase};
use super::{ConnId, DEFAULT_TUBE, Hub, HubError, Micros, SECOND};
use crate::segment::format::name_key;
use crate::segment::{JobState, NewRecord, Segment, StateSlot};

/// A (tube, name) pair by its bytes.
type NameBytes = (Box<[u8]>, Box<[u8]>);

/// The name index (see the module documentation).
#[derive(Default)]
pub(super) struct Names {
    by_key: IdMap<u64>,
    overflow: HashMap<NameBytes, u64>,
    /// Live jobs found holding a name a higher id holds too: their delete was lost (see
    /// [`Hub::delete_lost_duplicates`]).
    lost_deletes: Vec<u64>,
}

impl Names {
    pub(super) fn new() -> Self {
        Names {
            by_key: id_map(),
            overflow: HashMap::new(),
            lost_deletes: Vec::new(),
        }
    }

    /// Named jobs indexed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len() + self.overflow.len()
    }
}

/// What a put with a name did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutNamed {
    /// A new job (`INSERTED <id>`).
    Inserted(u64),
    /// A live job of the tube has the name; nothing changed (`EXISTS <id>`).
    Exists(u64),
    /// The job holding the name got the new body, priority, delay and TTR (`REPLACED <id>`).
    Replaced(u64),
    /// The job holding the name is reserved: nothing changed (`BUSY <id>`).
    Busy(u64),
}

impl<S: Segment> Hub<S> {
    /// Puts a job named `name` into the tube `c` uses, unless a live job of that tube has the
    /// name: then `replace` false leaves it as it is, `replace` true gives it this body,
    /// priority, delay and TTR (same id, created time and counters; a reserved job is left
    /// alone). Persisted before returning.
    #[allow(clippy::too_many_arguments)]
    pub fn put_named(
        &mut self,
        c: ConnId,
        name: &[u8],
        replace: bool,
        pri: u32,
        delay_s: u32,
        ttr_s: u32,
        body: &[u8],
        now: Micros,
    ) -> Result<PutNamed, HubError> {
        self.advance(now);
        if self.draining {
            return Err(HubError::Draining);
        }
        let tube = self.used_tube_of(c);
        let Some(id) = self.job_named_in(&tube, name)? else {
            let id = self.put_in(c, &tube, name, pri, delay_s, ttr_s, body)?;
            return Ok(PutNamed::Inserted(id));
        };
        if !replace {
            return Ok(PutNamed::Exists(id));
        }
        if let Some(job) = self.jobs.get(&id)
            && matches!(job.phase, Phase::Reserved { .. })
        {
            return Ok(PutNamed::Busy(id));
        }
        self.replace(id, pri, delay_s, ttr_s, body)?;
        self.settle();
        Ok(PutNamed::Replaced(id))
    }

    /// The live job named `name` in the tube `c` uses.
    pub fn job_named(&mut self, c: ConnId, name: &[u8]) -> Result<Option<u64>, HubError> {
        let tube = self.used_tube_of(c);
        self.job_named_in(&tube, name)
    }

    /// Deletes the job named `name` in the tube `c` uses (a reserved one only by its holder).
    pub fn delete_named(&mut self, c: ConnId, name: &[u8], now: Micros) -> Result<(), HubError> {
        self.advance(now);
        let id = self.job_named(c, name)?.ok_or(HubError::NotFound)?;
        self.delete(c, id, now)
    }

    /// Kicks the job named `name` in the tube `c` uses if it is buried or delayed.
    pub fn kick_named(&mut self, c: ConnId, name: &[u8], now: Micros) -> Result<(), HubError> {
        self.advance(now);
        let id = self.job_named(c, name)?.ok_or(HubError::NotFound)?;
        self.kick_job(id, now)
    }

    /// Restarts the TTR of the job named `name` in the tube `c` uses, if `c` reserved it.
    pub fn touch_named(&mut self, c: ConnId, name: &[u8], now: Micros) -> Result<(), HubError> {
        self.advance(now);
        let id = self.job_named(c, name)?.ok_or(HubError::NotFound)?;
        self.touch(c, id, now)
    }

    /// The tube `c` uses (the default tube for an unknown connection).
    fn used_tube_of(&mut self, c: ConnId) -> Arc<str> {
        match self.conns.get(&c) {
            Some(conn) => conn.using.clone(),
            None => self.intern(DEFAULT_TUBE),
        }
    }

    /// The live job named `name` in `tube`.
    fn job_named_in(&mut self, tube: &str, name: &[u8]) -> Result<Option<u64>, HubError> {
        let key = name_key(tube.as_bytes(), name);
        if let Some(&id) = self.names.by_key.get(&key)
            && self.job_has_name(id, tube.as_bytes(), name)?
        {
            return Ok(Some(id));
        }
        if self.names.overflow.is_empty() {
            return Ok(None);
        }
        let k = (Box::from(tube.as_bytes()), Box::from(name));
        Ok(self.names.overflow.get(&k).copied())
    }

    /// Whether live job `id` is named `name` in `tube` (a far job's record is read).
    fn job_has_name(&mut self, id: u64, tube: &[u8], name: &[u8]) -> Result<bool, HubError> {
        if let Some(job) = self.jobs.get(&id) {
            return Ok(job.tube.as_bytes() == tube && job.name.as_deref() == Some(name));
        }
        Ok(self
            .find_far(id)?
            .is_some_and(|f| f.meta.tube == tube && f.meta.name == name))
    }

    /// Indexes live job `id` as `name` in `tube`. Idempotent. If another live job already
    /// holds the same name (recovery after a power loss that kept a put but lost the delete
    /// before it), the higher id holds it and the lower one is noted in `lost_deletes`.
    pub(super) fn name_insert(&mut self, tube: &[u8], name: &[u8], id: u64) {
        let key = name_key(tube, name);
        let other = match self.names.by_key.get(&key) {
            None => {
                self.names.by_key.insert(key, id);
                return;
            }
            Some(&other) if other == id => return,
            Some(&other) => other,
        };
        // A lookup failure counts as another name: the overflow map is always right.
        if self.job_has_name(other, tube, name).unwrap_or(false) {
            self.names.lost_deletes.push(id.min(other));
            if id > other {
                self.names.by_key.insert(key, id);
            }
            return;
        }
        let k = (Box::from(tube), Box::from(name));
        let slot = self.names.overflow.entry(k).or_insert(id);
        if *slot != id {
            self.names.lost_deletes.push(id.min(*slot));
            *slot = (*slot).max(id);
        }
    }

    /// After recovery: deletes the live jobs that shared a name with a higher id, and makes
    /// the deletes durable. A `put-named` inserts only while no live job of the tube holds the
    /// name, and `put-replace` keeps the id, so of two live jobs with one name the lower id
    /// was deleted before the higher one was put: a power loss kept the put but lost that
    /// delete. Returns how many were deleted.
    pub(super) fn delete_lost_duplicates(&mut self) -> Result<usize, HubError> {
        let mut lost = std::mem::take(&mut self.names.lost_deletes);
        lost.sort_unstable();
        lost.dedup();
        for &id in &lost {
            tracing::warn!(
                job = id,
                "a live job holds the name of a later job: a power loss lost its delete; \
                 deleted now"
            );
            let tube = self.delete_live(id)?;
            self.drop_if_idle(&tube);
        }
        if !lost.is_empty() {
            self.store.flush()?;
        }
        Ok(lost.len())
    }

    /// Forgets that job `id` holds `name` in `tube` (it was deleted).
    pub(super) fn name_remove(&mut self, tube: &[u8], name: &[u8], id: u64) {
        let key = name_key(tube, name);
        if self.names.by_key.get(&key) == Some(&id) {
            self.names.by_key.remove(&key);
            return;
        }
        if !self.names.overflow.is_empty() {
            let k = (Box::from(tube), Box::from(name));
            if self.names.overflow.get(&k) == Some(&id) {
                self.names.overflow.remove(&k);
            }
        }
    }

    /// Indexes far named jobs found by recovery: (key, id) pairs.
    pub(super) fn names_recovered(&mut self, far: Vec<(u64, u64)>) {
        // At its final size at once: grown by doubling, its freed tables would stay on the
        // heap (see `Named` in store::recovery).
        self.names.by_key.reserve(far.len());
        for (key, id) in far {
            if let std::collections::hash_map::Entry::Vacant(e) = self.names.by_key.entry(key) {
                e.insert(id);
                continue;
            }
            // A collision or a duplicate: decided from the record.
            if let Ok(Some(f)) = self.find_far(id) {
                let (tube, name) = (f.meta.tube.clone(), f.meta.name.clone());
                self.name_insert(&tube, &name, id);
            }
        }
    }

    /// A new named job in `tube` (the tube `c` uses).
    #[allow(clippy::too_many_arguments)]
    fn put_in(
        &mut self,
        c: ConnId,
        tube: &Arc<str>,
        name: &[u8],
        pri: u32,
        delay_s: u32,
        ttr_s: u32,
        body: &[u8],
    ) -> Result<u64, HubError> {
        let id = self.put_record(c, tube.clone(), name, pri, delay_s, ttr_s, body)?;
        self.name_insert(tube.as_bytes(), name, id);
        self.settle();
        Ok(id)
    }

    /// Gives live, unreserved job `id` a new record: this body, priority, TTR and a trigger
    /// time `delay_s` from now, its name, created time and counters kept. Written as a delayed
    /// release is (the new record one version up, the old one `Moved`), so a crash leaves
    /// one or the other.
    fn replace(
        &mut self,
        id: u64,
        pri: u32,
        delay_s: u32,
        ttr_s: u32,
        body: &[u8],
    ) -> Result<(), HubError> {
        let ttr_s = ttr_s.max(1);
        let trigger_at = self.now.saturating_add(u64::from(delay_s) * SECOND);
        let (old, far) = match self.jobs.get(&id) {
            Some(job) => (job.clone(), None),
            None => {
                let far = self.find_far(id)?.ok_or(HubError::NotFound)?;
                let m = &far.meta;
                let tube = self.intern(&String::from_utf8_lossy(&m.tube));
                let job = Job {
                    tube,
                    name: Some(m.name.clone().into_boxed_slice()),
                    pri: m.slot.priority,
                    ttr_s: m.ttr.max(1),
                    delay_s: 0,
                    created_at: m.created_at,
                    trigger_at: m.trigger_at,
                    spoke: far.spoke,
                    offset: m.offset,
                    version: m.slot.version,
                    phase: Phase::Delayed,
                    counters: m.slot.counters,
                    change: 0,
                };
                (job, Some(far))
            }
        };
        let version = old.version.saturating_add(1);
        let name = old.name.as_deref().unwrap_or_default();
        let rec = NewRecord {
            id,
            trigger_at,
            created_at: old.created_at,
            ttr: ttr_s,
            tube: old.tube.as_bytes(),
            name,
            body,
            slot: StateSlot {
                version,
                state: JobState::Waiting,
                priority: pri,
                counters: old.counters,
            },
        };
        let moved = StateSlot {
            version,
            state: JobState::Moved,
            priority: old.pri,
            counters: old.counters,
        };
        let placed = match &far {
            Some(f) => self.store.relocate_far(f, &rec, moved),
            None => self.store.relocate(old.loc(), &rec, moved),
        };
        let placed = match placed {
            Ok(p) => p,
            Err(e) => {
                // As a failed delayed release: `version` may be on disk (a new record undone).
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.version = version;
                }
                return Err(e.into());
            }
        };
        if far.is_none() {
            self.unlink(id);
            self.remove_job(id);
        }
        self.far_info.remove(&id);
        if !placed.resident {
            self.far_info.insert(id, FarInfo { delay_s });
            return Ok(());
        }
        let phase = if trigger_at <= self.now {
            Phase::Ready
        } else {
            Phase::Delayed
        };
        self.insert_job(
            id,
            Job {
                pri,
                ttr_s,
                delay_s,
                trigger_at,
                spoke: placed.loc.spoke,
                offset: placed.loc.offset,
                version,
                phase,
                change: 0,
                ..old
            },
        );
        self.link(id, phase);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{HubConfig, ReleaseOutcome, ReserveOutcome};
    use crate::segment::{LazySegment, MappedSegment, MemSegment};

    const T0: Micros = 1_700_000_000 * SECOND;
    /// An hour out: a far spoke.
    const FAR: u32 = 3_600;

    fn open<S: Segment>(dir: &std::path::Path, now: Micros) -> Hub<S> {
        let cfg = HubConfig {
            data_dir: dir.to_path_buf(),
            spoke_span: SECOND,
            restore: !S::FILE_BACKED,
        };
        Hub::open(cfg, now).unwrap()
    }

    fn body<S: Segment>(hub: &mut Hub<S>, id: u64) -> Vec<u8> {
        hub.peek(id).unwrap().body.to_vec()
    }

    /// Every case of a put with a name, near and far, and the by-name commands.
    fn puts_and_lookups<S: Segment>() {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = open::<S>(dir.path(), T0);
        let c = hub.connect();
        let put = |h: &mut Hub<S>, name: &str, replace, delay, b: &str| {
            h.put_named(c, name.as_bytes(), replace, 5, delay, 30, b.as_bytes(), T0)
                .unwrap()
        };
        let PutNamed::Inserted(near) = put(&mut hub, "near", false, 0, "a") else {
            panic!("not inserted")
        };
        let PutNamed::Inserted(far) = put(&mut hub, "far", false, FAR, "b") else {
            panic!("not inserted")
        };
        assert!(
            !hub.jobs.contains_key(&far),
            "a far named job is not resident"
        );
        assert_eq!(put(&mut hub, "near", false, 0, "x"), PutNamed::Exists(near));
        assert_eq!(put(&mut hub, "far", false, 0, "x"), PutNamed::Exists(far));
        assert_eq!(body(&mut hub, near), b"a");
        assert_eq!(body(&mut hub, far), b"b");
        // Another tube has its own names.
        hub.use_tube(c, "other");
        assert!(
            matches!(put(&mut hub, "near", false, 0, "o"), PutNamed::Inserted(id) if id != near)
        );
        hub.use_tube(c, "default");
        // Replace: near to far and far to near, same id, new body and schedule.
        assert_eq!(
            put(&mut hub, "near", true, FAR, "a2"),
            PutNamed::Replaced(near)
        );
        assert!(!hub.jobs.contains_key(&near));
        assert_eq!(put(&mut hub, "far", true, 0, "b2"), PutNamed::Replaced(far));
        assert_eq!(body(&mut hub, near), b"a2");
        assert_eq!(body(&mut hub, far), b"b2");
        let st = hub.stats_job(far, T0).unwrap();
        assert_eq!(
            (st.state, st.ttr, st.name.as_deref()),
            ("ready", 30, Some("far"))
        );
        assert_eq!(hub.stats_job(near, T0).unwrap().delay, u64::from(FAR));
        // A reserved job is not replaced.
        let ReserveOutcome::Reserved(v) = hub.reserve(c, Some(T0), T0) else {
            panic!("nothing ready")
        };
        assert_eq!(v.id, far);
        assert_eq!(put(&mut hub, "far", true, 0, "b3"), PutNamed::Busy(far));
        hub.touch_named(c, b"far", T0).unwrap();
        assert_eq!(hub.release(c, far, 1, 0, T0), Ok(ReleaseOutcome::Released));
        assert_eq!(hub.touch_named(c, b"far", T0), Err(HubError::NotFound));
        // Kick a far one by name, then delete both by name: the names are free again.
        hub.kick_named(c, b"near", T0).unwrap();
        assert_eq!(hub.stats_job(near, T0).unwrap().state, "ready");
        hub.delete_named(c, b"near", T0).unwrap();
        hub.delete(c, far, T0).unwrap();
        assert_eq!(hub.delete_named(c, b"near", T0), Err(HubError::NotFound));
        assert_eq!(hub.job_named(c, b"far").unwrap(), None);
        assert!(
            matches!(put(&mut hub, "far", false, FAR, "c"), PutNamed::Inserted(id) if id > far)
        );
        assert_eq!(hub.names.len(), 2);
    }

    #[test]
    fn puts_and_lookups_mem() {
        puts_and_lookups::<MemSegment>();
    }

    #[test]
    fn puts_and_lookups_mapped() {
        puts_and_lookups::<MappedSegment>();
    }

    #[test]
    fn puts_and_lookups_lazy() {
        puts_and_lookups::<LazySegment>();
    }

    /// Names survive a restart (a process killed: no flush), near and far, also when a
    /// checkpoint was taken after the far named put (the summary must not vouch for a spoke
    /// whose names recovery needs).
    fn names_survive_a_restart<S: Segment>() {
        let dir = tempfile::tempdir().unwrap();
        let (near, far, replaced);
        {
            let mut hub = open::<S>(dir.path(), T0);
            let c = hub.connect();
            let mut put = |name: &str, replace, delay| match hub.put_named(
                c,
                name.as_bytes(),
                replace,
                1,
                delay,
                10,
                b"x",
                T0,
            ) {
                Ok(PutNamed::Inserted(id) | PutNamed::Replaced(id)) => id,
                other => panic!("{other:?}"),
            };
            near = put("near", false, 0);
            far = put("far", false, FAR);
            replaced = put("moved", false, FAR);
            assert_eq!(put("moved", true, FAR + 100), replaced);
            // Synced first: the replaced job's Moved mark is written, so the checkpoint can
            // vouch for every far spoke it would for unnamed jobs.
            let batch = hub.take_sync_batch();
            batch.sync().unwrap();
            hub.synced(batch.epoch);
            if let Some(p) = hub.checkpoint() {
                p.write().unwrap();
            }
            if !S::FILE_BACKED {
                hub.flush().unwrap();
            }
        }
        let mut hub = open::<S>(dir.path(), T0 + SECOND);
        let c = hub.connect();
        for (name, id) in [("near", near), ("far", far), ("moved", replaced)] {
            assert_eq!(
                hub.put_named(c, name.as_bytes(), false, 1, 0, 10, b"y", T0 + SECOND),
                Ok(PutNamed::Exists(id)),
                "{name}"
            );
        }
        assert_eq!(
            hub.stats_job(replaced, T0 + SECOND)
                .unwrap()
                .name
                .as_deref(),
            Some("moved")
        );
        hub.delete_named(c, b"far", T0 + SECOND).unwrap();
        assert_eq!(hub.job_named(c, b"far").unwrap(), None);
    }

    #[test]
    fn names_survive_a_restart_mem() {
        names_survive_a_restart::<MemSegment>();
    }

    #[test]
    fn names_survive_a_restart_mapped() {
        names_survive_a_restart::<MappedSegment>();
    }

    #[test]
    fn names_survive_a_restart_lazy() {
        names_survive_a_restart::<LazySegment>();
    }

    /// A far job replaced by name into the same far spoke was listed twice by peek-delayed
    /// and kick (its old record reads Waiting until its Moved mark is written after a sync),
    /// old body first.
    #[test]
    fn a_replaced_far_job_is_listed_once_with_its_new_body() {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = open::<LazySegment>(dir.path(), T0);
        let c = hub.connect();
        let put = |h: &mut Hub<LazySegment>, replace, b: &[u8]| {
            h.put_named(c, b"x", replace, 1, FAR, 5, b, T0).unwrap()
        };
        let PutNamed::Inserted(id) = put(&mut hub, false, b"old") else {
            panic!()
        };
        assert_eq!(put(&mut hub, true, b"new"), PutNamed::Replaced(id));
        let v = hub.peek_delayed(c).unwrap();
        assert_eq!((v.id, &v.body[..]), (id, &b"new"[..]));
        assert_eq!(hub.kick(c, 10, T0), 1);
    }

    /// Two names sharing a key (forced: the overflow map is what answers for the second).
    #[test]
    fn a_key_collision_keeps_both_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = open::<MemSegment>(dir.path(), T0);
        let c = hub.connect();
        let PutNamed::Inserted(a) = hub.put_named(c, b"a", false, 1, 0, 1, b"", T0).unwrap() else {
            panic!()
        };
        // Job a now also holds the key of "b", as a colliding name would.
        let kb = name_key(b"default", b"b");
        hub.names.by_key.insert(kb, a);
        let PutNamed::Inserted(b) = hub.put_named(c, b"b", false, 1, 0, 1, b"", T0).unwrap() else {
            panic!()
        };
        assert_eq!(hub.job_named(c, b"b").unwrap(), Some(b));
        assert_eq!(hub.job_named(c, b"a").unwrap(), Some(a));
        assert_eq!(hub.names.overflow.len(), 1);
        hub.delete_named(c, b"b", T0).unwrap();
        assert!(hub.names.overflow.is_empty());
        assert_eq!(hub.job_named(c, b"b").unwrap(), None);
    }

    /// The segment files in `dir`, by path, with their bytes.
    fn segment_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(crate::segment::format::parse_segment_file_name)
                    .is_some()
            })
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        out.sort();
        out
    }

    /// A power loss kept a `put-named` but lost the delete of the job that held the name
    /// before (in another spoke's file): recovery found two live jobs with one name and left
    /// both (the later one found by name). Now the earlier one is deleted, durably.
    fn a_lost_delete_leaves_one_job_per_name<S: Segment>(first_delay: u32, second_delay: u32) {
        let dir = tempfile::tempdir().unwrap();
        let put =
            |h: &mut Hub<S>, c, delay| match h.put_named(c, b"x", false, 1, delay, 10, b"b", T0) {
                Ok(PutNamed::Inserted(id)) => id,
                other => panic!("{other:?}"),
            };
        let (first, second, before);
        {
            let mut hub = open::<S>(dir.path(), T0);
            let c = hub.connect();
            first = put(&mut hub, c, first_delay);
            hub.flush().unwrap();
            before = segment_files(dir.path());
            assert_eq!(before.len(), 1, "one spoke holds the first job");
            hub.delete_named(c, b"x", T0).unwrap();
            second = put(&mut hub, c, second_delay);
            hub.flush().unwrap();
        }
        // The power loss: the first job's file as it was before its delete, the second job's
        // file as written, no summary (a new boot trusts none).
        for (path, bytes) in &before {
            std::fs::write(path, bytes).unwrap();
        }
        let summary = dir.path().join(crate::segment::SUMMARY_FILE);
        let _ = std::fs::remove_file(&summary);
        for round in 0..2 {
            let mut hub = open::<S>(dir.path(), T0 + SECOND);
            let c = hub.connect();
            assert_eq!(
                hub.job_named(c, b"x").unwrap(),
                Some(second),
                "round {round}"
            );
            assert!(
                hub.stats_job(first, T0 + SECOND).is_none(),
                "round {round}: the job whose delete was lost is live"
            );
            assert!(hub.stats_job(second, T0 + SECOND).is_some());
            assert_eq!(hub.names.len(), 1);
            // The next restart (after a kill: no flush, no summary) finds it deleted too.
            drop(hub);
            let _ = std::fs::remove_file(&summary);
        }
    }

    #[test]
    fn a_lost_delete_leaves_one_job_per_name_mapped() {
        a_lost_delete_leaves_one_job_per_name::<MappedSegment>(0, FAR);
        a_lost_delete_leaves_one_job_per_name::<MappedSegment>(FAR, 0);
        a_lost_delete_leaves_one_job_per_name::<MappedSegment>(FAR, FAR + 100);
    }

    #[test]
    fn a_lost_delete_leaves_one_job_per_name_lazy() {
        a_lost_delete_leaves_one_job_per_name::<LazySegment>(0, FAR);
        a_lost_delete_leaves_one_job_per_name::<LazySegment>(FAR, 0);
        a_lost_delete_leaves_one_job_per_name::<LazySegment>(FAR, FAR + 100);
    }
}
