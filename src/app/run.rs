//! `anypost-operator run`: connects to the API, loads the identity key, starts the
//! shared SendingDomain cache, the zone backend (embedded server or RFC2136 sync),
//! the HTTP endpoints, the leader election and the controller, and stops them all
//! on SIGTERM, handing the Lease over.

use super::cli::{LogFormat, RunArgs, ZoneBackend, flag_error};
use crate::adapters::dns::embedded::{DnsServer, ServeOptions, ZoneHandle, keep_publishing};
use crate::adapters::dns::rfc2136::{
    self, Rfc2136Config, Rfc2136Publisher, Rfc2136Sync, SyncMetrics,
};
use crate::adapters::http::{self, Readiness};
use crate::adapters::kube::leader::{Elector, LeaseTimings};
use crate::adapters::kube::{Domains, LeaderGuard, client, identity, leader};
use crate::adapters::resolver::{Resolver, ResolverVerifier};
use crate::controller::{self, Context};
use crate::core::ports::{Publisher, Verifier};
use crate::core::verify::Expected;
use crate::core::zone::ZoneConfig;
use crate::telemetry::{self, Metrics};
use anyhow::Context as _;
use kube::Client;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let me = replica_identity();
    let guard = match args.leader_election {
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
    let readiness = Arc::new(Readiness::default());

    let identity_key = identity::load_or_create(clients.plain.clone(), &namespace).await?;
    readiness.identity.store(true, Ordering::Relaxed);
    tracing::info!(%namespace, zone = %plan.zone.zone, "identity key loaded");
    let http = tokio::spawn(http::serve(
        args.http_listen,
        metrics.clone(),
        readiness.clone(),
    ));

    let (domains, watch_domains) = Domains::start(client.clone(), args.selector.as_deref());
    let watch_domains = tokio::spawn(watch_domains);
    // One election for every writer: the controller and the RFC2136 sync.
    let lease = leader::lease_name(args.shard.as_deref(), args.selector.as_deref());
    let election = args.leader_election.then(|| {
        let elector = Elector::new(clients.plain.clone(), &namespace, &lease, &me, plan.timings);
        tracing::info!(%lease, %namespace, identity = %me, "electing a leader");
        tokio::spawn(leader::run(elector, guard.clone()))
    });
    let leader_rx = guard.leading();
    let mut dns = plan.dns;
    dns.cookies = args.dns.cookie_secrets(&identity_key);
    let (publisher, zone_task) = start_zone(
        &args,
        plan.zone,
        dns,
        plan.rfc2136,
        domains.clone(),
        &readiness,
        &metrics,
        guard.clone(),
    )
    .await?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        args.controller_config(),
        identity_key,
        publisher,
        plan.verifier,
        metrics,
        domains,
    ));
    let leading = leader_rx.clone();
    tokio::select! {
        () = controller::runner::run(ctx, leader_rx) => anyhow::bail!("the controller stopped"),
        r = zone_task => r.context("the DNS zone task stopped")?.context("the DNS zone failed")?,
        r = watch_domains => { r.context("the SendingDomain watch stopped")?; anyhow::bail!("the SendingDomain watch ended") }
        r = http => r.context("the HTTP server stopped")?.context("the HTTP server failed")?,
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    // The controller has stopped (select dropped it): take no new traffic, hand
    // the lease over now rather than let the next leader wait for it to run out,
    // and keep answering DNS while load balancers drop this replica.
    readiness.draining.store(true, Ordering::Relaxed);
    if let Some(task) = election {
        task.abort();
        if *leading.borrow() {
            guard.revoke();
            release(clients.plain, &namespace, &lease, &me).await;
        }
    }
    if !args.shutdown_drain.is_zero() {
        tracing::info!(
            drain = %crate::core::duration::format(args.shutdown_drain),
            "still answering DNS while load balancers drop this replica"
        );
        tokio::time::sleep(args.shutdown_drain).await;
    }
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
/// a taken port is a clear startup error) or the RFC2136 sync.
#[allow(clippy::too_many_arguments)]
async fn start_zone(
    args: &RunArgs,
    zone: ZoneConfig,
    dns: ServeOptions,
    rfc2136: Option<Rfc2136Config>,
    domains: Arc<Domains>,
    readiness: &Arc<Readiness>,
    metrics: &Arc<Metrics>,
    guard: LeaderGuard,
) -> anyhow::Result<(Arc<dyn Publisher>, ZoneTask)> {
    let ready = {
        let readiness = readiness.clone();
        move || readiness.zone.store(true, Ordering::Relaxed)
    };
    let Some(config) = rfc2136 else {
        let handle = ZoneHandle::new();
        metrics.register(|r| handle.metrics().register(r));
        let server = DnsServer::bind(args.dns_listen).await?;
        tracing::info!(listen = %server.local_addr(), zone = %zone.zone, "serving the zone (UDP and TCP)");
        tokio::spawn(keep_publishing(domains, zone, handle.clone(), ready));
        let serving = handle.clone();
        let task = tokio::spawn(async move {
            server
                .run_with(serving, dns, futures::future::pending())
                .await
                .map_err(anyhow::Error::from)
        });
        return Ok((Arc::new(handle), task));
    };
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
    metrics.register(|r| sync_metrics.register(r));
    let sync = Rfc2136Sync {
        domains,
        zone,
        config,
        publisher: publisher.clone(),
        leader: guard.leading(),
        guard,
        metrics: sync_metrics,
    };
    let task = tokio::spawn(async move {
        rfc2136::run(sync, ready).await;
        anyhow::bail!("the rfc2136 sync stopped: the SendingDomain watch ended")
    });
    Ok((Arc::new(publisher), task))
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
