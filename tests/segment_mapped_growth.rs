//! Mapped segment files doubled whenever a record did not fit, so their allocated disk was up
//! to twice their data (2× lazy mode's with jobs spread over days): a file grows by a quarter
//! now, and its allocated blocks stay within 1.25× the data plus one 64 KiB step.

use std::os::unix::fs::MetadataExt;

use yaad::segment::{
    INITIAL_FILE_LEN, JobState, MappedSegment, NewRecord, Segment, SpokeId, StateSlot, grown_len,
};

const SPOKE: SpokeId = SpokeId {
    start: 1_000_000,
    span: 1_000_000,
};

#[test]
fn allocated_disk_stays_within_a_quarter_of_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = MappedSegment::create(dir.path(), SPOKE).unwrap();
    let body = [7u8; 100];
    let path = seg.path().to_path_buf();
    let mut grew = 0;
    let mut len = std::fs::metadata(&path).unwrap().len();
    for id in 1..=60_000u64 {
        seg.append(&NewRecord {
            id,
            trigger_at: SPOKE.start,
            created_at: SPOKE.start,
            ttr: 1,
            tube: b"default",
            name: &[],
            body: &body,
            slot: StateSlot {
                version: 1,
                state: JobState::Waiting,
                priority: 0,
                counters: Default::default(),
            },
        })
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        if meta.len() != len {
            grew += 1;
            len = meta.len();
        }
        let data = seg.byte_size();
        let allocated = meta.blocks() * 512;
        assert!(
            allocated <= data + data / 4 + INITIAL_FILE_LEN,
            "record {id}: {allocated} bytes allocated for {data} bytes of data"
        );
    }
    // Over 10 MiB of data: O(log n) growth steps, not one per 64 KiB.
    assert!(seg.byte_size() > 10 << 20);
    eprintln!("{} bytes of data, {grew} growth steps", seg.byte_size());
    assert!(grew <= 30, "{grew} growth steps");
}

#[test]
fn growth_is_a_quarter_at_least_one_step_in_whole_steps() {
    assert_eq!(
        grown_len(INITIAL_FILE_LEN, INITIAL_FILE_LEN + 1),
        2 * INITIAL_FILE_LEN
    );
    assert_eq!(grown_len(16 * INITIAL_FILE_LEN, 1), 20 * INITIAL_FILE_LEN);
    assert_eq!(
        grown_len(16 * INITIAL_FILE_LEN, 30 * INITIAL_FILE_LEN + 5),
        31 * INITIAL_FILE_LEN
    );
    assert_eq!(grown_len(17 * INITIAL_FILE_LEN, 1), 22 * INITIAL_FILE_LEN);
    assert_eq!(grown_len(u64::MAX - 10, u64::MAX), u64::MAX);
}
