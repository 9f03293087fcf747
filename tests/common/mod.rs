//! Shared by the tests that start the `yaad` binary as a child process: a free port, the
//! process (killed on drop, so a failing check leaves no yaad running), its stderr lines, and
//! a blocking line client. (In-process servers are in `server_util`.)
#![allow(dead_code)]

pub mod hub;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A guard against hangs only: every read (and a wait for a log line or an exit) gives up
/// after this long.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// A guard against hangs only: how long [`connect`] retries while yaad starts (recovery of a
/// loaded data dir on a busy machine included).
pub const CONNECT_GUARD: Duration = Duration::from_secs(30);

/// A TCP port nothing listens on right now, for a process expected to exit before it binds
/// (a bad flag). A server gets its port from the kernel instead (`-p 0`, see [`Yaad::start`]):
/// a port found free here can be handed to two processes starting at once.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server `cmd` told to listen on 127.0.0.1 port 0 (the kernel picks a free port,
/// so no two servers can be handed one port) and returns it with the port it listens on,
/// found in `/proc` ([`listening_port`]). Panics if it exits first or takes longer than
/// [`CONNECT_GUARD`]. For servers that do not say their port (beanstalkd).
pub fn spawn_listening(cmd: &mut Command) -> (Child, u16) {
    let mut child = cmd.spawn().expect("the server starts");
    let give_up = Instant::now() + CONNECT_GUARD;
    loop {
        if let Some(port) = listening_port(child.id()) {
            return (child, port);
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("{cmd:?} exited before it listened: {st}");
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not listen within {CONNECT_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The port of a listening IPv4 TCP socket that process `pid` holds: the sockets in
/// `/proc/PID/fd` matched by inode with the listening ones of `/proc/net/tcp`.
pub fn listening_port(pid: u32) -> Option<u16> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let inodes: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
        if *state != "0A" || !inodes.iter().any(|i| i == inode) {
            return None;
        }
        u16::from_str_radix(local.split(':').nth(1)?, 16).ok()
    })
}

/// The `yaad` binary cargo built for these tests, without arguments.
pub fn yaad_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_yaad"))
}

/// A `yaad` command listening on 127.0.0.1:`port`, before its own arguments.
pub fn command(port: u16) -> Command {
    let mut c = yaad_bin();
    c.args(["-l", "127.0.0.1", "-p", &port.to_string()]);
    c
}

/// A running `yaad`; SIGKILLed on drop unless it has exited.
pub struct Yaad {
    pub child: Child,
    /// The port the kernel gave it (0 if it exited before it listened).
    pub port: u16,
    /// Its stderr lines as they come, when started with [`Yaad::spawn_logged`].
    logs: Option<Receiver<String>>,
    /// Every stderr line so far (kept for any start, printed when it fails to start).
    all_logs: Arc<Mutex<Vec<String>>>,
}

/// The start-up line that names the bound address (`addr=Tcp(127.0.0.1:PORT)`).
const LISTENING: &str = "yaad listening";

/// The port in a [`LISTENING`] line (`None`: not a TCP address).
fn port_in_log_line(line: &str) -> Option<u16> {
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Yaad {
    /// Starts `yaad` with `args` (after `-l 127.0.0.1 -p 0`), stderr not echoed.
    pub fn spawn(args: &[&str]) -> Yaad {
        Yaad::launch(args, false, |_| {})
    }

    /// Starts `yaad --mode MODE -b DIR` plus `args`, stderr not echoed.
    pub fn spawn_in(mode: &str, dir: &Path, args: &[&str]) -> Yaad {
        let dir = dir.to_str().expect("utf-8 data dir");
        let mut all = vec!["--mode", mode, "-b", dir];
        all.extend_from_slice(args);
        Yaad::launch(&all, false, |_| {})
    }

    /// Like [`Yaad::spawn`], stderr lines also echoed and kept for [`Yaad::wait_log`].
    pub fn spawn_logged(args: &[&str]) -> Yaad {
        Yaad::launch(args, true, |_| {})
    }

    /// Starts `yaad` with `args` and returns it once it listens; `logged`: see
    /// [`Yaad::spawn_logged`]; `tweak` adjusts the command (environment, ...) before it
    /// starts. Panics, with its stderr, if it exits first.
    pub fn launch(args: &[&str], logged: bool, tweak: impl FnOnce(&mut Command)) -> Yaad {
        let mut cmd = command(0);
        cmd.args(args);
        Yaad::start(cmd, logged, logged, false, tweak)
    }

    /// Like [`Yaad::spawn`] (stderr kept, see [`Yaad::spawn_logged`]) with at most `nofile`
    /// open files (`ulimit -n`, set by a shell that then runs yaad in its place).
    pub fn spawn_with_open_files(args: &[&str], nofile: u32) -> Yaad {
        Yaad::spawn_with_ulimit(args, &format!("-n {nofile}"))
    }

    /// Like [`Yaad::spawn_with_open_files`] with any `ulimit` arguments (e.g. `-S -n 64`).
    pub fn spawn_with_ulimit(args: &[&str], ulimit: &str) -> Yaad {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("ulimit {ulimit} && exec \"$@\""), "sh"])
            .arg(env!("CARGO_BIN_EXE_yaad"))
            .args(["-l", "127.0.0.1", "-p", "0"])
            .args(args);
        Yaad::start(cmd, true, true, false, |_| {})
    }

    /// Starts `yaad` with `args` and the environment set by `tweak`, keeping its stderr lines
    /// without echoing them (for [`Yaad::logs_so_far`]), and returns it once it listens, or
    /// once it has exited on its own (a test that plans its death, e.g. a power cut at an
    /// early sync event: check [`Child::try_wait`]).
    pub fn launch_own_may_exit(args: &[&str], tweak: impl Fn(&mut Command)) -> Yaad {
        let mut cmd = command(0);
        cmd.args(args);
        Yaad::start(cmd, true, false, true, tweak)
    }

    /// Runs `cmd` (a yaad told `-p 0`) with stderr piped: a thread keeps every line (and
    /// passes them on for [`Yaad::wait_log`] when `logged`, echoes them when `echo`), and
    /// the port comes from the [`LISTENING`] line. If yaad exits before that line, it is
    /// returned as it is when `may_exit`, and is a panic otherwise.
    fn start(
        mut cmd: Command,
        logged: bool,
        echo: bool,
        may_exit: bool,
        tweak: impl FnOnce(&mut Command),
    ) -> Yaad {
        cmd.stderr(Stdio::piped());
        // The listening line is logged at info: keep it when RUST_LOG would filter it out.
        if let Ok(filter) = std::env::var("RUST_LOG") {
            cmd.env("RUST_LOG", format!("{filter},yaad::server=info"));
        }
        tweak(&mut cmd);
        let mut y = Yaad {
            child: cmd.spawn().unwrap(),
            port: 0,
            logs: None,
            all_logs: Arc::default(),
        };
        let stderr: ChildStderr = y.child.stderr.take().expect("piped stderr");
        let (tx, rx) = channel();
        let (port_tx, port_rx) = channel();
        let all = y.all_logs.clone();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("yaad: {line}");
                }
                all.lock().unwrap().push(line.clone());
                if line.contains(LISTENING)
                    && let Some(port_tx) = port_tx.take()
                {
                    let _ = port_tx.send(port_in_log_line(&line).unwrap_or(0));
                }
                // The test may not listen; keep collecting.
                if logged {
                    let _ = tx.send(line);
                }
            }
            // Dropping `port_tx` here tells the starter that yaad closed stderr (it exited).
        });
        if logged {
            y.logs = Some(rx);
        }
        match port_rx.recv_timeout(CONNECT_GUARD) {
            Ok(port) => y.port = port,
            Err(RecvTimeoutError::Disconnected) if may_exit => {}
            Err(RecvTimeoutError::Disconnected) => {
                let status = y.wait_exit();
                panic!(
                    "yaad exited before it listened ({status}); its stderr:\n{}",
                    y.logs_so_far().join("\n")
                );
            }
            Err(RecvTimeoutError::Timeout) => panic!(
                "yaad did not listen within {CONNECT_GUARD:?}; its stderr:\n{}",
                y.logs_so_far().join("\n")
            ),
        }
        y
    }

    /// A new connection (retried until yaad listens).
    pub fn connect(&self) -> Client {
        connect(self.port)
    }

    /// Sends `sig` ("-USR1", "-TERM", ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the next stderr line containing `needle` (started with `spawn_logged`).
    pub fn wait_log(&self, needle: &str) -> String {
        let logs = self.logs.as_ref().expect("started with spawn_logged");
        let give_up = Instant::now() + HANG_GUARD;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match logs.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no log line with {needle:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("yaad's stderr closed before a line with {needle:?}")
                }
            }
        }
    }

    /// Every stderr line read so far (started with `spawn_logged`).
    pub fn logs_so_far(&self) -> Vec<String> {
        self.all_logs.lock().unwrap().clone()
    }

    /// Waits for the process to exit (hang guard: panics after [`HANG_GUARD`]).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let give_up = Instant::now() + HANG_GUARD;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < give_up, "yaad did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait_exit()
    }
}

impl Drop for Yaad {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// Connects to 127.0.0.1:`port`, retrying until yaad listens (at most [`CONNECT_GUARD`]).
pub fn connect(port: u16) -> Client {
    let give_up = Instant::now() + CONNECT_GUARD;
    loop {
        match Client::try_connect(port) {
            Ok(c) => return c,
            Err(e) if Instant::now() > give_up => panic!("yaad did not start: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A blocking beanstalkd-protocol client: one request, one reply line.
pub struct Client(pub BufReader<TcpStream>);

impl Client {
    /// One attempt to connect to 127.0.0.1:`port` (reads give up after [`HANG_GUARD`]).
    pub fn try_connect(port: u16) -> std::io::Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(HANG_GUARD))?;
        Ok(Client(BufReader::new(s)))
    }

    /// Sends raw bytes, returns the reply line without CRLF; a reply cut short (the server
    /// died) is an `UnexpectedEof` error.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<String> {
        self.0.get_mut().write_all(bytes)?;
        let mut l = String::new();
        if self.0.read_line(&mut l)? == 0 || !l.ends_with('\n') {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end().to_string())
    }

    /// `line` + CRLF, see [`Client::send`].
    pub fn try_cmd(&mut self, line: &str) -> std::io::Result<String> {
        self.send(format!("{line}\r\n").as_bytes())
    }

    /// `line` + CRLF; panics if the server does not answer.
    pub fn cmd(&mut self, line: &str) -> String {
        self.try_cmd(line)
            .unwrap_or_else(|e| panic!("no reply to {line:?}: {e}"))
    }

    /// Reads a body of `n` bytes and its CRLF.
    pub fn body(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n + 2];
        self.0.read_exact(&mut b)?;
        b.truncate(n);
        Ok(b)
    }

    /// `put PRI DELAY TTR LEN` and the body; the reply line.
    pub fn try_put(
        &mut self,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: &[u8],
    ) -> std::io::Result<String> {
        let mut m = format!("put {pri} {delay} {ttr} {}\r\n", body.len()).into_bytes();
        m.extend_from_slice(body);
        m.extend_from_slice(b"\r\n");
        self.send(&m)
    }

    pub fn put(&mut self, pri: u32, delay: u32, ttr: u32, body: &[u8]) -> String {
        self.try_put(pri, delay, ttr, body)
            .unwrap_or_else(|e| panic!("no reply to put: {e}"))
    }

    /// A command answered with `WORD id len` + body (`peek`, `reserve`): (reply line, body).
    pub fn with_body(&mut self, line: &str) -> (String, Vec<u8>) {
        let l = self.cmd(line);
        let n = match l.rsplit(' ').next().and_then(|n| n.parse::<usize>().ok()) {
            Some(n)
                if ["FOUND ", "RESERVED ", "OK "]
                    .iter()
                    .any(|p| l.starts_with(p)) =>
            {
                n
            }
            _ => return (l, Vec::new()),
        };
        let body = self
            .body(n)
            .unwrap_or_else(|e| panic!("body of {line:?}: {e}"));
        (l, body)
    }

    /// The body of job `id` (`peek`), or None if `NOT_FOUND`.
    pub fn peek(&mut self, id: u64) -> Option<Vec<u8>> {
        let (l, body) = self.with_body(&format!("peek {id}"));
        if l == "NOT_FOUND" {
            return None;
        }
        assert_eq!(l, format!("FOUND {id} {}", body.len()), "peek {id}");
        Some(body)
    }

    /// One key of a YAML reply (`stats`, `stats-job ID`, `stats-tube T`); None if the
    /// command is not answered with `OK` or the key is missing.
    pub fn stat(&mut self, line: &str, key: &str) -> Option<String> {
        self.try_stat(line, key)
            .unwrap_or_else(|e| panic!("no reply to {line:?}: {e}"))
    }

    /// [`Client::stat`], with a connection error as an error instead of a panic.
    pub fn try_stat(&mut self, line: &str, key: &str) -> std::io::Result<Option<String>> {
        let l = self.try_cmd(line)?;
        let Some(n) = l.strip_prefix("OK ").and_then(|n| n.parse::<usize>().ok()) else {
            return Ok(None);
        };
        let body = self.body(n)?;
        Ok(String::from_utf8(body)
            .expect("utf-8 yaml")
            .lines()
            .find_map(|kv| kv.strip_prefix(&format!("{key}: ")).map(str::to_string)))
    }
}

/// A small deterministic generator (xorshift64) for the tests' random workloads: a seed in the
/// failure message reproduces a run. The seed must not be 0.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
