//! The start-up summary `summary.yaad`: what recovery would learn from scanning the far
//! spokes, so a restart reads this one small file (and the segments changed since it was
//! taken, listed in the change journals, see [`super::journal`]) instead of every far segment.
//!
//! Two kinds, told apart by the `clean` flag. A *clean* summary is written by a complete flush
//! (every change synced first, then the summary durably) and removed durably before the next
//! change: it describes the files exactly, even after a power loss. A *checkpoint* (not clean)
//! is taken while running, once a second, and written without fsync: the segments changed
//! after it are in its journal, written before each change. Page cache writes survive the
//! death of the process but not of the machine, so a checkpoint is trusted only by a process
//! of the same boot (`boot_id`, see [`boot_id`]).
//!
//! It is only ever trusted as a whole: a CRC-32 covers every byte. Layout (all integers
//! little-endian), see `storage-format.md`:
//!
//! ```text
//! magic "YAADSUM\0" (8) | version u32 | flags u32 (bit 0: clean) | generation u64
//! boot id length u32 | boot id | spoke count u32 | next id u64 | id high-water u64
//! per spoke: start u64 | span u64 | byte size u64 | live u64 | records u64 | tube count u32
//!            per tube: name length u32 | name | delayed jobs u64
//!            named jobs u64 | names file CRC u32                      (version 3)
//! crc u32 (CRC-32 of every byte before it)
//! ```
//!
//! A spoke with named jobs is listed once its names file ([`super::spoke_names`]) is written;
//! version 2 (no names) is still read: its spokes hold no named job.

use std::fs;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::file::{remove_if_exists, replace_file, write_file_atomically};
use super::fsio::sync_parent_dir;
use super::spoke_names::{NamesOf, SpokeNames};
use super::{Result, SpokeId, StorageError};

/// First bytes of `summary.yaad`.
pub const SUMMARY_MAGIC: [u8; 8] = *b"YAADSUM\0";
/// Version of the summary layout.
pub const SUMMARY_VERSION: u32 = 3;
/// The version before names files: read, its spokes hold no named job.
const SUMMARY_VERSION_NO_NAMES: u32 = 2;

/// Flag bit: written by a complete flush, durably (see the module documentation).
const CLEAN: u32 = 1;

/// The hub's figures for the whole data dir when the summary was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Written by a complete flush, durably; else a checkpoint (see the module documentation).
    pub clean: bool,
    /// Which change journals follow it: those of this generation and later.
    pub generation: u64,
    /// [`boot_id`] of the writer (empty if unknown).
    pub boot_id: Vec<u8>,
    /// The next job id the hub would have issued.
    pub next_id: u64,
    /// [`super::IdIndex::high_water`] when the summary was written.
    pub id_high_water: u64,
    /// Far spokes holding only delayed jobs (no job resident in RAM), by spoke. Shared: the
    /// hub keeps each spoke's entry between checkpoints and recomputes only changed ones.
    pub spokes: Vec<Arc<SpokeSummary>>,
}

/// What a scan of one far spoke's segment would find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpokeSummary {
    pub spoke: SpokeId,
    /// [`super::Segment::byte_size`] of its segment (a segment of another size is scanned).
    pub byte_size: u64,
    /// Records that are the current record of a job that is not deleted.
    pub live: u64,
    /// Records in the segment, live or dead.
    pub records: u64,
    /// Delayed jobs per tube name.
    pub delayed: Vec<(Vec<u8>, u64)>,
    /// Its live named jobs' names file; unset until the checkpoint writer has scanned the
    /// segment for them, `None` if that failed. A spoke is listed only once this is known.
    pub names: OnceLock<Option<SpokeNames>>,
    /// The generation of the summary the entry was computed for (0: read from a file): the
    /// writer scans for names only entries that outlived a generation unchanged.
    pub born: u64,
}

impl SpokeSummary {
    /// What its names file must agree with.
    pub fn names_of(&self) -> NamesOf {
        NamesOf {
            spoke: self.spoke,
            byte_size: self.byte_size,
            live: self.live,
            records: self.records,
        }
    }

    /// Its names file as far as known: `None` while unscanned or after a failed scan.
    pub fn known_names(&self) -> Option<SpokeNames> {
        self.names.get().copied().flatten()
    }

    /// Whether the figures (all but names and birth) are `other`'s.
    pub fn same_figures(&self, other: &SpokeSummary) -> bool {
        (
            self.spoke,
            self.byte_size,
            self.live,
            self.records,
            &self.delayed,
        ) == (
            other.spoke,
            other.byte_size,
            other.live,
            other.records,
            &other.delayed,
        )
    }
}

impl Summary {
    /// The file's bytes. Spokes whose names are not known are left out.
    pub fn encode(&self) -> Vec<u8> {
        let listed: Vec<(&SpokeSummary, SpokeNames)> = self
            .spokes
            .iter()
            .filter_map(|s| Some((&**s, s.known_names()?)))
            .collect();
        let mut b = Vec::with_capacity(32 + self.spokes.len() * 64);
        b.extend_from_slice(&SUMMARY_MAGIC);
        b.extend_from_slice(&SUMMARY_VERSION.to_le_bytes());
        let flags = if self.clean { CLEAN } else { 0 };
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&(self.boot_id.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.boot_id);
        b.extend_from_slice(&(listed.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.next_id.to_le_bytes());
        b.extend_from_slice(&self.id_high_water.to_le_bytes());
        for (s, names) in listed {
            for v in [s.spoke.start, s.spoke.span, s.byte_size, s.live, s.records] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&(s.delayed.len() as u32).to_le_bytes());
            for (name, n) in &s.delayed {
                b.extend_from_slice(&(name.len() as u32).to_le_bytes());
                b.extend_from_slice(name);
                b.extend_from_slice(&n.to_le_bytes());
            }
            b.extend_from_slice(&names.count.to_le_bytes());
            b.extend_from_slice(&names.crc.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a file's bytes; `Err(reason)` for anything but a complete, intact summary.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Summary, String> {
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err("shorter than its checksum".into());
        };
        if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
            return Err("checksum mismatch".into());
        }
        let mut r = Reader(body);
        if r.take(8)? != SUMMARY_MAGIC {
            return Err("not a yaad summary (bad magic)".into());
        }
        let version = r.u32()?;
        if version != SUMMARY_VERSION && version != SUMMARY_VERSION_NO_NAMES {
            return Err(format!("unsupported summary version {version}"));
        }
        let flags = r.u32()?;
        if flags & !CLEAN != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let generation = r.u64()?;
        let boot_len = r.u32()? as usize;
        let boot_id = r.take(boot_len)?.to_vec();
        let count = r.u32()?;
        let next_id = r.u64()?;
        let id_high_water = r.u64()?;
        let mut spokes = Vec::new();
        for _ in 0..count {
            let spoke = SpokeId {
                start: r.u64()?,
                span: r.u64()?,
            };
            let (byte_size, live, records) = (r.u64()?, r.u64()?, r.u64()?);
            let tubes = r.u32()?;
            let mut delayed = Vec::new();
            for _ in 0..tubes {
                let len = r.u32()? as usize;
                let name = r.take(len)?.to_vec();
                delayed.push((name, r.u64()?));
            }
            let names = if version == SUMMARY_VERSION_NO_NAMES {
                SpokeNames::NONE
            } else {
                let (count, crc) = (r.u64()?, r.u32()?);
                SpokeNames { count, crc }
            };
            spokes.push(Arc::new(SpokeSummary {
                spoke,
                byte_size,
                live,
                records,
                delayed,
                names: OnceLock::from(Some(names)),
                born: 0,
            }));
        }
        if !r.0.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(Summary {
            clean: flags & CLEAN != 0,
            generation,
            boot_id,
            next_id,
            id_high_water,
            spokes,
        })
    }

    /// Reads `path`: `Ok(None)` if there is no file, `Ok(Some(Err(reason)))` if it is damaged.
    pub fn read(path: &Path) -> Result<Option<std::result::Result<Summary, String>>> {
        match fs::read(path) {
            Ok(b) => Ok(Some(Summary::decode(&b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(path, e)),
        }
    }

    /// Writes the summary durably to `path` (temporary file, fsync, rename, directory fsync).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_file_atomically(path, &self.encode())
    }

    /// Writes `bytes` (an encoded checkpoint) to `path` through a temporary file and a rename,
    /// without fsync: readers of the same boot see it whole or not at all.
    pub fn write_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
        replace_file(path, bytes, false)
    }

    /// Removes `path` if it exists, without syncing the directory (a checkpoint is trusted
    /// only in the boot that wrote it, so its removal need not survive a machine crash).
    pub fn remove_unsynced(path: &Path) -> Result<()> {
        remove_if_exists(path).map(|_| ())
    }

    /// Removes `path` if it exists and makes the removal durable before returning.
    pub fn remove(path: &Path) -> Result<()> {
        if remove_if_exists(path)? {
            sync_parent_dir(path)?;
        }
        Ok(())
    }
}

/// A cursor over the summary's bytes; running out is an error, never a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            clean: true,
            generation: 7,
            boot_id: b"0b7f2c1e-boot".to_vec(),
            next_id: 4097,
            id_high_water: 4000,
            spokes: vec![
                Arc::new(SpokeSummary {
                    spoke: SpokeId {
                        start: 7_000_000,
                        span: 1_000_000,
                    },
                    byte_size: 6400,
                    live: 3,
                    records: 5,
                    delayed: vec![(b"default".to_vec(), 2), (b"t1".to_vec(), 1)],
                    names: OnceLock::from(Some(SpokeNames {
                        count: 2,
                        crc: 0x1234_5678,
                    })),
                    born: 0,
                }),
                Arc::new(SpokeSummary {
                    spoke: SpokeId {
                        start: 9_000_000,
                        span: 1_000_000,
                    },
                    byte_size: 64,
                    live: 0,
                    records: 0,
                    delayed: vec![],
                    names: OnceLock::from(Some(SpokeNames::NONE)),
                    born: 0,
                }),
            ],
        }
    }

    #[test]
    fn round_trips_and_rejects_every_damage() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(Summary::decode(&bytes).unwrap(), s);
        // Every flipped bit and every truncation is refused, never a panic.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Summary::decode(&b).is_err(), "flip at {i} accepted");
            assert!(Summary::decode(&bytes[..i]).is_err(), "cut at {i} accepted");
        }
        // A well-checksummed file with a lying count is refused too.
        let mut b = bytes[..bytes.len() - 4].to_vec();
        let count_at = 8 + 4 + 4 + 8 + 4 + s.boot_id.len();
        b[count_at] = 9;
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert!(Summary::decode(&b).is_err());
    }

    /// Version 2 (before names files): the same without the two names fields per spoke.
    fn encode_v2(s: &Summary) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&SUMMARY_MAGIC);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&u32::from(s.clean).to_le_bytes());
        b.extend_from_slice(&s.generation.to_le_bytes());
        b.extend_from_slice(&(s.boot_id.len() as u32).to_le_bytes());
        b.extend_from_slice(&s.boot_id);
        b.extend_from_slice(&(s.spokes.len() as u32).to_le_bytes());
        b.extend_from_slice(&s.next_id.to_le_bytes());
        b.extend_from_slice(&s.id_high_water.to_le_bytes());
        for p in &s.spokes {
            for v in [p.spoke.start, p.spoke.span, p.byte_size, p.live, p.records] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&(p.delayed.len() as u32).to_le_bytes());
            for (name, n) in &p.delayed {
                b.extend_from_slice(&(name.len() as u32).to_le_bytes());
                b.extend_from_slice(name);
                b.extend_from_slice(&n.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn reads_version_2_as_spokes_without_names() {
        let s = sample();
        let got = Summary::decode(&encode_v2(&s)).unwrap();
        assert_eq!(got.spokes.len(), 2);
        for (g, w) in got.spokes.iter().zip(&s.spokes) {
            assert!(g.same_figures(w));
            assert_eq!(g.known_names(), Some(SpokeNames::NONE));
        }
        assert_eq!((got.next_id, got.generation), (s.next_id, s.generation));
    }

    /// A spoke whose names are not known yet (or failed) is not listed.
    #[test]
    fn leaves_out_spokes_with_unknown_names() {
        let mut s = sample();
        let mut unknown = (*s.spokes[0]).clone();
        unknown.names = OnceLock::new();
        let mut failed = (*s.spokes[0]).clone();
        failed.names = OnceLock::from(None);
        s.spokes.push(Arc::new(unknown));
        s.spokes.push(Arc::new(failed));
        assert_eq!(Summary::decode(&s.encode()).unwrap(), sample());
    }

    #[test]
    fn write_read_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("summary.yaad");
        assert!(Summary::read(&path).unwrap().is_none());
        Summary::remove(&path).unwrap();
        sample().write(&path).unwrap();
        assert_eq!(Summary::read(&path).unwrap().unwrap().unwrap(), sample());
        assert!(!tmp.path().join("summary.yaad.tmp").exists());
        Summary::remove(&path).unwrap();
        assert!(!path.exists());
        let checkpoint = Summary {
            clean: false,
            ..sample()
        };
        Summary::write_unsynced(&path, &checkpoint.encode()).unwrap();
        assert_eq!(Summary::read(&path).unwrap().unwrap().unwrap(), checkpoint);
        assert!(!tmp.path().join("summary.yaad.tmp").exists());
    }
}
