//! The `yaad` binary's observability: statsd metric lines over UDP and JSON logs on stderr.
//! A binary per test, since the metrics recorder and the log subscriber are process-global.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connect(port: u16) -> TcpStream {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > give_up => panic!("yaad did not start: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn cmd(r: &mut BufReader<TcpStream>, line: &str) -> String {
    r.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .unwrap();
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.trim_end().to_string()
}

/// Kills the server even when an assertion fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_yaad"))
        .args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .args(["-b", dir.path().to_str().unwrap()])
        .args(["--statsd", &statsd, "--statsd-prefix", "t"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Killed(child);
    let mut r = BufReader::new(connect(port));
    assert_eq!(cmd(&mut r, "put 0 0 60 2\r\nhi"), "INSERTED 1");
    assert_eq!(cmd(&mut r, "reserve"), "RESERVED 1 2");
    let mut body = String::new();
    r.read_line(&mut body).unwrap();
    assert_eq!(cmd(&mut r, "delete 1"), "DELETED");
    assert_eq!(cmd(&mut r, "delete 1"), "NOT_FOUND");
    assert_eq!(cmd(&mut r, "frobnicate"), "UNKNOWN_COMMAND");

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
    // The first sample may predate the connection: wait for one taken after it.
    let connected = |seen: &HashMap<String, (String, Vec<f64>)>| {
        seen.get("t.connections")
            .is_some_and(|(_, v)| v.contains(&1.0))
    };
    while Instant::now() < give_up
        && !(wanted.iter().all(|(n, _)| seen.contains_key(*n)) && connected(&seen))
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
    let out = Command::new(env!("CARGO_BIN_EXE_yaad"))
        .args(["-l", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["--statsd", "no-port-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("statsd"));
}

#[test]
fn json_logs_at_start_up() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_yaad"))
        .args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .args(["-b", dir.path().to_str().unwrap()])
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Killed(child);
    let stderr = BufReader::new(server.0.stderr.take().unwrap());
    let mut recovered = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        if v["fields"]["message"] == "recovered" {
            recovered = Some(v);
            break;
        }
    }
    let v = recovered.expect("no start-up line");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["mode"], "mapped");
    assert_eq!(v["fields"]["ready"], 0);
    assert_eq!(
        v["fields"]["data_dir"],
        dir.path().display().to_string().as_str()
    );
}
