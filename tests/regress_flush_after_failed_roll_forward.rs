//! Regression (session 5, found reading the flush for the kill -9 test): a mem-mode flush whose
//! roll forward failed after its commit record (a rename error) left `flush.yaad` and the staged
//! files it names; the next flush began by deleting every staged file, so a crash before that
//! flush's own commit made the next open roll forward a record whose files were gone: a mix of
//! the two snapshots (here a job moved from spoke A to spoke C was in neither: lost).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use yaad::segment::snapshot;
use yaad::segment::{DataDir, SpokeId, segment_file_name};

const A: SpokeId = SpokeId { start: 1, span: 1 };
const B: SpokeId = SpokeId { start: 2, span: 1 };
const C: SpokeId = SpokeId { start: 3, span: 1 };

/// Every segment file in `dir` with its content.
fn segment_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| n.starts_with("seg-"))
        .map(|(n, p)| (n, fs::read(p).unwrap()))
        .collect()
}

fn snap(files: &[(SpokeId, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(s, b)| (segment_file_name(*s), b.to_vec()))
        .collect()
}

#[test]
fn a_flush_after_a_failed_roll_forward_keeps_one_whole_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Snapshot 1: A holds the job, B something else.
    snapshot::stage(d, A, b"a1 job").unwrap();
    snapshot::stage(d, B, b"b1").unwrap();
    snapshot::commit(d, &[A, B].into_iter().collect()).unwrap();
    // Snapshot 2 moves the job to C and drops B. C's rename fails (a directory stands where its
    // file goes), after A's: the record is committed, the roll forward half done.
    snapshot::stage(d, A, b"a2 moved").unwrap();
    snapshot::stage(d, C, b"c2 job").unwrap();
    let obstacle = d.join(segment_file_name(C));
    fs::create_dir(&obstacle).unwrap();
    snapshot::commit(d, &[A, C].into_iter().collect()).unwrap_err();
    fs::remove_dir(&obstacle).unwrap();
    // The next flush starts (the hub's first step), then the process dies before it commits.
    snapshot::begin(d).unwrap();
    drop(DataDir::open(d).unwrap());
    let new = snap(&[(A, b"a2 moved"), (C, b"c2 job")]);
    assert_eq!(
        segment_files(d),
        new,
        "snapshot 2 was committed: it must be whole"
    );
    // And a flush after that completes as usual.
    snapshot::begin(d).unwrap();
    snapshot::stage(d, B, b"b3").unwrap();
    snapshot::commit(d, &[A, B, C].into_iter().collect()).unwrap();
    let mut three = new;
    three.extend(snap(&[(B, b"b3")]));
    assert_eq!(segment_files(d), three);
}
