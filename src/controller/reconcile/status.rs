//! Writing the status, and the Events its changes are worth.

use super::{Context, Error};
use crate::adapters::kube::writes;
use crate::core::api::{SendingDomain, SendingDomainStatus};
use crate::core::status::{blocked, events};
use crate::core::vocab::Block;
use jiff::Timestamp;
use kube::runtime::controller::Action;

/// Writes `new` if it differs from what the object carries (`written`), then an
/// Event for each meaningful transition from `previous` (the status this reconcile
/// built on). The write is fenced to the object's uid.
pub(super) async fn write(
    sd: &SendingDomain,
    ctx: &Context,
    written: &SendingDomainStatus,
    previous: &SendingDomainStatus,
    new: &SendingDomainStatus,
) -> Result<(), Error> {
    if written == new {
        return Ok(());
    }
    writes::status(&ctx.client, sd, new).await?;
    ctx.metrics.status_writes.inc();
    for e in events::transitions(previous, new) {
        ctx.event(sd, &e).await;
    }
    Ok(())
}

/// Writes the status of a domain nothing can be published for, and waits: for a
/// change of the SendingDomain, or a while when another object decides.
pub(super) async fn block(
    sd: &SendingDomain,
    ctx: &Context,
    written: &SendingDomainStatus,
    now: Timestamp,
    block: Block,
    message: &str,
) -> Result<Action, Error> {
    let st = blocked(written, sd.metadata.generation, now, block, message);
    write(sd, ctx, written, written, &st).await?;
    Ok(match block.recheck() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
