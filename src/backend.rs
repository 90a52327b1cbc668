//! Wiring for `run`: the zone backend the controller publishes through, and the
//! resolver it verifies with.

use crate::cli::{RunArgs, ZoneBackend};
use crate::controller::reconcile::CheckRequest;
use crate::controller::status::CheckResult;
use crate::controller::{Publisher, Verifier};
use crate::dns::{DnsServer, ZoneConfig, ZoneHandle, watch_domains};
use crate::naming::SELECTORS;
use crate::telemetry::Readiness;
use crate::verify::{Expected, Verdict, resolve::Resolver};
use anyhow::Context as _;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The task serving (or pushing) the zone; it ends only on failure.
pub type DnsTask = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Verifies through the configured resolvers.
struct ResolverVerifier {
    resolver: Resolver,
    expected: Expected,
}

impl Verifier for ResolverVerifier {
    fn check(&self, req: CheckRequest) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            let mut expected = self.expected.clone();
            for (sel, key) in SELECTORS.iter().zip(req.dkim_keys) {
                expected.dkim_keys.insert(sel.to_string(), key);
            }
            let outcome = crate::verify::verify(&self.resolver, &req.records, &expected).await;
            let pair = |f: &crate::api::Failure| (f.code.clone(), f.message.clone());
            CheckResult {
                failure: outcome.verdict.failure().map(pair),
                transient: outcome.verdict.transient().map(str::to_string),
                tracking_failure: match &outcome.tracking {
                    Some(Verdict::Failed(f)) => Some(pair(f)),
                    _ => None,
                },
                tracking_transient: outcome
                    .tracking
                    .as_ref()
                    .and_then(|v| v.transient())
                    .map(str::to_string),
                records: outcome.records,
            }
        })
    }
}

/// Starts the zone backend and builds the verifier.
pub async fn start(
    client: kube::Client,
    args: &RunArgs,
    readiness: Arc<Readiness>,
    metrics: Arc<crate::telemetry::Metrics>,
    leader: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Arc<dyn Publisher>, Arc<dyn Verifier>, DnsTask)> {
    let cfg = ZoneConfig::from_args(&args.zone)?;
    let resolver = Resolver::new(&args.resolvers, args.resolver_timeout)
        .context("configuring the verification resolver (--resolver)")?;
    let verifier = Arc::new(ResolverVerifier {
        resolver,
        expected: Expected {
            zone: args.zone.zone.clone(),
            mx_host: Some(args.zone.mx_host.clone()),
            spf_include: Some(args.zone.spf_include.clone()),
            tracking_host: Some(args.zone.tracking_host.clone()),
            dkim_keys: Default::default(),
        },
    });
    match args.zone_backend {
        ZoneBackend::Embedded => {
            let handle = ZoneHandle::new();
            metrics.register(|r| handle.metrics().register(r));
            // Bind before anything else so a taken port is a clear startup error.
            let server = DnsServer::bind(args.dns_listen).await?;
            tracing::info!(listen = %server.local_addr(), zone = %args.zone.zone, "serving the zone (UDP and TCP)");
            tokio::spawn(watch_domains(
                client,
                cfg,
                handle.clone(),
                args.selector.clone(),
            ));
            let ready_handle = handle.clone();
            tokio::spawn(async move {
                while !ready_handle.is_loaded() {
                    ready_handle.changed().await;
                }
                readiness.zone.store(true, Ordering::Relaxed);
            });
            let allow = args.allow_axfr.clone();
            let serving = handle.clone();
            let task = tokio::spawn(async move {
                server
                    .run(serving, allow, futures::future::pending())
                    .await
                    .map_err(anyhow::Error::from)
            });
            Ok((Arc::new(handle), verifier, task))
        }
        ZoneBackend::Rfc2136 => {
            use crate::dns::rfc2136::{self, Rfc2136Config, Rfc2136Publisher, Rfc2136Sync};
            let config = Rfc2136Config::from_args(&args.rfc2136)?;
            let publisher = Rfc2136Publisher::new(&cfg.zone, &config);
            rfc2136::prime(&publisher, &config, &cfg.zone).await;
            tracing::info!(
                server = %config.server,
                key = %config.key_name,
                algorithm = config.algorithm.as_str(),
                zone = %cfg.zone,
                "syncing the zone to the server with RFC2136 UPDATE"
            );
            // Only the leader writes: the sync follows the controller's election.
            let sync_metrics = Arc::new(rfc2136::SyncMetrics::default());
            metrics.register(|r| sync_metrics.register(r));
            let sync = Rfc2136Sync {
                client,
                zone: cfg,
                config,
                selector: args.selector.clone(),
                publisher: publisher.clone(),
                leader,
                metrics: sync_metrics,
            };
            let task = tokio::spawn(async move {
                rfc2136::run(sync, move || readiness.zone.store(true, Ordering::Relaxed)).await;
                anyhow::bail!("the rfc2136 sync stopped: the SendingDomain watch ended")
            });
            Ok((Arc::new(publisher), verifier, task))
        }
    }
}
