//! The segment scanner (shared by recovery and yaad-dump) on arbitrary bytes: never panics,
//! yields records in increasing offsets inside the data, and never loops.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use yaad::segment::format::{decode_file_header, scan_records};

fuzz_target!(|data: &[u8]| {
    let _ = decode_file_header(data);
    let mut last = 0;
    for (n, item) in scan_records(data, Path::new("fuzz")).enumerate() {
        assert!(
            n <= data.len(),
            "more results than bytes: the scanner does not advance"
        );
        if let Ok(rec) = item {
            assert!(rec.offset >= last, "records out of order");
            assert!(
                rec.offset + rec.len() <= data.len() as u64,
                "record past the data"
            );
            last = rec.offset + rec.len();
        }
    }
});
