//! The id index of memory mode: job id → location in about 16 bytes per job.
//!
//! A hash map of ids to [`JobLocation`]s cost ~70 bytes per far job (a 24-byte location, the
//! key and hashbrown's empty buckets), a fifth of what a far job costs in memory mode. Two
//! facts make it smaller:
//! - **Ids arrive in increasing order.** The store hands them out so, and a far job's entry
//!   is set when it is put. Entries go at the end of sorted chunks of up to [`CHUNK`]
//!   entries, found by two binary searches, with no empty buckets. Entries set out of order
//!   (recovery's scans, a resident job moved to a far spoke) wait in a small hash map,
//!   `stray`, merged into the chunks once it holds an eighth of the entries.
//! - **Few spokes hold many jobs.** A location is packed into 8 bytes: the number of its spoke
//!   in a table of the spokes entries point into (counted, so a number is reused once no
//!   entry uses it), and the record's offset.
//!
//! A removed entry is emptied in place; a chunk less than half full is compacted, an empty one
//! dropped, so memory follows the entries, not the ids ever set.

use std::collections::HashMap;
use std::path::Path;

use super::JobLocation;
use crate::segment::{Result, SpokeId, StorageError};

/// The most entries a chunk is filled with by appends.
const CHUNK: usize = 1024;

/// Bits of a packed location that hold the record offset; the rest hold the spoke number.
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Spoke numbers fit in the bits above the offset.
const MAX_SPOKES: usize = 1 << (64 - OFFSET_BITS);

/// A packed location that is no location: an emptied entry.
const EMPTY: u64 = u64::MAX;

#[derive(Debug, Default)]
pub(super) struct MemIds {
    /// Sorted by `first`; each chunk's ids are sorted and at least its `first`, below the next
    /// chunk's `first`.
    chunks: Vec<Chunk>,
    /// Entries set out of order; never an id that is also in a chunk.
    stray: HashMap<u64, u64>,
    spokes: SpokeTable,
    /// Entries that are set (not emptied), in chunks and in `stray`.
    len: usize,
}

#[derive(Debug)]
struct Chunk {
    /// No id of this chunk is below it (its first id when it was started).
    first: u64,
    /// `(id, packed location or EMPTY)`, sorted by id.
    entries: Vec<(u64, u64)>,
    /// Entries that are not `EMPTY`.
    live: usize,
}

impl MemIds {
    pub fn get(&self, id: u64) -> Option<JobLocation> {
        // No hashing while nothing is stray (the usual case).
        let stray = (!self.stray.is_empty())
            .then(|| self.stray.get(&id))
            .flatten();
        let packed = match stray {
            Some(&p) => p,
            None => {
                let (c, i) = self.locate(id)?;
                self.chunks[c].entries[i].1
            }
        };
        (packed != EMPTY).then(|| self.spokes.unpack(packed))
    }

    pub fn set(&mut self, id: u64, loc: JobLocation) -> Result<()> {
        let packed = self.spokes.pack(loc)?;
        if !self.stray.is_empty()
            && let Some(old) = self.stray.get_mut(&id)
        {
            let old = std::mem::replace(old, packed);
            self.spokes.release(old);
            return Ok(());
        }
        let last = self.chunks.last().and_then(|c| c.entries.last());
        if last.is_none_or(|&(last, _)| id > last) {
            self.push((id, packed));
            self.len += 1;
            return Ok(());
        }
        if let Some((c, i)) = self.locate(id) {
            let chunk = &mut self.chunks[c];
            let old = std::mem::replace(&mut chunk.entries[i].1, packed);
            if old == EMPTY {
                chunk.live += 1;
                self.len += 1;
            } else {
                self.spokes.release(old);
            }
            return Ok(());
        }
        self.stray.insert(id, packed);
        self.len += 1;
        if self.stray.len() > CHUNK.max(self.len / 8) {
            self.merge_stray();
        }
        Ok(())
    }

    pub fn remove(&mut self, id: u64) {
        if !self.stray.is_empty()
            && let Some(old) = self.stray.remove(&id)
        {
            self.spokes.release(old);
            self.len -= 1;
            return;
        }
        let Some((c, i)) = self.locate(id) else {
            return;
        };
        let chunk = &mut self.chunks[c];
        let old = std::mem::replace(&mut chunk.entries[i].1, EMPTY);
        if old == EMPTY {
            return;
        }
        self.spokes.release(old);
        self.len -= 1;
        chunk.live -= 1;
        if chunk.live == 0 {
            self.chunks.remove(c);
        } else if chunk.live * 2 < chunk.entries.len() && chunk.entries.len() >= 16 {
            chunk.entries.retain(|&(_, p)| p != EMPTY);
            chunk.entries.shrink_to_fit();
        }
    }

    pub fn clear(&mut self) {
        *self = MemIds::default();
    }

    /// Entries that are set.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends set entry `e`, whose id is above every chunked one.
    fn push(&mut self, e: (u64, u64)) {
        match self.chunks.last_mut() {
            Some(c) if c.entries.len() < CHUNK => {
                c.entries.push(e);
                c.live += 1;
            }
            _ => {
                let mut entries = Vec::with_capacity(CHUNK);
                entries.push(e);
                self.chunks.push(Chunk {
                    first: e.0,
                    entries,
                    live: 1,
                });
            }
        }
    }

    /// The chunk and index holding `id` (set or emptied).
    fn locate(&self, id: u64) -> Option<(usize, usize)> {
        let c = self
            .chunks
            .partition_point(|c| c.first <= id)
            .checked_sub(1)?;
        let i = find(&self.chunks[c].entries, id)?;
        Some((c, i))
    }

    /// Rebuilds the chunks from their set entries and the stray ones, in id order.
    fn merge_stray(&mut self) {
        let chunks = std::mem::take(&mut self.chunks);
        let mut all: Vec<(u64, u64)> = chunks
            .into_iter()
            .flat_map(|c| c.entries)
            .filter(|&(_, p)| p != EMPTY)
            .collect();
        all.extend(self.stray.drain());
        self.stray.shrink_to_fit();
        // Two runs, the chunked ids (sorted) and the stray ones: the stable sort merges them.
        all.sort_by_key(|&(id, _)| id);
        for e in all {
            self.push(e);
        }
    }
}

/// The index of `id` in `entries` (sorted by id), found by interpolation: the ids of a chunk
/// are mostly consecutive (far puts), so the first guess is at or next to the entry, and a
/// lookup touches two or three cache lines where a binary search over a 16 KiB chunk touched
/// about ten. From the guess, steps doubling in size bracket the id for a binary search.
fn find(entries: &[(u64, u64)], id: u64) -> Option<usize> {
    let (&(lo, _), &(hi, _)) = (entries.first()?, entries.last()?);
    if id < lo || id > hi {
        return None;
    }
    let n = entries.len();
    let span = u128::from(hi - lo).max(1);
    let guess = (u128::from(id - lo) * (n as u128 - 1) / span) as usize;
    let (from, to) = if entries[guess].0 < id {
        let mut step = 1;
        while guess + step < n && entries[guess + step].0 < id {
            step *= 2;
        }
        (guess + step / 2 + 1, (guess + step + 1).min(n))
    } else {
        let mut step = 1;
        while step <= guess && entries[guess - step].0 > id {
            step *= 2;
        }
        (guess.saturating_sub(step), guess + 1 - step / 2)
    };
    let at = from
        + entries[from..to]
            .binary_search_by_key(&id, |&(id, _)| id)
            .ok()?;
    Some(at)
}

/// The spokes entries point into, numbered; a number is free again once no entry uses it.
#[derive(Debug, Default)]
struct SpokeTable {
    /// By number: the spoke and how many entries point into it (0: a free number).
    spokes: Vec<(SpokeId, usize)>,
    numbers: HashMap<SpokeId, usize>,
    free: Vec<usize>,
}

impl SpokeTable {
    /// `loc` packed, counting one more entry in its spoke.
    fn pack(&mut self, loc: JobLocation) -> Result<u64> {
        let out_of_range = |what: String| {
            StorageError::io(
                Path::new("id index (memory)"),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
            )
        };
        if loc.offset > OFFSET_MASK {
            return Err(out_of_range(format!(
                "record offset {} past what the index holds",
                loc.offset
            )));
        }
        let n = match self.numbers.get(&loc.spoke) {
            Some(&n) => n,
            None => {
                let n = match self.free.pop() {
                    Some(n) => n,
                    None if self.spokes.len() < MAX_SPOKES => {
                        self.spokes.push((loc.spoke, 0));
                        self.spokes.len() - 1
                    }
                    None => return Err(out_of_range(format!("more than {MAX_SPOKES} spokes"))),
                };
                self.spokes[n].0 = loc.spoke;
                self.numbers.insert(loc.spoke, n);
                n
            }
        };
        self.spokes[n].1 += 1;
        Ok(((n as u64) << OFFSET_BITS) | loc.offset)
    }

    fn unpack(&self, packed: u64) -> JobLocation {
        JobLocation {
            spoke: self.spokes[(packed >> OFFSET_BITS) as usize].0,
            offset: packed & OFFSET_MASK,
        }
    }

    /// One entry fewer points into the spoke of `packed`.
    fn release(&mut self, packed: u64) {
        if packed == EMPTY {
            return;
        }
        let n = (packed >> OFFSET_BITS) as usize;
        let (spoke, count) = &mut self.spokes[n];
        *count -= 1;
        if *count == 0 {
            self.numbers.remove(spoke);
            self.free.push(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc(spoke: u64, offset: u64) -> JobLocation {
        JobLocation {
            spoke: SpokeId {
                start: spoke * 1_000_000,
                span: 1_000_000,
            },
            offset,
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Set the next new id (in increasing order, as puts do).
        Put {
            spoke: u64,
            offset: u64,
        },
        /// Set an id at random (recovery, moves).
        Set {
            id: u64,
            spoke: u64,
            offset: u64,
        },
        Remove {
            id: u64,
        },
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..20u64, 0..OFFSET_MASK).prop_map(|(spoke, offset)| Op::Put { spoke, offset }),
            3 => (0..3000u64, 0..20u64, 0..1000u64)
                .prop_map(|(id, spoke, offset)| Op::Set { id, spoke, offset }),
            6 => (0..3000u64).prop_map(|id| Op::Remove { id }),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// The chunks and the stray map answer as one hash map would, through appends, random
        /// sets, removals (compactions, dropped chunks) and merges.
        #[test]
        fn answers_as_a_hash_map(ops in proptest::collection::vec(op(), 1..4000)) {
            let mut ids = MemIds::default();
            let mut model: HashMap<u64, JobLocation> = HashMap::new();
            let mut next = 1u64;
            for op in ops {
                match op {
                    Op::Put { spoke, offset } => {
                        ids.set(next, loc(spoke, offset)).unwrap();
                        model.insert(next, loc(spoke, offset));
                        next += 1;
                    }
                    Op::Set { id, spoke, offset } => {
                        ids.set(id, loc(spoke, offset)).unwrap();
                        model.insert(id, loc(spoke, offset));
                        next = next.max(id + 1);
                    }
                    Op::Remove { id } => {
                        ids.remove(id);
                        model.remove(&id);
                    }
                    Op::Clear => {
                        ids.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(ids.len(), model.len());
            }
            for id in 0..next + 2 {
                prop_assert_eq!(ids.get(id), model.get(&id).copied(), "id {}", id);
            }
            let used: usize = ids.spokes.spokes.iter().map(|s| s.1).sum();
            prop_assert_eq!(used, model.len(), "spoke counts follow the entries");
        }
    }

    /// Ids set in reverse order (as a recovery may) end up in chunks, not in the stray map.
    #[test]
    fn out_of_order_entries_are_merged_into_chunks() {
        let mut ids = MemIds::default();
        ids.set(100_000, loc(1, 8)).unwrap();
        for id in (1..100_000).rev() {
            ids.set(id, loc(id % 7, id)).unwrap();
        }
        assert!(ids.stray.len() <= CHUNK.max(ids.len() / 8));
        let chunked: usize = ids.chunks.iter().map(|c| c.live).sum();
        assert_eq!(chunked + ids.stray.len(), 100_000);
        assert!(chunked >= 80_000, "{chunked} of 100,000 in chunks");
        for id in 1..100_000 {
            assert_eq!(ids.get(id), Some(loc(id % 7, id)));
        }
    }

    /// Memory follows the entries: removing all but every 100th of a million entries drops
    /// or compacts their chunks.
    #[test]
    fn removed_entries_give_their_chunks_back() {
        let mut ids = MemIds::default();
        for id in 1..=1_000_000 {
            ids.set(id, loc(id / 10_000, id)).unwrap();
        }
        for id in 1..=1_000_000 {
            if id % 100 != 0 {
                ids.remove(id);
            }
        }
        let held: usize = ids.chunks.iter().map(|c| c.entries.capacity()).sum();
        assert!(held <= 3 * 10_000, "{held} entries held for 10,000");
        assert_eq!(ids.spokes.numbers.len(), 101, "spokes 0..=100");
        for id in (100..=1_000_000).step_by(100) {
            assert_eq!(ids.get(id), Some(loc(id / 10_000, id)));
        }
    }

    /// Interpolation finds every id, present or not, in dense, sparse and skewed chunks.
    #[test]
    fn find_agrees_with_a_binary_search() {
        let layouts: [&dyn Fn(u64) -> u64; 4] = [&|i| i + 10, &|i| i * 7 + 3, &|i| i * i, &|i| {
            if i < 900 { i } else { 1_000_000 + i }
        }];
        for ids in layouts {
            for n in [1u64, 2, 3, 17, 1024] {
                let entries: Vec<(u64, u64)> = (0..n).map(|i| (ids(i), i)).collect();
                let top = entries.last().unwrap().0 + 2;
                for id in (0..top.min(5_000)).chain([top - 2, top - 1, top, u64::MAX]) {
                    let want = entries.binary_search_by_key(&id, |&(id, _)| id).ok();
                    assert_eq!(find(&entries, id), want, "id {id} of {n}");
                }
            }
        }
        assert_eq!(find(&[], 5), None);
    }

    #[test]
    fn offsets_past_the_packed_range_are_errors() {
        let mut ids = MemIds::default();
        assert!(ids.set(1, loc(1, OFFSET_MASK + 1)).is_err());
        assert_eq!(ids.get(1), None);
        ids.set(1, loc(1, OFFSET_MASK)).unwrap();
        assert_eq!(ids.get(1), Some(loc(1, OFFSET_MASK)));
    }
}
/// `cargo test --release --lib ids_in_recovery_order -- --ignored --nocapture`: the time of
/// 10M sets in a restore's order (spoke by spoke) and in id order (puts), against a hash map.
#[cfg(test)]
mod bench {
    use super::*;

    fn loc(id: u64) -> JobLocation {
        JobLocation {
            spoke: SpokeId {
                start: (id % 300) * 1_000_000,
                span: 1_000_000,
            },
            offset: id * 8,
        }
    }

    #[test]
    #[ignore]
    fn ids_in_recovery_order() {
        let n: u64 = 10_000_000;
        let mut by_spoke: Vec<u64> = (1..=n).collect();
        by_spoke.sort_by_key(|&id| ((id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 300, id));
        let by_id: Vec<u64> = (1..=n).collect();
        for (order, ids) in [("spoke by spoke", &by_spoke), ("in id order", &by_id)] {
            let t = std::time::Instant::now();
            let mut chunked = MemIds::default();
            for &id in ids {
                chunked.set(id, loc(id)).unwrap();
            }
            let chunked_s = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let mut map = HashMap::new();
            for &id in ids {
                map.insert(id, loc(id));
            }
            let map_s = t.elapsed().as_secs_f64();
            eprintln!("10M sets {order}: chunks {chunked_s:.2} s, hash map {map_s:.2} s");
            assert_eq!(chunked.len(), map.len());
        }
    }
}
