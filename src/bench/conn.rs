//! A minimal pipelining client connection: commands are appended to a write buffer and sent in
//! one write; replies are decoded from a read buffer filled by as few reads as possible.

use std::io;
use std::ops::Range;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::reply::{self, Malformed, Reply};

/// Why a connection cannot go on.
#[derive(Debug)]
pub enum ConnError {
    Io(io::Error),
    /// The server closed the connection.
    Closed,
    Malformed(Malformed),
    /// A setup command (`use`, `watch`, `ignore`) got an unexpected reply.
    Setup(String),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "i/o error: {e}"),
            ConnError::Closed => f.write_str("server closed the connection"),
            ConnError::Malformed(m) => write!(f, "{m}"),
            ConnError::Setup(s) => write!(f, "setup failed: {s}"),
        }
    }
}

/// A TCP connection, or a Unix-domain one for an address `unix:<path>`.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Unix(s) => s.read_buf(buf).await,
        }
    }
}

/// A connection to a beanstalkd-protocol server.
pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Bytes of the reply last returned by [`Conn::try_reply`], dropped on the next call.
    consumed: usize,
}

const READ_CHUNK: usize = 64 * 1024;

impl Conn {
    /// Connects to `host:port` over TCP with Nagle's algorithm off (commands are batched by
    /// the caller), or to `unix:<path>` over a Unix-domain socket.
    pub async fn connect(addr: &str) -> Result<Conn, ConnError> {
        let stream = match addr.strip_prefix("unix:") {
            Some(path) => Stream::Unix(UnixStream::connect(path).await?),
            None => {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Stream::Tcp(tcp)
            }
        };
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(READ_CHUNK),
            consumed: 0,
        })
    }

    /// Makes `tube` the used tube (for puts) and, when `watch` is set, the only watched one.
    pub async fn select_tube(&mut self, tube: &str, watch: bool) -> Result<(), ConnError> {
        if tube == "default" {
            return Ok(());
        }
        self.queue_line(&["use ", tube]);
        if watch {
            self.queue_line(&["watch ", tube]);
            self.queue_line(&["ignore default"]);
        }
        self.flush().await?;
        let expected = if watch { 3 } else { 1 };
        for _ in 0..expected {
            let reply = self.next_reply().await?;
            if !matches!(reply, Reply::Using | Reply::Watching(_)) {
                let text = self.describe(&reply);
                return Err(ConnError::Setup(text));
            }
        }
        Ok(())
    }

    /// Queues `put <pri> <delay> <ttr> <len>`; `body` appends exactly `len` bytes.
    pub fn queue_put(
        &mut self,
        name: Option<(u64, u64)>,
        pri: u32,
        delay: u32,
        ttr: u32,
        len: usize,
        body: impl FnOnce(&mut Vec<u8>),
    ) {
        let w = &mut self.wbuf;
        match name {
            None => w.extend_from_slice(b"put "),
            Some((seed, n)) => {
                w.extend_from_slice(b"put-named ");
                push_name(w, seed, n);
                w.push(b' ');
            }
        }
        push_u64(w, u64::from(pri));
        w.push(b' ');
        push_u64(w, u64::from(delay));
        w.push(b' ');
        push_u64(w, u64::from(ttr));
        w.push(b' ');
        push_u64(w, len as u64);
        w.extend_from_slice(b"\r\n");
        let before = w.len();
        body(w);
        debug_assert_eq!(w.len() - before, len, "put body must be exactly len bytes");
        w.extend_from_slice(b"\r\n");
    }

    /// Queues `reserve`, or `reserve-with-timeout <t>` when a timeout is given.
    pub fn queue_reserve(&mut self, timeout: Option<u32>) {
        match timeout {
            None => self.wbuf.extend_from_slice(b"reserve\r\n"),
            Some(t) => {
                self.wbuf.extend_from_slice(b"reserve-with-timeout ");
                push_u64(&mut self.wbuf, u64::from(t));
                self.wbuf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Queues `delete <id>`.
    pub fn queue_delete(&mut self, id: u64) {
        self.wbuf.extend_from_slice(b"delete ");
        push_u64(&mut self.wbuf, id);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Queues `delete-name <name>` for the name [`Conn::queue_put`] made of (`seed`, `n`).
    pub fn queue_delete_name(&mut self, seed: u64, n: u64) {
        self.wbuf.extend_from_slice(b"delete-name ");
        push_name(&mut self.wbuf, seed, n);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Queues one command line made of `parts`.
    pub fn queue_line(&mut self, parts: &[&str]) {
        for p in parts {
            self.wbuf.extend_from_slice(p.as_bytes());
        }
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Whether commands are queued but not yet sent.
    pub fn has_unsent(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Sends every queued command in one write.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The next reply already in the read buffer, without reading from the socket.
    pub fn try_reply(&mut self) -> Result<Option<Reply>, ConnError> {
        self.rbuf.advance(std::mem::take(&mut self.consumed));
        match reply::parse(&self.rbuf).map_err(ConnError::Malformed)? {
            Some((reply, len)) => {
                self.consumed = len;
                Ok(Some(reply))
            }
            None => Ok(None),
        }
    }

    /// Reads once from the socket (waiting for at least one byte).
    pub async fn read_more(&mut self) -> Result<(), ConnError> {
        self.rbuf.advance(std::mem::take(&mut self.consumed));
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(ConnError::Closed),
            _ => Ok(()),
        }
    }

    /// The next reply, reading from the socket as needed.
    pub async fn next_reply(&mut self) -> Result<Reply, ConnError> {
        loop {
            if let Some(reply) = self.try_reply()? {
                return Ok(reply);
            }
            self.read_more().await?;
        }
    }

    /// Bytes of the reply last returned (a body or line range from it).
    pub fn slice(&self, range: Range<usize>) -> &[u8] {
        &self.rbuf[range]
    }

    /// A short text for the reply last returned, for error messages.
    pub fn describe(&self, reply: &Reply) -> String {
        match reply {
            Reply::Other { line } => String::from_utf8_lossy(self.slice(line.clone())).into_owned(),
            Reply::Reserved { id, body } => format!("RESERVED {id} ({} bytes)", body.len()),
            other => format!("{other:?}"),
        }
    }
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A bench job name: `b<seed>.<n>` (seed in decimal: the name charset has no other need).
fn push_name(w: &mut Vec<u8>, seed: u64, n: u64) {
    w.push(b'b');
    push_u64(w, seed);
    w.push(b'.');
    push_u64(w, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
