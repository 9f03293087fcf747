//! The `yaad-dump` binary end to end: exit codes, damage reports, bad inputs.

use std::path::Path;
use std::process::{Command, Output};

use yaad::segment::format::{FORMAT_VERSION, RECORD_HEADER_LEN};
use yaad::segment::{
    DataDir, JobState, MappedSegment, NewRecord, Segment, SpokeId, StateSlot, segment_file_name,
};

const SPOKE: SpokeId = SpokeId {
    start: 1_750_000_000_000_000,
    span: 60_000_000,
};

fn dump(args: &[&str], paths: &[&Path]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_yaad-dump"))
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A data dir with one mapped segment of three jobs; returns the dir, file and offsets.
fn data_dir() -> (tempfile::TempDir, std::path::PathBuf, Vec<u64>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut seg = MappedSegment::create(tmp.path(), SPOKE).unwrap();
    let mut offs = vec![];
    for id in 1..=3u64 {
        let body = format!("job number {id}");
        offs.push(
            seg.append(&NewRecord {
                id,
                trigger_at: SPOKE.start + id,
                created_at: SPOKE.start,
                ttr: 10,
                tube: b"default",
                name: &[],
                body: body.as_bytes(),
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
    seg.flush().unwrap();
    let path = tmp.path().join(segment_file_name(SPOKE));
    (tmp, path, offs)
}

#[test]
fn check_passes_a_clean_file_and_catches_one_flipped_body_bit() {
    let (_tmp, path, offs) = data_dir();
    let ok = dump(&["--check"], &[&path]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    assert!(text(&ok.stdout).contains("ok: 3 valid records"));

    let mut bytes = std::fs::read(&path).unwrap();
    let at = offs[1] + RECORD_HEADER_LEN + 7 + 4; // tube "default", then body byte 4
    bytes[at as usize] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let bad = dump(&["--check"], &[&path]);
    assert_eq!(bad.status.code(), Some(1));
    let out = text(&bad.stdout);
    let needle = format!(
        "{}: offset {}: job 2: body checksum mismatch",
        path.display(),
        offs[1]
    );
    assert!(out.contains(&needle), "{out}");
    assert!(out.contains("DAMAGED: 2 valid records, 1 damaged"), "{out}");
}

#[test]
fn dumps_a_locked_live_data_dir_without_taking_its_lock() {
    let (tmp, _path, _) = data_dir();
    let _lock = DataDir::open(tmp.path()).unwrap();
    let out = dump(&[], &[tmp.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert_eq!(s.lines().filter(|l| l.starts_with('@')).count(), 3, "{s}");
    assert!(s.contains("body=\"job number 2\""), "{s}");
    // The lock is still ours: dumping did not disturb it.
    assert!(DataDir::open(tmp.path()).is_err());
}

#[test]
fn json_lines_are_json() {
    let (_tmp, path, _) = data_dir();
    let out = dump(&["--json", "--body"], &[&path]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["type"], "file");
    assert_eq!(lines[0]["spoke_start_us"], SPOKE.start);
    assert_eq!(lines[3]["id"], 3);
    assert_eq!(lines[3]["body"], "job number 3");
    assert_eq!(lines[3]["state"], "waiting");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty.yaad", b"", "empty file"),
        ("short.yaad", b"YAADSEG\0\x01", "too short"),
        ("foreign.yaad", &[b'#'; 100], "not a yaad segment file"),
        ("zeros.yaad", &[0; 64], "not a yaad segment file"),
    ];
    for (name, content, msg) in cases {
        let p = tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        for args in [&[][..], &["--check"], &["--json"]] {
            let out = dump(args, &[&p]);
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}");
            assert!(
                text(&out.stdout).contains(msg),
                "{name}: {}",
                text(&out.stdout)
            );
        }
    }
    let missing = tmp.path().join("missing.yaad");
    let out = dump(&[], &[&missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.yaad"));
    // A dir without segment files says so.
    let out = dump(&[], &[tmp.path()]);
    assert!(text(&out.stderr).contains("no segment files"));
    // No paths at all is a usage error.
    assert_eq!(dump(&[], &[]).status.code(), Some(2));
}

#[test]
fn truncated_file_keeps_earlier_records() {
    let (_tmp, path, offs) = data_dir();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..offs[2] as usize + 20]).unwrap();
    let out = dump(&[], &[&path]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(s.contains("id=1 ") && s.contains("id=2 "), "{s}");
    assert!(s.contains(&format!("@{} BAD truncated", offs[2])), "{s}");
}

/// Each file's own format version is printed: the dump printed today's version for every file,
/// so a version 2 file showed as version 3.
#[test]
fn prints_each_files_own_format_version() {
    let name = segment_file_name(SpokeId {
        start: 1_700_000_000_000_000,
        span: 1_000_000,
    });
    for (dir, version) in [("tests/golden/v2", 2), ("tests/golden", FORMAT_VERSION)] {
        let path = Path::new(dir).join(&name);
        let out = dump(&["--json"], &[&path]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        let first = text(&out.stdout).lines().next().unwrap().to_string();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(v["format_version"], version, "{first}");
        let out = dump(&[], &[&path]);
        let head = format!("{}: format {version}, spoke", path.display());
        assert!(
            text(&out.stdout).starts_with(&format!("== {head}")),
            "{}",
            text(&out.stdout)
        );
    }
}
