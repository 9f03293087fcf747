//! A far job could not be found by id after kill -9 (`delete` answered NOT_FOUND, so a cancel
//! failed and the job fired later): its spoke was loaded after the last checkpoint written,
//! the id index entry was trimmed, and recovery trusted the checkpoint, which still listed the
//! spoke as far and unread. Found by the hub model with power cuts.

use yaad::hub::{Hub, HubConfig, SECOND};
use yaad::segment::{LazySegment, MappedSegment, Segment};

const START: u64 = 1_700_000_000 * SECOND;

fn far_job_is_found_after_its_entry_was_trimmed<S: Segment>() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HubConfig {
        data_dir: dir.path().into(),
        spoke_span: SECOND,
        restore: false,
    };
    let mut hub = Hub::<S>::open(cfg.clone(), START).unwrap();
    let c = hub.connect();
    let id = hub.put(c, 0, 2, 10, b"far", START).unwrap();
    hub.checkpoint().unwrap().write().unwrap();
    // The horizon reaches the job's spoke: it is loaded and its index entry trimmed.
    hub.tick(START + 1);
    hub.trim_index(usize::MAX);
    // kill -9: the last checkpoint written is the one above.
    drop(hub);
    cfg.spoke_span = SECOND / 4;
    let mut hub = Hub::<S>::open(cfg, START + 1).unwrap();
    assert!(
        hub.stats_job(id, START + 1).is_some(),
        "job {id} not found by id"
    );
    let c = hub.connect();
    hub.delete(c, id, START + 1)
        .expect("the job can be cancelled");
}

#[test]
fn mapped() {
    far_job_is_found_after_its_entry_was_trimmed::<MappedSegment>();
}

#[test]
fn lazy() {
    far_job_is_found_after_its_entry_was_trimmed::<LazySegment>();
}
