//! Several claims on one domain: proof of control beats age (see the core's
//! claims). A claim that does not hold its domain still lists its records, so its
//! owner can publish the verification CNAME and take the domain over; its
//! control is checked on the pending schedule.

use super::{Context, Error, status};
use crate::core::api::{DnsRecord, Purpose, SendingDomain, SendingDomainStatus, VERIFY_ANNOTATION};
use crate::core::claims;
use crate::core::status::schedule::{check_due, next_check_in};
use crate::core::status::{Contest as Inputs, contested};
use crate::core::trust::{Strength, Trust};
use crate::core::vocab::CONFLICT_RECHECK;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

/// Why another claim holds this domain and how this one can take it, if so.
/// Only the claims on this domain are looked at (the cache indexes them by
/// domain), and they are dropped before anything is awaited: thousands of
/// reconciles waiting for key generation would otherwise each keep them alive.
pub(super) fn lost(
    sd: &SendingDomain,
    ctx: &Context,
    trust: &Trust,
    records: &[DnsRecord],
) -> Option<String> {
    let rivals = ctx.domains.claims_on(&sd.spec.domain);
    if claims::is_winner(&rivals, sd, trust) {
        return None;
    }
    let holder = claims::claim_winner(&rivals, &sd.spec.domain, trust)?;
    let whose = if ctx.config.reveal_conflicts {
        format!(
            "SendingDomain {}/{}",
            holder.namespace().unwrap_or_default(),
            holder.name_any()
        )
    } else {
        "another SendingDomain".to_string()
    };
    let domain = &sd.spec.domain;
    let cname = records
        .iter()
        .find(|r| r.purpose == Purpose::Verification)
        .map(|r| format!("{} CNAME {}", r.fqdn, r.value))
        .unwrap_or_default();
    Some(match trust.strength(holder) {
        Strength::Verified => format!(
            "{domain} is held by {whose}, whose CNAMEs verify; nothing is published for this one. A verified claim keeps the domain until its records stop verifying and its grace period ends; if the domain is yours, publish this claim's verification record ({cname}) and it takes over then."
        ),
        _ => format!(
            "{domain} is claimed by {whose}; nothing is published for this one. If the domain is yours, publish this claim's verification record ({cname}): once it resolves, this claim takes the domain over. It also takes over if the other claim is deleted."
        ),
    })
}

/// What a contested claim's status is made from.
pub(super) struct Contest<'a> {
    pub written: &'a SendingDomainStatus,
    pub previous: &'a SendingDomainStatus,
    pub now: Timestamp,
    pub id: String,
    pub records: Vec<DnsRecord>,
    pub message: String,
}

/// Checks the contested claim's control when due, writes its status, and waits
/// for the next check (or a change of a rival claim, which wakes it).
pub(super) async fn contest(
    sd: &SendingDomain,
    ctx: &Context,
    trust: &Trust,
    c: Contest<'_>,
) -> Result<Action, Error> {
    let verify_request = sd.annotations().get(VERIFY_ANNOTATION).cloned();
    let requested =
        verify_request.is_some() && verify_request != c.previous.observed_verify_request;
    let created = sd.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let intervals = ctx.config.intervals;
    let due = requested || check_due(c.previous, created, c.now, intervals);
    let record = c
        .records
        .iter()
        .find(|r| r.purpose == Purpose::Verification);
    let control = match record {
        Some(r) if due => Some(
            ctx.control(&sd.namespace().unwrap_or_default(), r.clone())
                .await,
        ),
        _ => None,
    };
    let st = contested(Inputs {
        now: c.now,
        generation: sd.metadata.generation,
        previous: c.previous,
        id: c.id,
        records: c.records,
        verify_request: verify_request.filter(|_| requested && control.is_some()),
        control,
        message: c.message,
    });
    let st = status::sealed(trust, sd, st);
    status::write(sd, ctx, c.written, c.previous, &st).await?;
    let next = next_check_in(&st, created, c.now, intervals, 0.5);
    Ok(Action::requeue(next.min(CONFLICT_RECHECK)))
}
