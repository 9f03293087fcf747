//! The cheapest server `yaad-bench cycle` can run against: one thread, one epoll loop, and a
//! canned reply per command (no jobs are kept). What it reaches on a machine is the ceiling
//! of any beanstalkd-protocol server there for that workload: the generator's own cost plus
//! the kernel's per-command work (one recv and one send per side). `bench/compare.sh`
//! prints it as the `null` row when `NULL=1`.
//!
//!     cargo run --release --example null-server -- 127.0.0.1:11399
//!
//! It answers `use`, `watch`, `ignore`, `put` (skipping the body), `reserve` (a job of the
//! size of the last put on the connection), `reserve-with-timeout` and `delete`; anything
//! else gets `UNKNOWN_COMMAND`. Not a beanstalkd: every reserve succeeds.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

use rustix::event::epoll;

/// The epoll key of the listening socket (connections use their file descriptor number).
const LISTENER: u64 = u64::MAX;

struct Client {
    stream: TcpStream,
    input: Vec<u8>,
    out: Vec<u8>,
    /// Body length of the last `put`, the size of every `RESERVED` reply.
    body: usize,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:11399".into());
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    let poll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &poll,
        listener.as_fd(),
        epoll::EventData::new_u64(LISTENER),
        epoll::EventFlags::IN,
    )?;
    let mut clients: HashMap<u64, Client> = HashMap::new();
    let mut events = Vec::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        events.clear();
        epoll::wait(&poll, rustix::buffer::spare_capacity(&mut events), None)?;
        for ev in &events {
            let key = ev.data.u64();
            if key == LISTENER {
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nonblocking(true)?;
                    stream.set_nodelay(true)?;
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream) as u64;
                    epoll::add(
                        &poll,
                        stream.as_fd(),
                        epoll::EventData::new_u64(fd),
                        epoll::EventFlags::IN,
                    )?;
                    let client = Client {
                        stream,
                        input: Vec::new(),
                        out: Vec::new(),
                        body: 0,
                    };
                    clients.insert(fd, client);
                }
                continue;
            }
            let Some(c) = clients.get_mut(&key) else {
                continue;
            };
            if !serve(c, &mut buf) {
                let c = clients.remove(&key).expect("present");
                epoll::delete(&poll, c.stream.as_fd())?;
            }
        }
    }
}

/// Reads what is there, answers every complete command; false once the client is gone.
fn serve(c: &mut Client, buf: &mut [u8]) -> bool {
    // One read per wake-up (epoll is level-triggered: what is left wakes it again), as
    // tokio does: one recv per command at pipeline 1.
    match c.stream.read(buf) {
        Ok(0) => return false,
        Ok(n) => c.input.extend_from_slice(&buf[..n]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
        Err(_) => return false,
    }
    let mut at = 0;
    while let Some(len) = c.input[at..].windows(2).position(|w| w == b"\r\n") {
        let line = &c.input[at..at + len];
        let mut words = line.split(|&b| b == b' ');
        let verb = words.next().unwrap_or_default();
        let mut end = at + len + 2;
        match verb {
            b"put" => {
                let size = words.nth(3).and_then(|w| std::str::from_utf8(w).ok());
                let Some(size) = size.and_then(|w| w.parse::<usize>().ok()) else {
                    c.out.extend_from_slice(b"BAD_FORMAT\r\n");
                    at = end;
                    continue;
                };
                if c.input.len() < end + size + 2 {
                    break; // the body is not all here yet
                }
                end += size + 2;
                c.body = size;
                c.out.extend_from_slice(b"INSERTED 1\r\n");
            }
            b"reserve" | b"reserve-with-timeout" => {
                c.out
                    .extend_from_slice(format!("RESERVED 1 {}\r\n", c.body).as_bytes());
                c.out.resize(c.out.len() + c.body, b'x');
                c.out.extend_from_slice(b"\r\n");
            }
            b"delete" => c.out.extend_from_slice(b"DELETED\r\n"),
            b"use" => {
                c.out.extend_from_slice(b"USING ");
                c.out.extend_from_slice(words.next().unwrap_or_default());
                c.out.extend_from_slice(b"\r\n");
            }
            b"watch" | b"ignore" => c.out.extend_from_slice(b"WATCHING 1\r\n"),
            _ => c.out.extend_from_slice(b"UNKNOWN_COMMAND\r\n"),
        }
        at = end;
    }
    c.input.drain(..at);
    // Small replies to a client that reads them: a blocking write is fine here.
    let done = c.out.is_empty() || write_all(&mut c.stream, &c.out);
    c.out.clear();
    done
}

fn write_all(stream: &mut TcpStream, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                std::thread::yield_now()
            }
            Err(_) => return false,
        }
    }
    true
}
