//! The plan that turns one zone state into another, RRset by RRset.
//!
//! Used wherever the zone lives outside this process (the RFC2136 backend reads the
//! server's zone, plans against the desired one, and sends only the changes) and to
//! log what a republish changed. The apex records and the in-zone nameservers'
//! addresses belong to whoever runs the zone, not to the SendingDomains: the plan
//! never touches them, whichever side has them.

use super::model::{RecordType, RrSet, Zone};
use std::collections::BTreeSet;

/// One change to one RRset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing of this type is at the name yet.
    Create {
        name: String,
        rtype: RecordType,
        new: RrSet,
    },
    /// The RRset exists with other data or another TTL.
    Replace {
        name: String,
        rtype: RecordType,
        old: RrSet,
        new: RrSet,
    },
    /// The RRset is stale: nothing accounts for it.
    Delete {
        name: String,
        rtype: RecordType,
        old: RrSet,
    },
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Create { name, .. }
            | Change::Replace { name, .. }
            | Change::Delete { name, .. } => name,
        }
    }

    pub fn rtype(&self) -> RecordType {
        match self {
            Change::Create { rtype, .. }
            | Change::Replace { rtype, .. }
            | Change::Delete { rtype, .. } => *rtype,
        }
    }
}

/// The changes from one zone state to another: deletes first, then replaces, then
/// creates (so that a name changing type, e.g. TXT to CNAME, is emptied before it
/// is filled, even when the changes are sent in several batches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// The record sets of `current` the plan may change (all but the protected
    /// apex and in-zone nameserver addresses).
    pub owned: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// (creates, replaces, deletes), for logs and metrics.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for ch in &self.changes {
            match ch {
                Change::Create { .. } => c.0 += 1,
                Change::Replace { .. } => c.1 += 1,
                Change::Delete { .. } => c.2 += 1,
            }
        }
        c
    }

    /// Applies the plan to `zone` (what a server does with the updates).
    pub fn apply(&self, zone: &mut Zone) {
        for ch in &self.changes {
            match ch {
                Change::Create { name, new, .. } | Change::Replace { name, new, .. } => {
                    zone.insert(name, new.clone())
                }
                Change::Delete { name, rtype, .. } => {
                    zone.remove(name, *rtype);
                }
            }
        }
    }
}

/// Whether the plan leaves this RRset alone: any record at the apex, and address
/// records of a nameserver named by either side's apex NS.
fn protected(name: &str, rtype: RecordType, origin: &str, nameservers: &BTreeSet<&str>) -> bool {
    name == origin
        || (matches!(rtype, RecordType::A | RecordType::Aaaa) && nameservers.contains(name))
}

/// The plan from `current` to `desired` (zones of the same origin).
pub fn plan(current: &Zone, desired: &Zone) -> Plan {
    let origin = desired.origin();
    let nameservers: BTreeSet<&str> = current
        .nameservers()
        .into_iter()
        .chain(desired.nameservers())
        .collect();
    let keep = |name: &str, rtype| !protected(name, rtype, origin, &nameservers);

    let mut deletes = Vec::new();
    let mut replaces = Vec::new();
    let mut creates = Vec::new();
    let mut owned = 0;
    // Both zones iterate in the same order (name, then type): one merged pass,
    // with no lookup (and no name copied) per RRset.
    let mut old = current.iter().filter(|(n, t, _)| keep(n, *t)).peekable();
    let mut new = desired.iter().filter(|(n, t, _)| keep(n, *t)).peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((on, ot, _)), Some((nn, nt, _))) => (on, ot).cmp(&(nn, nt)),
        };
        match order {
            std::cmp::Ordering::Less => {
                let Some((name, rtype, old)) = old.next() else {
                    break;
                };
                owned += 1;
                deletes.push(Change::Delete {
                    name: name.to_string(),
                    rtype,
                    old: old.clone(),
                });
            }
            std::cmp::Ordering::Greater => {
                let Some((name, rtype, new)) = new.next() else {
                    break;
                };
                creates.push(Change::Create {
                    name: name.to_string(),
                    rtype,
                    new: new.clone(),
                });
            }
            std::cmp::Ordering::Equal => {
                let (Some((name, rtype, was)), Some((_, _, now))) = (old.next(), new.next()) else {
                    break;
                };
                owned += 1;
                if was != now {
                    replaces.push(Change::Replace {
                        name: name.to_string(),
                        rtype,
                        old: was.clone(),
                        new: now.clone(),
                    });
                }
            }
        }
    }
    deletes.extend(replaces);
    deletes.extend(creates);
    Plan {
        changes: deletes,
        owned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zone::RData;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const ORIGIN: &str = "z.example";

    /// Everything the plan may change, i.e. the zone without its protected RRsets.
    fn unprotected(z: &Zone, ns: &BTreeSet<&str>) -> Vec<(String, RecordType, RrSet)> {
        z.iter()
            .filter(|(n, t, _)| !protected(n, *t, z.origin(), ns))
            .map(|(n, t, s)| (n.to_string(), t, s.clone()))
            .collect()
    }

    fn protected_part(z: &Zone, ns: &BTreeSet<&str>) -> Vec<(String, RecordType, RrSet)> {
        z.iter()
            .filter(|(n, t, _)| protected(n, *t, z.origin(), ns))
            .map(|(n, t, s)| (n.to_string(), t, s.clone()))
            .collect()
    }

    fn rdata(t: RecordType, v: u8) -> RData {
        match t {
            RecordType::Ns => RData::Ns(format!("ns{v}.{ORIGIN}")),
            RecordType::A => RData::A(Ipv4Addr::new(192, 0, 2, v)),
            RecordType::Aaaa => RData::Aaaa(format!("2001:db8::{v}").parse().unwrap()),
            RecordType::Mx => RData::Mx {
                preference: v.into(),
                exchange: "mx.example".into(),
            },
            RecordType::Txt => RData::txt(&"t".repeat(v as usize * 3)),
            RecordType::Cname => RData::Cname(format!("c{v}.example")),
            RecordType::Soa => unreachable!(),
        }
    }

    /// Zones over a small name space so that states overlap often: the apex (with
    /// an SOA, NS and sometimes other types), nameserver names, and ordinary names.
    fn zone() -> impl Strategy<Value = Zone> {
        let name = prop_oneof![
            Just(ORIGIN.to_string()),
            Just(format!("ns1.{ORIGIN}")),
            Just(format!("ns2.{ORIGIN}")),
            (0u8..6).prop_map(|i| format!("n{i}.{ORIGIN}")),
            (0u8..3).prop_map(|i| format!("anypost1._domainkey.t{i}.{ORIGIN}")),
        ];
        let rtype = prop_oneof![
            Just(RecordType::Ns),
            Just(RecordType::A),
            Just(RecordType::Aaaa),
            Just(RecordType::Mx),
            Just(RecordType::Txt),
            Just(RecordType::Cname),
        ];
        let rrset = (
            rtype,
            prop::collection::vec(0u8..4, 1..3),
            prop_oneof![Just(60u32), Just(300u32)],
        );
        (
            prop::collection::vec((name, rrset), 0..14),
            0u32..3,
            prop::collection::vec(1u8..3, 1..3),
        )
            .prop_map(|(sets, serial, ns)| {
                let mut z = Zone::new(ORIGIN);
                for (name, (t, vals, ttl)) in sets {
                    z.insert(
                        &name,
                        RrSet::new(ttl, vals.into_iter().map(|v| rdata(t, v))),
                    );
                }
                z.insert(
                    ORIGIN,
                    RrSet::one(
                        3600,
                        RData::Soa(crate::core::zone::Soa {
                            mname: format!("ns1.{ORIGIN}"),
                            rname: format!("h.{ORIGIN}"),
                            serial,
                            refresh: 1,
                            retry: 1,
                            expire: 1,
                            minimum: 1,
                        }),
                    ),
                );
                z.insert(
                    ORIGIN,
                    RrSet::new(3600, ns.into_iter().map(|v| rdata(RecordType::Ns, v))),
                );
                z
            })
    }

    proptest! {
        /// Applying plan(old, new) to old gives new, except for the protected
        /// RRsets, which stay exactly as old had them.
        #[test]
        fn applying_the_plan_reaches_the_desired_state(old in zone(), new in zone()) {
            let p = plan(&old, &new);
            let mut got = old.clone();
            p.apply(&mut got);
            let ns: BTreeSet<&str> = old.nameservers().into_iter().chain(new.nameservers()).collect();
            prop_assert_eq!(unprotected(&got, &ns), unprotected(&new, &ns));
            prop_assert_eq!(protected_part(&got, &ns), protected_part(&old, &ns));
            // Applying again changes nothing, and the result needs no further plan.
            prop_assert!(plan(&got, &new).is_empty());
        }

        /// Equal states give an empty plan; so do states differing only in
        /// protected records.
        #[test]
        fn equal_states_give_an_empty_plan(z in zone(), other in zone()) {
            prop_assert!(plan(&z, &z.clone()).is_empty());
            let mut mixed = z.clone();
            for (n, t, s) in other.iter() {
                if n == ORIGIN {
                    mixed.insert(n, s.clone());
                }
                let _ = t;
            }
            prop_assert!(plan(&z, &mixed).is_empty());
        }

        /// Deletes come before replaces, replaces before creates; every change
        /// names a distinct RRset.
        #[test]
        fn plan_is_ordered_and_minimal(old in zone(), new in zone()) {
            let p = plan(&old, &new);
            let rank = |c: &Change| match c { Change::Delete{..} => 0, Change::Replace{..} => 1, Change::Create{..} => 2 };
            prop_assert!(p.changes.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
            let keys: BTreeSet<_> = p.changes.iter().map(|c| (c.name().to_string(), c.rtype())).collect();
            prop_assert_eq!(keys.len(), p.len());
            let (c, r, d) = p.counts();
            prop_assert_eq!(c + r + d, p.len());
        }
    }

    #[test]
    fn nameserver_addresses_and_apex_are_never_touched() {
        let mut current = Zone::new(ORIGIN);
        current.insert(ORIGIN, RrSet::one(3600, rdata(RecordType::Ns, 1)));
        current.insert(
            &format!("ns1.{ORIGIN}"),
            RrSet::one(3600, rdata(RecordType::A, 1)),
        );
        current.insert(ORIGIN, RrSet::one(3600, rdata(RecordType::Txt, 1)));
        current.insert(
            &format!("stale.{ORIGIN}"),
            RrSet::one(300, rdata(RecordType::Txt, 1)),
        );
        let mut desired = Zone::new(ORIGIN);
        desired.insert(
            &format!("new.{ORIGIN}"),
            RrSet::one(300, rdata(RecordType::Cname, 1)),
        );
        let p = plan(&current, &desired);
        assert_eq!(
            p.changes
                .iter()
                .map(|c| (c.name(), c.rtype()))
                .collect::<Vec<_>>(),
            vec![
                ("stale.z.example", RecordType::Txt),
                ("new.z.example", RecordType::Cname)
            ]
        );
        assert_eq!(p.counts(), (1, 0, 1));
    }
}
