//! After a power cut, recovery handed out again ids already acknowledged with `-f MS` (and
//! `-F`): a put's id index entry (once per block of ids) was only durable at the next periodic
//! sync, so a cut before it left nothing on disk above the ids of the last sync (put id 1, cut:
//! the next put answered `INSERTED 1` again). Now the index's length is a reservation of ids
//! that is durable before any id it covers is handed out.

mod common;

use common::hub::{START, persisted, sync};

use yaad::hub::{Hub, ID_BLOCK};
use yaad::segment::powercut;
use yaad::segment::{LazySegment, MappedSegment, Segment};

/// Puts `n` jobs (a sync every `sync_every` puts, never if 0), cuts the power right after the
/// last put's reply, and returns the highest id handed out and the first id recovery hands out.
fn put_then_cut<S: Segment>(n: u64, sync_every: u64, seed: u64) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let cuts = tempfile::tempdir().unwrap();
    let sim = powercut::register(dir.path(), b"before").unwrap();
    let mut hub = Hub::<S>::open(persisted(dir.path()), START).unwrap();
    let c = hub.connect();
    let mut last = 0;
    for i in 1..=n {
        // Near and far jobs: far puts write their own index entry.
        let delay = if i % 3 == 0 { 3600 } else { 0 };
        last = hub.put(c, 0, delay, 60, b"acknowledged", START).unwrap();
        if sync_every > 0 && i % sync_every == 0 {
            sync(&mut hub);
        }
    }
    let image = cuts.path().join("cut");
    sim.cut_now(seed, &image).unwrap();
    drop(hub);
    drop(sim);
    let mut after = Hub::<S>::open(persisted(&image), START).unwrap();
    let c = after.connect();
    let next = after.put(c, 0, 0, 60, b"after the cut", START).unwrap();
    (last, next)
}

fn no_id_comes_again<S: Segment>() {
    // (puts, sync every): one put and no sync; puts past half a block between syncs; `-F`.
    for (n, every) in [(1, 0), (5, 0), (3 * ID_BLOCK, 1000), (3 * ID_BLOCK, 0)] {
        for seed in 0..4 {
            let (last, next) = put_then_cut::<S>(n, every, seed);
            assert!(
                next > last,
                "{n} puts, a sync every {every}, seed {seed}: id {next} handed out again \
                 after the power cut (ids up to {last} were acknowledged)"
            );
        }
    }
}

#[test]
fn mapped() {
    no_id_comes_again::<MappedSegment>();
}

#[test]
fn lazy() {
    no_id_comes_again::<LazySegment>();
}

/// The reservation stays ahead through the sync batches: with a sync every 100 puts, only the
/// first put after open syncs the index itself.
#[test]
fn puts_between_syncs_do_not_sync_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::<LazySegment>::open(persisted(dir.path()), START).unwrap();
    let c = hub.connect();
    for i in 1..=10 * ID_BLOCK {
        hub.put(c, 0, 0, 60, b"x", START).unwrap();
        if i % 100 == 0 {
            sync(&mut hub);
        }
    }
    assert_eq!(hub.work().id_index_syncs, 1);
}
