//! Disk use stays bounded by live data under release-with-delay churn (beanstalkd's binlog
//! grows without bound on this: its issues #599 and #622), and retired spokes' files are gone.

use std::path::Path;

use yaad::hub::{Hub, HubConfig, ReleaseOutcome, ReserveOutcome, SECOND};
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
    // One record: 80-byte header + tube "default" + body, padded to 8.
    let record = (80 + 7 + BODY as u64).div_ceil(8) * 8;
    let live = JOBS * record;
    // Spokes that can hold live jobs at once: the current one, MAX_DELAY ahead, and the one
    // just past that is retired on the next tick.
    let max_spokes = MAX_DELAY + 2;
    let ids = 64 + 32 * (JOBS + 1);
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
    // Lazy files grow by exactly their records: only the 64-byte file header per file.
    churn::<LazySegment>(64);
}

#[test]
fn mapped_release_churn_keeps_disk_bounded() {
    // Mapped files are preallocated to INITIAL_FILE_LEN.
    churn::<MappedSegment>(yaad::segment::INITIAL_FILE_LEN);
}
