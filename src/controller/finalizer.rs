//! The finalizer that keeps a SendingDomain until its records are gone from an
//! external DNS server (the RFC2136 backend). The embedded zone needs none: it is
//! rebuilt from the SendingDomains that exist.

use super::Error;
use crate::api::SendingDomain;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

/// The finalizer's name.
pub const FINALIZER: &str = "anypost.com/dns-records";
/// Field manager owning the finalizer entry (and nothing else).
pub const MANAGER: &str = "anypost-operator/finalizer";

/// Whether `sd` carries the finalizer.
pub fn present(sd: &SendingDomain) -> bool {
    sd.finalizers().iter().any(|f| f == FINALIZER)
}

async fn apply(
    api: &Api<SendingDomain>,
    sd: &SendingDomain,
    finalizers: &[&str],
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": "anypost.com/v1alpha1",
        "kind": "SendingDomain",
        // The uid fences the write to this very object: a reconcile of an object
        // since re-created under the same name is refused.
        "metadata": { "name": sd.name_any(), "uid": sd.metadata.uid, "finalizers": finalizers },
    });
    match api
        .patch(
            &sd.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to hold.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) if super::reconcile::fence_failed(&source) => Err(Error::Superseded {
            domain: format!("{}/{}", sd.namespace().unwrap_or_default(), sd.name_any()),
            uid: sd.metadata.uid.clone().unwrap_or_default(),
            write: "finalizer",
        }),
        Err(source) => Err(Error::Finalizer {
            domain: format!("{}/{}", sd.namespace().unwrap_or_default(), sd.name_any()),
            source,
        }),
    }
}

/// Adds the finalizer (server-side apply: other finalizers are untouched).
pub async fn add(api: &Api<SendingDomain>, sd: &SendingDomain) -> Result<(), Error> {
    apply(api, sd, &[FINALIZER]).await
}

/// Removes the finalizer, letting the deletion finish.
pub async fn remove(api: &Api<SendingDomain>, sd: &SendingDomain) -> Result<(), Error> {
    apply(api, sd, &[]).await
}
