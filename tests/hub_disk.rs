//! Disk use stays bounded by live data under release-with-delay churn (beanstalkd's binlog
//! grows without bound on this: its issues #599 and #622), and retired spokes' files are gone.

use std::path::Path;

use yaad::hub::{
    COMPACT_AFTER_PAST, Hub, HubConfig, ID_BLOCK, NEAR_SPOKES, ReleaseOutcome, ReserveOutcome,
    SECOND,
};
use yaad::segment::format::{FILE_HEADER_LEN, FORMAT_VERSION, record_at, record_len};
use yaad::segment::{LazySegment, MappedSegment, Segment};

const START: u64 = 1_700_000_000 * SECOND;
const JOBS: u64 = 100;
const RELEASES: u64 = 10_000;
const BODY: usize = 100;
/// Longest release delay used, seconds.
const MAX_DELAY: u64 = 5;

/// Bytes of all files in `dir` (segments and the id index; not the lock file).
fn dir_bytes(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut segs = 0;
    for e in std::fs::read_dir(dir).expect("data dir is readable") {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "LOCK" {
            continue;
        }
        if name.starts_with("seg-") {
            segs += 1;
        }
        bytes += e.metadata().expect("metadata").len();
    }
    (bytes, segs)
}

/// Churns JOBS jobs through RELEASES delayed releases, checking the data dir after each step.
fn churn<S: Segment>(per_file_overhead: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut now = START;
    let mut hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let c = hub.connect();
    let body = vec![b'x'; BODY];
    for _ in 0..JOBS {
        hub.put(c, 0, 0, 60, &body, now).unwrap();
    }
    // One record: header + tube "default" + body, padded to 8.
    let record = record_len(7, BODY);
    let live = JOBS * record;
    // Spokes that can hold live jobs at once: the current one, MAX_DELAY ahead, and the one
    // just past that is retired on the next tick.
    let max_spokes = MAX_DELAY + 2;
    // The id index's length reserves up to a block of ids ahead (sparse: no disk for them).
    let ids = 64 + 32 * (JOBS + ID_BLOCK);
    let bound = 3 * live + max_spokes * per_file_overhead + ids;
    let mut releases = 0u64;
    let mut worst = 0u64;
    let mut worst_segs = 0usize;
    while releases < RELEASES {
        now += SECOND / 2;
        loop {
            match hub.reserve(c, Some(now), now) {
                ReserveOutcome::Reserved(j) => {
                    let delay = 1 + (j.id + releases) % MAX_DELAY;
                    let r = hub.release(c, j.id, 1, delay as u32, now).unwrap();
                    assert!(matches!(r, ReleaseOutcome::Released));
                    releases += 1;
                }
                ReserveOutcome::TimedOut => break,
                other => panic!("unexpected reserve outcome {other:?}"),
            }
        }
        hub.tick(now);
        // The server's periodic sync: Moved marks wait for the batch holding the new record.
        let batch = hub.take_sync_batch();
        batch.sync().unwrap();
        hub.synced(batch.epoch);
        let (bytes, segs) = dir_bytes(tmp.path());
        worst = worst.max(bytes);
        worst_segs = worst_segs.max(segs);
        assert!(
            bytes <= bound,
            "after {releases} releases the data dir holds {bytes} bytes in {segs} segments, \
             bound {bound} (live {live})"
        );
    }
    assert_eq!(
        hub.stats(now).current_jobs_delayed + hub.stats(now).current_jobs_ready,
        JOBS
    );
    eprintln!("worst data dir: {worst} bytes, {worst_segs} segments, live {live}, bound {bound}");
    // Everything done: delete every job; all segment files must go once their spokes are past.
    drop(hub);
    let mut hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let c = hub.connect();
    for id in 1..=JOBS {
        hub.delete(c, id, now).unwrap();
    }
    now += (MAX_DELAY + 3) * SECOND;
    hub.tick(now);
    let (_, segs) = dir_bytes(tmp.path());
    assert_eq!(segs, 0, "retired spokes' files must be deleted");
}

#[test]
fn lazy_release_churn_keeps_disk_bounded() {
    // An open lazy file reserves up to the next 64 KiB for appends.
    churn::<LazySegment>(yaad::segment::LAZY_RESERVE);
}

#[test]
fn mapped_release_churn_keeps_disk_bounded() {
    // Mapped files are preallocated to INITIAL_FILE_LEN.
    churn::<MappedSegment>(yaad::segment::INITIAL_FILE_LEN);
}

/// Size of the one segment file in `dir`.
fn only_segment(dir: &Path) -> (std::path::PathBuf, u64) {
    let segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let len = std::fs::metadata(&segs[0]).unwrap().len();
    (segs[0].clone(), len)
}

/// Puts 400 jobs of 1 KiB into one spoke (`delay` s ahead), deletes 300, and checks that the
/// segment shrinks to at most twice its live bytes while every survivor keeps its id, body,
/// priority and state, before and after a reopen.
fn compacts_mostly_dead<S: Segment>(delay: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let mut now = START;
    let mut hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let c = hub.connect();
    let body = |id: u64| format!("{id:>1024}").into_bytes();
    for i in 1..=400u64 {
        let id = hub.put(c, i as u32, delay, 60, &body(i), now).unwrap();
        assert_eq!(id, i);
    }
    let (_, before) = only_segment(tmp.path());
    for id in (1..=400u64).filter(|id| id % 4 != 0) {
        hub.delete(c, id, now).unwrap();
    }
    // A survivor buried (ready first when the spoke is near), so states other than the
    // put's are carried over too.
    hub.kick_job(4, now).unwrap();
    let r = hub.reserve_job(c, 4, now).unwrap();
    assert_eq!(r.id, 4);
    hub.bury(c, 4, 7, now).unwrap();
    // A near spoke is compacted once it has been past for a while (its jobs are ready then).
    let near = u64::from(delay) < NEAR_SPOKES;
    if near {
        now += (u64::from(delay) + 1) * SECOND + COMPACT_AFTER_PAST;
    }
    let survivor = if near { "ready" } else { "delayed" };
    hub.tick(now);
    let (path, after) = only_segment(tmp.path());
    let record = record_len(7, 1024);
    // Compaction keeps dead bytes at most half of a segment: 100 live records of 1,160
    // bytes stay in the space of at most twice as many, placed as the format places them (a
    // record whose state slots would cross a sector after a gap), after the file header (a
    // mapped file also keeps its power-of-two length).
    let twice_live = (0..2 * 100).fold(FILE_HEADER_LEN, |end, _| {
        record_at(FORMAT_VERSION, end) + record
    });
    let used = hub.stats(now).data_bytes;
    assert!(
        after <= before / 2 && used <= twice_live,
        "segment {} was {before} bytes, is {after} ({used} used)",
        path.display()
    );
    // Neither the new file's build name nor the old file's second name is left behind.
    let cdir = tmp.path().join(yaad::segment::COMPACT_DIR);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(!cdir.join(&name).exists());
    assert!(!cdir.join(format!("{name}.old")).exists());
    let check = |hub: &mut Hub<S>| {
        for id in 1..=400u64 {
            let st = hub.stats_job(id, now);
            if id % 4 != 0 {
                assert!(st.is_none(), "deleted job {id} is back");
                continue;
            }
            let st = st.unwrap_or_else(|| panic!("job {id} lost"));
            assert_eq!(hub.peek(id).unwrap().body.as_ref(), body(id).as_slice());
            if id == 4 {
                assert_eq!((st.state, st.pri), ("buried", 7));
            } else {
                assert_eq!((st.state, st.pri), (survivor, id as u32));
            }
        }
    };
    check(&mut hub);
    let next = hub.put(c, 0, delay, 60, b"x", now).unwrap();
    assert_eq!(next, 401);
    hub.delete(c, next, now).unwrap();
    drop(hub);
    let mut hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    check(&mut hub);
    let c = hub.connect();
    assert!(hub.put(c, 0, 0, 60, b"y", now).unwrap() > 401);
}

#[test]
fn lazy_far_segment_mostly_dead_is_compacted() {
    compacts_mostly_dead::<LazySegment>(3600);
}

#[test]
fn lazy_near_segment_mostly_dead_is_compacted() {
    compacts_mostly_dead::<LazySegment>(1);
}

#[test]
fn mapped_far_segment_mostly_dead_is_compacted() {
    compacts_mostly_dead::<MappedSegment>(3600);
}

#[test]
fn mapped_near_segment_mostly_dead_is_compacted() {
    compacts_mostly_dead::<MappedSegment>(1);
}

/// A crash during compaction, before the rename, leaves a partial file (and the old file's
/// second name) in `compact/`: the next open removes them and serves the old segment.
#[test]
fn leftover_compaction_file_is_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let now = START;
    let mut hub: Hub<LazySegment> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let c = hub.connect();
    let id = hub.put(c, 0, 10, 60, b"kept", now).unwrap();
    drop(hub);
    let (path, _) = only_segment(tmp.path());
    let cdir = tmp.path().join(yaad::segment::COMPACT_DIR);
    std::fs::create_dir_all(&cdir).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(cdir.join(&name), b"YAADSEG\0 torn").unwrap();
    std::fs::hard_link(&path, cdir.join(format!("{name}.old"))).unwrap();
    let mut hub: Hub<LazySegment> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    assert!(!cdir.exists());
    assert_eq!(hub.peek(id).unwrap().body.as_ref(), b"kept");
}

/// Start-up time benchmark, not part of CI: `YAAD_OPEN_JOBS=1000000 cargo test --release
/// --test hub_disk open_time -- --ignored --nocapture` puts that many 100-byte jobs one to
/// two hours out (lazy mode; `YAAD_OPEN_MODE=mapped` for mapped), flushes (a clean shutdown),
/// then prints how long `Hub::open` takes to recover them: after the clean shutdown (far
/// spokes from the summary, unread), after a crash (`kill -9`: from the checkpoint the last
/// open wrote, after one more far put), and without any summary (as after a machine crash:
/// every segment scanned).
#[test]
#[ignore]
fn open_time() {
    match std::env::var("YAAD_OPEN_MODE").as_deref() {
        Ok("mapped") => open_time_of::<MappedSegment>("mapped"),
        _ => open_time_of::<LazySegment>("lazy"),
    }
}

fn open_time_of<S: Segment>(mode: &str) {
    let n: u64 = std::env::var("YAAD_OPEN_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let now = START;
    let mut hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let c = hub.connect();
    let body = [b'b'; 100];
    let t = std::time::Instant::now();
    for i in 0..n {
        let delay = 3600 + (i * 7919 % 3600) as u32;
        hub.put(c, 0, delay, 60, &body, now).unwrap();
    }
    hub.flush().unwrap();
    let put_time = t.elapsed();
    drop(hub);
    let t = std::time::Instant::now();
    let hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let clean_time = t.elapsed();
    let st = hub.stats(now);
    assert_eq!(st.current_jobs_delayed, n);
    // A crash: dropped without a flush, after one change noted in the change journal.
    let mut hub = hub;
    let c = hub.connect();
    hub.put(c, 0, 5000, 60, &body, now).unwrap();
    drop(hub);
    let t = std::time::Instant::now();
    let hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let crash_time = t.elapsed();
    assert_eq!(hub.stats(now).current_jobs_delayed, n + 1);
    drop(hub);
    // No summary to trust (as after a machine crash): every segment is scanned.
    std::fs::remove_file(tmp.path().join(yaad::segment::SUMMARY_FILE)).unwrap();
    let t = std::time::Instant::now();
    let hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let scan_time = t.elapsed();
    assert_eq!(hub.stats(now).current_jobs_delayed, n + 1);
    eprintln!(
        "{mode}: {n} jobs in {} spokes, {} MB: put {put_time:?}; Hub::open after a clean \
         shutdown {clean_time:?}, after kill -9 {crash_time:?}, without a summary (machine \
         crash) {scan_time:?}",
        st.spokes,
        st.data_bytes / 1_000_000
    );
}
