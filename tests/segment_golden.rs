//! Golden files: segment files and an id index written by each format version this yaad reads,
//! and `yaad-dump`'s expected output beside them. `tests/golden/` holds those of today's
//! version ([`FORMAT_VERSION`], 5: with a freed run and a named job), `tests/golden/v4/`,
//! `tests/golden/v3/` and `tests/golden/v2/` those of versions 4, 3 and 2 (still read, and
//! appended to in their own layout);
//! `tests/golden/v1/` keeps a version 1 file, which today's code must refuse clearly.
//!
//! The golden files are never rewritten by the normal tests. If one of these tests fails, the
//! format or the dump output changed: that needs a new format version (see
//! `storage-format.md`), not new golden files. Only a deliberate, reviewed change regenerates
//! those of today's version: `YAAD_BLESS=1 cargo test --test segment_golden -- --ignored bless`.
//! An older version's files are never regenerated (today's code cannot create such a file):
//! when the version changes, move today's files to `tests/golden/v<N>/` first, as `v2/` was.

use std::path::{Path, PathBuf};

use yaad::segment::dump::{DumpOptions, EXIT_DAMAGED, run};
use yaad::segment::format::{
    FILE_HEADER_LEN, FORMAT_VERSION, FREED_RUNS_SINCE, NAMES_SINCE, OLDEST_READ_VERSION,
    RECORD_HEADER_LEN, encode_file_header, record_at, scan_records,
};
use yaad::segment::{
    IdIndex, JobCounters, JobLocation, JobState, LazySegment, MappedSegment, MemSegment, NewRecord,
    Segment, SpokeId, StateSlot, segment_file_name,
};

/// Each format version with golden files, and the directory holding them.
const GOLDEN: [(u32, &str); 4] = [
    (FORMAT_VERSION, "tests/golden"),
    (4, "tests/golden/v4"),
    (3, "tests/golden/v3"),
    (2, "tests/golden/v2"),
];

/// Jobs of the golden records in every version; from [`FREED_RUNS_SINCE`] two more, deleted
/// and freed as one run (one record in a scan); from [`NAMES_SINCE`] a named one.
const JOBS: usize = 5;
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
/// empty body, binary bytes that need escaping, and a moved job. From format version 3 the
/// third record is placed after a gap: packed, its state slots would cross the first sector
/// boundary (`v3_places_a_record_after_a_gap`).
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
            name: &[],
            body,
            slot: slot(1, JobState::Waiting, *pri),
        };
        offs.push(seg.append(&rec).unwrap());
    }
    seg.update(offs[1], slot(2, JobState::Buried, 100)).unwrap();
    seg.update(offs[2], slot(2, JobState::Ready, 0)).unwrap();
    seg.update(offs[2], slot(3, JobState::Deleted, 0)).unwrap();
    seg.update(offs[4], slot(7, JobState::Moved, 5)).unwrap();
    if seg.version() >= FREED_RUNS_SINCE {
        // A freed run: two deleted jobs, the first record's slot states the run (the second
        // record is stepped over), the bytes stay (nothing punched: the run has no whole page).
        let run: Vec<u64> = (5..7u64)
            .map(|i| {
                let rec = NewRecord {
                    id: base_id + i,
                    trigger_at: t0 + 7 * i,
                    created_at: t0 - 3_000_000 + i,
                    ttr: 10,
                    tube: b"default",
                    name: &[],
                    body: b"freed",
                    slot: slot(1, JobState::Waiting, 2),
                };
                let at = seg.append(&rec).unwrap();
                seg.update(at, slot(2, JobState::Deleted, 2)).unwrap();
                at
            })
            .collect();
        let end = run[1] + seg.record_len(run[1]).unwrap();
        seg.free_run(run[0], end - run[0]).unwrap();
        offs.push(run[0]);
    }
    if seg.version() >= NAMES_SINCE {
        // A named job: its name between the tube and the body.
        let rec = NewRecord {
            id: base_id + 7,
            trigger_at: t0 + 77,
            created_at: t0 - 3_000_000 + 7,
            ttr: 20,
            tube: b"orders",
            name: b"reminder-123",
            body: b"cancel me",
            slot: slot(1, JobState::Waiting, 3),
        };
        offs.push(seg.append(&rec).unwrap());
    }
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

fn clean_path(dir: &str) -> PathBuf {
    Path::new(dir).join(segment_file_name(CLEAN))
}

fn damaged_path(dir: &str) -> PathBuf {
    Path::new(dir).join(segment_file_name(DAMAGED))
}

/// The file header a yaad of format `version` wrote for `spoke`. Today's code creates only
/// files of its own version; an older one differs in its version field (and so its CRC).
fn file_header(version: u32, spoke: SpokeId) -> Vec<u8> {
    let mut h = encode_file_header(spoke).to_vec();
    h[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A new segment of format `version` in `dir`: created, or for an older version opened from
/// a file holding just that version's header (appends then follow that version's layout).
fn new_segment<S: Segment>(dir: &Path, version: u32, spoke: SpokeId) -> S {
    if version == FORMAT_VERSION {
        return S::create(dir, spoke).unwrap();
    }
    let path = dir.join(segment_file_name(spoke));
    std::fs::write(&path, file_header(version, spoke)).unwrap();
    S::open(&path).unwrap()
}

/// What mode `S` writes for the golden records of `spoke` in a file of format `version`: the
/// file's bytes, the records' offsets and the segment's `byte_size`.
fn written<S: Segment>(version: u32, spoke: SpokeId, base_id: u64) -> (Vec<u8>, Vec<u64>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut seg = new_segment::<S>(dir.path(), version, spoke);
    let offs = write_golden(&mut seg, base_id);
    seg.flush().unwrap();
    // Closed: a lazy file gives back the tail it reserved for appends.
    seg.close().unwrap();
    let size = seg.byte_size();
    drop(seg);
    let bytes = std::fs::read(dir.path().join(segment_file_name(spoke))).unwrap();
    (bytes, offs, size)
}

/// The bytes the golden records produce today in a file of format `version`, through
/// `MemSegment`, and their offsets.
fn image(version: u32, spoke: SpokeId, base_id: u64) -> (Vec<u8>, Vec<u64>) {
    let (bytes, offs, _) = written::<MemSegment>(version, spoke, base_id);
    (bytes, offs)
}

fn dump(paths: &[PathBuf], opts: DumpOptions) -> (String, u8) {
    let mut out = vec![];
    let mut err = vec![];
    let code = run(paths, opts, &mut out, &mut err);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    (String::from_utf8(out).unwrap(), code)
}

/// The expected outputs in `dir`: (file name, paths, options).
fn expected_outputs(dir: &str) -> Vec<(&'static str, Vec<PathBuf>, DumpOptions)> {
    let both = vec![PathBuf::from(dir)];
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
            vec![clean_path(dir)],
            DumpOptions {
                body: true,
                ..Default::default()
            },
        ),
    ]
}

#[test]
fn golden_files_are_what_this_version_writes() {
    for (version, dir) in GOLDEN {
        let (clean, _) = image(version, CLEAN, 1);
        assert_eq!(
            std::fs::read(clean_path(dir)).unwrap(),
            clean,
            "clean file, version {version}"
        );
        let (mut damaged, offs) = image(version, DAMAGED, 11);
        damage(&mut damaged, &offs);
        assert_eq!(
            std::fs::read(damaged_path(dir)).unwrap(),
            damaged,
            "damaged file, version {version}"
        );
    }
}

#[test]
fn every_mode_writes_the_same_bytes() {
    for (version, dir) in GOLDEN {
        let golden = std::fs::read(clean_path(dir)).unwrap();
        let (mem, _, size) = written::<MemSegment>(version, CLEAN, 1);
        assert_eq!(mem, golden, "mem, version {version}");
        assert_eq!(size, golden.len() as u64);
        // The mapped file has a zero tail (preallocated space).
        let (mapped, _, size) = written::<MappedSegment>(version, CLEAN, 1);
        assert_eq!(size, golden.len() as u64, "mapped, version {version}");
        assert_eq!(
            &mapped[..golden.len()],
            &golden[..],
            "mapped, version {version}"
        );
        assert!(mapped[golden.len()..].iter().all(|&b| b == 0), "zero tail");
        let (lazy, _, size) = written::<LazySegment>(version, CLEAN, 1);
        assert_eq!(lazy, golden, "lazy, version {version}");
        assert_eq!(size, golden.len() as u64);
    }
}

/// From format version 3 a record whose state slots would cross a sector boundary starts
/// after a gap of zeros; version 2 packs the same records. The golden records hold such a
/// case, so the files above test it.
#[test]
fn v3_places_a_record_after_a_gap() {
    let golden = std::fs::read(clean_path(GOLDEN[0].1)).unwrap();
    let records: Vec<(u64, u64)> = scan_records(&golden, Path::new("golden"))
        .map(|r| r.map(|v| (v.offset, v.offset + v.len())).unwrap())
        .collect();
    // The jobs, the freed run (one record in a scan) and the named job.
    assert_eq!(records.len(), JOBS + 2);
    let mut gaps = 0;
    let mut end = FILE_HEADER_LEN;
    for &(offset, next) in &records {
        assert_eq!(offset, record_at(FORMAT_VERSION, end));
        if offset > end {
            gaps += 1;
            assert!(
                golden[end as usize..offset as usize]
                    .iter()
                    .all(|&b| b == 0)
            );
        }
        end = next;
    }
    assert!(gaps >= 1, "no golden record needs a gap: add one that does");
    // The same records in a version 2 file: packed.
    let (_, v2) = image(2, CLEAN, 1);
    let (_, v3) = image(FORMAT_VERSION, CLEAN, 1);
    assert_ne!(v2, v3);
    assert_eq!(v3, records.iter().map(|r| r.0).collect::<Vec<_>>());
}

/// What scanning a file in mode `S` finds: (offset, Ok(id) or Err) per record. Scans a copy
/// (opening may grow a file whose last record is cut short).
fn scanned<S: Segment>(file: &Path) -> Vec<(u64, Option<u64>)> {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join(file.file_name().unwrap());
    std::fs::copy(file, &copy).unwrap();
    S::open(&copy)
        .unwrap()
        .scan()
        .unwrap()
        .into_iter()
        .map(|r| match r {
            Ok(m) => (m.offset, Some(m.id)),
            Err(yaad::segment::StorageError::Corrupted { offset, .. }) => (offset, None),
            Err(e) => panic!("{e}"),
        })
        .collect()
}

#[test]
fn golden_files_read_back_the_same() {
    for (version, dir) in GOLDEN {
        for (name, paths, opts) in expected_outputs(dir) {
            let want = std::fs::read_to_string(Path::new(dir).join(name)).unwrap();
            let (got, code) = dump(&paths, opts);
            assert_eq!(got, want, "{dir}/{name}");
            let expect_code = if paths.len() == 1 && paths[0] == clean_path(dir) {
                0
            } else {
                EXIT_DAMAGED
            };
            assert_eq!(code, expect_code, "{dir}/{name}");
        }
        // The dump states each file's own version.
        let (text, _) = dump(&[clean_path(dir)], DumpOptions::default());
        assert!(
            text.contains(&format!(": format {version}, spoke")),
            "{text}"
        );

        // And through the Segment API, in every mode.
        let (_, offs) = image(version, CLEAN, 1);
        let mut clean: Vec<_> = offs.iter().zip(1..).map(|(&o, id)| (o, Some(id))).collect();
        if version >= NAMES_SINCE {
            // The named job comes after the run's two ids.
            clean.last_mut().unwrap().1 = Some(8);
        }
        let (_, d) = image(version, DAMAGED, 11);
        let mut damaged = vec![
            (d[0], Some(11)),
            (d[1], None),
            (d[2], None),
            (d[3], Some(14)),
        ];
        if version >= NAMES_SINCE {
            // The cut falls in the named job's record, after the freed run: the record is
            // grown with zeros at open and fails its body checksum.
            damaged.extend([(d[4], Some(15)), (d[5], Some(16)), (d[6], None)]);
        } else if version >= FREED_RUNS_SINCE {
            // The cut falls in the freed run, past the moved job's record: opening grows the
            // segment to the run's end (with zeros, as for any record cut short), and the run's
            // bytes are never read, so it scans whole (yaad-dump, reading the file as it is,
            // reports the cut).
            damaged.extend([(d[4], Some(15)), (d[5], Some(16))]);
        } else {
            damaged.push((d[4], None));
        }
        assert_eq!(scanned::<MemSegment>(&clean_path(dir)), clean, "{dir}");
        assert_eq!(scanned::<MappedSegment>(&clean_path(dir)), clean, "{dir}");
        assert_eq!(scanned::<LazySegment>(&clean_path(dir)), clean, "{dir}");
        assert_eq!(scanned::<MemSegment>(&damaged_path(dir)), damaged, "{dir}");
        assert_eq!(scanned::<MappedSegment>(&damaged_path(dir)), damaged);
        assert_eq!(scanned::<LazySegment>(&damaged_path(dir)), damaged);
        let mut m = MemSegment::open(&clean_path(dir)).unwrap();
        let r = m.read(offs[2]).unwrap();
        assert_eq!((r.id, r.slot), (3, slot(3, JobState::Deleted, 0)));
        let r = m.read(offs[1]).unwrap();
        assert_eq!(
            (r.id, r.slot.state, r.tube.as_slice()),
            (2, JobState::Buried, &b"emails"[..])
        );
    }
}

#[test]
fn format_version_1_is_refused_with_a_clear_message() {
    let v1 = Path::new("tests/golden/v1").join(segment_file_name(CLEAN));
    let why = |e: String| {
        let reads = format!("reads versions {OLDEST_READ_VERSION} to {FORMAT_VERSION}");
        assert!(e.contains("format version 1") && e.contains(&reads), "{e}");
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

/// The id index of the clean golden file of format `version`, written into `dir/ids.yaad`:
/// jobs 1..=5, job 3 (deleted) removed again. The index format is the same for both; the
/// offsets it holds are not.
fn ids_image(dir: &Path, version: u32) -> Vec<u8> {
    let (_, offs) = image(version, CLEAN, 1);
    let path = dir.join("ids.yaad");
    let mut ix = IdIndex::open(&path).unwrap();
    for (i, &offset) in offs.iter().take(JOBS).enumerate() {
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
    for (version, dir) in GOLDEN {
        let golden = std::fs::read(Path::new(dir).join("ids.yaad")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(ids_image(tmp.path(), version), golden, "{dir}");
        // Read a copy (opening never rewrites, but the golden file stays untouched regardless).
        let copy = tmp.path().join("copy.yaad");
        std::fs::write(&copy, &golden).unwrap();
        let ix = IdIndex::open(&copy).unwrap();
        let (_, offs) = image(version, CLEAN, 1);
        for (id, &offset) in [(2, &offs[1]), (4, &offs[3])] {
            let want = JobLocation {
                spoke: CLEAN,
                offset,
            };
            assert_eq!(ix.get(id).unwrap(), Some(want), "{dir}");
        }
        assert_eq!(ix.get(3).unwrap(), None);
        assert_eq!(ix.high_water().unwrap(), 5);
    }
}

#[test]
#[ignore = "regenerates tests/golden: only for a deliberate format or output change"]
fn bless() {
    if std::env::var_os("YAAD_BLESS").is_none() {
        eprintln!("set YAAD_BLESS=1 to rewrite tests/golden; nothing written");
        return;
    }
    // Today's version only: older versions' files are kept as that version wrote them.
    let (version, dir) = GOLDEN[0];
    let (clean, _) = image(version, CLEAN, 1);
    std::fs::write(clean_path(dir), clean).unwrap();
    let (mut damaged, offs) = image(version, DAMAGED, 11);
    damage(&mut damaged, &offs);
    std::fs::write(damaged_path(dir), damaged).unwrap();
    for (name, paths, opts) in expected_outputs(dir) {
        let (out, _) = dump(&paths, opts);
        std::fs::write(Path::new(dir).join(name), out).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        Path::new(dir).join("ids.yaad"),
        ids_image(tmp.path(), version),
    )
    .unwrap();
}
