//! The on-disk byte layout of a segment file, and the one scanner that reads it.
//!
//! Everything here works on byte slices: the three segment modes, recovery and `yaad-dump`
//! all read and write records through these functions, so there is one decoder. The layout
//! is specified in `storage-format.md`; `tests/format_doc.rs` checks that document's offset
//! tables against the structs below.
//!
//! A file is a [`FileHeader`] followed by records. A record is a [`RecordHeader`] (with two
//! [`SlotBytes`] state slots inside), then the tube name bytes, then the body, then zero
//! padding up to a multiple of [`RECORD_ALIGN`]. The records end where the rest of the file
//! is zero (or at the end of the file).
//!
//! The scanner, which walks a whole file image record by record, and the functions saying
//! where a file's data ends are in `format/scan.rs`, re-exported here.

mod scan;

use std::mem::{offset_of, size_of};
use std::path::Path;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{
    JobCounters, JobState, NewRecord, Record, RecordMeta, RecordOffset, SpokeId, StateSlot,
    StorageError,
};

pub use scan::{
    Records, append_end, append_end_from, data_end, scan_full_from, scan_meta, scan_meta_from,
    scan_records, scan_records_from,
};

/// First bytes of every segment file.
pub const FILE_MAGIC: [u8; 8] = *b"YAADSEG\0";
/// The format version this code writes; it reads this one and those back to
/// [`OLDEST_READ_VERSION`] (version 1 files, whose 16-byte slots had no counters, are refused
/// with a message saying so).
pub const FORMAT_VERSION: u32 = 5;

/// The first format version whose files may hold freed runs ([`JobState::Freed`]): yaad frees
/// dead space only in files of this version or later, which older readers refuse.
pub const FREED_RUNS_SINCE: u32 = 4;

/// The first format version written with job names (a record's `name_len`). Older files
/// have that byte zero (it was reserved), so every version is read the same way; a record
/// with a name appended to an older file makes it unreadable to a yaad of that version.
pub const NAMES_SINCE: u32 = 5;

/// The oldest format version this yaad reads (and appends to, in its own layout).
pub const OLDEST_READ_VERSION: u32 = 2;

/// Size of a device sector: the unit the device writes whole or not at all (an assumption,
/// storage-format.md). From format version 3 no state slot crosses a sector boundary.
pub const SECTOR_LEN: u64 = 512;
/// First bytes of every record header: lets the scanner resynchronise after corruption.
pub const RECORD_MAGIC: [u8; 4] = *b"YREC";
/// Records start at offsets that are multiples of this.
pub const RECORD_ALIGN: u64 = 8;
/// Size of the file header; the first record starts here.
pub const FILE_HEADER_LEN: u64 = size_of::<FileHeader>() as u64;
/// Size of a record header (tube name and body follow it).
pub const RECORD_HEADER_LEN: u64 = size_of::<RecordHeader>() as u64;
/// Size of one on-disk state slot.
pub const SLOT_LEN: u64 = size_of::<SlotBytes>() as u64;
/// Longest tube name a record can hold (its length is one byte).
pub const MAX_TUBE_LEN: usize = u8::MAX as usize;
/// Longest job name a record can hold (its length is one byte; the protocol allows 200).
pub const MAX_NAME_LEN: usize = u8::MAX as usize;
/// Longest body a record can hold (its length is a u32).
pub const MAX_BODY_LEN: usize = u32::MAX as usize;

/// The segment file header: identifies the file and its spoke. Written once, never changed.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct FileHeader {
    /// [`FILE_MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub format_version: U32,
    /// Size of this header in bytes (64): where the first record starts.
    pub header_len: U32,
    /// Start of the spoke's time bucket, microseconds since the Unix epoch.
    pub spoke_start: U64,
    /// Length of the spoke's time bucket in microseconds.
    pub spoke_span: U64,
    /// Size of a record header in bytes (128), so a reader can reject a layout it does not know.
    pub record_header_len: U32,
    /// Zero.
    pub reserved: [u8; 24],
    /// CRC-32 (IEEE) of bytes 0..60 of this header.
    pub crc: U32,
}

/// One state slot as stored: the mutable part of a record. Each record has two (A and B).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct SlotBytes {
    /// Increases with every persisted change of the job; 0 in a slot never written.
    pub version: U32,
    /// Job priority (beanstalkd: lower is more urgent).
    pub priority: U32,
    /// The job's counters as of this change ([`JobCounters`]; `stats-job` shows them).
    pub reserves: U32,
    pub timeouts: U32,
    pub releases: U32,
    pub buries: U32,
    pub kicks: U32,
    /// [`JobState`] as one byte.
    pub state: u8,
    /// State `Freed`: the length of the freed run from the record's offset, a 56-bit
    /// little-endian integer ([`freed_run`]); zero in every other state.
    pub run: [u8; 7],
    /// CRC-32 of the record's `header_crc` (4 bytes LE) followed by bytes 0..36 of this slot.
    pub crc: U32,
}

/// The fixed-size head of a record. Bytes 0..48 never change after the append; the two
/// slots are rewritten by state updates.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordHeader {
    /// [`RECORD_MAGIC`].
    pub magic: [u8; 4],
    /// Length of the tube name that follows the header.
    pub tube_len: u8,
    /// Zero (no flags defined in version 1).
    pub flags: u8,
    /// Length of the job's name, which follows the tube name (0: no name; zero in files
    /// before version 5, where this byte was reserved).
    pub name_len: u8,
    /// Zero.
    pub reserved: [u8; 1],
    /// Job id.
    pub id: U64,
    /// When the job becomes ready, microseconds since the Unix epoch.
    pub trigger_at: U64,
    /// When the job was first put, microseconds since the Unix epoch.
    pub created_at: U64,
    /// Time to run, seconds.
    pub ttr: U32,
    /// Length of what follows the tube name: the name (`name_len` bytes), then the body.
    pub body_len: U32,
    /// CRC-32 of the tube name bytes followed by the name and body bytes.
    pub body_crc: U32,
    /// CRC-32 of the record's offset in the file (8 bytes LE) followed by bytes 0..44.
    pub header_crc: U32,
    /// State slot A.
    pub slot_a: SlotBytes,
    /// State slot B.
    pub slot_b: SlotBytes,
}

// The layout is the contract: a change here must be a new format version.
const _: () = {
    assert!(size_of::<FileHeader>() == 64);
    assert!(offset_of!(FileHeader, magic) == 0);
    assert!(offset_of!(FileHeader, format_version) == 8);
    assert!(offset_of!(FileHeader, header_len) == 12);
    assert!(offset_of!(FileHeader, spoke_start) == 16);
    assert!(offset_of!(FileHeader, spoke_span) == 24);
    assert!(offset_of!(FileHeader, record_header_len) == 32);
    assert!(offset_of!(FileHeader, reserved) == 36);
    assert!(offset_of!(FileHeader, crc) == 60);

    assert!(size_of::<SlotBytes>() == 40);
    assert!(offset_of!(SlotBytes, version) == 0);
    assert!(offset_of!(SlotBytes, priority) == 4);
    assert!(offset_of!(SlotBytes, reserves) == 8);
    assert!(offset_of!(SlotBytes, timeouts) == 12);
    assert!(offset_of!(SlotBytes, releases) == 16);
    assert!(offset_of!(SlotBytes, buries) == 20);
    assert!(offset_of!(SlotBytes, kicks) == 24);
    assert!(offset_of!(SlotBytes, state) == 28);
    assert!(offset_of!(SlotBytes, run) == 29);
    assert!(offset_of!(SlotBytes, crc) == 36);

    assert!(size_of::<RecordHeader>() == 128);
    assert!(offset_of!(RecordHeader, magic) == 0);
    assert!(offset_of!(RecordHeader, tube_len) == 4);
    assert!(offset_of!(RecordHeader, flags) == 5);
    assert!(offset_of!(RecordHeader, name_len) == 6);
    assert!(offset_of!(RecordHeader, reserved) == 7);
    assert!(offset_of!(RecordHeader, id) == 8);
    assert!(offset_of!(RecordHeader, trigger_at) == 16);
    assert!(offset_of!(RecordHeader, created_at) == 24);
    assert!(offset_of!(RecordHeader, ttr) == 32);
    assert!(offset_of!(RecordHeader, body_len) == 36);
    assert!(offset_of!(RecordHeader, body_crc) == 40);
    assert!(offset_of!(RecordHeader, header_crc) == 44);
    assert!(offset_of!(RecordHeader, slot_a) == 48);
    assert!(offset_of!(RecordHeader, slot_b) == 88);

    assert!(FILE_HEADER_LEN.is_multiple_of(RECORD_ALIGN));
    assert!(RECORD_HEADER_LEN.is_multiple_of(RECORD_ALIGN));
};

/// Bytes of the record header covered by `header_crc` (the immutable part before the CRC).
const HEADER_CRC_COVERS: usize = offset_of!(RecordHeader, header_crc);
/// Bytes of a slot covered by its `crc`.
const SLOT_CRC_COVERS: usize = offset_of!(SlotBytes, crc);
/// Bytes of the file header covered by its `crc`.
const FILE_CRC_COVERS: usize = offset_of!(FileHeader, crc);

impl JobState {
    /// Decodes the on-disk state byte.
    pub fn from_u8(b: u8) -> Option<JobState> {
        match b {
            1 => Some(JobState::Waiting),
            2 => Some(JobState::Ready),
            3 => Some(JobState::Buried),
            4 => Some(JobState::Deleted),
            5 => Some(JobState::Moved),
            6 => Some(JobState::Freed),
            _ => None,
        }
    }

    /// Lower-case name, as `yaad-dump` prints it.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Ready => "ready",
            JobState::Buried => "buried",
            JobState::Deleted => "deleted",
            JobState::Moved => "moved",
            JobState::Freed => "freed",
        }
    }
}

/// The format version a file header states (the current one if the bytes hold no header:
/// call after [`decode_file_header`] accepted them).
pub fn header_version(bytes: &[u8]) -> u32 {
    FileHeader::ref_from_prefix(bytes).map_or(FORMAT_VERSION, |(h, _)| h.format_version.get())
}

/// Where a record goes in a file of format `version` when the previous one ends at `pos`
/// (an 8-aligned offset). Version 2 packs records; from version 3 a record whose state slots
/// (bytes 48..128 of its header) would cross a [`SECTOR_LEN`] boundary starts at the next
/// offset where they do not (at most 72 zero bytes skipped): a sector is written whole or not
/// at all, so an update can never tear a slot, and a power cut leaves each slot old or new.
pub fn record_at(version: u32, pos: u64) -> u64 {
    if version < 3 {
        return pos;
    }
    let slots = offset_of!(RecordHeader, slot_a) as u64;
    let in_sector = (pos + slots) % SECTOR_LEN;
    if in_sector + 2 * SLOT_LEN <= SECTOR_LEN {
        pos
    } else {
        pos + (SECTOR_LEN - in_sector)
    }
}

/// Rounds `n` up to a multiple of [`RECORD_ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Total bytes a record with this tube and body occupies, padding included.
pub fn record_len(tube_len: usize, body_len: usize) -> u64 {
    align_up(RECORD_HEADER_LEN + tube_len as u64 + body_len as u64)
}

/// The file name of a spoke's segment: `seg-<start_us:020>-<span_us:020>.yaad`.
pub fn segment_file_name(spoke: SpokeId) -> String {
    format!("seg-{:020}-{:020}.yaad", spoke.start, spoke.span)
}

/// Reads the spoke back from a segment file name; `None` if it is not one.
pub fn parse_segment_file_name(name: &str) -> Option<SpokeId> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".yaad")?;
    let (start, span) = rest.split_once('-')?;
    if start.len() != 20 || span.len() != 20 {
        return None;
    }
    if !start
        .bytes()
        .chain(span.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(SpokeId {
        start: start.parse().ok()?,
        span: span.parse().ok()?,
    })
}

/// Encodes the file header of a segment for `spoke`.
pub fn encode_file_header(spoke: SpokeId) -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = FileHeader {
        magic: FILE_MAGIC,
        format_version: U32::new(FORMAT_VERSION),
        header_len: U32::new(FILE_HEADER_LEN as u32),
        spoke_start: U64::new(spoke.start),
        spoke_span: U64::new(spoke.span),
        record_header_len: U32::new(RECORD_HEADER_LEN as u32),
        reserved: [0; 24],
        crc: U32::new(0),
    };
    h.crc = U32::new(crc32fast::hash(&h.as_bytes()[..FILE_CRC_COVERS]));
    let mut out = [0u8; FILE_HEADER_LEN as usize];
    out.copy_from_slice(h.as_bytes());
    out
}

/// Validates a file header and returns its spoke. The error says what is wrong, for a person.
pub fn decode_file_header(bytes: &[u8]) -> std::result::Result<SpokeId, String> {
    if bytes.is_empty() {
        return Err("empty file (no segment file header)".into());
    }
    let Ok((h, _)) = FileHeader::ref_from_prefix(bytes) else {
        return Err(format!(
            "file too short for a segment file header: {} bytes, need {FILE_HEADER_LEN}",
            bytes.len()
        ));
    };
    if h.magic != FILE_MAGIC {
        return Err("not a yaad segment file (bad magic)".into());
    }
    let crc = crc32fast::hash(&h.as_bytes()[..FILE_CRC_COVERS]);
    if crc != h.crc.get() {
        return Err(format!(
            "file header checksum mismatch (stored {:#010x}, computed {crc:#010x})",
            h.crc.get()
        ));
    }
    if h.format_version.get() == 1 {
        return Err(format!(
            "format version 1 (written by a yaad before per-job counters were persisted); \
             this yaad reads versions {OLDEST_READ_VERSION} to {FORMAT_VERSION}: drain the jobs \
             with the old yaad (there is no in-place upgrade)"
        ));
    }
    if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&h.format_version.get()) {
        return Err(format!(
            "unsupported format version {} (this yaad reads versions \
             {OLDEST_READ_VERSION} to {FORMAT_VERSION})",
            h.format_version.get()
        ));
    }
    if u64::from(h.header_len.get()) != FILE_HEADER_LEN
        || u64::from(h.record_header_len.get()) != RECORD_HEADER_LEN
    {
        return Err(format!(
            "unexpected header sizes (file header {}, record header {})",
            h.header_len.get(),
            h.record_header_len.get()
        ));
    }
    Ok(SpokeId {
        start: h.spoke_start.get(),
        span: h.spoke_span.get(),
    })
}

/// The error for a segment file whose header [`decode_file_header`] rejected with `reason`.
/// A sound header of another format version is not damage: it is an `InvalidData` I/O error,
/// which stops the daemon from starting (serving without that file's jobs would lose them);
/// anything else is `Corrupted` (recovery reports the file and leaves it for `yaad-dump`).
pub fn file_header_error(file: &Path, bytes: &[u8], reason: String) -> StorageError {
    let other_version = FileHeader::ref_from_prefix(bytes).is_ok_and(|(h, _)| {
        h.magic == FILE_MAGIC
            && h.crc.get() == crc32fast::hash(&h.as_bytes()[..FILE_CRC_COVERS])
            && !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&h.format_version.get())
    });
    if other_version {
        StorageError::Io {
            path: file.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
        }
    } else {
        StorageError::corrupted(file, 0, reason)
    }
}

/// A CRC-32 hasher. `crc32fast::Hasher::new` detects the CPU's features on every call (a
/// good part of the cost of a slot's 16-byte CRC); this clones one made once.
fn crc32() -> crc32fast::Hasher {
    static PROTOTYPE: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    PROTOTYPE.get_or_init(crc32fast::Hasher::new).clone()
}

fn crc_header(offset: RecordOffset, h: &RecordHeader) -> u32 {
    crc_header_bytes(offset, &h.as_bytes()[..HEADER_CRC_COVERS])
}

fn crc_header_bytes(offset: RecordOffset, covered: &[u8]) -> u32 {
    // One update over a copy: each update call has a fixed cost about that of 20 bytes.
    let mut input = [0u8; 8 + HEADER_CRC_COVERS];
    input[..8].copy_from_slice(&offset.to_le_bytes());
    input[8..].copy_from_slice(covered);
    let mut c = crc32();
    c.update(&input);
    c.finalize()
}

/// The 64-bit key of job name `name` in tube `tube`, for the name index in RAM (never stored:
/// the hash may differ between builds). Different names may share a key; the index checks
/// the job's own tube and name on a hit.
pub fn name_key(tube: &[u8], name: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    tube.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

/// CRC-32 of the bytes after a record header: the tube name, then the name and body
/// (`payload`).
fn crc_body(tube: &[u8], payload: &[&[u8]]) -> u32 {
    let mut c = crc32();
    c.update(tube);
    for p in payload {
        c.update(p);
    }
    c.finalize()
}

fn crc_slot(header_crc: u32, s: &SlotBytes) -> u32 {
    let mut input = [0u8; 4 + SLOT_CRC_COVERS];
    input[..4].copy_from_slice(&header_crc.to_le_bytes());
    input[4..].copy_from_slice(&s.as_bytes()[..SLOT_CRC_COVERS]);
    let mut c = crc32();
    c.update(&input);
    c.finalize()
}

/// Encodes a state slot of the record whose header CRC is `header_crc`.
pub fn encode_slot(header_crc: u32, slot: StateSlot) -> SlotBytes {
    let c = slot.counters;
    let mut s = SlotBytes {
        version: U32::new(slot.version),
        priority: U32::new(slot.priority),
        reserves: U32::new(c.reserves),
        timeouts: U32::new(c.timeouts),
        releases: U32::new(c.releases),
        buries: U32::new(c.buries),
        kicks: U32::new(c.kicks),
        state: slot.state as u8,
        run: [0; 7],
        crc: U32::new(0),
    };
    s.crc = U32::new(crc_slot(header_crc, &s));
    s
}

/// The longest freed run a slot can state (56 bits).
pub const MAX_FREED_RUN: u64 = (1 << 56) - 1;

/// Encodes a `Freed` slot of version `version` for the record whose header CRC is
/// `header_crc`: it and the records after it up to `run` bytes from its offset are dead, and
/// their bytes past the header may be holes. `run` is at most [`MAX_FREED_RUN`].
pub fn encode_freed_slot(header_crc: u32, version: u32, run: u64) -> SlotBytes {
    let mut s = encode_slot(
        header_crc,
        StateSlot {
            version,
            state: JobState::Freed,
            priority: 0,
            counters: JobCounters::default(),
        },
    );
    s.run
        .copy_from_slice(&run.min(MAX_FREED_RUN).to_le_bytes()[..7]);
    s.crc = U32::new(crc_slot(header_crc, &s));
    s
}

/// The run a header's current slot states if it is `Freed` (all CRCs checked).
pub fn current_freed_run(h: &RecordHeader) -> Option<u64> {
    current_slot(h)
        .filter(|(_, s)| s.state == JobState::Freed)
        .map(|(c, _)| freed_run(slot_bytes(h, c)))
}

fn slot_bytes(h: &RecordHeader, c: SlotChoice) -> &SlotBytes {
    match c {
        SlotChoice::A => &h.slot_a,
        SlotChoice::B => &h.slot_b,
    }
}

/// The run length a `Freed` slot states (see [`encode_freed_slot`]).
pub fn freed_run(s: &SlotBytes) -> u64 {
    let mut b = [0u8; 8];
    b[..7].copy_from_slice(&s.run);
    u64::from_le_bytes(b)
}

/// Decodes a slot; `None` if its CRC, state byte or version says it was never (fully) written.
pub fn decode_slot(header_crc: u32, s: &SlotBytes) -> Option<StateSlot> {
    if crc_slot(header_crc, s) != s.crc.get() {
        return None;
    }
    parse_slot(s)
}

/// A slot's fields, without its CRC: `None` if never written (version 0) or the state byte is
/// not a state.
fn parse_slot(s: &SlotBytes) -> Option<StateSlot> {
    if s.version.get() == 0 {
        return None;
    }
    Some(StateSlot {
        version: s.version.get(),
        state: JobState::from_u8(s.state)?,
        priority: s.priority.get(),
        counters: JobCounters {
            reserves: s.reserves.get(),
            timeouts: s.timeouts.get(),
            releases: s.releases.get(),
            buries: s.buries.get(),
            kicks: s.kicks.get(),
        },
    })
}

/// Which of the two slots holds the current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotChoice {
    A,
    B,
}

/// The winning slot of a header: the valid one with the higher version (A on a tie).
pub fn current_slot(h: &RecordHeader) -> Option<(SlotChoice, StateSlot)> {
    current_slot_with(h, Check::All)
}

/// How much of a record a read or an update verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every CRC: header, tube+body, state slots. For bytes that came from a file, a mapping
    /// or anything another process or the device could have changed.
    All,
    /// The header CRC only (it binds the offset, so a misdirected read still fails); the body
    /// and slot CRCs are not recomputed. For records this process encoded itself into memory
    /// nothing else writes (a mem segment's own appends): the checks could only catch our
    /// own bugs. The current slot is then the written one with the higher version.
    Header,
}

/// [`current_slot`], with the slot CRCs checked or not (see [`Check::Header`]: then a slot
/// counts as written if its version is not 0 and its state byte is valid).
fn current_slot_with(h: &RecordHeader, check: Check) -> Option<(SlotChoice, StateSlot)> {
    let hc = h.header_crc.get();
    let slot = |s| match check {
        Check::All => decode_slot(hc, s),
        Check::Header => parse_slot(s),
    };
    match (slot(&h.slot_a), slot(&h.slot_b)) {
        (Some(a), Some(b)) if b.version > a.version => Some((SlotChoice::B, b)),
        (Some(a), _) => Some((SlotChoice::A, a)),
        (None, Some(b)) => Some((SlotChoice::B, b)),
        (None, None) => None,
    }
}

/// Why a new record cannot be encoded (a caller bug, not corruption).
pub fn check_new_record(rec: &NewRecord<'_>) -> std::result::Result<(), String> {
    if rec.tube.len() > MAX_TUBE_LEN {
        return Err(format!(
            "tube name is {} bytes, at most {MAX_TUBE_LEN} fit",
            rec.tube.len()
        ));
    }
    if rec.name.len() > MAX_NAME_LEN {
        return Err(format!(
            "job name is {} bytes, at most {MAX_NAME_LEN} fit",
            rec.name.len()
        ));
    }
    if rec.body.len() > MAX_BODY_LEN - rec.name.len() {
        return Err(format!("body is {} bytes, too long", rec.body.len()));
    }
    if rec.slot.version == 0 {
        return Err("state slot version must be at least 1".into());
    }
    Ok(())
}

/// Writes the record `rec`, to be placed at file offset `offset`, into `out`
/// (exactly [`record_len`] bytes, padding zeroed). Call [`check_new_record`] first.
pub fn encode_record_into(offset: RecordOffset, rec: &NewRecord<'_>, out: &mut [u8]) {
    let mut h = RecordHeader {
        magic: RECORD_MAGIC,
        tube_len: rec.tube.len() as u8,
        flags: 0,
        name_len: rec.name.len() as u8,
        reserved: [0; 1],
        id: U64::new(rec.id),
        trigger_at: U64::new(rec.trigger_at),
        created_at: U64::new(rec.created_at),
        ttr: U32::new(rec.ttr),
        body_len: U32::new((rec.name.len() + rec.body.len()) as u32),
        body_crc: U32::new(crc_body(rec.tube, &[rec.name, rec.body])),
        header_crc: U32::new(0),
        slot_a: SlotBytes::new_zeroed(),
        slot_b: SlotBytes::new_zeroed(),
    };
    let hc = crc_header(offset, &h);
    h.header_crc = U32::new(hc);
    h.slot_a = encode_slot(hc, rec.slot);
    let hl = RECORD_HEADER_LEN as usize;
    let tl = rec.tube.len();
    let nl = rec.name.len();
    let bl = rec.body.len();
    out[..hl].copy_from_slice(h.as_bytes());
    out[hl..hl + tl].copy_from_slice(rec.tube);
    out[hl + tl..hl + tl + nl].copy_from_slice(rec.name);
    out[hl + tl + nl..hl + tl + nl + bl].copy_from_slice(rec.body);
    out[hl + tl + nl + bl..].fill(0);
}

/// Encodes a record for `offset` into a new buffer.
pub fn encode_record(offset: RecordOffset, rec: &NewRecord<'_>) -> Vec<u8> {
    let mut out = vec![0u8; rec.len() as usize];
    encode_record_into(offset, rec, &mut out);
    out
}

/// A record found in a byte slice, with header, body and slots verified.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    pub offset: RecordOffset,
    pub header: &'a RecordHeader,
    pub tube: &'a [u8],
    /// The job's name (empty: none).
    pub name: &'a [u8],
    pub body: &'a [u8],
    /// The slot holding the current state.
    pub slot_choice: SlotChoice,
    pub slot: StateSlot,
    /// Bytes from `offset` to where the next record is looked for: the record's length,
    /// padding included, or for a `Freed` record its whole run (then `tube` and `body` are
    /// empty: their bytes may be holes).
    pub extent: u64,
}

impl RecordView<'_> {
    /// Bytes from the record's offset to where the next one is looked for ([`Self::extent`]).
    pub fn len(&self) -> u64 {
        self.extent
    }

    /// Never true: a record always has its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies the record out.
    pub fn to_record(&self) -> Record {
        Record {
            offset: self.offset,
            id: self.header.id.get(),
            trigger_at: self.header.trigger_at.get(),
            created_at: self.header.created_at.get(),
            ttr: self.header.ttr.get(),
            tube: self.tube.to_vec(),
            name: self.name.to_vec(),
            body: self.body.to_vec(),
            slot: self.slot,
        }
    }

    /// Copies the record's metadata out (no body).
    pub fn to_meta(&self) -> RecordMeta {
        RecordMeta {
            offset: self.offset,
            id: self.header.id.get(),
            trigger_at: self.header.trigger_at.get(),
            created_at: self.header.created_at.get(),
            ttr: self.header.ttr.get(),
            tube: self.tube.to_vec(),
            name: self.name.to_vec(),
            body_len: self.header.body_len.get(),
            slot: self.slot,
        }
    }
}

/// What is wrong with the bytes at an offset, before a file path is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Defect {
    /// The header is not a valid record header (magic or header CRC): its length is unknown.
    BadHeader(String),
    /// The header is valid but the record runs past the end of the data.
    Truncated(String),
    /// The header is valid, the tube+body CRC or both slots are not: the record can be skipped.
    BadRecord(String),
}

impl Defect {
    pub fn reason(&self) -> &str {
        match self {
            Defect::BadHeader(r) | Defect::Truncated(r) | Defect::BadRecord(r) => r,
        }
    }
}

/// Decodes only the record header at `offset`: magic and header CRC.
pub fn decode_header_at(
    bytes: &[u8],
    offset: RecordOffset,
) -> std::result::Result<&RecordHeader, Defect> {
    let start = usize::try_from(offset)
        .ok()
        .filter(|&s| s <= bytes.len())
        .ok_or_else(|| Defect::Truncated(format!("offset {offset} is past the end")))?;
    let Ok((h, _)) = RecordHeader::ref_from_prefix(&bytes[start..]) else {
        return Err(Defect::Truncated(format!(
            "{} bytes left, a record header needs {RECORD_HEADER_LEN}",
            bytes.len() - start
        )));
    };
    if h.magic != RECORD_MAGIC {
        return Err(Defect::BadHeader("bad record magic".into()));
    }
    let crc = crc_header(offset, h);
    if crc != h.header_crc.get() {
        return Err(Defect::BadHeader(format!(
            "record header checksum mismatch (stored {:#010x}, computed {crc:#010x})",
            h.header_crc.get()
        )));
    }
    Ok(h)
}

/// Decodes and verifies the record at `offset` of `bytes` (a whole file image).
pub fn decode_record_at(
    bytes: &[u8],
    offset: RecordOffset,
) -> std::result::Result<RecordView<'_>, Defect> {
    decode_record_checked(bytes, offset, Check::All)
}

/// [`decode_record_at`] verifying only what `check` says.
pub fn decode_record_checked(
    bytes: &[u8],
    offset: RecordOffset,
    check: Check,
) -> std::result::Result<RecordView<'_>, Defect> {
    if offset < FILE_HEADER_LEN || !offset.is_multiple_of(RECORD_ALIGN) {
        return Err(Defect::BadHeader(format!(
            "offset {offset} is not a record offset"
        )));
    }
    let h = decode_header_at(bytes, offset)?;
    let start = offset as usize;
    let tl = usize::from(h.tube_len);
    let bl = h.body_len.get() as usize;
    let hl = RECORD_HEADER_LEN as usize;
    if let Some(view) = freed_view(bytes, offset, h, check)? {
        return Ok(view);
    }
    let end = start
        .checked_add(hl + tl)
        .and_then(|e| e.checked_add(bl))
        .filter(|&e| e <= bytes.len());
    let Some(end) = end else {
        return Err(Defect::Truncated(format!(
            "record of {} bytes runs past the end of the data ({} bytes left)",
            hl + tl + bl,
            bytes.len() - start
        )));
    };
    let tube = &bytes[start + hl..start + hl + tl];
    let payload = &bytes[start + hl + tl..end];
    let nl = usize::from(h.name_len);
    if nl > payload.len() {
        return Err(Defect::BadRecord(format!(
            "job {}: name of {nl} bytes is longer than the {} bytes after the tube",
            h.id.get(),
            payload.len()
        )));
    }
    let (name, body) = payload.split_at(nl);
    if check == Check::All {
        let crc = crc_body(tube, &[payload]);
        if crc != h.body_crc.get() {
            return Err(Defect::BadRecord(format!(
                "job {}: body checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                h.id.get(),
                h.body_crc.get()
            )));
        }
    }
    let Some((slot_choice, slot)) = current_slot_with(h, check) else {
        return Err(Defect::BadRecord(format!(
            "job {}: neither state slot is valid",
            h.id.get()
        )));
    };
    Ok(RecordView {
        offset,
        header: h,
        tube,
        name,
        body,
        slot_choice,
        slot,
        extent: record_len(tl, bl),
    })
}

/// The view of the record with header `h` at `offset` if its current slot is `Freed`: its
/// tube and body are not read (they may be holes), its extent is the run.
fn freed_view<'a>(
    bytes: &'a [u8],
    offset: RecordOffset,
    h: &'a RecordHeader,
    check: Check,
) -> std::result::Result<Option<RecordView<'a>>, Defect> {
    let Some((slot_choice, slot)) = current_slot_with(h, check) else {
        return Ok(None);
    };
    if slot.state != JobState::Freed {
        return Ok(None);
    }
    let run = freed_run(slot_bytes(h, slot_choice));
    if run < RECORD_HEADER_LEN || !run.is_multiple_of(RECORD_ALIGN) {
        return Err(Defect::BadRecord(format!(
            "job {}: freed run of {run} bytes is not a run of records",
            h.id.get()
        )));
    }
    if offset
        .checked_add(run)
        .is_none_or(|e| e > bytes.len() as u64)
    {
        return Err(Defect::Truncated(format!(
            "freed run of {run} bytes runs past the end of the data ({} bytes left)",
            bytes.len() as u64 - offset
        )));
    }
    Ok(Some(RecordView {
        offset,
        header: h,
        tube: &[],
        name: &[],
        body: &[],
        slot_choice,
        slot,
        extent: run,
    }))
}

/// Writes a `Freed` slot for the record at `offset` of `bytes` (a file image up to the end of
/// its data), one version above its current one: the record and those after it up to `run`
/// bytes from `offset` are dead (the caller knows), and their bytes past the record header
/// may be punched out once this slot is durable. The slot [`plan_update`] picks is
/// overwritten; both slots of a record lie in one sector, so a torn write leaves the old one.
pub fn write_freed(
    bytes: &mut [u8],
    offset: RecordOffset,
    run: u64,
    file: &Path,
    check: Check,
) -> Result<(), StorageError> {
    if run < RECORD_HEADER_LEN
        || !run.is_multiple_of(RECORD_ALIGN)
        || run > MAX_FREED_RUN
        || offset
            .checked_add(run)
            .is_none_or(|e| e > bytes.len() as u64)
    {
        return Err(invalid_input(
            file,
            format!("freed run of {run} bytes at offset {offset} does not fit the data"),
        ));
    }
    let h = decode_header_at(bytes, offset).map_err(|d| defect_error(file, offset, d))?;
    let version = current_slot_with(h, check)
        .map_or(0, |(_, s)| s.version)
        .checked_add(1)
        .ok_or_else(|| invalid_input(file, format!("record at {offset}: slot version overflow")))?;
    let slot = StateSlot {
        version,
        state: JobState::Freed,
        priority: 0,
        counters: JobCounters::default(),
    };
    let (at, _) = plan_update(bytes, offset, slot, file, check)?;
    let new = encode_freed_slot(h.header_crc.get(), version, run);
    let at = at as usize;
    bytes[at..at + SLOT_LEN as usize].copy_from_slice(new.as_bytes());
    Ok(())
}

/// The length of the record at `offset` of `bytes`, padding included, from its header.
pub fn record_len_at(bytes: &[u8], offset: RecordOffset, file: &Path) -> Result<u64, StorageError> {
    let h = decode_header_at(bytes, offset).map_err(|d| defect_error(file, offset, d))?;
    Ok(record_len(
        usize::from(h.tube_len),
        h.body_len.get() as usize,
    ))
}

/// Attaches a file path to a [`Defect`].
pub fn defect_error(file: &Path, offset: u64, d: Defect) -> StorageError {
    let reason = match d {
        Defect::BadHeader(r) | Defect::Truncated(r) | Defect::BadRecord(r) => r,
    };
    StorageError::corrupted(file, offset, reason)
}

/// Picks the slot an update must overwrite (the one not holding the current state) and
/// encodes the new slot. Fails if the header is bad or the version does not increase.
pub fn plan_update(
    bytes: &[u8],
    offset: RecordOffset,
    slot: StateSlot,
    file: &Path,
    check: Check,
) -> Result<(u64, SlotBytes), StorageError> {
    if offset < FILE_HEADER_LEN || !offset.is_multiple_of(RECORD_ALIGN) {
        return Err(StorageError::corrupted(
            file,
            offset,
            format!("offset {offset} is not a record offset"),
        ));
    }
    let h = decode_header_at(bytes, offset).map_err(|d| defect_error(file, offset, d))?;
    let target = match current_slot_with(h, check) {
        Some((SlotChoice::A, cur)) | Some((SlotChoice::B, cur)) if slot.version <= cur.version => {
            return Err(StorageError::Io {
                path: file.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "state update of job {} at offset {offset}: version {} does not exceed current version {}",
                        h.id.get(),
                        slot.version,
                        cur.version
                    ),
                ),
            });
        }
        Some((SlotChoice::A, _)) => offset_of!(RecordHeader, slot_b),
        Some((SlotChoice::B, _)) | None => offset_of!(RecordHeader, slot_a),
    };
    Ok((
        offset + target as u64,
        encode_slot(h.header_crc.get(), slot),
    ))
}

/// Persists `slot` for the record at `offset` of `bytes` (a file image up to the end of its
/// data): the slot [`plan_update`] picks is overwritten in place.
pub fn write_update(
    bytes: &mut [u8],
    offset: RecordOffset,
    slot: StateSlot,
    file: &Path,
    check: Check,
) -> Result<(), StorageError> {
    let (at, new) = plan_update(bytes, offset, slot, file, check)?;
    let at = at as usize;
    bytes[at..at + SLOT_LEN as usize].copy_from_slice(new.as_bytes());
    Ok(())
}

/// Reads and verifies the record at `offset` of a whole file image.
pub fn read_record(
    bytes: &[u8],
    offset: RecordOffset,
    file: &Path,
    check: Check,
) -> Result<Record, StorageError> {
    decode_record_checked(bytes, offset, check)
        .map(|v| v.to_record())
        .map_err(|d| defect_error(file, offset, d))
}

/// An error for a [`NewRecord`] that cannot be stored.
pub fn invalid_input(file: &Path, reason: String) -> StorageError {
    StorageError::Io {
        path: file.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
    }
}

/// Offset and size of each record header field, for `tests/format_doc.rs`.
pub fn record_header_fields() -> Vec<(&'static str, usize, usize)> {
    vec![
        ("magic", offset_of!(RecordHeader, magic), 4),
        ("tube_len", offset_of!(RecordHeader, tube_len), 1),
        ("flags", offset_of!(RecordHeader, flags), 1),
        ("name_len", offset_of!(RecordHeader, name_len), 1),
        ("reserved", offset_of!(RecordHeader, reserved), 1),
        ("id", offset_of!(RecordHeader, id), 8),
        ("trigger_at", offset_of!(RecordHeader, trigger_at), 8),
        ("created_at", offset_of!(RecordHeader, created_at), 8),
        ("ttr", offset_of!(RecordHeader, ttr), 4),
        ("body_len", offset_of!(RecordHeader, body_len), 4),
        ("body_crc", offset_of!(RecordHeader, body_crc), 4),
        ("header_crc", offset_of!(RecordHeader, header_crc), 4),
        (
            "slot_a",
            offset_of!(RecordHeader, slot_a),
            SLOT_LEN as usize,
        ),
        (
            "slot_b",
            offset_of!(RecordHeader, slot_b),
            SLOT_LEN as usize,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spoke() -> SpokeId {
        SpokeId {
            start: 1_700_000_000_000_000,
            span: 1_000_000,
        }
    }

    fn rec<'a>(id: u64, tube: &'a [u8], body: &'a [u8]) -> NewRecord<'a> {
        NewRecord {
            id,
            trigger_at: 1_700_000_000_500_000,
            created_at: 1_699_999_999_000_000,
            ttr: 60,
            tube,
            name: &[],
            body,
            slot: StateSlot {
                version: 1,
                state: JobState::Waiting,
                priority: 1024,
                counters: JobCounters::default(),
            },
        }
    }

    fn image(recs: &[NewRecord<'_>]) -> (Vec<u8>, Vec<u64>) {
        let mut buf = encode_file_header(spoke()).to_vec();
        let mut offs = vec![];
        for r in recs {
            let off = record_at(FORMAT_VERSION, buf.len() as u64);
            buf.resize(off as usize, 0);
            offs.push(off);
            buf.extend_from_slice(&encode_record(off, r));
        }
        (buf, offs)
    }

    fn path() -> PathBuf {
        PathBuf::from("test.yaad")
    }

    #[test]
    fn file_name_round_trips_and_rejects_others() {
        let name = segment_file_name(spoke());
        assert_eq!(name, "seg-00001700000000000000-00000000000001000000.yaad");
        assert_eq!(parse_segment_file_name(&name), Some(spoke()));
        for bad in [
            "seg-1-2.yaad",
            "ids.yaad",
            "seg-0170000000000000000x-00000000000001000000.yaad",
            "seg-01700000000000000000-00000000000001000000.yaad.tmp",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_header_round_trips_and_detects_damage() {
        let h = encode_file_header(spoke());
        assert_eq!(decode_file_header(&h), Ok(spoke()));
        for i in 0..h.len() {
            let mut bad = h;
            bad[i] ^= 0x01;
            assert!(decode_file_header(&bad).is_err(), "byte {i}");
        }
        assert!(decode_file_header(&[]).is_err());
        assert!(decode_file_header(&h[..63]).is_err());
    }

    #[test]
    fn records_round_trip_through_the_scanner() {
        let (buf, offs) = image(&[
            rec(1, b"default", b"hello"),
            rec(2, b"", b""),
            rec(3, b"t", &[0xff; 13]),
        ]);
        let got: Vec<_> = scan_records(&buf, &path()).collect();
        assert_eq!(got.len(), 3);
        let views: Vec<_> = got.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(views[0].offset, offs[0]);
        assert_eq!(views[0].tube, b"default");
        assert_eq!(views[0].body, b"hello");
        assert_eq!(views[1].header.id.get(), 2);
        assert_eq!(views[2].body, &[0xff; 13]);
        assert_eq!(views[2].slot.priority, 1024);
        for o in &offs {
            assert_eq!(o % RECORD_ALIGN, 0);
        }
    }

    #[test]
    fn zero_tail_is_the_end() {
        let (mut buf, _) = image(&[rec(1, b"a", b"b")]);
        let used = buf.len() as u64;
        buf.resize(4096, 0);
        let p = path();
        let mut it = scan_records(&buf, &p);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().is_none());
        assert_eq!(it.end(), used);
        assert_eq!(data_end(&buf, FILE_HEADER_LEN), used);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let (buf, _) = image(&[rec(7, b"tube", b"body bytes")]);
        for i in FILE_HEADER_LEN as usize..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            let res: Vec<_> = scan_records(&bad, &path()).collect();
            let clean = res.iter().filter(|r| r.is_ok()).count();
            let is_padding = i >= buf.len() - 2; // 128 + 4 + 10 = 142, padded to 144
            let slot_b = FILE_HEADER_LEN as usize + offset_of!(RecordHeader, slot_b);
            let in_slot_b = (slot_b..slot_b + SLOT_LEN as usize).contains(&i);
            if is_padding || in_slot_b {
                // Padding and the unused slot B carry no data: the record stays valid.
                assert_eq!(clean, 1, "byte {i}");
            } else {
                assert_eq!(clean, 0, "byte {i} flipped but the record still decodes");
                assert!(res.iter().any(|r| r.is_err()), "byte {i}");
            }
        }
    }

    #[test]
    fn bad_body_is_skipped_and_scan_continues() {
        let (mut buf, offs) = image(&[rec(1, b"a", b"xxxx"), rec(2, b"a", b"yyyy")]);
        buf[offs[0] as usize + RECORD_HEADER_LEN as usize + 2] ^= 1;
        let res: Vec<_> = scan_records(&buf, &path()).collect();
        assert_eq!(res.len(), 2);
        match &res[0] {
            Err(StorageError::Corrupted { offset, reason, .. }) => {
                assert_eq!(*offset, offs[0]);
                assert!(reason.contains("body checksum"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        assert_eq!(res[1].as_ref().unwrap().header.id.get(), 2);
    }

    #[test]
    fn bad_header_resyncs_at_next_record() {
        let (mut buf, offs) = image(&[
            rec(1, b"a", b"first"),
            rec(2, b"a", b"second"),
            rec(3, b"a", b"third"),
        ]);
        buf[offs[1] as usize + 9] ^= 1; // inside the id of record 2
        let res: Vec<_> = scan_records(&buf, &path()).collect();
        assert_eq!(res.len(), 3);
        assert_eq!(res[0].as_ref().unwrap().header.id.get(), 1);
        assert!(
            matches!(&res[1], Err(StorageError::Corrupted { offset, .. }) if *offset == offs[1])
        );
        assert_eq!(res[2].as_ref().unwrap().header.id.get(), 3);
    }

    #[test]
    fn zeroed_header_in_the_middle_does_not_hide_later_records() {
        // A crash can persist a later record's page but not an earlier record's header.
        let (mut buf, offs) = image(&[rec(1, b"a", b"first"), rec(2, b"a", b"second")]);
        let o = offs[0] as usize;
        buf[o..o + RECORD_HEADER_LEN as usize].fill(0);
        let res: Vec<_> = scan_records(&buf, &path()).collect();
        assert_eq!(res.len(), 2);
        assert!(res[0].is_err());
        assert_eq!(res[1].as_ref().unwrap().header.id.get(), 2);
    }

    #[test]
    fn truncated_tail_is_reported_and_earlier_records_kept() {
        let (buf, offs) = image(&[rec(1, b"a", b"first"), rec(2, b"a", b"second")]);
        for cut in offs[1] as usize + 1..buf.len() - 1 {
            let res: Vec<_> = scan_records(&buf[..cut], &path()).collect();
            assert_eq!(res[0].as_ref().unwrap().header.id.get(), 1, "cut {cut}");
            assert_eq!(res.len(), 2, "cut {cut}");
            assert!(res[1].is_err(), "cut {cut}");
        }
    }

    #[test]
    fn torn_slot_write_keeps_the_older_slot() {
        let (mut buf, offs) = image(&[rec(1, b"a", b"x")]);
        let newer = StateSlot {
            version: 2,
            state: JobState::Buried,
            priority: 5,
            counters: JobCounters {
                reserves: 3,
                timeouts: 1,
                releases: 2,
                buries: 1,
                kicks: u32::MAX,
            },
        };
        let (at, s) = plan_update(&buf, offs[0], newer, &path(), Check::All).unwrap();
        assert_eq!(at, offs[0] + 88, "the first update goes to slot B");
        let at = at as usize;
        buf[at..at + SLOT_LEN as usize].copy_from_slice(s.as_bytes());
        let v = decode_record_at(&buf, offs[0]).unwrap();
        assert_eq!(v.slot, newer);
        assert_eq!(v.slot_choice, SlotChoice::B);
        // A torn write of the next update (into slot A) leaves B in force.
        let third = StateSlot {
            version: 3,
            state: JobState::Deleted,
            priority: 5,
            counters: JobCounters::default(),
        };
        let (at2, s2) = plan_update(&buf, offs[0], third, &path(), Check::All).unwrap();
        assert_eq!(at2, offs[0] + 48);
        let at2 = at2 as usize;
        buf[at2..at2 + 8].copy_from_slice(&s2.as_bytes()[..8]);
        assert_eq!(decode_record_at(&buf, offs[0]).unwrap().slot, newer);
        // A non-increasing version is refused.
        assert!(plan_update(&buf, offs[0], newer, &path(), Check::All).is_err());
    }

    #[test]
    fn header_check_reads_and_updates_like_the_full_check() {
        let (mut buf, offs) = image(&[rec(1, b"a", b"x"), rec(2, b"tube", b"body\0")]);
        for version in 2..6 {
            for &o in &offs {
                let all = decode_record_at(&buf, o).unwrap();
                let hdr = decode_record_checked(&buf, o, Check::Header).unwrap();
                assert_eq!((all.slot, all.slot_choice), (hdr.slot, hdr.slot_choice));
                assert_eq!((all.tube, all.body), (hdr.tube, hdr.body));
                let slot = StateSlot {
                    version,
                    ..all.slot
                };
                let planned = plan_update(&buf, o, slot, &path(), Check::All).unwrap();
                let (at, bytes) = plan_update(&buf, o, slot, &path(), Check::Header).unwrap();
                assert_eq!(planned.0, at);
                assert_eq!(planned.1.as_bytes(), bytes.as_bytes());
                let at = at as usize;
                buf[at..at + SLOT_LEN as usize].copy_from_slice(bytes.as_bytes());
            }
        }
        // The header CRC binds the offset: a misdirected read fails under both checks.
        for check in [Check::All, Check::Header] {
            assert!(decode_record_checked(&buf, offs[0] + 8, check).is_err());
            assert!(
                plan_update(
                    &buf,
                    offs[0] + 8,
                    StateSlot {
                        version: 9,
                        ..rec(1, b"a", b"x").slot
                    },
                    &path(),
                    check
                )
                .is_err()
            );
        }
        // The body CRC is what Check::Header leaves out.
        let last = buf.len() - 1 - buf.iter().rev().position(|&b| b != 0).unwrap();
        buf[last] ^= 1;
        assert!(matches!(
            decode_record_at(&buf, offs[1]),
            Err(Defect::BadRecord(_))
        ));
        assert!(decode_record_checked(&buf, offs[1], Check::Header).is_ok());
    }

    #[test]
    fn record_moved_to_another_offset_is_rejected() {
        let r = rec(1, b"a", b"x");
        let mut buf = encode_file_header(spoke()).to_vec();
        buf.extend_from_slice(&[0; 8]);
        buf.extend_from_slice(&encode_record(FILE_HEADER_LEN, &r));
        assert!(matches!(
            decode_record_at(&buf, FILE_HEADER_LEN + 8),
            Err(Defect::BadHeader(_))
        ));
    }

    #[test]
    fn no_state_slot_crosses_a_sector() {
        for pos in (FILE_HEADER_LEN..4 * SECTOR_LEN).step_by(RECORD_ALIGN as usize) {
            let at = record_at(FORMAT_VERSION, pos);
            assert!(at >= pos && at - pos <= 72 && at.is_multiple_of(RECORD_ALIGN));
            for slot in [
                offset_of!(RecordHeader, slot_a),
                offset_of!(RecordHeader, slot_b),
            ] {
                let (start, last) = (at + slot as u64, at + slot as u64 + SLOT_LEN - 1);
                assert_eq!(start / SECTOR_LEN, last / SECTOR_LEN, "record at {at}");
            }
            assert_eq!(record_at(2, pos), pos, "version 2 packs records");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut buf = encode_file_header(spoke()).to_vec();
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            buf.push((x >> 16) as u8);
        }
        // Plant a record magic with garbage after it.
        buf[64..68].copy_from_slice(&RECORD_MAGIC);
        for n in [0, 10, 64, 70, 100, 144, 1000, buf.len()] {
            let p = path();
            let mut it = scan_records(&buf[..n.min(buf.len())], &p);
            for r in it.by_ref() {
                let _ = r;
            }
            assert!(it.end() <= align_up(buf.len() as u64));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Five records with bodies of the given lengths, and their [start, end) ranges.
        fn sample(lens: &[usize]) -> (Vec<u8>, Vec<(u64, u64)>) {
            let bodies: Vec<Vec<u8>> = lens.iter().map(|&n| vec![0x5a; n]).collect();
            let recs: Vec<NewRecord<'_>> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| rec(i as u64 + 1, b"tube", b))
                .collect();
            let (buf, offs) = image(&recs);
            let ranges = offs
                .iter()
                .zip(&recs)
                .map(|(&o, r)| (o, o + record_len(r.tube.len(), r.body.len())))
                .collect();
            (buf, ranges)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any damage to one byte: every record not containing it still comes back,
            /// and nothing panics.
            #[test]
            fn one_damaged_byte_only_costs_its_own_record(
                lens in proptest::collection::vec(0usize..40, 1..6),
                pick in any::<proptest::sample::Index>(),
                xor in 1u8..=255,
                tail in 0usize..64,
            ) {
                let (mut buf, ranges) = sample(&lens);
                buf.resize(buf.len() + tail, 0);
                let at = FILE_HEADER_LEN as usize
                    + pick.index(buf.len() - FILE_HEADER_LEN as usize);
                buf[at] ^= xor;
                let p = path();
                let got: Vec<u64> = scan_records(&buf, &p)
                    .filter_map(|r| r.ok().map(|v| v.offset))
                    .collect();
                for &(start, end) in &ranges {
                    let hit = (start..end).contains(&(at as u64));
                    if !hit {
                        prop_assert!(got.contains(&start), "record at {start} lost (byte {at})");
                    }
                }
                prop_assert!(got.iter().all(|o| ranges.iter().any(|r| r.0 == *o)), "phantom record");
            }

            /// A reopened segment's data ends after its last record, whatever zero bytes end
            /// that record's body and whatever zero tail follows (regression: the end was
            /// taken at the last non-zero byte, inside such a record).
            #[test]
            fn append_end_is_the_end_of_the_last_record(
                lens in proptest::collection::vec(0usize..40, 1..6),
                zeros in 0usize..40,
                tail in 0usize..200,
            ) {
                let mut bodies: Vec<Vec<u8>> = lens.iter().map(|&n| vec![0x5a; n]).collect();
                if let Some(last) = bodies.last_mut() {
                    let n = last.len();
                    last[n - zeros.min(n)..].fill(0);
                }
                let recs: Vec<NewRecord<'_>> = bodies
                    .iter()
                    .enumerate()
                    .map(|(i, b)| rec(i as u64 + 1, b"tube", b))
                    .collect();
                let (mut buf, offs) = image(&recs);
                let last = recs.last().unwrap();
                let end = offs.last().unwrap() + record_len(last.tube.len(), last.body.len());
                buf.resize(buf.len() + tail, 0);
                prop_assert_eq!(append_end(&buf), end);
            }

            /// A file cut anywhere keeps every record that ends before the cut.
            #[test]
            fn truncation_keeps_complete_records(
                lens in proptest::collection::vec(0usize..40, 1..6),
                pick in any::<proptest::sample::Index>(),
            ) {
                let (buf, ranges) = sample(&lens);
                let cut = pick.index(buf.len() + 1);
                let p = path();
                let mut it = scan_records(&buf[..cut], &p);
                let got: Vec<u64> = it.by_ref().filter_map(|r| r.ok().map(|v| v.offset)).collect();
                for &(start, end) in &ranges {
                    // The padding is not needed to read a record back.
                    let body_end = end.min(buf.len() as u64);
                    if body_end <= cut as u64 {
                        prop_assert!(got.contains(&start));
                    }
                }
                prop_assert!(it.end() >= FILE_HEADER_LEN.min(cut as u64));
            }
        }
    }
}
