//! Command decoding: command lines, `put` bodies, and the discard states beanstalkd keeps.

use bytes::{Buf, Bytes, BytesMut};

use super::Response;

/// Longest command line accepted, CRLF included (beanstalkd's `LINE_BUF_SIZE`).
pub const MAX_LINE_LEN: usize = 224;

/// Longest tube name, in bytes.
pub const MAX_TUBE_NAME_LEN: usize = 200;

/// Longest job name, in bytes (job names have the tube names' charset).
pub const MAX_JOB_NAME_LEN: usize = MAX_TUBE_NAME_LEN;

/// Longest `put-named` / `put-replace` line, CRLF included: a `put` line's room plus a name.
pub const MAX_NAMED_LINE_LEN: usize = MAX_LINE_LEN + MAX_JOB_NAME_LEN;

/// The commands whose lines may be up to [`MAX_NAMED_LINE_LEN`] long.
const LONG_LINE_PREFIXES: [&[u8]; 2] = [b"put-named ", b"put-replace "];

/// A decoded client command. Tube names are validated ([`valid_tube_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        pri: u32,
        delay: u32,
        ttr: u32,
        body: Bytes,
    },
    /// `put-named <name> …` (`replace` false) and `put-replace <name> …` (true).
    PutNamed {
        name: String,
        replace: bool,
        pri: u32,
        delay: u32,
        ttr: u32,
        body: Bytes,
    },
    DeleteName(String),
    PeekName(String),
    KickName(String),
    TouchName(String),
    Use(String),
    Reserve,
    ReserveWithTimeout(u32),
    ReserveJob(u64),
    Delete(u64),
    Release {
        id: u64,
        pri: u32,
        delay: u32,
    },
    Bury {
        id: u64,
        pri: u32,
    },
    Touch(u64),
    Watch(String),
    Ignore(String),
    Peek(u64),
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Kick(u32),
    KickJob(u64),
    StatsJob(u64),
    StatsTube(String),
    Stats,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube {
        tube: String,
        delay: u32,
    },
    Quit,
}

/// Whether `name` is a legal tube name: 1–200 bytes of `A-Za-z0-9-+/;.$_()`, not starting
/// with `-`.
pub fn valid_tube_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TUBE_NAME_LEN
        && name[0] != b'-'
        && name.iter().all(|&b| is_name_char(b))
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b)
}

/// Where the decoder is in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a command line.
    Line,
    /// A line was too long: drop bytes up to and including the next CRLF.
    DiscardLine,
    /// After a `put` line: expecting `len` body bytes and CRLF.
    Body {
        pri: u32,
        delay: u32,
        ttr: u32,
        len: usize,
    },
    /// After a too-big `put`: drop this many more bytes (body + CRLF).
    DiscardBody { remaining: u64 },
}

/// Turns a byte stream into commands; one per connection.
#[derive(Debug)]
pub struct Decoder {
    max_job_size: u32,
    state: State,
    /// While in [`State::Body`] of a `put-named` or `put-replace`: the name and whether it
    /// replaces.
    named: Option<(String, bool)>,
}

impl Decoder {
    /// A decoder accepting `put` bodies of at most `max_job_size` bytes.
    pub fn new(max_job_size: u32) -> Self {
        Decoder {
            max_job_size,
            state: State::Line,
            named: None,
        }
    }

    /// Consumes the next command (or malformed input) from the front of `buf`.
    ///
    /// `None`: more bytes are needed (bytes that can never matter, such as a discarded body,
    /// are consumed anyway). `Some(Ok(cmd))`: a command. `Some(Err(resp))`: the input was
    /// malformed; send `resp` and call again, the connection goes on.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Result<Command, Response>> {
        loop {
            match self.state {
                State::Line => {
                    let max = line_limit(buf);
                    let window = &buf[..buf.len().min(max)];
                    match find_crlf(window) {
                        Some(end) => {
                            let parsed = self.parse_line(&buf[..end]);
                            buf.advance(end + 2);
                            match parsed {
                                Ok(Some(cmd)) => return Some(Ok(cmd)),
                                Err(resp) => return Some(Err(resp)),
                                // A put line: its body follows.
                                Ok(None) => continue,
                            }
                        }
                        None if buf.len() >= max => {
                            self.state = State::DiscardLine;
                            return Some(Err(Response::BadFormat));
                        }
                        None => return None,
                    }
                }
                State::DiscardLine => match find_crlf(buf) {
                    Some(end) => {
                        buf.advance(end + 2);
                        self.state = State::Line;
                    }
                    None => {
                        // Keep a trailing CR: it may start the CRLF that ends the line.
                        let keep = usize::from(buf.last() == Some(&b'\r'));
                        buf.advance(buf.len() - keep);
                        return None;
                    }
                },
                State::Body {
                    pri,
                    delay,
                    ttr,
                    len,
                } => {
                    if buf.len() < len + 2 {
                        buf.reserve(len + 2 - buf.len());
                        return None;
                    }
                    let crlf = &buf[len..len + 2] == b"\r\n";
                    let body = buf.split_to(len).freeze();
                    buf.advance(2);
                    self.state = State::Line;
                    let named = self.named.take();
                    if !crlf {
                        return Some(Err(Response::ExpectedCrlf));
                    }
                    if let Some((name, replace)) = named {
                        return Some(Ok(Command::PutNamed {
                            name,
                            replace,
                            pri,
                            delay,
                            ttr,
                            body,
                        }));
                    }
                    return Some(Ok(Command::Put {
                        pri,
                        delay,
                        ttr,
                        body,
                    }));
                }
                State::DiscardBody { remaining } => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    buf.advance(n);
                    // n <= remaining: it was taken as the minimum with remaining.
                    let left = remaining - n as u64;
                    if left > 0 {
                        self.state = State::DiscardBody { remaining: left };
                        return None;
                    }
                    self.state = State::Line;
                }
            }
        }
    }

    /// Parses one command line (without its CRLF). `Ok(None)`: a `put` line, whose body the
    /// decoder now expects.
    fn parse_line(&mut self, line: &[u8]) -> Result<Option<Command>, Response> {
        let (name, rest) = match_name(line).ok_or(Response::UnknownCommand)?;
        let mut args = Args(rest);
        let cmd = match name {
            Name::Put | Name::PutNamed | Name::PutReplace => {
                let named = match name {
                    Name::Put => None,
                    _ => Some((args.tube_word()?, name == Name::PutReplace)),
                };
                let pri = args.num()?;
                let delay = args.num()?;
                let ttr = args.num()?;
                let bytes: u32 = args.num()?;
                args.end()?;
                if bytes > self.max_job_size {
                    self.state = State::DiscardBody {
                        remaining: u64::from(bytes) + 2,
                    };
                    return Err(Response::JobTooBig);
                }
                // u32 always fits in usize on the platforms yaad builds for (32/64-bit).
                let len = usize::try_from(bytes).map_err(|_| Response::JobTooBig)?;
                self.named = named;
                self.state = State::Body {
                    pri,
                    delay,
                    ttr,
                    len,
                };
                return Ok(None);
            }
            Name::DeleteNamed => Command::DeleteName(args.whole_tube()?),
            Name::PeekNamed => Command::PeekName(args.whole_tube()?),
            Name::KickNamed => Command::KickName(args.whole_tube()?),
            Name::TouchNamed => Command::TouchName(args.whole_tube()?),
            Name::Peek => Command::Peek(args.last_num()?),
            Name::PeekReady => args.none(Command::PeekReady)?,
            Name::PeekDelayed => args.none(Command::PeekDelayed)?,
            Name::PeekBuried => args.none(Command::PeekBuried)?,
            Name::ReserveWithTimeout => Command::ReserveWithTimeout(args.last_num()?),
            Name::ReserveJob => Command::ReserveJob(args.last_num()?),
            Name::Reserve => args.none(Command::Reserve)?,
            Name::Delete => Command::Delete(args.last_num()?),
            Name::Release => {
                let id = args.num()?;
                let pri = args.num()?;
                let delay = args.last_num()?;
                Command::Release { id, pri, delay }
            }
            Name::Bury => {
                let id = args.num()?;
                let pri = args.last_num()?;
                Command::Bury { id, pri }
            }
            Name::Kick => Command::Kick(args.last_num()?),
            Name::KickJob => Command::KickJob(args.last_num()?),
            Name::Touch => Command::Touch(args.last_num()?),
            Name::StatsJob => Command::StatsJob(args.last_num()?),
            Name::StatsTube => Command::StatsTube(args.whole_tube()?),
            Name::Stats => args.none(Command::Stats)?,
            Name::Use => Command::Use(args.whole_tube()?),
            Name::Watch => Command::Watch(args.whole_tube()?),
            Name::Ignore => Command::Ignore(args.whole_tube()?),
            Name::ListTubesWatched => args.none(Command::ListTubesWatched)?,
            Name::ListTubeUsed => args.none(Command::ListTubeUsed)?,
            Name::ListTubes => args.none(Command::ListTubes)?,
            Name::Quit => Command::Quit,
            Name::PauseTube => {
                let tube = args.tube_word()?;
                let delay = args.last_num()?;
                Command::PauseTube { tube, delay }
            }
        };
        Ok(Some(cmd))
    }
}

/// The longest line the command at the front of `buf` may have, CRLF included.
fn line_limit(buf: &[u8]) -> usize {
    if LONG_LINE_PREFIXES.iter().any(|p| buf.starts_with(p)) {
        MAX_NAMED_LINE_LEN
    } else {
        MAX_LINE_LEN
    }
}

/// Index of the first CRLF in `s`.
fn find_crlf(s: &[u8]) -> Option<usize> {
    // The first LF preceded by a CR ends the first CRLF; a lone LF or CR is line content.
    let mut from = 1;
    while let Some(i) = s.get(from..)?.iter().position(|&b| b == b'\n') {
        let lf = from + i;
        if s[lf - 1] == b'\r' {
            return Some(lf - 1);
        }
        from = lf + 1;
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name {
    Put,
    PutNamed,
    PutReplace,
    DeleteNamed,
    PeekNamed,
    KickNamed,
    TouchNamed,
    Peek,
    PeekReady,
    PeekDelayed,
    PeekBuried,
    ReserveWithTimeout,
    ReserveJob,
    Reserve,
    Delete,
    Release,
    Bury,
    Kick,
    KickJob,
    Touch,
    StatsJob,
    StatsTube,
    Stats,
    Use,
    Watch,
    Ignore,
    ListTubesWatched,
    ListTubeUsed,
    ListTubes,
    Quit,
    PauseTube,
}

/// Command prefixes in the order beanstalkd 1.12 tries them. A prefix ending in a space takes
/// arguments; the others must match the whole line (except `quit`, which ignores the rest).
/// yaad's own commands (named jobs) come last: no beanstalkd name is a prefix of theirs.
const NAMES: [(&[u8], Name); 31] = [
    (b"put ", Name::Put),
    (b"peek ", Name::Peek),
    (b"peek-ready", Name::PeekReady),
    (b"peek-delayed", Name::PeekDelayed),
    (b"peek-buried", Name::PeekBuried),
    (b"reserve-with-timeout ", Name::ReserveWithTimeout),
    (b"reserve-job ", Name::ReserveJob),
    (b"reserve", Name::Reserve),
    (b"delete ", Name::Delete),
    (b"release ", Name::Release),
    (b"bury ", Name::Bury),
    (b"kick ", Name::Kick),
    (b"kick-job ", Name::KickJob),
    (b"touch ", Name::Touch),
    (b"stats-job ", Name::StatsJob),
    (b"stats-tube ", Name::StatsTube),
    (b"stats", Name::Stats),
    (b"use ", Name::Use),
    (b"watch ", Name::Watch),
    (b"ignore ", Name::Ignore),
    (b"list-tubes-watched", Name::ListTubesWatched),
    (b"list-tube-used", Name::ListTubeUsed),
    (b"list-tubes", Name::ListTubes),
    (b"quit", Name::Quit),
    (b"pause-tube", Name::PauseTube),
    (b"put-named ", Name::PutNamed),
    (b"put-replace ", Name::PutReplace),
    (b"delete-name ", Name::DeleteNamed),
    (b"peek-name ", Name::PeekNamed),
    (b"kick-name ", Name::KickNamed),
    (b"touch-name ", Name::TouchNamed),
];

fn match_name(line: &[u8]) -> Option<(Name, &[u8])> {
    NAMES
        .iter()
        .find(|(p, _)| line.starts_with(p))
        .map(|&(p, n)| (n, &line[p.len()..]))
}

/// The arguments after a command name.
struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn skip_spaces(&mut self) {
        let n = self.0.iter().take_while(|&&b| b == b' ').count();
        self.0 = &self.0[n..];
    }

    /// An unsigned decimal number after optional spaces; out of range → `BAD_FORMAT`.
    fn num<T: TryFrom<u64>>(&mut self) -> Result<T, Response> {
        self.skip_spaces();
        let mut v: u64 = 0;
        let mut digits = 0;
        for &d in self.0 {
            if !d.is_ascii_digit() {
                break;
            }
            let Some(next) = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
            else {
                return Err(Response::BadFormat);
            };
            v = next;
            digits += 1;
        }
        if digits == 0 {
            return Err(Response::BadFormat);
        }
        self.0 = &self.0[digits..];
        T::try_from(v).map_err(|_| Response::BadFormat)
    }

    /// A number that must end the line.
    fn last_num<T: TryFrom<u64>>(&mut self) -> Result<T, Response> {
        let v = self.num()?;
        self.end()?;
        Ok(v)
    }

    fn end(&self) -> Result<(), Response> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Response::BadFormat)
        }
    }

    /// A command without arguments: nothing may follow its name.
    fn none(&self, cmd: Command) -> Result<Command, Response> {
        self.end()?;
        Ok(cmd)
    }

    /// The whole rest of the line as a tube name (`use`, `watch`, `ignore`, `stats-tube`).
    fn whole_tube(&self) -> Result<String, Response> {
        tube_string(self.0)
    }

    /// A tube name after optional spaces, up to the first byte outside the name set
    /// (`pause-tube`).
    fn tube_word(&mut self) -> Result<String, Response> {
        self.skip_spaces();
        let n = self.0.iter().take_while(|&&b| is_name_char(b)).count();
        let name = tube_string(&self.0[..n])?;
        self.0 = &self.0[n..];
        Ok(name)
    }
}

fn tube_string(name: &[u8]) -> Result<String, Response> {
    if !valid_tube_name(name) {
        return Err(Response::BadFormat);
    }
    // Valid names are ASCII, hence UTF-8.
    String::from_utf8(name.to_vec()).map_err(|_| Response::BadFormat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_crlf_finds_the_first_crlf_in_every_short_string() {
        // Every string of up to 7 bytes over {a, CR, LF}, against the plain definition.
        let alphabet = [b'a', b'\r', b'\n'];
        for len in 0..=7u32 {
            for mut code in 0..3usize.pow(len) {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = alphabet[code % 3];
                        code /= 3;
                        b
                    })
                    .collect();
                let want = s.windows(2).position(|w| w == b"\r\n");
                assert_eq!(find_crlf(&s), want, "{s:?}");
            }
        }
    }

    fn decode_all(d: &mut Decoder, input: &[u8]) -> Vec<Result<Command, Response>> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = d.decode(&mut buf) {
            out.push(r);
        }
        out
    }

    fn one(input: &[u8]) -> Result<Command, Response> {
        let mut d = Decoder::new(65535);
        let mut v = decode_all(&mut d, input);
        assert_eq!(
            v.len(),
            1,
            "{:?} gave {v:?}",
            String::from_utf8_lossy(input)
        );
        v.remove(0)
    }

    use Response::{BadFormat, ExpectedCrlf, JobTooBig, UnknownCommand};

    #[test]
    fn every_command_decodes() {
        let cases: Vec<(&[u8], Command)> = vec![
            (
                b"put 1 2 3 4\r\nab\0d\r\n",
                Command::Put {
                    pri: 1,
                    delay: 2,
                    ttr: 3,
                    body: Bytes::from_static(b"ab\0d"),
                },
            ),
            (b"use foo\r\n", Command::Use("foo".into())),
            (b"reserve\r\n", Command::Reserve),
            (
                b"reserve-with-timeout 5\r\n",
                Command::ReserveWithTimeout(5),
            ),
            (b"reserve-job 7\r\n", Command::ReserveJob(7)),
            (b"delete 9\r\n", Command::Delete(9)),
            (
                b"release 1 2 3\r\n",
                Command::Release {
                    id: 1,
                    pri: 2,
                    delay: 3,
                },
            ),
            (b"bury 1 2\r\n", Command::Bury { id: 1, pri: 2 }),
            (b"touch 4\r\n", Command::Touch(4)),
            (b"watch a\r\n", Command::Watch("a".into())),
            (b"ignore a\r\n", Command::Ignore("a".into())),
            (b"peek 3\r\n", Command::Peek(3)),
            (b"peek-ready\r\n", Command::PeekReady),
            (b"peek-delayed\r\n", Command::PeekDelayed),
            (b"peek-buried\r\n", Command::PeekBuried),
            (b"kick 10\r\n", Command::Kick(10)),
            (b"kick-job 10\r\n", Command::KickJob(10)),
            (b"stats-job 2\r\n", Command::StatsJob(2)),
            (b"stats-tube t\r\n", Command::StatsTube("t".into())),
            (b"stats\r\n", Command::Stats),
            (b"list-tubes\r\n", Command::ListTubes),
            (b"list-tube-used\r\n", Command::ListTubeUsed),
            (b"list-tubes-watched\r\n", Command::ListTubesWatched),
            (
                b"pause-tube t 30\r\n",
                Command::PauseTube {
                    tube: "t".into(),
                    delay: 30,
                },
            ),
            (b"quit\r\n", Command::Quit),
        ];
        for (input, cmd) in cases {
            assert_eq!(one(input), Ok(cmd), "{}", String::from_utf8_lossy(input));
        }
    }

    /// Each case checked against beanstalkd 1.12 on loopback.
    #[test]
    fn odd_lines_answer_as_beanstalkd() {
        let cases: Vec<(&[u8], Result<Command, Response>)> = vec![
            (b"\r\n", Err(UnknownCommand)),
            (b"PUT 0 0 0 1\r\n", Err(UnknownCommand)),
            (b"reservex\r\n", Err(BadFormat)),
            (b"reserve \r\n", Err(BadFormat)),
            (b"reserve-with-timeout\r\n", Err(BadFormat)),
            (b"reserve-job\r\n", Err(BadFormat)),
            (b"reserve-job 1 2\r\n", Err(BadFormat)),
            (b"stats-foo\r\n", Err(BadFormat)),
            (b"stats \r\n", Err(BadFormat)),
            (b"stats-job\r\n", Err(BadFormat)),
            (b"stats-job \r\n", Err(BadFormat)),
            (b"stats-job 1 \r\n", Err(BadFormat)),
            (b"stats-tube\r\n", Err(BadFormat)),
            (b"stats-tube  default\r\n", Err(BadFormat)),
            (b"stats-tube -x\r\n", Err(BadFormat)),
            (b"delete\r\n", Err(UnknownCommand)),
            (b"delete\t1\r\n", Err(UnknownCommand)),
            (b"delete \t1\r\n", Err(BadFormat)),
            (b"delete 1\t\r\n", Err(BadFormat)),
            (b"delete 1 x\r\n", Err(BadFormat)),
            (b"delete 1 \r\n", Err(BadFormat)),
            (b"delete  1\r\n", Ok(Command::Delete(1))),
            (b"delete 01\r\n", Ok(Command::Delete(1))),
            (b"delete -1\r\n", Err(BadFormat)),
            (b"delete +1\r\n", Err(BadFormat)),
            (b"delete 0x10\r\n", Err(BadFormat)),
            (
                b"delete 18446744073709551615\r\n",
                Ok(Command::Delete(u64::MAX)),
            ),
            (b"delete 18446744073709551616\r\n", Err(BadFormat)),
            (b"peek\r\n", Err(UnknownCommand)),
            (b"peek 18446744073709551616\r\n", Err(BadFormat)),
            (b"peek-readyx\r\n", Err(BadFormat)),
            (b"put\r\n", Err(UnknownCommand)),
            (b"put \r\n", Err(BadFormat)),
            (b"put 0\r\n", Err(BadFormat)),
            (b"put 1 0 0 4294967296\r\n", Err(BadFormat)),
            (b"put 0 0 0 -1\r\n", Err(BadFormat)),
            (b"use\r\n", Err(UnknownCommand)),
            (b"use \r\n", Err(BadFormat)),
            (b"use -a\r\n", Err(BadFormat)),
            (b"use a b\r\n", Err(BadFormat)),
            (b"use  foo\r\n", Err(BadFormat)),
            (b"use foo \r\n", Err(BadFormat)),
            (b"use a*b\r\n", Err(BadFormat)),
            (b"use $_();.+/-\r\n", Ok(Command::Use("$_();.+/-".into()))),
            (b"watch  \r\n", Err(BadFormat)),
            (b"watch -a\r\n", Err(BadFormat)),
            (b"ignore x y\r\n", Err(BadFormat)),
            (b"quitx\r\n", Ok(Command::Quit)),
            (b"quit x\r\n", Ok(Command::Quit)),
            (b"list-tubes x\r\n", Err(BadFormat)),
            (b"list-tubesx\r\n", Err(BadFormat)),
            (b"list-tube-usedx\r\n", Err(BadFormat)),
            (b"list-tubes-watchedx\r\n", Err(BadFormat)),
            (b"kick\r\n", Err(UnknownCommand)),
            (b"kick 0\r\n", Ok(Command::Kick(0))),
            (b"kick  1\r\n", Ok(Command::Kick(1))),
            (b"kick-job\r\n", Err(UnknownCommand)),
            (b"touch\r\n", Err(UnknownCommand)),
            (b"release 1 2\r\n", Err(BadFormat)),
            (b"release 1 2 4294967296\r\n", Err(BadFormat)),
            (b"release 1 -2 3\r\n", Err(BadFormat)),
            (b"bury 1\r\n", Err(BadFormat)),
            (b"pause-tube\r\n", Err(BadFormat)),
            (b"pause-tubex\r\n", Err(BadFormat)),
            (b"pause-tube \r\n", Err(BadFormat)),
            (b"pause-tube default\r\n", Err(BadFormat)),
            (b"pause-tube default 1 2\r\n", Err(BadFormat)),
            (b"pause-tube default 1 \r\n", Err(BadFormat)),
            (b"pause-tube default 4294967296\r\n", Err(BadFormat)),
            (b"pause-tube default -1\r\n", Err(BadFormat)),
            (b"pause-tube -x 1\r\n", Err(BadFormat)),
            (b"pause-tube a*b 1\r\n", Err(BadFormat)),
            (
                b"pause-tube default  1\r\n",
                Ok(Command::PauseTube {
                    tube: "default".into(),
                    delay: 1,
                }),
            ),
            (
                b"pause-tube  default 1\r\n",
                Ok(Command::PauseTube {
                    tube: "default".into(),
                    delay: 1,
                }),
            ),
            (
                b"pause-tubedefault 1\r\n",
                Ok(Command::PauseTube {
                    tube: "default".into(),
                    delay: 1,
                }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(one(input), want, "{}", String::from_utf8_lossy(input));
        }
    }

    /// Deliberate differences from 1.12, which accepts signs and junk in these two numbers.
    #[test]
    fn timeout_and_kick_bound_are_strict_u32() {
        for input in [
            &b"reserve-with-timeout -1\r\n"[..],
            b"reserve-with-timeout \r\n",
            b"reserve-with-timeout 0x\r\n",
            b"reserve-with-timeout 0 \r\n",
            b"reserve-with-timeout 4294967296\r\n",
            b"kick -1\r\n",
            b"kick 1 \r\n",
            b"kick 4294967296\r\n",
        ] {
            assert_eq!(
                one(input),
                Err(BadFormat),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            one(b"reserve-with-timeout 4294967295\r\n"),
            Ok(Command::ReserveWithTimeout(u32::MAX))
        );
    }

    #[test]
    fn u32_limits() {
        assert_eq!(
            one(b"put 4294967295 4294967295 4294967295 0\r\n\r\n"),
            Ok(Command::Put {
                pri: u32::MAX,
                delay: u32::MAX,
                ttr: u32::MAX,
                body: Bytes::new(),
            })
        );
        assert_eq!(one(b"put 4294967296 0 0 0\r\n"), Err(BadFormat));
        assert_eq!(one(b"put 0 4294967296 0 0\r\n"), Err(BadFormat));
        assert_eq!(one(b"put 0 0 4294967296 0\r\n"), Err(BadFormat));
        // An absurdly long number does not overflow anything.
        let mut line = b"delete ".to_vec();
        line.extend(std::iter::repeat_n(b'9', 100));
        line.extend(b"\r\n");
        assert_eq!(one(&line), Err(BadFormat));
    }

    #[test]
    fn tube_names() {
        assert!(valid_tube_name(b"a"));
        assert!(valid_tube_name(&[b'a'; 200]));
        assert!(!valid_tube_name(&[b'a'; 201]));
        assert!(!valid_tube_name(b""));
        assert!(!valid_tube_name(b"-a"));
        assert!(valid_tube_name(b"a-"));
        for b in 0..=255u8 {
            let legal = b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b);
            assert_eq!(valid_tube_name(&[b'x', b]), legal, "byte {b}");
        }
        let mut line = b"use ".to_vec();
        line.extend([b'a'; 200]);
        line.extend(b"\r\n");
        assert_eq!(one(&line), Ok(Command::Use("a".repeat(200))));
        let mut line = b"use ".to_vec();
        line.extend([b'a'; 201]);
        line.extend(b"\r\n");
        assert_eq!(one(&line), Err(BadFormat));
    }

    #[test]
    fn named_commands() {
        let put = |verb: &str, name: &str| {
            let mut l = format!("{verb} {name} 1 2 3 4\r\n").into_bytes();
            l.extend(b"body\r\n");
            l
        };
        for (verb, replace) in [("put-named", false), ("put-replace", true)] {
            assert_eq!(
                one(&put(verb, "order-1")),
                Ok(Command::PutNamed {
                    name: "order-1".into(),
                    replace,
                    pri: 1,
                    delay: 2,
                    ttr: 3,
                    body: Bytes::from_static(b"body"),
                })
            );
            // A bad name, and a name followed by junk: BAD_FORMAT; the body is then a line.
            for bad in ["-x", "a*", "", &"n".repeat(201)] {
                let mut d = Decoder::new(65535);
                assert_eq!(
                    decode_all(&mut d, &put(verb, bad)),
                    vec![Err(BadFormat), Err(UnknownCommand)],
                    "{verb} {bad:?}"
                );
            }
            // The longest name with the widest numbers fits: its line is longer than 224.
            let max = u32::MAX;
            let name = "n".repeat(MAX_JOB_NAME_LEN);
            let mut l = format!("{verb} {name} {max} {max} {max} 0\r\n").into_bytes();
            assert!(l.len() > MAX_LINE_LEN && l.len() <= MAX_NAMED_LINE_LEN);
            l.extend(b"\r\n");
            assert!(matches!(one(&l), Ok(Command::PutNamed { name: n, .. }) if n == name));
            // Incomplete, not malformed, until the longer limit; then BAD_FORMAT.
            let mut d = Decoder::new(65535);
            let mut buf = BytesMut::from(&format!("{verb} {}", "n".repeat(300))[..]);
            assert_eq!(d.decode(&mut buf), None);
            buf.extend(std::iter::repeat_n(b'n', MAX_NAMED_LINE_LEN));
            assert_eq!(d.decode(&mut buf), Some(Err(BadFormat)));
        }
        assert_eq!(
            one(b"delete-name a\r\n"),
            Ok(Command::DeleteName("a".into()))
        );
        assert_eq!(
            one(b"peek-name a.b\r\n"),
            Ok(Command::PeekName("a.b".into()))
        );
        assert_eq!(
            one(b"kick-name (x)\r\n"),
            Ok(Command::KickName("(x)".into()))
        );
        assert_eq!(
            one(b"touch-name $y\r\n"),
            Ok(Command::TouchName("$y".into()))
        );
        for bad in [
            &b"delete-name -a\r\n"[..],
            b"peek-name a b\r\n",
            b"kick-name \r\n",
        ] {
            assert_eq!(
                one(bad),
                Err(BadFormat),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(one(b"touch-name\r\n"), Err(UnknownCommand));
        // Other lines keep beanstalkd's limit.
        let mut l = b"peek-name ".to_vec();
        l.extend([b'n'; 220]);
        l.extend(b"\r\n");
        assert_eq!(one(&l), Err(BadFormat));
    }

    fn delete_line(len: usize) -> Vec<u8> {
        let mut l = b"delete ".to_vec();
        l.extend(std::iter::repeat_n(b'0', len - 10));
        l.extend(b"1\r\n");
        assert_eq!(l.len(), len);
        l
    }

    #[test]
    fn line_length_limit() {
        for len in [223, 224] {
            assert_eq!(one(&delete_line(len)), Ok(Command::Delete(1)));
        }
        for len in [225, 226, 227, 500] {
            let mut input = delete_line(len);
            input.extend(b"stats\r\n");
            let mut d = Decoder::new(65535);
            assert_eq!(
                decode_all(&mut d, &input),
                vec![Err(BadFormat), Ok(Command::Stats)],
                "len {len}"
            );
        }
    }

    #[test]
    fn long_line_discard_across_chunks() {
        // The CR and LF ending the over-long line arrive in different reads.
        let mut d = Decoder::new(65535);
        let mut buf = BytesMut::from(&[b'x'; 300][..]);
        assert_eq!(d.decode(&mut buf), Some(Err(BadFormat)));
        assert_eq!(d.decode(&mut buf), None);
        buf.extend_from_slice(b"yyy\r");
        assert_eq!(d.decode(&mut buf), None);
        assert_eq!(&buf[..], b"\r");
        buf.extend_from_slice(b"\nstats\r\n");
        assert_eq!(d.decode(&mut buf), Some(Ok(Command::Stats)));
        assert_eq!(d.decode(&mut buf), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_is_not_malformed() {
        let input: &[u8] = b"put 1 2 3 5\r\nhe\r\no\r\nstats\r\n";
        // Feed one byte at a time: only complete commands come out, in order.
        let mut d = Decoder::new(65535);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(r) = d.decode(&mut buf) {
                out.push(r);
            }
        }
        assert_eq!(
            out,
            vec![
                Ok(Command::Put {
                    pri: 1,
                    delay: 2,
                    ttr: 3,
                    body: Bytes::from_static(b"he\r\no"),
                }),
                Ok(Command::Stats)
            ]
        );
        // Every split point of a pipelined input gives the same commands.
        let whole = decode_all(&mut Decoder::new(65535), input);
        for cut in 0..input.len() {
            let mut d = Decoder::new(65535);
            let mut buf = BytesMut::from(&input[..cut]);
            let mut got = Vec::new();
            while let Some(r) = d.decode(&mut buf) {
                got.push(r);
            }
            buf.extend_from_slice(&input[cut..]);
            while let Some(r) = d.decode(&mut buf) {
                got.push(r);
            }
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn body_errors() {
        let mut d = Decoder::new(65535);
        assert_eq!(
            decode_all(&mut d, b"put 0 0 0 1\r\nxyz\r\n"),
            vec![Err(ExpectedCrlf), Err(UnknownCommand)]
        );
        // bytes+2 consumed, then the rest is commands.
        assert_eq!(
            decode_all(&mut d, b"put 0 0 0 3\r\nabcxxstats\r\n"),
            vec![Err(ExpectedCrlf), Ok(Command::Stats)]
        );
        // A put line with trailing garbage: its body is read as a command.
        assert_eq!(
            decode_all(&mut d, b"put 0 0 0 1 x\r\nx\r\n"),
            vec![Err(BadFormat), Err(UnknownCommand)]
        );
        assert_eq!(
            decode_all(&mut d, b"put 0 0 0 2\r\n\r\n\r\n"),
            vec![Ok(Command::Put {
                pri: 0,
                delay: 0,
                ttr: 0,
                body: Bytes::from_static(b"\r\n"),
            })]
        );
    }

    #[test]
    fn job_size_limit() {
        let mut ok = b"put 0 0 0 65535\r\n".to_vec();
        ok.extend([b'a'; 65535]);
        ok.extend(b"\r\n");
        let r = decode_all(&mut Decoder::new(65535), &ok);
        assert!(matches!(&r[..], [Ok(Command::Put { body, .. })] if body.len() == 65535));

        let mut big = b"put 0 0 0 65536\r\n".to_vec();
        big.extend([b'a'; 65536]);
        big.extend(b"\r\nstats\r\n");
        assert_eq!(
            decode_all(&mut Decoder::new(65535), &big),
            vec![Err(JobTooBig), Ok(Command::Stats)]
        );
        // Discarding works when the body trickles in.
        let mut d = Decoder::new(10);
        let mut buf = BytesMut::from(&b"put 0 0 0 4294967295\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Some(Err(JobTooBig)));
        buf.extend_from_slice(&[b'z'; 1000]);
        assert_eq!(d.decode(&mut buf), None);
        assert!(buf.is_empty());
        assert_eq!(
            d.state,
            State::DiscardBody {
                remaining: 4294967297 - 1000
            }
        );
    }

    #[test]
    fn binary_bodies() {
        let body: Vec<u8> = (0..=255u8).chain(b"\r\n\r\n\0".iter().copied()).collect();
        let mut input = format!("put 0 0 1 {}\r\n", body.len()).into_bytes();
        input.extend(&body);
        input.extend(b"\r\n");
        assert_eq!(
            one(&input),
            Ok(Command::Put {
                pri: 0,
                delay: 0,
                ttr: 1,
                body: Bytes::from(body),
            })
        );
    }
}
