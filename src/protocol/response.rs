//! Replies, encoded byte for byte as beanstalkd 1.12 sends them.

use bytes::Bytes;

/// A reply to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `INSERTED <id>`
    Inserted(u64),
    /// `EXISTS <id>`: `put-named` found a live job of the tube with that name (unchanged).
    Exists(u64),
    /// `REPLACED <id>`: `put-replace` gave the job with that name the new body, priority,
    /// delay and TTR.
    Replaced(u64),
    /// `BUSY <id>`: `put-replace` found the job with that name reserved (unchanged).
    Busy(u64),
    /// `BURIED <id>`: a put that could not be queued (beanstalkd: out of memory growing a heap).
    InsertedBuried(u64),
    /// `RESERVED <id> <bytes>` + body
    Reserved {
        id: u64,
        body: Bytes,
    },
    /// `FOUND <id> <bytes>` + body
    Found {
        id: u64,
        body: Bytes,
    },
    /// `DELETED`
    Deleted,
    /// `RELEASED`
    Released,
    /// `BURIED`
    Buried,
    /// `TOUCHED`
    Touched,
    /// `WATCHING <count>`
    Watching(usize),
    /// `USING <tube>`
    Using(String),
    /// `KICKED <count>` (kick)
    Kicked(u64),
    /// `KICKED` (kick-job)
    KickedJob,
    /// `PAUSED`
    Paused,
    /// `OK <bytes>` + a YAML body (stats, list-tubes...)
    Ok(Vec<u8>),
    NotFound,
    NotIgnored,
    TimedOut,
    DeadlineSoon,
    Draining,
    OutOfMemory,
    InternalError,
    BadFormat,
    UnknownCommand,
    ExpectedCrlf,
    JobTooBig,
}

impl Response {
    /// Appends the reply's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Numbers through itoa: `write!` through `fmt` cost more than the rest of a reply.
        let mut line = |word: &[u8], n: u64| {
            out.extend_from_slice(word);
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Response::Inserted(id) => line(b"INSERTED ", *id),
            Response::InsertedBuried(id) => line(b"BURIED ", *id),
            Response::Exists(id) => line(b"EXISTS ", *id),
            Response::Replaced(id) => line(b"REPLACED ", *id),
            Response::Busy(id) => line(b"BUSY ", *id),
            Response::Reserved { id, body } => Self::with_body(out, b"RESERVED ", Some(*id), body),
            Response::Found { id, body } => Self::with_body(out, b"FOUND ", Some(*id), body),
            Response::Watching(n) => line(b"WATCHING ", *n as u64),
            Response::Using(t) => {
                out.extend_from_slice(b"USING ");
                out.extend_from_slice(t.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Response::Kicked(n) => line(b"KICKED ", *n),
            Response::Ok(body) => Self::with_body(out, b"OK ", None, body),
            other => {
                out.extend_from_slice(other.fixed_text());
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// `<word>[<id> ]<len>\r\n<body>\r\n`.
    fn with_body(out: &mut Vec<u8>, word: &[u8], id: Option<u64>, body: &[u8]) {
        out.reserve(word.len() + 2 * 20 + 4 + body.len());
        out.extend_from_slice(word);
        if let Some(id) = id {
            push_decimal(out, id);
            out.push(b' ');
        }
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }

    /// The bytes of an encoded reply (convenience for tests and one-off writes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// The text of a reply without arguments (empty for the others, which `encode` handles).
    fn fixed_text(&self) -> &'static [u8] {
        match self {
            Response::Deleted => b"DELETED",
            Response::Released => b"RELEASED",
            Response::Buried => b"BURIED",
            Response::Touched => b"TOUCHED",
            Response::KickedJob => b"KICKED",
            Response::Paused => b"PAUSED",
            Response::NotFound => b"NOT_FOUND",
            Response::NotIgnored => b"NOT_IGNORED",
            Response::TimedOut => b"TIMED_OUT",
            Response::DeadlineSoon => b"DEADLINE_SOON",
            Response::Draining => b"DRAINING",
            Response::OutOfMemory => b"OUT_OF_MEMORY",
            Response::InternalError => b"INTERNAL_ERROR",
            Response::BadFormat => b"BAD_FORMAT",
            Response::UnknownCommand => b"UNKNOWN_COMMAND",
            Response::ExpectedCrlf => b"EXPECTED_CRLF",
            Response::JobTooBig => b"JOB_TOO_BIG",
            Response::Inserted(_)
            | Response::Exists(_)
            | Response::Replaced(_)
            | Response::Busy(_)
            | Response::InsertedBuried(_)
            | Response::Reserved { .. }
            | Response::Found { .. }
            | Response::Watching(_)
            | Response::Using(_)
            | Response::Kicked(_)
            | Response::Ok(_) => b"",
        }
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_decimal() {
        for n in [0, 7, 10, 99, 100, 4096, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(
                Response::Inserted(n).to_bytes(),
                format!("INSERTED {n}\r\n").into_bytes()
            );
            assert_eq!(
                Response::Kicked(n).to_bytes(),
                format!("KICKED {n}\r\n").into_bytes()
            );
        }
    }

    #[test]
    fn every_reply_encodes_as_beanstalkd() {
        let cases: Vec<(Response, &[u8])> = vec![
            (Response::Inserted(12), b"INSERTED 12\r\n"),
            (Response::InsertedBuried(3), b"BURIED 3\r\n"),
            (
                Response::Reserved {
                    id: 3,
                    body: Bytes::from_static(b"a\r\n\0"),
                },
                b"RESERVED 3 4\r\na\r\n\0\r\n",
            ),
            (
                Response::Found {
                    id: 5,
                    body: Bytes::new(),
                },
                b"FOUND 5 0\r\n\r\n",
            ),
            (Response::Deleted, b"DELETED\r\n"),
            (Response::Released, b"RELEASED\r\n"),
            (Response::Buried, b"BURIED\r\n"),
            (Response::Touched, b"TOUCHED\r\n"),
            (Response::Watching(2), b"WATCHING 2\r\n"),
            (Response::Using("foo".into()), b"USING foo\r\n"),
            (Response::Kicked(1), b"KICKED 1\r\n"),
            (Response::KickedJob, b"KICKED\r\n"),
            (Response::Paused, b"PAUSED\r\n"),
            (
                Response::Ok(b"---\n- default\n".to_vec()),
                b"OK 14\r\n---\n- default\n\r\n",
            ),
            (Response::NotFound, b"NOT_FOUND\r\n"),
            (Response::NotIgnored, b"NOT_IGNORED\r\n"),
            (Response::TimedOut, b"TIMED_OUT\r\n"),
            (Response::DeadlineSoon, b"DEADLINE_SOON\r\n"),
            (Response::Draining, b"DRAINING\r\n"),
            (Response::OutOfMemory, b"OUT_OF_MEMORY\r\n"),
            (Response::InternalError, b"INTERNAL_ERROR\r\n"),
            (Response::BadFormat, b"BAD_FORMAT\r\n"),
            (Response::UnknownCommand, b"UNKNOWN_COMMAND\r\n"),
            (Response::ExpectedCrlf, b"EXPECTED_CRLF\r\n"),
            (Response::JobTooBig, b"JOB_TOO_BIG\r\n"),
        ];
        for (r, want) in cases {
            assert_eq!(r.to_bytes(), want, "{r:?}");
        }
    }

    #[test]
    fn encode_appends() {
        let mut out = b"x".to_vec();
        Response::Deleted.encode(&mut out);
        Response::Inserted(1).encode(&mut out);
        assert_eq!(out, b"xDELETED\r\nINSERTED 1\r\n");
    }
}
