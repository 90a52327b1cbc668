//! The rotation plan: which keys to generate and which selector signs, decided
//! from the stored keys, the previous status and the time. Pure; see the module
//! documentation of [`super`] for the rules and why the order of writes matters.

use super::keys::{KeyMaterial, StoredKeys};
use crate::core::api::{DkimStatus, SelectorState, SelectorStatus};
use crate::core::duration;
use crate::core::vocab::{BySelector, EventReason, Selector};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

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
    pub verified: BySelector<bool>,
    pub retire_after: Duration,
    /// How long a standby key must have been published before it may sign.
    pub min_standby_age: Duration,
}

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: EventReason,
    pub message: String,
}

/// The keys and selector states to reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Selectors that need a freshly generated key.
    pub generate: Vec<Selector>,
    pub active: Selector,
    pub states: BySelector<SelectorState>,
    pub created_at: BySelector<Timestamp>,
    pub retire_at: BySelector<Option<Timestamp>>,
    pub last_rotation_time: Option<Timestamp>,
    pub next_rotation_time: Option<Timestamp>,
    pub observed_rotate_request: Option<String>,
    pub notes: Vec<Note>,
    /// The earliest future moment this plan changes by itself.
    wake_at: Option<Timestamp>,
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn rotated_note(signs: Selector, retiring: Selector, until: Option<Timestamp>) -> Note {
    Note {
        warning: false,
        reason: EventReason::Rotated,
        message: format!(
            "selector {signs} now signs; {retiring} stays published until {} for mail in flight",
            until.expect("a retiring key has a retirement time")
        ),
    }
}

/// Decides which keys to generate and which selector signs: the stored keys
/// carried over, then a lost rotation finished, a lost signing key handed over,
/// expired keys retired, and a due rotation made or deferred.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut p = Plan::carried(input);
    let lost_rotation = p.finish_lost_rotation(input);
    p.hand_over_lost_signing_key(input);
    p.retire_expired(input.now);
    if lost_rotation {
        p.last_rotation_time = Some(input.now);
        if requested(input) {
            p.observed_rotate_request = input.rotate_request.map(str::to_string);
        }
    }
    let mut standby_of_age_at = None;
    if (scheduled(input, &p) || requested(input)) && !lost_rotation {
        standby_of_age_at = p.rotate_or_defer(input);
    }
    p.next_rotation_time = input
        .rotation_interval
        .map(|i| add(p.last_rotation_time.unwrap_or(p.created_at[p.active]), i));
    // A rotation that is due but blocked is retried when something changes: a
    // check's status write (the standby's CNAME), or the standby's age, never in
    // a loop on its past due time.
    p.wake_at = p
        .retire_at
        .0
        .iter()
        .flatten()
        .copied()
        .chain(p.next_rotation_time.filter(|t| *t > input.now))
        .chain(standby_of_age_at)
        .min();
    p
}

/// The previous status's entry for `sel`.
fn previous<'a>(input: &PlanInput<'a>, sel: Selector) -> Option<&'a SelectorStatus> {
    input
        .previous
        .and_then(|p| p.selectors.iter().find(|s| s.name == sel.as_str()))
}

fn previous_active(input: &PlanInput<'_>) -> Option<Selector> {
    input
        .previous
        .and_then(|p| Selector::parse(&p.active_selector))
}

/// Whether the stored key of `sel` is the one status publishes.
fn unchanged(input: &PlanInput<'_>, sel: Selector) -> bool {
    input.stored.keys[sel]
        .as_ref()
        .zip(previous(input, sel))
        .is_some_and(|(k, p)| k.public_key == p.public_key)
}

fn requested(input: &PlanInput<'_>) -> bool {
    let seen = input
        .previous
        .and_then(|p| p.observed_rotate_request.as_deref());
    input.rotate_request.is_some() && input.rotate_request != seen
}

fn scheduled(input: &PlanInput<'_>, p: &Plan) -> bool {
    let base = p.last_rotation_time.unwrap_or(p.created_at[p.active]);
    input
        .rotation_interval
        .is_some_and(|i| add(base, i) <= input.now)
}

impl Plan {
    /// The stored keys as status knew them: their ages and retirements kept, a
    /// missing or unreadable key to be generated (with a warning if it was
    /// published).
    fn carried(input: &PlanInput<'_>) -> Plan {
        let now = input.now;
        let active = input
            .stored
            .active
            .or(previous_active(input))
            .unwrap_or(Selector::Anypost1);
        let mut p = Plan {
            generate: Vec::new(),
            active,
            states: BySelector::from_fn(|s| {
                if s == active {
                    SelectorState::Active
                } else {
                    SelectorState::Standby
                }
            }),
            created_at: BySelector([now; 2]),
            retire_at: BySelector([None; 2]),
            last_rotation_time: input
                .previous
                .and_then(|p| p.last_rotation_time.as_ref().map(|t| t.0)),
            next_rotation_time: None,
            observed_rotate_request: input
                .previous
                .and_then(|p| p.observed_rotate_request.clone()),
            notes: Vec::new(),
            wake_at: None,
        };
        for sel in Selector::BOTH {
            match (&input.stored.keys[sel], previous(input, sel)) {
                (Some(key), Some(prev)) if prev.public_key == key.public_key => {
                    p.created_at[sel] = prev.created_at.as_ref().map(|t| t.0).unwrap_or(now);
                    if sel != active && prev.state == SelectorState::Retiring {
                        p.states[sel] = SelectorState::Retiring;
                        p.retire_at[sel] = prev.retire_at.as_ref().map(|t| t.0);
                    }
                }
                (Some(_), _) => {}
                (None, prev) => {
                    p.generate.push(sel);
                    if prev.is_some() {
                        p.notes.push(Note {
                            warning: true,
                            reason: EventReason::KeyRegenerated,
                            message: format!(
                                "the private key of selector {sel} was missing or unreadable in the Secret; a new key was generated and will be published"
                            ),
                        });
                    }
                }
            }
        }
        p
    }

    /// The Secret is written before status, so a rotation whose status write was
    /// lost (the process died, or the patch failed) shows as a Secret naming the
    /// previous standby while status still names the old active selector. That
    /// rotation stands: finish it rather than rotating a second time, back to the
    /// key the MTA just stopped signing with. Returns whether it did.
    fn finish_lost_rotation(&mut self, input: &PlanInput<'_>) -> bool {
        let lost = match (input.stored.active, previous_active(input)) {
            (Some(new), Some(old)) if new != old => {
                unchanged(input, new)
                    && unchanged(input, old)
                    && previous(input, new).is_some_and(|p| p.state == SelectorState::Standby)
            }
            _ => false,
        };
        if lost {
            let old = self.active.other();
            self.states[old] = SelectorState::Retiring;
            self.retire_at[old] = Some(add(input.now, input.retire_after));
            self.notes
                .push(rotated_note(self.active, old, self.retire_at[old]));
        }
        lost
    }

    /// The signing key itself is lost (deleted from the Secret, or unreadable). A
    /// fresh key is in no DNS answer yet, nor in resolvers' caches: mail signed
    /// with it fails DKIM until it has propagated. The other selector's key is
    /// published already, so it signs instead and the fresh key becomes standby.
    fn hand_over_lost_signing_key(&mut self, input: &PlanInput<'_>) {
        let lost = self.active;
        let other = lost.other();
        if !self.generate.contains(&lost) || !unchanged(input, other) {
            return;
        }
        self.states[other] = SelectorState::Active;
        self.retire_at[other] = None;
        self.states[lost] = SelectorState::Standby;
        self.active = other;
        if let Some(n) = self
            .notes
            .iter_mut()
            .find(|n| n.reason == EventReason::KeyRegenerated)
        {
            n.message = format!(
                "the private key of selector {lost}, which signed, was missing or unreadable in the Secret; selector {other}, already published, signs instead, and a new standby key was generated for {lost}"
            );
        }
    }

    /// A retiring key whose grace period is over is replaced by a fresh standby key.
    fn retire_expired(&mut self, now: Timestamp) {
        for sel in Selector::BOTH {
            if self.states[sel] != SelectorState::Retiring
                || self.retire_at[sel].is_some_and(|t| t > now)
            {
                continue;
            }
            self.states[sel] = SelectorState::Standby;
            self.retire_at[sel] = None;
            self.created_at[sel] = now;
            if !self.generate.contains(&sel) {
                self.generate.push(sel);
            }
            self.notes.push(Note {
                warning: false,
                reason: EventReason::KeyRetired,
                message: format!(
                    "the old key of selector {sel} is no longer published; a fresh standby key replaces it"
                ),
            });
        }
    }

    /// Why the standby selector may not sign yet, if it may not; and when its age
    /// stops being the reason.
    fn rotation_blocker(&self, input: &PlanInput<'_>) -> Option<(String, Option<Timestamp>)> {
        let other = self.active.other();
        let of_age_at = add(self.created_at[other], input.min_standby_age);
        if let (SelectorState::Retiring, Some(until)) = (self.states[other], self.retire_at[other])
        {
            Some((
                format!(
                    "selector {other} still holds the previous key, published for mail in flight until {until}"
                ),
                None,
            ))
        } else if self.states[other] != SelectorState::Standby || self.generate.contains(&other) {
            Some((
                format!("selector {other} is not a published standby key yet"),
                None,
            ))
        } else if !input.verified[other] {
            Some((
                format!("the CNAME for selector {other} does not verify"),
                None,
            ))
        } else if of_age_at > input.now {
            let age = duration::format(input.min_standby_age);
            Some((
                format!("the standby key of selector {other} was published less than {age} ago"),
                Some(of_age_at),
            ))
        } else {
            None
        }
    }

    /// A due rotation: the standby signs, the active key retires; or, if the
    /// standby is not ready, a requested rotation is deferred with a warning.
    /// Returns when a rotation blocked only by the standby's age may go ahead.
    fn rotate_or_defer(&mut self, input: &PlanInput<'_>) -> Option<Timestamp> {
        let requested = requested(input);
        match self.rotation_blocker(input) {
            None => {
                let (old, new) = (self.active, self.active.other());
                self.states[old] = SelectorState::Retiring;
                self.retire_at[old] = Some(add(input.now, input.retire_after));
                self.states[new] = SelectorState::Active;
                self.notes.push(rotated_note(new, old, self.retire_at[old]));
                self.active = new;
                self.last_rotation_time = Some(input.now);
                if requested {
                    self.observed_rotate_request = input.rotate_request.map(str::to_string);
                }
                None
            }
            Some((why, of_age_at)) => {
                if requested {
                    self.observed_rotate_request = input.rotate_request.map(str::to_string);
                    self.notes.push(Note {
                        warning: true,
                        reason: EventReason::RotationDeferred,
                        message: format!(
                            "rotation requested by the anypost.com/rotate annotation was not done: {why}; set a new value to ask again"
                        ),
                    });
                }
                of_age_at
            }
        }
    }

    /// `status.dkim` for this plan with the keys now stored.
    pub fn status(&self, secret_name: &str, keys: &BySelector<KeyMaterial>) -> DkimStatus {
        DkimStatus {
            secret_name: secret_name.to_string(),
            active_selector: self.active.to_string(),
            last_rotation_time: self.last_rotation_time.map(Time),
            next_rotation_time: self.next_rotation_time.map(Time),
            observed_rotate_request: self.observed_rotate_request.clone(),
            selectors: keys
                .iter()
                .map(|(sel, key)| SelectorStatus {
                    name: sel.to_string(),
                    state: self.states[sel],
                    public_key: key.public_key.clone(),
                    key_bits: Some(key.bits),
                    created_at: Some(Time(self.created_at[sel])),
                    retire_at: self.retire_at[sel].map(Time),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dkim::keys::tests::keys;
    use Selector::{Anypost1 as A1, Anypost2 as A2};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn stored(active: Option<Selector>) -> StoredKeys {
        StoredKeys {
            keys: keys().clone().map(Some),
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
            verified: BySelector([true, true]),
            retire_after: Duration::from_secs(100),
            min_standby_age: Duration::from_secs(10),
        }
    }

    #[test]
    fn new_domain_generates_both_and_activates_the_first() {
        let st = StoredKeys::default();
        let p = plan(&input(1000, None, &st));
        assert_eq!(p.generate, vec![A1, A2]);
        assert_eq!(p.active, A1);
        assert_eq!(p.states.0, [SelectorState::Active, SelectorState::Standby]);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn existing_keys_are_never_regenerated() {
        let st = stored(Some(A2));
        let p = plan(&input(1000, None, &st));
        assert!(p.generate.is_empty());
        assert_eq!(p.active, A2);
        let status = p.status("x-dkim", keys());
        let p2 = plan(&input(2000, Some(&status), &st));
        assert!(p2.generate.is_empty());
        assert_eq!(p2.created_at, p.created_at);
    }

    #[test]
    fn a_lost_key_is_regenerated_with_a_warning() {
        let st = stored(Some(A1));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let mut lost = stored(Some(A1));
        lost.keys[A2] = None;
        let p = plan(&input(2000, Some(&status), &lost));
        assert_eq!(p.generate, vec![A2]);
        assert_eq!(p.notes[0].reason, EventReason::KeyRegenerated);
    }

    #[test]
    fn a_lost_signing_key_hands_signing_to_the_published_standby() {
        let st = stored(Some(A1));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let mut lost = stored(Some(A1));
        lost.keys[A1] = None;
        let p = plan(&input(2000, Some(&status), &lost));
        assert_eq!(p.generate, vec![A1]);
        assert_eq!(p.active, A2, "the published key signs");
        assert_eq!(p.states.0, [SelectorState::Standby, SelectorState::Active]);
        assert_eq!(p.created_at.0, [ts(2000), ts(1000)]);
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].reason, EventReason::KeyRegenerated);
        assert!(p.notes[0].warning);
        assert_eq!(
            p.notes[0].message,
            "the private key of selector anypost1, which signed, was missing or unreadable in the Secret; selector anypost2, already published, signs instead, and a new standby key was generated for anypost1"
        );

        // With both keys lost there is nothing published to fall back on.
        let none = StoredKeys {
            active: Some(A1),
            ..Default::default()
        };
        let p = plan(&input(2000, Some(&status), &none));
        assert_eq!((p.active, p.generate.clone()), (A1, vec![A1, A2]));
    }

    #[test]
    fn rotation_by_request_promotes_a_verified_standby_then_retires() {
        let st = stored(Some(A1));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let mut i = input(2000, Some(&status), &st);
        i.rotate_request = Some("now");
        let p = plan(&i);
        assert_eq!(p.active, A2);
        assert_eq!(p.states.0, [SelectorState::Retiring, SelectorState::Active]);
        assert_eq!(p.retire_at[A1], Some(ts(2100)));
        assert_eq!(p.observed_rotate_request.as_deref(), Some("now"));
        assert_eq!(p.notes[0].reason, EventReason::Rotated);

        // Asking again while anypost1 still retires is deferred, and says until when.
        let (retiring, switched) = (p.status("x-dkim", keys()), stored(Some(A2)));
        let mut again = input(2050, Some(&retiring), &switched);
        again.rotate_request = Some("again");
        let deferred = plan(&again);
        assert_eq!(deferred.active, A2);
        assert_eq!(
            deferred.notes[0].message,
            "rotation requested by the anypost.com/rotate annotation was not done: selector anypost1 still holds the previous key, published for mail in flight until 1970-01-01T00:35:00Z; set a new value to ask again"
        );

        // The same annotation value again does nothing.
        let after = p.status("x-dkim", keys());
        let mut stored_after = stored(Some(A2));
        stored_after.active = Some(A2);
        let mut i2 = input(2050, Some(&after), &stored_after);
        i2.rotate_request = Some("now");
        let p2 = plan(&i2);
        assert_eq!(p2.active, A2);
        assert!(p2.generate.is_empty());

        // After the grace period the retiring key is replaced by a fresh standby.
        let p3 = plan(&input(2100, Some(&after), &stored_after));
        assert_eq!(p3.generate, vec![A1]);
        assert_eq!(p3.states.0, [SelectorState::Standby, SelectorState::Active]);
        assert_eq!(p3.notes[0].reason, EventReason::KeyRetired);
    }

    #[test]
    fn a_rotation_whose_status_write_was_lost_is_completed_not_undone() {
        // The Secret already names anypost2 (written first), but status still
        // shows anypost1 active: the process died, or the status patch failed,
        // in between.
        let st = stored(Some(A1));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let switched = stored(Some(A2));
        let mut i = input(2000, Some(&status), &switched);
        i.rotate_request = Some("now");
        let p = plan(&i);
        assert_eq!(p.active, A2, "the rotation stands");
        assert_eq!(p.states.0, [SelectorState::Retiring, SelectorState::Active]);
        assert_eq!(p.retire_at[A1], Some(ts(2100)));
        assert_eq!(p.last_rotation_time, Some(ts(2000)));
        assert_eq!(p.observed_rotate_request.as_deref(), Some("now"));
        assert!(p.generate.is_empty());
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].reason, EventReason::Rotated);

        // Likewise for a scheduled rotation: it is not repeated.
        let mut due = input(2000, Some(&status), &switched);
        due.rotation_interval = Some(Duration::from_secs(500));
        let p = plan(&due);
        assert_eq!(p.active, A2);
        assert_eq!(p.states.0, [SelectorState::Retiring, SelectorState::Active]);
        assert_eq!(p.next_rotation_time, Some(ts(2500)));
    }

    #[test]
    fn rotation_waits_for_the_standby_cname_and_age() {
        let st = stored(Some(A1));
        let status = plan(&input(1000, None, &st)).status("x-dkim", keys());
        let mut i = input(2000, Some(&status), &st);
        i.rotate_request = Some("a");
        i.verified = BySelector([true, false]);
        let p = plan(&i);
        assert_eq!(p.active, A1);
        assert_eq!(p.notes[0].reason, EventReason::RotationDeferred);
        assert!(p.notes[0].message.contains("anypost2 does not verify"));

        let mut young = input(1005, Some(&status), &st);
        young.rotate_request = Some("b");
        let p = plan(&young);
        assert_eq!(p.active, A1);
        assert!(p.notes[0].message.contains("less than 10s ago"));
    }

    #[test]
    fn scheduled_rotation_is_due_after_the_interval() {
        let st = stored(Some(A1));
        let mut first = input(1000, None, &st);
        first.rotation_interval = Some(Duration::from_secs(500));
        let p = plan(&first);
        assert_eq!(p.next_rotation_time, Some(ts(1500)));
        let status = p.status("x-dkim", keys());
        let mut early = input(1400, Some(&status), &st);
        early.rotation_interval = Some(Duration::from_secs(500));
        assert_eq!(plan(&early).active, A1);
        let mut due = input(1500, Some(&status), &st);
        due.rotation_interval = Some(Duration::from_secs(500));
        let p = plan(&due);
        assert_eq!(p.active, A2);
        assert_eq!(p.next_rotation_time, Some(ts(2000)));
        assert_eq!(p.next_event(), Some(ts(1600)));
    }

    #[test]
    fn a_blocked_scheduled_rotation_does_not_ask_to_be_woken_at_once() {
        let st = stored(Some(A1));
        let mut first = input(1000, None, &st);
        first.rotation_interval = Some(Duration::from_secs(500));
        let status = plan(&first).status("x-dkim", keys());

        // Due, but the standby's CNAME does not verify: nothing changes by
        // itself; the next check's status write wakes the domain.
        let mut unverified = input(1600, Some(&status), &st);
        unverified.rotation_interval = Some(Duration::from_secs(500));
        unverified.verified = BySelector([true, false]);
        let p = plan(&unverified);
        assert_eq!(p.active, A1);
        assert!(p.notes.is_empty(), "a scheduled rotation defers silently");
        assert_eq!(p.next_event(), None);

        // Due, but the standby key is too young: wake when it is old enough.
        let mut young = input(1600, Some(&status), &st);
        young.rotation_interval = Some(Duration::from_secs(500));
        young.min_standby_age = Duration::from_secs(900);
        let p = plan(&young);
        assert_eq!(p.active, A1);
        assert_eq!(p.next_event(), Some(ts(1900)));
    }
}
