//! The operator's zone on the wire: served by the [`embedded`] authoritative
//! server in every replica, or pushed by the leader to an existing authoritative
//! server with [`rfc2136`] UPDATE. Both build on the zone model in the core;
//! [`wire`] converts between it and hickory's records.

pub mod embedded;
pub mod rfc2136;
pub mod wire;

use std::net::SocketAddr;

/// What went wrong serving the embedded zone; each variant names the failed action.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded server could not bind its socket.
    #[error("binding the DNS server to {addr} ({protocol}): {source}")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        source: std::io::Error,
    },
    /// The embedded server's sockets failed while serving.
    #[error("serving DNS on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: hickory_net::NetError,
    },
}

impl Error {
    /// A fixed string per variant, for Event reasons and metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "DnsBind",
            Error::Serve { .. } => "DnsServe",
        }
    }
}
