//! `MemSegment`: the segment layout in a heap buffer, written to disk only on `flush`.

use std::fs;
use std::path::{Path, PathBuf};

use super::file::{check_can_free, read_sparse, remove_if_exists, write_file_atomically};
use super::format::{
    Check, FORMAT_VERSION, append_end, check_new_record, decode_file_header, encode_file_header,
    encode_record_into, file_header_error, header_version, invalid_input, read_record, record_at,
    record_len_at, scan_full_from, scan_meta, scan_meta_from, segment_file_name, write_freed,
    write_update,
};
use super::mmap::AnonBuf;
use super::{
    NewRecord, Record, RecordMeta, RecordOffset, Result, Segment, SpokeId, StateSlot, StorageError,
};

/// A segment held entirely in memory, byte for byte the file it flushes to.
///
/// `flush` replaces the file atomically (temporary file, fsync, rename, fsync of the dir),
/// so a crash during a flush leaves the previous file or the new one, never a mix.
#[derive(Debug)]
pub struct MemSegment {
    path: PathBuf,
    spoke: SpokeId,
    /// The file image: header and records, no zero tail (`len()` is the append position).
    buf: Buf,
    /// The file's format version: where appended records go ([`record_at`]).
    version: u32,
    /// Where the records this process appended start: those below came from a file and are
    /// verified in full when read; those from here on were encoded by `append` into this
    /// buffer, which nothing else writes, so reads and updates check only their header
    /// ([`Check::Header`]).
    own_from: u64,
}

/// A segment's bytes: on the heap while small; past [`ANON_FROM`] in anonymous memory, whose
/// pages of freed runs go back to the system ([`Segment::punch`]). Small segments stay on the
/// heap so that many of them (a past spoke per second kept by one buried job) do not use up
/// the process's mappings.
#[derive(Debug)]
enum Buf {
    Heap(Vec<u8>),
    Anon(AnonBuf),
}

/// Size from which a segment's bytes move to anonymous memory (no copy and no doubling slack
/// as it grows; a mapping each).
const ANON_FROM: usize = 64 << 10;

impl Buf {
    fn bytes(&self) -> &[u8] {
        match self {
            Buf::Heap(v) => v,
            Buf::Anon(a) => a.bytes(),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Buf::Heap(v) => v,
            Buf::Anon(a) => a.bytes_mut(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Buf::Heap(v) => v.len(),
            Buf::Anon(a) => a.len(),
        }
    }

    /// Grows to `len` bytes (zeros), moving to anonymous memory past [`ANON_FROM`].
    fn grow(&mut self, len: usize, path: &Path) -> Result<()> {
        match self {
            Buf::Heap(v) if len <= ANON_FROM => {
                if len > v.len() {
                    v.resize(len, 0);
                }
                Ok(())
            }
            Buf::Heap(v) => {
                let mut a = AnonBuf::with_bytes(v, len.saturating_mul(2))
                    .map_err(|e| StorageError::io(path, e))?;
                a.grow(len).map_err(|e| StorageError::io(path, e))?;
                *self = Buf::Anon(a);
                Ok(())
            }
            Buf::Anon(a) => a.grow(len).map_err(|e| StorageError::io(path, e)),
        }
    }
}

/// A segment file's image: read whole onto the heap when small, else into anonymous memory
/// chunk by chunk, its all-zero chunks (freed runs, a mapped file's zero tail) left untouched
/// so that they cost no memory.
fn read_image(path: &Path) -> Result<Buf> {
    let io = |e| StorageError::io(path, e);
    let file = fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len <= ANON_FROM as u64 {
        let mut v = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut &file, &mut v).map_err(io)?;
        return Ok(Buf::Heap(v));
    }
    let len = usize::try_from(len).map_err(|_| invalid_input(path, "file too large".into()))?;
    let mut a = AnonBuf::with_bytes(&[], len).map_err(io)?;
    a.grow(len).map_err(io)?;
    read_sparse(&file, len as u64, |at, chunk| {
        a.bytes_mut()[at..at + chunk.len()].copy_from_slice(chunk);
    })
    .map_err(io)?;
    Ok(Buf::Anon(a))
}

impl MemSegment {
    fn check(&self, offset: RecordOffset) -> Check {
        if offset >= self.own_from {
            Check::Header
        } else {
            Check::All
        }
    }
}

impl MemSegment {
    /// The file this segment flushes to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Segment for MemSegment {
    const FILE_BACKED: bool = false;

    fn create(dir: &Path, spoke: SpokeId) -> Result<Self> {
        let buf = encode_file_header(spoke).to_vec();
        Ok(MemSegment {
            path: dir.join(segment_file_name(spoke)),
            spoke,
            own_from: buf.len() as u64,
            version: FORMAT_VERSION,
            buf: Buf::Heap(buf),
        })
    }

    fn open(path: &Path) -> Result<Self> {
        let mut buf = read_image(path)?;
        let spoke = decode_file_header(buf.bytes())
            .map_err(|reason| file_header_error(path, buf.bytes(), reason))?;
        // A file written by the mapped mode has a zero tail: drop it (not the last record's
        // own zero bytes, nor what a torn last record claims: the buffer grows to cover it).
        let end = append_end(buf.bytes());
        match &mut buf {
            Buf::Heap(v) => v.resize(end as usize, 0),
            Buf::Anon(a) if end as usize <= a.len() => a.cut_zero_tail(end as usize),
            Buf::Anon(a) => a
                .grow(end as usize)
                .map_err(|e| StorageError::io(path, e))?,
        }
        let version = header_version(buf.bytes());
        Ok(MemSegment {
            path: path.to_path_buf(),
            spoke,
            own_from: end,
            version,
            buf,
        })
    }

    fn spoke(&self) -> SpokeId {
        self.spoke
    }

    fn append(&mut self, rec: &NewRecord<'_>) -> Result<RecordOffset> {
        check_new_record(rec).map_err(|r| invalid_input(&self.path, r))?;
        let offset = record_at(self.version, self.buf.len() as u64);
        let len = rec.len() as usize;
        self.buf.grow(offset as usize + len, &self.path)?;
        encode_record_into(offset, rec, &mut self.buf.bytes_mut()[offset as usize..]);
        Ok(offset)
    }

    fn read(&mut self, offset: RecordOffset) -> Result<Record> {
        read_record(self.buf.bytes(), offset, &self.path, self.check(offset))
    }

    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> Result<()> {
        let check = self.check(offset);
        write_update(self.buf.bytes_mut(), offset, slot, &self.path, check)
    }

    fn record_len(&mut self, offset: RecordOffset) -> Result<u64> {
        record_len_at(self.buf.bytes(), offset, &self.path)
    }

    fn free_run(&mut self, offset: RecordOffset, run: u64) -> Result<()> {
        check_can_free(&self.path, self.version)?;
        let check = self.check(offset);
        write_freed(self.buf.bytes_mut(), offset, run, &self.path, check)
    }

    fn punch(&mut self, from: u64, to: u64) -> Result<u64> {
        match &mut self.buf {
            // Small: nothing worth giving back.
            Buf::Heap(_) => Ok(0),
            Buf::Anon(a) => a
                .release(
                    usize::try_from(from).unwrap_or(usize::MAX),
                    usize::try_from(to).unwrap_or(usize::MAX),
                )
                .map_err(|e| StorageError::io(&self.path, e)),
        }
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn scan(&mut self) -> Result<Vec<Result<RecordMeta>>> {
        Ok(scan_meta(self.buf.bytes(), &self.path).0)
    }

    fn scan_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<RecordMeta>>, Option<RecordOffset>)> {
        Ok(scan_meta_from(self.buf.bytes(), &self.path, from, max))
    }

    fn scan_records_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<Record>>, Option<RecordOffset>)> {
        Ok(scan_full_from(self.buf.bytes(), &self.path, from, max))
    }

    fn flush(&mut self) -> Result<()> {
        write_file_atomically(&self.path, self.buf.bytes())
    }

    fn byte_size(&self) -> u64 {
        self.buf.len() as u64
    }

    fn close(&mut self) -> Result<()> {
        Ok(())
    }

    fn image(&self) -> Option<&[u8]> {
        Some(self.buf.bytes())
    }

    fn destroy(self) -> Result<()> {
        remove_if_exists(&self.path).map(|_| ())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn no_space_left_is_disk_full() {
        // /dev/full fails every write with ENOSPC.
        let err = fs::write("/dev/full", b"x").unwrap_err();
        let e = StorageError::io(Path::new("/dev/full"), err);
        assert!(matches!(e, StorageError::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("no space left"));
    }
}
