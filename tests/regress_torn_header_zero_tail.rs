//! Regression (found by fuzz target `segment_ops`): a record whose write was cut inside its
//! header, after the CRC-covered part, has a valid header again once a record appended after a
//! reopen fills the missing bytes. The scanner skipped the torn record's declared length, which
//! ends inside the new record, and lost it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use yaad::segment::format::{FILE_HEADER_LEN, RECORD_HEADER_LEN, encode_record, record_len};
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
        name: &[],
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
    // A record written over the torn header's missing part (as an append at the last non-zero
    // byte once did): its bytes complete the torn header's state slots.
    let second = cut;
    let image = encode_record(second, &job(2, b"t", b"appended after a reopen"));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.write_all_at(&image, second))
        .unwrap();
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

/// Regression (fuzz target `segment_ops`, input fuzz/regressions/segment_ops-header-cut-short):
/// a file cut inside a record's header, in its state slots. Appends after a reopen went at the
/// last non-zero byte, inside the record the header claims, and the next scan lost them. Now
/// they go after the claimed record, and the cut one is reported, never served.
fn appends_after_a_cut_header_survive<S: Segment>() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(segment_file_name(SPOKE));
    let body = [0xcd; 40];
    let (first, torn) = {
        let mut s = S::create(tmp.path(), SPOKE).unwrap();
        let first = s.append(&job(1, b"one", &body)).unwrap();
        let torn = s.append(&job(2, b"two", &body)).unwrap();
        s.flush().unwrap();
        (first, torn)
    };
    // Cut in job 2's second state slot.
    let cut = torn + RECORD_HEADER_LEN - 8;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(cut))
        .unwrap();
    let mut appended = Vec::new();
    for id in 3..5 {
        let mut s = S::open(&path).unwrap();
        let at = s
            .append(&job(id, b"later", b"appended after a reopen"))
            .unwrap();
        assert!(
            at >= torn + record_len(3, body.len()),
            "job {id} appended at {at}, inside the cut record at {torn}"
        );
        s.flush().unwrap();
        appended.push((at, id));
    }
    let mut s = S::open(&path).unwrap();
    let found: Vec<(u64, u64)> = s
        .scan()
        .unwrap()
        .into_iter()
        .flatten()
        .map(|m| (m.offset, m.id))
        .collect();
    let mut want = vec![(first, 1)];
    want.extend(appended);
    assert_eq!(found, want, "job 2 was cut; everything else stays");
}

#[test]
fn mem_appends_after_a_cut_header() {
    appends_after_a_cut_header_survive::<MemSegment>();
}

#[test]
fn mapped_appends_after_a_cut_header() {
    appends_after_a_cut_header_survive::<MappedSegment>();
}

#[test]
fn lazy_appends_after_a_cut_header() {
    appends_after_a_cut_header_survive::<LazySegment>();
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
