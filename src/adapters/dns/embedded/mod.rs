//! The embedded authoritative server: our own request handler ([`answer`]),
//! answering from an in-memory copy of the zone ([`zone_handle`]) kept in step
//! with the SendingDomains ([`publishing`]), on UDP and TCP sockets
//! ([`transport`]). Every replica serves.

pub mod answer;
pub mod metrics;
pub mod publishing;
pub mod transport;
pub mod zone_handle;

pub use answer::answer_raw;
pub use metrics::DnsMetrics;
pub use publishing::keep_publishing;
pub use transport::{DnsServer, MAX_UDP_PAYLOAD};
pub use zone_handle::ZoneHandle;
