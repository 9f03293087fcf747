//! `LazySegment`: appends with positioned writes, maps only while reads or updates need it.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapMut;

use super::file::{
    check_can_free, create_file, file_data_end, open_rw, punch_hole, read_file_header, used,
    used_mut,
};
use super::format::{
    Check, FILE_HEADER_LEN, FORMAT_VERSION, check_new_record, encode_record, invalid_input,
    read_record, record_at, record_len_at, scan_meta, scan_meta_from, write_freed, write_update,
};
use super::fsio;
use super::mmap;
use super::{
    NewRecord, Record, RecordMeta, RecordOffset, Result, Segment, SpokeId, StateSlot, StorageError,
    file_len,
};

/// A segment that holds neither a mapping nor a file descriptor while idle.
///
/// - `append` writes the record with one positioned write (the file grows by exactly the
///   record), so far-future jobs cost page cache, not resident memory of this process;
/// - `read`, `update` and `scan` map the file, ahead of its end ([`mmap::map_ahead`]), so
///   that the records appended next are read through the same mapping: it is remapped only
///   when the data outgrows it (doubling), not after every append;
/// - `close` unmaps and closes the file: an idle segment is this struct and nothing else.
///
/// Like [`super::MappedSegment`], only use it inside a locked [`super::DataDir`].
#[derive(Debug)]
pub struct LazySegment {
    path: PathBuf,
    spoke: SpokeId,
    /// Shared with sync batches ([`Segment::sync_handle`]) while open.
    file: Option<Arc<File>>,
    map: Option<MmapMut>,
    end: u64,
    /// The file's format version: where appended records go ([`record_at`]).
    version: u32,
    /// Writes not yet made durable by `flush` (through the mapping or positioned writes).
    data_dirty: bool,
    name_dirty: bool,
}

/// The least length a segment is mapped with (address space only: pages past the data are
/// never touched, so they cost no memory).
const MIN_MAP_LEN: u64 = 1 << 20;

/// How much a segment whose data ends at `end` maps: twice that (at least [`MIN_MAP_LEN`]),
/// so that appends remap it O(log size) times.
fn map_len(end: u64) -> u64 {
    end.saturating_mul(2).max(MIN_MAP_LEN)
}

impl LazySegment {
    /// The segment's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is mapped right now (false after `close` until the next read).
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }

    fn file(&mut self) -> Result<&File> {
        if self.file.is_none() {
            self.file = Some(Arc::new(open_rw(&self.path)?));
        }
        Ok(self.file.as_deref().expect("file was opened just above"))
    }

    /// The mapping, covering at least every appended byte (and usually more: only bytes
    /// below `end`, which the file holds, may be touched).
    fn mapping(&mut self) -> Result<&mut MmapMut> {
        if self
            .map
            .as_ref()
            .is_none_or(|m| (m.len() as u64) < self.end)
        {
            self.map = None;
            self.file()?;
            let file = self.file.as_ref().expect("file was opened just above");
            let map = mmap::map_ahead(file, &self.path, map_len(self.end))?;
            self.map = Some(map);
        }
        Ok(self.map.as_mut().expect("mapping was set just above"))
    }
}

impl Segment for LazySegment {
    const FILE_BACKED: bool = true;

    fn create(dir: &Path, spoke: SpokeId) -> Result<Self> {
        let (path, file) = create_file(dir, spoke)?;
        Ok(LazySegment {
            path,
            spoke,
            file: Some(Arc::new(file)),
            map: None,
            end: FILE_HEADER_LEN,
            version: FORMAT_VERSION,
            data_dirty: true,
            name_dirty: true,
        })
    }

    fn open(path: &Path) -> Result<Self> {
        let file = open_rw(path)?;
        let (spoke, version) = read_file_header(&file, path)?;
        let end = file_data_end(&file, path)?;
        // A last record cut short (an append torn by a crash) still claims its whole length,
        // and appends go after it, so `end` can lie past the end of the file. This segment's
        // mappings reach past the end of the file and only bytes below `end` may be touched
        // (`mmap.rs`, rule 3): the file must hold them, so it grows to `end` with zeros.
        let len = file_len(&file, path)?;
        if end > len {
            file.set_len(end).map_err(|e| StorageError::io(path, e))?;
        }
        Ok(LazySegment {
            path: path.to_path_buf(),
            spoke,
            file: None,
            map: None,
            end,
            version,
            data_dirty: false,
            name_dirty: false,
        })
    }

    /// A lazy file grows by exactly each record appended, so a file as long as the summary
    /// says ends where it said: no search for the end (a read of the tail and a mapping per
    /// segment at start-up). Any other length (an append since, torn or not) opens as usual.
    fn open_sized(path: &Path, byte_size: u64) -> Result<Self> {
        let file = open_rw(path)?;
        let (spoke, version) = read_file_header(&file, path)?;
        let len = file_len(&file, path)?;
        if len != byte_size {
            return Self::open(path);
        }
        Ok(LazySegment {
            path: path.to_path_buf(),
            spoke,
            file: None,
            map: None,
            end: byte_size,
            version,
            data_dirty: false,
            name_dirty: false,
        })
    }

    fn spoke(&self) -> SpokeId {
        self.spoke
    }

    fn append(&mut self, rec: &NewRecord<'_>) -> Result<RecordOffset> {
        check_new_record(rec).map_err(|r| invalid_input(&self.path, r))?;
        let offset = record_at(self.version, self.end);
        let bytes = encode_record(offset, rec);
        let path = self.path.clone();
        let file = self.file()?;
        if let Err(e) = file.write_all_at(&bytes, offset) {
            // A write cut short (disk full) left the start of the record past `end`: zero it,
            // so the zero tail still marks the end of the data and no torn record is found
            // there after a restart. Best effort: the bytes it cannot rewrite were not written
            // either (the same pages ran out of space).
            let _ = file.write_all_at(&vec![0u8; bytes.len()], offset);
            return Err(StorageError::io(&path, e));
        }
        self.end = offset + bytes.len() as u64;
        self.data_dirty = true;
        Ok(offset)
    }

    fn read(&mut self, offset: RecordOffset) -> Result<Record> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping()?;
        read_record(used(map, end), offset, &path, Check::All)
    }

    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> Result<()> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping()?;
        write_update(used_mut(map, end), offset, slot, &path, Check::All)?;
        self.data_dirty = true;
        Ok(())
    }

    fn record_len(&mut self, offset: RecordOffset) -> Result<u64> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping()?;
        record_len_at(used(map, end), offset, &path)
    }

    fn free_run(&mut self, offset: RecordOffset, run: u64) -> Result<()> {
        check_can_free(&self.path, self.version)?;
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping()?;
        write_freed(used_mut(map, end), offset, run, &path, Check::All)?;
        self.data_dirty = true;
        Ok(())
    }

    fn punch(&mut self, from: u64, to: u64) -> Result<u64> {
        let to = to.min(self.end);
        let path = self.path.clone();
        let file = self.file()?;
        punch_hole(file, &path, from, to)?;
        Ok(to.saturating_sub(from))
    }

    fn drop_pages(&mut self, from: u64, to: u64) {
        if let Some(map) = &self.map {
            let (from, to) = (from as usize, to.min(self.end) as usize);
            if let Err(e) = mmap::drop_pages(map, from, to) {
                tracing::debug!(path = %self.path.display(), "madvise: {e}");
            }
        }
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn scan(&mut self) -> Result<Vec<Result<RecordMeta>>> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping()?;
        Ok(scan_meta(used(map, end), &path).0)
    }

    fn scan_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<RecordMeta>>, Option<RecordOffset>)> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping()?;
        Ok(scan_meta_from(used(map, end), &path, from, max))
    }

    fn flush(&mut self) -> Result<()> {
        if self.data_dirty {
            // fdatasync alone, for any data end: it writes back the pages of positioned
            // writes and those dirtied through a mapping, current or dropped by `close` (one
            // page cache). An msync of the mapping would add nothing, and the data may
            // reach past it (appends since the last read did not remap).
            let path = self.path.clone();
            fsio::sync_file(self.file()?).map_err(|e| StorageError::io(&path, e))?;
            self.data_dirty = false;
        }
        if self.name_dirty {
            fsio::sync_parent_dir(&self.path)?;
            self.name_dirty = false;
        }
        Ok(())
    }

    fn byte_size(&self) -> u64 {
        self.end
    }

    fn close(&mut self) -> Result<()> {
        self.map = None;
        self.file = None;
        Ok(())
    }

    fn sync_handle(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    fn destroy(mut self) -> Result<()> {
        self.close()?;
        fs::remove_file(&self.path).map_err(|e| StorageError::io(&self.path, e))
    }
}
