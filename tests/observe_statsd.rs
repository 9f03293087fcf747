//! The `yaad` binary's observability: statsd metric lines over UDP and JSON logs on stderr.
//! A binary per test, since the metrics recorder and the log subscriber are process-global.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{Yaad, command, free_port};

/// One statsd line `name:value|type`.
fn parse(line: &str) -> Option<(String, f64, String)> {
    let (name, rest) = line.split_once(':')?;
    let (value, kind) = rest.split_once('|')?;
    let kind = kind.split('|').next()?;
    Some((name.to_string(), value.parse().ok()?, kind.to_string()))
}

#[test]
fn statsd_lines_arrive() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let statsd = udp.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let server = Yaad::spawn(&[
        "-b",
        dir.path().to_str().unwrap(),
        "--statsd",
        &statsd,
        "--statsd-prefix",
        "t",
    ]);
    let mut c = server.connect();
    assert_eq!(c.cmd("put 0 0 60 2\r\nhi"), "INSERTED 1");
    assert_eq!(c.cmd("reserve"), "RESERVED 1 2");
    assert_eq!(c.body(2).unwrap(), b"hi");
    assert_eq!(c.cmd("delete 1"), "DELETED");
    assert_eq!(c.cmd("delete 1"), "NOT_FOUND");
    assert_eq!(c.cmd("frobnicate"), "UNKNOWN_COMMAND");

    // name -> (type, values seen)
    let mut seen: HashMap<String, (String, Vec<f64>)> = HashMap::new();
    let wanted = [
        ("t.cmd.put", "c"),
        ("t.cmd.reserve", "c"),
        ("t.cmd.delete", "c"),
        ("t.error.NOT_FOUND", "c"),
        ("t.error.UNKNOWN_COMMAND", "c"),
        ("t.jobs.put", "c"),
        ("t.jobs.reserved", "c"),
        ("t.jobs.deleted", "c"),
        ("t.cmd.latency", "ms"),
        ("t.recovery.duration", "ms"),
        ("t.connections", "g"),
        ("t.jobs.ready", "g"),
        ("t.spokes", "g"),
        ("t.data_dir.bytes", "g"),
    ];
    let give_up = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 65536];
    // The first sample may predate the connection: wait for one taken after it. One taken
    // between the put and the delete shows a ready job: wait for the next.
    let connected = |seen: &HashMap<String, (String, Vec<f64>)>| {
        seen.get("t.connections")
            .is_some_and(|(_, v)| v.contains(&1.0))
    };
    let none_ready = |seen: &HashMap<String, (String, Vec<f64>)>| {
        seen.get("t.jobs.ready")
            .is_some_and(|(_, v)| v.last() == Some(&0.0))
    };
    while Instant::now() < give_up
        && !(wanted.iter().all(|(n, _)| seen.contains_key(*n))
            && connected(&seen)
            && none_ready(&seen))
    {
        let Ok(n) = udp.recv(&mut buf) else { continue };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            let (name, value, kind) = parse(line).unwrap_or_else(|| panic!("bad line {line:?}"));
            seen.entry(name).or_insert((kind, Vec::new())).1.push(value);
        }
    }
    for (name, kind) in wanted {
        let (k, values) = seen
            .get(name)
            .unwrap_or_else(|| panic!("no {name}; got {:?}", seen.keys()));
        assert_eq!(k, kind, "{name}");
        assert!(values.iter().all(|v| *v >= 0.0), "{name}: {values:?}");
    }
    let total = |n: &str| seen[n].1.iter().sum::<f64>();
    assert_eq!(total("t.cmd.put"), 1.0);
    assert_eq!(total("t.cmd.delete"), 2.0);
    assert_eq!(total("t.jobs.deleted"), 1.0);
    assert_eq!(total("t.error.NOT_FOUND"), 1.0);
    assert_eq!(total("t.error.UNKNOWN_COMMAND"), 1.0);
    // The one client is connected; nothing is ready after the delete.
    assert!(connected(&seen), "{:?}", seen["t.connections"]);
    assert_eq!(*seen["t.jobs.ready"].1.last().unwrap(), 0.0);
    // Four commands were timed (the unknown one is not a command).
    assert_eq!(seen["t.cmd.latency"].1.len(), 4);
}

#[test]
fn bad_statsd_address_is_a_start_up_error() {
    let out = command(free_port())
        .args(["--statsd", "no-port-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("statsd"));
}

#[test]
fn json_logs_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Yaad::launch(
        &["-b", dir.path().to_str().unwrap(), "--log-format", "json"],
        true,
        |cmd| {
            cmd.env_remove("RUST_LOG");
        },
    );
    let line = server.wait_log("recovered");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    assert_eq!(v["fields"]["message"], "recovered", "{line}");
    // Every line before it is JSON too.
    for l in server.logs_so_far() {
        serde_json::from_str::<serde_json::Value>(&l)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
    }
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["mode"], "mapped");
    assert_eq!(v["fields"]["ready"], 0);
    assert_eq!(
        v["fields"]["data_dir"],
        dir.path().display().to_string().as_str()
    );
}
