//! The running controller's cache of DKIM Secrets, and when its first list is
//! in. After a start every SendingDomain is reconciled at once; each waits for
//! that first list (at most a bound), so that they read their Secrets from
//! memory instead of with one GET each.
//!
//! kube's own readiness future (`Store::wait_until_ready`) keeps the waker of
//! only the last task that polled it, so with thousands of waiters all but one
//! slept until their bound. Here one task waits on it and tells every waiter
//! through a watch channel.

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct SecretCache {
    store: Store<Secret>,
    /// When the cache started.
    since: Instant,
    /// True once the first list is in.
    loaded: watch::Receiver<bool>,
}

impl SecretCache {
    /// Follows `store`, which its reflector fills from now on.
    pub fn follow(store: Store<Secret>) -> SecretCache {
        let (tell, loaded) = watch::channel(false);
        let first_list = store.clone();
        tokio::spawn(async move {
            if first_list.wait_until_ready().await.is_ok() {
                let _ = tell.send(true);
            }
        });
        SecretCache {
            store,
            since: Instant::now(),
            loaded,
        }
    }

    /// The Secret `namespace/name` as the watch last saw it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Waits until the first list is in, or until `bound` after the cache
    /// started (or its reflector stopped), whichever comes first.
    pub async fn loaded(&self, bound: Duration) {
        let deadline = tokio::time::Instant::from_std(self.since + bound);
        let mut loaded = self.loaded.clone();
        let _ = tokio::time::timeout_at(deadline, loaded.wait_for(|l| *l)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};

    #[tokio::test]
    async fn every_waiter_wakes_when_the_first_list_is_in() {
        let (store, mut writer) = reflector::store::<Secret>();
        let cache = Arc::new(SecretCache::follow(store));
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.loaded(Duration::from_secs(30)).await })
            })
            .collect();
        // Every waiter (and the cache's own task) waits before the list comes in.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for (n, waiter) in waiters.into_iter().enumerate() {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .unwrap_or_else(|_| panic!("waiter {n} still waits after the first list"))
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_waiter_goes_on_after_the_bound_when_the_list_never_comes() {
        let (store, _writer) = reflector::store::<Secret>();
        let cache = SecretCache::follow(store);
        tokio::time::timeout(
            Duration::from_secs(5),
            cache.loaded(Duration::from_millis(50)),
        )
        .await
        .expect("the bound ends the wait");
    }
}
