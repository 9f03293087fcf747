//! The data dir: an exclusive lock, the segment files in it, and where the id index lives.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{parse_segment_file_name, segment_file_name};
use super::journal::journal_file_name;
use super::{Result, SpokeId, StorageError};

/// Name of the lock file inside a data dir.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the id index file inside a data dir.
pub const ID_INDEX_FILE: &str = "ids.yaad";
/// Name of the start-up summary inside a data dir (see [`super::Summary`]).
pub const SUMMARY_FILE: &str = "summary.yaad";

/// Subdirectory in which compaction builds new segment files (see `storage-format.md`).
pub const COMPACT_DIR: &str = "compact";

/// The end of the names retired segment files take while they wait to be removed outside
/// the hub lock (see [`DataDir::dead_path`]).
const DEAD_SUFFIX: &str = ".dead";

/// An open data dir. Holding it holds an exclusive lock on `<dir>/LOCK`, so no second
/// yaad process can use the same dir (which is what makes mapping its files sound). The
/// lock is released when this value is dropped or the process dies.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

/// Whether `name` is one [`DataDir::dead_path`] gives: `seg-….yaad.<n>.dead`.
fn is_dead_segment_name(name: &str) -> bool {
    name.strip_suffix(DEAD_SUFFIX)
        .and_then(|rest| rest.rsplit_once('.'))
        .is_some_and(|(seg, n)| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && parse_segment_file_name(seg).is_some()
        })
}

impl DataDir {
    /// Creates `path` if needed and takes its lock; [`StorageError::Locked`] if another
    /// process (or another `DataDir` in this one) holds it. Removes temporary files left by
    /// an interrupted [`super::MemSegment`] flush, retired segment files a stop left before
    /// removing them ([`DataDir::dead_path`]), and the [`COMPACT_DIR`] of an interrupted
    /// compaction (its files were never renamed into place), and finishes or undoes an
    /// interrupted mem-mode snapshot flush ([`super::snapshot::recover`]).
    pub fn open(path: &Path) -> Result<DataDir> {
        fs::create_dir_all(path).map_err(|e| StorageError::io(path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| StorageError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    dir: path.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(StorageError::io(&lock_path, e)),
        }
        // For people: who holds the lock. The lock itself is the flock, not this text.
        lock.set_len(0)
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .map_err(|e| StorageError::io(&lock_path, e))?;
        let dir = DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        };
        let compact = dir.compact_dir();
        if compact.exists() {
            fs::remove_dir_all(&compact).map_err(|e| StorageError::io(&compact, e))?;
        }
        for entry in dir.entries()? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".yaad.tmp") || is_dead_segment_name(&name) {
                let p = entry.path();
                fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
            }
        }
        super::snapshot::recover(&dir.path)?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the segment of `spoke` lives (whether or not it exists).
    pub fn segment_path(&self, spoke: SpokeId) -> PathBuf {
        self.path.join(segment_file_name(spoke))
    }

    /// The name the segment file of retired spoke `spoke` is renamed to, the `n`th of the
    /// process (unique: `n` counts up), while it waits to be removed outside the hub lock: a
    /// new segment of the same spoke can be created meanwhile. Such files hold no live job;
    /// [`DataDir::open`] removes any a stop left.
    pub fn dead_path(&self, spoke: SpokeId, n: u64) -> PathBuf {
        self.path
            .join(format!("{}.{n}{DEAD_SUFFIX}", segment_file_name(spoke)))
    }

    /// Where compaction writes a segment before renaming it over the old one.
    pub fn compact_dir(&self) -> PathBuf {
        self.path.join(COMPACT_DIR)
    }

    /// Where the id index lives.
    pub fn id_index_path(&self) -> PathBuf {
        self.path.join(ID_INDEX_FILE)
    }

    /// Where the start-up summary lives.
    pub fn summary_path(&self) -> PathBuf {
        self.path.join(SUMMARY_FILE)
    }

    /// Where the change journal of `generation` lives (see [`super::ChangeJournal`]).
    pub fn journal_path(&self, generation: u64) -> PathBuf {
        self.path.join(journal_file_name(generation))
    }

    /// Every change journal in the dir by generation, oldest first.
    pub fn journals(&self) -> Result<Vec<(u64, PathBuf)>> {
        super::journal::list(&self.path)
    }

    /// Every segment file in the dir, sorted by spoke (start, then span). Other files are
    /// ignored.
    pub fn segments(&self) -> Result<Vec<(SpokeId, PathBuf)>> {
        let mut out: Vec<(SpokeId, PathBuf)> = self
            .entries()?
            .into_iter()
            .filter_map(|e| {
                let spoke = parse_segment_file_name(&e.file_name().to_string_lossy())?;
                Some((spoke, e.path()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The path of spoke `spoke`'s names file ([`super::spoke_names`]).
    pub fn names_path(&self, spoke: SpokeId) -> PathBuf {
        self.path.join(super::spoke_names::names_file_name(spoke))
    }

    /// Every names file in the dir, by spoke.
    pub fn names_files(&self) -> Result<Vec<SpokeId>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|e| {
                super::spoke_names::parse_names_file_name(&e.file_name().to_string_lossy())
            })
            .collect())
    }

    fn entries(&self) -> Result<Vec<fs::DirEntry>> {
        fs::read_dir(&self.path)
            .and_then(|rd| rd.collect::<std::io::Result<Vec<_>>>())
            .map_err(|e| StorageError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_locked_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let first = DataDir::open(&path).unwrap();
        let err = DataDir::open(&path).unwrap_err();
        assert!(matches!(&err, StorageError::Locked { dir } if dir == &path));
        assert!(err.to_string().contains("in use by another yaad process"));
        drop(first);
        DataDir::open(&path).unwrap();
    }

    #[test]
    fn lists_segments_sorted_and_ignores_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let a = SpokeId {
            start: 20,
            span: 10,
        };
        let b = SpokeId { start: 3, span: 1 };
        for s in [a, b] {
            fs::write(dir.segment_path(s), b"x").unwrap();
        }
        fs::write(tmp.path().join("notes.txt"), b"x").unwrap();
        fs::write(dir.id_index_path(), b"x").unwrap();
        let got: Vec<SpokeId> = dir.segments().unwrap().into_iter().map(|s| s.0).collect();
        assert_eq!(got, vec![b, a]);
    }

    #[test]
    fn open_removes_interrupted_flush_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let spoke = SpokeId { start: 1, span: 1 };
        let tmp_file = tmp.path().join(format!("{}.tmp", segment_file_name(spoke)));
        fs::write(&tmp_file, b"half").unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        assert!(!tmp_file.exists());
        assert!(dir.segments().unwrap().is_empty());
    }

    #[test]
    fn open_removes_dead_segment_files_and_nothing_like_them() {
        let tmp = tempfile::tempdir().unwrap();
        let spoke = SpokeId { start: 1, span: 1 };
        let dead = {
            let dir = DataDir::open(tmp.path()).unwrap();
            let dead = [dir.dead_path(spoke, 0), dir.dead_path(spoke, 17)];
            assert_ne!(dead[0], dead[1]);
            dead
        };
        for d in &dead {
            fs::write(d, b"retired").unwrap();
        }
        // Look-alikes are not dead segment files: left alone.
        let kept =
            ["notes.dead", "seg-1-1.yaad.0.dead", "seg-x.yaad..dead"].map(|n| tmp.path().join(n));
        let kept_too = tmp
            .path()
            .join(format!("{}.x.dead", segment_file_name(spoke)));
        for k in kept.iter().chain([&kept_too]) {
            fs::write(k, b"other").unwrap();
        }
        let dir = DataDir::open(tmp.path()).unwrap();
        for d in &dead {
            assert!(!d.exists(), "{} removed", d.display());
        }
        for k in kept.iter().chain([&kept_too]) {
            assert!(k.exists(), "{} kept", k.display());
        }
        assert!(dir.segments().unwrap().is_empty());
    }
}
