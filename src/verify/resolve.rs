//! The resolver the checks use, and the one question they ask of it: what does
//! this name hold of this type, exactly as the resolver answered?
//!
//! hickory's high-level lookups follow CNAMEs and cache answers; verification must
//! see every hop and fresh data, so queries are for one type at one name, with the
//! cache off and every answer record filtered to the queried owner name.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// No `--resolver` was given and the system configuration could not be read.
    #[error("reading the system's resolver configuration (/etc/resolv.conf): {0}")]
    SystemConfig(#[source] NetError),
    /// The resolver could not be constructed from its configuration.
    #[error("building the DNS resolver: {0}")]
    Build(#[source] NetError),
}

/// A recursive resolver used for verification: the given servers (or the system's),
/// a per-query timeout, no cache (a re-check right after a customer fixes a record
/// must see the fix, not our own copy of the old answer), and no hosts file.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    /// Upper bound for one query, retries included.
    deadline: Duration,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Attempts per query: one retry absorbs a lost UDP packet without making a dead
/// resolver cost much more than its timeout.
const ATTEMPTS: usize = 2;

impl Resolver {
    /// A resolver asking `servers` (IP:PORT, tried in turn), or the system's resolvers
    /// when `servers` is empty. `timeout` bounds one attempt of one query.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Self, ResolverError> {
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(ResolverError::SystemConfig)?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = ATTEMPTS;
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        opts.ndots = 0;
        opts.try_tcp_on_error = true;
        let inner = builder.build().map_err(ResolverError::Build)?;
        Ok(Resolver {
            inner,
            deadline: timeout * (ATTEMPTS as u32 + 1),
        })
    }

    /// The records of type `rtype` owned by `name` (an absolute name, with or without
    /// the trailing dot), classified so that "nothing there" and "no answer" are
    /// never confused.
    pub(crate) async fn query(&self, name: &str, rtype: RecordType) -> Answer {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let Ok(qname) = Name::from_ascii(&fqdn) else {
            // A name that can't be put on the wire can't exist in DNS either.
            return Answer::NxDomain;
        };
        let looked_up =
            tokio::time::timeout(self.deadline, self.inner.lookup(qname.clone(), rtype));
        match looked_up.await {
            Err(_) => Answer::Failed(QueryFailure::Timeout),
            Ok(Ok(lookup)) => {
                let found: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype && r.name == qname)
                    .map(|r| r.data.clone())
                    .collect();
                if found.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Records(found)
                }
            }
            Ok(Err(e)) => classify_error(e),
        }
    }
}

fn classify_error(e: NetError) -> Answer {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::NoError => Answer::NoData,
            code => Answer::Failed(QueryFailure::Rcode(code.to_string())),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            Answer::Failed(QueryFailure::ServFail)
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            Answer::Failed(QueryFailure::Refused)
        }
        NetError::Dns(DnsError::ResponseCode(code)) => {
            Answer::Failed(QueryFailure::Rcode(code.to_string()))
        }
        NetError::Timeout => Answer::Failed(QueryFailure::Timeout),
        other => Answer::Failed(QueryFailure::Other(other.to_string())),
    }
}

/// What one query at one name returned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// Records of the queried type owned by the queried name.
    Records(Vec<RData>),
    /// The name exists but holds nothing of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// No usable answer: not evidence of anything.
    Failed(QueryFailure),
}

/// Why the resolver gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryFailure {
    /// No answer within the timeout.
    Timeout,
    /// The resolver answered SERVFAIL: it could not get an answer upstream.
    ServFail,
    /// The resolver refused the query.
    Refused,
    /// Another error response code.
    Rcode(String),
    /// A transport or protocol error.
    Other(String),
}

impl QueryFailure {
    /// Whether the failure is the resolver's own (it did not answer, refused us, or
    /// answered oddly), as opposed to SERVFAIL: the resolver reporting that the
    /// servers of the name asked about did not answer it properly.
    pub(crate) fn is_resolver_side(&self) -> bool {
        !matches!(self, QueryFailure::ServFail)
    }
}

impl fmt::Display for QueryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryFailure::Timeout => f.write_str("timed out"),
            QueryFailure::ServFail => f.write_str("SERVFAIL"),
            QueryFailure::Refused => f.write_str("REFUSED"),
            QueryFailure::Rcode(c) => f.write_str(c),
            QueryFailure::Other(e) => f.write_str(e),
        }
    }
}
