//! Conditions as Kubernetes API conventions define them: one per type, CamelCase
//! reasons, `observedGeneration`, and a `lastTransitionTime` that moves only when
//! the status flips.

use crate::core::vocab::{ConditionStatus, ConditionType, Reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition to set, without the bookkeeping fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    /// The condition of `type_` in `previous`, to keep as it is, if it is one the
    /// operator wrote (its status and reason are in the vocabulary).
    pub fn carried(previous: &[Condition], type_: ConditionType) -> Option<Desired> {
        let c = find(previous, type_)?;
        Some(Desired::new(
            type_,
            ConditionStatus::parse(&c.status)?,
            Reason::parse(&c.reason)?,
            c.message.clone(),
        ))
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
            let last_transition_time = match find(previous, d.type_) {
                Some(p) if p.status == d.status.as_str() => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status: d.status.to_string(),
                reason: d.reason.to_string(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    out.sort_by_key(|c| ConditionType::parse(&c.type_));
    out
}

/// The condition of `type_`, if present.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// The status of the condition of `type_`, if present and spelled right.
pub fn status(conditions: &[Condition], type_: ConditionType) -> Option<ConditionStatus> {
    find(conditions, type_).and_then(|c| ConditionStatus::parse(&c.status))
}

/// Whether the condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    status(conditions, type_) == Some(ConditionStatus::True)
}

/// The conditions of `after` whose status or reason differs from `before`, or
/// that are new.
pub fn transitions<'a>(before: &[Condition], after: &'a [Condition]) -> Vec<&'a Condition> {
    after
        .iter()
        .filter(|a| {
            before
                .iter()
                .find(|b| b.type_ == a.type_)
                .is_none_or(|b| b.status != a.status || b.reason != a.reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConditionStatus as S;
    use ConditionType as T;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let d1 = [Desired::new(T::Ready, S::False, Reason::Pending, "a")];
        let c1 = merge(&[], &d1, Some(1), &t(100));
        assert_eq!(c1[0].last_transition_time, t(100));

        // Same status, other message and generation: time kept.
        let d2 = [Desired::new(T::Ready, S::False, Reason::NotPublished, "b")];
        let c2 = merge(&c1, &d2, Some(2), &t(200));
        assert_eq!(c2[0].last_transition_time, t(100));
        assert_eq!(c2[0].observed_generation, Some(2));
        assert_eq!(c2[0].reason, "NotPublished");

        // Flip: time moves.
        let d3 = [Desired::new(T::Ready, S::True, Reason::Verified, "c")];
        let c3 = merge(&c2, &d3, Some(2), &t(300));
        assert_eq!(c3[0].last_transition_time, t(300));
    }

    #[test]
    fn conditions_are_ordered_and_transitions_found() {
        let d = [
            Desired::new(T::Ready, S::False, Reason::Pending, ""),
            Desired::new(T::KeysReady, S::True, Reason::KeysStored, ""),
        ];
        let c = merge(&[], &d, None, &t(1));
        assert_eq!(c[0].type_, "KeysReady");
        assert_eq!(c[1].type_, "Ready");
        assert_eq!(transitions(&[], &c).len(), 2);
        assert!(transitions(&c, &c).is_empty());
        let d2 = [
            Desired::new(T::Ready, S::True, Reason::Verified, ""),
            Desired::new(T::KeysReady, S::True, Reason::KeysStored, ""),
        ];
        let c2 = merge(&c, &d2, None, &t(2));
        let tr = transitions(&c, &c2);
        assert_eq!(tr.len(), 1);
        assert_eq!(tr[0].type_, "Ready");
        assert!(is_true(&c2, T::Ready));
        assert!(!is_true(&c, T::Ready));
    }

    #[test]
    fn only_known_conditions_are_carried() {
        let c = merge(
            &[],
            &[Desired::new(T::Verified, S::False, Reason::MxMissing, "m")],
            None,
            &t(1),
        );
        assert_eq!(
            Desired::carried(&c, T::Verified),
            Some(Desired::new(T::Verified, S::False, Reason::MxMissing, "m"))
        );
        let mut odd = c.clone();
        odd[0].reason = "SomethingElse".into();
        assert_eq!(Desired::carried(&odd, T::Verified), None);
        assert_eq!(Desired::carried(&c, T::Ready), None);
    }
}
