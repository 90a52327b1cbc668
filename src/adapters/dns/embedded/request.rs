//! One request, from its bytes to the bytes sent back: the fast path for
//! ordinary queries ([`super::fast`]), the full handler for the rest
//! ([`super::answer`]), DNS cookies ([`super::cookie`]) and, over UDP, response
//! rate limiting ([`super::rrl`]). The sockets ([`super::transport`],
//! [`super::tcp`]), the tests and the fuzz target all go through here.

use super::answer::{Responder, answer};
use super::cookie::{Check, CookieSecrets, SecretCache};
use super::fast;
use super::rrl::{Rrl, RrlConfig, Verdict};
use super::xfr::TransferConfig;
use super::zone_handle::{Served, ZoneHandle};
use hickory_net::xfer::Protocol;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// How the server answers, beyond the zone itself.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Client networks allowed to transfer the zone without TSIG.
    pub allow_axfr: Vec<IpNet>,
    /// Response rate limiting over UDP (rate 0: off).
    pub rrl: RrlConfig,
    /// Server cookies; `None` ignores cookies (and none exempts from RRL).
    pub cookies: Option<CookieSecrets>,
    /// TCP connection limits.
    pub tcp: super::tcp::TcpLimits,
    /// TSIG keys for transfers, and the secondaries to NOTIFY.
    pub transfer: TransferConfig,
}

/// What every worker of one server shares.
pub(super) struct Shared {
    pub(super) handle: ZoneHandle,
    pub(super) responder: Responder,
    rrl: Option<Rrl>,
    cookies: Option<CookieSecrets>,
}

impl Shared {
    pub(super) fn new(handle: ZoneHandle, options: &ServeOptions) -> Shared {
        Shared {
            responder: Responder::new(
                handle.clone(),
                options.allow_axfr.clone(),
                options.transfer.keys.clone(),
                options.cookies.clone(),
            ),
            handle,
            rrl: Rrl::new(options.rrl.clone()),
            cookies: options.cookies.clone(),
        }
    }
}

/// What became of a request on the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fast {
    /// The response is in the worker's buffer.
    Reply,
    /// Rate limited: nothing is sent.
    Drop,
    /// Not for the fast path: the full handler answers it.
    Slow,
}

/// The request path of one socket loop (or one TCP connection): its own view
/// of the zone, cookie secrets and response buffer, so that nothing is shared
/// per query but the rate limiter's table.
pub struct Worker {
    shared: Arc<Shared>,
    zone: watch::Receiver<Option<Arc<Served>>>,
    served: Option<Arc<Served>>,
    secrets: SecretCache,
    pub(super) out: Vec<u8>,
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>) -> Worker {
        let zone = shared.handle.subscribe();
        let served = zone.borrow().clone();
        Worker {
            shared,
            zone,
            served,
            secrets: SecretCache::default(),
            out: Vec::with_capacity(4096),
        }
    }

    pub(super) fn metrics(&self) -> Arc<super::metrics::DnsMetrics> {
        self.shared.handle.metrics.clone()
    }

    /// The zone served now (checked with one atomic load per query).
    fn current(&mut self) -> Option<Arc<Served>> {
        if self.zone.has_changed().unwrap_or(false) {
            self.served = self.zone.borrow_and_update().clone();
        }
        self.served.clone()
    }

    /// Answers `raw` on the fast path into `self.out`, if it qualifies.
    pub(super) fn fast(&mut self, raw: &[u8], src: SocketAddr, protocol: Protocol) -> Fast {
        let Some(q) = fast::parse(raw) else {
            return Fast::Slow;
        };
        let Some(served) = self.current() else {
            return Fast::Slow;
        };
        let now = unix_now();
        let mut cookie = [0u8; 24];
        let mut cookie_len = 0;
        let mut proven = false;
        if let (Some(option), Some(secrets)) = (q.edns.and_then(|e| e.cookie), &self.shared.cookies)
        {
            proven = secrets.check(&mut self.secrets, option, src.ip(), now, &mut cookie)
                == Check::Valid;
            cookie_len = 24;
        }
        let cookie = &cookie[..cookie_len];
        let udp = protocol == Protocol::Udp;
        let limit = if udp {
            q.udp_limit()
        } else {
            usize::from(u16::MAX)
        };
        let outcome = fast::respond(&served.prepared, &q, cookie, limit, &mut self.out);
        let metrics = &self.shared.handle.metrics;
        if udp
            && !proven
            && let Some(rrl) = &self.shared.rrl
            && !rrl.exempt(src.ip())
        {
            match rrl.account(src.ip(), outcome.kind, raw.len(), self.out.len(), now) {
                Verdict::Send => {}
                Verdict::Drop => {
                    metrics.rrl_dropped.inc();
                    return Fast::Drop;
                }
                Verdict::Slip => {
                    metrics.rrl_slipped.inc();
                    let slip = fast::respond(&served.prepared, &q, cookie, 0, &mut self.out);
                    metrics.answered_fast(protocol, slip.rcode, true);
                    return Fast::Reply;
                }
            }
        }
        if proven {
            metrics.cookie_valid.inc();
        }
        metrics.answered_fast(protocol, outcome.rcode, outcome.truncated);
        Fast::Reply
    }

    /// Answers `raw` with the full handler: the messages to send (none when
    /// the packet is dropped, or rate limited over UDP).
    pub(super) async fn slow(
        &mut self,
        raw: &[u8],
        src: SocketAddr,
        protocol: Protocol,
    ) -> Vec<Vec<u8>> {
        let messages = answer(&self.shared.responder, raw.to_vec(), src, protocol).await;
        if protocol != Protocol::Udp {
            return messages;
        }
        let (Some(rrl), Some(first)) = (&self.shared.rrl, messages.first()) else {
            return messages;
        };
        if rrl.exempt(src.ip()) {
            return messages;
        }
        // Responses the full handler gives over UDP are rare: errors, ANY,
        // transfers refused. Over the rate they are dropped.
        let kind = if first.get(3).is_some_and(|b| b & 0x0f == 0) {
            fast::Kind::Answer { name: u32::MAX }
        } else {
            fast::Kind::Error
        };
        match rrl.account(src.ip(), kind, raw.len(), first.len(), unix_now()) {
            Verdict::Send => messages,
            Verdict::Drop | Verdict::Slip => {
                self.shared.handle.metrics.rrl_dropped.inc();
                Vec::new()
            }
        }
    }

    /// The whole request path for one packet: the messages to send back.
    pub async fn answer(
        &mut self,
        raw: &[u8],
        src: SocketAddr,
        protocol: Protocol,
    ) -> Vec<Vec<u8>> {
        match self.fast(raw, src, protocol) {
            Fast::Reply => vec![self.out.clone()],
            Fast::Drop => Vec::new(),
            Fast::Slow => self.slow(raw, src, protocol).await,
        }
    }
}

/// The request path without sockets, for tests and fuzzing: one worker of a
/// server with `options`.
pub fn endpoint(handle: &ZoneHandle, options: &ServeOptions) -> Worker {
    Worker::new(Arc::new(Shared::new(handle.clone(), options)))
}
