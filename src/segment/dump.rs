//! `yaad-dump`: prints segment files for people (or as JSON lines) and checks their CRCs.
//!
//! Files are read into memory, never mapped (a live daemon may be writing them), and go
//! through the same scanner as recovery ([`super::format::scan_records`]). [`timeline`] draws
//! how many jobs trigger in each bucket of time from now on.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::format::{
    FILE_HEADER_LEN, RecordView, decode_file_header, header_version, scan_records,
};
use super::{JobState, Micros, SpokeId, StorageError, parse_segment_file_name};

pub mod timeline;

/// What to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct DumpOptions {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Whole bodies instead of a short preview.
    pub body: bool,
    /// Only verify: print damaged records and a summary per file, not every record.
    pub check: bool,
}

/// Exit status: everything read and valid.
pub const EXIT_OK: u8 = 0;
/// Exit status: a damaged record or a file that is not a valid segment file.
pub const EXIT_DAMAGED: u8 = 1;
/// Exit status: a path could not be read (missing, permissions) or output failed.
pub const EXIT_ERROR: u8 = 2;

/// Bytes of body shown without `--body`.
pub const PREVIEW_LEN: usize = 32;

/// Dumps every path (segment files, or data dirs whose segment files are dumped in time
/// order) to `out`, problems with reading paths to `err`. Returns the exit status.
pub fn run(paths: &[PathBuf], opts: DumpOptions, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let mut status = EXIT_OK;
    for path in paths {
        let files = match files_of(path) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(err, "yaad-dump: {}: {e}", path.display());
                status = status.max(EXIT_ERROR);
                continue;
            }
        };
        if files.is_empty() {
            let _ = writeln!(
                err,
                "yaad-dump: {}: no segment files (seg-*.yaad) in this directory",
                path.display()
            );
        }
        for file in files {
            let s = match std::fs::read(&file) {
                Ok(bytes) => dump_file(&file, &bytes, opts, out),
                Err(e) => {
                    let _ = writeln!(err, "yaad-dump: {}: {e}", file.display());
                    Ok(EXIT_ERROR)
                }
            };
            match s {
                Ok(s) => status = status.max(s),
                Err(_) => return EXIT_ERROR, // stdout closed: nothing more to say
            }
        }
    }
    status
}

/// The segment files a path stands for: itself, or a dir's `seg-*.yaad` sorted by spoke.
fn files_of(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut segs = segment_files_in(path)?;
    segs.sort();
    Ok(segs.into_iter().map(|(_, p)| p).collect())
}

/// The `seg-*.yaad` files of directory `dir` with the spokes their names state, unsorted.
fn segment_files_in(dir: &Path) -> std::io::Result<Vec<(SpokeId, PathBuf)>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| {
            let e = e.ok()?;
            Some((
                parse_segment_file_name(&e.file_name().to_string_lossy())?,
                e.path(),
            ))
        })
        .collect())
}

/// Dumps one file image; returns its exit status, or the output error.
pub fn dump_file(
    file: &Path,
    bytes: &[u8],
    opts: DumpOptions,
    out: &mut dyn Write,
) -> std::io::Result<u8> {
    let name = file.display().to_string();
    let spoke = match decode_file_header(bytes) {
        Ok(s) => s,
        Err(reason) => {
            write_bad_file_header(&name, &reason, opts, out)?;
            return Ok(EXIT_DAMAGED);
        }
    };
    if !opts.check {
        write_file_header(&name, bytes, spoke, opts, out)?;
    }
    let mut good = 0u64;
    let mut bad = 0u64;
    let mut records = scan_records(bytes, file);
    for r in records.by_ref() {
        match r {
            Ok(v) => {
                good += 1;
                if !opts.check {
                    write_record(&v, &name, opts, out)?;
                }
            }
            Err(e) => {
                bad += 1;
                write_damage(&e, &name, opts, out)?;
            }
        }
    }
    let end = records.end().max(FILE_HEADER_LEN);
    if opts.check && !opts.json {
        let verdict = if bad == 0 { "ok" } else { "DAMAGED" };
        writeln!(
            out,
            "{name}: {verdict}: {good} valid records, {bad} damaged, data ends at {end}"
        )?;
    }
    Ok(if bad == 0 { EXIT_OK } else { EXIT_DAMAGED })
}

/// Why a file is not a segment file (its header failed validation).
fn write_bad_file_header(
    file: &str,
    reason: &str,
    opts: DumpOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if opts.json {
        let v = json!({"type": "error", "file": file, "offset": 0, "error": reason});
        writeln!(out, "{v}")
    } else {
        writeln!(out, "{file}: offset 0: {reason}")
    }
}

/// The file header's fields: format version, spoke, size.
fn write_file_header(
    file: &str,
    bytes: &[u8],
    spoke: SpokeId,
    opts: DumpOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if opts.json {
        let v = json!({
            "type": "file",
            "file": file,
            "format_version": header_version(bytes),
            "spoke_start": iso8601(spoke.start),
            "spoke_start_us": spoke.start,
            "spoke_span_us": spoke.span,
            "file_bytes": bytes.len(),
        });
        writeln!(out, "{v}")
    } else {
        writeln!(
            out,
            "== {file}: format {}, spoke {} ({}) span {} us, {} bytes",
            header_version(bytes),
            iso8601(spoke.start),
            epoch(spoke.start),
            spoke.span,
            bytes.len()
        )
    }
}

/// A damaged record or region the scanner reported, inline where it was found.
fn write_damage(
    e: &StorageError,
    file: &str,
    opts: DumpOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let (offset, reason) = match e {
        StorageError::Corrupted { offset, reason, .. } => (*offset, reason.clone()),
        other => (0, other.to_string()),
    };
    if opts.json {
        let v = json!({"type": "error", "file": file, "offset": offset, "error": reason});
        writeln!(out, "{v}")
    } else if opts.check {
        writeln!(out, "{file}: offset {offset}: {reason}")
    } else {
        writeln!(out, "@{offset} BAD {reason}")
    }
}

fn write_record(
    v: &RecordView<'_>,
    file: &str,
    opts: DumpOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let h = v.header;
    if v.slot.state == JobState::Freed {
        // Its tube and body are not read (they may be holes): the run is what it says.
        return if opts.json {
            let obj = json!({
                "type": "freed",
                "file": file,
                "offset": v.offset,
                "id": h.id.get(),
                "state": v.slot.state.name(),
                "version": v.slot.version,
                "run": v.len(),
            });
            writeln!(out, "{obj}")
        } else {
            writeln!(
                out,
                "@{} id={} state=freed v={} run={} (dead records, not read)",
                v.offset,
                h.id.get(),
                v.slot.version,
                v.len()
            )
        };
    }
    let shown = if opts.body || v.body.len() <= PREVIEW_LEN {
        v.body
    } else {
        &v.body[..PREVIEW_LEN]
    };
    let more = if shown.len() < v.body.len() {
        "..."
    } else {
        ""
    };
    if opts.json {
        let mut obj = json!({
            "type": "record",
            "file": file,
            "offset": v.offset,
            "id": h.id.get(),
            "state": v.slot.state.name(),
            "version": v.slot.version,
            "tube": escape(v.tube),
            "pri": v.slot.priority,
            "reserves": v.slot.counters.reserves,
            "timeouts": v.slot.counters.timeouts,
            "releases": v.slot.counters.releases,
            "buries": v.slot.counters.buries,
            "kicks": v.slot.counters.kicks,
            "trigger_at": iso8601(h.trigger_at.get()),
            "trigger_us": h.trigger_at.get(),
            "created_at": iso8601(h.created_at.get()),
            "created_us": h.created_at.get(),
            "ttr": h.ttr.get(),
            "body_len": v.body.len(),
        });
        if !v.name.is_empty() {
            obj["name"] = json!(escape(v.name));
        }
        if opts.body {
            obj["body"] = json!(escape(v.body));
        } else {
            obj["preview"] = json!(format!("{}{more}", escape(shown)));
        }
        writeln!(out, "{obj}")
    } else {
        // Only a named job's line has this field: unnamed ones read as before names existed.
        let named = if v.name.is_empty() {
            String::new()
        } else {
            format!(" name={}", escape(v.name))
        };
        writeln!(
            out,
            "@{} id={} state={} v={} tube={}{named} pri={} reserves={} timeouts={} releases={} buries={} kicks={} trigger={} ({}) ttr={} created={} len={} body=\"{}\"{more}",
            v.offset,
            h.id.get(),
            v.slot.state.name(),
            v.slot.version,
            escape(v.tube),
            v.slot.priority,
            v.slot.counters.reserves,
            v.slot.counters.timeouts,
            v.slot.counters.releases,
            v.slot.counters.buries,
            v.slot.counters.kicks,
            iso8601(h.trigger_at.get()),
            epoch(h.trigger_at.get()),
            h.ttr.get(),
            iso8601(h.created_at.get()),
            v.body.len(),
            escape(shown),
        )
    }
}

/// Printable ASCII as is (except `\` and `"`), common controls as `\n` `\r` `\t`, every
/// other byte as `\xNN`: the output is one line of ASCII whatever the bytes.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// Seconds since the Unix epoch with six decimals, exact: `1700000000.500000`.
pub fn epoch(us: Micros) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC) for microseconds since the Unix epoch.
pub fn iso8601(us: Micros) -> String {
    let secs = us / 1_000_000;
    let micros = us % 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(iso8601(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(
            iso8601(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            iso8601(4_102_444_799_999_999),
            "2099-12-31T23:59:59.999999Z"
        );
        assert_eq!(iso8601(u64::MAX), "586524-01-19T08:01:49.551615Z");
    }

    #[test]
    fn civil_from_days_matches_a_day_by_day_calendar() {
        // Walk 1970..2100 one day at a time with the month-length rules.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..47_482u64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn epoch_is_exact_seconds() {
        assert_eq!(epoch(1_700_000_000_500_000), "1700000000.500000");
        assert_eq!(epoch(7), "0.000007");
    }

    #[test]
    fn escape_is_one_line_of_ascii() {
        assert_eq!(
            escape(b"a\"b\\c\n\r\t\x00\xff~"),
            "a\\\"b\\\\c\\n\\r\\t\\x00\\xff~"
        );
    }
}
