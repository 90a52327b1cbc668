//! `anypost-operator run`: connects to the API, starts the shared SendingDomain
//! cache, follows the identity key and the claim policy, starts the zone backend
//! (embedded server or RFC2136 sync), the HTTP endpoints, and (unless the role is
//! `dns`) the leader election and the controller; stops them all on SIGTERM,
//! handing the Lease over.

use super::cli::{LogFormat, Role, RunArgs, ZoneBackend, flag_error};
use crate::adapters::dns::embedded::{
    CookieSecrets, DnsServer, ServeOptions, ZoneHandle, keep_publishing,
};
use crate::adapters::dns::rfc2136::{
    self, Rfc2136Config, Rfc2136Publisher, Rfc2136Sync, SyncMetrics,
};
use crate::adapters::http;
use crate::adapters::kube::identity::{Follower, IdentityError, PolicySource, TrustState};
use crate::adapters::kube::leader::{Elector, LeaseTimings};
use crate::adapters::kube::{Domains, LeaderGuard, client, identity, leader};
use crate::adapters::resolver::{Resolver, ResolverVerifier};
use crate::controller::{self, Context};
use crate::core::ports::{Publisher, Verifier};
use crate::core::verify::Expected;
use crate::core::zone::{DeleteGuard, ZoneConfig};
use crate::telemetry::health::{Flag, Health};
use crate::telemetry::{self, Metrics};
use anyhow::Context as _;
use kube::Client;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long the DNS server waits for the identity key, for its cookie secret.
const COOKIE_KEY_WAIT: Duration = Duration::from_secs(10);

/// The task serving (or pushing) the zone; it ends only on failure.
type ZoneTask = tokio::task::JoinHandle<anyhow::Result<()>>;

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

/// What `run` starts, checked before anything connects.
struct Plan {
    zone: ZoneConfig,
    dns: ServeOptions,
    rfc2136: Option<Rfc2136Config>,
    verifier: Arc<dyn Verifier>,
    timings: LeaseTimings,
}

fn plan(args: &RunArgs) -> anyhow::Result<Plan> {
    if args.role == Role::Dns && args.zone_backend != ZoneBackend::Embedded {
        anyhow::bail!(
            "--role dns serves the embedded zone: it needs --zone-backend embedded (with rfc2136 the controller pushes the zone)"
        );
    }
    let zone = ZoneConfig::new(&args.zone.settings()).map_err(flag_error)?;
    let dns = args.dns.options(&args.allow_axfr).map_err(flag_error)?;
    let rfc2136 = match args.zone_backend {
        ZoneBackend::Embedded => None,
        ZoneBackend::Rfc2136 => {
            Some(Rfc2136Config::new(&args.rfc2136.settings()).map_err(flag_error)?)
        }
    };
    let resolver = Resolver::new(&args.resolvers, args.resolver_timeout)
        .context("configuring the verification resolver (--resolver)")?;
    let verifier = Arc::new(ResolverVerifier {
        resolver,
        expected: Expected {
            zone: zone.zone.clone(),
            mx_host: Some(zone.mx_host.clone()),
            spf_include: Some(zone.spf_include.clone()),
            tracking_host: Some(zone.tracking_host.clone()),
            dkim_keys: Default::default(),
        },
    });
    Ok(Plan {
        zone,
        dns,
        rfc2136,
        verifier,
        timings: args.lease_timings().map_err(flag_error)?,
    })
}

/// What every role shares once connected.
struct Shared {
    /// The API client whose writes the leader's fence guards.
    client: Client,
    /// The unfenced client: the election itself, and the identity Secret.
    plain: Client,
    /// This replica's name in the Lease.
    me: String,
    guard: LeaderGuard,
    namespace: String,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    domains: Arc<Domains>,
    trust: watch::Receiver<TrustState>,
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let policy = PolicySource::open(args.claim_policy.clone())?;
    let me = replica_identity();
    // The dns role writes nothing: its guard never opens.
    let guard = match args.leader_election || args.role == Role::Dns {
        true => LeaderGuard::elected(),
        false => LeaderGuard::always(),
    };
    let clients = client::connect(&me, &guard)
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let client = clients.fenced.clone();
    let namespace = operator_namespace(args.namespace.clone());
    let metrics = Arc::new(Metrics::default());
    metrics.register(|r| guard.register(r));
    let health = Arc::new(Health::default());
    let (domains, watch_domains) = Domains::start(
        client.clone(),
        args.selector.as_deref(),
        args.claim_scope.as_deref(),
    );
    let follower = Follower {
        client: clients.plain.clone(),
        namespace: namespace.clone(),
        domains: domains.clone(),
        may_create: args.role != Role::Dns,
        policy,
        metrics: metrics.clone(),
    };
    follower.check().await?;
    let (trust_tx, trust) = watch::channel(TrustState::Starting);
    let following = tokio::spawn(follower.run(trust_tx));
    health.ready_when(
        "identity",
        identity_loaded(
            trust.clone(),
            format!("{namespace}/{}", identity::SECRET_NAME),
        ),
    );
    health.ready_when("watch", domains.fresh_within(args.stale_after));
    tracing::info!(%namespace, zone = %plan.zone.zone, role = ?args.role, "following the identity Secret");
    let http = tokio::spawn(http::serve(
        args.http_listen,
        metrics.clone(),
        health.clone(),
    ));
    let shared = Shared {
        client,
        plain: clients.plain,
        me,
        guard,
        namespace,
        metrics,
        health,
        domains,
        trust,
    };
    let watch_domains = tokio::spawn(watch_domains);
    let (probing, plain) = (shared.domains.clone(), shared.plain.clone());
    let every = (args.stale_after / 5).clamp(Duration::from_secs(1), Duration::from_secs(30));
    tokio::spawn(async move { probing.probe(plain, every).await });
    let running = async {
        match args.role {
            Role::Dns => serve_dns(&args, plan, &shared).await,
            Role::All | Role::Controller => control(&args, plan, &shared).await,
        }
    };
    let mut following = following;
    let follower_ended = |r: Result<Result<(), IdentityError>, tokio::task::JoinError>| {
        r.context("the identity follower stopped")??;
        anyhow::bail!("the identity follower ended")
    };
    tokio::select! {
        biased;
        r = &mut following => follower_ended(r),
        r = running => match r {
            // The zone builder ends when the identity follower does: the
            // follower's error (a missing namespace, say) is the one to report.
            Err(e) => match tokio::time::timeout(Duration::from_secs(1), &mut following).await {
                Ok(r) => follower_ended(r),
                Err(_) => Err(e),
            },
            ok => ok,
        },
        r = watch_domains => { r.context("the SendingDomain watch stopped")?; anyhow::bail!("the SendingDomain watch ended") }
        r = http => r.context("the HTTP server stopped")?.context("the HTTP server failed"),
    }
}

/// A readiness check: an identity key is in use.
fn identity_loaded(trust: watch::Receiver<TrustState>, secret: String) -> telemetry::health::Check {
    Box::new(move || match &*trust.borrow() {
        TrustState::Trusted(_) => Ok(()),
        TrustState::Starting => Err("the identity Secret has not been read yet".into()),
        TrustState::Refused(problem) => Err(problem.message(&secret)),
    })
}

/// `--role dns`: serves the zone until SIGTERM; writes nothing.
async fn serve_dns(args: &RunArgs, plan: Plan, s: &Shared) -> anyhow::Result<()> {
    let (_, zone_task) = start_zone(args, plan.zone, plan.dns, None, s).await?;
    tokio::select! {
        r = zone_task => r.context("the DNS zone task stopped")?.context("the DNS zone failed")?,
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    s.health.drain();
    drain(args).await;
    Ok(())
}

/// Keeps answering DNS for `--shutdown-drain` while load balancers drop this
/// replica (it already fails /readyz).
async fn drain(args: &RunArgs) {
    if !args.shutdown_drain.is_zero() {
        tracing::info!(
            drain = %crate::core::duration::format(args.shutdown_drain),
            "still answering DNS while load balancers drop this replica"
        );
        tokio::time::sleep(args.shutdown_drain).await;
    }
}

/// `--role controller` or `all`: the zone backend, the leader election and the
/// controller, until SIGTERM; then the Lease is handed over.
async fn control(args: &RunArgs, plan: Plan, s: &Shared) -> anyhow::Result<()> {
    // One election for every writer: the controller and the RFC2136 sync.
    let lease = leader::lease_name(args.shard.as_deref(), args.selector.as_deref());
    let election = args.leader_election.then(|| {
        let elector = Elector::new(s.plain.clone(), &s.namespace, &lease, &s.me, plan.timings);
        tracing::info!(%lease, namespace = %s.namespace, identity = %s.me, "electing a leader");
        tokio::spawn(leader::run(elector, s.guard.clone()))
    });
    let leader_rx = s.guard.leading();
    let (publisher, zone_task) = start_zone(args, plan.zone, plan.dns, plan.rfc2136, s).await?;
    let identity_secret = format!("{}/{}", s.namespace, identity::SECRET_NAME);
    let ctx = Arc::new(Context::new(
        s.client.clone(),
        args.controller_config(),
        (s.trust.clone(), identity_secret),
        publisher,
        plan.verifier,
        s.metrics.clone(),
        s.domains.clone(),
    ));
    s.health.live_when(
        "controller",
        ctx.progress.within("reconciles", args.stuck_after),
    );
    let leading = leader_rx.clone();
    tokio::select! {
        () = controller::runner::run(ctx, leader_rx) => anyhow::bail!("the controller stopped"),
        r = zone_task => r.context("the DNS zone task stopped")?.context("the DNS zone failed")?,
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    // The controller has stopped (select dropped it): take no new traffic, hand
    // the lease over now rather than let the next leader wait for it to run out,
    // and keep answering DNS while load balancers drop this replica.
    s.health.drain();
    if let Some(task) = election {
        task.abort();
        if *leading.borrow() {
            s.guard.revoke();
            release(s.plain.clone(), &s.namespace, &lease, &s.me).await;
        }
    }
    drain(args).await;
    Ok(())
}

/// This replica's name in the Lease and in the User-Agent of its requests: the
/// pod's name (`POD_NAME`, from the downward API), else `<hostname>-<pid>`.
fn replica_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()))
}

async fn release(client: Client, namespace: &str, lease: &str, identity: &str) {
    match leader::release(client, namespace, lease, identity).await {
        Ok(true) => tracing::info!(%lease, "released the leader lease"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "releasing the leader lease failed; it runs out by itself")
        }
    }
}

/// Starts the zone backend: the embedded server (bound before anything else, so
/// a taken port is a clear startup error; the controller role builds the zone
/// without serving it, to know what the DNS replicas serve) or the RFC2136 sync.
async fn start_zone(
    args: &RunArgs,
    zone: ZoneConfig,
    dns: ServeOptions,
    rfc2136: Option<Rfc2136Config>,
    s: &Shared,
) -> anyhow::Result<(Arc<dyn Publisher>, ZoneTask)> {
    let loaded = Arc::new(Flag::default());
    let check = loaded.clone();
    s.health.ready_when(
        "zone",
        Box::new(move || match check.get() {
            true => Ok(()),
            false => Err("not built yet from a complete list of SendingDomains".into()),
        }),
    );
    let ready = move || loaded.set(true);
    let Some(config) = rfc2136 else {
        let handle = ZoneHandle::new();
        let server = match args.role {
            Role::Controller => None,
            Role::All | Role::Dns => Some(DnsServer::bind(args.dns_listen).await?),
        };
        // The DNS server's metrics come from the replicas that serve.
        if server.is_some() {
            s.metrics.register(|r| handle.metrics().register(r));
        }
        // The zone follows the cache for as long as the process runs: if that
        // ever stops, so does the process (a replica serving a zone frozen in
        // time must not stay up).
        let publishing = tokio::spawn(keep_publishing(
            s.domains.clone(),
            zone.clone(),
            s.trust.clone(),
            handle.clone(),
            s.metrics.clone(),
            ready,
        ));
        let publishing = async move {
            publishing.await?;
            anyhow::bail!(
                "the zone builder stopped: the SendingDomain watch or the identity follower ended"
            )
        };
        let Some(server) = server else {
            tracing::info!(zone = %zone.zone, "building the zone to follow what the DNS replicas serve (no DNS listener)");
            return Ok((Arc::new(handle), tokio::spawn(publishing)));
        };
        tracing::info!(listen = %server.local_addr(), zone = %zone.zone, "serving the zone (UDP and TCP)");
        let mut dns = dns;
        dns.cookies = cookie_secrets(args, s.trust.clone()).await;
        let serving = handle.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                r = server.run_with(serving, dns, futures::future::pending()) => r.map_err(anyhow::Error::from),
                r = publishing => r,
            }
        });
        return Ok((Arc::new(handle), task));
    };
    Ok(start_rfc2136(zone, config, args.rfc2136.delete_guard(), s, ready).await)
}

/// The DNS server's cookie secret, derived from the identity key every replica
/// shares: waits briefly for the key to be judged; without a key in use, cookies
/// are off (answers stay correct, only rate limiting cannot exempt anyone).
async fn cookie_secrets(
    args: &RunArgs,
    mut trust: watch::Receiver<TrustState>,
) -> Option<CookieSecrets> {
    if !args.dns.dns_cookies {
        return None;
    }
    let judged = |t: &TrustState| !matches!(t, TrustState::Starting);
    let _ = tokio::time::timeout(COOKIE_KEY_WAIT, trust.wait_for(judged)).await;
    let state = trust.borrow().clone();
    let secrets = match state {
        TrustState::Trusted(t) => t.identity_key().and_then(|k| args.dns.cookie_secrets(k)),
        _ => None,
    };
    if secrets.is_none() {
        tracing::warn!("no identity key in use: the DNS server answers without cookies");
    }
    secrets
}

/// Starts the RFC2136 sync (the leader pushes, standbys read).
async fn start_rfc2136(
    zone: ZoneConfig,
    config: Rfc2136Config,
    deletes: DeleteGuard,
    s: &Shared,
    ready: impl FnOnce() + Send + 'static,
) -> (Arc<dyn Publisher>, ZoneTask) {
    let publisher = Rfc2136Publisher::new(&zone.zone, &config);
    rfc2136::prime(&publisher, &config, &zone.zone).await;
    tracing::info!(
        server = %config.server,
        key = %config.key_name,
        algorithm = config.algorithm.as_str(),
        zone = %zone.zone,
        "syncing the zone to the server with RFC2136 UPDATE"
    );
    let sync_metrics = Arc::new(SyncMetrics::default());
    s.metrics.register(|r| sync_metrics.register(r));
    let sync = Rfc2136Sync {
        domains: s.domains.clone(),
        zone,
        config,
        publisher: publisher.clone(),
        leader: s.guard.leading(),
        guard: s.guard.clone(),
        deletes,
        metrics: sync_metrics,
        trust: s.trust.clone(),
    };
    let task = tokio::spawn(async move {
        rfc2136::run(sync, ready).await;
        anyhow::bail!("the rfc2136 sync stopped: the SendingDomain watch ended")
    });
    (Arc::new(publisher), task)
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
