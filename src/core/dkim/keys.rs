//! DKIM keys: generation, parsing, and what the Secret holding them contains.
//! Private keys never reach logs: [`KeyMaterial`]'s `Debug` shows the public half.

use super::rotation::Plan;
use crate::core::api::{DkimStatus, MANAGED_BY_LABEL, MANAGER};
use crate::core::vocab::{BySelector, Selector};
use data_encoding::BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use std::collections::BTreeMap;

/// Secret data key naming the active selector.
pub const SELECTOR_KEY: &str = "selector";

/// The Secret data key holding a selector's private key.
pub fn key_name(selector: Selector) -> String {
    format!("{selector}.key")
}

/// The name of a SendingDomain's DKIM Secret.
pub fn secret_name(domain_name: &str) -> String {
    format!("{domain_name}-dkim")
}

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating a {bits}-bit RSA key failed: {source}")]
    Generate { bits: u32, source: rsa::Error },
    #[error("encoding the key failed: {0}")]
    Encode(String),
    #[error("not a PKCS#8 RSA private key: {0}")]
    Parse(String),
}

/// A private key and what is published of it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`); for a key read from the watch cache, the
    /// cache's stand-in for it ([`compact_for_cache`]), which compares equal
    /// to itself and is never written ([`is_stand_in`]).
    pub pem: String,
    /// Base64 of the DER SubjectPublicKeyInfo: the `p=` of the DKIM record.
    pub public_key: String,
    /// Modulus size in bits.
    pub bits: u32,
}

// Private keys must never reach logs.
impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("bits", &self.bits)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

fn material(key: &rsa::PrivateKey) -> Result<KeyMaterial, KeyError> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    Ok(KeyMaterial {
        pem: pem.to_string(),
        public_key: BASE64.encode(spki.as_bytes()),
        bits: (key.size() * 8) as u32,
    })
}

/// Generates an RSA key. CPU-bound (about 0.1 s for 2048 bits optimised, seconds
/// for 4096): call it from a blocking thread.
pub fn generate(bits: u32) -> Result<KeyMaterial, KeyError> {
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits as usize)
        .map_err(|source| KeyError::Generate { bits, source })?;
    material(&key)
}

/// Reads and checks a PKCS#8 PEM private key.
pub fn parse_pem(pem: &str) -> Result<KeyMaterial, KeyError> {
    let key = rsa::PrivateKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Parse(e.to_string()))?;
    key.validate().map_err(|e| KeyError::Parse(e.to_string()))?;
    let mut m = material(&key)?;
    // Keep the stored text as it is, so re-applying the Secret changes nothing.
    m.pem = pem.to_string();
    Ok(m)
}

/// How the watch cache marks the stand-in for a private key it parsed and
/// checked. Every key value in the cache went through [`compact_for_cache`]: a
/// value that looks like a stand-in in the Secret itself does not parse as PEM,
/// so the cache holds [`CACHE_UNREADABLE`] for it, never a forged stand-in.
const STAND_IN: &[u8] = b"\0anypost-cached-key ";
const CACHE_UNREADABLE: &[u8] = b"\0anypost-unreadable-key";

/// Whether a key's `pem` is the cache's stand-in (it must never be written).
pub fn is_stand_in(key: &KeyMaterial) -> bool {
    key.pem.as_bytes().starts_with(STAND_IN)
}

/// Makes a DKIM Secret small for the watch cache, once per watch event: each
/// private key that parses is replaced by a stand-in carrying what reconcile
/// reads of it (its size and public key; about 0.4 KB for 2048 bits instead
/// of 1.7 KB of PEM), and is parsed and checked here rather than on every
/// reconcile; anything else under a key's name is marked unreadable, so a
/// reconcile reads that Secret live. A Secret so compacted is read with
/// [`StoredKeys::from_cache`]; it can only be compared with itself, and any
/// write is made from a live read.
///
/// Annotations and managed fields go too: nothing reads them from the cache,
/// and a Secret imported with client-side `kubectl apply` carries its whole
/// manifest, the private keys included, in
/// `kubectl.kubernetes.io/last-applied-configuration`.
pub fn compact_for_cache(secret: &mut Secret) {
    secret.metadata.annotations = None;
    secret.metadata.managed_fields = None;
    let Some(data) = secret.data.as_mut() else {
        return;
    };
    for sel in Selector::BOTH {
        let Some(value) = data.get_mut(&key_name(sel)) else {
            continue;
        };
        value.0 = match parse_value(&value.0) {
            Ok(m) => [STAND_IN, format!("{} {}", m.bits, m.public_key).as_bytes()].concat(),
            Err(_) => CACHE_UNREADABLE.to_vec(),
        };
    }
}

/// What a DKIM Secret holds.
#[derive(Debug, Clone, Default)]
pub struct StoredKeys {
    pub keys: BySelector<Option<KeyMaterial>>,
    /// The active selector, if the Secret names a known one.
    pub active: Option<Selector>,
    /// Keys present but unreadable (selector, why).
    pub invalid: Vec<(Selector, String)>,
}

impl StoredKeys {
    /// Reads the keys from a Secret's data (none when there is no Secret).
    pub fn from_data(data: Option<&BTreeMap<String, ByteString>>) -> Self {
        Self::read(data, |bytes| parse_value(bytes).map_err(|e| e.to_string()))
    }

    /// Reads the keys from a Secret's data as the watch cache keeps it
    /// ([`compact_for_cache`]): the stand-ins, checked when they were cached.
    pub fn from_cache(data: Option<&BTreeMap<String, ByteString>>) -> Self {
        Self::read(data, |bytes| {
            stand_in(bytes).ok_or_else(|| "unreadable (as the watch cache saw it)".to_string())
        })
    }

    /// Each selector's key as `key` reads it, and the active selector.
    fn read(
        data: Option<&BTreeMap<String, ByteString>>,
        key: impl Fn(&[u8]) -> Result<KeyMaterial, String>,
    ) -> Self {
        let mut out = StoredKeys::default();
        let Some(data) = data else {
            return out;
        };
        for sel in Selector::BOTH {
            if let Some(bytes) = data.get(&key_name(sel)) {
                match key(&bytes.0) {
                    Ok(m) => out.keys[sel] = Some(m),
                    Err(why) => out.invalid.push((sel, why)),
                }
            }
        }
        out.active = active(data);
        out
    }
}

/// A key's value in a Secret: UTF-8 PKCS#8 PEM.
fn parse_value(bytes: &[u8]) -> Result<KeyMaterial, KeyError> {
    std::str::from_utf8(bytes)
        .map_err(|e| KeyError::Parse(e.to_string()))
        .and_then(parse_pem)
}

/// The key a cache stand-in describes, if `bytes` is one.
fn stand_in(bytes: &[u8]) -> Option<KeyMaterial> {
    let (bits, public_key) = std::str::from_utf8(bytes.strip_prefix(STAND_IN)?)
        .ok()?
        .split_once(' ')?;
    Some(KeyMaterial {
        pem: std::str::from_utf8(bytes).ok()?.to_string(),
        public_key: public_key.to_string(),
        bits: bits.parse().ok()?,
    })
}

/// The active selector a Secret's data names.
fn active(data: &BTreeMap<String, ByteString>) -> Option<Selector> {
    data.get(SELECTOR_KEY)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .and_then(|s| Selector::parse(s.trim()))
}

/// The Secret's data for these keys.
pub fn secret_data(
    keys: &BySelector<KeyMaterial>,
    active: Selector,
) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::new();
    for (sel, key) in keys.iter() {
        data.insert(key_name(sel), ByteString(key.pem.clone().into_bytes()));
    }
    data.insert(
        SELECTOR_KEY.to_string(),
        ByteString(active.as_str().as_bytes().to_vec()),
    );
    data
}

/// Whether `secret` may be managed for the SendingDomain with uid `owner`: ours
/// (labelled), and not controlled by an object of another kind. A Secret owned
/// by another SendingDomain of the same name (deleted and re-created) is ours to
/// take over.
pub fn adoptable(secret: &Secret, owner: &str) -> Result<(), &'static str> {
    if secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        != Some(MANAGER)
    {
        return Err("was not created by anypost-operator");
    }
    let foreign_controller = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid != owner && o.kind != "SendingDomain");
    if foreign_controller {
        return Err("is controlled by another object");
    }
    Ok(())
}

/// Whether the Secret already holds `data` (only our keys are compared: others
/// someone added are theirs, and server-side apply leaves them alone) with our
/// label and the ownerReference of `owner` (a uid).
pub fn holds(s: &Secret, data: &BTreeMap<String, ByteString>, owner: &str) -> bool {
    let stored = s.data.as_ref();
    let owned = s
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner && o.controller == Some(true));
    data.iter()
        .all(|(k, v)| stored.and_then(|d| d.get(k)) == Some(v))
        && s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(MANAGER)
        && owned
}

/// Whether a Secret read from a watch cache can stand in for a live read: its
/// keys are the ones status publishes, with the same active selector, and the
/// plan made from it generates nothing and writes nothing. A cache that lags the
/// API then at worst repeats the last status; it never drives a write.
pub fn steady(
    s: &Secret,
    stored: &StoredKeys,
    plan: &Plan,
    status: Option<&DkimStatus>,
    owner: &str,
) -> bool {
    let Some(status) = status else {
        return false;
    };
    let BySelector([Some(k1), Some(k2)]) = &stored.keys else {
        return false;
    };
    let keys = BySelector([k1.clone(), k2.clone()]);
    stored.invalid.is_empty()
        && plan.generate.is_empty()
        && stored.active == Some(plan.active)
        && status.active_selector == plan.active.as_str()
        && keys.iter().all(|(sel, k)| {
            status
                .selectors
                .iter()
                .any(|x| x.name == sel.as_str() && x.public_key == k.public_key)
        })
        && holds(s, &secret_data(&keys, plan.active), owner)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Two 1024-bit keys, generated once for all tests.
    pub(crate) fn keys() -> &'static BySelector<KeyMaterial> {
        static K: OnceLock<BySelector<KeyMaterial>> = OnceLock::new();
        K.get_or_init(|| BySelector([generate(1024).unwrap(), generate(1024).unwrap()]))
    }

    #[test]
    fn generated_keys_round_trip_through_pem() {
        let k = &keys()[Selector::Anypost1];
        assert!(k.pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(k.bits, 1024);
        let back = parse_pem(&k.pem).unwrap();
        assert_eq!(&back, k);
        assert!(parse_pem("garbage").is_err());
        assert!(!format!("{k:?}").contains("PRIVATE"));
    }

    #[test]
    fn secret_data_has_both_keys_and_the_selector() {
        let d = secret_data(keys(), Selector::Anypost2);
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            ["anypost1.key", "anypost2.key", "selector"]
        );
        assert_eq!(d["selector"].0, b"anypost2");
        let back = StoredKeys::from_data(Some(&d));
        assert_eq!(back.active, Some(Selector::Anypost2));
        assert_eq!(back.keys.0, keys().0.clone().map(Some));
        assert!(back.invalid.is_empty());
    }

    /// Whether a cached Secret may stand in for a live read.
    mod cache {
        use super::super::*;
        use super::keys;
        use crate::core::dkim::rotation::{PlanInput, plan};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
        use std::time::Duration;

        const UID: &str = "uid-1";

        fn secret(keys: &BySelector<KeyMaterial>, active: Selector) -> Secret {
            Secret {
                metadata: ObjectMeta {
                    name: Some("example-com-dkim".into()),
                    labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into())])),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "anypost.com/v1alpha1".into(),
                        kind: "SendingDomain".into(),
                        name: "example-com".into(),
                        uid: UID.into(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]),
                    ..Default::default()
                },
                data: Some(secret_data(keys, active)),
                ..Default::default()
            }
        }

        fn plan_for(status: Option<&DkimStatus>, stored: &StoredKeys) -> Plan {
            plan(&PlanInput {
                now: jiff::Timestamp::now(),
                previous: status,
                stored,
                rotation_interval: None,
                rotate_request: None,
                verified: BySelector([true, true]),
                retire_after: Duration::from_secs(3600),
                min_standby_age: Duration::from_secs(3600),
            })
        }

        /// `s` as the watch cache keeps it.
        fn cached(s: &Secret) -> Secret {
            let mut c = s.clone();
            compact_for_cache(&mut c);
            c
        }

        /// Whether `s`, as the watch cache keeps it, may stand in for a live
        /// read, given `status`.
        fn usable(s: &Secret, status: Option<&DkimStatus>) -> bool {
            let c = cached(s);
            let stored = StoredKeys::from_cache(c.data.as_ref());
            steady(&c, &stored, &plan_for(status, &stored), status, UID)
        }

        /// The status the operator writes once the Secret holds `keys`.
        fn status_for(keys: &BySelector<KeyMaterial>) -> DkimStatus {
            let s = secret(keys, Selector::Anypost1);
            let stored = StoredKeys::from_data(s.data.as_ref());
            plan_for(None, &stored).status("example-com-dkim", keys)
        }

        #[test]
        fn a_cached_secret_that_agrees_with_status_is_used() {
            let s = secret(keys(), Selector::Anypost1);
            assert!(usable(&s, Some(&status_for(keys()))));
            assert_eq!(adoptable(&s, UID), Ok(()));
        }

        #[test]
        fn a_secret_imported_with_kubectl_apply_keeps_no_private_key_in_the_cache() {
            let mut s = secret(keys(), Selector::Anypost1);
            let manifest = serde_json::to_string(&s).unwrap();
            s.metadata.annotations = Some(BTreeMap::from([(
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                manifest,
            )]));
            let c = cached(&s);
            let pem = &keys()[Selector::Anypost1].pem;
            let encoded = serde_json::to_string(&s).unwrap();
            let private = |m: &str| {
                m.contains(pem.lines().nth(1).unwrap())
                    || m.contains(&data_encoding::BASE64.encode(pem.as_bytes())[..64])
            };
            assert!(private(&encoded), "the live Secret holds the key");
            let kept = serde_json::to_string(&c).unwrap();
            assert!(!private(&kept), "the cache holds a private key: {kept}");
            assert_eq!(c.metadata.annotations, None);
            assert!(usable(&s, Some(&status_for(keys()))));
        }

        #[test]
        fn the_cache_keeps_what_reconcile_reads_of_the_keys_and_not_the_keys() {
            let s = secret(keys(), Selector::Anypost2);
            let c = cached(&s);
            let live = StoredKeys::from_data(s.data.as_ref());
            let from_cache = StoredKeys::from_cache(c.data.as_ref());
            assert_eq!(from_cache.active, Some(Selector::Anypost2));
            assert!(from_cache.invalid.is_empty());
            for sel in Selector::BOTH {
                let (a, b) = (
                    live.keys[sel].as_ref().unwrap(),
                    from_cache.keys[sel].as_ref().unwrap(),
                );
                assert_eq!((&a.public_key, a.bits), (&b.public_key, b.bits));
                assert!(!is_stand_in(a) && is_stand_in(b));
                assert!(
                    !String::from_utf8_lossy(&c.data.as_ref().unwrap()[&key_name(sel)].0)
                        .contains("PRIVATE")
                );
            }
            let size = |s: &Secret| {
                s.data
                    .as_ref()
                    .unwrap()
                    .values()
                    .map(|v| v.0.len())
                    .sum::<usize>()
            };
            assert!(
                size(&c) < size(&s) / 2,
                "{} of {} bytes kept",
                size(&c),
                size(&s)
            );
            // The keys as read from the cache are what the cache holds: no write.
            let data = secret_data(
                &from_cache.keys.clone().map(Option::unwrap),
                Selector::Anypost2,
            );
            assert!(holds(&c, &data, UID));
        }

        #[test]
        fn a_stand_in_written_into_the_secret_itself_is_unreadable_in_the_cache() {
            let c = cached(&secret(keys(), Selector::Anypost1));
            let mut forged = secret(keys(), Selector::Anypost1);
            forged.data.as_mut().unwrap().insert(
                "anypost1.key".into(),
                c.data.as_ref().unwrap()["anypost1.key"].clone(),
            );
            let stored = StoredKeys::from_cache(cached(&forged).data.as_ref());
            assert!(stored.keys[Selector::Anypost1].is_none());
            assert_eq!(stored.invalid.len(), 1);
            assert!(!usable(&forged, Some(&status_for(keys()))));
            // Read live, it is no key either.
            let live = StoredKeys::from_data(forged.data.as_ref());
            assert!(live.keys[Selector::Anypost1].is_none());
        }

        #[test]
        fn a_new_domain_always_reads_live() {
            assert!(!usable(&secret(keys(), Selector::Anypost1), None));
        }

        #[test]
        fn a_cache_behind_or_ahead_of_status_is_not_used() {
            // Status publishes a key the cached Secret does not hold yet.
            let newer = BySelector([keys()[Selector::Anypost1].clone(), generate(1024).unwrap()]);
            let s = secret(keys(), Selector::Anypost1);
            assert!(!usable(&s, Some(&status_for(&newer))));
            // The cached Secret names another active selector than status.
            let s = secret(keys(), Selector::Anypost2);
            assert!(!usable(&s, Some(&status_for(keys()))));
        }

        #[test]
        fn a_secret_that_needs_a_write_is_not_used() {
            let status = status_for(keys());
            // A key is missing: the plan generates one.
            let mut s = secret(keys(), Selector::Anypost1);
            s.data.as_mut().unwrap().remove("anypost2.key");
            assert!(!usable(&s, Some(&status)));
            // A key is unreadable.
            let mut s = secret(keys(), Selector::Anypost1);
            s.data
                .as_mut()
                .unwrap()
                .insert("anypost1.key".into(), ByteString(b"garbage".to_vec()));
            assert!(!usable(&s, Some(&status)));
            // Our ownerReference is gone: the write restores it.
            let mut s = secret(keys(), Selector::Anypost1);
            s.metadata.owner_references = Some(vec![OwnerReference {
                uid: "someone-else".into(),
                ..Default::default()
            }]);
            assert!(!usable(&s, Some(&status)));
        }

        #[test]
        fn only_labelled_secrets_not_controlled_by_others_are_adopted() {
            let mut s = secret(keys(), Selector::Anypost1);
            s.metadata.labels = None;
            assert!(adoptable(&s, UID).is_err());
            let mut s = secret(keys(), Selector::Anypost1);
            s.metadata.owner_references = Some(vec![OwnerReference {
                kind: "Deployment".into(),
                uid: "other".into(),
                controller: Some(true),
                ..Default::default()
            }]);
            assert_eq!(adoptable(&s, UID), Err("is controlled by another object"));
        }
    }
}
