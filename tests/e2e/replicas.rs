//! Two operator replicas with leader election on, as a Deployment with two pods
//! runs them: both serve the zone from their own watch, only the Lease holder
//! reconciles and writes, and when it dies the other takes over.
//!
//! Each replica is its own process with its own DNS and HTTP ports; they share the
//! Lease and the identity Secret in the test's namespace (`--namespace`), and
//! `POD_NAME` gives each its Lease identity, as the chart's downward API does.

use crate::controller::{ZONE, lease_of, manifest, operator_args_with, token, wait_published};
use crate::support::bind_rfc2136::axfr;
use crate::support::dns_topology::free_port;
use crate::support::{Operator, TestNs, eventually, http_get, metric};
use anyhow::{Context as _, ensure};
use anypost_operator::core::api::SendingDomain;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

struct Replica {
    identity: &'static str,
    op: Operator,
    dns: SocketAddr,
    http: SocketAddr,
}

impl Replica {
    fn start(identity: &'static str, home: &str, run: &str) -> Replica {
        let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        // Checks are inconclusive (the default resolver never answers): this test
        // is about who writes, not about verification.
        let args = operator_args_with(
            home,
            run,
            &[
                ("--leader-election", "true"),
                ("--dns-listen", &dns.to_string()),
                ("--http-listen", &http.to_string()),
                ("--allow-axfr", "127.0.0.1/32"),
            ],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let op = Operator::start_with_env(identity, &args, &[("POD_NAME", identity)]);
        Replica {
            identity,
            op,
            dns,
            http,
        }
    }

    /// Waits until `/readyz` answers 200 (identity loaded, zone loaded).
    async fn ready(&mut self) {
        let http = self.http;
        let identity = self.identity;
        eventually(WAIT, || {
            let running = self.op.is_running();
            async move {
                assert!(running, "replica {identity} exited");
                let (code, body) = http_get(http, "/readyz").context("no answer")?;
                ensure!(code == 200, "/readyz {code}: {body}");
                Ok::<_, anyhow::Error>(())
            }
        })
        .await
    }

    /// A metric's value from `/metrics`; panics when the series is absent.
    fn metric(&self, name: &str) -> f64 {
        metric(self.http, name).unwrap_or_else(|e| panic!("{}: {e}", self.identity))
    }

    /// Whether this replica's zone serves the domain's MX and both DKIM keys.
    fn serves(&self, sd: &SendingDomain) -> Result<(), String> {
        let st = sd.status.as_ref().ok_or("no status")?;
        let token = st
            .id
            .as_deref()
            .and_then(|i| i.strip_prefix("domain_"))
            .ok_or("no id")?;
        let mx = dig_short(self.dns, &format!("{token}.{ZONE}."), "MX");
        if mx != ["10 mx.anypost.test."] {
            return Err(format!("{}: MX {mx:?}", self.identity));
        }
        let dkim = st.dkim.as_ref().ok_or("no dkim status")?;
        for s in &dkim.selectors {
            let txt = dig_short(
                self.dns,
                &format!("{}._domainkey.{token}.{ZONE}.", s.name),
                "TXT",
            );
            let want = format!("v=DKIM1; k=rsa; p={}", s.public_key);
            if txt != [want] {
                return Err(format!("{}: {} TXT {txt:?}", self.identity, s.name));
            }
        }
        Ok(())
    }
}

/// `dig +short` against one server; TXT strings are joined.
pub fn dig_short(addr: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string()])
        .args(["+norecurse", "+time=1", "+tries=2", "+short", name, rtype])
        .output()
        .unwrap_or_else(|e| panic!("could not run dig (Debian package bind9-dnsutils): {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(";;"))
        .map(|l| {
            if rtype == "TXT" {
                l.trim().trim_matches('"').replace("\" \"", "")
            } else {
                l.trim().to_string()
            }
        })
        .collect()
}

/// `kubectl get lease <the test's Lease> -o jsonpath={.spec.holderIdentity}`.
/// The replica's zone by AXFR, without its SOA records (each replica numbers
/// its own serials), sorted.
fn zone_records(dns: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut records: Vec<String> = axfr(dns, ZONE, None)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter(|r| r.split(' ').nth(3) != Some("SOA"))
        .map(|r| r.to_lowercase())
        .collect();
    records.sort();
    Ok(records)
}

/// What one zone has and the other has not, both ways.
fn difference(a: &[String], b: &[String]) -> String {
    let only = |x: &[String], y: &[String]| {
        x.iter()
            .filter(|r| !y.contains(r))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!("only in a:\n{}\nonly in b:\n{}", only(a, b), only(b, a))
}

/// Whether the zone holds the domain's DKIM keys (under its token).
fn served_in(zone: &[String], sd: &SendingDomain) -> bool {
    let keys: Vec<String> = sd
        .status
        .as_ref()
        .and_then(|s| s.dkim.as_ref())
        .map(|d| d.selectors.iter().map(|s| s.public_key.clone()).collect())
        .unwrap_or_default();
    !keys.is_empty()
        && keys.iter().all(|k| {
            let head = k[..k.len().min(40)].to_lowercase();
            zone.iter()
                .any(|r| r.contains(" txt ") && r.contains(&head))
        })
}

fn lease_holder(ns: &TestNs) -> anyhow::Result<String> {
    let out = ns.kubectl(&[
        "get",
        "lease",
        &lease_of(&ns.name),
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    ensure!(
        out.status.success(),
        "kubectl get lease: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The field managers of the SendingDomain's status subresource.
async fn status_managers(api: &Api<SendingDomain>, name: &str) -> Vec<String> {
    let sd = api.get(name).await.expect("the SendingDomain exists");
    sd.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| m.manager.unwrap_or_default())
        .collect()
}

/// `reportingInstance` of every Event about `name`.
fn event_reporters(ns: &TestNs, name: &str) -> Vec<String> {
    ns.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "jsonpath={range .items[*]}{.reportingInstance}{\"\\n\"}{end}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Waits for the first status write with keys, then until both replicas serve
/// the records; returns how long the slower one took after the status was seen.
async fn served_by_both(api: &Api<SendingDomain>, name: &str, replicas: &[&Replica]) -> Duration {
    eventually(WAIT, || async {
        let sd = api.get(name).await?;
        let keys = sd
            .status
            .as_ref()
            .and_then(|s| s.dkim.as_ref())
            .map_or(0, |d| d.selectors.len());
        ensure!(keys == 2, "no keys in status yet");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let seen = Instant::now();
    let sd = api.get(name).await.unwrap();
    eventually(WAIT, || async {
        replicas.iter().try_for_each(|r| r.serves(&sd))
    })
    .await;
    seen.elapsed()
}

#[tokio::test]
async fn two_replicas_serve_the_zone_one_writes_and_the_other_takes_over() {
    let ns = TestNs::new("replicas").await;
    let run = ns.name.clone();
    let api: Api<SendingDomain> = ns.api();
    // Started together, as a Deployment's two pods: they race for the identity
    // Secret and the Lease.
    let mut a = Replica::start("replica-a", &ns.name, &run);
    let mut b = Replica::start("replica-b", &ns.name, &run);
    a.ready().await;
    b.ready().await;
    let holder = eventually(WAIT, || async {
        let holder = lease_holder(&ns)?;
        ensure!(!holder.is_empty(), "no Lease holder yet");
        Ok::<_, anyhow::Error>(holder)
    })
    .await;
    let (mut a, mut b) = match holder.as_str() {
        "replica-a" => (a, b),
        "replica-b" => (b, a),
        other => panic!("the Lease is held by {other:?}"),
    };
    // From here on `a` leads and `b` stands by.
    a.op.wait_for_log("starting the controller", WAIT).await;

    // A new domain: written once, by the leader; served by both (how soon is the
    // benchmarks' business; here each waits with a generous limit).
    ns.apply_ok(&manifest(
        "one",
        &run,
        "  domain: one.replicas.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let lag = served_by_both(&api, "one", &[&a, &b]).await;
    eprintln!("both replicas served the new domain {lag:?} after its status was seen");
    wait_published(&api, "one").await;

    assert_eq!(
        status_managers(&api, "one").await,
        ["anypost-operator/status"],
        "one status manager"
    );
    assert!(a.metric("anypost_status_writes_total") >= 1.0);
    assert_eq!(
        b.metric("anypost_status_writes_total"),
        0.0,
        "the standby wrote status"
    );
    // Each "the standby did not" is read against the same series on the
    // leader, where it did happen.
    assert!(a.metric("anypost_secret_writes_total") >= 1.0);
    assert_eq!(
        b.metric("anypost_secret_writes_total"),
        0.0,
        "the standby wrote a Secret"
    );
    assert!(a.metric("anypost_dkim_keys_generated_total") >= 1.0);
    assert_eq!(b.metric("anypost_dkim_keys_generated_total"), 0.0);
    assert_eq!(
        (a.metric("anypost_leader"), b.metric("anypost_leader")),
        (1.0, 0.0)
    );
    // Churn: domains added, one deleted, one changed. Both replicas then serve
    // the same zone, name for name and type for type, the deleted one gone.
    for i in 0..3 {
        ns.apply_ok(&manifest(
            &format!("churn-{i}"),
            &run,
            &format!("  domain: churn-{i}.replicas.example.com\n  dkim:\n    keyBits: 1024\n"),
        ));
    }
    let gone = wait_published(&api, "churn-1").await;
    let gone_token = token(&gone);
    ns.kubectl_ok(&["delete", "sendingdomain", "churn-1", "--wait=true"]);
    ns.apply_ok(&manifest(
        "churn-2",
        &run,
        "  domain: churn-2.replicas.example.com\n  tracking:\n    subdomain: links\n  dkim:\n    keyBits: 1024\n",
    ));
    for name in ["churn-0", "churn-2"] {
        wait_published(&api, name).await;
    }
    let zone = eventually(WAIT, || async {
        let za = zone_records(a.dns)?;
        let zb = zone_records(b.dns)?;
        ensure!(
            za == zb,
            "the replicas' zones differ:\n{}",
            difference(&za, &zb)
        );
        for name in ["one", "churn-0", "churn-2"] {
            let sd = api.get(name).await?;
            ensure!(served_in(&za, &sd), "{name} is not in the zone yet");
        }
        ensure!(
            !za.iter().any(|r| r.contains(&gone_token)),
            "churn-1's records are still served"
        );
        let tracked = format!("track.{}.{ZONE}.", token(&api.get("churn-2").await?));
        ensure!(
            za.iter()
                .any(|r| r.starts_with(&tracked) && r.contains(" cname ")),
            "churn-2's new tracking CNAME is not served"
        );
        Ok::<_, anyhow::Error>(za)
    })
    .await;
    eprintln!(
        "both replicas serve the same {} records after churn",
        zone.len()
    );

    let reporters = event_reporters(&ns, "one");
    assert!(
        !reporters.is_empty() && reporters.iter().all(|r| r == a.identity),
        "events reported by {reporters:?}"
    );
    assert!(
        !b.op.logs().contains("starting the controller"),
        "{}",
        b.op.logs()
    );

    // The leader dies without a word; the standby takes the Lease once it runs out.
    // Timed with the replicas' own records in the Lease: the standby takes it
    // no sooner than a lease term after the leader's last renewal.
    a.op.kill();
    let leases: Api<Lease> = ns.api();
    let last = leases.get(&lease_of(&ns.name)).await.unwrap().spec.unwrap();
    assert_eq!(last.holder_identity.as_deref(), Some(a.identity));
    eventually(Duration::from_secs(90), || async {
        let holder = lease_holder(&ns)?;
        ensure!(holder == b.identity, "the Lease is held by {holder:?}");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let taken = leases.get(&lease_of(&ns.name)).await.unwrap().spec.unwrap();
    let renewed = last.renew_time.expect("renewTime").0;
    let acquired = taken.acquire_time.expect("acquireTime").0;
    let term = jiff::SignedDuration::from_secs(last.lease_duration_seconds.unwrap().into());
    let takeover = acquired.duration_since(renewed);
    eprintln!(
        "{} took the Lease {takeover:#} after {}'s last renewal (a term is {term:#})",
        b.identity, a.identity
    );
    assert!(
        takeover >= term,
        "taken {takeover:#} after the last renewal, before the {term:#} term ran out"
    );
    b.op.wait_for_log("starting the controller", WAIT).await;

    // The new leader reconciles a new domain, and still serves the old one.
    ns.apply_ok(&manifest(
        "two",
        &run,
        "  domain: two.replicas.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    served_by_both(&api, "two", &[&b]).await;
    let two = wait_published(&api, "two").await;
    assert!(two.status.unwrap().id.is_some());
    b.serves(&api.get("one").await.unwrap()).unwrap();
    assert!(b.metric("anypost_status_writes_total") >= 1.0);
    assert_eq!(b.metric("anypost_leader"), 1.0);
    assert_eq!(
        status_managers(&api, "two").await,
        ["anypost-operator/status"]
    );
    let reporters = event_reporters(&ns, "two");
    assert!(
        !reporters.is_empty() && reporters.iter().all(|r| r == b.identity),
        "events reported by {reporters:?}"
    );

    // A rolling update stops the leader with SIGTERM: it gives the Lease up on
    // the way out, so the next replica need not wait for it to run out.
    let mut c = Replica::start("replica-c", &ns.name, &run);
    c.ready().await;
    let stopped = Instant::now();
    assert!(
        b.op.terminate(Duration::from_secs(20)),
        "{} did not exit on SIGTERM:\n{}",
        b.identity,
        b.op.logs()
    );
    assert!(
        b.op.logs().contains("released the leader lease"),
        "{}",
        b.op.logs()
    );
    let holder = lease_holder(&ns).unwrap();
    assert!(
        holder.is_empty() || holder == c.identity,
        "the Lease is still held by {holder:?} after its holder exited"
    );
    eventually(WAIT, || async {
        let holder = lease_holder(&ns)?;
        ensure!(holder == c.identity, "the Lease is held by {holder:?}");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    eprintln!(
        "{} took the Lease {:?} after {} was sent SIGTERM",
        c.identity,
        stopped.elapsed(),
        b.identity
    );
    c.op.wait_for_log("starting the controller", WAIT).await;
}
