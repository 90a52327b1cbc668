//! DNS over TCP with limits, as NSD (`tcp-count`) and BIND (`tcp-clients`)
//! keep them: a cap on open connections, a total lifetime and an idle timeout
//! per connection, a deadline for each message once started, and one request
//! answered at a time per connection (a client may pipeline; the next request
//! is read only once the previous answer is written, so at most one answer per
//! connection is ever queued). Memory stays bounded by the cap whatever clients
//! do.
//!
//! At the cap, a new connection takes the place of the one idle longest, so
//! that a flood of idle connections cannot lock real clients out.

use super::request::Shared;
use super::request::{Fast, Worker};
use hickory_net::xfer::Protocol;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::debug;

/// The TCP limits (see `--dns-tcp-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpLimits {
    /// Most connections open at once (NSD: 100, BIND: 150).
    pub max_connections: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Every connection is closed this long after it opened, busy or not.
    pub lifetime: Duration,
    /// A message must arrive whole (and an answer be taken) within this.
    pub io_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 150,
            idle_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(120),
            io_timeout: Duration::from_secs(5),
        }
    }
}

/// One open connection, as the accept loop sees it.
struct Slot {
    id: u64,
    /// Milliseconds since the server started of its last request (or opening).
    last_active: Arc<AtomicU64>,
    /// Whether it is between requests (only those are evicted).
    idle: Arc<std::sync::atomic::AtomicBool>,
    close: Arc<Notify>,
}

/// The open connections.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    next_id: u64,
}

impl Table {
    /// Evicts the connection idle longest; false if none is idle.
    fn evict_idlest(&mut self) -> bool {
        let idlest = self
            .slots
            .iter()
            .filter(|s| s.idle.load(Ordering::Relaxed))
            .min_by_key(|s| s.last_active.load(Ordering::Relaxed));
        match idlest {
            Some(slot) => {
                slot.close.notify_one();
                let id = slot.id;
                self.slots.retain(|s| s.id != id);
                true
            }
            None => false,
        }
    }
}

/// Accepts and serves TCP connections on `listener` until the task is dropped.
pub(super) async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, limits: TcpLimits) {
    let table = Arc::new(Mutex::new(Table::default()));
    let epoch = Instant::now();
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(got) => got,
            Err(error) => {
                // E.g. out of file descriptors: wait instead of spinning.
                debug!(%error, "accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = &shared.handle.metrics;
        let mut t = table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.slots.len() >= limits.max_connections {
            metrics.tcp_refused.inc();
            if !t.evict_idlest() {
                continue;
            }
        }
        t.next_id += 1;
        let now = epoch.elapsed().as_millis() as u64;
        let slot = Slot {
            id: t.next_id,
            last_active: Arc::new(AtomicU64::new(now)),
            idle: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            close: Arc::new(Notify::new()),
        };
        let conn = Connection {
            stream,
            src,
            worker: Worker::new(shared.clone()),
            limits: limits.clone(),
            last_active: slot.last_active.clone(),
            idle: slot.idle.clone(),
            epoch,
        };
        let (id, close) = (slot.id, slot.close.clone());
        t.slots.push(slot);
        drop(t);
        metrics.tcp_connections.inc();
        let table = table.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = conn.run() => {}
                () = close.notified() => {}
            }
            shared.handle.metrics.tcp_connections.dec();
            let mut t = table
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            t.slots.retain(|s| s.id != id);
        });
    }
}

/// Why a connection ended.
enum End {
    Closed,
    Idle,
    Lifetime,
}

struct Connection {
    stream: TcpStream,
    src: SocketAddr,
    worker: Worker,
    limits: TcpLimits,
    last_active: Arc<AtomicU64>,
    idle: Arc<std::sync::atomic::AtomicBool>,
    epoch: Instant,
}

impl Connection {
    async fn run(mut self) {
        let _ = self.stream.set_nodelay(true);
        let end = self.serve().await;
        let metrics = self.worker.metrics();
        match end {
            End::Idle => metrics.tcp_closed_idle.inc(),
            End::Lifetime => metrics.tcp_closed_lifetime.inc(),
            End::Closed => 0,
        };
        let _ = self.stream.shutdown().await;
    }

    /// Reads requests and writes answers until the client closes, a limit is
    /// reached or the stream fails.
    async fn serve(&mut self) -> End {
        let deadline = tokio::time::Instant::now() + self.limits.lifetime;
        let mut buf = Vec::new();
        loop {
            self.idle.store(true, Ordering::Relaxed);
            let idle_until = (tokio::time::Instant::now() + self.limits.idle_timeout).min(deadline);
            let mut len = [0u8; 2];
            match tokio::time::timeout_at(idle_until, self.stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return End::Closed,
                Err(_) if idle_until == deadline => return End::Lifetime,
                Err(_) => return End::Idle,
            }
            self.idle.store(false, Ordering::Relaxed);
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            self.last_active.store(now_ms, Ordering::Relaxed);
            let io = (tokio::time::Instant::now() + self.limits.io_timeout).min(deadline);
            buf.resize(usize::from(u16::from_be_bytes(len)), 0);
            match tokio::time::timeout_at(io, self.stream.read_exact(&mut buf)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return End::Closed,
                Err(_) => return End::Lifetime,
            }
            if !self.answer(&buf).await {
                return End::Closed;
            }
            // Large requests are rare: do not keep their buffer.
            buf.shrink_to(512);
        }
    }

    /// Answers one request; false when an answer could not be written in time.
    async fn answer(&mut self, request: &[u8]) -> bool {
        let messages = match self.worker.fast(request, self.src, Protocol::Tcp) {
            Fast::Reply => vec![self.worker.out.clone()],
            Fast::Drop => Vec::new(),
            Fast::Slow => self.worker.slow(request, self.src, Protocol::Tcp).await,
        };
        for m in &messages {
            let Ok(len) = u16::try_from(m.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(m.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(m);
            let write = self.stream.write_all(&framed);
            if !matches!(
                tokio::time::timeout(self.limits.io_timeout, write).await,
                Ok(Ok(()))
            ) {
                return false;
            }
        }
        true
    }
}
