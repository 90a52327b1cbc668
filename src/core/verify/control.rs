//! Proof of control: whether a claim's own verification CNAME resolves to its own
//! target. The token in the target is made for the claim's namespace, so only
//! whoever runs the domain's DNS can publish it; a claim that proves it takes the
//! domain from an older claim that is not verified (see `core::claims`). Only the
//! CNAME chain counts: nothing is served behind the target while another claim
//! holds the domain.

use super::evidence::{End, Walk};
use crate::core::api::{DnsRecord, RecordState};
use crate::core::naming::normalize;

/// The verification record's state and what was found, as `dnsRecords` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub state: RecordState,
    pub observed: String,
}

/// Judges the walk from the claim's verification name (`record.fqdn`).
pub fn judge(record: &DnsRecord, walk: &Walk) -> Control {
    let target = normalize(&record.value);
    let chain = walk.names.get(1..).unwrap_or_default();
    let observed = format!("CNAME → {}", chain.join(" → "));
    if chain.contains(&target) {
        return Control {
            state: RecordState::Ok,
            observed,
        };
    }
    match (&walk.end, chain.is_empty()) {
        (End::Failed(why), _) => Control {
            state: RecordState::Unknown,
            observed: format!("no answer ({why})"),
        },
        (_, true) => Control {
            state: RecordState::Missing,
            observed: "no CNAME".into(),
        },
        (_, false) => Control {
            state: RecordState::Mismatch,
            observed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::api::Purpose;
    use crate::core::verify::QueryFailure;

    fn record() -> DnsRecord {
        DnsRecord {
            type_: "CNAME".into(),
            name: "anypost".into(),
            fqdn: "anypost.example.com".into(),
            value: "mytoken.dns.example".into(),
            purpose: Purpose::Verification,
            state: None,
            observed: None,
        }
    }

    fn walk(names: &[&str], end: End) -> Walk {
        Walk {
            names: names.iter().map(|n| n.to_string()).collect(),
            end,
        }
    }

    #[test]
    fn reaching_the_own_target_proves_control() {
        // Even though nothing answers behind it (the zone does not serve it yet).
        let w = walk(
            &["anypost.example.com", "mytoken.dns.example"],
            End::NxDomain,
        );
        assert_eq!(judge(&record(), &w).state, RecordState::Ok);
        let via = walk(
            &[
                "anypost.example.com",
                "alias.example.net",
                "mytoken.dns.example",
            ],
            End::NxDomain,
        );
        let c = judge(&record(), &via);
        assert_eq!(c.state, RecordState::Ok);
        assert_eq!(
            c.observed,
            "CNAME → alias.example.net → mytoken.dns.example"
        );
    }

    #[test]
    fn another_target_or_none_proves_nothing() {
        let other = walk(&["anypost.example.com", "theirs.dns.example"], End::Exists);
        assert_eq!(judge(&record(), &other).state, RecordState::Mismatch);
        let none = walk(&["anypost.example.com"], End::NxDomain);
        assert_eq!(
            judge(&record(), &none),
            Control {
                state: RecordState::Missing,
                observed: "no CNAME".into()
            }
        );
        let failed = walk(&["anypost.example.com"], End::Failed(QueryFailure::Timeout));
        assert_eq!(judge(&record(), &failed).state, RecordState::Unknown);
    }
}
