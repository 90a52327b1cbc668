//! The status a SendingDomain should have, computed purely from what reconcile
//! gathered: its previous status, its keys, whether the zone serves it, and the
//! outcome of a check if one ran.

use super::conditions::{self as cond, Desired};
use crate::core::api::{
    DkimStatus, DmarcState, DmarcStatus, DnsRecord, DomainState, Failure, Purpose, RecordState,
    SendingDomainStatus, TrackingStatus,
};
use crate::core::ports::Published;
use crate::core::verify::dmarc::{self, Dmarc};
use crate::core::verify::{Control, Finding, Outcome, Verdict};
use crate::core::vocab::{
    Block, BySelector, ConditionStatus as S, ConditionType as T, Reason, Selector,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// Everything a served domain's status is computed from.
pub struct Inputs<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub previous: &'a SendingDomainStatus,
    pub id: String,
    /// The records to publish (from the spec, without check results).
    pub records: Vec<DnsRecord>,
    pub dkim: DkimStatus,
    pub published: Published,
    pub check: Option<Outcome>,
    pub verify_request: Option<String>,
    pub verified_grace: Duration,
    pub tracking_enabled: bool,
}

/// The status a reconcile may build on: `written` if it was computed for `id`
/// (namespace, domain and identity key), else nothing. Verification (the state,
/// its times, the grace period) is only ever carried forward for the domain and
/// namespace it was earned for.
pub fn trusted<'a>(written: &'a SendingDomainStatus, id: &str) -> &'a SendingDomainStatus {
    static NONE: std::sync::LazyLock<SendingDomainStatus> =
        std::sync::LazyLock::new(SendingDomainStatus::default);
    if written.id.as_deref() == Some(id) {
        written
    } else {
        &NONE
    }
}

/// `api::Failure` for a finding; a failure keeps its start time while the domain
/// keeps failing, whatever the code.
fn failure(prev: Option<&Failure>, f: &Finding, now: Timestamp) -> Failure {
    Failure {
        code: f.code.to_string(),
        message: f.message.clone(),
        since: Some(prev.and_then(|p| p.since.clone()).unwrap_or(Time(now))),
    }
}

/// Carries the previous check's per-record results over to freshly built records
/// whose target is unchanged.
fn carry_results(fresh: &[DnsRecord], previous: &[DnsRecord]) -> Vec<DnsRecord> {
    fresh
        .iter()
        .map(|r| {
            let mut r = r.clone();
            match previous
                .iter()
                .find(|p| p.fqdn == r.fqdn && p.value == r.value && p.purpose == r.purpose)
            {
                Some(p) => {
                    r.state = p.state;
                    r.observed = p.observed.clone();
                }
                None => r.state = Some(RecordState::Unchecked),
            }
            r
        })
        .collect()
}

fn not_checked(type_: T, what: &str) -> Desired {
    Desired::new(
        type_,
        S::Unknown,
        Reason::NotChecked,
        format!("the {what} not been checked yet"),
    )
}

/// What verification says: the state, the failure, the Verified condition, the
/// check times and the records with their results.
struct Verification {
    state: DomainState,
    failure: Option<Failure>,
    condition: Desired,
    last_checked: Option<Time>,
    last_verified: Option<Time>,
    records: Vec<DnsRecord>,
}

impl Verification {
    /// From the previous status, when no check ran (or it gave no evidence).
    fn carried(i: &Inputs<'_>) -> Verification {
        let prev = i.previous;
        let condition = match Desired::carried(&prev.conditions, T::Verified) {
            Some(c) if prev.last_checked_time.is_some() => c,
            _ => not_checked(T::Verified, "CNAMEs have"),
        };
        Verification {
            state: prev.state.unwrap_or(DomainState::Pending),
            failure: prev.verification_failure.clone(),
            condition,
            last_checked: prev.last_checked_time.clone(),
            last_verified: prev.last_verified_time.clone(),
            records: carry_results(&i.records, &prev.dns_records),
        }
    }

    /// From a check's outcome: evidence either way, or none (resolver errors).
    fn checked(i: &Inputs<'_>, outcome: &Outcome) -> Verification {
        let mut v = Verification::carried(i);
        v.last_checked = Some(Time(i.now));
        match &outcome.verdict {
            Verdict::Unknown(why) => {
                v.condition =
                    Desired::new(T::Verified, S::Unknown, Reason::ResolverError, why.clone());
            }
            Verdict::Verified => {
                v.records = outcome.records.clone();
                v.state = DomainState::Verified;
                v.failure = None;
                v.last_verified = Some(Time(i.now));
                v.condition = Desired::new(
                    T::Verified,
                    S::True,
                    Reason::Verified,
                    "every required CNAME resolves to the operator's records",
                );
            }
            Verdict::Failed(f) => {
                v.records = outcome.records.clone();
                v.fail(i, f);
            }
        }
        v
    }

    /// A definite failure: a verified domain keeps its state for the grace
    /// period (counted from when the failures began), then returns to pending.
    fn fail(&mut self, i: &Inputs<'_>, f: &Finding) {
        let failure = failure(i.previous.verification_failure.as_ref(), f, i.now);
        let since = failure.since.as_ref().map(|t| t.0).unwrap_or(i.now);
        let grace_end = since
            .checked_add(SignedDuration::try_from(i.verified_grace).unwrap_or(SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        let reason = f.code.reason();
        if self.state == DomainState::Verified && i.now < grace_end {
            let message = format!(
                "{} The domain stays verified until {grace_end} unless this is fixed.",
                f.message
            );
            self.condition = Desired::new(T::Verified, S::False, reason, message);
        } else {
            self.state = DomainState::Pending;
            self.condition = Desired::new(T::Verified, S::False, reason, f.message.clone());
        }
        self.failure = Some(failure);
    }
}

/// The tracking status and its condition; `None` without tracking.
fn tracking(i: &Inputs<'_>) -> Option<(TrackingStatus, Desired)> {
    if !i.tracking_enabled {
        return None;
    }
    let prev = i.previous;
    let pending = TrackingStatus {
        state: DomainState::Pending,
        failure: None,
    };
    let carried = || {
        let status = prev.tracking.clone().unwrap_or(pending.clone());
        let condition = match Desired::carried(&prev.conditions, T::TrackingVerified) {
            Some(c) if prev.last_checked_time.is_some() && prev.tracking.is_some() => c,
            _ => not_checked(T::TrackingVerified, "tracking CNAME has"),
        };
        (status, condition)
    };
    let Some(outcome) = &i.check else {
        return Some(carried());
    };
    Some(match &outcome.tracking {
        None => carried(),
        Some(Verdict::Unknown(why)) => {
            let status = prev.tracking.clone().unwrap_or(pending);
            let condition = Desired::new(
                T::TrackingVerified,
                S::Unknown,
                Reason::ResolverError,
                why.clone(),
            );
            (status, condition)
        }
        Some(Verdict::Verified) => (
            TrackingStatus {
                state: DomainState::Verified,
                failure: None,
            },
            Desired::new(
                T::TrackingVerified,
                S::True,
                Reason::Verified,
                "the tracking CNAME resolves to the tracking host",
            ),
        ),
        Some(Verdict::Failed(f)) => {
            let prev_failure = prev.tracking.as_ref().and_then(|t| t.failure.as_ref());
            let status = TrackingStatus {
                state: DomainState::Pending,
                failure: Some(failure(prev_failure, f, i.now)),
            };
            let condition = Desired::new(
                T::TrackingVerified,
                S::False,
                f.code.reason(),
                f.message.clone(),
            );
            (status, condition)
        }
    })
}

/// The Ready condition: keys stored, records published, verified.
fn ready(published: &Published, published_msg: &str, v: &Verification) -> Desired {
    if *published != Published::Yes {
        return Desired::new(T::Ready, S::False, Reason::NotPublished, published_msg);
    }
    match (&v.state, &v.failure) {
        (DomainState::Verified, _) if v.condition.status == S::False => Desired::new(
            T::Ready,
            S::True,
            Reason::GracePeriod,
            v.condition.message.clone(),
        ),
        (DomainState::Verified, _) => Desired::new(
            T::Ready,
            S::True,
            Reason::Verified,
            "the domain is verified and can send",
        ),
        (DomainState::Pending, Some(f)) => {
            let reason = crate::core::vocab::FailureCode::parse(&f.code)
                .map(|c| c.reason())
                .unwrap_or(Reason::Pending);
            Desired::new(T::Ready, S::False, reason, f.message.clone())
        }
        (DomainState::Pending, None) => Desired::new(
            T::Ready,
            S::False,
            Reason::Pending,
            "waiting for the CNAMEs in status.dnsRecords to be published and checked",
        ),
    }
}

/// The DMARC advice and its condition: from this check's lookup, else as before.
fn dmarc_advice(i: &Inputs<'_>) -> (Option<DmarcStatus>, Desired) {
    let prev = i.previous;
    let found = i.check.as_ref().and_then(|o| o.dmarc.as_ref());
    let Some(d) = found else {
        // Carried once a check has said anything, including that the resolver
        // could not tell (which leaves no advice to carry).
        let condition = match Desired::carried(&prev.conditions, T::DmarcPublished) {
            Some(c) if prev.dmarc.is_some() || prev.last_checked_time.is_some() => c,
            _ => not_checked(T::DmarcPublished, "DMARC record has"),
        };
        return (prev.dmarc.clone(), condition);
    };
    let message = dmarc::message(d);
    let (state, status, reason, name, record, policy) = match d {
        Dmarc::Unknown(_) => {
            let c = Desired::new(
                T::DmarcPublished,
                S::Unknown,
                Reason::ResolverError,
                message,
            );
            return (prev.dmarc.clone(), c);
        }
        Dmarc::Found {
            name,
            record,
            policy,
        } => (
            DmarcState::Found,
            S::True,
            Reason::DmarcFound,
            name,
            Some(record),
            Some(policy.as_str()),
        ),
        Dmarc::Missing { name } => (
            DmarcState::Missing,
            S::False,
            Reason::DmarcMissing,
            name,
            None,
            None,
        ),
        Dmarc::Invalid { name, record, .. } => (
            DmarcState::Invalid,
            S::False,
            Reason::DmarcInvalid,
            name,
            Some(record),
            None,
        ),
    };
    let advice = DmarcStatus {
        state,
        name: name.clone(),
        record: record.cloned(),
        policy: policy.map(str::to_string),
        suggested: dmarc::suggestion(d),
    };
    (
        Some(advice),
        Desired::new(T::DmarcPublished, status, reason, message),
    )
}

/// kstatus' two conditions: Reconciling while the records are not served yet,
/// Stalled while a verified domain's records fail (only a person can fix them).
fn kstatus(published: &Desired, ready: &Desired) -> [Desired; 2] {
    let reconciling = if published.status == S::True {
        Desired::new(
            T::Reconciling,
            S::False,
            Reason::UpToDate,
            "the keys are stored and the operator's zone serves the records",
        )
    } else {
        Desired::new(
            T::Reconciling,
            S::True,
            Reason::Progressing,
            published.message.clone(),
        )
    };
    let stalled = if ready.reason == Reason::GracePeriod {
        Desired::new(
            T::Stalled,
            S::True,
            Reason::GracePeriod,
            ready.message.clone(),
        )
    } else {
        Desired::new(
            T::Stalled,
            S::False,
            Reason::UpToDate,
            "nothing waits for a person",
        )
    };
    [reconciling, stalled]
}

/// The status of a domain that has keys and records.
pub fn compute(i: Inputs<'_>) -> SendingDomainStatus {
    let prev = i.previous;
    let mut v = match &i.check {
        Some(outcome) => Verification::checked(&i, outcome),
        None => Verification::carried(&i),
    };
    // A domain that was never checked reports NotChecked even if it is pending.
    if v.last_checked.is_none() {
        v.condition = not_checked(T::Verified, "CNAMEs have");
    }
    let tracking = tracking(&i);
    let keys = Desired::new(
        T::KeysReady,
        S::True,
        Reason::KeysStored,
        format!(
            "DKIM keys are in Secret {}; selector {} signs",
            i.dkim.secret_name, i.dkim.active_selector
        ),
    );
    let published = match &i.published {
        Published::Yes => Desired::new(
            T::RecordsPublished,
            S::True,
            Reason::Published,
            "the operator's zone serves the MX, SPF and DKIM records",
        ),
        Published::No { reason, message } => {
            Desired::new(T::RecordsPublished, S::False, *reason, message.clone())
        }
        Published::Unknown { reason, message } => {
            Desired::new(T::RecordsPublished, S::False, *reason, message.clone())
        }
    };
    let ready = ready(&i.published, &published.message, &v);
    let (dmarc, dmarc_condition) = dmarc_advice(&i);
    let [reconciling, stalled] = kstatus(&published, &ready);
    let mut desired = vec![
        keys,
        published,
        v.condition,
        dmarc_condition,
        ready,
        reconciling,
        stalled,
    ];
    desired.extend(tracking.as_ref().map(|(_, c)| c.clone()));
    let now = Time(i.now);
    SendingDomainStatus {
        id: Some(i.id),
        seal: None,
        state: Some(v.state),
        verification_failure: v.failure,
        dns_records: v.records,
        dkim: Some(i.dkim),
        tracking: tracking.map(|(t, _)| t),
        dmarc,
        last_checked_time: v.last_checked,
        last_verified_time: v.last_verified,
        observed_verify_request: i
            .verify_request
            .or_else(|| prev.observed_verify_request.clone()),
        observed_generation: i.generation,
        conditions: cond::merge(&prev.conditions, &desired, i.generation, &now),
    }
}

/// The status of a domain that cannot be served (bad name, conflict, a foreign
/// Secret in the way): only `Ready=False` with the precise reason, and nothing
/// published. Anything learned earlier that no longer applies is dropped.
pub fn blocked(
    previous: &SendingDomainStatus,
    generation: Option<i64>,
    now: Timestamp,
    block: Block,
    message: &str,
) -> SendingDomainStatus {
    let desired = [
        Desired::new(T::RecordsPublished, S::False, block.reason(), message),
        Desired::new(
            T::Verified,
            S::Unknown,
            Reason::NotChecked,
            "nothing is checked while the domain is blocked",
        ),
        Desired::new(T::Ready, S::False, block.reason(), message),
        Desired::new(T::Reconciling, S::False, block.reason(), message),
        Desired::new(T::Stalled, S::True, block.reason(), message),
    ];
    SendingDomainStatus {
        state: Some(DomainState::Pending),
        observed_generation: generation,
        observed_verify_request: previous.observed_verify_request.clone(),
        conditions: cond::merge(&previous.conditions, &desired, generation, &Time(now)),
        ..Default::default()
    }
}

/// The status of a domain the operator refuses to act on for now, kept as it is
/// so that nothing published is withdrawn: only `Ready=False` (and `Stalled`)
/// with the block's reason, and for a Secret in the way `KeysReady=False` too.
/// Used while the identity key is in doubt (nothing may be re-targeted) and for a
/// verified domain whose Secret is in the way (its keys stay served for the grace
/// period).
pub fn held(
    previous: &SendingDomainStatus,
    generation: Option<i64>,
    now: Timestamp,
    block: Block,
    message: &str,
) -> SendingDomainStatus {
    let set = |type_| Desired::new(type_, S::False, block.reason(), message);
    let mut desired = vec![
        set(T::Ready),
        set(T::Reconciling),
        Desired::new(T::Stalled, S::True, block.reason(), message),
    ];
    if block == Block::SecretConflict {
        desired.push(set(T::KeysReady));
    }
    let carried = T::ALL
        .iter()
        .filter(|t| desired.iter().all(|d| d.type_ != **t))
        .filter_map(|t| Desired::carried(&previous.conditions, *t));
    desired.extend(carried.collect::<Vec<_>>());
    SendingDomainStatus {
        observed_generation: generation,
        conditions: cond::merge(&previous.conditions, &desired, generation, &Time(now)),
        ..previous.clone()
    }
}

/// When a verified domain's Secret conflict began (when `KeysReady` turned False
/// for it), or `now` if it begins now.
pub fn secret_conflict_since(previous: &SendingDomainStatus, now: Timestamp) -> Timestamp {
    cond::find(&previous.conditions, T::KeysReady)
        .filter(|c| c.status == S::False.as_str() && c.reason == Reason::SecretConflict.as_str())
        .map_or(now, |c| c.last_transition_time.0)
}

/// What a claim that does not hold its domain is computed from.
pub struct Contest<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    /// The claim's own (trusted) status.
    pub previous: &'a SendingDomainStatus,
    pub id: String,
    /// Its records, to list for its owner (from the spec, without results).
    pub records: Vec<DnsRecord>,
    /// The check of its verification record, if one ran.
    pub control: Option<Control>,
    pub verify_request: Option<String>,
    /// Why it does not hold the domain and how it can.
    pub message: String,
}

/// The status of a claim another claim holds the domain against: its id and the
/// records its owner would publish are listed, so that the owner can prove
/// control (see `core::claims`); nothing is published for it, and no keys are
/// made until it holds the domain.
pub fn contested(c: Contest<'_>) -> SendingDomainStatus {
    let mut records = carry_results(&c.records, &c.previous.dns_records);
    if let Some(control) = &c.control {
        for r in records
            .iter_mut()
            .filter(|r| r.purpose == Purpose::Verification)
        {
            r.state = Some(control.state);
            r.observed = Some(control.observed.clone());
        }
    }
    let conflict = |type_, status| Desired::new(type_, status, Reason::DomainConflict, &c.message);
    let desired = [
        Desired::new(
            T::KeysReady,
            S::False,
            Reason::DomainConflict,
            "no DKIM keys are made while another claim holds the domain",
        ),
        conflict(T::RecordsPublished, S::False),
        Desired::new(
            T::Verified,
            S::Unknown,
            Reason::NotChecked,
            "only the verification CNAME is checked while another claim holds the domain",
        ),
        conflict(T::Ready, S::False),
        conflict(T::Reconciling, S::False),
        conflict(T::Stalled, S::True),
    ];
    let checked = c.control.is_some().then_some(Time(c.now));
    SendingDomainStatus {
        id: Some(c.id),
        state: Some(DomainState::Pending),
        dns_records: records,
        last_checked_time: checked.or_else(|| c.previous.last_checked_time.clone()),
        observed_verify_request: c
            .verify_request
            .or_else(|| c.previous.observed_verify_request.clone()),
        observed_generation: c.generation,
        conditions: cond::merge(&c.previous.conditions, &desired, c.generation, &Time(c.now)),
        ..Default::default()
    }
}

/// The `anypost.com/verify` value to record as answered: only once a check has
/// run for it. A request that arrives while the zone does not serve every key yet
/// (a new domain, a standby key just replaced) stays pending and is answered by
/// the check that follows publication, instead of being marked seen unchecked.
pub fn answered_verify_request(
    value: Option<String>,
    requested: bool,
    checked: bool,
) -> Option<String> {
    value.filter(|_| requested && checked)
}

/// What `RecordsPublished` (and through it `Ready`) reports. A published domain
/// whose standby key was just replaced (after a rotation's grace period, or a lost
/// key) keeps reporting published while the zone catches up, as long as the zone
/// serves the key that signs: mail is sent and verified throughout, so neither
/// condition flips for that moment. Checks still wait for `full`: the zone must
/// serve every key in status before the customer's chain is compared with it.
pub fn shown_published(
    full: &Published,
    previous: &SendingDomainStatus,
    signing_only: impl FnOnce() -> Published,
) -> Published {
    if let Published::Unknown { reason, message } = full {
        // Nothing new is known: a published domain stays published, any other
        // keeps waiting, with the reason why nothing is known.
        return match cond::is_true(&previous.conditions, T::RecordsPublished) {
            true => Published::Yes,
            false => Published::No {
                reason: *reason,
                message: message.clone(),
            },
        };
    }
    if *full != Published::Yes
        && cond::is_true(&previous.conditions, T::RecordsPublished)
        && signing_only() == Published::Yes
    {
        Published::Yes
    } else {
        full.clone()
    }
}

/// Per selector: did its DKIM CNAME verify at the last check?
pub fn selectors_verified(records: &[DnsRecord]) -> BySelector<bool> {
    let mut out = BySelector([false; 2]);
    for r in records.iter().filter(|r| r.purpose == Purpose::Dkim) {
        if let Some(sel) = Selector::of_name(&r.value)
            && r.state == Some(RecordState::Ok)
        {
            out[sel] = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::naming::{SendingName, customer_records};
    use crate::core::vocab::FailureCode;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn records() -> Vec<DnsRecord> {
        customer_records(
            &SendingName::parse("example.com").unwrap(),
            "abcdefghijklmnop",
            "z.example",
            None,
        )
    }

    fn inputs(prev: &SendingDomainStatus, now: i64, check: Option<Outcome>) -> Inputs<'_> {
        Inputs {
            now: ts(now),
            generation: Some(1),
            previous: prev,
            id: "domain_abcdefghijklmnop".into(),
            records: records(),
            dkim: DkimStatus {
                secret_name: "x-dkim".into(),
                active_selector: "anypost1".into(),
                ..Default::default()
            },
            published: Published::Yes,
            check,
            verify_request: None,
            verified_grace: Duration::from_secs(100),
            tracking_enabled: false,
        }
    }

    fn ok_check() -> Outcome {
        let mut r = records();
        for x in &mut r {
            x.state = Some(RecordState::Ok);
        }
        Outcome {
            records: r,
            verdict: Verdict::Verified,
            tracking: None,
            dmarc: None,
        }
    }

    fn finding(code: FailureCode) -> Finding {
        Finding {
            code,
            message: format!("{code} message"),
        }
    }

    fn failing(code: FailureCode) -> Outcome {
        Outcome {
            verdict: Verdict::Failed(finding(code)),
            ..ok_check()
        }
    }

    fn condition(s: &SendingDomainStatus, t: T) -> (&str, &str) {
        let c = cond::find(&s.conditions, t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn unchecked_domain_is_pending_with_not_checked() {
        let s = compute(inputs(&Default::default(), 10, None));
        assert_eq!(s.state, Some(DomainState::Pending));
        assert_eq!(condition(&s, T::Verified), ("Unknown", "NotChecked"));
        assert_eq!(condition(&s, T::Ready), ("False", "Pending"));
        assert_eq!(condition(&s, T::KeysReady), ("True", "KeysStored"));
        assert!(
            s.dns_records
                .iter()
                .all(|r| r.state == Some(RecordState::Unchecked))
        );
    }

    #[test]
    fn verified_then_failing_keeps_state_for_the_grace_period() {
        let s1 = compute(inputs(&Default::default(), 10, Some(ok_check())));
        assert_eq!(s1.state, Some(DomainState::Verified));
        assert_eq!(condition(&s1, T::Ready), ("True", "Verified"));
        assert_eq!(s1.last_verified_time, Some(Time(ts(10))));

        let s2 = compute(inputs(
            &s1,
            50,
            Some(failing(FailureCode::ApexCnameMissing)),
        ));
        assert_eq!(s2.state, Some(DomainState::Verified));
        assert_eq!(
            s2.verification_failure.as_ref().unwrap().code,
            "apex_cname_missing"
        );
        assert_eq!(condition(&s2, T::Verified), ("False", "ApexCnameMissing"));
        assert_eq!(condition(&s2, T::Ready), ("True", "GracePeriod"));

        // Another code later: the failure's start time is kept, grace runs out.
        let s3 = compute(inputs(&s2, 149, Some(failing(FailureCode::ChainBroken))));
        assert_eq!(s3.state, Some(DomainState::Verified));
        let s4 = compute(inputs(&s3, 150, Some(failing(FailureCode::ChainBroken))));
        assert_eq!(s4.state, Some(DomainState::Pending));
        assert_eq!(
            s4.verification_failure.as_ref().unwrap().since,
            Some(Time(ts(50)))
        );
        assert_eq!(condition(&s4, T::Ready), ("False", "ChainBroken"));
    }

    #[test]
    fn resolver_errors_are_not_evidence() {
        let s1 = compute(inputs(&Default::default(), 10, Some(ok_check())));
        let transient = Outcome {
            verdict: Verdict::Unknown("timed out".into()),
            ..ok_check()
        };
        let s2 = compute(inputs(&s1, 20, Some(transient)));
        assert_eq!(s2.state, Some(DomainState::Verified));
        assert_eq!(s2.verification_failure, None);
        assert_eq!(condition(&s2, T::Verified), ("Unknown", "ResolverError"));
        assert_eq!(condition(&s2, T::Ready), ("True", "Verified"));
    }

    #[test]
    fn tracking_failure_never_blocks_ready() {
        let prev = SendingDomainStatus::default();
        let mut i = inputs(
            &prev,
            10,
            Some(Outcome {
                tracking: Some(Verdict::Failed(finding(FailureCode::TrackingCnameMissing))),
                ..ok_check()
            }),
        );
        i.tracking_enabled = true;
        let s = compute(i);
        assert_eq!(condition(&s, T::Ready), ("True", "Verified"));
        assert_eq!(condition(&s, T::TrackingVerified).0, "False");
        assert_eq!(s.tracking.unwrap().state, DomainState::Pending);
    }

    #[test]
    fn an_unresolvable_tracking_record_is_unknown_not_verified() {
        let prev = SendingDomainStatus::default();
        let mut i = inputs(
            &prev,
            10,
            Some(Outcome {
                tracking: Some(Verdict::Unknown("timed out".into())),
                ..ok_check()
            }),
        );
        i.tracking_enabled = true;
        let s = compute(i);
        assert_eq!(
            condition(&s, T::TrackingVerified),
            ("Unknown", "ResolverError")
        );
        assert_eq!(condition(&s, T::Ready), ("True", "Verified"));
        assert_eq!(s.tracking.unwrap().state, DomainState::Pending);
    }

    #[test]
    fn not_published_is_not_ready() {
        let prev = SendingDomainStatus::default();
        let mut i = inputs(&prev, 10, Some(ok_check()));
        i.published = Published::No {
            reason: Reason::Publishing,
            message: "waiting".into(),
        };
        let s = compute(i);
        assert_eq!(condition(&s, T::RecordsPublished), ("False", "Publishing"));
        assert_eq!(condition(&s, T::Ready), ("False", "NotPublished"));
    }

    #[test]
    fn a_status_earned_for_another_domain_is_not_carried_over() {
        let verified = compute(inputs(&Default::default(), 10, Some(ok_check())));
        assert_eq!(verified.state, Some(DomainState::Verified));
        // Same id: the verification stands.
        assert_eq!(trusted(&verified, "domain_abcdefghijklmnop"), &verified);
        // Another domain's (or namespace's, or identity key's) status is ignored:
        // the domain starts over, unverified, and a failing check demotes nothing.
        let foreign = trusted(&verified, "domain_qrstuvwxyz234567");
        assert_eq!(foreign, &SendingDomainStatus::default());
        let mut i = inputs(foreign, 20, Some(failing(FailureCode::ApexCnameMissing)));
        i.id = "domain_qrstuvwxyz234567".into();
        let s = compute(i);
        assert_eq!(s.state, Some(DomainState::Pending));
        assert_eq!(s.last_verified_time, None);
        assert_eq!(condition(&s, T::Ready), ("False", "ApexCnameMissing"));
        // A status without an id (a blocked domain's) carries no verification.
        assert_eq!(
            trusted(&SendingDomainStatus::default(), "domain_abcdefghijklmnop"),
            &SendingDomainStatus::default()
        );
    }

    #[test]
    fn blocked_status_names_the_reason() {
        let s = blocked(
            &Default::default(),
            Some(3),
            ts(1),
            Block::DomainConflict,
            "taken",
        );
        assert_eq!(condition(&s, T::Ready), ("False", "DomainConflict"));
        assert!(s.dns_records.is_empty() && s.id.is_none());
    }

    fn with_published(status: S) -> SendingDomainStatus {
        SendingDomainStatus {
            conditions: cond::merge(
                &[],
                &[Desired::new(
                    T::RecordsPublished,
                    status,
                    Reason::Published,
                    "",
                )],
                None,
                &Time(ts(1)),
            ),
            ..Default::default()
        }
    }

    fn publishing() -> Published {
        Published::No {
            reason: Reason::Publishing,
            message: "not yet".into(),
        }
    }

    #[test]
    fn a_verify_request_is_answered_only_by_a_check() {
        let v = || Some("2".to_string());
        assert_eq!(answered_verify_request(v(), true, true), v());
        assert_eq!(answered_verify_request(v(), true, false), None);
        assert_eq!(answered_verify_request(v(), false, true), None);
    }

    #[test]
    fn a_replaced_standby_key_does_not_unpublish_a_published_domain() {
        let prev = with_published(S::True);
        assert_eq!(
            shown_published(&publishing(), &prev, || Published::Yes),
            Published::Yes
        );
        // The signing key itself is not served: not published.
        assert_eq!(
            shown_published(&publishing(), &prev, publishing),
            publishing()
        );
    }

    #[test]
    fn when_the_backend_cannot_tell_what_status_reported_stands() {
        let unknown = Published::Unknown {
            reason: Reason::SyncFailed,
            message: "the server is out of reach".into(),
        };
        let asked = || -> Published { unreachable!("nothing else is asked") };
        assert_eq!(
            shown_published(&unknown, &with_published(S::True), asked),
            Published::Yes
        );
        for prev in [SendingDomainStatus::default(), with_published(S::False)] {
            assert_eq!(
                shown_published(&unknown, &prev, asked),
                Published::No {
                    reason: Reason::SyncFailed,
                    message: "the server is out of reach".into()
                }
            );
        }
    }

    #[test]
    fn a_domain_not_yet_published_waits_for_every_key() {
        for prev in [SendingDomainStatus::default(), with_published(S::False)] {
            assert_eq!(
                shown_published(&publishing(), &prev, || Published::Yes),
                publishing()
            );
        }
        assert_eq!(
            shown_published(&Published::Yes, &SendingDomainStatus::default(), || {
                unreachable!("not asked when every key is served")
            }),
            Published::Yes
        );
    }

    #[test]
    fn kstatus_conditions_follow_publication_and_the_grace_period() {
        let none = SendingDomainStatus::default();
        let mut i = inputs(&none, 10, None);
        i.published = publishing();
        let s = compute(i);
        assert_eq!(condition(&s, T::Reconciling), ("True", "Progressing"));
        assert_eq!(condition(&s, T::Stalled), ("False", "UpToDate"));
        // Published and waiting for the customer: the operator's part is done.
        let s1 = compute(inputs(&Default::default(), 10, None));
        assert_eq!(condition(&s1, T::Reconciling), ("False", "UpToDate"));
        assert_eq!(condition(&s1, T::Stalled), ("False", "UpToDate"));
        // Verified, then failing: only a person can fix the records.
        let s2 = compute(inputs(&s1, 20, Some(ok_check())));
        let s3 = compute(inputs(
            &s2,
            30,
            Some(failing(FailureCode::ApexCnameMissing)),
        ));
        assert_eq!(condition(&s3, T::Ready), ("True", "GracePeriod"));
        assert_eq!(condition(&s3, T::Stalled), ("True", "GracePeriod"));
        assert_eq!(condition(&s3, T::Reconciling), ("False", "UpToDate"));
        // A blocked domain is stalled with its reason, and not reconciling.
        let b = blocked(&s3, Some(2), ts(40), Block::DomainConflict, "taken");
        assert_eq!(condition(&b, T::Stalled), ("True", "DomainConflict"));
        assert_eq!(condition(&b, T::Reconciling), ("False", "DomainConflict"));
        assert!(
            b.conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
    }

    #[test]
    fn dmarc_advice_is_reported_and_never_blocks_ready() {
        let s0 = compute(inputs(&Default::default(), 10, None));
        assert_eq!(condition(&s0, T::DmarcPublished), ("Unknown", "NotChecked"));
        let missing = Outcome {
            dmarc: Some(Dmarc::Missing {
                name: "_dmarc.example.com".into(),
            }),
            ..ok_check()
        };
        let s1 = compute(inputs(&s0, 20, Some(missing)));
        assert_eq!(condition(&s1, T::DmarcPublished), ("False", "DmarcMissing"));
        assert_eq!(condition(&s1, T::Ready), ("True", "Verified"));
        let d = s1.dmarc.clone().unwrap();
        assert_eq!(d.state, DmarcState::Missing);
        assert_eq!(
            d.suggested.as_deref(),
            Some("v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com")
        );
        // No check this time: the advice stays.
        let s2 = compute(inputs(&s1, 30, None));
        assert_eq!(s2.dmarc, s1.dmarc);
        assert_eq!(condition(&s2, T::DmarcPublished), ("False", "DmarcMissing"));
        // A resolver failure keeps what was known, and says so.
        let unknown = Outcome {
            dmarc: Some(Dmarc::Unknown("timed out".into())),
            ..ok_check()
        };
        let s3 = compute(inputs(&s2, 40, Some(unknown)));
        assert_eq!(s3.dmarc, s1.dmarc);
        assert_eq!(
            condition(&s3, T::DmarcPublished),
            ("Unknown", "ResolverError")
        );
        let found = Outcome {
            dmarc: Some(Dmarc::Found {
                name: "_dmarc.example.com".into(),
                record: "v=DMARC1; p=reject".into(),
                policy: crate::core::verify::dmarc::Policy::Reject,
            }),
            ..ok_check()
        };
        let s4 = compute(inputs(&s3, 50, Some(found)));
        assert_eq!(condition(&s4, T::DmarcPublished), ("True", "DmarcFound"));
        let d = s4.dmarc.unwrap();
        assert_eq!((d.policy.as_deref(), d.suggested), (Some("reject"), None));
    }

    #[test]
    fn a_dmarc_lookup_the_resolver_could_not_answer_stays_reported_until_the_next_check() {
        let s0 = compute(inputs(&Default::default(), 10, None));
        let unknown = Outcome {
            dmarc: Some(Dmarc::Unknown("_dmarc.example.com: SERVFAIL".into())),
            ..ok_check()
        };
        let s1 = compute(inputs(&s0, 20, Some(unknown)));
        assert_eq!(s1.dmarc, None);
        assert_eq!(
            condition(&s1, T::DmarcPublished),
            ("Unknown", "ResolverError")
        );
        // A reconcile without a check changes nothing, so writes nothing.
        let s2 = compute(inputs(&s1, 30, None));
        assert_eq!(s2, s1);
    }
    #[test]
    fn a_held_status_keeps_everything_but_says_why() {
        let verified = compute(inputs(&Default::default(), 10, Some(ok_check())));
        let mut sealed = verified.clone();
        sealed.seal = Some("seal".into());
        let h = held(
            &sealed,
            Some(2),
            ts(20),
            Block::IdentityMismatch,
            "key in doubt",
        );
        assert_eq!(condition(&h, T::Ready), ("False", "IdentityMismatch"));
        assert_eq!(condition(&h, T::Stalled), ("True", "IdentityMismatch"));
        assert_eq!(condition(&h, T::KeysReady), ("True", "KeysStored"));
        assert_eq!(condition(&h, T::Verified), ("True", "Verified"));
        assert_eq!(
            (&h.id, &h.seal, &h.dkim, &h.dns_records, h.state),
            (
                &sealed.id,
                &sealed.seal,
                &sealed.dkim,
                &sealed.dns_records,
                sealed.state
            )
        );
        let h = held(
            &sealed,
            Some(2),
            ts(20),
            Block::SecretConflict,
            "in the way",
        );
        assert_eq!(condition(&h, T::KeysReady), ("False", "SecretConflict"));
        // The conflict's start is when KeysReady turned False, kept while it lasts.
        assert_eq!(secret_conflict_since(&sealed, ts(20)), ts(20));
        assert_eq!(secret_conflict_since(&h, ts(30)), ts(20));
        let again = held(&h, Some(2), ts(30), Block::SecretConflict, "in the way");
        assert_eq!(secret_conflict_since(&again, ts(40)), ts(20));
    }

    #[test]
    fn a_contested_claim_lists_its_records_and_its_proof() {
        let contest = |previous, control| Contest {
            now: ts(10),
            generation: Some(1),
            previous,
            id: "domain_abcdefghijklmnop".into(),
            records: records(),
            control,
            verify_request: None,
            message: "held by another".into(),
        };
        let none = SendingDomainStatus::default();
        let s = contested(contest(&none, None));
        assert_eq!(s.id.as_deref(), Some("domain_abcdefghijklmnop"));
        assert_eq!(s.dns_records.len(), 3);
        assert!(s.dkim.is_none() && s.last_checked_time.is_none());
        assert_eq!(condition(&s, T::Ready), ("False", "DomainConflict"));
        assert_eq!(condition(&s, T::Stalled), ("True", "DomainConflict"));
        assert_eq!(condition(&s, T::KeysReady), ("False", "DomainConflict"));
        assert_eq!(
            crate::core::trust::Strength::of(&s),
            crate::core::trust::Strength::Unproven
        );
        let proof = Control {
            state: RecordState::Ok,
            observed: "CNAME → abcdefghijklmnop.z.example".into(),
        };
        let p = contested(contest(&s, Some(proof)));
        assert_eq!(p.dns_records[0].state, Some(RecordState::Ok));
        assert_eq!(p.dns_records[1].state, Some(RecordState::Unchecked));
        assert_eq!(p.last_checked_time, Some(Time(ts(10))));
        assert_eq!(
            crate::core::trust::Strength::of(&p),
            crate::core::trust::Strength::Proven
        );
        // The result is carried until the next check.
        let later = contested(contest(&p, None));
        assert_eq!(later.dns_records[0].state, Some(RecordState::Ok));
    }
}
