//! When a domain is checked again: pending domains back off from seconds to a
//! cap, verified ones every interval with jitter.

use crate::core::api::{DomainState, SendingDomainStatus};
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// First re-check of a pending domain; later ones back off up to the configured cap.
pub const PENDING_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// How long from `now` until `t` (zero if `t` has passed).
pub fn until(now: Timestamp, t: Timestamp) -> Duration {
    let d = t.duration_since(now);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// How long since `t`, at `now` (zero if `t` is ahead).
pub fn since(now: Timestamp, t: Timestamp) -> Duration {
    until(t, now)
}

/// The check intervals a domain is scheduled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Verified domains are re-checked this often (±10%).
    pub verify: Duration,
    /// The longest wait between checks of a pending domain.
    pub pending_max: Duration,
}

/// The wait before the next check of a pending (or failing) domain: half the time
/// it has been failing (since `created` if it never failed), between 5 s and the
/// cap. Checks thus start seconds apart and back off geometrically, forever.
pub fn pending_interval(
    previous: &SendingDomainStatus,
    created: Option<Timestamp>,
    now: Timestamp,
    cap: Duration,
) -> Duration {
    let start = previous
        .verification_failure
        .as_ref()
        .and_then(|f| f.since.as_ref().map(|t| t.0))
        .or(created)
        .unwrap_or(now);
    (since(now, start) / 2).clamp(PENDING_MIN_INTERVAL, cap.max(PENDING_MIN_INTERVAL))
}

fn is_healthy(st: &SendingDomainStatus) -> bool {
    st.state == Some(DomainState::Verified) && st.verification_failure.is_none()
}

/// Whether a check is due now, by the schedule alone.
pub fn check_due(
    previous: &SendingDomainStatus,
    created: Option<Timestamp>,
    now: Timestamp,
    intervals: Intervals,
) -> bool {
    let Some(last) = previous.last_checked_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let interval = if is_healthy(previous) {
        intervals.verify.mul_f64(0.9)
    } else {
        pending_interval(previous, created, last, intervals.pending_max)
    };
    since(now, last) >= interval
}

/// How long until the next scheduled check of a domain whose status is `st`.
/// `jitter` (0 to 1) spreads verified domains checked together over ±10% of the
/// interval.
pub fn next_check_in(
    st: &SendingDomainStatus,
    created: Option<Timestamp>,
    now: Timestamp,
    intervals: Intervals,
    jitter: f64,
) -> Duration {
    let last = st.last_checked_time.as_ref().map(|t| t.0).unwrap_or(now);
    let interval = if is_healthy(st) {
        intervals.verify.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0))
    } else {
        pending_interval(st, created, last, intervals.pending_max)
    };
    let at = last
        .checked_add(SignedDuration::try_from(interval).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    until(now, at)
}

/// Whether this reconcile checks the customer's records: when one is `due`, once
/// the zone serves every key in status (`published`): the customer's chain is
/// only compared with records the zone serves.
pub fn check_now(due: bool, published: bool) -> bool {
    due && published
}

/// How long the reconcile that first finds a domain's records published waits
/// for its first check, so that one status write says both (a new domain is
/// written twice: keys and records, then publication and the first check). A
/// check that takes longer (the verification queue is long, the resolver slow)
/// does not hold `RecordsPublished` back: it is written at once, and the check
/// follows.
pub const FIRST_CHECK_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::api::Failure;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const INTERVALS: Intervals = Intervals {
        verify: HOUR,
        pending_max: HOUR,
    };

    fn failing_since(since: i64, checked: i64) -> SendingDomainStatus {
        SendingDomainStatus {
            state: Some(DomainState::Pending),
            verification_failure: Some(Failure {
                code: "apex_cname_missing".into(),
                message: String::new(),
                since: Some(Time(ts(since))),
            }),
            last_checked_time: Some(Time(ts(checked))),
            ..Default::default()
        }
    }

    #[test]
    fn pending_checks_back_off_from_seconds_to_the_cap() {
        let created = Some(ts(0));
        let none = SendingDomainStatus::default();
        // Young: the floor.
        assert_eq!(
            pending_interval(&none, created, ts(2), HOUR),
            PENDING_MIN_INTERVAL
        );
        // Half the time it has been waiting.
        assert_eq!(
            pending_interval(&none, created, ts(100), HOUR),
            Duration::from_secs(50)
        );
        // Failing: counted from when the failures began, not from creation.
        assert_eq!(
            pending_interval(&failing_since(1000, 1000), created, ts(1400), HOUR),
            Duration::from_secs(200)
        );
        // Never beyond the cap, and a cap below the floor is the floor.
        assert_eq!(pending_interval(&none, created, ts(86_400), HOUR), HOUR);
        assert_eq!(
            pending_interval(&none, created, ts(86_400), Duration::from_secs(1)),
            PENDING_MIN_INTERVAL
        );
    }

    #[test]
    fn a_check_is_due_by_state() {
        // Never checked: due at once.
        assert!(check_due(
            &SendingDomainStatus::default(),
            None,
            ts(0),
            INTERVALS
        ));
        // Failing since 0, checked at 100: the next is due 50 s later.
        let st = failing_since(0, 100);
        assert!(!check_due(&st, Some(ts(0)), ts(149), INTERVALS));
        assert!(check_due(&st, Some(ts(0)), ts(150), INTERVALS));
        // Verified: due after 90% of the interval.
        let verified = SendingDomainStatus {
            state: Some(DomainState::Verified),
            last_checked_time: Some(Time(ts(0))),
            ..Default::default()
        };
        assert!(!check_due(&verified, None, ts(3239), INTERVALS));
        assert!(check_due(&verified, None, ts(3240), INTERVALS));
    }

    #[test]
    fn the_next_check_of_a_verified_domain_is_jittered_within_ten_percent() {
        let verified = SendingDomainStatus {
            state: Some(DomainState::Verified),
            last_checked_time: Some(Time(ts(0))),
            ..Default::default()
        };
        let at = |j| next_check_in(&verified, None, ts(0), INTERVALS, j);
        assert_eq!(at(0.0), Duration::from_secs(3240));
        assert_eq!(at(1.0), Duration::from_secs(3960));
        assert_eq!(at(7.0), Duration::from_secs(3960));
        // A pending domain is not jittered: it follows its back-off.
        let st = failing_since(0, 100);
        assert_eq!(
            next_check_in(&st, Some(ts(0)), ts(120), INTERVALS, 0.5),
            Duration::from_secs(30)
        );
    }

    /// A domain failing from its creation, checked each time its schedule says:
    /// the waits start at the floor, grow by at most half each time (the
    /// failure's age doubles no faster), reach the cap and stay there; and
    /// `check_due` agrees with `next_check_in` on when each check falls due.
    #[test]
    fn successive_pending_checks_back_off_geometrically_to_the_cap() {
        let cap = Duration::from_secs(600);
        let intervals = Intervals {
            verify: HOUR,
            pending_max: cap,
        };
        let created = Some(ts(0));
        let mut now = ts(0);
        let mut waits = Vec::new();
        for _ in 0..40 {
            let st = SendingDomainStatus {
                last_checked_time: Some(Time(now)),
                ..failing_since(0, 0)
            };
            let wait = next_check_in(&st, created, now, intervals, 0.5);
            let due = now + SignedDuration::try_from(wait).unwrap();
            let just_before = due - SignedDuration::from_millis(1);
            assert!(!check_due(&st, created, just_before, intervals));
            assert!(check_due(&st, created, due, intervals));
            waits.push(wait);
            now = due;
        }
        assert_eq!(waits[0], PENDING_MIN_INTERVAL);
        for pair in waits.windows(2) {
            assert!(pair[0] <= pair[1], "{waits:?}");
            assert!(pair[1] <= pair[0].mul_f64(1.5), "{waits:?}");
            assert!(pair[1] <= cap, "{waits:?}");
        }
        let first_at_cap = waits
            .iter()
            .position(|w| *w == cap)
            .expect("reaches the cap");
        assert!(waits[first_at_cap..].iter().all(|w| *w == cap), "{waits:?}");
        assert!(
            first_at_cap > 3,
            "backs off in steps, not at once: {waits:?}"
        );
    }

    #[test]
    fn only_served_records_are_checked() {
        assert!(check_now(true, true));
        assert!(!check_now(false, true));
        assert!(!check_now(true, false));
    }
}
