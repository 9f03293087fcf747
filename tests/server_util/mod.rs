//! Shared by the server integration tests: a server on 127.0.0.1 port 0 in a temp dir, and a
//! raw-bytes client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yaad::server::{self, Config, Mode, Server};

/// A guard against hangs only: every read gives up after this long.
pub const HANG_GUARD: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// The configuration a test server starts from.
pub fn config(mode: Mode, dir: &Path) -> Config {
    let mut cfg = Config::defaults();
    cfg.listen = "127.0.0.1".into();
    cfg.port = 0;
    cfg.mode = Some(mode);
    cfg.data_dir = Some(dir.to_path_buf());
    cfg
}

pub async fn start(mode: Mode) -> TestServer {
    start_with(mode, |_| {}).await
}

pub async fn start_with(mode: Mode, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(mode, dir.path());
    tweak(&mut cfg);
    let server = server::start(cfg).await.expect("server starts");
    let addr = server.tcp_addr().expect("tcp address");
    TestServer { server, addr, dir }
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// A client on `stream` (e.g. one with socket options set before connecting).
    pub fn on(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads until `n` bytes are buffered; false if the server closed first.
    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 8192];
            let r = match tokio::time::timeout(HANG_GUARD, self.stream.read(&mut chunk))
                .await
                .expect("no reply (hang guard)")
            {
                Ok(n) => n,
                // Closed with our request unread.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read: {e}"),
            };
            if r == 0 {
                return false;
            }
            self.buf.extend_from_slice(&chunk[..r]);
        }
        true
    }

    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        assert!(self.fill(n).await, "connection closed early");
        self.buf.drain(..n).collect()
    }

    /// One reply line, without its CRLF.
    pub async fn line(&mut self) -> String {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l: Vec<u8> = self.buf.drain(..p + 2).collect();
                return String::from_utf8_lossy(&l[..p]).into_owned();
            }
            let want = self.buf.len() + 1;
            assert!(self.fill(want).await, "connection closed early");
        }
    }

    /// Sends `cmd` + CRLF and returns the reply line.
    pub async fn cmd(&mut self, cmd: &str) -> String {
        self.send(format!("{cmd}\r\n").as_bytes()).await;
        self.line().await
    }

    /// Sends raw bytes and checks that exactly `want` comes back next.
    pub async fn expect(&mut self, send: &[u8], want: &[u8]) {
        self.send(send).await;
        let got = self.read_exact(want.len()).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "reply to {:?}",
            String::from_utf8_lossy(send)
        );
    }

    /// A reply with a body (`RESERVED`, `FOUND`, `OK`): the line and the body.
    pub async fn with_body(&mut self, cmd: &str) -> (String, Vec<u8>) {
        let l = self.cmd(cmd).await;
        let n: usize = match l.rsplit(' ').next().and_then(|n| n.parse().ok()) {
            Some(n)
                if l.starts_with("RESERVED") || l.starts_with("FOUND") || l.starts_with("OK") =>
            {
                n
            }
            _ => return (l, Vec::new()),
        };
        let body = self.read_exact(n + 2).await;
        assert_eq!(&body[n..], b"\r\n");
        (l, body[..n].to_vec())
    }

    /// A YAML reply parsed as `key: value` pairs, in order.
    pub async fn yaml(&mut self, cmd: &str) -> Vec<(String, String)> {
        let (l, body) = self.with_body(cmd).await;
        assert!(l.starts_with("OK "), "{cmd}: {l}");
        let text = String::from_utf8(body).expect("utf-8 yaml");
        assert!(text.starts_with("---\n"));
        text.lines()
            .skip(1)
            .map(|kv| {
                let (k, v) = kv.split_once(": ").expect("key: value");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    pub async fn stat(&mut self, cmd: &str, key: &str) -> String {
        self.yaml(cmd)
            .await
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {cmd}"))
    }

    /// True once the server closed the connection (after draining unread replies).
    pub async fn closed(&mut self) -> bool {
        let n = self.buf.len() + 1;
        !self.fill(n).await
    }
}
