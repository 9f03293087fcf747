//! `yaad-dump`: inspect and check yaad segment files offline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use yaad::segment::dump::{DumpOptions, run};

/// Prints yaad segment files (or every segment file of a data dir) and verifies their CRCs.
/// Files are read into memory, never mapped. Exit status: 0 all valid, 1 damage found,
/// 2 a path could not be read.
#[derive(Parser, Debug)]
#[command(name = "yaad-dump", version)]
struct Args {
    /// Segment files (seg-*.yaad) or data dirs.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// One JSON object per line (file headers, records, errors).
    #[arg(long)]
    json: bool,
    /// Print whole bodies instead of a short preview.
    #[arg(long)]
    body: bool,
    /// Only verify every CRC: print each damaged record (file and offset) and a summary.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = DumpOptions {
        json: args.json,
        body: args.body,
        check: args.check,
    };
    let code = run(
        &args.paths,
        opts,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}
