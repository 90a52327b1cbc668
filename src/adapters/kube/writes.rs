//! Every write the controller makes to the API for a SendingDomain, each fenced
//! to the object it was computed from: a reconcile that read an object since
//! deleted (or deleted and re-created under the same name) fails instead of
//! writing onto the new one. They go through the fenced client, so a replica that
//! does not lead (or whose Lease's renew deadline passed) sends none of them:
//! [`WriteError::NotLeader`].

use super::fence::is_refused;
use crate::core::api::{MANAGED_BY_LABEL, MANAGER, SendingDomain, SendingDomainStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::fmt;

/// Field manager for the DKIM Secret.
pub const SECRET_MANAGER: &str = "anypost-operator/dkim-secret";
/// Field manager for status.
pub const STATUS_MANAGER: &str = "anypost-operator/status";
/// Field manager owning the finalizer entry (and nothing else).
pub const FINALIZER_MANAGER: &str = "anypost-operator/finalizer";
/// The finalizer keeping a SendingDomain until its records are gone from an
/// external DNS server (the RFC2136 backend). The embedded zone needs none: it
/// is rebuilt from the SendingDomains that exist.
pub const FINALIZER: &str = "anypost.com/dns-records";

/// Which write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Status,
    Secret,
    Finalizer,
}

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Write::Status => "status",
            Write::Secret => "DKIM Secret",
            Write::Finalizer => "finalizer",
        })
    }
}

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The object this write was computed from was deleted or replaced while
    /// it was reconciled: nothing was written.
    #[error(
        "SendingDomain {object} (uid {uid}) was deleted or replaced while it was reconciled; its {write} was not written"
    )]
    Superseded {
        object: String,
        uid: String,
        write: Write,
    },
    /// This replica may not write now: it does not lead, or its Lease's renew
    /// deadline passed (see [`super::fence`]). Nothing was sent.
    #[error(
        "the {write} of SendingDomain {object} was not written: this replica is not the leader, or its Lease's renew deadline passed"
    )]
    NotLeader { object: String, write: Write },
    /// What the write was computed from changed meanwhile (someone else wrote
    /// it): nothing was written; the next reconcile reads it again.
    #[error("the {write} of SendingDomain {object} changed since it was read; it was not written")]
    Conflict { object: String, write: Write },
    /// The API refused or failed the write (or the read that fences it).
    #[error("writing the {write} of SendingDomain {object}: {source}")]
    Api {
        object: String,
        write: Write,
        source: kube::Error,
    },
}

impl WriteError {
    pub fn write(&self) -> Write {
        match self {
            WriteError::Superseded { write, .. }
            | WriteError::NotLeader { write, .. }
            | WriteError::Conflict { write, .. }
            | WriteError::Api { write, .. } => *write,
        }
    }
}

fn object(sd: &SendingDomain) -> String {
    format!("{}/{}", sd.namespace().unwrap_or_default(), sd.name_any())
}

/// The uid of an object read from the API (every stored object has one).
fn uid(sd: &SendingDomain) -> &str {
    sd.metadata.uid.as_deref().unwrap_or_default()
}

fn superseded(sd: &SendingDomain, write: Write) -> WriteError {
    WriteError::Superseded {
        object: object(sd),
        uid: uid(sd).to_string(),
        write,
    }
}

/// The error for a failed write: refused by the leader's fence, or the API's.
fn api_error(sd: &SendingDomain, write: Write, source: kube::Error) -> WriteError {
    if is_refused(&source) {
        return WriteError::NotLeader {
            object: object(sd),
            write,
        };
    }
    WriteError::Api {
        object: object(sd),
        write,
        source,
    }
}

/// The error for a failed fenced write: superseded when the object is gone or is
/// another object now (404; the JSON patch's uid test failing, 422; a
/// server-side apply carrying another uid, 409 or 422).
fn failed(sd: &SendingDomain, write: Write, source: kube::Error) -> WriteError {
    let replaced = match &source {
        kube::Error::Api(s) if s.code == 404 => true,
        kube::Error::Api(s) if s.code == 409 || s.code == 422 => {
            let m = s.message.to_ascii_lowercase();
            m.contains("uid") || m.contains("test")
        }
        _ => false,
    };
    if replaced {
        superseded(sd, write)
    } else {
        api_error(sd, write, source)
    }
}

fn domains(client: &Client, sd: &SendingDomain) -> Api<SendingDomain> {
    Api::namespaced(client.clone(), &sd.namespace().unwrap_or_default())
}

/// Writes `status` with a JSON patch whose first operation tests `metadata.uid`.
/// (Server-side apply cannot fence a status write: for a custom resource's status
/// subresource the apiserver takes every field but `status` from the stored
/// object, `metadata.uid` included.) Returns the object's resourceVersion after
/// the write.
pub async fn status(
    client: &Client,
    sd: &SendingDomain,
    status: &SendingDomainStatus,
) -> Result<Option<String>, WriteError> {
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        { "op": "test", "path": "/metadata/uid", "value": uid(sd) },
        { "op": "add", "path": "/status", "value": status },
    ]))
    .expect("a JSON patch of a test and an add");
    let params = PatchParams {
        field_manager: Some(STATUS_MANAGER.into()),
        ..Default::default()
    };
    let written = domains(client, sd)
        .patch_status(&sd.name_any(), &params, &Patch::Json::<()>(patch))
        .await
        .map_err(|e| failed(sd, Write::Status, e))?;
    Ok(written.metadata.resource_version)
}

/// Writes the DKIM Secret `name` holding `data`, owned by `sd`, over `read`: the
/// Secret as read live just before (none if there was none).
///
/// Two fences. The SendingDomain is read live first and must still be the same
/// object (same uid, not being deleted): a reconcile that outlived its object
/// (key generation takes seconds) would otherwise point the Secret's
/// ownerReference at a uid that no longer exists, and the garbage collector would
/// delete the keys of the object that replaced it. And the write is conditional on
/// the Secret being as read: a create when there was none (refused if one
/// appeared), an apply carrying the resourceVersion read otherwise (refused if it
/// changed). So keys someone else stored meanwhile (another leader, a request the
/// network delivered late) are never overwritten: [`WriteError::Conflict`].
pub async fn secret(
    client: &Client,
    sd: &SendingDomain,
    name: &str,
    data: BTreeMap<String, ByteString>,
    read: Option<&Secret>,
) -> Result<(), WriteError> {
    same_object(client, sd, Write::Secret).await?;
    let mut secret = dkim_secret(sd, name, data);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &sd.namespace().unwrap_or_default());
    let written = match read.and_then(|s| s.metadata.resource_version.clone()) {
        None => secrets
            .create(&PostParams::default(), &secret)
            .await
            .map(drop),
        Some(version) => {
            secret.metadata.resource_version = Some(version);
            let params = PatchParams::apply(SECRET_MANAGER).force();
            secrets
                .patch(name, &params, &Patch::Apply(&secret))
                .await
                .map(drop)
        }
    };
    written.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 409 => WriteError::Conflict {
            object: object(sd),
            write: Write::Secret,
        },
        e => api_error(sd, Write::Secret, e),
    })
}

/// Reads `sd` live: the write may go ahead only if it is still the same object
/// and not being deleted.
async fn same_object(client: &Client, sd: &SendingDomain, write: Write) -> Result<(), WriteError> {
    let live = domains(client, sd)
        .get_opt(&sd.name_any())
        .await
        .map_err(|e| failed(sd, write, e))?;
    if live.is_none_or(|l| {
        l.metadata.uid != sd.metadata.uid || l.metadata.deletion_timestamp.is_some()
    }) {
        return Err(superseded(sd, write));
    }
    Ok(())
}

/// The DKIM Secret of `sd`.
fn dkim_secret(sd: &SendingDomain, name: &str, data: BTreeMap<String, ByteString>) -> Secret {
    let owner = sd
        .controller_owner_ref(&())
        .expect("a SendingDomain read from the API has a uid");
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: sd.namespace(),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Whether `sd` carries the finalizer.
pub fn has_finalizer(sd: &SendingDomain) -> bool {
    sd.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds (or removes) the finalizer with server-side apply: other finalizers are
/// untouched. The apply carries `metadata.uid`, which the apiserver refuses to
/// change, so it is fenced to this very object. An object already gone holds
/// nothing: that is success.
pub async fn finalizer(
    client: &Client,
    sd: &SendingDomain,
    present: bool,
) -> Result<(), WriteError> {
    let finalizers: &[&str] = if present { &[FINALIZER] } else { &[] };
    let body = serde_json::json!({
        "apiVersion": "anypost.com/v1alpha1",
        "kind": "SendingDomain",
        "metadata": { "name": sd.name_any(), "uid": uid(sd), "finalizers": finalizers },
    });
    let applied = domains(client, sd)
        .patch(
            &sd.name_any(),
            &PatchParams::apply(FINALIZER_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await;
    match applied {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 && !present => Ok(()),
        Err(e) => Err(failed(sd, Write::Finalizer, e)),
    }
}
