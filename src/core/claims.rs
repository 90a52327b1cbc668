//! Who holds a sending domain when several SendingDomains name it.
//!
//! Two SendingDomains (in any namespaces) may claim the same `spec.domain`. Proof
//! of control beats age: a verified claim holds the domain against every other,
//! then a claim whose own verification CNAME resolves to its own target (only
//! whoever runs the domain's DNS can publish that), then the oldest claim. So a
//! tenant cannot keep a domain it does not control from its owner, and a verified
//! claim is never displaced: it gives way only when its own records stop
//! verifying and its grace period ends. Only the claims the domain-claim policy
//! allows take part. The zone builder and the controller both use these
//! functions, with the same [`Trust`], so the two never disagree about the holder.
//!
//! Order within a strength: older `metadata.creationTimestamp` first; a claim
//! without one (not yet stored by the apiserver) is the newest; ties are broken by
//! namespace, then name. Claims whose `deletionTimestamp` is set are ignored: a
//! domain being deleted gives way at once.

use super::api::SendingDomain;
use super::trust::{Strength, Trust};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Whether `d` is still a claim (not being deleted).
pub fn is_live(d: &SendingDomain) -> bool {
    d.metadata.deletion_timestamp.is_none()
}

/// Whether `d` takes part in the contest for its domain: live, and allowed by
/// the policy.
pub fn is_contender(d: &SendingDomain, trust: &Trust) -> bool {
    is_live(d) && trust.allows(d)
}

/// The order of claims of known strengths: `Less` means `a` is the stronger.
fn order(a: (&SendingDomain, Strength), b: (&SendingDomain, Strength)) -> Ordering {
    fn key((d, strength): (&SendingDomain, Strength)) -> impl Ord + '_ {
        let created = d.metadata.creation_timestamp.as_ref();
        (
            strength,
            created.is_none(),
            created,
            d.metadata.namespace.as_deref().unwrap_or(""),
            d.metadata.name.as_deref().unwrap_or(""),
        )
    }
    key(a).cmp(&key(b))
}

/// The claim order: `Less` means `a` is the stronger claim.
pub fn claim_order(a: &SendingDomain, b: &SendingDomain, trust: &Trust) -> Ordering {
    order((a, trust.strength(a)), (b, trust.strength(b)))
}

fn same_object(a: &SendingDomain, b: &SendingDomain) -> bool {
    a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name
}

/// The contender that holds `domain` (a `spec.domain` value), if any.
pub fn claim_winner<'a, D: Borrow<SendingDomain>>(
    domains: &'a [D],
    domain: &str,
    trust: &Trust,
) -> Option<&'a SendingDomain> {
    domains
        .iter()
        .map(Borrow::borrow)
        .filter(|d| d.spec.domain == domain && is_contender(d, trust))
        .map(|d| (d, trust.strength(d)))
        .min_by(|a, b| order(*a, *b))
        .map(|(d, _)| d)
}

/// Whether `candidate` holds its `spec.domain` against every claim in `domains`.
///
/// `candidate` need not be in `domains` (the controller may hold a fresher copy);
/// copies of it in `domains` are not counted as rivals. A candidate being deleted,
/// or refused by the policy, holds nothing.
pub fn is_winner<D: Borrow<SendingDomain>>(
    domains: &[D],
    candidate: &SendingDomain,
    trust: &Trust,
) -> bool {
    let mine = (candidate, trust.strength(candidate));
    is_contender(candidate, trust)
        && domains
            .iter()
            .map(Borrow::borrow)
            .filter(|d| {
                d.spec.domain == candidate.spec.domain
                    && !same_object(d, candidate)
                    && is_contender(d, trust)
            })
            .all(|rival| order(mine, (rival, trust.strength(rival))) == Ordering::Less)
}

/// The holder of every claimed domain, keyed by `spec.domain`.
pub fn winning_claims<'a, D: Borrow<SendingDomain>>(
    domains: &'a [D],
    trust: &Trust,
) -> BTreeMap<&'a str, &'a SendingDomain> {
    let mut winners: BTreeMap<&str, (&SendingDomain, Strength)> = BTreeMap::new();
    let contenders = domains
        .iter()
        .map(Borrow::borrow)
        .filter(|d| is_contender(d, trust));
    for d in contenders {
        let claim = (d, trust.strength(d));
        winners
            .entry(d.spec.domain.as_str())
            .and_modify(|w| {
                if order(claim, *w) == Ordering::Less {
                    *w = claim;
                }
            })
            .or_insert(claim);
    }
    winners.into_iter().map(|(k, (d, _))| (k, d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::api::SendingDomainSpec;
    use crate::core::api::{DnsRecord, DomainState, Purpose, RecordState, SendingDomainStatus};
    use crate::core::policy::Policy;
    use crate::core::zone::fixtures::sealed;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// Believes statuses as written and allows every claim: the age rules alone.
    fn any() -> Trust {
        Trust::as_written()
    }

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
        let w = claim_winner(&ds, "example.com", &any()).unwrap();
        assert_eq!(id(w), ("a".into(), "x".into()));
        assert!(is_winner(&ds, &ds[1], &any()));
        assert!(!is_winner(&ds, &ds[0], &any()));
        assert!(is_winner(&ds, &ds[2], &any()));
        assert!(claim_winner(&ds, "nobody.com", &any()).is_none());
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
            id(claim_winner(&ds, "example.com", &any()).unwrap()),
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
        assert_eq!(
            id(claim_winner(&ds, "example.com", &any()).unwrap()),
            id(&young)
        );
        assert!(is_winner(&ds, &young, &any()));
        assert!(!is_winner(&ds, &old, &any()));
    }

    #[test]
    fn candidate_outside_the_list_and_its_own_copies() {
        let a = sd("a", "x", "example.com", Some(1));
        let b = sd("b", "x", "example.com", Some(2));
        // The list holds a stale copy of `a` (say, without status); it is not a rival.
        assert!(is_winner(std::slice::from_ref(&a), &a, &any()));
        assert!(is_winner(std::slice::from_ref(&b), &a, &any()));
        assert!(!is_winner(std::slice::from_ref(&a), &b, &any()));
        assert!(is_winner::<SendingDomain>(&[], &b, &any()));
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
        let all = winning_claims(&ds, &any());
        assert_eq!(all.len(), 5);
        for (domain, w) in &all {
            assert_eq!(id(claim_winner(&ds, domain, &any()).unwrap()), id(w));
            assert!(is_winner(&ds, w, &any()));
        }
        let arcs: Vec<_> = ds.iter().cloned().map(std::sync::Arc::new).collect();
        assert_eq!(winning_claims(&arcs, &any()).len(), 5);
    }

    const KEY: [u8; 32] = [3; 32];

    fn keyed(policy: Policy) -> Trust {
        Trust::new(&KEY, false, policy)
    }

    /// A claim with a status the controller sealed: verified, proven (its
    /// verification CNAME checked ok) or neither.
    fn claim(ns: &str, created: i64, strength: Strength) -> SendingDomain {
        let mut d = sd(ns, "x", "example.com", Some(created));
        let record = DnsRecord {
            type_: "CNAME".into(),
            name: "anypost".into(),
            fqdn: "anypost.example.com".into(),
            value: "t.dns.example".into(),
            purpose: Purpose::Verification,
            state: Some(match strength {
                Strength::Unproven => RecordState::Mismatch,
                _ => RecordState::Ok,
            }),
            observed: None,
        };
        d.status = Some(SendingDomainStatus {
            state: Some(match strength {
                Strength::Verified => DomainState::Verified,
                _ => DomainState::Pending,
            }),
            dns_records: vec![record],
            ..Default::default()
        });
        sealed(&keyed(Policy::default()), d)
    }

    #[test]
    fn proof_of_control_beats_age() {
        let t = keyed(Policy::default());
        let squatter = claim("squatter", 1, Strength::Unproven);
        let owner = claim("owner", 2, Strength::Proven);
        let ds = [squatter.clone(), owner.clone()];
        assert_eq!(
            id(claim_winner(&ds, "example.com", &t).unwrap()),
            id(&owner)
        );
        assert!(is_winner(&ds, &owner, &t) && !is_winner(&ds, &squatter, &t));
        assert_eq!(winning_claims(&ds, &t)["example.com"], &owner);
        // Both proven (one of the checks is stale): the older keeps it for now.
        let stale = claim("squatter", 1, Strength::Proven);
        assert!(is_winner(&[stale.clone(), owner.clone()], &stale, &t));
    }

    #[test]
    fn a_verified_claim_is_never_displaced() {
        let t = keyed(Policy::default());
        let verified = claim("first", 1, Strength::Verified);
        for rival in [
            claim("second", 2, Strength::Proven),
            claim("second", 2, Strength::Verified),
            claim("second", 0, Strength::Proven),
        ] {
            let ds = [verified.clone(), rival.clone()];
            assert!(is_winner(&ds, &verified, &t), "{:?}", rival.status);
            assert!(!is_winner(&ds, &rival, &t));
        }
        // A younger verified claim beats an older one that is only proven.
        let young = claim("young", 5, Strength::Verified);
        assert!(is_winner(&[claim("old", 1, Strength::Proven)], &young, &t));
    }

    #[test]
    fn a_status_that_cannot_be_believed_proves_nothing() {
        let t = keyed(Policy::default());
        let old = claim("owner", 1, Strength::Unproven);
        let mut forged = claim("squatter", 2, Strength::Unproven);
        forged.status.as_mut().unwrap().state = Some(DomainState::Verified);
        assert!(is_winner(&[forged.clone()], &old, &t));
        assert!(!is_winner(&[old], &forged, &t));
    }

    #[test]
    fn claims_the_policy_refuses_take_no_part() {
        let policy =
            Policy::parse("rules:\n  - suffix: example.com\n    namespaces: [owner]\n").unwrap();
        let t = keyed(policy);
        let squatter = claim("squatter", 1, Strength::Verified);
        let owner = claim("owner", 2, Strength::Unproven);
        let ds = [squatter.clone(), owner.clone()];
        assert_eq!(
            id(claim_winner(&ds, "example.com", &t).unwrap()),
            id(&owner)
        );
        assert!(is_winner(&ds, &owner, &t));
        assert!(!is_winner(&ds, &squatter, &t));
        assert!(!is_winner::<SendingDomain>(&[], &squatter, &t));
        assert_eq!(winning_claims(&[squatter], &t).len(), 0);
    }
}
