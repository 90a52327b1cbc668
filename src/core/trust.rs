//! What may be believed of a SendingDomain's status.
//!
//! Status is written through the `sendingdomains/status` subresource, which RBAC
//! may grant to others than the operator. So nothing that reaches DNS is taken
//! from status on its word:
//! - `status.id` must be the one the identity key gives the object's namespace and
//!   domain (anyone can compute nothing of it without the key);
//! - everything else the zone and the claims use (the DKIM public keys, whether
//!   the claim is verified or has proved control) is covered by `status.seal`, an
//!   HMAC the controller computes under a key derived from the identity key.
//!
//! A status that fails either check is not served and counts for nothing in a
//! contest for a domain; the controller does not build on it either (it starts
//! the domain over). Statuses written before seals existed carry none: they are
//! believed (on their id alone) only while the identity Secret does not say that
//! every status is sealed (see [`Trust::new`]).

use crate::core::api::{DomainState, Purpose, RecordState, SendingDomain, SendingDomainStatus};
use crate::core::naming::{self, token_from_id};
use crate::core::policy::Policy;
use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of the seal kept (128 bits), base32 in `status.seal`.
const SEAL_BYTES: usize = 16;
/// The label the seal key is derived under: never an input a token is made of
/// (those contain a `/`).
const SEAL_KEY_LABEL: &[u8] = b"anypost-operator status seal v1";

/// How strong a claim on a domain is, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strength {
    /// Its CNAMEs verify (or did, and the grace period runs).
    Verified,
    /// Its own verification CNAME resolves to its own target: whoever runs the
    /// domain's DNS published it.
    Proven,
    /// Neither (or its status cannot be believed).
    Unproven,
}

impl Strength {
    /// The strength a status claims for itself.
    pub fn of(status: &SendingDomainStatus) -> Strength {
        let proven = status
            .dns_records
            .iter()
            .any(|r| r.purpose == Purpose::Verification && r.state == Some(RecordState::Ok));
        match status.state {
            Some(DomainState::Verified) => Strength::Verified,
            _ if proven => Strength::Proven,
            _ => Strength::Unproven,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Strength::Verified => "verified",
            Strength::Proven => "proven",
            Strength::Unproven => "unproven",
        }
    }
}

/// The identity key, and the seal key derived from it.
#[derive(Clone)]
struct Keys {
    identity: Vec<u8>,
    seal: Vec<u8>,
}

// Keys must never reach logs.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

/// What the zone and the controller believe of statuses, and which claims the
/// domain-claim policy allows.
#[derive(Debug, Clone)]
pub struct Trust {
    keys: Option<Keys>,
    /// Believe a status without a seal on its id alone (statuses written before
    /// seals existed).
    unsealed: bool,
    policy: Policy,
}

impl Trust {
    /// Trust under the identity key. `unsealed`: whether a status without any seal
    /// is still believed on its id alone, which is so until the controller has
    /// sealed every status once (it then marks the identity Secret).
    pub fn new(identity_key: &[u8], unsealed: bool, policy: Policy) -> Trust {
        let mut mac = hmac(identity_key);
        mac.update(SEAL_KEY_LABEL);
        Trust {
            keys: Some(Keys {
                identity: identity_key.to_vec(),
                seal: mac.finalize().into_bytes().to_vec(),
            }),
            unsealed,
            policy,
        }
    }

    /// Believes every status as written, and allows every claim: only for zones
    /// built from statuses the caller made itself (tests, benchmarks, fuzzing).
    /// The operator never runs with it.
    pub fn as_written() -> Trust {
        Trust {
            keys: None,
            unsealed: true,
            policy: Policy::default(),
        }
    }

    /// The identity key, for secrets derived from it (the DNS server's cookies).
    pub fn identity_key(&self) -> Option<&[u8]> {
        self.keys.as_ref().map(|k| k.identity.as_slice())
    }

    /// Whether unsealed statuses are still believed.
    pub fn accepts_unsealed(&self) -> bool {
        self.unsealed
    }

    /// The domain-claim policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The token of `d`: from the identity key; without one, from its status.
    pub fn token(&self, d: &SendingDomain) -> Option<String> {
        match &self.keys {
            Some(k) => Some(naming::token(
                &k.identity,
                d.metadata.namespace.as_deref().unwrap_or_default(),
                &d.spec.domain,
            )),
            None => token_from_id(d.status.as_ref()?.id.as_deref()?).map(str::to_string),
        }
    }

    /// The seal of `status` as the controller writes it for `d`, if it has an id.
    pub fn seal(&self, d: &SendingDomain, status: &SendingDomainStatus) -> Option<String> {
        let k = self.keys.as_ref()?;
        status.id.as_ref()?;
        let digest = self.seal_mac(k, d, status).finalize().into_bytes();
        Some(
            BASE32_NOPAD
                .encode(&digest[..SEAL_BYTES])
                .to_ascii_lowercase(),
        )
    }

    fn seal_mac(&self, k: &Keys, d: &SendingDomain, status: &SendingDomainStatus) -> Hmac<Sha256> {
        let mut mac = hmac(&k.seal);
        let mut field = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        field(
            d.metadata
                .namespace
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        );
        field(d.spec.domain.as_bytes());
        field(status.id.as_deref().unwrap_or_default().as_bytes());
        field(Strength::of(status).as_str().as_bytes());
        let selectors = status.dkim.iter().flat_map(|k| &k.selectors);
        for s in selectors {
            field(s.name.as_bytes());
            field(s.public_key.as_bytes());
        }
        mac
    }

    fn sealed(&self, k: &Keys, d: &SendingDomain, status: &SendingDomainStatus) -> bool {
        let Some(seal) = status.seal.as_deref() else {
            return self.unsealed;
        };
        let Ok(bytes) = BASE32_NOPAD.decode(seal.to_ascii_uppercase().as_bytes()) else {
            return false;
        };
        bytes.len() == SEAL_BYTES
            && self
                .seal_mac(k, d, status)
                .verify_truncated_left(&bytes)
                .is_ok()
    }

    /// The token `d` may be served under: its status's id is its own and its
    /// seal holds. `None` when the status cannot be believed.
    pub fn vouched(&self, d: &SendingDomain) -> Option<String> {
        let status = d.status.as_ref()?;
        let token = self.token(d)?;
        if status.id.as_deref().and_then(token_from_id) != Some(token.as_str()) {
            return None;
        }
        match &self.keys {
            Some(k) if !self.sealed(k, d, status) => None,
            _ => Some(token),
        }
    }

    /// The strength of `d`'s claim: what its status says, if it can be believed.
    pub fn strength(&self, d: &SendingDomain) -> Strength {
        match (&d.status, self.vouched(d)) {
            (Some(status), Some(_)) => Strength::of(status),
            _ => Strength::Unproven,
        }
    }

    /// Whether the policy lets `d`'s namespace claim its domain.
    pub fn allows(&self, d: &SendingDomain) -> bool {
        self.policy.allows(
            d.metadata.namespace.as_deref().unwrap_or_default(),
            &d.spec.domain,
        )
    }

    /// Whether `d` carries a status id that cannot be believed (not its own, or
    /// its seal does not hold): a forged, copied or foreign status.
    pub fn refuses(&self, d: &SendingDomain) -> bool {
        d.status.as_ref().is_some_and(|s| s.id.is_some()) && self.vouched(d).is_none()
    }

    /// Whether every status with its own id carries a valid seal: then unsealed
    /// statuses need never be believed again.
    pub fn all_sealed<'a>(&self, domains: impl IntoIterator<Item = &'a SendingDomain>) -> bool {
        let Some(k) = &self.keys else {
            return false;
        };
        let strict = Trust {
            unsealed: false,
            ..self.clone()
        };
        domains.into_iter().all(|d| {
            let own_id = d
                .status
                .as_ref()
                .and_then(|s| s.id.as_deref())
                .and_then(token_from_id)
                == Some(
                    naming::token(
                        &k.identity,
                        d.metadata.namespace.as_deref().unwrap_or_default(),
                        &d.spec.domain,
                    )
                    .as_str(),
                );
            !own_id || strict.vouched(d).is_some()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::api::{DnsRecord, SendingDomainSpec};
    use crate::core::zone::fixtures::{domain, sealed};

    const KEY: [u8; 32] = [7; 32];

    fn trust() -> Trust {
        Trust::new(&KEY, false, Policy::default())
    }

    fn example() -> SendingDomain {
        domain(
            "acme",
            "example.com",
            "x",
            &[("anypost1", "QUJD")],
            false,
            1,
        )
    }

    #[test]
    fn a_status_the_controller_sealed_is_vouched_for() {
        let t = trust();
        let d = sealed(&t, example());
        assert_eq!(
            t.vouched(&d),
            Some(naming::token(&KEY, "acme", "example.com"))
        );
        assert!(!t.refuses(&d));
        assert_eq!(t.seal(&d, d.status.as_ref().unwrap()).unwrap().len(), 26);
    }

    #[test]
    fn a_forged_status_is_refused() {
        let t = trust();
        // Another domain's id (the token of another namespace).
        let mut d = sealed(&t, example());
        let other = naming::token(&KEY, "other", "example.com");
        d.status.as_mut().unwrap().id = Some(naming::domain_id(&other));
        assert_eq!(t.vouched(&d), None);
        assert!(t.refuses(&d));
        // Its own id, another key: the seal no longer holds.
        let mut d = sealed(&t, example());
        d.status.as_mut().unwrap().dkim.as_mut().unwrap().selectors[0].public_key = "R0hJ".into();
        assert_eq!(t.vouched(&d), None);
        // Claiming verification it never earned.
        let mut d = sealed(&t, example());
        d.status.as_mut().unwrap().state = Some(DomainState::Verified);
        assert_eq!(t.vouched(&d), None);
        assert_eq!(t.strength(&d), Strength::Unproven);
        // A seal made under another identity key.
        let d = sealed(&Trust::new(&[8; 32], false, Policy::default()), example());
        assert_eq!(t.vouched(&d), None);
        // Garbage.
        let mut d = sealed(&t, example());
        d.status.as_mut().unwrap().seal = Some("not base32!".into());
        assert_eq!(t.vouched(&d), None);
    }

    #[test]
    fn unsealed_statuses_are_believed_only_during_the_transition() {
        let mut d = sealed(&trust(), example());
        d.status.as_mut().unwrap().seal = None;
        assert_eq!(trust().vouched(&d), None);
        let transition = Trust::new(&KEY, true, Policy::default());
        assert!(transition.vouched(&d).is_some());
        assert!(!transition.all_sealed([&d]));
        let d = sealed(&transition, d);
        assert!(transition.all_sealed([&d]));
        // A foreign id does not hold the transition up: it is never served.
        let mut foreign = example();
        foreign.status.as_mut().unwrap().seal = None;
        assert!(transition.all_sealed([&d, &foreign]));
    }

    #[test]
    fn strength_comes_from_a_believed_status_only() {
        let t = trust();
        let mut d = example();
        let st = d.status.as_mut().unwrap();
        st.dns_records = vec![DnsRecord {
            type_: "CNAME".into(),
            name: "anypost".into(),
            fqdn: "anypost.example.com".into(),
            value: "x".into(),
            purpose: Purpose::Verification,
            state: Some(RecordState::Ok),
            observed: None,
        }];
        assert_eq!(t.strength(&d), Strength::Unproven);
        let d = sealed(&t, d);
        assert_eq!(t.strength(&d), Strength::Proven);
        let mut v = d.clone();
        v.status.as_mut().unwrap().state = Some(DomainState::Verified);
        let v = sealed(&t, v);
        assert_eq!(t.strength(&v), Strength::Verified);
        assert!(Strength::Verified < Strength::Proven && Strength::Proven < Strength::Unproven);
    }

    #[test]
    fn as_written_believes_the_status() {
        let t = Trust::as_written();
        // "domain_x" is no id at all.
        assert_eq!(t.vouched(&example()), None);
        let d = domain("a", "example.com", "abcdefghijklmnop", &[], false, 1);
        assert_eq!(t.vouched(&d).as_deref(), Some("abcdefghijklmnop"));
        assert_eq!(t.seal(&d, d.status.as_ref().unwrap()), None);
        let bare = SendingDomain::new(
            "x",
            SendingDomainSpec {
                domain: "example.com".into(),
                dkim: None,
                tracking: None,
            },
        );
        assert_eq!(t.token(&bare), None);
    }
}
