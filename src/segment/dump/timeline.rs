//! `yaad-dump --timeline`: how many jobs trigger in each bucket of time from now on, by state
//! and optionally by tube: the first thing an operator asks of a scheduler ("what fires
//! tonight?").
//!
//! The data dir's segment files are read into memory (never mapped) through the scanner
//! recovery uses ([`scan_records`]), and each job is settled by recovery's rule
//! ([`current_records`]), so the picture holds the jobs a restart at `now` would bring back:
//! - **ready**: `Waiting` with its trigger time at or before `now`, or `Ready` (a kicked job,
//!   whatever its trigger time): one "due now" row;
//! - **delayed**: `Waiting` with a later trigger time: counted in the bucket it falls in;
//! - **buried**: counted apart, not on the time axis (it waits for a kick).
//!
//! A reservation is not persisted: a job reserved right now shows as ready (its last persisted
//! state), as it would after a restart. Memory mode's data dir holds its last flush, which is
//! what is shown.
//!
//! On a live data dir nothing is written and no lock is taken; the files change while they
//! are read, one at a time:
//! - A file gone between listing and reading (a retired spoke: it held no live job) is
//!   skipped; a file renamed over (a compaction) is read whole, old or new, either holding the
//!   same jobs.
//! - A file whose scan finds damage is read once more: a record being written can look torn.
//!   What is still damaged is reported, and its job is missing from the picture.
//! - A job moved while the files are read (a release with a delay, a split) has its new record
//!   appended before its old one is marked `Moved`. Files are read by spoke start, the widest
//!   spoke first at one start, so a move to a later or a finer spoke (releases of due jobs,
//!   splits) is never missed. A move to a spoke read earlier (a kicked far job released with a
//!   short delay) while the timeline runs can be. No job is counted twice: one record per id.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{EXIT_DAMAGED, EXIT_ERROR, EXIT_OK, escape, iso8601};
use crate::segment::format::{FILE_HEADER_LEN, decode_file_header, scan_records};
use crate::segment::{JobState, Micros, SECOND, SpokeId};

pub const MINUTE: Micros = 60 * SECOND;
pub const HOUR: Micros = 60 * MINUTE;
pub const DAY: Micros = 24 * HOUR;

/// The bucket widths an automatic choice picks from, smallest first ([`auto_bucket`]).
pub const AUTO_BUCKETS: [Micros; 9] = [
    MINUTE,
    5 * MINUTE,
    15 * MINUTE,
    HOUR,
    6 * HOUR,
    DAY,
    7 * DAY,
    30 * DAY,
    365 * DAY,
];

/// Rows of delayed jobs (buckets and runs of empty buckets) an automatic width fits in: about
/// a terminal screen.
pub const MAX_ROWS: usize = 24;

/// Characters of the longest bar; a row stays within 80 columns.
pub const BAR_WIDTH: u64 = 40;

/// Eighths of a character, for the end of a bar.
const PARTIAL: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/// What to draw.
#[derive(Clone, Copy, Debug)]
pub struct TimelineOptions {
    /// Now, µs since the Unix epoch: jobs triggering at or before it are due.
    pub now: Micros,
    /// Width of a bucket (a whole number of minutes); `None`: [`auto_bucket`].
    pub bucket: Option<Micros>,
    /// A section per tube after the one of all tubes.
    pub by_tube: bool,
    /// One JSON object instead of text.
    pub json: bool,
}

/// Parses a bucket width: a whole number of minutes, hours or days (`1m`, `15m`, `1h`, `1d`).
pub fn parse_bucket(s: &str) -> Result<Micros, String> {
    let bad = || {
        format!(
            "invalid bucket {s:?}: expected a whole number of minutes, hours or days \
             (1m, 15m, 1h, 6h, 1d)"
        )
    };
    let (n, unit) = match s.char_indices().last() {
        Some((at, 'm')) => (&s[..at], MINUTE),
        Some((at, 'h')) => (&s[..at], HOUR),
        Some((at, 'd')) => (&s[..at], DAY),
        _ => return Err(bad()),
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match n.parse::<u64>().ok().and_then(|n| n.checked_mul(unit)) {
        Some(0) => Err(format!("invalid bucket {s:?}: must be at least 1m")),
        Some(w) => Ok(w),
        None => Err(format!("invalid bucket {s:?}: too large")),
    }
}

/// Parses `--now`: whole seconds since the Unix epoch, as µs.
pub fn parse_unix_seconds(s: &str) -> Result<Micros, String> {
    s.parse::<u64>()
        .ok()
        .and_then(|secs| secs.checked_mul(SECOND))
        .ok_or_else(|| format!("invalid time {s:?}: expected whole seconds since the Unix epoch"))
}

/// A bucket width as `--bucket` takes it: `15m`, `6h`, `7d`.
pub fn bucket_name(width: Micros) -> String {
    if width.is_multiple_of(DAY) {
        format!("{}d", width / DAY)
    } else if width.is_multiple_of(HOUR) {
        format!("{}h", width / HOUR)
    } else {
        format!("{}m", width / MINUTE)
    }
}

/// A record that may be its job's current one (not `Moved`): what the timeline keeps of it.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    id: u64,
    version: u32,
    state: JobState,
    trigger_at: Micros,
    /// Index into [`DirRead::tubes`].
    tube: u32,
}

/// Each job's current record, by recovery's rule (`Store::pick_winners` in
/// `store/recovery.rs`): per id the record with the highest version that is not `Moved` wins
/// (`Moved` ones are never candidates), and a `Deleted` winner drops the job. Recovery's rule
/// is a method of the store that also repairs what it finds (marks lost moves, rewrites id
/// index entries) and needs the segments open, so it is restated here over the timeline's
/// candidates. Two candidates of one version (which the writer never produces) go to the one
/// read first.
fn current_records(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    // Stable: equal keys keep reading order.
    candidates.sort_by_key(|c| (c.id, Reverse(c.version)));
    candidates.dedup_by_key(|c| c.id);
    candidates.retain(|c| c.state != JobState::Deleted);
    candidates
}

/// What reading a data dir's segment files found.
#[derive(Default)]
struct DirRead {
    candidates: Vec<Candidate>,
    tubes: Vec<Vec<u8>>,
    tube_idx: HashMap<Vec<u8>, u32>,
    /// The spokes of the file headers read: a second file of one spoke is skipped, as
    /// recovery skips it.
    spokes: HashSet<SpokeId>,
    files_read: u64,
    /// Files listed, then gone before they were read.
    files_gone: u64,
    /// Records the scanner reported damaged (twice in a row).
    damaged_records: u64,
    /// Files whose header is not a segment file header.
    damaged_files: u64,
    /// A file could not be read (not a damage: permissions, I/O).
    unreadable: bool,
    /// What to tell the operator, one line each.
    notes: Vec<String>,
}

impl DirRead {
    fn tube(&mut self, name: &[u8]) -> u32 {
        if let Some(&t) = self.tube_idx.get(name) {
            return t;
        }
        // Tube names are at most 200 bytes: u32::MAX of them do not fit in memory.
        let t = u32::try_from(self.tubes.len()).unwrap_or(u32::MAX);
        self.tubes.push(name.to_vec());
        self.tube_idx.insert(name.to_vec(), t);
        t
    }

    /// Reads the segment file at `path` and keeps its candidates.
    fn read_segment(&mut self, path: &Path) {
        self.read_segment_with(path, |p| std::fs::read(p));
    }

    /// [`Self::read_segment`], reading the file's image with `read`.
    fn read_segment_with(
        &mut self,
        path: &Path,
        mut read: impl FnMut(&Path) -> io::Result<Vec<u8>>,
    ) {
        for attempt in 0..2 {
            let bytes = match read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.files_gone += 1;
                    return;
                }
                Err(e) => {
                    self.unreadable = true;
                    self.notes.push(format!("{}: {e}", path.display()));
                    return;
                }
            };
            // A create whose header never reached the disk holds no job (recovery removes it);
            // on a live data dir it may be a create in progress.
            let head = bytes.get(..FILE_HEADER_LEN as usize);
            if head.is_none_or(|h| h.iter().all(|&b| b == 0)) {
                return;
            }
            let spoke = match decode_file_header(&bytes) {
                Ok(s) => s,
                Err(why) => {
                    self.damaged_files += 1;
                    self.notes.push(format!(
                        "{}: {why}; its jobs are not in the timeline",
                        path.display()
                    ));
                    return;
                }
            };
            if self.spokes.contains(&spoke) {
                return;
            }
            let mut found = Vec::new();
            let mut damaged = 0u64;
            for r in scan_records(&bytes, path) {
                match r {
                    Ok(v) if matches!(v.slot.state, JobState::Moved | JobState::Freed) => {}
                    Ok(v) => {
                        found.push((v.header.id.get(), v.slot, v.header.trigger_at.get(), v.tube))
                    }
                    Err(_) => damaged += 1,
                }
            }
            // A record being written can look damaged: read the file once more.
            if damaged > 0 && attempt == 0 {
                continue;
            }
            for (id, slot, trigger_at, tube) in found {
                let tube = self.tube(tube);
                self.candidates.push(Candidate {
                    id,
                    version: slot.version,
                    state: slot.state,
                    trigger_at,
                    tube,
                });
            }
            if damaged > 0 {
                self.damaged_records += damaged;
                self.notes.push(format!(
                    "{}: {damaged} damaged records skipped (yaad-dump --check names them)",
                    path.display()
                ));
            }
            self.spokes.insert(spoke);
            self.files_read += 1;
            return;
        }
    }
}

/// The segment files of data dir `dir` in reading order: by spoke start, and at one start the
/// widest spoke first (a split moves jobs to finer spokes: see the module documentation).
fn segment_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory (--timeline reads a data dir)",
        ));
    }
    let mut segs = super::segment_files_in(dir)?;
    segs.sort_by_key(|(s, _)| (s.start, Reverse(s.span)));
    Ok(segs.into_iter().map(|(_, p)| p).collect())
}

/// The jobs of one section (all tubes, or one tube) by state.
#[derive(Default)]
struct Picture {
    ready: u64,
    buried: u64,
    /// Trigger times of the delayed jobs, ascending (after [`Picture::sorted`]).
    delayed: Vec<Micros>,
}

impl Picture {
    fn add(&mut self, c: &Candidate, now: Micros) {
        match c.state {
            JobState::Waiting if c.trigger_at > now => self.delayed.push(c.trigger_at),
            JobState::Waiting | JobState::Ready => self.ready += 1,
            JobState::Buried => self.buried += 1,
            // Not current records (see current_records).
            JobState::Deleted | JobState::Moved | JobState::Freed => {}
        }
    }

    fn sorted(mut self) -> Self {
        self.delayed.sort_unstable();
        self
    }

    fn jobs(&self) -> u64 {
        self.ready + self.buried + self.delayed.len() as u64
    }
}

/// A span of time in days, hours and minutes: `2d 18h`, `45m` (whole minutes).
fn duration_name(us: Micros) -> String {
    let parts = [
        (us / DAY, "d"),
        (us % DAY / HOUR, "h"),
        (us % HOUR / MINUTE, "m"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if shown.is_empty() {
        "0m".into()
    } else {
        shown.join(" ")
    }
}

/// A row of delayed jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    /// The bucket `[start, start + width)` and the jobs triggering in it (0: an empty bucket
    /// between two others).
    Bucket { start: Micros, jobs: u64 },
    /// Two or more empty buckets in a row.
    Gap { buckets: u64 },
}

/// The rows of `delayed` (ascending trigger times, all after `now`) in buckets of `width`,
/// from the bucket holding `now` to the last one with a job: a bucket per row, or one row
/// for a run of two or more empty buckets.
fn rows(delayed: &[Micros], width: Micros, now: Micros) -> Vec<Row> {
    let mut out = Vec::new();
    let mut next = now / width;
    let mut i = 0;
    while i < delayed.len() {
        let idx = delayed[i] / width;
        let n = delayed[i..]
            .iter()
            .take_while(|&&t| t / width == idx)
            .count();
        match idx - next {
            0 => {}
            1 => out.push(Row::Bucket {
                start: next * width,
                jobs: 0,
            }),
            gap => out.push(Row::Gap { buckets: gap }),
        }
        out.push(Row::Bucket {
            start: idx * width,
            jobs: n as u64,
        });
        next = idx + 1;
        i += n;
    }
    out
}

/// The smallest of [`AUTO_BUCKETS`] whose rows of `delayed` (see [`rows`]) fit in
/// [`MAX_ROWS`], else the largest. Runs of empty buckets take one row, so a few jobs far
/// ahead do not widen the buckets of tonight.
pub fn auto_bucket(delayed: &[Micros], now: Micros) -> Micros {
    AUTO_BUCKETS
        .iter()
        .copied()
        .find(|&w| rows(delayed, w, now).len() <= MAX_ROWS)
        .unwrap_or(AUTO_BUCKETS[AUTO_BUCKETS.len() - 1])
}

/// `YYYY-MM-DD HH:MM` (or with `:SS`) in UTC.
fn utc(us: Micros, seconds: bool) -> String {
    let iso = iso8601(us);
    let (date, time) = iso.split_once('T').unwrap_or((&iso, ""));
    let n = if seconds { 8 } else { 5 };
    format!("{date} {}", time.get(..n).unwrap_or(time))
}

/// A bar of `n` against the longest, `max`: [`BAR_WIDTH`] characters; any job shows.
fn bar(n: u64, max: u64) -> String {
    if n == 0 || max == 0 {
        return String::new();
    }
    let eighths = (u128::from(n) * u128::from(BAR_WIDTH * 8) / u128::from(max)).max(1);
    let eighths = u64::try_from(eighths).unwrap_or(BAR_WIDTH * 8);
    "█".repeat((eighths / 8) as usize) + PARTIAL[(eighths % 8) as usize]
}

/// Everything drawn: the sections and how.
struct Drawing<'a> {
    dir: &'a Path,
    now: Micros,
    width: Micros,
    auto: bool,
    all: Picture,
    /// Per tube name, with `by_tube`.
    tubes: Option<BTreeMap<Vec<u8>, Picture>>,
}

impl Drawing<'_> {
    fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let how = if self.auto { " (auto)" } else { "" };
        writeln!(out, "timeline of {}", self.dir.display())?;
        writeln!(
            out,
            "now {} UTC; buckets of {}{how} by start time (UTC)",
            utc(self.now, true),
            bucket_name(self.width)
        )?;
        let all_rows = rows(&self.all.delayed, self.width, self.now);
        // One layout for every section: the widest label and count of all.
        let label_w = all_rows
            .iter()
            .map(|r| match r {
                Row::Bucket { start, .. } => utc(*start, false).len(),
                Row::Gap { .. } => 0,
            })
            .fold(16, usize::max);
        let count_w = self.all.jobs().to_string().len().max(4);
        let layout = (label_w, count_w);
        match &self.tubes {
            None => write_section(out, &self.all, &all_rows, self.width, layout)?,
            Some(tubes) => {
                writeln!(out, "\n== all tubes")?;
                write_section(out, &self.all, &all_rows, self.width, layout)?;
                for (name, p) in tubes {
                    writeln!(out, "\n== tube {}", escape(name))?;
                    write_section(
                        out,
                        p,
                        &rows(&p.delayed, self.width, self.now),
                        self.width,
                        layout,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn json(&self, read: &DirRead) -> Value {
        let mut v = section_json(&self.all, self.width, self.now);
        v["data_dir"] = json!(self.dir.display().to_string());
        v["now"] = json!(iso8601(self.now));
        v["now_us"] = json!(self.now);
        v["bucket"] = json!(bucket_name(self.width));
        v["bucket_us"] = json!(self.width);
        v["bucket_auto"] = json!(self.auto);
        v["files_read"] = json!(read.files_read);
        v["files_gone"] = json!(read.files_gone);
        v["damaged_records"] = json!(read.damaged_records);
        v["damaged_files"] = json!(read.damaged_files);
        if let Some(tubes) = &self.tubes {
            v["tubes"] = tubes
                .iter()
                .map(|(name, p)| {
                    let mut t = section_json(p, self.width, self.now);
                    t["tube"] = json!(escape(name));
                    t
                })
                .collect();
        }
        v
    }
}

/// One section's rows: ready, delayed by bucket, buried, total. `layout`: label and count
/// widths.
fn write_section(
    out: &mut dyn Write,
    p: &Picture,
    rows: &[Row],
    width: Micros,
    (label_w, count_w): (usize, usize),
) -> io::Result<()> {
    let max = rows
        .iter()
        .map(|r| match r {
            Row::Bucket { jobs, .. } => *jobs,
            Row::Gap { .. } => 0,
        })
        .fold(p.ready, u64::max);
    let mut line = |label: &str, count: &str, rest: &str| {
        let l = format!("{label:<label_w$} {count:>count_w$} {rest}");
        writeln!(out, "{}", l.trim_end())
    };
    line("ready (due now)", &p.ready.to_string(), &bar(p.ready, max))?;
    if rows.is_empty() {
        line("delayed", "0", "")?;
    }
    for r in rows {
        match *r {
            Row::Bucket { start, jobs } => {
                line(&utc(start, false), &jobs.to_string(), &bar(jobs, max))?;
            }
            Row::Gap { buckets } => {
                let empty = buckets.saturating_mul(width);
                line(
                    "...",
                    "",
                    &format!("(nothing for {})", duration_name(empty)),
                )?;
            }
        }
    }
    line("buried", &p.buried.to_string(), "(until kicked)")?;
    let summary = format!(
        "({} ready, {} delayed, {} buried)",
        p.ready,
        p.delayed.len(),
        p.buried
    );
    line("total", &p.jobs().to_string(), &summary)
}

/// A section's counts and its non-empty buckets, as JSON.
fn section_json(p: &Picture, width: Micros, now: Micros) -> Value {
    let buckets: Vec<Value> = rows(&p.delayed, width, now)
        .into_iter()
        .filter_map(|r| match r {
            Row::Bucket { start, jobs } if jobs > 0 => Some(json!({
                "start": iso8601(start),
                "start_us": start,
                "jobs": jobs,
            })),
            _ => None,
        })
        .collect();
    json!({
        "jobs": p.jobs(),
        "ready": p.ready,
        "delayed": p.delayed.len(),
        "buried": p.buried,
        "buckets": buckets,
    })
}

/// Draws the timeline of data dir `dir` to `out`, problems to `err`. Returns the exit status:
/// [`EXIT_OK`]; [`EXIT_DAMAGED`] when damaged records or files were skipped (their jobs are
/// missing from the picture); [`EXIT_ERROR`] when the dir or a file could not be read, or
/// output failed.
pub fn run(dir: &Path, opts: TimelineOptions, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let files = match segment_files(dir) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(err, "yaad-dump: {}: {e}", dir.display());
            return EXIT_ERROR;
        }
    };
    let mut read = DirRead::default();
    if files.is_empty() {
        read.notes.push(format!(
            "{}: no segment files (seg-*.yaad) in this directory",
            dir.display()
        ));
    }
    for f in &files {
        read.read_segment(f);
    }
    let now = opts.now;
    let mut all = Picture::default();
    let mut tubes: Option<BTreeMap<Vec<u8>, Picture>> = opts.by_tube.then(BTreeMap::new);
    for c in current_records(std::mem::take(&mut read.candidates)) {
        all.add(&c, now);
        if let Some(t) = tubes.as_mut() {
            let name = read.tubes[c.tube as usize].clone();
            t.entry(name).or_default().add(&c, now);
        }
    }
    let all = all.sorted();
    let tubes = tubes.map(|t| t.into_iter().map(|(n, p)| (n, p.sorted())).collect());
    let width = opts
        .bucket
        .unwrap_or_else(|| auto_bucket(&all.delayed, now));
    let drawing = Drawing {
        dir,
        now,
        width,
        auto: opts.bucket.is_none(),
        all,
        tubes,
    };
    let written = if opts.json {
        writeln!(out, "{}", drawing.json(&read))
    } else {
        drawing.write_text(out)
    };
    for n in &read.notes {
        let _ = writeln!(err, "yaad-dump: {n}");
    }
    if written.is_err() || read.unreadable {
        EXIT_ERROR
    } else if read.damaged_records + read.damaged_files > 0 {
        EXIT_DAMAGED
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = 1_700_000_000 * SECOND; // 2023-11-14 22:13:20 UTC

    fn cand(id: u64, version: u32, state: JobState) -> Candidate {
        Candidate {
            id,
            version,
            state,
            trigger_at: NOW + u64::from(version),
            tube: 0,
        }
    }

    #[test]
    fn the_highest_version_wins_and_a_deleted_winner_drops_the_job() {
        let got = current_records(vec![
            cand(1, 1, JobState::Waiting),
            cand(1, 3, JobState::Waiting), // a move whose Moved mark was lost: v3 wins
            cand(2, 2, JobState::Deleted),
            cand(2, 1, JobState::Waiting), // the old live record of a deleted moved job
            cand(3, 1, JobState::Buried),
        ]);
        let got: Vec<_> = got.iter().map(|c| (c.id, c.version)).collect();
        assert_eq!(got, [(1, 3), (3, 1)]);
    }

    #[test]
    fn states_at_now() {
        let mut p = Picture::default();
        let at = |trigger_at, state| Candidate {
            id: 1,
            version: 1,
            state,
            trigger_at,
            tube: 0,
        };
        p.add(&at(NOW, JobState::Waiting), NOW); // due exactly now: ready
        p.add(&at(NOW + 1, JobState::Waiting), NOW);
        p.add(&at(NOW + DAY, JobState::Ready), NOW); // kicked: ready whatever its trigger
        p.add(&at(NOW + DAY, JobState::Buried), NOW);
        assert_eq!(
            (p.ready, p.delayed.clone(), p.buried),
            (2, vec![NOW + 1], 1)
        );
    }

    #[test]
    fn rows_from_the_bucket_of_now_with_runs_of_empty_buckets_in_one_row() {
        let w = HOUR;
        let base = NOW / w * w;
        let delayed = [
            base + w + 1, // the bucket of now is empty: a zero row
            base + w + 2,
            base + 2 * w,
            base + 6 * w, // three empty buckets before it
        ];
        let b = |i: u64, jobs| Row::Bucket {
            start: base + i * w,
            jobs,
        };
        assert_eq!(
            rows(&delayed, w, NOW),
            [b(0, 0), b(1, 2), b(2, 1), Row::Gap { buckets: 3 }, b(6, 1)]
        );
        assert_eq!(rows(&[], w, NOW), []);
        assert_eq!(rows(&[NOW + 1], w, NOW), [b(0, 1)]);
    }

    #[test]
    fn auto_bucket_is_the_smallest_that_fits_a_screen() {
        assert_eq!(auto_bucket(&[], NOW), MINUTE);
        // One job a minute for 20 minutes: minutes fit.
        let minutes: Vec<_> = (1..=20).map(|i| NOW + i * MINUTE).collect();
        assert_eq!(auto_bucket(&minutes, NOW), MINUTE);
        // One a minute for 3 hours: 5-minute buckets would take 36 rows, 15 minutes 12.
        let hours: Vec<_> = (1..=180).map(|i| NOW + i * MINUTE).collect();
        assert_eq!(auto_bucket(&hours, NOW), 15 * MINUTE);
        // A job ten years ahead adds two rows (a gap and its bucket), not wider buckets.
        let mut far = hours.clone();
        far.push(NOW + 3650 * DAY);
        assert_eq!(auto_bucket(&far, NOW), 15 * MINUTE);
        // One a day for 3 years: even 30 days take more than a screen.
        let years: Vec<_> = (1..=1100).map(|i| NOW + i * DAY).collect();
        assert_eq!(auto_bucket(&years, NOW), 365 * DAY);
        // No overflow at the end of time.
        assert_eq!(auto_bucket(&[u64::MAX], NOW), MINUTE);
    }

    #[test]
    fn bucket_widths_parse_and_print_alike() {
        for (s, w) in [
            ("1m", MINUTE),
            ("15m", 15 * MINUTE),
            ("1h", HOUR),
            ("6h", 6 * HOUR),
            ("1d", DAY),
        ] {
            assert_eq!(parse_bucket(s), Ok(w), "{s}");
            assert_eq!(bucket_name(w), s);
        }
        assert_eq!(bucket_name(60 * MINUTE), "1h");
        for bad in [
            "", "m", "0m", "1", "1s", "1.5h", "-1h", "+1h", " 1h", "1hh", "h1", "1é",
        ] {
            let e = parse_bucket(bad).unwrap_err();
            assert!(e.contains("invalid bucket"), "{bad}: {e}");
        }
        assert!(parse_bucket("99999999999999999999d").is_err());
        assert!(parse_bucket("999999999999999d").is_err());
        assert_eq!(parse_unix_seconds("1700000000"), Ok(NOW));
        assert!(parse_unix_seconds("soon").is_err());
        assert!(parse_unix_seconds("18446744073709551615").is_err());
    }

    #[test]
    fn bars_scale_to_the_longest_in_eighths() {
        assert_eq!(bar(0, 10), "");
        assert_eq!(bar(10, 10).chars().count(), BAR_WIDTH as usize);
        assert_eq!(bar(1, 1_000_000), "▏");
        assert_eq!(bar(1, 16), "██▌");
        assert_eq!(bar(u64::MAX, u64::MAX).chars().count(), BAR_WIDTH as usize);
    }

    /// A split moves jobs from a wide spoke to finer ones of the same start: the wide file is
    /// read first, so a job moved while the files are read is seen in one or the other.
    #[test]
    fn files_are_read_by_start_and_the_widest_first() {
        use crate::segment::segment_file_name;
        let tmp = tempfile::tempdir().unwrap();
        let spokes = [
            SpokeId {
                start: NOW + HOUR,
                span: SECOND,
            },
            SpokeId {
                start: NOW,
                span: HOUR,
            },
            SpokeId {
                start: NOW,
                span: 60 * HOUR,
            },
            SpokeId {
                start: NOW,
                span: SECOND,
            },
        ];
        for s in spokes {
            std::fs::write(tmp.path().join(segment_file_name(s)), b"").unwrap();
        }
        std::fs::write(tmp.path().join("ids.yaad"), b"").unwrap();
        let names: Vec<_> = segment_files(tmp.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let want: Vec<_> = [2, 1, 3, 0]
            .iter()
            .map(|&i| segment_file_name(spokes[i]))
            .collect();
        assert_eq!(names, want);
    }

    /// A file listed, then removed before it is read (a retired spoke) is no error.
    #[test]
    fn a_file_gone_before_it_is_read_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let mut read = DirRead::default();
        read.read_segment(&tmp.path().join("seg-gone.yaad"));
        assert_eq!((read.files_gone, read.files_read), (1, 0));
        assert!(!read.unreadable && read.notes.is_empty());
    }

    /// A record being written when the file is read looks damaged: the file is read again.
    #[test]
    fn a_file_read_mid_append_is_read_again() {
        use crate::segment::format::encode_file_header;
        use crate::segment::{MemSegment, NewRecord, Segment, StateSlot};
        let tmp = tempfile::tempdir().unwrap();
        let spoke = SpokeId {
            start: NOW,
            span: HOUR,
        };
        let mut seg = MemSegment::create(tmp.path(), spoke).unwrap();
        for id in 1..=2 {
            seg.append(&NewRecord {
                id,
                trigger_at: NOW + HOUR,
                created_at: NOW,
                ttr: 1,
                tube: b"default",
                name: &[],
                body: b"body",
                slot: StateSlot {
                    version: 1,
                    state: JobState::Waiting,
                    priority: 0,
                    counters: Default::default(),
                },
            })
            .unwrap();
        }
        seg.flush().unwrap();
        let path = tmp.path().join(crate::segment::segment_file_name(spoke));
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(&whole[..64], &encode_file_header(spoke)[..]);
        // The first read sees the second record half written, the next one whole.
        let mut images = vec![whole.clone(), whole[..whole.len() - 20].to_vec()];
        let mut read = DirRead::default();
        read.read_segment_with(&path, |_| Ok(images.pop().unwrap()));
        assert_eq!((read.candidates.len(), read.damaged_records), (2, 0));
        assert!(read.notes.is_empty(), "{:?}", read.notes);
        // Damaged twice: reported, and the whole record is kept out.
        let mut read = DirRead::default();
        read.read_segment_with(&path, |_| Ok(whole[..whole.len() - 20].to_vec()));
        assert_eq!((read.candidates.len(), read.damaged_records), (1, 1));
        assert_eq!(read.notes.len(), 1);
    }

    #[test]
    fn durations_in_days_hours_minutes() {
        assert_eq!(duration_name(66 * HOUR), "2d 18h");
        assert_eq!(duration_name(45 * MINUTE), "45m");
        assert_eq!(duration_name(DAY + MINUTE), "1d 1m");
        assert_eq!(duration_name(SECOND), "0m");
    }

    #[test]
    fn utc_labels() {
        assert_eq!(utc(NOW, false), "2023-11-14 22:13");
        assert_eq!(utc(NOW, true), "2023-11-14 22:13:20");
    }
}
