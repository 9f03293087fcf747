//! A job whose put was synced long ago was lost by a power cut after two state changes within
//! one sync window (bury, then kick): the second change rewrote the slot that held the only
//! durable state, and where that 40-byte slot straddled a 512-byte sector the cut could tear
//! it (one sector new, the other old) while the other slot's write had not reached the disk
//! either: no valid slot, the record was dropped as corrupt. Records are now placed so that
//! neither slot straddles a sector (format v3; a sector is written whole or not at all).

mod common;

use common::hub::{START, persisted, sync};

use yaad::hub::{Hub, ReserveOutcome};
use yaad::segment::format::{FILE_HEADER_LEN, record_len};
use yaad::segment::powercut;
use yaad::segment::{LazySegment, MappedSegment, Segment};

fn two_changes_in_one_window_keep_the_job<S: Segment>() {
    // Job 1's record is sized so that, packed right after it, job 2's first slot (bytes 48..88
    // of its record) would cross the sector boundary at 512.
    let body_1 = vec![b'a'; (440 - FILE_HEADER_LEN - record_len(7, 0)) as usize];
    assert_eq!(FILE_HEADER_LEN + record_len(7, body_1.len()), 440);
    let cuts = tempfile::tempdir().unwrap();
    for seed in 0..200u64 {
        let dir = tempfile::tempdir().unwrap();
        let sim = powercut::register(dir.path(), b"before").unwrap();
        let mut hub = Hub::<S>::open(persisted(dir.path()), START).unwrap();
        let c = hub.connect();
        hub.put(c, 10, 0, 60, &body_1, START).unwrap();
        let id = hub.put(c, 0, 0, 60, b"job two", START).unwrap();
        sync(&mut hub);
        // Two changes of job 2 before the next sync (`-f MS`, or two connections with -f 0).
        assert!(
            matches!(hub.reserve(c, Some(START), START), ReserveOutcome::Reserved(v) if v.id == id)
        );
        hub.bury(c, id, 5, START).unwrap();
        hub.kick_job(id, START).unwrap();
        let image = cuts.path().join(seed.to_string());
        sim.cut_now(seed, &image).unwrap();
        drop(hub);
        drop(sim);
        let mut after = Hub::<S>::open(persisted(&image), START).unwrap();
        let st = after
            .stats_job(id, START)
            .unwrap_or_else(|| panic!("job {id}, put and synced, lost by the cut (seed {seed})"));
        assert!(matches!(st.state, "ready" | "buried"), "{st:?}");
    }
}

#[test]
fn mapped() {
    two_changes_in_one_window_keep_the_job::<MappedSegment>();
}

#[test]
fn lazy() {
    two_changes_in_one_window_keep_the_job::<LazySegment>();
}
