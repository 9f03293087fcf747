//! Change journals `changes-<generation>.yaad`: the spokes whose segment changed after the
//! summary of that generation was taken (see [`super::Summary`]).
//!
//! The hub appends a spoke's entry *before* its first change to that spoke's segment in a
//! generation, so a summary plus the journals of its generation and later name every segment
//! that may differ from what the summary says; recovery scans those and trusts the summary for
//! the rest. Entries are written without fsync: like checkpoints, they are read only by a
//! process of the same boot. Layout (little-endian), 24 bytes per entry, nothing else:
//!
//! ```text
//! spoke start u64 | spoke span u64 | crc u32: CRC-32(generation u64 ‖ start ‖ span) | zero u32
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Result, SpokeId, StorageError};

/// Bytes per journal entry.
pub const JOURNAL_ENTRY_LEN: usize = 24;

const PREFIX: &str = "changes-";
const SUFFIX: &str = ".yaad";

/// `changes-<generation, 20 digits>.yaad`.
pub fn journal_file_name(generation: u64) -> String {
    format!("{PREFIX}{generation:020}{SUFFIX}")
}

/// The generation of a journal file name, if it is one.
pub fn parse_journal_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every change journal in `dir` by generation, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let e = e.map_err(|e| StorageError::io(dir, e))?;
        if let Some(g) = parse_journal_file_name(&e.file_name().to_string_lossy()) {
            out.push((g, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes the journals of generations before `generation` (best effort: a leftover journal
/// only makes a later start scan a few more segments).
pub fn remove_before(dir: &Path, generation: u64) {
    for (_, p) in list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|(g, _)| *g < generation)
    {
        let _ = fs::remove_file(p);
    }
}

fn entry_crc(generation: u64, spoke: SpokeId) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(&spoke.start.to_le_bytes());
    h.update(&spoke.span.to_le_bytes());
    h.finalize()
}

/// The journal of one generation, open for appending.
#[derive(Debug)]
pub struct ChangeJournal {
    path: PathBuf,
    file: File,
    generation: u64,
}

impl ChangeJournal {
    /// Opens (creating it if needed) the journal of `generation` in `dir` for appending.
    pub fn open(dir: &Path, generation: u64) -> Result<Self> {
        let path = dir.join(journal_file_name(generation));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(ChangeJournal {
            path,
            file,
            generation,
        })
    }

    /// Appends `spoke`'s entry (one `write`, no fsync).
    pub fn record(&mut self, spoke: SpokeId) -> Result<()> {
        let mut e = [0u8; JOURNAL_ENTRY_LEN];
        e[0..8].copy_from_slice(&spoke.start.to_le_bytes());
        e[8..16].copy_from_slice(&spoke.span.to_le_bytes());
        e[16..20].copy_from_slice(&entry_crc(self.generation, spoke).to_le_bytes());
        self.file
            .write_all(&e)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// The spokes in the journal file at `path` (of `generation`): `Ok(Err(reason))` if any
    /// entry is damaged or cut short (then nothing in it can be relied on).
    pub fn read(path: &Path, generation: u64) -> Result<std::result::Result<Vec<SpokeId>, String>> {
        let bytes = fs::read(path).map_err(|e| StorageError::io(path, e))?;
        Ok(decode(&bytes, generation))
    }
}

fn decode(bytes: &[u8], generation: u64) -> std::result::Result<Vec<SpokeId>, String> {
    let entries = bytes.chunks_exact(JOURNAL_ENTRY_LEN);
    if !entries.remainder().is_empty() {
        return Err(format!(
            "{} bytes past the last entry",
            entries.remainder().len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / JOURNAL_ENTRY_LEN);
    for (i, e) in entries.enumerate() {
        let word = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&e[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let spoke = SpokeId {
            start: word(0),
            span: word(8),
        };
        let crc = u32::from_le_bytes([e[16], e[17], e[18], e[19]]);
        if crc != entry_crc(generation, spoke) || e[20..24] != [0; 4] {
            return Err(format!("entry {i} is damaged"));
        }
        out.push(spoke);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = journal_file_name(42);
        assert_eq!(name, "changes-00000000000000000042.yaad");
        assert_eq!(parse_journal_file_name(&name), Some(42));
        for bad in [
            "changes-42.yaad",
            "changes-0000000000000000004x.yaad",
            "ids.yaad",
        ] {
            assert_eq!(parse_journal_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn appends_read_back_and_damage_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut j = ChangeJournal::open(tmp.path(), 3).unwrap();
        j.record(SpokeId::second_at(5_000_000)).unwrap();
        j.record(SpokeId::second_at(9_000_000)).unwrap();
        drop(j);
        // Reopening appends after what is there.
        ChangeJournal::open(tmp.path(), 3)
            .unwrap()
            .record(SpokeId::second_at(1_000_000))
            .unwrap();
        let path = tmp.path().join(journal_file_name(3));
        let got = ChangeJournal::read(&path, 3).unwrap().unwrap();
        assert_eq!(
            got,
            vec![
                SpokeId::second_at(5_000_000),
                SpokeId::second_at(9_000_000),
                SpokeId::second_at(1_000_000)
            ]
        );
        // Read as another generation: every entry fails its check.
        assert!(ChangeJournal::read(&path, 4).unwrap().is_err());
        let bytes = fs::read(&path).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(decode(&b, 3).is_err(), "flip at {i} accepted");
            if i % JOURNAL_ENTRY_LEN != 0 {
                assert!(decode(&bytes[..i], 3).is_err(), "cut at {i} accepted");
            }
        }
        assert_eq!(decode(&[], 3).unwrap(), vec![]);
    }
}
