//! One sync, and the loop the leader runs: read the server's zone with a
//! TSIG-signed AXFR, compute the desired zone from the SendingDomains (the same
//! zone the embedded server would serve), plan the difference, and send it in
//! bounded UPDATE messages.

use super::connection::Server;
use super::metrics::SyncMetrics;
use super::publisher::Rfc2136Publisher;
use super::{BACKOFF_CAP, BACKOFF_START, COALESCE, Error, Rfc2136Config};
use crate::adapters::kube::identity::TrustState;
use crate::adapters::kube::{Domains, LeaderGuard};
use crate::core::api::SendingDomain;
use crate::core::zone::{DeleteGuard, Zone, ZoneConfig, desired_zone, plan};
use hickory_proto::rr as hrr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// What one successful sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// The zone on the server now (what was read, with the changes applied).
    pub zone: Zone,
    pub serial_read: Option<u32>,
    pub created: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub batches: usize,
}

/// The domains whose records belong in the zone: a SendingDomain being deleted
/// has its records removed (its finalizer waits for that).
pub fn live_domains(domains: &[Arc<SendingDomain>]) -> Vec<Arc<SendingDomain>> {
    domains
        .iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect()
}

/// Reads the server's zone, plans against `desired` and applies the plan, unless
/// it deletes more than `deletes` allows; every UPDATE is sent only while `guard`
/// allows writes.
pub async fn sync_once(
    server: &Server,
    desired: &Zone,
    guard: &LeaderGuard,
    deletes: &DeleteGuard,
) -> Result<SyncReport, Error> {
    let origin = desired.origin();
    let snapshot = server.read_zone(origin).await?;
    let plan = plan(&snapshot.zone, desired);
    let foreign: Vec<(String, hrr::RecordType)> = snapshot.foreign.iter().cloned().collect();
    let deleting = plan.counts().2 + foreign.len();
    if let Err(refused) = deletes.judge(plan.owned + foreign.len(), deleting) {
        return Err(Error::DeleteRefused {
            zone: origin.to_string(),
            server: server.addr(),
            deletes: refused.deletes,
            owned: refused.owned,
            percent: refused.percent(),
            max: deletes.max_percent,
        });
    }
    let batches = server.apply(origin, &plan.changes, &foreign, guard).await?;
    let (created, replaced, deleted) = plan.counts();
    let mut zone = snapshot.zone;
    plan.apply(&mut zone);
    Ok(SyncReport {
        serial_read: zone.serial(),
        zone,
        created,
        replaced,
        deleted: deleted + foreign.len(),
        batches,
    })
}

/// The next wait after a failure.
pub fn next_backoff(previous: Option<Duration>) -> Duration {
    previous
        .map(|d| d.saturating_mul(2))
        .unwrap_or(BACKOFF_START)
        .min(BACKOFF_CAP)
}

/// Longest the startup read of the zone may hold up the start of the controller.
pub const STARTUP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the server's zone once into `publisher`, before the controller starts:
/// its first reconciles then see what the server already holds, and an operator
/// restart does not report every domain as unpublished until the first sync. A
/// failure is recorded (the condition says SyncFailed) and does not stop startup.
pub async fn prime(publisher: &Rfc2136Publisher, config: &Rfc2136Config, origin: &str) {
    let server = Server::new(config);
    let read = tokio::time::timeout(STARTUP_READ_TIMEOUT, server.read_zone(origin)).await;
    match read {
        Ok(Ok(snapshot)) => {
            info!(zone = %origin, server = %config.server, rrsets = snapshot.zone.len(), "read the zone from the server");
            publisher.succeeded(snapshot.zone);
        }
        Ok(Err(error)) => {
            warn!(zone = %origin, server = %config.server, key = %config.key_name, %error, "reading the zone at startup failed; the sync retries");
            publisher.failed(&error);
        }
        Err(_) => warn!(
            zone = %origin,
            server = %config.server,
            "reading the zone at startup took longer than {STARTUP_READ_TIMEOUT:?}; the sync goes on reading it"
        ),
    }
}

/// Everything the sync loop needs.
pub struct Rfc2136Sync {
    /// The SendingDomains this installation manages.
    pub domains: Arc<Domains>,
    pub zone: ZoneConfig,
    pub config: Rfc2136Config,
    pub publisher: Rfc2136Publisher,
    /// Whether this replica leads; only the leader syncs.
    pub leader: watch::Receiver<bool>,
    /// Checked before every UPDATE: nothing is sent past the renew deadline.
    pub guard: LeaderGuard,
    /// How much of the zone one sync may delete.
    pub deletes: DeleteGuard,
    pub metrics: Arc<SyncMetrics>,
    /// What statuses may be believed for; nothing is synced before it is known.
    pub trust: watch::Receiver<TrustState>,
}

/// Where the loop stands between two rounds.
struct Progress {
    /// The wait after the last failure, while syncs fail.
    backoff: Option<Duration>,
    /// The desired zone of the last successful sync: a SendingDomain change that
    /// leaves it as it was (most are status writes) needs no transfer.
    synced: Option<Zone>,
    next_resync: Instant,
    /// A sync is due whatever changed (after a start or a change of leader).
    must_sync: bool,
}

/// While this replica leads, syncs the server's zone after every change of the
/// SendingDomains (coalesced) and every `resync`; a failed sync is retried with
/// capped exponential backoff. A standby only reads the zone, every `resync`, to
/// know what is published. `on_loaded` runs once the first complete list of
/// SendingDomains is in. Runs until the future is dropped.
pub async fn run(mut sync: Rfc2136Sync, on_loaded: impl FnOnce() + Send) {
    let mut changes = sync.domains.changes();
    if !sync.domains.ready().await {
        return;
    }
    on_loaded();
    let server = Server::new(&sync.config);
    let mut progress = Progress {
        backoff: None,
        synced: None,
        next_resync: Instant::now(),
        must_sync: true,
    };
    loop {
        if !*sync.leader.borrow_and_update() {
            read_as_standby(&sync, &server).await;
            progress.must_sync = true;
            tokio::select! {
                () = tokio::time::sleep(sync.config.resync) => {}
                () = leadership_changes(&mut sync.leader) => {}
            }
            continue;
        }
        changes.mark_unchanged();
        sync_if_due(&sync, &server, &mut progress).await;
        let leader = &mut sync.leader;
        match progress.backoff {
            Some(wait) => tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = leadership_changes(leader) => progress.must_sync = true,
            },
            None => tokio::select! {
                Ok(()) = changes.changed() => tokio::time::sleep(COALESCE).await,
                Ok(()) = sync.trust.changed() => tokio::time::sleep(COALESCE).await,
                () = tokio::time::sleep_until(progress.next_resync) => debug!("periodic resync"),
                () = leadership_changes(leader) => progress.must_sync = true,
            },
        }
    }
}

/// A standby never writes, but keeps its view of the server fresh, so that when
/// it takes over, its controller starts from what the server holds instead of
/// reporting every domain as not yet published.
async fn read_as_standby(sync: &Rfc2136Sync, server: &Server) {
    let (zone, addr) = (&sync.zone.zone, sync.config.server);
    match server.read_zone(zone).await {
        Ok(snapshot) => {
            debug!(%zone, server = %addr, rrsets = snapshot.zone.len(), "rfc2136 read (standby)");
            sync.metrics.succeeded();
            sync.publisher.succeeded(snapshot.zone);
        }
        Err(error) => {
            warn!(%zone, server = %addr, key = %sync.config.key_name, %error, "rfc2136 read failed (standby)");
            sync.metrics.failing.set(1);
            sync.publisher.failed(&error);
        }
    }
}

/// Syncs when something asks for it: a start, a failure to retry, the periodic
/// resync, or a change of the zone the SendingDomains ask for.
async fn sync_if_due(sync: &Rfc2136Sync, server: &Server, p: &mut Progress) {
    let TrustState::Trusted(trust) = sync.trust.borrow().clone() else {
        debug!("not syncing: the identity key is not known");
        return;
    };
    let domains = sync.domains.all();
    let desired = desired_zone(&sync.zone, &trust, &live_domains(&domains));
    let due = p.must_sync
        || p.backoff.is_some()
        || Instant::now() >= p.next_resync
        || p.synced.as_ref() != Some(&desired);
    if !due {
        debug!("the SendingDomains changed but not the zone they ask for");
        return;
    }
    let (zone, addr, key) = (&sync.zone.zone, sync.config.server, &sync.config.key_name);
    let started = std::time::Instant::now();
    match sync_once(server, &desired, &sync.guard, &sync.deletes).await {
        Ok(report) => {
            info!(
                %zone,
                server = %addr,
                key = %key,
                serial = report.serial_read.unwrap_or_default(),
                domains = domains.len(),
                created = report.created,
                replaced = report.replaced,
                deleted = report.deleted,
                batches = report.batches,
                millis = started.elapsed().as_millis() as u64,
                "rfc2136 sync done"
            );
            sync.metrics.synced(&report, started.elapsed());
            sync.publisher.succeeded(report.zone);
            p.synced = Some(desired);
            p.backoff = None;
            p.must_sync = false;
            p.next_resync = Instant::now() + sync.config.resync;
        }
        Err(error) => {
            let wait = next_backoff(p.backoff);
            p.backoff = Some(wait);
            warn!(
                %zone,
                server = %addr,
                key = %key,
                category = error.category(),
                %error,
                retry_in_secs = wait.as_secs_f64(),
                "rfc2136 sync failed"
            );
            sync.metrics.sync_failed(&error, started.elapsed());
            sync.publisher.failed(&error);
        }
    }
}

/// Resolves when leadership changes (never, once nobody can change it).
async fn leadership_changes(leader: &mut watch::Receiver<bool>) {
    if leader.changed().await.is_err() {
        futures::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zone::fixtures::{cfg, domain};

    const T1: &str = "abcdefghijklmnop";

    #[test]
    fn deleting_domains_leave_the_zone() {
        let c = cfg();
        let mut d = domain("a", "example.com", T1, &[], false, 1);
        let keep = Arc::new(d.clone());
        d.metadata.deletion_timestamp = d.metadata.creation_timestamp.clone();
        let live = live_domains(&[keep, Arc::new(d)]);
        assert_eq!(live.len(), 1);
        let trust = crate::core::trust::Trust::as_written();
        assert!(desired_zone(&c, &trust, &live).name_exists(&format!("{T1}.{}", c.zone)));
        assert!(live_domains(&[Arc::new(domain("a", "x.com", T1, &[], false, 1))]).len() == 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = None;
        let mut seen = vec![];
        for _ in 0..8 {
            let next = next_backoff(b);
            seen.push(next.as_secs());
            b = Some(next);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
