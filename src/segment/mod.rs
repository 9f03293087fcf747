//! Storage: one segment file per spoke, holding fixed-layout job records.
//!
//! The [`Segment`] trait is the whole contract the hub relies on; [`MappedSegment`],
//! [`LazySegment`] and [`MemSegment`] implement it. The byte layout is specified in
//! `storage-format.md` at the top of the repository.
//!
//! - [`format`](mod@format): the on-disk structs and the one scanner (recovery and `yaad-dump` share it);
//! - [`DataDir`]: the exclusive lock and the segment files of a data dir;
//! - [`IdIndex`]: job id → [`JobLocation`], on disk (`ids.yaad`) or in memory;
//! - [`Summary`]: the far spokes' figures for start-up (`summary.yaad`), their names files
//!   ([`spoke_names`]), and the [`ChangeJournal`]s naming the segments changed since;
//! - [`dump`]: `yaad-dump`'s logic. Only `mmap.rs` contains `unsafe`.

use std::path::{Path, PathBuf};

mod datadir;
pub mod dump;
mod file;
pub use file::punch_file;
pub mod format;
pub mod fsio;
mod ids;
pub mod journal;
mod lazy;
mod mapped;
mod mem;
mod mmap;
pub mod powercut;
pub mod snapshot;
pub mod spoke_names;
mod summary;

pub use datadir::{COMPACT_DIR, DataDir, ID_INDEX_FILE, LOCK_FILE, SUMMARY_FILE};
pub use format::{parse_segment_file_name, segment_file_name};
pub use fsio::boot_id;
pub use ids::{
    Covered, DurableIds, ID_ENTRY_LEN, ID_FILE_MAGIC, ID_FILE_VERSION, ID_HEADER_LEN, IdEntry,
    IdFileHeader, IdIndex, IdReader, IdReservation, JobLocation, damaged_high_water,
};
pub use journal::ChangeJournal;
pub use lazy::{LAZY_RESERVE, LazySegment};
pub use mapped::{INITIAL_FILE_LEN, MappedSegment, grown_len};
pub use mem::MemSegment;
pub(crate) use mmap::Deferral;
#[cfg(test)]
pub(crate) use mmap::deferring;
pub use mmap::{Access, Prefault, page_size};
pub use summary::{SUMMARY_MAGIC, SUMMARY_VERSION, SpokeSummary, Summary};

/// Microseconds since the Unix epoch: the one time unit on disk and in the hub.
pub type Micros = u64;

/// Microseconds per second.
pub const SECOND: Micros = 1_000_000;

/// Byte offset of a record from the start of its segment file.
pub type RecordOffset = u64;

/// The persisted state of a job record (one byte on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum JobState {
    /// Delayed or ready: decided by comparing the trigger time with now.
    Waiting = 1,
    /// Ready whatever the trigger time (a kicked delayed job).
    Ready = 2,
    /// Buried.
    Buried = 3,
    /// Deleted (cancelled): recovery drops it.
    Deleted = 4,
    /// Superseded by a newer record of the same id elsewhere (release with delay).
    Moved = 5,
    /// Dead, and the start of a freed run: the bytes up to the end of the run (in the slot)
    /// hold only dead records and may be holes (format version 4, see `store::free`).
    Freed = 6,
}

/// The mutable part of a record: rewritten in place by [`Segment::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSlot {
    /// Increases with every persisted change of the job, across records of the same id.
    pub version: u32,
    pub state: JobState,
    pub priority: u32,
    /// The job's counters as of this change.
    pub counters: JobCounters,
}

/// The per-job counters `stats-job` shows, persisted with every state slot (as beanstalkd's
/// binlog keeps them with each job record). A change that happens without a write (a
/// reserve, a TTR timeout) reaches the disk with the job's next persisted change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounters {
    pub reserves: u32,
    pub timeouts: u32,
    pub releases: u32,
    pub buries: u32,
    pub kicks: u32,
}

/// A job to append: everything a record holds.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    pub id: u64,
    pub trigger_at: Micros,
    pub created_at: Micros,
    pub ttr: u32,
    pub tube: &'a [u8],
    /// The job's name (format version 5; empty for an unnamed job): at most
    /// [`format::MAX_NAME_LEN`] bytes.
    pub name: &'a [u8],
    pub body: &'a [u8],
    pub slot: StateSlot,
}

impl NewRecord<'_> {
    /// The record's length in a segment, padding included.
    pub fn len(&self) -> u64 {
        format::record_len(self.tube.len(), self.name.len() + self.body.len())
    }

    /// Never true: a record always has its header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A record read back from a segment, with its CRCs verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: RecordOffset,
    pub id: u64,
    pub trigger_at: Micros,
    pub created_at: Micros,
    pub ttr: u32,
    pub tube: Vec<u8>,
    /// The job's name, empty if it has none.
    pub name: Vec<u8>,
    pub body: Vec<u8>,
    /// The valid state slot with the highest version.
    pub slot: StateSlot,
}

impl Record {
    /// Its metadata (what [`Segment::scan`] gives for it).
    pub fn meta(&self) -> RecordMeta {
        RecordMeta {
            offset: self.offset,
            id: self.id,
            trigger_at: self.trigger_at,
            created_at: self.created_at,
            ttr: self.ttr,
            tube: self.tube.clone(),
            name: self.name.clone(),
            body_len: (self.name.len() + self.body.len()) as u32,
            slot: self.slot,
        }
    }
}

/// A record's header fields and tube without its body: what recovery and spoke loading need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset: RecordOffset,
    pub id: u64,
    pub trigger_at: Micros,
    pub created_at: Micros,
    pub ttr: u32,
    pub tube: Vec<u8>,
    /// The job's name, empty if it has none.
    pub name: Vec<u8>,
    /// The bytes after the tube name: the name and the body (the header's `body_len`).
    pub body_len: u32,
    pub slot: StateSlot,
}

/// Errors of the storage layer.
#[derive(Debug)]
pub enum StorageError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A record or header failed validation (bad magic, CRC, length).
    Corrupted {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The data dir is locked by another process.
    Locked { dir: PathBuf },
    /// No space left on the device.
    DiskFull { path: PathBuf },
    /// A system limit was reached: memory, memory mappings (`vm.max_map_count`) or open files.
    Exhausted {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StorageError::Corrupted {
                file,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "{}: corrupted record at offset {offset}: {reason}",
                    file.display()
                )
            }
            StorageError::Locked { dir } => write!(
                f,
                "data dir {} is in use by another yaad process (lock held)",
                dir.display()
            ),
            StorageError::DiskFull { path } => {
                write!(f, "{}: no space left on device", path.display())
            }
            StorageError::Exhausted { path, source } => write!(
                f,
                "{}: {source} (a system limit: memory, memory mappings or open files)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StorageError {}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Wraps an I/O error on `path`; "no space left" becomes [`StorageError::DiskFull`], and
    /// running out of memory, mappings or file descriptors [`StorageError::Exhausted`].
    pub fn io(path: &Path, source: std::io::Error) -> StorageError {
        if source.kind() == std::io::ErrorKind::StorageFull {
            StorageError::DiskFull {
                path: path.to_path_buf(),
            }
        } else if matches!(
            source.raw_os_error(),
            Some(libc::ENOMEM | libc::EMFILE | libc::ENFILE)
        ) {
            StorageError::Exhausted {
                path: path.to_path_buf(),
                source,
            }
        } else {
            StorageError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// A [`StorageError::Corrupted`]: what failed validation in `file` at `offset`, and why.
    pub fn corrupted(file: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupted {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

/// The length of an open file (a segment or the id index).
pub(crate) fn file_len(file: &std::fs::File, path: &Path) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len())
}

/// Identity of a spoke's segment: its time bucket `[start, start + span)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpokeId {
    pub start: Micros,
    pub span: Micros,
}

#[cfg(test)]
impl SpokeId {
    /// Tests: the 1-second spoke starting at `start`.
    pub(crate) fn second_at(start: Micros) -> SpokeId {
        SpokeId {
            start,
            span: 1_000_000,
        }
    }
}

/// One spoke's job records. Implementations: mapped, lazy, mem.
pub trait Segment: Sized {
    /// Whether the segment's file is its durable copy, kept current while running (mapped,
    /// lazy). False for mem mode: the segment lives on the heap, and the store writes every
    /// segment's image as one snapshot at a flush ([`snapshot`]).
    const FILE_BACKED: bool;
    /// Creates an empty segment for `spoke` in `dir` (mem: in memory only, `dir` kept for flush).
    fn create(dir: &Path, spoke: SpokeId) -> Result<Self>;
    /// Opens an existing segment file, validating its file header (not its records).
    fn open(path: &Path) -> Result<Self>;
    /// Like [`Segment::open`] for a segment whose [`Segment::byte_size`] a trusted start-up
    /// summary states, so the end of its data need not be searched for (mapped mode reads a
    /// file's zero tail to find it). A mode that finds it cheaply just opens.
    fn open_sized(path: &Path, byte_size: u64) -> Result<Self> {
        let _ = byte_size;
        Self::open(path)
    }
    /// The spoke this segment belongs to.
    fn spoke(&self) -> SpokeId;
    /// Appends a record (growing the segment if full) and returns its offset.
    fn append(&mut self, rec: &NewRecord<'_>) -> Result<RecordOffset>;
    /// Reads and verifies the record at `offset`.
    fn read(&mut self, offset: RecordOffset) -> Result<Record>;
    /// Persists a new state slot for the record at `offset` (older of its two slots).
    fn update(&mut self, offset: RecordOffset, slot: StateSlot) -> Result<()>;
    /// The length of the record at `offset`, padding included (from its header).
    fn record_len(&mut self, offset: RecordOffset) -> Result<u64>;
    /// Marks the record at `offset` the start of a freed run of `run` bytes (a `Freed` slot,
    /// [`format::write_freed`]): the caller knows that every record from `offset` to
    /// `offset + run` is dead. Files of a version before [`format::FREED_RUNS_SINCE`] refuse.
    fn free_run(&mut self, offset: RecordOffset, run: u64) -> Result<()>;
    /// Gives back the bytes `from..to` (page-aligned, inside freed runs whose `Freed` slot is
    /// durable, never a run's first record header): holes punched in the file (mapped, lazy;
    /// their pages also leave the page cache and the mapping), pages returned to the system
    /// (mem). They read as zeros afterwards and are never written again. Returns how many
    /// bytes were given back (a small mem segment, on the heap, gives back none).
    fn punch(&mut self, from: u64, to: u64) -> Result<u64>;
    /// Lets the whole pages inside `from..to` leave this process's resident memory now (dead
    /// records before they can be punched, records a scan has read): a file mapping drops them
    /// (the page cache keeps the bytes; touched again, they are mapped again); a mode that
    /// holds no mapping of them does nothing. A `to` past the end of the data takes the rest
    /// of the mapping too: `drop_pages(0, u64::MAX)` lets the whole segment go.
    fn drop_pages(&mut self, from: u64, to: u64) {
        let _ = (from, to);
    }
    /// The file's format version (where records go, whether runs can be freed).
    fn version(&self) -> u32;
    /// Every record in append order, one `Result` per record; corrupt ones are `Err` and skipped.
    fn scan(&mut self) -> Result<Vec<Result<RecordMeta>>>;
    /// Up to `max` records from `from` (a position returned by an earlier call; 0: the first
    /// record) in append order, and where to continue (`None`: the end), for scans in bounded
    /// steps. The default scans everything and keeps what lies at or after `from`.
    fn scan_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<RecordMeta>>, Option<RecordOffset>)> {
        let at = |r: &Result<RecordMeta>| match r {
            Ok(m) => m.offset,
            Err(StorageError::Corrupted { offset, .. }) => *offset,
            Err(_) => u64::MAX,
        };
        let mut rest: Vec<Result<RecordMeta>> =
            self.scan()?.into_iter().filter(|r| at(r) >= from).collect();
        if rest.len() <= max {
            return Ok((rest, None));
        }
        let tail = rest.split_off(max);
        let next = tail.first().map(at);
        Ok((rest, next))
    }
    /// [`Segment::scan_from`] of whole records, bodies included, each verified once: for a
    /// caller that needs every record it scans (a split moving them). The default reads each
    /// record `scan_from` finds.
    fn scan_records_from(
        &mut self,
        from: RecordOffset,
        max: usize,
    ) -> Result<(Vec<Result<Record>>, Option<RecordOffset>)> {
        let (metas, next) = self.scan_from(from, max)?;
        let records = metas
            .into_iter()
            .map(|m| m.and_then(|m| self.read(m.offset)))
            .collect();
        Ok((records, next))
    }
    /// Makes every change so far durable on the device (mem: writes the segment file).
    fn flush(&mut self) -> Result<()>;
    /// Bytes used by records so far (the high-water mark, including the file header).
    fn byte_size(&self) -> u64;
    /// Releases what an idle segment holds (lazy: its mapping and file descriptor; mapped: its
    /// file descriptor); later calls reacquire it.
    fn close(&mut self) -> Result<()>;
    /// Deletes the segment's file; the spoke is retired.
    fn destroy(self) -> Result<()>;
    /// Gives the segment's file the name `to` (in the same directory), so that a new segment
    /// of the same spoke can be created at the old name while this one waits to be destroyed
    /// (there). File-backed segments only: a mem segment's file belongs to its last snapshot,
    /// and renaming it is refused.
    fn rename(&mut self, to: &Path) -> Result<()> {
        Err(StorageError::io(
            to,
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "only file-backed segments are renamed",
            ),
        ))
    }
    /// The segment's open file, shared, so that a sync outside the hub's lock need not open it
    /// by path; `None` when no file is open (lazy after `close`, mem). Syncing it must make the
    /// segment's changes durable (fdatasync also writes back pages dirtied through a mapping).
    fn sync_handle(&self) -> Option<std::sync::Arc<std::fs::File>> {
        None
    }
    /// The pages holding bytes `from..to` of the segment (as far as its file holds them), to
    /// be faulted in for `access` outside the hub lock just before a call reads or writes there
    /// ([`Prefault`]); `None` when the segment has no mapping (mem, lazy while closed).
    fn prefault(&self, _from: u64, _to: u64, _access: Access) -> Option<Prefault> {
        None
    }
    /// Makes the file hold bytes up to `to` now, as appends up to there would (disk reserved,
    /// mapped), so that a [`Segment::prefault`] reaches them and the appends grow nothing.
    /// Changes no byte of the data; a segment without a mapping (mem, lazy while closed) does
    /// nothing.
    fn reserve_ahead(&mut self, _to: u64) -> Result<()> {
        Ok(())
    }
    /// The whole file image when the segment lives in memory (mem mode), for a
    /// [`snapshot`] flush; `None` for segments backed by their file.
    fn image(&self) -> Option<&[u8]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::StorageError;
    use std::io::{Error, ErrorKind};
    use std::path::Path;

    #[test]
    fn io_errors_are_classified() {
        let p = Path::new("seg");
        let kind = |e: Error| match StorageError::io(p, e) {
            StorageError::DiskFull { .. } => "full",
            StorageError::Exhausted { .. } => "limit",
            StorageError::Io { .. } => "io",
            _ => "other",
        };
        assert_eq!(kind(Error::from(ErrorKind::StorageFull)), "full");
        for errno in [libc::ENOMEM, libc::EMFILE, libc::ENFILE] {
            assert_eq!(
                kind(Error::from_raw_os_error(errno)),
                "limit",
                "errno {errno}"
            );
        }
        assert_eq!(kind(Error::from_raw_os_error(libc::EIO)), "io");
        assert_eq!(
            crate::hub::HubError::from(StorageError::io(p, Error::from_raw_os_error(libc::EMFILE))),
            crate::hub::HubError::OutOfMemory
        );
    }
}
