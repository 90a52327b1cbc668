//! The scarce resources reconciles share: key generation (CPU) and checks (the
//! resolver). Each is a pool of permits handed out round-robin across namespaces
//! and first-come-first-served within one, so a tenant's bulk import of thousands
//! of domains never starves another tenant's single new domain. Checks are also
//! paced to a rate, so a large fleet does not hammer the resolver.

use crate::core::fairness::RoundRobin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Permits handed out fairly between keys (namespaces).
pub struct FairPool {
    state: Mutex<State>,
}

struct State {
    free: usize,
    waiting: RoundRobin<String, oneshot::Sender<()>>,
}

/// One permit; returned to the pool when dropped.
pub struct Permit<'a> {
    pool: &'a FairPool,
}

impl FairPool {
    /// A pool of `size` permits (at least one).
    pub fn new(size: usize) -> FairPool {
        FairPool {
            state: Mutex::new(State {
                free: size.max(1),
                waiting: RoundRobin::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a permit, in `key`'s turn.
    pub async fn acquire(&self, key: &str) -> Permit<'_> {
        let rx = {
            let mut s = self.state();
            if s.free > 0 && s.waiting.is_empty() {
                s.free -= 1;
                return Permit { pool: self };
            }
            let (tx, rx) = oneshot::channel();
            s.waiting.push(key.to_string(), tx);
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            pool: self,
        };
        let rx = waiting.rx.as_mut().expect("set above");
        // The sender is only dropped when handed a permit or by the pool itself.
        let _ = rx.await;
        waiting.rx = None;
        Permit { pool: self }
    }

    /// Gives a permit to the next waiter in turn, or back to the pool.
    fn release(&self) {
        let mut s = self.state();
        while let Some((_, tx)) = s.waiting.pop() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        s.free += 1;
    }

    /// Permits free now, and waiters queued (for tests and metrics).
    pub fn load(&self) -> (usize, usize) {
        let s = self.state();
        (s.free, s.waiting.len())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.pool.release();
    }
}

/// A waiter that gives up (its reconcile was cancelled) after it was handed a
/// permit but before it took it passes the permit on.
struct Waiting<'a> {
    rx: Option<oneshot::Receiver<()>>,
    pool: &'a FairPool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.pool.release();
            }
        }
    }
}

/// Spaces events at least `gap` apart (a rate limit without bursts).
pub struct Pace {
    gap: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// At most `per_second` events a second; zero means no limit.
    pub fn per_second(per_second: f64) -> Pace {
        let gap = if per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Pace {
            gap,
            next: Mutex::new(None),
        }
    }

    /// Waits for this event's slot.
    pub async fn wait(&self) {
        if self.gap.is_zero() {
            return;
        }
        let at = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let at = next.map_or_else(Instant::now, |n| n.max(Instant::now()));
            *next = Some(at + self.gap);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn permits_go_round_robin_between_keys() {
        let pool = Arc::new(FairPool::new(1));
        let held = pool.acquire("bulk").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (key, id) in [("bulk", 1), ("bulk", 2), ("bulk", 3), ("new", 100)] {
            let (p, order) = (pool.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = p.acquire(key).await;
                order.lock().unwrap().push(id);
            }));
            // Queue them in this order.
            while pool.load().1 < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [1, 100, 2, 3]);
        assert_eq!(pool.load(), (1, 0));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_loses_no_permit() {
        let pool = Arc::new(FairPool::new(1));
        let held = pool.acquire("a").await;
        let p = pool.clone();
        let waiter = tokio::spawn(async move {
            let _permit = p.acquire("b").await;
            futures::future::pending::<()>().await;
        });
        while pool.load().1 == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        // Both permits' worth of work can still run, one after the other.
        let _again = pool.acquire("c").await;
        assert_eq!(pool.load(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn pace_spaces_events() {
        let pace = Pace::per_second(10.0);
        let start = Instant::now();
        for _ in 0..5 {
            pace.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        let unlimited = Pace::per_second(0.0);
        unlimited.wait().await;
    }
}
