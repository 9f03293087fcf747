//! Job ids were handed out twice (a stale client's `delete <id>` then deletes a new job):
//! - a damaged `ids.yaad` header was recreated with a high-water of 0, so ids continued
//!   from the highest id left in the segments, below ids issued whose records were gone.

use yaad::hub::{Hub, HubConfig, ID_BLOCK, SECOND};
use yaad::segment::{ID_INDEX_FILE, LazySegment, MappedSegment, Segment};

const START: u64 = 1_700_000_000 * SECOND;

/// Damages the header of `ids.yaad` (its magic, base and checksum no longer match).
fn damage_id_index_header(dir: &std::path::Path) {
    let path = dir.join(ID_INDEX_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 64, "the index holds entries");
    bytes[0] ^= 0xff;
    bytes[20] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
}

/// Cuts `ids.yaad` inside its header: not even its length tells a high-water.
fn cut_id_index(dir: &std::path::Path) {
    let path = dir.join(ID_INDEX_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..10]).unwrap();
}

/// Far jobs (their records stay), then `short` short-lived near jobs whose segment is retired:
/// only the id index's high-water (and a summary, if `flush` wrote one) still knows their
/// ids. With the index damaged, the next id must still be above all of them.
fn damaged_index_keeps_ids_above<S: Segment>(
    damage: fn(&std::path::Path),
    short: u64,
    flush: bool,
) {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), START).unwrap();
    let c = hub.connect();
    let mut issued = vec![];
    for i in 0..4 {
        issued.push(hub.put(c, 0, 3600 * (i + 1), 60, b"far", START).unwrap());
    }
    for _ in 0..short {
        let id = hub.put(c, 0, 0, 60, b"short-lived", START).unwrap();
        hub.delete(c, id, START).unwrap();
        issued.push(id);
    }
    // Past the near spoke: it is retired, its file removed.
    let later = START + 10 * SECOND;
    hub.tick(later);
    if flush {
        hub.flush().unwrap();
    }
    drop(hub); // without a flush: as after kill -9 (the summary is the one open wrote)
    damage(tmp.path());

    let mut hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), later).unwrap();
    assert_eq!(hub.stats(later).current_jobs_delayed, 4, "far jobs kept");
    let c = hub.connect();
    let next = hub.put(c, 0, 0, 60, b"x", later).unwrap();
    let highest = *issued.iter().max().unwrap();
    assert!(
        next > highest,
        "id {next} handed out again ({} ids issued before, up to {highest})",
        issued.len()
    );
    // The rebuilt index is whole again: a clean reopen continues above too.
    drop(hub);
    let mut hub: Hub<S> = Hub::open(HubConfig::new(tmp.path()), later).unwrap();
    let c = hub.connect();
    assert!(hub.put(c, 0, 0, 60, b"y", later).unwrap() > next);
}

/// More ids than one block past the highest record: only the damaged index's length bounds
/// them (the near puts wrote an entry at the start of each block).
#[test]
fn lazy_damaged_index_header_keeps_ids_above_those_issued() {
    damaged_index_keeps_ids_above::<LazySegment>(damage_id_index_header, ID_BLOCK + 10, false);
}

#[test]
fn mapped_damaged_index_header_keeps_ids_above_those_issued() {
    damaged_index_keeps_ids_above::<MappedSegment>(damage_id_index_header, ID_BLOCK + 10, false);
}

/// Without even the index's length, the highest id in the segments + a block bounds the ids.
#[test]
fn a_cut_index_keeps_ids_a_block_above_the_highest_found() {
    damaged_index_keeps_ids_above::<LazySegment>(cut_id_index, 5, false);
}

/// A summary's next id bounds them too, though it is not trusted with a rebuilt index.
#[test]
fn a_cut_index_keeps_ids_above_the_summary_next_id() {
    damaged_index_keeps_ids_above::<LazySegment>(cut_id_index, ID_BLOCK + 10, true);
}
