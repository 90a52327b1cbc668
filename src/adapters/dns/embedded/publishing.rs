//! Keeping the served zone in step with the SendingDomains.
//!
//! Every replica rebuilds the whole zone from its cache of SendingDomains after
//! each change: the zone is a pure function of the SendingDomains, so there is no
//! incremental state to get wrong, and rebuilding 10,000 domains takes
//! milliseconds.

use super::zone_handle::ZoneHandle;
use crate::adapters::kube::Domains;
use crate::core::zone::{ZoneConfig, desired_zone, plan};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Changes arriving within this window are served together; well under the
/// one-second promise.
const COALESCE: Duration = Duration::from_millis(100);

/// Republishes the zone into `handle` after every change of `domains`, until the
/// future is dropped. `on_loaded` runs once the first complete zone is served.
pub async fn keep_publishing(
    domains: Arc<Domains>,
    cfg: ZoneConfig,
    handle: ZoneHandle,
    on_loaded: impl FnOnce() + Send,
) {
    let mut changes = domains.changes();
    if !domains.ready().await {
        return;
    }
    let mut on_loaded = Some(on_loaded);
    loop {
        changes.mark_unchanged();
        let all = domains.all();
        let zone = desired_zone(&cfg, &all);
        let before = handle.current();
        let counts = before.as_deref().map(|b| plan(b, &zone).counts());
        if let Some(serial) = handle.publish(zone) {
            let (created, replaced, deleted) = counts.unwrap_or_default();
            info!(
                serial,
                domains = all.len(),
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
        if changes.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(COALESCE).await;
    }
}
