//! One reconcile of one SendingDomain, as named phases: a deletion finishes; the
//! name and the claim are judged (a blocked domain stops there); the keys are
//! stored; the zone is asked whether it serves them and the customer's records
//! are checked when due; the status is written. Every decision is made by the
//! pure core; these phases gather and write.

mod claim;
mod deletion;
mod keys;
mod publish;
mod status;

use super::{Context, Error};
use crate::adapters::kube::writes;
use crate::core::api::{SendingDomain, SendingDomainStatus};
use crate::core::naming::{self, SendingName};
use crate::core::status::schedule::{self, until};
use crate::core::status::{self as core_status, Inputs};
use crate::core::trust::Trust;
use crate::core::vocab::Block;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use std::sync::Arc;
use std::time::Duration;

/// Poll interval while waiting for the zone to serve freshly written records.
pub const PUBLISH_POLL: Duration = Duration::from_secs(1);
/// The shortest wait before the next reconcile of a domain.
const MIN_REQUEUE: Duration = Duration::from_millis(200);
/// How soon to look again when the cache does not show this controller's last
/// status write yet (its watch event, which arrives first as a rule, triggers a
/// reconcile by itself).
const CACHE_POLL: Duration = Duration::from_millis(500);

/// The status of an object that has none yet.
static NO_STATUS: std::sync::LazyLock<SendingDomainStatus> =
    std::sync::LazyLock::new(SendingDomainStatus::default);

pub async fn reconcile(sd: Arc<SendingDomain>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let now = Timestamp::now();
    // Borrowed from the object rather than copied: during a burst thousands of
    // reconciles wait at once (for key generation or a check slot).
    let written: &SendingDomainStatus = sd.status.as_ref().unwrap_or(&NO_STATUS);
    if cache_behind(&sd, &ctx) {
        return Ok(Action::requeue(CACHE_POLL));
    }
    if sd.metadata.deletion_timestamp.is_some() {
        return deletion::finish(&sd, &ctx).await;
    }
    let Admitted {
        trust,
        token,
        parsed,
    } = match admit(&sd, &ctx, written, now).await? {
        Ok(admitted) => admitted,
        Err(blocked) => return Ok(blocked),
    };
    let id = naming::domain_id(&token);
    // What the object carries, and what of it this reconcile may build on: only a
    // status computed for this very namespace, domain and identity key (its id),
    // under the operator's seal. Every status write is fenced to the object's uid,
    // so a trusted status was also computed for this object; anything else (a
    // status copied by hand, restored onto another object, or written by someone
    // else) is ignored, and the domain is keyed, published and checked as if new.
    let previous = match trust.vouched(&sd) {
        Some(_) => core_status::trusted(written, &id),
        None => &NO_STATUS,
    };
    let records =
        naming::customer_records(&parsed, &token, &ctx.config.zone, sd.tracking_subdomain());
    if let Some(message) = claim::lost(&sd, &ctx, &trust, &records) {
        let contest = claim::Contest {
            written,
            previous,
            now,
            id,
            records,
            message,
        };
        return claim::contest(&sd, &ctx, &trust, contest).await;
    }
    if ctx.publisher.external() && !writes::has_finalizer(&sd) {
        writes::finalizer(&ctx.client, &sd, true).await?;
    }
    let keys = match keys::store(&sd, &ctx, previous, now).await? {
        keys::Stored::Keys(k) => *k,
        keys::Stored::Conflict(message) => {
            return status::secret_conflict(&sd, &ctx, (written, previous), now, &message).await;
        }
    };
    let publication = publish::observe(&ctx, &token, &keys, previous);
    let check =
        publish::check_if_due(&sd, &ctx, previous, now, &records, &keys, &publication).await;
    let checked = check.outcome.is_some();
    let new_status = status::sealed(
        &trust,
        &sd,
        core_status::compute(Inputs {
            now,
            generation: sd.metadata.generation,
            previous,
            id,
            records,
            dkim: keys.status.clone(),
            published: publication.shown.clone(),
            verify_request: check.answered_request.clone(),
            check: check.outcome,
            verified_grace: ctx.config.verified_grace,
            tracking_enabled: sd.spec.tracking.is_some(),
        }),
    );
    // The keys' Events go with the status that records them: a status already
    // as computed was written, and told, by an earlier reconcile.
    if status::write(&sd, &ctx, written, previous, &new_status).await? {
        keys.tell(&sd, &ctx).await;
    }
    Ok(Action::requeue(next_wake(
        &sd,
        &ctx,
        &new_status,
        &publication,
        checked,
        &keys,
        now,
    )))
}

/// Whether the cache still shows `sd` as it was before this controller's last
/// status write of it (see [`crate::controller::own_writes`]).
fn cache_behind(sd: &SendingDomain, ctx: &Context) -> bool {
    let (Some(uid), Some(version)) = (&sd.metadata.uid, &sd.metadata.resource_version) else {
        return false;
    };
    let behind = ctx.own_writes.behind(uid, version);
    if behind {
        tracing::debug!("the cache does not show the last status write yet");
    }
    behind
}

/// A domain reconcile may act on: its name parsed, the identity key not in
/// doubt, and the claim allowed by the policy.
struct Admitted {
    trust: Arc<Trust>,
    token: String,
    parsed: SendingName,
}

/// Whether reconcile may act on the domain; if not, the status saying why is
/// written and the wait until the next look returned.
async fn admit(
    sd: &SendingDomain,
    ctx: &Context,
    written: &SendingDomainStatus,
    now: Timestamp,
) -> Result<Result<Admitted, Action>, Error> {
    // The domain name: syntax is admission's job; the public suffix list is ours.
    let parsed = match SendingName::parse(&sd.spec.domain) {
        Ok(p) => p,
        Err(e) => {
            return status::block(sd, ctx, written, now, e.block(), &e.to_string())
                .await
                .map(Err);
        }
    };
    // While the identity key is in doubt nothing is changed: every id stays.
    let trust = ctx.trust();
    let token = trust.as_ref().ok().and_then(|t| t.token(sd));
    let (Ok(trust), Some(token)) = (trust, token) else {
        let message = ctx
            .trust()
            .err()
            .unwrap_or_else(|| "no identity key is loaded".into());
        return status::hold(sd, ctx, written, now, Block::IdentityMismatch, &message)
            .await
            .map(Err);
    };
    if !trust.allows(sd) {
        let ns = sd.namespace().unwrap_or_default();
        let message = trust.policy().refusal(&ns, &parsed.domain);
        return status::block(sd, ctx, written, now, Block::NotAllowed, &message)
            .await
            .map(Err);
    }
    Ok(Ok(Admitted {
        trust,
        token,
        parsed,
    }))
}

/// When to look again: at once after a first publication written without its
/// check (the check follows), every second while the zone catches up, else at
/// the next scheduled check or the next change the key plan makes by itself,
/// whichever is first.
fn next_wake(
    sd: &SendingDomain,
    ctx: &Context,
    st: &SendingDomainStatus,
    publication: &publish::Publication,
    checked: bool,
    keys: &keys::Keys,
    now: Timestamp,
) -> Duration {
    let mut next = if publication.first && !checked {
        Duration::ZERO
    } else if publication.full {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).unwrap_or(());
        let jitter = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
        let created = sd.metadata.creation_timestamp.as_ref().map(|t| t.0);
        schedule::next_check_in(st, created, now, ctx.config.intervals, jitter)
    } else {
        PUBLISH_POLL
    };
    if let Some(t) = keys.plan.next_event() {
        next = next.min(until(now, t));
    }
    next.max(MIN_REQUEUE)
}
