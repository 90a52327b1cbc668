//! Every write the controller makes to the API for a SendingDomain, each fenced
//! to the object it was computed from: a reconcile that read an object since
//! deleted (or deleted and re-created under the same name) fails instead of
//! writing onto the new one.

use crate::core::api::{MANAGED_BY_LABEL, MANAGER, SendingDomain, SendingDomainStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams};
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
            WriteError::Superseded { write, .. } | WriteError::Api { write, .. } => *write,
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
        WriteError::Api {
            object: object(sd),
            write,
            source,
        }
    }
}

fn domains(client: &Client, sd: &SendingDomain) -> Api<SendingDomain> {
    Api::namespaced(client.clone(), &sd.namespace().unwrap_or_default())
}

/// Writes `status` with a JSON patch whose first operation tests `metadata.uid`.
/// (Server-side apply cannot fence a status write: for a custom resource's status
/// subresource the apiserver takes every field but `status` from the stored
/// object, `metadata.uid` included.)
pub async fn status(
    client: &Client,
    sd: &SendingDomain,
    status: &SendingDomainStatus,
) -> Result<(), WriteError> {
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        { "op": "test", "path": "/metadata/uid", "value": uid(sd) },
        { "op": "add", "path": "/status", "value": status },
    ]))
    .expect("a JSON patch of a test and an add");
    let params = PatchParams {
        field_manager: Some(STATUS_MANAGER.into()),
        ..Default::default()
    };
    domains(client, sd)
        .patch_status(&sd.name_any(), &params, &Patch::Json::<()>(patch))
        .await
        .map_err(|e| failed(sd, Write::Status, e))?;
    Ok(())
}

/// Applies the DKIM Secret `name` holding `data`, owned by `sd`. The SendingDomain
/// is read live first and must still be the same object (same uid, not being
/// deleted): a reconcile that outlived its object (key generation takes seconds)
/// would otherwise point the Secret's ownerReference at a uid that no longer
/// exists, and the garbage collector would delete the keys of the object that
/// replaced it.
pub async fn secret(
    client: &Client,
    sd: &SendingDomain,
    name: &str,
    data: BTreeMap<String, ByteString>,
) -> Result<(), WriteError> {
    let live = domains(client, sd)
        .get_opt(&sd.name_any())
        .await
        .map_err(|e| failed(sd, Write::Secret, e))?;
    if live.is_none_or(|l| {
        l.metadata.uid != sd.metadata.uid || l.metadata.deletion_timestamp.is_some()
    }) {
        return Err(superseded(sd, Write::Secret));
    }
    let owner = sd
        .controller_owner_ref(&())
        .expect("a SendingDomain read from the API has a uid");
    let secret = Secret {
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
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &sd.namespace().unwrap_or_default());
    secrets
        .patch(
            name,
            &PatchParams::apply(SECRET_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|source| WriteError::Api {
            object: object(sd),
            write: Write::Secret,
            source,
        })?;
    Ok(())
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
