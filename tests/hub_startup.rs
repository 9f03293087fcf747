//! Start-up: far spokes are not read at open (their figures come from `summary.yaad`, written
//! clean by a flush or as a checkpoint while running), yet every command that needs a far job
//! finds it. After `kill -9` only the segments named in the change journals are scanned, and
//! a summary that could be stale (a change after a clean one, a checkpoint from another boot,
//! a damaged journal) is never used.

use std::cell::Cell;
use std::path::Path;

use yaad::hub::{Hub, HubConfig, PutNamed, ReleaseOutcome, ReserveOutcome, SECOND};
use yaad::segment::{
    LazySegment, MappedSegment, NewRecord, Record, RecordMeta, RecordOffset, Result, SUMMARY_FILE,
    Segment, SpokeId, StateSlot,
};

const START: u64 = 1_700_000_000 * SECOND;
const HOUR: u32 = 3600;

thread_local! {
    /// Record reads and segment scans through [`Counting`] segments on this thread.
    static READS: Cell<u64> = const { Cell::new(0) };
    static SCANS: Cell<u64> = const { Cell::new(0) };
}

fn reads() -> (u64, u64) {
    (SCANS.with(Cell::get), READS.with(Cell::get))
}

fn reset() {
    SCANS.with(|c| c.set(0));
    READS.with(|c| c.set(0));
}

/// A segment that counts how often its records are read or scanned.
struct Counting<S>(S);

impl<S: Segment> Segment for Counting<S> {
    const FILE_BACKED: bool = S::FILE_BACKED;

    fn create(dir: &Path, spoke: SpokeId) -> Result<Self> {
        S::create(dir, spoke).map(Counting)
    }
    fn open(path: &Path) -> Result<Self> {
        S::open(path).map(Counting)
    }
    fn spoke(&self) -> SpokeId {
        self.0.spoke()
    }
    fn append(&mut self, rec: &NewRecord<'_>) -> Result<RecordOffset> {
        self.0.append(rec)
    }
    fn read(&mut self, offset: RecordOffset) -> Result<Record> {
        READS.with(|c| c.set(c.get() + 1));
        self.0.read(offset)
    }
    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> Result<()> {
        self.0.update(offset, slot)
    }
    fn record_len(&mut self, offset: RecordOffset) -> Result<u64> {
        self.0.record_len(offset)
    }
    fn free_run(&mut self, offset: RecordOffset, run: u64) -> Result<()> {
        self.0.free_run(offset, run)
    }
    fn punch(&mut self, from: u64, to: u64) -> Result<u64> {
        self.0.punch(from, to)
    }
    fn version(&self) -> u32 {
        self.0.version()
    }
    fn scan(&mut self) -> Result<Vec<Result<RecordMeta>>> {
        SCANS.with(|c| c.set(c.get() + 1));
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
        self.0.destroy()
    }
}

fn open<S: Segment>(dir: &Path, now: u64) -> Hub<S> {
    Hub::open(HubConfig::new(dir), now).unwrap()
}

/// Puts `n` jobs in each of `spokes` far spokes (one hour apart) of tubes "a" and "b", and
/// two near ones; returns the ids of the far jobs.
fn fill<S: Segment>(hub: &mut Hub<S>, spokes: u32, n: u32) -> Vec<u64> {
    let c = hub.connect();
    let mut ids = vec![];
    for s in 0..spokes {
        for i in 0..n {
            hub.use_tube(c, if i % 3 == 0 { "b" } else { "a" });
            let body = format!("job {s}/{i}");
            ids.push(
                hub.put(c, i, HOUR * (s + 1), 60, body.as_bytes(), START)
                    .unwrap(),
            );
        }
    }
    hub.use_tube(c, "a");
    hub.put(c, 5, 0, 60, b"ready now", START).unwrap();
    hub.put(c, 5, 1, 60, b"due in a second", START).unwrap();
    ids
}

fn delayed<S: Segment>(hub: &Hub<S>, tube: &str) -> u64 {
    hub.stats_tube(tube, START).unwrap().current_jobs_delayed
}

fn far_spokes_are_not_read_at_open<S: Segment>() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    let ids = fill(&mut hub, 5, 30);
    hub.flush().unwrap();
    drop(hub);
    assert!(tmp.path().join(SUMMARY_FILE).exists());

    reset();
    let hub: Hub<Counting<S>> = open(tmp.path(), START);
    // Only the two near spokes were scanned (twice each: winners, then their headers);
    // no record was read.
    assert_eq!(reads(), (4, 0), "(scans, reads) at a clean open");
    assert_eq!(
        delayed(&hub, "a") + delayed(&hub, "b"),
        ids.len() as u64 + 1
    );
    assert_eq!(delayed(&hub, "b"), 5 * 10);
    let st = hub.stats(START);
    assert_eq!((st.current_jobs_ready, st.spokes), (1, 7));
    assert!(
        tmp.path().join(SUMMARY_FILE).exists(),
        "a clean summary stays until the next change"
    );
    drop(hub);

    // Without a summary (as after a machine crash) every segment is scanned, same result.
    std::fs::remove_file(tmp.path().join(SUMMARY_FILE)).unwrap();
    reset();
    let hub: Hub<Counting<S>> = open(tmp.path(), START);
    assert_eq!(reads().0, 4 + 5, "scans at an open without a summary");
    assert_eq!(
        delayed(&hub, "a") + delayed(&hub, "b"),
        ids.len() as u64 + 1
    );
    assert_eq!(delayed(&hub, "b"), 5 * 10);
}

#[test]
fn lazy_far_spokes_are_not_read_at_open() {
    far_spokes_are_not_read_at_open::<LazySegment>();
}

#[test]
fn mapped_far_spokes_are_not_read_at_open() {
    far_spokes_are_not_read_at_open::<MappedSegment>();
}

/// A far segment damaged while the daemon was down: open does not notice (it does not read
/// it); the damage is reported when the spoke comes near, and only that job is lost.
#[test]
fn damage_in_a_far_segment_is_reported_when_its_spoke_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<LazySegment> = open(tmp.path(), START);
    let c = hub.connect();
    let mut ids = vec![];
    for i in 0..10u32 {
        ids.push(
            hub.put(c, i, HOUR, 60, format!("body {i:04}").as_bytes(), START)
                .unwrap(),
        );
    }
    hub.flush().unwrap();
    drop(hub);
    let seg = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"body 0003")
        .expect("the fourth job's body");
    bytes[at + 5] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();

    let mut hub: Hub<LazySegment> = open(tmp.path(), START);
    assert_eq!(hub.stats(START).corrupt_records_skipped, 0);
    assert_eq!(hub.stats(START).current_jobs_delayed, 10);
    // Its spoke is loaded NEAR_SPOKES spans before it is due.
    let due = START + u64::from(HOUR) * SECOND;
    hub.tick(due - SECOND);
    let st = hub.stats(due);
    assert_eq!(st.corrupt_records_skipped, 1);
    assert_eq!(st.current_jobs_delayed, 9);
    hub.tick(due);
    let c = hub.connect();
    let mut got = vec![];
    while let ReserveOutcome::Reserved(j) = hub.reserve(c, Some(due), due) {
        got.push(j.id);
    }
    let mut want = ids.clone();
    want.remove(3);
    assert_eq!(got, want);
}

/// Commands that need a far job right after a clean open: delete, peek, kick-job, stats-job,
/// reserve-job, kick and peek-delayed; their effects survive the next restart.
fn deferred_paths<S: Segment>() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<S> = open(tmp.path(), START);
    let ids = fill(&mut hub, 3, 6);
    hub.flush().unwrap();
    drop(hub);

    let mut hub: Hub<S> = open(tmp.path(), START);
    let now = START + SECOND;
    let c = hub.connect();
    let (del, peek, kick, stat, res) = (ids[0], ids[7], ids[13], ids[14], ids[8]);
    assert_eq!(hub.peek(peek).unwrap().body.as_ref(), b"job 1/1");
    let st = hub.stats_job(stat, now).unwrap();
    assert_eq!((st.state, st.tube.as_str(), st.pri), ("delayed", "a", 2));
    assert_eq!(st.time_left, 3 * u64::from(HOUR) - 1);
    hub.delete(c, del, now).unwrap();
    assert!(hub.stats_job(del, now).is_none());
    assert!(hub.peek(del).is_none());
    hub.kick_job(kick, now).unwrap();
    assert_eq!(hub.stats_job(kick, now).unwrap().state, "ready");
    assert_eq!(
        hub.reserve_job(c, res, now).unwrap().body.as_ref(),
        b"job 1/2"
    );
    hub.bury(c, res, 9, now).unwrap();
    // Tube "b": the earliest delayed is job 0/3 (job 0/0 was deleted).
    hub.use_tube(c, "b");
    assert_eq!(hub.peek_delayed(c).unwrap().id, ids[3]);
    assert_eq!(hub.kick(c, 1, now), 1);
    assert_eq!(hub.stats_job(ids[3], now).unwrap().state, "ready");
    let check = |hub: &mut Hub<S>| {
        assert!(hub.stats_job(del, now).is_none());
        assert_eq!(hub.stats_job(kick, now).unwrap().state, "ready");
        assert_eq!(hub.stats_job(ids[3], now).unwrap().state, "ready");
        let b = hub.stats_job(res, now).unwrap();
        assert_eq!((b.state, b.pri), ("buried", 9));
        let st = hub.stats(now);
        // 18 far jobs: one deleted, three no longer delayed.
        assert_eq!(st.current_jobs_delayed, 18 - 4);
        assert_eq!(st.current_jobs_buried, 1);
        assert_eq!(st.current_jobs_ready, 1 + 1 + 2);
    };
    check(&mut hub);
    hub.flush().unwrap();
    drop(hub);
    let mut hub: Hub<S> = open(tmp.path(), now);
    check(&mut hub);
    drop(hub);
    let mut hub: Hub<S> = open(tmp.path(), now);
    check(&mut hub);
}

#[test]
fn lazy_deferred_paths_after_clean_open() {
    deferred_paths::<LazySegment>();
}

#[test]
fn mapped_deferred_paths_after_clean_open() {
    deferred_paths::<MappedSegment>();
}

/// A job released from one far spoke into another (its old record marked Moved) comes back
/// exactly once, with the state and trigger time of its last release, after a clean restart
/// and after one without a summary.
fn moved_between_far_spokes<S: Segment>(clean: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<S> = open(tmp.path(), START);
    let c = hub.connect();
    let id = hub.put(c, 1, HOUR, 60, b"mover", START).unwrap();
    let other = hub.put(c, 1, HOUR, 60, b"stays", START).unwrap();
    assert_eq!(hub.reserve_job(c, id, START).unwrap().id, id);
    let r = hub.release(c, id, 7, 2 * HOUR, START).unwrap();
    assert_eq!(r, ReleaseOutcome::Released);
    if clean {
        hub.flush().unwrap();
    }
    drop(hub);
    let mut hub: Hub<S> = open(tmp.path(), START);
    let st = hub.stats_job(id, START).unwrap();
    assert_eq!((st.state, st.pri), ("delayed", 7));
    assert_eq!(st.time_left, 2 * u64::from(HOUR));
    assert_eq!(hub.stats(START).current_jobs_delayed, 2);
    let c = hub.connect();
    // Past the first spoke: only the job that stayed there is ready.
    let t1 = START + u64::from(HOUR) * SECOND + SECOND;
    hub.tick(t1);
    assert_eq!(hub.stats(t1).current_jobs_delayed, 1);
    match hub.reserve(c, Some(t1), t1) {
        ReserveOutcome::Reserved(j) => assert_eq!(j.id, other),
        o => panic!("{o:?}"),
    }
    hub.delete(c, other, t1).unwrap();
    assert_eq!(hub.reserve(c, Some(t1), t1), ReserveOutcome::TimedOut);
    let t2 = START + 2 * u64::from(HOUR) * SECOND + SECOND;
    hub.tick(t2);
    assert_eq!(hub.stats(t2).current_jobs_delayed, 0);
    match hub.reserve(c, Some(t2), t2) {
        ReserveOutcome::Reserved(j) => assert_eq!((j.id, j.body.as_ref()), (id, &b"mover"[..])),
        o => panic!("{o:?}"),
    }
    assert_eq!(hub.reserve(c, Some(t2), t2), ReserveOutcome::TimedOut);
}

#[test]
fn lazy_job_moved_between_far_spokes_comes_back_once() {
    moved_between_far_spokes::<LazySegment>(true);
    moved_between_far_spokes::<LazySegment>(false);
}

#[test]
fn mapped_job_moved_between_far_spokes_comes_back_once() {
    moved_between_far_spokes::<MappedSegment>(true);
    moved_between_far_spokes::<MappedSegment>(false);
}

/// A change after a flush removes the summary before it reaches the disk: a restart that
/// follows (as after kill -9) scans, and sees the change.
#[test]
fn a_change_after_the_flush_makes_the_next_open_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    let ids = fill(&mut hub, 2, 4);
    hub.flush().unwrap();
    let summary = tmp.path().join(SUMMARY_FILE);
    assert!(summary.exists());
    // Reads change nothing: the summary stays.
    assert!(hub.peek(ids[0]).is_some());
    assert!(hub.stats_job(ids[5], START).is_some());
    assert!(summary.exists());
    // A delete in place (same segment size) would go unnoticed by a stale summary.
    let c = hub.connect();
    hub.delete(c, ids[1], START).unwrap();
    assert!(!summary.exists());
    drop(hub);
    reset();
    let hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    assert_eq!(reads().0, 4 + 2, "every segment scanned (near ones twice)");
    assert_eq!(hub.stats(START).current_jobs_delayed, 8 - 1 + 1);
}

/// A summary from another data dir state (its id index replaced) is not trusted.
#[test]
fn a_summary_that_does_not_match_the_index_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    fill(&mut hub, 2, 4);
    hub.flush().unwrap();
    drop(hub);
    std::fs::remove_file(tmp.path().join(yaad::segment::ID_INDEX_FILE)).unwrap();
    reset();
    let mut hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    assert_eq!(reads().0, 4 + 2, "every segment scanned (near ones twice)");
    assert_eq!(hub.stats(START).current_jobs_delayed, 9);
    let c = hub.connect();
    assert!(hub.put(c, 0, 0, 1, b"x", START).unwrap() > 10);
}

/// A crash (the hub dropped without a flush) after a checkpoint: the next open scans the near
/// segments and those changed since the checkpoint, and finds exactly the state a full scan
/// finds. Changes made after the checkpoint was taken but before it was written count too.
fn crash_after_checkpoint<S: Segment>(write_before_changes: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    let ids = fill(&mut hub, 5, 6);
    let mut pending = Some(hub.checkpoint().expect("changes since the open"));
    if write_before_changes {
        pending.take().unwrap().write().unwrap();
    }
    let c = hub.connect();
    // Far spoke 2: a delete in place (same byte size). Far spoke 4: one more job. A new far
    // spoke 6 hours out. A job released from a near spoke into far spoke 1.
    hub.delete(c, ids[2 * 6], START).unwrap();
    let added = hub.put(c, 3, 4 * HOUR, 60, b"late", START).unwrap();
    let newest = hub.put(c, 3, 6 * HOUR, 60, b"newest", START).unwrap();
    hub.watch(c, "a");
    let near = hub.reserve(c, Some(0), START);
    let ReserveOutcome::Reserved(near) = near else {
        panic!("{near:?}")
    };
    hub.release(c, near.id, 1, HOUR, START).unwrap();
    if let Some(p) = pending {
        p.write().unwrap();
    }
    drop(hub);

    let state = |hub: &mut Hub<Counting<S>>| {
        let st = hub.stats(START);
        let per_tube = (delayed(hub, "a"), delayed(hub, "b"));
        let jobs: Vec<_> = [ids[0], ids[2 * 6], added, newest, near.id]
            .iter()
            .map(|&id| {
                hub.stats_job(id, START)
                    .map(|j| (j.state, j.pri, j.time_left))
            })
            .collect();
        (
            st.current_jobs_delayed,
            st.current_jobs_ready,
            st.spokes,
            per_tube,
            jobs,
        )
    };
    reset();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    // The near spoke still holding a job is scanned twice (winners, then their headers), the
    // one emptied by the release once; of the far ones only the four changed since the
    // checkpoint (1 h: the release's target, 2 h, 4 h and the new 6 h).
    assert_eq!(
        reads().0,
        2 + 1 + 4,
        "scans after kill -9 following a checkpoint"
    );
    assert_eq!(hub.stats(START).current_jobs_delayed, 5 * 6 - 1 + 3 + 1);
    let c = hub.connect();
    let next = hub.put(c, 0, 0, 1, b"x", START).unwrap();
    assert!(
        next > newest + 1,
        "ids were issued after the checkpoint: they jump"
    );
    let fast = state(&mut hub);
    drop(hub);
    std::fs::remove_file(tmp.path().join(SUMMARY_FILE)).unwrap();
    reset();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    assert_eq!(
        reads().0,
        2 * 2 + 6,
        "every segment scanned without a summary (the put \"x\" filled the emptied near one)"
    );
    let full = state(&mut hub);
    assert_eq!(full, fast);
}

#[test]
fn lazy_crash_after_checkpoint_scans_only_changed_segments() {
    crash_after_checkpoint::<LazySegment>(true);
    crash_after_checkpoint::<LazySegment>(false);
}

#[test]
fn mapped_crash_after_checkpoint_scans_only_changed_segments() {
    crash_after_checkpoint::<MappedSegment>(true);
    crash_after_checkpoint::<MappedSegment>(false);
}

/// Open writes a checkpoint itself, so `kill -9` right after a start (even one that scanned
/// everything) does not scan everything again; with no put since, ids continue exactly.
#[test]
fn a_crash_right_after_open_reads_the_checkpoint_written_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    let ids = fill(&mut hub, 4, 3);
    drop(hub);
    reset();
    let hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    assert_eq!(reads().0, 2 * 2 + 4, "no summary yet: every segment");
    drop(hub);
    reset();
    let mut hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    assert_eq!(reads().0, 2 * 2, "the checkpoint written by the last open");
    assert_eq!(hub.stats(START).current_jobs_delayed, 4 * 3 + 1);
    let c = hub.connect();
    let last = *ids.last().unwrap() + 2;
    assert!(hub.put(c, 0, 0, 1, b"x", START).unwrap() > last);
}

/// A crash after a checkpoint and one delete; returns the dir, the summary and its journal.
fn checkpoint_then_crash() -> (
    tempfile::TempDir,
    yaad::segment::Summary,
    std::path::PathBuf,
) {
    use yaad::segment::Summary;
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    let ids = fill(&mut hub, 4, 3);
    hub.checkpoint().unwrap().write().unwrap();
    let c = hub.connect();
    hub.delete(c, ids[0], START).unwrap();
    drop(hub);
    let s = Summary::read(&tmp.path().join(SUMMARY_FILE))
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!s.clean);
    let journal = tmp
        .path()
        .join(yaad::segment::journal::journal_file_name(s.generation));
    assert!(journal.exists(), "the delete was noted");
    (tmp, s, journal)
}

/// A checkpoint is trusted only in the boot that wrote it: its journal entries may not have
/// reached the disk before a machine crash.
#[test]
fn a_checkpoint_from_another_boot_is_not_trusted() {
    let (tmp, mut s, _) = checkpoint_then_crash();
    s.boot_id = b"some-other-boot".to_vec();
    std::fs::write(tmp.path().join(SUMMARY_FILE), s.encode()).unwrap();
    reset();
    let hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    assert_eq!(reads().0, 2 * 2 + 4, "every segment scanned");
    assert_eq!(hub.stats(START).current_jobs_delayed, 4 * 3);
}

/// A journal cut inside an entry (or damaged) makes its summary worthless.
#[test]
fn a_damaged_change_journal_makes_open_scan_everything() {
    let (tmp, _, journal) = checkpoint_then_crash();
    let bytes = std::fs::read(&journal).unwrap();
    std::fs::write(&journal, &bytes[..bytes.len() - 1]).unwrap();
    reset();
    let hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    assert_eq!(reads().0, 2 * 2 + 4, "every segment scanned");
    assert_eq!(hub.stats(START).current_jobs_delayed, 4 * 3);
    drop(hub);
    // The intact one: only the changed far segment is scanned.
    let (tmp, _, _) = checkpoint_then_crash();
    reset();
    let hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    assert_eq!(reads().0, 2 * 2 + 1);
    assert_eq!(hub.stats(START).current_jobs_delayed, 4 * 3);
}

/// Ids are never reused after `kill -9`, even when every job issued after the checkpoint
/// was deleted and its segment removed.
#[test]
fn ids_issued_after_a_checkpoint_are_not_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<LazySegment> = open(tmp.path(), START);
    fill(&mut hub, 2, 2);
    hub.checkpoint().unwrap().write().unwrap();
    let c = hub.connect();
    let mut last = 0;
    for _ in 0..5 {
        last = hub.put(c, 0, 0, 60, b"short-lived", START).unwrap();
        hub.delete(c, last, START).unwrap();
    }
    // Past the spoke: it is retired, its file removed.
    let later = START + 10 * SECOND;
    hub.tick(later);
    drop(hub);
    let mut hub: Hub<LazySegment> = open(tmp.path(), later);
    let c = hub.connect();
    assert!(hub.put(c, 0, 0, 60, b"x", later).unwrap() > last);
}

/// When more far spokes changed than one checkpoint recomputes, the rest are left out of that
/// summary (a crash then scans them) and listed by the next checkpoints.
#[test]
fn a_checkpoint_recomputes_a_bounded_number_of_entries() {
    use yaad::hub::ENTRIES_PER_CHECKPOINT as N;
    use yaad::segment::Summary;
    let n = N as u32;
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    let c = hub.connect();
    // Three days apart: a far spoke per job, whatever its span.
    let delay = |i: u32| (i + 1) * 3 * 24 * HOUR;
    for i in 0..3 * n {
        hub.put(c, 0, delay(i), 60, b"far", START).unwrap();
    }
    let listed = |hub: &mut Hub<Counting<LazySegment>>| {
        hub.checkpoint().map(|p| {
            p.write().unwrap();
            Summary::read(&tmp.path().join(SUMMARY_FILE))
                .unwrap()
                .unwrap()
                .unwrap()
                .spokes
                .len()
        })
    };
    assert_eq!(listed(&mut hub), Some(N));
    drop(hub);
    // A crash now: the spokes not listed are scanned, every job is back.
    reset();
    let mut hub: Hub<Counting<LazySegment>> = open(tmp.path(), START);
    assert_eq!(reads().0, 2 * u64::from(n));
    assert_eq!(hub.stats(START).current_jobs_delayed, 3 * u64::from(n));
    // The open listed them all again. One more job in each: the entries come back N at a
    // time, then a checkpoint with nothing to do writes nothing.
    let c = hub.connect();
    for i in 0..3 * n {
        hub.put(c, 0, delay(i), 60, b"far", START).unwrap();
    }
    assert_eq!(listed(&mut hub), Some(N));
    assert_eq!(listed(&mut hub), Some(2 * N));
    assert_eq!(listed(&mut hub), Some(3 * N));
    assert_eq!(listed(&mut hub), None);
}

/// Ten named and ten unnamed jobs in each of four far spokes (1-4 h out), tube "a"; returns
/// (name, id) of the named ones.
fn fill_named<S: Segment>(hub: &mut Hub<S>) -> Vec<(String, u64)> {
    let c = hub.connect();
    hub.use_tube(c, "a");
    let mut named = vec![];
    for s in 0..4 {
        for i in 0..10 {
            let name = format!("n{s}-{i}");
            let body = format!("named {s}/{i}");
            let put = hub.put_named(
                c,
                name.as_bytes(),
                false,
                1,
                HOUR * (s + 1),
                60,
                body.as_bytes(),
                START,
            );
            let Ok(PutNamed::Inserted(id)) = put else {
                panic!("{put:?}")
            };
            named.push((name, id));
            hub.put(c, 1, HOUR * (s + 1), 60, b"plain", START).unwrap();
        }
    }
    named
}

/// Every name finds its job, and a put-named of it finds it too (dedupe).
fn names_found<S: Segment>(hub: &mut Hub<S>, named: &[(String, u64)], what: &str) {
    let c = hub.connect();
    hub.use_tube(c, "a");
    for (name, id) in named {
        assert_eq!(
            hub.job_named(c, name.as_bytes()).unwrap(),
            Some(*id),
            "{what}: {name}"
        );
        let again = hub.put_named(c, name.as_bytes(), false, 1, 0, 60, b"again", START);
        assert_eq!(again, Ok(PutNamed::Exists(*id)), "{what}: {name}");
    }
}

/// Far named jobs come back from the summary and the names files, with no far spoke scanned:
/// after a flush (`clean`) or after two checkpoints and a kill (the second one scans the
/// spokes the first listed without names). Name changes after the last checkpoint (a delete,
/// a new job under the freed name, a replace) and a kill: the changed spokes are scanned, the
/// rest come from the names files, every name finds its current job. A damaged or lost names
/// file: its spoke is scanned.
fn far_named_jobs_come_back_without_a_scan<S: Segment>(clean: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    let mut named = fill_named(&mut hub);
    if clean {
        hub.flush().unwrap();
    } else {
        hub.checkpoint().expect("changes").write().unwrap();
        assert!(
            !tmp.path().read_dir().unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("names-")
            }),
            "entries born in this generation are not scanned yet"
        );
        hub.checkpoint()
            .expect("names still to find")
            .write()
            .unwrap();
    }
    drop(hub);
    let names_files = || {
        let mut v: Vec<_> = tmp
            .path()
            .read_dir()
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("names-")
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(names_files().len(), 4, "one names file per far spoke");

    reset();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    assert_eq!(reads().0, 0, "far spokes scanned at open");
    names_found(&mut hub, &named, "after the restart");
    assert_eq!(delayed(&hub, "a"), 80);
    drop(hub);

    // A damaged names file: that spoke is scanned, the names are the same.
    let first = names_files()[0].clone();
    let mut b = std::fs::read(&first).unwrap();
    let last = b.len() - 10;
    b[last] ^= 1;
    std::fs::write(&first, b).unwrap();
    reset();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    assert_eq!(
        reads().0,
        1,
        "only the spoke of the damaged names file is scanned"
    );
    names_found(&mut hub, &named, "with a damaged names file");
    drop(hub);
    if clean {
        // Names files lost (a power cut after a clean shutdown: they are never synced).
        for f in names_files() {
            std::fs::remove_file(f).unwrap();
        }
    }
    reset();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    if clean {
        assert_eq!(
            reads().0,
            4,
            "every named spoke scanned without its names file"
        );
    }
    names_found(&mut hub, &named, "after names files were lost or damaged");
    if let Some(p) = hub.checkpoint() {
        p.write().unwrap();
    }

    // Changes after the checkpoint, then a kill.
    let c = hub.connect();
    hub.use_tube(c, "a");
    hub.delete_named(c, b"n0-0", START).unwrap();
    let gone = named[0].1;
    let put = hub.put_named(c, b"n0-0", false, 1, HOUR, 60, b"new n0-0", START);
    let Ok(PutNamed::Inserted(fresh)) = put else {
        panic!("{put:?}")
    };
    named[0].1 = fresh;
    let replaced = named[10].1;
    let put = hub.put_named(c, b"n1-0", true, 1, 2 * HOUR + 5, 60, b"replaced", START);
    assert_eq!(put, Ok(PutNamed::Replaced(replaced)));
    drop(hub);
    reset();
    let mut hub: Hub<Counting<S>> = open(tmp.path(), START);
    // Kill: the two changed spokes (from the journal). After a flush the first change removed
    // the clean summary: all four.
    let want = if clean { 4 } else { 2 };
    assert_eq!(reads().0, want, "scans after changes to names and a kill");
    assert!(
        hub.stats_job(gone, START).is_none(),
        "the deleted named job is back"
    );
    assert_eq!(hub.peek(replaced).unwrap().body.as_ref(), b"replaced");
    names_found(&mut hub, &named, "after changes and a kill");
}

#[test]
fn lazy_far_named_jobs_come_back_without_a_scan() {
    far_named_jobs_come_back_without_a_scan::<LazySegment>(true);
    far_named_jobs_come_back_without_a_scan::<LazySegment>(false);
}

#[test]
fn mapped_far_named_jobs_come_back_without_a_scan() {
    far_named_jobs_come_back_without_a_scan::<MappedSegment>(true);
    far_named_jobs_come_back_without_a_scan::<MappedSegment>(false);
}
