//! yaad-bench: load generator for beanstalkd-protocol servers. See `yaad::bench`.

use clap::Parser;

fn main() {
    std::process::exit(yaad::bench::main(yaad::bench::Options::parse()));
}
