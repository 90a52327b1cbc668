//! Verification: resolve the customer's CNAMEs and follow them into the zone.

use crate::cli::CheckArgs;
use std::process::ExitCode;

/// `anypost-operator check`.
pub fn check_main(args: CheckArgs) -> ExitCode {
    let _ = args;
    ExitCode::FAILURE
}
