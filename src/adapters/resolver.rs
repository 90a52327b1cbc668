//! The resolver the checks go through, and what they ask of it: the CNAME chain of
//! each customer record, hop by hop, and the records at its end, turned into the
//! core's evidence for [`judge`] to judge.
//!
//! hickory's high-level lookups follow CNAMEs and cache answers; verification must
//! see every hop and fresh data, so queries are for one type at one name, with the
//! cache off and every answer record filtered to the queried owner name.

use crate::adapters::dns::wire;
use crate::core::api::{DnsRecord, Purpose};
use crate::core::naming::{SendingName, normalize};
use crate::core::ports::{CheckRequest, Verifier};
use crate::core::verify::chain::doubled_name;
use crate::core::verify::dmarc::{self, Dmarc};
use crate::core::verify::evidence::MAX_HOPS;
use crate::core::verify::{
    Answer, Control, End, Evidence, Expected, Found, Outcome, QueryFailure, Walk, control, judge,
};
use crate::core::zone::{RData, RecordType};
use futures::future::{BoxFuture, join_all};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::Name;
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
    pub async fn query(&self, name: &str, rtype: RecordType) -> Answer {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let Ok(qname) = Name::from_ascii(&fqdn) else {
            // A name that can't be put on the wire can't exist in DNS either.
            return Answer::NxDomain;
        };
        let qtype = wire::hickory_type(rtype);
        let looked_up =
            tokio::time::timeout(self.deadline, self.inner.lookup(qname.clone(), qtype));
        match looked_up.await {
            Err(_) => Answer::Failed(QueryFailure::Timeout),
            Ok(Ok(lookup)) => {
                let found: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == qtype && r.name == qname)
                    .filter_map(|r| wire::from_hickory(&r.data))
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

/// Checks `records` (the `dnsRecords` of the domain `name`) through `resolver`
/// against what the operator's zone should hold, and looks up the domain's DMARC
/// policy. All records are resolved concurrently; safe to call at any rate (no
/// state, no cache).
#[tracing::instrument(level = "debug", skip_all, fields(domain = %name.domain))]
pub async fn verify(
    resolver: &Resolver,
    name: &SendingName,
    records: &[DnsRecord],
    expected: &Expected,
) -> Outcome {
    let judged = join_all(records.iter().map(|r| async move {
        let ev = gather(resolver, r).await;
        let j = judge(r, expected, &ev);
        tracing::debug!(record = %r.fqdn, state = ?j.state, observed = %j.observed, "checked");
        j
    }));
    let (judged, dmarc) = futures::join!(judged, lookup_dmarc(resolver, name));
    let mut outcome = Outcome::of(records, judged);
    outcome.dmarc = Some(dmarc);
    outcome
}

/// The domain's DMARC policy: at `_dmarc.<domain>`, else at the registered
/// domain's.
async fn lookup_dmarc(resolver: &Resolver, name: &SendingName) -> Dmarc {
    let at_domain = resolver
        .query(&dmarc::name_of(&name.domain), RecordType::Txt)
        .await;
    let at_apex = if dmarc::needs_apex(&name.domain, &name.apex, &at_domain) {
        Some(
            resolver
                .query(&dmarc::name_of(&name.apex), RecordType::Txt)
                .await,
        )
    } else {
        None
    };
    dmarc::judge(&name.domain, &name.apex, &at_domain, at_apex.as_ref())
}

/// The controller's verifier: checks through the configured resolvers against
/// the operator's zone.
pub struct ResolverVerifier {
    pub resolver: Resolver,
    /// The zone and hosts to expect; the DKIM keys come with each request.
    pub expected: Expected,
}

impl Verifier for ResolverVerifier {
    fn check(&self, req: CheckRequest) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let mut expected = self.expected.clone();
            expected.dkim_keys = req.dkim_keys.map(Some);
            match SendingName::parse(&req.domain) {
                Ok(name) => verify(&self.resolver, &name, &req.records, &expected).await,
                // Reconcile blocks a domain whose name does not parse before it
                // asks for a check; judge the records alone if it ever does.
                Err(_) => Outcome::of(&req.records, vec![]),
            }
        })
    }

    fn control(&self, record: DnsRecord) -> BoxFuture<'_, Control> {
        Box::pin(async move {
            let walk = walk(&self.resolver, &record.fqdn).await;
            let c = control::judge(&record, &walk);
            tracing::debug!(record = %record.fqdn, state = ?c.state, observed = %c.observed, "checked control");
            c
        })
    }
}

/// Resolves what [`judge`] needs for one record.
async fn gather(resolver: &Resolver, record: &DnsRecord) -> Evidence {
    let walk = walk(resolver, &record.fqdn).await;
    let mut ev = Evidence {
        walk,
        ..Default::default()
    };
    let reached = ev
        .walk
        .names
        .iter()
        .skip(1)
        .any(|n| *n == normalize(&record.value));
    let last = ev.walk.names.last().cloned().unwrap_or_default();
    match (&ev.walk.end, ev.walk.names.len(), record.purpose) {
        // No CNAME at the customer's name: what is there instead, and is the CNAME
        // at the doubled name?
        (End::Exists | End::NxDomain, 1, purpose) => {
            let doubled = doubled_name(record);
            let mut types = vec![];
            if ev.walk.end == End::Exists {
                if purpose == Purpose::Verification {
                    types.push(RecordType::Mx);
                }
                types.extend([RecordType::Txt, RecordType::A, RecordType::Aaaa]);
            }
            let (instead, doubled_answer) = futures::join!(
                join_all(types.iter().map(|t| resolver.query(&last, *t))),
                resolver.query(&doubled, RecordType::Cname),
            );
            ev.instead = instead
                .iter()
                .flat_map(|a| match a {
                    Answer::Records(r) => r.iter().filter_map(Found::of).collect(),
                    _ => vec![],
                })
                .collect::<Vec<Found>>();
            if let Answer::Records(r) = doubled_answer {
                ev.doubled = r.iter().find_map(|d| match d {
                    RData::Cname(c) => Some((doubled.clone(), normalize(c))),
                    _ => None,
                });
            }
        }
        (End::Exists, _, Purpose::Verification) if reached => {
            let (mx, txt) = futures::join!(
                resolver.query(&last, RecordType::Mx),
                resolver.query(&last, RecordType::Txt)
            );
            ev.mx = Some(mx);
            ev.txt = Some(txt);
        }
        (End::Exists, _, Purpose::Dkim) if reached => {
            ev.txt = Some(resolver.query(&last, RecordType::Txt).await);
        }
        _ => {}
    }
    ev
}

/// Follows CNAMEs from `fqdn`, one query per hop, so every hop is seen (a
/// resolver asked for the final type would hide them).
async fn walk(resolver: &Resolver, fqdn: &str) -> Walk {
    let mut names = vec![normalize(fqdn)];
    loop {
        let current = names.last().cloned().unwrap_or_default();
        let end = match resolver.query(&current, RecordType::Cname).await {
            Answer::Records(r) => {
                let next = r.iter().find_map(|d| match d {
                    RData::Cname(c) => Some(normalize(c)),
                    _ => None,
                });
                match next {
                    None => End::Exists,
                    Some(next) if names.contains(&next) => {
                        names.push(next);
                        End::Loop
                    }
                    Some(_) if names.len() > MAX_HOPS => End::TooLong,
                    Some(next) => {
                        names.push(next);
                        continue;
                    }
                }
            }
            Answer::NoData => End::Exists,
            Answer::NxDomain => End::NxDomain,
            Answer::Failed(f) => End::Failed(f),
        };
        return Walk { names, end };
    }
}
