//! From record judgements to the domain's verdict: the first definite failure in
//! `dnsRecords` order wins; else the first resolver problem; else verified.
//! Tracking is judged alike but apart, and never part of the domain's verdict.

use super::chain::Judgement;
use super::messages;
use crate::core::api::{DnsRecord, Purpose};
use crate::core::vocab::{BySelector, FailureCode};

/// What the operator's zone holds for a domain, to compare against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expected {
    /// The operator's zone (`--zone`).
    pub zone: String,
    /// The MX host (`--mx-host`). `None` (only `check` without it): any MX counts.
    pub mx_host: Option<String>,
    /// The SPF include (`--spf-include`). `None`: any `v=spf1` record counts.
    pub spf_include: Option<String>,
    /// The tracking host (`--tracking-host`). `None`: any CNAME at the tracking
    /// target counts.
    pub tracking_host: Option<String>,
    /// Per selector, the base64 public key the DKIM record must carry. A selector
    /// without one gets no key comparison (any key counts), which `observed` says.
    pub dkim_keys: BySelector<Option<String>>,
}

/// A definite failure: its code and a message naming the real records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: FailureCode,
    pub message: String,
}

/// The verdict on a set of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checked verifies.
    Verified,
    /// A record definitely fails: the first one in `dnsRecords` order.
    Failed(Finding),
    /// No record fails for sure, but some could not be resolved (timeout,
    /// SERVFAIL, REFUSED): no evidence either way. The caller sets
    /// `Verified=Unknown` and keeps its state.
    Unknown(String),
}

impl Verdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified)
    }

    pub fn failure(&self) -> Option<&Finding> {
        match self {
            Verdict::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// The resolver problem, when the verdict is [`Verdict::Unknown`].
    pub fn transient(&self) -> Option<&str> {
        match self {
            Verdict::Unknown(why) => Some(why),
            _ => None,
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The records given, in the same order, with `state` and `observed` set.
    pub records: Vec<DnsRecord>,
    /// The domain's verdict, from the verification and DKIM records only.
    pub verdict: Verdict,
    /// The tracking record's verdict, when one was given. Never part of `verdict`.
    pub tracking: Option<Verdict>,
    /// The DMARC advice, when it was looked up. Never part of `verdict`.
    pub dmarc: Option<super::Dmarc>,
}

impl Outcome {
    /// The outcome of judging each of `records` (the judgements in the same order).
    pub fn of(records: &[DnsRecord], judged: Vec<Judgement>) -> Outcome {
        let mut out = Vec::with_capacity(records.len());
        let mut required = Verdicts::default();
        let mut tracking: Option<Verdicts> = None;
        for (record, j) in records.iter().zip(judged) {
            let v = if record.purpose == Purpose::Tracking {
                tracking.get_or_insert_with(Verdicts::default)
            } else {
                &mut required
            };
            v.add(record, &j);
            let mut record = record.clone();
            record.state = Some(j.state);
            record.observed = Some(j.observed);
            out.push(record);
        }
        Outcome {
            records: out,
            verdict: required.verdict(),
            tracking: tracking.map(Verdicts::verdict),
            dmarc: None,
        }
    }
}

/// Folds record judgements into a verdict.
#[derive(Default)]
struct Verdicts {
    failure: Option<Finding>,
    unknown: Option<String>,
    checked: usize,
}

impl Verdicts {
    fn add(&mut self, record: &DnsRecord, j: &Judgement) {
        self.checked += 1;
        if let (None, Some(p)) = (&self.failure, &j.problem) {
            self.failure = Some(Finding {
                code: messages::code(record.purpose, p),
                message: messages::message(record, p),
            });
        }
        if let (None, Some(why)) = (&self.unknown, &j.unknown) {
            self.unknown = Some(messages::unknown_message(record, why));
        }
    }

    fn verdict(self) -> Verdict {
        match (self.failure, self.unknown) {
            (Some(f), _) => Verdict::Failed(f),
            (None, Some(u)) => Verdict::Unknown(u),
            (None, None) if self.checked == 0 => Verdict::Unknown("no records to check".into()),
            (None, None) => Verdict::Verified,
        }
    }
}
