//! Writing the status, and the Events its changes are worth.

use super::{Context, Error};
use crate::adapters::kube::writes;
use crate::core::api::{DomainState, SendingDomain, SendingDomainStatus};
use crate::core::status::schedule::until;
use crate::core::status::{blocked, events, held, secret_conflict_since};
use crate::core::trust::Trust;
use crate::core::vocab::{Block, CONFLICT_RECHECK};
use jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;

/// `status` with the operator's seal, so that the zone believes it.
pub(super) fn sealed(
    trust: &Trust,
    sd: &SendingDomain,
    mut status: SendingDomainStatus,
) -> SendingDomainStatus {
    status.seal = trust.seal(sd, &status);
    status
}

/// Writes `new` if it differs from what the object carries (`written`), then an
/// Event for each meaningful transition from `previous` (the status this reconcile
/// built on). The write is fenced to the object's uid, and remembered until the
/// cache shows it ([`crate::controller::own_writes`]). Returns whether it wrote.
pub(super) async fn write(
    sd: &SendingDomain,
    ctx: &Context,
    written: &SendingDomainStatus,
    previous: &SendingDomainStatus,
    new: &SendingDomainStatus,
) -> Result<bool, Error> {
    if written == new {
        return Ok(false);
    }
    let to = writes::status(&ctx.client, sd, new).await?;
    ctx.metrics.status_writes.inc();
    if let (Some(uid), Some(from), Some(to)) = (
        sd.metadata.uid.as_deref(),
        sd.metadata.resource_version.as_deref(),
        to.as_deref(),
    ) {
        ctx.own_writes.wrote(uid, from, to);
    }
    for e in events::transitions(previous, new) {
        ctx.event(sd, &e).await;
    }
    Ok(true)
}

/// When a blocked domain looks again: at a change of the SendingDomain, or a
/// while when another object decides.
fn recheck(block: Block) -> Action {
    match block.recheck() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

/// Writes the status of a domain nothing can be published for, and waits.
pub(super) async fn block(
    sd: &SendingDomain,
    ctx: &Context,
    written: &SendingDomainStatus,
    now: Timestamp,
    block: Block,
    message: &str,
) -> Result<Action, Error> {
    let st = blocked(written, sd.metadata.generation, now, block, message);
    write_and_wait(sd, ctx, written, &st, block).await
}

/// Writes the status of a domain the operator does not act on for now, keeping
/// everything it carries (its id, records and keys stay published), and waits.
pub(super) async fn hold(
    sd: &SendingDomain,
    ctx: &Context,
    written: &SendingDomainStatus,
    now: Timestamp,
    block: Block,
    message: &str,
) -> Result<Action, Error> {
    let st = held(written, sd.metadata.generation, now, block, message);
    write_and_wait(sd, ctx, written, &st, block).await
}

/// Writes `st` over `written` and waits as `block` asks.
async fn write_and_wait(
    sd: &SendingDomain,
    ctx: &Context,
    written: &SendingDomainStatus,
    st: &SendingDomainStatus,
    block: Block,
) -> Result<Action, Error> {
    write(sd, ctx, written, written, st).await?;
    Ok(recheck(block))
}

/// A Secret the operator may not manage holds the DKIM Secret's name. A verified
/// domain keeps its last published keys and records for the grace period (its
/// mail keeps verifying while someone fixes the Secret); any other is blocked.
pub(super) async fn secret_conflict(
    sd: &SendingDomain,
    ctx: &Context,
    (written, previous): (&SendingDomainStatus, &SendingDomainStatus),
    now: Timestamp,
    message: &str,
) -> Result<Action, Error> {
    if previous.state == Some(DomainState::Verified) {
        let since = secret_conflict_since(previous, now);
        let grace =
            SignedDuration::try_from(ctx.config.verified_grace).unwrap_or(SignedDuration::MAX);
        let end = since.checked_add(grace).unwrap_or(Timestamp::MAX);
        if now < end {
            let message = format!(
                "{message} The domain is verified: its last published DKIM keys and records stay served until {end}; after that nothing is published for it until this is fixed."
            );
            let st = held(
                previous,
                sd.metadata.generation,
                now,
                Block::SecretConflict,
                &message,
            );
            write(sd, ctx, written, previous, &st).await?;
            return Ok(Action::requeue(until(now, end).min(CONFLICT_RECHECK)));
        }
    }
    block(sd, ctx, written, now, Block::SecretConflict, message).await
}
