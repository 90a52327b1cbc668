//! The pure core: the API types, the rules and the vocabularies, with no kube
//! client, no command line, no sockets and no DNS library beyond record types.
//! Everything here is decided from plain data and the time passed in, and is
//! unit-tested without any server. Adapters implement the [`ports`] it declares.

pub mod api;
pub mod claims;
pub mod config;
pub mod dkim;
pub mod duration;
pub mod fairness;
pub mod identity;
pub mod naming;
pub mod policy;
pub mod ports;
pub mod status;
pub mod trust;
pub mod verify;
pub mod vocab;
pub mod zone;
