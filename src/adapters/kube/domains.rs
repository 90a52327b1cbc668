//! The one watch of SendingDomains in the process. Its cache feeds everything that
//! reads SendingDomains: the controller (through a subscription that also wakes
//! the other claims on a domain when one changes), the embedded zone and the
//! RFC2136 sync (through a change counter). Objects are kept trimmed: no
//! `managedFields`, and of the annotations only the operator's own.

use crate::core::api::{GROUP, SendingDomain};
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
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

impl Domains {
    /// The cache, and the future that keeps it filled (run it for as long as the
    /// cache is used; watch errors are retried with backoff). `selector` limits
    /// the SendingDomains to those this installation manages.
    pub fn start(
        client: Client,
        selector: Option<&str>,
    ) -> (Arc<Domains>, impl Future<Output = ()> + Send + use<>) {
        let api: Api<SendingDomain> = Api::all(client);
        let mut config = watcher::Config::default().any_semantic();
        if let Some(selector) = selector {
            config = config.labels(selector);
        }
        let (store, writer) = reflector::store();
        let domains = Arc::new(Domains {
            store,
            version: watch::channel(0).0,
            loaded: watch::channel(false).0,
            subscribers: Mutex::default(),
            claims: Mutex::default(),
        });
        let me = domains.clone();
        let events = watcher(api, config)
            .default_backoff()
            .modify(trim)
            .reflect(writer);
        let drive = events.for_each(move |event| {
            match event {
                Ok(event) => me.changed(event),
                Err(error) => tracing::warn!(%error, "watching SendingDomains failed; retrying"),
            }
            std::future::ready(())
        });
        (domains, drive)
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

    /// The cache.
    pub fn store(&self) -> Store<SendingDomain> {
        self.store.clone()
    }

    /// Waits until the first complete list is in; false if the watch is gone.
    pub async fn ready(&self) -> bool {
        self.loaded
            .subscribe()
            .wait_for(|loaded| *loaded)
            .await
            .is_ok()
    }

    /// Resolves after the next change (or at once if one arrived since `seen`).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Every SendingDomain (as an owned list: hold it briefly).
    pub fn all(&self) -> Vec<Arc<SendingDomain>> {
        self.store.state()
    }

    /// The SendingDomains claiming `domain` (a `spec.domain` value).
    pub fn claims_on(&self, domain: &str) -> Vec<Arc<SendingDomain>> {
        let refs: Vec<Ref> = lock(&self.claims)
            .by_domain
            .get(domain)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        refs.iter().filter_map(|r| self.store.get(r)).collect()
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
