//! The SendingDomain controller: the context every reconcile shares, its errors,
//! the [`runner`] that runs it while this replica leads, and [`reconcile`] itself.

pub mod own_writes;
pub mod pools;
pub mod reconcile;
pub mod runner;
pub mod secret_cache;

use crate::adapters::kube::Domains;
use crate::adapters::kube::events::{EventWriter, Note};
use crate::adapters::kube::identity::TrustState;
use crate::adapters::kube::writes::{Write, WriteError};
use crate::core::api::{MANAGER, SendingDomain};
use crate::core::dkim::{self, KeyMaterial};
use crate::core::ports::{CheckRequest, Publisher, Verifier};
use crate::core::status::events::Event as StatusEvent;
use crate::core::status::schedule::Intervals;
use crate::core::trust::Trust;
use crate::core::verify::{Control, Outcome};
use crate::telemetry::health::Progress;
use crate::telemetry::{Metrics, OutcomeLabels};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use pools::{FairPool, Pace};
use secret_cache::SecretCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Settings reconcile depends on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The operator's zone.
    pub zone: String,
    /// When domains are checked again.
    pub intervals: Intervals,
    /// How long a verified domain whose records fail stays verified.
    pub verified_grace: Duration,
    /// How long a replaced DKIM key stays published.
    pub dkim_retire_after: Duration,
    /// How long a standby key must have been published before it may sign.
    pub dkim_min_standby_age: Duration,
    /// Name the older claim's namespace in a DomainConflict message.
    pub reveal_conflicts: bool,
    /// Most domains verified at once.
    pub verify_concurrency: usize,
    /// Most checks started per second (zero: no limit).
    pub verify_qps: f64,
}

/// Reconciles at work at once (at least twice `--verify-concurrency`, so that
/// reconciles waiting for a check never hold every turn).
pub const RECONCILES_AT_WORK: usize = 256;

/// Longest the first reconciles wait for the DKIM Secret cache's first list
/// (see [`Context::secrets_loaded`]).
pub const SECRETS_LOAD_WAIT: Duration = Duration::from_secs(30);

/// Errors of one reconcile. Each names the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading DKIM Secret {secret}: {source}")]
    ReadDkimSecret { secret: String, source: kube::Error },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("generating a DKIM key: {0}")]
    GenerateKey(#[from] dkim::KeyError),
    #[error("the key generation task failed: {0}")]
    KeyTask(String),
    /// A Secret write built from the watch cache's stand-ins for the keys (see
    /// `dkim::compact_for_cache`): refused, since it would overwrite the keys.
    #[error(
        "refusing to write DKIM Secret {secret} from the cache's stand-ins for its keys; it is read live next time"
    )]
    StandInWrite { secret: String },
}

impl Error {
    /// A fixed label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadDkimSecret { .. } => "read_dkim_secret",
            Error::Write(WriteError::Superseded { .. }) => "superseded",
            Error::Write(WriteError::NotLeader { .. }) => "not_leader",
            Error::Write(WriteError::Conflict { .. }) => "conflict",
            Error::Write(e) => match e.write() {
                Write::Status => "patch_status",
                Write::Secret => "apply_dkim_secret",
                Write::Finalizer => "finalizer",
            },
            Error::GenerateKey(_) | Error::KeyTask(_) => "generate_key",
            Error::StandInWrite { .. } => "apply_dkim_secret",
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Config,
    /// What statuses may be believed for: the identity key, the claim policy.
    pub trust: watch::Receiver<TrustState>,
    /// The identity Secret (`namespace/name`), for messages.
    pub identity_secret: String,
    pub publisher: Arc<dyn Publisher>,
    pub verifier: Arc<dyn Verifier>,
    pub metrics: Arc<Metrics>,
    /// The shared SendingDomain cache (for claims).
    pub domains: Arc<Domains>,
    events: EventWriter,
    /// Bounds the reconciles at work at once, shared fairly between namespaces:
    /// a bulk apply or a restart wakes thousands together, and each one at work
    /// holds what it read and is about to write (a Secret, keys, a status
    /// patch); the rest wait with nothing.
    reconciles: FairPool,
    /// Bounds concurrent key generation (CPU-bound, on the blocking pool), shared
    /// fairly between namespaces.
    keygen: FairPool,
    /// Bounds concurrent checks, so many domains never stampede the resolver,
    /// shared fairly between namespaces...
    checks: FairPool,
    /// ...and paced to `--verify-qps`.
    check_pace: Pace,
    /// The running controller's cache of DKIM Secrets. Replaced each time this
    /// replica becomes the leader and starts a new controller: the previous
    /// one's cache stopped following the API when it stopped. With it, when
    /// it was made.
    secrets: RwLock<Option<Arc<SecretCache>>>,
    /// Reconciles in flight and finishing (for /healthz).
    pub progress: Arc<Progress>,
    /// Failed reconciles in a row, per SendingDomain (for the retry back-off).
    failures: Mutex<HashMap<ObjectRef<SendingDomain>, u32>>,
    /// Status writes the cache does not show yet.
    pub own_writes: own_writes::OwnWrites,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        (trust, identity_secret): (watch::Receiver<TrustState>, String),
        publisher: Arc<dyn Publisher>,
        verifier: Arc<dyn Verifier>,
        metrics: Arc<Metrics>,
        domains: Arc<Domains>,
    ) -> Self {
        Context {
            events: EventWriter::new(client.clone(), MANAGER, std::env::var("POD_NAME").ok()),
            client,
            reconciles: FairPool::new(RECONCILES_AT_WORK.max(2 * config.verify_concurrency)),
            keygen: FairPool::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            checks: FairPool::new(config.verify_concurrency),
            check_pace: Pace::per_second(config.verify_qps),
            config,
            trust,
            identity_secret,
            publisher,
            verifier,
            metrics,
            domains,
            secrets: RwLock::new(None),
            progress: Arc::default(),
            failures: Mutex::default(),
            own_writes: own_writes::OwnWrites::default(),
        }
    }

    /// Counts one more failed reconcile of `sd` in a row; returns the count.
    pub fn failed(&self, sd: &SendingDomain) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(ObjectRef::from_obj(sd)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// `sd` reconciled: its next failure starts the back-off afresh.
    pub fn succeeded(&self, sd: &SendingDomain) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !f.is_empty() {
            f.remove(&ObjectRef::from_obj(sd));
        }
    }

    /// Forgets the failures of SendingDomains no longer in the cache.
    pub fn forget_gone(&self, store: &Store<SendingDomain>) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.retain(|r, _| store.get(r).is_some());
    }

    /// The trust to reconcile under, or why there is none: the identity key is
    /// in doubt, and nothing may be re-targeted.
    pub fn trust(&self) -> Result<Arc<Trust>, String> {
        match &*self.trust.borrow() {
            TrustState::Trusted(t) => Ok(t.clone()),
            TrustState::Refused(problem) => Err(problem.message(&self.identity_secret)),
            TrustState::Starting => Err(format!(
                "the identity Secret {} has not been read yet",
                self.identity_secret
            )),
        }
    }

    /// A DKIM Secret as the controller's watch last saw it, if the operator owns
    /// it (nothing else is kept). It may lag the API: reconcile only trusts it
    /// when it agrees with status and asks for no write.
    pub fn cached_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        read(&self.secrets).as_ref()?.get(namespace, name)
    }

    /// Waits until the DKIM Secret cache holds its first list, so that the
    /// reconciles right after a start (every domain at once) read their Secrets
    /// from it rather than one GET each; at once after that. If the list takes
    /// longer than [`SECRETS_LOAD_WAIT`] from the cache's start, reconciles go on
    /// and read live.
    pub async fn secrets_loaded(&self) {
        let Some(cache) = read(&self.secrets).clone() else {
            return;
        };
        cache.loaded(SECRETS_LOAD_WAIT).await;
    }

    /// Waits for a turn to reconcile a SendingDomain of `namespace`.
    pub async fn reconcile_turn(&self, namespace: &str) -> pools::Permit<'_> {
        self.reconciles.acquire(namespace).await
    }

    fn use_secrets(&self, store: Store<Secret>) {
        *self.secrets.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(SecretCache::follow(store)));
    }

    /// Generates a key on the blocking pool so reconciles and DNS never stall, in
    /// `namespace`'s turn.
    pub async fn generate_key(&self, namespace: &str, bits: u32) -> Result<KeyMaterial, Error> {
        let _slot = self.keygen.acquire(namespace).await;
        let start = std::time::Instant::now();
        let key = tokio::task::spawn_blocking(move || dkim::generate(bits))
            .await
            .map_err(|e| Error::KeyTask(e.to_string()))??;
        self.metrics
            .key_generation_seconds
            .observe(start.elapsed().as_secs_f64());
        self.metrics.keys_generated.inc();
        Ok(key)
    }

    /// Runs a check within the concurrency bound and the pace, in `namespace`'s
    /// turn.
    pub async fn verify(&self, namespace: &str, req: CheckRequest) -> Outcome {
        let _slot = self.checks.acquire(namespace).await;
        self.check_pace.wait().await;
        let start = std::time::Instant::now();
        let outcome = self.verifier.check(req).await;
        self.metrics
            .check_seconds
            .observe(start.elapsed().as_secs_f64());
        let label = match &outcome.verdict {
            crate::core::verify::Verdict::Unknown(_) => "transient",
            crate::core::verify::Verdict::Failed(_) => "failing",
            crate::core::verify::Verdict::Verified => "verified",
        };
        self.metrics
            .checks
            .get_or_create(&OutcomeLabels { outcome: label })
            .inc();
        outcome
    }

    /// Checks control of a contested claim within the concurrency bound.
    pub async fn control(&self, namespace: &str, record: crate::core::api::DnsRecord) -> Control {
        let _slot = self.checks.acquire(namespace).await;
        self.check_pace.wait().await;
        self.verifier.control(record).await
    }

    /// Publishes an Event about `sd`; failures are logged, never fatal.
    pub async fn event(&self, sd: &SendingDomain, e: &StatusEvent) {
        let message: String = e.message.chars().take(1000).collect();
        let note = Note {
            warning: e.warning,
            reason: &e.reason.to_string(),
            action: "Reconcile",
            message: &message,
        };
        if let Err(error) = self.events.publish(sd.object_ref(&()), &note).await {
            tracing::warn!(%error, reason = %e.reason, "publishing an event failed");
        }
    }
}
