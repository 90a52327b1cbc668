//! Keeping the served zone in step with the SendingDomains.
//!
//! Every replica rebuilds the whole zone from its cache of SendingDomains after
//! each change: the zone is a pure function of the SendingDomains and of what
//! their statuses may be believed for (the identity key, the claim policy), so
//! there is no incremental state to get wrong, and rebuilding 10,000 domains takes
//! milliseconds. Nothing is served before the identity key is known.

use super::zone_handle::ZoneHandle;
use crate::adapters::kube::Domains;
use crate::adapters::kube::identity::TrustState;
use crate::core::trust::Trust;
use crate::core::zone::{ZoneConfig, desired_zone};
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// Changes arriving within this window are served together; well under the
/// one-second promise.
const COALESCE: Duration = Duration::from_millis(100);

/// Republishes the zone into `handle` after every change of `domains` or of
/// `trust`, until the future is dropped. `on_loaded` runs once the first complete
/// zone is served.
pub async fn keep_publishing(
    domains: Arc<Domains>,
    cfg: ZoneConfig,
    mut trust: watch::Receiver<TrustState>,
    handle: ZoneHandle,
    metrics: Arc<Metrics>,
    on_loaded: impl FnOnce() + Send,
) {
    let mut changes = domains.changes();
    if !domains.ready().await {
        return;
    }
    let cfg = Arc::new(cfg);
    let mut on_loaded = Some(on_loaded);
    loop {
        changes.mark_unchanged();
        let believed = match &*trust.borrow_and_update() {
            TrustState::Trusted(t) => Some(t.clone()),
            _ => None,
        };
        if let Some(trust) = believed {
            // Building and indexing the zone takes a while with many domains:
            // on a blocking thread, so the runtime's workers (the watches, the
            // reconciles, the HTTP endpoints) never wait for it.
            let (cfg, domains, handle, metrics) = (
                cfg.clone(),
                domains.clone(),
                handle.clone(),
                metrics.clone(),
            );
            let rebuilt = tokio::task::spawn_blocking(move || {
                republish(&cfg, &trust, &domains, &handle, &metrics);
            })
            .await;
            if rebuilt.is_err() {
                return;
            }
            if let Some(loaded) = on_loaded.take() {
                loaded();
            }
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            r = trust.changed() => if r.is_err() { return },
        }
        tokio::time::sleep(COALESCE).await;
    }
}

/// Builds the zone from every SendingDomain the cache holds now and serves it.
fn republish(
    cfg: &ZoneConfig,
    trust: &Trust,
    domains: &Domains,
    handle: &ZoneHandle,
    metrics: &Metrics,
) {
    let all = domains.all();
    let zone = desired_zone(cfg, trust, &all);
    let untrusted = all.iter().filter(|d| trust.refuses(d)).count();
    metrics.untrusted_statuses.set(untrusted as i64);
    if let Some(published) = handle.publish_counted(zone) {
        let changed = published.changed;
        info!(
            serial = published.serial,
            domains = all.len(),
            untrusted,
            created = changed.created,
            replaced = changed.replaced,
            deleted = changed.deleted,
            "zone published"
        );
    }
}
