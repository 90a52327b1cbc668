//! Names: the registered apex of a sending domain, the per-domain token, and the
//! CNAMEs a customer publishes.
//!
//! Everything here is pure and deterministic: the same namespace, domain and
//! identity key always give the same token, so the same CNAME targets survive a
//! delete and re-apply, a GitOps prune, or a restore into a new cluster.

use super::api::{DnsRecord, Purpose};
use super::vocab::{Block, BySelector};
use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The relative label of the verification (and bounce) record.
pub const VERIFICATION_LABEL: &str = "anypost";
/// Characters of the base32 HMAC kept as the token (80 bits).
pub const TOKEN_LEN: usize = 16;
/// Prefix of `status.id`.
pub const ID_PREFIX: &str = "domain_";
/// The label under a token holding the tracking CNAME.
pub const TRACKING_LABEL: &str = "track";

/// Why a domain cannot be used, found after admission (which checks syntax).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The domain is itself a public suffix such as `co.uk`: nobody registers it.
    #[error(
        "spec.domain {domain:?} is a public suffix (like com or co.uk), not a registered domain; use a domain registered under it, e.g. example.{domain}"
    )]
    PublicSuffix { domain: String },
    /// Syntax admission should have caught (e.g. the CRD was installed without its
    /// validation rules).
    #[error("spec.domain {domain:?} is not a valid domain name: {reason}")]
    Invalid { domain: String, reason: String },
}

impl NameError {
    /// Why nothing can be published for the domain.
    pub fn block(&self) -> Block {
        match self {
            NameError::PublicSuffix { .. } => Block::PublicSuffix,
            NameError::Invalid { .. } => Block::InvalidDomain,
        }
    }
}

/// A DNS name as the operator stores and compares names: lower case, without the
/// trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is `origin` or below it (both normalized).
pub fn in_zone(name: &str, origin: &str) -> bool {
    name == origin
        || (name.len() > origin.len()
            && name.ends_with(origin)
            && name.as_bytes()[name.len() - origin.len() - 1] == b'.')
}

/// A host name given in configuration (an MX host, an SPF include, a nameserver),
/// normalized; underscores are allowed (`_spf.example.com`). Returns why not.
pub fn host_name(s: &str) -> Result<String, String> {
    let n = normalize(s);
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(n)
    } else {
        Err(format!("{s:?} is not a valid DNS name"))
    }
}

/// A domain name checked for syntax, with its registered apex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendingName {
    /// The domain as used in From addresses (lower case, no trailing dot).
    pub domain: String,
    /// The registered domain (one label below the ICANN public suffix).
    pub apex: String,
}

impl SendingName {
    /// Checks `domain` and finds its registered apex using the ICANN section of the
    /// public suffix list. Private-section entries (e.g. `github.io`) are not
    /// treated as suffixes: whoever runs DNS for such a name publishes in the zone
    /// of the ICANN-registered domain.
    pub fn parse(domain: &str) -> Result<Self, NameError> {
        check_syntax(domain).map_err(|reason| NameError::Invalid {
            domain: domain.to_string(),
            reason,
        })?;
        let suffix = icann_suffix(domain);
        if suffix.len() == domain.len() {
            return Err(NameError::PublicSuffix {
                domain: domain.to_string(),
            });
        }
        let rest = &domain[..domain.len() - suffix.len() - 1];
        let registrable_label = rest.rsplit('.').next().unwrap_or(rest);
        let apex = format!("{registrable_label}.{suffix}");
        Ok(SendingName {
            domain: domain.to_string(),
            apex,
        })
    }

    /// `label` placed on the sending domain, relative to the apex:
    /// `anypost` for example.com, `anypost.mail` for mail.example.com.
    pub fn relative(&self, label: &str) -> String {
        if self.domain == self.apex {
            label.to_string()
        } else {
            let sub = &self.domain[..self.domain.len() - self.apex.len() - 1];
            format!("{label}.{sub}")
        }
    }

    /// `label` placed on the sending domain, absolute (no trailing dot).
    pub fn absolute(&self, label: &str) -> String {
        format!("{label}.{}", self.domain)
    }
}

/// Host-name syntax, as the CRD's admission rules enforce it. Returns why not.
pub fn check_syntax(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("it is empty".into());
    }
    if domain.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    if domain.ends_with('.') {
        return Err("it ends with a dot".into());
    }
    if domain.parse::<std::net::IpAddr>().is_ok() {
        return Err("it is an IP address".into());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("it has a single label".into());
    }
    for l in &labels {
        if l.is_empty() {
            return Err("it has an empty label".into());
        }
        if l.len() > 63 {
            return Err(format!("label {l:?} is longer than 63 characters"));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(format!("label {l:?} starts or ends with a hyphen"));
        }
        if let Some(c) = l
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!("label {l:?} contains {c:?}"));
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("its last label is all digits".into());
    }
    Ok(())
}

/// The longest ICANN-section public suffix of `domain` (the last label when no
/// rule matches, per the list's default `*` rule).
fn icann_suffix(domain: &str) -> &str {
    let mut start = 0;
    loop {
        let candidate = &domain[start..];
        if let Some(s) = psl::suffix(candidate.as_bytes())
            && s.as_bytes() == candidate.as_bytes()
            && s.typ() == Some(psl::Type::Icann)
        {
            return candidate;
        }
        match candidate.find('.') {
            Some(i) => start += i + 1,
            None => return candidate,
        }
    }
}

/// The token for `<namespace>/<domain>`: the first 16 characters of the lower-case
/// unpadded base32 HMAC-SHA256 under the operator's identity key.
pub fn token(identity_key: &[u8], namespace: &str, domain: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(identity_key).expect("HMAC takes any key length");
    mac.update(namespace.as_bytes());
    mac.update(b"/");
    mac.update(domain.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut t = BASE32_NOPAD.encode(&digest).to_ascii_lowercase();
    t.truncate(TOKEN_LEN);
    t
}

/// `status.id` for a token.
pub fn domain_id(token: &str) -> String {
    format!("{ID_PREFIX}{token}")
}

/// The token inside a `status.id`, if it has the right shape.
pub fn token_from_id(id: &str) -> Option<&str> {
    let t = id.strip_prefix(ID_PREFIX)?;
    (t.len() == TOKEN_LEN
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)))
    .then_some(t)
}

/// Names inside the operator's zone for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneNames {
    /// `<t>.Z`: MX and SPF.
    pub verification: String,
    /// `<selector>._domainkey.<t>.Z` for each selector.
    pub dkim: BySelector<String>,
    /// `track.<t>.Z`: the tracking CNAME.
    pub tracking: String,
}

impl ZoneNames {
    pub fn new(token: &str, zone: &str) -> Self {
        let base = format!("{token}.{zone}");
        ZoneNames {
            dkim: BySelector::from_fn(|s| format!("{s}._domainkey.{base}")),
            tracking: format!("{TRACKING_LABEL}.{base}"),
            verification: base,
        }
    }
}

/// The CNAMEs the customer publishes, in `status.dnsRecords` order.
pub fn customer_records(
    name: &SendingName,
    token: &str,
    zone: &str,
    tracking: Option<&str>,
) -> Vec<DnsRecord> {
    let targets = ZoneNames::new(token, zone);
    let rec = |label: &str, value: &str, purpose| DnsRecord {
        type_: "CNAME".into(),
        name: name.relative(label),
        fqdn: name.absolute(label),
        value: value.to_string(),
        purpose,
        state: None,
        observed: None,
    };
    let mut out = vec![rec(
        VERIFICATION_LABEL,
        &targets.verification,
        Purpose::Verification,
    )];
    for (selector, target) in targets.dkim.iter() {
        out.push(rec(
            &format!("{selector}._domainkey"),
            target,
            Purpose::Dkim,
        ));
    }
    if let Some(sub) = tracking {
        out.push(rec(sub, &targets.tracking, Purpose::Tracking));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apex(d: &str) -> String {
        SendingName::parse(d).unwrap().apex
    }

    #[test]
    fn apex_uses_icann_suffixes() {
        assert_eq!(apex("example.com"), "example.com");
        assert_eq!(apex("mail.example.com"), "example.com");
        assert_eq!(apex("mail.example.co.uk"), "example.co.uk");
        assert_eq!(apex("a.b.example.com.au"), "example.com.au");
        // Private-section entries are not suffixes: github.io is registered under io.
        assert_eq!(apex("docs.github.io"), "github.io");
        assert_eq!(apex("my.app.herokuapp.com"), "herokuapp.com");
    }

    #[test]
    fn relative_names() {
        let n = SendingName::parse("example.com").unwrap();
        assert_eq!(n.relative("anypost"), "anypost");
        let n = SendingName::parse("mail.example.com").unwrap();
        assert_eq!(n.relative("anypost"), "anypost.mail");
        assert_eq!(n.absolute("anypost"), "anypost.mail.example.com");
        let n = SendingName::parse("mail.example.co.uk").unwrap();
        assert_eq!(
            n.relative("anypost1._domainkey"),
            "anypost1._domainkey.mail"
        );
    }

    #[test]
    fn public_suffixes_are_refused() {
        for d in ["co.uk", "com.au", "com"] {
            let e = SendingName::parse(d).unwrap_err();
            assert_eq!(
                e.block(),
                if d == "com" {
                    Block::InvalidDomain
                } else {
                    Block::PublicSuffix
                },
                "{d}"
            );
        }
        assert_eq!(
            SendingName::parse("co.uk").unwrap_err().to_string(),
            "spec.domain \"co.uk\" is a public suffix (like com or co.uk), not a registered domain; use a domain registered under it, e.g. example.co.uk"
        );
    }

    #[test]
    fn token_is_stable_and_scoped_to_namespace() {
        let key = [7u8; 32];
        let a = token(&key, "acme", "example.com");
        assert_eq!(a.len(), TOKEN_LEN);
        assert_eq!(a, token(&key, "acme", "example.com"));
        assert_ne!(a, token(&key, "other", "example.com"));
        assert_ne!(a, token(&[8u8; 32], "acme", "example.com"));
        assert_eq!(token_from_id(&domain_id(&a)), Some(a.as_str()));
        assert_eq!(token_from_id("domain_short"), None);
    }

    #[test]
    fn token_matches_the_documented_construction() {
        // HMAC-SHA256(key = 32 zero bytes, "ns/example.com"), base32, lower case.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[0u8; 32]).unwrap();
        mac.update(b"ns/example.com");
        let full = BASE32_NOPAD
            .encode(&mac.finalize().into_bytes())
            .to_ascii_lowercase();
        assert_eq!(token(&[0u8; 32], "ns", "example.com"), full[..16]);
    }

    #[test]
    fn records_in_order_with_targets() {
        let n = SendingName::parse("mail.example.com").unwrap();
        let r = customer_records(&n, "abcdefghijklmnop", "dns.anypost.example", Some("track"));
        let got: Vec<_> = r
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.fqdn.as_str(),
                    r.value.as_str(),
                    r.purpose,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "anypost.mail",
                    "anypost.mail.example.com",
                    "abcdefghijklmnop.dns.anypost.example",
                    Purpose::Verification
                ),
                (
                    "anypost1._domainkey.mail",
                    "anypost1._domainkey.mail.example.com",
                    "anypost1._domainkey.abcdefghijklmnop.dns.anypost.example",
                    Purpose::Dkim
                ),
                (
                    "anypost2._domainkey.mail",
                    "anypost2._domainkey.mail.example.com",
                    "anypost2._domainkey.abcdefghijklmnop.dns.anypost.example",
                    Purpose::Dkim
                ),
                (
                    "track.mail",
                    "track.mail.example.com",
                    "track.abcdefghijklmnop.dns.anypost.example",
                    Purpose::Tracking
                ),
            ]
        );
        assert!(
            r.iter()
                .all(|r| r.type_ == "CNAME" && !r.value.ends_with('.'))
        );
    }

    #[test]
    fn syntax_errors_name_the_problem() {
        assert!(check_syntax("1.2.3.4").unwrap_err().contains("IP address"));
        assert!(
            check_syntax("localhost")
                .unwrap_err()
                .contains("single label")
        );
        assert!(check_syntax("a_b.com").unwrap_err().contains("'_'"));
        assert!(check_syntax("-a.com").unwrap_err().contains("hyphen"));
        assert!(check_syntax("Example.com").unwrap_err().contains("'E'"));
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
    }

    proptest! {
        /// For any domain with a registered apex: the apex is a suffix of the
        /// domain, relative + apex reassembles the absolute name, and the apex is
        /// exactly one label longer than a public suffix.
        #[test]
        fn relative_plus_apex_is_absolute(
            labels in proptest::collection::vec(label(), 0..4),
            tail in prop_oneof![
                Just("com"), Just("co.uk"), Just("com.au"), Just("github.io"), Just("de"), Just("k12.ak.us")
            ],
        ) {
            let mut d = labels.join(".");
            if !d.is_empty() { d.push('.'); }
            d.push_str("example.");
            d.push_str(tail);
            prop_assume!(check_syntax(&d).is_ok());
            let n = SendingName::parse(&d).unwrap();
            let dotted_apex = format!(".{}", n.apex);
            prop_assert!(d == n.apex || d.ends_with(&dotted_apex));
            let rel = n.relative("anypost");
            prop_assert_eq!(format!("{}.{}", rel, n.apex), n.absolute("anypost"));
            let suffix = &n.apex[n.apex.find('.').unwrap() + 1..];
            prop_assert!(SendingName::parse(suffix).is_err());
        }

        /// Tokens only use the base32 alphabet and round-trip through `status.id`.
        #[test]
        fn tokens_are_base32(ns in "[a-z0-9-]{1,63}", d in "[a-z0-9.-]{1,80}", key in proptest::collection::vec(any::<u8>(), 32)) {
            let t = token(&key, &ns, &d);
            let id = domain_id(&t);
            prop_assert_eq!(token_from_id(&id), Some(t.as_str()));
        }
    }
}
