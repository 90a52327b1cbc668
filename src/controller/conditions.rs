//! Conditions as Kubernetes API conventions define them: one per type,
//! CamelCase reasons, `observedGeneration`, and a `lastTransitionTime` that moves
//! only when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Keys exist in the Secret and their public halves are in status.
pub const KEYS_READY: &str = "KeysReady";
/// The operator's zone serves this domain's records.
pub const RECORDS_PUBLISHED: &str = "RecordsPublished";
/// Every required CNAME verifies.
pub const VERIFIED: &str = "Verified";
/// The tracking CNAME verifies (never affects Ready).
pub const TRACKING_VERIFIED: &str = "TrackingVerified";
/// Keys ready, records published, verified: the domain can send.
pub const READY: &str = "Ready";

/// Condition types in the order they are listed in status.
pub const ORDER: [&str; 5] = [
    KEYS_READY,
    RECORDS_PUBLISHED,
    VERIFIED,
    TRACKING_VERIFIED,
    READY,
];

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition to set, without the bookkeeping fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Builds the condition list from the desired conditions, keeping each
/// condition's `lastTransitionTime` from `previous` unless its status changed.
/// Conditions of types not in `desired` are dropped.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = desired
        .iter()
        .map(|d| {
            let prev = previous.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match prev {
                Some(p) if p.status == d.status.as_str() => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status: d.status.as_str().to_string(),
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    out.sort_by_key(|c| ORDER.iter().position(|t| *t == c.type_));
    out
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Transitions between two condition lists: `(type, new condition)` for each
/// condition whose status or reason changed or that is new.
pub fn transitions<'a>(before: &[Condition], after: &'a [Condition]) -> Vec<&'a Condition> {
    after
        .iter()
        .filter(|a| {
            find(before, &a.type_).is_none_or(|b| b.status != a.status || b.reason != a.reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let d1 = [Desired::new(READY, Status::False, "Pending", "a")];
        let c1 = merge(&[], &d1, Some(1), &t(100));
        assert_eq!(c1[0].last_transition_time, t(100));

        // Same status, other message and generation: time kept.
        let d2 = [Desired::new(READY, Status::False, "Other", "b")];
        let c2 = merge(&c1, &d2, Some(2), &t(200));
        assert_eq!(c2[0].last_transition_time, t(100));
        assert_eq!(c2[0].observed_generation, Some(2));
        assert_eq!(c2[0].reason, "Other");

        // Flip: time moves.
        let d3 = [Desired::new(READY, Status::True, "Verified", "c")];
        let c3 = merge(&c2, &d3, Some(2), &t(300));
        assert_eq!(c3[0].last_transition_time, t(300));
    }

    #[test]
    fn conditions_are_ordered_and_transitions_found() {
        let d = [
            Desired::new(READY, Status::False, "Pending", ""),
            Desired::new(KEYS_READY, Status::True, "KeysReady", ""),
        ];
        let c = merge(&[], &d, None, &t(1));
        assert_eq!(c[0].type_, KEYS_READY);
        assert_eq!(c[1].type_, READY);
        assert_eq!(transitions(&[], &c).len(), 2);
        assert!(transitions(&c, &c).is_empty());
        let d2 = [
            Desired::new(READY, Status::True, "Ready", ""),
            Desired::new(KEYS_READY, Status::True, "KeysReady", ""),
        ];
        let c2 = merge(&c, &d2, None, &t(2));
        let tr = transitions(&c, &c2);
        assert_eq!(tr.len(), 1);
        assert_eq!(tr[0].type_, READY);
    }
}
