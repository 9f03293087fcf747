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
