//! The status a SendingDomain should have, computed purely from what reconcile
//! gathered: its previous status, its keys, whether the zone serves it, and the
//! outcome of a check if one ran.

use super::conditions::{self as cond, Desired, Status};
use crate::api::{
    DkimStatus, DnsRecord, DomainState, Failure, Purpose, RecordState, SendingDomainStatus,
    TrackingStatus,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

/// The result of resolving the customer's records, as the controller uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// `dnsRecords` with `state` and `observed` filled in.
    pub records: Vec<DnsRecord>,
    /// The first failing required record, if any.
    pub failure: Option<(String, String)>,
    /// The tracking record's failure, if tracking is on and it fails.
    pub tracking_failure: Option<(String, String)>,
    /// The tracking record could not be resolved: no evidence either way.
    pub tracking_transient: Option<String>,
    /// The resolver could not give an answer (timeout, SERVFAIL, REFUSED): no
    /// evidence either way.
    pub transient: Option<String>,
}

/// Whether the zone serves the domain's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Yes,
    /// Not yet (or not any more): the reason, for the condition message.
    No {
        reason: &'static str,
        message: String,
    },
}

/// Everything a healthy domain's status is computed from.
pub struct Inputs<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub previous: &'a SendingDomainStatus,
    pub id: String,
    /// The records to publish (from the spec, without check results).
    pub records: Vec<DnsRecord>,
    pub dkim: DkimStatus,
    pub published: Published,
    pub check: Option<CheckResult>,
    pub verify_request: Option<String>,
    pub verified_grace: Duration,
    pub tracking_enabled: bool,
}

/// `apex_cname_missing` → `ApexCnameMissing`, a condition reason.
pub fn reason_for_code(code: &str) -> String {
    code.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn failure(prev: Option<&Failure>, code: &str, message: &str, now: Timestamp) -> Failure {
    // A failure keeps its start time while the domain keeps failing, whatever the code.
    let since = prev.and_then(|p| p.since.clone()).unwrap_or(Time(now));
    Failure {
        code: code.to_string(),
        message: message.to_string(),
        since: Some(since),
    }
}

/// The previous condition of `type_`, to keep as it is when no check ran.
fn carried(previous: &[Condition], type_: &'static str) -> Option<Desired> {
    cond::find(previous, type_).map(|c| {
        let status = match c.status.as_str() {
            "True" => Status::True,
            "False" => Status::False,
            _ => Status::Unknown,
        };
        Desired::new(type_, status, c.reason.clone(), c.message.clone())
    })
}

/// Carries the previous check's per-record results over to freshly built records
/// whose target is unchanged.
fn carry_results(fresh: Vec<DnsRecord>, previous: &[DnsRecord]) -> Vec<DnsRecord> {
    fresh
        .into_iter()
        .map(|mut r| {
            if let Some(p) = previous
                .iter()
                .find(|p| p.fqdn == r.fqdn && p.value == r.value && p.purpose == r.purpose)
            {
                r.state = p.state;
                r.observed = p.observed.clone();
            } else {
                r.state = Some(RecordState::Unchecked);
            }
            r
        })
        .collect()
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

/// The status of a domain that has keys and records.
pub fn compute(i: Inputs<'_>) -> SendingDomainStatus {
    let prev = i.previous;
    let now_t = Time(i.now);
    let mut st = SendingDomainStatus {
        id: Some(i.id),
        dkim: Some(i.dkim),
        observed_generation: i.generation,
        observed_verify_request: i
            .verify_request
            .or_else(|| prev.observed_verify_request.clone()),
        last_checked_time: prev.last_checked_time.clone(),
        last_verified_time: prev.last_verified_time.clone(),
        ..Default::default()
    };
    let prev_state = prev.state.unwrap_or(DomainState::Pending);
    let mut verified_cond;
    let mut state = prev_state;
    let mut fail = prev.verification_failure.clone();
    let mut tracking = prev.tracking.clone();
    let mut tracking_cond = None;

    match &i.check {
        Some(c) if c.transient.is_none() => {
            st.last_checked_time = Some(now_t.clone());
            st.dns_records = c.records.clone();
            match &c.failure {
                None => {
                    state = DomainState::Verified;
                    fail = None;
                    st.last_verified_time = Some(now_t.clone());
                    verified_cond = Desired::new(
                        cond::VERIFIED,
                        Status::True,
                        "Verified",
                        "every required CNAME resolves to the operator's records",
                    );
                }
                Some((code, message)) => {
                    let f = failure(prev.verification_failure.as_ref(), code, message, i.now);
                    let since = f.since.as_ref().map(|t| t.0).unwrap_or(i.now);
                    let grace_end = since
                        .checked_add(
                            SignedDuration::try_from(i.verified_grace)
                                .unwrap_or(SignedDuration::MAX),
                        )
                        .unwrap_or(Timestamp::MAX);
                    let reason = reason_for_code(code);
                    if prev_state == DomainState::Verified && i.now < grace_end {
                        verified_cond = Desired::new(
                            cond::VERIFIED,
                            Status::False,
                            reason,
                            format!(
                                "{message} The domain stays verified until {grace_end} unless this is fixed."
                            ),
                        );
                    } else {
                        state = DomainState::Pending;
                        verified_cond =
                            Desired::new(cond::VERIFIED, Status::False, reason, message.clone());
                    }
                    fail = Some(f);
                }
            }
            if i.tracking_enabled
                && let Some(why) = &c.tracking_transient
            {
                tracking_cond = Some(Desired::new(
                    cond::TRACKING_VERIFIED,
                    Status::Unknown,
                    "ResolverError",
                    why.clone(),
                ));
            } else if i.tracking_enabled {
                let (ts, tc) = match &c.tracking_failure {
                    None => (
                        TrackingStatus {
                            state: DomainState::Verified,
                            failure: None,
                        },
                        Desired::new(
                            cond::TRACKING_VERIFIED,
                            Status::True,
                            "Verified",
                            "the tracking CNAME resolves to the tracking host",
                        ),
                    ),
                    Some((code, message)) => (
                        TrackingStatus {
                            state: DomainState::Pending,
                            failure: Some(failure(
                                prev.tracking.as_ref().and_then(|t| t.failure.as_ref()),
                                code,
                                message,
                                i.now,
                            )),
                        },
                        Desired::new(
                            cond::TRACKING_VERIFIED,
                            Status::False,
                            reason_for_code(code),
                            message.clone(),
                        ),
                    ),
                };
                tracking = Some(ts);
                tracking_cond = Some(tc);
            }
        }
        Some(c) => {
            st.last_checked_time = Some(now_t.clone());
            st.dns_records = carry_results(i.records.clone(), &prev.dns_records);
            let msg = c.transient.clone().unwrap_or_default();
            verified_cond = Desired::new(
                cond::VERIFIED,
                Status::Unknown,
                "ResolverError",
                msg.clone(),
            );
            if i.tracking_enabled {
                tracking_cond = Some(Desired::new(
                    cond::TRACKING_VERIFIED,
                    Status::Unknown,
                    "ResolverError",
                    msg,
                ));
            }
        }
        None => {
            st.dns_records = carry_results(i.records.clone(), &prev.dns_records);
            verified_cond = match carried(&prev.conditions, cond::VERIFIED) {
                Some(c) if prev.last_checked_time.is_some() => c,
                _ => Desired::new(
                    cond::VERIFIED,
                    Status::Unknown,
                    "NotChecked",
                    "the CNAMEs have not been checked yet",
                ),
            };
            if i.tracking_enabled {
                tracking_cond = Some(match carried(&prev.conditions, cond::TRACKING_VERIFIED) {
                    Some(c) if prev.last_checked_time.is_some() && tracking.is_some() => c,
                    _ => Desired::new(
                        cond::TRACKING_VERIFIED,
                        Status::Unknown,
                        "NotChecked",
                        "the tracking CNAME has not been checked yet",
                    ),
                });
            }
        }
    }
    if !i.tracking_enabled {
        tracking = None;
    } else if tracking.is_none() {
        tracking = Some(TrackingStatus {
            state: DomainState::Pending,
            failure: None,
        });
    }
    // A domain that was never checked reports NotChecked even if it is pending.
    if st.last_checked_time.is_none() {
        verified_cond = Desired::new(
            cond::VERIFIED,
            Status::Unknown,
            "NotChecked",
            "the CNAMEs have not been checked yet",
        );
    }

    st.state = Some(state);
    st.verification_failure = fail;
    st.tracking = tracking;

    let active = st
        .dkim
        .as_ref()
        .map(|d| d.active_selector.clone())
        .unwrap_or_default();
    let secret = st
        .dkim
        .as_ref()
        .map(|d| d.secret_name.clone())
        .unwrap_or_default();
    let keys = Desired::new(
        cond::KEYS_READY,
        Status::True,
        "KeysStored",
        format!("DKIM keys are in Secret {secret}; selector {active} signs"),
    );
    let published = match &i.published {
        Published::Yes => Desired::new(
            cond::RECORDS_PUBLISHED,
            Status::True,
            "Published",
            "the operator's zone serves the MX, SPF and DKIM records",
        ),
        Published::No { reason, message } => Desired::new(
            cond::RECORDS_PUBLISHED,
            Status::False,
            *reason,
            message.clone(),
        ),
    };
    let ready = if i.published != Published::Yes {
        Desired::new(
            cond::READY,
            Status::False,
            "NotPublished",
            published.message.clone(),
        )
    } else if state == DomainState::Verified {
        if verified_cond.status == Status::False {
            Desired::new(
                cond::READY,
                Status::True,
                "GracePeriod",
                verified_cond.message.clone(),
            )
        } else {
            Desired::new(
                cond::READY,
                Status::True,
                "Verified",
                "the domain is verified and can send",
            )
        }
    } else if let Some(f) = &st.verification_failure {
        Desired::new(
            cond::READY,
            Status::False,
            reason_for_code(&f.code),
            f.message.clone(),
        )
    } else {
        Desired::new(
            cond::READY,
            Status::False,
            "Pending",
            "waiting for the CNAMEs in status.dnsRecords to be published and checked",
        )
    };
    let mut desired = vec![keys, published, verified_cond, ready];
    if let Some(t) = tracking_cond {
        desired.push(t);
    }
    st.conditions = cond::merge(&prev.conditions, &desired, i.generation, &now_t);
    st
}

/// The status of a domain that cannot be served (bad name, conflict, a foreign
/// Secret in the way): only `Ready=False` with the precise reason, and nothing
/// published. Anything learned earlier that no longer applies is dropped.
pub fn blocked(
    previous: &SendingDomainStatus,
    generation: Option<i64>,
    now: Timestamp,
    reason: &str,
    message: &str,
) -> SendingDomainStatus {
    let desired = [
        Desired::new(cond::RECORDS_PUBLISHED, Status::False, reason, message),
        Desired::new(
            cond::VERIFIED,
            Status::Unknown,
            "NotChecked",
            "nothing is checked while the domain is blocked",
        ),
        Desired::new(cond::READY, Status::False, reason, message),
    ];
    SendingDomainStatus {
        state: Some(DomainState::Pending),
        observed_generation: generation,
        observed_verify_request: previous.observed_verify_request.clone(),
        conditions: cond::merge(&previous.conditions, &desired, generation, &Time(now)),
        ..Default::default()
    }
}

/// Per selector: did its DKIM CNAME verify at the last check?
pub fn selectors_verified(records: &[DnsRecord]) -> [bool; 2] {
    let mut out = [false; 2];
    for r in records.iter().filter(|r| r.purpose == Purpose::Dkim) {
        for (i, sel) in crate::naming::SELECTORS.iter().enumerate() {
            if r.name.starts_with(&format!("{sel}._domainkey")) && r.state == Some(RecordState::Ok)
            {
                out[i] = true;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::{SendingName, customer_records};

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

    fn inputs(prev: &SendingDomainStatus, now: i64, check: Option<CheckResult>) -> Inputs<'_> {
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

    fn ok_check() -> CheckResult {
        let mut r = records();
        for x in &mut r {
            x.state = Some(RecordState::Ok);
        }
        CheckResult {
            records: r,
            failure: None,
            tracking_failure: None,
            tracking_transient: None,
            transient: None,
        }
    }

    fn failing(code: &str) -> CheckResult {
        CheckResult {
            failure: Some((code.into(), format!("{code} message"))),
            ..ok_check()
        }
    }

    fn condition<'a>(s: &'a SendingDomainStatus, t: &str) -> (&'a str, &'a str) {
        let c = cond::find(&s.conditions, t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn unchecked_domain_is_pending_with_not_checked() {
        let s = compute(inputs(&Default::default(), 10, None));
        assert_eq!(s.state, Some(DomainState::Pending));
        assert_eq!(condition(&s, cond::VERIFIED), ("Unknown", "NotChecked"));
        assert_eq!(condition(&s, cond::READY), ("False", "Pending"));
        assert_eq!(condition(&s, cond::KEYS_READY), ("True", "KeysStored"));
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
        assert_eq!(condition(&s1, cond::READY), ("True", "Verified"));
        assert_eq!(s1.last_verified_time, Some(Time(ts(10))));

        let s2 = compute(inputs(&s1, 50, Some(failing("apex_cname_missing"))));
        assert_eq!(s2.state, Some(DomainState::Verified));
        assert_eq!(
            s2.verification_failure.as_ref().unwrap().code,
            "apex_cname_missing"
        );
        assert_eq!(
            condition(&s2, cond::VERIFIED),
            ("False", "ApexCnameMissing")
        );
        assert_eq!(condition(&s2, cond::READY), ("True", "GracePeriod"));

        // Another code later: the failure's start time is kept, grace runs out.
        let s3 = compute(inputs(&s2, 149, Some(failing("chain_broken"))));
        assert_eq!(s3.state, Some(DomainState::Verified));
        let s4 = compute(inputs(&s3, 150, Some(failing("chain_broken"))));
        assert_eq!(s4.state, Some(DomainState::Pending));
        assert_eq!(
            s4.verification_failure.as_ref().unwrap().since,
            Some(Time(ts(50)))
        );
        assert_eq!(condition(&s4, cond::READY), ("False", "ChainBroken"));
    }

    #[test]
    fn resolver_errors_are_not_evidence() {
        let s1 = compute(inputs(&Default::default(), 10, Some(ok_check())));
        let transient = CheckResult {
            transient: Some("timed out".into()),
            ..failing("apex_cname_missing")
        };
        let s2 = compute(inputs(&s1, 20, Some(transient)));
        assert_eq!(s2.state, Some(DomainState::Verified));
        assert_eq!(s2.verification_failure, None);
        assert_eq!(condition(&s2, cond::VERIFIED), ("Unknown", "ResolverError"));
        assert_eq!(condition(&s2, cond::READY), ("True", "Verified"));
    }

    #[test]
    fn tracking_failure_never_blocks_ready() {
        let prev = SendingDomainStatus::default();
        let mut i = inputs(
            &prev,
            10,
            Some(CheckResult {
                tracking_failure: Some(("apex_cname_missing".into(), "m".into())),
                ..ok_check()
            }),
        );
        i.tracking_enabled = true;
        let s = compute(i);
        assert_eq!(condition(&s, cond::READY), ("True", "Verified"));
        assert_eq!(condition(&s, cond::TRACKING_VERIFIED).0, "False");
        assert_eq!(s.tracking.unwrap().state, DomainState::Pending);
    }

    #[test]
    fn an_unresolvable_tracking_record_is_unknown_not_verified() {
        let prev = SendingDomainStatus::default();
        let mut i = inputs(
            &prev,
            10,
            Some(CheckResult {
                tracking_transient: Some("timed out".into()),
                ..ok_check()
            }),
        );
        i.tracking_enabled = true;
        let s = compute(i);
        assert_eq!(
            condition(&s, cond::TRACKING_VERIFIED),
            ("Unknown", "ResolverError")
        );
        assert_eq!(condition(&s, cond::READY), ("True", "Verified"));
        assert_eq!(s.tracking.unwrap().state, DomainState::Pending);
    }

    #[test]
    fn not_published_is_not_ready() {
        let prev = SendingDomainStatus::default();
        let mut i = inputs(&prev, 10, Some(ok_check()));
        i.published = Published::No {
            reason: "Publishing",
            message: "waiting".into(),
        };
        let s = compute(i);
        assert_eq!(
            condition(&s, cond::RECORDS_PUBLISHED),
            ("False", "Publishing")
        );
        assert_eq!(condition(&s, cond::READY), ("False", "NotPublished"));
    }

    #[test]
    fn reasons_are_camel_case() {
        assert_eq!(reason_for_code("dkim_cname_mismatch"), "DkimCnameMismatch");
        assert_eq!(reason_for_code("mx_missing"), "MxMissing");
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
        let mut i = inputs(foreign, 20, Some(failing("apex_cname_missing")));
        i.id = "domain_qrstuvwxyz234567".into();
        let s = compute(i);
        assert_eq!(s.state, Some(DomainState::Pending));
        assert_eq!(s.last_verified_time, None);
        assert_eq!(condition(&s, cond::READY), ("False", "ApexCnameMissing"));
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
            "DomainConflict",
            "taken",
        );
        assert_eq!(condition(&s, cond::READY), ("False", "DomainConflict"));
        assert!(s.dns_records.is_empty() && s.id.is_none());
    }
}
