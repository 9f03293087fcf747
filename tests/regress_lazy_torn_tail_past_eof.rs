//! Regression (found by fuzz target `segment_ops`): a segment file cut inside its last record
//! (an append torn by a crash) still has that record's header, which claims the record's whole
//! length, and appends go after it. In lazy mode the segment's data end was then past the end
//! of the file, and a read through its mapping (which reaches past the end of the file) touched
//! pages the file did not cover: SIGBUS, the process killed, at every start that loaded the
//! spoke. A torn tail must cost only the torn record.

use std::fs::OpenOptions;

use yaad::segment::format::FILE_HEADER_LEN;
use yaad::segment::{
    JobCounters, JobState, LazySegment, MappedSegment, NewRecord, Segment, SpokeId, StateSlot,
    segment_file_name,
};

const SPOKE: SpokeId = SpokeId {
    start: 1_800_000_000_000_000,
    span: 1_000_000,
};

fn job(id: u64, body: &[u8]) -> NewRecord<'_> {
    NewRecord {
        id,
        trigger_at: SPOKE.start + id,
        created_at: SPOKE.start,
        ttr: 1,
        tube: b"default",
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
    let big = vec![7u8; 60_000];
    let torn_at;
    {
        let mut s = S::create(tmp.path(), SPOKE).unwrap();
        assert_eq!(s.append(&job(1, b"first")).unwrap(), FILE_HEADER_LEN);
        torn_at = s.append(&job(2, &big)).unwrap();
        s.flush().unwrap();
    }
    // The write of job 2 stopped a page into it: its header is whole, 14 pages of it are not.
    let cut = (torn_at / 4096 + 2) * 4096;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(cut))
        .unwrap();

    let mut s = S::open(&path).unwrap();
    s.close().unwrap();
    let scan = s.scan().unwrap();
    assert_eq!(scan.len(), 2, "{scan:?}");
    assert_eq!(scan[0].as_ref().unwrap().id, 1);
    assert!(scan[1].is_err(), "the torn record is reported");
    assert_eq!(s.read(FILE_HEADER_LEN).unwrap().body, b"first");
    let at = s.append(&job(3, b"after the tear")).unwrap();
    assert!(at > torn_at, "appends go after the torn record");
    s.flush().unwrap();
    drop(s);

    let mut s = S::open(&path).unwrap();
    let ids: Vec<u64> = s
        .scan()
        .unwrap()
        .into_iter()
        .flatten()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, [1, 3]);
    assert_eq!(s.read(at).unwrap().body, b"after the tear");
}

#[test]
fn lazy() {
    survives::<LazySegment>();
}

#[test]
fn mapped() {
    survives::<MappedSegment>();
}
