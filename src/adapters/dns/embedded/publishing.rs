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
use crate::core::zone::{ZoneConfig, desired_zone, plan};
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
    let mut on_loaded = Some(on_loaded);
    loop {
        changes.mark_unchanged();
        let believed = match &*trust.borrow_and_update() {
            TrustState::Trusted(t) => Some(t.clone()),
            _ => None,
        };
        if let Some(trust) = believed {
            let all = domains.all();
            let zone = desired_zone(&cfg, &trust, &all);
            let untrusted = all.iter().filter(|d| trust.refuses(d)).count();
            metrics.untrusted_statuses.set(untrusted as i64);
            let before = handle.current();
            let counts = before.as_deref().map(|b| plan(b, &zone).counts());
            if let Some(serial) = handle.publish(zone) {
                let (created, replaced, deleted) = counts.unwrap_or_default();
                info!(
                    serial,
                    domains = all.len(),
                    untrusted,
                    created,
                    replaced,
                    deleted,
                    "zone published"
                );
            }
            drop(all);
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
