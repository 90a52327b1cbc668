//! Two claims on one domain: the older keeps it (see the core's claims).

use super::Context;
use crate::core::api::SendingDomain;
use crate::core::claims;
use kube::ResourceExt;

/// The DomainConflict message, if an older claim holds this domain. Only the
/// claims on this domain are looked at (the cache indexes them by domain), and
/// they are dropped before anything is awaited: thousands of reconciles waiting
/// for key generation would otherwise each keep them alive.
pub(super) fn lost(sd: &SendingDomain, ctx: &Context) -> Option<String> {
    let rivals = ctx.domains.claims_on(&sd.spec.domain);
    if claims::is_winner(&rivals, sd) {
        return None;
    }
    let whose = match claims::claim_winner(&rivals, &sd.spec.domain) {
        Some(w) if ctx.config.reveal_conflicts => format!(
            "SendingDomain {}/{}",
            w.namespace().unwrap_or_default(),
            w.name_any()
        ),
        _ => "another SendingDomain".to_string(),
    };
    Some(format!(
        "{} is already claimed by {whose}, created earlier; nothing is published for this one. It takes over automatically if the other claim is deleted.",
        sd.spec.domain
    ))
}
