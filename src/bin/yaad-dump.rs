//! `yaad-dump`: inspect and check yaad segment files offline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, Parser, error::ErrorKind};
use yaad::segment::Micros;
use yaad::segment::dump::timeline::{self, TimelineOptions, parse_bucket, parse_unix_seconds};
use yaad::segment::dump::{DumpOptions, run};

/// Prints yaad segment files (or every segment file of a data dir) and verifies their CRCs,
/// or draws how many jobs trigger in each bucket of time from now on (--timeline).
/// Files are read into memory, never mapped. Exit status: 0 all valid, 1 damage found,
/// 2 a path could not be read.
#[derive(Parser, Debug)]
#[command(name = "yaad-dump", version)]
struct Args {
    /// Segment files (seg-*.yaad) or data dirs; --timeline takes one data dir.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// One JSON object per line (file headers, records, errors); with --timeline one object.
    #[arg(long)]
    json: bool,
    /// Print whole bodies instead of a short preview.
    #[arg(long)]
    body: bool,
    /// Only verify every CRC: print each damaged record (file and offset) and a summary.
    #[arg(long)]
    check: bool,
    /// Draw how many jobs trigger in each bucket of time from now on: ready (due now),
    /// delayed by bucket, buried, with totals.
    #[arg(long, conflicts_with_all = ["body", "check"])]
    timeline: bool,
    /// Bucket width for --timeline: minutes, hours or days (1m, 15m, 1h, 1d). Default: the
    /// smallest that fits a screen.
    #[arg(long, requires = "timeline", value_parser = parse_bucket)]
    bucket: Option<Micros>,
    /// With --timeline: a section per tube after the one of all tubes.
    #[arg(long, requires = "timeline")]
    by_tube: bool,
    /// "Now" for --timeline, in seconds since the Unix epoch, for tests and reproducible
    /// output. Default: the clock.
    #[arg(long, requires = "timeline", value_name = "UNIX_SECONDS", value_parser = parse_unix_seconds)]
    now: Option<Micros>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let out = &mut std::io::stdout().lock();
    let err = &mut std::io::stderr().lock();
    if args.timeline {
        let [dir] = &args.paths[..] else {
            Args::command()
                .error(
                    ErrorKind::WrongNumberOfValues,
                    "--timeline takes one data dir",
                )
                .exit()
        };
        let opts = TimelineOptions {
            now: args.now.unwrap_or_else(clock),
            bucket: args.bucket,
            by_tube: args.by_tube,
            json: args.json,
        };
        return ExitCode::from(timeline::run(dir, opts, out, err));
    }
    let opts = DumpOptions {
        json: args.json,
        body: args.body,
        check: args.check,
    };
    ExitCode::from(run(&args.paths, opts, out, err))
}

/// Now, µs since the Unix epoch (0 if the clock is before it).
fn clock() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
