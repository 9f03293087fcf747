//! `MemSegment`: the segment layout in a heap buffer, written to disk only on `flush`.

use std::fs;
use std::path::{Path, PathBuf};

use super::file::{remove_if_exists, write_file_atomically};
use super::format::{
    Check, FORMAT_VERSION, append_end, check_new_record, decode_file_header, encode_file_header,
    encode_record_into, file_header_error, header_version, invalid_input, read_record, record_at,
    record_len, scan_meta, scan_meta_from, segment_file_name, write_update,
};
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
    buf: Vec<u8>,
    /// The file's format version: where appended records go ([`record_at`]).
    version: u32,
    /// Where the records this process appended start: those below came from a file and are
    /// verified in full when read; those from here on were encoded by `append` into this
    /// buffer, which nothing else writes, so reads and updates check only their header
    /// ([`Check::Header`]).
    own_from: u64,
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
            buf,
        })
    }

    fn open(path: &Path) -> Result<Self> {
        let mut buf = fs::read(path).map_err(|e| StorageError::io(path, e))?;
        let spoke =
            decode_file_header(&buf).map_err(|reason| file_header_error(path, &buf, reason))?;
        // A file written by the mapped mode has a zero tail: drop it (not the last record's
        // own zero bytes, nor what a torn last record claims: the buffer grows to cover it).
        let end = append_end(&buf);
        buf.resize(end as usize, 0);
        Ok(MemSegment {
            path: path.to_path_buf(),
            spoke,
            own_from: end,
            version: header_version(&buf),
            buf,
        })
    }

    fn spoke(&self) -> SpokeId {
        self.spoke
    }

    fn append(&mut self, rec: &NewRecord<'_>) -> Result<RecordOffset> {
        check_new_record(rec).map_err(|r| invalid_input(&self.path, r))?;
        let offset = record_at(self.version, self.buf.len() as u64);
        let len = record_len(rec.tube.len(), rec.body.len()) as usize;
        self.buf.resize(offset as usize + len, 0);
        encode_record_into(offset, rec, &mut self.buf[offset as usize..]);
        Ok(offset)
    }

    fn read(&mut self, offset: RecordOffset) -> Result<Record> {
        read_record(&self.buf, offset, &self.path, self.check(offset))
    }

    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> Result<()> {
        let check = self.check(offset);
        write_update(&mut self.buf, offset, slot, &self.path, check)
    }

    fn scan(&mut self) -> Result<Vec<Result<RecordMeta>>> {
        Ok(scan_meta(&self.buf, &self.path).0)
    }

    fn scan_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<RecordMeta>>, Option<RecordOffset>)> {
        Ok(scan_meta_from(&self.buf, &self.path, from, max))
    }

    fn flush(&mut self) -> Result<()> {
        write_file_atomically(&self.path, &self.buf)
    }

    fn byte_size(&self) -> u64 {
        self.buf.len() as u64
    }

    fn close(&mut self) -> Result<()> {
        Ok(())
    }

    fn image(&self) -> Option<&[u8]> {
        Some(&self.buf)
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
