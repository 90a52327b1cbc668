//! A SendingDomain's status as a pure function of what reconcile gathered:
//! [`conditions`] as the API conventions want them, the whole status
//! ([`compute`]), the Events a change is worth ([`events`]) and when to check
//! again ([`schedule`]).

pub mod compute;
pub mod conditions;
pub mod events;
pub mod schedule;

pub use compute::{
    Contest, Inputs, answered_verify_request, blocked, compute, contested, held,
    secret_conflict_since, selectors_verified, shown_published, trusted,
};
