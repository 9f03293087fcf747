//! Differential test: the same byte scripts sent to a real beanstalkd (1.12) and to yaad must get
//! byte-identical replies. Covers the grammar's odd corners and the job life cycle; leaves out
//! what legitimately differs (stats values, list-tubes order, time-dependent replies, and the
//! deliberate differences listed in `protocol/mod.rs`).
//!
//! beanstalkd comes from `BEANSTALKD_PATH`, else `beanstalkd` on the PATH (scripts/test installs
//! it). Without it the test is skipped, except under CI where that is a failure.

mod common;
mod server_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use yaad::server::Mode;

const SENTINEL_CMD: &[u8] = b"use zz-sentinel\r\n";
const SENTINEL_REPLY: &[u8] = b"USING zz-sentinel\r\n";

struct Beanstalkd(Child, SocketAddr);

impl Drop for Beanstalkd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_beanstalkd() -> Option<Beanstalkd> {
    let path = std::env::var("BEANSTALKD_PATH").unwrap_or_else(|_| "beanstalkd".into());
    if let Err(e) = Command::new(&path).arg("-v").output() {
        assert!(
            std::env::var_os("CI").is_none(),
            "beanstalkd ({path}) is needed under CI: {e}"
        );
        eprintln!("skipped: no beanstalkd ({path}: {e})");
        return None;
    }
    let (child, port) = common::spawn_listening(
        Command::new(&path)
            .args(["-l", "127.0.0.1", "-p", "0"])
            .stderr(Stdio::null()),
    );
    Some(Beanstalkd(child, ([127, 0, 0, 1], port).into()))
}

/// Sends `script` then a sentinel on a fresh connection; returns every reply byte before the
/// sentinel's reply (or up to EOF if the script closes the connection).
fn replies(addr: SocketAddr, script: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(script).unwrap();
    // The server may already have closed (quit): then the sentinel cannot be written.
    let _ = s.write_all(SENTINEL_CMD);
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if got.ends_with(SENTINEL_REPLY) {
            got.truncate(got.len() - SENTINEL_REPLY.len());
            return got;
        }
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "no complete reply to {:?} (got {:?}): {e}",
                String::from_utf8_lossy(script),
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

fn cases() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        // The job life cycle, each case in its own tube.
        &b"use c1\r\nwatch c1\r\nignore default\r\nput 5 0 60 1\r\na\r\nput 1 0 60 1\r\nb\r\nput 1 0 60 1\r\nc\r\nreserve\r\nreserve\r\nreserve\r\ndelete 2\r\nrelease 3 0 0\r\nrelease 3 0 0\r\nreserve\r\nbury 3 7\r\nbury 3 7\r\ntouch 1\r\ntouch 3\r\ndelete 3\r\ndelete 1\r\nreserve-with-timeout 0\r\n"[..],
        b"use c2\r\nwatch c2\r\nignore default\r\nput 0 0 60 1\r\nx\r\nput 0 100 60 1\r\ny\r\npeek-ready\r\npeek-delayed\r\npeek-buried\r\nreserve\r\nbury 4 0\r\npeek-buried\r\nkick 10\r\nkick 10\r\nkick 10\r\npeek-ready\r\nkick-job 4\r\nput 0 100 60 1\r\nz\r\nkick-job 6\r\nkick-job 6\r\nreserve-job 6\r\nreserve-job 6\r\nrelease 6 3 100\r\npeek-delayed\r\nreserve-job 6\r\nbury 6 1\r\nreserve-job 6\r\ndelete 6\r\ndelete 5\r\ndelete 4\r\n",
        b"use c3\r\npeek-ready\r\npeek-delayed\r\npeek-buried\r\npeek 999\r\nstats-job 999\r\nstats-tube nope\r\nkick 5\r\nkick-job 999\r\ndelete 999\r\nrelease 999 0 0\r\nbury 999 0\r\ntouch 999\r\nreserve-job 999\r\npause-tube nope 1\r\n",
        b"watch a\r\nwatch b\r\nwatch a\r\nignore nope\r\nignore default\r\nignore a\r\nignore b\r\nlist-tubes-watched\r\nlist-tube-used\r\nuse a\r\nlist-tube-used\r\n",
        b"use c4\r\nwatch c4\r\nignore default\r\nput 0 0 60 2\r\npp\r\npause-tube c4 100\r\nreserve-with-timeout 0\r\npeek-ready\r\npause-tube c4 0\r\nreserve-with-timeout 0\r\ndelete 7\r\n",
        b"use c5\r\nwatch c5\r\nignore default\r\nput 0 0 1 1\r\nq\r\nreserve\r\nreserve\r\nreserve-with-timeout 5\r\ndelete 8\r\n",
        b"use c6\r\nput 0 0 60 1\r\nr\r\nquit\r\nput 0 0 60 1\r\ns\r\n",
        b"quitx\r\nlist-tube-used\r\n",
        b"use c7\r\nwatch c7\r\nput 0 0 60 7\r\n\r\n\0\r\n\r\n\r\nreserve\r\nput 0 0 60 0\r\n\r\npeek 11\r\n",
        b"use c8\r\nput 4294967295 0 4294967295 1\r\nm\r\npeek 12\r\nput 0 0 60 1\r\nm\r\nreserve-job 013\r\ndelete  13\r\n",
    ]
    .iter()
    .map(|c| c.to_vec())
    .collect();
    // Odd lines (the grammar).
    for line in [
        &b"PUT 0 0 0 1"[..],
        b"",
        b"reservex",
        b"reserve ",
        b"reserve-with-timeout",
        b"reserve-job",
        b"reserve-job 1 2",
        b"stats-foo",
        b"stats ",
        b"stats-job",
        b"stats-job ",
        b"stats-job 1 ",
        b"stats-tube",
        b"stats-tube  default",
        b"stats-tube -x",
        b"delete",
        b"delete\t1",
        b"delete \t1",
        b"delete 1\t",
        b"delete 1 x",
        b"delete 1 ",
        b"delete -1",
        b"delete +1",
        b"delete 0x10",
        b"delete 18446744073709551615",
        b"delete 18446744073709551616",
        b"peek",
        b"peek 18446744073709551616",
        b"peek-readyx",
        b"put",
        b"put ",
        b"put 0",
        b"put 1 0 0 4294967296",
        b"put 0 0 0 -1",
        b"use",
        b"use ",
        b"use -a",
        b"use a b",
        b"use  foo",
        b"use foo ",
        b"use a*b",
        b"use $_();.+/-",
        b"watch  ",
        b"watch -a",
        b"ignore x y",
        b"list-tubes x",
        b"list-tubesx",
        b"list-tube-usedx",
        b"list-tubes-watchedx",
        b"kick",
        b"kick 0",
        b"kick-job",
        b"touch",
        b"release 1 2",
        b"release 1 2 4294967296",
        b"release 1 -2 3",
        b"bury 1",
        b"pause-tube",
        b"pause-tubex",
        b"pause-tube ",
        b"pause-tube default",
        b"pause-tube default 1 2",
        b"pause-tube default 1 ",
        b"pause-tube default 4294967296",
        b"pause-tube default -1",
        b"pause-tube -x 1",
        b"pause-tube a*b 1",
        b"pause-tube default  0",
        b"pause-tube  default 0",
        b"pause-tubedefault 0",
    ] {
        let mut l = line.to_vec();
        l.extend(b"\r\n");
        v.push(l);
    }
    // Line and body limits.
    for len in [223usize, 224, 226, 300, 5000] {
        let mut l = b"delete ".to_vec();
        l.extend(vec![b'0'; len - 10]);
        l.extend(b"1\r\nlist-tube-used\r\n");
        v.push(l);
    }
    let mut l = b"use ".to_vec();
    l.extend(vec![b'a'; 200]);
    l.extend(b"\r\nuse ");
    l.extend(vec![b'a'; 201]);
    l.extend(b"\r\n");
    v.push(l);
    let mut big = b"use c9\r\nput 0 0 60 65536\r\n".to_vec();
    big.extend(vec![b'b'; 65536]);
    big.extend(b"\r\nput 0 0 60 65535\r\n");
    big.extend(vec![b'b'; 65535]);
    big.extend(b"\r\npeek-ready\r\n");
    v.push(big);
    // Last: beanstalkd spends a job id on an EXPECTED_CRLF put, yaad does not.
    v.push(
        b"put 0 0 0 1\r\nxyz\r\nput 0 0 0 1 x\r\nx\r\nput 0 0 0 3\r\nabcxxlist-tube-used\r\n"
            .to_vec(),
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_replies_as_beanstalkd() {
    let Some(bs) = start_beanstalkd() else {
        return;
    };
    let yaad = server_util::start(Mode::Mem).await;
    let (b_addr, y_addr) = (bs.1, yaad.addr);
    tokio::task::spawn_blocking(move || {
        for (i, script) in cases().iter().enumerate() {
            let want = replies(b_addr, script);
            if std::env::var_os("DIFF_SHOW").is_some() {
                eprintln!(
                    "{i}: {:?}",
                    String::from_utf8_lossy(&want[..want.len().min(300)])
                );
            }
            let got = replies(y_addr, script);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "case {i}: {:?}",
                String::from_utf8_lossy(&script[..script.len().min(200)])
            );
        }
    })
    .await
    .unwrap();
}
