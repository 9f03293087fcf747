//! One test suite for every `Segment` implementation: the same contract, the same tests.

use std::fs;
use std::path::{Path, PathBuf};

use yaad::segment::format::{
    FILE_HEADER_LEN, FORMAT_VERSION, RECORD_HEADER_LEN, SECTOR_LEN, record_at, record_len,
};
use yaad::segment::{
    Access, JobState, NewRecord, Record, Segment, SpokeId, StateSlot, StorageError,
    segment_file_name,
};

const SPOKE: SpokeId = SpokeId {
    start: 1_800_000_000_000_000,
    span: 10_000_000,
};

fn slot(version: u32, state: JobState, priority: u32) -> StateSlot {
    StateSlot {
        version,
        state,
        priority,
        counters: Default::default(),
    }
}

fn new_rec<'a>(id: u64, tube: &'a [u8], body: &'a [u8]) -> NewRecord<'a> {
    NewRecord {
        id,
        trigger_at: SPOKE.start + id * 1000,
        created_at: SPOKE.start - 5_000_000,
        ttr: 30 + id as u32,
        tube,
        name: &[],
        body,
        slot: slot(1, JobState::Waiting, 100 + id as u32),
    }
}

fn body_of(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id as usize * 31 + i) as u8).collect()
}

fn check_same(got: &Record, want: &NewRecord<'_>, offset: u64) {
    assert_eq!(got.offset, offset);
    assert_eq!(got.id, want.id);
    assert_eq!(got.trigger_at, want.trigger_at);
    assert_eq!(got.created_at, want.created_at);
    assert_eq!(got.ttr, want.ttr);
    assert_eq!(got.tube, want.tube);
    assert_eq!(got.body, want.body);
    assert_eq!(got.slot, want.slot);
}

/// The ids of every record a scan finds, in file order (each record must read back).
fn scanned_ids<S: Segment>(seg: &mut S) -> Vec<u64> {
    seg.scan()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().id)
        .collect()
}

fn seg_path(dir: &Path) -> PathBuf {
    dir.join(segment_file_name(SPOKE))
}

/// Creates a segment with three records, flushes it, and returns their offsets.
fn three<S: Segment>(dir: &Path) -> Vec<u64> {
    let mut s = S::create(dir, SPOKE).unwrap();
    let offs = vec![
        s.append(&new_rec(1, b"default", b"one")).unwrap(),
        s.append(&new_rec(2, b"emails", b"two two")).unwrap(),
        s.append(&new_rec(3, b"default", b"three three three"))
            .unwrap(),
    ];
    s.flush().unwrap();
    offs
}

/// A scan in bounded steps (`scan_from`) sees the records a whole scan sees, in order; one of
/// whole records (`scan_records_from`) the same steps, each record as `read` gives it.
fn scan_in_steps<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = S::create(dir.path(), SPOKE).unwrap();
    for id in 1..=50u64 {
        let body = body_of(id, (id as usize * 37) % 700);
        s.append(&new_rec(id, b"default", &body)).unwrap();
    }
    s.flush().unwrap();
    drop(s);
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    let whole: Vec<u64> = s
        .scan()
        .unwrap()
        .into_iter()
        .flatten()
        .map(|m| m.id)
        .collect();
    assert_eq!(whole, (1..=50).collect::<Vec<u64>>());
    for step in [1, 3, 7, 50, 64] {
        let mut got = Vec::new();
        let mut from = 0;
        loop {
            let (metas, next) = s.scan_from(from, step).unwrap();
            assert!(metas.len() <= step);
            let (records, next_of_records) = s.scan_records_from(from, step).unwrap();
            assert_eq!(next_of_records, next, "steps of {step} from {from}");
            assert_eq!(records.len(), metas.len());
            for (r, m) in records.into_iter().zip(&metas) {
                let (r, m) = (r.unwrap(), m.as_ref().unwrap());
                assert_eq!(&r.meta(), m);
                assert_eq!(r, s.read(m.offset).unwrap());
            }
            got.extend(metas.into_iter().flatten().map(|m| m.id));
            match next {
                Some(n) => {
                    assert!(n > from, "no progress at {from}");
                    from = n;
                }
                None => break,
            }
        }
        assert_eq!(got, whole, "steps of {step}");
    }
}

/// A freed run: stepped over by scans (one `Freed` record for the run), its pages given back
/// once punched (file modes: the blocks leave the file), the records around it intact, and
/// the same after a reopen; appends go on after the data.
fn free_run_and_punch<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = S::create(dir.path(), SPOKE).unwrap();
    // 2 MiB of 16 KiB bodies (past the size where mem mode gives pages back).
    let body = |id: u64| body_of(id, 16 * 1024);
    let offs: Vec<u64> = (1..=130u64)
        .map(|id| s.append(&new_rec(id, b"default", &body(id))).unwrap())
        .collect();
    // Jobs 2..=129 die; 1 and 130 stay.
    for (i, &o) in offs.iter().enumerate().skip(1).take(128) {
        s.update(o, slot(2, JobState::Deleted, 0)).unwrap();
        assert!(s.record_len(o).unwrap() > 16 * 1024, "record {i}");
    }
    let (start, end) = (offs[1], offs[128] + s.record_len(offs[128]).unwrap());
    s.free_run(start, end - start).unwrap();
    s.flush().unwrap();
    let allocated = |dir: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(seg_path(dir)).map_or(0, |m| m.blocks() * 512)
    };
    let before = allocated(dir.path());
    let (lo, hi) = ((start + 128).div_ceil(4096) * 4096, end / 4096 * 4096);
    s.punch(lo, hi).unwrap();
    let seen = |s: &mut S| -> Vec<(u64, JobState)> {
        s.scan()
            .unwrap()
            .into_iter()
            .map(|m| {
                let m = m.unwrap();
                (m.id, m.slot.state)
            })
            .collect()
    };
    let want = vec![
        (1, JobState::Waiting),
        (2, JobState::Freed),
        (130, JobState::Waiting),
    ];
    assert_eq!(seen(&mut s), want);
    check_same(
        &s.read(offs[0]).unwrap(),
        &new_rec(1, b"default", &body(1)),
        offs[0],
    );
    check_same(
        &s.read(offs[129]).unwrap(),
        &new_rec(130, b"default", &body(130)),
        offs[129],
    );
    let last = s.append(&new_rec(131, b"default", b"after")).unwrap();
    assert!(last >= offs[129] + s.record_len(offs[129]).unwrap());
    s.flush().unwrap();
    // The file's blocks went back (mem: its flush writes the freed pages as holes).
    let after = allocated(dir.path());
    assert!(
        after + (hi - lo) / 2 <= before,
        "punching {} bytes left {after} of {before} allocated",
        hi - lo
    );
    drop(s);
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    let mut want = want;
    want.push((131, JobState::Waiting));
    assert_eq!(seen(&mut s), want);
    // Appends after a reopen go after the data, never into the run.
    let next = s.append(&new_rec(132, b"default", b"x")).unwrap();
    assert!(next > last);
}

fn flip(path: &Path, at: u64) {
    let mut b = fs::read(path).unwrap();
    b[at as usize] ^= 0x04;
    fs::write(path, b).unwrap();
}

fn append_read_scan<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = S::create(dir.path(), SPOKE).unwrap();
    assert_eq!(s.spoke(), SPOKE);
    assert_eq!(s.byte_size(), FILE_HEADER_LEN);
    assert!(s.scan().unwrap().is_empty());
    let bodies: Vec<Vec<u8>> = (1..=5).map(|i| body_of(i, i as usize * 7)).collect();
    let recs: Vec<NewRecord<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| new_rec(i as u64 + 1, b"tube", b))
        .collect();
    let mut offs = vec![];
    for r in &recs {
        let before = s.byte_size();
        let off = s.append(r).unwrap();
        assert_eq!(off, before, "records are appended at the high-water mark");
        assert_eq!(s.byte_size(), before + record_len(4, r.body.len()));
        offs.push(off);
    }
    for (r, &o) in recs.iter().zip(&offs).rev() {
        check_same(&s.read(o).unwrap(), r, o);
    }
    let metas: Vec<_> = s.scan().unwrap().into_iter().map(|m| m.unwrap()).collect();
    assert_eq!(metas.len(), 5);
    for ((m, r), &o) in metas.iter().zip(&recs).zip(&offs) {
        assert_eq!(
            (m.offset, m.id, m.body_len as usize),
            (o, r.id, r.body.len())
        );
        assert_eq!(m.tube, b"tube");
        assert_eq!(m.slot, r.slot);
    }
    // Reading at an offset that is not a record is an error, not a panic.
    assert!(s.read(offs[0] + 8).is_err());
    assert!(s.read(1 << 40).is_err());
    assert!(s.read(3).is_err());
}

fn flush_and_reopen<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    assert_eq!(s.spoke(), SPOKE);
    check_same(
        &s.read(offs[1]).unwrap(),
        &new_rec(2, b"emails", b"two two"),
        offs[1],
    );
    assert_eq!(s.scan().unwrap().len(), 3);
    // Appending after a reopen continues after the last record.
    let o4 = s.append(&new_rec(4, b"x", b"four")).unwrap();
    assert!(o4 > offs[2]);
    s.flush().unwrap();
    drop(s);
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    let ids: Vec<u64> = s
        .scan()
        .unwrap()
        .into_iter()
        .map(|m| m.unwrap().id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    check_same(&s.read(o4).unwrap(), &new_rec(4, b"x", b"four"), o4);
}

fn update_persists<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    s.update(offs[0], slot(2, JobState::Buried, 7)).unwrap();
    s.update(offs[0], slot(3, JobState::Ready, 8)).unwrap();
    s.update(offs[2], slot(9, JobState::Deleted, 1)).unwrap();
    assert_eq!(s.read(offs[0]).unwrap().slot, slot(3, JobState::Ready, 8));
    // A version that does not increase is refused and changes nothing.
    assert!(s.update(offs[0], slot(3, JobState::Moved, 1)).is_err());
    assert!(s.update(offs[0], slot(1, JobState::Moved, 1)).is_err());
    assert!(s.update(offs[0] + 8, slot(10, JobState::Moved, 1)).is_err());
    s.flush().unwrap();
    drop(s);
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    assert_eq!(s.read(offs[0]).unwrap().slot, slot(3, JobState::Ready, 8));
    assert_eq!(s.read(offs[1]).unwrap().slot, new_rec(2, b"", b"").slot);
    let metas: Vec<_> = s.scan().unwrap().into_iter().map(|m| m.unwrap()).collect();
    assert_eq!(metas[2].slot, slot(9, JobState::Deleted, 1));
}

fn grows_past_first_size<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = S::create(dir.path(), SPOKE).unwrap();
    // 160 records of 8 and 20 KiB: well past any first file size, several growths, and
    // records on both sides of mapped mode's `PWRITE_FROM`.
    let len = |id: u64| {
        if id.is_multiple_of(2) {
            20 * 1024
        } else {
            8 * 1024
        }
    };
    let mut offs = vec![];
    for id in 1..=160 {
        let b = body_of(id, len(id));
        offs.push(s.append(&new_rec(id, b"big", &b)).unwrap());
        if id.is_multiple_of(40) {
            // Reads and updates between appends must see the grown segment.
            let probe = offs[id as usize / 2];
            assert_eq!(s.read(probe).unwrap().id, id / 2 + 1);
            s.update(offs[id as usize - 1], slot(2, JobState::Buried, 1))
                .unwrap();
        }
    }
    assert!(s.byte_size() > 160 * 8 * 1024);
    s.flush().unwrap();
    drop(s);
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    for (i, &o) in offs.iter().enumerate() {
        let id = i as u64 + 1;
        let r = s.read(o).unwrap();
        assert_eq!(r.body, body_of(id, len(id)));
        let want = if id.is_multiple_of(40) { 2 } else { 1 };
        assert_eq!(r.slot.version, want, "job {id}");
    }
    assert_eq!(s.scan().unwrap().len(), 160);
}

/// Appends past what the last read mapped, then flushes: lazy mode's flush synced its
/// mapping's range up to the data end, longer than the mapping, and failed (a drain and a
/// shutdown then failed too).
fn flush_after_appends_past_the_last_read<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = S::create(dir.path(), SPOKE).unwrap();
    let first = s.append(&new_rec(1, b"big", &body_of(1, 1024))).unwrap();
    assert_eq!(s.read(first).unwrap().id, 1);
    // 48 records of 64 KiB: 3 MiB, past the first read's mapping (lazy: 1 MiB).
    let mut offs = vec![first];
    for id in 2..=49 {
        let b = body_of(id, 64 * 1024);
        offs.push(s.append(&new_rec(id, b"big", &b)).unwrap());
    }
    assert!(s.byte_size() > 3 << 20);
    s.flush().unwrap();
    drop(s);
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    assert_eq!(s.scan().unwrap().len(), 49);
    let last = s.read(offs[48]).unwrap();
    assert_eq!((last.id, last.body), (49, body_of(49, 64 * 1024)));
}

/// `reserve_ahead` makes the file hold bytes past the data now, so that a prefault reaches
/// them; it changes no byte, and appends and a reopen find the records as before. A segment
/// without a mapping (mem; lazy while closed) names nothing to fault in and grows nothing.
fn reserve_ahead_then_prefault<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    assert_eq!(s.read(offs[0]).unwrap().id, 1, "mapped by a read");
    let end = s.byte_size();
    let before = fs::read(seg_path(dir.path())).unwrap();
    let to = end + 40 * 1024;
    s.reserve_ahead(to).unwrap();
    assert_eq!(s.byte_size(), end, "no data added");
    for access in [Access::Read, Access::Write] {
        let p = s.prefault(end, to, access);
        if !S::FILE_BACKED {
            assert!(p.is_none());
            continue;
        }
        let p = p.expect("a mapped segment names its pages");
        assert!(
            p.bytes().start <= end && p.bytes().end >= to,
            "{:?}",
            p.bytes()
        );
        assert_eq!(p.access(), access);
        p.run();
    }
    let after = fs::read(seg_path(dir.path())).unwrap();
    assert_eq!(after[..before.len()], before[..], "a byte changed");
    assert!(
        after[before.len()..].iter().all(|&b| b == 0),
        "past the data: zeros"
    );
    // Appends go on into the reserved bytes and past them.
    let mut id = 4;
    while s.byte_size() <= to + 4096 {
        s.append(&new_rec(id, b"t", &body_of(id, 900))).unwrap();
        id += 1;
    }
    s.flush().unwrap();
    s.close().unwrap();
    let size = s.byte_size();
    if s.prefault(0, size, Access::Read).is_none() {
        // No mapping (mem; lazy after `close`): nothing is reserved.
        let len = |d: &Path| fs::metadata(seg_path(d)).map(|m| m.len()).ok();
        let was = len(dir.path());
        s.reserve_ahead(size + 64 * 1024).unwrap();
        assert_eq!(len(dir.path()), was, "a segment without a mapping grew");
    }
    drop(s);
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    assert_eq!(scanned_ids(&mut s), (1..id).collect::<Vec<_>>());
}

fn corrupted_at(r: Result<Record, StorageError>, at: u64) {
    match r {
        Err(StorageError::Corrupted { offset, .. }) => assert_eq!(offset, at),
        other => panic!("expected Corrupted at {at}, got {other:?}"),
    }
}

fn flipped_body_byte<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let path = seg_path(dir.path());
    flip(&path, offs[1] + RECORD_HEADER_LEN + 6 + 3); // tube "emails" then body byte 3
    let mut s = S::open(&path).unwrap();
    corrupted_at(s.read(offs[1]), offs[1]);
    assert_eq!(s.read(offs[2]).unwrap().id, 3);
    let scan = s.scan().unwrap();
    assert_eq!(scan.len(), 3);
    assert!(scan[0].is_ok() && scan[1].is_err() && scan[2].is_ok());
    let (mut records, next) = s.scan_records_from(0, 10).unwrap();
    assert_eq!((records.len(), next), (3, None));
    assert_eq!(records.remove(2).unwrap().id, 3);
    corrupted_at(records.remove(1), offs[1]);
    assert_eq!(records.remove(0).unwrap().id, 1);
    // Appends still work and never overwrite the damaged record.
    let o4 = s.append(&new_rec(4, b"t", b"four")).unwrap();
    assert!(o4 > offs[2]);
    assert_eq!(s.read(o4).unwrap().id, 4);
}

fn flipped_header_byte<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let path = seg_path(dir.path());
    flip(&path, offs[0] + 20); // inside trigger_at of the first record
    let mut s = S::open(&path).unwrap();
    corrupted_at(s.read(offs[0]), offs[0]);
    let scan = s.scan().unwrap();
    assert_eq!(scan.len(), 3, "{scan:?}");
    assert!(scan[0].is_err());
    assert_eq!(scan[1].as_ref().unwrap().id, 2);
    assert_eq!(scan[2].as_ref().unwrap().id, 3);
}

fn truncated_tail<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let path = seg_path(dir.path());
    let bytes = fs::read(&path).unwrap();
    let cut = offs[2] + 30;
    fs::write(&path, &bytes[..cut as usize]).unwrap();
    let mut s = S::open(&path).unwrap();
    let scan = s.scan().unwrap();
    assert_eq!(scan.len(), 3);
    assert!(scan[0].is_ok() && scan[1].is_ok());
    assert!(matches!(&scan[2], Err(StorageError::Corrupted { offset, .. }) if *offset == offs[2]));
    corrupted_at(s.read(offs[2]), offs[2]);
    // A new record goes after the torn bytes and reads back.
    let o4 = s.append(&new_rec(4, b"t", b"four")).unwrap();
    assert!(o4 >= cut);
    s.flush().unwrap();
    drop(s);
    let mut s = S::open(&path).unwrap();
    assert_eq!(s.read(o4).unwrap().id, 4);
    assert_eq!(s.read(offs[1]).unwrap().id, 2);
}

fn torn_state_slot<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let path = seg_path(dir.path());
    let mut s = S::open(&path).unwrap();
    s.update(offs[1], slot(2, JobState::Buried, 5)).unwrap(); // goes to slot B
    s.flush().unwrap();
    drop(s);
    // Tear the write of the newer slot (B at +88): its CRC no longer matches.
    flip(&path, offs[1] + 88 + 4);
    let mut s = S::open(&path).unwrap();
    assert_eq!(s.read(offs[1]).unwrap().slot, new_rec(2, b"", b"").slot);
    // The next update then overwrites the torn slot, not the valid one.
    s.update(offs[1], slot(3, JobState::Deleted, 5)).unwrap();
    assert_eq!(s.read(offs[1]).unwrap().slot, slot(3, JobState::Deleted, 5));
}

fn close_and_reuse<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = S::create(dir.path(), SPOKE).unwrap();
    let o1 = s.append(&new_rec(1, b"a", b"x")).unwrap();
    s.close().unwrap();
    let o2 = s.append(&new_rec(2, b"a", b"y")).unwrap();
    s.close().unwrap();
    assert_eq!(s.read(o1).unwrap().id, 1);
    s.close().unwrap();
    s.update(o2, slot(2, JobState::Buried, 0)).unwrap();
    s.close().unwrap();
    assert_eq!(s.scan().unwrap().len(), 2);
    s.close().unwrap();
    s.flush().unwrap();
    s.close().unwrap();
    let size = s.byte_size();
    drop(s);
    let mut s = S::open(&seg_path(dir.path())).unwrap();
    assert_eq!(s.byte_size(), size);
    assert_eq!(s.read(o2).unwrap().slot.state, JobState::Buried);
}

fn destroy_removes_file<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    three::<S>(dir.path());
    let path = seg_path(dir.path());
    assert!(path.exists());
    S::open(&path).unwrap().destroy().unwrap();
    assert!(!path.exists());
}

/// A file-backed segment renamed keeps working under the new name (reads, appends,
/// updates, after a close too) and is destroyed there; a new segment can take the old name
/// meanwhile. A mem segment refuses, its file untouched.
fn rename_then_destroy<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let path = seg_path(dir.path());
    let to = dir.path().join("aside.dead");
    let mut s = S::open(&path).unwrap();
    if !S::FILE_BACKED {
        assert!(s.rename(&to).is_err());
        assert!(path.exists() && !to.exists());
        return;
    }
    s.rename(&to).unwrap();
    assert!(!path.exists() && to.exists());
    let fresh = S::create(dir.path(), SPOKE).unwrap();
    assert_eq!(s.read(offs[1]).unwrap().body, b"two two");
    let o = s.append(&new_rec(4, b"default", b"four")).unwrap();
    s.close().unwrap();
    s.update(o, slot(2, JobState::Buried, 0)).unwrap();
    s.flush().unwrap();
    assert_eq!(s.read(o).unwrap().slot.state, JobState::Buried);
    s.destroy().unwrap();
    assert!(!to.exists());
    assert!(path.exists(), "the new segment's file stays");
    drop(fresh);
}

fn bad_files_are_errors<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let path = seg_path(dir.path());
    assert!(matches!(S::open(&path), Err(StorageError::Io { .. })));
    for content in [&b""[..], b"hello", &[0u8; 200], &[0xAB; 64]] {
        fs::write(&path, content).unwrap();
        match S::open(&path) {
            Err(StorageError::Corrupted { offset: 0, .. }) => {}
            other => panic!("expected a file header error, got {:?}", other.err()),
        }
    }
}

fn bad_input_is_refused<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = S::create(dir.path(), SPOKE).unwrap();
    let long_tube = vec![b'a'; 256];
    assert!(s.append(&new_rec(1, &long_tube, b"x")).is_err());
    let mut r = new_rec(1, b"a", b"x");
    r.slot.version = 0;
    assert!(s.append(&r).is_err());
    assert_eq!(s.byte_size(), FILE_HEADER_LEN);
}

/// `open_sized` with the size a summary stated behaves like `open`; with a stale size (a
/// record appended since) it still finds every record and appends after the last one.
fn open_sized_at_the_stated_or_a_stale_size<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<S>(dir.path());
    let path = seg_path(dir.path());
    let size = S::open(&path).unwrap().byte_size();
    let mut s = S::open_sized(&path, size).unwrap();
    assert_eq!(s.byte_size(), size);
    assert_eq!(s.scan().unwrap().len(), 3);
    let o4 = s.append(&new_rec(4, b"x", b"four")).unwrap();
    assert!(o4 > offs[2]);
    s.flush().unwrap();
    drop(s);
    // The summary's size is now stale (one record short), and one is silly.
    for stated in [size, 1] {
        let mut s = S::open_sized(&path, stated).unwrap();
        assert!(s.byte_size() > size, "stated {stated}");
        let ids: Vec<u64> = s
            .scan()
            .unwrap()
            .into_iter()
            .map(|m| m.unwrap().id)
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }
}

/// A stale size the next record was placed a gap after (format version 3 keeps state slots
/// within a sector): mapped mode saw zeros just past the stated size, took it for the end,
/// missed the record after the gap and would have appended over it.
fn open_sized_at_a_stale_size_before_a_gap<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let path = seg_path(dir.path());
    // One record ending 392 bytes into a sector: the next one's slots would cross it.
    let body = body_of(
        1,
        (SECTOR_LEN + 392 - FILE_HEADER_LEN - RECORD_HEADER_LEN - 7) as usize,
    );
    let size = {
        let mut s = S::create(dir.path(), SPOKE).unwrap();
        s.append(&new_rec(1, b"default", &body)).unwrap();
        s.flush().unwrap();
        s.byte_size()
    };
    let next = record_at(FORMAT_VERSION, size);
    assert_eq!(
        next - size,
        72,
        "the next record goes after the longest gap"
    );
    {
        let mut s = S::open_sized(&path, size).unwrap();
        assert_eq!(s.append(&new_rec(2, b"x", b"two")).unwrap(), next);
        s.flush().unwrap();
    }
    let mut s = S::open_sized(&path, size).unwrap();
    assert!(s.byte_size() > next, "{} <= {next}", s.byte_size());
    let o3 = s.append(&new_rec(3, b"x", b"three")).unwrap();
    assert!(o3 > next);
    let ids: Vec<u64> = s
        .scan()
        .unwrap()
        .into_iter()
        .map(|m| m.unwrap().id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
}

macro_rules! segment_suite {
    ($mod_name:ident, $ty:ty) => {
        mod $mod_name {
            #[test]
            fn append_read_scan() {
                super::append_read_scan::<$ty>();
            }
            #[test]
            fn flush_and_reopen() {
                super::flush_and_reopen::<$ty>();
            }
            #[test]
            fn update_persists() {
                super::update_persists::<$ty>();
            }
            #[test]
            fn grows_past_first_size() {
                super::grows_past_first_size::<$ty>();
            }
            #[test]
            fn flush_after_appends_past_the_last_read() {
                super::flush_after_appends_past_the_last_read::<$ty>();
            }
            #[test]
            fn flipped_body_byte() {
                super::flipped_body_byte::<$ty>();
            }
            #[test]
            fn flipped_header_byte() {
                super::flipped_header_byte::<$ty>();
            }
            #[test]
            fn truncated_tail() {
                super::truncated_tail::<$ty>();
            }
            #[test]
            fn torn_state_slot() {
                super::torn_state_slot::<$ty>();
            }
            #[test]
            fn close_and_reuse() {
                super::close_and_reuse::<$ty>();
            }
            #[test]
            fn destroy_removes_file() {
                super::destroy_removes_file::<$ty>();
            }
            #[test]
            fn rename_then_destroy() {
                super::rename_then_destroy::<$ty>();
            }
            #[test]
            fn bad_files_are_errors() {
                super::bad_files_are_errors::<$ty>();
            }
            #[test]
            fn open_sized_at_the_stated_or_a_stale_size() {
                super::open_sized_at_the_stated_or_a_stale_size::<$ty>();
            }
            #[test]
            fn open_sized_at_a_stale_size_before_a_gap() {
                super::open_sized_at_a_stale_size_before_a_gap::<$ty>();
            }
            #[test]
            fn bad_input_is_refused() {
                super::bad_input_is_refused::<$ty>();
            }
            #[test]
            fn scan_in_steps() {
                super::scan_in_steps::<$ty>();
            }
            #[test]
            fn reserve_ahead_then_prefault() {
                super::reserve_ahead_then_prefault::<$ty>();
            }
            #[test]
            fn free_run_and_punch() {
                super::free_run_and_punch::<$ty>();
            }
        }
    };
}

segment_suite!(mem, yaad::segment::MemSegment);
segment_suite!(mapped, yaad::segment::MappedSegment);
segment_suite!(lazy, yaad::segment::LazySegment);

/// The value of line `key` (`Rss`, `VmFlags`, ...) in the `/proc/self/smaps` entry of the
/// mapping holding `addr`.
fn smaps_line(addr: usize, key: &str) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((lo, hi)) = range.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&addr);
        } else if inside
            && let Some(value) = line.strip_prefix(key).and_then(|l| l.strip_prefix(':'))
        {
            return value.trim().to_owned();
        }
    }
    panic!("no {key} for a mapping at {addr:#x} in /proc/self/smaps");
}

/// The resident memory (`Rss`, bytes) of the mapping that starts at `addr`.
fn mapping_rss(addr: usize) -> u64 {
    let kb = smaps_line(addr, "Rss");
    kb.trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

/// The `VmFlags` of the mapping that starts at `addr`.
fn mapping_flags(addr: usize) -> Vec<String> {
    smaps_line(addr, "VmFlags")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A segment that is only written faults its pages in one at a time (`MADV_RANDOM`, the `rr`
/// flag: no readahead, whose retried fault doubled the faults of appends); the first read
/// turns reading around faults back on, so a load of a cold spoke reads its file in runs. A
/// new lazy mapping made for writing starts without it again.
#[test]
fn written_segments_fault_without_readahead_until_read() {
    use yaad::segment::{LazySegment, MappedSegment};
    let dir = tempfile::tempdir().unwrap();
    let mut m = MappedSegment::create(dir.path(), SPOKE).unwrap();
    let at = m.append(&new_rec(1, b"far", b"job")).unwrap();
    m.update(at, slot(2, JobState::Waiting, 0)).unwrap();
    assert!(mapping_flags(m.mapping_address()).contains(&"rr".into()));
    m.read(at).unwrap();
    assert!(!mapping_flags(m.mapping_address()).contains(&"rr".into()));
    m.destroy().unwrap();

    let mut l = LazySegment::create(dir.path(), SPOKE).unwrap();
    let at = l.append(&new_rec(1, b"far", b"job")).unwrap();
    let addr = l.mapping_address().unwrap();
    assert!(mapping_flags(addr).contains(&"rr".into()));
    l.read(at).unwrap();
    assert!(!mapping_flags(addr).contains(&"rr".into()));
    l.close().unwrap();
    l.update(at, slot(2, JobState::Waiting, 0)).unwrap();
    let addr = l.mapping_address().unwrap();
    assert!(mapping_flags(addr).contains(&"rr".into()));
    assert_eq!(l.scan().unwrap().len(), 1);
    assert!(!mapping_flags(addr).contains(&"rr".into()));
}

/// The lazy mode's promise: an open segment keeps only a window of its appends resident
/// (the pages behind it are dropped from the process), its file runs at most a 64 KiB
/// reserved tail past the data, and `close` unmaps and cuts that tail off, so the closed
/// file ends where its data ends and opens at the size a summary states.
#[test]
fn lazy_appends_keep_a_window_resident_and_close_cuts_the_reserved_tail() {
    use yaad::segment::LazySegment;
    let dir = tempfile::tempdir().unwrap();
    let path = seg_path(dir.path());
    let mut s = LazySegment::create(dir.path(), SPOKE).unwrap();
    let mut offs = vec![];
    // About 4 MiB of records.
    for id in 1..=20_000 {
        offs.push(s.append(&new_rec(id, b"far", &[7u8; 100])).unwrap());
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(
            len >= s.byte_size() && len < s.byte_size() + yaad::segment::LAZY_RESERVE,
            "record {id}: a file of {len} bytes for {} bytes of data",
            s.byte_size()
        );
    }
    assert!(s.byte_size() > 4 << 20);
    let rss = mapping_rss(
        s.mapping_address()
            .expect("appends store through the mapping"),
    );
    assert!(rss <= 32 << 10, "{rss} bytes of appends resident");
    let end = s.byte_size();
    s.flush().unwrap();
    s.close().unwrap();
    assert!(!s.is_mapped());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
    drop(s);
    let mut s = LazySegment::open_sized(&path, end).unwrap();
    assert!(!s.is_mapped(), "open must not map the file");
    assert_eq!(s.byte_size(), end);
    s.update(offs[19_999], slot(2, JobState::Ready, 0)).unwrap();
    s.close().unwrap();
    s.flush().unwrap();
    drop(s);
    let mut s = LazySegment::open(&path).unwrap();
    assert_eq!(s.read(offs[19_999]).unwrap().slot.state, JobState::Ready);
    assert_eq!(s.read(offs[0]).unwrap().id, 1);
}

/// A lazy segment dropped without `close` (the process killed) leaves its reserved tail, zeros
/// past the data: opening finds the data's end, cuts the tail off, and appends go on after
/// the last record. A summary's size no longer matches such a file, so it opens the same way.
#[test]
fn lazy_file_left_with_its_reserved_tail_opens_at_its_data_end() {
    use yaad::segment::LazySegment;
    let dir = tempfile::tempdir().unwrap();
    let path = seg_path(dir.path());
    let mut s = LazySegment::create(dir.path(), SPOKE).unwrap();
    let mut offs = vec![];
    for id in 1..=300 {
        offs.push(s.append(&new_rec(id, b"far", b"future")).unwrap());
    }
    let end = s.byte_size();
    s.flush().unwrap();
    drop(s);
    assert!(std::fs::metadata(&path).unwrap().len() > end);
    let mut s = LazySegment::open_sized(&path, end - 8).unwrap();
    assert_eq!(s.byte_size(), end);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
    let o = s.append(&new_rec(301, b"far", b"later")).unwrap();
    assert!(o >= end, "appended at {o}, inside the data ending at {end}");
    s.flush().unwrap();
    drop(s);
    let mut s = LazySegment::open(&path).unwrap();
    assert_eq!(scanned_ids(&mut s), (1..=301).collect::<Vec<_>>());
}

/// The server's cycle on a lazy segment: append a record, read it back at once, update it.
/// The mapping made for the first read covers more than the file (map ahead), so later
/// records are read and updated through it; past its length (1 MiB) it is made again.
#[test]
fn lazy_reads_and_updates_each_record_right_after_its_append() {
    use yaad::segment::LazySegment;
    let dir = tempfile::tempdir().unwrap();
    let mut s = LazySegment::create(dir.path(), SPOKE).unwrap();
    let mut offs = vec![];
    // 600 records of 3 KiB: about 1.9 MiB, so the first mapping is outgrown.
    for id in 1..=600 {
        let b = body_of(id, 3 * 1024);
        let o = s.append(&new_rec(id, b"cycle", &b)).unwrap();
        let r = s.read(o).unwrap();
        assert_eq!((r.id, r.body.as_slice()), (id, b.as_slice()));
        s.update(o, slot(2, JobState::Deleted, 7)).unwrap();
        assert_eq!(s.read(o).unwrap().slot.state, JobState::Deleted);
        offs.push(o);
    }
    assert!(s.byte_size() > 1 << 20);
    s.flush().unwrap();
    drop(s);
    let mut s = LazySegment::open(&seg_path(dir.path())).unwrap();
    let metas = s.scan().unwrap();
    assert_eq!(metas.len(), 600);
    for (m, &o) in metas.iter().zip(&offs) {
        let m = m.as_ref().unwrap();
        assert_eq!(m.offset, o);
        assert_eq!(m.slot.state, JobState::Deleted);
    }
}

/// Files written by one mode open in the others (the layout is the same).
#[test]
fn modes_read_each_others_files() {
    use yaad::segment::{LazySegment, MappedSegment, MemSegment};
    let dir = tempfile::tempdir().unwrap();
    let offs = three::<MappedSegment>(dir.path());
    let path = seg_path(dir.path());
    let mut m = MemSegment::open(&path).unwrap();
    assert_eq!(m.read(offs[2]).unwrap().id, 3);
    let o4 = m.append(&new_rec(4, b"x", b"four")).unwrap();
    m.flush().unwrap();
    let mut l = LazySegment::open(&path).unwrap();
    assert_eq!(l.read(o4).unwrap().id, 4);
    let o5 = l.append(&new_rec(5, b"x", b"five")).unwrap();
    l.flush().unwrap();
    drop(l);
    let mut mp = MappedSegment::open(&path).unwrap();
    assert_eq!(scanned_ids(&mut mp), vec![1, 2, 3, 4, 5]);
    assert_eq!(mp.read(o5).unwrap().id, 5);
}
