//! `yaad-dump --timeline` end to end: a data dir written by a hub (puts, reserves, a bury, a
//! kick, deletes, a release with a delay) drawn at a fixed now against golden files, the same
//! figures in JSON, the automatic bucket, records settled as recovery settles them, a live
//! data dir left untouched, and bad input refused clearly.
//!
//! The golden files are `tests/golden/timeline*.txt`. After a deliberate, reviewed change of
//! the output: `YAAD_BLESS=1 cargo test --test dump_timeline -- --ignored bless`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::hub::{START, persisted, sync};
use yaad::hub::{Hub, ReleaseOutcome, ReserveOutcome, SECOND};
use yaad::segment::dump::timeline::auto_bucket;
use yaad::segment::{
    JobState, LazySegment, MappedSegment, NewRecord, Segment, SpokeId, StateSlot, segment_file_name,
};

/// The timeline's now: ten minutes after the jobs were put (2023-11-14 22:23:20 UTC).
const NOW_S: u64 = START / SECOND + 600;

/// Delays (s) of the delayed jobs left in the data dir of [`hub_dir`], and their tubes.
const DELAYED: [(&str, u32); 13] = [
    ("default", 7200), // released with this delay: moved to a new record
    ("emails", 1800),
    ("emails", 2400),
    ("emails", 3000),
    ("emails", 4200),
    ("emails", 4800),
    ("emails", 5400),
    ("emails", 6000),
    ("emails", 18_000),
    ("emails", 18_600),
    ("emails", 19_200),
    ("reports", 3 * 86_400),
    ("reports", 8 * 86_400),
];

/// (ready, delayed, buried) per tube in [`hub_dir`] at [`NOW_S`].
const BY_TUBE: [(&str, u64, u64, u64); 3] = [
    ("default", 3, 1, 1),
    ("emails", 0, 10, 0),
    ("reports", 1, 2, 0),
];

fn reserve(hub: &mut Hub<LazySegment>, c: u64) -> u64 {
    match hub.reserve(c, Some(START), START) {
        ReserveOutcome::Reserved(j) => j.id,
        other => panic!("no job to reserve: {other:?}"),
    }
}

/// Writes the jobs through a hub into `dir/data` and returns the hub, still open (the data dir
/// locked, as a live daemon's). Every job is put at [`START`]:
/// - default: a ready job; one reserved (shown ready: reservations are not persisted); one
///   buried; one deleted; one released with a delay of 2 h (a new record, the old one
///   `Moved`); one due 5 min after the put (ready at now);
/// - emails: ten delayed jobs over the next 5 h 20 min, and one deleted while delayed;
/// - reports: delayed 3 and 8 days, and one delayed 3 days kicked (ready).
fn hub_dir(dir: &Path) -> Hub<LazySegment> {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    let mut hub: Hub<LazySegment> = Hub::open(persisted(&data), START).unwrap();
    let c = hub.connect();
    let body = b"a job";
    // Each reserve below takes the one ready job.
    hub.put(c, 0, 0, 60, body, START).unwrap();
    reserve(&mut hub, c);
    let buried = hub.put(c, 0, 0, 60, body, START).unwrap();
    assert_eq!(reserve(&mut hub, c), buried);
    hub.bury(c, buried, 0, START).unwrap();
    let deleted = hub.put(c, 0, 0, 60, body, START).unwrap();
    assert_eq!(reserve(&mut hub, c), deleted);
    hub.delete(c, deleted, START).unwrap();
    let moved = hub.put(c, 0, 0, 60, body, START).unwrap();
    assert_eq!(reserve(&mut hub, c), moved);
    let r = hub.release(c, moved, 0, DELAYED[0].1, START).unwrap();
    assert_eq!(r, ReleaseOutcome::Released);
    hub.put(c, 0, 0, 60, body, START).unwrap();
    hub.put(c, 0, 300, 60, body, START).unwrap();
    for (tube, delay) in &DELAYED[1..] {
        hub.use_tube(c, tube);
        hub.put(c, 0, *delay, 60, body, START).unwrap();
    }
    hub.use_tube(c, "emails");
    let gone = hub.put(c, 0, 1200, 60, body, START).unwrap();
    hub.delete(c, gone, START).unwrap();
    hub.use_tube(c, "reports");
    let kicked = hub.put(c, 0, 3 * 86_400 + 3600, 60, body, START).unwrap();
    hub.kick_job(kicked, START).unwrap();
    // The Moved mark is written once the new record is durable.
    sync(&mut hub);
    sync(&mut hub);
    hub
}

fn timeline(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_yaad-dump"))
        .current_dir(cwd)
        .arg("--timeline")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The golden outputs: (file under tests/golden, arguments after `--timeline`).
fn goldens() -> Vec<(&'static str, Vec<String>)> {
    let now = NOW_S.to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            "timeline.txt",
            args(&["--now", &now, "--bucket", "1h", "--by-tube", "data"]),
        ),
        ("timeline-auto.txt", args(&["--now", &now, "data"])),
    ]
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

#[test]
fn golden_timelines() {
    let tmp = tempfile::tempdir().unwrap();
    let _hub = hub_dir(tmp.path());
    for (name, args) in goldens() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = timeline(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "");
        let want = std::fs::read_to_string(golden_path(name)).unwrap();
        assert_eq!(text(&out.stdout), want, "{name} ({args:?})");
        for line in text(&out.stdout).lines() {
            assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
        }
    }
}

/// The README's sample is the golden output.
#[test]
fn readme_shows_the_golden_timeline() {
    let readme = include_str!("../README.md");
    let golden = std::fs::read_to_string(golden_path("timeline-auto.txt")).unwrap();
    assert!(
        readme.contains(&format!("```\n{golden}```\n")),
        "README.md's timeline sample differs from tests/golden/timeline-auto.txt"
    );
}

/// The data dir holds what the picture settles: two records of the moved job (the old one
/// marked `Moved` once the new one is durable) and a deleted job's record, none counted twice.
#[test]
fn the_data_dir_holds_moved_and_deleted_records() {
    let tmp = tempfile::tempdir().unwrap();
    let _hub = hub_dir(tmp.path());
    let out = Command::new(env!("CARGO_BIN_EXE_yaad-dump"))
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let s = text(&out.stdout);
    let mut records: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for l in s.lines().filter(|l| l.starts_with('@')) {
        let field = |k: &str| l.split(' ').find_map(|f| f.strip_prefix(k)).unwrap();
        records
            .entry(field("id="))
            .or_default()
            .push(field("state="));
    }
    let twice: Vec<_> = records.values().filter(|v| v.len() == 2).collect();
    assert_eq!(twice.len(), 1, "one moved job: {s}");
    assert!(twice[0].contains(&"waiting"), "{s}");
    let deleted = records.values().flatten().filter(|&&st| st == "deleted");
    assert!(deleted.count() >= 1, "{s}");
}

#[test]
fn json_has_the_same_figures_and_totals_add_up() {
    let tmp = tempfile::tempdir().unwrap();
    let _hub = hub_dir(tmp.path());
    let now = NOW_S.to_string();
    let out = timeline(
        tmp.path(),
        &[
            "--json",
            "--by-tube",
            "--bucket",
            "1h",
            "--now",
            &now,
            "data",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    let summed = |v: &serde_json::Value| -> u64 {
        let buckets = v["buckets"].as_array().unwrap();
        let total: u64 = buckets.iter().map(|b| n(b, "jobs")).sum();
        assert_eq!(total, n(v, "delayed"), "{v}");
        assert_eq!(
            n(v, "jobs"),
            n(v, "ready") + n(v, "delayed") + n(v, "buried")
        );
        for b in buckets {
            assert!(n(b, "jobs") > 0);
            assert_eq!(n(b, "start_us") % 3_600_000_000, 0);
        }
        n(v, "jobs")
    };
    assert_eq!(summed(&v), 18);
    assert_eq!(
        (n(&v, "ready"), n(&v, "delayed"), n(&v, "buried")),
        (4, 13, 1)
    );
    assert_eq!(
        (v["bucket"].as_str(), n(&v, "bucket_us")),
        (Some("1h"), 3_600_000_000)
    );
    assert_eq!(v["bucket_auto"], false);
    assert_eq!(n(&v, "now_us"), NOW_S * SECOND);
    assert_eq!(v["now"], "2023-11-14T22:23:20.000000Z");
    assert_eq!((n(&v, "damaged_records"), n(&v, "damaged_files")), (0, 0));
    // The first bucket holds the now: 22:00, two emails at 22:43 and 22:53.
    assert_eq!(v["buckets"][0]["start"], "2023-11-14T22:00:00.000000Z");
    assert_eq!(n(&v["buckets"][0], "jobs"), 2);
    let tubes = v["tubes"].as_array().unwrap();
    let got: Vec<(&str, u64, u64, u64)> = tubes
        .iter()
        .map(|t| {
            (
                t["tube"].as_str().unwrap(),
                n(t, "ready"),
                n(t, "delayed"),
                n(t, "buried"),
            )
        })
        .collect();
    assert_eq!(got, BY_TUBE);
    assert_eq!(tubes.iter().map(summed).sum::<u64>(), 18);
    // Per tube, the buckets add up to the buckets of all tubes.
    let mut per_start: BTreeMap<u64, u64> = BTreeMap::new();
    for t in tubes {
        for b in t["buckets"].as_array().unwrap() {
            *per_start.entry(n(b, "start_us")).or_default() += n(b, "jobs");
        }
    }
    let all: BTreeMap<u64, u64> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (n(b, "start_us"), n(b, "jobs")))
        .collect();
    assert_eq!(per_start, all);
}

#[test]
fn auto_bucket_is_chosen_from_the_delayed_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let _hub = hub_dir(tmp.path());
    let now = NOW_S.to_string();
    let out = timeline(tmp.path(), &["--json", "--now", &now, "data"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut delayed: Vec<u64> = DELAYED
        .iter()
        .map(|(_, d)| START + u64::from(*d) * SECOND)
        .collect();
    delayed.sort_unstable();
    let want = auto_bucket(&delayed, NOW_S * SECOND);
    assert_eq!(v["bucket_us"].as_u64(), Some(want), "{v}");
    assert_eq!(v["bucket_auto"], true);
    // Nothing delayed at all: the smallest width.
    let empty = tempfile::tempdir().unwrap();
    let out = timeline(empty.path(), &["--json", "--now", &now, "."]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["bucket"].as_str(), v["jobs"].as_u64()),
        (Some("1m"), Some(0))
    );
    assert!(text(&out.stderr).contains("no segment files"));
}

/// Reading changes nothing in a live (locked) data dir: no file created, removed, grown or
/// rewritten, and the daemon keeps its lock.
#[test]
fn a_live_data_dir_is_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let _hub = hub_dir(tmp.path());
    let data = tmp.path().join("data");
    let before = snapshot(&data);
    let out = timeline(tmp.path(), &["data"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(snapshot(&data), before);
    assert!(yaad::segment::DataDir::open(&data).is_err(), "lock lost");
}

/// Every file under `dir`: its path, bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

fn slot(version: u32, state: JobState) -> StateSlot {
    StateSlot {
        version,
        state,
        priority: 0,
        counters: Default::default(),
    }
}

/// Appends job `id` in `state` at version `version`, triggering at `trigger_at`.
fn append(seg: &mut MappedSegment, id: u64, version: u32, state: JobState, trigger_at: u64) -> u64 {
    seg.append(&NewRecord {
        id,
        trigger_at,
        created_at: START,
        ttr: 10,
        tube: b"default",
        name: &[],
        body: b"x",
        slot: slot(version, state),
    })
    .unwrap()
}

/// Records settled as recovery settles them, in records the hub leaves only after a crash: a
/// move whose `Moved` mark was lost (both records live: the higher version counts, once), a
/// moved job deleted before its old record was marked, and a move in the other direction
/// (the new record in a spoke read first).
#[test]
fn each_job_counts_once_by_its_highest_version() {
    let tmp = tempfile::tempdir().unwrap();
    let day = 86_400 * SECOND;
    let early = SpokeId {
        start: START,
        span: day,
    };
    let late = SpokeId {
        start: START + day,
        span: day,
    };
    let mut a = MappedSegment::create(tmp.path(), early).unwrap();
    let mut b = MappedSegment::create(tmp.path(), late).unwrap();
    let hour = 3600 * SECOND;
    // Job 1: moved from early to late, the old record still live.
    append(&mut a, 1, 1, JobState::Waiting, START + hour);
    append(&mut b, 1, 2, JobState::Waiting, late.start + hour);
    // Job 2: moved from early to late, then deleted there.
    append(&mut a, 2, 1, JobState::Waiting, START + hour);
    let off = append(&mut b, 2, 2, JobState::Waiting, late.start + hour);
    b.update(off, slot(3, JobState::Deleted)).unwrap();
    // Job 3: moved from late to early (a kicked far job released with a delay).
    append(&mut b, 3, 4, JobState::Ready, late.start + hour);
    append(&mut a, 3, 5, JobState::Waiting, START + hour);
    // Job 4: moved and marked, as the hub leaves it.
    let off = append(&mut a, 4, 1, JobState::Waiting, START + hour);
    append(&mut b, 4, 2, JobState::Waiting, late.start + hour);
    a.update(off, slot(3, JobState::Moved)).unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    let now = (START / SECOND).to_string();
    let out = timeline(
        tmp.path(),
        &["--json", "--bucket", "1d", "--now", &now, "."],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"], 3, "{v}");
    assert_eq!(v["ready"], 0, "job 3 is delayed at version 5: {v}");
    let buckets: Vec<(String, u64)> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().into(),
                b["jobs"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        buckets,
        [
            ("2023-11-14T00:00:00.000000Z".into(), 1), // job 3
            ("2023-11-15T00:00:00.000000Z".into(), 2), // jobs 1 and 4
        ]
    );
}

/// Damage and files in flux: a record cut short (as one being appended), a file that is not
/// a segment, and a create whose header is still zeros. The rest is drawn; the damage is named
/// and the exit status says jobs may be missing.
#[test]
fn damage_is_reported_and_the_rest_drawn() {
    let tmp = tempfile::tempdir().unwrap();
    let spoke = SpokeId {
        start: START,
        span: 3600 * SECOND,
    };
    let mut seg = MappedSegment::create(tmp.path(), spoke).unwrap();
    for id in 1..=3 {
        append(&mut seg, id, 1, JobState::Waiting, START + id * SECOND);
    }
    let last = append(&mut seg, 4, 1, JobState::Waiting, START + 4 * SECOND);
    seg.flush().unwrap();
    drop(seg);
    let path = tmp.path().join(segment_file_name(spoke));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..last as usize + 100]).unwrap();
    let now = (START / SECOND).to_string();
    let args = ["--bucket", "1m", "--now", &now, "."];
    let out = timeline(tmp.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(0 ready, 3 delayed, 0 buried)"));
    let err = text(&out.stderr);
    assert!(err.contains("1 damaged records skipped"), "{err}");
    assert!(err.contains(&segment_file_name(spoke)), "{err}");

    // A create still in progress (header not written yet) holds no job: nothing to report.
    let next = SpokeId {
        start: START + 3600 * SECOND,
        span: 3600 * SECOND,
    };
    std::fs::write(tmp.path().join(segment_file_name(next)), [0u8; 4096]).unwrap();
    let out = timeline(tmp.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stderr).contains(&segment_file_name(next)));
    // A file under a segment's name that is not one: named, and counted in JSON.
    std::fs::write(tmp.path().join(segment_file_name(next)), [b'#'; 100]).unwrap();
    let out = timeline(tmp.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not a yaad segment file"), "{err}");
    let mut json_args = vec!["--json"];
    json_args.extend(args);
    let out = timeline(tmp.path(), &json_args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["damaged_records"].as_u64(), v["damaged_files"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["delayed"], 3);
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = MappedSegment::create(
        tmp.path(),
        SpokeId {
            start: START,
            span: SECOND,
        },
    )
    .unwrap();
    drop(seg);
    let cases: [(&[&str], &str); 10] = [
        (&["missing"], "missing: No such file or directory"),
        (&["--bucket", "5x", "."], "invalid bucket \"5x\""),
        (&["--bucket", "0m", "."], "must be at least 1m"),
        (&["--bucket", "1s", "."], "invalid bucket \"1s\""),
        (&["--bucket", "", "."], "invalid bucket"),
        (&["--now", "tomorrow", "."], "invalid time \"tomorrow\""),
        (&[".", "."], "--timeline takes one data dir"),
        (&["--check", "."], "cannot be used with"),
        (&[], "required"),
        (
            &[&segment_file_name(SpokeId {
                start: START,
                span: SECOND,
            })],
            "not a directory",
        ),
    ];
    for (args, msg) in cases {
        let out = timeline(tmp.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains(msg),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // The timeline's flags need --timeline.
    let out = Command::new(env!("CARGO_BIN_EXE_yaad-dump"))
        .args(["--bucket", "1h", "."])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--timeline"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
#[ignore = "regenerates tests/golden/timeline*.txt: only for a deliberate output change"]
fn bless() {
    if std::env::var_os("YAAD_BLESS").is_none() {
        eprintln!("set YAAD_BLESS=1 to rewrite tests/golden/timeline*.txt; nothing written");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _hub = hub_dir(tmp.path());
    for (name, args) in goldens() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = timeline(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        std::fs::write(golden_path(name), &out.stdout).unwrap();
    }
}
