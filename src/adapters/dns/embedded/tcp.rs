//! DNS over TCP with limits, as NSD (`tcp-count`) and BIND (`tcp-clients`)
//! keep them: a cap on open connections, a total lifetime and an idle timeout
//! per connection, a deadline for each message once started, and one request
//! answered at a time per connection (a client may pipeline; the next request
//! is read only once the previous answer is written, so at most one answer per
//! connection is ever queued). Memory stays bounded by the cap whatever clients
//! do.
//!
//! At the cap, a new connection takes the place of the connection idle longest
//! from the source prefix (/24, /56) holding the most connections, unless it
//! comes from that prefix itself: then it is closed at once. So a flood of idle
//! connections from a few networks cannot lock real clients out, and cannot
//! push out other networks' connections by reconnecting.

use super::request::Shared;
use super::request::{Fast, Worker};
use hickory_net::xfer::Protocol;
use std::collections::HashMap;
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
    /// The source prefix (/24 or /56).
    prefix: u128,
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

/// The network a connection comes from, for fairness between sources.
fn prefix(ip: std::net::IpAddr) -> u128 {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
        std::net::IpAddr::V6(v6) => (u128::from(v6) & (u128::MAX << 72)) | 1,
    }
}

impl Table {
    /// Makes room for a connection from `newcomer` at the cap: evicts the
    /// connection idle longest of the prefix holding the most connections, or,
    /// when no prefix holds more than one and the newcomer's holds none, the
    /// connection idle longest of all. False (no room) when the newcomer's own
    /// prefix holds about as many as any other, or nothing there is idle.
    fn make_room(&mut self, newcomer: u128) -> bool {
        let mut counts: HashMap<u128, usize> = HashMap::new();
        for s in &self.slots {
            *counts.entry(s.prefix).or_default() += 1;
        }
        let own = counts.get(&newcomer).copied().unwrap_or(0);
        let Some((&top, &most)) = counts.iter().max_by_key(|(_, n)| **n) else {
            return false;
        };
        let from = match (own + 1 < most, own) {
            (true, _) => Some(top),
            (false, 0) => None,
            (false, _) => return false,
        };
        let idlest = self
            .slots
            .iter()
            .filter(|s| from.is_none_or(|p| s.prefix == p) && s.idle.load(Ordering::Relaxed))
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
        let source = prefix(src.ip());
        if t.slots.len() >= limits.max_connections {
            metrics.tcp_refused.inc();
            if !t.make_room(source) {
                continue;
            }
        }
        t.next_id += 1;
        let now = epoch.elapsed().as_millis() as u64;
        let slot = Slot {
            id: t.next_id,
            prefix: source,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(conns: &[(&str, u64)]) -> Table {
        let mut t = Table::default();
        for (ip, last) in conns {
            t.next_id += 1;
            t.slots.push(Slot {
                id: t.next_id,
                prefix: prefix(ip.parse().unwrap()),
                last_active: Arc::new(AtomicU64::new(*last)),
                idle: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                close: Arc::new(Notify::new()),
            });
        }
        t
    }

    fn left(t: &Table) -> Vec<u64> {
        t.slots.iter().map(|s| s.id).collect()
    }

    #[test]
    fn at_the_cap_the_network_holding_most_gives_way_not_the_newcomer() {
        // Three from one /24, one from another (idle longest of all).
        let flood = [
            ("127.77.0.1", 5),
            ("127.77.0.2", 3),
            ("127.77.0.3", 9),
            ("127.9.0.1", 1),
        ];
        let mut t = table(&flood);
        assert!(t.make_room(prefix("127.55.0.1".parse().unwrap())));
        assert_eq!(left(&t), [1, 3, 4], "the flood's idlest went");
        // The flooding network reconnecting pushes out no one else.
        let mut t = table(&flood);
        assert!(!t.make_room(prefix("127.77.0.200".parse().unwrap())));
        assert_eq!(left(&t), [1, 2, 3, 4]);
    }

    #[test]
    fn when_every_network_holds_one_a_new_network_takes_the_idlest() {
        let mut t = table(&[("10.0.1.1", 5), ("10.0.2.1", 2), ("10.0.3.1", 7)]);
        assert!(t.make_room(prefix("10.0.9.1".parse().unwrap())));
        assert_eq!(left(&t), [1, 3]);
        // One from a network already there is turned away.
        assert!(!t.make_room(prefix("10.0.1.2".parse().unwrap())));
        // IPv6 by /56: 2001:db8::/56 holds both.
        let mut t = table(&[("2001:db8:0:1::1", 1), ("2001:db8:0:1:ff::2", 2)]);
        assert!(t.make_room(prefix("2001:db8:0:200::1".parse().unwrap())));
        assert_eq!(left(&t), [2]);
    }

    #[test]
    fn a_busy_connection_is_never_evicted() {
        let mut t = table(&[("10.0.1.1", 1), ("10.0.1.2", 2), ("10.0.1.3", 3)]);
        for s in &t.slots {
            s.idle.store(false, Ordering::Relaxed);
        }
        assert!(!t.make_room(prefix("10.0.9.1".parse().unwrap())));
        assert_eq!(left(&t).len(), 3);
    }
}
