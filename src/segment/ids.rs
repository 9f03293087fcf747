//! The id index: job id → (spoke, record offset), so a job in an idle segment can be
//! found without holding anything per job in memory.
//!
//! File mode: `ids.yaad` in the data dir, a 64-byte [`IdFileHeader`] then one 32-byte
//! [`IdEntry`] per id at `64 + (id - base) * 32`, read and written with positioned I/O
//! (never mapped: it costs page cache, not resident memory). An all-zero entry is "no job".
//! Memory mode: sorted chunks of packed locations, ~16 bytes per job ([`mem`]). The index is derived data: recovery rebuilds it from the
//! segment scans, and a reader checks the record it points at has the id it looked up.

mod mem;

use std::fs::{File, OpenOptions};
use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RecordOffset, Result, SpokeId, StorageError, file_len};

/// First bytes of `ids.yaad`.
pub const ID_FILE_MAGIC: [u8; 8] = *b"YAADIDX\0";
/// Version of the id index layout.
pub const ID_FILE_VERSION: u32 = 1;
/// Size of the id index file header.
pub const ID_HEADER_LEN: u64 = size_of::<IdFileHeader>() as u64;
/// Size of one id index entry.
pub const ID_ENTRY_LEN: u64 = size_of::<IdEntry>() as u64;

/// Header of `ids.yaad`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct IdFileHeader {
    /// [`ID_FILE_MAGIC`].
    pub magic: [u8; 8],
    /// [`ID_FILE_VERSION`].
    pub version: U32,
    /// Size of one entry (32).
    pub entry_len: U32,
    /// The id stored in the first entry.
    pub base: U64,
    /// Zero.
    pub reserved: [u8; 36],
    /// CRC-32 of bytes 0..60.
    pub crc: U32,
}

/// One entry of `ids.yaad`: where the current record of one job id is.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct IdEntry {
    /// Start of the spoke holding the record (µs since the epoch).
    pub spoke_start: U64,
    /// Span of that spoke (µs); 0 only in an empty entry.
    pub spoke_span: U64,
    /// Offset of the record in the spoke's segment file.
    pub record_offset: U64,
    /// Zero.
    pub reserved: [u8; 4],
    /// CRC-32 of the id (8 bytes LE) followed by bytes 0..28 of this entry.
    pub crc: U32,
}

const _: () = {
    assert!(size_of::<IdFileHeader>() == 64);
    assert!(offset_of!(IdFileHeader, magic) == 0);
    assert!(offset_of!(IdFileHeader, version) == 8);
    assert!(offset_of!(IdFileHeader, entry_len) == 12);
    assert!(offset_of!(IdFileHeader, base) == 16);
    assert!(offset_of!(IdFileHeader, reserved) == 24);
    assert!(offset_of!(IdFileHeader, crc) == 60);
    assert!(size_of::<IdEntry>() == 32);
    assert!(offset_of!(IdEntry, spoke_start) == 0);
    assert!(offset_of!(IdEntry, spoke_span) == 8);
    assert!(offset_of!(IdEntry, record_offset) == 16);
    assert!(offset_of!(IdEntry, reserved) == 24);
    assert!(offset_of!(IdEntry, crc) == 28);
};

/// Where a job's current record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobLocation {
    pub spoke: SpokeId,
    pub offset: RecordOffset,
}

/// The id index, on disk or in memory.
#[derive(Debug)]
pub struct IdIndex {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    File {
        path: PathBuf,
        file: Arc<File>,
        base: u64,
        dirty: bool,
        /// Entries set and not written yet ([`Run`]).
        pending: Run,
    },
    Mem {
        map: mem::MemIds,
        high_water: u64,
    },
}

/// Ids a new index file starts at (job ids start at 1).
const DEFAULT_BASE: u64 = 1;

fn entry_crc(id: u64, e: &IdEntry) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&id.to_le_bytes());
    c.update(&e.as_bytes()[..offset_of!(IdEntry, crc)]);
    c.finalize()
}

fn header_bytes(base: u64) -> [u8; ID_HEADER_LEN as usize] {
    let mut h = IdFileHeader {
        magic: ID_FILE_MAGIC,
        version: U32::new(ID_FILE_VERSION),
        entry_len: U32::new(ID_ENTRY_LEN as u32),
        base: U64::new(base),
        reserved: [0; 36],
        crc: U32::new(0),
    };
    h.crc = U32::new(crc32fast::hash(
        &h.as_bytes()[..offset_of!(IdFileHeader, crc)],
    ));
    let mut out = [0u8; ID_HEADER_LEN as usize];
    out.copy_from_slice(h.as_bytes());
    out
}

impl IdIndex {
    /// Opens `path` (normally [`super::DataDir::id_index_path`]), creating it if missing.
    pub fn open(path: &Path) -> Result<IdIndex> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        let len = file_len(&file, path)?;
        let base = if len == 0 {
            // Durable at once, name included: after a power cut a missing index would be
            // rebuilt from the records, and ids issued since the last sync handed out again.
            file.write_all_at(&header_bytes(DEFAULT_BASE), 0)
                .and_then(|()| super::fsio::sync_file(&file))
                .map_err(|e| StorageError::io(path, e))?;
            super::fsio::sync_parent_dir(path)?;
            DEFAULT_BASE
        } else {
            let mut head = [0u8; ID_HEADER_LEN as usize];
            if len < ID_HEADER_LEN {
                return Err(StorageError::corrupted(
                    path,
                    0,
                    "id index shorter than its header",
                ));
            }
            file.read_exact_at(&mut head, 0)
                .map_err(|e| StorageError::io(path, e))?;
            let (h, _) = IdFileHeader::read_from_prefix(&head)
                .map_err(|_| StorageError::corrupted(path, 0, "id index header too short"))?;
            if h.magic != ID_FILE_MAGIC {
                return Err(StorageError::corrupted(
                    path,
                    0,
                    "not a yaad id index (bad magic)",
                ));
            }
            if h.crc.get() != crc32fast::hash(&head[..offset_of!(IdFileHeader, crc)]) {
                return Err(StorageError::corrupted(
                    path,
                    0,
                    "id index header checksum mismatch",
                ));
            }
            if h.version.get() != ID_FILE_VERSION || u64::from(h.entry_len.get()) != ID_ENTRY_LEN {
                return Err(StorageError::corrupted(
                    path,
                    0,
                    format!("unsupported id index version {}", h.version.get()),
                ));
            }
            h.base.get()
        };
        Ok(IdIndex {
            inner: Inner::File {
                path: path.to_path_buf(),
                file: Arc::new(file),
                base,
                dirty: len == 0,
                pending: Run::default(),
            },
        })
    }

    /// An index held in memory (memory mode: nothing on disk).
    pub fn in_memory() -> IdIndex {
        IdIndex {
            inner: Inner::Mem {
                map: mem::MemIds::default(),
                high_water: 0,
            },
        }
    }

    /// Where the job `id` is, if the index knows it. A damaged entry (torn write) is
    /// [`StorageError::Corrupted`]; recovery rewrites entries from the segment scans.
    pub fn get(&self, id: u64) -> Result<Option<JobLocation>> {
        match &self.inner {
            Inner::Mem { map, .. } => Ok(map.get(id)),
            Inner::File {
                path,
                file,
                base,
                pending,
                ..
            } => {
                let Some(at) = entry_offset(*base, id) else {
                    return Ok(None);
                };
                if let Some(entry) = pending.entry(id) {
                    return decode_entry(path, at, id, entry);
                }
                let mut buf = [0u8; ID_ENTRY_LEN as usize];
                match file.read_exact_at(&mut buf, at) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(StorageError::io(path, e)),
                }
                decode_entry(path, at, id, &buf)
            }
        }
    }

    /// Records where job `id` is now (replacing what was there).
    pub fn set(&mut self, id: u64, loc: JobLocation) -> Result<()> {
        match &mut self.inner {
            Inner::Mem { map, high_water } => {
                map.set(id, loc)?;
                *high_water = (*high_water).max(id);
                Ok(())
            }
            Inner::File {
                path,
                file,
                base,
                dirty,
                pending,
            } => {
                let Some(at) = entry_offset(*base, id) else {
                    return Err(StorageError::io(
                        path,
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("job id {id} is below the id index base {base}"),
                        ),
                    ));
                };
                let mut e = IdEntry {
                    spoke_start: U64::new(loc.spoke.start),
                    spoke_span: U64::new(loc.spoke.span),
                    record_offset: U64::new(loc.offset),
                    reserved: [0; 4],
                    crc: U32::new(0),
                };
                e.crc = U32::new(entry_crc(id, &e));
                *dirty = true;
                if pending.put(id, e.as_bytes()) {
                    return Ok(());
                }
                pending.write(file, path)?;
                pending.start(id, at, e.as_bytes());
                Ok(())
            }
        }
    }

    /// Forgets job `id` (deleted, or its spoke retired).
    pub fn remove(&mut self, id: u64) -> Result<()> {
        match &mut self.inner {
            Inner::Mem { map, .. } => {
                map.remove(id);
                Ok(())
            }
            Inner::File {
                path,
                file,
                base,
                dirty,
                pending,
            } => {
                let Some(at) = entry_offset(*base, id) else {
                    return Ok(());
                };
                if let Some(entry) = pending.entry_mut(id) {
                    entry.fill(0);
                    *dirty = true;
                    return Ok(());
                }
                let len = file_len(file, path)?;
                if at >= len {
                    return Ok(());
                }
                file.write_all_at(&[0u8; ID_ENTRY_LEN as usize], at)
                    .map_err(|e| StorageError::io(path, e))?;
                *dirty = true;
                Ok(())
            }
        }
    }

    /// Empties the entries of `ids` (sorted) that `keep` rejects: once a far job's spoke is
    /// loaded, its job is in memory and its entry only costs disk. A 4 KiB block of the file
    /// left with no entry is given back to the filesystem (a hole reads as empty entries, and
    /// the file keeps its length, the high-water mark); without that, the index would keep
    /// 32 bytes of disk for every far job ever put. Damaged entries are left as they are.
    /// Returns whether any entry was emptied (the file then needs a sync).
    pub fn trim(&mut self, ids: &[u64], keep: impl Fn(&JobLocation) -> bool) -> Result<bool> {
        match &mut self.inner {
            Inner::Mem { map, .. } => {
                let mut emptied = false;
                for &id in ids {
                    if map.get(id).is_some_and(|loc| !keep(&loc)) {
                        map.remove(id);
                        emptied = true;
                    }
                }
                Ok(emptied)
            }
            Inner::File {
                path,
                file,
                base,
                dirty,
                pending,
            } => {
                pending.write(file, path)?;
                trim_file(file, path, *base, dirty, ids, &keep)
            }
        }
    }

    /// Makes [`IdIndex::high_water`] at least `id` without indexing it (mem mode records the
    /// ids it handed out this way at a flush: the file grows, sparse, with empty entries).
    pub fn raise_high_water(&mut self, id: u64) -> Result<()> {
        match &mut self.inner {
            Inner::Mem { high_water, .. } => {
                *high_water = (*high_water).max(id);
                Ok(())
            }
            Inner::File {
                path,
                file,
                base,
                dirty,
                ..
            } => {
                let Some(end) = entry_offset(*base, id).map(|at| at + ID_ENTRY_LEN) else {
                    return Ok(()); // below the base: already covered
                };
                let len = file_len(file, path)?;
                if len < end {
                    file.set_len(end).map_err(|e| StorageError::io(path, e))?;
                    *dirty = true;
                }
                Ok(())
            }
        }
    }

    /// Sets the file's length so that [`IdIndex::high_water`] is exactly `high` (entries past
    /// it are cut off: only for a reservation above every id indexed). Memory: nothing.
    pub fn set_high_water(&mut self, high: u64) -> Result<()> {
        if let Inner::File {
            path,
            file,
            base,
            dirty,
            pending,
        } = &mut self.inner
        {
            pending.write(file, path)?;
            let len = entry_offset(*base, high).map_or(ID_HEADER_LEN, |at| at + ID_ENTRY_LEN);
            if file_len(file, path)? != len {
                file.set_len(len).map_err(|e| StorageError::io(path, e))?;
                *dirty = true;
            }
        }
        Ok(())
    }

    /// The highest id ever `set` since the index was created or cleared (0 if none), even
    /// if it was removed since: file mode derives it from the file length (entries are
    /// zeroed by `remove`, never cut off), so it survives restarts and lets the next job
    /// id continue above every id handed out before.
    pub fn high_water(&self) -> Result<u64> {
        match &self.inner {
            Inner::Mem { high_water, .. } => Ok(*high_water),
            Inner::File {
                path,
                file,
                base,
                pending,
                ..
            } => {
                let len = file_len(file, path)?;
                let entries = len.saturating_sub(ID_HEADER_LEN) / ID_ENTRY_LEN;
                let written = if entries == 0 {
                    0
                } else {
                    base.saturating_add(entries - 1)
                };
                Ok(written.max(pending.last().unwrap_or(0)))
            }
        }
    }

    /// Forgets every id (recovery then sets the ones its scans find). File: keeps the
    /// header, truncates the entries (the file is never mapped, so this is safe).
    pub fn clear(&mut self) -> Result<()> {
        match &mut self.inner {
            Inner::Mem { map, high_water } => {
                map.clear();
                *high_water = 0;
                Ok(())
            }
            Inner::File {
                path,
                file,
                dirty,
                pending,
                ..
            } => {
                *pending = Run::default();
                file.set_len(ID_HEADER_LEN)
                    .map_err(|e| StorageError::io(path, e))?;
                *dirty = true;
                Ok(())
            }
        }
    }

    /// Writes the entries set and not written yet (see [`Run`]): before the file is synced
    /// through [`IdIndex::sync_handle`], and before a start-up summary vouches for the far
    /// spokes they point into. If it fails (disk full), those entries are lost: the caller
    /// must treat the index as incomplete.
    pub fn write_pending(&mut self) -> Result<()> {
        match &mut self.inner {
            Inner::File {
                path,
                file,
                dirty,
                pending,
                ..
            } => {
                *dirty |= !pending.bytes.is_empty();
                pending.write(file, path)
            }
            Inner::Mem { .. } => Ok(()),
        }
    }

    /// The index file and the bytes of the entries of `ids` in it (file mode), to be read
    /// ahead outside the hub's lock.
    pub fn entry_range(
        &self,
        ids: std::ops::Range<u64>,
    ) -> Option<(Arc<File>, std::ops::Range<u64>)> {
        let Inner::File { file, base, .. } = &self.inner else {
            return None;
        };
        let start = entry_offset(*base, ids.start.max(*base))?;
        let end = entry_offset(*base, ids.end.max(*base))?;
        (start < end).then(|| (file.clone(), start..end))
    }

    /// The index file, shared, for a sync outside the hub's lock (`None` in memory); call
    /// [`IdIndex::write_pending`] first.
    pub fn sync_handle(&self) -> Option<Arc<File>> {
        match &self.inner {
            Inner::File { file, .. } => Some(file.clone()),
            Inner::Mem { .. } => None,
        }
    }

    /// Syncs the file now, even if this index wrote nothing since its last flush (a sync
    /// batch may have taken the file since): memory: nothing to do.
    pub fn sync(&mut self) -> Result<()> {
        if let Inner::File { dirty, .. } = &mut self.inner {
            *dirty = true;
        }
        self.flush()
    }

    /// Makes every change so far durable (file: writes the pending entries, then fsync;
    /// memory: nothing to do).
    pub fn flush(&mut self) -> Result<()> {
        self.write_pending()?;
        match &mut self.inner {
            Inner::Mem { .. } => Ok(()),
            Inner::File {
                path, file, dirty, ..
            } => {
                if *dirty {
                    super::fsio::sync_file(file).map_err(|e| StorageError::io(path, e))?;
                    *dirty = false;
                }
                Ok(())
            }
        }
    }
}

/// The high-water mark `ids.yaad` at `path` still shows when its header cannot be read: the
/// file's length (entries are zeroed or punched, never cut off) counted from the base of every
/// index file this version writes, [`DEFAULT_BASE`] (a damaged header's own base field cannot
/// be trusted). 0 if no entry fits, or no file is there.
pub fn damaged_high_water(path: &Path) -> Result<u64> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    let entries = len.saturating_sub(ID_HEADER_LEN) / ID_ENTRY_LEN;
    Ok(if entries == 0 {
        0
    } else {
        DEFAULT_BASE.saturating_add(entries - 1)
    })
}

/// Memory mode's bound on the ids it handed out. `ids.yaad` holds no entries there (the index
/// is a hash map), only a high-water mark, its length: every id issued is at most
/// [`IdReservation::reserved`]. Raising it (a block ahead, so once per block of puts) is one
/// `ftruncate` that reaches the page cache before the id is handed out, so a restart after
/// `kill -9` continues above every id issued, not only above those of the last flush. A flush
/// syncs it: after a power loss, ids continue above the last flush's reservation, and ids
/// issued after it may come again (see storage-format.md, id index).
#[derive(Debug)]
pub struct IdReservation {
    file: IdIndex,
    reserved: u64,
}

impl IdReservation {
    /// Continues from the high-water of `file` (a file-backed index).
    pub fn new(file: IdIndex) -> Result<IdReservation> {
        let reserved = file.high_water()?;
        Ok(IdReservation { file, reserved })
    }

    /// The highest id that may have been handed out.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Makes sure `id` is reserved before it is handed out: if it is past the reservation,
    /// reserves up to `id + ahead - 1` (`ahead` ≥ 1).
    pub fn cover(&mut self, id: u64, ahead: u64) -> Result<()> {
        if id <= self.reserved {
            return Ok(());
        }
        let to = id.saturating_add(ahead.max(1) - 1);
        self.file.raise_high_water(to)?;
        self.reserved = to;
        Ok(())
    }

    /// Sets the reservation to exactly `high`, the highest id handed out so far, and makes it
    /// durable (a flush: a restore of its snapshot continues right above the ids issued).
    /// Ids past `high` are reserved again as they are handed out.
    pub fn reset_to(&mut self, high: u64) -> Result<()> {
        if high != self.reserved {
            self.file.set_high_water(high)?;
            self.reserved = high;
        }
        self.file.flush()
    }
}

/// Lazy and mapped modes' bound on the ids they hand out: the index file's high-water (its
/// length, as [`IdReservation`]'s) is a reservation, and no id above the part of it known to
/// be *durable* is handed out, so no acknowledged id comes again after a power loss, whatever
/// the flush mode. The reservation is kept ahead of the ids issued through the page cache, by
/// its *lead* (one `ftruncate` per half a lead of puts), and becomes durable with the next
/// sync batch that carries the index file ([`DurableIds::taken`], [`DurableIds::synced`]).
/// Only a put that outran the syncs (or runs where none are made) syncs the index itself,
/// and then doubles the lead (up to [`MAX_LEAD_BLOCKS`] blocks), so that at any put rate
/// this stays rare: the lead only costs a larger jump of ids after a restart that was not
/// clean (the file is sparse past its entries).
#[derive(Debug, Default)]
pub struct DurableIds {
    /// The reservation written (the index's high-water is at least this).
    written: u64,
    /// The reservation known durable: every id handed out is at most this.
    durable: u64,
    /// Sync batches that carry the index file, not reported synced yet: (epoch, the
    /// reservation written when the batch was taken).
    in_flight: std::collections::VecDeque<(u64, u64)>,
    /// How far ahead of an id the reservation is raised.
    lead: u64,
    /// The lead it starts with (a block).
    block: u64,
}

/// The largest lead of a [`DurableIds`], in blocks: 64 blocks of 4,096 ids reserve ~262k ids,
/// which at a million puts per second lasts ~130 ms, more than a sync period.
pub const MAX_LEAD_BLOCKS: u64 = 64;

/// What [`DurableIds::cover`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Covered {
    /// Nothing: the id was reserved, far enough ahead.
    Nothing,
    /// Raised the reservation through the page cache: the next sync batch must carry the
    /// index file.
    Raised,
    /// Raised it and synced the index: the put outran the syncs.
    Synced,
}

impl DurableIds {
    /// Ids up to `reserved` were handed out before (or may have been): none of them is again.
    /// `block`: the lead to start with.
    pub fn new(reserved: u64, block: u64) -> DurableIds {
        let block = block.max(2);
        DurableIds {
            written: reserved,
            durable: reserved,
            in_flight: Default::default(),
            lead: block,
            block,
        }
    }

    /// The reservation known durable.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The current lead.
    pub fn lead(&self) -> u64 {
        self.lead
    }

    /// Whether [`DurableIds::cover`] would write to the index for `id`.
    pub fn due(&self, id: u64) -> bool {
        id > self.durable || id.saturating_add(self.lead / 2) > self.written
    }

    /// Makes sure `id` is durably reserved before it is handed out, and keeps the reservation
    /// written at least half a lead ahead of it (raised to `id + lead - 1`).
    pub fn cover(&mut self, index: &mut IdIndex, id: u64) -> Result<Covered> {
        if id > self.durable && id <= self.written {
            // Reserved, but its sync did not complete in time: the puts outran the syncs.
            self.lead = self
                .lead
                .saturating_mul(2)
                .min(self.block.saturating_mul(MAX_LEAD_BLOCKS));
        }
        let mut done = Covered::Nothing;
        if id.saturating_add(self.lead / 2) > self.written {
            let to = id.saturating_add(self.lead - 1);
            index.raise_high_water(to)?;
            self.written = to;
            done = Covered::Raised;
        }
        if id > self.durable {
            index.sync()?;
            self.durable = self.written;
            self.in_flight.clear();
            done = Covered::Synced;
        }
        Ok(done)
    }

    /// A sync batch `epoch` that carries the index file was taken: once it is synced, the
    /// reservation written so far is durable.
    pub fn taken(&mut self, epoch: u64) {
        if self.written > self.durable {
            self.in_flight.push_back((epoch, self.written));
        }
    }

    /// Sync batch `epoch` and every earlier one completed.
    pub fn synced(&mut self, epoch: u64) {
        while let Some(&(e, reserved)) = self.in_flight.front()
            && e <= epoch
        {
            self.durable = self.durable.max(reserved);
            self.in_flight.pop_front();
        }
    }

    /// The index file was synced (a flush): everything written is durable.
    pub fn all_synced(&mut self) {
        self.durable = self.written;
        self.in_flight.clear();
    }

    /// Sets the reservation to exactly `high`, the highest id handed out so far (a flush
    /// that is about to sync the index and write a clean summary: a restart continues right
    /// above the ids issued). The next put reserves, and syncs, again.
    pub fn reset_to(&mut self, index: &mut IdIndex, high: u64) -> Result<()> {
        index.set_high_water(high)?;
        self.written = high;
        self.durable = high;
        self.in_flight.clear();
        Ok(())
    }
}

/// An entry's bytes: all zero is "no job"; a checksum that does not match is damage.
fn decode_entry(path: &Path, at: u64, id: u64, buf: &[u8]) -> Result<Option<JobLocation>> {
    if buf.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let (e, _) = IdEntry::read_from_prefix(buf)
        .map_err(|_| StorageError::corrupted(path, at, "short id entry"))?;
    if entry_crc(id, &e) != e.crc.get() {
        return Err(StorageError::corrupted(
            path,
            at,
            format!("id index entry of job {id}: checksum mismatch"),
        ));
    }
    Ok(Some(JobLocation {
        spoke: SpokeId {
            start: e.spoke_start.get(),
            span: e.spoke_span.get(),
        },
        offset: e.record_offset.get(),
    }))
}

/// Reads entries of ascending ids a chunk at a time (recovery checks one entry per far job:
/// one system call per 2,048 entries instead of one each). Holds no borrow of the index, so
/// entries can be written between reads; an entry written after its chunk was read is seen
/// stale, so read each id once, in ascending order.
#[derive(Debug, Default)]
pub struct IdReader {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    from: u64,
}

/// Bytes an [`IdReader`] reads at once.
const READ_CHUNK: usize = 64 * 1024;

impl IdReader {
    pub fn new() -> Self {
        IdReader::default()
    }

    /// Same as [`IdIndex::get`].
    pub fn get(&mut self, index: &IdIndex, id: u64) -> Result<Option<JobLocation>> {
        let Inner::File {
            path,
            file,
            base,
            pending,
            ..
        } = &index.inner
        else {
            return index.get(id);
        };
        let Some(at) = entry_offset(*base, id) else {
            return Ok(None);
        };
        if let Some(entry) = pending.entry(id) {
            return decode_entry(path, at, id, entry);
        }
        let have = self.from..self.from + self.buf.len() as u64;
        if !(have.contains(&at) && have.contains(&(at + ID_ENTRY_LEN - 1))) {
            self.buf.resize(READ_CHUNK, 0);
            let mut n = 0;
            while n < READ_CHUNK {
                match file.read_at(&mut self.buf[n..], at + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(StorageError::io(path, e)),
                }
            }
            self.buf.truncate(n);
            self.from = at;
        }
        let i = (at - self.from) as usize;
        match self.buf.get(i..i + ID_ENTRY_LEN as usize) {
            Some(entry) => decode_entry(path, at, id, entry),
            // Past the end of the file.
            None => Ok(None),
        }
    }
}

/// What [`IdIndex::trim`] reads, writes and gives back at once: a filesystem block. Entries
/// (32 bytes, 32-aligned) never straddle two.
const TRIM_BLOCK: u64 = 4096;

/// Makes `range` of the index file a hole (reads as empty entries, the length stays), or
/// where the filesystem cannot punch holes, writes zeros there.
fn punch_or_zero(file: &File, path: &Path, range: &std::ops::Range<u64>) -> Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    if range.is_empty() {
        return Ok(());
    }
    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    if fallocate(file, flags, range.start, range.end - range.start).is_ok() {
        return Ok(());
    }
    let zeros = [0u8; TRIM_BLOCK as usize];
    for at in range.clone().step_by(TRIM_BLOCK as usize) {
        file.write_all_at(&zeros, at)
            .map_err(|e| StorageError::io(path, e))?;
    }
    Ok(())
}

/// Entries of consecutive ids set and not written yet: far puts get consecutive ids, so their
/// entries are written with one `pwrite` per run instead of one each. A run is written when an
/// id outside it (and not just past it) is set, when it holds [`RUN_MAX`] entries, and before
/// anything reads the file whole, cuts it or syncs it ([`IdIndex::write_pending`]). Lookups
/// read a pending entry from the run.
#[derive(Debug, Default)]
struct Run {
    /// The id of the first entry.
    first: u64,
    /// Where the first entry goes in the file.
    at: u64,
    /// The entries, [`ID_ENTRY_LEN`] bytes each.
    bytes: Vec<u8>,
}

/// Entries a [`Run`] holds at most (8 KiB).
const RUN_MAX: usize = 256;

impl Run {
    fn len(&self) -> u64 {
        self.bytes.len() as u64 / ID_ENTRY_LEN
    }

    /// The highest id in the run.
    fn last(&self) -> Option<u64> {
        (self.len() > 0).then(|| self.first + self.len() - 1)
    }

    /// Where `id`'s entry is in `bytes`, if the run holds it.
    fn place(&self, id: u64) -> Option<std::ops::Range<usize>> {
        let i = id.checked_sub(self.first).filter(|&i| i < self.len())?;
        let at = (i * ID_ENTRY_LEN) as usize;
        Some(at..at + ID_ENTRY_LEN as usize)
    }

    /// The pending bytes of `id`'s entry.
    fn entry(&self, id: u64) -> Option<&[u8]> {
        self.place(id).map(|r| &self.bytes[r])
    }

    /// The pending bytes of `id`'s entry, to change.
    fn entry_mut(&mut self, id: u64) -> Option<&mut [u8]> {
        self.place(id).map(|r| &mut self.bytes[r])
    }

    /// Sets `id`'s entry to `entry` if the run holds it or can take it next; `false`: it
    /// must be written first.
    fn put(&mut self, id: u64, entry: &[u8]) -> bool {
        if let Some(e) = self.entry_mut(id) {
            e.copy_from_slice(entry);
            return true;
        }
        let n = self.len();
        if n > 0 && id.checked_sub(self.first) == Some(n) && (n as usize) < RUN_MAX {
            self.bytes.extend_from_slice(entry);
            true
        } else {
            false
        }
    }

    /// A new run of `id`'s entry, which goes at `at` in the file (the run is empty: written
    /// or never started).
    fn start(&mut self, id: u64, at: u64, entry: &[u8]) {
        debug_assert!(self.bytes.is_empty());
        self.first = id;
        self.at = at;
        self.bytes.extend_from_slice(entry);
    }

    /// Writes the run to `file` and empties it; emptied also when the write fails (its
    /// entries are then lost, see [`IdIndex::write_pending`]).
    fn write(&mut self, file: &File, path: &Path) -> Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let written = file
            .write_all_at(&self.bytes, self.at)
            .map_err(|e| StorageError::io(path, e));
        self.bytes.clear();
        written
    }
}

fn entry_offset(base: u64, id: u64) -> Option<u64> {
    let index = id.checked_sub(base)?;
    index.checked_mul(ID_ENTRY_LEN)?.checked_add(ID_HEADER_LEN)
}

/// [`IdIndex::trim`] of an index file whose first entry is id `base`; sets `dirty` once it
/// changes the file.
fn trim_file(
    file: &File,
    path: &Path,
    base: u64,
    dirty: &mut bool,
    ids: &[u64],
    keep: &impl Fn(&JobLocation) -> bool,
) -> Result<bool> {
    let len = file_len(file, path)?;
    let mut block = [0u8; TRIM_BLOCK as usize];
    // Empty blocks are given back in runs, one system call per run (a hole punch costs about
    // the same for one block as for sixteen).
    let mut hole = 0..0;
    let mut any = false;
    let mut i = 0;
    while i < ids.len() {
        let Some(at) = entry_offset(base, ids[i]) else {
            i += 1;
            continue;
        };
        let start = at / TRIM_BLOCK * TRIM_BLOCK;
        let end = (start + TRIM_BLOCK).min(len);
        if at >= end {
            break; // past the end of the file, as every later id
        }
        let bytes = &mut block[..(end - start) as usize];
        file.read_exact_at(bytes, start)
            .map_err(|e| StorageError::io(path, e))?;
        let (changed, next) = empty_rejected(bytes, start, path, base, &ids[i..], keep);
        i += next;
        if !changed {
            continue;
        }
        *dirty = true;
        any = true;
        let whole = start >= ID_HEADER_LEN && end - start == TRIM_BLOCK;
        if whole && bytes.iter().all(|&b| b == 0) {
            if hole.end != start {
                punch_or_zero(file, path, &hole)?;
                hole = start..start;
            }
            hole.end = end;
            continue;
        }
        file.write_all_at(bytes, start)
            .map_err(|e| StorageError::io(path, e))?;
    }
    punch_or_zero(file, path, &hole)?;
    Ok(any)
}

/// Empties, in `block` (the index file's bytes from offset `start`), the entries of the
/// leading `ids` that lie in it and that `keep` rejects. Returns whether any was emptied and
/// how many of `ids` were dealt with (those in the block, and ids with no entry before them).
fn empty_rejected(
    block: &mut [u8],
    start: u64,
    path: &Path,
    base: u64,
    ids: &[u64],
    keep: &impl Fn(&JobLocation) -> bool,
) -> (bool, usize) {
    let end = start + block.len() as u64;
    let mut changed = false;
    let mut i = 0;
    while i < ids.len() {
        let Some(at) = entry_offset(base, ids[i]) else {
            i += 1;
            continue;
        };
        if at >= end {
            break;
        }
        let off = (at - start) as usize;
        let entry = &mut block[off..off + ID_ENTRY_LEN as usize];
        if let Ok(Some(loc)) = decode_entry(path, at, ids[i], entry)
            && !keep(&loc)
        {
            entry.fill(0);
            changed = true;
        }
        i += 1;
    }
    (changed, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(i: u64) -> JobLocation {
        JobLocation {
            spoke: SpokeId {
                start: 1_000_000 * i,
                span: 1_000_000,
            },
            offset: 64 + 8 * i,
        }
    }

    fn exercise(ix: &mut IdIndex) {
        assert_eq!(ix.high_water().unwrap(), 0);
        assert_eq!(ix.get(1).unwrap(), None);
        assert_eq!(ix.get(1_000_000).unwrap(), None);
        ix.set(1, loc(1)).unwrap();
        ix.set(5, loc(5)).unwrap();
        ix.set(1_000_000, loc(7)).unwrap();
        assert_eq!(ix.get(1).unwrap(), Some(loc(1)));
        assert_eq!(ix.get(5).unwrap(), Some(loc(5)));
        assert_eq!(ix.get(4).unwrap(), None);
        assert_eq!(ix.get(1_000_000).unwrap(), Some(loc(7)));
        ix.set(5, loc(9)).unwrap();
        assert_eq!(ix.get(5).unwrap(), Some(loc(9)));
        ix.remove(5).unwrap();
        ix.remove(123_456_789).unwrap();
        ix.remove(1_000_000).unwrap();
        assert_eq!(ix.get(5).unwrap(), None);
        assert_eq!(
            ix.high_water().unwrap(),
            1_000_000,
            "removal keeps the high-water mark"
        );
        ix.flush().unwrap();
        // The chunked reader agrees with get for every id, below, inside and past the file.
        let mut r = IdReader::new();
        for id in (0..20).chain([999_999, 1_000_000, 1_000_001, 2_000_000]) {
            assert_eq!(r.get(ix, id).ok(), ix.get(id).ok(), "id {id}");
        }
    }

    /// Entries of consecutive ids wait in a run: lookups and the chunked reader see them at
    /// once, the file once the run is written (an id that does not follow, a full run,
    /// `write_pending`); a drop without `write_pending` (a kill) loses the run only.
    #[test]
    fn consecutive_entries_are_written_as_one_run() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ids.yaad");
        let mut ix = IdIndex::open(&path).unwrap();
        let on_disk = |id| IdIndex::open(&path).unwrap().get(id).unwrap();
        for id in 1..=10 {
            ix.set(id, loc(id)).unwrap();
        }
        ix.remove(4).unwrap();
        let mut r = IdReader::new();
        for id in 1..=10 {
            let want = (id != 4).then(|| loc(id));
            assert_eq!(ix.get(id).unwrap(), want, "id {id}");
            assert_eq!(r.get(&ix, id).unwrap(), want, "id {id}");
            assert_eq!(on_disk(id), None, "id {id} written early");
        }
        assert_eq!(ix.high_water().unwrap(), 10);
        // An id that does not follow the run writes it.
        ix.set(20, loc(20)).unwrap();
        for id in 1..=10 {
            assert_eq!(on_disk(id), (id != 4).then(|| loc(id)), "id {id}");
        }
        assert_eq!(on_disk(20), None);
        // A full run is written.
        let full = 20 + RUN_MAX as u64;
        for id in 21..=full {
            ix.set(id, loc(id)).unwrap();
        }
        assert_eq!(on_disk(20), Some(loc(20)));
        assert_eq!(on_disk(full - 1), Some(loc(full - 1)));
        assert_eq!(on_disk(full), None);
        ix.write_pending().unwrap();
        assert_eq!(on_disk(full), Some(loc(full)));
        // A kill loses the pending run only.
        ix.set(full + 1, loc(1)).unwrap();
        drop(ix);
        let ix = IdIndex::open(&path).unwrap();
        assert_eq!(ix.get(full + 1).unwrap(), None);
        assert_eq!(ix.get(full).unwrap(), Some(loc(full)));
        assert_eq!(ix.high_water().unwrap(), full);
    }

    #[test]
    fn memory_index() {
        exercise(&mut IdIndex::in_memory());
    }

    /// A reservation is the file's high-water: raised a block at a time, exact after `reset_to`,
    /// and what a reopen (or, header damaged, the file's length) continues from.
    #[test]
    fn id_reservation_is_the_high_water_of_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ids.yaad");
        assert_eq!(damaged_high_water(&path).unwrap(), 0, "no file");
        let mut r = IdReservation::new(IdIndex::open(&path).unwrap()).unwrap();
        assert_eq!(r.reserved(), 0);
        r.cover(1, 100).unwrap();
        assert_eq!(r.reserved(), 100);
        r.cover(100, 100).unwrap();
        assert_eq!(r.reserved(), 100, "covered already: nothing written");
        r.cover(101, 100).unwrap();
        assert_eq!(r.reserved(), 200);
        drop(r);
        let mut r = IdReservation::new(IdIndex::open(&path).unwrap()).unwrap();
        assert_eq!(r.reserved(), 200);
        r.reset_to(150).unwrap();
        assert_eq!(r.reserved(), 150);
        r.cover(151, 1).unwrap();
        assert_eq!(r.reserved(), 151);
        drop(r);
        assert_eq!(IdIndex::open(&path).unwrap().high_water().unwrap(), 151);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(IdIndex::open(&path).is_err());
        assert_eq!(damaged_high_water(&path).unwrap(), 151);
        std::fs::write(&path, &bytes[..ID_HEADER_LEN as usize + 31]).unwrap();
        assert_eq!(damaged_high_water(&path).unwrap(), 0, "no whole entry");
    }

    /// The durable reservation: raised through the page cache half a lead ahead, durable once
    /// a batch taken after the raise is synced, synced by `cover` itself only when an id
    /// passes it (then the lead doubles, up to its cap); the file's length is the reservation.
    #[test]
    fn durable_ids_stay_ahead_of_the_ids_handed_out() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ix = IdIndex::open(&tmp.path().join("ids.yaad")).unwrap();
        let mut d = DurableIds::new(0, 8);
        assert!(d.due(1));
        assert_eq!(d.cover(&mut ix, 1).unwrap(), Covered::Synced, "first id");
        assert_eq!((d.durable(), ix.high_water().unwrap()), (8, 8));
        assert_eq!(d.cover(&mut ix, 4).unwrap(), Covered::Nothing);
        assert_eq!(d.cover(&mut ix, 5).unwrap(), Covered::Raised);
        assert_eq!((d.durable(), ix.high_water().unwrap()), (8, 12));
        d.taken(7);
        d.synced(6);
        assert_eq!(d.durable(), 8, "an earlier batch");
        d.synced(7);
        assert_eq!(d.durable(), 12);
        assert_eq!(d.lead(), 8);
        // The puts outrun the syncs: the id past the durable reservation syncs, lead doubles.
        for id in 6..=12 {
            d.cover(&mut ix, id).unwrap();
        }
        assert_eq!(d.durable(), 12);
        assert_eq!(d.cover(&mut ix, 13).unwrap(), Covered::Synced);
        assert_eq!(d.lead(), 16);
        assert_eq!(d.durable(), ix.high_water().unwrap());
        for id in 14..10_000 {
            d.cover(&mut ix, id).unwrap();
        }
        assert_eq!(d.lead(), 8 * MAX_LEAD_BLOCKS, "capped");
        assert!(d.durable() >= 9_999);
        d.reset_to(&mut ix, 9_999).unwrap();
        ix.flush().unwrap();
        assert_eq!((d.durable(), ix.high_water().unwrap()), (9_999, 9_999));
        assert_eq!(d.cover(&mut ix, 10_000).unwrap(), Covered::Synced);
    }

    #[test]
    fn file_index_survives_reopen_and_detects_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ids.yaad");
        let mut ix = IdIndex::open(&path).unwrap();
        exercise(&mut ix);
        drop(ix);
        let mut ix = IdIndex::open(&path).unwrap();
        assert_eq!(ix.get(1).unwrap(), Some(loc(1)));
        assert_eq!(ix.get(1_000_000).unwrap(), None);
        assert_eq!(ix.high_water().unwrap(), 1_000_000);
        ix.set(1_000_000, loc(7)).unwrap();
        assert!(ix.get(0).unwrap().is_none(), "below the base");
        assert!(ix.set(0, loc(1)).is_err());
        // The file is sparse-addressed, not one entry per job in memory.
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, ID_HEADER_LEN + 1_000_000 * ID_ENTRY_LEN);
        drop(ix);
        // Flip a byte of job 1's entry: reported, not mistaken for another location.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ID_HEADER_LEN as usize + 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let mut ix = IdIndex::open(&path).unwrap();
        assert!(matches!(ix.get(1), Err(StorageError::Corrupted { .. })));
        ix.clear().unwrap();
        assert_eq!(ix.high_water().unwrap(), 0);
        assert_eq!(ix.get(1).unwrap(), None);
        assert_eq!(ix.get(1_000_000).unwrap(), None);
        // A foreign file is refused.
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert!(IdIndex::open(&path).is_err());
    }
}
