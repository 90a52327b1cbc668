//! The zone the SendingDomains ask for, computed from their spec and status alone
//! (the public keys are in status), so every replica derives the same zone from
//! its own cache, and no DNS code ever reads a DKIM Secret. Status is believed
//! only as far as the [`Trust`] vouches for it: a domain is served under its own
//! id only, with the keys the operator sealed.

use super::config::ZoneConfig;
use super::model::{RData, RecordType, RrSet, Zone};
use crate::core::api::SendingDomain;
use crate::core::claims;
use crate::core::naming::ZoneNames;
use crate::core::trust::Trust;
use crate::core::vocab::Selector;
use std::collections::BTreeSet;

/// MX preference of the bounce host.
pub const MX_PREFERENCE: u16 = 10;

/// The DKIM TXT text for a public key (base64 SPKI DER).
pub fn dkim_text(public_key: &str) -> String {
    format!("v=DKIM1; k=rsa; p={public_key}")
}

/// A public key as status holds it is base64; anything else is not published (it
/// would make a TXT record no verifier accepts, or inject other tags).
fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// The zone the SendingDomains ask for: the apex records, then for every domain
/// whose claim holds (see [`claims`]) and whose status `trust` vouches for (its
/// own id, its seal), its MX and SPF, one DKIM TXT per selector with a public key
/// in status, and the tracking CNAME when `spec.tracking` is set. The SOA serial
/// is 0; whoever serves the zone assigns the real one.
pub fn desired_zone<D: std::borrow::Borrow<SendingDomain>>(
    cfg: &ZoneConfig,
    trust: &Trust,
    domains: &[D],
) -> Zone {
    let mut zone = cfg.apex_zone();
    let mut winners: Vec<&SendingDomain> = claims::winning_claims(domains, trust)
        .into_values()
        .collect();
    // Two winners with one token cannot happen under an identity key; believing
    // statuses as written, the stronger claim keeps the names.
    winners.sort_by(|a, b| claims::claim_order(a, b, trust));
    let mut tokens = BTreeSet::new();
    let ttl = cfg.record_ttl;
    for d in winners {
        let Some(token) = trust.vouched(d) else {
            continue;
        };
        if !tokens.insert(token.clone()) {
            continue;
        }
        let names = cfg.names(&token);
        zone.insert(
            &names.verification,
            RrSet::one(
                ttl,
                RData::Mx {
                    preference: MX_PREFERENCE,
                    exchange: cfg.mx_host.clone(),
                },
            ),
        );
        zone.insert(&names.verification, RrSet::one(ttl, RData::txt(&cfg.spf())));
        let selectors = d
            .status
            .as_ref()
            .and_then(|s| s.dkim.as_ref())
            .map(|k| k.selectors.as_slice())
            .unwrap_or_default();
        for (selector, name) in names.dkim.iter() {
            if let Some(s) = selectors
                .iter()
                .find(|s| s.name == selector.as_str() && is_base64(&s.public_key))
            {
                zone.insert(name, RrSet::one(ttl, RData::txt(&dkim_text(&s.public_key))));
            }
        }
        if d.spec.tracking.is_some() {
            zone.insert(
                &names.tracking,
                RrSet::one(ttl, RData::Cname(cfg.tracking_host.clone())),
            );
        }
    }
    zone
}

/// Whether `zone` serves the token's verification records (MX and SPF) and a DKIM
/// record for every given public key (base64 SPKI, as in
/// `status.dkim.selectors[].publicKey`): what `RecordsPublished` reports.
pub fn serves(zone: &Zone, token: &str, public_keys: &[&str]) -> bool {
    let names = ZoneNames::new(token, zone.origin());
    let has = |n: &str, t| zone.get(n, t).is_some();
    has(&names.verification, RecordType::Mx)
        && has(&names.verification, RecordType::Txt)
        && public_keys.iter().all(|key| {
            let want = RData::txt(&dkim_text(key));
            Selector::BOTH.iter().any(|s| {
                zone.get(&names.dkim[*s], RecordType::Txt)
                    .is_some_and(|set| set.rdata().contains(&want))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zone::TXT_STRING_MAX;
    use crate::core::zone::fixtures::{cfg, domain};

    const T1: &str = "abcdefghijklmnop";
    const T2: &str = "qrstuvwxyz234567";

    #[test]
    fn a_domain_gets_mx_spf_dkim_and_tracking() {
        let key = "A".repeat(400);
        let d = domain(
            "acme",
            "example.com",
            T1,
            &[("anypost1", &key), ("anypost2", "QUJD")],
            true,
            1,
        );
        let z = desired_zone(&cfg(), &Trust::as_written(), &[d]);
        let base = format!("{T1}.dns.anypost.example");
        assert_eq!(
            z.get(&base, RecordType::Mx).unwrap().rdata(),
            &[RData::Mx {
                preference: 10,
                exchange: "bounce.anypost.example".into()
            }]
        );
        assert_eq!(
            z.get(&base, RecordType::Txt).unwrap().rdata(),
            &[RData::Txt(vec![
                b"v=spf1 include:spf.anypost.example -all".to_vec()
            ])]
        );
        let dkim1 = z
            .get(&format!("anypost1._domainkey.{base}"), RecordType::Txt)
            .unwrap();
        let RData::Txt(strings) = &dkim1.rdata()[0] else {
            panic!()
        };
        assert!(strings.iter().all(|s| s.len() <= TXT_STRING_MAX));
        assert_eq!(strings.len(), 2);
        assert_eq!(strings.concat(), dkim_text(&key).into_bytes());
        assert_eq!(dkim1.ttl, 300);
        assert!(
            z.get(&format!("anypost2._domainkey.{base}"), RecordType::Txt)
                .is_some()
        );
        assert_eq!(
            z.get(&format!("track.{base}"), RecordType::Cname)
                .unwrap()
                .rdata(),
            &[RData::Cname("track.anypost.example".into())]
        );
        assert_eq!(z.len(), 4 + 5);
        assert!(z.name_exists(&format!("_domainkey.{base}")));
        assert!(!z.name_exists(&format!("x._domainkey.{base}")));
        assert!(!z.name_exists("example.com"));
    }

    #[test]
    fn unpublishable_domains_are_left_out() {
        let c = cfg();
        let mut no_id = domain("a", "one.com", T1, &[("anypost1", "QUJD")], false, 1);
        no_id.status.as_mut().unwrap().id = None;
        let mut bad_id = domain("a", "two.com", T1, &[], false, 1);
        bad_id.status.as_mut().unwrap().id = Some("domain_SHORT".into());
        let mut no_status = domain("a", "three.com", T1, &[], false, 1);
        no_status.status = None;
        let z = desired_zone(&c, &Trust::as_written(), &[no_id, bad_id, no_status]);
        assert_eq!(z, c.apex_zone());
    }

    #[test]
    fn only_the_winning_claim_is_published() {
        let old = domain("a", "example.com", T1, &[], false, 1);
        let young = domain("b", "example.com", T2, &[], false, 2);
        let z = desired_zone(&cfg(), &Trust::as_written(), &[young.clone(), old]);
        assert!(z.name_exists(&format!("{T1}.dns.anypost.example")));
        assert!(!z.name_exists(&format!("{T2}.dns.anypost.example")));
        let z = desired_zone(&cfg(), &Trust::as_written(), &[young]);
        assert!(z.name_exists(&format!("{T2}.dns.anypost.example")));
    }

    #[test]
    fn keys_that_are_not_base64_and_unknown_selectors_are_skipped() {
        let d = domain(
            "a",
            "example.com",
            T1,
            &[
                ("anypost1", "QUJD; t=y"),
                ("other", "QUJD"),
                ("anypost2", ""),
            ],
            false,
            1,
        );
        let z = desired_zone(&cfg(), &Trust::as_written(), &[d]);
        assert_eq!(z.len(), 4 + 2);
    }

    #[test]
    fn serves_tells_which_keys_are_served() {
        let d = domain(
            "a",
            "example.com",
            T1,
            &[("anypost1", "QUJD"), ("anypost2", "REVG")],
            false,
            1,
        );
        let z = desired_zone(&cfg(), &Trust::as_written(), &[d]);
        assert!(serves(&z, T1, &[]));
        assert!(serves(&z, T1, &["QUJD", "REVG"]));
        assert!(!serves(&z, T1, &["R0hJ"]));
        assert!(!serves(&z, T2, &[]));
    }

    #[test]
    fn only_what_the_operator_sealed_is_served() {
        use crate::core::naming::{domain_id, token};
        use crate::core::policy::Policy;
        use crate::core::zone::fixtures::sealed;
        let key = [9u8; 32];
        let trust = Trust::new(&key, false, Policy::default());
        let own = token(&key, "a", "example.com");
        let d = sealed(
            &trust,
            domain("a", "example.com", T1, &[("anypost1", "QUJD")], false, 1),
        );
        let z = desired_zone(&cfg(), &trust, std::slice::from_ref(&d));
        assert!(serves(&z, &own, &["QUJD"]));
        // Another key in place of the sealed one: the domain is not served at all.
        let mut swapped = d.clone();
        swapped
            .status
            .as_mut()
            .unwrap()
            .dkim
            .as_mut()
            .unwrap()
            .selectors[0]
            .public_key = "R0hJ".into();
        assert_eq!(desired_zone(&cfg(), &trust, &[swapped]), cfg().apex_zone());
        // Another namespace's token written by hand: refused.
        let mut foreign = domain("b", "other.com", &own, &[("anypost1", "QUJD")], false, 1);
        foreign.status.as_mut().unwrap().seal = d.status.as_ref().unwrap().seal.clone();
        assert_eq!(desired_zone(&cfg(), &trust, &[foreign]), cfg().apex_zone());
        // A hand-written status of its own id, unsealed.
        let unsealed = domain("a", "example.com", &own, &[("anypost1", "QUJD")], false, 1);
        assert_eq!(unsealed.status.as_ref().unwrap().id, Some(domain_id(&own)));
        assert_eq!(
            desired_zone(&cfg(), &trust, std::slice::from_ref(&unsealed)),
            cfg().apex_zone()
        );
        // ... which the transition from unsealed statuses still serves.
        let transition = Trust::new(&key, true, Policy::default());
        assert!(serves(
            &desired_zone(&cfg(), &transition, &[unsealed]),
            &own,
            &["QUJD"]
        ));
        // A claim the policy refuses is not served, sealed or not.
        let policy =
            Policy::parse("rules:\n  - suffix: example.com\n    namespaces: [z]\n").unwrap();
        let strict = Trust::new(&key, false, policy);
        assert_eq!(desired_zone(&cfg(), &strict, &[d]), cfg().apex_zone());
    }
}
