//! `storage-format.md` is the contract: its offset tables must match the structs in the code.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of, size_of_val};

use yaad::segment::format::{
    FORMAT_VERSION, FileHeader, OLDEST_READ_VERSION, RECORD_ALIGN, RecordHeader, SECTOR_LEN,
    SlotBytes, record_at,
};
use yaad::segment::{IdEntry, IdFileHeader};
use zerocopy::FromZeros;

/// (field, offset, size) rows of one table.
type Layout = Vec<(String, usize, usize)>;

fn read_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/storage-format.md"))
        .expect("storage-format.md at the crate root")
}

/// Every `### `Name` (N bytes)` section of `doc` with the rows of its offsets table.
fn doc_tables() -> BTreeMap<String, (usize, Layout)> {
    parse_tables(&read_doc())
}

fn parse_tables(doc: &str) -> BTreeMap<String, (usize, Layout)> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, usize, Layout)> = None;
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            if let Some((name, size, rows)) = current.take() {
                out.insert(name, (size, rows));
            }
            let (name, tail) = rest.split_once('`').expect("heading: ### `Name` (N bytes)");
            let size = tail
                .trim()
                .strip_prefix('(')
                .and_then(|t| t.strip_suffix(" bytes)"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("heading of {name} must end with (N bytes)"));
            current = Some((name.to_string(), size, vec![]));
            continue;
        }
        if line.starts_with("## ") {
            if let Some((name, size, rows)) = current.take() {
                out.insert(name, (size, rows));
            }
            continue;
        }
        let Some((_, _, rows)) = current.as_mut() else {
            continue;
        };
        if !line.starts_with('|') || line.starts_with("|--") || line.starts_with("| field ") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // cells[0] is empty (before the first '|'); a field table has 5 columns.
        if cells.len() < 6 {
            continue;
        }
        let (Ok(off), Ok(size)) = (cells[2].parse(), cells[3].parse()) else {
            continue; // another kind of table (e.g. the JobState values)
        };
        rows.push((cells[1].to_string(), off, size));
    }
    if let Some((name, size, rows)) = current.take() {
        out.insert(name, (size, rows));
    }
    out
}

macro_rules! layout {
    ($ty:ty, $($field:ident),+ $(,)?) => {{
        let v = <$ty>::new_zeroed();
        let rows: Layout = vec![
            $((stringify!($field).to_string(), offset_of!($ty, $field), size_of_val(&v.$field))),+
        ];
        (size_of::<$ty>(), rows)
    }};
}

fn code_tables() -> BTreeMap<String, (usize, Layout)> {
    let mut m = BTreeMap::new();
    m.insert(
        "FileHeader".to_string(),
        layout!(
            FileHeader,
            magic,
            format_version,
            header_len,
            spoke_start,
            spoke_span,
            record_header_len,
            reserved,
            crc
        ),
    );
    m.insert(
        "RecordHeader".to_string(),
        layout!(
            RecordHeader,
            magic,
            tube_len,
            flags,
            name_len,
            reserved,
            id,
            trigger_at,
            created_at,
            ttr,
            body_len,
            body_crc,
            header_crc,
            slot_a,
            slot_b
        ),
    );
    m.insert(
        "SlotBytes".to_string(),
        layout!(
            SlotBytes, version, priority, reserves, timeouts, releases, buries, kicks, state, run,
            crc
        ),
    );
    m.insert(
        "IdFileHeader".to_string(),
        layout!(IdFileHeader, magic, version, entry_len, base, reserved, crc),
    );
    m.insert(
        "IdEntry".to_string(),
        layout!(
            IdEntry,
            spoke_start,
            spoke_span,
            record_offset,
            reserved,
            crc
        ),
    );
    m
}

#[test]
fn doc_offset_tables_match_the_structs() {
    let doc = doc_tables();
    let code = code_tables();
    assert_eq!(
        doc.keys().collect::<Vec<_>>(),
        code.keys().collect::<Vec<_>>(),
        "the doc must have one offsets table per on-disk struct"
    );
    for (name, (size, rows)) in &code {
        let (doc_size, doc_rows) = &doc[name];
        assert_eq!(doc_size, size, "{name}: size in the heading");
        assert_eq!(doc_rows, rows, "{name}: offsets table");
    }
}

#[test]
fn code_tables_cover_every_byte() {
    // Guards the hand-written field lists above: a field added to a struct but not here
    // would leave a gap (and the doc test would then pass wrongly).
    for (name, (size, rows)) in code_tables() {
        let mut next = 0;
        for (field, off, len) in &rows {
            assert_eq!(
                *off, next,
                "{name}.{field} does not follow the previous field"
            );
            next = off + len;
        }
        assert_eq!(next, size, "{name}: fields do not add up to its size");
    }
}

#[test]
fn parser_sees_a_changed_offset() {
    // The doc test must be able to fail: a doctored copy of the doc no longer matches.
    let doc = read_doc();
    let row = "| id | 8 | 8 | `u64` |";
    assert!(doc.contains(row));
    let doctored = parse_tables(&doc.replace(row, "| id | 9 | 8 | `u64` |"));
    assert_ne!(doctored["RecordHeader"].1, code_tables()["RecordHeader"].1);
    assert_eq!(
        parse_tables(&doc)["RecordHeader"],
        code_tables()["RecordHeader"]
    );
}

#[test]
fn doc_states_the_versions_the_code_writes_and_reads() {
    let doc = read_doc();
    let stated = format!("Format version: **{FORMAT_VERSION}**.");
    assert!(doc.contains(&stated), "the doc must say: {stated}");
    let row = format!(
        "| format_version | 8 | 4 | `u32` | format version: `{FORMAT_VERSION}` written; \
         `{OLDEST_READ_VERSION}` to `{FORMAT_VERSION}` read |"
    );
    assert!(doc.contains(&row), "the doc must have the row: {row}");
}

/// The placement arithmetic in *Record placement* is what `record_at` does: the offsets in a
/// sector a record is moved from, where it goes, and the longest gap.
#[test]
fn doc_placement_arithmetic_matches_record_at() {
    let moved: Vec<(u64, u64)> = (0..SECTOR_LEN)
        .step_by(RECORD_ALIGN as usize)
        .map(|r| {
            (
                r,
                record_at(FORMAT_VERSION, SECTOR_LEN + r) - (SECTOR_LEN + r),
            )
        })
        .filter(|&(_, gap)| gap > 0)
        .collect();
    let want: Vec<(u64, u64)> = (392..=456).step_by(8).map(|r| (r, 464 - r)).collect();
    assert_eq!(moved, want);
    let doc = read_doc();
    for text in [
        "`p mod 512` ∈ {392, 400, …, 456} (9 of the 64",
        "the record then starts at 464 mod 512",
        "`464 − (p mod 512)` bytes, from 72 bytes (`p mod 512` = 392) down to 8",
        "if `(p + 48) mod 512 ≤ 432`",
    ] {
        assert!(doc.contains(text), "the doc no longer says: {text}");
    }
}
