//! Micro-benchmarks of the storage layer, one row per [`Segment`] implementation (mode):
//! append of a 100-byte job, state-slot update, scan of every record, and the scanner alone.
//!
//! `cargo bench --bench segment` (a few seconds). Every benchmark times a batch of `N`
//! operations per sample on a segment made for that sample (untimed), so per-operation figures
//! are the reported time ÷ `N`; divan also prints the rate (`item/s`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use divan::Bencher;
use divan::counter::ItemsCount;
use tempfile::TempDir;
use yaad::segment::format::scan_records;
use yaad::segment::{
    JobCounters, JobState, LazySegment, MappedSegment, MemSegment, NewRecord, RecordOffset,
    Segment, SpokeId, StateSlot, segment_file_name,
};

fn main() {
    divan::main();
}

/// Records per sample.
const N: usize = 1000;
/// Samples per benchmark: keeps each one short (CI never runs them, see bench/README.md).
const SAMPLES: u32 = 30;

const BODY: [u8; 100] = [b'x'; 100];

/// A fresh spoke id per segment, so segments made for different samples never share a file.
fn next_spoke() -> SpokeId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    SpokeId {
        start: 1_700_000_000_000_000 + NEXT.fetch_add(1, Ordering::Relaxed) * 1_000_000,
        span: 1_000_000,
    }
}

fn record(id: u64) -> NewRecord<'static> {
    NewRecord {
        id,
        trigger_at: 1_700_000_000_000_000 + id,
        created_at: 1_700_000_000_000_000,
        ttr: 60,
        tube: b"default",
        name: &[],
        body: &BODY,
        slot: StateSlot {
            version: 1,
            state: JobState::Waiting,
            priority: 1024,
            counters: JobCounters::default(),
        },
    }
}

/// A segment in a temp dir whose file is removed when the sample is done.
struct Fixture<S: Segment> {
    seg: Option<S>,
    offsets: Vec<RecordOffset>,
    dir: TempDir,
}

impl<S: Segment> Fixture<S> {
    /// A segment holding `records` records.
    fn new(records: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut seg = S::create(dir.path(), next_spoke()).expect("create segment");
        let offsets = (0..records as u64)
            .map(|id| seg.append(&record(id + 1)).expect("append"))
            .collect();
        Fixture {
            seg: Some(seg),
            offsets,
            dir,
        }
    }

    fn seg(&mut self) -> &mut S {
        self.seg.as_mut().expect("segment is present until drop")
    }

    /// Flushes the segment (mem: writes its file) and returns the file's path.
    fn flushed_path(&mut self) -> PathBuf {
        let seg = self.seg();
        seg.flush().expect("flush");
        let name = segment_file_name(seg.spoke());
        self.dir.path().join(name)
    }
}

impl<S: Segment> Drop for Fixture<S> {
    fn drop(&mut self) {
        if let Some(seg) = self.seg.take() {
            let _ = seg.destroy();
        }
    }
}

/// Appends `N` records of a 100-byte job to an empty segment.
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn append<S: Segment>(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| Fixture::<S>::new(0))
        .bench_local_refs(|f| {
            let seg = f.seg();
            for id in 1..=N as u64 {
                divan::black_box(seg.append(&record(id)).expect("append"));
            }
        });
}

/// Rewrites the state slot of each of `N` records once (the hub's reserve/bury/delete path).
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn update<S: Segment>(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| Fixture::<S>::new(N))
        .bench_local_refs(|f| {
            let offsets = std::mem::take(&mut f.offsets);
            let seg = f.seg();
            for &off in &offsets {
                let slot = StateSlot {
                    version: 2,
                    state: JobState::Buried,
                    priority: 7,
                    counters: JobCounters::default(),
                };
                seg.update(off, slot).expect("update");
            }
        });
}

/// `Segment::scan` of a segment holding `N` records (what loading a spoke does).
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn scan<S: Segment>(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| Fixture::<S>::new(N))
        .bench_local_refs(|f| {
            let metas = f.seg().scan().expect("scan");
            assert_eq!(metas.len(), N);
            divan::black_box(metas);
        });
}

/// Opening the segment file of `N` records and scanning it (what recovery does per spoke).
#[divan::bench(types = [MemSegment, MappedSegment, LazySegment], sample_count = SAMPLES, sample_size = 1)]
fn open_scan<S: Segment>(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| {
            let mut f = Fixture::<S>::new(N);
            let path = f.flushed_path();
            (f, path)
        })
        .bench_local_refs(|(_, path)| {
            let mut seg = S::open(path).expect("open");
            let metas = seg.scan().expect("scan");
            assert_eq!(metas.len(), N);
            divan::black_box(metas);
        });
}

/// The scanner alone (`scan_records`, shared by recovery and yaad-dump) over an in-memory image
/// of `N` records, verifying every CRC but copying nothing.
#[divan::bench(sample_count = SAMPLES, sample_size = 1)]
fn scan_records_only(bencher: Bencher) {
    let mut f = Fixture::<MemSegment>::new(N);
    let path = f.flushed_path();
    let bytes = std::fs::read(&path).expect("read segment file");
    bencher.counter(ItemsCount::new(N)).bench_local(|| {
        let n = scan_records(divan::black_box(&bytes), Path::new("bench"))
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(n, N);
    });
}
