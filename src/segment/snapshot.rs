//! Mem-mode snapshots: a flush replaces the whole set of segment files all-or-nothing.
//!
//! 0. [`begin`] finishes or cleans up after an earlier flush that failed (see [`recover`]);
//! 1. [`stage`] writes each changed segment to `<segment file>.next` and fsyncs it;
//! 2. [`commit`] fsyncs the dir, writes the commit record [`FLUSH_RECORD_FILE`] (atomically:
//!    temp file, fsync, rename, fsync dir) naming every segment file of the new snapshot —
//!    the roll-forward point — then [`roll_forward`]s: renames each `.next` into place,
//!    removes segment files not named, fsyncs the dir and removes the record.
//!
//! At open ([`recover`], called by `DataDir::open`): a record present finishes the roll
//! forward; `.next` files without one are deleted (the previous snapshot is untouched).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::file::{remove_if_exists, write_file_atomically};
use super::format::{parse_segment_file_name, segment_file_name};
use super::fsio::sync_parent_dir;
use super::{Result, SpokeId, StorageError};

/// The commit record of a mem-mode flush (present only while one rolls forward).
pub const FLUSH_RECORD_FILE: &str = "flush.yaad";
/// Suffix of a staged segment file of a flush not yet rolled forward.
pub const STAGED_SUFFIX: &str = ".next";
const HEADER: &str = "yaad-flush 1";
const FOOTER: &str = "end";

fn staged_path(dir: &Path, spoke: SpokeId) -> PathBuf {
    dir.join(format!("{}{STAGED_SUFFIX}", segment_file_name(spoke)))
}

fn sync_dir(dir: &Path) -> Result<()> {
    sync_parent_dir(&dir.join(FLUSH_RECORD_FILE))
}

fn names(dir: &Path) -> Result<Vec<String>> {
    fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .map_err(|e| StorageError::io(dir, e))
}

fn remove(path: &Path) -> Result<()> {
    remove_if_exists(path).map(|_| ())
}

/// The first step of every flush, before anything is staged: as at open ([`recover`]), a
/// commit record left by a flush whose roll forward failed is rolled forward (the staged files
/// it names belong to that committed snapshot: deleting them would leave the record pointing
/// at files that are gone), else the staged files of a flush that was not committed go.
pub fn begin(dir: &Path) -> Result<()> {
    recover(dir)
}

/// Removes staged files of a flush that was not committed (no commit record).
fn discard_staged(dir: &Path) -> Result<()> {
    for n in names(dir)? {
        if n.ends_with(STAGED_SUFFIX) {
            remove(&dir.join(n))?;
        }
    }
    Ok(())
}

/// Writes the new image of `spoke`'s segment as a staged file and fsyncs it. Not visible
/// to a restore until [`commit`] succeeds.
pub fn stage(dir: &Path, spoke: SpokeId, bytes: &[u8]) -> Result<()> {
    let path = staged_path(dir, spoke);
    let written = fs::File::create(&path)
        .and_then(|f| {
            super::file::write_sparse(&f, bytes)?;
            super::fsio::sync_file(&f)
        })
        .map_err(|e| StorageError::io(&path, e));
    if written.is_err() {
        // Best effort: a full disk must not also keep a half-written copy.
        let _ = fs::remove_file(&path);
    }
    written
}

/// Commits a snapshot made of `live` spokes: the ones staged since the last commit take
/// their new image, the others keep their file; every other segment file is removed.
pub fn commit(dir: &Path, live: &BTreeSet<SpokeId>) -> Result<()> {
    sync_dir(dir)?;
    let mut text = String::from(HEADER);
    text.push('\n');
    for &s in live {
        text.push_str(&segment_file_name(s));
        text.push('\n');
    }
    text.push_str(FOOTER);
    text.push('\n');
    write_file_atomically(&dir.join(FLUSH_RECORD_FILE), text.as_bytes())?;
    roll_forward(dir, live)
}

fn roll_forward(dir: &Path, live: &BTreeSet<SpokeId>) -> Result<()> {
    for &s in live {
        let staged = staged_path(dir, s);
        match fs::rename(&staged, dir.join(segment_file_name(s))) {
            Ok(()) => {}
            // Renamed by an earlier, interrupted roll forward (or unchanged spoke).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&staged, e)),
        }
    }
    for n in names(dir)? {
        let stale = parse_segment_file_name(&n).is_some_and(|s| !live.contains(&s));
        if stale || n.ends_with(STAGED_SUFFIX) {
            remove(&dir.join(n))?;
        }
    }
    sync_dir(dir)?;
    remove(&dir.join(FLUSH_RECORD_FILE))?;
    sync_dir(dir)
}

fn parse_record(path: &Path, text: &str) -> Result<BTreeSet<SpokeId>> {
    let bad = |reason: &str| StorageError::corrupted(path, 0, reason);
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad("not a yaad flush record"));
    }
    let mut live = BTreeSet::new();
    for line in lines.by_ref() {
        if line == FOOTER {
            return Ok(live);
        }
        live.insert(parse_segment_file_name(line).ok_or_else(|| bad("bad segment file name"))?);
    }
    Err(bad("flush record ends early"))
}

/// Brings `dir` to exactly one complete snapshot after an interrupted flush (see module doc).
/// A no-op in a dir without a record or staged files (every persisted-mode dir).
pub fn recover(dir: &Path) -> Result<()> {
    let record = dir.join(FLUSH_RECORD_FILE);
    match fs::read(&record) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| StorageError::corrupted(&record, 0, "not text"))?;
            let live = parse_record(&record, &text)?;
            roll_forward(dir, &live)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => discard_staged(dir),
        Err(e) => Err(StorageError::io(&record, e)),
    }
}
