//! Golden files: segment files written by format version 2 and `yaad-dump`'s expected output;
//! `tests/golden/v1/` keeps a version 1 file, which today's code must refuse clearly.
//!
//! The files in `tests/golden/` are never rewritten by the normal tests. If one of these tests
//! fails, the format or the dump output changed: that needs a new format version (see
//! `storage-format.md`), not new golden files. Only a deliberate, reviewed change regenerates
//! them: `YAAD_BLESS=1 cargo test --test segment_golden -- --ignored bless`.

use std::path::{Path, PathBuf};

use yaad::segment::dump::{DumpOptions, EXIT_DAMAGED, run};
use yaad::segment::format::RECORD_HEADER_LEN;
use yaad::segment::{
    IdIndex, JobCounters, JobLocation, JobState, LazySegment, MappedSegment, MemSegment, NewRecord,
    Segment, SpokeId, StateSlot, segment_file_name,
};

const GOLDEN: &str = "tests/golden";
const CLEAN: SpokeId = SpokeId {
    start: 1_700_000_000_000_000,
    span: 1_000_000,
};
const DAMAGED: SpokeId = SpokeId {
    start: 1_700_000_001_000_000,
    span: 1_000_000,
};

fn slot(version: u32, state: JobState, priority: u32) -> StateSlot {
    // Some non-zero counters, so the golden files show where they go.
    StateSlot {
        version,
        state,
        priority,
        counters: JobCounters {
            reserves: version - 1,
            timeouts: version / 3,
            releases: version / 2,
            buries: u32::from(state == JobState::Buried),
            kicks: version / 4,
        },
    }
}

/// (tube, body, trigger offset in the spoke, ttr, priority)
type GoldenJob<'a> = (&'a [u8], &'a [u8], u64, u32, u32);

/// Writes the golden records into `seg` and returns their offsets. Covers: a plain job, a
/// long text body (preview cut), an update into slot B, two updates (back into slot A), an
/// empty body, binary bytes that need escaping, and a moved job.
fn write_golden<S: Segment>(seg: &mut S, base_id: u64) -> Vec<u64> {
    let t0 = seg.spoke().start;
    let long: Vec<u8> =
        b"Dear customer, your order #12345 has shipped and will arrive soon.".to_vec();
    let binary = [0u8, 1, 2, 0xff, b'\n', b'"', b'\\', b'\r', b'\t', 0x7f];
    let recs: [GoldenJob<'_>; 5] = [
        (b"default", b"hello", 500_000, 60, 1024),
        (b"emails", &long, 250_000, 120, 100),
        (b"default", b"", 0, 1, 0),
        (b"bin", &binary, 999_999, 3600, 4_294_967_295),
        (b"default", b"moved away", 10, 30, 5),
    ];
    let mut offs = vec![];
    for (i, (tube, body, dt, ttr, pri)) in recs.iter().enumerate() {
        let id = base_id + i as u64;
        let rec = NewRecord {
            id,
            trigger_at: t0 + dt,
            created_at: t0 - 3_000_000 + i as u64,
            ttr: *ttr,
            tube,
            body,
            slot: slot(1, JobState::Waiting, *pri),
        };
        offs.push(seg.append(&rec).unwrap());
    }
    seg.update(offs[1], slot(2, JobState::Buried, 100)).unwrap();
    seg.update(offs[2], slot(2, JobState::Ready, 0)).unwrap();
    seg.update(offs[2], slot(3, JobState::Deleted, 0)).unwrap();
    seg.update(offs[4], slot(7, JobState::Moved, 5)).unwrap();
    offs
}

/// The damage applied to the second golden file: a flipped body bit in job 12, a flipped
/// header bit in job 13 (the scanner resyncs), and the last record cut short.
fn damage(bytes: &mut Vec<u8>, offs: &[u64]) {
    bytes[(offs[1] + RECORD_HEADER_LEN + 6 + 10) as usize] ^= 0x01;
    bytes[(offs[2] + 8) as usize] ^= 0x80;
    let cut = bytes.len() - 10;
    bytes.truncate(cut);
}

fn clean_path() -> PathBuf {
    Path::new(GOLDEN).join(segment_file_name(CLEAN))
}

fn damaged_path() -> PathBuf {
    Path::new(GOLDEN).join(segment_file_name(DAMAGED))
}

/// The bytes the golden records produce today, for `spoke`, through `MemSegment`.
fn image(spoke: SpokeId, base_id: u64) -> (Vec<u8>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = MemSegment::create(dir.path(), spoke).unwrap();
    let offs = write_golden(&mut seg, base_id);
    seg.flush().unwrap();
    let bytes = std::fs::read(dir.path().join(segment_file_name(spoke))).unwrap();
    (bytes, offs)
}

fn dump(paths: &[PathBuf], opts: DumpOptions) -> (String, u8) {
    let mut out = vec![];
    let mut err = vec![];
    let code = run(paths, opts, &mut out, &mut err);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    (String::from_utf8(out).unwrap(), code)
}

/// The expected outputs: (file name in tests/golden, paths, options).
fn expected_outputs() -> Vec<(&'static str, Vec<PathBuf>, DumpOptions)> {
    let both = vec![PathBuf::from(GOLDEN)];
    vec![
        ("dump.txt", both.clone(), DumpOptions::default()),
        (
            "dump.jsonl",
            both.clone(),
            DumpOptions {
                json: true,
                ..Default::default()
            },
        ),
        (
            "check.txt",
            both,
            DumpOptions {
                check: true,
                ..Default::default()
            },
        ),
        (
            "body.txt",
            vec![clean_path()],
            DumpOptions {
                body: true,
                ..Default::default()
            },
        ),
    ]
}

#[test]
fn golden_files_are_what_this_version_writes() {
    let (clean, _) = image(CLEAN, 1);
    assert_eq!(std::fs::read(clean_path()).unwrap(), clean, "clean file");
    let (mut damaged, offs) = image(DAMAGED, 11);
    damage(&mut damaged, &offs);
    assert_eq!(
        std::fs::read(damaged_path()).unwrap(),
        damaged,
        "damaged file"
    );
}

#[test]
fn every_mode_writes_the_same_bytes() {
    let golden = std::fs::read(clean_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(CLEAN));
    {
        let mut s = MappedSegment::create(dir.path(), CLEAN).unwrap();
        write_golden(&mut s, 1);
        s.flush().unwrap();
        assert_eq!(s.byte_size(), golden.len() as u64);
    }
    let mapped = std::fs::read(&path).unwrap();
    assert_eq!(&mapped[..golden.len()], &golden[..]);
    assert!(mapped[golden.len()..].iter().all(|&b| b == 0), "zero tail");
    std::fs::remove_file(&path).unwrap();
    {
        let mut s = LazySegment::create(dir.path(), CLEAN).unwrap();
        write_golden(&mut s, 1);
        s.flush().unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), golden);
}

#[test]
fn golden_files_read_back_the_same() {
    for (name, paths, opts) in expected_outputs() {
        let want = std::fs::read_to_string(Path::new(GOLDEN).join(name)).unwrap();
        let (got, code) = dump(&paths, opts);
        assert_eq!(got, want, "{name}");
        let expect_code = if paths.len() == 1 && paths[0] == clean_path() {
            0
        } else {
            EXIT_DAMAGED
        };
        assert_eq!(code, expect_code, "{name}");
    }
    // And through the Segment API, in every mode.
    let (_, offs) = image(CLEAN, 1);
    let mut m = MemSegment::open(&clean_path()).unwrap();
    let r = m.read(offs[2]).unwrap();
    assert_eq!((r.id, r.slot), (3, slot(3, JobState::Deleted, 0)));
    let r = m.read(offs[1]).unwrap();
    assert_eq!(
        (r.id, r.slot.state, r.tube.as_slice()),
        (2, JobState::Buried, &b"emails"[..])
    );
}

#[test]
fn format_version_1_is_refused_with_a_clear_message() {
    let v1 = Path::new(GOLDEN).join("v1").join(segment_file_name(CLEAN));
    let why = |e: String| {
        assert!(
            e.contains("format version 1") && e.contains("reads only version 2"),
            "{e}"
        );
    };
    fn refusal<S: Segment>(path: &Path) -> String {
        match S::open(path) {
            Ok(_) => panic!("a version 1 file was opened"),
            Err(e) => e.to_string(),
        }
    }
    why(refusal::<MemSegment>(&v1));
    why(refusal::<MappedSegment>(&v1));
    why(refusal::<LazySegment>(&v1));
    let mut out = vec![];
    let mut err = vec![];
    let code = run(&[v1], DumpOptions::default(), &mut out, &mut err);
    assert_ne!(code, 0);
    let all = String::from_utf8_lossy(&out).into_owned() + &String::from_utf8_lossy(&err);
    why(all);
}

/// The id index of the clean golden file, written into `dir/ids.yaad`: jobs 1..=5, job 3
/// (deleted) removed again.
fn ids_image(dir: &Path) -> Vec<u8> {
    let (_, offs) = image(CLEAN, 1);
    let path = dir.join("ids.yaad");
    let mut ix = IdIndex::open(&path).unwrap();
    for (i, &offset) in offs.iter().enumerate() {
        let loc = JobLocation {
            spoke: CLEAN,
            offset,
        };
        ix.set(i as u64 + 1, loc).unwrap();
    }
    ix.remove(3).unwrap();
    ix.flush().unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn golden_id_index_is_what_this_version_writes_and_reads() {
    let golden = std::fs::read(Path::new(GOLDEN).join("ids.yaad")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(ids_image(tmp.path()), golden);
    // Read a copy (opening never rewrites, but the golden file stays untouched regardless).
    let copy = tmp.path().join("copy.yaad");
    std::fs::write(&copy, &golden).unwrap();
    let ix = IdIndex::open(&copy).unwrap();
    let (_, offs) = image(CLEAN, 1);
    assert_eq!(
        ix.get(2).unwrap(),
        Some(JobLocation {
            spoke: CLEAN,
            offset: offs[1]
        })
    );
    assert_eq!(ix.get(3).unwrap(), None);
    assert_eq!(ix.high_water().unwrap(), 5);
}

#[test]
#[ignore = "regenerates tests/golden: only for a deliberate format or output change"]
fn bless() {
    if std::env::var_os("YAAD_BLESS").is_none() {
        eprintln!("set YAAD_BLESS=1 to rewrite tests/golden; nothing written");
        return;
    }
    let (clean, _) = image(CLEAN, 1);
    std::fs::write(clean_path(), clean).unwrap();
    let (mut damaged, offs) = image(DAMAGED, 11);
    damage(&mut damaged, &offs);
    std::fs::write(damaged_path(), damaged).unwrap();
    for (name, paths, opts) in expected_outputs() {
        let (out, _) = dump(&paths, opts);
        std::fs::write(Path::new(GOLDEN).join(name), out).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(Path::new(GOLDEN).join("ids.yaad"), ids_image(tmp.path())).unwrap();
}
