//! Verification against real DNS: BIND serves the customer's zone and a stand-in of
//! the operator's zone, unbound resolves, and `verify` (or `anypost-operator check`)
//! reads the result. Each test publishes one real misconfiguration and asserts the
//! code, the per-record state and the whole message.

use crate::support::dns_topology::{DnsTopology, OperatorZone, ZoneFile, txt_strings};
use anypost_operator::adapters::resolver::{Resolver, verify};
use anypost_operator::core::api::{DnsRecord, RecordState};
use anypost_operator::core::naming::{self, SendingName};
use anypost_operator::core::verify::{Expected, Outcome, Verdict};
use anypost_operator::core::vocab::BySelector;
use std::collections::BTreeMap;
use std::time::Duration;

const ZONE: &str = "dns.anypost.example";
const MX: &str = "mx.anypost.example";
const SPF: &str = "spf.anypost.example";
const TRACKING_HOST: &str = "t.anypost.example";
const IDENTITY_KEY: [u8; 32] = [7; 32];

const PROPAGATION: &str = "DNS changes take minutes to hours to reach every resolver: if \
you published it recently, wait and check again.";
const OLD_VALUE: &str = "If you changed it recently, resolvers may still hold the previous \
value until its TTL runs out.";
const THEIR_SIDE: &str = "Nothing needs to change in your DNS: this is on Anypost's side and \
usually clears within minutes of the domain being added. If it persists, contact support.";
const PROPAGATION_SHORT: &str = "This is usually a propagation delay: check again in a few \
minutes.";

/// A DKIM public key as long as a real 4096-bit one (736 base64 characters), so
/// its TXT record is split into three character-strings.
fn key(n: u8) -> String {
    format!(
        "MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA{}IDAQAB",
        format!("k{n}Q").repeat(229)
    )
}

/// One sending domain: its token, its dnsRecords and what the zone should hold.
struct Domain {
    name: SendingName,
    token: String,
    records: Vec<DnsRecord>,
    expected: Expected,
}

impl Domain {
    fn new(domain: &str, tracking: Option<&str>) -> Domain {
        Domain::in_namespace(domain, tracking, "acme")
    }

    fn in_namespace(domain: &str, tracking: Option<&str>, namespace: &str) -> Domain {
        let name = SendingName::parse(domain).unwrap();
        let token = naming::token(&IDENTITY_KEY, namespace, domain);
        let records = naming::customer_records(&name, &token, ZONE, tracking);
        Domain {
            name,
            records,
            expected: Expected {
                zone: ZONE.into(),
                mx_host: Some(MX.into()),
                spf_include: Some(SPF.into()),
                tracking_host: Some(TRACKING_HOST.into()),
                dkim_keys: BySelector([Some(key(1)), Some(key(2))]),
            },
            token,
        }
    }

    /// `<t>.Z`: the verification target.
    fn target(&self) -> String {
        format!("{}.{ZONE}", self.token)
    }

    /// The customer's zone with every record published as given.
    fn customer_zone(&self) -> ZoneFile {
        let mut z = ZoneFile::new(&self.name.apex);
        for r in &self.records {
            z.add(format!("{}. IN CNAME {}.", r.fqdn, r.value));
        }
        z
    }

    /// The operator's zone as the operator would serve it for this domain.
    fn operator_zone(&self) -> ZoneFile {
        let t = self.target();
        ZoneFile::new(ZONE)
            .with(format!("{t}. IN MX 10 {MX}."))
            .with(format!("{t}. IN TXT \"v=spf1 include:{SPF} -all\""))
            .with(format!(
                "anypost1._domainkey.{t}. IN TXT {}",
                txt_strings(&format!("v=DKIM1; k=rsa; p={}", key(1)))
            ))
            .with(format!(
                "anypost2._domainkey.{t}. IN TXT {}",
                txt_strings(&format!("v=DKIM1; k=rsa; p={}", key(2)))
            ))
            .with(format!("track.{t}. IN CNAME {TRACKING_HOST}."))
    }

    async fn check(&self, dns: &DnsTopology) -> Outcome {
        let resolver = Resolver::new(&[dns.resolver()], Duration::from_secs(2)).unwrap();
        verify(&resolver, &self.name, &self.records, &self.expected).await
    }
}

fn states(o: &Outcome) -> Vec<RecordState> {
    o.records.iter().map(|r| r.state.unwrap()).collect()
}

fn failure(o: &Outcome) -> (&str, &str) {
    match &o.verdict {
        Verdict::Failed(f) => (f.code.as_str(), f.message.as_str()),
        v => panic!("expected a failure, got {v:?}\n{:#?}", o.records),
    }
}

/// Starts BIND + unbound with `customer` and the stand-in operator zone.
async fn topology(customer: ZoneFile, operator: ZoneFile) -> DnsTopology {
    DnsTopology::start(&[customer], OperatorZone::StandIn(operator)).await
}

/// DMARC advice through real DNS: the policy at the sending domain, at the
/// registered domain for a subdomain, none, or one receivers ignore.
#[tokio::test]
async fn dmarc_policies_are_found_missing_or_invalid() {
    use anypost_operator::core::verify::Dmarc;
    use anypost_operator::core::verify::dmarc::Policy;
    let d = Domain::new("mail.example.com", None);
    let with = |lines: &[&str]| {
        let mut z = d.customer_zone();
        for l in lines {
            z.add(l.to_string());
        }
        z
    };
    let dns = topology(
        with(&["_dmarc.example.com. IN TXT \"v=DMARC1; p=quarantine; rua=mailto:r@example.com\""]),
        d.operator_zone(),
    )
    .await;
    let o = d.check(&dns).await;
    assert_eq!(o.verdict, Verdict::Verified, "{:#?}", o.records);
    assert_eq!(
        o.dmarc,
        Some(Dmarc::Found {
            name: "_dmarc.example.com".into(),
            record: "v=DMARC1; p=quarantine; rua=mailto:r@example.com".into(),
            policy: Policy::Quarantine,
        })
    );
    // The subdomain's own record takes precedence; a second one voids it.
    dns.set_zone(&with(&[
        "_dmarc.example.com. IN TXT \"v=DMARC1; p=reject\"",
        "_dmarc.mail.example.com. IN TXT \"v=DMARC1; p=none\"",
        "_dmarc.mail.example.com. IN TXT \"v=DMARC1; p=reject\"",
    ]))
    .await;
    dns.flush();
    let o = d.check(&dns).await;
    assert!(
        matches!(&o.dmarc, Some(Dmarc::Invalid { name, why, .. }) if name == "_dmarc.mail.example.com" && why.contains("2 DMARC records")),
        "{:?}",
        o.dmarc
    );
    dns.set_zone(&with(&[])).await;
    dns.flush();
    let o = d.check(&dns).await;
    assert_eq!(
        o.dmarc,
        Some(Dmarc::Missing {
            name: "_dmarc.example.com".into()
        })
    );
    assert_eq!(
        o.verdict,
        Verdict::Verified,
        "DMARC never decides the verdict"
    );
}

#[tokio::test]
async fn a_correctly_published_domain_verifies_with_tracking() {
    let d = Domain::new("example.com", Some("track"));
    let dns = topology(d.customer_zone(), d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(o.verdict, Verdict::Verified, "{:#?}", o.records);
    assert_eq!(o.tracking, Some(Verdict::Verified));
    assert_eq!(states(&o), vec![RecordState::Ok; 4]);
    let t = d.target();
    let observed: Vec<&str> = o
        .records
        .iter()
        .map(|r| r.observed.as_deref().unwrap())
        .collect();
    assert_eq!(
        observed,
        vec![
            format!("CNAME → {t}"),
            format!("CNAME → anypost1._domainkey.{t}"),
            format!("CNAME → anypost2._domainkey.{t}"),
            format!("CNAME → track.{t} → {TRACKING_HOST}"),
        ]
    );
}

#[tokio::test]
async fn a_subdomain_publishes_in_the_apex_zone() {
    let d = Domain::new("mail.example.com", None);
    assert_eq!(d.records[0].name, "anypost.mail");
    let dns = topology(d.customer_zone(), d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(o.verdict, Verdict::Verified, "{:#?}", o.records);
    assert_eq!(o.tracking, None);

    // Without the verification record, the message names the subdomain's record
    // and the apex zone it belongs in.
    dns.set_zone(
        &d.customer_zone()
            .without(|l| l.starts_with("anypost.mail.")),
    )
    .await;
    let o = d.check(&dns).await;
    let (code, message) = failure(&o);
    assert_eq!(code, "apex_cname_missing");
    assert_eq!(
        message,
        format!(
            "The verification CNAME anypost.mail.example.com was not found. Publish a \
             CNAME named anypost.mail in the example.com zone, pointing to {}. {PROPAGATION}",
            d.target()
        )
    );
}

#[tokio::test]
async fn a_detour_through_the_customers_own_alias_is_accepted() {
    let d = Domain::new("example.com", None);
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("anypost.example.com."))
        .with("anypost.example.com. IN CNAME alias.example.com.")
        .with(format!("alias.example.com. IN CNAME {}.", d.target()));
    let dns = topology(zone, d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(o.verdict, Verdict::Verified, "{:#?}", o.records);
    assert_eq!(
        o.records[0].observed.as_deref(),
        Some(format!("CNAME → alias.example.com → {}", d.target()).as_str())
    );
}

#[tokio::test]
async fn apex_cname_missing_finds_the_name_published_twice() {
    let d = Domain::new("example.com", None);
    let t = d.target();
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("anypost.example.com."))
        .with(format!("anypost.example.com.example.com. IN CNAME {t}."));
    let dns = topology(zone, d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(
        states(&o),
        vec![RecordState::Missing, RecordState::Ok, RecordState::Ok]
    );
    assert_eq!(
        o.records[0].observed.as_deref(),
        Some(format!("no record (CNAME at anypost.example.com.example.com → {t})").as_str())
    );
    let (code, message) = failure(&o);
    assert_eq!(code, "apex_cname_missing");
    assert_eq!(
        message,
        format!(
            "The verification CNAME anypost.example.com was not found. Publish a CNAME \
             named anypost in the example.com zone, pointing to {t}. A CNAME was found at \
             anypost.example.com.example.com (→ {t}) instead: the domain was typed as part \
             of the name and the provider appended it again. Rename the record to just \
             anypost."
        )
    );
}

#[tokio::test]
async fn apex_cname_missing_with_a_txt_record_instead() {
    let d = Domain::new("example.com", None);
    let t = d.target();
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("anypost.example.com."))
        .with(format!("anypost.example.com. IN TXT \"{t}\""));
    let dns = topology(zone, d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(
        o.records[0].observed.as_deref(),
        Some(format!("TXT \"{t}\"").as_str())
    );
    let (code, message) = failure(&o);
    assert_eq!(code, "apex_cname_missing");
    assert_eq!(
        message,
        format!(
            "The verification CNAME anypost.example.com was not found. Publish a CNAME \
             named anypost in the example.com zone, pointing to {t}. Found TXT \"{t}\" \
             there instead: the record type must be CNAME, not TXT."
        )
    );
}

#[tokio::test]
async fn a_flattened_cname_is_not_verified() {
    let d = Domain::new("example.com", None);
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("anypost.example.com."))
        .with(format!("anypost.example.com. IN MX 10 {MX}."))
        .with(format!(
            "anypost.example.com. IN TXT \"v=spf1 include:{SPF} -all\""
        ));
    let dns = topology(zone, d.operator_zone()).await;
    let o = d.check(&dns).await;
    let (code, message) = failure(&o);
    assert_eq!(code, "apex_cname_missing");
    assert_eq!(
        message,
        format!(
            "The verification CNAME anypost.example.com was not found. Publish a CNAME \
             named anypost in the example.com zone, pointing to {}. The name answers with \
             MX 10 {MX}, TXT \"v=spf1 include:{SPF} -all\" but no CNAME: your DNS provider \
             seems to flatten or proxy this CNAME. Set the record to plain DNS (no \
             flattening, no proxying) so the records behind it can change without you.",
            d.target()
        )
    );
}

#[tokio::test]
async fn apex_cname_mismatch_with_the_domain_appended() {
    let d = Domain::new("example.com", None);
    let t = d.target();
    // The value written without its final dot: the zone appends its origin, as
    // many provider UIs do.
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("anypost.example.com."))
        .with(format!("anypost.example.com. IN CNAME {t}"));
    let dns = topology(zone, d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(o.records[0].state, Some(RecordState::Mismatch));
    assert_eq!(
        o.records[0].observed.as_deref(),
        Some(format!("CNAME → {t}.example.com (does not exist)").as_str())
    );
    let (code, message) = failure(&o);
    assert_eq!(code, "apex_cname_mismatch");
    assert_eq!(
        message,
        format!(
            "The verification CNAME anypost.example.com points to {t}.example.com, but it \
             must point to {t}. The target has example.com appended: the provider read the \
             value as a relative name. Enter it with a final dot ({t}.), or however your \
             provider marks a complete name. {OLD_VALUE}"
        )
    );
}

#[tokio::test]
async fn dkim_cname_missing_with_an_address_instead() {
    let d = Domain::new("example.com", None);
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("anypost1._domainkey."))
        .with("anypost1._domainkey.example.com. IN A 192.0.2.1");
    let dns = topology(zone, d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(
        states(&o),
        vec![RecordState::Ok, RecordState::Missing, RecordState::Ok]
    );
    assert_eq!(o.records[1].observed.as_deref(), Some("A 192.0.2.1"));
    let (code, message) = failure(&o);
    assert_eq!(code, "dkim_cname_missing");
    assert_eq!(
        message,
        format!(
            "The DKIM CNAME anypost1._domainkey.example.com was not found. Publish a CNAME \
             named anypost1._domainkey in the example.com zone, pointing to \
             anypost1._domainkey.{}. Found A 192.0.2.1 there instead: the record must be a \
             CNAME, not an address (A) record. If your provider proxies it (a CDN \
             \"proxied\" switch), set it to DNS only.",
            d.target()
        )
    );
}

#[tokio::test]
async fn dkim_cname_mismatch_when_selectors_are_swapped() {
    let d = Domain::new("example.com", None);
    let t = d.target();
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("anypost2._domainkey."))
        .with(format!(
            "anypost2._domainkey.example.com. IN CNAME anypost1._domainkey.{t}."
        ));
    let dns = topology(zone, d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(
        states(&o),
        vec![RecordState::Ok, RecordState::Ok, RecordState::Mismatch]
    );
    let (code, message) = failure(&o);
    assert_eq!(code, "dkim_cname_mismatch");
    assert_eq!(
        message,
        format!(
            "The DKIM CNAME anypost2._domainkey.example.com points to \
             anypost1._domainkey.{t}, but it must point to anypost2._domainkey.{t}. That \
             name is in Anypost's zone but belongs to another record: every record, domain \
             and namespace has its own target, so copy the value exactly as given for this \
             one. {OLD_VALUE}"
        )
    );
}

#[tokio::test]
async fn dkim_mismatch_when_the_zone_serves_another_key() {
    let d = Domain::new("example.com", None);
    let t = d.target();
    let operator = d
        .operator_zone()
        .without(|l| l.starts_with("anypost1._domainkey."))
        .with(format!(
            "anypost1._domainkey.{t}. IN TXT {}",
            txt_strings(&format!("v=DKIM1; k=rsa; p={}", key(9)))
        ));
    let dns = topology(d.customer_zone(), operator).await;
    let o = d.check(&dns).await;
    assert_eq!(
        states(&o),
        vec![RecordState::Ok, RecordState::KeyMismatch, RecordState::Ok]
    );
    let (code, message) = failure(&o);
    assert_eq!(code, "dkim_mismatch");
    assert_eq!(
        message,
        format!(
            "The DKIM CNAME anypost1._domainkey.example.com points to \
             anypost1._domainkey.{t}, but the DKIM record there does not carry this \
             domain's key (found p=MIICIjAN…9QIDAQAB, expected p=MIICIjAN…1QIDAQAB). \
             Check that the CNAME value is exactly anypost1._domainkey.{t}. Right after a \
             key change the previous key can still be served from caches: check again in \
             a few minutes."
        )
    );
}

#[tokio::test]
async fn chain_broken_when_the_target_does_not_exist() {
    let d = Domain::new("example.com", None);
    let t = d.target();
    // The operator's zone answers, but holds nothing for this token.
    let dns = topology(d.customer_zone(), ZoneFile::new(ZONE)).await;
    let o = d.check(&dns).await;
    assert_eq!(states(&o), vec![RecordState::ChainBroken; 3]);
    assert_eq!(
        o.records[0].observed.as_deref(),
        Some(format!("CNAME → {t} (does not exist)").as_str())
    );
    let (code, message) = failure(&o);
    assert_eq!(code, "chain_broken");
    assert_eq!(
        message,
        format!(
            "The verification CNAME anypost.example.com points to {t} as it should, but \
             the chain stops before Anypost's records: {t} does not exist. {THEIR_SIDE}"
        )
    );
}

/// The customer's CNAMEs are right but the operator's zone does not answer (a lame
/// delegation: the resolver gets SERVFAIL past the target). That is an outage on
/// Anypost's side, not evidence against the customer: no verdict, every record
/// unknown, so a verified domain is never demoted by it.
#[tokio::test]
async fn an_operator_zone_that_does_not_answer_gives_no_verdict() {
    let d = Domain::new("example.com", Some("track"));
    let dns = DnsTopology::start(
        &[d.customer_zone()],
        OperatorZone::Lame { zone: ZONE.into() },
    )
    .await;
    let o = d.check(&dns).await;
    assert!(
        matches!(&o.verdict, Verdict::Unknown(_)),
        "{:?}\n{:#?}",
        o.verdict,
        o.records
    );
    assert!(
        matches!(o.tracking, Some(Verdict::Unknown(_))),
        "{:?}",
        o.tracking
    );
    assert_eq!(states(&o), vec![RecordState::Unknown; 4]);
    assert!(
        o.records
            .iter()
            .all(|r| r.observed.as_deref() == Some("no answer (SERVFAIL)")),
        "{:#?}",
        o.records
    );
}

#[tokio::test]
async fn mx_missing_when_the_target_has_no_mx() {
    let d = Domain::new("example.com", None);
    let t = d.target();
    let operator = d.operator_zone().without(|l| l.contains(" MX "));
    let dns = topology(d.customer_zone(), operator).await;
    let o = d.check(&dns).await;
    assert_eq!(
        states(&o),
        vec![RecordState::MxMissing, RecordState::Ok, RecordState::Ok]
    );
    assert_eq!(
        o.records[0].observed.as_deref(),
        Some(format!("CNAME → {t}; no MX").as_str())
    );
    let (code, message) = failure(&o);
    assert_eq!(code, "mx_missing");
    assert_eq!(
        message,
        format!(
            "The verification CNAME anypost.example.com points to {t}, but no MX record \
             for {MX} resolves through it. {PROPAGATION_SHORT}"
        )
    );
}

#[tokio::test]
async fn spf_missing_when_the_target_has_no_spf() {
    let d = Domain::new("example.com", None);
    let t = d.target();
    let operator = d.operator_zone().without(|l| l.contains("v=spf1"));
    let dns = topology(d.customer_zone(), operator).await;
    let o = d.check(&dns).await;
    assert_eq!(
        states(&o),
        vec![RecordState::SpfMissing, RecordState::Ok, RecordState::Ok]
    );
    let (code, message) = failure(&o);
    assert_eq!(code, "spf_missing");
    assert_eq!(
        message,
        format!(
            "The verification CNAME anypost.example.com points to {t}, but no SPF record \
             (v=spf1 … include:{SPF}) resolves through it. {PROPAGATION_SHORT}"
        )
    );
}

#[tokio::test]
async fn a_tracking_failure_leaves_the_verdict_alone() {
    let d = Domain::new("example.com", Some("track"));
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("track.example.com."));
    let dns = topology(zone, d.operator_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(o.verdict, Verdict::Verified, "{:#?}", o.records);
    assert_eq!(o.records[3].state, Some(RecordState::Missing));
    match &o.tracking {
        Some(Verdict::Failed(f)) => {
            assert_eq!(f.code.as_str(), "tracking_cname_missing");
            assert_eq!(
                f.message,
                format!(
                    "The tracking CNAME track.example.com was not found. Publish a CNAME \
                     named track in the example.com zone, pointing to track.{}. {PROPAGATION}",
                    d.target()
                )
            );
        }
        other => panic!("expected a tracking failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_resolver_that_is_down_gives_no_verdict() {
    let d = Domain::new("example.com", Some("track"));
    let mut dns = topology(d.customer_zone(), d.operator_zone()).await;
    dns.stop_resolver();
    let resolver = Resolver::new(&[dns.resolver()], Duration::from_millis(300)).unwrap();
    let o = verify(&resolver, &d.name, &d.records, &d.expected).await;
    assert!(
        matches!(&o.verdict, Verdict::Unknown(m) if m.starts_with("Could not check anypost.example.com (")),
        "{:?}",
        o.verdict
    );
    assert!(matches!(o.tracking, Some(Verdict::Unknown(_))));
    assert_eq!(states(&o), vec![RecordState::Unknown; 4]);
}

#[tokio::test]
async fn a_fixed_cname_verifies_on_the_next_check() {
    let d = Domain::new("example.com", None);
    let broken = d
        .customer_zone()
        .without(|l| l.starts_with("anypost.example.com."))
        .with(format!("anypost.example.com. IN CNAME {}", d.target()));
    let dns = topology(broken, d.operator_zone()).await;
    assert_eq!(failure(&d.check(&dns).await).0, "apex_cname_mismatch");
    dns.set_zone(&d.customer_zone()).await;
    let o = d.check(&dns).await;
    assert_eq!(o.verdict, Verdict::Verified, "{:#?}", o.records);
}

/// `anypost-operator check`: the table, the verdict, and the exit status.
#[tokio::test]
async fn the_check_command_prints_records_and_exits_by_verdict() {
    let d = Domain::new("example.com", None);
    let zone = d
        .customer_zone()
        .without(|l| l.starts_with("anypost2._domainkey."));
    let mut dns = topology(zone, d.operator_zone()).await;
    let run = |resolver: std::net::SocketAddr, token: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_anypost-operator"))
                .args(["check", "example.com", "--zone", ZONE, "--token", &token])
                .args([
                    "--resolver",
                    &resolver.to_string(),
                    "--resolver-timeout",
                    "300ms",
                ])
                .env("ANYPOST_MX_HOST", MX)
                .env("ANYPOST_SPF_INCLUDE", SPF)
                .env_remove("ANYPOST_TRACKING_HOST")
                .output()
                .expect("running anypost-operator check")
        })
    };
    let t = d.target();

    let out = run(dns.resolver(), d.token.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].ends_with("STATE    OBSERVED"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("anypost.example.com ")
            && lines[1].ends_with(&format!("ok       CNAME → {t}")),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("anypost2._domainkey.example.com")
            && lines[3].ends_with("missing  no record"),
        "{stdout}"
    );
    assert!(stdout.contains("example.com: pending (dkim_cname_missing)\n  The DKIM CNAME anypost2._domainkey.example.com was not found."), "{stdout}");
    assert!(stdout.contains("note: DKIM keys not compared"), "{stdout}");

    dns.set_zone(&d.customer_zone()).await;
    let out = run(dns.resolver(), d.token.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("\nexample.com: verified\n"), "{stdout}");

    let out = run(dns.resolver(), "not-a-token".into()).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a token"));

    dns.stop_resolver();
    let out = run(dns.resolver(), d.token.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("example.com: unknown (resolver error)"),
        "{stdout}"
    );
}

/// The operator's own embedded server (src/dns) answering for its zone, as in
/// production, instead of the BIND stand-in.
mod embedded {
    use super::*;
    use anypost_operator::adapters::dns::embedded::{DnsServer, ZoneHandle};
    use anypost_operator::core::api::{
        DkimStatus, SelectorState, SelectorStatus, SendingDomain, SendingDomainSpec,
        SendingDomainStatus, TrackingSpec,
    };
    use anypost_operator::core::zone::{ZoneConfig, ZoneSettings, desired_zone};
    use std::net::SocketAddr;

    fn sending_domain(d: &Domain, tracking: bool) -> SendingDomain {
        let mut sd = SendingDomain::new(
            "example-com",
            SendingDomainSpec {
                domain: d.name.domain.clone(),
                dkim: None,
                tracking: tracking.then(|| TrackingSpec {
                    subdomain: "track".into(),
                }),
            },
        );
        sd.metadata.namespace = Some("acme".into());
        let selector = |n: u8, state| SelectorStatus {
            name: format!("anypost{n}"),
            state,
            public_key: key(n),
            key_bits: None,
            created_at: None,
            retire_at: None,
        };
        sd.status = Some(SendingDomainStatus {
            id: Some(naming::domain_id(&d.token)),
            dkim: Some(DkimStatus {
                secret_name: "example-com-dkim".into(),
                active_selector: "anypost1".into(),
                selectors: vec![
                    selector(1, SelectorState::Active),
                    selector(2, SelectorState::Standby),
                ],
                ..Default::default()
            }),
            ..Default::default()
        });
        sd
    }

    /// Serves `domains` from the embedded server on a free loopback port.
    async fn serve(domains: &[SendingDomain]) -> SocketAddr {
        let cfg = ZoneConfig::new(&ZoneSettings {
            zone: ZONE.into(),
            mx_host: MX.into(),
            spf_include: SPF.into(),
            tracking_host: TRACKING_HOST.into(),
            nameservers: vec![],
            nameserver_addresses: vec![],
            soa_contact: None,
            record_ttl: 1,
        })
        .expect("a valid zone configuration");
        let handle = ZoneHandle::new();
        handle.publish(desired_zone(
            &cfg,
            &anypost_operator::core::trust::Trust::as_written(),
            domains,
        ));
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("binding the embedded DNS server");
        let addr = server.local_addr();
        tokio::spawn(server.run(handle, vec![], futures::future::pending()));
        addr
    }

    #[tokio::test]
    async fn a_domain_verifies_through_the_embedded_zone() {
        let d = Domain::new("example.com", Some("track"));
        let addr = serve(&[sending_domain(&d, true)]).await;
        let dns = DnsTopology::start(
            &[d.customer_zone()],
            OperatorZone::At {
                zone: ZONE.into(),
                addr,
            },
        )
        .await;
        let o = d.check(&dns).await;
        assert_eq!(o.verdict, Verdict::Verified, "{:#?}", o.records);
        assert_eq!(o.tracking, Some(Verdict::Verified), "{:#?}", o.records);
    }

    #[tokio::test]
    async fn chain_broken_when_the_embedded_zone_does_not_hold_the_domain() {
        let d = Domain::new("example.com", None);
        let addr = serve(&[]).await;
        let dns = DnsTopology::start(
            &[d.customer_zone()],
            OperatorZone::At {
                zone: ZONE.into(),
                addr,
            },
        )
        .await;
        let o = d.check(&dns).await;
        assert_eq!(
            states(&o),
            vec![RecordState::ChainBroken; 3],
            "{:#?}",
            o.records
        );
        assert_eq!(failure(&o).0, "chain_broken");
    }
}

/// The whole loop: the operator (its embedded zone and its controller) against the
/// real control plane, verifying through unbound, driven with kubectl as a user
/// would.
mod through_the_operator {
    use super::*;
    use crate::support::dns_topology::reserve_port;
    use crate::support::{Operator, TestNs, eventually, random_suffix};
    use anyhow::{Context as _, ensure};
    use anypost_operator::core::api::{DomainState, SendingDomain, SendingDomainStatus};
    use kube::Api;

    const WAIT: Duration = Duration::from_secs(60);

    struct Setup {
        ns: TestNs,
        dns: DnsTopology,
        api: Api<SendingDomain>,
        name: &'static str,
        domain: String,
        _operator: Operator,
        verify_requests: u32,
    }

    impl Setup {
        /// An operator serving its zone on a free port, a resolver whose stub for
        /// the operator's zone points there, and a SendingDomain with tracking.
        async fn start(test: &str) -> Setup {
            Setup::start_with(test, "").await
        }

        /// [`Setup::start`], with `spec` (YAML lines) added to the SendingDomain's spec.
        async fn start_with(test: &str, spec: &str) -> Setup {
            let ns = TestNs::new(test).await;
            let run = ns.name.clone();
            // Held until the operator starts: the resolver is told of it first.
            let op_port = reserve_port();
            let op_dns = op_port.addr();
            let dns = DnsTopology::start(
                &[ZoneFile::new("example.com")],
                OperatorZone::At {
                    zone: ZONE.into(),
                    addr: op_dns,
                },
            )
            .await;
            op_port.release();
            let operator = Operator::start(
                test,
                &[
                    "--zone",
                    ZONE,
                    "--mx-host",
                    MX,
                    "--spf-include",
                    SPF,
                    "--tracking-host",
                    TRACKING_HOST,
                    "--namespace",
                    &ns.name,
                    "--selector",
                    &format!("anypost.com/e2e-run={run}"),
                    "--claim-scope",
                    &format!("anypost.com/e2e-run={run}"),
                    "--dns-listen",
                    &op_dns.to_string(),
                    "--http-listen",
                    "127.0.0.1:0",
                    "--resolver",
                    &dns.resolver().to_string(),
                    "--resolver-timeout",
                    "2s",
                    "--verified-grace",
                    "4s",
                ],
            );
            let domain = format!("shop-{}.example.com", random_suffix());
            let name = "shop";
            ns.apply_ok(&format!(
                "apiVersion: anypost.com/v1alpha1\nkind: SendingDomain\nmetadata:\n  \
                 name: {name}\n  labels:\n    anypost.com/e2e-run: \"{run}\"\nspec:\n  \
                 domain: {domain}\n  tracking:\n    subdomain: track\n{spec}"
            ));
            let api = ns.api();
            Setup {
                ns,
                dns,
                api,
                name,
                domain,
                _operator: operator,
                verify_requests: 0,
            }
        }

        /// The status, once the records are listed and published.
        async fn published(&self) -> SendingDomainStatus {
            eventually(WAIT, || async {
                let st = self.status().await?;
                ensure!(
                    condition(&st, "RecordsPublished").0 == "True" && st.dns_records.len() == 4,
                    "records not published yet: {:?}",
                    condition(&st, "RecordsPublished")
                );
                Ok(st)
            })
            .await
        }

        async fn status(&self) -> anyhow::Result<SendingDomainStatus> {
            self.api
                .get(self.name)
                .await?
                .status
                .context("no status yet")
        }

        /// Publishes the customer's zone: every record of `st` as listed, except
        /// the verification record, which `verification` writes (or leaves out).
        async fn publish(&self, st: &SendingDomainStatus, verification: Option<String>) {
            let mut zone = ZoneFile::new("example.com");
            for r in &st.dns_records {
                if r.purpose == anypost_operator::core::api::Purpose::Verification {
                    if let Some(line) = &verification {
                        zone.add(line.clone());
                    }
                } else {
                    zone.add(format!("{}. IN CNAME {}.", r.fqdn, r.value));
                }
            }
            self.dns.set_zone(&zone).await;
        }

        /// `kubectl annotate anypost.com/verify=<new value>`: check now.
        fn request_check(&mut self) {
            self.verify_requests += 1;
            self.ns.kubectl_ok(&[
                "annotate",
                "--overwrite",
                "sendingdomain",
                self.name,
                &format!("anypost.com/verify={}", self.verify_requests),
            ]);
        }
    }

    /// (status, reason) of a condition, or empty strings.
    fn condition(st: &SendingDomainStatus, type_: &str) -> (String, String) {
        st.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_typical_mistake_is_explained_and_the_fix_verifies() {
        let mut s = Setup::start("verify-fix").await;
        let st = s.published().await;
        let apex = &st.dns_records[0];
        let doubled = format!("{}.example.com", apex.fqdn);

        // The verification CNAME typed with the domain in its name.
        s.publish(&st, Some(format!("{doubled}. IN CNAME {}.", apex.value)))
            .await;
        s.request_check();
        // (Checks before the zone change also fail, without the hint: wait for it.)
        let hint = format!("A CNAME was found at {doubled} (→ {}) instead", apex.value);
        let (st, f) = eventually(WAIT, || async {
            let st = s.status().await?;
            let f = st.verification_failure.clone().context("no failure yet")?;
            ensure!(
                f.code == "apex_cname_missing" && f.message.contains(&hint),
                "failure {f:?}"
            );
            ensure!(
                st.tracking.as_ref().map(|t| t.state) == Some(DomainState::Verified),
                "tracking verifies on its own, but is {:?}",
                st.tracking
            );
            Ok((st, f))
        })
        .await;
        assert_eq!(
            f.message,
            format!(
                "The verification CNAME {fqdn} was not found. Publish a CNAME named {name} \
                 in the example.com zone, pointing to {value}. {hint}: the domain was typed \
                 as part of the name and the provider appended it again. Rename the record \
                 to just {name}.",
                fqdn = apex.fqdn,
                name = apex.name,
                value = apex.value
            )
        );
        assert_eq!(st.state, Some(DomainState::Pending));
        assert_eq!(condition(&st, "Verified").0, "False");

        // Fixed, then asked to check: kubectl wait sees Verified (how soon is
        // the benchmarks' business; the limit is generous).
        s.publish(
            &st,
            Some(format!("{}. IN CNAME {}.", apex.fqdn, apex.value)),
        )
        .await;
        s.request_check();
        s.ns.kubectl_ok(&[
            "wait",
            "--for=condition=Verified",
            &format!("sendingdomain/{}", s.name),
            "--timeout=60s",
        ]);
        let st = s.status().await.unwrap();
        assert_eq!(st.state, Some(DomainState::Verified));
        assert_eq!(st.verification_failure, None);
        assert!(
            st.dns_records
                .iter()
                .all(|r| r.state == Some(RecordState::Ok)),
            "{:#?}",
            st.dns_records
        );
        assert_eq!(st.dns_records[0].fqdn, format!("anypost.{}", s.domain));
        assert_eq!(condition(&st, "Ready").0, "True");
        // No DMARC record in the customer's zone: advice, with a record to paste,
        // and Ready stays True.
        assert_eq!(
            condition(&st, "DmarcPublished"),
            ("False".to_string(), "DmarcMissing".to_string())
        );
        let dmarc = st.dmarc.clone().expect("DMARC advice in status");
        assert_eq!(dmarc.name, "_dmarc.example.com");
        assert_eq!(
            dmarc.suggested.as_deref(),
            Some("v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com")
        );

        // The tracking CNAME goes away: TrackingVerified turns False, the domain
        // stays verified and Ready.
        let mut zone = ZoneFile::new("example.com");
        for r in &st.dns_records {
            if r.purpose != anypost_operator::core::api::Purpose::Tracking {
                zone.add(format!("{}. IN CNAME {}.", r.fqdn, r.value));
            }
        }
        s.dns.set_zone(&zone).await;
        s.request_check();
        let st = eventually(WAIT, || async {
            let st = s.status().await?;
            let code = st
                .tracking
                .as_ref()
                .and_then(|t| t.failure.as_ref())
                .map(|f| f.code.clone());
            ensure!(
                code.as_deref() == Some("tracking_cname_missing"),
                "tracking failure {code:?}"
            );
            Ok(st)
        })
        .await;
        assert_eq!(condition(&st, "TrackingVerified").0, "False");
        assert_eq!(condition(&st, "Ready").0, "True");
        assert_eq!(st.state, Some(DomainState::Verified));
        assert_eq!(st.verification_failure, None);
    }

    /// A verified SendingDomain is deleted and re-applied under the same name for
    /// another domain (a GitOps prune and re-sync) while the operator is busy
    /// regenerating its keys. The reconcile still running for the deleted object
    /// must write nothing onto the new one: the new object is checked on its own
    /// and shows nothing of the old object's verification, records or keys.
    #[tokio::test]
    async fn a_recreated_domain_inherits_nothing_from_the_object_it_replaces() {
        // 4096-bit keys: regenerating them keeps a reconcile busy for seconds.
        let mut s = Setup::start_with("verify-recreate", "  dkim:\n    keyBits: 4096\n").await;
        let st = s.published().await;
        let apex = st.dns_records[0].clone();
        s.publish(
            &st,
            Some(format!("{}. IN CNAME {}.", apex.fqdn, apex.value)),
        )
        .await;
        s.request_check();
        let verified = eventually(WAIT, || async {
            let sd = s.api.get(s.name).await?;
            let st = sd.status.clone().context("no status")?;
            ensure!(st.state == Some(DomainState::Verified), "not verified yet");
            Ok(sd)
        })
        .await;
        let old_uid = verified.metadata.uid.clone().unwrap();

        // The keys go missing: the operator regenerates both (seconds at 4096 bits).
        // Meanwhile the object is replaced by one for a domain nobody published.
        s.ns.kubectl_ok(&["delete", "secret", "shop-dkim"]);
        s.ns.kubectl_ok(&["delete", "sendingdomain", s.name, "--wait=true"]);
        let other = format!("other-{}.example.com", random_suffix());
        let run = s.ns.name.clone();
        s.ns.apply_ok(&format!(
            "apiVersion: anypost.com/v1alpha1\nkind: SendingDomain\nmetadata:\n  \
             name: {}\n  labels:\n    anypost.com/e2e-run: \"{run}\"\nspec:\n  \
             domain: {other}\n  dkim:\n    keyBits: 1024\n",
            s.name
        ));
        let fresh = s.api.get(s.name).await.unwrap();
        let new_uid = fresh.metadata.uid.clone().unwrap();
        assert_ne!(new_uid, old_uid, "the SendingDomain was re-created");

        // The new object gets checked for its own domain and fails as it should.
        let st = eventually(WAIT, || async {
            let st = s.status().await?;
            ensure!(
                st.last_checked_time.is_some()
                    && st
                        .dns_records
                        .first()
                        .is_some_and(|r| r.fqdn == format!("anypost.{other}"))
                    && st.verification_failure.is_some(),
                "not checked for {other} yet: {:?}",
                st.verification_failure
            );
            Ok(st)
        })
        .await;
        assert_eq!(st.state, Some(DomainState::Pending), "{st:#?}");
        assert_eq!(st.last_verified_time, None, "{st:#?}");
        assert_eq!(
            st.verification_failure.as_ref().map(|f| f.code.as_str()),
            Some("apex_cname_missing")
        );
        assert_eq!(condition(&st, "Ready").0, "False");
        assert!(
            st.dns_records
                .iter()
                .all(|r| r.fqdn.ends_with(&other) && r.state != Some(RecordState::Ok)),
            "{:#?}",
            st.dns_records
        );
        // The Secret belongs to the new object, and status publishes its keys.
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = s.ns.api();
        let secret = eventually(WAIT, || async {
            let secret = secrets.get("shop-dkim").await?;
            let owners: Vec<String> = secret
                .metadata
                .owner_references
                .iter()
                .flatten()
                .map(|o| o.uid.clone())
                .collect();
            ensure!(owners == [new_uid.clone()], "owned by {owners:?}");
            Ok(secret)
        })
        .await;
        let data = secret.data.unwrap();
        let dkim = st.dkim.as_ref().unwrap();
        for sel in &dkim.selectors {
            let pem = std::str::from_utf8(&data[&format!("{}.key", sel.name)].0).unwrap();
            let key = anypost_operator::core::dkim::parse_pem(pem).unwrap();
            assert_eq!(key.public_key, sel.public_key, "{}", sel.name);
            assert_eq!(key.bits, 1024, "{}", sel.name);
        }
        s.request_check();
        let st = eventually(WAIT, || async {
            let st = s.status().await?;
            ensure!(
                st.observed_verify_request.as_deref()
                    == Some(s.verify_requests.to_string().as_str()),
                "check not done yet"
            );
            Ok(st)
        })
        .await;
        assert_eq!(st.state, Some(DomainState::Pending));
    }

    #[tokio::test]
    async fn resolver_errors_keep_the_state_and_lost_records_end_pending_after_grace() {
        let mut s = Setup::start("verify-grace").await;
        let st = s.published().await;
        let apex = st.dns_records[0].clone();
        s.publish(
            &st,
            Some(format!("{}. IN CNAME {}.", apex.fqdn, apex.value)),
        )
        .await;
        s.request_check();
        eventually(WAIT, || async {
            let st = s.status().await?;
            ensure!(st.state == Some(DomainState::Verified), "not verified yet");
            Ok(())
        })
        .await;

        // The resolver goes away: no evidence, Verified=Unknown, still verified.
        s.dns.stop_resolver();
        s.request_check();
        eventually(WAIT, || async {
            let st = s.status().await?;
            ensure!(
                condition(&st, "Verified") == ("Unknown".into(), "ResolverError".into()),
                "Verified is {:?}",
                condition(&st, "Verified")
            );
            ensure!(
                st.state == Some(DomainState::Verified),
                "state {:?}",
                st.state
            );
            Ok(())
        })
        .await;
        s.dns.restart_resolver().await;

        // The verification CNAME disappears: the failure shows at once, the state
        // stays verified for the grace period (4s here), then returns to pending.
        s.publish(&st, None).await;
        s.request_check();
        eventually(WAIT, || async {
            let st = s.status().await?;
            let code = st.verification_failure.as_ref().map(|f| f.code.clone());
            ensure!(
                code.as_deref() == Some("apex_cname_missing"),
                "failure {code:?}"
            );
            ensure!(
                st.state == Some(DomainState::Verified),
                "state {:?}",
                st.state
            );
            Ok(())
        })
        .await;
        eventually(WAIT, || async {
            let st = s.status().await?;
            ensure!(
                st.state == Some(DomainState::Pending),
                "state {:?}",
                st.state
            );
            Ok(())
        })
        .await;
    }
}

/// `check --namespace`: the token from the identity key in the cluster, the
/// expected DKIM keys and the tracking subdomain from the SendingDomain.
#[tokio::test]
async fn the_check_command_reads_the_cluster() {
    use crate::support::{TestNs, cluster};
    use anypost_operator::core::api::SendingDomain;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;
    use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};

    let ns = TestNs::new("verify-check-cmd").await;
    let secrets: Api<Secret> = ns.api();
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("anypost-operator-identity".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "identity.key".to_string(),
                    ByteString(IDENTITY_KEY.to_vec()),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Not labelled for any test's operator: nothing reconciles it, so the status
    // written here stays.
    ns.apply_ok(
        "apiVersion: anypost.com/v1alpha1\nkind: SendingDomain\nmetadata:\n  name: example-com\n\
         spec:\n  domain: example.com\n  tracking:\n    subdomain: track\n",
    );
    let d = Domain::in_namespace("example.com", Some("track"), &ns.name);
    // The cluster's anypost2 key differs from the one the zone serves.
    let api: Api<SendingDomain> = ns.api();
    api.patch_status(
        "example-com",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {
            "id": naming::domain_id(&d.token),
            "dkim": {
                "secretName": "example-com-dkim",
                "activeSelector": "anypost1",
                "selectors": [
                    {"name": "anypost1", "state": "active", "publicKey": key(1)},
                    {"name": "anypost2", "state": "standby", "publicKey": key(9)},
                ],
            },
        }})),
    )
    .await
    .unwrap();

    let dns = topology(d.customer_zone(), d.operator_zone()).await;
    let (resolver, namespace) = (dns.resolver().to_string(), ns.name.clone());
    let kubeconfig = cluster().kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_anypost-operator"))
            .args([
                "check",
                "example.com",
                "--zone",
                ZONE,
                "--namespace",
                &namespace,
            ])
            .args(["--operator-namespace", &namespace, "--resolver", &resolver])
            .env("KUBECONFIG", kubeconfig)
            .env("ANYPOST_MX_HOST", MX)
            .env("ANYPOST_SPF_INCLUDE", SPF)
            .env("ANYPOST_TRACKING_HOST", TRACKING_HOST)
            .output()
            .expect("running anypost-operator check")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[1].contains(" ok ") && lines[1].ends_with(&format!("CNAME → {}", d.target())),
        "{stdout}"
    );
    assert!(lines[3].contains(" key_mismatch "), "{stdout}");
    assert!(lines[4].starts_with("track.example.com "), "{stdout}");
    assert!(
        stdout.contains("example.com: pending (dkim_mismatch)"),
        "{stdout}"
    );
    assert!(stdout.contains("tracking: verified"), "{stdout}");
    assert!(!stdout.contains("note:"), "{stdout}");
}
