//! Judging one record from what the resolver showed: pure, so every rule is
//! unit-tested without DNS.
//!
//! The rules, in the order they apply:
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
//!   (NXDOMAIN, no record of the type needed, the zone's servers not answering, a
//!   loop, an unexpected CNAME) → chain_broken.
//! - Verification target reached: an MX to the MX host (any MX when the host is not
//!   known) else mx_missing; then a `v=spf1` TXT with `include:<spf-include>` (any
//!   `v=spf1` when not known) else spf_missing.
//! - DKIM target reached: a TXT whose `p=` is the expected key (any key when not
//!   known) else dkim_mismatch.
//! - Tracking target reached: it must hold a CNAME (to the tracking host when known).
//!
//! Resolver failures are never evidence: a failure before the chain reaches our
//! target gives `Unknown`; past it, SERVFAIL means our zone's servers did not answer
//! (chain_broken) while a timeout or REFUSED from the resolver itself stays `Unknown`.

use super::Expected;
use super::messages::{Broken, Found, Problem, shorten};
use super::resolve::{Answer, QueryFailure};
use crate::api::{DnsRecord, Purpose, RecordState};
use hickory_resolver::proto::rr::RData;

/// Most CNAMEs followed from the customer's name.
pub(crate) const MAX_HOPS: usize = 8;

/// The CNAME chain as walked from the customer's name, one query per hop.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Walk {
    /// `names[0]` is the customer's name; each next one the CNAME target of the
    /// previous. Lower case, no trailing dot.
    pub names: Vec<String>,
    /// How the walk ended at the last name.
    pub end: End,
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum End {
    /// The last name exists and holds no CNAME.
    Exists,
    /// The last name does not exist.
    NxDomain,
    /// No usable answer for the last name.
    Failed(QueryFailure),
    /// The last name's CNAME points back into the chain.
    Loop,
    /// More than [`MAX_HOPS`] CNAMEs.
    TooLong,
}

/// Everything looked up for one record.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Evidence {
    pub walk: Walk,
    /// When the customer's name holds no CNAME: what it holds instead.
    pub instead: Vec<Found>,
    /// A CNAME at the doubled name and its target.
    pub doubled: Option<(String, String)>,
    /// MX at the end of the chain (verification).
    pub mx: Option<Answer>,
    /// TXT at the end of the chain (verification, DKIM).
    pub txt: Option<Answer>,
}

impl Default for Walk {
    fn default() -> Self {
        Walk {
            names: vec![],
            end: End::NxDomain,
        }
    }
}

/// The verdict on one record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judgement {
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

/// Lower case, without the trailing dot: how names are compared.
pub(crate) fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The name a provider produces when the absolute name is typed where the relative
/// one belongs: `anypost.example.com.example.com`.
pub(crate) fn doubled_name(record: &DnsRecord) -> String {
    format!(
        "{}.{}",
        norm(&record.fqdn),
        norm(super::messages::apex_of(record))
    )
}

/// The selector a DKIM record is for: the first label of its target.
pub(crate) fn selector_of(record: &DnsRecord) -> &str {
    record.value.split('.').next().unwrap_or_default()
}

/// A TXT record's character-strings joined, as SPF and DKIM read them.
pub(crate) fn txt_string(rdata: &RData) -> Option<String> {
    match rdata {
        RData::TXT(txt) => Some(
            txt.txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect::<String>(),
        ),
        _ => None,
    }
}

/// A record as found, for `observed` and messages.
pub(crate) fn found(rdata: &RData) -> Option<Found> {
    Some(match rdata {
        RData::TXT(_) => Found::new("TXT", format!("\"{}\"", txt_string(rdata)?)),
        RData::A(a) => Found::new("A", a.0.to_string()),
        RData::AAAA(a) => Found::new("AAAA", a.0.to_string()),
        RData::MX(mx) => Found::new(
            "MX",
            format!("{} {}", mx.preference, norm(&mx.exchange.to_ascii())),
        ),
        RData::CNAME(c) => Found::new("CNAME", norm(&c.0.to_ascii())),
        _ => return None,
    })
}

/// The `p=` tag of a DKIM record, whitespace removed (RFC 6376 allows folding).
pub(crate) fn dkim_key(txt: &str) -> Option<String> {
    txt.split(';').find_map(|tag| {
        let (k, v) = tag.split_once('=')?;
        (k.trim() == "p").then(|| v.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// Whether an SPF record includes `include` (any SPF counts when `None`).
fn spf_includes(txt: &str, include: Option<&str>) -> bool {
    let mut terms = txt.split_ascii_whitespace();
    if !terms
        .next()
        .is_some_and(|v| v.eq_ignore_ascii_case("v=spf1"))
    {
        return false;
    }
    match include {
        None => true,
        Some(want) => terms.any(|t| {
            let t = t.trim_start_matches(['+', '?', '~']);
            t.len() > 8 && t[..8].eq_ignore_ascii_case("include:") && norm(&t[8..]) == norm(want)
        }),
    }
}

fn is_spf(txt: &str) -> bool {
    spf_includes(txt, None)
}

/// `CNAME → a → b`.
fn cname_observed(chain: &[String]) -> String {
    format!("CNAME → {}", chain.join(" → "))
}

/// Judges one record.
pub(crate) fn judge(record: &DnsRecord, expected: &Expected, ev: &Evidence) -> Judgement {
    let walk = &ev.walk;
    let target = norm(&record.value);
    let chain: Vec<String> = walk.names.iter().skip(1).cloned().collect();

    if chain.is_empty() {
        return match &walk.end {
            End::Failed(f) => Judgement::unknown(f),
            _ => missing(record, expected, ev),
        };
    }

    let Some(at) = chain.iter().position(|n| *n == target) else {
        if let End::Failed(f) = &walk.end {
            // The chain might still have reached the target: no conclusion.
            return Judgement::unknown(f);
        }
        let dead_end = walk.end == End::NxDomain;
        let mut observed = cname_observed(&chain);
        if dead_end {
            observed.push_str(" (does not exist)");
        }
        let zone = norm(&expected.zone);
        let other_in_zone = !zone.is_empty()
            && chain
                .first()
                .is_some_and(|n| n.ends_with(&format!(".{zone}")));
        return Judgement::problem(
            RecordState::Mismatch,
            observed,
            Problem::Mismatch {
                chain,
                dead_end,
                other_in_zone,
            },
        );
    };

    let last = chain.last().cloned().unwrap_or_default();
    let broken = |why: Broken, note: &str| {
        Judgement::problem(
            RecordState::ChainBroken,
            format!("{} ({note})", cname_observed(&chain)),
            Problem::ChainBroken {
                chain: chain.clone(),
                why,
            },
        )
    };
    // How the walk ended, when it did not end at an existing name.
    let end_trouble = |end: &End| -> Option<Judgement> {
        match end {
            End::Exists => None,
            End::NxDomain => Some(broken(Broken::NoSuchName(last.clone()), "does not exist")),
            End::Failed(f) if f.is_resolver_side() => Some(Judgement::unknown(f)),
            End::Failed(f) => Some(broken(
                Broken::NotAnswering {
                    name: last.clone(),
                    why: f.to_string(),
                },
                &format!("no answer: {f}"),
            )),
            End::Loop => Some(broken(Broken::Loop, "loop")),
            End::TooLong => Some(broken(Broken::TooLong, "too many CNAMEs")),
        }
    };

    if record.purpose == Purpose::Tracking {
        // Our record at the target is itself a CNAME, to the tracking host.
        return match chain.get(at + 1) {
            Some(next) => match &expected.tracking_host {
                Some(host) if norm(host) != *next => broken(
                    Broken::WrongHop {
                        name: target.clone(),
                        found: next.clone(),
                        expected: norm(host),
                    },
                    "unexpected CNAME",
                ),
                _ => Judgement::ok(cname_observed(&chain)),
            },
            None => end_trouble(&walk.end).unwrap_or_else(|| {
                broken(
                    Broken::NoRecords {
                        name: last.clone(),
                        rtype: "CNAME".into(),
                    },
                    "no CNAME there",
                )
            }),
        };
    }

    if let Some(j) = end_trouble(&walk.end) {
        return j;
    }

    // Records at the end of the chain: classify the answer, or conclude.
    // (The conclusion is boxed: it is the rare path.)
    let records = |answer: &Option<Answer>, rtype: &str| -> Result<Vec<RData>, Box<Judgement>> {
        match answer {
            Some(Answer::Records(r)) => Ok(r.clone()),
            None | Some(Answer::NoData) => Ok(vec![]),
            Some(Answer::NxDomain) => Err(Box::new(broken(
                Broken::NoSuchName(last.clone()),
                "does not exist",
            ))),
            Some(Answer::Failed(f)) if f.is_resolver_side() => Err(Box::new(Judgement::unknown(f))),
            Some(Answer::Failed(f)) => Err(Box::new(broken(
                Broken::NotAnswering {
                    name: last.clone(),
                    why: f.to_string(),
                },
                &format!("no {rtype} answer: {f}"),
            ))),
        }
    };

    match record.purpose {
        Purpose::Verification => {
            let mx = match records(&ev.mx, "MX") {
                Ok(r) => r,
                Err(j) => return *j,
            };
            let mx_found: Vec<String> = mx.iter().filter_map(found).map(|f| f.data).collect();
            let mx_ok = match &expected.mx_host {
                Some(host) => mx.iter().any(
                    |r| matches!(r, RData::MX(m) if norm(&m.exchange.to_ascii()) == norm(host)),
                ),
                None => !mx.is_empty(),
            };
            if !mx_ok {
                let note = if mx_found.is_empty() {
                    "no MX".to_string()
                } else {
                    format!("MX {}", mx_found.join(", "))
                };
                return Judgement::problem(
                    RecordState::MxMissing,
                    format!("{}; {note}", cname_observed(&chain)),
                    Problem::MxMissing {
                        chain,
                        found: mx_found,
                        expected: expected.mx_host.as_deref().map(norm),
                    },
                );
            }
            let txt = match records(&ev.txt, "TXT") {
                Ok(r) => r,
                Err(j) => return *j,
            };
            let txts: Vec<String> = txt.iter().filter_map(txt_string).collect();
            if txts
                .iter()
                .any(|t| spf_includes(t, expected.spf_include.as_deref()))
            {
                return Judgement::ok(cname_observed(&chain));
            }
            let spf: Vec<String> = txts.iter().filter(|t| is_spf(t)).cloned().collect();
            let note = match spf.first() {
                Some(s) => format!("TXT \"{}\"", shorten(s, 40)),
                None => "no SPF".to_string(),
            };
            Judgement::problem(
                RecordState::SpfMissing,
                format!("{}; {note}", cname_observed(&chain)),
                Problem::SpfMissing {
                    chain,
                    found: if spf.is_empty() { txts } else { spf },
                    expected: expected.spf_include.as_deref().map(norm),
                },
            )
        }
        Purpose::Dkim => {
            let txt = match records(&ev.txt, "TXT") {
                Ok(r) => r,
                Err(j) => return *j,
            };
            if txt.is_empty() {
                return broken(
                    Broken::NoRecords {
                        name: last.clone(),
                        rtype: "TXT".into(),
                    },
                    "no TXT there",
                );
            }
            let txts: Vec<String> = txt.iter().filter_map(txt_string).collect();
            let keys: Vec<String> = txts.iter().filter_map(|t| dkim_key(t)).collect();
            let want = expected.dkim_keys.get(selector_of(record));
            let good = match want {
                Some(w) => {
                    let w: String = w.chars().filter(|c| !c.is_whitespace()).collect();
                    keys.contains(&w)
                }
                None => keys.iter().any(|k| !k.is_empty()),
            };
            if good {
                let mut observed = cname_observed(&chain);
                if want.is_none() {
                    observed.push_str(" (key not compared)");
                }
                return Judgement::ok(observed);
            }
            let found_key = keys.first().cloned();
            let note = match &found_key {
                Some(k) if k.is_empty() => "p= empty".to_string(),
                Some(k) => format!("p={}", super::messages::abbreviate(k)),
                None => "no DKIM key".to_string(),
            };
            Judgement::problem(
                RecordState::KeyMismatch,
                format!("{}; {note}", cname_observed(&chain)),
                Problem::KeyMismatch {
                    chain,
                    found: found_key,
                    found_txt: txts,
                    expected: want.cloned().unwrap_or_default(),
                },
            )
        }
        Purpose::Tracking => unreachable!("handled above"),
    }
}

/// No CNAME at the customer's name.
fn missing(record: &DnsRecord, expected: &Expected, ev: &Evidence) -> Judgement {
    let flattened = ev
        .instead
        .iter()
        .any(|f| match (record.purpose, f.rtype.as_str()) {
            (Purpose::Verification, "MX") => match &expected.mx_host {
                Some(h) => f.data.split_whitespace().nth(1) == Some(norm(h).as_str()),
                None => true,
            },
            (Purpose::Verification, "TXT") => is_spf(f.data.trim_matches('"')),
            (Purpose::Dkim, "TXT") => dkim_key(f.data.trim_matches('"')).is_some(),
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
    use hickory_resolver::proto::rr::Name;
    use hickory_resolver::proto::rr::rdata::{MX, TXT};
    use std::collections::BTreeMap;

    const T: &str = "abcdefghijklmnop.dns.anypost.example";

    fn expected() -> Expected {
        Expected {
            zone: "dns.anypost.example".into(),
            mx_host: Some("mx.anypost.example".into()),
            spf_include: Some("spf.anypost.example".into()),
            tracking_host: Some("t.anypost.example".into()),
            dkim_keys: BTreeMap::from([("anypost1".to_string(), "KEY1".to_string())]),
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
        RData::MX(MX::new(10, Name::from_ascii(format!("{host}.")).unwrap()))
    }

    fn txt(parts: &[&str]) -> RData {
        RData::TXT(TXT::new(parts.iter().map(|s| s.to_string()).collect()))
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
            instead: vec![Found::new("MX", "10 mx.anypost.example")],
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
            instead: vec![Found::new("TXT", format!("\"{T}\""))],
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
            Found::new("TXT", "\"v=DKIM1; k=rsa; p=KEY1\"")
        ));
        assert!(flat(
            Purpose::Verification,
            Found::new("TXT", "\"v=spf1 include:spf.anypost.example -all\"")
        ));
        assert!(!flat(
            Purpose::Verification,
            Found::new("MX", "10 mail.example.com")
        ));
        // An address at the tracking name may be a proxy; the A hint covers it.
        assert!(!flat(Purpose::Tracking, Found::new("A", "192.0.2.1")));
        assert!(!flat(Purpose::Dkim, Found::new("TXT", "\"hello\"")));
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
                &["anypost.example.com", T],
                End::Failed(QueryFailure::ServFail),
            ),
            ..Default::default()
        };
        let j = judge(&rec(Purpose::Verification), &expected(), &ev);
        assert_eq!(j.state, RecordState::ChainBroken);
        assert_eq!(j.observed, format!("CNAME → {T} (no answer: SERVFAIL)"));

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
        e.dkim_keys.clear();
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
                    let m = crate::verify::messages::message(&r, p);
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
        assert_eq!(selector_of(&rec(Purpose::Dkim)), "anypost1");
    }
}
