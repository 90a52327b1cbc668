//! The Kubernetes API: the clients, the shared SendingDomain cache, the identity
//! key, the leader Lease and the fence it keeps, and the fenced writes of status,
//! Secrets and the finalizer.

pub mod claims;
pub mod client;
pub mod domains;
pub mod events;
pub mod fence;
pub mod identity;
pub mod leader;
pub mod wire_fence;
pub mod writes;

pub use domains::Domains;
pub use fence::LeaderGuard;
