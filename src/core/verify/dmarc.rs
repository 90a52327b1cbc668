//! DMARC advice: whether the domain publishes a DMARC policy (RFC 7489), and a
//! record to start with when it does not. Mailbox providers (Gmail, Yahoo) require
//! one from bulk senders. Advice only: it never decides whether the domain may send.
//!
//! The policy is looked up where receivers look for it: `_dmarc.<domain>`, then, for
//! a subdomain without one, `_dmarc.<registered domain>` (RFC 7489 §6.6.3).

use super::evidence::{Answer, txt_string};

/// A DMARC policy's `p=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    Quarantine,
    Reject,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dmarc {
    /// A valid record at `name`.
    Found {
        name: String,
        record: String,
        policy: Policy,
    },
    /// No DMARC record at any name looked at; `name` is where to publish one.
    Missing { name: String },
    /// A record at `name` that receivers ignore, and why.
    Invalid {
        name: String,
        record: String,
        why: String,
    },
    /// The resolver gave no usable answer: no evidence either way.
    Unknown(String),
}

/// The DMARC name of `domain`.
pub fn name_of(domain: &str) -> String {
    format!("_dmarc.{domain}")
}

/// A record to start with: monitor only, reports to the domain's own mailbox.
pub fn suggested(apex: &str) -> String {
    format!("v=DMARC1; p=none; rua=mailto:dmarc-reports@{apex}")
}

/// The policy of one DMARC record, or why receivers ignore it.
pub fn parse(record: &str) -> Result<Policy, String> {
    let mut tags = record.split(';').map(str::trim).filter(|t| !t.is_empty());
    if tags.next() != Some("v=DMARC1") {
        return Err("it does not start with v=DMARC1".into());
    }
    let p = tags
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| k.trim() == "p")
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    match p.as_deref() {
        Some("none") => Ok(Policy::None),
        Some("quarantine") => Ok(Policy::Quarantine),
        Some("reject") => Ok(Policy::Reject),
        Some(other) => Err(format!(
            "its policy p={other} is none of none, quarantine, reject"
        )),
        None => Err("it has no policy (p= tag)".into()),
    }
}

/// What one name holds: a record (valid or not), nothing, or no answer.
fn at(name: &str, answer: &Answer) -> Option<Dmarc> {
    let records: Vec<String> = match answer {
        Answer::Records(r) => r
            .iter()
            .filter_map(txt_string)
            .filter(|t| t.trim_start().starts_with("v=DMARC1"))
            .collect(),
        Answer::NoData | Answer::NxDomain => vec![],
        Answer::Failed(f) => return Some(Dmarc::Unknown(format!("{name}: {f}"))),
    };
    let name = name.to_string();
    match records.as_slice() {
        [] => None,
        [record] => Some(match parse(record) {
            Ok(policy) => Dmarc::Found {
                name,
                record: record.clone(),
                policy,
            },
            Err(why) => Dmarc::Invalid {
                name,
                record: record.clone(),
                why,
            },
        }),
        [first, ..] => Some(Dmarc::Invalid {
            name,
            record: first.clone(),
            why: format!(
                "{} DMARC records are published there, and receivers ignore them all when there is more than one",
                records.len()
            ),
        }),
    }
}

/// Judges the answers for `_dmarc.<domain>` and, for a subdomain, for
/// `_dmarc.<apex>` (`None` when the domain is the registered domain itself, or
/// when the first name already decided).
pub fn judge(domain: &str, apex: &str, at_domain: &Answer, at_apex: Option<&Answer>) -> Dmarc {
    if let Some(found) = at(&name_of(domain), at_domain) {
        return found;
    }
    if domain != apex
        && let Some(answer) = at_apex
        && let Some(found) = at(&name_of(apex), answer)
    {
        return found;
    }
    Dmarc::Missing {
        name: name_of(apex),
    }
}

/// Whether the registered domain's name still needs asking after `_dmarc.<domain>`
/// answered `at_domain`.
pub fn needs_apex(domain: &str, apex: &str, at_domain: &Answer) -> bool {
    domain != apex && at(&name_of(domain), at_domain).is_none()
}

/// The domain a DMARC name is for.
fn domain_of(name: &str) -> &str {
    name.strip_prefix("_dmarc.").unwrap_or(name)
}

/// A record to start with, for what was found (none when a valid one is there).
pub fn suggestion(d: &Dmarc) -> Option<String> {
    match d {
        Dmarc::Missing { name } | Dmarc::Invalid { name, .. } => Some(suggested(domain_of(name))),
        Dmarc::Found { .. } | Dmarc::Unknown(_) => None,
    }
}

/// What to tell the customer.
pub fn message(d: &Dmarc) -> String {
    match d {
        Dmarc::Found { name, policy, .. } => format!(
            "A DMARC record is published at {name} with policy p={}.",
            policy.as_str()
        ),
        Dmarc::Missing { name } => format!(
            "No DMARC record is published at {name}. Gmail and Yahoo require one from bulk senders. Publish a TXT record named _dmarc in the {zone} zone with the value \"{}\" (use a mailbox you read for the reports), and tighten p= to quarantine or reject once the reports look right.",
            suggested(domain_of(name)),
            zone = domain_of(name)
        ),
        Dmarc::Invalid { name, record, why } => format!(
            "The DMARC record at {name} (\"{record}\") is ignored by receivers: {why}. Replace it with one valid record, for example \"{}\".",
            suggested(domain_of(name))
        ),
        Dmarc::Unknown(why) => format!(
            "Could not look up the DMARC record ({why}): the resolver gave no usable answer. The lookup is repeated with the next check."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::verify::QueryFailure;
    use crate::core::zone::RData;

    fn txt(s: &str) -> Answer {
        Answer::Records(vec![RData::txt(s)])
    }

    #[test]
    fn policies_parse_and_bad_records_say_why() {
        assert_eq!(
            parse("v=DMARC1; p=reject; rua=mailto:a@b"),
            Ok(Policy::Reject)
        );
        assert_eq!(parse("v=DMARC1;p=Quarantine"), Ok(Policy::Quarantine));
        assert!(
            parse("v=DMARC1; rua=mailto:a@b")
                .unwrap_err()
                .contains("no policy")
        );
        assert!(parse("v=DMARC1; p=maybe").unwrap_err().contains("p=maybe"));
        assert!(parse("v=spf1 -all").unwrap_err().contains("v=DMARC1"));
    }

    #[test]
    fn the_domain_is_asked_first_then_the_registered_domain() {
        let found = judge(
            "mail.example.com",
            "example.com",
            &txt("v=DMARC1; p=none"),
            None,
        );
        assert!(
            matches!(found, Dmarc::Found { ref name, policy: Policy::None, .. } if name == "_dmarc.mail.example.com")
        );
        assert!(needs_apex(
            "mail.example.com",
            "example.com",
            &Answer::NxDomain
        ));
        assert!(!needs_apex("example.com", "example.com", &Answer::NxDomain));
        let from_apex = judge(
            "mail.example.com",
            "example.com",
            &Answer::NxDomain,
            Some(&txt("v=DMARC1; p=reject")),
        );
        assert!(
            matches!(from_apex, Dmarc::Found { ref name, policy: Policy::Reject, .. } if name == "_dmarc.example.com")
        );
        let missing = judge(
            "mail.example.com",
            "example.com",
            &Answer::NoData,
            Some(&Answer::NxDomain),
        );
        assert_eq!(
            missing,
            Dmarc::Missing {
                name: "_dmarc.example.com".into()
            }
        );
        assert!(message(&missing).contains(
            "Publish a TXT record named _dmarc in the example.com zone with the value \"v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com\""
        ));
    }

    #[test]
    fn several_records_or_no_answer_are_not_a_policy() {
        let two = Answer::Records(vec![
            RData::txt("v=DMARC1; p=none"),
            RData::txt("v=DMARC1; p=reject"),
        ]);
        assert!(matches!(
            judge("example.com", "example.com", &two, None),
            Dmarc::Invalid { .. }
        ));
        let failed = Answer::Failed(QueryFailure::Timeout);
        assert!(matches!(
            judge("example.com", "example.com", &failed, None),
            Dmarc::Unknown(_)
        ));
        // Other TXT records at the name are not DMARC records.
        assert!(matches!(
            judge(
                "example.com",
                "example.com",
                &txt("google-site-verification=x"),
                None
            ),
            Dmarc::Missing { .. }
        ));
    }
}
