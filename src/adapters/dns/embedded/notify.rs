//! NOTIFY (RFC 1996): after every publish the secondaries are told the new
//! serial, so that they transfer the change at once instead of at their next
//! refresh. Each message is retried until the secondary acknowledges it.

use super::metrics::DnsMetrics;
use super::zone_handle::ZoneHandle;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, Record, RecordType, TSigner};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// Sends of one NOTIFY before giving up (the secondary still refreshes on its own).
const ATTEMPTS: u32 = 5;
/// Wait for the first acknowledgement; doubled after each attempt.
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// Sends a NOTIFY to every target after each publish of `handle` (and once for
/// the zone served when it starts), signed with `signer` if given. Runs until
/// the handle is gone.
pub async fn notify_secondaries(
    handle: ZoneHandle,
    targets: Vec<SocketAddr>,
    signer: Option<TSigner>,
) {
    let mut zone = handle.subscribe();
    zone.mark_changed();
    while zone.changed().await.is_ok() {
        let Some(served) = zone.borrow_and_update().clone() else {
            continue;
        };
        let origin = Name::from(&served.origin);
        for target in &targets {
            tokio::spawn(notify_one(
                *target,
                origin.clone(),
                served.soa().clone(),
                signer.clone(),
                handle.metrics.clone(),
            ));
        }
    }
}

/// The NOTIFY message for `soa`, signed if a signer is given.
fn message(zone: &Name, soa: &Record, signer: Option<&TSigner>) -> Option<(u16, Vec<u8>)> {
    let id = getrandom::u32().ok()? as u16;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Notify);
    msg.metadata.authoritative = true;
    msg.add_query(Query::query(zone.clone(), RecordType::SOA));
    msg.add_answer(soa.clone());
    if let Some(signer) = signer {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        msg.finalize(signer, now).ok()?;
    }
    Some((id, msg.to_vec().ok()?))
}

async fn notify_one(
    target: SocketAddr,
    zone: Name,
    soa: Record,
    signer: Option<TSigner>,
    metrics: Arc<DnsMetrics>,
) {
    let acknowledged = send(target, &zone, &soa, signer.as_ref()).await;
    if !acknowledged {
        warn!(%target, zone = %zone, "a secondary did not acknowledge NOTIFY; it will refresh on its own");
    }
    metrics.notified(acknowledged);
}

/// Sends the NOTIFY until an answer with its id arrives; whether one did.
async fn send(target: SocketAddr, zone: &Name, soa: &Record, signer: Option<&TSigner>) -> bool {
    let Some((id, bytes)) = message(zone, soa, signer) else {
        return false;
    };
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let Ok(socket) = UdpSocket::bind(local).await else {
        return false;
    };
    let mut buf = [0u8; 1024];
    let mut wait = FIRST_WAIT;
    for _ in 0..ATTEMPTS {
        if let Err(error) = socket.send_to(&bytes, target).await {
            debug!(%error, %target, "sending NOTIFY failed");
        }
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await
        {
            // An answer from the target to this message (QR set).
            if from == target && n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 {
                return true;
            }
        }
        wait *= 2;
    }
    false
}
