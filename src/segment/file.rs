//! The files of a data dir as files, shared by the segment modes and the small files beside
//! them: creating and opening a segment file, reading its header and finding the end of its
//! data without mapping it, and replacing a small file whole.
//!
//! Syncs are not here: they go through the durability boundary [`super::fsio`].

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{
    FILE_HEADER_LEN, align_up, append_end_from, decode_file_header, encode_file_header,
    file_header_error, header_version, segment_file_name,
};
use super::fsio;
use super::mmap;
use super::{Result, SpokeId, StorageError, file_len};

/// Size of the chunks read backwards when looking for the end of the data.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The bytes of `map` up to `end` (a file cut short inside its last record is shorter).
pub(crate) fn used(map: &[u8], end: u64) -> &[u8] {
    &map[..used_len(map, end)]
}

/// [`used`], writable.
pub(crate) fn used_mut(map: &mut [u8], end: u64) -> &mut [u8] {
    let len = used_len(map, end);
    &mut map[..len]
}

fn used_len(map: &[u8], end: u64) -> usize {
    usize::try_from(end).unwrap_or(usize::MAX).min(map.len())
}

/// Creates a new segment file (never replacing one) holding just the file header.
pub(crate) fn create_file(dir: &Path, spoke: SpokeId) -> Result<(PathBuf, File)> {
    let path = dir.join(segment_file_name(spoke));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| StorageError::io(&path, e))?;
    if let Err(e) = file.write_all_at(&encode_file_header(spoke), 0) {
        return Err(abandon_created(&path, StorageError::io(&path, e)));
    }
    Ok((path, file))
}

/// Removes a segment file whose creation failed (disk full, typically) and returns `err`:
/// a file left behind would make every later create of the spoke fail ("file exists").
pub(crate) fn abandon_created(path: &Path, err: StorageError) -> StorageError {
    // Best effort: if even this fails, recovery removes header-less files.
    let _ = fs::remove_file(path);
    err
}

/// Opens an existing file for reading and writing.
pub(crate) fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))
}

/// Reads the file header of an open segment file without mapping it: its spoke and format
/// version.
pub(crate) fn read_file_header(file: &File, path: &Path) -> Result<(SpokeId, u32)> {
    let mut head = [0u8; FILE_HEADER_LEN as usize];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StorageError::io(path, e)),
        }
    }
    let spoke = decode_file_header(&head[..got])
        .map_err(|reason| file_header_error(path, &head[..got], reason))?;
    Ok((spoke, header_version(&head[..got])))
}

/// Where the data of an open segment file ends, as [`super::format::append_end`] says. The
/// last non-zero byte is found with positioned reads from the end (through a mapping, a
/// mapped segment's preallocated zero tail would be faulted in page by page and stay
/// resident); then only the last record's pages are read, through a mapping dropped at once.
pub(crate) fn file_data_end(file: &File, path: &Path) -> Result<u64> {
    let nonzero = nonzero_end(file, path)?;
    if nonzero == FILE_HEADER_LEN {
        return Ok(nonzero);
    }
    let map = mmap::map(file, path)?;
    Ok(append_end_from(&map, nonzero))
}

/// One past the last non-zero byte of the file, rounded up to the record alignment
/// ([`super::format::data_end`] without mapping the file).
pub(crate) fn nonzero_end(file: &File, path: &Path) -> Result<u64> {
    let len = file_len(file, path)?;
    let mut hi = len;
    let mut buf = vec![0u8; TAIL_CHUNK as usize];
    while hi > FILE_HEADER_LEN {
        let lo = hi.saturating_sub(TAIL_CHUNK).max(FILE_HEADER_LEN);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)
            .map_err(|e| StorageError::io(path, e))?;
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            return Ok(align_up(lo + i as u64 + 1));
        }
        hi = lo;
    }
    Ok(FILE_HEADER_LEN)
}

/// Writes `bytes` to `path` atomically: temp file in the same dir, fsync, rename, fsync dir.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(path, bytes, true)
}

/// Writes `bytes` to `path.tmp` and renames it over `path`, so a reader sees the old file or
/// the new one whole; `durable`: also fsyncs the file before and the directory after.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let written = File::create(&tmp)
        .and_then(|f| {
            write_sparse(&f, bytes)?;
            if durable { fsio::sync_file(&f) } else { Ok(()) }
        })
        .map_err(|e| StorageError::io(&tmp, e));
    if let Err(e) = written {
        // Best effort: a full disk must not also leave a half-written copy behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| StorageError::io(path, e))?;
    if durable {
        fsio::sync_parent_dir(path)
    } else {
        Ok(())
    }
}

/// Chunks of a file image that [`write_sparse`] writes, or leaves as a hole when all zero.
const SPARSE_CHUNK: usize = 64 * 1024;

/// Writes `bytes` into the new, empty `file`, leaving all-zero chunks as holes: a memory-mode
/// segment whose freed runs gave their pages back is mostly zeros, which need no disk.
pub(crate) fn write_sparse(file: &File, bytes: &[u8]) -> std::io::Result<()> {
    for (i, chunk) in bytes.chunks(SPARSE_CHUNK).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            file.write_all_at(chunk, (i * SPARSE_CHUNK) as u64)?;
        }
    }
    file.set_len(bytes.len() as u64)
}

/// Reads the whole of `file` through `fill(offset, chunk)`, skipping all-zero chunks (holes
/// or zeros alike), so that a mostly empty image costs no memory where it lands.
pub(crate) fn read_sparse(
    file: &File,
    len: u64,
    mut fill: impl FnMut(usize, &[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; SPARSE_CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(SPARSE_CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            fill(at as usize, &buf[..n]);
        }
        at += n as u64;
    }
    Ok(())
}

/// Renames the file at `path` to `to` and points `path` there (a segment's file renamed
/// aside, [`super::Segment::rename`]).
pub(crate) fn rename_to(path: &mut PathBuf, to: &Path) -> Result<()> {
    fs::rename(&*path, to).map_err(|e| StorageError::io(path, e))?;
    *path = to.to_path_buf();
    Ok(())
}

/// Removes `path`; returns whether it existed (a file already gone is not an error).
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Refuses a freed run in a file whose format version predates them.
pub(crate) fn check_can_free(path: &Path, version: u32) -> Result<()> {
    if version < super::format::FREED_RUNS_SINCE {
        return Err(super::format::invalid_input(
            path,
            format!("format version {version} files cannot hold freed runs"),
        ));
    }
    Ok(())
}

/// The most one `fallocate` punches. A punch holds the file's locks while it drops the range's
/// pages from the page cache and every mapping (2-4 ms for 5-10 MiB here), and an append to the
/// same file or a fault in its mapping, under the hub lock, waits for it. In pieces with a
/// pause between them ([`PUNCH_PAUSE`], so that the waiter gets the locks before the next
/// piece) it waits for one piece: with 60 KB bodies under churn, hub-lock holds ≥ 5 ms went
/// from ~100 to ~10 in 5 s (bench/README.md, *Churn*).
const PUNCH_PIECE: u64 = 1 << 20;

/// The pause between two pieces of a punch ([`PUNCH_PIECE`]).
const PUNCH_PAUSE: std::time::Duration = std::time::Duration::from_micros(100);

/// [`punch_hole`] without a path for errors (a hole punched outside the hub lock), in pieces of
/// at most [`PUNCH_PIECE`].
pub fn punch_file(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    let mut at = from;
    while at < to {
        let end = to.min((at / PUNCH_PIECE + 1) * PUNCH_PIECE);
        fallocate(
            file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            at,
            end - at,
        )?;
        at = end;
        if at < to {
            std::thread::sleep(PUNCH_PAUSE);
        }
    }
    Ok(())
}

/// Punches a hole over `from..to` of `file` (its length unchanged): the blocks go back to the
/// filesystem and the pages leave the page cache and every mapping of them.
pub(crate) fn punch_hole(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    punch_file(file, from, to).map_err(|e| StorageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    /// A punch over several pieces gives back every block of its range and nothing outside it.
    #[test]
    fn a_punch_in_pieces_covers_its_whole_range() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create_new(dir.path().join("f")).unwrap();
        let len = 4 * PUNCH_PIECE;
        file.write_all_at(&vec![7u8; len as usize], 0).unwrap();
        file.sync_all().unwrap();
        let (from, to) = (PUNCH_PIECE / 2, 3 * PUNCH_PIECE + 4096);
        punch_file(&file, from, to).unwrap();
        file.sync_all().unwrap();
        let mut got = vec![0u8; len as usize];
        file.read_exact_at(&mut got, 0).unwrap();
        assert!(got[..from as usize].iter().all(|&b| b == 7));
        assert!(got[from as usize..to as usize].iter().all(|&b| b == 0));
        assert!(got[to as usize..].iter().all(|&b| b == 7));
        let allocated = file.metadata().unwrap().blocks() * 512;
        assert!(
            allocated <= len - (to - from) + 8192,
            "{allocated} bytes allocated after punching {} of {len}",
            to - from
        );
    }
}
