//! GitOps tools' view of SendingDomains: Argo CD's health check
//! (`deploy/argocd/anypost.com/SendingDomain/health.lua`, run in gopher-lua as
//! Argo CD runs it) and the kstatus library Flux waits with, each on real objects
//! read back from the apiserver after a real operator drove them into a state:
//! not yet reconciled, records not publishable, waiting for the owner's DNS,
//! verified, in its grace period, a spec change not yet observed, and the states
//! that need a human (public suffix, conflicting claim, foreign Secret).

use crate::controller::{ZONE, manifest, operator_args_with, wait_published};
use crate::support::dns_topology::{DnsTopology, OperatorZone, ZoneFile, free_port};
use crate::support::tools::{Verdict, argocd_health, kstatus, run, test_tool};
use crate::support::{Operator, TestNs, eventually, random_suffix, repo_root};
use anyhow::{Context as _, ensure};
use anypost_operator::core::api::{Purpose, SendingDomain, SendingDomainStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The states a SendingDomain is driven into here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No operator has written its status yet.
    NotReconciled,
    /// Keys made, but the zone cannot serve its records (RFC2136 server down).
    NotPublished,
    /// Records served, the owner's CNAMEs not checked conclusively yet.
    Pending,
    /// Records served, the owner's CNAMEs checked and wrong or missing.
    WaitingForDns,
    Verified,
    /// Verified, but the CNAMEs have gone; still sending until the grace ends.
    GracePeriod,
    /// The spec changed while no operator ran.
    GenerationNotObserved,
    PublicSuffix,
    DomainConflict,
    SecretConflict,
}

/// Argo CD's health for each state: the same with or without the Reconciling
/// and Stalled conditions.
fn expected_argocd(state: State) -> &'static str {
    match state {
        State::NotReconciled | State::NotPublished | State::GenerationNotObserved => "Progressing",
        State::Pending | State::WaitingForDns => "Suspended",
        State::Verified => "Healthy",
        State::GracePeriod
        | State::PublicSuffix
        | State::DomainConflict
        | State::SecretConflict => "Degraded",
    }
}

/// What kstatus must compute for `state`, after checking the operator's
/// Reconciling and Stalled conditions on `object`: both present, for the object's
/// generation; Reconciling=True exactly while records are not published (an
/// RFC2136 server that fails is retried); Stalled=True with the blocking reason for
/// the states that need a human, and for a grace period (the owner must publish
/// the CNAMEs again).
fn expected_kstatus(state: State, object: &Value) -> &'static str {
    let generation = object["metadata"]["generation"].as_i64();
    let find = |t: &str| {
        object["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .cloned()
    };
    if state != State::NotReconciled {
        for t in ["Reconciling", "Stalled"] {
            let c = find(t).unwrap_or_else(|| panic!("no {t} condition in {state:?}: {object:#}"));
            if state != State::GenerationNotObserved {
                assert_eq!(
                    c["observedGeneration"].as_i64(),
                    generation,
                    "{t} in {state:?}"
                );
            }
        }
    }
    // A status that describes an older generation says nothing about this one.
    if state != State::NotReconciled && state != State::GenerationNotObserved {
        let status = |t: &str| find(t).map(|c| c["status"].clone()).unwrap_or_default();
        let reconciling = state == State::NotPublished;
        assert_eq!(
            status("Reconciling"),
            if reconciling { "True" } else { "False" },
            "Reconciling in {state:?}: {object:#}"
        );
        let stalled = match state {
            State::PublicSuffix => Some("PublicSuffix"),
            State::DomainConflict => Some("DomainConflict"),
            State::SecretConflict => Some("SecretConflict"),
            State::GracePeriod => Some("GracePeriod"),
            _ => None,
        };
        match stalled {
            Some(reason) => {
                let c = find("Stalled").unwrap();
                assert_eq!(
                    (c["status"].as_str(), c["reason"].as_str()),
                    (Some("True"), Some(reason))
                );
            }
            None => assert_eq!(
                status("Stalled"),
                "False",
                "Stalled in {state:?}: {object:#}"
            ),
        }
    }
    match state {
        State::NotReconciled | State::Verified => "Current",
        State::NotPublished
        | State::Pending
        | State::WaitingForDns
        | State::GenerationNotObserved => "InProgress",
        State::GracePeriod
        | State::PublicSuffix
        | State::DomainConflict
        | State::SecretConflict => "Failed",
    }
}

/// The field `field` of the condition `type_` of `object`.
fn condition_field(object: &Value, type_: &str, field: &str) -> Option<String> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c[field].as_str())
        .map(str::to_string)
}

fn condition_message(object: &Value, type_: &str) -> Option<String> {
    condition_field(object, type_, "message")
}

fn condition_status(object: &Value, type_: &str) -> Option<String> {
    condition_field(object, type_, "status")
}

/// Reads `name` from the apiserver (`kubectl get -o json`), runs Argo CD's
/// health check and kstatus on it, and checks both against `state`. Returns the
/// object and both verdicts.
pub fn judge(ns: &TestNs, name: &str, state: State) -> (Value, Verdict, Verdict) {
    let json = ns.kubectl_ok(&["get", "sendingdomain", name, "-o", "json"]);
    let object: Value = serde_json::from_str(&json).expect("kubectl prints JSON");
    let argo = argocd_health(&json);
    let ks = kstatus(&json);
    assert_eq!(
        argo.status,
        expected_argocd(state),
        "Argo CD health of {state:?}: {argo:?}\n{object:#}"
    );
    assert_eq!(
        ks.status,
        expected_kstatus(state, &object),
        "kstatus of {state:?}: {ks:?}\n{object:#}"
    );
    // The message says why: the operator's own words where it has them.
    let expected_message = match state {
        State::NotReconciled => {
            "Waiting for the operator to reconcile the SendingDomain".to_string()
        }
        State::GenerationNotObserved => format!(
            "Waiting for the operator to observe generation {} (status describes generation {})",
            object["metadata"]["generation"], object["status"]["observedGeneration"]
        ),
        // Stalled's words when it is True, else Ready's.
        _ if condition_status(&object, "Stalled").as_deref() == Some("True") => {
            condition_message(&object, "Stalled").expect("Stalled has a message")
        }
        _ => condition_message(&object, "Ready").expect("a Ready condition"),
    };
    assert_eq!(argo.message, expected_message, "{state:?}: {object:#}");
    (object, argo, ks)
}

/// Waits until `name`'s Ready condition has `reason`; returns its status.
pub async fn wait_ready_reason(
    api: &Api<SendingDomain>,
    name: &str,
    reason: &str,
) -> SendingDomainStatus {
    eventually(WAIT, || async {
        let st = api.get(name).await?.status.context("no status yet")?;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
        ensure!(
            ready.is_some_and(|c| c.reason == reason),
            "Ready is {:?}",
            ready.map(|c| (&c.status, &c.reason))
        );
        Ok::<_, anyhow::Error>(st)
    })
    .await
}

/// A test operator that verifies against real DNS: BIND serves `example.com` (the
/// customers' zone), unbound resolves, and the operator serves its zone on a free
/// port that unbound's stub zone points at.
pub struct Verifying {
    pub ns: TestNs,
    pub dns: DnsTopology,
    pub op: Operator,
    pub run: String,
    /// Where the operator serves its zone.
    pub zone_addr: SocketAddr,
    verify_requests: u32,
}

impl Verifying {
    pub async fn start(test: &str, flags: &[(&str, &str)]) -> Verifying {
        let ns = TestNs::new(test).await;
        let run = ns.name.clone();
        let op_dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let dns = DnsTopology::start(
            &[ZoneFile::new("example.com")],
            OperatorZone::At {
                zone: ZONE.into(),
                addr: op_dns,
            },
        )
        .await;
        let (listen, resolver) = (op_dns.to_string(), dns.resolver().to_string());
        let mut all = vec![
            ("--dns-listen", listen.as_str()),
            ("--resolver", resolver.as_str()),
            ("--resolver-timeout", "2s"),
        ];
        all.extend_from_slice(flags);
        let args = operator_args_with(&ns.name, &run, &all);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let op = Operator::start(test, &args);
        Verifying {
            ns,
            dns,
            op,
            run,
            zone_addr: op_dns,
            verify_requests: 0,
        }
    }

    /// Publishes in `example.com` the CNAMEs each of `domains` lists, except
    /// those `skip` says to leave out; everything else in the zone goes.
    pub async fn publish(&self, domains: &[&SendingDomainStatus], skip: impl Fn(Purpose) -> bool) {
        let mut zone = ZoneFile::new("example.com");
        for st in domains {
            for r in st.dns_records.iter().filter(|r| !skip(r.purpose)) {
                zone.add(format!("{}. IN CNAME {}.", r.fqdn, r.value));
            }
        }
        self.dns.set_zone(&zone).await;
    }

    /// `kubectl annotate anypost.com/verify=<new value>` on each of `names`.
    pub fn request_check(&mut self, names: &[&str]) {
        self.verify_requests += 1;
        for name in names {
            self.ns.kubectl_ok(&[
                "annotate",
                "--overwrite",
                "sendingdomain",
                name,
                &format!("anypost.com/verify={}", self.verify_requests),
            ]);
        }
    }
}

#[test]
fn the_argocd_health_check_passes_its_own_test_data() {
    let dir = repo_root().join("deploy/argocd/anypost.com/SendingDomain");
    let cases: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("health_test.yaml")).expect("reading health_test.yaml"),
    )
    .expect("health_test.yaml is YAML");
    let cases = cases["tests"].as_array().expect("a list of tests").clone();
    // Every test object is used, and every health the script gives is covered.
    let listed: Vec<String> = cases
        .iter()
        .map(|c| c["inputPath"].as_str().unwrap().to_string())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.join("testdata"))
        .expect("reading testdata/")
        .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, on_disk, "health_test.yaml and testdata/ differ");
    for status in ["Progressing", "Suspended", "Healthy", "Degraded"] {
        assert!(
            cases.iter().any(|c| c["healthStatus"]["status"] == status),
            "no test case is {status}"
        );
    }

    let (ok, out, err) = run(
        &test_tool("argocd-health"),
        &["test", dir.to_str().unwrap()],
        "",
    );
    assert!(ok, "argocd-health test failed:\n{out}{err}");
    for mode in ["closed-libs", "open-libs"] {
        for path in &listed {
            assert!(
                out.lines()
                    .any(|l| l.starts_with("ok ") && l.contains(&format!(" {path} {mode}:"))),
                "{path} was not checked with {mode}:\n{out}"
            );
        }
    }
}

/// One domain from creation to its grace period, and a spec change made while
/// no operator runs; plus one object no operator reconciles.
#[tokio::test]
async fn argocd_and_kstatus_follow_a_domain_from_creation_to_its_grace_period() {
    let mut v = Verifying::start("gitops-life", &[("--verified-grace", "30m")]).await;
    let domain = format!("shop-{}.example.com", random_suffix());

    // An object no operator manages (labelled for a run nobody serves).
    v.ns.apply_ok(&manifest(
        "unmanaged",
        &format!("{}-nobody", v.run),
        "  domain: unmanaged.example.com\n",
    ));
    judge(&v.ns, "unmanaged", State::NotReconciled);

    v.ns.apply_ok(&manifest(
        "shop",
        &v.run,
        &format!("  domain: {domain}\n  dkim:\n    keyBits: 1024\n"),
    ));
    let api: Api<SendingDomain> = v.ns.api();
    let st = wait_published(&api, "shop").await.status.unwrap();
    v.ns.kubectl_ok(&[
        "wait",
        "--for=condition=RecordsPublished",
        "sendingdomain/shop",
        "--timeout=30s",
    ]);
    // Nothing published at the owner's side yet: the first check says so.
    wait_ready_reason(&api, "shop", "ApexCnameMissing").await;
    judge(&v.ns, "shop", State::WaitingForDns);

    // Published: verified, Healthy, Current; and the README's kubectl waits pass.
    v.publish(&[&st], |_| false).await;
    v.request_check(&["shop"]);
    wait_ready_reason(&api, "shop", "Verified").await;
    judge(&v.ns, "shop", State::Verified);
    v.ns.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "sendingdomain/shop",
        "--timeout=30s",
    ]);
    v.ns.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.state}=verified",
        "sendingdomain/shop",
        "--timeout=30s",
    ]);

    // The verification CNAME goes: still verified, in its grace period.
    v.publish(&[&st], |p| p == Purpose::Verification).await;
    v.request_check(&["shop"]);
    wait_ready_reason(&api, "shop", "GracePeriod").await;
    judge(&v.ns, "shop", State::GracePeriod);

    // The spec changes while no operator runs: status describes the old generation.
    v.op.kill();
    v.ns.kubectl_ok(&[
        "patch",
        "sendingdomain",
        "shop",
        "--type=merge",
        "-p",
        r#"{"spec":{"tracking":{"subdomain":"track"}}}"#,
    ]);
    let (object, _, ks) = judge(&v.ns, "shop", State::GenerationNotObserved);
    assert_eq!(object["metadata"]["generation"], 2);
    assert_eq!(
        ks.message,
        "SendingDomain generation is 2, but latest observed generation is 1"
    );
    // Back, the operator catches up and the grace period shows again.
    v.op.restart();
    eventually(WAIT, || async {
        let st = api.get("shop").await?.status.context("no status")?;
        ensure!(
            st.observed_generation == Some(2),
            "observedGeneration {:?}",
            st.observed_generation
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    wait_ready_reason(&api, "shop", "GracePeriod").await;
    judge(&v.ns, "shop", State::GracePeriod);
}

/// Domains the operator cannot finish without someone: the owner (pending), or a
/// human in the cluster (public suffix, a claim already taken, a foreign Secret).
#[tokio::test]
async fn argocd_and_kstatus_on_domains_that_wait_for_someone() {
    let first = TestNs::new("gitops-wait").await;
    let second = TestNs::new("gitops-wait-b").await;
    let run = first.name.clone();
    // The resolver never answers: checks are inconclusive, the domain stays Pending.
    let args = operator_args_with(&first.name, &run, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _op = Operator::start("gitops-wait", &args);
    let a: Api<SendingDomain> = first.api();
    let b: Api<SendingDomain> = second.api();

    let shared = format!("shared-{}.example.com", random_suffix());
    let spec = format!("  domain: {shared}\n  dkim:\n    keyBits: 1024\n");
    first.apply_ok(&manifest("waiting", &run, &spec));
    first.apply_ok(&manifest("co-uk", &run, "  domain: co.uk\n"));
    // A Secret of someone else's where the operator would keep the keys.
    Api::<Secret>::namespaced(first.client.clone(), &first.name)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("taken-dkim".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "note".to_string(),
                    ByteString(b"not the operator's".to_vec()),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    first.apply_ok(&manifest(
        "taken",
        &run,
        "  domain: taken.example.com\n  dkim:\n    keyBits: 1024\n",
    ));

    wait_published(&a, "waiting").await;
    wait_ready_reason(&a, "waiting", "Pending").await;
    judge(&first, "waiting", State::Pending);
    wait_ready_reason(&a, "co-uk", "PublicSuffix").await;
    judge(&first, "co-uk", State::PublicSuffix);
    wait_ready_reason(&a, "taken", "SecretConflict").await;
    judge(&first, "taken", State::SecretConflict);

    // The same domain, claimed later from another namespace.
    second.apply_ok(&manifest("waiting", &run, &spec));
    wait_ready_reason(&b, "waiting", "DomainConflict").await;
    judge(&second, "waiting", State::DomainConflict);
}

/// Keys made, but the RFC2136 server the zone is pushed to does not answer.
#[tokio::test]
async fn argocd_and_kstatus_while_records_cannot_be_published() {
    let ns = TestNs::new("gitops-unpublished").await;
    let run = ns.name.clone();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("tsig.secret");
    std::fs::write(&secret, "c2VjcmV0LWtleS1mb3ItYW55cG9zdC10ZXN0LWRucy0h\n").unwrap();
    // Nothing listens there.
    let server = format!("127.0.0.1:{}", free_port());
    let secret = secret.display().to_string();
    let args = operator_args_with(
        &ns.name,
        &run,
        &[
            ("--zone-backend", "rfc2136"),
            ("--rfc2136-server", &server),
            ("--tsig-key-name", "anypost-e2e-key"),
            ("--tsig-secret-file", &secret),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _op = Operator::start("gitops-unpublished", &args);
    ns.apply_ok(&manifest(
        "stuck",
        &run,
        "  domain: stuck.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let api: Api<SendingDomain> = ns.api();
    let st = eventually(WAIT, || async {
        let st = api.get("stuck").await?.status.context("no status yet")?;
        let published = st.conditions.iter().find(|c| c.type_ == "RecordsPublished");
        ensure!(
            published.is_some_and(|c| c.reason == "SyncFailed"),
            "RecordsPublished is {:?}",
            published.map(|c| (&c.status, &c.reason))
        );
        Ok::<_, anyhow::Error>(st)
    })
    .await;
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "KeysReady" && c.status == "True")
    );
    judge(&ns, "stuck", State::NotPublished);
}
