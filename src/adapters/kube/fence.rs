//! The leader's fence: every write this replica makes, to the API or to an RFC2136
//! server, passes [`LeaderGuard::check`] first, and the guard refuses once the
//! renew deadline of the last successful Lease renewal has passed.
//!
//! The deadline is kept as a monotonic instant and compared at the moment of each
//! write, not by a task that may itself be stalled: a replica that was frozen
//! (SIGSTOP, a long GC-like pause, a starved node) and wakes up with writes queued
//! finds its deadline gone and writes nothing, even before its election loop
//! notices. Because the renew deadline is shorter than the lease duration, and
//! another replica only takes over once the Lease has stayed unchanged for a whole
//! lease duration as *it* observed it, the old leader's last write always comes
//! before the new leader's first.
//!
//! For the Kubernetes API the fence is the top of the fenced client's request
//! stack ([`Fence`]): every POST, PUT, PATCH and DELETE is checked before it is
//! handed to the HTTP client (which makes no retries of its own), and again by
//! the connection before every write to the socket ([`super::wire_fence`]).
//!
//! The same layer bounds the requests in flight: at most [`WRITES_IN_FLIGHT`]
//! writes and [`READS_IN_FLIGHT`] reads (watches aside, which stay open), the
//! rest waiting their turn. Over HTTP/1.1 every request in flight holds a
//! connection of its own (a TLS session and its buffers); unbounded, a burst of
//! thousands of reconciles opened hundreds of them at once.

use futures::future::BoxFuture;
use http::{Method, Request};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// Writes to the API in flight at once (each holds a connection).
pub const WRITES_IN_FLIGHT: usize = 16;
/// Reads (GET and LIST, not watches) in flight at once.
pub const READS_IN_FLIGHT: usize = 16;

/// Where a refused write was going.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    /// kube (the API server) or rfc2136 (the DNS server).
    target: &'static str,
}

/// A write refused because this replica does not hold a valid lease.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "not the leader (or past the renew deadline of its Lease): the {target} write was not sent"
)]
pub struct NotLeader {
    pub target: &'static str,
}

struct GuardState {
    origin: Instant,
    /// Milliseconds after `origin` until which writes may be made; 0: none.
    until_ms: AtomicU64,
    /// Leadership terms begun by this replica (for logs).
    term: AtomicU64,
    leading: watch::Sender<bool>,
    refused: Family<TargetLabels, Counter>,
}

/// Whether this replica may write now; shared by the election (which extends and
/// revokes it) and every writer (which checks it).
#[derive(Clone)]
pub struct LeaderGuard(Arc<GuardState>);

/// `until_ms` of a guard that never expires (leader election off).
const FOREVER: u64 = u64::MAX;

impl LeaderGuard {
    fn with(until_ms: u64) -> LeaderGuard {
        LeaderGuard(Arc::new(GuardState {
            origin: Instant::now(),
            until_ms: AtomicU64::new(until_ms),
            term: AtomicU64::new(0),
            leading: watch::channel(until_ms != 0).0,
            refused: Family::default(),
        }))
    }

    /// A guard for a replica that takes part in an election: it may not write
    /// until the election extends it.
    pub fn elected() -> LeaderGuard {
        LeaderGuard::with(0)
    }

    /// A guard that always allows writes: leader election is off, this replica is
    /// the only writer.
    pub fn always() -> LeaderGuard {
        LeaderGuard::with(FOREVER)
    }

    fn ms(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.0.origin).as_millis();
        u64::try_from(ms).unwrap_or(FOREVER - 1).max(1)
    }

    /// Ok when a write may be made now; counts and refuses it otherwise.
    pub fn check(&self, target: &'static str) -> Result<(), NotLeader> {
        if self.valid_at(Instant::now()) {
            return Ok(());
        }
        self.0.refused.get_or_create(&TargetLabels { target }).inc();
        Err(NotLeader { target })
    }

    fn valid_at(&self, now: Instant) -> bool {
        let until = self.0.until_ms.load(Ordering::SeqCst);
        until == FOREVER || (until != 0 && self.ms(now) < until)
    }

    /// `write`, for as long as this replica may write: judged before every
    /// poll, so a write held up past the renew deadline (a frozen process, a
    /// slow connection) is dropped, never sent late; a renewal meanwhile keeps
    /// it going. For writes that do not go through the fenced API client (an
    /// RFC2136 UPDATE).
    pub async fn while_leading<F: std::future::Future>(
        &self,
        target: &'static str,
        write: F,
    ) -> Result<F::Output, NotLeader> {
        self.check(target)?;
        let mut write = std::pin::pin!(write);
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        let wake = |g: &LeaderGuard| g.deadline().map_or_else(far, Into::into);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(wake(self)));
        std::future::poll_fn(|cx| {
            if let Err(e) = self.check(target) {
                return Poll::Ready(Err(e));
            }
            if let Poll::Ready(out) = write.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            // Wake at the deadline (as it stands now) to judge again.
            while timer.as_mut().poll(cx).is_ready() {
                if let Err(e) = self.check(target) {
                    return Poll::Ready(Err(e));
                }
                timer.as_mut().reset(wake(self));
            }
            Poll::Pending
        })
        .await
    }

    /// Until when writes may be made, while they may.
    pub fn deadline(&self) -> Option<Instant> {
        match self.0.until_ms.load(Ordering::SeqCst) {
            0 | FOREVER => None,
            ms => Some(self.0.origin + Duration::from_millis(ms)),
        }
    }

    /// Allows writes until `until` (a renewal succeeded); returns the term, which
    /// is new when this replica was not leading.
    pub fn extend(&self, until: Instant) -> u64 {
        let was = self.valid_at(Instant::now());
        self.0.until_ms.store(self.ms(until), Ordering::SeqCst);
        let term = if was {
            self.0.term.load(Ordering::SeqCst)
        } else {
            self.0.term.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.0
            .leading
            .send_if_modified(|l| !std::mem::replace(l, true));
        term
    }

    /// Refuses every write from now on, until the next [`LeaderGuard::extend`].
    pub fn revoke(&self) {
        if self.0.until_ms.load(Ordering::SeqCst) != FOREVER {
            self.0.until_ms.store(0, Ordering::SeqCst);
            self.0
                .leading
                .send_if_modified(|l| std::mem::replace(l, false));
        }
    }

    /// Whether this replica leads, as the election last decided: what starts and
    /// stops the controller and the RFC2136 sync. (Writes are judged by
    /// [`LeaderGuard::check`], which does not wait for the election to notice.)
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.0.leading.subscribe()
    }

    /// The current term (0 before the first).
    pub fn term(&self) -> u64 {
        self.0.term.load(Ordering::SeqCst)
    }

    /// Adds `leader_writes_refused` to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "leader_writes_refused",
            "Writes refused because this replica was not the leader or its Lease's renew deadline had passed, by target (kube, rfc2136)",
            self.0.refused.clone(),
        );
    }
}

/// Whether an API error is the fence refusing a write.
pub fn is_refused(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Service(s) if s.downcast_ref::<NotLeader>().is_some())
}

/// The top of the fenced API client's request stack: reads go to `reads`; writes
/// (POST, PUT, PATCH, DELETE) go to `writes` while the guard allows them, and are
/// given up at its deadline. `writes` is meant to run over connections that
/// check the guard too ([`super::wire_fence`]): a write handed over just before
/// the deadline is then stopped on the wire as well.
pub struct Fence<S> {
    reads: S,
    writes: S,
    guard: LeaderGuard,
    reads_in_flight: Arc<Semaphore>,
    writes_in_flight: Arc<Semaphore>,
}

impl<S> Fence<S> {
    pub fn new(reads: S, writes: S, guard: LeaderGuard) -> Fence<S> {
        Fence {
            reads,
            writes,
            guard,
            reads_in_flight: Arc::new(Semaphore::new(READS_IN_FLIGHT)),
            writes_in_flight: Arc::new(Semaphore::new(WRITES_IN_FLIGHT)),
        }
    }
}

fn is_write(m: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(m)
}

/// Whether a request is a watch (it stays open, so it takes no turn).
fn is_watch<B>(req: &Request<B>) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

/// `sent` once one of `turns` is free, if it needs one (the HTTP client's
/// request does nothing until polled, so it takes no connection before that).
async fn in_turn<F: std::future::Future>(turns: Option<Arc<Semaphore>>, sent: F) -> F::Output {
    let _turn = match turns {
        Some(turns) => Some(turns.acquire_owned().await),
        None => None,
    };
    sent.await
}

impl<S, B> tower::Service<Request<B>> for Fence<S>
where
    S: tower::Service<Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.reads.poll_ready(cx).map_err(Into::into)? {
            Poll::Ready(()) => self.writes.poll_ready(cx).map_err(Into::into),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !is_write(req.method()) {
            let turns = (!is_watch(&req)).then(|| self.reads_in_flight.clone());
            let sent = in_turn(turns, self.reads.call(req));
            return Box::pin(async move { sent.await.map_err(Into::into) });
        }
        if let Err(refused) = self.guard.check("kube") {
            return Box::pin(std::future::ready(Err(refused.into())));
        }
        // A write still unanswered at the deadline is given up (its connection
        // closed), so that a request held up by the network is cut short rather
        // than completed after another replica took over.
        let deadline = self.guard.deadline();
        let sent = in_turn(Some(self.writes_in_flight.clone()), self.writes.call(req));
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return sent.await.map_err(Into::into);
            };
            before_deadline(deadline, sent).await
        })
    }
}

/// `sent`, given up once `deadline` has passed. The clock is read before every
/// poll of the request, so a replica that wakes up past its deadline (SIGSTOP,
/// a long pause) with a write not yet on the wire (waiting for a connection,
/// in a TLS handshake) drops it instead of sending it. `tokio::time::timeout`
/// would poll the request first and only then look at its timer: the write
/// would go out after another replica took over.
async fn before_deadline<F, T, E>(deadline: Instant, sent: F) -> Result<T, tower::BoxError>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<tower::BoxError>,
{
    let mut sent = std::pin::pin!(sent);
    let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline.into()));
    std::future::poll_fn(|cx| {
        if Instant::now() >= deadline {
            return Poll::Ready(Err(NotLeader { target: "kube" }.into()));
        }
        if let Poll::Ready(answer) = sent.as_mut().poll(cx) {
            return Poll::Ready(answer.map_err(Into::into));
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(NotLeader { target: "kube" }.into())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RFC2136 UPDATE made ready only after the deadline (the replica was
    /// frozen in between) is not sent; one held up waits no longer than the
    /// deadline; a renewal meanwhile lets it through.
    #[tokio::test]
    async fn a_write_outside_the_api_client_is_fenced_at_every_poll() {
        use std::sync::atomic::AtomicBool;
        let g = LeaderGuard::elected();
        let sent = Arc::new(AtomicBool::new(false));
        let send = |sent: &Arc<AtomicBool>| {
            let sent = sent.clone();
            async move { sent.store(true, Ordering::SeqCst) }
        };
        // Made before the deadline, first polled after it: dropped unsent.
        g.extend(Instant::now() + Duration::from_millis(30));
        let late = g.while_leading("rfc2136", send(&sent));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(late.await.is_err());
        assert!(!sent.load(Ordering::SeqCst), "a late write went out");

        // Held up (no connection yet) past the deadline: given up then.
        let gate = Arc::new(tokio::sync::Notify::new());
        let held = |gate: &Arc<tokio::sync::Notify>| {
            let (gate, sent) = (gate.clone(), sent.clone());
            async move {
                gate.notified().await;
                sent.store(true, Ordering::SeqCst)
            }
        };
        g.extend(Instant::now() + Duration::from_millis(30));
        let started = Instant::now();
        assert!(g.while_leading("rfc2136", held(&gate)).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!sent.load(Ordering::SeqCst));

        // Renewed while held up: it goes through.
        g.extend(Instant::now() + Duration::from_millis(30));
        let write = tokio::spawn({
            let (g, w) = (g.clone(), held(&gate));
            async move { g.while_leading("rfc2136", w).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        g.extend(Instant::now() + Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(40)).await;
        gate.notify_one();
        assert!(write.await.unwrap().is_ok());
        assert!(sent.load(Ordering::SeqCst));
    }

    #[test]
    fn writes_are_allowed_only_until_the_deadline() {
        let g = LeaderGuard::elected();
        assert!(g.check("kube").is_err());
        assert!(!*g.leading().borrow());
        let now = Instant::now();
        assert_eq!(g.extend(now + Duration::from_secs(60)), 1);
        assert!(g.check("kube").is_ok());
        assert!(*g.leading().borrow());
        // A renewal within the term keeps the term.
        assert_eq!(g.extend(now + Duration::from_secs(90)), 1);
        assert!(g.valid_at(now + Duration::from_secs(89)));
        // Past the deadline, nothing may be written, whoever asks and whether or
        // not the election has noticed yet.
        assert!(!g.valid_at(now + Duration::from_secs(91)));
        g.revoke();
        assert!(g.check("rfc2136").is_err());
        assert!(!*g.leading().borrow());
        assert_eq!(g.extend(now + Duration::from_secs(60)), 2);
        let mut r = Registry::default();
        g.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(
            out.contains(r#"leader_writes_refused_total{target="kube"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"leader_writes_refused_total{target="rfc2136"} 1"#),
            "{out}"
        );
    }

    /// A replica frozen (SIGSTOP) with a write accepted by the fence but not yet
    /// sent, woken up after its deadline: the write must not go out.
    #[tokio::test]
    async fn a_write_held_up_past_the_deadline_is_not_sent_when_the_replica_wakes() {
        use std::sync::atomic::AtomicBool;
        use tower::Service as _;
        let g = LeaderGuard::elected();
        g.extend(Instant::now() + Duration::from_millis(200));
        // The request goes out only once the gate opens (a connection ready).
        let gate = Arc::new(tokio::sync::Notify::new());
        let sent = Arc::new(AtomicBool::new(false));
        let inner = {
            let (gate, sent) = (gate.clone(), sent.clone());
            tower::service_fn(move |_req: Request<()>| {
                let (gate, sent) = (gate.clone(), sent.clone());
                async move {
                    gate.notified().await;
                    sent.store(true, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(())
                }
            })
        };
        let mut fence = Fence::new(inner.clone(), inner, g.clone());
        let write = Request::post("/apis/x").body(()).unwrap();
        let mut answer = fence.call(write);
        assert!(futures::poll!(&mut answer).is_pending());
        // Frozen past the deadline: nothing runs; then the connection is ready
        // and the process runs again.
        std::thread::sleep(Duration::from_millis(300));
        gate.notify_one();
        let answer = answer.await;
        assert!(
            answer
                .as_ref()
                .is_err_and(|e| e.downcast_ref::<NotLeader>().is_some()),
            "the write was answered {answer:?}"
        );
        assert!(
            !sent.load(Ordering::SeqCst),
            "the write was sent past the deadline"
        );
    }

    /// Requests wait for a turn: never more than the bound in flight at the
    /// HTTP client, reads and writes each; watches stay open beside them.
    #[tokio::test]
    async fn requests_in_flight_are_bounded_and_watches_are_not_counted() {
        use std::sync::atomic::AtomicUsize;
        use tower::Service as _;
        let g = LeaderGuard::always();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let watching = Arc::new(AtomicUsize::new(0));
        let inner = {
            let (gate, now, most, watching) =
                (gate.clone(), now.clone(), most.clone(), watching.clone());
            tower::service_fn(move |req: Request<()>| {
                let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
                let watching = watching.clone();
                async move {
                    if is_watch(&req) {
                        watching.fetch_add(1, Ordering::SeqCst);
                    } else {
                        most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    }
                    let _open = gate.acquire().await;
                    if !is_watch(&req) {
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                    Ok::<_, std::convert::Infallible>(())
                }
            })
        };
        let mut fence = Fence::new(inner.clone(), inner, g);
        let mut pending = Vec::new();
        let each = 2 * WRITES_IN_FLIGHT.max(READS_IN_FLIGHT);
        for i in 0..(3 * each) {
            let req = match i % 3 {
                0 => Request::patch("/apis/x/status").body(()).unwrap(),
                1 => Request::get("/api/v1/secrets/y").body(()).unwrap(),
                _ => Request::get("/apis/x?watch=true&resourceVersion=1")
                    .body(())
                    .unwrap(),
            };
            pending.push(tokio::spawn(fence.call(req)));
        }
        // Every watch and a full turn of reads and writes get through.
        let expected = WRITES_IN_FLIGHT + READS_IN_FLIGHT;
        // (One thread: the spawned requests run while this one yields.)
        for _ in 0..10_000 {
            if now.load(Ordering::SeqCst) >= expected {
                break;
            }
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(most.load(Ordering::SeqCst), expected);
        assert_eq!(
            watching.load(Ordering::SeqCst),
            each,
            "a watch waited for a turn"
        );
        gate.add_permits(usize::MAX >> 4);
        for p in pending {
            assert!(p.await.unwrap().is_ok());
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            expected,
            "more requests were in flight than the bound"
        );
    }

    #[test]
    fn without_an_election_writes_are_always_allowed() {
        let g = LeaderGuard::always();
        assert!(g.check("kube").is_ok());
        g.revoke();
        assert!(g.check("kube").is_ok());
        assert!(g.valid_at(Instant::now() + Duration::from_secs(86400 * 365)));
        assert_eq!(g.deadline(), None);
    }

    #[tokio::test]
    async fn the_fence_refuses_writes_and_passes_reads() {
        use tower::{Service, ServiceExt};
        // Reads and writes go their own ways (writes over fenced connections).
        let way = |to: &'static str| {
            tower::service_fn(move |_: Request<()>| async move { Ok::<_, NotLeader>(to) })
        };
        let g = LeaderGuard::elected();
        let mut svc = Fence::new(way("reads"), way("writes"), g.clone());
        let get = || Request::get("/api/v1/namespaces").body(()).unwrap();
        let patch = || {
            Request::patch("/apis/anypost.com/v1alpha1/x")
                .body(())
                .unwrap()
        };
        assert_eq!(
            svc.ready().await.unwrap().call(get()).await.unwrap(),
            "reads"
        );
        let e = svc.ready().await.unwrap().call(patch()).await.unwrap_err();
        assert!(e.downcast_ref::<NotLeader>().is_some(), "{e}");
        let kube_error = kube::Error::Service(e);
        assert!(is_refused(&kube_error));
        g.extend(Instant::now() + Duration::from_secs(60));
        assert_eq!(
            svc.ready().await.unwrap().call(patch()).await.unwrap(),
            "writes"
        );
        assert_eq!(
            svc.ready().await.unwrap().call(get()).await.unwrap(),
            "reads"
        );
    }
}
