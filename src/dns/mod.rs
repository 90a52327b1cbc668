//! The operator's DNS zone: the record model, the diff between two zone states,
//! the embedded authoritative server and the watch that keeps it current.
//!
//! The pieces `run` wires together for the embedded backend:
//!
//! ```text
//! let cfg = ZoneConfig::from_args(&args.zone)?;
//! let handle = ZoneHandle::new();                     // shared by DNS, controller, /readyz
//! spawn(watch_domains(client, cfg, handle.clone(), selector)); // SendingDomains -> zone
//! spawn(serve(handle.clone(), args.dns_listen, args.allow_axfr, shutdown));
//! handle.holds(token, &keys)                          // RecordsPublished, truthfully
//! ```

pub mod claims;
pub mod diff;
pub mod rfc2136;
pub mod server;
pub mod watch;
pub mod wire;
pub mod zone;

pub use claims::{claim_winner, is_winner, winning_claims};
pub use diff::{Change, Plan, plan};
pub use server::{DnsMetrics, DnsServer, ZoneHandle, serve};
pub use watch::watch_domains;
pub use zone::{RData, RecordType, RrSet, Zone, ZoneConfig, desired_zone};

use std::net::SocketAddr;

/// What went wrong in the DNS subsystem; each variant names the failed action.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A zone flag has a value the zone cannot be built from.
    #[error("{flag} {value:?}: {reason}")]
    ZoneConfig {
        flag: &'static str,
        value: String,
        reason: String,
    },
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
            Error::ZoneConfig { .. } => "ZoneConfig",
            Error::Bind { .. } => "DnsBind",
            Error::Serve { .. } => "DnsServe",
        }
    }
}
