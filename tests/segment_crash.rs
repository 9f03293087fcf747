//! A process that dies without flushing loses nothing in the mapped and lazy modes: stores
//! into the mapping and positioned writes are in the kernel's page cache the moment they
//! return. (A machine crash is another matter: see "What the format assumes of the disk".)

use std::path::Path;
use std::process::Command;

use yaad::segment::{
    JobState, LazySegment, MappedSegment, NewRecord, Segment, SpokeId, StateSlot, segment_file_name,
};

const DIR_ENV: &str = "YAAD_CRASH_CHILD_DIR";
const MODE_ENV: &str = "YAAD_CRASH_CHILD_MODE";
const SPOKE: SpokeId = SpokeId {
    start: 1_900_000_000_000_000,
    span: 1_000_000,
};
const JOBS: u64 = 300;

fn work<S: Segment>(dir: &Path) {
    let mut s = S::create(dir, SPOKE).unwrap();
    let body = vec![b'z'; 700]; // 300 × ~800 bytes: several growths of a mapped file
    let mut offs = vec![];
    for id in 1..=JOBS {
        offs.push(
            s.append(&NewRecord {
                id,
                trigger_at: SPOKE.start,
                created_at: SPOKE.start,
                ttr: 1,
                tube: b"crash",
                name: &[],
                body: &body,
                slot: StateSlot {
                    version: 1,
                    state: JobState::Waiting,
                    priority: 0,
                    counters: Default::default(),
                },
            })
            .unwrap(),
        );
    }
    for &o in offs.iter().step_by(3) {
        s.update(
            o,
            StateSlot {
                version: 2,
                state: JobState::Buried,
                priority: 9,
                counters: Default::default(),
            },
        )
        .unwrap();
    }
    // No flush, no drop: kill -9 ourselves (SIGKILL: no handlers, no core dump).
    let _ = Command::new("kill")
        .args(["-9", &std::process::id().to_string()])
        .status();
    // SIGKILL is delivered at once; if `kill` is missing, fail instead of hanging.
    std::thread::sleep(std::time::Duration::from_secs(10));
    std::process::exit(1);
}

#[test]
#[ignore = "run as a child process by the tests below"]
fn child_writes_then_aborts() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return; // run directly (e.g. --include-ignored): nothing to do
    };
    match std::env::var(MODE_ENV).unwrap().as_str() {
        "mapped" => work::<MappedSegment>(Path::new(&dir)),
        "lazy" => work::<LazySegment>(Path::new(&dir)),
        m => panic!("unknown mode {m}"),
    }
}

fn crash_then_reopen<S: Segment>(mode: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writes_then_aborts",
            "--ignored",
            "--nocapture",
        ])
        .env(DIR_ENV, tmp.path())
        .env(MODE_ENV, mode)
        .output()
        .unwrap()
        .status;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die by SIGKILL: {status:?}"
    );
    let mut s = S::open(&tmp.path().join(segment_file_name(SPOKE))).unwrap();
    let metas: Vec<_> = s.scan().unwrap().into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(metas.len() as u64, JOBS);
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(m.id, i as u64 + 1);
        let want = if i % 3 == 0 {
            JobState::Buried
        } else {
            JobState::Waiting
        };
        assert_eq!(m.slot.state, want, "job {}", m.id);
    }
}

#[test]
fn mapped_survives_a_process_crash_without_flush() {
    crash_then_reopen::<MappedSegment>("mapped");
}

#[test]
fn lazy_survives_a_process_crash_without_flush() {
    crash_then_reopen::<LazySegment>("lazy");
}

fn job(id: u64, body: &[u8]) -> NewRecord<'_> {
    NewRecord {
        id,
        trigger_at: SPOKE.start,
        created_at: SPOKE.start,
        ttr: 1,
        tube: b"torn",
        name: &[],
        body,
        slot: StateSlot {
            version: 1,
            state: JobState::Waiting,
            priority: 0,
            counters: Default::default(),
        },
    }
}

/// Regression: a record write cut short (kill -9 in the middle of it, or a full disk) leaves
/// a torn record at the end of the data; the records appended after it once the segment is
/// reopened were lost at the next reopen, because the scanner skipped the torn record's
/// declared length, which ran over them.
fn records_after_a_torn_tail_survive<S: Segment>() {
    let body = vec![b'q'; 3000];
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(segment_file_name(SPOKE));
    // The bytes job 2's record would have at its offset, from a twin segment.
    let twin = tempfile::tempdir().unwrap();
    let (torn_at, torn) = {
        let mut t = S::create(twin.path(), SPOKE).unwrap();
        t.append(&job(1, &body)).unwrap();
        let at = t.append(&job(2, &body)).unwrap();
        t.flush().unwrap();
        let bytes = std::fs::read(twin.path().join(segment_file_name(SPOKE))).unwrap();
        (at, bytes[at as usize..at as usize + 1000].to_vec())
    };
    {
        let mut s = S::create(tmp.path(), SPOKE).unwrap();
        s.append(&job(1, &body)).unwrap();
        s.flush().unwrap();
    }
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&torn, torn_at).unwrap();
    drop(f);
    {
        let mut s = S::open(&path).unwrap();
        s.append(&job(3, b"after the torn record")).unwrap();
        s.append(&job(4, b"and another")).unwrap();
        s.flush().unwrap();
    }
    let mut s = S::open(&path).unwrap();
    let ids: Vec<u64> = s
        .scan()
        .unwrap()
        .into_iter()
        .flatten()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![1, 3, 4]);
}

#[test]
fn mapped_keeps_records_appended_after_a_torn_tail() {
    records_after_a_torn_tail_survive::<MappedSegment>();
}

#[test]
fn lazy_keeps_records_appended_after_a_torn_tail() {
    records_after_a_torn_tail_survive::<LazySegment>();
}

/// Regression: appends after a reopen continued just past the last non-zero byte, rounded up
/// to 8. A record whose body ends in a zero byte (here 1 byte past an 8-byte boundary, so 7
/// bytes of padding follow) ends later than that: the next append overwrote its last bytes
/// and the acknowledged job was lost at the next reopen (body checksum mismatch).
fn a_record_ending_in_zeros_survives_appends_after_reopen<S: Segment>() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(segment_file_name(SPOKE));
    // 64 (file header) + 80 (record header) + 4 (tube) + 13 (body) = 161, padded to 168; the
    // last non-zero byte is at 159, so "past it, rounded up to 8" is 160, inside the record.
    let body = [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0];
    {
        let mut s = S::create(tmp.path(), SPOKE).unwrap();
        s.append(&job(1, &body)).unwrap();
        s.flush().unwrap();
    }
    {
        let mut s = S::open(&path).unwrap();
        s.append(&job(2, b"second")).unwrap();
        s.flush().unwrap();
    }
    let mut s = S::open(&path).unwrap();
    let got: Vec<_> = s.scan().unwrap();
    let ids: Vec<u64> = got.iter().flatten().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2], "{got:?}");
    assert_eq!(s.read(got[0].as_ref().unwrap().offset).unwrap().body, body);
}

#[test]
fn mapped_keeps_a_record_ending_in_zeros() {
    a_record_ending_in_zeros_survives_appends_after_reopen::<MappedSegment>();
}

#[test]
fn lazy_keeps_a_record_ending_in_zeros() {
    a_record_ending_in_zeros_survives_appends_after_reopen::<LazySegment>();
}

#[test]
fn mem_keeps_a_record_ending_in_zeros() {
    a_record_ending_in_zeros_survives_appends_after_reopen::<yaad::segment::MemSegment>();
}
