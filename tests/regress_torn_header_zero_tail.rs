//! Regression (found by fuzz target `segment_ops`): a record whose write was cut inside its
//! header, after the CRC-covered part, has a valid header again once a record appended after a
//! reopen fills the missing bytes. The scanner skipped the torn record's declared length, which
//! ends inside the new record, and lost it.

use std::fs::OpenOptions;

use yaad::segment::format::{FILE_HEADER_LEN, RECORD_HEADER_LEN};
use yaad::segment::{
    JobCounters, JobState, LazySegment, MappedSegment, MemSegment, NewRecord, Segment, SpokeId,
    StateSlot, segment_file_name,
};

const SPOKE: SpokeId = SpokeId {
    start: 1_800_000_000_000_000,
    span: 1_000_000,
};

fn job<'a>(id: u64, tube: &'a [u8], body: &'a [u8]) -> NewRecord<'a> {
    NewRecord {
        id,
        trigger_at: SPOKE.start + id,
        created_at: SPOKE.start,
        ttr: 1,
        tube,
        body,
        slot: StateSlot {
            version: 1,
            state: JobState::Waiting,
            priority: 0,
            counters: JobCounters::default(),
        },
    }
}

fn survives<S: Segment>() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(segment_file_name(SPOKE));
    {
        let mut s = S::create(tmp.path(), SPOKE).unwrap();
        let at = s.append(&job(1, b"aaaaaaaaaaa", &[0xab; 24])).unwrap();
        assert_eq!(at, FILE_HEADER_LEN);
        s.flush().unwrap();
    }
    // The write of job 1 stopped 56 bytes into its 128-byte header: the CRC-covered part (48
    // bytes) is whole, its state slots are not.
    let cut = FILE_HEADER_LEN + 56;
    assert!(cut < FILE_HEADER_LEN + RECORD_HEADER_LEN);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(cut))
        .unwrap();
    let second = {
        let mut s = S::open(&path).unwrap();
        let at = s.append(&job(2, b"t", b"appended after a reopen")).unwrap();
        assert!(
            at < FILE_HEADER_LEN + RECORD_HEADER_LEN,
            "appended over the torn header"
        );
        s.flush().unwrap();
        at
    };
    for _ in 0..2 {
        let mut s = S::open(&path).unwrap();
        let found: Vec<(u64, u64)> = s
            .scan()
            .unwrap()
            .into_iter()
            .flatten()
            .map(|m| (m.offset, m.id))
            .collect();
        assert_eq!(
            found,
            vec![(second, 2)],
            "the record appended after the torn one"
        );
        let rec = s.read(second).unwrap();
        assert_eq!(rec.id, 2);
    }
}

#[test]
fn mem_keeps_a_record_appended_over_a_torn_header() {
    survives::<MemSegment>();
}

#[test]
fn mapped_keeps_a_record_appended_over_a_torn_header() {
    survives::<MappedSegment>();
}

#[test]
fn lazy_keeps_a_record_appended_over_a_torn_header() {
    survives::<LazySegment>();
}
