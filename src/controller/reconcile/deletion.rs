//! A SendingDomain being deleted: its Secret goes with it (ownerReference); records
//! on an external server go first, and the finalizer holds the object until they
//! are gone. The embedded zone drops a deleted domain by itself.

use super::{Context, Error, PUBLISH_POLL};
use crate::adapters::kube::writes;
use crate::core::api::SendingDomain;
use crate::core::naming::SendingName;
use kube::runtime::controller::Action;

pub(super) async fn finish(sd: &SendingDomain, ctx: &Context) -> Result<Action, Error> {
    if !writes::has_finalizer(sd) {
        return Ok(Action::await_change());
    }
    // Without the identity key the token is unknown: wait for it rather than
    // release records that may still be on the server.
    let token = ctx.trust().ok().and_then(|t| t.token(sd));
    let gone = match (SendingName::parse(&sd.spec.domain), token) {
        (Err(_), _) => true,
        (Ok(_), Some(token)) => ctx.publisher.absent(&token),
        (Ok(_), None) => false,
    };
    if !gone {
        return Ok(Action::requeue(PUBLISH_POLL));
    }
    writes::finalizer(&ctx.client, sd, false).await?;
    Ok(Action::await_change())
}
