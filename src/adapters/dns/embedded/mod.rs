//! The embedded authoritative server: ordinary queries answered from responses
//! prepared at publish time ([`fast`]), everything else by the full handler
//! ([`answer`]), from an in-memory copy of the zone ([`zone_handle`]) kept in
//! step with the SendingDomains ([`publishing`]). The request path
//! ([`request`]) adds DNS cookies ([`cookie`]) and response rate limiting
//! ([`rrl`]); the sockets are [`transport`] (UDP) and [`tcp`] (with connection
//! limits). As a hidden primary it serves AXFR and IXFR to TSIG-authenticated
//! secondaries ([`xfr`]) and NOTIFYs them of every change ([`notify`]). Every
//! replica serves.

pub mod answer;
pub mod cookie;
pub mod fast;
pub mod harness;
pub mod metrics;
pub mod notify;
pub mod publishing;
pub mod request;
pub mod rrl;
pub mod tcp;
pub mod transport;
pub mod xfr;
pub mod zone_handle;

pub use answer::answer_raw;
pub use cookie::CookieSecrets;
pub use metrics::DnsMetrics;
pub use publishing::keep_publishing;
pub use request::{ServeOptions, Worker, endpoint};
pub use rrl::RrlConfig;
pub use tcp::TcpLimits;
pub use transport::{DnsServer, MAX_UDP_PAYLOAD};
pub use xfr::{TransferConfig, TransferKeys};
pub use zone_handle::ZoneHandle;
