//! A SendingDomain being deleted: its Secret goes with it (ownerReference); records
//! on an external server go first, and the finalizer holds the object until they
//! are gone. The embedded zone drops a deleted domain by itself.

use super::{Context, Error, PUBLISH_POLL};
use crate::adapters::kube::writes;
use crate::core::api::SendingDomain;
use crate::core::naming::{self, SendingName};
use kube::ResourceExt;
use kube::runtime::controller::Action;

pub(super) async fn finish(sd: &SendingDomain, ctx: &Context) -> Result<Action, Error> {
    if !writes::has_finalizer(sd) {
        return Ok(Action::await_change());
    }
    let gone = match SendingName::parse(&sd.spec.domain) {
        Ok(p) => {
            let ns = sd.namespace().unwrap_or_default();
            ctx.publisher
                .absent(&naming::token(&ctx.identity_key, &ns, &p.domain))
        }
        Err(_) => true,
    };
    if !gone {
        return Ok(Action::requeue(PUBLISH_POLL));
    }
    writes::finalizer(&ctx.client, sd, false).await?;
    Ok(Action::await_change())
}
