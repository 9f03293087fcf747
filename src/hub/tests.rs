//! Unit tests of the hub: spokes near and far, recovery edge cases, waiters, files.

use super::*;
use crate::segment::{
    DataDir, JobState, LazySegment, MappedSegment, MemSegment, NewRecord, Record, RecordMeta,
    RecordOffset, SpokeId, StateSlot,
};

const T0: Micros = 1_700_000_000 * SECOND;

fn cfg(dir: &std::path::Path, persist: bool) -> HubConfig {
    HubConfig {
        data_dir: dir.to_path_buf(),
        spoke_span: SECOND,
        restore: !persist,
    }
}

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    v.sort();
    v
}

fn reserved_id(o: ReserveOutcome) -> u64 {
    match o {
        ReserveOutcome::Reserved(v) => v.id,
        other => panic!("expected a reserved job, got {other:?}"),
    }
}

/// Far-future jobs hold no per-job RAM, yet can be found by id, and load before they are due.
fn far_jobs<S: Segment>(persist: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<S>::open(cfg(dir.path(), persist), T0).unwrap();
    let c = hub.connect();
    let mut ids = Vec::new();
    for i in 0..200u32 {
        let body = format!("far-{i}");
        ids.push(
            hub.put(c, 10, 3_600 + i % 5, 60, body.as_bytes(), T0)
                .unwrap(),
        );
    }
    assert!(hub.jobs.is_empty(), "far jobs must not be resident");
    assert!(hub.far_info.is_empty());
    assert_eq!(hub.stats(T0).current_jobs_delayed, 200);
    assert_eq!(
        hub.stats_tube("default", T0).unwrap().current_jobs_delayed,
        200
    );
    // Spans grow with distance: an hour out, the five trigger seconds share a wider spoke.
    let placed: BTreeSet<SpokeId> = (0..5)
        .map(|d| crate::store::place(T0 + (3_600 + d) * SECOND, T0, SECOND))
        .collect();
    assert!(placed.len() < 5);
    assert_eq!(hub.store.spokes.len(), placed.len());
    assert!(hub.store.open_far.len() <= MAX_OPEN_FAR_SPOKES);

    // Lookups by id go through the index, still without making the job resident.
    let id = ids[7];
    assert_eq!(hub.peek(id).unwrap().body, Bytes::from("far-7"));
    let st = hub.stats_job(id, T0 + 5 * SECOND).unwrap();
    assert_eq!(
        (st.state, st.delay, st.time_left),
        ("delayed", 3_602, 3_597)
    );
    assert!(hub.jobs.is_empty());
    hub.delete(c, ids[8], T0).unwrap();
    assert_eq!(hub.delete(c, ids[8], T0), Err(HubError::NotFound));
    assert_eq!(hub.peek(ids[8]), None);
    hub.kick_job(ids[9], T0).unwrap();
    assert_eq!(hub.jobs.len(), 1);
    assert_eq!(reserved_id(hub.reserve(c, Some(T0), T0)), ids[9]);
    assert_eq!(hub.stats_job(ids[9], T0).unwrap().kicks, 1);
    hub.delete(c, ids[9], T0).unwrap();

    // The first far spoke is loaded ahead of time; its jobs are never ready early.
    let first_due = T0 + 3_600 * SECOND;
    let mut now = T0;
    let mut ticks = 0;
    while now < first_due {
        let next = hub.next_deadline().unwrap();
        assert!(next > now);
        now = next.min(first_due);
        hub.tick(now);
        ticks += 1;
        if now < first_due {
            assert_eq!(hub.peek_ready(c), None, "ready early at {now}");
        }
    }
    // One wake-up per split step of the wide spoke (`SPLIT_STEP` records or `SPLIT_CREATES`
    // new spokes each), a few more to load the fine spoke and hand out what is due: never one
    // per second of the hour.
    let created = hub.work().spokes_created as usize;
    let steps = 200usize.div_ceil(crate::store::SPLIT_STEP)
        + created.div_ceil(crate::store::SPLIT_CREATES as usize);
    assert!(
        ticks <= steps + 4,
        "the hub woke {ticks} times for one spoke"
    );
    let got = reserved_id(hub.reserve(c, Some(now), now));
    assert_eq!(got, ids[0], "lowest id of the first trigger time first");
    // 198 left; the first spoke's 40 are ready (one reserved).
    assert_eq!(hub.stats(now).current_jobs_delayed, 158);
}

/// Far jobs are counted per tube (`stats-tube`, `stats`) through puts into spokes of several
/// spans, deletes, the loading of the nearest spokes and a tube losing its last far job.
fn far_counts_per_tube<S: Segment>(persist: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<S>::open(cfg(dir.path(), persist), T0).unwrap();
    let c = hub.connect();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..60u32 {
        // An hour, a day and a month out: spokes of different spans, shared by both tubes.
        let delay = [3_600, 86_400, 30 * 86_400][i as usize % 3] + i;
        hub.use_tube(c, "a");
        a.push(hub.put(c, 1, delay, 60, b"a", T0).unwrap());
        hub.use_tube(c, "b");
        b.push(hub.put(c, 1, delay, 60, b"b", T0).unwrap());
    }
    hub.use_tube(c, "default");
    let delayed =
        |hub: &Hub<S>, tube: &str, now| hub.stats_tube(tube, now).map(|t| t.current_jobs_delayed);
    assert!(hub.jobs.is_empty(), "far jobs must not be resident");
    assert_eq!(
        (delayed(&hub, "a", T0), delayed(&hub, "b", T0)),
        (Some(60), Some(60))
    );
    for &id in &a[..20] {
        hub.delete(c, id, T0).unwrap();
    }
    assert_eq!(
        (delayed(&hub, "a", T0), delayed(&hub, "b", T0)),
        (Some(40), Some(60))
    );
    assert_eq!(hub.stats(T0).current_jobs_delayed, 100);
    // The first jobs an hour out (b's, a's are deleted) load, their spokes split first; the
    // counts stay.
    let now = T0 + 3_599 * SECOND;
    let mut t = T0;
    while t < now {
        t = (t + 10 * SECOND).min(now);
        hub.tick(t);
    }
    assert!(!hub.jobs.is_empty(), "the nearest jobs are resident now");
    assert_eq!(
        (delayed(&hub, "a", now), delayed(&hub, "b", now)),
        (Some(40), Some(60))
    );
    for &id in &b {
        hub.delete(c, id, now).unwrap();
    }
    // No job and no client left in tube b: it is gone.
    assert_eq!(
        (delayed(&hub, "a", now), delayed(&hub, "b", now)),
        (Some(40), None)
    );
    assert_eq!(hub.stats(now).current_jobs_delayed, 40);
}

#[test]
fn far_counts_per_tube_mem() {
    far_counts_per_tube::<MemSegment>(false);
}

#[test]
fn far_counts_per_tube_mapped() {
    far_counts_per_tube::<MappedSegment>(true);
}

#[test]
fn far_counts_per_tube_lazy() {
    far_counts_per_tube::<LazySegment>(true);
}

#[test]
fn far_jobs_mem() {
    far_jobs::<MemSegment>(false);
}

#[test]
fn far_jobs_mapped() {
    far_jobs::<MappedSegment>(true);
}

#[test]
fn far_jobs_lazy() {
    far_jobs::<LazySegment>(true);
}

#[test]
fn spokes_without_live_jobs_are_retired_and_their_files_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    let a = hub.put(c, 0, 0, 5, b"now", T0).unwrap();
    let b = hub.put(c, 0, 100, 5, b"far", T0).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert!(hub.stats(T0).data_bytes > 0);
    // A far spoke goes as soon as it is empty.
    hub.delete(c, b, T0).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    // The current spoke goes once it is empty and entirely past.
    hub.delete(c, a, T0).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    let end = hub.next_deadline().unwrap();
    assert_eq!(end, T0 + SECOND);
    hub.tick(end);
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(hub.stats(end).spokes, 0);
    assert_eq!(hub.stats(end).data_bytes, 0);
    assert_eq!(hub.next_deadline(), None);
}

/// An open lazy file runs a reserved tail past its data; a flush (drain, shutdown) closes the
/// far spokes, which cuts those tails off: each file then ends where its data ends, as long as
/// the clean summary says, and a restart opens it at that size without a search.
#[test]
fn lazy_far_files_end_at_their_data_after_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    for i in 0..200 {
        hub.put(c, 0, 3_600 + i * 97, 5, b"far", T0).unwrap();
    }
    let lens = |dir: &std::path::Path| -> Vec<u64> {
        segment_files(dir)
            .iter()
            .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
            .collect()
    };
    let ends = |dir: &std::path::Path| -> Vec<u64> {
        segment_files(dir)
            .iter()
            .map(|n| LazySegment::open(&dir.join(n)).unwrap().byte_size())
            .collect()
    };
    let open = lens(dir.path());
    assert!(open.len() > 1, "far puts spread over several spokes");
    hub.flush().unwrap();
    let flushed = lens(dir.path());
    assert!(
        flushed.iter().zip(&open).all(|(f, o)| f < o),
        "{open:?} → {flushed:?}"
    );
    assert_eq!(flushed, ends(dir.path()));
    drop(hub);
    let hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0 + SECOND).unwrap();
    assert_eq!(hub.stats(T0 + SECOND).current_jobs_delayed, 200);
}

/// Resident memory (bytes, from `/proc/self/smaps`) of this process's mappings of files in
/// `dir`.
fn resident_in(dir: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some((range, rest)) = line.split_once(' ')
            && range.contains('-')
            && range.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            inside = rest
                .split_whitespace()
                .nth(4)
                .is_some_and(|p| std::path::Path::new(p).starts_with(dir));
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            total += kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap()
                * 1024;
        }
    }
    total
}

/// Far spokes left idle for `FAR_IDLE` let their pages go, each once until used again, and
/// their jobs are unharmed: what an idle far future costs is page cache, not resident memory.
fn idle_far_spokes_leave_memory<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<S>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    let body = vec![b'x'; 3000];
    let mut ids = Vec::new();
    for i in 0..300u32 {
        ids.push(hub.put(c, 0, 3_600 + i * 977, 5, &body, T0).unwrap());
    }
    let spokes = segment_files(dir.path()).len();
    assert!(spokes > 10, "far puts spread over {spokes} spokes");
    let busy = resident_in(dir.path());
    assert!(busy >= 64 * 1024, "appends left {busy} bytes resident");
    // Not idle for long enough yet.
    let idle = crate::store::FAR_IDLE;
    assert_eq!(hub.shed_idle_far(T0 + idle, usize::MAX), 0);
    assert_eq!(resident_in(dir.path()), busy);
    // In bounded calls, each spoke once.
    let later = T0 + idle + 1;
    let mut shed = 0;
    loop {
        let n = hub.shed_idle_far(later, 4);
        assert!(n <= 4);
        if n == 0 {
            break;
        }
        shed += n;
    }
    // The rest were closed, least recently used first, which lets their pages go too.
    assert_eq!(shed, spokes.min(crate::store::MAX_OPEN_FAR_SPOKES));
    assert_eq!(resident_in(dir.path()), 0);
    // A spoke used again is busy until it is idle again, the others stay shed.
    let now = T0 + 10 * SECOND;
    assert_eq!(hub.peek(ids[7]).unwrap().body, Bytes::from(body.clone()));
    let id = hub.put(c, 0, 3_600 + 7 * 977 - 10, 5, &body, now).unwrap();
    assert!(resident_in(dir.path()) > 0);
    assert_eq!(hub.shed_idle_far(now + idle, usize::MAX), 0);
    assert_eq!(hub.shed_idle_far(now + idle + 1, usize::MAX), 1);
    assert_eq!(resident_in(dir.path()), 0);
    for &id in ids.iter().chain([&id]) {
        assert_eq!(hub.peek(id).unwrap().body.len(), body.len(), "job {id}");
    }
    drop(hub);
    let hub = Hub::<S>::open(cfg(dir.path(), true), now).unwrap();
    assert_eq!(hub.stats(now).current_jobs_delayed, 301);
}

#[test]
fn idle_far_lazy_spokes_leave_memory() {
    idle_far_spokes_leave_memory::<LazySegment>();
}

#[test]
fn idle_far_mapped_spokes_leave_memory() {
    idle_far_spokes_leave_memory::<MappedSegment>();
}

#[test]
fn ids_continue_after_every_job_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
        let c = hub.connect();
        for _ in 0..3 {
            let id = hub.put(c, 0, 0, 5, b"x", T0).unwrap();
            hub.delete(c, id, T0).unwrap();
        }
        hub.tick(T0 + 2 * SECOND);
        assert!(segment_files(dir.path()).is_empty());
    }
    let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0 + 3 * SECOND).unwrap();
    let c = hub.connect();
    let id = hub.put(c, 0, 0, 5, b"y", T0 + 3 * SECOND).unwrap();
    assert!(id > 3, "id {id} reused");
    assert!(
        id <= 1 + ID_BLOCK,
        "id {id} jumps further than one id block"
    );
}

#[test]
fn mem_mode_writes_files_only_on_flush_and_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
        let c = hub.connect();
        a = hub.put(c, 5, 0, 5, b"ready", T0).unwrap();
        b = hub.put(c, 5, 50, 5, b"delayed", T0).unwrap();
        let r = hub.put(c, 5, 0, 5, b"reserved", T0).unwrap();
        assert_eq!(reserved_id(hub.reserve(c, None, T0)), a);
        hub.bury(c, a, 7, T0).unwrap();
        assert_eq!(reserved_id(hub.reserve(c, None, T0)), r);
        assert!(segment_files(dir.path()).is_empty());
        hub.flush().unwrap();
        assert_eq!(segment_files(dir.path()).len(), 2);
    }
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0 + SECOND).unwrap();
    let c = hub.connect();
    let s = hub.stats(T0 + SECOND);
    assert_eq!(
        (
            s.current_jobs_ready,
            s.current_jobs_delayed,
            s.current_jobs_buried
        ),
        (1, 1, 1)
    );
    assert_eq!(hub.peek_buried(c).unwrap().id, a);
    assert_eq!(hub.stats_job(a, T0 + SECOND).unwrap().pri, 7);
    assert_eq!(hub.peek_delayed(c).unwrap().body, Bytes::from("delayed"));
    assert_eq!(hub.peek_delayed(c).unwrap().id, b);
}

#[test]
fn mem_mode_flush_removes_files_of_a_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
        let c = hub.connect();
        hub.put(c, 5, 30, 5, b"old", T0).unwrap();
        hub.flush().unwrap();
    }
    let mut c2 = cfg(dir.path(), false);
    c2.restore = false;
    {
        let mut hub = Hub::<MemSegment>::open(c2, T0).unwrap();
        assert_eq!(hub.stats(T0).current_jobs_delayed, 0);
        let c = hub.connect();
        hub.put(c, 5, 0, 5, b"new", T0).unwrap();
        hub.flush().unwrap();
    }
    let hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    let s = hub.stats(T0);
    assert_eq!((s.current_jobs_ready, s.current_jobs_delayed), (1, 0));
}

#[test]
fn recovery_takes_the_highest_version_and_marks_the_loser_moved() {
    // A crash between a delayed release's append and its Moved mark leaves two live records.
    let dir = tempfile::tempdir().unwrap();
    let a = SpokeId {
        start: T0,
        span: SECOND,
    };
    let b = SpokeId {
        start: T0 + 10 * SECOND,
        span: SECOND,
    };
    let rec = |id, trigger_at, version| NewRecord {
        id,
        trigger_at,
        created_at: T0,
        ttr: 5,
        tube: b"t",
        name: &[],
        body: b"job",
        slot: StateSlot {
            version,
            state: JobState::Waiting,
            priority: 3,
            counters: Default::default(),
        },
    };
    let old_off;
    {
        let _lock = DataDir::open(dir.path()).unwrap();
        let mut sa = MappedSegment::create(dir.path(), a).unwrap();
        old_off = sa.append(&rec(42, T0, 1)).unwrap();
        sa.append(&rec(41, T0, 1)).unwrap();
        let mut sb = MappedSegment::create(dir.path(), b).unwrap();
        sb.append(&rec(42, T0 + 10 * SECOND, 2)).unwrap();
        sa.flush().unwrap();
        sb.flush().unwrap();
    }
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0 + SECOND).unwrap();
    let c = hub.connect();
    hub.watch(c, "t");
    assert_eq!(
        reserved_id(hub.reserve(c, Some(T0 + SECOND), T0 + SECOND)),
        41
    );
    assert_eq!(
        hub.reserve(c, Some(T0 + SECOND), T0 + SECOND),
        ReserveOutcome::TimedOut
    );
    let st = hub.stats_job(42, T0 + SECOND).unwrap();
    assert_eq!((st.state, st.time_left), ("delayed", 9));
    // The loser is marked once the winner's segment is synced (a power cut could otherwise
    // keep the mark and lose the winner).
    let batch = hub.take_sync_batch();
    batch.sync().unwrap();
    hub.synced(batch.epoch);
    let mut sa =
        MappedSegment::open(&dir.path().join(crate::segment::segment_file_name(a))).unwrap();
    assert_eq!(sa.read(old_off).unwrap().slot.state, JobState::Moved);
    assert!(hub.put(c, 0, 0, 1, b"next", T0 + SECOND).unwrap() > 42);
}

#[test]
fn recovery_skips_and_counts_a_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
        let c = hub.connect();
        hub.put(c, 0, 0, 5, b"good-one", T0).unwrap();
        hub.put(c, 0, 0, 5, b"bad-body", T0).unwrap();
        hub.flush().unwrap();
    }
    let name = &segment_files(dir.path())[0];
    let path = dir.path().join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"bad-body")
        .expect("the body is in the file");
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    let s = hub.stats(T0);
    assert_eq!((s.current_jobs_ready, s.corrupt_records_skipped), (1, 1));
    assert_eq!(
        hub.reserve(c, None, T0),
        ReserveOutcome::Reserved(JobView {
            id: 1,
            body: Bytes::from("good-one"),
        })
    );
    assert!(hub.put(c, 0, 0, 5, b"x", T0).unwrap() > 2);
}

#[test]
fn deadline_soon_reaches_a_waiting_reserver_one_second_before_its_ttr() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    let c = hub.connect();
    let id = hub.put(c, 0, 0, 3, b"j", T0).unwrap();
    assert_eq!(reserved_id(hub.reserve(c, None, T0)), id);
    assert_eq!(hub.reserve(c, None, T0), ReserveOutcome::Wait);
    assert_eq!(hub.next_deadline(), Some(T0 + 2 * SECOND));
    hub.tick(T0 + 2 * SECOND - 1);
    assert!(hub.take_wakeups().is_empty());
    hub.tick(T0 + 2 * SECOND);
    assert_eq!(hub.take_wakeups(), vec![(c, ReserveOutcome::DeadlineSoon)]);
    // Within the margin, a reserve answers at once; touch restarts the TTR.
    assert_eq!(
        hub.reserve(c, None, T0 + 2 * SECOND),
        ReserveOutcome::DeadlineSoon
    );
    hub.touch(c, id, T0 + 2 * SECOND).unwrap();
    assert_eq!(hub.reserve(c, None, T0 + 2 * SECOND), ReserveOutcome::Wait);
    assert_eq!(hub.next_deadline(), Some(T0 + 4 * SECOND));
    hub.tick(T0 + 4 * SECOND);
    assert_eq!(hub.take_wakeups(), vec![(c, ReserveOutcome::DeadlineSoon)]);
    // The TTR ends: the job is ready again and counts a timeout.
    assert_eq!(hub.next_deadline(), Some(T0 + 5 * SECOND));
    hub.tick(T0 + 5 * SECOND);
    assert_eq!(hub.stats_job(id, T0 + 5 * SECOND).unwrap().state, "ready");
    assert_eq!(hub.stats_job(id, T0 + 5 * SECOND).unwrap().timeouts, 1);
    assert_eq!(hub.stats(T0 + 5 * SECOND).job_timeouts, 1);
    // A reserver waiting when the TTR ends gets the job back.
    assert_eq!(reserved_id(hub.reserve(c, None, T0 + 5 * SECOND)), id);
    hub.tick(T0 + 7 * SECOND);
    assert_eq!(
        hub.reserve(c, None, T0 + 7 * SECOND),
        ReserveOutcome::DeadlineSoon
    );
}

#[test]
fn the_oldest_waiter_is_served_first_across_tubes() {
    //! Regression: tubes were served in name order, so the newer waiter B (watching a and b)
    //! took b's job, the one the older waiter A (watching only b) needed, and A kept waiting.
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    let (p, wa, wb) = (hub.connect(), hub.connect(), hub.connect());
    hub.watch(wa, "b");
    hub.ignore(wa, "default").unwrap();
    hub.watch(wb, "a");
    hub.watch(wb, "b");
    hub.ignore(wb, "default").unwrap();
    assert_eq!(hub.reserve(wa, None, T0), ReserveOutcome::Wait);
    assert_eq!(hub.reserve(wb, None, T0), ReserveOutcome::Wait);
    // Both become ready in the same tick: b's job (pri 0) is the best for both.
    hub.use_tube(p, "a");
    let ja = hub.put(p, 5, 1, 5, b"a", T0).unwrap();
    hub.use_tube(p, "b");
    let jb = hub.put(p, 0, 1, 5, b"b", T0).unwrap();
    hub.tick(T0 + SECOND);
    let mut w = hub.take_wakeups();
    w.sort_by_key(|(c, _)| *c);
    let got: Vec<(ConnId, u64)> = w.into_iter().map(|(c, o)| (c, reserved_id(o))).collect();
    assert_eq!(got, vec![(wa, jb), (wb, ja)]);
}

#[test]
fn a_waiter_times_out_at_its_deadline_and_cancel_wait_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    let (a, b) = (hub.connect(), hub.connect());
    assert_eq!(hub.reserve(a, Some(T0 + 500), T0), ReserveOutcome::Wait);
    assert_eq!(hub.reserve(b, None, T0), ReserveOutcome::Wait);
    assert_eq!(hub.stats(T0).current_waiting, 2);
    assert_eq!(hub.next_deadline(), Some(T0 + 500));
    hub.tick(T0 + 499);
    assert!(hub.take_wakeups().is_empty());
    hub.tick(T0 + 500);
    assert_eq!(hub.take_wakeups(), vec![(a, ReserveOutcome::TimedOut)]);
    hub.cancel_wait(b);
    let id = hub.put(a, 0, 0, 5, b"x", T0 + 600).unwrap();
    assert!(hub.take_wakeups().is_empty());
    assert_eq!(hub.peek_ready(a).unwrap().id, id);
    assert_eq!(hub.next_deadline(), None);
}

#[test]
fn disconnect_releases_reserved_jobs_and_drops_idle_tubes() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    let (a, b) = (hub.connect(), hub.connect());
    hub.use_tube(a, "x");
    hub.watch(a, "x");
    let id = hub.put(a, 0, 0, 5, b"x", T0).unwrap();
    assert_eq!(reserved_id(hub.reserve(a, None, T0)), id);
    assert_eq!(hub.delete(b, id, T0), Err(HubError::NotFound));
    assert_eq!(hub.list_tubes(), vec!["default", "x"]);
    hub.disconnect(a, T0);
    let s = hub.stats_tube("x", T0).unwrap();
    assert_eq!(
        (s.current_jobs_ready, s.current_using, s.current_watching),
        (1, 0, 0)
    );
    hub.watch(b, "x");
    hub.delete(b, id, T0).unwrap();
    hub.ignore(b, "x").unwrap();
    assert_eq!(hub.list_tubes(), vec!["default"]);
    assert_eq!(hub.stats(T0).current_connections, 1);
}

#[test]
fn paused_tube_is_skipped_until_the_pause_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    let c = hub.connect();
    let id = hub.put(c, 0, 0, 5, b"x", T0).unwrap();
    hub.pause_tube("default", 2, T0).unwrap();
    assert_eq!(hub.pause_tube("nope", 2, T0), Err(HubError::NotFound));
    assert_eq!(hub.reserve(c, None, T0), ReserveOutcome::Wait);
    let s = hub.stats_tube("default", T0 + 500_000).unwrap();
    assert_eq!((s.pause, s.pause_time_left, s.cmd_pause_tube), (2, 1, 1));
    assert_eq!(hub.next_deadline(), Some(T0 + 2 * SECOND));
    hub.tick(T0 + 2 * SECOND);
    assert_eq!(reserved_id(hub.take_wakeups().remove(0).1), id);
}

#[test]
fn delayed_release_moves_the_job_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
        let c = hub.connect();
        id = hub.put(c, 9, 0, 5, b"body", T0).unwrap();
        assert_eq!(reserved_id(hub.reserve(c, None, T0)), id);
        assert_eq!(hub.release(c, id, 4, 100, T0), Ok(ReleaseOutcome::Released));
        assert!(hub.jobs.is_empty(), "released far: no longer resident");
        let st = hub.stats_job(id, T0).unwrap();
        assert_eq!(
            (st.state, st.releases, st.reserves, st.delay),
            ("delayed", 1, 1, 100)
        );
    }
    let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0 + 10 * SECOND).unwrap();
    let c = hub.connect();
    let st = hub.stats_job(id, T0 + 10 * SECOND).unwrap();
    assert_eq!((st.state, st.pri, st.time_left), ("delayed", 4, 90));
    // The old record's Moved mark waits for a sync (the first hub never synced: both
    // records were live at the restart, the newer won).
    let batch = hub.take_sync_batch();
    batch.sync().unwrap();
    hub.synced(batch.epoch);
    hub.tick(T0 + 100 * SECOND);
    assert_eq!(hub.peek_ready(c).unwrap().body, Bytes::from("body"));
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "the emptied old spoke is gone"
    );
}

#[test]
fn hubs_of_every_mode_can_be_shared_across_threads() {
    fn send<T: Send + 'static>() {}
    send::<Hub<MemSegment>>();
    send::<Hub<MappedSegment>>();
    send::<Hub<LazySegment>>();
}

thread_local! {
    static DISK_FULL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// MemSegment whose appends fail with DiskFull while `DISK_FULL` is set (fault injection).
struct FullDisk(MemSegment);

impl Segment for FullDisk {
    const FILE_BACKED: bool = true;

    fn create(dir: &std::path::Path, spoke: SpokeId) -> crate::segment::Result<Self> {
        MemSegment::create(dir, spoke).map(FullDisk)
    }
    fn open(path: &std::path::Path) -> crate::segment::Result<Self> {
        MemSegment::open(path).map(FullDisk)
    }
    fn spoke(&self) -> SpokeId {
        self.0.spoke()
    }
    fn append(&mut self, rec: &NewRecord<'_>) -> crate::segment::Result<RecordOffset> {
        if DISK_FULL.get() {
            return Err(StorageError::DiskFull {
                path: std::path::PathBuf::from("full"),
            });
        }
        self.0.append(rec)
    }
    fn read(&mut self, offset: RecordOffset) -> crate::segment::Result<Record> {
        self.0.read(offset)
    }
    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> crate::segment::Result<()> {
        self.0.update(offset, slot)
    }
    fn record_len(&mut self, offset: RecordOffset) -> crate::segment::Result<u64> {
        self.0.record_len(offset)
    }
    fn free_run(&mut self, offset: RecordOffset, run: u64) -> crate::segment::Result<()> {
        self.0.free_run(offset, run)
    }
    fn punch(&mut self, from: u64, to: u64) -> crate::segment::Result<u64> {
        self.0.punch(from, to)
    }
    fn version(&self) -> u32 {
        self.0.version()
    }
    fn scan(&mut self) -> crate::segment::Result<Vec<crate::segment::Result<RecordMeta>>> {
        self.0.scan()
    }
    fn flush(&mut self) -> crate::segment::Result<()> {
        self.0.flush()
    }
    fn byte_size(&self) -> u64 {
        self.0.byte_size()
    }
    fn image(&self) -> Option<&[u8]> {
        self.0.image()
    }
    fn close(&mut self) -> crate::segment::Result<()> {
        self.0.close()
    }
    fn destroy(self) -> crate::segment::Result<()> {
        self.0.destroy()
    }
}

/// The `Segment` trait's default scans (`scan_from`, `scan_records_from`: FullDisk keeps them)
/// carry far jobs through splits as the segments' own do: every record moved by split steps,
/// every job handed out once, none early.
#[test]
fn far_jobs_through_the_default_scans() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<FullDisk>::open(cfg(dir.path(), false), T0).unwrap();
    let c = hub.connect();
    let ids: Vec<u64> = (0..100u32)
        .map(|i| hub.put(c, 1, 3_600 + i % 5, 60, b"far", T0).unwrap())
        .collect();
    let due = T0 + 3_605 * SECOND;
    let mut now = T0;
    while now < due {
        now = hub.next_deadline().map_or(due, |n| n.min(due));
        hub.tick(now);
        if now < T0 + 3_600 * SECOND {
            assert_eq!(hub.peek_ready(c), None, "ready early at {now}");
        }
    }
    assert!(hub.work().records_split >= 100, "{:?}", hub.work());
    let mut got = Vec::new();
    while let ReserveOutcome::Reserved(j) = hub.reserve(c, Some(0), now) {
        got.push(j.id);
        hub.delete(c, j.id, now).unwrap();
    }
    assert_eq!(got, ids);
}

#[test]
fn disk_full_fails_puts_buries_delayed_releases_and_keeps_existing_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<FullDisk>::open(cfg(dir.path(), false), T0).unwrap();
    let c = hub.connect();
    let a = hub.put(c, 1, 0, 5, b"a", T0).unwrap();
    let b = hub.put(c, 2, 0, 5, b"b", T0).unwrap();
    assert_eq!(reserved_id(hub.reserve(c, None, T0)), a);
    DISK_FULL.set(true);
    assert_eq!(hub.put(c, 0, 0, 5, b"lost", T0), Err(HubError::OutOfMemory));
    assert_eq!(hub.release(c, a, 3, 10, T0), Ok(ReleaseOutcome::Buried));
    let st = hub.stats_job(a, T0).unwrap();
    assert_eq!(
        (st.state, st.pri, st.releases, st.buries),
        ("buried", 3, 1, 1)
    );
    // Changes in place still work while the disk is full.
    assert_eq!(reserved_id(hub.reserve(c, None, T0)), b);
    hub.release(c, b, 2, 0, T0).unwrap();
    hub.kick(c, 1, T0);
    DISK_FULL.set(false);
    let s = hub.stats(T0);
    assert_eq!((s.current_jobs_ready, s.total_jobs), (2, 2));
    // The failed put's id is not reused.
    assert_eq!(hub.put(c, 0, 0, 5, b"c", T0), Ok(4));
}

#[test]
fn a_failed_put_leaves_no_empty_spoke_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<FullDisk>::open(cfg(dir.path(), false), T0).unwrap();
    let c = hub.connect();
    DISK_FULL.set(true);
    assert_eq!(
        hub.put(c, 0, 500, 5, b"far", T0),
        Err(HubError::OutOfMemory)
    );
    assert_eq!(hub.put(c, 0, 0, 5, b"now", T0), Err(HubError::OutOfMemory));
    DISK_FULL.set(false);
    assert_eq!(
        hub.stats(T0).spokes,
        1,
        "only the current spoke, until it is past"
    );
    hub.tick(T0 + SECOND);
    assert_eq!(hub.stats(T0 + SECOND).spokes, 0);
    assert_eq!(hub.next_deadline(), None);
}

#[test]
fn at_most_max_open_far_spokes_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    // Three days apart: one spoke each, whatever their spans.
    for d in 0..100u32 {
        hub.put(c, 0, (d + 1) * 3 * 86_400, 5, b"x", T0).unwrap();
    }
    assert_eq!(hub.store.spokes.len(), 100);
    assert_eq!(hub.store.open_far.len(), MAX_OPEN_FAR_SPOKES);
    assert_eq!(hub.stats(T0).segments_open, MAX_OPEN_FAR_SPOKES as u64);
}

#[test]
fn a_lost_or_damaged_id_index_is_rebuilt_for_far_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u64>;
    {
        let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
        let c = hub.connect();
        ids = (0..5)
            .map(|i| hub.put(c, 0, 100 + i, 5, b"far", T0).unwrap())
            .collect();
    }
    let index = dir.path().join(crate::segment::ID_INDEX_FILE);
    for damage in [None, Some(vec![0xffu8; 200])] {
        match &damage {
            None => std::fs::remove_file(&index).unwrap(),
            Some(junk) => std::fs::write(&index, junk).unwrap(),
        }
        let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
        let c = hub.connect();
        assert_eq!(hub.stats(T0).current_jobs_delayed, 5);
        assert_eq!(hub.peek(ids[3]).unwrap().body, Bytes::from("far"));
        assert!(
            !hub.jobs.contains_key(&ids[3]),
            "found through the index, not resident"
        );
        assert!(hub.put(c, 0, 0, 5, b"near", T0).unwrap() > ids[4]);
    }
}

#[test]
fn a_sync_batch_names_exactly_what_changed_and_syncs_outside_the_hub() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    assert!(hub.take_sync_batch().is_empty());
    let near = hub.put(c, 0, 0, 5, b"near", T0).unwrap();
    let far = hub.put(c, 0, 100, 5, b"far", T0).unwrap();
    let batch = hub.take_sync_batch();
    // The open files themselves (no open by path per sync): compared by inode.
    let inodes: Vec<u64> = batch
        .files
        .iter()
        .map(|f| match f {
            SyncFile::Open(file) => file.metadata().unwrap().ino(),
            SyncFile::Closed(p) => panic!("{p:?}: an open file is synced by its handle"),
        })
        .collect();
    let mut want = segment_files(dir.path());
    want.push(crate::segment::ID_INDEX_FILE.to_string());
    let want: Vec<u64> = want
        .iter()
        .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().ino())
        .collect();
    assert_eq!(inodes, want);
    assert_eq!(batch.dir.as_deref(), Some(dir.path()));
    assert!(hub.take_sync_batch().is_empty(), "taken once");
    // An in-place change names only its segment; a retired spoke's file is skipped by sync.
    assert_eq!(reserved_id(hub.reserve(c, None, T0)), near);
    hub.bury(c, near, 1, T0).unwrap();
    hub.delete(c, far, T0).unwrap();
    let batch = hub.take_sync_batch();
    assert_eq!(batch.files.len(), 2, "{batch:?}");
    assert!(batch.dir.is_some(), "the far spoke's file was removed");
    batch.sync().unwrap();
    // Mem mode writes its files on flush instead.
    let mem_dir = tempfile::tempdir().unwrap();
    let mut mem = Hub::<MemSegment>::open(cfg(mem_dir.path(), false), T0).unwrap();
    let c = mem.connect();
    mem.put(c, 0, 0, 5, b"x", T0).unwrap();
    assert!(mem.take_sync_batch().is_empty());
}

/// Regression: a segment create cut short by a full disk left an empty file behind, and every
/// later create of that spoke failed ("file exists", INTERNAL_ERROR) until a restart.
#[test]
fn an_empty_segment_file_is_removed_by_recovery_and_its_spoke_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let spoke = crate::store::spoke_for(T0, SECOND);
    let path = dir.path().join(crate::segment::segment_file_name(spoke));
    std::fs::write(&path, b"").unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    assert_eq!(hub.stats(T0).corrupt_records_skipped, 0);
    let c = hub.connect();
    let id = hub.put(c, 0, 0, 5, b"x", T0).unwrap();
    assert_eq!(hub.peek(id).unwrap().body, Bytes::from("x"));
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
}

/// After an id index write failed (disk full in compaction or recovery), a far job whose entry
/// is missing is still found by id: the lookup falls back to scanning the far spokes.
#[test]
fn a_far_job_without_its_index_entry_is_found_once_the_index_is_known_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    let id = hub.put(c, 0, 500, 5, b"far", T0).unwrap();
    hub.store.index.remove(id).unwrap();
    assert_eq!(hub.peek(id), None, "only the index finds a far job");
    hub.store.index_incomplete = true;
    assert_eq!(hub.peek(id).unwrap().body, Bytes::from("far"));
    hub.delete(c, id, T0).unwrap();
    assert_eq!(hub.peek(id), None);
}

/// A clean shutdown with an incomplete id index writes no summary: the next open would trust
/// the index for far jobs, and the one missing its entry would be lost to lookups by id.
#[test]
fn an_incomplete_index_writes_no_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    hub.put(c, 0, 500, 5, b"far", T0).unwrap();
    hub.flush().unwrap();
    assert!(
        hub.store.dir.summary_path().exists(),
        "a clean flush writes one"
    );
    hub.put(c, 0, 500, 5, b"far too", T0).unwrap();
    hub.store.index_incomplete = true;
    hub.flush().unwrap();
    assert!(!hub.store.dir.summary_path().exists());
}

/// Puts 400 jobs of 1 KiB `delay_s` ahead (one spoke of ~450 KiB) and deletes 300 of them:
/// the spoke is then mostly dead, worth compacting.
fn mostly_dead_spoke(hub: &mut Hub<MappedSegment>, delay_s: u32) {
    let c = hub.connect();
    let body = vec![b'x'; 1024];
    let ids: Vec<u64> = (0..400)
        .map(|_| hub.put(c, 0, delay_s, 60, &body, T0).unwrap())
        .collect();
    for id in ids.iter().filter(|&&id| id % 4 != 0) {
        hub.delete(c, *id, T0).unwrap();
    }
}

#[test]
fn a_far_spoke_is_compacted_at_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    mostly_dead_spoke(&mut hub, 3_600);
    hub.tick(T0);
    assert!(hub.work().segments_compacted >= 1);
}

/// A loaded spoke's jobs are due soon and usually all deleted moments later, which retires
/// the whole file: compacting it meanwhile (a rewrite and an fsync under the server's lock)
/// would be wasted. It waits until the spoke has been past for COMPACT_AFTER_PAST.
#[test]
fn a_loaded_spoke_is_compacted_only_once_long_past() {
    use crate::store::COMPACT_AFTER_PAST;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    mostly_dead_spoke(&mut hub, 1);
    let end = T0 + 2 * SECOND;
    for now in [T0, T0 + SECOND, end, end + COMPACT_AFTER_PAST - 1] {
        hub.tick(now);
        assert_eq!(hub.work().segments_compacted, 0, "at {}", now - T0);
    }
    hub.tick(end + COMPACT_AFTER_PAST);
    assert_eq!(hub.work().segments_compacted, 1);
    assert_eq!(hub.stats(end + COMPACT_AFTER_PAST).current_jobs_ready, 100);

    // Deleting the rest meanwhile retires the spoke: nothing is compacted.
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    mostly_dead_spoke(&mut hub, 1);
    let c = hub.connect();
    while let ReserveOutcome::Reserved(j) = hub.reserve(c, Some(end), end) {
        hub.delete(c, j.id, end).unwrap();
    }
    hub.tick(end + COMPACT_AFTER_PAST);
    assert_eq!(hub.work().segments_compacted, 0);
    assert_eq!(hub.work().spokes_retired, 1);
    assert!(segment_files(dir.path()).is_empty());
}

/// A wide spoke retired after its split is handed out with deferred removal, not destroyed in
/// the hub call (unlinking a large fallocated file held the hub lock for milliseconds): no
/// record is placed in a wide spoke once its split time has come.
#[test]
fn deferred_removal_hands_out_split_spokes() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    hub.set_deferred_removal(true);
    let c = hub.connect();
    let delay = 2 * 86_400;
    let id = hub.put(c, 0, delay, 5, b"far", T0).unwrap();
    let mut now = T0;
    let mut handed_out = 0;
    while now < T0 + u64::from(delay) * SECOND {
        now = hub.next_deadline().expect("a job left, so a deadline");
        hub.tick(now);
        let batch = hub.take_sync_batch();
        batch.sync().unwrap();
        hub.synced(batch.epoch);
        for s in hub.take_retired() {
            handed_out += 1;
            s.destroy().unwrap();
        }
    }
    assert!(hub.work().spokes_split > 0, "nothing was split");
    assert_eq!(
        handed_out,
        hub.work().spokes_split,
        "every split spoke handed out"
    );
    assert!(matches!(
        hub.reserve(c, Some(now), now),
        ReserveOutcome::Reserved(v) if v.id == id
    ));
}

fn dead_files(dir: &std::path::Path) -> Vec<String> {
    let mut v = segment_files(dir);
    v.retain(|n| n.ends_with(".dead"));
    v
}

/// A far spoke emptied by deletes and put into again before its renamed file was removed,
/// then a kill: the restart removes the renamed file and finds exactly the live jobs.
fn dead_file_left_by_a_kill<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, again);
    {
        let mut hub = Hub::<S>::open(cfg(dir.path(), true), T0).unwrap();
        hub.set_deferred_removal(true);
        let c = hub.connect();
        kept = hub.put(c, 0, 200, 5, b"kept", T0).unwrap();
        let gone = hub.put(c, 0, 100, 5, b"gone", T0).unwrap();
        hub.delete(c, gone, T0).unwrap();
        again = hub.put(c, 0, 100, 5, b"again", T0).unwrap();
        let batch = hub.take_sync_batch();
        batch.sync().unwrap();
        hub.synced(batch.epoch);
        assert_eq!(dead_files(dir.path()).len(), 1);
        // Killed before the reaper ran: the retired segment is dropped, its file stays.
        drop(hub.take_retired());
    }
    assert_eq!(dead_files(dir.path()).len(), 1);
    let later = T0 + 300 * SECOND;
    let mut hub = Hub::<S>::open(cfg(dir.path(), true), later).unwrap();
    assert!(dead_files(dir.path()).is_empty(), "removed at open");
    let c = hub.connect();
    let mut got = Vec::new();
    while let ReserveOutcome::Reserved(j) = hub.reserve(c, Some(later), later) {
        got.push((j.id, j.body.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![(kept, b"kept".to_vec()), (again, b"again".to_vec())]
    );
}

#[test]
fn dead_file_left_by_a_kill_mapped() {
    dead_file_left_by_a_kill::<MappedSegment>();
}

#[test]
fn dead_file_left_by_a_kill_lazy() {
    dead_file_left_by_a_kill::<LazySegment>();
}

/// With deferred removal, a retired spoke's segment is handed out instead of destroyed in the
/// call, its file renamed aside: a far spoke emptied by deletes can be put into again at once.
#[test]
fn deferred_removal_hands_out_retired_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    hub.set_deferred_removal(true);
    let c = hub.connect();
    let near = hub.put(c, 0, 0, 5, b"near", T0).unwrap();
    let far = hub.put(c, 0, 100, 5, b"far", T0).unwrap();
    let live = segment_files(dir.path());
    assert_eq!(live.len(), 2);
    hub.delete(c, far, T0).unwrap();
    assert!(hub.has_retired(), "far: handed out");
    assert_eq!(dead_files(dir.path()).len(), 1, "renamed aside in the call");
    assert_eq!(segment_files(dir.path()).len(), 2);
    // The same far spoke can be put into again at once: a new file of the old name.
    let again = hub.put(c, 0, 100, 5, b"again", T0).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 3);
    for s in hub.take_retired() {
        s.destroy().unwrap();
    }
    assert!(
        dead_files(dir.path()).is_empty(),
        "the renamed file removed"
    );
    assert_eq!(segment_files(dir.path()), live);
    hub.delete(c, again, T0).unwrap();
    for s in hub.take_retired() {
        s.destroy().unwrap();
    }
    assert_eq!(segment_files(dir.path()).len(), 1);

    hub.delete(c, near, T0).unwrap();
    assert!(!hub.has_retired(), "the current spoke waits until past");
    hub.tick(T0 + SECOND);
    assert_eq!(hub.stats(T0 + SECOND).spokes, 0);
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "not removed in the call"
    );
    let segs = hub.take_retired();
    assert_eq!(segs.len(), 1);
    assert!(hub.take_retired().is_empty(), "taken once");
    for s in segs {
        s.destroy().unwrap();
    }
    assert!(segment_files(dir.path()).is_empty());

    // Whatever is not taken is destroyed by flush.
    hub.put(c, 0, 0, 5, b"x", T0 + SECOND).unwrap();
    let id = reserved_id(hub.reserve(c, None, T0 + SECOND));
    hub.delete(c, id, T0 + SECOND).unwrap();
    hub.tick(T0 + 2 * SECOND);
    assert!(hub.has_retired());
    hub.flush().unwrap();
    assert!(!hub.has_retired());
    assert!(segment_files(dir.path()).is_empty());
}

#[test]
fn mem_mode_failed_flush_restores_the_previous_snapshot_then_a_retry_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("flush.yaad.tmp");
    let (kept, deleted, added);
    {
        let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
        let c = hub.connect();
        kept = hub.put(c, 5, 0, 5, b"kept", T0).unwrap();
        deleted = hub.put(c, 5, 100, 5, b"deleted", T0).unwrap();
        hub.flush().unwrap();
        hub.delete(c, deleted, T0).unwrap();
        added = hub.put(c, 5, 200, 5, b"added", T0).unwrap();
        // The commit record cannot be written: the flush fails after staging its files.
        std::fs::create_dir(&blocker).unwrap();
        hub.flush().unwrap_err();
    }
    std::fs::remove_dir(&blocker).unwrap();
    {
        let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
        assert!(hub.stats_job(kept, T0).is_some());
        assert!(
            hub.stats_job(deleted, T0).is_some(),
            "old snapshot restored"
        );
        assert!(hub.stats_job(added, T0).is_none());
        let c = hub.connect();
        hub.delete(c, deleted, T0).unwrap();
        hub.flush().unwrap();
    }
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    assert!(hub.stats_job(kept, T0).is_some());
    assert!(hub.stats_job(deleted, T0).is_none());
}

/// Once a far spoke is loaded its jobs are in memory and their id index entries go (the
/// server trims once a second): the file gives its blocks back and keeps its length (the
/// high-water mark). An entry rewritten since, for a job released to a far spoke again,
/// stays: that job is still found by id.
fn index_trim<S: Segment>(persist: bool) {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<S>::open(cfg(dir.path(), persist), T0).unwrap();
    let c = hub.connect();
    const JOBS: u64 = 2_000;
    for i in 0..JOBS {
        // Ten far spokes, 10-19 s ahead.
        hub.put(c, 0, 10 + (i % 10) as u32, 60, b"job", T0).unwrap();
    }
    for id in 1..=JOBS {
        assert!(
            hub.store.index.get(id).unwrap().is_some(),
            "far job {id} indexed"
        );
    }
    let ids = dir.path().join(crate::segment::ID_INDEX_FILE);
    let allocated = || std::fs::metadata(&ids).map(|m| m.blocks()).unwrap_or(0);
    let before = allocated();
    let high = hub.store.index.high_water().unwrap();
    assert!(high >= JOBS || !persist, "every id reserved");
    // Every spoke loads (the jobs are not due yet).
    hub.tick(T0 + 9 * SECOND);
    hub.tick(T0 + 9 * SECOND + SECOND / 2);
    assert_eq!(hub.stats(T0 + 9 * SECOND).current_jobs_delayed, JOBS);
    // Job 7 goes far again: its entry is rewritten and must survive the trim.
    let now = T0 + 20 * SECOND;
    hub.tick(now);
    let first = reserved_id(hub.reserve(c, Some(now), now));
    assert_eq!(
        hub.release(c, first, 0, 3_600, now).unwrap(),
        ReleaseOutcome::Released
    );
    while hub.trim_index(100) > 0 {}
    for id in (1..=JOBS).filter(|&id| id != first) {
        assert_eq!(
            hub.store.index.get(id).unwrap(),
            None,
            "entry of loaded job {id}"
        );
    }
    assert!(hub.store.index.get(first).unwrap().is_some());
    assert_eq!(hub.stats_job(first, now).unwrap().state, "delayed");
    assert_eq!(hub.delete(c, first, now), Ok(()));
    if persist {
        assert_eq!(hub.store.index.high_water().unwrap(), high, "length kept");
        let after = allocated();
        assert!(
            after * 4 < before,
            "blocks given back: {before} -> {after} (512-byte units)"
        );
    }
}

#[test]
fn index_trim_mem() {
    index_trim::<MemSegment>(false);
}

#[test]
fn index_trim_mapped() {
    index_trim::<MappedSegment>(true);
}

#[test]
fn index_trim_lazy() {
    index_trim::<LazySegment>(true);
}

/// A mem-mode restore continues ids above every id handed out before the flush, also when the
/// job with the highest id was deleted (its spoke dropped): a stale client's `delete 2` must
/// not hit a new job 2.
#[test]
fn mem_mode_restore_does_not_hand_out_an_id_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    let c = hub.connect();
    assert_eq!(hub.put(c, 0, 0, 60, b"kept", T0).unwrap(), 1);
    assert_eq!(hub.put(c, 0, 3_600, 60, b"gone", T0).unwrap(), 2);
    hub.delete(c, 2, T0).unwrap();
    hub.flush().unwrap();
    drop(hub);
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    assert_eq!(hub.peek(1).map(|j| j.body.to_vec()), Some(b"kept".to_vec()));
    let c = hub.connect();
    assert_eq!(hub.put(c, 0, 0, 60, b"new", T0).unwrap(), 3);
}

/// Regression (`-f 0`): the delete of the last job of a past spoke retires the spoke and hands
/// its segment to the remover; the sync batch then held only the directory, so `DELETED` could
/// be sent while the Deleted slot was only in the page cache, and the file (its removal not
/// durable, maybe not even done) could bring the job back after a power loss. The file is
/// renamed aside in the call now (recovery never reads such a file), and the batch syncs the
/// directory, which makes the rename durable.
#[test]
fn the_last_delete_of_a_retired_past_spoke_is_durable_with_the_next_sync_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    hub.set_deferred_removal(true);
    let c = hub.connect();
    let id = hub.put(c, 0, 0, 60, b"x", T0).unwrap();
    let seg = segment_files(dir.path());
    assert!(!hub.take_sync_batch().is_empty());
    // Past its spoke: the delete retires it at once.
    let later = T0 + 2 * SECOND;
    assert_eq!(reserved_id(hub.reserve(c, None, later)), id);
    hub.delete(c, id, later).unwrap();
    assert!(hub.has_retired(), "handed to the remover");
    assert!(!dir.path().join(&seg[0]).exists(), "renamed in the call");
    assert_eq!(dead_files(dir.path()).len(), 1);
    let batch = hub.take_sync_batch();
    assert_eq!(batch.dir.as_deref(), Some(dir.path()), "{batch:?}");
    for s in hub.take_retired() {
        s.destroy().unwrap();
    }
    batch.sync().unwrap();
    assert!(hub.take_sync_batch().is_empty(), "taken once");
    assert!(segment_files(dir.path()).is_empty());
}

/// A job carries the number of the change that last linked it (what a reply showing it waits
/// for under `-f 0`); calls that change nothing persisted leave it; a far job answers with the
/// latest change number, an upper bound.
#[test]
fn a_job_carries_the_number_of_the_change_that_last_linked_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    hub.set_change(1);
    let id = hub.put(c, 0, 0, 60, b"x", T0).unwrap();
    hub.set_change(0);
    assert_eq!(hub.job_change(id), 1);
    assert_eq!(reserved_id(hub.reserve(c, None, T0)), id);
    assert_eq!(hub.job_change(id), 1, "a reserve writes nothing");
    hub.set_change(2);
    hub.bury(c, id, 0, T0).unwrap();
    hub.set_change(3);
    let far = hub.put(c, 0, 3_600, 60, b"far", T0).unwrap();
    hub.set_change(4);
    hub.kick_job(id, T0).unwrap();
    hub.set_change(0);
    assert_eq!(hub.job_change(id), 4);
    assert_eq!(hub.job_change(far), 4, "not resident: the latest change");
    hub.tick(T0 + 10 * SECOND);
    assert_eq!(hub.job_change(id), 4);
}

/// Jobs spread over days go to wide spokes (a few, not one per second), which are split into
/// finer ones as they come nearer; every job is still handed out at its trigger time, in
/// trigger order, never early, and the wide spokes retire once split.
fn far_horizon<S: Segment>(persist: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<S>::open(cfg(dir.path(), persist), T0).unwrap();
    let c = hub.connect();
    let mut due: Vec<(Micros, u64)> = Vec::new();
    let mut x = 12_345u64;
    for _ in 0..3_000 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let delay = 60 + (x >> 33) % (3 * 86_400);
        let id = hub.put(c, 0, delay as u32, 60, b"far", T0).unwrap();
        due.push((T0 + delay * SECOND, id));
    }
    due.sort();
    let spokes = hub.stats(T0).spokes;
    assert!(spokes < 200, "{spokes} spokes for 3,000 jobs over 3 days");
    let mut now = T0;
    let mut got = Vec::new();
    let mut most = spokes;
    while got.len() < due.len() {
        let next = hub.next_deadline().expect("jobs left, so a deadline");
        assert!(next > now);
        now = next;
        hub.tick(now);
        let batch = hub.take_sync_batch();
        batch.sync().unwrap();
        hub.synced(batch.epoch);
        most = most.max(hub.stats(now).spokes);
        while let ReserveOutcome::Reserved(v) = hub.reserve(c, Some(now), now) {
            let (at, id) = due[got.len()];
            assert_eq!(v.id, id, "trigger order");
            assert!(at <= now, "job {id} early");
            got.push(id);
            hub.delete(c, id, now).unwrap();
        }
    }
    assert!(hub.work().spokes_split > 0, "nothing was split");
    assert!(most < 400, "{most} spokes at most");
}

#[test]
fn far_horizon_mem() {
    far_horizon::<MemSegment>(false);
}

#[test]
fn far_horizon_mapped() {
    far_horizon::<MappedSegment>(true);
}

#[test]
fn far_horizon_lazy() {
    far_horizon::<LazySegment>(true);
}

fn sync_hub<S: Segment>(hub: &mut Hub<S>) {
    let batch = hub.take_sync_batch();
    batch.sync().unwrap();
    hub.synced(batch.epoch);
}

/// A loaded spoke whose file holds the roll size passes the records placed in it to a finer
/// spoke, three levels down; the jobs still come out in (trigger time, id) order.
fn roll_over<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<S>::open(cfg(dir.path(), true), T0).unwrap();
    hub.set_roll_bytes(64 * 1024);
    let c = hub.connect();
    let body = vec![b'r'; 20_000];
    // 4 records of 20 kB fill a spoke: 20 puts take the base spoke and 3 finer ones, the
    // finest taking every put once it is full too.
    let ids: Vec<u64> = (0..20)
        .map(|_| hub.put(c, 5, 0, 60, &body, T0).unwrap())
        .collect();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 4, "{files:?}");
    assert_eq!(hub.stats(T0).spokes, 4);
    // A job placed later in a full spoke's time goes to a finer one too.
    let later = hub.put(c, 5, 0, 60, b"later", T0 + SECOND / 2).unwrap();
    hub.tick(T0 + SECOND / 2);
    let mut out = Vec::new();
    while let ReserveOutcome::Reserved(j) = hub.reserve(c, Some(0), T0 + SECOND / 2) {
        out.push(j.id);
        hub.delete(c, j.id, T0 + SECOND / 2).unwrap();
    }
    let mut want = ids.clone();
    want.push(later);
    assert_eq!(out, want);
    // Every spoke retires once past and empty.
    hub.tick(T0 + 2 * SECOND);
    assert!(segment_files(dir.path()).is_empty());
}

#[test]
fn full_spokes_roll_over_mapped() {
    roll_over::<MappedSegment>();
}

#[test]
fn full_spokes_roll_over_lazy() {
    roll_over::<LazySegment>();
}

/// Mem mode punches nothing an append waits for: its spokes never roll over.
#[test]
fn mem_spokes_do_not_roll_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MemSegment>::open(cfg(dir.path(), false), T0).unwrap();
    hub.set_roll_bytes(64 * 1024);
    let c = hub.connect();
    for _ in 0..20 {
        hub.put(c, 5, 0, 60, &[b'm'; 20_000], T0).unwrap();
    }
    assert_eq!(hub.stats(T0).spokes, 1);
}

/// The freed runs of the spoke being appended to are not punched while appends go on (each
/// would wait for the punch); they are once it has not been appended to for `HOT_FOR`, or
/// once it has rolled over to a finer spoke.
fn punches_wait_for_appends<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<S>::open(cfg(dir.path(), true), T0).unwrap();
    hub.set_free_min(0);
    hub.set_roll_bytes(1 << 20);
    let c = hub.connect();
    let body = vec![b'p'; 20_000];
    let cycle = |hub: &mut Hub<S>, now: Micros| {
        let id = hub.put(c, 5, 0, 60, &body, now).unwrap();
        let got = reserved_id(hub.reserve(c, Some(0), now));
        assert_eq!(got, id);
        hub.delete(c, id, now).unwrap();
    };
    // Appends and sync passes 1 ms apart: nothing is punched.
    let mut now = T0;
    let mut held = 0;
    for _ in 0..20 {
        now += SECOND / 1000;
        cycle(&mut hub, now);
        sync_hub(&mut hub);
        let now_held = hub.stats(now).data_bytes;
        assert!(
            now_held > held,
            "punched while appended to: {now_held} after {held}"
        );
        held = now_held;
    }
    // A pass `HOT_FOR` after the last append punches (still inside the spoke's second).
    now += crate::store::HOT_FOR;
    hub.tick(now);
    sync_hub(&mut hub);
    let after = hub.stats(now).data_bytes;
    assert!(after < held / 2, "{after} of {held} bytes still held");
    // Appends going on for ever, all at one instant: the spoke appended to rolls over once it
    // holds the roll size, and the full one is punched; what is held stays under the roll
    // size (the finest spoke, once full, is punched while appended to).
    let roll = 1 << 20;
    for i in 0..200 {
        cycle(&mut hub, now);
        sync_hub(&mut hub);
        let held = hub.stats(now).data_bytes;
        assert!(held < roll + 64 * 1024, "cycle {i}: {held} bytes held");
    }
    assert_eq!(hub.stats(now).spokes, 4);
}

#[test]
fn punches_wait_for_appends_mapped() {
    punches_wait_for_appends::<MappedSegment>();
}

#[test]
fn punches_wait_for_appends_lazy() {
    punches_wait_for_appends::<LazySegment>();
}

/// A finer spoke inside a wider one retires at its own end, before the wider one's, and the
/// next deadline is never one already past (the timer would spin).
#[test]
fn finer_spokes_retire_at_their_own_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<MappedSegment>::open(cfg(dir.path(), true), T0).unwrap();
    hub.set_roll_bytes(64 * 1024);
    let c = hub.connect();
    let body = vec![b'f'; 20_000];
    let mut ids: Vec<u64> = (0..4)
        .map(|_| hub.put(c, 5, 0, 60, &body, T0).unwrap())
        .collect();
    // The base spoke is full: this one goes to the 125 ms spoke holding T0 + 200 ms, which
    // starts after the base spoke and ends before it.
    let t = T0 + SECOND / 5;
    ids.push(hub.put(c, 5, 0, 60, &body, t).unwrap());
    assert_eq!(segment_files(dir.path()).len(), 2);
    for id in ids {
        assert_eq!(reserved_id(hub.reserve(c, Some(0), t)), id);
        hub.delete(c, id, t).unwrap();
    }
    let fine_end = T0 + SECOND / 4;
    assert_eq!(hub.next_deadline(), Some(fine_end));
    hub.tick(fine_end);
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "the finer spoke is retired"
    );
    assert_eq!(hub.next_deadline(), Some(T0 + SECOND));
    hub.tick(T0 + SECOND);
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(hub.next_deadline(), None);
}

/// A hub in `dir` with `n` far jobs (ids 1..=n) 3 h out, 0-59 s apart: in one wide (hour)
/// spoke, or two.
fn hours_out<S: Segment>(dir: &std::path::Path, n: u32) -> Hub<S> {
    let mut hub = Hub::<S>::open(cfg(dir, true), T0).unwrap();
    let c = hub.connect();
    for i in 0..n {
        hub.put(c, 0, 3 * 3600 + i % 60, 5, b"far", T0).unwrap();
    }
    hub
}

/// Ticks `hub` from `now` at its deadlines until `done`; returns the time of the last tick.
fn tick_until<S: Segment>(
    hub: &mut Hub<S>,
    mut now: Micros,
    done: impl Fn(&Hub<S>) -> bool,
) -> Micros {
    while !done(hub) {
        now = hub.next_deadline().expect("jobs left, so a deadline");
        hub.tick(now);
    }
    now
}

/// A hub in `dir` with a thousand far jobs (ids 1..=1000) in one wide (hour) spoke, ticked until
/// the first step of its split ran (the split takes several); and the time of that tick.
fn splitting<S: Segment>(dir: &std::path::Path) -> (Hub<S>, Micros) {
    let mut hub = hours_out::<S>(dir, 1000);
    let now = tick_until(&mut hub, T0, |h| h.work().records_split > 0);
    (hub, now)
}

/// Held splits (`Hub::hold_splits`, while a periodic sync writes pages back): no step runs and
/// no split deadline is due; let go, the split goes on where it was.
#[test]
fn held_splits_wait_and_then_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, now) = splitting::<LazySegment>(dir.path());
    let moved = hub.work().records_split;
    assert!(moved < 1000, "the split is not done in one step");
    assert!(hub.split_due());
    hub.hold_splits(true);
    let later = hub.next_deadline().expect("jobs left, so a deadline");
    assert!(
        later > now + SECOND,
        "no split deadline while held: {}",
        later - now
    );
    hub.tick(now + 1);
    assert_eq!(hub.work().records_split, moved, "no step while held");
    assert!(hub.split_due(), "still due");
    hub.hold_splits(false);
    assert_eq!(hub.next_deadline(), Some(now + 2), "due again at once");
    hub.tick(now + 2);
    assert!(hub.work().records_split > moved, "the split went on");
}

/// While a split is under way, the read-ahead has named, by each step, the wide spoke's bytes
/// and the id index entries that the step reads and writes (each byte once; the first step's
/// wide bytes too, its index entries not: their ids are not known yet); nothing once the split
/// is done.
fn split_read_ahead_covers_the_next_step<S: Segment>() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hours_out::<S>(dir.path(), 1000);
    // Up to the call that starts the split: it moves nothing yet.
    let mut now = tick_until(&mut hub, T0, |h| h.split_due());
    assert_eq!(hub.work().records_split, 0);
    let mut first = true;
    let ids = 1..=1000u64;
    let index_ino = std::fs::metadata(dir.path().join("ids.yaad"))
        .unwrap()
        .ino();
    // What was read ahead so far: index bytes, wide spoke bytes.
    let (mut index_read, mut wide_read) = (vec![], vec![]);
    while hub.split_due() {
        let ahead = hub.store.split_read_ahead().expect("a split under way");
        for (from, range) in ahead.reads() {
            // A mapping read ahead is the wide spoke's.
            let index = from
                .open()
                .is_some_and(|f| f.unwrap().metadata().unwrap().ino() == index_ino);
            let read = if index {
                &mut index_read
            } else {
                &mut wide_read
            };
            let overlap = read
                .iter()
                .any(|r: &std::ops::Range<u64>| r.start < range.end && range.start < r.end);
            assert!(!overlap, "{range:?} was read ahead before");
            read.push(range.clone());
        }
        let before: Vec<_> = ids
            .clone()
            .map(|id| hub.store.index.get(id).unwrap())
            .collect();
        let wide = before
            .iter()
            .flatten()
            .map(|l| l.spoke)
            .max_by_key(|s| s.span)
            .unwrap();
        now += 1;
        hub.tick(now);
        let moved: Vec<(u64, crate::segment::JobLocation)> = ids
            .clone()
            .zip(&before)
            .filter_map(|(id, b)| Some((id, (*b)?)))
            .filter(|(id, b)| b.spoke == wide && hub.store.index.get(*id).unwrap() != Some(*b))
            .collect();
        assert!(!moved.is_empty(), "a step moved records");
        let covered = |read: &[std::ops::Range<u64>], at| read.iter().any(|r| r.contains(&at));
        for (id, old) in &moved {
            let entry = 64 + 32 * (id - 1);
            assert!(
                first || covered(&index_read, entry),
                "entry of {id} ({entry})"
            );
            assert!(
                covered(&wide_read, old.offset),
                "record of {id} ({})",
                old.offset
            );
        }
        first = false;
    }
    assert!(!first, "steps ran");
    assert!(hub.store.split_read_ahead().is_none());
}

#[test]
fn split_read_ahead_covers_the_next_step_lazy() {
    split_read_ahead_covers_the_next_step::<LazySegment>();
}

#[test]
fn split_read_ahead_covers_the_next_step_mapped() {
    split_read_ahead_covers_the_next_step::<MappedSegment>();
}

/// Before each split step the read-ahead names, to be faulted in for writing outside the lock,
/// the tail of every spoke the split appends to (each step's appends land in pages named before
/// it, except a target's first, also where the file grew) and the records whose `Moved` marks
/// the next call writes; faulting them in changes no byte. After a sync, split work waits for
/// the read-ahead (its pages were written back, new marks are due).
fn split_prefaults_cover_the_next_writes<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, mut now) = splitting::<S>(dir.path());
    hub.set_read_ahead_first(true);
    let ids = 1..=1000u64;
    // The latest prefault of each spoke.
    let mut faulted: std::collections::HashMap<SpokeId, std::ops::Range<u64>> = Default::default();
    let (mut steps, mut appends, mut marks) = (0, 0, 0);
    while hub.split_due() {
        if steps == 12 {
            // The copies so far (384) are durable: their marks are due, more than one call
            // writes (`MARKS_PER_CALL`).
            sync_hub(&mut hub);
            let (split, due) = (hub.work().records_split, hub.store.due_marks());
            assert!(!due.is_empty());
            now += 1;
            hub.tick(now);
            assert_eq!(
                hub.work().records_split,
                split,
                "a step before the read-ahead"
            );
            assert_eq!(hub.store.due_marks(), due, "marks before the read-ahead");
        }
        let due = hub.store.due_marks();
        let before: Vec<_> = ids
            .clone()
            .map(|id| hub.store.index.get(id).unwrap())
            .collect();
        let images: Vec<(SpokeId, Vec<u8>)> = hub
            .store
            .spokes
            .keys()
            .map(|&id| {
                let name = crate::segment::segment_file_name(id);
                (id, std::fs::read(dir.path().join(name)).unwrap())
            })
            .collect();
        if let Some(ahead) = hub.store.split_read_ahead() {
            faulted.extend(ahead.prefaults());
            ahead.run(&mut Vec::new());
        }
        for (id, image) in &images {
            let now_bytes =
                std::fs::read(dir.path().join(crate::segment::segment_file_name(*id))).unwrap();
            // The file may have grown for the next appends: with zeros.
            assert!(
                now_bytes.len() >= image.len()
                    && now_bytes[..image.len()] == image[..]
                    && now_bytes[image.len()..].iter().all(|&b| b == 0),
                "prefaults changed {id:?}"
            );
        }
        let covered = |id: SpokeId, at: u64| faulted.get(&id).is_some_and(|r| r.contains(&at));
        for at in &due {
            let last = at.offset + crate::segment::format::RECORD_HEADER_LEN - 1;
            assert!(
                covered(at.spoke, at.offset) && covered(at.spoke, last),
                "mark at {at:?}"
            );
            marks += 1;
        }
        let targets: std::collections::HashSet<SpokeId> = faulted.keys().copied().collect();
        now += 1;
        hub.tick(now);
        for (id, b) in ids.clone().zip(&before) {
            let after = hub.store.index.get(id).unwrap();
            if let (Some(b), Some(a)) = (b, after)
                && a != *b
                && targets.contains(&a.spoke)
            {
                assert!(covered(a.spoke, a.offset), "record {id} appended at {a:?}");
                appends += 1;
            }
        }
        steps += 1;
    }
    assert!(
        steps > 8 && appends > 100 && marks > 0,
        "{steps} steps, {appends} appends, {marks} marks"
    );
}

#[test]
fn split_prefaults_cover_the_next_writes_lazy() {
    split_prefaults_cover_the_next_writes::<LazySegment>();
}

#[test]
fn split_prefaults_cover_the_next_writes_mapped() {
    split_prefaults_cover_the_next_writes::<MappedSegment>();
}

/// Split work that waits for a read-ahead (`Store::set_read_ahead_first`) does not hold up a
/// flush: every `Moved` mark is written and made durable, none is left pending.
#[test]
fn flush_writes_the_marks_waiting_for_a_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, mut now) = splitting::<LazySegment>(dir.path());
    hub.set_read_ahead_first(true);
    for _ in 0..5 {
        if let Some(ahead) = hub.store.split_read_ahead() {
            ahead.run(&mut Vec::new());
        }
        now += 1;
        hub.tick(now);
    }
    sync_hub(&mut hub);
    now += 1;
    hub.tick(now);
    assert!(!hub.store.due_marks().is_empty(), "marks wait");
    hub.flush().unwrap();
    assert_eq!(hub.store.moves_and_room().0, 0, "marks left pending");
}

/// In memory nothing is mapped from a file: a split names nothing to fault in.
#[test]
fn split_prefaults_nothing_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, mut now) = splitting::<MemSegment>(dir.path());
    while hub.split_due() {
        if let Some(ahead) = hub.store.split_read_ahead() {
            assert_eq!(ahead.prefaults().count(), 0);
        }
        now += 1;
        hub.tick(now);
    }
}

/// A split step creates at most `SPLIT_CREATES` segments (a step into many new spokes held the
/// hub lock for milliseconds); the split still moves every record.
#[test]
fn split_steps_create_few_segments() {
    use crate::store::SPLIT_CREATES;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<LazySegment>::open(cfg(dir.path(), true), T0).unwrap();
    let c = hub.connect();
    // Delays a minute apart, three hours out: hour spokes split into 60 minute spokes.
    for i in 0..600u32 {
        hub.put(c, 0, 3 * 3600 + (i % 60) * 60, 5, b"far", T0)
            .unwrap();
    }
    let put = hub.work().spokes_created;
    let mut steps = 0;
    while hub.work().records_split < 600 {
        let now = hub.next_deadline().expect("jobs left, so a deadline");
        let before = hub.work().spokes_created;
        hub.tick(now);
        assert!(hub.work().spokes_created - before <= SPLIT_CREATES);
        steps += 1;
    }
    assert_eq!(hub.work().spokes_created - put, 60);
    assert!(steps >= 60 / SPLIT_CREATES, "{steps} steps");
}

/// While more than `SPLIT_MOVES_MAX` moved records wait for their `Moved` marks (no sync made
/// them durable), split steps wait and no split deadline is due; syncs let the split finish.
/// The tables of moves never grow during the split.
#[test]
fn split_waits_for_room_among_moves() {
    use crate::store::{SPLIT_MOVES_MAX, SPLIT_STEP};
    let dir = tempfile::tempdir().unwrap();
    let n = SPLIT_MOVES_MAX + 1000;
    let mut hub = hours_out::<LazySegment>(dir.path(), n as u32);
    let mut now = tick_until(&mut hub, T0, |h| h.work().records_split > 0);
    let room = hub.store.moves_and_room().1;
    assert!(room >= SPLIT_MOVES_MAX + SPLIT_STEP, "room for {room}");
    while hub.split_due() && hub.next_deadline() == Some(now + 1) {
        now += 1;
        hub.tick(now);
        assert_eq!(hub.store.moves_and_room().1, room, "a table grew");
    }
    let (waiting, _) = hub.store.moves_and_room();
    assert!(waiting <= SPLIT_MOVES_MAX && waiting + SPLIT_STEP > SPLIT_MOVES_MAX);
    assert!((hub.work().records_split as usize) < n);
    let later = hub.next_deadline().expect("jobs left, so a deadline");
    assert!(later > now + SECOND, "no split deadline while full");
    // Batches made durable: marks are written, then settled, and the split goes on.
    while hub.split_due() {
        let batch = hub.take_sync_batch();
        hub.synced(batch.epoch);
        now += 1;
        hub.tick(now);
        assert_eq!(hub.store.moves_and_room().1, room, "a table grew");
    }
    assert_eq!(hub.work().records_split as usize, n);
}

/// A closed lazy wide spoke is read ahead by its path (its file opened outside the lock), from
/// the start, before the split's first step.
#[test]
fn split_read_ahead_opens_a_closed_wide_file() {
    use crate::store::ReadFrom;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hours_out::<LazySegment>(dir.path(), 100);
    hub.store.set_max_open_far(1);
    // A put into another far spoke closes the first (one far segment open at most).
    let c = hub.connect();
    hub.put(c, 0, 30 * 86_400, 5, b"farther", T0).unwrap();
    let now = tick_until(&mut hub, T0, |h| h.split_due());
    assert_eq!(hub.work().records_split, 0);
    let ahead = hub.store.split_read_ahead().expect("a split under way");
    let (from, range) = ahead.reads().next().expect("the wide file");
    assert!(matches!(from, ReadFrom::Path(_)), "{from:?}");
    assert_eq!(range.start, 0);
    let file = from.open().expect("a file").unwrap();
    assert!(file.metadata().unwrap().len() >= range.end);
    hub.tick(now + 1);
    assert!(hub.work().records_split > 0);
}
