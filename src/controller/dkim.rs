//! DKIM keys: generation, the Secret that holds them, and the rotation plan.
//!
//! Two selectors are always published. Rotation promotes the standby selector
//! (published long before) to active only when the customer's CNAME to it
//! verifies, keeps the old key published as `retiring` for mail in flight, and
//! then replaces it with a fresh standby key. The plan is pure; the controller
//! generates the keys it asks for, writes the Secret, then the status.
//!
//! Ordering is what makes a crash harmless: a key reaches the Secret before its
//! public half reaches status, and the DNS zone is built from status, so nothing
//! is ever published whose private key is not already stored.

use crate::api::{DkimStatus, SelectorState, SelectorStatus};
use crate::naming::SELECTORS;
use data_encoding::BASE64;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use std::time::Duration;

/// Secret data key naming the active selector.
pub const SELECTOR_KEY: &str = "selector";

/// The Secret data key holding a selector's private key.
pub fn key_name(selector: &str) -> String {
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
    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`).
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

/// What a DKIM Secret holds, by selector index.
#[derive(Debug, Clone, Default)]
pub struct StoredKeys {
    pub keys: [Option<KeyMaterial>; 2],
    /// The active selector's index, if the Secret names a known selector.
    pub active: Option<usize>,
    /// Keys present but unreadable (selector, why).
    pub invalid: Vec<(&'static str, String)>,
}

impl StoredKeys {
    pub fn from_secret(secret: Option<&Secret>) -> Self {
        let mut out = StoredKeys::default();
        let Some(data) = secret.and_then(|s| s.data.as_ref()) else {
            return out;
        };
        for (i, sel) in SELECTORS.iter().enumerate() {
            if let Some(bytes) = data.get(&key_name(sel)) {
                match std::str::from_utf8(&bytes.0)
                    .map_err(|e| KeyError::Parse(e.to_string()))
                    .and_then(parse_pem)
                {
                    Ok(m) => out.keys[i] = Some(m),
                    Err(e) => out.invalid.push((sel, e.to_string())),
                }
            }
        }
        out.active = data
            .get(SELECTOR_KEY)
            .and_then(|b| std::str::from_utf8(&b.0).ok())
            .and_then(|s| SELECTORS.iter().position(|x| *x == s.trim()));
        out
    }
}

/// Everything the rotation plan depends on.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub now: Timestamp,
    pub previous: Option<&'a DkimStatus>,
    pub stored: &'a StoredKeys,
    pub rotation_interval: Option<Duration>,
    /// The `anypost.com/rotate` annotation's value.
    pub rotate_request: Option<&'a str>,
    /// Per selector: did its CNAME chain verify at the last check?
    pub verified: [bool; 2],
    pub retire_after: Duration,
    /// How long a standby key must have been published before it may sign.
    pub min_standby_age: Duration,
}

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The keys and selector states to reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Selector indexes that need a freshly generated key.
    pub generate: Vec<usize>,
    pub active: usize,
    pub states: [SelectorState; 2],
    pub created_at: [Timestamp; 2],
    pub retire_at: [Option<Timestamp>; 2],
    pub last_rotation_time: Option<Timestamp>,
    pub next_rotation_time: Option<Timestamp>,
    pub observed_rotate_request: Option<String>,
    pub notes: Vec<Note>,
    /// The earliest future moment this plan changes by itself.
    wake_at: Option<Timestamp>,
}

fn sd(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(sd(d)).unwrap_or(Timestamp::MAX)
}

fn rotated_note(signs: usize, retiring: usize, until: Option<Timestamp>) -> Note {
    Note {
        warning: false,
        reason: "Rotated",
        message: format!(
            "selector {} now signs; {} stays published until {} for mail in flight",
            SELECTORS[signs],
            SELECTORS[retiring],
            until.expect("a retiring key has a retirement time")
        ),
    }
}

/// Decides which keys to generate and which selector signs.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let now = input.now;
    let prev_sel = |i: usize| -> Option<&SelectorStatus> {
        input
            .previous
            .and_then(|p| p.selectors.iter().find(|s| s.name == SELECTORS[i]))
    };
    let prev_active = input
        .previous
        .and_then(|p| SELECTORS.iter().position(|s| *s == p.active_selector));
    let mut active = input.stored.active.or(prev_active).unwrap_or(0);
    let mut notes = Vec::new();
    let mut generate = Vec::new();
    let mut states = [SelectorState::Standby; 2];
    states[active] = SelectorState::Active;
    let mut created_at = [now; 2];
    let mut retire_at = [None; 2];

    for i in 0..2 {
        match (&input.stored.keys[i], prev_sel(i)) {
            (Some(key), Some(prev)) if prev.public_key == key.public_key => {
                created_at[i] = prev.created_at.as_ref().map(|t| t.0).unwrap_or(now);
                if i != active && prev.state == SelectorState::Retiring {
                    states[i] = SelectorState::Retiring;
                    retire_at[i] = prev.retire_at.as_ref().map(|t| t.0);
                }
            }
            (Some(_), _) => {}
            (None, prev) => {
                generate.push(i);
                if prev.is_some() {
                    notes.push(Note {
                        warning: true,
                        reason: "KeyRegenerated",
                        message: format!(
                            "the private key of selector {} was missing or unreadable in the Secret; a new key was generated and will be published",
                            SELECTORS[i]
                        ),
                    });
                }
            }
        }
    }

    // The Secret is written before status, so a rotation whose status write was
    // lost (the process died, or the patch failed) shows as a Secret naming the
    // previous standby while status still names the old active selector. That
    // rotation stands: finish it rather than rotating a second time, back to
    // the key the MTA just stopped signing with.
    let unchanged = |i: usize| {
        input.stored.keys[i]
            .as_ref()
            .zip(prev_sel(i))
            .is_some_and(|(k, p)| k.public_key == p.public_key)
    };
    let lost_rotation = match (input.stored.active, prev_active) {
        (Some(new), Some(old)) if new != old => {
            unchanged(new)
                && unchanged(old)
                && prev_sel(new).is_some_and(|p| p.state == SelectorState::Standby)
        }
        _ => false,
    };
    if lost_rotation {
        let old = 1 - active;
        states[old] = SelectorState::Retiring;
        retire_at[old] = Some(add(now, input.retire_after));
        notes.push(rotated_note(active, old, retire_at[old]));
    }

    // The signing key itself is lost (deleted from the Secret, or unreadable). A
    // fresh key is in no DNS answer yet, nor in resolvers' caches: mail signed
    // with it fails DKIM until it has propagated. The other selector's key is
    // published already, so it signs instead and the fresh key becomes standby.
    let other = 1 - active;
    if generate.contains(&active) && unchanged(other) {
        let lost = active;
        states[other] = SelectorState::Active;
        retire_at[other] = None;
        states[lost] = SelectorState::Standby;
        active = other;
        if let Some(n) = notes.iter_mut().find(|n| n.reason == "KeyRegenerated") {
            n.message = format!(
                "the private key of selector {}, which signed, was missing or unreadable in the Secret; selector {}, already published, signs instead, and a new standby key was generated for {}",
                SELECTORS[lost], SELECTORS[active], SELECTORS[lost]
            );
        }
    }

    // A retiring key whose grace period is over is replaced by a fresh standby key.
    for i in 0..2 {
        if states[i] == SelectorState::Retiring && retire_at[i].is_none_or(|t| t <= now) {
            states[i] = SelectorState::Standby;
            retire_at[i] = None;
            created_at[i] = now;
            if !generate.contains(&i) {
                generate.push(i);
            }
            notes.push(Note {
                warning: false,
                reason: "KeyRetired",
                message: format!(
                    "the old key of selector {} is no longer published; a fresh standby key replaces it",
                    SELECTORS[i]
                ),
            });
        }
    }

    let mut last_rotation_time = input
        .previous
        .and_then(|p| p.last_rotation_time.as_ref().map(|t| t.0));
    if lost_rotation {
        last_rotation_time = Some(now);
    }
    let rotation_base = last_rotation_time.unwrap_or(created_at[active]);
    let scheduled = input
        .rotation_interval
        .is_some_and(|i| add(rotation_base, i) <= now);
    let prev_request = input
        .previous
        .and_then(|p| p.observed_rotate_request.as_deref());
    let requested = input.rotate_request.is_some() && input.rotate_request != prev_request;
    let mut observed_rotate_request = prev_request.map(str::to_string);
    if lost_rotation && requested {
        observed_rotate_request = input.rotate_request.map(str::to_string);
    }

    // When a due rotation blocked only by the standby key's age may go ahead.
    let mut standby_old_enough_at = None;
    if (scheduled || requested) && !lost_rotation {
        let other = 1 - active;
        let blocker = if let (SelectorState::Retiring, Some(until)) =
            (states[other], retire_at[other])
        {
            Some(format!(
                "selector {} still holds the previous key, published for mail in flight until {until}",
                SELECTORS[other]
            ))
        } else if states[other] != SelectorState::Standby || generate.contains(&other) {
            Some(format!(
                "selector {} is not a published standby key yet",
                SELECTORS[other]
            ))
        } else if !input.verified[other] {
            Some(format!(
                "the CNAME for selector {} does not verify",
                SELECTORS[other]
            ))
        } else if add(created_at[other], input.min_standby_age) > now {
            standby_old_enough_at = Some(add(created_at[other], input.min_standby_age));
            Some(format!(
                "the standby key of selector {} was published less than {} ago",
                SELECTORS[other],
                crate::duration::format(input.min_standby_age)
            ))
        } else {
            None
        };
        match blocker {
            None => {
                states[active] = SelectorState::Retiring;
                retire_at[active] = Some(add(now, input.retire_after));
                states[other] = SelectorState::Active;
                notes.push(rotated_note(other, active, retire_at[active]));
                active = other;
                last_rotation_time = Some(now);
                if requested {
                    observed_rotate_request = input.rotate_request.map(str::to_string);
                }
            }
            Some(why) if requested => {
                observed_rotate_request = input.rotate_request.map(str::to_string);
                notes.push(Note {
                    warning: true,
                    reason: "RotationDeferred",
                    message: format!(
                        "rotation requested by the anypost.com/rotate annotation was not done: {why}; set a new value to ask again"
                    ),
                });
            }
            Some(_) => {}
        }
    }

    let next_rotation_time = input
        .rotation_interval
        .map(|i| add(last_rotation_time.unwrap_or(created_at[active]), i));
    // A rotation that is due but blocked is retried when something changes: a
    // check's status write (the standby's CNAME), or the standby's age, never in
    // a loop on its past due time.
    let wake_at = retire_at
        .iter()
        .flatten()
        .copied()
        .chain(next_rotation_time.filter(|t| *t > now))
        .chain(standby_old_enough_at)
        .min();
    Plan {
        generate,
        active,
        states,
        created_at,
        retire_at,
        last_rotation_time,
        next_rotation_time,
        observed_rotate_request,
        notes,
        wake_at,
    }
}

impl Plan {
    /// `status.dkim` for this plan with the keys now stored.
    pub fn status(&self, secret_name: &str, keys: &[KeyMaterial; 2]) -> DkimStatus {
        DkimStatus {
            secret_name: secret_name.to_string(),
            active_selector: SELECTORS[self.active].to_string(),
            last_rotation_time: self.last_rotation_time.map(Time),
            next_rotation_time: self.next_rotation_time.map(Time),
            observed_rotate_request: self.observed_rotate_request.clone(),
            selectors: (0..2)
                .map(|i| SelectorStatus {
                    name: SELECTORS[i].to_string(),
                    state: self.states[i],
                    public_key: keys[i].public_key.clone(),
                    key_bits: Some(keys[i].bits),
                    created_at: Some(Time(self.created_at[i])),
                    retire_at: self.retire_at[i].map(Time),
                })
                .collect(),
        }
    }

    /// The earliest future moment this plan changes by itself (a retiring key's
    /// end, the next scheduled rotation, a young standby key coming of age).
    pub fn next_event(&self) -> Option<Timestamp> {
        self.wake_at
    }
}

/// The Secret's data for these keys.
pub fn secret_data(
    keys: &[KeyMaterial; 2],
    active: usize,
) -> std::collections::BTreeMap<String, ByteString> {
    let mut data = std::collections::BTreeMap::new();
    for (i, sel) in SELECTORS.iter().enumerate() {
        data.insert(key_name(sel), ByteString(keys[i].pem.clone().into_bytes()));
    }
    data.insert(
        SELECTOR_KEY.to_string(),
        ByteString(SELECTORS[active].as_bytes().to_vec()),
    );
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn keys() -> &'static [KeyMaterial; 2] {
        static K: OnceLock<[KeyMaterial; 2]> = OnceLock::new();
        K.get_or_init(|| [generate(1024).unwrap(), generate(1024).unwrap()])
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn stored(active: Option<usize>) -> StoredKeys {
        StoredKeys {
            keys: [Some(keys()[0].clone()), Some(keys()[1].clone())],
            active,
            invalid: vec![],
        }
    }

    fn input<'a>(now: i64, prev: Option<&'a DkimStatus>, st: &'a StoredKeys) -> PlanInput<'a> {
        PlanInput {
            now: ts(now),
            previous: prev,
            stored: st,
            rotation_interval: None,
            rotate_request: None,
            verified: [true, true],
            retire_after: Duration::from_secs(100),
            min_standby_age: Duration::from_secs(10),
        }
    }

    #[test]
    fn generated_keys_round_trip_through_pem() {
        let k = &keys()[0];
        assert!(k.pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(k.bits, 1024);
        let back = parse_pem(&k.pem).unwrap();
        assert_eq!(&back, k);
        assert!(parse_pem("garbage").is_err());
        assert!(!format!("{k:?}").contains("PRIVATE"));
    }

    #[test]
    fn new_domain_generates_both_and_activates_the_first() {
        let st = StoredKeys::default();
        let p = plan(&input(1000, None, &st));
        assert_eq!(p.generate, vec![0, 1]);
        assert_eq!(p.active, 0);
        assert_eq!(p.states, [SelectorState::Active, SelectorState::Standby]);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn existing_keys_are_never_regenerated() {
        let st = stored(Some(1));
        let p = plan(&input(1000, None, &st));
        assert!(p.generate.is_empty());
        assert_eq!(p.active, 1);
        let status = p.status("x-dkim", keys());
        let p2 = plan(&input(2000, Some(&status), &st));
        assert!(p2.generate.is_empty());
        assert_eq!(p2.created_at, p.created_at);
    }

    #[test]
    fn a_lost_key_is_regenerated_with_a_warning() {
        let st = stored(Some(0));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let mut lost = stored(Some(0));
        lost.keys[1] = None;
        let p = plan(&input(2000, Some(&status), &lost));
        assert_eq!(p.generate, vec![1]);
        assert_eq!(p.notes[0].reason, "KeyRegenerated");
    }

    #[test]
    fn a_lost_signing_key_hands_signing_to_the_published_standby() {
        let st = stored(Some(0));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let mut lost = stored(Some(0));
        lost.keys[0] = None;
        let p = plan(&input(2000, Some(&status), &lost));
        assert_eq!(p.generate, vec![0]);
        assert_eq!(p.active, 1, "the published key signs");
        assert_eq!(p.states, [SelectorState::Standby, SelectorState::Active]);
        assert_eq!(p.created_at, [ts(2000), ts(1000)]);
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].reason, "KeyRegenerated");
        assert!(p.notes[0].warning);
        assert_eq!(
            p.notes[0].message,
            "the private key of selector anypost1, which signed, was missing or unreadable in the Secret; selector anypost2, already published, signs instead, and a new standby key was generated for anypost1"
        );

        // With both keys lost there is nothing published to fall back on.
        let none = StoredKeys {
            active: Some(0),
            ..Default::default()
        };
        let p = plan(&input(2000, Some(&status), &none));
        assert_eq!((p.active, p.generate.clone()), (0, vec![0, 1]));
    }

    #[test]
    fn rotation_by_request_promotes_a_verified_standby_then_retires() {
        let st = stored(Some(0));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let mut i = input(2000, Some(&status), &st);
        i.rotate_request = Some("now");
        let p = plan(&i);
        assert_eq!(p.active, 1);
        assert_eq!(p.states, [SelectorState::Retiring, SelectorState::Active]);
        assert_eq!(p.retire_at[0], Some(ts(2100)));
        assert_eq!(p.observed_rotate_request.as_deref(), Some("now"));
        assert_eq!(p.notes[0].reason, "Rotated");

        // Asking again while anypost1 still retires is deferred, and says until when.
        let (retiring, switched) = (p.status("x-dkim", keys()), stored(Some(1)));
        let mut again = input(2050, Some(&retiring), &switched);
        again.rotate_request = Some("again");
        let deferred = plan(&again);
        assert_eq!(deferred.active, 1);
        assert_eq!(
            deferred.notes[0].message,
            "rotation requested by the anypost.com/rotate annotation was not done: selector anypost1 still holds the previous key, published for mail in flight until 1970-01-01T00:35:00Z; set a new value to ask again"
        );

        // The same annotation value again does nothing.
        let after = p.status("x-dkim", keys());
        let mut stored_after = stored(Some(1));
        stored_after.active = Some(1);
        let mut i2 = input(2050, Some(&after), &stored_after);
        i2.rotate_request = Some("now");
        let p2 = plan(&i2);
        assert_eq!(p2.active, 1);
        assert!(p2.generate.is_empty());

        // After the grace period the retiring key is replaced by a fresh standby.
        let p3 = plan(&input(2100, Some(&after), &stored_after));
        assert_eq!(p3.generate, vec![0]);
        assert_eq!(p3.states, [SelectorState::Standby, SelectorState::Active]);
        assert_eq!(p3.notes[0].reason, "KeyRetired");
    }

    #[test]
    fn a_rotation_whose_status_write_was_lost_is_completed_not_undone() {
        // The Secret already names anypost2 (written first), but status still
        // shows anypost1 active: the process died, or the status patch failed,
        // in between.
        let st = stored(Some(0));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let switched = stored(Some(1));
        let mut i = input(2000, Some(&status), &switched);
        i.rotate_request = Some("now");
        let p = plan(&i);
        assert_eq!(p.active, 1, "the rotation stands");
        assert_eq!(p.states, [SelectorState::Retiring, SelectorState::Active]);
        assert_eq!(p.retire_at[0], Some(ts(2100)));
        assert_eq!(p.last_rotation_time, Some(ts(2000)));
        assert_eq!(p.observed_rotate_request.as_deref(), Some("now"));
        assert!(p.generate.is_empty());
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].reason, "Rotated");

        // Likewise for a scheduled rotation: it is not repeated.
        let mut due = input(2000, Some(&status), &switched);
        due.rotation_interval = Some(Duration::from_secs(500));
        let p = plan(&due);
        assert_eq!(p.active, 1);
        assert_eq!(p.states, [SelectorState::Retiring, SelectorState::Active]);
        assert_eq!(p.next_rotation_time, Some(ts(2500)));
    }

    #[test]
    fn rotation_waits_for_the_standby_cname_and_age() {
        let st = stored(Some(0));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let mut i = input(2000, Some(&status), &st);
        i.rotate_request = Some("a");
        i.verified = [true, false];
        let p = plan(&i);
        assert_eq!(p.active, 0);
        assert_eq!(p.notes[0].reason, "RotationDeferred");
        assert!(p.notes[0].message.contains("anypost2 does not verify"));

        let mut young = input(1005, Some(&status), &st);
        young.rotate_request = Some("b");
        let p = plan(&young);
        assert_eq!(p.active, 0);
        assert!(p.notes[0].message.contains("less than 10s ago"));
    }

    #[test]
    fn scheduled_rotation_is_due_after_the_interval() {
        let st = stored(Some(0));
        let mut first = input(1000, None, &st);
        first.rotation_interval = Some(Duration::from_secs(500));
        let p = plan(&first);
        assert_eq!(p.next_rotation_time, Some(ts(1500)));
        let status = p.status("x-dkim", keys());
        let mut early = input(1400, Some(&status), &st);
        early.rotation_interval = Some(Duration::from_secs(500));
        assert_eq!(plan(&early).active, 0);
        let mut due = input(1500, Some(&status), &st);
        due.rotation_interval = Some(Duration::from_secs(500));
        let p = plan(&due);
        assert_eq!(p.active, 1);
        assert_eq!(p.next_rotation_time, Some(ts(2000)));
        assert_eq!(p.next_event(), Some(ts(1600)));
    }

    #[test]
    fn a_blocked_scheduled_rotation_does_not_ask_to_be_woken_at_once() {
        let st = stored(Some(0));
        let mut first = input(1000, None, &st);
        first.rotation_interval = Some(Duration::from_secs(500));
        let status = plan(&first).status("x-dkim", keys());

        // Due, but the standby's CNAME does not verify: nothing changes by
        // itself; the next check's status write wakes the domain.
        let mut unverified = input(1600, Some(&status), &st);
        unverified.rotation_interval = Some(Duration::from_secs(500));
        unverified.verified = [true, false];
        let p = plan(&unverified);
        assert_eq!(p.active, 0);
        assert!(p.notes.is_empty(), "a scheduled rotation defers silently");
        assert_eq!(p.next_event(), None);

        // Due, but the standby key is too young: wake when it is old enough.
        let mut young = input(1600, Some(&status), &st);
        young.rotation_interval = Some(Duration::from_secs(500));
        young.min_standby_age = Duration::from_secs(900);
        let p = plan(&young);
        assert_eq!(p.active, 0);
        assert_eq!(p.next_event(), Some(ts(1900)));
    }

    #[test]
    fn secret_data_has_both_keys_and_the_selector() {
        let d = secret_data(keys(), 1);
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            ["anypost1.key", "anypost2.key", "selector"]
        );
        assert_eq!(d["selector"].0, b"anypost2");
    }
}
