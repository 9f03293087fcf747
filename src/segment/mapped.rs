//! `MappedSegment`: the file is mapped when opened and stays mapped.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{
    abandon_created, check_can_free, create_file, nonzero_end, open_rw, punch_hole,
    read_file_header, used, used_mut,
};
use super::format::{
    Check, FILE_HEADER_LEN, FORMAT_VERSION, append_end_from, check_new_record, encode_record,
    encode_record_into, invalid_input, read_record, record_at, record_len_at, scan_full_from,
    scan_meta, scan_meta_from, write_freed, write_update,
};
use super::fsio;
use super::mmap;
use super::{
    NewRecord, Record, RecordMeta, RecordOffset, Result, Segment, SpokeId, StateSlot, StorageError,
    file_len,
};

/// Size a new mapped segment file starts with, and the unit it grows by.
pub const INITIAL_FILE_LEN: u64 = 64 * 1024;

/// The most a mapped segment file grows by at once: the disk a file that grows without end
/// (the spoke of now under churn, whose dead runs become holes) reserves ahead.
pub const GROW_MAX: u64 = 4 << 20;

/// A mapped file that a record does not fit grows by `1 / GROWTH_DIVISOR` of its length (at
/// least [`INITIAL_FILE_LEN`], at most [`GROW_MAX`]), so its allocated blocks stay within
/// 1.25× its data plus 64 KiB, and a file of `n` bytes is remapped O(log n) times up to
/// 16 MiB (~3× as often as doubling, which held up to 2× the data), linearly beyond. A remap
/// costs a `posix_fallocate` of the new part and a fresh mapping whose pages fault in again
/// as they are touched (appends touch the tail).
const GROWTH_DIVISOR: u64 = 4;

/// The length a mapped file of `len` bytes grows to so that `need` bytes fit: a quarter more
/// (at least [`INITIAL_FILE_LEN`], at most [`GROW_MAX`] more), in multiples of
/// [`INITIAL_FILE_LEN`].
pub fn grown_len(len: u64, need: u64) -> u64 {
    let step = (len / GROWTH_DIVISOR).clamp(INITIAL_FILE_LEN, GROW_MAX);
    need.max(len.saturating_add(step))
        .div_ceil(INITIAL_FILE_LEN)
        .saturating_mul(INITIAL_FILE_LEN)
}

/// Records at least this long are appended with `pwrite` rather than stored through the
/// mapping. A store into a fresh page of a shared file mapping takes a write fault and an
/// `ext4_page_mkwrite` per 4 KiB page, and leaves the pages mapped into the process until
/// they are dropped; `pwrite` copies into the page cache without touching the mapping. For a
/// small record one store is cheaper than the system call, so they keep going through the
/// mapping.
pub const PWRITE_FROM: u64 = 16 * 1024;

/// A segment whose whole file is mapped for its lifetime.
///
/// The mapping needs no open file once made, so [`Segment::close`] (the hub closes idle far
/// spokes beyond a few dozen) gives the file descriptor back and it is opened again only to
/// grow the file or sync its size: jobs spread over a day are tens of thousands of spokes,
/// more than a process may hold open files.
///
/// Only use it on files inside a [`super::DataDir`] this process has locked (see
/// `mmap.rs` for why that makes the mapping sound).
#[derive(Debug)]
pub struct MappedSegment {
    path: PathBuf,
    spoke: SpokeId,
    /// Shared with sync batches ([`Segment::sync_handle`]); `None` after `close`.
    file: Option<Arc<File>>,
    map: mmap::AheadMap,
    /// Append position: one past the last used byte.
    end: u64,
    /// The file's format version: where appended records go ([`record_at`]).
    version: u32,
    /// The file grew (metadata to sync) or was created (directory entry to sync).
    size_dirty: bool,
    name_dirty: bool,
    /// Whether page faults in the mapping read around the faulting page
    /// ([`mmap::AheadMap::read_around`]:
    /// off from `create` until the segment is first read).
    reads_around: bool,
}

impl MappedSegment {
    /// The segment's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the mapping starts in this process's address space, so that a test can find it
    /// in `/proc/self/smaps`.
    pub fn mapping_address(&self) -> usize {
        self.map.as_ptr() as usize
    }

    /// The open file, opened again if `close` let it go.
    fn file(&mut self) -> Result<Arc<File>> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let file = Arc::new(open_rw(&self.path)?);
        self.file = Some(file.clone());
        Ok(file)
    }

    fn grow_to_fit(&mut self, need: u64) -> Result<()> {
        let len = self.map.len() as u64;
        if need <= len {
            return Ok(());
        }
        let file = self.file()?;
        let just_enough = need
            .div_ceil(INITIAL_FILE_LEN)
            .saturating_mul(INITIAL_FILE_LEN);
        mmap::reserve_or_just(&file, &self.path, grown_len(len, need), just_enough)?;
        self.map = mmap::map(&file, &self.path)?;
        if !self.reads_around {
            self.map.read_around(false);
        }
        self.size_dirty = true;
        Ok(())
    }

    /// Turns reading around page faults on before a read ([`mmap::AheadMap::read_around`]).
    fn reading(&mut self) {
        if !self.reads_around {
            self.map.read_around(true);
            self.reads_around = true;
        }
    }
}

impl Segment for MappedSegment {
    const FILE_BACKED: bool = true;

    fn create(dir: &Path, spoke: SpokeId) -> Result<Self> {
        let (path, file) = create_file(dir, spoke)?;
        let map = match mmap::reserve(&file, &path, INITIAL_FILE_LEN)
            .and_then(|()| mmap::map(&file, &path))
        {
            Ok(map) => map,
            Err(e) => {
                drop(file);
                return Err(abandon_created(&path, e));
            }
        };
        map.read_around(false);
        Ok(MappedSegment {
            path,
            spoke,
            file: Some(Arc::new(file)),
            map,
            end: FILE_HEADER_LEN,
            version: FORMAT_VERSION,
            size_dirty: true,
            name_dirty: true,
            reads_around: false,
        })
    }

    fn open(path: &Path) -> Result<Self> {
        let file = open_rw(path)?;
        let (spoke, version) = read_file_header(&file, path)?;
        // Found by reads, not through the mapping: its zero tail would stay resident.
        let nonzero = nonzero_end(&file, path)?;
        let mut map = mmap::map(&file, path)?;
        let end = append_end_from(&map, nonzero);
        if end > map.len() as u64 {
            // A last record (or freed run) cut short still claims its whole length, and
            // appends go after it: the file covers it, as in the other modes.
            mmap::reserve(&file, path, end)?;
            map = mmap::map(&file, path)?;
        }
        Ok(MappedSegment {
            path: path.to_path_buf(),
            spoke,
            file: Some(Arc::new(file)),
            map,
            end,
            version,
            size_dirty: false,
            name_dirty: false,
            reads_around: true,
        })
    }

    fn open_sized(path: &Path, byte_size: u64) -> Result<Self> {
        let file = open_rw(path)?;
        let (spoke, version) = read_file_header(&file, path)?;
        let len = file_len(&file, path)?;
        // Cheap evidence that nothing was appended after the summary: the bytes from its end
        // to the first 8 of where the next record would go (after a gap, format version 3)
        // are still zero. Otherwise search for the end as `open` does (the caller then sees
        // another size and scans the segment).
        let next_end = record_at(version, byte_size).saturating_add(8);
        let plausible = (FILE_HEADER_LEN..=len).contains(&byte_size)
            && (next_end > len || {
                let mut next = vec![0u8; (next_end - byte_size) as usize];
                file.read_exact_at(&mut next, byte_size).is_ok() && next.iter().all(|&b| b == 0)
            });
        if !plausible {
            return Self::open(path);
        }
        let map = mmap::map(&file, path)?;
        Ok(MappedSegment {
            path: path.to_path_buf(),
            spoke,
            file: Some(Arc::new(file)),
            map,
            end: byte_size,
            version,
            size_dirty: false,
            name_dirty: false,
            reads_around: true,
        })
    }

    fn spoke(&self) -> SpokeId {
        self.spoke
    }

    fn append(&mut self, rec: &NewRecord<'_>) -> Result<RecordOffset> {
        check_new_record(rec).map_err(|r| invalid_input(&self.path, r))?;
        let offset = record_at(self.version, self.end);
        let end = offset + rec.len();
        self.grow_to_fit(end)?;
        if end - offset >= PWRITE_FROM {
            // The file is reserved up to the mapping's length, so the write finds its blocks.
            let file = self.file()?;
            if let Err(e) = file.write_all_at(&encode_record(offset, rec), offset) {
                // A write cut short leaves the start of the record past `end`: zero what it
                // wrote, so the zero tail still marks the end of the data.
                self.map[offset as usize..end as usize].fill(0);
                return Err(StorageError::io(&self.path, e));
            }
        } else {
            encode_record_into(offset, rec, &mut self.map[offset as usize..end as usize]);
        }
        self.end = end;
        Ok(offset)
    }

    fn read(&mut self, offset: RecordOffset) -> Result<Record> {
        self.reading();
        read_record(used(&self.map, self.end), offset, &self.path, Check::All)
    }

    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> Result<()> {
        write_update(
            used_mut(&mut self.map, self.end),
            offset,
            slot,
            &self.path,
            Check::All,
        )
    }

    fn record_len(&mut self, offset: RecordOffset) -> Result<u64> {
        self.reading();
        record_len_at(used(&self.map, self.end), offset, &self.path)
    }

    fn free_run(&mut self, offset: RecordOffset, run: u64) -> Result<()> {
        check_can_free(&self.path, self.version)?;
        write_freed(
            used_mut(&mut self.map, self.end),
            offset,
            run,
            &self.path,
            Check::All,
        )
    }

    fn punch(&mut self, from: u64, to: u64) -> Result<u64> {
        let to = to.min(self.end);
        let file = self.file()?;
        punch_hole(&file, &self.path, from, to)?;
        Ok(to.saturating_sub(from))
    }

    fn drop_pages(&mut self, from: u64, to: u64) {
        let (from, to) = (from as usize, mmap::pages_to(to, self.end));
        if let Err(e) = self.map.drop_pages(from, to) {
            tracing::debug!(path = %self.path.display(), "madvise: {e}");
        }
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn scan(&mut self) -> Result<Vec<Result<RecordMeta>>> {
        self.reading();
        Ok(scan_meta(used(&self.map, self.end), &self.path).0)
    }

    fn scan_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<RecordMeta>>, Option<RecordOffset>)> {
        self.reading();
        Ok(scan_meta_from(
            used(&self.map, self.end),
            &self.path,
            from,
            max,
        ))
    }

    fn scan_records_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<Record>>, Option<RecordOffset>)> {
        self.reading();
        Ok(scan_full_from(
            used(&self.map, self.end),
            &self.path,
            from,
            max,
        ))
    }

    fn flush(&mut self) -> Result<()> {
        fsio::sync_map(&self.map, &self.path).map_err(|e| StorageError::io(&self.path, e))?;
        if self.size_dirty {
            fsio::sync_file(&*self.file()?).map_err(|e| StorageError::io(&self.path, e))?;
            self.size_dirty = false;
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

    /// Keeps the mapping, lets the file descriptor go.
    fn close(&mut self) -> Result<()> {
        self.file = None;
        // Idle: its pages leave the process (the page cache keeps them).
        self.drop_pages(0, u64::MAX);
        Ok(())
    }

    fn sync_handle(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    fn prefault(&self, from: u64, to: u64, access: super::Access) -> Option<super::Prefault> {
        // The mapping covers the whole file.
        self.map.prefault(from as usize, to as usize, access)
    }

    fn reserve_ahead(&mut self, to: u64) -> Result<()> {
        self.grow_to_fit(to)
    }

    fn rename(&mut self, to: &Path) -> Result<()> {
        super::file::rename_to(&mut self.path, to)
    }

    fn destroy(self) -> Result<()> {
        let MappedSegment {
            path, map, file, ..
        } = self;
        drop(map);
        drop(file);
        fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))
    }
}
