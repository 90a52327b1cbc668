//! The operator's identity key: 32 random bytes in a Secret that every replica
//! shares. Every domain's token is an HMAC under it, so the key decides every CNAME
//! target ever handed to a customer. It is created once (only while no
//! SendingDomain carries an id), never overwritten, and can be imported (create
//! the Secret before the first start) to restore a cluster.
//!
//! Every part of the process follows it through one [`Follower`], which reads the
//! Secret every [`POLL`] and publishes the [`TrustState`]: the zone serves, and the
//! controller reconciles, only under a key the core's `identity::decide` accepts.
//! Replicas that serve DNS only ever `get` this one Secret.

use crate::adapters::kube::Domains;
use crate::core::api::{MANAGED_BY_LABEL, MANAGER};
use crate::core::identity::{self, Decision, Divergence, Problem, SecretView};
use crate::core::policy::Policy;
use crate::core::trust::Trust;
use crate::telemetry::Metrics;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Name of the identity Secret in the operator's namespace.
pub const SECRET_NAME: &str = "anypost-operator-identity";
/// Data key holding the 32 raw bytes.
pub const DATA_KEY: &str = "identity.key";
/// Length of the key.
pub const KEY_LEN: usize = 32;
/// Set by an administrator on the Secret: use its key even though SendingDomains
/// carry ids made with another one (every customer publishes new CNAMEs).
pub const REKEY_ANNOTATION: &str = "anypost.com/rekey";
/// Set by the controller once every status carries a seal: from then on an
/// unsealed status is never believed.
pub const SEALED_ANNOTATION: &str = "anypost.com/sealed-statuses";
/// How often the Secret and the claim policy are read again.
pub const POLL: Duration = Duration::from_secs(10);

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
    #[error("reading the claim policy (--claim-policy) {path}: {why}")]
    Policy { path: String, why: String },
}

/// The key inside a Secret, if well-formed.
pub fn key_from_secret(secret: &Secret) -> Result<Vec<u8>, String> {
    match secret.data.as_ref().and_then(|d| d.get(DATA_KEY)) {
        Some(b) if b.0.len() == KEY_LEN => Ok(b.0.clone()),
        Some(b) => Err(format!("{} bytes", b.0.len())),
        None => Err("no such key".into()),
    }
}

/// What the identity Secret holds.
#[derive(Debug, Clone)]
struct Observed {
    key: Result<Vec<u8>, String>,
    rekey: bool,
    sealed: bool,
}

impl Observed {
    fn of(secret: &Secret) -> Observed {
        let annotations = secret.annotations();
        Observed {
            key: key_from_secret(secret),
            rekey: annotations.contains_key(REKEY_ANNOTATION),
            sealed: annotations.contains_key(SEALED_ANNOTATION),
        }
    }
}

fn new_secret(namespace: &str, key: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into())])),
            annotations: Some(BTreeMap::from([
                (
                    "anypost.com/note".into(),
                    "Every SendingDomain's CNAME targets derive from this key. Back it up; never change it."
                        .into(),
                ),
                (SEALED_ANNOTATION.into(), "true".into()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(DATA_KEY.into(), ByteString(key))])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn is_namespace_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && s.message.contains("namespaces"))
}

fn read_error(namespace: &str, source: kube::Error) -> IdentityError {
    if is_namespace_missing(&source) {
        IdentityError::NamespaceMissing {
            namespace: namespace.into(),
        }
    } else {
        IdentityError::Read {
            namespace: namespace.into(),
            source,
        }
    }
}

/// What the process may believe now.
#[derive(Debug, Clone)]
pub enum TrustState {
    /// The Secret has not been judged yet.
    Starting,
    Trusted(Arc<Trust>),
    /// No key can be used: why.
    Refused(Problem),
}

/// Where the domain-claim policy comes from: a file (the chart mounts a
/// ConfigMap), read again every [`POLL`]. A change that does not parse is
/// ignored, with an error, until it is fixed; at start it is an error.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    path: Option<PathBuf>,
    text: String,
    policy: Policy,
}

impl PolicySource {
    /// Reads the policy at `path` (none: every claim is allowed).
    pub fn open(path: Option<PathBuf>) -> Result<PolicySource, IdentityError> {
        let mut source = PolicySource {
            path,
            ..Default::default()
        };
        source.reload()?;
        Ok(source)
    }

    /// Reads the file again; keeps the policy in use when it cannot.
    fn reload(&mut self) -> Result<(), IdentityError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let error = |why: String| IdentityError::Policy {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        if text != self.text {
            self.policy = Policy::parse(&text).map_err(error)?;
            self.text = text;
        }
        Ok(())
    }

    /// The policy in use.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Follows the identity Secret and the claim policy.
pub struct Follower {
    pub client: Client,
    pub namespace: String,
    pub domains: Arc<Domains>,
    /// Whether this process may make the key (the controller) or only read it.
    pub may_create: bool,
    pub policy: PolicySource,
    pub metrics: Arc<Metrics>,
}

/// What the follower carries from one look to the next.
#[derive(Default)]
struct Followed {
    key: Option<Vec<u8>>,
    /// Once every status is sealed (the Secret says so), unsealed statuses are
    /// never believed again by this process.
    strict: bool,
    /// Looks in a row that found every status sealed (the controller marks the
    /// Secret after two, so that every replica's cache has caught up).
    all_sealed: u32,
    divergence: Option<Divergence>,
    sent: Option<(Vec<u8>, bool, Policy)>,
}

impl Follower {
    fn api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secret_ref(&self) -> String {
        format!("{}/{SECRET_NAME}", self.namespace)
    }

    /// Reads the Secret once (a startup error is fatal: the namespace missing,
    /// no rights).
    pub async fn check(&self) -> Result<(), IdentityError> {
        self.api()
            .get_opt(SECRET_NAME)
            .await
            .map_err(|e| read_error(&self.namespace, e))?;
        Ok(())
    }

    /// Publishes the trust into `tx` after every look, until the process ends or
    /// the key cannot be made where it belongs (the namespace does not exist).
    pub async fn run(mut self, tx: watch::Sender<TrustState>) -> Result<(), IdentityError> {
        if !self.domains.ready().await {
            return Ok(());
        }
        let mut f = Followed::default();
        loop {
            self.look(&mut f, &tx).await?;
            tokio::time::sleep(POLL).await;
        }
    }

    async fn look(
        &mut self,
        f: &mut Followed,
        tx: &watch::Sender<TrustState>,
    ) -> Result<(), IdentityError> {
        self.reload_policy();
        let observed = match self.api().get_opt(SECRET_NAME).await {
            Ok(s) => s.as_ref().map(Observed::of),
            Err(error) => {
                tracing::warn!(secret = %self.secret_ref(), %error, "reading the identity Secret failed; trying again");
                return Ok(());
            }
        };
        let Some(key) = self.decide(f, observed.as_ref(), tx).await? else {
            self.metrics.identity_mismatch.set(1);
            return Ok(());
        };
        let sealed = observed.as_ref().is_some_and(|o| o.sealed) || f.strict;
        f.strict = sealed;
        let mismatch = f.divergence.is_some();
        self.metrics.identity_mismatch.set(i64::from(mismatch));
        let policy = self.policy.policy().clone();
        let now = (key.clone(), !f.strict, policy.clone());
        if f.sent.as_ref() != Some(&now) {
            tracing::info!(secret = %self.secret_ref(), unsealed_believed = !f.strict, "identity key in use");
            tx.send_replace(TrustState::Trusted(Arc::new(Trust::new(
                &key, !f.strict, policy,
            ))));
            f.sent = Some(now);
        }
        if !f.strict && self.may_create {
            self.mark_once_sealed(f, &key).await;
        }
        Ok(())
    }

    /// Decides the key from what the Secret holds; `None` when none can be used.
    async fn decide(
        &self,
        f: &mut Followed,
        observed: Option<&Observed>,
        tx: &watch::Sender<TrustState>,
    ) -> Result<Option<Vec<u8>>, IdentityError> {
        let all = self.domains.all();
        let ids: Vec<(&str, &str, &str)> = all
            .iter()
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .filter_map(|d| {
                let id = d.status.as_ref()?.id.as_deref()?;
                Some((d.metadata.namespace.as_deref()?, d.spec.domain.as_str(), id))
            })
            .collect();
        let view = observed.map(|o| SecretView {
            key: o.key.as_deref().map_err(String::as_str),
            rekey: o.rekey,
        });
        let decision = identity::decide(f.key.as_deref(), view, &ids, self.may_create);
        drop(ids);
        drop(all);
        match decision {
            Decision::Use(key) => {
                if f.key.as_ref().is_some_and(|k| *k != key) {
                    tracing::warn!(secret = %self.secret_ref(), "the identity Secret holds a new key, marked {REKEY_ANNOTATION}: every domain gets new CNAME targets");
                }
                f.key = Some(key);
                f.divergence = None;
            }
            Decision::Keep(d) => {
                if f.divergence.as_ref() != Some(&d) {
                    tracing::error!(secret = %self.secret_ref(), divergence = ?d, "the identity Secret no longer holds the key in use; it stays in use, but a restart will refuse to run until the Secret is restored");
                }
                f.divergence = Some(d);
            }
            Decision::Create => f.key = self.create().await?,
            Decision::Refuse(problem) => {
                let message = problem.message(&self.secret_ref());
                if !matches!(&*tx.borrow(), TrustState::Refused(p) if *p == problem) {
                    tracing::error!("{message}");
                    tx.send_replace(TrustState::Refused(problem));
                }
                return Ok(None);
            }
        }
        Ok(f.key.clone())
    }

    /// Creates the Secret with a fresh key; `None` when that failed (tried again
    /// at the next look; a replica that lost the race reads the winner's key then).
    /// A namespace that does not exist is an error.
    async fn create(&self) -> Result<Option<Vec<u8>>, IdentityError> {
        let mut key = vec![0u8; KEY_LEN];
        getrandom::fill(&mut key).expect("the system random source is available");
        let created = self
            .api()
            .create(
                &PostParams::default(),
                &new_secret(&self.namespace, key.clone()),
            )
            .await;
        match created {
            Ok(_) => {
                tracing::info!(secret = %self.secret_ref(), "created the identity key");
                Ok(Some(key))
            }
            Err(e) if is_namespace_missing(&e) => Err(read_error(&self.namespace, e)),
            Err(error) => {
                tracing::warn!(secret = %self.secret_ref(), %error, "creating the identity Secret failed; reading it again");
                Ok(None)
            }
        }
    }

    fn reload_policy(&mut self) {
        match self.policy.reload() {
            Ok(()) => {
                self.metrics.policy_invalid.set(0);
            }
            Err(error) => {
                tracing::error!(%error, "keeping the claim policy in use");
                self.metrics.policy_invalid.set(1);
            }
        }
    }

    /// Marks the Secret once every status has been sealed on two looks in a row.
    async fn mark_once_sealed(&self, f: &mut Followed, key: &[u8]) {
        let trust = Trust::new(key, true, Policy::default());
        let all = self.domains.all();
        let sealed = trust.all_sealed(all.iter().map(|d| &**d));
        drop(all);
        f.all_sealed = if sealed { f.all_sealed + 1 } else { 0 };
        if f.all_sealed < 2 {
            return;
        }
        let patch = serde_json::json!({"metadata": {"annotations": {SEALED_ANNOTATION: "true"}}});
        let params = PatchParams::default();
        match self
            .api()
            .patch(SECRET_NAME, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(secret = %self.secret_ref(), "every status is sealed: unsealed statuses are no longer believed")
            }
            Err(error) => {
                tracing::warn!(secret = %self.secret_ref(), %error, "marking the identity Secret sealed failed; trying again")
            }
        }
    }
}
