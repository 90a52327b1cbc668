//! The Kubernetes API: the shared SendingDomain cache, the identity key, the
//! leader Lease, and the fenced writes of status, Secrets and the finalizer.

pub mod domains;
pub mod identity;
pub mod leader;
pub mod writes;

pub use domains::Domains;
