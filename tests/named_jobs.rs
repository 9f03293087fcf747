//! Named jobs on the wire, raw bytes against the `yaad` binary in every mode: every reply of
//! `put-named`, `put-replace`, `delete-name`, `peek-name`, `kick-name`, `touch-name`, the
//! errors (a bad name is `BAD_FORMAT` and the connection goes on), `stats-job`'s `name` line
//! (and none for unnamed jobs), the old commands on named jobs, and names kept across a
//! restart (SIGTERM, and `kill -9` in the persisted modes), near and far.

mod common;

use common::{Client, Yaad};

/// Every mode: (mode, extra arguments of a restart that must keep the jobs).
const MODES: [(&str, &[&str]); 3] = [("mapped", &[]), ("lazy", &[]), ("mem", &["-r"])];

fn start(mode: &str, dir: &std::path::Path) -> Yaad {
    let restore: &[&str] = if mode == "mem" { &["-r"] } else { &[] };
    Yaad::spawn_in(mode, dir, restore)
}

/// `put-named NAME` (or `put-replace`) with `body`: the reply line.
fn put(c: &mut Client, verb: &str, name: &str, delay: u32, body: &str) -> String {
    let line = format!("{verb} {name} 5 {delay} 30 {}\r\n{body}\r\n", body.len());
    c.send(line.as_bytes()).unwrap()
}

fn id_of(reply: &str, word: &str) -> u64 {
    reply
        .strip_prefix(word)
        .and_then(|r| r.strip_prefix(' '))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("expected {word} <id>, got {reply:?}"))
}

/// The whole `stats-job` YAML.
fn stats_job(c: &mut Client, id: u64) -> String {
    let (l, body) = c.with_body(&format!("stats-job {id}"));
    assert!(l.starts_with("OK "), "{l}");
    String::from_utf8(body).unwrap()
}

fn every_reply(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let y = start(mode, dir.path());
    let mut c = y.connect();
    let mut other = y.connect();

    // put-named: a new job, then the same name answers EXISTS with its id, body unchanged.
    let a = id_of(
        &put(&mut c, "put-named", "order-123", 0, "remind"),
        "INSERTED",
    );
    assert_eq!(
        put(&mut c, "put-named", "order-123", 0, "again"),
        format!("EXISTS {a}")
    );
    assert_eq!(
        c.with_body("peek-name order-123"),
        (format!("FOUND {a} 6"), b"remind".to_vec())
    );
    // Far in the future (an hour), and in another tube the same name is another job.
    let far = id_of(&put(&mut c, "put-named", "far", 3_600, "later"), "INSERTED");
    assert_eq!(
        put(&mut c, "put-named", "far", 0, "x"),
        format!("EXISTS {far}")
    );
    assert_eq!(other.cmd("use other"), "USING other");
    let b = id_of(
        &put(&mut other, "put-named", "order-123", 0, "b"),
        "INSERTED",
    );
    assert_ne!(a, b);
    assert_eq!(other.cmd("peek-name far"), "NOT_FOUND");

    // stats-job: a name line, last; an unnamed job's reply has none.
    let y_a = stats_job(&mut c, a);
    assert!(y_a.ends_with("kicks: 0\nname: order-123\n"), "{y_a}");
    let plain = id_of(&c.put(1, 0, 10, b"plain"), "INSERTED");
    let y_plain = stats_job(&mut c, plain);
    assert!(
        y_plain.ends_with("kicks: 0\n") && !y_plain.contains("name"),
        "{y_plain}"
    );
    assert_eq!(c.cmd(&format!("delete {plain}")), "DELETED");

    // put-replace: the far job becomes ready now with the new body, same id.
    assert_eq!(
        put(&mut c, "put-replace", "far", 0, "now!"),
        format!("REPLACED {far}")
    );
    assert_eq!(
        c.with_body("peek-name far"),
        (format!("FOUND {far} 4"), b"now!".to_vec())
    );
    let y_far = stats_job(&mut c, far);
    assert!(
        y_far.contains("state: ready\n") && y_far.contains("ttr: 30\n"),
        "{y_far}"
    );
    // A new name: put-replace inserts.
    let n = id_of(&put(&mut c, "put-replace", "new", 0, "n"), "INSERTED");

    // Old commands on named jobs: reserve (lowest pri, id), then replace answers BUSY.
    assert_eq!(
        c.with_body("reserve-with-timeout 0"),
        (format!("RESERVED {a} 6"), b"remind".to_vec())
    );
    assert_eq!(
        put(&mut other, "put-replace", "x", 0, "x")
            .split(' ')
            .next(),
        Some("INSERTED")
    );
    assert_eq!(
        put(&mut c, "put-replace", "order-123", 0, "zz"),
        format!("BUSY {a}")
    );
    assert_eq!(c.cmd("touch-name order-123"), "TOUCHED");
    // touch-name: only the holder.
    assert_eq!(other.cmd("use default"), "USING default");
    assert_eq!(other.cmd("touch-name order-123"), "NOT_FOUND");
    // delete-name of another's reserved job: NOT_FOUND, as delete.
    assert_eq!(other.cmd("delete-name order-123"), "NOT_FOUND");
    assert_eq!(c.cmd(&format!("bury {a} 7")), "BURIED");
    assert_eq!(c.cmd("kick-name order-123"), "KICKED");
    assert_eq!(c.cmd("kick-name order-123"), "NOT_FOUND");
    assert_eq!(c.cmd("kick-name nobody"), "NOT_FOUND");
    let y_a = stats_job(&mut c, a);
    assert!(
        y_a.contains("state: ready\n") && y_a.contains("kicks: 1\n"),
        "{y_a}"
    );
    // Released with a delay: still found by name, and put-replace gives it a new body.
    assert_eq!(
        c.with_body(&format!("reserve-job {a}")).0,
        format!("RESERVED {a} 6")
    );
    assert_eq!(c.cmd(&format!("release {a} 3 3600")), "RELEASED");
    assert_eq!(
        put(&mut c, "put-replace", "order-123", 0, "r2"),
        format!("REPLACED {a}")
    );
    assert_eq!(c.with_body("peek-name order-123").1, b"r2".to_vec());
    // Delete by name and by id free the name.
    assert_eq!(c.cmd("delete-name order-123"), "DELETED");
    assert_eq!(c.cmd("delete-name order-123"), "NOT_FOUND");
    assert_eq!(c.cmd("peek-name order-123"), "NOT_FOUND");
    assert_eq!(c.cmd(&format!("delete {n}")), "DELETED");
    assert_eq!(c.cmd("peek-name new"), "NOT_FOUND");
    let a2 = id_of(
        &put(&mut c, "put-named", "order-123", 0, "fresh"),
        "INSERTED",
    );
    assert!(a2 > a);

    // Errors: a bad name is BAD_FORMAT and the connection goes on (a put's body is then read
    // as a command line, as after any bad put line); an empty or 201-byte name too.
    assert_eq!(c.cmd("delete-name -dash"), "BAD_FORMAT");
    assert_eq!(c.cmd("peek-name a*b"), "BAD_FORMAT");
    assert_eq!(
        c.cmd(&format!("kick-name {}", "n".repeat(201))),
        "BAD_FORMAT"
    );
    assert_eq!(c.cmd("touch-name "), "BAD_FORMAT");
    assert_eq!(c.cmd("delete-name"), "UNKNOWN_COMMAND");
    assert_eq!(c.cmd("put-named bad! 1 0 1 1"), "BAD_FORMAT");
    assert_eq!(c.cmd("put-named x 1 0 1"), "BAD_FORMAT");
    assert_eq!(c.cmd("put-named x 1 0 1 1 junk"), "BAD_FORMAT");
    // The longest name with the largest numbers: a 258-byte line is accepted for these.
    let long = "N".repeat(200);
    let line = format!("put-replace {long} 4294967295 4294967295 4294967295 1\r\nz\r\n");
    assert!(line.len() > 224);
    assert_eq!(id_of(&c.send(line.as_bytes()).unwrap(), "INSERTED"), a2 + 1);
    assert_eq!(c.cmd(&format!("delete-name {long}")), "DELETED");
    // A too-long line is still BAD_FORMAT for other commands, and the connection goes on.
    assert_eq!(c.cmd(&format!("use {}", "u".repeat(230))), "BAD_FORMAT");
    assert_eq!(c.cmd("list-tube-used"), "USING default");
    // A body with a wrong end: EXPECTED_CRLF, nothing stored.
    assert_eq!(
        c.send(b"put-named crlf 1 0 1 2\r\nabXY").unwrap(),
        "EXPECTED_CRLF"
    );
    assert_eq!(c.cmd("peek-name crlf"), "NOT_FOUND");
    assert_eq!(c.cmd("peek-name b"), "NOT_FOUND");
    // The other tube's job of the same name was never touched.
    assert_eq!(other.cmd("use other"), "USING other");
    assert_eq!(
        other.with_body("peek-name order-123"),
        (format!("FOUND {b} 1"), b"b".to_vec())
    );
}

#[test]
fn every_reply_mapped() {
    every_reply("mapped");
}

#[test]
fn every_reply_lazy() {
    every_reply("lazy");
}

#[test]
fn every_reply_mem() {
    every_reply("mem");
}

/// Puts named jobs near and far and replaces one; returns (near id, far id, replaced id).
fn fill(c: &mut Client) -> (u64, u64, u64) {
    let near = id_of(&put(c, "put-named", "near", 0, "n"), "INSERTED");
    let far = id_of(&put(c, "put-named", "far", 7_200, "f"), "INSERTED");
    let moved = id_of(&put(c, "put-named", "moved", 7_200, "m"), "INSERTED");
    assert_eq!(
        put(c, "put-replace", "moved", 9_000, "m2"),
        format!("REPLACED {moved}")
    );
    (near, far, moved)
}

/// After a restart the names answer as before: EXISTS with the same ids, bodies and names.
fn check_kept(c: &mut Client, (near, far, moved): (u64, u64, u64)) {
    for (name, id) in [("near", near), ("far", far), ("moved", moved)] {
        assert_eq!(
            put(c, "put-named", name, 0, "dup"),
            format!("EXISTS {id}"),
            "{name}"
        );
    }
    assert_eq!(c.with_body("peek-name moved").1, b"m2".to_vec());
    assert!(stats_job(c, far).ends_with("name: far\n"));
    assert_eq!(c.cmd("delete-name far"), "DELETED");
    assert!(id_of(&put(c, "put-named", "far", 0, "again"), "INSERTED") > moved);
}

/// Names survive a clean restart (SIGTERM; mem mode restores its flush with `-r`).
#[test]
fn names_survive_a_clean_restart_in_every_mode() {
    for (mode, _) in MODES {
        let dir = tempfile::tempdir().unwrap();
        let y = start(mode, dir.path());
        let ids = fill(&mut y.connect());
        assert!(y.terminate().success(), "{mode}");
        let y = start(mode, dir.path());
        check_kept(&mut y.connect(), ids);
    }
}

/// Names survive `kill -9` in the persisted modes: dedupe holds across the restart, also after
/// the server wrote a checkpoint that could have vouched for the far named spokes.
#[test]
fn names_survive_kill_9() {
    for mode in ["mapped", "lazy"] {
        let dir = tempfile::tempdir().unwrap();
        let y = start(mode, dir.path());
        let mut c = y.connect();
        let ids = fill(&mut c);
        wait_for_checkpoint(dir.path());
        drop(y); // SIGKILL
        let y = start(mode, dir.path());
        check_kept(&mut y.connect(), ids);
    }
}

/// Waits until the checkpointer (once a second) wrote a start-up summary taken after now.
fn wait_for_checkpoint(dir: &std::path::Path) {
    let after = std::time::SystemTime::now();
    let give_up = std::time::Instant::now() + common::HANG_GUARD;
    let path = dir.join("summary.yaad");
    while std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t <= after)
        || !path.exists()
    {
        assert!(std::time::Instant::now() < give_up, "no checkpoint written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The named commands reach statsd under their wire names (`cmd.put-named` …), a replace as
/// `jobs.replaced`, an insert as `jobs.put`.
#[test]
fn statsd_names_of_the_named_commands() {
    use std::collections::HashMap;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let statsd = udp.local_addr().unwrap().to_string();
    let y = Yaad::spawn(&["--statsd", &statsd, "--statsd-prefix", "t"]);
    let mut c = y.connect();
    assert_eq!(put(&mut c, "put-named", "a", 0, "x"), "INSERTED 1");
    assert_eq!(put(&mut c, "put-replace", "a", 0, "y"), "REPLACED 1");
    assert_eq!(c.with_body("peek-name a").0, "FOUND 1 1");
    assert_eq!(c.cmd("kick-name a"), "NOT_FOUND");
    assert_eq!(c.cmd("touch-name a"), "NOT_FOUND");
    assert_eq!(c.cmd("delete-name a"), "DELETED");
    let wanted = [
        ("t.cmd.put-named", 1.0),
        ("t.cmd.put-replace", 1.0),
        ("t.cmd.peek-name", 1.0),
        ("t.cmd.kick-name", 1.0),
        ("t.cmd.touch-name", 1.0),
        ("t.cmd.delete-name", 1.0),
        ("t.jobs.put", 1.0),
        ("t.jobs.replaced", 1.0),
        ("t.jobs.deleted", 1.0),
        ("t.error.NOT_FOUND", 2.0),
    ];
    let mut seen: HashMap<String, f64> = HashMap::new();
    let give_up = Instant::now() + common::HANG_GUARD;
    let mut buf = [0u8; 65536];
    while Instant::now() < give_up && !wanted.iter().all(|(n, v)| seen.get(*n) == Some(v)) {
        let Ok(n) = udp.recv(&mut buf) else { continue };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            // name:value|c
            if let Some((name, rest)) = line.split_once(':')
                && let Some(v) = rest.strip_suffix("|c")
            {
                *seen.entry(name.to_string()).or_default() += v.parse::<f64>().unwrap();
            }
        }
    }
    for (name, v) in wanted {
        assert_eq!(seen.get(name), Some(&v), "{name}; got {seen:?}");
    }
}

/// yaad-bench's named mode: `put-delete --named` runs put-named → delete-name without an
/// unexpected reply, and leaves no job behind.
#[test]
fn bench_named_mode() {
    let y = Yaad::spawn(&[]);
    let mut c = y.connect(); // once yaad listens
    let addr = format!("127.0.0.1:{}", y.port);
    for extra in [&[][..], &["--named"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_yaad-bench"))
            .args([
                "put-delete",
                "--addr",
                &addr,
                "--count",
                "300",
                "--conns",
                "3",
            ])
            .args(["--pipeline", "4"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{extra:?}: {stdout}");
        let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(
            (last["units"].as_u64(), last["errors"].as_u64()),
            (Some(300), Some(0))
        );
    }
    assert_eq!(c.stat("stats", "current-jobs-ready").as_deref(), Some("0"));
    assert_eq!(c.stat("stats", "cmd-delete").as_deref(), Some("300"));
}
