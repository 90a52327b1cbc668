//! The rfc2136 backend: the leader keeps an existing authoritative server (BIND,
//! Knot, PowerDNS) in step with the SendingDomains, with TSIG-signed DNS UPDATE.
//!
//! One sync is a pipeline: read the server's zone with a TSIG-signed AXFR, compute
//! the desired zone from the SendingDomains (the same [`desired_zone`] the embedded
//! server serves), [`plan`] the difference, and send it in bounded UPDATE messages.
//! A read that is not a complete transfer (no opening or closing SOA, a dropped
//! connection, a bad signature) aborts the sync before anything is planned, so a
//! failed read can never turn into a mass delete or a mass re-add. Every UPDATE
//! carries prerequisites stating what the read saw, so a zone changed behind our
//! back makes the server refuse the batch instead of applying a stale plan.
//!
//! The wire exchange is done here over one TCP connection per sync rather than
//! through hickory's multiplexing client: a zone transfer is a long run of
//! messages, and the multiplexer delivers them through a small bounded channel
//! that drops what a slow reader has not taken yet. Reading the framed stream
//! ourselves keeps every message, and lets an error answer whose TSIG does not
//! verify (wrong secret, unknown key) still be explained by its rcode.

pub mod config;
pub mod connection;
pub mod messages;
pub mod metrics;
pub mod publisher;
pub mod sync;

pub use config::{Algorithm, Rfc2136Config, Rfc2136Settings};
pub use connection::Server;
pub use metrics::SyncMetrics;
pub use publisher::Rfc2136Publisher;
pub use sync::{Rfc2136Sync, SyncReport, prime, run, sync_once};

use std::net::SocketAddr;
use std::time::Duration;

/// Most changes (RRset creates, replaces, deletes) sent in one UPDATE message.
pub const MAX_CHANGES_PER_UPDATE: usize = 100;
/// Most bytes of record data (estimated) in one UPDATE message: well below the
/// 64 KiB a DNS message over TCP can hold, even with 4096-bit DKIM keys.
pub const MAX_UPDATE_BYTES: usize = 32 * 1024;
/// Time to connect, and to wait for any one message from the server.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a whole zone transfer may take.
pub const AXFR_TIMEOUT: Duration = Duration::from_secs(120);
/// SendingDomain changes arriving within this window are synced together.
pub const COALESCE: Duration = Duration::from_millis(500);
/// First wait after a failed sync; it doubles on each further failure...
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// ...up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Clock difference TSIG tolerates between us and the server (RFC 8945 suggests 300s).
pub(crate) const TSIG_FUDGE: u16 = 300;

/// What went wrong in the rfc2136 backend; each variant names the failed action,
/// and the sync errors name the server and the TSIG key, so a condition message
/// or a log line says where to look.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The zone could not be read completely.
    #[error("reading zone {zone} from {server} by AXFR with TSIG key {key}: {reason}")]
    Axfr {
        zone: String,
        server: SocketAddr,
        key: String,
        reason: String,
    },
    /// The plan would delete more of the zone than one sync may (see
    /// [`crate::core::zone::guard`]); nothing was sent.
    #[error(
        "a sync of zone {zone} on {server} would delete {deletes} of the {owned} record sets the operator owns there ({percent}%, over --rfc2136-max-delete-percent {max}%): refused, nothing was changed. A wrong --selector, SendingDomains restored without their status or a block emptying many statuses can cause this; if the deletions are meant, run with --rfc2136-confirm-deletes={deletes} until the sync is done, then remove it"
    )]
    DeleteRefused {
        zone: String,
        server: SocketAddr,
        deletes: usize,
        owned: usize,
        percent: usize,
        max: u8,
    },
    /// An UPDATE was not applied.
    #[error("updating zone {zone} on {server} with TSIG key {key}: {reason}")]
    Update {
        zone: String,
        server: SocketAddr,
        key: String,
        reason: String,
    },
}

impl Error {
    /// A fixed string per variant, for Event reasons and metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Axfr { .. } => "Rfc2136Axfr",
            Error::Update { .. } => "Rfc2136Update",
            Error::DeleteRefused { .. } => "Rfc2136DeleteRefused",
        }
    }
}
