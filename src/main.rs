#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    anypost_operator::app::cli::main(anypost_operator::app::cli::Cli::parse())
}
