//! The operator's identity key: 32 random bytes in a Secret that every replica
//! shares. Every domain's token is an HMAC under it, so the key decides every CNAME
//! target ever handed to a customer. It is created once, never overwritten, and can
//! be imported (create the Secret before the first start) to restore a cluster.

use crate::core::api::{MANAGED_BY_LABEL, MANAGER};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;

/// Name of the identity Secret in the operator's namespace.
pub const SECRET_NAME: &str = "anypost-operator-identity";
/// Data key holding the 32 raw bytes.
pub const DATA_KEY: &str = "identity.key";
/// Length of the key.
pub const KEY_LEN: usize = 32;

/// Why the identity key is not available.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "namespace {namespace:?} does not exist: create it, or pass --namespace (env ANYPOST_NAMESPACE) naming the operator's namespace"
    )]
    NamespaceMissing { namespace: String },
    #[error("reading Secret {namespace}/{SECRET_NAME}: {source}")]
    Read {
        namespace: String,
        source: kube::Error,
    },
    #[error("creating Secret {namespace}/{SECRET_NAME}: {source}")]
    Create {
        namespace: String,
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{SECRET_NAME} has no {DATA_KEY:?} of {KEY_LEN} bytes (found {found}); it is never overwritten: fix or delete it (deleting changes every domain's CNAME targets)"
    )]
    Malformed { namespace: String, found: String },
}

/// The key inside a Secret, if well-formed.
pub fn key_from_secret(secret: &Secret) -> Result<Vec<u8>, String> {
    match secret.data.as_ref().and_then(|d| d.get(DATA_KEY)) {
        Some(b) if b.0.len() == KEY_LEN => Ok(b.0.clone()),
        Some(b) => Err(format!("{} bytes", b.0.len())),
        None => Err("no such key".into()),
    }
}

fn new_secret(namespace: &str, key: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into())])),
            annotations: Some(BTreeMap::from([(
                "anypost.com/note".into(),
                "Every SendingDomain's CNAME targets derive from this key. Back it up; never change it."
                    .into(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(DATA_KEY.into(), ByteString(key))])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Reads the identity key, creating it if it does not exist yet. Safe for many
/// replicas starting at once: creation is a create, never an update, and a loser
/// of the race reads the winner's key.
pub async fn load_or_create(client: Client, namespace: &str) -> Result<Vec<u8>, IdentityError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let ns = || namespace.to_string();
    let existing = api.get_opt(SECRET_NAME).await.map_err(|source| {
        if is_namespace_missing(&source) {
            IdentityError::NamespaceMissing { namespace: ns() }
        } else {
            IdentityError::Read {
                namespace: ns(),
                source,
            }
        }
    })?;
    let secret = match existing {
        Some(s) => s,
        None => {
            let mut key = vec![0u8; KEY_LEN];
            getrandom::fill(&mut key).expect("the system random source is available");
            match api
                .create(&PostParams::default(), &new_secret(namespace, key))
                .await
            {
                Ok(s) => {
                    tracing::info!(namespace, secret = SECRET_NAME, "created the identity key");
                    s
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    api.get(SECRET_NAME)
                        .await
                        .map_err(|source| IdentityError::Read {
                            namespace: ns(),
                            source,
                        })?
                }
                Err(source) if is_namespace_missing(&source) => {
                    return Err(IdentityError::NamespaceMissing { namespace: ns() });
                }
                Err(source) => {
                    return Err(IdentityError::Create {
                        namespace: ns(),
                        source,
                    });
                }
            }
        }
    };
    key_from_secret(&secret).map_err(|found| IdentityError::Malformed {
        namespace: ns(),
        found,
    })
}

fn is_namespace_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && s.message.contains("namespaces"))
}
