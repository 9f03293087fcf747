//! Job ids were handed out twice (a stale client's `delete <id>` then deletes a new job):
//! - mem mode: after `kill -9`, a restart with `-r` restored the last flushed snapshot and
//!   continued from the ids it held, handing out again every id issued since;
//! - a damaged `ids.yaad` header was recreated with a high-water of 0, so ids continued
//!   from the highest id left in the segments, below ids issued whose records were gone.

mod common;

use common::{Client, Yaad};
use yaad::hub::{Hub, HubConfig, ID_BLOCK, SECOND};
use yaad::segment::{ID_INDEX_FILE, LazySegment, MappedSegment, Segment};

const START: u64 = 1_700_000_000 * SECOND;

/// Held by every test of this file: a test that spawns the binary forks, and until the child
/// execs it holds a copy of every open file, the data dir lock of an in-process hub of
/// another test included (a reopen then found the dir locked).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The id of an `INSERTED <id>` reply.
fn put(c: &mut Client, delay: u32, body: &str) -> u64 {
    let reply = c.put(0, delay, 60, body.as_bytes());
    match reply.strip_prefix("INSERTED ") {
        Some(id) => id.parse().expect("numeric id"),
        None => panic!("put answered {reply:?}"),
    }
}

fn start_mem(dir: &std::path::Path) -> Yaad {
    let dir = dir.to_str().expect("utf-8 data dir");
    Yaad::launch(&["--mode", "mem", "-b", dir, "-r"], true, |_| {})
}

/// Put, SIGUSR1 flush, kill -9; restart with `-r`, more puts (near and far), kill -9; restart
/// with `-r`: the next put gets an id above every id handed out before.
#[test]
fn mem_restore_after_kill_does_not_reissue_ids() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut issued = vec![];

    let y = start_mem(tmp.path());
    let mut c = y.connect();
    for i in 0..3 {
        issued.push(put(&mut c, 3600, &format!("flushed {i}")));
    }
    y.signal("-USR1");
    y.wait_log("SIGUSR1: drained and flushed");
    drop(c);
    drop(y); // SIGKILL

    let y = start_mem(tmp.path());
    let mut c = y.connect();
    for i in 0..5 {
        let id = put(
            &mut c,
            if i % 2 == 0 { 0 } else { 3600 },
            &format!("lost {i}"),
        );
        assert!(id > issued[issued.len() - 1], "id {id} after {issued:?}");
        issued.push(id);
    }
    drop(c);
    drop(y); // SIGKILL: nothing of this run was flushed

    let y = start_mem(tmp.path());
    let mut c = y.connect();
    let highest = *issued.iter().max().unwrap();
    let next = put(&mut c, 0, "after the second kill");
    assert!(
        next > highest,
        "id {next} handed out again (issued before: {issued:?})"
    );
}

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
    let _serial = serial();
    damaged_index_keeps_ids_above::<LazySegment>(damage_id_index_header, ID_BLOCK + 10, false);
}

#[test]
fn mapped_damaged_index_header_keeps_ids_above_those_issued() {
    let _serial = serial();
    damaged_index_keeps_ids_above::<MappedSegment>(damage_id_index_header, ID_BLOCK + 10, false);
}

/// Without even the index's length, the highest id in the segments + a block bounds the ids.
#[test]
fn a_cut_index_keeps_ids_a_block_above_the_highest_found() {
    let _serial = serial();
    damaged_index_keeps_ids_above::<LazySegment>(cut_id_index, 5, false);
}

/// A summary's next id bounds them too, though it is not trusted with a rebuilt index.
#[test]
fn a_cut_index_keeps_ids_above_the_summary_next_id() {
    let _serial = serial();
    damaged_index_keeps_ids_above::<LazySegment>(cut_id_index, ID_BLOCK + 10, true);
}

/// Memory mode: a damaged `ids.yaad` at a restore still bounds the ids of the run before.
#[test]
fn mem_restore_with_a_damaged_index_header_does_not_reissue_ids() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let y = start_mem(tmp.path());
    let mut c = y.connect();
    let flushed = put(&mut c, 3600, "flushed");
    y.signal("-USR1");
    y.wait_log("SIGUSR1: drained and flushed");
    drop(c);
    drop(y); // SIGKILL

    let y = start_mem(tmp.path());
    let mut c = y.connect();
    let lost = put(&mut c, 0, "lost");
    assert!(lost > flushed);
    drop(c);
    drop(y); // SIGKILL
    damage_id_index_header(tmp.path());

    let y = start_mem(tmp.path());
    let mut c = y.connect();
    let next = put(&mut c, 0, "after the damage");
    assert!(
        next > lost,
        "id {next} handed out again ({flushed}, {lost} before)"
    );
}
