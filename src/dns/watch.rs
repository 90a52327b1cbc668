//! Keeping the served zone in step with the SendingDomains.
//!
//! Every replica runs its own watch (all namespaces) and rebuilds the whole zone
//! from its cache after each change: the zone is a pure function of the
//! SendingDomains, so there is no incremental state to get wrong, and rebuilding
//! 10,000 domains takes milliseconds.

use super::diff::plan;
use super::server::ZoneHandle;
use super::zone::{ZoneConfig, desired_zone};
use crate::api::SendingDomain;
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Changes arriving within this window are served together; well under the
/// one-second promise.
const COALESCE: Duration = Duration::from_millis(100);

/// Watches every SendingDomain and republishes the zone into `handle` after each
/// change. Runs until the future is dropped; watch errors are retried with
/// backoff (the zone keeps being served from the last good state meanwhile).
pub async fn watch_domains(
    client: kube::Client,
    cfg: ZoneConfig,
    handle: ZoneHandle,
    selector: Option<String>,
) {
    let api: Api<SendingDomain> = Api::all(client);
    let (store, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let mut config = watcher::Config::default();
    if let Some(selector) = &selector {
        // The same scope as the controller's: both must agree on every claim.
        config = config.labels(selector);
    }
    let events = watcher(api, config)
        .default_backoff()
        .modify(|d| d.managed_fields_mut().clear())
        .reflect(writer);
    let notify = changed.clone();
    let drive = events.for_each(|event| {
        match event {
            Ok(_) => notify.notify_one(),
            Err(error) => warn!(%error, "watching SendingDomains failed; retrying"),
        }
        std::future::ready(())
    });
    tokio::select! {
        () = drive => warn!("the SendingDomain watch ended"),
        () = keep_publishing(store, cfg, handle, changed) => {}
    }
}

async fn keep_publishing(
    store: Store<SendingDomain>,
    cfg: ZoneConfig,
    handle: ZoneHandle,
    changed: Arc<Notify>,
) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        let domains = store.state();
        let zone = desired_zone(&cfg, &domains);
        let before = handle.current();
        let counts = before.as_deref().map(|b| plan(b, &zone).counts());
        if let Some(serial) = handle.publish(zone) {
            let (created, replaced, deleted) = counts.unwrap_or_default();
            info!(
                serial,
                domains = domains.len(),
                created,
                replaced,
                deleted,
                "zone published"
            );
        }
        changed.notified().await;
        tokio::time::sleep(COALESCE).await;
    }
}
