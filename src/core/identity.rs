//! Which identity key to run with, decided from what the identity Secret holds,
//! the key already in use, and the ids SendingDomains carry.
//!
//! Every CNAME target a customer was ever given derives from the identity key, so
//! a key is never replaced behind the customers' backs: a fresh key is made only
//! when no SendingDomain carries an id yet, and a key that made none of the ids
//! SendingDomains carry is refused, until the original key is restored or an
//! administrator asks for the new one explicitly (the `anypost.com/rekey`
//! annotation on the Secret, whose consequence is that every customer publishes
//! new CNAMEs).

use crate::core::naming::{domain_id, token};

/// What the identity Secret holds.
#[derive(Debug, Clone, Copy)]
pub struct SecretView<'a> {
    /// The key, or why the Secret holds none that can be used.
    pub key: Result<&'a [u8], &'a str>,
    /// The administrator asked for this key whatever ids SendingDomains carry.
    pub rekey: bool,
}

/// An id a SendingDomain carries: its namespace, domain and `status.id`.
pub type CarriedId<'a> = (&'a str, &'a str, &'a str);

/// Why no identity key can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The Secret is gone, and SendingDomains carry ids made with some key.
    Missing { carried: usize },
    /// The Secret holds a key that made none of the ids SendingDomains carry.
    Mismatch { carried: usize },
    /// The Secret holds no usable key.
    Malformed(String),
}

impl Problem {
    /// What is wrong and what to do, for conditions, Events and logs.
    pub fn message(&self, secret: &str) -> String {
        match self {
            Problem::Missing { carried } => format!(
                "the identity Secret {secret} is missing and {carried} SendingDomain(s) carry ids made with its key; a new key would change every CNAME target, so none is made. Restore the Secret from its backup (data key identity.key); or, to give every domain new targets that every customer must publish again, create it with a new key and the annotation anypost.com/rekey"
            ),
            Problem::Mismatch { carried } => format!(
                "the identity Secret {secret} holds a key that made none of the ids {carried} SendingDomain(s) carry; using it would change every CNAME target. Restore the original key; or, to give every domain new targets that every customer must publish again, annotate the Secret with anypost.com/rekey"
            ),
            Problem::Malformed(why) => format!(
                "the identity Secret {secret} holds no usable key ({why}); it is never overwritten. Restore it from its backup"
            ),
        }
    }
}

/// Why the key kept in memory no longer matches the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// The Secret is gone.
    Missing,
    /// The Secret holds another key, not asked for (no `anypost.com/rekey`).
    Other,
    /// The Secret holds no usable key.
    Malformed(String),
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run with the Secret's key (the same as before, or a new one to adopt).
    Use(Vec<u8>),
    /// Keep the key in use, which the ids were made with; the Secret diverges.
    Keep(Divergence),
    /// No Secret and no ids: make a key.
    Create,
    Refuse(Problem),
}

/// Whether `key` made at least one of `ids` (or there are none).
fn made_any(key: &[u8], ids: &[CarriedId<'_>]) -> bool {
    ids.is_empty()
        || ids
            .iter()
            .any(|(ns, domain, id)| domain_id(&token(key, ns, domain)) == *id)
}

/// Decides the key. `current` is the key in use (none at start); `may_create`
/// is false for replicas that only serve DNS: they never make a key.
pub fn decide(
    current: Option<&[u8]>,
    secret: Option<SecretView<'_>>,
    ids: &[CarriedId<'_>],
    may_create: bool,
) -> Decision {
    let carried = ids.len();
    let Some(secret) = secret else {
        return match current {
            Some(_) => Decision::Keep(Divergence::Missing),
            None if ids.is_empty() && may_create => Decision::Create,
            None => Decision::Refuse(Problem::Missing { carried }),
        };
    };
    let key = match secret.key {
        Ok(key) => key,
        Err(why) => {
            return match current {
                Some(_) => Decision::Keep(Divergence::Malformed(why.to_string())),
                None => Decision::Refuse(Problem::Malformed(why.to_string())),
            };
        }
    };
    if current == Some(key) || secret.rekey || made_any(key, ids) {
        return Decision::Use(key.to_vec());
    }
    match current {
        Some(_) => Decision::Keep(Divergence::Other),
        None => Decision::Refuse(Problem::Mismatch { carried }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [1; 32];
    const K2: [u8; 32] = [2; 32];

    fn view(key: &[u8]) -> Option<SecretView<'_>> {
        Some(SecretView {
            key: Ok(key),
            rekey: false,
        })
    }

    fn ids(key: &[u8]) -> Vec<String> {
        vec![domain_id(&token(key, "acme", "example.com"))]
    }

    fn carried(ids: &[String]) -> Vec<CarriedId<'_>> {
        ids.iter()
            .map(|id| ("acme", "example.com", id.as_str()))
            .collect()
    }

    #[test]
    fn a_key_is_made_only_when_no_domain_carries_an_id() {
        assert_eq!(decide(None, None, &[], true), Decision::Create);
        assert_eq!(
            decide(None, None, &[], false),
            Decision::Refuse(Problem::Missing { carried: 0 })
        );
        let made = ids(&K1);
        assert_eq!(
            decide(None, None, &carried(&made), true),
            Decision::Refuse(Problem::Missing { carried: 1 })
        );
    }

    #[test]
    fn the_key_the_ids_were_made_with_is_used() {
        let made = ids(&K1);
        assert_eq!(
            decide(None, view(&K1), &carried(&made), false),
            Decision::Use(K1.to_vec())
        );
        assert_eq!(
            decide(None, view(&K2), &[], true),
            Decision::Use(K2.to_vec())
        );
        // Some ids are copies from elsewhere: one of its own is enough.
        let mixed = vec![made[0].clone(), ids(&K2)[0].clone()];
        assert_eq!(
            decide(None, view(&K1), &carried(&mixed), true),
            Decision::Use(K1.to_vec())
        );
    }

    #[test]
    fn another_key_is_refused_unless_asked_for() {
        let made = ids(&K1);
        assert_eq!(
            decide(None, view(&K2), &carried(&made), true),
            Decision::Refuse(Problem::Mismatch { carried: 1 })
        );
        let rekey = Some(SecretView {
            key: Ok(&K2[..]),
            rekey: true,
        });
        assert_eq!(
            decide(None, rekey, &carried(&made), true),
            Decision::Use(K2.to_vec())
        );
        assert_eq!(
            decide(Some(&K1), rekey, &carried(&made), true),
            Decision::Use(K2.to_vec())
        );
    }

    #[test]
    fn the_key_in_use_is_kept_when_the_secret_diverges() {
        let made = ids(&K1);
        let ids = carried(&made);
        assert_eq!(
            decide(Some(&K1), view(&K1), &ids, true),
            Decision::Use(K1.to_vec())
        );
        assert_eq!(
            decide(Some(&K1), None, &ids, true),
            Decision::Keep(Divergence::Missing)
        );
        assert_eq!(
            decide(Some(&K1), view(&K2), &ids, true),
            Decision::Keep(Divergence::Other)
        );
        let broken = Some(SecretView {
            key: Err("12 bytes"),
            rekey: false,
        });
        assert_eq!(
            decide(Some(&K1), broken, &ids, true),
            Decision::Keep(Divergence::Malformed("12 bytes".into()))
        );
        assert_eq!(
            decide(None, broken, &ids, true),
            Decision::Refuse(Problem::Malformed("12 bytes".into()))
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        let m = Problem::Missing { carried: 3 }.message("ns/anypost-operator-identity");
        assert!(
            m.contains("3 SendingDomain(s)") && m.contains("Restore the Secret"),
            "{m}"
        );
        assert!(m.contains("anypost.com/rekey"), "{m}");
        let m = Problem::Mismatch { carried: 1 }.message("s");
        assert!(m.contains("made none of the ids"), "{m}");
    }
}
