//! Names files `names-<start>-<span>.yaad`: the live named jobs of one far spoke as
//! ([`name_key`], id) pairs, so that a restart rebuilds the name index without scanning the
//! spoke's segment. The start-up summary's entry for the spoke states how many pairs the file
//! holds and its CRC; recovery uses the file only when both, the figures in its header (spoke,
//! byte size, live and total records, which must equal the entry's) and its own CRC agree,
//! and otherwise scans the spoke as without a summary. Written from a scan of the segment file
//! (outside the hub lock, see `store::checkpoint`), never synced: a file lost or torn by a
//! power cut fails those checks, which costs start-up time only.
//!
//! Layout (all integers little-endian), see `storage-format.md`, *Names files*:
//!
//! ```text
//! magic "YAADNAM\0" (8) | version u32 | reserved u32 (0) | spoke start u64 | spoke span u64
//! byte size u64 | live u64 | records u64 | key check u64 | count u64
//! per named job, by id: name key u64 | id u64
//! crc u32 (CRC-32 of every byte before it)
//! ```

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{FILE_HEADER_LEN, RecordView, name_key, scan_records_from};
use super::mmap::AnonBuf;
use super::{JobState, SpokeId};

/// First bytes of a names file.
pub const NAMES_MAGIC: [u8; 8] = *b"YAADNAM\0";
/// Version of the names file layout.
pub const NAMES_VERSION: u32 = 1;
/// Bytes before the pairs.
pub const NAMES_HEADER_LEN: usize = 72;
/// Bytes per (name key, id) pair.
const PAIR_LEN: usize = 16;

/// The name of spoke `spoke`'s names file.
pub fn names_file_name(spoke: SpokeId) -> String {
    format!("names-{:020}-{:020}.yaad", spoke.start, spoke.span)
}

/// Reads the spoke back from a names file name; `None` if it is not one.
pub fn parse_names_file_name(name: &str) -> Option<SpokeId> {
    let rest = name.strip_prefix("names-")?.strip_suffix(".yaad")?;
    let (start, span) = rest.split_once('-')?;
    if start.len() != 20 || span.len() != 20 {
        return None;
    }
    Some(SpokeId {
        start: start.parse().ok()?,
        span: span.parse().ok()?,
    })
}

/// [`name_key`] of a fixed (tube, name): keys are a hash whose algorithm belongs to the build,
/// so a file written by a build that hashes differently is not used.
pub fn key_check() -> u64 {
    name_key(b"yaad", b"names-file-key-check")
}

/// What a names file must agree with: the summary entry of its spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamesOf {
    pub spoke: SpokeId,
    pub byte_size: u64,
    pub live: u64,
    pub records: u64,
}

/// A names file as the summary refers to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpokeNames {
    /// Live named jobs of the spoke (0: no file is needed).
    pub count: u64,
    /// The file's CRC (its last four bytes); 0 when `count` is 0.
    pub crc: u32,
}

impl SpokeNames {
    /// A spoke without live named jobs.
    pub const NONE: SpokeNames = SpokeNames { count: 0, crc: 0 };
}

/// The live named jobs of the segment file at `path`, whose live and total records must be
/// those of `of` (else it changed since its summary entry was taken): ([`name_key`], id) pairs
/// by id. Per id the record with the highest version wins, as in recovery; `Moved`, `Freed` and
/// `Deleted` winners are not live. A damaged record fails the scan: only recovery may judge it.
pub fn scan_named(path: &Path, of: &NamesOf) -> Result<Vec<(u64, u64)>, String> {
    // (id, version, name key of a live named record, live)
    let mut seen: Vec<(u64, u32, Option<u64>, bool)> = Vec::new();
    let mut records = 0u64;
    for_each_record(path, WINDOW, |v| {
        records += 1;
        let state = v.slot.state;
        if matches!(state, JobState::Moved | JobState::Freed) {
            return;
        }
        let live = state != JobState::Deleted;
        let key = (live && !v.name.is_empty()).then(|| name_key(v.tube, v.name));
        seen.push((v.header.id.get(), v.slot.version, key, live));
    })?;
    seen.sort_unstable_by_key(|&(id, version, ..)| (id, std::cmp::Reverse(version)));
    seen.dedup_by_key(|&mut (id, ..)| id);
    let live = seen.iter().filter(|s| s.3).count() as u64;
    if (live, records) != (of.live, of.records) {
        return Err(format!(
            "(live, records) ({live}, {records}), the summary entry says ({}, {})",
            of.live, of.records
        ));
    }
    Ok(seen
        .into_iter()
        .filter_map(|(id, _, key, _)| Some((key?, id)))
        .collect())
}

/// Bytes of a segment file [`for_each_record`] reads ahead of its scan.
const WINDOW: u64 = 8 << 20;

/// Calls `each` with every record of the segment file at `path` in file order. The file is
/// read a window at a time into a buffer of anonymous memory as long as the file, whose pages
/// behind the scan are given back: a far spoke of any size costs about a window of memory
/// (a whole-file read cost its size, 1 GiB for 10M jobs in one wide spoke). A record longer
/// than the window widens it. A damaged record fails the scan.
fn for_each_record(
    path: &Path,
    mut window: u64,
    mut each: impl FnMut(&RecordView<'_>),
) -> Result<(), String> {
    let base = window;
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(failed)?;
    let len = file.metadata().map_err(failed)?.len();
    let len_us = usize::try_from(len).map_err(|_| format!("{}: too large", path.display()))?;
    let mut buf = AnonBuf::with_bytes(&[], len_us).map_err(failed)?;
    buf.grow(len_us).map_err(failed)?;
    // The file's bytes are in `buf` up to `loaded`, except those a freed run let the scan skip.
    let (mut loaded, mut pos) = (0u64, FILE_HEADER_LEN);
    loop {
        let want = len.min(pos.saturating_add(window));
        if want > loaded {
            // The file header (version) first, then from where the scan is.
            let from = if loaded == 0 { 0 } else { loaded.max(pos) };
            if want > from {
                file.read_exact_at(&mut buf.bytes_mut()[from as usize..want as usize], from)
                    .map_err(failed)?;
            }
            loaded = want;
        }
        let mut progress = false;
        let mut defect = None;
        let mut it = scan_records_from(&buf.bytes()[..loaded as usize], path, pos);
        while let Some(r) = it.next() {
            match r {
                Ok(v) => {
                    each(&v);
                    progress = true;
                    pos = it.next_offset();
                }
                Err(e) => {
                    defect = Some(e);
                    break;
                }
            }
        }
        if loaded >= len {
            // The whole file was there: the end or the defect is the file's own.
            return match defect {
                None => Ok(()),
                Some(e) => Err(e.to_string()),
            };
        }
        // The scan stopped at the end of what was read: read on, a wider window if no
        // record fitted in this one.
        window = if progress {
            base
        } else {
            window.saturating_mul(2)
        };
        buf.release(FILE_HEADER_LEN as usize, pos as usize)
            .map_err(failed)?;
    }
}

/// The bytes of the names file of `of` holding `pairs`, and their [`SpokeNames`].
pub fn encode(of: &NamesOf, pairs: &[(u64, u64)]) -> (Vec<u8>, SpokeNames) {
    let mut b = Vec::with_capacity(NAMES_HEADER_LEN + pairs.len() * PAIR_LEN + 4);
    b.extend_from_slice(&NAMES_MAGIC);
    b.extend_from_slice(&NAMES_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    let head = [
        of.spoke.start,
        of.spoke.span,
        of.byte_size,
        of.live,
        of.records,
        key_check(),
        pairs.len() as u64,
    ];
    for v in head {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for &(key, id) in pairs {
        b.extend_from_slice(&key.to_le_bytes());
        b.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let names = SpokeNames {
        count: pairs.len() as u64,
        crc,
    };
    (b, names)
}

/// Writes a names file's `bytes` to `path` (temporary file and rename, not synced).
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> super::Result<()> {
    super::file::replace_file(path, bytes, false)
}

/// Reads the names file at `path` into `out` if it is the one the summary entry `of` with
/// `names` refers to; `Err(reason)` otherwise (then nothing is added to `out`). Read in pieces:
/// no copy of the whole file is held.
pub fn read(
    path: &Path,
    of: &NamesOf,
    names: SpokeNames,
    out: &mut Vec<(u64, u64)>,
) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let want = (NAMES_HEADER_LEN as u64)
        .checked_add(names.count.saturating_mul(PAIR_LEN as u64))
        .and_then(|n| n.checked_add(4));
    if Some(len) != want {
        return Err(format!("{len} bytes, {want:?} expected"));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut head = [0u8; NAMES_HEADER_LEN];
    f.read_exact(&mut head).map_err(|e| e.to_string())?;
    crc.update(&head);
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(a)
    };
    if head[..8] != NAMES_MAGIC {
        return Err("not a names file (bad magic)".into());
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != NAMES_VERSION {
        return Err(format!("unsupported names file version {version}"));
    }
    let stated = NamesOf {
        spoke: SpokeId {
            start: u64_at(16),
            span: u64_at(24),
        },
        byte_size: u64_at(32),
        live: u64_at(40),
        records: u64_at(48),
    };
    if stated != *of {
        return Err(format!("written for {stated:?}, not {of:?}"));
    }
    if u64_at(56) != key_check() {
        return Err("written by a build whose name keys differ".into());
    }
    if u64_at(64) != names.count {
        return Err(format!("{} names, {} expected", u64_at(64), names.count));
    }
    let start = out.len();
    let mut left = names.count;
    let mut buf = vec![0u8; 4096 * PAIR_LEN];
    while left > 0 {
        let n = usize::try_from(left.min(4096)).unwrap_or(4096);
        let chunk = &mut buf[..n * PAIR_LEN];
        if let Err(e) = f.read_exact(chunk) {
            out.truncate(start);
            return Err(e.to_string());
        }
        crc.update(chunk);
        for p in chunk.chunks_exact(PAIR_LEN) {
            let mut k = [0u8; 8];
            let mut i = [0u8; 8];
            k.copy_from_slice(&p[..8]);
            i.copy_from_slice(&p[8..]);
            out.push((u64::from_le_bytes(k), u64::from_le_bytes(i)));
        }
        left -= n as u64;
    }
    let mut tail = [0u8; 4];
    let stored = f.read_exact(&mut tail).map(|()| u32::from_le_bytes(tail));
    let crc = crc.finalize();
    if stored.as_ref().ok() != Some(&crc) || crc != names.crc {
        out.truncate(start);
        return Err("checksum mismatch".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::format::scan_records;
    use crate::segment::{JobState, LazySegment, NewRecord, Segment, StateSlot};

    const SPOKE: SpokeId = SpokeId {
        start: 7_000_000,
        span: 1_000_000,
    };

    fn slot(version: u32, state: JobState) -> StateSlot {
        StateSlot {
            version,
            state,
            priority: 1,
            counters: Default::default(),
        }
    }

    fn of(live: u64, records: u64) -> NamesOf {
        NamesOf {
            spoke: SPOKE,
            byte_size: 4096,
            live,
            records,
        }
    }

    #[test]
    fn file_names_round_trip() {
        let name = names_file_name(SPOKE);
        assert_eq!(parse_names_file_name(&name), Some(SPOKE));
        assert_eq!(parse_names_file_name("seg-1-2.yaad"), None);
        assert_eq!(parse_names_file_name("names-1-2.yaad"), None);
    }

    #[test]
    fn reads_back_and_refuses_every_damage_and_every_other_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(names_file_name(SPOKE));
        let pairs = vec![(11, 3), (7, 5)];
        let (bytes, names) = encode(&of(4, 6), &pairs);
        assert_eq!(names.count, 2);
        write_unsynced(&path, &bytes).unwrap();
        let mut out = vec![(1, 1)];
        read(&path, &of(4, 6), names, &mut out).unwrap();
        assert_eq!(out, [(1, 1), (11, 3), (7, 5)]);
        // Another entry's figures, count or CRC: refused, nothing added.
        for (o, n) in [
            (of(3, 6), names),
            (of(4, 7), names),
            (
                NamesOf {
                    byte_size: 8192,
                    ..of(4, 6)
                },
                names,
            ),
            (of(4, 6), SpokeNames { count: 1, ..names }),
            (
                of(4, 6),
                SpokeNames {
                    crc: names.crc ^ 1,
                    ..names
                },
            ),
        ] {
            let mut out = vec![];
            assert!(read(&path, &o, n, &mut out).is_err(), "{o:?} {n:?}");
            assert!(out.is_empty());
        }
        // Every flipped bit and every truncation.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            std::fs::write(&path, &b).unwrap();
            let mut out = vec![];
            assert!(
                read(&path, &of(4, 6), names, &mut out).is_err(),
                "flip at {i}"
            );
            assert!(out.is_empty());
            std::fs::write(&path, &bytes[..i]).unwrap();
            assert!(
                read(&path, &of(4, 6), names, &mut out).is_err(),
                "cut at {i}"
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert!(read(&path, &of(4, 6), names, &mut vec![]).is_err());
    }

    /// A waiting record of tube `t` in [`SPOKE`].
    fn record<'a>(id: u64, name: &'a [u8], body: &'a [u8], version: u32) -> NewRecord<'a> {
        NewRecord {
            id,
            trigger_at: SPOKE.start,
            created_at: 1,
            ttr: 1,
            tube: b"t",
            name,
            body,
            slot: slot(version, JobState::Waiting),
        }
    }

    /// The live named jobs of a segment: not the deleted one, not the unnamed one, not the
    /// old record of a job moved within the spoke; the scan refuses an image whose counts
    /// are not the entry's.
    #[test]
    fn scans_the_live_named_jobs_of_a_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let mut seg = LazySegment::create(tmp.path(), SPOKE).unwrap();
        let mut put =
            |id, name: &[u8], version| seg.append(&record(id, name, b"b", version)).unwrap();
        put(1, b"one", 1);
        let deleted = put(2, b"two", 1);
        put(3, b"", 1);
        let old = put(4, b"four", 1);
        put(4, b"four", 2);
        seg.update(deleted, slot(2, JobState::Deleted)).unwrap();
        seg.update(old, slot(2, JobState::Moved)).unwrap();
        seg.flush().unwrap();
        let path = tmp.path().join(crate::segment::segment_file_name(SPOKE));
        let got = scan_named(&path, &of(3, 5)).unwrap();
        assert_eq!(
            got,
            [(name_key(b"t", b"one"), 1), (name_key(b"t", b"four"), 4)]
        );
        assert!(scan_named(&path, &of(4, 5)).is_err());
    }

    /// Read a window at a time, a segment file gives the records a whole-file scan gives,
    /// whatever the window: records longer than it, records across its edges, a freed run
    /// (whose punched pages are not read) and a damaged record (the scan fails).
    #[test]
    fn windowed_scan_sees_what_a_whole_file_scan_sees() {
        let tmp = tempfile::tempdir().unwrap();
        let mut seg = LazySegment::create(tmp.path(), SPOKE).unwrap();
        let mut offsets = vec![];
        for id in 1..=200u64 {
            let body = vec![b'x'; (id as usize * 97) % 9000];
            let name = format!("n{id}");
            offsets.push(seg.append(&record(id, name.as_bytes(), &body, 1)).unwrap());
        }
        // Records 50..150 dead and freed as one run, its pages punched.
        for &o in &offsets[50..150] {
            seg.update(o, slot(2, JobState::Deleted)).unwrap();
        }
        let (from, to) = (offsets[50], offsets[150]);
        seg.free_run(from, to - from).unwrap();
        seg.flush().unwrap();
        let page = 4096;
        assert!(
            seg.punch((from / page + 1) * page, to / page * page)
                .unwrap()
                > 0
        );
        seg.flush().unwrap();
        let path = tmp.path().join(crate::segment::segment_file_name(SPOKE));
        let whole = std::fs::read(&path).unwrap();
        let want: Vec<(u64, u64)> = scan_records(&whole, &path)
            .map(|r| {
                let v = r.unwrap();
                (v.header.id.get(), v.len())
            })
            .collect();
        assert_eq!(want.len(), 101, "150 records and the freed run's first");
        let scan = |window| {
            let mut got = vec![];
            for_each_record(&path, window, |v| got.push((v.header.id.get(), v.len()))).map(|()| got)
        };
        for window in [1, 64, 1000, 4096, 10_000, WINDOW] {
            assert_eq!(scan(window).unwrap(), want, "window {window}");
        }
        // A damaged body near the end fails the scan, whatever the window.
        let at = offsets[180] as usize + 200;
        let mut bad = whole.clone();
        bad[at] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        for window in [1, 64, 4096, WINDOW] {
            assert!(scan(window).is_err(), "window {window}");
        }
    }
}
