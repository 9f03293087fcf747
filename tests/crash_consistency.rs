//! Crash consistency: the hub runs on a recording segment that logs, after every write, the
//! image of each file it changed (segment files and `ids.yaad`). A crash at cut point k is the
//! data dir holding the first k images; a torn cut also applies half of the bytes the k-th write
//! changed. For every cut the hub is reopened (mapped) on that dir and checked against a model
//! of the acknowledged operations.
//!
//! The images are read back from the page cache after each write, so the log is the order in
//! which the writes reached the kernel; `ids.yaad` (written by the hub, not through the
//! `Segment` trait) is captured at the next segment write after it changed.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use common::Rng;
use yaad::hub::{Hub, HubConfig, ReleaseOutcome, ReserveOutcome};
use yaad::segment::{
    ID_INDEX_FILE, MappedSegment, NewRecord, Record, RecordMeta, RecordOffset, Result, Segment,
    SpokeId, StateSlot,
};

const T0: u64 = 1_900_000_000_000_000;
const SEC: u64 = 1_000_000;
const TUBES: [&str; 3] = ["default", "t1", "t2"];

/// One file's image after a write: `None` if the file was deleted.
type Image = Option<(Vec<u8>, u64)>;
/// The write log: per write, the files it changed with their new images.
type Log = Vec<Vec<(String, Image)>>;

thread_local! {
    /// The write log: per entry, the files it changed with their new images.
    static LOG: RefCell<Log> = const { RefCell::new(Vec::new()) };
    /// The last image of `ids.yaad` put into the log.
    static LAST_IDS: RefCell<Image> = const { RefCell::new(None) };
}

/// The non-zero prefix of a file and its length (the zero tail adds nothing).
fn image_of(path: &Path) -> Image {
    let bytes = fs::read(path).ok()?;
    let len = bytes.len() as u64;
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Some((bytes[..end].to_vec(), len))
}

fn log_write(seg_path: &Path, deleted: bool) {
    let name = seg_path.file_name().unwrap().to_string_lossy().into_owned();
    let mut entry = vec![];
    if let Some(dir) = seg_path.parent() {
        let ids = image_of(&dir.join(ID_INDEX_FILE));
        let changed = LAST_IDS.with(|l| {
            let mut l = l.borrow_mut();
            let changed = *l != ids && ids.is_some();
            if changed {
                *l = ids.clone();
            }
            changed
        });
        if changed {
            entry.push((ID_INDEX_FILE.to_string(), ids));
        }
    }
    entry.push((name, if deleted { None } else { image_of(seg_path) }));
    LOG.with(|l| l.borrow_mut().push(entry));
}

fn log_len() -> usize {
    LOG.with(|l| l.borrow().len())
}

/// A mapped segment that logs the file image after every write.
struct Recording(MappedSegment);

impl Segment for Recording {
    const FILE_BACKED: bool = true;

    fn create(dir: &Path, spoke: SpokeId) -> Result<Self> {
        let s = MappedSegment::create(dir, spoke)?;
        log_write(s.path(), false);
        Ok(Recording(s))
    }
    fn open(path: &Path) -> Result<Self> {
        MappedSegment::open(path).map(Recording)
    }
    fn spoke(&self) -> SpokeId {
        self.0.spoke()
    }
    fn append(&mut self, rec: &NewRecord<'_>) -> Result<RecordOffset> {
        let r = self.0.append(rec);
        log_write(self.0.path(), false);
        r
    }
    fn read(&mut self, offset: RecordOffset) -> Result<Record> {
        self.0.read(offset)
    }
    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> Result<()> {
        let r = self.0.update(offset, slot);
        log_write(self.0.path(), false);
        r
    }
    fn record_len(&mut self, offset: RecordOffset) -> Result<u64> {
        self.0.record_len(offset)
    }
    fn free_run(&mut self, offset: RecordOffset, run: u64) -> Result<()> {
        let r = self.0.free_run(offset, run);
        log_write(self.0.path(), false);
        r
    }
    fn punch(&mut self, from: u64, to: u64) -> Result<u64> {
        let r = self.0.punch(from, to);
        log_write(self.0.path(), false);
        r
    }
    fn version(&self) -> u32 {
        self.0.version()
    }
    fn scan(&mut self) -> Result<Vec<Result<RecordMeta>>> {
        self.0.scan()
    }
    fn flush(&mut self) -> Result<()> {
        self.0.flush()
    }
    fn byte_size(&self) -> u64 {
        self.0.byte_size()
    }
    fn close(&mut self) -> Result<()> {
        self.0.close()
    }
    fn destroy(self) -> Result<()> {
        let path = self.0.path().to_path_buf();
        let r = self.0.destroy();
        log_write(&path, true);
        r
    }
}

/// What the files hold after a crash at cut `k`; `torn`: half of write k's changed bytes too.
/// Returns whether the torn write was (part of) an append into an existing file's zero tail.
fn materialise(log: &Log, k: usize, torn: bool, dir: &Path) -> bool {
    let mut files: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
    let apply = |files: &mut BTreeMap<String, (Vec<u8>, u64)>, name: &String, img: &Image| match img
    {
        Some(i) => {
            files.insert(name.clone(), i.clone());
        }
        None => {
            files.remove(name);
        }
    };
    for entry in &log[..k] {
        for (name, img) in entry {
            apply(&mut files, name, img);
        }
    }
    let mut torn_append = false;
    if torn && k < log.len() {
        for (name, img) in &log[k] {
            let (Some((new, new_len)), Some((old, _))) = (img, files.get(name)) else {
                continue;
            };
            let at = |v: &Vec<u8>, i: usize| v.get(i).copied().unwrap_or(0);
            let n = new.len().max(old.len());
            let Some(first) = (0..n).find(|&i| at(new, i) != at(old, i)) else {
                continue;
            };
            let last = (0..n).rev().find(|&i| at(new, i) != at(old, i)).unwrap();
            let changed = last - first + 1;
            let cut = first + changed / 2;
            let mut mixed = old.clone();
            mixed.resize(mixed.len().max(cut), 0);
            for (i, b) in mixed.iter_mut().enumerate().take(cut).skip(first) {
                *b = at(new, i);
            }
            if name != ID_INDEX_FILE && first >= old.len() && last - first > 80 {
                torn_append = true;
            }
            files.insert(name.clone(), (mixed, *new_len));
        }
    }
    for (name, (bytes, len)) in files {
        let p = dir.join(name);
        fs::write(&p, &bytes).unwrap();
        let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len.max(bytes.len() as u64)).unwrap();
    }
    torn_append
}

#[derive(Clone, Debug, PartialEq)]
enum St {
    Ready,
    Delayed(u64),
    Reserved,
    Buried,
}

#[derive(Clone, Debug)]
struct Exp {
    tube: &'static str,
    body: Vec<u8>,
    pri: u32,
    st: St,
}

#[derive(Clone, Default)]
struct Model {
    jobs: BTreeMap<u64, Exp>,
    deleted: BTreeSet<u64>,
}

/// One operation: the log range its writes took, the model after it, the ids it touched.
struct Step {
    log_end: usize,
    now: u64,
    model: Model,
    touched: Vec<u64>,
    max_id: u64,
}

fn run(seed: u64, ops: usize) -> (Log, Vec<Step>, u64) {
    LOG.with(|l| l.borrow_mut().clear());
    LAST_IDS.with(|l| *l.borrow_mut() = None);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed | 1);
    let mut now = T0;
    let mut hub: Hub<Recording> = Hub::open(HubConfig::new(dir.path()), now).unwrap();
    let c = hub.connect();
    for t in TUBES {
        hub.watch(c, t);
    }
    let mut m = Model::default();
    let mut steps = vec![Step {
        log_end: log_len(),
        now,
        model: m.clone(),
        touched: vec![],
        max_id: 0,
    }];
    let mut max_id = 0;
    for _ in 0..ops {
        now += rng.below(700_000);
        let mut touched = vec![];
        let reserved: Vec<u64> = m
            .jobs
            .iter()
            .filter(|(_, e)| e.st == St::Reserved)
            .map(|(&id, _)| id)
            .collect();
        let pick = |rng: &mut Rng, v: &[u64]| v[rng.below(v.len() as u64) as usize];
        match rng.below(10) {
            0..=3 => {
                let tube = TUBES[rng.below(3) as usize];
                hub.use_tube(c, tube);
                let pri = rng.below(5000) as u32;
                let delay = rng.below(6) as u32;
                let len = 1 + rng.below(300) as usize;
                let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let id = hub.put(c, pri, delay, 100_000, &body, now).unwrap();
                assert!(id > max_id);
                max_id = id;
                let st = if delay == 0 {
                    St::Ready
                } else {
                    St::Delayed(now + u64::from(delay) * SEC)
                };
                m.jobs.insert(
                    id,
                    Exp {
                        tube,
                        body,
                        pri,
                        st,
                    },
                );
                touched.push(id);
            }
            4 | 5 => {
                if let ReserveOutcome::Reserved(j) = hub.reserve(c, Some(now), now) {
                    let e = m.jobs.get_mut(&j.id).unwrap();
                    assert_eq!(&j.body[..], &e.body[..]);
                    e.st = St::Reserved;
                }
            }
            6 if !reserved.is_empty() => {
                let id = pick(&mut rng, &reserved);
                let delay = rng.below(4) as u32;
                let pri = rng.below(5000) as u32;
                let r = hub.release(c, id, pri, delay, now).unwrap();
                assert!(matches!(r, ReleaseOutcome::Released));
                let e = m.jobs.get_mut(&id).unwrap();
                e.pri = pri;
                e.st = if delay == 0 {
                    St::Ready
                } else {
                    St::Delayed(now + u64::from(delay) * SEC)
                };
                touched.push(id);
            }
            7 if !reserved.is_empty() => {
                let id = pick(&mut rng, &reserved);
                let pri = rng.below(5000) as u32;
                hub.bury(c, id, pri, now).unwrap();
                let e = m.jobs.get_mut(&id).unwrap();
                e.pri = pri;
                e.st = St::Buried;
                touched.push(id);
            }
            8 if !m.jobs.is_empty() => {
                let ids: Vec<u64> = m.jobs.keys().copied().collect();
                let id = pick(&mut rng, &ids);
                hub.delete(c, id, now).unwrap();
                m.jobs.remove(&id);
                m.deleted.insert(id);
                touched.push(id);
            }
            _ => {
                let buried: Vec<u64> = m
                    .jobs
                    .iter()
                    .filter(|(_, e)| e.st == St::Buried)
                    .map(|(&id, _)| id)
                    .collect();
                if !buried.is_empty() {
                    let id = pick(&mut rng, &buried);
                    hub.kick_job(id, now).unwrap();
                    m.jobs.get_mut(&id).unwrap().st = St::Ready;
                    touched.push(id);
                } else {
                    hub.tick(now);
                }
            }
        }
        assert!(hub.take_wakeups().is_empty());
        steps.push(Step {
            log_end: log_len(),
            now,
            model: m.clone(),
            touched,
            max_id,
        });
    }
    drop(hub);
    (LOG.with(|l| l.borrow().clone()), steps, max_id)
}

/// Reopens the hub on the image of cut `k` and checks it against the acknowledged model.
fn check_cut(log: &Log, steps: &[Step], k: usize, torn: bool) {
    let dir = tempfile::tempdir().unwrap();
    let torn_append = materialise(log, k, torn, dir.path());
    // The last operation whose writes all precede the cut is acknowledged; the next is in flight.
    let i = steps.iter().rposition(|s| s.log_end <= k).unwrap();
    let acked = &steps[i];
    let in_flight: BTreeSet<u64> = steps
        .get(i + 1)
        .map(|s| s.touched.iter().copied().collect())
        .unwrap_or_default();
    let now = acked.now;
    let ctx = format!("cut {k} torn {torn} (after op {i})");
    let mut hub: Hub<MappedSegment> = Hub::open(HubConfig::new(dir.path()), now)
        .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    for (&id, e) in &acked.model.jobs {
        if in_flight.contains(&id) {
            continue;
        }
        let s = hub
            .stats_job(id, now)
            .unwrap_or_else(|| panic!("{ctx}: acknowledged job {id} lost"));
        assert_eq!(s.tube, e.tube, "{ctx}: job {id} tube");
        assert_eq!(s.pri, e.pri, "{ctx}: job {id} priority");
        let body = hub
            .peek(id)
            .unwrap_or_else(|| panic!("{ctx}: peek {id}"))
            .body;
        assert_eq!(&body[..], &e.body[..], "{ctx}: job {id} body");
        match e.st {
            St::Ready | St::Reserved => assert_eq!(s.state, "ready", "{ctx}: job {id}"),
            St::Buried => assert_eq!(s.state, "buried", "{ctx}: job {id}"),
            St::Delayed(t) if t > now => {
                assert_eq!(s.state, "delayed", "{ctx}: job {id}");
                assert_eq!(s.time_left, (t - now) / SEC, "{ctx}: job {id} trigger time");
            }
            St::Delayed(_) => assert_eq!(s.state, "ready", "{ctx}: job {id}"),
        }
    }
    for &id in &acked.model.deleted {
        if !in_flight.contains(&id) {
            assert!(
                hub.stats_job(id, now).is_none(),
                "{ctx}: deleted job {id} came back"
            );
        }
    }
    if torn_append {
        assert!(
            hub.stats(now).corrupt_records_skipped >= 1,
            "{ctx}: a torn append was not counted as a skipped record"
        );
    }
    // An id the in-flight put issued must not come again if its record survived.
    let mut max_id = acked.max_id;
    if let Some(s) = steps.get(i + 1)
        && s.max_id > max_id
        && hub.stats_job(s.max_id, now).is_some()
    {
        max_id = s.max_id;
    }
    let c = hub.connect();
    let id = hub.put(c, 0, 0, 10, b"after", now).unwrap();
    assert!(
        id > max_id,
        "{ctx}: id {id} reissued (highest issued {max_id})"
    );
}

fn check_all_cuts(seed: u64, ops: usize) {
    let (log, steps, _) = run(seed, ops);
    eprintln!(
        "seed {seed:#x}: {ops} operations, {} writes logged",
        log.len()
    );
    assert!(log.len() > ops / 2, "too few writes logged: {}", log.len());
    for k in 0..=log.len() {
        check_cut(&log, &steps, k, false);
        if k < log.len() {
            check_cut(&log, &steps, k, true);
        }
    }
}

#[test]
fn every_cut_point_keeps_the_acknowledged_state() {
    check_all_cuts(0x9e37_79b9_7f4a_7c15, 120);
}

#[test]
fn every_cut_point_keeps_the_acknowledged_state_other_seed() {
    check_all_cuts(0x1234_5678_9abc_def1, 120);
}
