//! The real kill test: the `yaad` binary is loaded from several connections and killed with
//! SIGKILL at random moments, then restarted on the same data dir; every change it
//! acknowledged (put, delete, release, bury, kick-job) must be there after the restart.
//!
//! The short run here takes about 10 s per mode; `scripts/killtest.sh --duration SECS` runs
//! the same code longer (`YAAD_KILL_SECS`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Rng, Yaad, connect};

const WORKERS: usize = 4;

#[derive(Clone, Debug)]
struct Exp {
    body: Vec<u8>,
    buried: bool,
}

/// What the clients were told: live jobs, deleted ids, and ids whose last command got no reply.
#[derive(Default)]
struct Model {
    jobs: BTreeMap<u64, Exp>,
    deleted: BTreeSet<u64>,
    uncertain: BTreeSet<u64>,
    max_id: u64,
    acked: u64,
}

fn ok(reply: &str, want: &str) -> std::io::Result<()> {
    if reply == want {
        Ok(())
    } else {
        panic!("unexpected reply {reply:?} (wanted {want:?})")
    }
}

/// One connection's load until the server dies: every acknowledged change goes into `model`.
fn worker(port: u16, w: usize, seed: u64, model: Arc<Mutex<Model>>) {
    // The server may already be gone: then this worker has nothing to do.
    let Ok(mut c) = Client::try_connect(port) else {
        return;
    };
    let mut rng = Rng(seed | 1);
    let tube = format!("kill-w{w}");
    let mut mine: Vec<u64> = vec![];
    let _ = (|| -> std::io::Result<()> {
        ok(
            &c.try_cmd(&format!("use {tube}"))?,
            &format!("USING {tube}"),
        )?;
        ok(&c.try_cmd(&format!("watch {tube}"))?, "WATCHING 2")?;
        ok(&c.try_cmd("ignore default")?, "WATCHING 1")?;
        loop {
            match rng.below(10) {
                0..=4 => {
                    let len = 1 + rng.below(2000) as usize;
                    let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    // Near (0-5 s) and far (30-90 s: their spokes come back from the
                    // start-up summary unless changed since its last checkpoint).
                    let delay = if rng.below(4) == 0 {
                        30 + rng.below(60) as u32
                    } else {
                        rng.below(6) as u32
                    };
                    let r = c.try_put(rng.below(1000) as u32, delay, 60, &body)?;
                    let id: u64 = r
                        .strip_prefix("INSERTED ")
                        .unwrap_or_else(|| panic!("put: {r}"))
                        .parse()
                        .unwrap();
                    let mut m = model.lock().unwrap();
                    assert!(id > m.max_id || !m.jobs.contains_key(&id), "id {id} reused");
                    m.max_id = m.max_id.max(id);
                    m.jobs.insert(
                        id,
                        Exp {
                            body,
                            buried: false,
                        },
                    );
                    m.acked += 1;
                    mine.push(id);
                }
                5 if !mine.is_empty() => {
                    let id = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                    model.lock().unwrap().uncertain.insert(id);
                    let r = c.try_cmd(&format!("delete {id}"))?;
                    let mut m = model.lock().unwrap();
                    m.uncertain.remove(&id);
                    if r == "DELETED" {
                        m.jobs.remove(&id);
                        m.deleted.insert(id);
                        m.acked += 1;
                    } else {
                        // Reserved by this connection earlier and since released or buried: fine.
                        assert_eq!(r, "NOT_FOUND", "delete {id}");
                        assert!(!m.jobs.contains_key(&id), "delete {id}: NOT_FOUND");
                    }
                }
                6 => {
                    // Kick one buried job of this tube by id, if any.
                    let buried = {
                        let m = model.lock().unwrap();
                        mine.iter()
                            .copied()
                            .find(|id| m.jobs.get(id).is_some_and(|e| e.buried))
                    };
                    if let Some(id) = buried {
                        model.lock().unwrap().uncertain.insert(id);
                        let r = c.try_cmd(&format!("kick-job {id}"))?;
                        let mut m = model.lock().unwrap();
                        m.uncertain.remove(&id);
                        assert_eq!(r, "KICKED", "kick-job {id}");
                        m.jobs.get_mut(&id).unwrap().buried = false;
                        m.acked += 1;
                    }
                }
                _ => {
                    let r = c.try_cmd("reserve-with-timeout 0")?;
                    let Some(rest) = r.strip_prefix("RESERVED ") else {
                        assert!(r == "TIMED_OUT" || r == "DEADLINE_SOON", "reserve: {r}");
                        continue;
                    };
                    let mut f = rest.split(' ');
                    let id: u64 = f.next().unwrap().parse().unwrap();
                    let n: usize = f.next().unwrap().parse().unwrap();
                    let body = c.body(n)?;
                    {
                        let mut m = model.lock().unwrap();
                        if let Some(e) = m.jobs.get(&id) {
                            assert_eq!(e.body, body, "reserved job {id}: body");
                        }
                        m.uncertain.insert(id);
                    }
                    let (line, want, buried) = match rng.below(3) {
                        0 => (format!("delete {id}"), "DELETED", None),
                        1 => (
                            format!("release {id} {} {}", rng.below(1000), rng.below(4)),
                            "RELEASED",
                            Some(false),
                        ),
                        _ => (
                            format!("bury {id} {}", rng.below(1000)),
                            "BURIED",
                            Some(true),
                        ),
                    };
                    let r = c.try_cmd(&line)?;
                    ok(&r, want)?;
                    let mut m = model.lock().unwrap();
                    m.uncertain.remove(&id);
                    m.acked += 1;
                    match buried {
                        None => {
                            m.jobs.remove(&id);
                            m.deleted.insert(id);
                        }
                        Some(b) => {
                            if let Some(e) = m.jobs.get_mut(&id) {
                                e.buried = b;
                            }
                        }
                    }
                    if buried.is_some() {
                        mine.push(id);
                    }
                }
            }
        }
    })();
}

fn stats_job(c: &mut Client, id: u64) -> Option<String> {
    let r = c.try_cmd(&format!("stats-job {id}")).unwrap();
    if r == "NOT_FOUND" {
        return None;
    }
    let n: usize = r.strip_prefix("OK ").unwrap().parse().unwrap();
    let yaml = String::from_utf8(c.body(n).unwrap()).unwrap();
    yaml.lines()
        .find_map(|l| l.strip_prefix("state: ").map(str::to_string))
}

/// Checks every acknowledged change against the restarted server; forgets uncertain ids.
fn verify(port: u16, model: &mut Model, round: usize) {
    let mut c = connect(port);
    let uncertain = std::mem::take(&mut model.uncertain);
    for id in &uncertain {
        // Its last command may or may not have happened: adopt what the server has.
        match stats_job(&mut c, *id) {
            None => {
                model.jobs.remove(id);
                model.deleted.insert(*id);
            }
            Some(state) => {
                if let Some(e) = model.jobs.get_mut(id) {
                    e.buried = state == "buried";
                }
            }
        }
    }
    for (id, e) in &model.jobs {
        let state = stats_job(&mut c, *id)
            .unwrap_or_else(|| panic!("round {round}: acknowledged job {id} lost"));
        if e.buried {
            assert_eq!(state, "buried", "round {round}: job {id}");
        } else {
            assert!(
                state == "ready" || state == "delayed",
                "round {round}: job {id} {state}"
            );
        }
        let r = c.try_cmd(&format!("peek {id}")).unwrap();
        let n: usize = r
            .strip_prefix(&format!("FOUND {id} "))
            .unwrap_or_else(|| panic!("peek {id}: {r}"))
            .parse()
            .unwrap();
        assert_eq!(c.body(n).unwrap(), e.body, "round {round}: job {id} body");
    }
    for id in &model.deleted {
        assert_eq!(
            stats_job(&mut c, *id),
            None,
            "round {round}: deleted job {id} came back"
        );
    }
    c.try_cmd("use kill-probe").unwrap();
    let r = c.try_put(0, 0, 60, b"probe").unwrap();
    let id: u64 = r.strip_prefix("INSERTED ").unwrap().parse().unwrap();
    assert!(id > model.max_id, "round {round}: id {id} reissued");
    ok(&c.try_cmd(&format!("delete {id}")).unwrap(), "DELETED").unwrap();
    model.max_id = id;
}

/// Kill-and-restart rounds for `secs` seconds; returns (rounds, acknowledged changes, live jobs).
/// Returns (restarts, acknowledged changes, live jobs, restarts that read the summary).
fn kill_rounds(mode: &str, secs: u64, seed: u64) -> (usize, u64, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let model = Arc::new(Mutex::new(Model::default()));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut round = 0;
    let mut from_summary = 0;
    while Instant::now() < end {
        round += 1;
        let server = start(mode, dir.path());
        if read_summary(&server) {
            from_summary += 1;
        }
        let port = server.port;
        verify(port, &mut model.lock().unwrap(), round);
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let m = model.clone();
                let s = rng.next();
                std::thread::spawn(move || worker(port, w, s, m))
            })
            .collect();
        // Checkpoints are taken once a second: some kills come before the first, some after.
        std::thread::sleep(Duration::from_millis(100 + rng.below(2400)));
        drop(server); // SIGKILL
        for w in workers {
            w.join().unwrap();
        }
    }
    // A last restart checks the final kill too.
    round += 1;
    let server = start(mode, dir.path());
    if read_summary(&server) {
        from_summary += 1;
    }
    let port = server.port;
    let mut m = model.lock().unwrap();
    verify(port, &mut m, round);
    (round, m.acked, m.jobs.len(), from_summary)
}

fn start(mode: &str, dir: &std::path::Path) -> Yaad {
    let dir = dir.to_str().expect("utf-8 data dir");
    let server = Yaad::launch(&["--mode", mode, "-b", dir], true, |_| {});
    server.wait_log("recovered");
    server
}

/// Whether the start read far segments' figures from the start-up summary (log line
/// "segments opened ... segments_from_summary=N", N > 0).
fn read_summary(server: &Yaad) -> bool {
    server.logs_so_far().iter().any(|l| {
        l.contains("segments opened")
            && l.split_whitespace().any(|w| {
                w.strip_prefix("segments_from_summary=")
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
    })
}

fn secs() -> u64 {
    std::env::var("YAAD_KILL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

#[test]
fn kill_9_mapped_loses_no_acknowledged_change() {
    let (rounds, acked, live, summary) = kill_rounds("mapped", secs(), 0x5eed_0001);
    eprintln!(
        "mapped: {rounds} restarts ({summary} from the start-up summary), {acked} acknowledged \
         changes, {live} live jobs"
    );
    assert!(acked > 0 && rounds > 1);
    assert!(
        summary > 0,
        "no restart after kill -9 used the start-up summary"
    );
}

#[test]
fn kill_9_lazy_loses_no_acknowledged_change() {
    let (rounds, acked, live, summary) = kill_rounds("lazy", secs(), 0x5eed_0002);
    eprintln!(
        "lazy: {rounds} restarts ({summary} from the start-up summary), {acked} acknowledged \
         changes, {live} live jobs"
    );
    assert!(acked > 0 && rounds > 1);
    assert!(
        summary > 0,
        "no restart after kill -9 used the start-up summary"
    );
}
