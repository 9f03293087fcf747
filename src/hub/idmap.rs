//! Hash maps keyed by numbers the hub assigns itself (job ids, connection ids).
//!
//! The standard SipHash resists keys chosen by an attacker, at about 100 instructions a lookup;
//! it was a tenth of the server's instructions per put/reserve/delete cycle. Here keys are
//! issued by the hub (clients can only look ids up, not choose the ones inserted), so
//! rustc-hash's Fx hash (a multiply and a rotate) is enough.

/// A map from a hub-assigned id.
pub type IdMap<V> = rustc_hash::FxHashMap<u64, V>;

/// A new, empty [`IdMap`].
pub fn id_map<V>() -> IdMap<V> {
    IdMap::default()
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_fill_distinct_buckets() {
        // Why a fast hash is fine for our keys: ids are sequential, and the table picks a bucket
        // from the low bits and a tag from the top 7 bits; both must vary.
        let b = rustc_hash::FxBuildHasher;
        let buckets: std::collections::HashSet<u64> =
            (5000u64..6024).map(|id| b.hash_one(id) & 1023).collect();
        assert!(
            buckets.len() > 600,
            "only {} distinct buckets",
            buckets.len()
        );
        let tags: std::collections::HashSet<u64> =
            (0u64..1000).map(|id| b.hash_one(id) >> 57).collect();
        assert!(tags.len() > 64, "only {} distinct tags of 128", tags.len());
    }
}
