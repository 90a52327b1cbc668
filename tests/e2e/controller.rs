//! The controller against the real control plane: identity, keys, records,
//! status, conflicts, stability, and crash safety.
//!
//! Each test runs its own operator process, scoped with `--selector` to the
//! SendingDomains the test labels, so tests running in parallel never touch each
//! other's objects. The verification resolver points at a closed port: checks are
//! inconclusive (`Verified=Unknown`), which is all these tests need.

use crate::support::dns_topology::free_port;
use crate::support::{Operator, TestNs, eventually, metric, metric_or_absent, random_suffix};
use anyhow::{Context as _, anyhow, ensure};
use anypost_operator::adapters::kube::leader;
use anypost_operator::core::api::{DomainState, Purpose, SelectorState, SendingDomain};
use anypost_operator::core::dkim;
use anypost_operator::core::naming;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const ZONE: &str = "dns.anypost.test";
const WAIT: Duration = Duration::from_secs(60);

/// The flags of a test operator whose identity and lease live in `home`, managing
/// the SendingDomains labelled `anypost.com/e2e-run=<run>`, with its DNS and HTTP
/// on free ports and a resolver that never answers.
pub fn operator_args(home: &str, run: &str) -> Vec<String> {
    [
        "--zone",
        ZONE,
        "--mx-host",
        "mx.anypost.test",
        "--spf-include",
        "spf.anypost.test",
        "--tracking-host",
        "t.anypost.test",
        "--namespace",
        home,
        "--selector",
        &format!("anypost.com/e2e-run={run}"),
        // Claims are judged among this test's SendingDomains only: tests running
        // side by side may use the same domains.
        "--claim-scope",
        &format!("anypost.com/e2e-run={run}"),
        "--dns-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--resolver",
        "127.0.0.1:9",
        "--resolver-timeout",
        "300ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// [`operator_args`] with `flags` set: a flag already there gets the new value,
/// any other is added.
pub fn operator_args_with(home: &str, run: &str, flags: &[(&str, &str)]) -> Vec<String> {
    let mut args = operator_args(home, run);
    for (flag, value) in flags {
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
    }
    args
}

/// Starts a test operator (see [`operator_args`]) with `extra` flags, which must
/// not repeat those (clap refuses a flag given twice).
pub fn operator_with(
    name: &str,
    home: &str,
    run: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Operator {
    let mut args = operator_args(home, run);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Operator::start_with_env(name, &args, env)
}

/// Starts a test operator with the default flags and `extra`, its `/metrics` on a
/// known address, returned beside it.
pub fn operator_with_metrics(
    name: &str,
    home: &str,
    run: &str,
    extra: &[&str],
) -> (Operator, SocketAddr) {
    let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut args = operator_args_with(home, run, &[("--http-listen", &http.to_string())]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Operator::start(name, &args), http)
}

/// Starts a test operator with the default flags.
pub fn operator(name: &str, home: &str, run: &str, env: &[(&str, &str)]) -> Operator {
    operator_with(name, home, run, &[], env)
}

/// The leader Lease of the test operators of `run` (each selector elects its own).
pub fn lease_of(run: &str) -> String {
    leader::lease_name(None, Some(&format!("anypost.com/e2e-run={run}")))
}

/// A SendingDomain manifest labelled for `run`.
pub fn manifest(name: &str, run: &str, spec: &str) -> String {
    format!(
        "apiVersion: anypost.com/v1alpha1\nkind: SendingDomain\nmetadata:\n  name: {name}\n  labels:\n    anypost.com/e2e-run: \"{run}\"\nspec:\n{spec}"
    )
}

/// The domain's token (its names in the operator's zone), from `status.id`.
pub fn token(sd: &SendingDomain) -> String {
    let id = sd
        .status
        .as_ref()
        .and_then(|s| s.id.clone())
        .expect("status.id");
    id.strip_prefix("domain_")
        .expect("domain_ prefix")
        .to_string()
}

/// `(status, reason, message)` of the condition `type_`, if set.
pub fn condition(sd: &SendingDomain, type_: &str) -> Option<(String, String, String)> {
    sd.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the domain has keys and published records.
pub async fn wait_published(api: &Api<SendingDomain>, name: &str) -> SendingDomain {
    eventually(WAIT, || async {
        let sd = api.get(name).await?;
        let keys = condition(&sd, "KeysReady");
        let published = condition(&sd, "RecordsPublished");
        ensure!(
            keys.as_ref().is_some_and(|c| c.0 == "True")
                && published.as_ref().is_some_and(|c| c.0 == "True"),
            "KeysReady={keys:?} RecordsPublished={published:?}"
        );
        Ok::<_, anyhow::Error>(sd)
    })
    .await
}

fn secret_keys(s: &Secret) -> BTreeMap<String, ByteString> {
    s.data.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_domain_gets_keys_records_and_status() {
    let ns = TestNs::new("lifecycle").await;
    let run = ns.name.clone();
    let (_op, http) = operator_with_metrics("lifecycle", &ns.name, &run, &[]);
    ns.apply_ok(&manifest(
        "example-com",
        &run,
        "  domain: example.com\n  tracking:\n    subdomain: track\n",
    ));
    let api: Api<SendingDomain> = ns.api();
    let sd = wait_published(&api, "example-com").await;
    let st = sd.status.clone().unwrap();

    // The id and every target derive from the identity key, exactly as documented.
    let identity: Api<Secret> = ns.api();
    let id_secret = identity.get("anypost-operator-identity").await.unwrap();
    let key = id_secret.data.unwrap()["identity.key"].0.clone();
    assert_eq!(key.len(), 32);
    let token = naming::token(&key, &ns.name, "example.com");
    assert_eq!(st.id.as_deref(), Some(format!("domain_{token}").as_str()));
    let got: Vec<_> = st
        .dns_records
        .iter()
        .map(|r| {
            (
                r.type_.as_str(),
                r.name.as_str(),
                r.value.clone(),
                r.purpose,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "CNAME",
                "anypost",
                format!("{token}.{ZONE}"),
                Purpose::Verification
            ),
            (
                "CNAME",
                "anypost1._domainkey",
                format!("anypost1._domainkey.{token}.{ZONE}"),
                Purpose::Dkim
            ),
            (
                "CNAME",
                "anypost2._domainkey",
                format!("anypost2._domainkey.{token}.{ZONE}"),
                Purpose::Dkim
            ),
            (
                "CNAME",
                "track",
                format!("track.{token}.{ZONE}"),
                Purpose::Tracking
            ),
        ]
    );
    assert_eq!(st.state, Some(DomainState::Pending));
    assert_eq!(st.observed_generation, sd.metadata.generation);

    // The Secret: both keys as PKCS#8 PEM, the active selector, owned and labelled.
    let secrets: Api<Secret> = ns.api();
    let secret = secrets.get("example-com-dkim").await.unwrap();
    let data = secret_keys(&secret);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["anypost1.key", "anypost2.key", "selector"]
    );
    assert_eq!(data["selector"].0, b"anypost1");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("anypost-operator")
    );
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("SendingDomain", Some(true))
    );
    assert_eq!(Some(&owner.uid), sd.metadata.uid.as_ref());
    let dk = st.dkim.as_ref().unwrap();
    assert_eq!(dk.secret_name, "example-com-dkim");
    assert_eq!(dk.active_selector, "anypost1");
    for (sel, status) in ["anypost1", "anypost2"].iter().zip(&dk.selectors) {
        let pem = std::str::from_utf8(&data[&format!("{sel}.key")].0).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{pem:.40}"
        );
        let key = dkim::parse_pem(pem).unwrap();
        assert_eq!(key.bits, 2048);
        assert_eq!(status.public_key, key.public_key, "{sel}");
    }
    assert_eq!(
        dk.selectors.iter().map(|s| s.state).collect::<Vec<_>>(),
        [SelectorState::Active, SelectorState::Standby]
    );

    // A later reconcile (asked for with the verify annotation) leaves the Secret
    // alone, and reads it from the operator's watch cache, not the API.
    let rv = secret.resource_version();
    // A source not read from yet has no series.
    let reads = |source: &str| {
        metric_or_absent(
            http,
            &format!("anypost_secret_reads_total{{source=\"{source}\"}}"),
        )
        .unwrap()
        .unwrap_or(0.0)
    };
    let (api_reads, cache_reads) = (reads("api"), reads("cache"));
    assert!(api_reads >= 1.0, "the first reconcile reads the API");
    ns.kubectl(&["annotate", "sd", "example-com", "anypost.com/verify=1"]);
    eventually(WAIT, || async {
        let sd = api.get("example-com").await?;
        let seen = sd.status.and_then(|s| s.observed_verify_request);
        ensure!(
            seen.as_deref() == Some("1"),
            "observedVerifyRequest={seen:?}"
        );
        ensure!(reads("cache") > cache_reads, "no read from the cache yet");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    assert_eq!(reads("api"), api_reads, "steady state reads no Secret live");
    // The leader counts its SendingDomains by Ready: this one waits for its CNAMEs.
    eventually(WAIT, || async {
        let pending = metric(
            http,
            r#"anypost_sendingdomains{ready="False",reason="Pending"}"#,
        )
        .map_err(|e| anyhow!(e))?;
        ensure!(pending == 1.0, "{pending} pending");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    assert_eq!(
        secrets
            .get("example-com-dkim")
            .await
            .unwrap()
            .resource_version(),
        rv
    );

    // What users see.
    let table = String::from_utf8(ns.kubectl(&["get", "sd", "-o", "wide"]).stdout).unwrap();
    let header: Vec<_> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "DOMAIN", "STATUS", "FAILURE", "TRACKING", "AGE", "ID", "SELECTOR", "LAST",
            "CHECKED"
        ]
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.contains("example.com")
            && row.contains("pending")
            && row.contains(&format!("domain_{token}"))
            && row.contains("anypost1"),
        "{row}"
    );
    let events = String::from_utf8(
        ns.kubectl(&["get", "events", "-o", "custom-columns=R:.reason"])
            .stdout,
    )
    .unwrap();
    assert!(events.contains("KeysGenerated"), "{events}");
}

#[tokio::test]
async fn record_names_are_relative_to_the_registered_domain() {
    let ns = TestNs::new("apex").await;
    let run = ns.name.clone();
    let _op = operator("apex", &ns.name, &run, &[]);
    let cases = [
        ("a", "mail.example.com", "anypost.mail"),
        ("b", "mail.example.co.uk", "anypost.mail"),
        ("c", "shop.example.com.au", "anypost.shop"),
        // Private-section suffixes (github.io) are not honoured: the registered
        // domain is the ICANN one.
        ("d", "docs.example.github.io", "anypost.docs.example"),
    ];
    for (name, domain, _) in cases {
        ns.apply_ok(&manifest(
            name,
            &run,
            &format!("  domain: {domain}\n  dkim:\n    keyBits: 1024\n"),
        ));
    }
    let api: Api<SendingDomain> = ns.api();
    for (name, domain, expected) in cases {
        let sd = wait_published(&api, name).await;
        let rec = &sd.status.unwrap().dns_records;
        assert_eq!(rec[0].name, expected, "{domain}");
        assert_eq!(rec[0].fqdn, format!("anypost.{domain}"));
        assert_eq!(
            rec[1].name,
            format!("anypost1._domainkey{}", &expected["anypost".len()..])
        );
    }
}

#[tokio::test]
async fn a_bare_public_suffix_is_reported_and_nothing_is_made() {
    let ns = TestNs::new("suffix").await;
    let run = ns.name.clone();
    let _op = operator("suffix", &ns.name, &run, &[]);
    ns.apply_ok(&manifest("co-uk", &run, "  domain: co.uk\n"));
    let api: Api<SendingDomain> = ns.api();
    let (status, reason, message) = eventually(WAIT, || async {
        let sd = api.get("co-uk").await?;
        condition(&sd, "Ready").ok_or_else(|| anyhow!("no Ready condition yet"))
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PublicSuffix")
    );
    assert_eq!(
        message,
        "spec.domain \"co.uk\" is a public suffix (like com or co.uk), not a registered domain; use a domain registered under it, e.g. example.co.uk"
    );
    let sd = api.get("co-uk").await.unwrap();
    assert!(sd.status.unwrap().dns_records.is_empty());
    let secrets: Api<Secret> = ns.api();
    assert!(secrets.get_opt("co-uk-dkim").await.unwrap().is_none());
}

/// The same new domain claimed by `shared` in `first` (published first), then in
/// `second`: returns the domain, both APIs, and the younger claim's Ready
/// condition once it says DomainConflict.
async fn claim_twice(
    first: &TestNs,
    second: &TestNs,
    run: &str,
) -> (
    String,
    Api<SendingDomain>,
    Api<SendingDomain>,
    (String, String, String),
) {
    let domain = format!("shared-{}.example.com", random_suffix());
    let spec = format!("  domain: {domain}\n  dkim:\n    keyBits: 1024\n");
    first.apply_ok(&manifest("shared", run, &spec));
    let a: Api<SendingDomain> = first.api();
    wait_published(&a, "shared").await;
    second.apply_ok(&manifest("shared", run, &spec));
    let b: Api<SendingDomain> = second.api();
    let ready = eventually(WAIT, || async {
        let sd = b.get("shared").await?;
        let c = condition(&sd, "Ready").ok_or_else(|| anyhow!("no Ready yet"))?;
        ensure!(c.1 == "DomainConflict", "Ready={c:?}");
        Ok::<_, anyhow::Error>(c)
    })
    .await;
    (domain, a, b, ready)
}

#[tokio::test]
async fn the_older_claim_keeps_a_domain_and_the_younger_takes_over_after_it() {
    let first = TestNs::new("conflict-a").await;
    let second = TestNs::new("conflict-b").await;
    let run = format!("conflict-{}", random_suffix());
    let _op = operator("conflict", &first.name, &run, &[]);
    let (domain, a, b, (status, _reason, message)) = claim_twice(&first, &second, &run).await;
    assert_eq!(status, "False");
    let sd = b.get("shared").await.unwrap();
    let st = sd.status.as_ref().unwrap();
    let apex = &st.dns_records[0];
    assert_eq!(
        message,
        format!(
            "{domain} is claimed by another SendingDomain; nothing is published for this one. If the domain is yours, publish this claim's verification record ({} CNAME {}): once it resolves, this claim takes the domain over. It also takes over if the other claim is deleted.",
            apex.fqdn, apex.value
        )
    );
    assert!(
        !message.contains(&first.name),
        "tenants must not learn of each other"
    );
    // Its own id and records are listed for its owner; no keys are made for it.
    let token = naming::token_from_id(st.id.as_deref().unwrap()).unwrap();
    assert!(apex.value.starts_with(token), "{apex:?}");
    assert_eq!(st.dns_records.len(), 3);
    assert!(st.dkim.is_none());
    let secrets: Api<Secret> = second.api();
    assert!(secrets.get_opt("shared-dkim").await.unwrap().is_none());

    // The older claim goes; the younger one is published without anyone touching it.
    a.delete("shared", &DeleteParams::default()).await.unwrap();
    let sd = wait_published(&b, "shared").await;
    assert!(sd.status.unwrap().id.is_some());
}

/// A replica that loses the Lease and wins it back starts a new controller. Its
/// view of the other claims must follow the API again: a claim deleted after the
/// hand-back still hands the domain over.
#[tokio::test]
async fn a_conflict_still_hands_over_after_the_lease_was_lost_and_regained() {
    let first = TestNs::new("regain-a").await;
    let second = TestNs::new("regain-b").await;
    let run = format!("regain-{}", random_suffix());
    let mut op = operator("regain", &first.name, &run, &[]);
    let (_, a, b, _) = claim_twice(&first, &second, &run).await;

    // Another holder takes the Lease for one term, then stops renewing it.
    let leases: Api<Lease> = first.api();
    let lease_name = lease_of(&run);
    eventually(WAIT, || async {
        let mut lease = leases.get(&lease_name).await?;
        let spec = lease.spec.get_or_insert_with(Default::default);
        let now = MicroTime(jiff::Timestamp::now());
        spec.holder_identity = Some("another-replica".into());
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        leases
            .replace(&lease_name, &PostParams::default(), &lease)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
    .await;
    op.wait_for_log("stopped the controller: no longer the leader", WAIT)
        .await;
    eventually(WAIT, || async {
        let starts = op.logs().matches("starting the controller").count();
        ensure!(starts >= 2, "the controller started {starts} time(s)");
        Ok::<_, anyhow::Error>(())
    })
    .await;

    a.delete("shared", &DeleteParams::default()).await.unwrap();
    let sd = wait_published(&b, "shared").await;
    assert!(sd.status.unwrap().id.is_some());
}

/// Deleting a SendingDomain and applying the same manifest again gives a new
/// object (new UID) with the same targets and id, a Secret owned by the new
/// object only, and a status written afresh for it: nothing of the old one's.
/// (verify.rs `a_recreated_domain_inherits_nothing_from_the_object_it_replaces`
/// covers a re-creation racing a busy reconcile, for another domain.)
#[tokio::test]
async fn delete_and_reapply_gives_the_same_targets() {
    let ns = TestNs::new("stable").await;
    let run = ns.name.clone();
    let _op = operator("stable", &ns.name, &run, &[]);
    let m = manifest(
        "stable",
        &run,
        "  domain: stable.example.com\n  dkim:\n    keyBits: 1024\n  tracking:\n    subdomain: t\n",
    );
    ns.apply_ok(&m);
    let api: Api<SendingDomain> = ns.api();
    let old = wait_published(&api, "stable").await;
    let old_uid = old.metadata.uid.clone().unwrap();
    let before = old.status.unwrap();
    ns.kubectl_ok(&["delete", "sd", "stable", "--wait=true"]);
    assert!(
        api.get_opt("stable").await.unwrap().is_none(),
        "still there after the delete"
    );
    // Times in status have whole seconds: re-create in a later second than the
    // old status's last change, so that a time carried over shows.
    let latest = before
        .conditions
        .iter()
        .map(|c| c.last_transition_time.0)
        .chain(before.last_checked_time.iter().map(|t| t.0))
        .max()
        .unwrap();
    eventually(WAIT, || async {
        let now = jiff::Timestamp::now();
        ensure!(
            now.as_second() > latest.as_second(),
            "still the second of {latest}"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    ns.apply_ok(&m);
    let new = wait_published(&api, "stable").await;
    let new_uid = new.metadata.uid.clone().unwrap();
    assert_ne!(new_uid, old_uid, "the SendingDomain was not re-created");
    let after = new.status.clone().unwrap();
    let values = |s: &anypost_operator::core::api::SendingDomainStatus| {
        s.dns_records
            .iter()
            .map(|r| (r.name.clone(), r.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&before), values(&after));
    assert_eq!(before.id, after.id);

    // Nothing of the old status: every condition changed after the new object
    // was created, for its generation.
    let created = new.metadata.creation_timestamp.clone().unwrap();
    assert!(!after.conditions.is_empty());
    for c in &after.conditions {
        assert!(
            c.last_transition_time.0 >= created.0,
            "{} last changed at {:?}, before the object was created at {:?}",
            c.type_,
            c.last_transition_time.0,
            created.0
        );
        assert_eq!(
            c.observed_generation, new.metadata.generation,
            "{}",
            c.type_
        );
    }
    if let Some(t) = &after.last_checked_time {
        assert!(
            t.0 >= created.0,
            "checked at {:?}, before {:?}",
            t.0,
            created.0
        );
    }
    assert_eq!(after.observed_generation, new.metadata.generation);

    // The Secret is the new object's alone (the old one's goes with it), and
    // status publishes the keys it holds.
    let secrets: Api<Secret> = ns.api();
    let secret = eventually(WAIT, || async {
        let secret = secrets.get("stable-dkim").await?;
        let owners: Vec<String> = secret
            .owner_references()
            .iter()
            .map(|o| o.uid.clone())
            .collect();
        ensure!(owners == [new_uid.clone()], "owned by {owners:?}");
        Ok::<_, anyhow::Error>(secret)
    })
    .await;
    let st = api.get("stable").await.unwrap().status.unwrap();
    let dk = st.dkim.unwrap();
    let data = secret_keys(&secret);
    for sel in &dk.selectors {
        let pem = std::str::from_utf8(&data[&format!("{}.key", sel.name)].0).unwrap();
        assert_eq!(dkim::parse_pem(pem).unwrap().public_key, sel.public_key);
    }
}

#[tokio::test]
async fn a_crash_between_storing_keys_and_writing_status_loses_nothing() {
    // The binary under test is built with the same profile and features as this
    // test: without the hook it could never crash, and the test would prove nothing.
    if !cfg!(any(debug_assertions, feature = "crash-points")) {
        panic!(
            "the crash hook is compiled out of release builds: run this test in a debug build, or with --features crash-points"
        );
    }
    let ns = TestNs::new("crash").await;
    let run = ns.name.clone();
    let mut crashing = operator(
        "crash",
        &ns.name,
        &run,
        &[("ANYPOST_CRASH_AFTER", "dkim-secret")],
    );
    ns.apply_ok(&manifest(
        "crash",
        &run,
        "  domain: crash.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let secrets: Api<Secret> = ns.api();
    let stored = eventually(WAIT, || async {
        let s = secrets
            .get_opt("crash-dkim")
            .await?
            .context("no Secret yet")?;
        Ok::<_, anyhow::Error>(s)
    })
    .await;
    crashing.wait_for_crash_at("dkim-secret", WAIT).await;
    let api: Api<SendingDomain> = ns.api();
    let sd = api.get("crash").await.unwrap();
    assert!(
        sd.status.as_ref().and_then(|s| s.dkim.as_ref()).is_none(),
        "the process died before writing status"
    );
    drop(crashing);

    let _op = operator("crash-restarted", &ns.name, &run, &[]);
    let sd = wait_published(&api, "crash").await;
    let after = secrets.get("crash-dkim").await.unwrap();
    assert_eq!(
        secret_keys(&after),
        secret_keys(&stored),
        "keys were regenerated"
    );
    let dk = sd.status.unwrap().dkim.unwrap();
    for (sel, status) in ["anypost1", "anypost2"].iter().zip(&dk.selectors) {
        let pem = std::str::from_utf8(&secret_keys(&stored)[&format!("{sel}.key")].0)
            .unwrap()
            .to_string();
        assert_eq!(status.public_key, dkim::parse_pem(&pem).unwrap().public_key);
    }
}

#[tokio::test]
async fn an_imported_identity_key_decides_the_targets_across_restarts() {
    let ns = TestNs::new("identity").await;
    let run = ns.name.clone();
    let key: Vec<u8> = (0u8..32).collect();
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
                    ByteString(key.clone()),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut op = operator("identity", &ns.name, &run, &[]);
    ns.apply_ok(&manifest(
        "restored",
        &run,
        "  domain: restored.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let api: Api<SendingDomain> = ns.api();
    let sd = wait_published(&api, "restored").await;
    let expected = format!(
        "domain_{}",
        naming::token(&key, &ns.name, "restored.example.com")
    );
    assert_eq!(sd.status.unwrap().id, Some(expected.clone()));

    op.restart();
    ns.kubectl(&["annotate", "sd", "restored", "anypost.com/verify=again"]);
    let sd = eventually(WAIT, || async {
        let sd = api.get("restored").await?;
        let st = sd.status.clone().context("no status")?;
        ensure!(
            st.observed_verify_request.as_deref() == Some("again"),
            "not reconciled after restart yet"
        );
        Ok::<_, anyhow::Error>(sd)
    })
    .await;
    assert_eq!(sd.status.unwrap().id, Some(expected));
    let unchanged = secrets.get("anypost-operator-identity").await.unwrap();
    assert_eq!(unchanged.data.unwrap()["identity.key"].0, key);
}

#[tokio::test]
async fn a_missing_operator_namespace_is_a_clear_startup_error() {
    let missing = format!("no-such-ns-{}", random_suffix());
    let mut op = operator("missing-ns", &missing, "none", &[]);
    eventually(WAIT, || {
        let running = op.is_running();
        async move {
            if running {
                Err("still running")
            } else {
                Ok(())
            }
        }
    })
    .await;
    let logs = op.logs();
    assert!(
        logs.contains(&format!(
            "namespace \"{missing}\" does not exist: create it, or pass --namespace"
        )),
        "{logs}"
    );
}
