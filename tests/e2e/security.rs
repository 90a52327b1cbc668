//! Least privilege and hostile tenants, through the real apiserver with real
//! RBAC: the DNS replicas' ServiceAccount may read SendingDomains and the
//! identity Secret only (impersonated with `kubectl auth can-i` and real
//! requests); tenants get SendingDomains, never their status, from the built-in
//! roles; the controller caches only the Secrets it owns; a lost identity Secret
//! re-targets nothing; a squatter loses to the domain's owner; the claim policy;
//! and a verified domain whose Secret is in the way stays served for its grace
//! period. Tenants act as themselves (`kubectl --as`), bound to Kubernetes'
//! `edit` role.

use crate::chart::{REQUIRED, chart, helm_run, install_rbac, remove_cluster_rbac};
use crate::controller::{
    ZONE, condition, manifest, operator_args_with, operator_with_metrics, wait_published,
};
use crate::gitops::{Verifying, wait_ready_reason};
use crate::support::dns_topology::free_port;
use crate::support::{TestNs, eventually, kubectl, kubectl_stdin, metric, random_suffix};
use anyhow::{Context as _, ensure};
use anypost_operator::core::api::{Purpose, SendingDomain, SendingDomainStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// `kubectl auth can-i <args>` as `who`: whether RBAC allows it.
fn can_i(who: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i", "--as", who];
    all.extend_from_slice(args);
    let out = kubectl(&all);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        said == "yes" || said == "no",
        "kubectl {}: {said} {}",
        all.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    said == "yes"
}

/// `kubectl --as <who> <args>`: (succeeded, stderr).
fn as_user(who: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["--as", who];
    all.extend_from_slice(args);
    let out = kubectl(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The chart's ClusterRoles for tenants, installed once per test run (they only
/// add SendingDomains to the built-in view, edit and admin roles).
fn tenant_roles() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let (ok, rendered, err) = helm_run(&[
            "template",
            "e2e-tenants",
            &chart(),
            "--set",
            REQUIRED,
            "--show-only",
            "templates/tenant-rbac.yaml",
        ]);
        assert!(ok, "{err}");
        let out = kubectl_stdin(&["apply", "-f", "-"], &rendered);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Makes `user` a tenant of `ns`: bound to the built-in `edit` role there, once
/// the chart's roles are aggregated into it. Returns the user to impersonate.
async fn tenant(ns: &TestNs, user: &str) -> String {
    tenant_roles();
    ns.kubectl_ok(&[
        "create",
        "rolebinding",
        &format!("{user}-edit"),
        "--clusterrole=edit",
        "--user",
        user,
    ]);
    eventually(WAIT, || async {
        let can = can_i(
            user,
            &["create", "sendingdomains.anypost.com", "-n", &ns.name],
        );
        ensure!(can, "the edit role does not include SendingDomains yet");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    user.to_string()
}

/// `kubectl apply` of a SendingDomain as a tenant.
fn apply_as(user: &str, ns: &TestNs, manifest: &str) {
    let out = kubectl_stdin(
        &["--as", user, "apply", "-n", &ns.name, "-f", "-"],
        manifest,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_dns_service_account_reads_sendingdomains_and_the_identity_key_only() {
    let home = TestNs::new("least-dns").await;
    let tenant = TestNs::new("least-tenant").await;
    let release = format!("l{}", &home.name[home.name.len() - 8..]);
    let (controller, dns) = install_rbac(&home, &release, &[]);
    let sa = |name: &str| format!("system:serviceaccount:{}:{name}", home.name);
    let (dns, controller) = (sa(&dns), sa(&controller));
    let (h, t) = (home.name.as_str(), tenant.name.as_str());
    let allowed: &[&[&str]] = &[
        &["list", "sendingdomains.anypost.com", "-A"],
        &["watch", "sendingdomains.anypost.com", "-A"],
        &["get", "secrets/anypost-operator-identity", "-n", h],
    ];
    let denied: &[&[&str]] = &[
        &["get", "secrets", "-n", h],
        &["list", "secrets", "-n", h],
        &["list", "secrets", "-A"],
        &["watch", "secrets", "-n", t],
        &["get", "secrets/other-dkim", "-n", t],
        &["get", "secrets/anypost-operator-identity", "-n", t],
        &["create", "secrets", "-n", h],
        &["patch", "secrets/anypost-operator-identity", "-n", h],
        &[
            "patch",
            "sendingdomains.anypost.com",
            "--subresource=status",
            "-n",
            t,
        ],
        &[
            "update",
            "sendingdomains.anypost.com",
            "--subresource=status",
            "-n",
            t,
        ],
        &["patch", "sendingdomains.anypost.com", "-n", t],
        &["create", "sendingdomains.anypost.com", "-n", t],
        &["create", "events.events.k8s.io", "-n", t],
        &["update", "leases.coordination.k8s.io", "-n", h],
        &["list", "configmaps", "-n", h],
    ];
    for args in allowed {
        assert!(can_i(&dns, args), "the DNS replicas may not {args:?}");
    }
    for args in denied {
        assert!(!can_i(&dns, args), "the DNS replicas may {args:?}");
    }
    // The controller holds what it needs.
    for args in [
        &[
            "patch",
            "sendingdomains.anypost.com",
            "--subresource=status",
            "-n",
            t,
        ][..],
        &["list", "secrets", "-A"],
        &["create", "secrets", "-n", t],
        &["update", "leases.coordination.k8s.io", "-n", h],
    ] {
        assert!(can_i(&controller, args), "the controller may not {args:?}");
    }
    assert!(!can_i(
        &controller,
        &["update", "leases.coordination.k8s.io", "-n", t]
    ));
    // Real requests, impersonated, are refused too.
    tenant.apply_ok(&manifest("probe", "none", "  domain: probe.example.com\n"));
    for args in [
        &["get", "secrets", "-n", h][..],
        &["get", "secret", "anypost-operator-identity", "-n", t],
        &[
            "patch",
            "sendingdomain",
            "probe",
            "-n",
            t,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"id":"domain_aaaaaaaaaaaaaaaa"}}"#,
        ],
    ] {
        let (ok, err) = as_user(&dns, args);
        assert!(!ok && err.contains("Forbidden"), "{args:?}: {err}");
    }
    let (ok, err) = as_user(&dns, &["get", "sendingdomains", "-A"]);
    assert!(ok, "{err}");
    remove_cluster_rbac(&release);
}

#[tokio::test]
async fn tenants_get_sendingdomains_from_the_built_in_roles_but_never_their_status() {
    let ns = TestNs::new("tenant-roles").await;
    let editor = tenant(&ns, &format!("editor-{}", random_suffix())).await;
    let viewer = format!("viewer-{}", random_suffix());
    ns.kubectl_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--user",
        &viewer,
    ]);
    let n = ns.name.as_str();
    eventually(WAIT, || async {
        ensure!(
            can_i(&viewer, &["list", "sendingdomains.anypost.com", "-n", n]),
            "not aggregated yet"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            can_i(&editor, &[verb, "sendingdomains.anypost.com", "-n", n]),
            "edit cannot {verb}"
        );
        assert!(
            !can_i(&viewer, &[verb, "sendingdomains.anypost.com", "-n", n]),
            "view can {verb}"
        );
    }
    for who in [&editor, &viewer] {
        for verb in ["patch", "update"] {
            let args = [
                verb,
                "sendingdomains.anypost.com",
                "--subresource=status",
                "-n",
                n,
            ];
            assert!(!can_i(who, &args), "{who} may {verb} status");
        }
    }
    apply_as(
        &editor,
        &ns,
        &manifest("mine", "none", "  domain: mine.example.com\n"),
    );
    let (ok, err) = as_user(
        &editor,
        &[
            "patch",
            "sendingdomain",
            "mine",
            "-n",
            n,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"id":"domain_aaaaaaaaaaaaaaaa"}}"#,
        ],
    );
    assert!(
        !ok && err.contains("Forbidden"),
        "a tenant wrote status: {err}"
    );
    let (ok, err) = as_user(&viewer, &["get", "sendingdomain", "mine", "-n", n]);
    assert!(ok, "{err}");
}

/// The controller's Secret cache holds the DKIM Secrets its SendingDomains own,
/// not every Secret that carries the operator's label (which anyone can add).
#[tokio::test]
async fn the_controller_caches_only_the_secrets_it_owns() {
    let ns = TestNs::new("secret-cache").await;
    let run = ns.name.clone();
    let (_op, http) = operator_with_metrics("secret-cache", &ns.name, &run, &[]);
    let secrets: Api<Secret> = ns.api();
    for name in ["lure-1", "lure-2", "decoy-dkim"] {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".into(),
                    "anypost-operator".into(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "anypost1.key".into(),
                ByteString(b"secret".to_vec()),
            )])),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    ns.apply_ok(&manifest(
        "owned",
        &run,
        "  domain: owned.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let api: Api<SendingDomain> = ns.api();
    wait_published(&api, "owned").await;
    eventually(WAIT, || async {
        let cached = metric(http, "anypost_dkim_secrets_cached").map_err(anyhow::Error::msg)?;
        ensure!(cached == 1.0, "{cached} Secrets cached");
        Ok::<_, anyhow::Error>(())
    })
    .await;
}

/// `(status, reason)` of Ready, for error messages.
fn ready(st: &SendingDomainStatus) -> Option<(String, String)> {
    let c = st.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// The Warning Events about `name` in `ns`: `reason: message`.
fn warnings(ns: &TestNs, name: &str) -> Vec<String> {
    let out = ns.kubectl_ok(&[
        "get",
        "events.events.k8s.io",
        "--field-selector",
        &format!("regarding.name={name},type=Warning"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_string).collect()
}

/// A verified domain under `v`'s operator: applied, published, its CNAMEs
/// published at the customer's DNS, and checked.
async fn verified_domain(v: &mut Verifying, name: &str) -> SendingDomainStatus {
    let domain = format!("{name}-{}.example.com", random_suffix());
    v.ns.apply_ok(&manifest(
        name,
        &v.run,
        &format!("  domain: {domain}\n  dkim:\n    keyBits: 1024\n"),
    ));
    let api: Api<SendingDomain> = v.ns.api();
    let st = wait_published(&api, name).await.status.unwrap();
    v.publish(&[&st], |_| false).await;
    v.request_check(&[name]);
    wait_ready_reason(&api, name, "Verified").await
}

/// `dig +short` at the operator's zone.
fn dig(addr: SocketAddr, name: &str, rtype: &str) -> String {
    let out = Command::new("dig")
        .args([&format!("@{}", addr.ip()), "-p", &addr.port().to_string()])
        .args(["+short", "+time=1", "+tries=2", name, rtype])
        .output()
        .expect("running dig (Debian package bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn token(st: &SendingDomainStatus) -> String {
    st.id
        .as_deref()
        .and_then(|i| i.strip_prefix("domain_"))
        .expect("an id")
        .to_string()
}

/// Deleting the identity Secret and restarting re-targets nothing: the operator
/// makes no new key while SendingDomains carry ids, reports IdentityMismatch
/// (condition, Warning, metric) and changes nothing else; the restored Secret
/// brings everything back. Another key is refused until it is asked for.
#[tokio::test]
async fn a_lost_identity_secret_re_targets_nothing_until_restored() {
    let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut v = Verifying::start("identity-lost", &[("--http-listen", &http.to_string())]).await;
    let before = verified_domain(&mut v, "shop").await;
    let secrets: Api<Secret> = v.ns.api();
    let saved = secrets.get("anypost-operator-identity").await.unwrap();

    v.op.kill();
    secrets
        .delete("anypost-operator-identity", &DeleteParams::default())
        .await
        .unwrap();
    v.op.restart();
    let api: Api<SendingDomain> = v.ns.api();
    let held = wait_ready_reason(&api, "shop", "IdentityMismatch").await;
    assert_eq!(held.id, before.id, "re-targeted");
    assert_eq!(
        held.dns_records
            .iter()
            .map(|r| &r.value)
            .collect::<Vec<_>>(),
        before
            .dns_records
            .iter()
            .map(|r| &r.value)
            .collect::<Vec<_>>()
    );
    assert_eq!(held.state, before.state);
    let c = condition(&api.get("shop").await.unwrap(), "Ready").unwrap();
    assert!(
        c.2.contains("is missing") && c.2.contains("Restore the Secret"),
        "{c:?}"
    );
    assert!(
        secrets
            .get_opt("anypost-operator-identity")
            .await
            .unwrap()
            .is_none(),
        "a new key was made"
    );
    assert_eq!(metric(http, "anypost_identity_mismatch"), Ok(1.0));
    let warned = warnings(&v.ns, "shop");
    assert!(
        warned
            .iter()
            .any(|w| w.starts_with("Blocked: IdentityMismatch")),
        "{warned:?}"
    );

    // Restored: back to verified under the same targets, without a restart.
    let mut restored = saved.clone();
    restored.metadata = ObjectMeta {
        name: saved.metadata.name.clone(),
        annotations: saved.metadata.annotations.clone(),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &restored)
        .await
        .unwrap();
    let back = wait_ready_reason(&api, "shop", "Verified").await;
    assert_eq!(back.id, before.id);
    eventually(WAIT, || async {
        ensure!(
            metric(http, "anypost_identity_mismatch") == Ok(0.0),
            "still in doubt"
        );
        ensure!(
            dig(v.zone_addr, &format!("{}.{ZONE}", token(&back)), "MX") == "10 mx.anypost.test.",
            "not served"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    another_key_is_refused_until_asked_for(&mut v, &before).await;
}

/// Another key in the Secret: the running operator keeps the key it has; after
/// a restart it refuses; annotated anypost.com/rekey, every domain is re-keyed.
async fn another_key_is_refused_until_asked_for(v: &mut Verifying, before: &SendingDomainStatus) {
    let secrets: Api<Secret> = v.ns.api();
    let api: Api<SendingDomain> = v.ns.api();
    v.op.kill();
    secrets
        .delete("anypost-operator-identity", &DeleteParams::default())
        .await
        .unwrap();
    let other = Secret {
        metadata: ObjectMeta {
            name: Some("anypost-operator-identity".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "identity.key".into(),
            ByteString(vec![7; 32]),
        )])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    v.op.restart();
    let held = wait_ready_reason(&api, "shop", "IdentityMismatch").await;
    assert_eq!(held.id, before.id);
    let c = condition(&api.get("shop").await.unwrap(), "Ready").unwrap();
    assert!(c.2.contains("made none of the ids"), "{c:?}");
    v.ns.kubectl_ok(&[
        "annotate",
        "secret",
        "anypost-operator-identity",
        "anypost.com/rekey=yes",
    ]);
    let rekeyed = eventually(WAIT, || async {
        let st = api.get("shop").await?.status.context("no status")?;
        ensure!(
            st.id.is_some() && st.id != before.id,
            "id {:?}, Ready {:?}",
            st.id,
            ready(&st)
        );
        Ok::<_, anyhow::Error>(st)
    })
    .await;
    assert_eq!(
        rekeyed.state,
        Some(anypost_operator::core::api::DomainState::Pending),
        "the old CNAMEs point elsewhere"
    );
}

/// A tenant claims a domain it does not control before its owner does. The
/// owner's claim lists its records, and once its verification CNAME resolves to
/// its own target it takes the domain from the squatter, whose records leave the
/// zone. Once verified, it is never displaced, even by a claim that proves
/// control too.
#[tokio::test]
async fn proof_of_control_takes_a_domain_from_a_squatter_and_a_verified_claim_stays() {
    let mut v = Verifying::start("squat-owner", &[]).await;
    let evil = TestNs::new("squat-evil").await;
    let (owner, squatter) = (
        tenant(&v.ns, "olivia").await,
        tenant(&evil, "mallory").await,
    );
    let domain = format!("squat-{}.example.com", random_suffix());
    let spec = format!("  domain: {domain}\n  dkim:\n    keyBits: 1024\n");
    apply_as(&squatter, &evil, &manifest("taken", &v.run, &spec));
    let (theirs, mine): (Api<SendingDomain>, Api<SendingDomain>) = (evil.api(), v.ns.api());
    let squat = wait_published(&theirs, "taken").await.status.unwrap();
    apply_as(&owner, &v.ns, &manifest("mine", &v.run, &spec));
    let blocked = wait_ready_reason(&mine, "mine", "DomainConflict").await;
    // Its records are listed; nothing is served for them.
    assert_eq!(blocked.dns_records.len(), 3, "{blocked:?}");
    let zone = v.zone_addr;
    let served = |st: &SendingDomainStatus| dig(zone, &format!("{}.{ZONE}", token(st)), "MX");
    assert_eq!(served(&blocked), "");
    assert_eq!(served(&squat), "10 mx.anypost.test.");

    // The owner publishes its verification CNAME: control proved, domain taken.
    v.publish(&[&blocked], |p| p != Purpose::Verification).await;
    v.request_check(&["mine"]);
    let holds = wait_published(&mine, "mine").await.status.unwrap();
    wait_ready_reason(&theirs, "taken", "DomainConflict").await;
    eventually(WAIT, || async {
        ensure!(
            served(&holds) == "10 mx.anypost.test." && served(&squat).is_empty(),
            "the zone has not moved over"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    v.publish(&[&holds], |_| false).await;
    v.request_check(&["mine"]);
    wait_ready_reason(&mine, "mine", "Verified").await;

    // The CNAME now points at the squatter's target: it proves control, but the
    // verified claim keeps the domain (for its grace period).
    let squat = theirs.get("taken").await.unwrap().status.unwrap();
    v.publish(&[&squat], |_| false).await;
    v.request_check(&["mine"]);
    evil.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "sd",
        "taken",
        "anypost.com/verify=now",
    ]);
    eventually(WAIT, || async {
        let st = theirs.get("taken").await?.status.context("no status")?;
        let apex = st.dns_records.first().and_then(|r| r.state);
        ensure!(
            apex == Some(anypost_operator::core::api::RecordState::Ok),
            "the squatter's control: {apex:?}"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    wait_ready_reason(&mine, "mine", "GracePeriod").await;
    let c = condition(&theirs.get("taken").await.unwrap(), "Ready").unwrap();
    assert_eq!(c.1, "DomainConflict");
    assert!(c.2.contains("whose CNAMEs verify"), "{c:?}");
    assert_eq!(served(&holds), "10 mx.anypost.test.");
}

/// The claim policy: a claim from a namespace it does not allow is NotAllowed,
/// nothing is published for it, and it does not keep the domain from the
/// allowed claim, however old it is. A change of the policy file applies.
#[tokio::test]
async fn the_claim_policy_refuses_claims_outside_it() {
    let home = TestNs::new("policy-home").await;
    let outsider = TestNs::new("policy-outsider").await;
    let run = home.name.clone();
    let suffix = format!("p{}.example.com", random_suffix());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let policy = |ns: &str| format!("rules:\n  - suffix: {suffix}\n    namespaces: [{ns}]\n");
    std::fs::write(&file, policy(&home.name)).unwrap();
    let args = operator_args_with(
        &home.name,
        &run,
        &[("--claim-policy", file.to_str().unwrap())],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _op = crate::support::Operator::start("policy", &args);
    let (mallory, olivia) = (
        tenant(&outsider, "mallory").await,
        tenant(&home, "olivia").await,
    );
    let spec = format!("  domain: mail.{suffix}\n  dkim:\n    keyBits: 1024\n");
    apply_as(&mallory, &outsider, &manifest("early", &run, &spec));
    let (theirs, mine): (Api<SendingDomain>, Api<SendingDomain>) = (outsider.api(), home.api());
    let refused = wait_ready_reason(&theirs, "early", "NotAllowed").await;
    assert!(
        refused.id.is_none() && refused.dns_records.is_empty(),
        "{refused:?}"
    );
    let c = condition(&theirs.get("early").await.unwrap(), "Ready").unwrap();
    assert!(
        c.2.contains(&format!("does not allow namespace {}", outsider.name)),
        "{c:?}"
    );
    apply_as(&olivia, &home, &manifest("late", &run, &spec));
    wait_published(&mine, "late").await;
    // The policy changes: the home namespace may no longer claim it.
    std::fs::write(&file, policy("somebody-else")).unwrap();
    let now_refused = wait_ready_reason(&mine, "late", "NotAllowed").await;
    assert!(now_refused.id.is_none());
}

/// A verified domain whose DKIM Secret loses the operator's label stays
/// published for the grace period, with a Warning saying how to fix it; then
/// it is blocked; the label back, it is served again.
#[tokio::test]
async fn a_verified_domain_keeps_its_records_for_the_grace_period_when_its_secret_is_in_the_way() {
    let mut v = Verifying::start("secret-grace", &[("--verified-grace", "40s")]).await;
    let before = verified_domain(&mut v, "kept").await;
    let api: Api<SendingDomain> = v.ns.api();
    let zone = v.zone_addr;
    let dkim = |st: &SendingDomainStatus| {
        dig(
            zone,
            &format!("anypost1._domainkey.{}.{ZONE}", token(st)),
            "TXT",
        )
    };
    let published = dkim(&before);
    assert!(published.contains("v=DKIM1"), "{published}");
    v.ns.kubectl_ok(&[
        "label",
        "secret",
        "kept-dkim",
        "app.kubernetes.io/managed-by-",
    ]);
    let held = wait_ready_reason(&api, "kept", "SecretConflict").await;
    assert_eq!((&held.id, &held.dkim), (&before.id, &before.dkim));
    let c = condition(&api.get("kept").await.unwrap(), "KeysReady").unwrap();
    assert!(
        c.2.contains("label it app.kubernetes.io/managed-by=anypost-operator")
            && c.2.contains("stay served until"),
        "{c:?}"
    );
    assert!(
        warnings(&v.ns, "kept")
            .iter()
            .any(|w| w.starts_with("Blocked: SecretConflict"))
    );
    assert_eq!(dkim(&held), published, "unpublished at once");
    // After the grace period nothing is published.
    let blocked = eventually(WAIT, || async {
        let st = api.get("kept").await?.status.context("no status")?;
        ensure!(st.id.is_none(), "still held: {:?}", ready(&st));
        Ok::<_, anyhow::Error>(st)
    })
    .await;
    assert_eq!(ready(&blocked).unwrap().1, "SecretConflict");
    eventually(WAIT, || async {
        ensure!(dkim(&before).is_empty(), "still served");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    v.ns.kubectl_ok(&[
        "label",
        "secret",
        "kept-dkim",
        "app.kubernetes.io/managed-by=anypost-operator",
    ]);
    let back = wait_published(&api, "kept").await.status.unwrap();
    assert_eq!(back.id, before.id);
}
