//! `anypost-operator crd`: the CRD, generated from the API types.

use crate::core::api;

/// The CRD as YAML, exactly as checked in under `crds/`.
pub fn yaml() -> String {
    serde_yaml::to_string(&api::crd()).expect("the CRD serialises")
}
