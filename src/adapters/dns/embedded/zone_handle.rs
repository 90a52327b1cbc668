//! The zone as every part of the operator shares it: the DNS server reads it, the
//! zone's publisher swaps in new contents, the controller asks whether it holds a
//! domain's records. Publishing swaps in a new immutable snapshot (with a lookup
//! index built beforehand), so queries never wait for a rebuild and never see half
//! a change. A name whose records did not change keeps its part of the index (its
//! wire records and prepared responses, shared by reference) from one snapshot to
//! the next: a publish costs memory for what changed, not for the whole zone.

use super::fast::Prepared;
use super::metrics::DnsMetrics;
use super::xfr::Delta;
use crate::adapters::dns::wire;
use crate::core::ports::{Published, Publisher};
use crate::core::vocab::Reason;
use crate::core::zone::{Change, RData, RrSet, Zone, next_serial, plan, serves};
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
    /// Every name that exists, including empty non-terminals (no RRsets); a
    /// name's RRsets are shared with the previous snapshot when they did not
    /// change.
    pub(super) nodes: HashMap<LowerName, Sets>,
    /// The apex SOA.
    soa: Record,
    /// Records in a zone transfer (the SOA twice).
    transfer_len: usize,
    /// Every ordinary response, prepared for the fast path.
    pub(super) prepared: Prepared,
    /// The changes that led here, oldest first, for IXFR.
    pub(super) journal: Vec<Arc<Delta>>,
}

/// The RRsets of one name in wire format, one slice per type. Slices, not
/// `Vec`s: a `Record` is 280 bytes, and a `Vec` collected from an iterator
/// keeps room for four of them where most RRsets here hold one.
pub(super) type Sets = Arc<[Box<[Record]>]>;

fn name(n: &str) -> Option<Name> {
    wire::dns_name(n).ok()
}

fn to_wire(owner: &Name, ttl: u32, r: &RData) -> Option<Record> {
    let data = wire::to_hickory(r).ok()?;
    Some(Record::from_rdata(owner.clone(), ttl, data))
}

impl Served {
    /// Builds the index, taking over from `previous` (the snapshot served now)
    /// every name whose RRsets are the same. Names that are not valid DNS names
    /// cannot come from the checked flags and tokens; they are skipped with a
    /// warning rather than failing the whole zone.
    fn build(zone: Zone, previous: Option<&Served>) -> Option<Served> {
        let origin_name = name(zone.origin())?;
        let origin = LowerName::new(&origin_name);
        let mut nodes: HashMap<LowerName, Sets> =
            HashMap::with_capacity(previous.map_or(zone.len(), |p| p.nodes.len()));
        let empty = Sets::default();
        let mut soa = None;
        let mut transfer_len = 2;
        let mut all = zone.iter().peekable();
        // The previous zone, walked alongside (both are in the same order), to
        // tell which names kept their RRsets without a lookup per RRset.
        let mut before = previous.map(|p| p.zone.iter().peekable());
        let (mut group, mut was) = (Vec::new(), Vec::new());
        while let Some((owner, _, _)) = all.peek().copied() {
            group.clear();
            while let Some(entry) = all.next_if(|(o, _, _)| *o == owner) {
                group.push(entry);
            }
            was.clear();
            if let Some(before) = before.as_mut() {
                while before.next_if(|(o, _, _)| *o < owner).is_some() {}
                while let Some(entry) = before.next_if(|(o, _, _)| *o == owner) {
                    was.push(entry);
                }
            }
            let Some(owner_name) = name(owner) else {
                warn!(
                    name = owner,
                    "skipping a zone name that is not a valid DNS name"
                );
                continue;
            };
            let lower = LowerName::new(&owner_name);
            let kept = previous.and_then(|p| {
                let old = p.nodes.get(&lower)?;
                (old.len() == group.len() && was == group).then(|| old.clone())
            });
            let sets = kept.unwrap_or_else(|| {
                group
                    .iter()
                    .map(|(_, _, set)| wire_records_at(&owner_name, set).into_boxed_slice())
                    .filter(|records| !records.is_empty())
                    .collect()
            });
            for records in sets.iter() {
                if records[0].record_type() == hrr::RecordType::SOA && lower == origin {
                    soa = Some(records[0].clone());
                } else {
                    transfer_len += records.len();
                }
            }
            // The owner and every name between it and the apex exist.
            let mut n = lower.clone();
            if !sets.is_empty() {
                nodes.insert(lower, sets);
            } else {
                nodes.entry(lower).or_insert_with(|| empty.clone());
            }
            while n != origin && n.num_labels() > origin.num_labels() {
                n = n.base_name();
                nodes.entry(n.clone()).or_insert_with(|| empty.clone());
            }
        }
        drop(all);
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
        served.prepared = Prepared::build(&served, previous)?;
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
    name(owner).map_or_else(Vec::new, |owner| wire_records_at(&owner, set))
}

fn wire_records_at(owner: &Name, set: &RrSet) -> Vec<Record> {
    set.rdata()
        .iter()
        .filter_map(|r| to_wire(owner, set.ttl, r))
        .collect()
}

/// The records of `old` missing from `new` (all of them when the TTL changed).
fn missing(owner: &str, old: &RrSet, new: Option<&RrSet>) -> Vec<Record> {
    let kept = |r: &RData| new.is_some_and(|n| n.ttl == old.ttl && n.rdata().contains(r));
    let gone = RrSet::new(old.ttl, old.rdata().iter().filter(|r| !kept(r)).cloned());
    wire_records(owner, &gone)
}

/// What a publish changed: RRsets created, replaced and deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    pub created: usize,
    pub replaced: usize,
    pub deleted: usize,
}

/// A zone served by [`ZoneHandle::publish_counted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publication {
    pub serial: u32,
    /// What changed from the zone served before (nothing for the first).
    pub changed: Changed,
}

/// The change from `old` to `new` record by record (RFC 1995's deleted and
/// added records), between their SOAs, and the RRsets it touched.
fn delta(old: &Served, new: &Served) -> (Delta, Changed) {
    let (mut deleted, mut added) = (Vec::new(), Vec::new());
    let plan = plan(&old.zone, &new.zone);
    let (created, replaced, gone) = plan.counts();
    let changed = Changed {
        created,
        replaced,
        deleted: gone,
    };
    for change in plan.changes {
        match &change {
            Change::Create { name, new, .. } => added.extend(wire_records(name, new)),
            Change::Delete { name, old, .. } => deleted.extend(wire_records(name, old)),
            Change::Replace { name, old, new, .. } => {
                deleted.extend(missing(name, old, Some(new)));
                added.extend(missing(name, new, Some(old)));
            }
        }
    }
    let delta = Delta {
        old_soa: old.soa().clone(),
        new_soa: new.soa().clone(),
        deleted,
        added,
    };
    (delta, changed)
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
    pub fn publish(&self, zone: Zone) -> Option<u32> {
        self.publish_counted(zone).map(|p| p.serial)
    }

    /// [`publish`](Self::publish), telling also what changed.
    pub fn publish_counted(&self, mut zone: Zone) -> Option<Publication> {
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
        match Served::build(zone, current.as_deref()) {
            Some(mut served) => {
                let mut changed = Changed::default();
                if let Some(cur) = &current {
                    let (delta, counts) = delta(cur, &served);
                    changed = counts;
                    record(&mut journal, delta, served.transfer_len);
                }
                served.journal = journal.iter().cloned().collect();
                self.served.send_replace(Some(Arc::new(served)));
                self.metrics.publishes.inc();
                self.metrics.serial.set(i64::from(serial));
                self.metrics.rrsets.set(rrsets as i64);
                Some(Publication { serial, changed })
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
        // Before the first load nothing is known: a status that says published
        // stays so (a restart must not flap every domain), any other waits.
        let Some(zone) = self.current() else {
            return Published::Unknown {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::dns::embedded::fast;
    use crate::core::trust::Trust;
    use crate::core::zone::desired_zone;
    use crate::core::zone::fixtures::{cfg, domain};
    use hickory_proto::op::{Message, Query};

    const T1: &str = "abcdefghijklmnop";
    const T2: &str = "qrstuvwxyz234567";
    const T3: &str = "bcdefghijklmnopq";

    fn zone(domains: &[(&str, &str, &str)]) -> Zone {
        let all: Vec<_> = domains
            .iter()
            .enumerate()
            .map(|(i, (d, token, key2))| {
                domain(
                    "acme",
                    d,
                    token,
                    &[("anypost1", "QUJD"), ("anypost2", key2)],
                    i != 1,
                    1,
                )
            })
            .collect();
        desired_zone(&cfg(), &Trust::as_written(), &all)
    }

    /// What the fast path sends for `name` and `qtype`.
    fn fast_answer(prepared: &fast::Prepared, name: &str, qtype: hrr::RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let raw = m.to_vec().unwrap();
        let q = fast::parse(&raw).unwrap();
        let mut out = Vec::new();
        fast::respond(prepared, &q, &[], 4096, &mut out);
        out
    }

    fn node_of<'s>(s: &'s Served, name: &str) -> &'s Sets {
        &s.nodes[&LowerName::new(&Name::from_ascii(name).unwrap())]
    }

    #[test]
    fn a_publish_shares_what_did_not_change_and_answers_as_a_fresh_build() {
        let h = ZoneHandle::new();
        h.publish(zone(&[
            ("a.example", T1, "REVG"),
            ("b.example", T2, "R0hJ"),
        ]));
        let first = h.snapshot().unwrap();
        // a's second key changes, b stays, c is new; the serial changes with it.
        h.publish(zone(&[
            ("a.example", T1, "SktM"),
            ("b.example", T2, "R0hJ"),
            ("c.example", T3, "TU5P"),
        ]));
        let second = h.snapshot().unwrap();
        let kept = |n: &str| Arc::ptr_eq(node_of(&first, n), node_of(&second, n));
        let origin = "dns.anypost.example.";
        assert!(kept(&format!("anypost2._domainkey.{T2}.{origin}")));
        assert!(kept(&format!("track.{T1}.{origin}")));
        assert!(kept(&format!("{T2}.{origin}")));
        assert!(!kept(&format!("anypost2._domainkey.{T1}.{origin}")));
        assert!(
            !kept(origin),
            "the apex holds the SOA, whose serial changed"
        );

        let fresh = Served::build((*second.zone).clone(), None).unwrap();
        assert_eq!(fresh.nodes.len(), second.nodes.len());
        let mut names: Vec<String> = fresh.nodes.keys().map(|n| n.to_string()).collect();
        names.push(format!("nothing.{origin}"));
        names.push(format!("nothing.{T2}.{origin}"));
        for name in &names {
            for t in [
                hrr::RecordType::A,
                hrr::RecordType::AAAA,
                hrr::RecordType::MX,
                hrr::RecordType::TXT,
                hrr::RecordType::CNAME,
                hrr::RecordType::NS,
                hrr::RecordType::SOA,
                hrr::RecordType::CAA,
            ] {
                assert_eq!(
                    fast_answer(&second.prepared, name, t),
                    fast_answer(&fresh.prepared, name, t),
                    "{name} {t}"
                );
            }
        }
        // A NODATA answer carries the new serial, though the name's own
        // responses were kept.
        let nodata = Message::from_vec(&fast_answer(
            &second.prepared,
            &format!("{T2}.{origin}"),
            hrr::RecordType::CAA,
        ))
        .unwrap();
        let Some(hrr::RData::SOA(soa)) = nodata.authorities.first().map(|r| &r.data) else {
            panic!("NODATA without its SOA: {nodata:?}");
        };
        assert_eq!(Some(soa.serial), second.zone.serial());
        assert_ne!(first.zone.serial(), second.zone.serial());
    }
}
