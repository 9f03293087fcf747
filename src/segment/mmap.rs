//! The only place that maps memory: mapping a segment file, reserving its disk blocks, and the
//! anonymous buffers of large memory-mode segments.
//!
//! Mapping a file is `unsafe` because the compiler cannot know what else writes or
//! shrinks it. yaad's rules that make it sound (see `storage-format.md`, "What the format
//! assumes"):
//! 1. Segment files are only mapped by the daemon, inside a data dir whose `LOCK` it holds
//!    ([`super::DataDir`]), so no other yaad process writes or truncates them.
//!    `yaad-dump` reads files into memory and never maps.
//! 2. Nothing in yaad shrinks a segment file while this process maps it: growth goes
//!    through [`reserve`] or a positioned write; a lazy segment cuts the zero tail it reserved
//!    for appends off only while it holds no mapping (at open, before mapping; at close,
//!    after unmapping); the only other change of size is deleting the file after it is
//!    unmapped.
//! 3. After growing a file, the owner maps it again before touching the new bytes, except
//!    for a mapping made with [`map_ahead`]: it may extend past the end of the file, and its
//!    owner only touches bytes the file already covers (below the file's length, which
//!    [`reserve`] or a positioned write extended first). Pages of a shared mapping past the
//!    end of the file become readable and writable once the file grows over them (one page
//!    cache).
//!
//! A segment's mapping ([`AheadMap`]) may outlive its owner for a moment: while a thread
//! holds the hub lock ([`Deferral`]), its unmaps and page drops wait until the lock is
//! released, and a [`Prefault`] holds it until it has run. Such a mapping is never read or
//! written again, so rule 2 does not cover it: a lazy segment cuts its tail off right after
//! letting go of it (a prefault of pages past the new end fails with `EFAULT`).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::fs::File;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use memmap2::{MmapMut, MmapRaw};

use super::{Result, StorageError};

/// A growable buffer of anonymous memory (no file) whose pages can be given back one range
/// at a time: a memory-mode segment large enough to hold many dead records. Unused capacity
/// costs address space only; pages given back read as zeros.
#[derive(Debug)]
pub(crate) struct AnonBuf {
    map: MmapMut,
    len: usize,
}

impl AnonBuf {
    /// A buffer holding `bytes`, with room for `capacity` bytes before it has to move.
    pub(crate) fn with_bytes(bytes: &[u8], capacity: usize) -> std::io::Result<AnonBuf> {
        let mut map = memmap2::MmapOptions::new()
            .len(capacity.max(bytes.len()).max(1))
            .map_anon()?;
        map[..bytes.len()].copy_from_slice(bytes);
        Ok(AnonBuf {
            map,
            len: bytes.len(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map[..self.len]
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }

    /// Grows the buffer to `len` bytes (new bytes are zero), moving it to a larger mapping
    /// (twice the size) when it is full: the pages move, nothing is copied, and pages given
    /// back stay given back. Never shrinks.
    pub(crate) fn grow(&mut self, len: usize) -> std::io::Result<()> {
        if len <= self.len {
            return Ok(());
        }
        if len > self.map.len() {
            let cap = len.max(self.map.len().saturating_mul(2));
            // SAFETY: an anonymous mapping has no file to run past; `&mut self` proves no
            // slice of the old mapping is alive while it moves; every byte of the new length
            // is backed (new pages read as zeros).
            unsafe {
                self.map
                    .remap(cap, memmap2::RemapOptions::new().may_move(true))?;
            }
        }
        self.len = len;
        Ok(())
    }

    /// Shortens the buffer to `len` bytes, which must be followed only by zeros (a zero tail
    /// dropped): later growth then shows zeros there, as it must.
    pub(crate) fn cut_zero_tail(&mut self, len: usize) {
        debug_assert!(
            self.map[len.min(self.len)..self.len]
                .iter()
                .all(|&b| b == 0)
        );
        self.len = self.len.min(len);
    }

    /// Gives the whole pages inside `from..to` back to the system: they read as zeros after.
    /// Returns the bytes given back.
    pub(crate) fn release(&mut self, from: usize, to: usize) -> std::io::Result<u64> {
        let page = page_size();
        let from = from.div_ceil(page) * page;
        let to = to.min(self.len) / page * page;
        if to <= from {
            return Ok(0);
        }
        // SAFETY: MADV_DONTNEED on a private anonymous mapping only replaces the pages of the
        // range with zero-filled ones on their next access; `&mut self` proves no slice of the
        // mapping is alive, so no reader sees the bytes change under it.
        unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from)?;
        }
        Ok((to - from) as u64)
    }
}

/// The system's page size, asked once: rustix asks libc at every call (it reads the auxiliary
/// vector through libc, see Cargo.toml), and appends ask for it.
pub fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(rustix::param::page_size)
}

/// Where [`AheadMap::drop_pages`] for a segment whose data ends at `end` stops when asked to
/// stop at `to`: there, or for a `to` past the data at the end of the mapping, so that a whole
/// segment can leave memory (the page holding `end`, and pages past it that a read fault
/// mapped around the page it needed).
pub(crate) fn pages_to(to: u64, end: u64) -> usize {
    if to > end { usize::MAX } else { to as usize }
}

/// Size of the zero writes that reserve disk blocks where `posix_fallocate` is unsupported.
const ZERO_CHUNK: u64 = 1 << 20;

/// Maps the whole of `file` (read/write, shared): a segment that stays mapped, remapped after
/// it grows.
pub(crate) fn map(file: &File, path: &Path) -> Result<AheadMap> {
    map_ahead(file, path, super::file_len(file, path)?)
}

/// Maps `len` bytes of `file` (read/write, shared), which may be more than the file holds: a
/// segment that grows by positioned writes then reads its new bytes through the same mapping
/// instead of mapping the file again after every append (an munmap + mmap + page fault per
/// change). The caller must only touch bytes below the file's current length, and must not
/// shrink the file while the mapping lives.
pub(crate) fn map_ahead(file: &File, path: &Path, len: u64) -> Result<AheadMap> {
    let len = usize::try_from(len).map_err(|_| {
        StorageError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "segment too large"),
        )
    })?;
    let raw = memmap2::MmapOptions::new()
        .len(len)
        .map_raw(file)
        .map_err(|e| StorageError::io(path, e))?;
    Ok(AheadMap { raw: Arc::new(raw) })
}

/// A shared read/write mapping of a segment file ([`map`], [`map_ahead`]), owned by one
/// segment. Only the owner reaches its bytes (`Deref`, `DerefMut`: it is not `Clone`). The
/// other references never read or write a byte: this thread's [`Deferral`] queue, which drops
/// pages from the mapping or unmaps it after the hub lock is released, and [`Prefault`]s,
/// which fault pages in outside the lock.
#[derive(Debug)]
pub(crate) struct AheadMap {
    raw: Arc<MmapRaw>,
}

impl Deref for AheadMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: rules 1-3 of this module (the caller slices only bytes the file holds). The
        // mapping is alive while `self.raw` is, and no `&mut` to its bytes exists while `&self`
        // does: only `deref_mut` (which takes `&mut self`) makes one, and the other clones of
        // `raw` (queued, prefaults) never touch the bytes.
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), self.raw.len()) }
    }
}

impl DerefMut for AheadMap {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` proves this is the only slice of the mapping
        // alive (the owner is unique; the other clones only `madvise` or unmap:
        // MADV_DONTNEED and MADV_POPULATE_READ/_WRITE on a shared file mapping leave every
        // byte as it is).
        unsafe { std::slice::from_raw_parts_mut(self.raw.as_mut_ptr(), self.raw.len()) }
    }
}

impl AheadMap {
    /// Whether a page fault reads the pages around it in too (`MADV_NORMAL`) or just its own
    /// (`MADV_RANDOM`). A segment's appends turn it off: a write to a page not yet in the page
    /// cache otherwise reads ahead, and the fault is taken twice (96,000-101,000 faults per
    /// million far puts with it, 38,000-44,000 without, bench/README.md *Far puts*). Reads turn
    /// it back on, so that loading a spoke whose pages left the page cache reads its file in
    /// large runs.
    pub(crate) fn read_around(&self, on: bool) {
        let advice = if on {
            memmap2::Advice::Normal
        } else {
            memmap2::Advice::Random
        };
        if let Err(e) = self.raw.advise(advice) {
            tracing::debug!("madvise {advice:?}: {e}");
        }
    }

    /// Drops the whole pages inside `from..to` from this process (its resident memory): the
    /// bytes stay in the page cache, dirty ones are still written back, and touching them
    /// again maps them again. At once, or after the hub lock is released when this thread
    /// holds it ([`Deferral`]).
    pub(crate) fn drop_pages(&self, from: usize, to: usize) -> std::io::Result<()> {
        let Some((from, to)) = whole_pages(from, to, self.raw.len()) else {
            return Ok(());
        };
        if defer(|| Deferred::DropPages(Arc::clone(&self.raw), from, to)) {
            return Ok(());
        }
        dontneed(&self.raw, from, to)
    }

    /// Writes dirty pages back (`msync`): see [`super::fsio::sync_map`].
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.raw.flush()
    }

    /// The pages holding bytes `from..to` (within the mapping), to be faulted in for `access`
    /// by [`Prefault::run`] on another thread or after the hub lock is released. The caller
    /// names only bytes the file holds.
    pub(crate) fn prefault(&self, from: usize, to: usize, access: Access) -> Option<Prefault> {
        let page = page_size();
        let from = from / page * page;
        let to = to.min(self.raw.len());
        (from < to).then(|| Prefault {
            raw: Arc::clone(&self.raw),
            from,
            len: to - from,
            access,
        })
    }
}

impl Drop for AheadMap {
    /// Unmaps at once, or after the hub lock is released when this thread holds it.
    fn drop(&mut self) {
        defer(|| Deferred::Unmap(Arc::clone(&self.raw)));
    }
}

/// What a [`Prefault`] faults its pages in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reading (`MADV_POPULATE_READ`): pages not in the page cache are read from the file, and
    /// a hole stays a hole.
    Read,
    /// Writing (`MADV_POPULATE_WRITE`): the page is dirtied, and blocks are allocated where
    /// the file has none.
    Write,
}

/// Pages of a segment's mapping to fault in (`MADV_POPULATE_READ` or `_WRITE`), outside the
/// hub lock, just before a hub call reads or writes them: every page fault is one the call
/// does not take under the lock. On these virtual machines a page fault costs ~3 µs of CPU
/// time, and about one in 2,000 takes over 100 µs, now and then over 1 ms (bench/README.md,
/// *Split holds*). Faulting a page in leaves its bytes as they are (for writing it dirties
/// it: the next sync writes it back unchanged). Holds the mapping: if its segment let go of it
/// meanwhile, the last `Prefault` unmaps it.
#[derive(Debug)]
pub struct Prefault {
    raw: Arc<MmapRaw>,
    from: usize,
    len: usize,
    access: Access,
}

impl Prefault {
    /// The bytes of the segment it covers: whole pages.
    pub fn bytes(&self) -> std::ops::Range<u64> {
        self.from as u64..(self.from + self.len) as u64
    }

    /// Faults the pages in. Errors are left to the read or write that follows, which meets
    /// them again: `EINVAL` before Linux 5.14, `EFAULT` for pages past the end of a file that
    /// shrank since (a lazy segment closed meanwhile cuts its reserved tail off).
    pub fn run(&self) {
        let advice = match self.access {
            Access::Read => memmap2::Advice::PopulateRead,
            Access::Write => memmap2::Advice::PopulateWrite,
        };
        if let Err(e) = self.raw.advise_range(advice, self.from, self.len) {
            tracing::debug!("madvise {advice:?}: {e}");
        }
    }

    /// What the pages are faulted in for.
    pub fn access(&self) -> Access {
        self.access
    }
}

/// The whole pages inside `from..to`, within a mapping of `len` bytes.
fn whole_pages(from: usize, to: usize, len: usize) -> Option<(usize, usize)> {
    let page = page_size();
    let from = from.div_ceil(page) * page;
    let to = to.min(len) / page * page;
    (from < to).then_some((from, to))
}

/// MADV_DONTNEED on whole pages `from..to` of a shared file mapping.
fn dontneed(raw: &MmapRaw, from: usize, to: usize) -> std::io::Result<()> {
    // SAFETY: on a shared file mapping MADV_DONTNEED only unmaps the pages: their contents,
    // dirty or not, stay in the page cache (one copy per file), so every later read through
    // this mapping or the file sees the same bytes. Nothing is freed that a reference into
    // the mapping could still point at.
    unsafe { raw.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) }
}

/// Work on lazy mappings that waits for the hub lock's release.
enum Deferred {
    DropPages(Arc<MmapRaw>, usize, usize),
    Unmap(Arc<MmapRaw>),
}

#[derive(Default)]
struct Queue {
    /// Live [`Deferral`]s on this thread.
    depth: u32,
    ops: Vec<Deferred>,
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Queues the work `op` makes when a [`Deferral`] lives on this thread; returns whether it
/// did (if not, the caller does the work now: also while the thread exits and its queue is
/// gone).
fn defer(op: impl FnOnce() -> Deferred) -> bool {
    QUEUE
        .try_with(|q| {
            let mut q = q.borrow_mut();
            if q.depth > 0 {
                q.ops.push(op());
            }
            q.depth > 0
        })
        .unwrap_or(false)
}

/// While one lives, this thread's unmaps of lazy mappings and page drops from them
/// ([`AheadMap`]) wait, and run when the last one ends: taken with the hub lock and dropped
/// after it, so that the lock is not held while they run. Both can take milliseconds of CPU
/// time on a virtual machine: each flushes the other CPUs' TLBs and spins until every one has
/// answered, however long the host keeps a virtual CPU away.
#[must_use]
pub(crate) struct Deferral {
    /// Bound to its thread (the queue is per thread).
    _thread: PhantomData<*const ()>,
}

impl Deferral {
    pub(crate) fn begin() -> Deferral {
        QUEUE.with_borrow_mut(|q| q.depth += 1);
        Deferral {
            _thread: PhantomData,
        }
    }
}

/// Whether this thread's lazy unmaps and page drops wait for a [`Deferral`] to end now.
#[cfg(test)]
pub(crate) fn deferring() -> bool {
    QUEUE.with_borrow(|q| q.depth > 0)
}

impl Drop for Deferral {
    fn drop(&mut self) {
        let ops = QUEUE.with_borrow_mut(|q| {
            q.depth -= 1;
            (q.depth == 0 && !q.ops.is_empty()).then(|| std::mem::take(&mut q.ops))
        });
        // Nothing deferred, the usual case: one access to the queue per hold of the lock.
        let Some(mut ops) = ops else {
            return;
        };
        for op in ops.drain(..) {
            match op {
                Deferred::DropPages(raw, from, to) => {
                    if let Err(e) = dontneed(&raw, from, to) {
                        tracing::debug!("madvise: {e}");
                    }
                }
                Deferred::Unmap(raw) => drop(raw),
            }
        }
        // The queue keeps its capacity: no allocation per hold of the lock.
        QUEUE.with_borrow_mut(|q| {
            if q.ops.is_empty() && ops.capacity() > q.ops.capacity() {
                q.ops = ops;
            }
        });
    }
}

/// Grows `file` to at least `len` bytes with disk blocks reserved (`posix_fallocate`, or
/// zeros written where the filesystem lacks it), so writes through a mapping cannot hit "no
/// space left" (which a mapping reports as SIGBUS): a full disk is an error here. Never
/// shrinks.
pub(crate) fn reserve(file: &File, path: &Path, len: u64) -> Result<()> {
    reserve_with(file, path, len, posix_fallocate)
}

/// [`reserve`] of `want` bytes, or, when the disk has no room for that, of just `need` (no
/// more than `want`): on a nearly full disk a segment grows by what its record takes, so puts
/// go on while there is room for them. Returns the length reserved.
pub(crate) fn reserve_or_just(file: &File, path: &Path, want: u64, need: u64) -> Result<u64> {
    match reserve(file, path, want) {
        Err(StorageError::DiskFull { .. }) if need < want => {
            reserve(file, path, need)?;
            Ok(need)
        }
        r => r.map(|()| want),
    }
}

/// `posix_fallocate(fd, offset, len)`, returning its error number (0: done).
type Fallocate = fn(&File, libc::off_t, libc::off_t) -> libc::c_int;

/// [`reserve`] with `fallocate` in place of `posix_fallocate` (tests make it fail).
fn reserve_with(file: &File, path: &Path, len: u64, fallocate: Fallocate) -> Result<()> {
    let cur = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    if len <= cur {
        return Ok(());
    }
    let (Ok(off), Ok(add)) = (libc::off_t::try_from(cur), libc::off_t::try_from(len - cur)) else {
        return Err(StorageError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "segment too large"),
        ));
    };
    match fallocate(file, off, add) {
        0 => Ok(()),
        // Filesystems without fallocate: a sparse file would turn a full disk into a SIGBUS
        // on a later store, so the blocks are reserved by writing zeros instead.
        libc::EOPNOTSUPP | libc::EINVAL => write_zeros(file, path, cur, len),
        errno => Err(StorageError::io(
            path,
            std::io::Error::from_raw_os_error(errno),
        )),
    }
}

/// Writes zeros over `from..to` (past the data: `from` is the file's length), so that the
/// filesystem allocates those blocks now and a full disk is an error here. A failure leaves
/// the file longer by what was written, zeros, which read as the end of the data.
fn write_zeros(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK.min(to - from) as usize];
    let mut at = from;
    while at < to {
        let n = ZERO_CHUNK.min(to - at);
        file.write_all_at(&zeros[..n as usize], at)
            .map_err(|e| StorageError::io(path, e))?;
        at += n;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn posix_fallocate(file: &File, offset: libc::off_t, len: libc::off_t) -> libc::c_int {
    use std::os::fd::AsRawFd;
    // SAFETY: plain system call on an open descriptor owned by `file`; no memory is passed.
    unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, len) }
}

#[cfg(not(target_os = "linux"))]
fn posix_fallocate(_file: &File, _offset: libc::off_t, _len: libc::off_t) -> libc::c_int {
    libc::EOPNOTSUPP
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    /// The resident bytes of the mapping holding `addr` (`/proc/self/smaps`); `None` when no
    /// mapping holds it. `smaps` is read in pieces, each under the memory map's lock: while
    /// other tests' threads map and unmap, one reading can miss an entry, so `None` is only
    /// the answer of three.
    fn mapping_rss(addr: usize) -> Option<u64> {
        (0..3).find_map(|_| mapping_rss_once(addr))
    }

    fn mapping_rss_once(addr: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
                let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap();
                return Some(kb * 1024);
            }
        }
        None
    }

    /// Bytes in the files of [`reserved_file`].
    const LEN: usize = 64 << 10;

    /// A new empty file in a temporary directory (kept while it lives).
    fn new_file() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        (dir, path, file)
    }

    /// A new file of [`LEN`] reserved bytes in a temporary directory (kept while it lives).
    fn reserved_file() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let (dir, path, file) = new_file();
        reserve(&file, &path, LEN as u64).unwrap();
        (dir, path, file)
    }

    /// While a deferral lives (the hub lock is held), page drops and the unmap of a lazy
    /// mapping wait, and they run when the last deferral ends; without one they run at once.
    #[test]
    fn lazy_drops_and_unmaps_wait_for_the_deferral() {
        let (_dir, path, file) = reserved_file();
        let mut map = map_ahead(&file, &path, LEN as u64).unwrap();
        map[..LEN].fill(7);
        let addr = map.as_ptr() as usize;
        assert_eq!(mapping_rss(addr), Some(LEN as u64));

        let outer = Deferral::begin();
        let inner = Deferral::begin();
        map.drop_pages(0, LEN / 2).unwrap();
        drop(inner);
        assert!(deferring());
        assert_eq!(
            mapping_rss(addr),
            Some(LEN as u64),
            "dropped under the lock"
        );
        drop(outer);
        assert!(!deferring());
        assert_eq!(mapping_rss(addr), Some(LEN as u64 / 2));

        map.drop_pages(LEN / 2, LEN).unwrap();
        assert_eq!(mapping_rss(addr), Some(0), "no deferral: dropped at once");
        assert_eq!(
            map[LEN - 1],
            7,
            "dropped pages read back from the page cache"
        );

        let d = Deferral::begin();
        drop(map);
        assert!(mapping_rss(addr).is_some(), "unmapped under the lock");
        drop(d);
        assert_eq!(mapping_rss(addr), None);
    }

    /// A prefault maps pages for writing and changes no byte; it holds the mapping after its
    /// segment let go (the last holder unmaps it); pages past the end of the file (it shrank
    /// since) are an error it logs, not a SIGBUS.
    #[test]
    fn prefault_maps_pages_without_changing_a_byte() {
        let (_dir, path, file) = reserved_file();
        let mut map = map_ahead(&file, &path, 2 * LEN as u64).unwrap();
        map[..4096].fill(7);
        let addr = map.as_ptr() as usize;
        map.drop_pages(0, 2 * LEN).unwrap();
        assert_eq!(mapping_rss(addr), Some(0));

        let p = map.prefault(100, 3 * 4096 + 1, Access::Write).unwrap();
        assert_eq!(p.bytes(), 0..3 * 4096 + 1);
        p.run();
        assert_eq!(mapping_rss(addr), Some(4 * 4096), "pages 0..4 mapped");
        assert!(map[..4096].iter().all(|&b| b == 7));
        assert!(map[4096..LEN].iter().all(|&b| b == 0));
        let mut on_disk = vec![0u8; LEN];
        file.read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(&on_disk[..], &map[..LEN]);

        // Past the end of the file (a lazy segment cut its tail off meanwhile).
        let past = map.prefault(LEN, 2 * LEN, Access::Write).unwrap();
        past.run();
        assert_eq!(
            file.metadata().unwrap().len(),
            LEN as u64,
            "the file did not grow"
        );
        assert_eq!(
            map.prefault(2 * LEN, 3 * LEN, Access::Write)
                .map(|p| p.bytes()),
            None,
            "past the mapping"
        );

        drop(map);
        assert!(mapping_rss(addr).is_some(), "held by the prefaults");
        drop((p, past));
        assert_eq!(mapping_rss(addr), None);
    }

    /// A prefault for reading maps pages as they are: a hole stays a hole (no block is
    /// allocated: a run punched free stays free), written bytes read back unchanged.
    #[test]
    fn prefault_for_reading_allocates_nothing() {
        let (_dir, path, file) = new_file();
        file.set_len(LEN as u64).unwrap();
        file.write_all_at(&[9u8; 4096], 0).unwrap();
        let blocks = allocated(&file);
        let map = map_ahead(&file, &path, LEN as u64).unwrap();
        let addr = map.as_ptr() as usize;
        let p = map.prefault(0, LEN, Access::Read).unwrap();
        assert_eq!(p.access(), Access::Read);
        p.run();
        assert_eq!(mapping_rss(addr), Some(LEN as u64), "every page mapped");
        assert_eq!(allocated(&file), blocks, "a hole got a block");
        assert!(map[..4096].iter().all(|&b| b == 9));
        assert!(map[4096..LEN].iter().all(|&b| b == 0));
    }

    /// Where posix_fallocate is unsupported (or refused with EINVAL).
    fn unsupported(_: &File, _: libc::off_t, _: libc::off_t) -> libc::c_int {
        libc::EOPNOTSUPP
    }

    /// Bytes of disk the file holds (st_blocks counts 512-byte units).
    fn allocated(file: &File) -> u64 {
        file.metadata().unwrap().blocks() * 512
    }

    /// Without posix_fallocate the file grew sparse: a full disk then surfaced as a SIGBUS on
    /// a store through the mapping instead of an error of the growth (OUT_OF_MEMORY).
    #[test]
    fn without_fallocate_the_blocks_are_still_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file = File::create_new(&path).unwrap();
        file.set_len(64).unwrap();
        let len = 3 * ZERO_CHUNK + 4096;
        reserve_with(&file, &path, len, unsupported).unwrap();
        assert_eq!(file.metadata().unwrap().len(), len);
        assert!(
            allocated(&file) >= len,
            "{} of {len} bytes allocated",
            allocated(&file)
        );
    }

    /// The same on a full disk: the growth fails with DiskFull.
    #[test]
    fn without_fallocate_a_full_disk_is_an_error() {
        let Some(fs) = Tmpfs::mount("2m") else {
            return;
        };
        let path = fs.dir.path().join("seg");
        let file = File::create_new(&path).unwrap();
        let r = reserve_with(&file, &path, 4 << 20, unsupported);
        assert!(matches!(r, Err(StorageError::DiskFull { .. })), "{r:?}");
    }

    /// A tmpfs of `size` on a temp dir, unmounted on drop; None (the test passes, saying
    /// why) where mounting is not allowed (not root), unless `YAAD_REQUIRE_TMPFS=1`.
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().unwrap();
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output();
            let why = match out {
                Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => format!("cannot run mount: {e}"),
            };
            let msg = format!("disk-full test needs a tmpfs (mount as root): {why}");
            if std::env::var("YAAD_REQUIRE_TMPFS").is_ok_and(|v| v == "1") {
                panic!("{msg} (YAAD_REQUIRE_TMPFS=1)");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let p = self.dir.path();
            if !Command::new("umount")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success())
            {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
    }
}
