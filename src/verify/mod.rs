//! Verification: resolve the CNAMEs a customer published, follow each chain into the
//! operator's zone, and say per record what was found and, for the domain, the first
//! thing that is wrong.
//!
//! [`verify`] is what the controller and `anypost-operator check` both call. It asks
//! a recursive resolver one question at a time (see [`resolve`]) and leaves every
//! judgement to the pure `chain` rules and [`messages`] texts.
//!
//! Decisions a user can observe:
//! - A provider that *flattens* CNAMEs (serves the target's records at the
//!   customer's name, without a CNAME) does not verify, even when the copies are
//!   exact: copies do not follow key rotation or MX changes, and carry no token. The
//!   `*_cname_missing` message says the name answers without a CNAME.
//! - A chain through names of the customer's own (`anypost.example.com →
//!   alias.example.net → <t>.Z`) verifies: what counts is reaching the target.
//! - Resolver failures are not evidence ([`Verdict::Unknown`]), except SERVFAIL for
//!   names inside the operator's zone once the customer's CNAME is confirmed right:
//!   the zone not answering is `chain_broken`.
//! - Tracking is judged alike but separately, with its own codes
//!   (`tracking_cname_missing`, `tracking_cname_mismatch`, or `chain_broken`).

mod chain;
mod check_cmd;
pub mod messages;
pub mod resolve;

pub use check_cmd::check_main;
pub use resolve::{QueryFailure, Resolver, ResolverError};

use crate::api::{DnsRecord, Failure, Purpose};
use chain::{End, Evidence, Walk, norm};
use futures::future::join_all;
use hickory_resolver::proto::rr::{RData, RecordType};
use messages::Found;
use resolve::Answer;
use std::collections::BTreeMap;

/// What the operator's zone holds for a domain, to compare against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expected {
    /// The operator's zone (`--zone`).
    pub zone: String,
    /// The MX host (`--mx-host`). `None` (only `check` without it): any MX counts.
    pub mx_host: Option<String>,
    /// The SPF include (`--spf-include`). `None`: any `v=spf1` record counts.
    pub spf_include: Option<String>,
    /// The tracking host (`--tracking-host`). `None`: any CNAME at the tracking
    /// target counts.
    pub tracking_host: Option<String>,
    /// Per selector (`anypost1`, `anypost2`), the base64 public key the DKIM record
    /// must carry. A selector without an entry gets no key comparison (any key
    /// counts), which `observed` says.
    pub dkim_keys: BTreeMap<String, String>,
}

/// The verdict on a set of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checked verifies.
    Verified,
    /// A record definitely fails: the first one in `dnsRecords` order. `since` is
    /// left `None` for the caller to keep or set.
    Failed(Failure),
    /// No record fails for sure, but some could not be resolved (timeout,
    /// SERVFAIL, REFUSED at the customer's side or from the resolver itself): no
    /// evidence either way. The caller sets `Verified=Unknown` and keeps its state.
    Unknown(String),
}

impl Verdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified)
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Verdict::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// The resolver problem, when the verdict is [`Verdict::Unknown`].
    pub fn transient(&self) -> Option<&str> {
        match self {
            Verdict::Unknown(why) => Some(why),
            _ => None,
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The records given, in the same order, with `state` and `observed` set.
    pub records: Vec<DnsRecord>,
    /// The domain's verdict, from the verification and DKIM records only.
    pub verdict: Verdict,
    /// The tracking record's verdict, when one was given. Never part of `verdict`.
    pub tracking: Option<Verdict>,
}

/// Checks `records` (a domain's `dnsRecords`) through `resolver` against what the
/// operator's zone should hold. All records are resolved concurrently; safe to call
/// at any rate (no state, no cache).
#[tracing::instrument(level = "debug", skip_all, fields(record = %records.first().map_or("", |r| r.fqdn.as_str())))]
pub async fn verify(resolver: &Resolver, records: &[DnsRecord], expected: &Expected) -> Outcome {
    let judged = join_all(records.iter().map(|r| async move {
        let ev = gather(resolver, r).await;
        let j = chain::judge(r, expected, &ev);
        tracing::debug!(record = %r.fqdn, state = ?j.state, observed = %j.observed, "checked");
        j
    }))
    .await;

    let mut out = Vec::with_capacity(records.len());
    let mut required = Verdicts::default();
    let mut tracking: Option<Verdicts> = None;
    for (record, j) in records.iter().zip(judged) {
        let v = if record.purpose == Purpose::Tracking {
            tracking.get_or_insert_with(Verdicts::default)
        } else {
            &mut required
        };
        v.add(record, &j);
        let mut record = record.clone();
        record.state = Some(j.state);
        record.observed = Some(j.observed);
        out.push(record);
    }
    Outcome {
        records: out,
        verdict: required.verdict(),
        tracking: tracking.map(Verdicts::verdict),
    }
}

/// Folds record judgements into a verdict: the first definite failure wins; else
/// the first resolver problem; else verified.
#[derive(Default)]
struct Verdicts {
    failure: Option<Failure>,
    unknown: Option<String>,
    checked: usize,
}

impl Verdicts {
    fn add(&mut self, record: &DnsRecord, j: &chain::Judgement) {
        self.checked += 1;
        if let (None, Some(p)) = (&self.failure, &j.problem) {
            self.failure = Some(Failure {
                code: messages::code(record.purpose, p).to_string(),
                message: messages::message(record, p),
                since: None,
            });
        }
        if let (None, Some(why)) = (&self.unknown, &j.unknown) {
            self.unknown = Some(messages::unknown_message(record, why));
        }
    }

    fn verdict(self) -> Verdict {
        match (self.failure, self.unknown) {
            (Some(f), _) => Verdict::Failed(f),
            (None, Some(u)) => Verdict::Unknown(u),
            (None, None) if self.checked == 0 => Verdict::Unknown("no records to check".into()),
            (None, None) => Verdict::Verified,
        }
    }
}

/// Resolves what [`chain::judge`] needs for one record.
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
        .any(|n| *n == norm(&record.value));
    let last = ev.walk.names.last().cloned().unwrap_or_default();
    match (&ev.walk.end, ev.walk.names.len(), record.purpose) {
        // No CNAME at the customer's name: what is there instead, and is the CNAME
        // at the doubled name?
        (End::Exists | End::NxDomain, 1, purpose) => {
            let doubled = chain::doubled_name(record);
            let mut types = vec![];
            if ev.walk.end == End::Exists {
                if purpose == Purpose::Verification {
                    types.push(RecordType::MX);
                }
                types.extend([RecordType::TXT, RecordType::A, RecordType::AAAA]);
            }
            let (instead, doubled_answer) = futures::join!(
                join_all(types.iter().map(|t| resolver.query(&last, *t))),
                resolver.query(&doubled, RecordType::CNAME),
            );
            ev.instead = instead
                .iter()
                .flat_map(|a| match a {
                    Answer::Records(r) => r.iter().filter_map(chain::found).collect(),
                    _ => vec![],
                })
                .collect::<Vec<Found>>();
            if let Answer::Records(r) = doubled_answer {
                ev.doubled = r.iter().find_map(|d| match d {
                    RData::CNAME(c) => Some((doubled.clone(), norm(&c.0.to_ascii()))),
                    _ => None,
                });
            }
        }
        (End::Exists, _, Purpose::Verification) if reached => {
            let (mx, txt) = futures::join!(
                resolver.query(&last, RecordType::MX),
                resolver.query(&last, RecordType::TXT)
            );
            ev.mx = Some(mx);
            ev.txt = Some(txt);
        }
        (End::Exists, _, Purpose::Dkim) if reached => {
            ev.txt = Some(resolver.query(&last, RecordType::TXT).await);
        }
        _ => {}
    }
    ev
}

/// Follows CNAMEs from `fqdn`, one query per hop, so every hop is seen (a
/// resolver asked for the final type would hide them).
async fn walk(resolver: &Resolver, fqdn: &str) -> Walk {
    let mut names = vec![norm(fqdn)];
    loop {
        let current = names.last().cloned().unwrap_or_default();
        let end = match resolver.query(&current, RecordType::CNAME).await {
            Answer::Records(r) => {
                let next = r.iter().find_map(|d| match d {
                    RData::CNAME(c) => Some(norm(&c.0.to_ascii())),
                    _ => None,
                });
                match next {
                    None => End::Exists,
                    Some(next) if names.contains(&next) => {
                        names.push(next);
                        End::Loop
                    }
                    Some(_) if names.len() > chain::MAX_HOPS => End::TooLong,
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
