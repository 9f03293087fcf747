//! Disk full, end to end on a small tmpfs: puts answer `OUT_OF_MEMORY` (as
//! beanstalkd does), every acknowledged job stays intact and readable, the server keeps
//! answering, a delayed release or a bury on a full disk loses nothing, compaction on a full
//! disk keeps the old segment, and yaad recovers by itself when space frees; a restart (on
//! the full disk and after) recovers every acknowledged job. Mem mode: a flush into a full
//! dir reports an error and loses nothing held in memory (SIGTERM does not stop then).
//!
//! Needs root (mount). Without it the tests say why and pass, unless `YAAD_REQUIRE_TMPFS=1`
//! (CI) makes that a failure.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Client, Yaad};

/// A tmpfs of a few MiB mounted on a temp dir; unmounted on drop (also when a check fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why not and returns None (panics if `YAAD_REQUIRE_TMPFS=1`).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        let msg = format!("disk-full test needs a tmpfs (mount as root): {why}");
        if std::env::var("YAAD_REQUIRE_TMPFS").is_ok_and(|v| v == "1") {
            panic!("{msg} (YAAD_REQUIRE_TMPFS=1)");
        }
        eprintln!("SKIPPED: {msg}");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let p = self.dir.path();
        let ok = Command::new("umount")
            .arg(p)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there: detach it so the temp dir can go.
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

/// Writes `limit` bytes (None: until the disk is full) into a new file at `path`.
fn filler(path: &Path, limit: Option<u64>) {
    let mut f = File::create(path).expect("create filler");
    let chunk = vec![0xA5u8; 16 * 1024];
    let mut written = 0u64;
    while limit.is_none_or(|l| written < l) {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filler: {e}"),
        }
    }
    // Flushing a full tmpfs cannot fail: nothing is buffered in userspace.
    let _ = f.flush();
}

/// A job body that differs per `tag` and holds every byte value.
fn body(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag.wrapping_mul(131).wrapping_add(i as u64 * 7) % 256) as u8)
        .collect()
}

/// What the client was told: jobs acknowledged and not deleted, with their bodies.
#[derive(Default)]
struct Model {
    live: BTreeMap<u64, Vec<u8>>,
    deleted: Vec<u64>,
    /// Expected `stats-job` state of jobs whose state matters here.
    state: BTreeMap<u64, &'static str>,
    next_tag: u64,
}

impl Model {
    /// Puts one job; records it if INSERTED. Returns the reply.
    fn put(&mut self, c: &mut Client, delay: u32, len: usize) -> String {
        self.next_tag += 1;
        let b = body(self.next_tag, len);
        let reply = c.put(100, delay, 120, &b);
        if let Some(id) = reply.strip_prefix("INSERTED ") {
            let id: u64 = id.parse().expect("job id");
            self.live.insert(id, b);
            if delay > 0 {
                self.state.insert(id, "delayed");
            }
        }
        reply
    }

    /// Puts jobs of `len` bytes until one answers OUT_OF_MEMORY; returns how many went in.
    fn fill(&mut self, c: &mut Client, len: usize) -> usize {
        self.fill_delayed(c, 0, len).len()
    }

    /// Like [`Model::fill`] with a delay; returns the ids that went in.
    fn fill_delayed(&mut self, c: &mut Client, delay: u32, len: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        for _ in 0..100_000 {
            let r = self.put(c, delay, len);
            if r == "OUT_OF_MEMORY" {
                return ids;
            }
            let id = r.strip_prefix("INSERTED ").map(|id| id.parse::<u64>());
            let Some(Ok(id)) = id else {
                panic!("put on a filling disk: {r}");
            };
            ids.push(id);
        }
        panic!("100000 puts and the disk is not full");
    }

    /// Every acknowledged job is there, byte for byte, in its state; deleted ones are not.
    fn check(&self, c: &mut Client, when: &str) {
        for (&id, b) in &self.live {
            let got = c
                .peek(id)
                .unwrap_or_else(|| panic!("{when}: job {id} lost"));
            assert!(got == *b, "{when}: job {id} body differs");
        }
        for &id in &self.deleted {
            assert_eq!(c.peek(id), None, "{when}: deleted job {id} is back");
        }
        for (&id, &want) in &self.state {
            let got = c.stat(&format!("stats-job {id}"), "state");
            assert_eq!(got.as_deref(), Some(want), "{when}: state of job {id}");
        }
    }

    /// Reserves a ready job and checks its body.
    fn reserve(&mut self, c: &mut Client) -> u64 {
        let (l, b) = c.with_body("reserve-with-timeout 0");
        let id: u64 = l
            .strip_prefix("RESERVED ")
            .and_then(|r| r.split(' ').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("reserve: {l}"));
        assert!(self.live.get(&id) == Some(&b), "reserved job {id} body");
        id
    }

    fn delete(&mut self, c: &mut Client, id: u64) {
        assert_eq!(c.cmd(&format!("delete {id}")), "DELETED", "delete {id}");
        self.live.remove(&id);
        self.state.remove(&id);
        self.deleted.push(id);
    }
}

fn no_panic(y: &Yaad) {
    let lines = y.logs_so_far();
    assert!(
        !lines.iter().any(|l| l.contains("panicked")),
        "yaad panicked: {lines:?}"
    );
}

/// Starts yaad on `dir` with one-minute spokes: the fills land in one spoke, and a release by
/// an hour lands in the far spoke of a job put an hour ahead just before.
fn spawn(mode: &str, dir: &Path, extra: &[&str]) -> Yaad {
    let d = dir.to_str().expect("utf-8 path");
    let mut args = vec!["--mode", mode, "-b", d, "--spoke-span", "60000"];
    args.extend_from_slice(extra);
    Yaad::launch(&args, true, |_| {})
}

fn stop(y: Yaad) {
    no_panic(&y);
    let st = y.terminate();
    assert!(
        st.success(),
        "yaad exit: {st:?} (a signal here would be SIGBUS)"
    );
}

/// Mapped or lazy mode (plus `flags`): fill, check, recover, restart.
fn persisted(mode: &str, flags: &[&str]) {
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let dir: PathBuf = fs.path().join("data");
    let filler_path = fs.path().join("filler");
    // Space given back later: 3/8 of the disk (a mapped file grows by a quarter of its length
    // when a record does not fit, so the near spoke's file takes a good part of it first).
    filler(&filler_path, Some(768 * 1024));
    let mut m = Model::default();
    let y = spawn(mode, &dir, flags);
    let mut c = y.connect();
    // A far job first: its spoke (and its id-index page) exist before the disk fills.
    assert!(m.put(&mut c, 3600, 100).starts_with("INSERTED "));
    let n = m.fill(&mut c, 1000);
    eprintln!("{mode}: {n} puts before OUT_OF_MEMORY");
    assert!(n > 100, "only {n} puts before the disk was full");
    assert_eq!(m.put(&mut c, 0, 1000), "OUT_OF_MEMORY", "still full");
    m.check(&mut c, "full");

    // The server keeps answering: stats, reserve, delete, bury, release.
    let ready: usize = c
        .stat("stats", "current-jobs-ready")
        .expect("stats")
        .parse()
        .expect("number");
    assert_eq!(ready, m.live.len() - 1, "ready jobs (one is far)");
    let id = m.reserve(&mut c);
    m.delete(&mut c, id);
    let id = m.reserve(&mut c);
    assert_eq!(c.cmd(&format!("bury {id} 5")), "BURIED");
    m.state.insert(id, "buried");
    // Release into the far spoke that exists, and into one that cannot be created: either
    // the job moves (RELEASED, delayed) or it is buried (beanstalkd: BURIED), never lost.
    // The newest jobs: their id-index entries fall in a page of ids.yaad not yet written.
    for delay in [3600, 7200] {
        let id = *m
            .live
            .keys()
            .rev()
            .find(|id| !m.state.contains_key(id))
            .expect("a ready job");
        let (l, b) = c.with_body(&format!("reserve-job {id}"));
        assert_eq!(l, format!("RESERVED {id} {}", b.len()));
        let r = c.cmd(&format!("release {id} 10 {delay}"));
        eprintln!("{mode}: release {id} with delay {delay} on a full disk: {r}");
        let state = match r.as_str() {
            "RELEASED" => "delayed",
            "BURIED" => "buried",
            other => panic!("release on a full disk: {other}"),
        };
        m.state.insert(id, state);
    }
    // Two jobs in three deleted: their segment is due for compaction, which has no room.
    let ids: Vec<u64> = m.live.keys().copied().filter(|&id| id % 3 != 0).collect();
    for id in ids {
        if !m.state.contains_key(&id) {
            m.delete(&mut c, id);
        }
    }
    assert_eq!(m.put(&mut c, 0, 1000), "OUT_OF_MEMORY", "still full");
    m.check(&mut c, "full, after deletes and compaction");

    // A restart on the full disk recovers everything.
    drop(c);
    stop(y);
    let y = spawn(mode, &dir, flags);
    let mut c = y.connect();
    m.check(&mut c, "restarted on a full disk");

    // Space frees. Two ready jobs in three are deleted: their segment is mostly dead. Its
    // compaction failed while the disk was full (at the restart above); a loaded spoke is
    // compacted again once it has been past for COMPACT_AFTER_PAST (hub unit tests), which
    // with 60 s spokes is after this test: the restart at its end compacts it at recovery.
    std::fs::remove_file(&filler_path).expect("remove filler");
    let data_bytes = |c: &mut Client| -> u64 {
        let v = c.stat("stats", "data-bytes").expect("stats");
        v.parse().expect("number")
    };
    let ready: Vec<u64> = m
        .live
        .keys()
        .copied()
        .filter(|id| !m.state.contains_key(id))
        .collect();
    for (i, id) in ready.into_iter().enumerate() {
        if i % 3 != 0 {
            m.delete(&mut c, id);
        }
    }
    let before = data_bytes(&mut c);
    // ... and puts work again without a restart, near and far (new spokes too).
    for delay in [0, 3600, 7200, 10_000] {
        let r = m.put(&mut c, delay, 1000);
        assert!(
            r.starts_with("INSERTED "),
            "put (delay {delay}) after space freed: {r}"
        );
    }
    let id = m.reserve(&mut c);
    assert_eq!(c.cmd(&format!("release {id} 10 7200")), "RELEASED");
    m.state.insert(id, "delayed");
    m.check(&mut c, "space freed");
    // Full again, with far jobs (each also writes its id-index entry).
    let far = m.fill_delayed(&mut c, 20_000, 1000);
    eprintln!("{mode}: {} far puts fit in the freed space", far.len());
    assert!(far.len() > 100, "only {} far puts fit", far.len());
    // A near put may still fit (the far one may have failed on its id-index page).
    let r = m.put(&mut c, 0, 1000);
    assert!(r == "OUT_OF_MEMORY" || r.starts_with("INSERTED "), "{r}");
    m.check(&mut c, "full again");
    // Deleting them retires their (far) spoke at once: its file goes and puts work again.
    for id in far {
        m.delete(&mut c, id);
    }
    let r = m.put(&mut c, 0, 1000);
    assert!(r.starts_with("INSERTED "), "put after a spoke retired: {r}");
    m.check(&mut c, "far spoke retired");
    drop(c);
    stop(y);

    let y = spawn(mode, &dir, flags);
    let mut c = y.connect();
    m.check(&mut c, "restarted");
    assert_eq!(
        c.stat("stats", "corrupt-records-skipped").as_deref(),
        Some("0"),
        "a failed write left a torn record"
    );
    let after = data_bytes(&mut c);
    eprintln!("{mode}: data bytes {before} -> {after} once space freed and restarted");
    assert!(
        after < before / 2,
        "no compaction once space freed: {before} -> {after} bytes"
    );
    drop(c);
    stop(y);
}

#[test]
fn mapped_disk_full() {
    persisted("mapped", &[]);
}

#[test]
fn lazy_disk_full() {
    // Group commit too: every reply waits for its sync.
    persisted("lazy", &["-f", "0"]);
}

/// Mem mode writes files only on SIGUSR1/SIGTERM: a full dir fails the flush, nothing held in
/// memory is lost, and SIGTERM does not stop a server whose jobs exist only in memory.
#[test]
fn mem_flush_into_a_full_dir() {
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let dir: PathBuf = fs.path().join("data");
    let filler_path = fs.path().join("filler");
    let mut m = Model::default();
    let y = spawn("mem", &dir, &[]);
    let mut c = y.connect();
    for i in 0..300 {
        let r = m.put(&mut c, if i % 3 == 0 { 3600 } else { 0 }, 2000);
        assert!(r.starts_with("INSERTED "), "mem put: {r}");
    }
    filler(&filler_path, None);

    y.signal("-USR1");
    y.wait_log("flush failed");
    m.check(&mut c, "after a failed SIGUSR1 flush");
    assert_eq!(m.put(&mut c, 0, 10), "DRAINING");

    y.signal("-TERM");
    y.wait_log("not stopping");
    m.check(&mut c, "after a failed SIGTERM flush");
    let mut c2 = y.connect();
    m.check(&mut c2, "new connection after a failed SIGTERM flush");
    drop(c2);

    // Space frees: the next SIGTERM writes everything and stops; -r brings it all back.
    std::fs::remove_file(&filler_path).expect("remove filler");
    drop(c);
    stop(y);
    let y = spawn("mem", &dir, &["-r"]);
    let mut c = y.connect();
    m.check(&mut c, "restored");
    drop(c);
    stop(y);
}
