//! Mem-mode flush is all-or-nothing: a crash at every step of a snapshot flush,
//! then `DataDir::open`, leaves exactly the old snapshot or exactly the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use yaad::segment::snapshot::{self, FLUSH_RECORD_FILE, STAGED_SUFFIX};
use yaad::segment::{DataDir, SpokeId, segment_file_name};

const A: SpokeId = SpokeId { start: 1, span: 1 };
const B: SpokeId = SpokeId { start: 2, span: 1 };
const C: SpokeId = SpokeId { start: 3, span: 1 };

/// Every segment file in `dir` with its content (other files must not exist).
fn segment_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "LOCK" {
            continue;
        }
        out.insert(name, fs::read(e.path()).unwrap());
    }
    out
}

fn snap(files: &[(SpokeId, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(s, b)| (segment_file_name(*s), b.to_vec()))
        .collect()
}

/// Old snapshot {A: a1, B: b1}; the new one drops B, changes A and adds C.
fn old_state(dir: &Path) {
    for (s, b) in [(A, &b"a1"[..]), (B, b"b1")] {
        snapshot::stage(dir, s, b).unwrap();
    }
    snapshot::commit(dir, &[A, B].into_iter().collect()).unwrap();
}

const NEW_STAGED: [(SpokeId, &[u8]); 2] = [(A, b"a2"), (C, b"c2")];

fn record_text(live: &[SpokeId]) -> String {
    let mut t = String::from("yaad-flush 1\n");
    for s in live {
        t.push_str(&segment_file_name(*s));
        t.push('\n');
    }
    t + "end\n"
}

#[test]
fn full_commit_gives_the_new_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    old_state(tmp.path());
    assert_eq!(segment_files(tmp.path()), snap(&[(A, b"a1"), (B, b"b1")]));
    for (s, b) in NEW_STAGED {
        snapshot::stage(tmp.path(), s, b).unwrap();
    }
    snapshot::commit(tmp.path(), &[A, C].into_iter().collect()).unwrap();
    let new = snap(&[(A, b"a2"), (C, b"c2")]);
    assert_eq!(segment_files(tmp.path()), new);
    drop(DataDir::open(tmp.path()).unwrap());
    assert_eq!(segment_files(tmp.path()), new);
}

#[test]
fn crash_before_the_record_restores_the_old_snapshot() {
    // After staging k files, with or without a half-written record temp file.
    for k in 0..=NEW_STAGED.len() {
        for torn_record in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            old_state(tmp.path());
            for (s, b) in &NEW_STAGED[..k] {
                snapshot::stage(tmp.path(), *s, b).unwrap();
            }
            if torn_record {
                let t = record_text(&[A, C]);
                fs::write(
                    tmp.path().join(format!("{FLUSH_RECORD_FILE}.tmp")),
                    &t[..t.len() / 2],
                )
                .unwrap();
            }
            drop(DataDir::open(tmp.path()).unwrap());
            assert_eq!(
                segment_files(tmp.path()),
                snap(&[(A, b"a1"), (B, b"b1")]),
                "k={k} torn={torn_record}"
            );
        }
    }
}

#[test]
fn crash_after_the_record_restores_the_new_snapshot() {
    // Record written, then k renames done, then (stale removed?), then (record removed?).
    for renamed in 0..=NEW_STAGED.len() {
        for stale_removed in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let d = tmp.path();
            old_state(d);
            for (s, b) in NEW_STAGED {
                snapshot::stage(d, s, b).unwrap();
            }
            fs::write(d.join(FLUSH_RECORD_FILE), record_text(&[A, C])).unwrap();
            for (s, _) in &NEW_STAGED[..renamed] {
                let name = segment_file_name(*s);
                fs::rename(d.join(format!("{name}{STAGED_SUFFIX}")), d.join(name)).unwrap();
            }
            if stale_removed && renamed == NEW_STAGED.len() {
                fs::remove_file(d.join(segment_file_name(B))).unwrap();
            }
            drop(DataDir::open(d).unwrap());
            assert_eq!(
                segment_files(d),
                snap(&[(A, b"a2"), (C, b"c2")]),
                "renamed={renamed} stale_removed={stale_removed}"
            );
        }
    }
}

#[test]
fn a_failed_commit_leaves_the_old_snapshot_and_a_retry_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    old_state(d);
    snapshot::stage(d, A, b"a2").unwrap();
    // The record cannot be written: a directory stands in its temp file's way.
    fs::create_dir(d.join(format!("{FLUSH_RECORD_FILE}.tmp"))).unwrap();
    let live: BTreeSet<SpokeId> = [A].into_iter().collect();
    snapshot::commit(d, &live).unwrap_err();
    fs::remove_dir(d.join(format!("{FLUSH_RECORD_FILE}.tmp"))).unwrap();
    drop(DataDir::open(d).unwrap());
    assert_eq!(segment_files(d), snap(&[(A, b"a1"), (B, b"b1")]));
    snapshot::begin(d).unwrap();
    snapshot::stage(d, A, b"a2").unwrap();
    snapshot::commit(d, &live).unwrap();
    assert_eq!(segment_files(d), snap(&[(A, b"a2")]));
}

#[test]
fn a_corrupt_record_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    old_state(tmp.path());
    let t = record_text(&[A, C]);
    fs::write(tmp.path().join(FLUSH_RECORD_FILE), &t[..t.len() - 4]).unwrap();
    let err = DataDir::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("ends early"), "{err}");
}
