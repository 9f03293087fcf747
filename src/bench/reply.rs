//! The few server replies yaad-bench understands, decoded from a byte buffer.
//!
//! This is the load generator's own decoder, deliberately apart from [`crate::protocol`] (the
//! server's): the generator must judge any beanstalkd-protocol server, yaad included, and keeps
//! its per-reply cost small. Replies are decoded in place; ranges point into the caller's buffer.

use std::ops::Range;

/// Longest reply line accepted before the stream is declared out of step.
pub const MAX_LINE: usize = 1024;

/// Largest body accepted in a `RESERVED` reply (1 GiB, far above any server's job size limit).
pub const MAX_BODY: u64 = 1 << 30;

/// One reply. Ranges are offsets into the buffer handed to [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `INSERTED <id>`
    Inserted(u64),
    /// `RESERVED <id> <bytes>` followed by the body.
    Reserved { id: u64, body: Range<usize> },
    /// `DELETED`
    Deleted,
    /// `TIMED_OUT`
    TimedOut,
    /// `DEADLINE_SOON`
    DeadlineSoon,
    /// `USING <tube>`
    Using,
    /// `WATCHING <count>`
    Watching(u64),
    /// Any other line (`NOT_FOUND`, `OUT_OF_MEMORY`, `BURIED <id>`, ...), without its CRLF.
    Other { line: Range<usize> },
}

/// The byte stream cannot be a sequence of replies any more; the connection is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// No CRLF within [`MAX_LINE`] bytes.
    LineTooLong,
    /// A line ended in a bare LF.
    BareLf,
    /// `RESERVED` with bad numbers, or a body not followed by CRLF.
    BadReserved,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Malformed::LineTooLong => "reply line longer than 1024 bytes",
            Malformed::BareLf => "reply line ended without CR",
            Malformed::BadReserved => "malformed RESERVED reply",
        })
    }
}

/// Decodes the first reply in `buf`: `Ok(None)` when more bytes are needed, otherwise the reply
/// and the number of bytes it occupies.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    let Some(lf) = buf.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE {
            Err(Malformed::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(Malformed::BareLf);
    }
    let line = &buf[..lf - 1];
    let after_line = lf + 1;
    let reply = if let Some(rest) = line.strip_prefix(b"RESERVED ") {
        let mut parts = rest.split(|&b| b == b' ');
        let (Some(id), Some(len), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Malformed::BadReserved);
        };
        let (Some(id), Some(len)) = (number(id), number(len)) else {
            return Err(Malformed::BadReserved);
        };
        if len > MAX_BODY {
            return Err(Malformed::BadReserved);
        }
        let len = usize::try_from(len).map_err(|_| Malformed::BadReserved)?;
        let end = after_line.checked_add(len).ok_or(Malformed::BadReserved)?;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(Malformed::BadReserved);
        }
        return Ok(Some((
            Reply::Reserved {
                id,
                body: after_line..end,
            },
            end + 2,
        )));
    } else if let Some(id) = line.strip_prefix(b"INSERTED ").and_then(number) {
        Reply::Inserted(id)
    } else if line == b"DELETED" {
        Reply::Deleted
    } else if line == b"TIMED_OUT" {
        Reply::TimedOut
    } else if line == b"DEADLINE_SOON" {
        Reply::DeadlineSoon
    } else if line.starts_with(b"USING ") {
        Reply::Using
    } else if let Some(n) = line.strip_prefix(b"WATCHING ").and_then(number) {
        Reply::Watching(n)
    } else {
        Reply::Other { line: 0..lf - 1 }
    };
    Ok(Some((reply, after_line)))
}

/// A decimal u64 of 1–20 digits and nothing else.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_lines() {
        assert_eq!(
            parse(b"INSERTED 42\r\nDELETED\r\n"),
            Ok(Some((Reply::Inserted(42), 13)))
        );
        assert_eq!(parse(b"DELETED\r\n"), Ok(Some((Reply::Deleted, 9))));
        assert_eq!(parse(b"TIMED_OUT\r\n"), Ok(Some((Reply::TimedOut, 11))));
        assert_eq!(
            parse(b"DEADLINE_SOON\r\n"),
            Ok(Some((Reply::DeadlineSoon, 15)))
        );
        assert_eq!(parse(b"USING foo\r\n"), Ok(Some((Reply::Using, 11))));
        assert_eq!(parse(b"WATCHING 2\r\n"), Ok(Some((Reply::Watching(2), 12))));
    }

    #[test]
    fn other_lines_keep_their_text() {
        let buf = b"NOT_FOUND\r\n";
        assert_eq!(parse(buf), Ok(Some((Reply::Other { line: 0..9 }, 11))));
        // An INSERTED without a valid id is not an insert.
        let buf = b"INSERTED x\r\n";
        assert_eq!(parse(buf), Ok(Some((Reply::Other { line: 0..10 }, 12))));
        let buf = b"INSERTED 99999999999999999999999\r\n";
        assert!(matches!(parse(buf), Ok(Some((Reply::Other { .. }, _)))));
    }

    #[test]
    fn reserved_with_body() {
        let buf = b"RESERVED 7 5\r\nhello\r\nDELETED\r\n";
        assert_eq!(
            parse(buf),
            Ok(Some((
                Reply::Reserved {
                    id: 7,
                    body: 14..19
                },
                21
            )))
        );
        // A body containing CRLF is taken by length, not by line.
        let buf = b"RESERVED 8 4\r\na\r\nb\r\n";
        assert_eq!(
            parse(buf),
            Ok(Some((
                Reply::Reserved {
                    id: 8,
                    body: 14..18
                },
                20
            )))
        );
        let buf = b"RESERVED 9 0\r\n\r\n";
        assert_eq!(
            parse(buf),
            Ok(Some((
                Reply::Reserved {
                    id: 9,
                    body: 14..14
                },
                16
            )))
        );
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete() {
        let full = b"RESERVED 7 5\r\nhello\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let full = b"INSERTED 12\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_streams() {
        assert_eq!(parse(b"DELETED\n"), Err(Malformed::BareLf));
        assert_eq!(parse(b"\n"), Err(Malformed::BareLf));
        assert_eq!(parse(&[b'x'; MAX_LINE]), Err(Malformed::LineTooLong));
        assert_eq!(parse(&[b'x'; MAX_LINE - 1]), Ok(None));
        assert_eq!(
            parse(b"RESERVED 7 5\r\nhelloXX"),
            Err(Malformed::BadReserved)
        );
        assert_eq!(parse(b"RESERVED 7\r\n"), Err(Malformed::BadReserved));
        assert_eq!(parse(b"RESERVED 7 5 1\r\n"), Err(Malformed::BadReserved));
        assert_eq!(parse(b"RESERVED a 5\r\n"), Err(Malformed::BadReserved));
        assert_eq!(
            parse(b"RESERVED 1 18446744073709551615\r\n"),
            Err(Malformed::BadReserved)
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0"), Some(0));
        assert_eq!(number(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(number(b"18446744073709551616"), None);
        assert_eq!(number(b""), None);
        assert_eq!(number(b"-1"), None);
        assert_eq!(number(b"1 "), None);
    }
}
