#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    anypost_operator::cli::main(anypost_operator::cli::Cli::parse())
}
