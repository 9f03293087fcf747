//! `Hub::flush` reopened every flushed far lazy segment and left it open: one file descriptor
//! per far spoke (33 811 with a 100 ms span in tests/span_bench.rs), past any fd limit.
//! Its own test binary, so no other test opens files meanwhile.

use yaad::hub::{Hub, HubConfig, MAX_OPEN_FAR_SPOKES, NEAR_SPOKES, SECOND};
use yaad::segment::LazySegment;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn flush_leaves_idle_far_segments_closed() {
    const SPOKES: u64 = 3 * MAX_OPEN_FAR_SPOKES as u64;
    let now = 1_700_000_000 * SECOND;
    let tmp = tempfile::tempdir().unwrap();
    let before = open_fds();
    let mut hub: Hub<LazySegment> = Hub::open(HubConfig::new(tmp.path()), now).unwrap();
    let c = hub.connect();
    for i in 0..SPOKES {
        // One job per far spoke (three days apart: a spoke each, whatever its span).
        hub.put(c, 0, (i as u32 + 1) * 3 * 86_400, 60, b"job", now)
            .unwrap();
    }
    hub.flush().unwrap();
    assert_eq!(hub.stats(now).spokes, SPOKES);
    let held = open_fds().saturating_sub(before);
    // The id index, the data-dir lock, the near spokes and the recently used far ones.
    let bound = MAX_OPEN_FAR_SPOKES + NEAR_SPOKES as usize + 8;
    assert!(
        held <= bound,
        "{held} fds held after flush, at most {bound} expected"
    );
}
