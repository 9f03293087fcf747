//! Walking a whole segment file image: the one scanner ([`Records`], shared by recovery and
//! `yaad-dump`) and where the data of a file ends (appends continue there).

use std::mem::offset_of;
use std::path::Path;

use super::{
    Defect, FILE_HEADER_LEN, HEADER_CRC_COVERS, RECORD_ALIGN, RECORD_HEADER_LEN, RECORD_MAGIC,
    RecordHeader, RecordView, align_up, crc_header_bytes, current_freed_run, decode_header_at,
    decode_record_at, header_version, record_at, record_len,
};
use crate::segment::{Record, RecordMeta, RecordOffset, StorageError};

/// Offset just past the last non-zero byte of `bytes` at or after `from`, rounded up to
/// [`RECORD_ALIGN`] (and at least `from`): where the next record can go without
/// overwriting anything.
pub fn data_end(bytes: &[u8], from: u64) -> u64 {
    let from_us = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    match bytes[from_us..].iter().rposition(|&b| b != 0) {
        Some(i) => align_up((from_us + i + 1) as u64),
        None => from,
    }
}

/// Where a reopened segment's data ends (appends continue there), given its whole file
/// image: past the last non-zero byte rounded up to [`RECORD_ALIGN`] ([`data_end`]), or past
/// the end of the last record if that is later. A record ends in its body and zero padding,
/// and a body may end in zero bytes: cut at its last non-zero byte, the record would be seen
/// as truncated and the next append would overwrite its end.
///
/// The last record is the one at the highest 8-aligned offset below `data_end` holding a valid
/// header (its CRC binds the offset, so a header image inside a body does not match); only its
/// CRC-covered bytes 0..48 need be there, so a header whose write was cut short in its state
/// slots still keeps appends out of the record it claims. Only that record's bytes are looked
/// at, backwards, so this costs about one record.
pub fn append_end(bytes: &[u8]) -> u64 {
    append_end_from(bytes, data_end(bytes, FILE_HEADER_LEN))
}

/// [`append_end`] when [`data_end`] is already known (found without reading the zero tail
/// through a mapping, see `file::file_data_end`): only the last record's bytes are read.
pub fn append_end_from(bytes: &[u8], end: u64) -> u64 {
    let mut pos = end;
    while pos > FILE_HEADER_LEN {
        pos -= RECORD_ALIGN;
        let at = pos as usize;
        if bytes.get(at..at + RECORD_MAGIC.len()) != Some(&RECORD_MAGIC[..]) {
            continue;
        }
        // A header cut short (fewer than RECORD_HEADER_LEN bytes left) still claims its
        // length: appends go past it, never into it.
        if let Some(len) = claimed_record_len(bytes, pos) {
            return end.max(pos.saturating_add(len));
        }
    }
    end
}

/// The length of the record whose header starts at `offset`, judged by the header's immutable
/// part alone (magic and header CRC, bytes 0..48): also when `bytes` ends inside the header's
/// state slots (a write cut short), where [`decode_header_at`] says truncated.
fn claimed_record_len(bytes: &[u8], offset: RecordOffset) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let head = bytes.get(start..start.checked_add(offset_of!(RecordHeader, slot_a))?)?;
    let field =
        |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    if head[..RECORD_MAGIC.len()] != RECORD_MAGIC
        || crc_header_bytes(offset, &head[..HEADER_CRC_COVERS]) != field(HEADER_CRC_COVERS)
    {
        return None;
    }
    let tube_len = usize::from(head[offset_of!(RecordHeader, tube_len)]);
    let body_len = field(offset_of!(RecordHeader, body_len)) as usize;
    let len = record_len(tube_len, body_len);
    // A freed run claims its whole length: the records it covers (their bytes may be holes,
    // so zeros) are not where appends go.
    let run = decode_header_at(bytes, offset)
        .ok()
        .and_then(current_freed_run)
        .unwrap_or(0);
    Some(len.max(run))
}

/// Iterates over the records of a whole file image, one `Result` per record or per
/// corrupt region, in file order. Created by [`scan_records`].
///
/// Recovery rules (the same for the daemon and `yaad-dump`):
/// - header valid, body CRC or both slots bad: `Err` for that record, continue after it;
/// - header invalid (magic or CRC): `Err` at that offset, then resume at the next
///   8-aligned offset holding a valid header; if there is none, the rest is one bad region;
/// - an all-zero header with only zeros after it: the clean end of the records;
/// - a valid header whose record runs past the end of the data: `Err`, then stop;
/// - a record whose current slot is `Freed`: yielded (dead), and the scan continues after its
///   run, without reading the bytes in between (they may be holes).
pub struct Records<'a, 'p> {
    bytes: &'a [u8],
    file: &'p Path,
    /// The file's format version (where records are placed: [`record_at`]).
    version: u32,
    pos: u64,
    done: bool,
    /// One past the last byte used by a record or by corrupt data seen so far.
    end: u64,
}

/// Scans the records of `bytes`, a whole segment file image starting with its file header
/// (which this does not check: see [`super::decode_file_header`]). `file` names the errors.
pub fn scan_records<'a, 'p>(bytes: &'a [u8], file: &'p Path) -> Records<'a, 'p> {
    Records {
        bytes,
        file,
        version: header_version(bytes),
        pos: FILE_HEADER_LEN,
        done: false,
        end: FILE_HEADER_LEN,
    }
}

/// [`scan_records`] from offset `from` (where a record starts, as returned by
/// [`Records::next_offset`]; 0: the first record).
pub fn scan_records_from<'a, 'p>(bytes: &'a [u8], file: &'p Path, from: u64) -> Records<'a, 'p> {
    let mut it = scan_records(bytes, file);
    it.pos = it.pos.max(from);
    it.end = it.pos;
    it
}

impl Records<'_, '_> {
    /// Where the scan goes on: past the last record yielded (and past its freed run).
    pub fn next_offset(&self) -> u64 {
        self.pos
    }

    /// After the scan: where the next record can be appended without overwriting any byte
    /// the scan saw (valid records, or corrupt data kept for inspection).
    pub fn end(&self) -> u64 {
        self.end
    }

    fn is_zero(&self, from: u64) -> bool {
        usize::try_from(from)
            .ok()
            .and_then(|f| self.bytes.get(f..))
            .is_none_or(|rest| rest.iter().all(|&b| b == 0))
    }

    /// Next 8-aligned offset after `from` holding a valid record header, if any.
    fn resync(&self, from: u64) -> Option<u64> {
        self.resync_before(from, u64::MAX)
    }

    /// Like [`Self::resync`], looking only at offsets below `limit`.
    fn resync_before(&self, from: u64, limit: u64) -> Option<u64> {
        let mut pos = from + RECORD_ALIGN;
        while pos < limit && pos + RECORD_HEADER_LEN <= self.bytes.len() as u64 {
            let at = pos as usize;
            if self.bytes[at..at + 4] == RECORD_MAGIC && decode_header_at(self.bytes, pos).is_ok() {
                return Some(pos);
            }
            pos += RECORD_ALIGN;
        }
        None
    }
}

impl<'a> Iterator for Records<'a, '_> {
    type Item = Result<RecordView<'a>, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let pos = record_at(self.version, self.pos);
        if self.is_zero(pos) {
            self.done = true;
            return None;
        }
        match decode_record_at(self.bytes, pos) {
            Ok(v) => {
                self.pos = pos + v.len();
                self.end = self.pos;
                Some(Ok(v))
            }
            Err(Defect::BadRecord(r)) => {
                // The header is trusted, so its lengths are: skip this record, unless a valid
                // record starts inside it. Then it is torn (a write cut short, its header
                // completed by bytes of a record appended over its missing part after a
                // reopen), and its length runs over that record. Header CRCs bind their
                // offset, so a header image inside a body does not match.
                let h = decode_header_at(self.bytes, pos).ok()?;
                let claimed = pos + record_len(usize::from(h.tube_len), h.body_len.get() as usize);
                self.pos = self.resync_before(pos, claimed).unwrap_or(claimed);
                self.end = self.pos;
                Some(Err(StorageError::corrupted(self.file, pos, r)))
            }
            Err(Defect::Truncated(r)) => match self.resync(pos) {
                // A torn record with records appended after it (see BadRecord).
                Some(next) => {
                    self.pos = next;
                    self.end = next;
                    Some(Err(StorageError::corrupted(
                        self.file,
                        pos,
                        format!("torn: {r}"),
                    )))
                }
                None => {
                    self.done = true;
                    self.end = data_end(self.bytes, pos);
                    Some(Err(StorageError::corrupted(
                        self.file,
                        pos,
                        format!("truncated: {r}"),
                    )))
                }
            },
            Err(Defect::BadHeader(r)) => match self.resync(pos) {
                Some(next) => {
                    self.pos = next;
                    self.end = next;
                    Some(Err(StorageError::corrupted(
                        self.file,
                        pos,
                        format!("{r}; skipped {} bytes to the next valid record", next - pos),
                    )))
                }
                None => {
                    self.done = true;
                    self.end = data_end(self.bytes, pos);
                    Some(Err(StorageError::corrupted(
                        self.file,
                        pos,
                        format!("{r}; no valid record after it"),
                    )))
                }
            },
        }
    }
}

/// Every record's metadata in file order (corrupt ones as `Err`), and the append position.
pub fn scan_meta(bytes: &[u8], file: &Path) -> (Vec<Result<RecordMeta, StorageError>>, u64) {
    let mut it = scan_records(bytes, file);
    let metas = it.by_ref().map(|r| r.map(|v| v.to_meta())).collect();
    (metas, it.end())
}

/// Up to `max` records of a whole file image, from `from` (where a record starts, as returned
/// by an earlier call; 0: the first record), and where the next call continues (`None`: no
/// record is left). For scans in bounded steps.
pub fn scan_meta_from(
    bytes: &[u8],
    file: &Path,
    from: u64,
    max: usize,
) -> (Vec<Result<RecordMeta, StorageError>>, Option<u64>) {
    scan_from_with(bytes, file, from, max, |v| v.to_meta())
}

/// [`scan_meta_from`] of whole records, bodies included: for a caller that goes on to read
/// each record it scans (a split moving them), which would verify every record twice.
pub fn scan_full_from(
    bytes: &[u8],
    file: &Path,
    from: u64,
    max: usize,
) -> (Vec<Result<Record, StorageError>>, Option<u64>) {
    scan_from_with(bytes, file, from, max, |v| v.to_record())
}

fn scan_from_with<T>(
    bytes: &[u8],
    file: &Path,
    from: u64,
    max: usize,
    copy: impl Fn(&RecordView<'_>) -> T,
) -> (Vec<Result<T, StorageError>>, Option<u64>) {
    let mut it = scan_records_from(bytes, file, from);
    let found: Vec<_> = it.by_ref().take(max).map(|r| r.map(|v| copy(&v))).collect();
    let next = (!it.done && found.len() == max).then_some(it.pos);
    (found, next)
}
