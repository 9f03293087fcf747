//! Arbitrary sequences of append / update / read / scan / close / reopen and on-disk damage
//! (truncation, flipped bytes, zeroed ranges as a torn write leaves them) against each storage
//! mode, checked against a simple model of the records:
//! - nothing panics, whatever the file holds;
//! - every record the scan returns is one that was appended at that offset, with the latest
//!   state slot (an older one if its bytes were damaged);
//! - every record whose bytes were never damaged is returned, and reads back the same.
#![no_main]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use yaad::segment::format::FILE_HEADER_LEN;
use yaad::segment::{
    JobCounters, JobState, LazySegment, MappedSegment, MemSegment, NewRecord, RecordMeta, Segment,
    SpokeId, StateSlot, segment_file_name,
};

const SPOKE: SpokeId = SpokeId {
    start: 1_800_000_000_000_000,
    span: 1_000_000,
};

#[derive(Arbitrary, Debug)]
enum Op {
    Append {
        tube_len: u8,
        body_len: u16,
        fill: u8,
        /// Zero bytes at the end of the body (binary bodies may end in zeros).
        zero_tail: u8,
    },
    Update {
        pick: u16,
        state: u8,
        priority: u32,
    },
    Read {
        pick: u16,
    },
    Scan,
    /// Lazy: unmap and close; the others: nothing.
    Close,
    /// Flush, drop, open the file again.
    Reopen,
    /// Flush, drop, cut the file at `at` (at or after the file header), open again.
    Truncate {
        at: u32,
    },
    /// Flush, drop, xor one byte after the file header, open again.
    Flip {
        at: u32,
        xor: u8,
    },
    /// Flush, drop, zero `len` bytes (a torn write's unwritten part), open again.
    Zero {
        at: u32,
        len: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    mode: u8,
    ops: Vec<Op>,
}

#[derive(Debug)]
struct MRec {
    offset: u64,
    id: u64,
    tube: Vec<u8>,
    body: Vec<u8>,
    /// Every slot persisted for this record, the last is current.
    slots: Vec<StateSlot>,
    /// Some byte of the record was damaged: it may be missing or show an older slot.
    damaged: bool,
}

impl MRec {
    fn end(&self) -> u64 {
        yaad::segment::format::record_len(self.tube.len(), self.body.len()) + self.offset
    }

    fn check(&self, meta: &RecordMeta) {
        assert_eq!(meta.id, self.id, "id at offset {}", self.offset);
        assert_eq!(meta.tube, self.tube);
        assert_eq!(meta.body_len as usize, self.body.len());
        assert_eq!(meta.trigger_at, trigger(self.id));
        if self.damaged {
            assert!(
                self.slots.contains(&meta.slot),
                "slot {:?} never written",
                meta.slot
            );
        } else {
            assert_eq!(Some(&meta.slot), self.slots.last(), "current slot");
        }
    }
}

fn trigger(id: u64) -> u64 {
    SPOKE.start + id
}

struct Run<S: Segment> {
    seg: Option<S>,
    dir: PathBuf,
    recs: Vec<MRec>,
    next_id: u64,
}

impl<S: Segment> Run<S> {
    fn path(&self) -> PathBuf {
        self.dir.join(segment_file_name(SPOKE))
    }

    fn seg(&mut self) -> &mut S {
        self.seg.as_mut().expect("segment open")
    }

    /// Flushes and drops the segment, lets `damage` change the file, opens it again.
    /// Returns false when the file can no longer be opened (only after damage).
    fn reopen_with(&mut self, damage: impl FnOnce(&Path, &mut Vec<MRec>)) -> bool {
        let mut seg = self.seg.take().expect("segment open");
        seg.flush().expect("flush");
        drop(seg);
        let path = self.path();
        damage(&path, &mut self.recs);
        match S::open(&path) {
            Ok(s) => {
                self.seg = Some(s);
                true
            }
            Err(_) => false,
        }
    }

    fn check_scan(&mut self) {
        let metas = self.seg().scan().expect("scan of an open segment");
        let mut seen = Vec::new();
        let mut last_end = 0;
        for meta in metas.into_iter().flatten() {
            assert!(meta.offset >= last_end, "records overlap or go backwards");
            let rec = self
                .recs
                .iter()
                .find(|r| r.offset == meta.offset && r.id == meta.id)
                .unwrap_or_else(|| panic!("scan returned a record never appended: {meta:?}"));
            rec.check(&meta);
            last_end = rec.end();
            seen.push(meta.offset);
        }
        for r in self.recs.iter().filter(|r| !r.damaged) {
            assert!(
                seen.contains(&r.offset),
                "undamaged record id {} at {} lost by the scan (seen {seen:?}, model {:?})",
                r.id,
                r.offset,
                self.recs
                    .iter()
                    .map(|r| (r.offset, r.end(), r.damaged))
                    .collect::<Vec<_>>()
            );
        }
    }

    fn apply(&mut self, op: &Op) -> bool {
        match *op {
            Op::Append {
                tube_len,
                body_len,
                fill,
                zero_tail,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                let tube = vec![b'a' + tube_len % 26; usize::from(tube_len % 12)];
                let mut body: Vec<u8> = (0..usize::from(body_len % 700))
                    .map(|i| fill.wrapping_add(i as u8))
                    .collect();
                body.resize(body.len() + usize::from(zero_tail % 40), 0);
                let slot = StateSlot {
                    version: 1,
                    state: JobState::Waiting,
                    priority: u32::from(fill),
                    counters: JobCounters::default(),
                };
                let rec = NewRecord {
                    id,
                    trigger_at: trigger(id),
                    created_at: SPOKE.start,
                    ttr: 1,
                    tube: &tube,
                    name: &[],
                    body: &body,
                    slot,
                };
                let offset = self.seg().append(&rec).expect("append");
                // The new record may overwrite bytes of a damaged one: that one is gone.
                let end = yaad::segment::format::record_len(tube.len(), body.len()) + offset;
                self.recs.retain(|r| {
                    assert!(
                        r.damaged || r.end() <= offset || r.offset >= end,
                        "append at {offset} overwrites an intact record at {}",
                        r.offset
                    );
                    r.end() <= offset || r.offset >= end
                });
                self.recs.push(MRec {
                    offset,
                    id,
                    tube,
                    body,
                    slots: vec![slot],
                    damaged: false,
                });
            }
            Op::Update {
                pick,
                state,
                priority,
            } => {
                // The hub only updates records it found intact.
                let intact: Vec<usize> = (0..self.recs.len())
                    .filter(|&i| !self.recs[i].damaged)
                    .collect();
                if intact.is_empty() {
                    return true;
                }
                let i = intact[usize::from(pick) % intact.len()];
                let Some(state) = JobState::from_u8(1 + state % 5) else {
                    return true;
                };
                let version = self.recs[i]
                    .slots
                    .iter()
                    .map(|s| s.version)
                    .max()
                    .unwrap_or(0)
                    + 1;
                let slot = StateSlot {
                    version,
                    state,
                    priority,
                    counters: JobCounters::default(),
                };
                let offset = self.recs[i].offset;
                self.seg()
                    .update(offset, slot)
                    .expect("update of an intact record");
                self.recs[i].slots.push(slot);
            }
            Op::Read { pick } => {
                if self.recs.is_empty() {
                    return true;
                }
                let i = usize::from(pick) % self.recs.len();
                let offset = self.recs[i].offset;
                let got = self.seg().read(offset);
                let r = &self.recs[i];
                match got {
                    Ok(rec) => {
                        assert_eq!(rec.id, r.id);
                        assert_eq!(rec.body, r.body);
                        assert_eq!(rec.tube, r.tube);
                        if !r.damaged {
                            assert_eq!(Some(&rec.slot), r.slots.last());
                        }
                    }
                    Err(e) => assert!(r.damaged, "read of an intact record failed: {e}"),
                }
            }
            Op::Scan => self.check_scan(),
            Op::Close => self.seg().close().expect("close"),
            Op::Reopen => return self.reopen_with(|_, _| {}),
            Op::Truncate { at } => {
                return self.reopen_with(|path, recs| {
                    let len = std::fs::metadata(path).expect("metadata").len();
                    let at = FILE_HEADER_LEN + u64::from(at) % (len - FILE_HEADER_LEN + 1);
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|f| f.set_len(at))
                        .expect("truncate");
                    recs.retain(|r| r.offset < at);
                    for r in recs.iter_mut().filter(|r| r.end() > at) {
                        r.damaged = true;
                    }
                });
            }
            Op::Flip { at, xor } => {
                return self.reopen_with(|path, recs| {
                    let len = std::fs::metadata(path).expect("metadata").len();
                    if len <= FILE_HEADER_LEN || xor == 0 {
                        return;
                    }
                    let at = FILE_HEADER_LEN + u64::from(at) % (len - FILE_HEADER_LEN);
                    let f = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(path)
                        .expect("open for damage");
                    let mut b = [0u8];
                    f.read_exact_at(&mut b, at).expect("read byte");
                    b[0] ^= xor;
                    f.write_all_at(&b, at).expect("write byte");
                    for r in recs.iter_mut().filter(|r| r.offset <= at && at < r.end()) {
                        r.damaged = true;
                    }
                });
            }
            Op::Zero { at, len } => {
                return self.reopen_with(|path, recs| {
                    let flen = std::fs::metadata(path).expect("metadata").len();
                    if flen <= FILE_HEADER_LEN {
                        return;
                    }
                    let at = FILE_HEADER_LEN + u64::from(at) % (flen - FILE_HEADER_LEN);
                    let n = u64::from(len).min(flen - at);
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .expect("open for damage");
                    f.write_all_at(&vec![0u8; n as usize], at)
                        .expect("zero bytes");
                    for r in recs
                        .iter_mut()
                        .filter(|r| r.offset < at + n && at < r.end())
                    {
                        r.damaged = true;
                    }
                });
            }
        }
        true
    }
}

fn run<S: Segment>(ops: &[Op]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let seg = S::create(dir.path(), SPOKE).expect("create");
    let mut run = Run {
        seg: Some(seg),
        dir: dir.path().to_path_buf(),
        recs: Vec::new(),
        next_id: 1,
    };
    for op in ops {
        if !run.apply(op) {
            return;
        }
    }
    run.check_scan();
    if run.reopen_with(|_, _| {}) {
        run.check_scan();
    }
}

fuzz_target!(|input: Input| {
    let ops = &input.ops[..input.ops.len().min(64)];
    match input.mode % 3 {
        0 => run::<MemSegment>(ops),
        1 => run::<MappedSegment>(ops),
        _ => run::<LazySegment>(ops),
    }
});
