//! The durability boundary of a data dir: every call that makes something durable (a file's
//! data, a mapping's pages, a directory's names) and the boot identity go through here.
//!
//! Writes themselves (stores into a mapping, positioned writes, renames, unlinks) are not
//! routed through this module: what they leave on the device after a power cut is defined
//! by the syncs that follow them (storage-format.md, *What the format assumes of the disk*).
//! That is also what the power-loss simulator ([`super::powercut`]) needs: it records the
//! durable state of a data dir at each of these calls and builds, at a cut, a directory
//! holding only what a power failure may leave. With no simulator registered each call is
//! the system call plus one relaxed atomic load.

use std::fs::File;
use std::io;
use std::path::Path;

use super::{Result, StorageError, powercut};

/// `fdatasync`: the file's data (written by `write`/`pwrite` or through a shared mapping) and
/// the metadata needed to read it back (its length) reach the device.
pub fn sync_file(file: &File) -> io::Result<()> {
    match powercut::before_file_sync(file) {
        None => file.sync_data(),
        Some(pending) => {
            file.sync_data()?;
            pending.commit();
            Ok(())
        }
    }
}

/// One `syncfs` of the filesystem holding `handle`, for the open `files` and the closed
/// `paths` of a batch that are on it: every dirty page and inode of that filesystem reaches the
/// device, with one device cache flush where an `fdatasync` per file makes one each. Since
/// Linux 5.8 it fails if any file of the filesystem had a write-back error since `handle` was
/// opened or last reported one ([`syncfs_reports_errors`]); earlier kernels report none.
pub fn sync_filesystem(handle: &File, files: &[&File], paths: &[&Path]) -> io::Result<()> {
    let pending: Vec<_> = files
        .iter()
        .filter_map(|f| powercut::before_file_sync(f))
        .chain(paths.iter().filter_map(|p| powercut::before_path_sync(p)))
        .collect();
    rustix::fs::syncfs(handle)?;
    pending.into_iter().for_each(powercut::Pending::commit);
    Ok(())
}

/// Whether this kernel's `syncfs` reports write-back errors (Linux 5.8 and later).
pub fn syncfs_reports_errors() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (5, 8)
}

/// `msync(MS_SYNC)` of a whole shared mapping of the file at `path`.
pub(crate) fn sync_map(map: &super::mmap::AheadMap, path: &Path) -> io::Result<()> {
    match powercut::before_path_sync(path) {
        None => map.flush(),
        Some(pending) => {
            map.flush()?;
            pending.commit();
            Ok(())
        }
    }
}

/// `fsync` of a directory: the names created, renamed or removed in it reach the device.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let pending = powercut::before_dir_sync(dir);
    File::open(dir)?.sync_all()?;
    if let Some(p) = pending {
        p.commit();
    }
    Ok(())
}

/// [`sync_dir`] of the directory holding `path`, so a created, renamed or removed file name is
/// durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir).map_err(|e| StorageError::io(dir, e))
}

/// Makes every file and name under `dir` durable: an fsync of each (file and directory) when
/// there are few, else one `syncfs` of the filesystem holding `dir` (one call instead of one
/// per file, but it also writes back every other file of that filesystem).
pub fn sync_tree(dir: &Path) -> io::Result<()> {
    const FEW: usize = 256;
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() && files.len() <= FEW {
        for entry in std::fs::read_dir(&dirs[i])? {
            let entry = entry?;
            match entry.file_type()? {
                t if t.is_dir() => dirs.push(entry.path()),
                t if t.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
        i += 1;
    }
    if files.len() <= FEW {
        for f in &files {
            match File::open(f) {
                Ok(file) => sync_file(&file)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        return dirs.iter().try_for_each(|d| sync_dir(d));
    }
    let pending = powercut::before_tree_sync(dir);
    rustix::fs::syncfs(File::open(dir)?)?;
    if let Some(p) = pending {
        p.commit();
    }
    Ok(())
}

/// The boot this process runs in (Linux: `/proc/sys/kernel/random/boot_id`), `None` where it
/// cannot be read. Two processes of the same boot share the page cache, so one sees every
/// write the other made, synced or not; across a reboot only what was synced is there. `dir`
/// is the data dir asking: the power-loss simulator gives a data dir restored from a cut a
/// boot of its own.
pub fn boot_id(dir: &Path) -> Option<Vec<u8>> {
    if let Some(id) = powercut::boot_id(dir) {
        return Some(id);
    }
    let id = std::fs::read("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim_ascii();
    (!id.is_empty()).then(|| id.to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_a_boot_id() {
        // Linux with /proc (the CI machine): checkpoints are trusted after a crash only then.
        let dir = std::path::Path::new(".");
        let id = super::boot_id(dir).expect("boot id");
        assert_eq!(id, super::boot_id(dir).unwrap());
    }
}
