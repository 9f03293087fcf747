//! The only place that maps files: mapping a segment file and reserving its disk blocks.
//!
//! Mapping a file is `unsafe` because the compiler cannot know what else writes or
//! shrinks it. yaad's rules that make it sound (see `storage-format.md`, "What the format
//! assumes"):
//! 1. Segment files are only mapped by the daemon, inside a data dir whose `LOCK` it holds
//!    ([`super::DataDir`]), so no other yaad process writes or truncates them.
//!    `yaad-dump` reads files into memory and never maps.
//! 2. Nothing in yaad shrinks a segment file: growth goes through [`reserve`] and the only
//!    other change of size is deleting the file after it is unmapped.
//! 3. After growing a file, the owner maps it again before touching the new bytes, except
//!    for a mapping made with [`map_ahead`]: it may extend past the end of the file, and its
//!    owner only touches bytes the file already covers (below its data end, which a positioned
//!    write extended the file to first). Pages of a shared mapping past the end of the file
//!    become readable and writable once the file grows over them (one page cache).
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::MmapMut;

use super::{Result, StorageError};

/// Maps the whole of `file` (read/write, shared).
pub(crate) fn map(file: &File, path: &Path) -> Result<MmapMut> {
    // SAFETY: rules 1-3 of this module: the data-dir lock keeps other processes out, yaad
    // never truncates a segment file, and every caller remaps after growth, so the mapping
    // never covers bytes past the end of the file (no SIGBUS) and no other writer aliases
    // the `&mut [u8]` the mapping hands out.
    unsafe { MmapMut::map_mut(file) }.map_err(|e| StorageError::io(path, e))
}

/// Maps `len` bytes of `file` (read/write, shared), which may be more than the file holds: a
/// segment that grows by positioned writes then reads its new bytes through the same mapping
/// instead of mapping the file again after every append (an munmap + mmap + page fault per
/// change). The caller must only touch bytes below the file's current length.
pub(crate) fn map_ahead(file: &File, path: &Path, len: u64) -> Result<MmapMut> {
    let len = usize::try_from(len).map_err(|_| {
        StorageError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "segment too large"),
        )
    })?;
    // SAFETY: rules 1-3 of this module. The mapping may cover pages past the end of the file;
    // touching those would raise SIGBUS, so the caller (LazySegment) only slices the mapping
    // below its data end, which never exceeds the file's length (rule 3's exception). Nothing
    // shrinks the file while it is mapped (rule 2).
    unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) }
        .map_err(|e| StorageError::io(path, e))
}

/// Grows `file` to at least `len` bytes with disk blocks reserved, so writes through a
/// mapping cannot hit "no space left" (which a mapping reports as SIGBUS). Never shrinks.
pub(crate) fn reserve(file: &File, path: &Path, len: u64) -> Result<()> {
    let cur = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    if len <= cur {
        return Ok(());
    }
    allocate(file, path, cur, len)?;
    // `allocate` may be a no-op where unsupported; set_len only ever grows here.
    if file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len()
        < len
    {
        file.set_len(len).map_err(|e| StorageError::io(path, e))?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn allocate(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(to - from),
    ) else {
        return Err(StorageError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "segment too large"),
        ));
    };
    // SAFETY: plain system call on an open descriptor owned by `file`; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate: fall back to a sparse set_len (the caller does).
        libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        errno => Err(StorageError::io(
            path,
            std::io::Error::from_raw_os_error(errno),
        )),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _path: &Path, _from: u64, _to: u64) -> Result<()> {
    Ok(())
}
