//! The SendingDomain controller: wiring of `anypost-operator run`, the reconcile
//! context, and the error vocabulary.

pub mod conditions;
pub mod dkim;
pub mod finalizer;
pub mod identity;
pub mod leader;
pub mod reconcile;
pub mod status;

use crate::api::{MANAGED_BY_LABEL, MANAGER, SendingDomain};
use crate::cli::{LogFormat, RunArgs};
use crate::telemetry::{self, ErrorLabels, Metrics, OutcomeLabels, Readiness, ReadyLabels};
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, CustomResourceExt, Resource, ResourceExt};
use reconcile::CheckRequest;
use status::{CheckResult, Published};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// The CRD as YAML, exactly as checked in under `crds/`.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&SendingDomain::crd()).expect("the CRD serialises")
}

/// Settings reconcile depends on.
#[derive(Debug, Clone)]
pub struct Config {
    pub zone: String,
    pub verify_interval: Duration,
    pub pending_max_interval: Duration,
    pub verified_grace: Duration,
    pub dkim_retire_after: Duration,
    pub dkim_min_standby_age: Duration,
    pub reveal_conflicts: bool,
    pub selector: Option<String>,
}

impl Config {
    pub fn from_args(a: &RunArgs) -> Self {
        Config {
            zone: a.zone.zone.clone(),
            verify_interval: a.verify_interval,
            pending_max_interval: a.pending_max_interval,
            verified_grace: a.verified_grace,
            dkim_retire_after: a.dkim_retire_after,
            dkim_min_standby_age: a.dkim_min_standby_age,
            reveal_conflicts: a.reveal_conflicts,
            selector: a.selector.clone(),
        }
    }
}

/// Whether the zone serves a domain's records (embedded: this replica's zone
/// holds them; rfc2136: the last successful sync included them).
pub trait Publisher: Send + Sync {
    fn published(&self, token: &str, public_keys: &[String; 2]) -> Published;

    /// Whether records live outside the cluster, so a deleted SendingDomain must
    /// wait (finalizer) until they are removed.
    fn external(&self) -> bool {
        false
    }

    /// Whether nothing is published under this token any more.
    fn absent(&self, _token: &str) -> bool {
        true
    }
}

/// Resolves a domain's records.
pub trait Verifier: Send + Sync {
    fn check(&self, req: CheckRequest) -> BoxFuture<'_, CheckResult>;
}

/// Errors of one reconcile. Each names the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading DKIM Secret {secret}: {source}")]
    ReadDkimSecret { secret: String, source: kube::Error },
    #[error("applying DKIM Secret {secret}: {source}")]
    ApplyDkimSecret { secret: String, source: kube::Error },
    #[error("generating a DKIM key: {0}")]
    GenerateKey(#[from] dkim::KeyError),
    #[error("the key generation task failed: {0}")]
    KeyTask(String),
    #[error("writing the status of SendingDomain {domain}: {source}")]
    PatchStatus { domain: String, source: kube::Error },
    #[error("updating the finalizer of SendingDomain {domain}: {source}")]
    Finalizer { domain: String, source: kube::Error },
    #[error("reading SendingDomain {domain}: {source}")]
    ReadDomain { domain: String, source: kube::Error },
    /// The object this reconcile read was deleted (or deleted and re-created under
    /// the same name) while it ran: the write was refused, nothing was written.
    #[error(
        "SendingDomain {domain} (uid {uid}) was deleted or replaced while it was reconciled; its {write} was not written"
    )]
    Superseded {
        domain: String,
        uid: String,
        write: &'static str,
    },
}

impl Error {
    /// A fixed label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadDkimSecret { .. } => "read_dkim_secret",
            Error::ApplyDkimSecret { .. } => "apply_dkim_secret",
            Error::GenerateKey(_) | Error::KeyTask(_) => "generate_key",
            Error::PatchStatus { .. } => "patch_status",
            Error::Finalizer { .. } => "finalizer",
            Error::ReadDomain { .. } => "read_domain",
            Error::Superseded { .. } => "superseded",
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub identity_key: Vec<u8>,
    pub recorder: Recorder,
    pub publisher: Arc<dyn Publisher>,
    pub verifier: Arc<dyn Verifier>,
    pub metrics: Arc<Metrics>,
    /// Bounds concurrent key generation (CPU-bound, on the blocking pool).
    pub keygen: Semaphore,
    /// Bounds concurrent checks, so many domains never stampede the resolver.
    pub checks: Semaphore,
    /// The running controller's caches. Replaced each time this replica becomes
    /// the leader and starts a new controller: the previous one's caches stopped
    /// following the API when it stopped.
    store: RwLock<Option<Store<SendingDomain>>>,
    secrets: RwLock<Option<Store<Secret>>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        identity_key: Vec<u8>,
        publisher: Arc<dyn Publisher>,
        verifier: Arc<dyn Verifier>,
        metrics: Arc<Metrics>,
        verify_concurrency: usize,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            identity_key,
            publisher,
            verifier,
            metrics,
            keygen: Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            checks: Semaphore::new(verify_concurrency.max(1)),
            store: RwLock::new(None),
            secrets: RwLock::new(None),
        }
    }

    /// Every SendingDomain the controller sees (for conflicts).
    pub fn domains(&self) -> Vec<Arc<SendingDomain>> {
        read(&self.store)
            .as_ref()
            .map(|s| s.state())
            .unwrap_or_default()
    }

    /// A DKIM Secret as the operator's watch last saw it, if it carries the
    /// managed-by label (others are never watched). It may lag the API: reconcile
    /// only trusts it when it agrees with status and asks for no write.
    pub fn cached_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        read(&self.secrets)
            .as_ref()?
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// Generates a key on the blocking pool so reconciles and DNS never stall.
    pub async fn generate_key(&self, bits: u32) -> Result<dkim::KeyMaterial, Error> {
        let _slot = self.keygen.acquire().await.expect("never closed");
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

    /// Runs a check within the concurrency bound.
    pub async fn verify(&self, req: CheckRequest) -> CheckResult {
        let _slot = self.checks.acquire().await.expect("never closed");
        let start = std::time::Instant::now();
        let r = self.verifier.check(req).await;
        self.metrics
            .check_seconds
            .observe(start.elapsed().as_secs_f64());
        let outcome = if r.transient.is_some() {
            "transient"
        } else if r.failure.is_some() {
            "failing"
        } else {
            "verified"
        };
        self.metrics
            .checks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        r
    }

    /// Publishes an Event about `sd`; failures are logged, never fatal.
    pub async fn event(&self, sd: &SendingDomain, warning: bool, reason: &str, message: &str) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &sd.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "publishing an event failed");
        }
    }
}

fn error_policy(sd: Arc<SendingDomain>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            category: err.category(),
        })
        .inc();
    if let Error::Superseded { .. } = err {
        // Not a failure: the object that replaced it has its own reconcile.
        tracing::info!(
            namespace = %sd.namespace().unwrap_or_default(),
            name = %sd.name_any(),
            error = %err,
            "write refused: the object changed identity"
        );
        return Action::await_change();
    }
    tracing::warn!(
        namespace = %sd.namespace().unwrap_or_default(),
        name = %sd.name_any(),
        category = err.category(),
        error = %err,
        "reconcile failed"
    );
    Action::requeue(Duration::from_secs(10))
}

/// Runs the controller until the future is dropped.
pub async fn run_controller(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let domains: Api<SendingDomain> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::all(client);
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(sel) = &ctx.config.selector {
        wc = wc.labels(sel);
    }
    let store_slot: Arc<OnceLock<Store<SendingDomain>>> = Arc::new(OnceLock::new());
    let slot = store_slot.clone();
    // The operator's own Secrets, watched whole (not just metadata) so that a
    // reconcile in steady state reads its keys from memory instead of the API.
    let (secret_store, secret_writer) = reflector::store();
    let secret_events = watcher::watcher(
        secrets,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
    )
    .default_backoff()
    .modify(|s: &mut Secret| s.managed_fields_mut().clear())
    .reflect(secret_writer)
    .touched_objects();
    *write(&ctx.secrets) = Some(secret_store);
    let controller = Controller::new(domains.clone(), wc.clone())
        .owns_stream(secret_events)
        // When a claim on a domain changes (e.g. the older claim is deleted), the
        // other claims on the same domain are reconciled too.
        .watches(domains, wc, move |changed| {
            let rivals: Vec<ObjectRef<SendingDomain>> = slot
                .get()
                .map(|s| {
                    s.state()
                        .iter()
                        .filter(|d| {
                            d.spec.domain == changed.spec.domain
                                && d.metadata.uid != changed.metadata.uid
                        })
                        .map(|d| ObjectRef::from_obj(&**d))
                        .collect()
                })
                .unwrap_or_default();
            rivals
        });
    let store = controller.store();
    let _ = store_slot.set(store.clone());
    *write(&ctx.store) = Some(store.clone());
    let metrics = ctx.metrics.clone();
    let run = controller
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    tokio::select! {
        () = run => {}
        () = count_domains(store, metrics) => {}
    }
}

/// How often `anypost_sendingdomains` is recounted.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(10);

/// Keeps `anypost_sendingdomains` up to date from the controller's cache.
async fn count_domains(store: Store<SendingDomain>, metrics: Arc<Metrics>) {
    let mut shown: Vec<ReadyLabels> = Vec::new();
    loop {
        let counts = count_by_ready(&store.state());
        for gone in shown.iter().filter(|l| !counts.contains_key(*l)) {
            metrics.domains.remove(gone);
        }
        for (labels, n) in &counts {
            metrics.domains.get_or_create(labels).set(*n);
        }
        shown = counts.into_keys().collect();
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
}

/// SendingDomains counted by their Ready condition's status and reason.
pub fn count_by_ready(
    domains: &[Arc<SendingDomain>],
) -> std::collections::HashMap<ReadyLabels, i64> {
    let mut counts = std::collections::HashMap::new();
    for d in domains {
        let ready = d
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, conditions::READY));
        let labels = match ready {
            Some(c) => ReadyLabels {
                ready: c.status.clone(),
                reason: c.reason.clone(),
            },
            None => ReadyLabels {
                ready: "Unknown".into(),
                reason: "NotReconciled".into(),
            },
        };
        *counts.entry(labels).or_insert(0) += 1;
    }
    counts
}

/// The namespace the operator lives in.
fn operator_namespace(flag: Option<String>) -> String {
    flag.or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .unwrap_or_else(|| "anypost-system".to_string())
}

/// `anypost-operator run`.
pub fn main(args: RunArgs) -> ExitCode {
    telemetry::init_logging(args.log_format == LogFormat::Json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // What failed, and the error that made it fail (whose text already
            // carries its own causes; printing the whole chain repeats them).
            let msg = match e.chain().nth(1) {
                Some(cause) if !e.to_string().contains(&cause.to_string()) => {
                    format!("{e}: {cause}")
                }
                _ => e.to_string(),
            };
            tracing::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let namespace = operator_namespace(args.namespace.clone());
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());

    let identity_key = identity::load_or_create(client.clone(), &namespace).await?;
    readiness
        .identity
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(%namespace, zone = %args.zone.zone, "identity key loaded");

    let http = tokio::spawn(telemetry::serve_http(
        args.http_listen,
        metrics.clone(),
        readiness.clone(),
    ));

    // One election for every writer: the controller and the RFC2136 sync.
    let (leader_tx, mut leader_rx) = watch::channel(!args.leader_election);
    let election = args.leader_election.then(|| {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
        let task = tokio::spawn(leader::run(
            client.clone(),
            namespace.clone(),
            identity.clone(),
            leader_tx,
        ));
        (identity, task)
    });
    let leading = leader_rx.clone();

    let (publisher, verifier, dns_task) = crate::backend::start(
        client.clone(),
        &args,
        readiness.clone(),
        metrics.clone(),
        leader_rx.clone(),
    )
    .await?;

    let ctx = Arc::new(Context::new(
        client.clone(),
        Config::from_args(&args),
        identity_key,
        publisher,
        verifier,
        metrics.clone(),
        args.verify_concurrency,
    ));

    let controller_loop = async move {
        loop {
            while !*leader_rx.borrow_and_update() {
                if leader_rx.changed().await.is_err() {
                    return;
                }
            }
            metrics.leader.set(1);
            tracing::info!("starting the controller");
            let ctx = ctx.clone();
            tokio::select! {
                _ = run_controller(ctx) => {}
                _ = async {
                    while *leader_rx.borrow_and_update() {
                        if leader_rx.changed().await.is_err() { futures::future::pending::<()>().await; }
                    }
                } => {
                    tracing::warn!("stopped the controller: no longer the leader");
                }
            }
            metrics.leader.set(0);
            // Only the leader counts SendingDomains, so a sum over replicas is right.
            metrics.domains.clear();
        }
    };

    tokio::select! {
        _ = controller_loop => anyhow::bail!("the controller stopped"),
        r = dns_task => r.context("the DNS zone task stopped")?.context("the DNS zone failed")?,
        r = http => r.context("the HTTP server stopped")?.context("the HTTP server failed")?,
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    // The controller has stopped (select dropped it): hand the lease over now
    // rather than let the next leader wait for it to run out.
    if let Some((identity, task)) = election {
        task.abort();
        if *leading.borrow() {
            match leader::release(client, &namespace, &identity).await {
                Ok(true) => tracing::info!(lease = leader::LEASE_NAME, "released the leader lease"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "releasing the leader lease failed; it runs out by itself")
                }
            }
        }
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "anypost-operator".into())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SendingDomainSpec, SendingDomainStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn domain(ready: Option<(&str, &str)>) -> Arc<SendingDomain> {
        let mut sd = SendingDomain::new(
            "d",
            SendingDomainSpec {
                domain: "example.com".into(),
                dkim: None,
                tracking: None,
            },
        );
        sd.status = ready.map(|(status, reason)| SendingDomainStatus {
            conditions: vec![Condition {
                type_: conditions::READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::now()),
            }],
            ..Default::default()
        });
        Arc::new(sd)
    }

    #[test]
    fn domains_are_counted_by_ready_status_and_reason() {
        let counts = count_by_ready(&[
            domain(Some(("True", "Verified"))),
            domain(Some(("True", "Verified"))),
            domain(Some(("False", "DomainConflict"))),
            domain(None),
        ]);
        let n = |ready: &str, reason: &str| {
            counts.get(&ReadyLabels {
                ready: ready.into(),
                reason: reason.into(),
            })
        };
        assert_eq!(n("True", "Verified"), Some(&2));
        assert_eq!(n("False", "DomainConflict"), Some(&1));
        assert_eq!(n("Unknown", "NotReconciled"), Some(&1));
        assert_eq!(counts.len(), 3);
    }
}
