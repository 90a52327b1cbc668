//! The Events a status change is worth: state transitions and condition flips,
//! never every check.

use super::conditions;
use crate::core::api::{DomainState, SendingDomainStatus};
use crate::core::vocab::{ConditionStatus, ConditionType, EventReason, Reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// An Event to publish about a SendingDomain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: EventReason,
    pub message: String,
}

impl Event {
    fn new(warning: bool, reason: EventReason, message: impl Into<String>) -> Self {
        Event {
            warning,
            reason,
            message: message.into(),
        }
    }
}

/// The Events for the change from `old` to `new`.
pub fn transitions(old: &SendingDomainStatus, new: &SendingDomainStatus) -> Vec<Event> {
    let mut out = Vec::new();
    out.extend(state_change(old, new));
    for c in conditions::transitions(&old.conditions, &new.conditions) {
        let (Some(type_), Some(status)) = (
            ConditionType::parse(&c.type_),
            ConditionStatus::parse(&c.status),
        ) else {
            continue;
        };
        out.extend(flip(type_, status, c, new));
    }
    out
}

fn state_change(old: &SendingDomainStatus, new: &SendingDomainStatus) -> Option<Event> {
    let state = |s: &SendingDomainStatus| s.state.unwrap_or(DomainState::Pending);
    match (state(old), state(new)) {
        (DomainState::Pending, DomainState::Verified) => Some(Event::new(
            false,
            EventReason::Verified,
            "every required CNAME verifies: the domain can send",
        )),
        (DomainState::Verified, DomainState::Pending) => {
            let why = new
                .verification_failure
                .as_ref()
                .map(|f| f.message.as_str())
                .unwrap_or_default();
            Some(Event::new(
                true,
                EventReason::VerificationLost,
                format!("the grace period ended and the domain is pending again: {why}"),
            ))
        }
        _ => None,
    }
}

/// The Event for one condition whose status or reason changed, if it is worth one.
fn flip(
    type_: ConditionType,
    status: ConditionStatus,
    c: &Condition,
    new: &SendingDomainStatus,
) -> Option<Event> {
    use ConditionStatus::{False, Unknown};
    let blocked = Reason::parse(&c.reason).and_then(Reason::block);
    match (type_, status) {
        (ConditionType::Verified, False) => {
            let reason = if new.state == Some(DomainState::Verified) {
                EventReason::RecordsFailing
            } else {
                EventReason::VerificationFailing
            };
            Some(Event::new(true, reason, c.message.clone()))
        }
        (ConditionType::Ready, False) if blocked.is_some() => Some(Event::new(
            true,
            EventReason::Blocked,
            format!("{}: {}", c.reason, c.message),
        )),
        (ConditionType::TrackingVerified, Unknown) => None,
        (ConditionType::TrackingVerified, status) => {
            let warning = status == False;
            let reason = if warning {
                EventReason::TrackingFailing
            } else {
                EventReason::TrackingVerified
            };
            Some(Event::new(warning, reason, c.message.clone()))
        }
        (ConditionType::RecordsPublished, False)
            if blocked.is_none() && c.reason != Reason::Publishing.as_str() =>
        {
            Some(Event::new(
                true,
                EventReason::PublishFailed,
                c.message.clone(),
            ))
        }
        _ => None,
    }
}
