//! Judging one record from what the resolver showed: pure, so every rule is
//! unit-tested without DNS.
//!
//! The rules, in the order they apply (each a small named check in [`judge`]):
//! - No CNAME at the customer's name (NXDOMAIN, or NODATA for CNAME) → missing,
//!   whatever else the name holds. In particular a provider that *flattens* CNAMEs
//!   (answers the target's MX/TXT/A directly at the customer's name) is **not**
//!   verified even when the copied records match exactly: a flattened copy is a
//!   snapshot the provider refreshes on its own schedule (if at all), so it would not
//!   follow a DKIM rotation or a change of MX, and the copy carries no token, so it
//!   does not prove that this domain points at *its* records. The message says what
//!   was found and that the provider seems to flatten.
//! - A CNAME chain that never passes through the expected target → mismatch. A chain
//!   through names of the customer's own (`anypost.example.com → alias.example.net →
//!   <t>.Z`) is accepted: what matters is that resolution reaches our target.
//! - The expected target is reached but what follows is not the operator's records
//!   (NXDOMAIN, no record of the type needed, a loop, an unexpected CNAME) →
//!   chain_broken.
//! - Verification target reached: an MX to the MX host (any MX when the host is not
//!   known) else mx_missing; then a `v=spf1` TXT with `include:<spf-include>` (any
//!   `v=spf1` when not known) else spf_missing.
//! - DKIM target reached: a TXT whose `p=` is the expected key (any key when not
//!   known) else dkim_mismatch.
//! - Tracking target reached: it must hold a CNAME (to the tracking host when known).
//!
//! Resolver failures are never evidence, wherever in the chain they happen: a
//! timeout, REFUSED or SERVFAIL gives `Unknown`. Past the target that includes
//! SERVFAIL for the operator's own zone: an outage of the zone says nothing about the
//! customer's CNAMEs, and counting it would demote every verified domain once it
//! outlasted the grace period. (This overrides DESIGN §6, which listed "the zone not
//! answering" under chain_broken.)

use super::evidence::{
    Answer, End, Evidence, Found, QueryFailure, dkim_key, is_spf, spf_includes, txt_string,
};
use super::messages::{Broken, Problem, abbreviate, shorten};
use super::verdict::Expected;
use crate::core::api::{DnsRecord, Purpose, RecordState};
use crate::core::naming::normalize;
use crate::core::vocab::Selector;
use crate::core::zone::{RData, RecordType};

/// The verdict on one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub state: RecordState,
    /// Short and human: what was actually found.
    pub observed: String,
    /// What is wrong, for the failure code and message.
    pub problem: Option<Problem>,
    /// Why nothing could be concluded.
    pub unknown: Option<String>,
}

impl Judgement {
    fn ok(observed: String) -> Self {
        Judgement {
            state: RecordState::Ok,
            observed,
            problem: None,
            unknown: None,
        }
    }

    fn unknown(why: &QueryFailure) -> Self {
        Judgement {
            state: RecordState::Unknown,
            observed: format!("no answer ({why})"),
            problem: None,
            unknown: Some(why.to_string()),
        }
    }

    fn problem(state: RecordState, observed: String, problem: Problem) -> Self {
        Judgement {
            state,
            observed,
            problem: Some(problem),
            unknown: None,
        }
    }
}

/// The name a provider produces when the absolute name is typed where the relative
/// one belongs: `anypost.example.com.example.com`.
pub fn doubled_name(record: &DnsRecord) -> String {
    format!(
        "{}.{}",
        normalize(&record.fqdn),
        normalize(super::messages::apex_of(record))
    )
}

/// `CNAME → a → b`.
fn cname_observed(chain: &[String]) -> String {
    format!("CNAME → {}", chain.join(" → "))
}

/// One record and its walk, as every check sees them.
struct Case<'a> {
    record: &'a DnsRecord,
    expected: &'a Expected,
    ev: &'a Evidence,
    /// The names the CNAMEs lead to (the walk without the customer's name).
    chain: Vec<String>,
    /// The expected target, normalized.
    target: String,
}

impl Case<'_> {
    fn last(&self) -> String {
        self.chain.last().cloned().unwrap_or_default()
    }

    /// Where the chain passes through the expected target.
    fn target_at(&self) -> Option<usize> {
        self.chain.iter().position(|n| *n == self.target)
    }

    fn broken(&self, why: Broken, note: &str) -> Judgement {
        Judgement::problem(
            RecordState::ChainBroken,
            format!("{} ({note})", cname_observed(&self.chain)),
            Problem::ChainBroken {
                chain: self.chain.clone(),
                why,
            },
        )
    }

    /// A failed answer at the chain's last name allows no conclusion.
    fn failed_at_end(&self, f: &QueryFailure) -> Judgement {
        Judgement::unknown(f)
    }

    /// The records of an answer at the end of the chain, or the conclusion the
    /// answer forces.
    fn records(&self, answer: &Option<Answer>) -> Result<Vec<RData>, Box<Judgement>> {
        match answer {
            Some(Answer::Records(r)) => Ok(r.clone()),
            None | Some(Answer::NoData) => Ok(vec![]),
            Some(Answer::NxDomain) => Err(Box::new(
                self.broken(Broken::NoSuchName(self.last()), "does not exist"),
            )),
            Some(Answer::Failed(f)) => Err(Box::new(self.failed_at_end(f))),
        }
    }
}

/// Judges one record: the first check that concludes decides.
pub fn judge(record: &DnsRecord, expected: &Expected, ev: &Evidence) -> Judgement {
    let case = Case {
        record,
        expected,
        ev,
        chain: ev.walk.names.iter().skip(1).cloned().collect(),
        target: normalize(&record.value),
    };
    no_cname(&case)
        .or_else(|| off_target(&case))
        .or_else(|| tracking_hop(&case))
        .or_else(|| broken_end(&case))
        .or_else(|| mx_and_spf(&case))
        .or_else(|| dkim_key_matches(&case))
        .unwrap_or_else(|| Judgement::ok(cname_observed(&case.chain)))
}

/// No CNAME at the customer's name: missing (or nothing known, if the resolver
/// failed there).
fn no_cname(c: &Case<'_>) -> Option<Judgement> {
    if !c.chain.is_empty() {
        return None;
    }
    Some(match &c.ev.walk.end {
        End::Failed(f) => Judgement::unknown(f),
        _ => missing(c.record, c.expected, c.ev),
    })
}

/// A chain that never passes through the expected target: a mismatch.
fn off_target(c: &Case<'_>) -> Option<Judgement> {
    if c.target_at().is_some() {
        return None;
    }
    if let End::Failed(f) = &c.ev.walk.end {
        // The chain might still have reached the target: no conclusion.
        return Some(Judgement::unknown(f));
    }
    let dead_end = c.ev.walk.end == End::NxDomain;
    let mut observed = cname_observed(&c.chain);
    if dead_end {
        observed.push_str(" (does not exist)");
    }
    let zone = normalize(&c.expected.zone);
    let other_in_zone = !zone.is_empty()
        && c.chain
            .first()
            .is_some_and(|n| n.ends_with(&format!(".{zone}")));
    Some(Judgement::problem(
        RecordState::Mismatch,
        observed,
        Problem::Mismatch {
            chain: c.chain.clone(),
            dead_end,
            other_in_zone,
        },
    ))
}

/// A tracking record: our record at the target is itself a CNAME, to the
/// tracking host.
fn tracking_hop(c: &Case<'_>) -> Option<Judgement> {
    if c.record.purpose != Purpose::Tracking {
        return None;
    }
    let next = c.chain.get(c.target_at()? + 1);
    Some(match (next, &c.expected.tracking_host) {
        (Some(next), Some(host)) if normalize(host) != *next => c.broken(
            Broken::WrongHop {
                name: c.target.clone(),
                found: next.clone(),
                expected: normalize(host),
            },
            "unexpected CNAME",
        ),
        (Some(_), _) => Judgement::ok(cname_observed(&c.chain)),
        (None, _) => broken_end(c).unwrap_or_else(|| {
            c.broken(
                Broken::NoRecords {
                    name: c.last(),
                    rtype: RecordType::Cname,
                },
                "no CNAME there",
            )
        }),
    })
}

/// A walk past the target that did not end at an existing name.
fn broken_end(c: &Case<'_>) -> Option<Judgement> {
    match &c.ev.walk.end {
        End::Exists => None,
        End::NxDomain => Some(c.broken(Broken::NoSuchName(c.last()), "does not exist")),
        End::Failed(f) => Some(c.failed_at_end(f)),
        End::Loop => Some(c.broken(Broken::Loop, "loop")),
        End::TooLong => Some(c.broken(Broken::TooLong, "too many CNAMEs")),
    }
}

/// The verification target: an MX to the MX host, then an SPF record including
/// the SPF domain.
fn mx_and_spf(c: &Case<'_>) -> Option<Judgement> {
    if c.record.purpose != Purpose::Verification {
        return None;
    }
    mx_present(c).or_else(|| spf_present(c))
}

fn mx_present(c: &Case<'_>) -> Option<Judgement> {
    let mx = match c.records(&c.ev.mx) {
        Ok(r) => r,
        Err(j) => return Some(*j),
    };
    let found: Vec<String> = mx.iter().filter_map(Found::of).map(|f| f.data).collect();
    let ok = match &c.expected.mx_host {
        Some(host) => mx.iter().any(
            |r| matches!(r, RData::Mx { exchange, .. } if normalize(exchange) == normalize(host)),
        ),
        None => !mx.is_empty(),
    };
    if ok {
        return None;
    }
    let note = if found.is_empty() {
        "no MX".to_string()
    } else {
        format!("MX {}", found.join(", "))
    };
    Some(Judgement::problem(
        RecordState::MxMissing,
        format!("{}; {note}", cname_observed(&c.chain)),
        Problem::MxMissing {
            chain: c.chain.clone(),
            found,
            expected: c.expected.mx_host.as_deref().map(normalize),
        },
    ))
}

fn spf_present(c: &Case<'_>) -> Option<Judgement> {
    let txt = match c.records(&c.ev.txt) {
        Ok(r) => r,
        Err(j) => return Some(*j),
    };
    let txts: Vec<String> = txt.iter().filter_map(txt_string).collect();
    let include = c.expected.spf_include.as_deref();
    if txts.iter().any(|t| spf_includes(t, include)) {
        return None;
    }
    let spf: Vec<String> = txts.iter().filter(|t| is_spf(t)).cloned().collect();
    let note = match spf.first() {
        Some(s) => format!("TXT \"{}\"", shorten(s, 40)),
        None => "no SPF".to_string(),
    };
    Some(Judgement::problem(
        RecordState::SpfMissing,
        format!("{}; {note}", cname_observed(&c.chain)),
        Problem::SpfMissing {
            chain: c.chain.clone(),
            found: if spf.is_empty() { txts } else { spf },
            expected: include.map(normalize),
        },
    ))
}

/// The DKIM target: a TXT whose `p=` is this selector's key (any key when the
/// key is not known).
fn dkim_key_matches(c: &Case<'_>) -> Option<Judgement> {
    if c.record.purpose != Purpose::Dkim {
        return None;
    }
    let txt = match c.records(&c.ev.txt) {
        Ok(r) => r,
        Err(j) => return Some(*j),
    };
    if txt.is_empty() {
        let why = Broken::NoRecords {
            name: c.last(),
            rtype: RecordType::Txt,
        };
        return Some(c.broken(why, "no TXT there"));
    }
    let txts: Vec<String> = txt.iter().filter_map(txt_string).collect();
    let keys: Vec<String> = txts.iter().filter_map(|t| dkim_key(t)).collect();
    let want = Selector::of_name(&c.record.value).and_then(|s| c.expected.dkim_keys[s].as_deref());
    let good = match want {
        Some(w) => keys.iter().any(|k| *k == strip_spaces(w)),
        None => keys.iter().any(|k| !k.is_empty()),
    };
    let mut observed = cname_observed(&c.chain);
    if good {
        if want.is_none() {
            observed.push_str(" (key not compared)");
        }
        return Some(Judgement::ok(observed));
    }
    let found = keys.first().cloned();
    let note = match &found {
        Some(k) if k.is_empty() => "p= empty".to_string(),
        Some(k) => format!("p={}", abbreviate(k)),
        None => "no DKIM key".to_string(),
    };
    Some(Judgement::problem(
        RecordState::KeyMismatch,
        format!("{observed}; {note}"),
        Problem::KeyMismatch {
            chain: c.chain.clone(),
            found,
            found_txt: txts,
            expected: want.unwrap_or_default().to_string(),
        },
    ))
}

fn strip_spaces(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// No CNAME at the customer's name.
fn missing(record: &DnsRecord, expected: &Expected, ev: &Evidence) -> Judgement {
    let flattened = ev.instead.iter().any(|f| match (record.purpose, f.rtype) {
        (Purpose::Verification, RecordType::Mx) => match &expected.mx_host {
            Some(h) => f.data.split_whitespace().nth(1) == Some(normalize(h).as_str()),
            None => true,
        },
        (Purpose::Verification, RecordType::Txt) => is_spf(f.data.trim_matches('"')),
        (Purpose::Dkim, RecordType::Txt) => dkim_key(f.data.trim_matches('"')).is_some(),
        _ => false,
    });
    let observed = match (&ev.doubled, ev.instead.first()) {
        (Some((at, to)), _) => format!("no record (CNAME at {at} → {to})"),
        (None, Some(_)) => ev
            .instead
            .iter()
            .take(2)
            .map(Found::display)
            .collect::<Vec<_>>()
            .join(", "),
        (None, None) => "no record".to_string(),
    };
    Judgement::problem(
        RecordState::Missing,
        observed,
        Problem::Missing {
            instead: ev.instead.clone(),
            flattened,
            doubled: ev.doubled.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::verify::Walk;
    use crate::core::vocab::BySelector;

    const T: &str = "abcdefghijklmnop.dns.anypost.example";

    fn expected() -> Expected {
        Expected {
            zone: "dns.anypost.example".into(),
            mx_host: Some("mx.anypost.example".into()),
            spf_include: Some("spf.anypost.example".into()),
            tracking_host: Some("t.anypost.example".into()),
            dkim_keys: BySelector([Some("KEY1".to_string()), None]),
        }
    }

    fn rec(purpose: Purpose) -> DnsRecord {
        let (name, value) = match purpose {
            Purpose::Verification => ("anypost".to_string(), T.to_string()),
            Purpose::Dkim => (
                "anypost1._domainkey".to_string(),
                format!("anypost1._domainkey.{T}"),
            ),
            Purpose::Tracking => ("track".to_string(), format!("track.{T}")),
        };
        DnsRecord {
            type_: "CNAME".into(),
            fqdn: format!("{name}.example.com"),
            name,
            value,
            purpose,
            state: None,
            observed: None,
        }
    }

    fn walk(names: &[&str], end: End) -> Walk {
        Walk {
            names: names.iter().map(|s| s.to_string()).collect(),
            end,
        }
    }

    fn mx(host: &str) -> RData {
        RData::Mx {
            preference: 10,
            exchange: host.to_string(),
        }
    }

    fn txt(parts: &[&str]) -> RData {
        RData::Txt(parts.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    fn verification(mx_a: Answer, txt_a: Answer) -> Evidence {
        Evidence {
            walk: walk(&["anypost.example.com", T], End::Exists),
            mx: Some(mx_a),
            txt: Some(txt_a),
            ..Default::default()
        }
    }

    fn spf() -> Answer {
        Answer::Records(vec![txt(&["v=spf1 include:spf.anypost.example -all"])])
    }

    #[test]
    fn verification_ok_needs_mx_and_spf() {
        let j = judge(
            &rec(Purpose::Verification),
            &expected(),
            &verification(Answer::Records(vec![mx("mx.anypost.example")]), spf()),
        );
        assert_eq!(j.state, RecordState::Ok);
        assert_eq!(j.observed, format!("CNAME → {T}"));

        let j = judge(
            &rec(Purpose::Verification),
            &expected(),
            &verification(Answer::Records(vec![mx("other.example")]), spf()),
        );
        assert_eq!(j.state, RecordState::MxMissing);
        assert_eq!(j.observed, format!("CNAME → {T}; MX 10 other.example"));

        let j = judge(
            &rec(Purpose::Verification),
            &expected(),
            &verification(
                Answer::Records(vec![mx("MX.anypost.example")]),
                Answer::Records(vec![txt(&["v=spf1 -all"])]),
            ),
        );
        assert_eq!(j.state, RecordState::SpfMissing);
        assert_eq!(j.observed, format!("CNAME → {T}; TXT \"v=spf1 -all\""));
    }

    #[test]
    fn unknown_mx_host_accepts_any_mx_and_spf() {
        let mut e = expected();
        e.mx_host = None;
        e.spf_include = None;
        let j = judge(
            &rec(Purpose::Verification),
            &e,
            &verification(
                Answer::Records(vec![mx("other.example")]),
                Answer::Records(vec![txt(&["v=spf1 include:x -all"])]),
            ),
        );
        assert_eq!(j.state, RecordState::Ok);
    }

    #[test]
    fn no_cname_is_missing_and_flattening_is_recognised() {
        let ev = Evidence {
            walk: walk(&["anypost.example.com"], End::Exists),
            instead: vec![Found::new(RecordType::Mx, "10 mx.anypost.example")],
            ..Default::default()
        };
        let j = judge(&rec(Purpose::Verification), &expected(), &ev);
        assert_eq!(j.state, RecordState::Missing);
        assert_eq!(j.observed, "MX 10 mx.anypost.example");
        assert!(matches!(
            j.problem,
            Some(Problem::Missing {
                flattened: true,
                ..
            })
        ));

        let ev = Evidence {
            walk: walk(&["anypost.example.com"], End::Exists),
            instead: vec![Found::new(RecordType::Txt, format!("\"{T}\""))],
            ..Default::default()
        };
        let j = judge(&rec(Purpose::Verification), &expected(), &ev);
        assert!(matches!(
            j.problem,
            Some(Problem::Missing {
                flattened: false,
                ..
            })
        ));

        let ev = Evidence {
            walk: walk(&["anypost.example.com"], End::NxDomain),
            doubled: Some(("anypost.example.com.example.com".into(), T.into())),
            ..Default::default()
        };
        let j = judge(&rec(Purpose::Verification), &expected(), &ev);
        assert_eq!(
            j.observed,
            format!("no record (CNAME at anypost.example.com.example.com → {T})")
        );
    }

    #[test]
    fn flattening_is_recognised_per_purpose() {
        let flat = |purpose, found: Found| {
            let ev = Evidence {
                walk: walk(&["x.example.com"], End::Exists),
                instead: vec![found],
                ..Default::default()
            };
            match judge(&rec(purpose), &expected(), &ev).problem {
                Some(Problem::Missing { flattened, .. }) => flattened,
                p => panic!("{p:?}"),
            }
        };
        assert!(flat(
            Purpose::Dkim,
            Found::new(RecordType::Txt, "\"v=DKIM1; k=rsa; p=KEY1\"")
        ));
        assert!(flat(
            Purpose::Verification,
            Found::new(
                RecordType::Txt,
                "\"v=spf1 include:spf.anypost.example -all\""
            )
        ));
        assert!(!flat(
            Purpose::Verification,
            Found::new(RecordType::Mx, "10 mail.example.com")
        ));
        // An address at the tracking name may be a proxy; the A hint covers it.
        assert!(!flat(
            Purpose::Tracking,
            Found::new(RecordType::A, "192.0.2.1")
        ));
        assert!(!flat(
            Purpose::Dkim,
            Found::new(RecordType::Txt, "\"hello\"")
        ));
    }

    #[test]
    fn wrong_target_is_a_mismatch_and_a_detour_is_fine() {
        let ev = Evidence {
            walk: walk(&["anypost.example.com", "x.example.net"], End::NxDomain),
            ..Default::default()
        };
        let j = judge(&rec(Purpose::Verification), &expected(), &ev);
        assert_eq!(j.state, RecordState::Mismatch);
        assert_eq!(j.observed, "CNAME → x.example.net (does not exist)");

        let mut ev = verification(Answer::Records(vec![mx("mx.anypost.example")]), spf());
        ev.walk = walk(
            &["anypost.example.com", "alias.example.net", T],
            End::Exists,
        );
        let j = judge(&rec(Purpose::Verification), &expected(), &ev);
        assert_eq!(j.state, RecordState::Ok);
        assert_eq!(j.observed, format!("CNAME → alias.example.net → {T}"));
    }

    #[test]
    fn chain_broken_past_the_target() {
        let ev = Evidence {
            walk: walk(&["anypost.example.com", T], End::NxDomain),
            ..Default::default()
        };
        let j = judge(&rec(Purpose::Verification), &expected(), &ev);
        assert_eq!(j.state, RecordState::ChainBroken);
        assert_eq!(j.observed, format!("CNAME → {T} (does not exist)"));

        let ev = Evidence {
            walk: walk(
                &["anypost.example.com", T, "anypost.example.com"],
                End::Loop,
            ),
            ..Default::default()
        };
        assert_eq!(
            judge(&rec(Purpose::Verification), &expected(), &ev).state,
            RecordState::ChainBroken
        );
    }

    /// SERVFAIL past the target is the operator's own zone not answering (an
    /// outage, a broken delegation): it says nothing about the customer's CNAMEs,
    /// so it must never count against them, nor demote a verified domain.
    #[test]
    fn servfail_past_the_target_is_unknown_not_chain_broken() {
        let servfail = || Answer::Failed(QueryFailure::ServFail);
        let at_target = |end| Evidence {
            walk: walk(&["anypost.example.com", T], end),
            ..Default::default()
        };
        let dkim = Evidence {
            walk: walk(
                &[
                    "anypost1._domainkey.example.com",
                    &format!("anypost1._domainkey.{T}"),
                ],
                End::Exists,
            ),
            txt: Some(servfail()),
            ..Default::default()
        };
        let tracking = Evidence {
            walk: walk(
                &["track.example.com", &format!("track.{T}")],
                End::Failed(QueryFailure::ServFail),
            ),
            ..Default::default()
        };
        for (purpose, ev) in [
            (
                Purpose::Verification,
                at_target(End::Failed(QueryFailure::ServFail)),
            ),
            (Purpose::Verification, verification(servfail(), spf())),
            (
                Purpose::Verification,
                verification(Answer::Records(vec![mx("mx.anypost.example")]), servfail()),
            ),
            (Purpose::Dkim, dkim),
            (Purpose::Tracking, tracking),
        ] {
            let j = judge(&rec(purpose), &expected(), &ev);
            assert_eq!(j.state, RecordState::Unknown, "{ev:?}");
            assert_eq!(j.problem, None);
            assert_eq!(j.unknown.as_deref(), Some("SERVFAIL"));
            assert_eq!(j.observed, "no answer (SERVFAIL)");
        }
    }

    #[test]
    fn resolver_failures_are_unknown() {
        for ev in [
            Evidence {
                walk: walk(
                    &["anypost.example.com"],
                    End::Failed(QueryFailure::ServFail),
                ),
                ..Default::default()
            },
            Evidence {
                walk: walk(
                    &["anypost.example.com", T],
                    End::Failed(QueryFailure::Timeout),
                ),
                ..Default::default()
            },
            Evidence {
                walk: walk(
                    &["anypost.example.com", "x.example.net"],
                    End::Failed(QueryFailure::ServFail),
                ),
                ..Default::default()
            },
            verification(Answer::Failed(QueryFailure::Timeout), spf()),
        ] {
            let j = judge(&rec(Purpose::Verification), &expected(), &ev);
            assert_eq!(j.state, RecordState::Unknown, "{ev:?}");
            assert!(j.problem.is_none());
        }
    }

    #[test]
    fn dkim_key_compare_joins_strings_and_ignores_spaces() {
        let dkim = |answer| Evidence {
            walk: walk(
                &[
                    "anypost1._domainkey.example.com",
                    &format!("anypost1._domainkey.{T}"),
                ],
                End::Exists,
            ),
            txt: Some(answer),
            ..Default::default()
        };
        let j = judge(
            &rec(Purpose::Dkim),
            &expected(),
            &dkim(Answer::Records(vec![txt(&["v=DKIM1; k=rsa; p=KE", "Y1"])])),
        );
        assert_eq!(j.state, RecordState::Ok);
        let j = judge(
            &rec(Purpose::Dkim),
            &expected(),
            &dkim(Answer::Records(vec![txt(&["v=DKIM1; k=rsa; p=OTHER"])])),
        );
        assert_eq!(j.state, RecordState::KeyMismatch);
        assert_eq!(
            j.observed,
            format!("CNAME → anypost1._domainkey.{T}; p=OTHER")
        );
        let j = judge(&rec(Purpose::Dkim), &expected(), &dkim(Answer::NoData));
        assert_eq!(j.state, RecordState::ChainBroken);

        let mut e = expected();
        e.dkim_keys = BySelector::default();
        let j = judge(
            &rec(Purpose::Dkim),
            &e,
            &dkim(Answer::Records(vec![txt(&["v=DKIM1; p=ANY"])])),
        );
        assert_eq!(j.state, RecordState::Ok);
        assert!(j.observed.ends_with("(key not compared)"));
    }

    #[test]
    fn tracking_needs_the_operator_cname() {
        let t = format!("track.{T}");
        let ev = |names: Vec<&str>, end| Evidence {
            walk: walk(&names, end),
            ..Default::default()
        };
        let j = judge(
            &rec(Purpose::Tracking),
            &expected(),
            &ev(
                vec!["track.example.com", &t, "t.anypost.example"],
                End::Exists,
            ),
        );
        assert_eq!(j.state, RecordState::Ok);
        let j = judge(
            &rec(Purpose::Tracking),
            &expected(),
            &ev(vec!["track.example.com", &t], End::NxDomain),
        );
        assert_eq!(j.state, RecordState::ChainBroken);
        let j = judge(
            &rec(Purpose::Tracking),
            &expected(),
            &ev(
                vec!["track.example.com", &t, "elsewhere.example"],
                End::Exists,
            ),
        );
        assert_eq!(j.state, RecordState::ChainBroken);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn end() -> impl Strategy<Value = End> {
            prop_oneof![
                Just(End::Exists),
                Just(End::NxDomain),
                Just(End::Loop),
                Just(End::TooLong),
                Just(End::Failed(QueryFailure::ServFail)),
                Just(End::Failed(QueryFailure::Timeout)),
            ]
        }

        fn answer() -> impl Strategy<Value = Option<Answer>> {
            prop_oneof![
                Just(None),
                Just(Some(Answer::NoData)),
                Just(Some(Answer::NxDomain)),
                Just(Some(Answer::Failed(QueryFailure::ServFail))),
                Just(Some(Answer::Records(vec![mx("mx.anypost.example")]))),
                Just(Some(Answer::Records(vec![txt(&[
                    "v=spf1 include:spf.anypost.example -all"
                ])]))),
                Just(Some(Answer::Records(vec![txt(&["v=DKIM1; p=KEY1"])]))),
            ]
        }

        fn purpose() -> impl Strategy<Value = Purpose> {
            prop_oneof![
                Just(Purpose::Verification),
                Just(Purpose::Dkim),
                Just(Purpose::Tracking)
            ]
        }

        proptest! {
            /// Whatever the resolver showed: a problem exactly when the state is a
            /// failure, `Ok` only when the chain passes through the target, missing
            /// exactly when there is no CNAME at all, and no conclusion drawn from a
            /// failure at the customer's own name.
            #[test]
            fn judgements_are_consistent(
                purpose in purpose(),
                hops in proptest::collection::vec(0usize..4, 0..5),
                end in end(),
                mx_a in answer(),
                txt_a in answer(),
            ) {
                let r = rec(purpose);
                let pool = [
                    r.value.clone(),
                    "alias.example.net".to_string(),
                    "t.anypost.example".to_string(),
                    format!("other.{T}"),
                ];
                let mut names = vec![r.fqdn.clone()];
                names.extend(hops.iter().map(|&i| pool[i].clone()));
                let ev = Evidence {
                    walk: Walk { names: names.clone(), end: end.clone() },
                    mx: mx_a,
                    txt: txt_a,
                    ..Default::default()
                };
                let j = judge(&r, &expected(), &ev);
                let failing = !matches!(j.state, RecordState::Ok | RecordState::Unknown);
                prop_assert_eq!(j.problem.is_some(), failing);
                prop_assert_eq!(j.unknown.is_some(), j.state == RecordState::Unknown);
                prop_assert!(!j.observed.is_empty());
                if j.state == RecordState::Ok {
                    prop_assert!(names[1..].contains(&r.value));
                }
                if names.len() == 1 {
                    let expect = if matches!(end, End::Failed(_)) {
                        RecordState::Unknown
                    } else {
                        RecordState::Missing
                    };
                    prop_assert_eq!(j.state, expect);
                }
                if let Some(p) = &j.problem {
                    let m = crate::core::verify::messages::message(&r, p);
                    prop_assert!(m.contains(&r.fqdn) && m.ends_with('.'), "{}", m);
                }
            }
        }
    }

    #[test]
    fn parsing_helpers() {
        assert_eq!(dkim_key("v=DKIM1; k=rsa; p=AB CD"), Some("ABCD".into()));
        assert_eq!(dkim_key("v=DKIM1; k=rsa"), None);
        assert!(spf_includes(
            "v=spf1 include:SPF.x.example. -all",
            Some("spf.x.example")
        ));
        assert!(!spf_includes("v=spf10 include:a", None));
        assert_eq!(
            doubled_name(&rec(Purpose::Verification)),
            "anypost.example.com.example.com"
        );
        assert_eq!(
            Selector::of_name(&rec(Purpose::Dkim).value),
            Some(Selector::Anypost1)
        );
    }
}
