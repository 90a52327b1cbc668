//! What went wrong with one record, as a failure code and a message a person can act
//! on. Pure: the text depends only on the record and what was found.
//!
//! Every message names the real record (its full name, the relative name to type
//! into a provider's UI, the zone it goes in, the value), says what was found, and
//! adds a hint when the mistake is one we recognise.

use super::evidence::Found;
use crate::core::api::{DnsRecord, Purpose};
use crate::core::vocab::FailureCode;
use crate::core::zone::RecordType;

/// Why a chain that starts right does not reach the operator's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// This name, on the chain, does not exist (NXDOMAIN).
    NoSuchName(String),
    /// This name exists but holds no record of this type.
    NoRecords { name: String, rtype: RecordType },
    /// A CNAME in the operator's zone points somewhere unexpected.
    WrongHop {
        name: String,
        found: String,
        expected: String,
    },
    /// The CNAMEs loop.
    Loop,
    /// More CNAMEs than any resolver follows.
    TooLong,
}

/// What is wrong with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No CNAME at the record's name.
    Missing {
        /// Records of other types found at the name instead.
        instead: Vec<Found>,
        /// The records found are those the CNAME would lead to: the provider
        /// flattens or proxies CNAMEs.
        flattened: bool,
        /// A CNAME at the name with the domain doubled
        /// (`anypost.example.com.example.com`) and its target.
        doubled: Option<(String, String)>,
    },
    /// A CNAME whose chain never passes through the expected target.
    Mismatch {
        /// The names the CNAMEs lead to, in order (at least one).
        chain: Vec<String>,
        /// The last name of the chain does not exist.
        dead_end: bool,
        /// The CNAME points into the operator's zone, at a name that is not this
        /// record's (another selector's, another domain's, an old namespace's).
        other_in_zone: bool,
    },
    /// The expected target is reached, but what follows does not work.
    ChainBroken {
        /// The names the CNAMEs lead to, in order, the expected target among them.
        chain: Vec<String>,
        why: Broken,
    },
    /// The verification target holds no MX to the expected host.
    MxMissing {
        chain: Vec<String>,
        /// The MX records there (`10 mx.example`).
        found: Vec<String>,
        /// The expected exchange, if known.
        expected: Option<String>,
    },
    /// The verification target holds no SPF record including the expected domain.
    SpfMissing {
        chain: Vec<String>,
        /// The TXT strings there.
        found: Vec<String>,
        /// The expected include, if known.
        expected: Option<String>,
    },
    /// The DKIM record reached carries another key (or none).
    KeyMismatch {
        chain: Vec<String>,
        /// The `p=` value found, if any record had one.
        found: Option<String>,
        /// The TXT strings there, when none had a key.
        found_txt: Vec<String>,
        expected: String,
    },
}

/// The failure code for `problem` on a record with `purpose`.
pub fn code(purpose: Purpose, problem: &Problem) -> FailureCode {
    use FailureCode as C;
    match (problem, purpose) {
        (Problem::Missing { .. }, Purpose::Verification) => C::ApexCnameMissing,
        (Problem::Missing { .. }, Purpose::Dkim) => C::DkimCnameMissing,
        (Problem::Missing { .. }, Purpose::Tracking) => C::TrackingCnameMissing,
        (Problem::Mismatch { .. }, Purpose::Verification) => C::ApexCnameMismatch,
        (Problem::Mismatch { .. }, Purpose::Dkim) => C::DkimCnameMismatch,
        (Problem::Mismatch { .. }, Purpose::Tracking) => C::TrackingCnameMismatch,
        (Problem::ChainBroken { .. }, _) => C::ChainBroken,
        (Problem::MxMissing { .. }, _) => C::MxMissing,
        (Problem::SpfMissing { .. }, _) => C::SpfMissing,
        (Problem::KeyMismatch { .. }, _) => C::DkimMismatch,
    }
}

const PROPAGATION: &str = "DNS changes take minutes to hours to reach every resolver: \
if you published it recently, wait and check again.";

const OLD_VALUE: &str = "If you changed it recently, resolvers may still hold the \
previous value until its TTL runs out.";

const THEIR_SIDE: &str = "Nothing needs to change in your DNS: this is on Anypost's \
side and usually clears within minutes of the domain being added. If it persists, \
contact support.";

const PROPAGATION_SHORT: &str = "This is usually a propagation delay: check again in \
a few minutes.";

/// The message for `problem` on `record`: what the record is, what was found, what
/// was expected, and a hint where the mistake is recognisable.
pub fn message(record: &DnsRecord, problem: &Problem) -> String {
    match problem {
        Problem::Missing {
            instead,
            flattened,
            doubled,
        } => missing(record, instead, *flattened, doubled.as_ref()),
        Problem::Mismatch {
            chain,
            dead_end,
            other_in_zone,
        } => mismatch(record, chain, *dead_end, *other_in_zone),
        Problem::ChainBroken { chain, why } => chain_broken(record, chain, why),
        Problem::MxMissing {
            chain,
            found,
            expected,
        } => {
            let want = match expected {
                Some(h) => format!("no MX record for {h}"),
                None => "no MX record".to_string(),
            };
            let found = found_suffix(found.iter().map(|f| format!("MX {f}")));
            through_target(record, chain, &want, &found)
        }
        Problem::SpfMissing {
            chain,
            found,
            expected,
        } => {
            let want = match expected {
                Some(i) => format!("no SPF record (v=spf1 … include:{i})"),
                None => "no SPF record (v=spf1 …)".to_string(),
            };
            let found = found_suffix(found.iter().map(|t| format!("TXT \"{}\"", shorten(t, 60))));
            through_target(record, chain, &want, &found)
        }
        Problem::KeyMismatch {
            chain,
            found,
            found_txt,
            expected,
        } => key_mismatch(record, chain, found.as_deref(), found_txt, expected),
    }
}

fn missing(
    record: &DnsRecord,
    instead: &[Found],
    flattened: bool,
    doubled: Option<&(String, String)>,
) -> String {
    let (what, fqdn, value) = (record_kind(record.purpose), &record.fqdn, &record.value);
    let mut m = format!(
        "The {what} CNAME {fqdn} was not found. Publish a CNAME named {name} \
         in the {zone} zone, pointing to {value}.",
        name = record.name,
        zone = apex_of(record),
    );
    if let Some((at, target)) = doubled {
        m.push_str(&format!(
            " A CNAME was found at {at} (→ {target}) instead: the domain was \
             typed as part of the name and the provider appended it again. \
             Rename the record to just {name}.",
            name = record.name
        ));
    } else if flattened {
        m.push_str(&format!(
            " The name answers with {} but no CNAME: your DNS provider seems to \
             flatten or proxy this CNAME. Set the record to plain DNS (no \
             flattening, no proxying) so the records behind it can change \
             without you.",
            list(instead)
        ));
    } else if let Some(first) = instead.first() {
        let advice = match first.rtype {
            RecordType::Txt => "the record type must be CNAME, not TXT.".to_string(),
            RecordType::A | RecordType::Aaaa => format!(
                "the record must be a CNAME, not an address ({}) record. If your \
                 provider proxies it (a CDN \"proxied\" switch), set it to DNS only.",
                first.rtype
            ),
            _ => "a name with a CNAME can hold no other record: replace them \
                  with the CNAME."
                .to_string(),
        };
        m.push_str(&format!(" Found {} there instead: {advice}", list(instead)));
    } else {
        m.push(' ');
        m.push_str(PROPAGATION);
    }
    m
}

fn mismatch(record: &DnsRecord, chain: &[String], dead_end: bool, other_in_zone: bool) -> String {
    let (what, fqdn, value) = (record_kind(record.purpose), &record.fqdn, &record.value);
    let found = chain.first().map(String::as_str).unwrap_or_default();
    let mut m = format!(
        "The {what} CNAME {fqdn} points to {}, but it must point to {value}.",
        arrows(chain)
    );
    if let Some(suffix) = found
        .strip_prefix(value.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
    {
        m.push_str(&format!(
            " The target has {suffix} appended: the provider read the value as a \
             relative name. Enter it with a final dot ({value}.), or however your \
             provider marks a complete name."
        ));
    } else if other_in_zone {
        m.push_str(
            " That name is in Anypost's zone but belongs to another record: every \
             record, domain and namespace has its own target, so copy the value \
             exactly as given for this one.",
        );
    } else if dead_end {
        m.push_str(&format!(
            " {} does not exist.",
            chain.last().map(String::as_str).unwrap_or_default()
        ));
    }
    m.push(' ');
    m.push_str(OLD_VALUE);
    m
}

fn chain_broken(record: &DnsRecord, chain: &[String], why: &Broken) -> String {
    let why = match why {
        Broken::NoSuchName(n) => format!("{n} does not exist"),
        Broken::NoRecords { name, rtype } => format!("{name} has no {rtype} record"),
        Broken::WrongHop {
            name,
            found,
            expected,
        } => format!("{name} points to {found} instead of {expected}"),
        Broken::Loop => "the CNAMEs loop back on themselves".to_string(),
        Broken::TooLong => "the chain has too many CNAMEs".to_string(),
    };
    format!(
        "The {what} CNAME {fqdn} points to {value} as it should{via}, but the \
         chain stops before Anypost's records: {why}. {THEIR_SIDE}",
        what = record_kind(record.purpose),
        fqdn = record.fqdn,
        value = record.value,
        via = via(chain, &record.value)
    )
}

/// The verification target is reached but `want` (no MX, no SPF) resolves
/// through it.
fn through_target(record: &DnsRecord, chain: &[String], want: &str, found: &str) -> String {
    format!(
        "The verification CNAME {fqdn} points to {value}{via}, but {want} \
         resolves through it{found}. {PROPAGATION_SHORT}",
        fqdn = record.fqdn,
        value = record.value,
        via = via(chain, &record.value)
    )
}

fn key_mismatch(
    record: &DnsRecord,
    chain: &[String],
    found: Option<&str>,
    found_txt: &[String],
    expected: &str,
) -> String {
    let found = match found {
        Some("") => "an empty p= (a revoked key)".to_string(),
        Some(p) => format!("p={}", abbreviate(p)),
        None if found_txt.is_empty() => "no key".to_string(),
        None => format!(
            "no key, only {}",
            found_txt
                .iter()
                .map(|t| format!("TXT \"{}\"", shorten(t, 40)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "The DKIM CNAME {fqdn} points to {value}{via}, but the DKIM record there \
         does not carry this domain's key (found {found}, expected p={}). Check \
         that the CNAME value is exactly {value}. Right after a key change the \
         previous key can still be served from caches: check again in a few \
         minutes.",
        abbreviate(expected),
        fqdn = record.fqdn,
        value = record.value,
        via = via(chain, &record.value)
    )
}

/// The message shown when no evidence could be gathered (resolver failures).
pub fn unknown_message(record: &DnsRecord, why: &str) -> String {
    let mut m = format!(
        "Could not check {} ({why}): the resolver gave no usable answer, which says \
         nothing about the records. The check is repeated automatically.",
        record.fqdn
    );
    if why == "SERVFAIL" {
        m.push_str(&format!(
            " If this persists, check that the nameservers of {} answer for it.",
            apex_of(record)
        ));
    }
    m
}

fn record_kind(p: Purpose) -> &'static str {
    match p {
        Purpose::Verification => "verification",
        Purpose::Dkim => "DKIM",
        Purpose::Tracking => "tracking",
    }
}

/// The zone the record is published in: its absolute name minus its relative one.
pub fn apex_of(record: &DnsRecord) -> &str {
    record
        .fqdn
        .strip_prefix(record.name.as_str())
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(&record.fqdn)
}

/// `a → b → c`.
pub fn arrows(chain: &[String]) -> String {
    chain.join(" → ")
}

/// ` (via alias.example.net)` when the customer's CNAME reaches the target through
/// names of their own.
fn via(chain: &[String], value: &str) -> String {
    let before: Vec<&str> = chain
        .iter()
        .map(String::as_str)
        .take_while(|n| !n.eq_ignore_ascii_case(value))
        .collect();
    if before.is_empty() || before.len() == chain.len() {
        String::new()
    } else {
        format!(" (via {})", before.join(" → "))
    }
}

fn list(found: &[Found]) -> String {
    let mut shown: Vec<String> = found.iter().take(2).map(Found::display).collect();
    if found.len() > 2 {
        shown.push(format!("{} more", found.len() - 2));
    }
    shown.join(", ")
}

/// At most `max` characters, with `…` marking a cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A long key as its first and last characters: enough to tell two keys apart.
pub fn abbreviate(key: &str) -> String {
    let n = key.chars().count();
    if n <= 20 {
        key.to_string()
    } else {
        let head: String = key.chars().take(8).collect();
        let tail: String = key.chars().skip(n - 8).collect();
        format!("{head}…{tail}")
    }
}

/// ` (found a, b)`, or nothing when nothing was found.
fn found_suffix(found: impl Iterator<Item = String>) -> String {
    let found: Vec<String> = found.collect();
    if found.is_empty() {
        String::new()
    } else {
        format!(" (found {})", found.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "abcdefghijklmnop.dns.anypost.example";

    fn rec(name: &str, fqdn: &str, value: &str, purpose: Purpose) -> DnsRecord {
        DnsRecord {
            type_: "CNAME".into(),
            name: name.into(),
            fqdn: fqdn.into(),
            value: value.into(),
            purpose,
            state: None,
            observed: None,
        }
    }

    fn apex_rec() -> DnsRecord {
        rec("anypost", "anypost.example.com", T, Purpose::Verification)
    }

    fn dkim_rec() -> DnsRecord {
        rec(
            "anypost1._domainkey.mail",
            "anypost1._domainkey.mail.example.com",
            &format!("anypost1._domainkey.{T}"),
            Purpose::Dkim,
        )
    }

    fn missing(instead: Vec<Found>, flattened: bool, doubled: Option<(&str, &str)>) -> Problem {
        Problem::Missing {
            instead,
            flattened,
            doubled: doubled.map(|(a, b)| (a.to_string(), b.to_string())),
        }
    }

    #[test]
    fn missing_says_what_to_publish_and_mentions_propagation() {
        let p = missing(vec![], false, None);
        assert_eq!(
            code(Purpose::Verification, &p).as_str(),
            "apex_cname_missing"
        );
        assert_eq!(
            message(&apex_rec(), &p),
            "The verification CNAME anypost.example.com was not found. Publish a CNAME \
             named anypost in the example.com zone, pointing to \
             abcdefghijklmnop.dns.anypost.example. DNS changes take minutes to hours to \
             reach every resolver: if you published it recently, wait and check again."
        );
    }

    #[test]
    fn missing_on_a_subdomain_names_the_apex_zone() {
        let p = missing(vec![], false, None);
        assert_eq!(code(Purpose::Dkim, &p).as_str(), "dkim_cname_missing");
        assert!(message(&dkim_rec(), &p).starts_with(
            "The DKIM CNAME anypost1._domainkey.mail.example.com was not found. Publish a \
             CNAME named anypost1._domainkey.mail in the example.com zone, pointing to \
             anypost1._domainkey.abcdefghijklmnop.dns.anypost.example."
        ));
    }

    #[test]
    fn missing_with_a_doubled_name() {
        let p = missing(vec![], false, Some(("anypost.example.com.example.com", T)));
        assert_eq!(
            message(&apex_rec(), &p),
            "The verification CNAME anypost.example.com was not found. Publish a CNAME \
             named anypost in the example.com zone, pointing to \
             abcdefghijklmnop.dns.anypost.example. A CNAME was found at \
             anypost.example.com.example.com (→ abcdefghijklmnop.dns.anypost.example) \
             instead: the domain was typed as part of the name and the provider appended \
             it again. Rename the record to just anypost."
        );
    }

    #[test]
    fn missing_with_a_txt_or_an_address_instead() {
        let txt = missing(
            vec![Found::new(RecordType::Txt, format!("\"{T}\""))],
            false,
            None,
        );
        assert!(message(&apex_rec(), &txt).ends_with(
            "Found TXT \"abcdefghijklmnop.dns.anypost.example\" there instead: the record \
             type must be CNAME, not TXT."
        ));
        let a = missing(vec![Found::new(RecordType::A, "192.0.2.1")], false, None);
        assert!(message(&apex_rec(), &a).ends_with(
            "Found A 192.0.2.1 there instead: the record must be a CNAME, not an address \
             (A) record. If your provider proxies it (a CDN \"proxied\" switch), set it to \
             DNS only."
        ));
    }

    #[test]
    fn missing_but_flattened() {
        let p = missing(
            vec![
                Found::new(RecordType::Mx, "10 mx.anypost.example"),
                Found::new(
                    RecordType::Txt,
                    "\"v=spf1 include:spf.anypost.example -all\"",
                ),
            ],
            true,
            None,
        );
        assert!(message(&apex_rec(), &p).ends_with(
            "The name answers with MX 10 mx.anypost.example, TXT \"v=spf1 \
             include:spf.anypost.example -all\" but no CNAME: your DNS provider seems to \
             flatten or proxy this CNAME. Set the record to plain DNS (no flattening, no \
             proxying) so the records behind it can change without you."
        ));
    }

    #[test]
    fn mismatch_with_the_domain_appended() {
        let p = Problem::Mismatch {
            chain: vec![format!("{T}.example.com")],
            dead_end: true,
            other_in_zone: false,
        };
        assert_eq!(
            code(Purpose::Verification, &p).as_str(),
            "apex_cname_mismatch"
        );
        assert_eq!(
            message(&apex_rec(), &p),
            "The verification CNAME anypost.example.com points to \
             abcdefghijklmnop.dns.anypost.example.example.com, but it must point to \
             abcdefghijklmnop.dns.anypost.example. The target has example.com appended: \
             the provider read the value as a relative name. Enter it with a final dot \
             (abcdefghijklmnop.dns.anypost.example.), or however your provider marks a \
             complete name. If you changed it recently, resolvers may still hold the \
             previous value until its TTL runs out."
        );
    }

    #[test]
    fn mismatch_to_a_dead_end() {
        let p = Problem::Mismatch {
            chain: vec!["alias.example.net".into(), "gone.example.net".into()],
            dead_end: true,
            other_in_zone: false,
        };
        assert_eq!(code(Purpose::Dkim, &p).as_str(), "dkim_cname_mismatch");
        assert_eq!(
            message(&dkim_rec(), &p),
            "The DKIM CNAME anypost1._domainkey.mail.example.com points to \
             alias.example.net → gone.example.net, but it must point to \
             anypost1._domainkey.abcdefghijklmnop.dns.anypost.example. gone.example.net \
             does not exist. If you changed it recently, resolvers may still hold the \
             previous value until its TTL runs out."
        );
    }

    #[test]
    fn mismatch_into_another_record_of_the_zone() {
        let p = Problem::Mismatch {
            chain: vec![format!("anypost2._domainkey.{T}")],
            dead_end: false,
            other_in_zone: true,
        };
        assert_eq!(
            message(&dkim_rec(), &p),
            "The DKIM CNAME anypost1._domainkey.mail.example.com points to \
             anypost2._domainkey.abcdefghijklmnop.dns.anypost.example, but it must point to \
             anypost1._domainkey.abcdefghijklmnop.dns.anypost.example. That name is in \
             Anypost's zone but belongs to another record: every record, domain and \
             namespace has its own target, so copy the value exactly as given for this \
             one. If you changed it recently, resolvers may still hold the previous value \
             until its TTL runs out."
        );
    }

    #[test]
    fn chain_broken_explains_where() {
        let p = Problem::ChainBroken {
            chain: vec!["alias.example.net".into(), T.into()],
            why: Broken::NoSuchName(T.into()),
        };
        assert_eq!(code(Purpose::Verification, &p).as_str(), "chain_broken");
        assert_eq!(
            message(&apex_rec(), &p),
            "The verification CNAME anypost.example.com points to \
             abcdefghijklmnop.dns.anypost.example as it should (via alias.example.net), \
             but the chain stops before Anypost's records: \
             abcdefghijklmnop.dns.anypost.example does not exist. Nothing needs to change \
             in your DNS: this is on Anypost's side and usually clears within minutes of \
             the domain being added. If it persists, contact support."
        );
    }

    #[test]
    fn mx_and_spf_missing() {
        let mx = Problem::MxMissing {
            chain: vec![T.into()],
            found: vec![],
            expected: Some("mx.anypost.example".into()),
        };
        assert_eq!(code(Purpose::Verification, &mx).as_str(), "mx_missing");
        assert_eq!(
            message(&apex_rec(), &mx),
            "The verification CNAME anypost.example.com points to \
             abcdefghijklmnop.dns.anypost.example, but no MX record for mx.anypost.example \
             resolves through it. This is usually a propagation delay: check again in a \
             few minutes."
        );
        let spf = Problem::SpfMissing {
            chain: vec![T.into()],
            found: vec!["v=spf1 -all".into()],
            expected: Some("spf.anypost.example".into()),
        };
        assert_eq!(code(Purpose::Verification, &spf).as_str(), "spf_missing");
        assert_eq!(
            message(&apex_rec(), &spf),
            "The verification CNAME anypost.example.com points to \
             abcdefghijklmnop.dns.anypost.example, but no SPF record (v=spf1 … \
             include:spf.anypost.example) resolves through it (found TXT \"v=spf1 -all\"). \
             This is usually a propagation delay: check again in a few minutes."
        );
    }

    #[test]
    fn key_mismatch_shows_both_keys_abbreviated() {
        let p = Problem::KeyMismatch {
            chain: vec![format!("anypost1._domainkey.{T}")],
            found: Some("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAold0123".into()),
            found_txt: vec![],
            expected: "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnew45678".into(),
        };
        assert_eq!(code(Purpose::Dkim, &p).as_str(), "dkim_mismatch");
        assert_eq!(
            message(&dkim_rec(), &p),
            "The DKIM CNAME anypost1._domainkey.mail.example.com points to \
             anypost1._domainkey.abcdefghijklmnop.dns.anypost.example, but the DKIM record \
             there does not carry this domain's key (found p=MIIBIjAN…Aold0123, expected \
             p=MIIBIjAN…new45678). Check that the CNAME value is exactly \
             anypost1._domainkey.abcdefghijklmnop.dns.anypost.example. Right after a key \
             change the previous key can still be served from caches: check again in a \
             few minutes."
        );
    }

    #[test]
    fn tracking_has_its_own_codes() {
        let p = missing(vec![], false, None);
        assert_eq!(
            code(Purpose::Tracking, &p).as_str(),
            "tracking_cname_missing"
        );
        let p = Problem::Mismatch {
            chain: vec!["x.example".into()],
            dead_end: false,
            other_in_zone: false,
        };
        assert_eq!(
            code(Purpose::Tracking, &p).as_str(),
            "tracking_cname_mismatch"
        );
    }

    #[test]
    fn unknown_says_it_is_no_evidence() {
        assert_eq!(
            unknown_message(&apex_rec(), "timed out"),
            "Could not check anypost.example.com (timed out): the resolver gave no usable \
             answer, which says nothing about the records. The check is repeated \
             automatically."
        );
        assert!(unknown_message(&apex_rec(), "SERVFAIL").ends_with(
            "If this persists, check that the nameservers of example.com answer for it."
        ));
    }

    #[test]
    fn helpers() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
        assert_eq!(abbreviate("short"), "short");
        assert_eq!(
            apex_of(&dkim_rec()),
            "example.com",
            "relative name stripped from the absolute one"
        );
        assert_eq!(via(&["a".into(), "b".into()], "b"), " (via a)");
        assert_eq!(via(&["b".into()], "b"), "");
    }
}
