//! The SendingDomain controller.

use crate::api::SendingDomain;
use crate::cli::RunArgs;
use kube::CustomResourceExt;
use std::process::ExitCode;

/// The CRD as YAML, exactly as checked in under `crds/`.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&SendingDomain::crd()).expect("the CRD serialises")
}

/// `anypost-operator run`.
pub fn main(args: RunArgs) -> ExitCode {
    let _ = args;
    ExitCode::SUCCESS
}
