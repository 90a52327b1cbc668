//! The messages of a sync: the server's zone as one transfer gave it, and the
//! UPDATE messages that change it, in bounded batches with prerequisites.

use crate::adapters::dns::wire::{
    dns_name, from_hickory, hickory_type, model_name, model_type, to_hickory,
};
use crate::core::naming::{in_zone, normalize};
use crate::core::zone::{Change, RData, RecordType, RrSet, Zone};
use hickory_proto::op::{Message, OpCode, Query};
use hickory_proto::rr::{self as hrr, DNSClass, Name, Record};
use std::collections::BTreeSet;

/// Splits the plan into consecutive batches of at most `max_changes` changes and
/// about `max_bytes` of record data each (a single larger change goes alone).
/// Order is kept, so deletes still precede the creates that may depend on them.
pub fn batches(changes: &[Change], max_changes: usize, max_bytes: usize) -> Vec<&[Change]> {
    let max_changes = max_changes.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, change) in changes.iter().enumerate() {
        let size = change_size(change);
        let count = i - start;
        if count > 0 && (count >= max_changes || bytes + size > max_bytes) {
            out.push(&changes[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

/// Wire size of a name, about.
fn name_size(name: &str) -> usize {
    name.len() + 2
}

fn rdata_size(r: &RData) -> usize {
    match r {
        RData::Soa(s) => name_size(&s.mname) + name_size(&s.rname) + 20,
        RData::Ns(n) | RData::Cname(n) => name_size(n),
        RData::A(_) => 4,
        RData::Aaaa(_) => 16,
        RData::Mx { exchange, .. } => 2 + name_size(exchange),
        RData::Txt(strings) => strings.iter().map(|s| s.len() + 1).sum(),
    }
}

/// Bytes a change adds to an UPDATE message, about: its records (old ones as
/// prerequisites, new ones as additions) and the RRset deletion.
fn change_size(change: &Change) -> usize {
    const RR_OVERHEAD: usize = 10;
    let set = |name: &str, s: &RrSet| -> usize {
        s.rdata()
            .iter()
            .map(|r| name_size(name) + RR_OVERHEAD + rdata_size(r))
            .sum()
    };
    let name = change.name();
    let fixed = name_size(name) + RR_OVERHEAD;
    match change {
        Change::Create { new, .. } => fixed + set(name, new),
        Change::Replace { old, new, .. } => 2 * fixed + set(name, old) + set(name, new),
        Change::Delete { old, .. } => 2 * fixed + set(name, old),
    }
}

/// Record types the server maintains itself (DNSSEC signing and its bookkeeping):
/// never deleted, whoever's name they are at.
fn server_maintained(t: hrr::RecordType) -> bool {
    use hrr::RecordType as T;
    matches!(
        t,
        T::RRSIG | T::NSEC | T::NSEC3 | T::NSEC3PARAM | T::DNSKEY | T::CDS | T::CDNSKEY
    ) || u16::from(t) == 65534 // BIND's private signing-state type
}

/// The server's zone as one complete AXFR gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The RRsets of the types the operator publishes (and the apex ones).
    pub zone: Zone,
    /// RRsets of other types below the apex (someone else's, hence stale), by
    /// name and type; server-maintained DNSSEC types are not listed.
    pub foreign: BTreeSet<(String, hrr::RecordType)>,
}

impl Snapshot {
    /// Builds the snapshot from a transfer's records (the closing SOA included or
    /// not); records outside `origin` are ignored.
    pub fn from_records<'a>(origin: &str, records: impl IntoIterator<Item = &'a Record>) -> Self {
        let origin = normalize(origin);
        let mut sets: std::collections::BTreeMap<(String, RecordType), (u32, Vec<RData>)> =
            Default::default();
        let mut foreign = BTreeSet::new();
        for r in records {
            let name = model_name(&r.name);
            if !in_zone(&name, &origin) {
                continue;
            }
            match (model_type(r.record_type()), from_hickory(&r.data)) {
                (Some(t), Some(data)) => {
                    let entry = sets.entry((name, t)).or_insert((r.ttl, Vec::new()));
                    entry.1.push(data);
                }
                _ => {
                    let t = r.record_type();
                    if name != origin && !server_maintained(t) {
                        foreign.insert((name, t));
                    }
                }
            }
        }
        let mut zone = Zone::new(&origin);
        for ((name, t), (ttl, mut data)) in sets {
            if t == RecordType::Soa {
                // The transfer repeats the SOA at its end; one is the RRset.
                data.truncate(1);
            }
            zone.insert(&name, RrSet::new(ttl, data));
        }
        Snapshot { zone, foreign }
    }
}

/// The UPDATE message for one batch: zone section, then for every change its
/// prerequisite (what the read saw: the old RRset exactly, or no RRset) and its
/// updates (delete the RRset, add the new records).
pub fn update_message(origin: &str, batch: &[Change]) -> Result<Message, String> {
    let zone = dns_name(origin)?;
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Update;
    msg.metadata.recursion_desired = false;
    let mut q = Query::new();
    q.set_name(zone)
        .set_query_type(hrr::RecordType::SOA)
        .set_query_class(DNSClass::IN);
    msg.add_query(q);
    let records = |name: &Name, set: &RrSet, ttl: u32| -> Result<Vec<Record>, String> {
        set.rdata()
            .iter()
            .map(|r| Ok(Record::from_rdata(name.clone(), ttl, to_hickory(r)?)))
            .collect()
    };
    for change in batch {
        let name = dns_name(change.name())?;
        let t = hickory_type(change.rtype());
        let mut delete = Record::update0(name.clone(), 0, t);
        delete.dns_class = DNSClass::ANY;
        match change {
            Change::Create { new, .. } => {
                let mut absent = Record::update0(name.clone(), 0, t);
                absent.dns_class = DNSClass::NONE;
                msg.add_answer(absent);
                for r in records(&name, new, new.ttl)? {
                    msg.add_authority(r);
                }
            }
            Change::Replace { old, new, .. } => {
                for r in records(&name, old, 0)? {
                    msg.add_answer(r);
                }
                msg.add_authority(delete);
                for r in records(&name, new, new.ttl)? {
                    msg.add_authority(r);
                }
            }
            Change::Delete { old, .. } => {
                for r in records(&name, old, 0)? {
                    msg.add_answer(r);
                }
                msg.add_authority(delete);
            }
        }
    }
    Ok(msg)
}

/// The UPDATE deleting RRsets of types the operator does not publish.
pub(super) fn delete_foreign_message(
    origin: &str,
    foreign: &[(String, hrr::RecordType)],
) -> Result<Message, String> {
    let mut msg = update_message(origin, &[])?;
    for (name, t) in foreign {
        let mut delete = Record::update0(dns_name(name)?, 0, *t);
        delete.dns_class = DNSClass::ANY;
        msg.add_authority(delete);
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::dns::rfc2136::MAX_UPDATE_BYTES;
    use crate::core::zone::desired_zone;
    use crate::core::zone::fixtures::{cfg, domain};
    use hickory_proto::rr::rdata::{A, NS, SOA, TXT};

    const T1: &str = "abcdefghijklmnop";

    fn txt_change(i: usize, bytes: usize) -> Change {
        Change::Create {
            name: format!("n{i}.dns.anypost.example"),
            rtype: RecordType::Txt,
            new: RrSet::one(300, RData::txt(&"k".repeat(bytes))),
        }
    }

    #[test]
    fn batches_are_bounded_by_count_and_size_and_keep_order() {
        let changes: Vec<Change> = (0..250).map(|i| txt_change(i, 10)).collect();
        let b = batches(&changes, 100, MAX_UPDATE_BYTES);
        assert_eq!(
            b.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(b.concat(), changes);

        // 4096-bit DKIM keys are ~740 bytes of TXT: the byte bound cuts first.
        let big: Vec<Change> = (0..100).map(|i| txt_change(i, 740)).collect();
        let b = batches(&big, 100, MAX_UPDATE_BYTES);
        assert!(b.len() > 1, "{}", b.len());
        for s in &b {
            assert!(s.iter().map(change_size).sum::<usize>() <= MAX_UPDATE_BYTES);
            let msg = update_message("dns.anypost.example", s).unwrap();
            assert!(msg.to_vec().unwrap().len() < 60_000);
        }
        assert_eq!(b.concat(), big);

        // A change larger than the bound goes alone; nothing is empty.
        let huge = vec![txt_change(0, 10), txt_change(1, 5000), txt_change(2, 10)];
        let b = batches(&huge, 100, 1000);
        assert_eq!(b.iter().map(|s| s.len()).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(batches(&[], 100, 1000).is_empty());
        assert_eq!(batches(&changes[..3], 0, 1000).len(), 3);
    }

    #[test]
    fn update_messages_carry_prerequisites_and_updates() {
        let name = "a.dns.anypost.example".to_string();
        let old = RrSet::one(300, RData::txt("old"));
        let new = RrSet::one(300, RData::txt("new"));
        let changes = vec![
            Change::Delete {
                name: "gone.dns.anypost.example".into(),
                rtype: RecordType::Cname,
                old: RrSet::one(60, RData::Cname("x.example".into())),
            },
            Change::Replace {
                name: name.clone(),
                rtype: RecordType::Txt,
                old,
                new,
            },
            Change::Create {
                name: name.clone(),
                rtype: RecordType::Mx,
                new: RrSet::one(
                    300,
                    RData::Mx {
                        preference: 10,
                        exchange: "mx.example".into(),
                    },
                ),
            },
        ];
        let msg = update_message("dns.anypost.example", &changes).unwrap();
        assert_eq!(msg.metadata.op_code, OpCode::Update);
        assert_eq!(msg.queries[0].query_type(), hrr::RecordType::SOA);
        // Prerequisites: the deleted CNAME and the replaced TXT exactly as read
        // (TTL 0, class IN), no MX yet (class NONE).
        let pre: Vec<(String, hrr::RecordType, DNSClass, u32)> = msg
            .answers
            .iter()
            .map(|r| (model_name(&r.name), r.record_type(), r.dns_class, r.ttl))
            .collect();
        assert_eq!(
            pre,
            [
                (
                    "gone.dns.anypost.example".into(),
                    hrr::RecordType::CNAME,
                    DNSClass::IN,
                    0
                ),
                (name.clone(), hrr::RecordType::TXT, DNSClass::IN, 0),
                (name.clone(), hrr::RecordType::MX, DNSClass::NONE, 0),
            ]
        );
        // Updates: delete CNAME; delete TXT, add TXT; add MX.
        let upd: Vec<(hrr::RecordType, DNSClass, u32)> = msg
            .authorities
            .iter()
            .map(|r| (r.record_type(), r.dns_class, r.ttl))
            .collect();
        assert_eq!(
            upd,
            [
                (hrr::RecordType::CNAME, DNSClass::ANY, 0),
                (hrr::RecordType::TXT, DNSClass::ANY, 0),
                (hrr::RecordType::TXT, DNSClass::IN, 300),
                (hrr::RecordType::MX, DNSClass::IN, 300),
            ]
        );
        // It encodes and decodes.
        let back = Message::from_vec(&msg.to_vec().unwrap()).unwrap();
        assert_eq!(back.authorities.len(), 4);
    }

    fn record(name: &str, ttl: u32, data: hrr::RData) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, data)
    }

    #[test]
    fn a_transfer_becomes_a_snapshot() {
        let z = "dns.anypost.example.";
        let soa = hrr::RData::SOA(SOA::new(
            Name::from_ascii("ns1.dns.anypost.example.").unwrap(),
            Name::from_ascii("hostmaster.dns.anypost.example.").unwrap(),
            7,
            3600,
            600,
            1209600,
            60,
        ));
        let srv = hrr::RData::SRV(hrr::rdata::SRV::new(
            0,
            0,
            25,
            Name::from_ascii("x.example.").unwrap(),
        ));
        let records = vec![
            record(z, 3600, soa.clone()),
            record(
                z,
                3600,
                hrr::RData::NS(NS(Name::from_ascii("NS1.dns.anypost.example.").unwrap())),
            ),
            record(
                "ABC.dns.anypost.example.",
                300,
                hrr::RData::TXT(TXT::from_bytes(vec![b"v=spf1", b" -all"])),
            ),
            record(
                "abc.dns.anypost.example.",
                300,
                hrr::RData::TXT(TXT::new(vec!["b".into()])),
            ),
            record("_x.dns.anypost.example.", 300, srv.clone()),
            record(z, 300, srv),
            record(
                "elsewhere.example.",
                300,
                hrr::RData::A(A::new(192, 0, 2, 1)),
            ),
            record(z, 3600, soa),
        ];
        let s = Snapshot::from_records(z, &records);
        assert_eq!(s.zone.serial(), Some(7));
        assert_eq!(s.zone.nameservers(), ["ns1.dns.anypost.example"]);
        assert_eq!(
            s.zone
                .get("abc.dns.anypost.example", RecordType::Txt)
                .unwrap()
                .rdata(),
            &[
                RData::Txt(vec![b"b".to_vec()]),
                RData::Txt(vec![b"v=spf1".to_vec(), b" -all".to_vec()]),
            ]
        );
        assert_eq!(s.zone.len(), 3);
        // Another type below the apex is listed for deletion; at the apex it is not.
        assert_eq!(
            s.foreign.into_iter().collect::<Vec<_>>(),
            [("_x.dns.anypost.example".to_string(), hrr::RecordType::SRV)]
        );
    }

    #[test]
    fn model_records_round_trip_through_hickory() {
        let c = cfg();
        let d = domain(
            "acme",
            "example.com",
            T1,
            &[("anypost1", &"A".repeat(600))],
            true,
            1,
        );
        let zone = desired_zone(&c, &crate::core::trust::Trust::as_written(), &[d]);
        let records: Vec<Record> = zone
            .iter()
            .flat_map(|(name, _, set)| {
                set.rdata().iter().map(move |r| {
                    Record::from_rdata(dns_name(name).unwrap(), set.ttl, to_hickory(r).unwrap())
                })
            })
            .collect();
        let s = Snapshot::from_records(&c.zone, &records);
        assert_eq!(s.zone, zone);
        assert!(s.foreign.is_empty());
    }
}
