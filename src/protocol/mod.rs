//! The beanstalkd wire protocol: a pure decoder of commands and an encoder of responses.
//!
//! [`Decoder::decode`] looks at a byte buffer and says one of three things: *incomplete* (read
//! more bytes), a [`Command`], or a malformed input answered by a [`Response`]
//! (`BAD_FORMAT`, `UNKNOWN_COMMAND`, `EXPECTED_CRLF`, `JOB_TOO_BIG`) after which the connection
//! goes on. The decoder never touches a socket; the server feeds it what it read.
//!
//! The grammar follows what beanstalkd 1.12 accepts on the wire (see
//! `beanstalkd-notes.md`): command names are matched as prefixes in beanstalkd's order, so a
//! name that takes arguments but is given none (`delete`) is `UNKNOWN_COMMAND` and a known name
//! followed by junk (`reservex`) is `BAD_FORMAT`. Deliberate differences from 1.12:
//! `reserve-with-timeout` and `kick` take strict unsigned 32-bit numbers (1.12 accepts signs and
//! junk there), and a command line of exactly 225 bytes is discarded cleanly (1.12 swallows the
//! next command).
//!
//! yaad's own commands, for named jobs (README, *Named jobs*): `put-named`, `put-replace`,
//! `delete-name`, `peek-name`, `kick-name`, `touch-name`, with the replies `EXISTS <id>`,
//! `REPLACED <id>` and `BUSY <id>`. A name has the tube names' charset and length; a bad one
//! is `BAD_FORMAT`. A `put-named`/`put-replace` line may be [`MAX_NAMED_LINE_LEN`] bytes.

mod decoder;
mod response;

pub use decoder::{
    Command, Decoder, MAX_JOB_NAME_LEN, MAX_LINE_LEN, MAX_NAMED_LINE_LEN, MAX_TUBE_NAME_LEN,
    valid_tube_name,
};
pub use response::Response;
