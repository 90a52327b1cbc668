//! Whether the zone serves the domain's records, and the check of the customer's
//! CNAMEs when one is due.

use super::Context;
use super::keys::Keys;
use crate::core::api::{DnsRecord, SendingDomain, SendingDomainStatus, VERIFY_ANNOTATION};
use crate::core::ports::{CheckRequest, Published};
use crate::core::status::conditions::is_true;
use crate::core::status::schedule::{FIRST_CHECK_WAIT, check_due, check_now};
use crate::core::status::{answered_verify_request, shown_published};
use crate::core::verify::Outcome;
use crate::core::vocab::ConditionType;
use jiff::Timestamp;
use kube::ResourceExt;

/// What the zone serves of the domain.
pub(super) struct Publication {
    /// The zone serves every key in status.
    pub full: bool,
    /// This reconcile is the first to find the records published.
    pub first: bool,
    /// What `RecordsPublished` reports (see [`shown_published`]).
    pub shown: Published,
}

pub(super) fn observe(
    ctx: &Context,
    token: &str,
    keys: &Keys,
    previous: &SendingDomainStatus,
) -> Publication {
    let public = keys.public();
    let all: Vec<&str> = public.0.iter().map(String::as_str).collect();
    let full = ctx.publisher.published(token, &all);
    let shown = shown_published(&full, previous, || {
        ctx.publisher
            .published(token, &[public[keys.plan.active].as_str()])
    });
    let full = full == Published::Yes;
    Publication {
        full,
        first: full && !is_true(&previous.conditions, ConditionType::RecordsPublished),
        shown,
    }
}

/// A check's result, and the verify request it answers.
pub(super) struct Check {
    pub outcome: Option<Outcome>,
    pub answered_request: Option<String>,
}

/// Checks the customer's records now if a check is due (asked for, the records
/// changed, or by the schedule) and the zone serves every key.
pub(super) async fn check_if_due(
    sd: &SendingDomain,
    ctx: &Context,
    previous: &SendingDomainStatus,
    now: Timestamp,
    records: &[DnsRecord],
    keys: &Keys,
    publication: &Publication,
) -> Check {
    let verify_request = sd.annotations().get(VERIFY_ANNOTATION).cloned();
    let requested = verify_request.is_some() && verify_request != previous.observed_verify_request;
    let spec_changed = previous.observed_generation != sd.metadata.generation
        || previous.dns_records.len() != records.len()
        || previous
            .dns_records
            .iter()
            .zip(records)
            .any(|(a, b)| a.value != b.value || a.fqdn != b.fqdn);
    let created = sd.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let due = requested || spec_changed || check_due(previous, created, now, ctx.config.intervals);
    let outcome = if check_now(due, publication.full) {
        let req = CheckRequest {
            domain: sd.spec.domain.clone(),
            records: records.to_vec(),
            dkim_keys: keys.public(),
        };
        let namespace = sd.namespace().unwrap_or_default();
        let check = ctx.verify(&namespace, req);
        if publication.first {
            tokio::time::timeout(FIRST_CHECK_WAIT, check).await.ok()
        } else {
            Some(check.await)
        }
    } else {
        None
    };
    Check {
        answered_request: answered_verify_request(verify_request, requested, outcome.is_some()),
        outcome,
    }
}
