//! The zone the SendingDomains ask for, computed from their spec and status alone
//! (the public keys are in status), so every replica derives the same zone from
//! its own cache, and no DNS code ever reads a Secret.

use super::config::ZoneConfig;
use super::model::{RData, RecordType, RrSet, Zone};
use crate::core::api::SendingDomain;
use crate::core::claims;
use crate::core::naming::{self, ZoneNames};
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

/// The token a SendingDomain publishes under, if its `status.id` is valid.
pub fn domain_token(d: &SendingDomain) -> Option<&str> {
    let id = d.status.as_ref()?.id.as_deref()?;
    naming::token_from_id(id)
}

/// The zone the SendingDomains ask for: the apex records, then for every domain
/// that wins its claim and has a valid `status.id`, its MX and SPF, one DKIM TXT per
/// selector with a public key in status, and the tracking CNAME when
/// `spec.tracking` is set. The SOA serial is 0; whoever serves the zone assigns
/// the real one.
pub fn desired_zone<D: std::borrow::Borrow<SendingDomain>>(
    cfg: &ZoneConfig,
    domains: &[D],
) -> Zone {
    let mut zone = cfg.apex_zone();
    let mut winners: Vec<&SendingDomain> = claims::winning_claims(domains).into_values().collect();
    // Two winners with one token cannot happen unless a status was copied by hand;
    // the stronger claim keeps the names.
    winners.sort_by(|a, b| claims::claim_order(a, b));
    let mut tokens = BTreeSet::new();
    let ttl = cfg.record_ttl;
    for d in winners {
        let Some(token) = domain_token(d) else {
            continue;
        };
        if !tokens.insert(token) {
            continue;
        }
        let names = cfg.names(token);
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
        let z = desired_zone(&cfg(), &[d]);
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
        let z = desired_zone(&c, &[no_id, bad_id, no_status]);
        assert_eq!(z, c.apex_zone());
    }

    #[test]
    fn only_the_winning_claim_is_published() {
        let old = domain("a", "example.com", T1, &[], false, 1);
        let young = domain("b", "example.com", T2, &[], false, 2);
        let z = desired_zone(&cfg(), &[young.clone(), old]);
        assert!(z.name_exists(&format!("{T1}.dns.anypost.example")));
        assert!(!z.name_exists(&format!("{T2}.dns.anypost.example")));
        let z = desired_zone(&cfg(), &[young]);
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
        let z = desired_zone(&cfg(), &[d]);
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
        let z = desired_zone(&cfg(), &[d]);
        assert!(serves(&z, T1, &[]));
        assert!(serves(&z, T1, &["QUJD", "REVG"]));
        assert!(!serves(&z, T1, &["R0hJ"]));
        assert!(!serves(&z, T2, &[]));
    }
}
