//! Claims across shards. An operator limited by `--selector` caches only its own
//! SendingDomains, but the rule "the oldest claim on a domain keeps it" holds for
//! every SendingDomain in the cluster: two shards must never both publish one
//! domain. So a sharded operator also watches *all* SendingDomains, and keeps of
//! each only what claims are judged by: namespace, name, uid, creation and
//! deletion time, and `spec.domain` (no status, labels, annotations or managed
//! fields). About 1 KB per SendingDomain in the cluster; the cost is in decoding
//! every SendingDomain change cluster-wide (other shards' status writes included),
//! not in memory.
//!
//! A label stamped with a hash of `spec.domain` would let a metadata-only watch do
//! the same more cheaply, but a claim created a moment ago by another shard (or by
//! a shard that is down) would carry no label yet, and both shards would publish.
//! Watching `spec.domain` itself has no such window: a claim counts from the
//! moment the apiserver stores it.

use crate::core::api::{SendingDomain, SendingDomainSpec};
use crate::telemetry::health::Failing;
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

type Ref = ObjectRef<SendingDomain>;
type ByDomain = HashMap<String, HashMap<Ref, Arc<SendingDomain>>>;

/// Every claim in the cluster, by `spec.domain`.
#[derive(Default)]
pub struct AllClaims {
    state: Mutex<State>,
    loaded: watch::Sender<bool>,
    /// Since when the watch has failed.
    failing: Arc<Failing>,
}

#[derive(Default)]
struct State {
    by_domain: ByDomain,
    /// Built during a relist, swapped in when it completes.
    relisting: Option<ByDomain>,
}

/// Only what claims are judged by.
pub fn stub(sd: &SendingDomain) -> SendingDomain {
    let mut out = SendingDomain::new(
        &sd.name_any(),
        SendingDomainSpec {
            domain: sd.spec.domain.clone(),
            dkim: None,
            tracking: None,
        },
    );
    out.metadata.namespace = sd.metadata.namespace.clone();
    out.metadata.uid = sd.metadata.uid.clone();
    out.metadata.creation_timestamp = sd.metadata.creation_timestamp.clone();
    out.metadata.deletion_timestamp = sd.metadata.deletion_timestamp.clone();
    out
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AllClaims {
    /// The view, and the future that keeps it filled; `changed` is called with
    /// the domain of every claim that appears, goes, or starts being deleted.
    pub fn start<F: Fn(&str) + Send + 'static>(
        client: Client,
        scope: Option<&str>,
        changed: F,
    ) -> (Arc<AllClaims>, impl Future<Output = ()> + Send + use<F>) {
        let claims = Arc::new(AllClaims {
            state: Mutex::default(),
            loaded: watch::channel(false).0,
            failing: Arc::default(),
        });
        let me = claims.clone();
        let api: Api<SendingDomain> = Api::all(client);
        let mut config = watcher::Config::default().any_semantic();
        if let Some(scope) = scope {
            config = config.labels(scope);
        }
        let events = watcher(api, config).default_backoff();
        let drive = events.for_each(move |event| {
            match event {
                Ok(event) => {
                    me.failing.ok();
                    for domain in me.apply(event) {
                        changed(&domain);
                    }
                }
                Err(error) => {
                    me.failing.failed();
                    tracing::warn!(%error, "watching all SendingDomains (for claims) failed; retrying");
                }
            }
            std::future::ready(())
        });
        (claims, drive)
    }

    /// Since when the watch has failed, if it has.
    pub fn failing(&self) -> &Arc<Failing> {
        &self.failing
    }

    /// Takes in one watch event; returns the domains whose claims changed.
    fn apply(&self, event: watcher::Event<SendingDomain>) -> Vec<String> {
        let mut s = lock(&self.state);
        match event {
            watcher::Event::Init => {
                s.relisting = Some(ByDomain::new());
                vec![]
            }
            watcher::Event::InitApply(sd) => {
                if let Some(next) = s.relisting.as_mut() {
                    insert(next, &sd);
                }
                vec![]
            }
            watcher::Event::InitDone => {
                let Some(next) = s.relisting.take() else {
                    return vec![];
                };
                let changed = differing(&s.by_domain, &next);
                s.by_domain = next;
                self.loaded.send_replace(true);
                changed
            }
            watcher::Event::Apply(sd) => insert(&mut s.by_domain, &sd)
                .then(|| sd.spec.domain.clone())
                .into_iter()
                .collect(),
            watcher::Event::Delete(sd) => remove(&mut s.by_domain, &sd)
                .then(|| sd.spec.domain.clone())
                .into_iter()
                .collect(),
        }
    }

    /// Every claim on `domain` (stubs).
    pub fn on(&self, domain: &str) -> Vec<Arc<SendingDomain>> {
        lock(&self.state)
            .by_domain
            .get(domain)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until the first complete list is in; false if the watch is gone.
    pub async fn ready(&self) -> bool {
        self.loaded.subscribe().wait_for(|l| *l).await.is_ok()
    }
}

/// Adds or updates a claim; true when that changes who may hold the domain (a
/// new claim, or one that started being deleted). Status writes change nothing.
fn insert(map: &mut ByDomain, sd: &SendingDomain) -> bool {
    let claims = map.entry(sd.spec.domain.clone()).or_default();
    let new = stub(sd);
    let changed = claims.get(&ObjectRef::from_obj(sd)).is_none_or(|old| {
        old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
            || old.metadata.uid != new.metadata.uid
    });
    if changed {
        claims.insert(ObjectRef::from_obj(sd), Arc::new(new));
    }
    changed
}

/// Removes a claim; true if it was there.
fn remove(map: &mut ByDomain, sd: &SendingDomain) -> bool {
    let Some(claims) = map.get_mut(&sd.spec.domain) else {
        return false;
    };
    let gone = claims.remove(&ObjectRef::from_obj(sd)).is_some();
    if claims.is_empty() {
        map.remove(&sd.spec.domain);
    }
    gone
}

/// The domains whose claims differ between two views (after a relist).
fn differing(old: &ByDomain, new: &ByDomain) -> Vec<String> {
    let same = |a: &HashMap<Ref, Arc<SendingDomain>>, b: &HashMap<Ref, Arc<SendingDomain>>| {
        a.len() == b.len()
            && a.iter().all(|(r, x)| {
                b.get(r).is_some_and(|y| {
                    x.metadata.uid == y.metadata.uid
                        && x.metadata.deletion_timestamp == y.metadata.deletion_timestamp
                })
            })
    };
    let mut out: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|d| match (old.get(*d), new.get(*d)) {
            (Some(a), Some(b)) => !same(a, b),
            _ => true,
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn sd(ns: &str, name: &str, domain: &str, uid: &str) -> SendingDomain {
        let mut d = SendingDomain::new(
            name,
            SendingDomainSpec {
                domain: domain.into(),
                dkim: None,
                tracking: None,
            },
        );
        d.metadata.namespace = Some(ns.into());
        d.metadata.uid = Some(uid.into());
        d.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(1).unwrap()));
        d.metadata.labels = Some([("tier".to_string(), "gold".to_string())].into());
        d.status = Some(Default::default());
        d
    }

    #[test]
    fn a_stub_keeps_only_what_claims_are_judged_by() {
        let s = stub(&sd("a", "x", "example.com", "u1"));
        assert_eq!(s.spec.domain, "example.com");
        assert_eq!(s.metadata.uid.as_deref(), Some("u1"));
        assert!(s.metadata.creation_timestamp.is_some());
        assert!(s.status.is_none() && s.metadata.labels.is_none());
    }

    #[test]
    fn claims_follow_the_watch_and_only_real_changes_count() {
        let c = AllClaims::default();
        let ev = watcher::Event::Apply;
        assert!(c.apply(watcher::Event::Init).is_empty());
        assert!(
            c.apply(watcher::Event::InitApply(sd("a", "x", "example.com", "u1")))
                .is_empty()
        );
        assert!(
            c.on("example.com").is_empty(),
            "not before the list completes"
        );
        assert_eq!(c.apply(watcher::Event::InitDone), ["example.com"]);
        assert_eq!(c.on("example.com").len(), 1);
        // A status write changes nothing about the claim.
        assert!(c.apply(ev(sd("a", "x", "example.com", "u1"))).is_empty());
        assert_eq!(
            c.apply(ev(sd("b", "y", "example.com", "u2"))),
            ["example.com"]
        );
        assert_eq!(c.on("example.com").len(), 2);
        let mut deleting = sd("a", "x", "example.com", "u1");
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(9).unwrap()));
        assert_eq!(c.apply(ev(deleting.clone())), ["example.com"]);
        assert_eq!(c.apply(watcher::Event::Delete(deleting)), ["example.com"]);
        assert_eq!(c.on("example.com").len(), 1);
        // A relist that finds another world reports what differs.
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(sd("c", "z", "other.com", "u3")));
        assert_eq!(
            c.apply(watcher::Event::InitDone),
            ["example.com", "other.com"]
        );
        assert!(c.on("example.com").is_empty());
    }
}
