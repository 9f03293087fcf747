//! Hash maps keyed by numbers the server assigns itself (job ids, connection ids).
//!
//! The standard SipHash resists keys chosen by an attacker, at about 100 instructions a lookup;
//! it was a tenth of the server's instructions per put/reserve/delete cycle. Here keys are
//! issued by the hub (clients can only look ids up, not choose the ones inserted), so a
//! multiplicative hash is enough: sequential ids spread over every bucket (the multiplier is
//! odd), and its high bits, which the table uses as tags, depend on every key bit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from a hub-assigned id.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// A new, empty [`IdMap`].
pub fn id_map<V>() -> IdMap<V> {
    IdMap::default()
}

/// Multiply-rotate hashing of integer keys (the golden-ratio multiplier).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; correct for any other key all the same.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn finish(&self) -> u64 {
        // Fold the well-mixed high half into the low bits that pick the bucket.
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_fill_distinct_buckets() {
        let b = BuildHasherDefault::<IdHasher>::default();
        // The low 10 bits of the hashes of 1024 sequential ids (a table of 1024 buckets).
        let mut seen = std::collections::HashSet::new();
        for id in 5000u64..6024 {
            seen.insert(b.hash_one(id) & 1023);
        }
        assert!(seen.len() > 600, "only {} distinct buckets", seen.len());
        // The top 7 bits (the table's tags) vary too.
        let tags: std::collections::HashSet<u64> =
            (0u64..1000).map(|id| b.hash_one(id) >> 57).collect();
        assert!(tags.len() > 100, "only {} distinct tags", tags.len());
    }

    #[test]
    fn map_works() {
        let mut m = id_map();
        for i in 0..10_000u64 {
            m.insert(i * 3, i);
        }
        assert!((0..10_000u64).all(|i| m[&(i * 3)] == i));
        assert!(!m.contains_key(&1));
    }
}
