//! The zone as every part of the operator shares it: the DNS server reads it, the
//! zone's publisher swaps in new contents, the controller asks whether it holds a
//! domain's records. Publishing swaps in a new immutable snapshot (with a lookup
//! index built beforehand), so queries never wait for a rebuild and never see half
//! a change.

use super::fast::Prepared;
use super::metrics::DnsMetrics;
use super::xfr::Delta;
use crate::adapters::dns::wire;
use crate::core::ports::{Published, Publisher};
use crate::core::vocab::Reason;
use crate::core::zone::{Change, RData, RecordType, RrSet, Zone, next_serial, plan, serves};
use hickory_proto::rr::{self as hrr, LowerName, Name, Record};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;
use tracing::warn;

/// Target size of one zone-transfer message.
pub(super) const AXFR_MESSAGE_BYTES: usize = 16 * 1024;
/// Changes kept for IXFR: a secondary further behind gets the whole zone.
pub const JOURNAL_DELTAS: usize = 100;

/// The zone as served: the model plus a lookup index of wire-format records.
pub(super) struct Served {
    pub(super) zone: Arc<Zone>,
    pub(super) origin: LowerName,
    /// Apex SOA for negative answers: TTL = min(SOA TTL, minimum) (RFC 2308).
    pub(super) negative_soa: Record,
    /// Every name that exists, including empty non-terminals (no RRsets).
    pub(super) nodes: HashMap<LowerName, Vec<Vec<Record>>>,
    /// The apex SOA.
    soa: Record,
    /// Records in a zone transfer (the SOA twice).
    transfer_len: usize,
    /// Every ordinary response, prepared for the fast path.
    pub(super) prepared: Prepared,
    /// The changes that led here, oldest first, for IXFR.
    pub(super) journal: Vec<Arc<Delta>>,
}

fn name(n: &str) -> Option<Name> {
    wire::dns_name(n).ok()
}

fn to_wire(owner: &Name, ttl: u32, r: &RData) -> Option<Record> {
    let data = wire::to_hickory(r).ok()?;
    Some(Record::from_rdata(owner.clone(), ttl, data))
}

impl Served {
    /// Builds the index. Names that are not valid DNS names cannot come from the
    /// checked flags and tokens; they are skipped with a warning rather than
    /// failing the whole zone.
    fn build(zone: Zone) -> Option<Served> {
        let origin_name = name(zone.origin())?;
        let origin = LowerName::new(&origin_name);
        let mut nodes: HashMap<LowerName, Vec<Vec<Record>>> = HashMap::new();
        let mut soa = None;
        let mut transfer_len = 2;
        for (owner, _, set) in zone.iter() {
            let Some(owner_name) = name(owner) else {
                warn!(
                    name = owner,
                    "skipping a zone name that is not a valid DNS name"
                );
                continue;
            };
            let records: Vec<Record> = set
                .rdata()
                .iter()
                .filter_map(|r| to_wire(&owner_name, set.ttl, r))
                .collect();
            if records.is_empty() {
                continue;
            }
            if set.record_type() == RecordType::Soa && owner == zone.origin() {
                soa = Some(records[0].clone());
            } else {
                transfer_len += records.len();
            }
            // The owner and every name between it and the apex exist.
            let mut n = LowerName::new(&owner_name);
            nodes.entry(n.clone()).or_default().push(records);
            while n != origin && n.num_labels() > origin.num_labels() {
                n = n.base_name();
                nodes.entry(n.clone()).or_default();
            }
        }
        let soa = soa?;
        let mut negative_soa = soa.clone();
        if let hrr::RData::SOA(s) = &soa.data {
            negative_soa.ttl = soa.ttl.min(s.minimum);
        }
        let mut served = Served {
            zone: Arc::new(zone),
            origin,
            negative_soa,
            nodes,
            soa,
            transfer_len,
            prepared: Prepared::empty(),
            journal: Vec::new(),
        };
        served.prepared = Prepared::build(&served)?;
        Some(served)
    }

    /// The apex SOA (the first record of a transfer).
    pub(super) fn soa(&self) -> &Record {
        &self.soa
    }

    /// A zone transfer's records: the SOA, every other record in the zone's
    /// order (by name, then type), the SOA again. Made when asked, from the
    /// index: transfers are rare, and a copy kept for them would cost as much
    /// memory as the index itself.
    pub(super) fn transfer(&self) -> Vec<&Record> {
        let mut out = Vec::with_capacity(self.transfer_len);
        out.push(&self.soa);
        let mut last = None;
        for (owner, _, _) in self.zone.iter() {
            if last == Some(owner) {
                continue;
            }
            last = Some(owner);
            let Some(sets) = name(owner).and_then(|n| self.nodes.get(&LowerName::new(&n))) else {
                continue;
            };
            let others = sets.iter().flatten();
            out.extend(others.filter(|r| !self.is_apex_soa(r)));
        }
        out.push(&self.soa);
        out
    }

    fn is_apex_soa(&self, r: &Record) -> bool {
        r.record_type() == hrr::RecordType::SOA && LowerName::new(&r.name) == self.origin
    }
}

/// `set`'s records at `owner` in wire format.
fn wire_records(owner: &str, set: &RrSet) -> Vec<Record> {
    let Some(owner) = name(owner) else {
        return Vec::new();
    };
    set.rdata()
        .iter()
        .filter_map(|r| to_wire(&owner, set.ttl, r))
        .collect()
}

/// The records of `old` missing from `new` (all of them when the TTL changed).
fn missing(owner: &str, old: &RrSet, new: Option<&RrSet>) -> Vec<Record> {
    let kept = |r: &RData| new.is_some_and(|n| n.ttl == old.ttl && n.rdata().contains(r));
    let gone = RrSet::new(old.ttl, old.rdata().iter().filter(|r| !kept(r)).cloned());
    wire_records(owner, &gone)
}

/// The change from `old` to `new` record by record (RFC 1995's deleted and
/// added records), between their SOAs.
fn delta(old: &Served, new: &Served) -> Delta {
    let (mut deleted, mut added) = (Vec::new(), Vec::new());
    for change in plan(&old.zone, &new.zone).changes {
        match &change {
            Change::Create { name, new, .. } => added.extend(wire_records(name, new)),
            Change::Delete { name, old, .. } => deleted.extend(wire_records(name, old)),
            Change::Replace { name, old, new, .. } => {
                deleted.extend(missing(name, old, Some(new)));
                added.extend(missing(name, new, Some(old)));
            }
        }
    }
    Delta {
        old_soa: old.soa().clone(),
        new_soa: new.soa().clone(),
        deleted,
        added,
    }
}

/// Adds `delta` to the journal, keeping the newest [`JOURNAL_DELTAS`] and
/// never more records than the zone has (beyond that a transfer of the whole
/// zone is smaller).
fn record(journal: &mut VecDeque<Arc<Delta>>, delta: Delta, zone_records: usize) {
    journal.push_back(Arc::new(delta));
    let mut total: usize = journal.iter().map(|d| d.len()).sum();
    while journal.len() > JOURNAL_DELTAS || (total > zone_records && journal.len() > 1) {
        total -= journal.pop_front().map_or(0, |d| d.len());
    }
}

/// The zone every part of the operator shares: the DNS server reads it, the watch
/// publishes it, the controller asks whether it holds a domain's records.
/// Cloning is cheap.
#[derive(Clone)]
pub struct ZoneHandle {
    served: Arc<watch::Sender<Option<Arc<Served>>>>,
    /// Held while publishing; the journal of recent changes.
    publishing: Arc<Mutex<VecDeque<Arc<Delta>>>>,
    pub(super) metrics: Arc<DnsMetrics>,
}

impl Default for ZoneHandle {
    fn default() -> Self {
        ZoneHandle::new()
    }
}

impl ZoneHandle {
    /// A handle with no zone yet. Until the first [`publish`](Self::publish) the
    /// server answers SERVFAIL, so a starting replica never claims that names
    /// don't exist before it has read the SendingDomains.
    pub fn new() -> ZoneHandle {
        ZoneHandle {
            served: Arc::new(watch::channel(None).0),
            publishing: Arc::new(Mutex::new(VecDeque::new())),
            metrics: Arc::default(),
        }
    }

    /// The server's metrics, to register with the operator's registry.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }

    pub(super) fn snapshot(&self) -> Option<Arc<Served>> {
        self.served.borrow().clone()
    }

    /// Follows the zone served: for the server's workers, and NOTIFY.
    pub(super) fn subscribe(&self) -> watch::Receiver<Option<Arc<Served>>> {
        self.served.subscribe()
    }

    /// Serves `zone` from now on, unless it has the same content as the zone
    /// served now. Gives the SOA serial of the published zone, or `None` when
    /// nothing changed. The serial is the unix time, or one more than the previous
    /// serial if that is not greater ([`next_serial`]).
    pub fn publish(&self, mut zone: Zone) -> Option<u32> {
        let mut journal = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.snapshot();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let serial = match &current {
            Some(cur) if cur.zone.same_content(&zone) => return None,
            Some(cur) => next_serial(cur.zone.serial().unwrap_or(0), now),
            None => now,
        };
        zone.set_serial(serial);
        let origin = zone.origin().to_string();
        let rrsets = zone.len();
        match Served::build(zone) {
            Some(mut served) => {
                if let Some(cur) = &current {
                    record(&mut journal, delta(cur, &served), served.transfer_len);
                }
                served.journal = journal.iter().cloned().collect();
                self.served.send_replace(Some(Arc::new(served)));
                self.metrics.publishes.inc();
                self.metrics.serial.set(i64::from(serial));
                self.metrics.rrsets.set(rrsets as i64);
                Some(serial)
            }
            None => {
                warn!(zone = %origin, "not publishing a zone without an SOA or with an invalid origin");
                None
            }
        }
    }

    /// The zone served now (`None` before the first publish).
    pub fn current(&self) -> Option<Arc<Zone>> {
        self.snapshot().map(|s| s.zone.clone())
    }

    /// Whether a zone has been published (for readiness).
    pub fn is_loaded(&self) -> bool {
        self.served.borrow().is_some()
    }

    /// The serial of the zone served now.
    pub fn serial(&self) -> Option<u32> {
        self.snapshot().and_then(|s| s.zone.serial())
    }

    /// Whether the zone served now holds the token's records with a DKIM record
    /// for every given public key (see [`serves`]).
    pub fn holds(&self, token: &str, public_keys: &[&str]) -> bool {
        self.current()
            .is_some_and(|zone| serves(&zone, token, public_keys))
    }

    /// Waits until the served zone changes (for tests and callers that want to
    /// react to a publish).
    pub async fn changed(&self) {
        let mut rx = self.served.subscribe();
        let _ = rx.changed().await;
    }
}

/// The controller's view of the embedded backend: a domain's records are
/// published when this replica's zone serves them.
impl Publisher for ZoneHandle {
    fn published(&self, token: &str, public_keys: &[&str]) -> Published {
        let Some(zone) = self.current() else {
            return Published::No {
                reason: Reason::ZoneNotLoaded,
                message: "the embedded DNS zone has not loaded the SendingDomains yet".into(),
            };
        };
        if serves(&zone, token, public_keys) {
            Published::Yes
        } else {
            Published::No {
                reason: Reason::Publishing,
                message: format!(
                    "the zone does not serve the records at {token}.{} yet; they follow the status within a second",
                    zone.origin()
                ),
            }
        }
    }
}
