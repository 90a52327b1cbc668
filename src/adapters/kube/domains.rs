//! The one watch of SendingDomains in the process. Its cache feeds everything that
//! reads SendingDomains: the controller (through a subscription that also wakes
//! the other claims on a domain when one changes), the embedded zone and the
//! RFC2136 sync (through a change counter). Objects are kept trimmed: no
//! `managedFields`, and of the annotations only the operator's own. When a label
//! selector limits it to one shard, a second, trimmed watch of every claim in the
//! cluster ([`super::claims`]) lets claims be judged across shards.

use super::claims::AllClaims;
use crate::core::api::{GROUP, SendingDomain};
use crate::telemetry::health::{Check, Failing};
use futures::{Stream, StreamExt};
use kube::api::ListParams;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

type Ref = ObjectRef<SendingDomain>;

/// The shared cache of SendingDomains.
pub struct Domains {
    store: Store<SendingDomain>,
    /// Bumped after every change the watch delivers.
    version: watch::Sender<u64>,
    /// True once the first complete list is in. (The store's own readiness
    /// wakes only one of several waiters.)
    loaded: watch::Sender<bool>,
    /// The controller's subscriptions (one per leadership term).
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<SendingDomain>>>>,
    /// The claims on each `spec.domain`.
    claims: Mutex<Claims>,
    /// Every claim in the cluster, when `selector` limits the cache: claims are
    /// judged across shards (see [`super::claims`]).
    all_claims: Option<Arc<AllClaims>>,
    /// Since when the watch has failed (for readiness: the zone may be stale).
    failing: Arc<Failing>,
    /// Since when the API has been out of reach ([`Domains::probe`]): a watch
    /// cut off without an error is as stale as a failing one.
    unreachable: Arc<Failing>,
}

#[derive(Default)]
struct Claims {
    by_domain: HashMap<String, HashSet<Ref>>,
    /// Built during a relist, swapped in when it completes.
    relisting: Option<HashMap<String, HashSet<Ref>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps what the operator reads of a SendingDomain and drops the rest.
fn trim(sd: &mut SendingDomain) {
    sd.managed_fields_mut().clear();
    let prefix = format!("{GROUP}/");
    sd.annotations_mut().retain(|k, _| k.starts_with(&prefix));
}

/// Fault injection for tests: with `ANYPOST_WATCH_LAG=<milliseconds>` every change
/// the SendingDomain watch delivers reaches the cache that much later, as from an
/// apiserver under load (the first list is not held). Compiled only into test
/// builds, like the crash points of reconcile.
#[cfg(any(debug_assertions, feature = "crash-points"))]
fn watch_lag() -> Option<Duration> {
    let ms = std::env::var("ANYPOST_WATCH_LAG").ok()?;
    let ms: u64 = ms
        .parse()
        .expect("ANYPOST_WATCH_LAG is a number of milliseconds");
    tracing::warn!(
        ms,
        "ANYPOST_WATCH_LAG: holding every SendingDomain change back"
    );
    Some(Duration::from_millis(ms))
}

#[cfg(not(any(debug_assertions, feature = "crash-points")))]
fn watch_lag() -> Option<Duration> {
    None
}

impl Domains {
    /// The cache, and the future that keeps it filled (run it for as long as the
    /// cache is used; watch errors are retried with backoff). `selector` limits
    /// the SendingDomains to those this installation manages; claims are then
    /// judged against every SendingDomain `claim_scope` selects (all by default).
    pub fn start(
        client: Client,
        selector: Option<&str>,
        claim_scope: Option<&str>,
    ) -> (Arc<Domains>, impl Future<Output = ()> + Send + use<>) {
        let api: Api<SendingDomain> = Api::all(client);
        let mut config = watcher::Config::default().any_semantic();
        if let Some(selector) = selector {
            config = config.labels(selector);
        }
        let (store, writer) = reflector::store();
        let mut claims_drive = None;
        let domains = Arc::new_cyclic(|me: &std::sync::Weak<Domains>| {
            let all_claims = selector.map(|_| {
                let me = me.clone();
                let on_change = move |d: &str| {
                    if let Some(me) = me.upgrade() {
                        me.rival_changed(d);
                    }
                };
                let (all, drive) =
                    AllClaims::start(api.clone().into_client(), claim_scope, on_change);
                claims_drive = Some(drive);
                all
            });
            Domains {
                store,
                version: watch::channel(0).0,
                loaded: watch::channel(false).0,
                subscribers: Mutex::default(),
                claims: Mutex::default(),
                all_claims,
                failing: Arc::default(),
                unreachable: Arc::default(),
            }
        });
        let me = domains.clone();
        let lag = watch_lag();
        let events = watcher(api, config)
            .default_backoff()
            .modify(trim)
            .then(move |event| async move {
                if let (Some(lag), Ok(watcher::Event::Apply(_))) = (lag, &event) {
                    tokio::time::sleep(lag).await;
                }
                event
            })
            .reflect(writer);
        let drive = events.for_each(move |event| {
            match event {
                Ok(event) => {
                    me.failing.ok();
                    me.changed(event);
                }
                Err(error) => {
                    me.failing.failed();
                    tracing::warn!(%error, "watching SendingDomains failed; retrying");
                }
            }
            std::future::ready(())
        });
        let claims_drive = async move {
            if let Some(d) = claims_drive {
                d.await
            }
        };
        let drive = async move {
            futures::future::join(drive, claims_drive).await;
        };
        (domains, drive)
    }

    /// A claim of another shard on `domain` appeared, went, or is being deleted:
    /// this shard's claims on it are judged again, and the zone rebuilt.
    fn rival_changed(&self, domain: &str) {
        let local = self.local_claims_on(domain);
        if local.is_empty() {
            return;
        }
        lock(&self.subscribers).retain(|tx| local.iter().all(|sd| tx.send(sd.clone()).is_ok()));
        self.version.send_modify(|v| *v += 1);
    }

    fn changed(&self, event: watcher::Event<SendingDomain>) {
        let mut wake: Vec<Arc<SendingDomain>> = Vec::new();
        {
            let mut claims = lock(&self.claims);
            match &event {
                watcher::Event::Init => claims.relisting = Some(HashMap::new()),
                watcher::Event::InitApply(sd) => {
                    if let Some(next) = claims.relisting.as_mut() {
                        next.entry(sd.spec.domain.clone())
                            .or_default()
                            .insert(ObjectRef::from_obj(sd));
                    }
                    wake.push(Arc::new(sd.clone()));
                }
                watcher::Event::InitDone => {
                    if let Some(next) = claims.relisting.take() {
                        claims.by_domain = next;
                    }
                    self.loaded.send_replace(true);
                }
                watcher::Event::Apply(sd) => {
                    claims
                        .by_domain
                        .entry(sd.spec.domain.clone())
                        .or_default()
                        .insert(ObjectRef::from_obj(sd));
                    wake.push(Arc::new(sd.clone()));
                }
                watcher::Event::Delete(sd) => {
                    if let Some(refs) = claims.by_domain.get_mut(&sd.spec.domain) {
                        refs.remove(&ObjectRef::from_obj(sd));
                        if refs.is_empty() {
                            claims.by_domain.remove(&sd.spec.domain);
                        }
                    }
                }
            }
        }
        // A changed claim wakes the other claims on its domain: the older claim's
        // deletion hands the domain to the next.
        let changed = match &event {
            watcher::Event::Apply(sd) | watcher::Event::Delete(sd) => Some(sd),
            _ => None,
        };
        if let Some(sd) = changed {
            let me = ObjectRef::from_obj(sd);
            wake.extend(
                self.claims_on(&sd.spec.domain)
                    .into_iter()
                    .filter(|d| ObjectRef::from_obj(&**d) != me),
            );
        }
        if !wake.is_empty() {
            let mut subscribers = lock(&self.subscribers);
            subscribers.retain(|tx| wake.iter().all(|sd| tx.send(sd.clone()).is_ok()));
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// A readiness check: fails once a watch (of this installation's
    /// SendingDomains, or of every claim when sharded) has failed for longer
    /// than `bound`, since the cache, and every zone built from it, may then be
    /// stale.
    pub fn fresh_within(&self, bound: Duration) -> Check {
        let own = self.failing.within("the SendingDomain watch", bound);
        let api = self.unreachable.within("reaching the API", bound);
        let claims = self
            .all_claims
            .as_ref()
            .map(|c| c.failing().within("the watch of every claim", bound));
        Box::new(move || {
            own()?;
            api()?;
            claims.as_ref().map_or(Ok(()), |c| c())
        })
    }

    /// Asks the API for one SendingDomain (served from the apiserver's cache)
    /// every `every`, each answer due within `every`, for as long as it runs:
    /// a watch whose connection hangs without an error delivers nothing and
    /// reports nothing, so this is how a replica cut off from the API learns it.
    pub async fn probe(&self, client: Client, every: Duration) {
        let api: Api<SendingDomain> = Api::all(client);
        let params = ListParams::default().limit(1).match_any();
        loop {
            match tokio::time::timeout(every, api.list_metadata(&params)).await {
                Ok(Ok(_)) => self.unreachable.ok(),
                Ok(Err(error)) => {
                    self.unreachable.failed();
                    tracing::debug!(%error, "the API probe failed");
                }
                Err(_) => {
                    self.unreachable.failed();
                    tracing::debug!("the API probe got no answer in time");
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The cache.
    pub fn store(&self) -> Store<SendingDomain> {
        self.store.clone()
    }

    /// Waits until the first complete list is in (and, when sharded, that of
    /// every claim); false if a watch is gone.
    pub async fn ready(&self) -> bool {
        let loaded = self
            .loaded
            .subscribe()
            .wait_for(|loaded| *loaded)
            .await
            .is_ok();
        match &self.all_claims {
            Some(all) => loaded && all.ready().await,
            None => loaded,
        }
    }

    /// Resolves after the next change (or at once if one arrived since `seen`).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Every SendingDomain of this installation (as an owned list: hold it
    /// briefly); when sharded, also the other shards' claims on the same domains,
    /// as stubs without status (see [`super::claims`]), so that a zone built from
    /// this list publishes a domain only where its claim wins cluster-wide.
    pub fn all(&self) -> Vec<Arc<SendingDomain>> {
        let mut all = self.store.state();
        if let Some(claims) = &self.all_claims {
            let domains: HashSet<String> = all.iter().map(|d| d.spec.domain.clone()).collect();
            for d in &domains {
                all.extend(self.rivals(claims, d));
            }
        }
        all
    }

    /// The SendingDomains claiming `domain` (a `spec.domain` value), of every
    /// shard.
    pub fn claims_on(&self, domain: &str) -> Vec<Arc<SendingDomain>> {
        let mut claims = self.local_claims_on(domain);
        if let Some(all) = &self.all_claims {
            claims.extend(self.rivals(all, domain));
        }
        claims
    }

    /// This installation's claims on `domain`.
    fn local_claims_on(&self, domain: &str) -> Vec<Arc<SendingDomain>> {
        let refs: Vec<Ref> = lock(&self.claims)
            .by_domain
            .get(domain)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        refs.iter().filter_map(|r| self.store.get(r)).collect()
    }

    /// Other shards' claims on `domain`.
    fn rivals(&self, all: &AllClaims, domain: &str) -> Vec<Arc<SendingDomain>> {
        let mut rivals = all.on(domain);
        rivals.retain(|r| self.store.get(&ObjectRef::from_obj(&**r)).is_none());
        rivals
    }

    /// Every SendingDomain that changes from now on, and the other claims on its
    /// domain: what the controller reconciles. Ends when the subscriber is
    /// dropped (nothing is kept for a subscriber that does not read).
    pub fn subscribe(&self) -> impl Stream<Item = Arc<SendingDomain>> + Send + use<> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.subscribers).push(tx);
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|sd| (sd, rx)) },
        )
    }
}
