//! The yaad daemon: parse flags, run the server.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cfg = yaad::server::Config::parse();
    match yaad::server::run(cfg) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yaad: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
