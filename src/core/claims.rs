//! Who owns a sending domain when several SendingDomains name it.
//!
//! Two SendingDomains (in any namespaces) may claim the same `spec.domain`. The
//! oldest live claim keeps it: only its records are published, and the controller
//! marks the others `DomainConflict`. The zone builder and the controller both use
//! these functions, so the two can never disagree about the winner.
//!
//! Order of claims: older `metadata.creationTimestamp` first; a claim without one
//! (not yet stored by the apiserver) is the newest; ties are broken by namespace,
//! then name. Claims whose `deletionTimestamp` is set are ignored: a domain being
//! deleted gives way at once.

use super::api::SendingDomain;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Whether `d` is still a claim (not being deleted).
pub fn is_live(d: &SendingDomain) -> bool {
    d.metadata.deletion_timestamp.is_none()
}

/// The claim order: `Less` means `a` is the older, stronger claim.
pub fn claim_order(a: &SendingDomain, b: &SendingDomain) -> Ordering {
    fn key(d: &SendingDomain) -> impl Ord + '_ {
        let created = d.metadata.creation_timestamp.as_ref();
        (
            created.is_none(),
            created,
            d.metadata.namespace.as_deref().unwrap_or(""),
            d.metadata.name.as_deref().unwrap_or(""),
        )
    }
    key(a).cmp(&key(b))
}

fn same_object(a: &SendingDomain, b: &SendingDomain) -> bool {
    a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name
}

/// The live SendingDomain that holds `domain` (a `spec.domain` value), if any.
pub fn claim_winner<'a, D: Borrow<SendingDomain>>(
    domains: &'a [D],
    domain: &str,
) -> Option<&'a SendingDomain> {
    domains
        .iter()
        .map(Borrow::borrow)
        .filter(|d| is_live(d) && d.spec.domain == domain)
        .min_by(|a, b| claim_order(a, b))
}

/// Whether `candidate` holds its `spec.domain` against every claim in `domains`.
///
/// `candidate` need not be in `domains` (the controller may hold a fresher copy);
/// copies of it in `domains` are not counted as rivals. A candidate being deleted
/// holds nothing.
pub fn is_winner<D: Borrow<SendingDomain>>(domains: &[D], candidate: &SendingDomain) -> bool {
    is_live(candidate)
        && domains
            .iter()
            .map(Borrow::borrow)
            .filter(|d| {
                is_live(d) && d.spec.domain == candidate.spec.domain && !same_object(d, candidate)
            })
            .all(|rival| claim_order(candidate, rival) == Ordering::Less)
}

/// The winner of every claimed domain, keyed by `spec.domain`.
pub fn winning_claims<D: Borrow<SendingDomain>>(domains: &[D]) -> BTreeMap<&str, &SendingDomain> {
    let mut winners: BTreeMap<&str, &SendingDomain> = BTreeMap::new();
    for d in domains.iter().map(Borrow::borrow).filter(|d| is_live(d)) {
        winners
            .entry(d.spec.domain.as_str())
            .and_modify(|w| {
                if claim_order(d, w) == Ordering::Less {
                    *w = d;
                }
            })
            .or_insert(d);
    }
    winners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::api::SendingDomainSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn sd(ns: &str, name: &str, domain: &str, created: Option<i64>) -> SendingDomain {
        let mut d = SendingDomain::new(
            name,
            SendingDomainSpec {
                domain: domain.into(),
                dkim: None,
                tracking: None,
            },
        );
        d.metadata.namespace = Some(ns.into());
        d.metadata.creation_timestamp =
            created.map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap()));
        d
    }

    fn id(d: &SendingDomain) -> (String, String) {
        (
            d.metadata.namespace.clone().unwrap(),
            d.metadata.name.clone().unwrap(),
        )
    }

    #[test]
    fn oldest_claim_wins() {
        let ds = [
            sd("b", "x", "example.com", Some(200)),
            sd("a", "x", "example.com", Some(100)),
            sd("c", "x", "other.com", Some(300)),
        ];
        let w = claim_winner(&ds, "example.com").unwrap();
        assert_eq!(id(w), ("a".into(), "x".into()));
        assert!(is_winner(&ds, &ds[1]));
        assert!(!is_winner(&ds, &ds[0]));
        assert!(is_winner(&ds, &ds[2]));
        assert!(claim_winner(&ds, "nobody.com").is_none());
    }

    #[test]
    fn ties_go_to_namespace_then_name_and_missing_timestamps_lose() {
        let ds = [
            sd("b", "a", "example.com", Some(100)),
            sd("a", "z", "example.com", Some(100)),
            sd("a", "y", "example.com", Some(100)),
            sd("0", "0", "example.com", None),
        ];
        assert_eq!(
            id(claim_winner(&ds, "example.com").unwrap()),
            ("a".into(), "y".into())
        );
    }

    #[test]
    fn a_claim_being_deleted_gives_way() {
        let mut old = sd("a", "x", "example.com", Some(1));
        old.metadata.deletion_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::from_second(5).unwrap()));
        let young = sd("b", "x", "example.com", Some(2));
        let ds = [old.clone(), young.clone()];
        assert_eq!(id(claim_winner(&ds, "example.com").unwrap()), id(&young));
        assert!(is_winner(&ds, &young));
        assert!(!is_winner(&ds, &old));
    }

    #[test]
    fn candidate_outside_the_list_and_its_own_copies() {
        let a = sd("a", "x", "example.com", Some(1));
        let b = sd("b", "x", "example.com", Some(2));
        // The list holds a stale copy of `a` (say, without status); it is not a rival.
        assert!(is_winner(std::slice::from_ref(&a), &a));
        assert!(is_winner(std::slice::from_ref(&b), &a));
        assert!(!is_winner(std::slice::from_ref(&a), &b));
        assert!(is_winner::<SendingDomain>(&[], &b));
    }

    #[test]
    fn winning_claims_agrees_with_claim_winner() {
        let ds: Vec<_> = (0..20)
            .map(|i| {
                sd(
                    &format!("ns{}", i % 3),
                    &format!("n{}", i % 4),
                    &format!("d{}.com", i % 5),
                    Some(1000 - (i * 7 % 11)),
                )
            })
            .collect();
        let all = winning_claims(&ds);
        assert_eq!(all.len(), 5);
        for (domain, w) in &all {
            assert_eq!(id(claim_winner(&ds, domain).unwrap()), id(w));
            assert!(is_winner(&ds, w));
        }
        let arcs: Vec<_> = ds.iter().cloned().map(std::sync::Arc::new).collect();
        assert_eq!(winning_claims(&arcs).len(), 5);
    }
}
