//! `LazySegment`: maps its file only while the segment is in use, and appends through that mapping.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{
    check_can_free, create_file, file_data_end, open_rw, punch_hole, read_file_header, used,
    used_mut,
};
use super::format::{
    Check, FILE_HEADER_LEN, FORMAT_VERSION, check_new_record, encode_record, encode_record_into,
    invalid_input, read_record, record_at, record_len_at, scan_full_from, scan_meta,
    scan_meta_from, write_freed, write_update,
};
use super::fsio;
use super::mapped::PWRITE_FROM;
use super::mmap;
use super::{
    NewRecord, Record, RecordMeta, RecordOffset, Result, Segment, SpokeId, StateSlot, StorageError,
    file_len,
};

/// A segment that holds neither a mapping nor a file descriptor while idle.
///
/// - The file is mapped ahead of its end ([`mmap::map_ahead`]), so that it is remapped only
///   when the data outgrows the mapping (doubling), not after every append.
/// - `append` stores a record through that mapping into a tail the file has reserved on
///   disk: the file grows [`LAZY_RESERVE`] bytes at a time with `posix_fallocate` (a full
///   disk is an error then, never a SIGBUS on the store). The pages left behind the tail are
///   dropped from the process every `DROP_EVERY` bytes, so an open segment keeps about that
///   much of its appends resident (a write fault maps the page cache's whole folio, 16 KiB
///   here): far-future jobs cost page cache, not resident memory. A record of
///   [`PWRITE_FROM`] bytes or more is written with `pwrite` instead (no page faults for it).
/// - `read`, `update` and `scan` go through the same mapping.
/// - `close` unmaps, cuts the reserved tail off (the file ends where its data ends again)
///   and closes the file: an idle segment is this struct and nothing else.
///
/// Like [`super::MappedSegment`], only use it inside a locked [`super::DataDir`].
#[derive(Debug)]
pub struct LazySegment {
    path: PathBuf,
    spoke: SpokeId,
    /// Shared with sync batches ([`Segment::sync_handle`]) while open.
    file: Option<Arc<File>>,
    map: Option<mmap::AheadMap>,
    /// Where the data ends: appends go here.
    end: u64,
    /// The file's length: `end` plus a tail reserved for appends, cut off by `close`.
    len: u64,
    /// Pages below this offset were dropped from the process after appends passed them.
    dropped: u64,
    /// Whether page faults in the mapping read around the faulting page ([`mmap::read_around`]:
    /// off while the segment is only written, on once it is read).
    reads_around: bool,
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

/// An open lazy file reserves disk for appends up to the next multiple of this: a
/// `posix_fallocate` per this many bytes appended, and less than this much disk unused per
/// open segment (`close` gives it back).
pub const LAZY_RESERVE: u64 = 64 * 1024;

/// Appends drop the pages they left behind from the process once this many bytes have
/// gathered: one `madvise` per this many bytes, and about this much of an open segment's
/// appends resident (plus the rest of the folio holding the end, which one write fault maps
/// whole).
const DROP_EVERY: u64 = 16 * 1024;

impl LazySegment {
    /// The segment's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is mapped right now (false after `close` until the next use).
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }

    /// Where the mapping starts in this process's address space (`None`: not mapped), so
    /// that a test can find its resident pages in `/proc/self/smaps`.
    pub fn mapping_address(&self) -> Option<usize> {
        self.map.as_ref().map(|m| m.as_ptr() as usize)
    }

    fn file(&mut self) -> Result<&File> {
        if self.file.is_none() {
            self.file = Some(Arc::new(open_rw(&self.path)?));
        }
        Ok(self.file.as_deref().expect("file was opened just above"))
    }

    /// The mapping, covering at least every appended byte (and usually more: only bytes
    /// below `len`, which the file holds, may be touched), for reading (`reads`) or writing.
    fn mapping(&mut self, reads: bool) -> Result<&mut mmap::AheadMap> {
        self.mapping_to(self.end, reads)
    }

    /// The mapping, covering at least `need` bytes; a read turns on reading around faults
    /// ([`mmap::AheadMap::read_around`]), a mapping made for writing starts with it off.
    fn mapping_to(&mut self, need: u64, reads: bool) -> Result<&mut mmap::AheadMap> {
        if self.map.as_ref().is_none_or(|m| (m.len() as u64) < need) {
            self.map = None;
            self.file()?;
            let file = self.file.as_ref().expect("file was opened just above");
            let map = mmap::map_ahead(file, &self.path, map_len(need))?;
            if !reads {
                map.read_around(false);
            }
            self.reads_around = reads;
            self.map = Some(map);
        }
        let map = self.map.as_mut().expect("mapping was set just above");
        if reads && !self.reads_around {
            map.read_around(true);
            self.reads_around = true;
        }
        Ok(map)
    }

    /// Makes the file at least `need` bytes long, with disk reserved: up to the next multiple
    /// of [`LAZY_RESERVE`], or on a nearly full disk just what `need` takes.
    fn reserve(&mut self, need: u64) -> Result<()> {
        if need <= self.len {
            return Ok(());
        }
        let path = self.path.clone();
        let file = self.file()?;
        let ahead = need.div_ceil(LAZY_RESERVE).saturating_mul(LAZY_RESERVE);
        self.len = mmap::reserve_or_just(file, &path, ahead, need)?;
        Ok(())
    }

    /// Cuts the reserved tail off the file, which then ends where its data ends. The file
    /// must not be mapped (`mmap.rs`, rule 2). Failing leaves a longer file whose zero tail
    /// reads as the end of the data, as after a crash.
    fn cut_tail(&mut self) {
        debug_assert!(self.map.is_none());
        if self.len > self.end
            && let Some(file) = &self.file
        {
            match file.set_len(self.end) {
                Ok(()) => self.len = self.end,
                Err(e) => tracing::debug!(path = %self.path.display(), "cutting the tail: {e}"),
            }
        }
    }

    /// Drops the pages appends left behind from the process, once `DROP_EVERY` bytes of
    /// them have gathered (the page holding `end` stays: the next append writes on).
    fn drop_behind(&mut self) {
        let page = crate::segment::page_size() as u64;
        let to = self.end / page * page;
        if to < self.dropped + DROP_EVERY {
            return;
        }
        if let Some(map) = &self.map
            && let Err(e) = map.drop_pages(self.dropped as usize, to as usize)
        {
            tracing::debug!(path = %self.path.display(), "madvise: {e}");
        }
        self.dropped = to;
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
            len: FILE_HEADER_LEN,
            dropped: 0,
            reads_around: true,
            version: FORMAT_VERSION,
            data_dirty: true,
            name_dirty: true,
        })
    }

    fn open(path: &Path) -> Result<Self> {
        let file = open_rw(path)?;
        let (spoke, version) = read_file_header(&file, path)?;
        let end = file_data_end(&file, path)?;
        // The file is made to end where its data ends:
        // - a tail reserved for appends and left by a crash is cut off (zeros past the data),
        //   so the file is as long as the start-up summary says again, and every byte past
        //   `end` in it is one this segment reserved itself;
        // - a last record cut short (an append torn by a crash) still claims its whole length,
        //   and appends go after it, so `end` can lie past the end of the file. This segment's
        //   mappings reach past the end of the file and only bytes the file holds may be
        //   touched (`mmap.rs`, rule 3): the file grows to `end` with zeros.
        let len = file_len(&file, path)?;
        if end != len {
            file.set_len(end).map_err(|e| StorageError::io(path, e))?;
        }
        Ok(LazySegment {
            path: path.to_path_buf(),
            spoke,
            file: None,
            map: None,
            end,
            len: end,
            dropped: 0,
            reads_around: true,
            version,
            data_dirty: false,
            name_dirty: false,
        })
    }

    /// A closed lazy file ends where its data ends (`close` cuts the reserved tail off), so a
    /// file as long as the summary says ends where it said: no search for the end (a read of
    /// the tail and a mapping per segment at start-up). Any other length (an append since,
    /// torn or not, or a reserved tail a crash left) opens as usual.
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
            len: byte_size,
            dropped: 0,
            reads_around: true,
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
        let end = offset + rec.len();
        if end - offset >= PWRITE_FROM {
            let bytes = encode_record(offset, rec);
            let path = self.path.clone();
            let file = self.file()?;
            if let Err(e) = file.write_all_at(&bytes, offset) {
                // A write cut short (disk full) left the start of the record past `end`: zero
                // it, so the zero tail still marks the end of the data and no torn record is
                // found there after a restart. Best effort: the bytes it cannot rewrite were
                // not written either (the same pages ran out of space).
                let _ = file.write_all_at(&vec![0u8; bytes.len()], offset);
                return Err(StorageError::io(&path, e));
            }
            self.len = self.len.max(end);
        } else {
            self.reserve(end)?;
            let map = self.mapping_to(end, false)?;
            encode_record_into(offset, rec, &mut map[offset as usize..end as usize]);
        }
        self.end = end;
        self.data_dirty = true;
        self.drop_behind();
        Ok(offset)
    }

    fn read(&mut self, offset: RecordOffset) -> Result<Record> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping(true)?;
        read_record(used(map, end), offset, &path, Check::All)
    }

    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> Result<()> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping(false)?;
        write_update(used_mut(map, end), offset, slot, &path, Check::All)?;
        self.data_dirty = true;
        Ok(())
    }

    fn record_len(&mut self, offset: RecordOffset) -> Result<u64> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping(true)?;
        record_len_at(used(map, end), offset, &path)
    }

    fn free_run(&mut self, offset: RecordOffset, run: u64) -> Result<()> {
        check_can_free(&self.path, self.version)?;
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping(false)?;
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
            let (from, to) = (from as usize, mmap::pages_to(to, self.end));
            if let Err(e) = map.drop_pages(from, to) {
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
        let map = self.mapping(true)?;
        Ok(scan_meta(used(map, end), &path).0)
    }

    fn scan_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<RecordMeta>>, Option<RecordOffset>)> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping(true)?;
        Ok(scan_meta_from(used(map, end), &path, from, max))
    }

    fn scan_records_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<Record>>, Option<RecordOffset>)> {
        let end = self.end;
        let path = self.path.clone();
        let map = self.mapping(true)?;
        Ok(scan_full_from(used(map, end), &path, from, max))
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
        self.dropped = 0;
        self.cut_tail();
        self.file = None;
        Ok(())
    }

    fn sync_handle(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    fn prefault(&self, from: u64, to: u64, access: super::Access) -> Option<super::Prefault> {
        // Only bytes below `len` are in the file; the mapping may reach further.
        let map = self.map.as_ref()?;
        map.prefault(from as usize, to.min(self.len) as usize, access)
    }

    fn reserve_ahead(&mut self, to: u64) -> Result<()> {
        if self.map.is_none() {
            return Ok(());
        }
        self.reserve(to)?;
        self.mapping_to(to, false).map(|_| ())
    }

    fn rename(&mut self, to: &Path) -> Result<()> {
        super::file::rename_to(&mut self.path, to)
    }

    fn destroy(mut self) -> Result<()> {
        self.map = None;
        self.file = None;
        fs::remove_file(&self.path).map_err(|e| StorageError::io(&self.path, e))
    }
}
