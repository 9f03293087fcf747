//! A job whose put was acknowledged long ago was lost by a power cut during a delayed release
//! (`release <id> <pri> <delay>`): the old record's `Moved` mark reached the disk, the new
//! record in the target spoke did not (a sync batch syncs files one by one, and write-back is
//! unordered anyway). Now the mark is written only once the batch holding the new record is
//! durable. Checked at every sync event of the release's batch, with many cut images each.

mod common;

use common::hub::{START, persisted, sync};

use yaad::hub::{Hub, ReserveOutcome, SECOND};
use yaad::segment::powercut;
use yaad::segment::{LazySegment, MappedSegment, Segment};

fn release_survives_every_cut<S: Segment>() {
    let cuts = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for at in 1..12 {
        for seed in 0..16u64 {
            let dir = tempfile::tempdir().unwrap();
            let sim = powercut::register(dir.path(), b"before").unwrap();
            let mut hub = Hub::<S>::open(persisted(dir.path()), START).unwrap();
            let c = hub.connect();
            let id = hub.put(c, 0, 0, 60, b"acknowledged", START).unwrap();
            sync(&mut hub);
            let now = START + 5 * SECOND;
            assert!(matches!(
                hub.reserve(c, Some(now), now),
                ReserveOutcome::Reserved(_)
            ));
            // The release and the syncs after it (its own batch, then the one with the mark).
            let image = cuts.path().join(format!("{at}-{seed}"));
            sim.plan_cut(sim.events() + at, seed, image.clone());
            hub.release(c, id, 7, 100, now).unwrap();
            sync(&mut hub);
            sync(&mut hub);
            let Some(image) = sim.take_cut() else {
                continue;
            };
            checked += 1;
            let mut after = Hub::<S>::open(persisted(&image), now).unwrap();
            let st = after.stats_job(id, now).unwrap_or_else(|| {
                panic!("job {id} lost by a cut at sync event {at}, seed {seed}")
            });
            // Released (delayed 100 s) or not yet (ready again, as after any restart).
            assert!(
                matches!((st.state, st.pri), ("delayed", 7) | ("ready", 0)),
                "{st:?}"
            );
            drop(after);
            drop(hub);
        }
    }
    assert!(checked > 50, "only {checked} cuts fired");
}

/// A delete of the moved job right after the release: its new spoke, emptied, must not be
/// removed while the old record's `Moved` mark is not durable (found by the hub model: a cut
/// kept the old record live, without the mark, and the removal of the new one's file: the
/// job came back as it was before the release).
fn delete_after_release_survives_every_cut<S: Segment>() {
    let cuts = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for at in 1..16 {
        for seed in 0..24u64 {
            let dir = tempfile::tempdir().unwrap();
            let sim = powercut::register(dir.path(), b"before").unwrap();
            let mut hub = Hub::<S>::open(persisted(dir.path()), START).unwrap();
            let c = hub.connect();
            let id = hub.put(c, 0, 0, 60, b"acknowledged", START).unwrap();
            sync(&mut hub);
            let now = START + 5 * SECOND;
            assert!(matches!(
                hub.reserve(c, Some(now), now),
                ReserveOutcome::Reserved(_)
            ));
            hub.release(c, id, 7, 100, now).unwrap();
            sync(&mut hub);
            let image = cuts.path().join(format!("{at}-{seed}"));
            sim.plan_cut(sim.events() + at, seed, image.clone());
            hub.delete(c, id, now).unwrap();
            sync(&mut hub);
            sync(&mut hub);
            hub.tick(now + SECOND);
            sync(&mut hub);
            let Some(image) = sim.take_cut() else {
                continue;
            };
            checked += 1;
            let mut after = Hub::<S>::open(persisted(&image), now).unwrap();
            // Released (acknowledged), or deleted: never as it was before the release.
            if let Some(st) = after.stats_job(id, now) {
                assert_eq!(
                    (st.state, st.pri),
                    ("delayed", 7),
                    "cut at {at}, seed {seed}"
                );
            }
            drop(after);
            drop(hub);
        }
    }
    assert!(checked >= 80, "only {checked} cuts fired");
}

#[test]
fn mapped() {
    release_survives_every_cut::<MappedSegment>();
    delete_after_release_survives_every_cut::<MappedSegment>();
}

#[test]
fn lazy() {
    release_survives_every_cut::<LazySegment>();
    delete_after_release_survives_every_cut::<LazySegment>();
}
