//! The rfc2136 backend against a real BIND primary and the real control plane:
//! the operator process pushes a SendingDomain's records with TSIG-signed UPDATE,
//! follows key and spec changes, prunes what nobody accounts for, removes a
//! deleted domain's records, survives BIND going away, and says clearly when its
//! key is wrong.
//!
//! Each test has its own BIND, namespace and operator (scoped with `--selector`).

use crate::controller::{
    ZONE, condition, manifest, operator_args_with, operator_with_metrics, token, wait_published,
};
use crate::support::bind_rfc2136::{BindPrimary, KEY_NAME};
use crate::support::{Operator, TestNs, eventually, metric, metric_or_absent};
use anyhow::{anyhow, ensure};
use anypost_operator::core::api::SendingDomain;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::DeleteParams;
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Starts an operator pushing to `bind`, managing the SendingDomains labelled
/// for `run`, with its identity and lease in `home`.
fn operator(
    name: &str,
    home: &str,
    run: &str,
    bind: &BindPrimary,
    secret_file: &std::path::Path,
    leader_election: bool,
) -> (Operator, SocketAddr) {
    let server = bind.addr().to_string();
    let secret = secret_file.display().to_string();
    let leader = leader_election.to_string();
    operator_with_metrics(
        name,
        home,
        run,
        &[
            "--zone-backend",
            "rfc2136",
            "--rfc2136-server",
            &server,
            "--tsig-key-name",
            KEY_NAME,
            "--tsig-secret-file",
            &secret,
            "--rfc2136-resync",
            "2s",
            "--leader-election",
            &leader,
        ],
    )
}

/// `RecordsPublished`'s status and when it last changed.
fn published_since(sd: &SendingDomain) -> Option<(String, Time)> {
    sd.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "RecordsPublished")
            .map(|c| (c.status.clone(), c.last_transition_time.clone()))
    })
}

fn public_keys(sd: &SendingDomain) -> Vec<String> {
    sd.status
        .as_ref()
        .and_then(|s| s.dkim.as_ref())
        .map(|d| d.selectors.iter().map(|s| s.public_key.clone()).collect())
        .unwrap_or_default()
}

/// Waits until BIND serves the domain's MX, SPF and both DKIM keys of `sd`.
async fn wait_served(bind: &BindPrimary, sd: &SendingDomain) {
    let t = token(sd);
    let keys = public_keys(sd);
    assert_eq!(keys.len(), 2, "two selectors in status");
    eventually(WAIT, || async {
        let mx = bind.dig(&t, "MX");
        ensure!(mx == ["10 mx.anypost.test."], "MX at {t}: {mx:?}");
        let spf = bind.txt(&t);
        ensure!(
            spf == ["v=spf1 include:spf.anypost.test -all"],
            "SPF at {t}: {spf:?}"
        );
        for (sel, key) in ["anypost1", "anypost2"].iter().zip(&keys) {
            let dkim = bind.txt(&format!("{sel}._domainkey.{t}"));
            ensure!(
                dkim == [format!("v=DKIM1; k=rsa; p={key}")],
                "DKIM at {sel}: {dkim:?}"
            );
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
}

/// The apex records BIND was started with, which the operator never touches.
fn apex(bind: &BindPrimary) -> (Vec<String>, Vec<String>) {
    (bind.dig("@", "NS"), bind.dig("ns1", "A"))
}

#[tokio::test]
async fn rfc2136_publishes_updates_prunes_and_deletes() {
    let bind = BindPrimary::start(ZONE).await;
    let ns = TestNs::new("rfc2136").await;
    let run = ns.name.clone();
    let (mut op, _) = operator("rfc2136", &ns.name, &run, &bind, &bind.secret_file(), false);
    let before = apex(&bind);
    assert_eq!(before.0, [format!("ns1.{ZONE}.")]);

    // Publish: MX, SPF and both DKIM keys reach BIND; RecordsPublished=True.
    ns.apply_ok(&manifest(
        "example-com",
        &run,
        "  domain: example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let api: Api<SendingDomain> = ns.api();
    let sd = wait_published(&api, "example-com").await;
    let t = token(&sd);
    wait_served(&bind, &sd).await;
    assert!(bind.dig(&format!("track.{t}"), "CNAME").is_empty());

    // A restart reads the zone before its controller starts: RecordsPublished
    // does not flip while the first sync is under way.
    let before_restart = published_since(&sd);
    op.restart();
    ns.kubectl(&[
        "annotate",
        "sd",
        "example-com",
        "anypost.com/verify=after-restart",
        "--overwrite",
    ]);
    let sd = eventually(WAIT, || async {
        let sd = api.get("example-com").await?;
        let seen = sd
            .status
            .as_ref()
            .and_then(|s| s.observed_verify_request.clone());
        ensure!(
            seen.as_deref() == Some("after-restart"),
            "observedVerifyRequest={seen:?}"
        );
        Ok::<_, anyhow::Error>(sd)
    })
    .await;
    assert_eq!(published_since(&sd), before_restart);

    // A spec change: tracking adds the CNAME.
    ns.apply_ok(&manifest(
        "example-com",
        &run,
        "  domain: example.com\n  dkim:\n    keyBits: 1024\n  tracking:\n    subdomain: track\n",
    ));
    eventually(WAIT, || async {
        let got = bind.dig(&format!("track.{t}"), "CNAME");
        ensure!(got == ["t.anypost.test."], "tracking CNAME: {got:?}");
        Ok::<_, anyhow::Error>(())
    })
    .await;

    // A key change: the DKIM Secret is lost, new keys are made and published.
    let old_keys = public_keys(&sd);
    let secrets: Api<Secret> = ns.api();
    secrets
        .delete("example-com-dkim", &DeleteParams::default())
        .await
        .unwrap();
    let sd = eventually(WAIT, || async {
        let sd = api.get("example-com").await?;
        let keys = public_keys(&sd);
        ensure!(
            keys.len() == 2 && keys[0] != old_keys[0] && keys[1] != old_keys[1],
            "keys not replaced yet"
        );
        Ok::<_, anyhow::Error>(sd)
    })
    .await;
    wait_served(&bind, &sd).await;
    let sd = wait_published(&api, "example-com").await;
    assert_eq!(
        condition(&sd, "RecordsPublished").map(|c| c.1),
        Some("Published".to_string())
    );

    // Records nobody accounts for are pruned, of any type, at the next sync.
    bind.nsupdate(&[
        format!("update add stale.{ZONE} 60 TXT \"left by hand\""),
        format!("update add extra.{t}.{ZONE} 60 A 192.0.2.7"),
        format!("update add {t}.{ZONE} 60 AAAA 2001:db8::7"),
        format!("update add _sip._tcp.{ZONE} 60 SRV 0 0 5060 sip.example."),
    ]);
    assert_eq!(bind.txt("stale"), ["left by hand"]);
    eventually(WAIT, || async {
        let left: Vec<Vec<String>> = vec![
            bind.dig("stale", "TXT"),
            bind.dig(&format!("extra.{t}"), "A"),
            bind.dig(&t, "AAAA"),
            bind.dig("_sip._tcp", "SRV"),
        ];
        ensure!(left.iter().all(Vec::is_empty), "still there: {left:?}");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    wait_served(&bind, &sd).await;
    assert_eq!(apex(&bind), before, "apex NS and ns1's address untouched");

    // Deleting the SendingDomain removes its names from the zone.
    api.delete("example-com", &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, || async {
        let names: Vec<String> = bind.axfr().into_iter().filter(|l| l.contains(&t)).collect();
        ensure!(names.is_empty(), "left in the zone: {names:?}");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let zone = bind.axfr();
    let types: Vec<&str> = zone
        .iter()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(types, ["SOA", "NS", "A", "SOA"], "{zone:#?}");
    assert_eq!(apex(&bind), before);
}

#[tokio::test]
async fn rfc2136_bind_down_is_reported_and_caught_up() {
    let mut bind = BindPrimary::start(ZONE).await;
    let ns = TestNs::new("rfc2136-down").await;
    let run = ns.name.clone();
    // With leader election on: the sync follows the controller's lease.
    let (mut op, http) = operator(
        "rfc2136-down",
        &ns.name,
        &run,
        &bind,
        &bind.secret_file(),
        true,
    );
    ns.apply_ok(&manifest(
        "one",
        &run,
        "  domain: one.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let api: Api<SendingDomain> = ns.api();
    let one = wait_published(&api, "one").await;
    wait_served(&bind, &one).await;
    let since = published_since(&one);
    bind.stop();
    op.wait_for_log("rfc2136 sync failed", WAIT).await;
    // The metrics say so, once, for alerts.
    let m = |name: &str| metric(http, name).unwrap();
    eventually(WAIT, || async {
        ensure!(m("anypost_rfc2136_failing") == 1.0, "not failing yet");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    assert!(m("anypost_rfc2136_syncs_total{outcome=\"Rfc2136Axfr\"}") >= 1.0);
    let created_before = m("anypost_rfc2136_changes_total{op=\"create\"}");
    assert!(created_before >= 1.0, "the first domain was created");
    let last_success = m("anypost_rfc2136_last_success_timestamp_seconds");
    assert!(last_success > 0.0);

    // A domain created while BIND is away reports the failure: its records
    // are known to be absent.
    ns.apply_ok(&manifest(
        "two",
        &run,
        "  domain: two.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let (_, reason, message) = eventually(WAIT, || async {
        let sd = api.get("two").await?;
        let c = condition(&sd, "RecordsPublished").ok_or_else(|| anyhow!("no condition"))?;
        ensure!(c.1 == "SyncFailed", "RecordsPublished={c:?}");
        Ok::<_, anyhow::Error>(c)
    })
    .await;
    assert_eq!(reason, "SyncFailed");
    let server = bind.addr().to_string();
    assert!(
        message.contains(&server) && message.contains(&format!("TSIG key {KEY_NAME}")),
        "{message}"
    );
    assert!(message.contains("connect"), "{message}");
    // The domain the last good sync left on the server is not news: it stays
    // published and Ready, with no write and no Warning about it, through the
    // outage (it lasts several sync attempts and reconciles of "one").
    eventually(WAIT, || async {
        let failed = m("anypost_rfc2136_syncs_total{outcome=\"Rfc2136Axfr\"}");
        ensure!(failed >= 3.0, "{failed} failed syncs so far");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let still = api.get("one").await.unwrap();
    let published = condition(&still, "RecordsPublished").unwrap();
    assert_eq!(published.0, "True", "{published:?}");
    assert_eq!(
        published_since(&still),
        since,
        "RecordsPublished of a domain whose records the server holds changed in the outage"
    );
    let warnings = ns.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=one,type=Warning",
        "-o",
        "name",
    ]);
    assert!(warnings.trim().is_empty(), "{warnings}");

    // A restart in the outage cannot read the zone: nothing is known, and what
    // status reported stands (the controller reconciles both domains anyway).
    op.restart();
    eventually(WAIT, || async {
        let m = |name| metric(http, name).map_err(anyhow::Error::msg);
        ensure!(m("anypost_rfc2136_failing")? == 1.0, "not failing yet");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    // The restarted operator's own word on the second domain (a reconcile
    // counted in the metrics may not have its status write in yet).
    let c = eventually(WAIT, || async {
        let two_now = api.get("two").await?;
        let c = condition(&two_now, "RecordsPublished").ok_or_else(|| anyhow!("no condition"))?;
        ensure!(c.2.contains("first read"), "RecordsPublished of two: {c:?}");
        Ok::<_, anyhow::Error>(c)
    })
    .await;
    assert_eq!(
        (c.0.as_str(), c.1.as_str()),
        ("False", "SyncFailed"),
        "{c:?}"
    );
    let still = api.get("one").await.unwrap();
    assert_eq!(published_since(&still), since, "{:?}", still.status);

    bind.start_again().await;
    // Nothing was lost: the first domain's records came back with the server.
    wait_served(&bind, &one).await;
    let one = wait_published(&api, "one").await;
    let two = wait_published(&api, "two").await;
    wait_served(&bind, &two).await;
    wait_served(&bind, &one).await;
    assert!(op.is_running());
    eventually(WAIT, || async {
        ensure!(m("anypost_rfc2136_failing") == 0.0, "still failing");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    // (Counted since the restart: the second domain's records went in.)
    assert!(m("anypost_rfc2136_changes_total{op=\"create\"}") >= 1.0);
    assert!(m("anypost_rfc2136_last_success_timestamp_seconds") > last_success);
}

/// An operator whose TSIG key the server does not accept (`key_name` and
/// `algorithm` as given, the right secret unless `wrong_secret`): the domain
/// reports SyncFailed naming the key, the server's answer `code` and the
/// server, the log says so, and nothing reaches the zone.
async fn a_wrong_tsig_key_is_a_clear_error(
    test: &str,
    key_name: &str,
    algorithm: &str,
    wrong_secret: bool,
    code: &str,
) {
    let bind = BindPrimary::start(ZONE).await;
    let ns = TestNs::new(test).await;
    let run = ns.name.clone();
    let server = bind.addr().to_string();
    let secret = if wrong_secret {
        bind.wrong_secret_file()
    } else {
        bind.secret_file()
    };
    let secret = secret.display().to_string();
    let (mut op, _) = operator_with_metrics(
        test,
        &ns.name,
        &run,
        &[
            "--zone-backend",
            "rfc2136",
            "--rfc2136-server",
            &server,
            "--tsig-key-name",
            key_name,
            "--tsig-algorithm",
            algorithm,
            "--tsig-secret-file",
            &secret,
            "--rfc2136-resync",
            "2s",
            "--leader-election",
            "false",
        ],
    );
    ns.apply_ok(&manifest(
        "example-com",
        &run,
        "  domain: example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let api: Api<SendingDomain> = ns.api();
    let (_, reason, message) = eventually(WAIT, || async {
        let sd = api.get("example-com").await?;
        let c = condition(&sd, "RecordsPublished").ok_or_else(|| anyhow!("no condition"))?;
        ensure!(c.1 == "SyncFailed", "RecordsPublished={c:?}");
        Ok::<_, anyhow::Error>(c)
    })
    .await;
    assert_eq!(reason, "SyncFailed");
    let rejected = format!("the server rejected TSIG key {key_name} ({code}");
    assert!(
        message.contains(&rejected) && message.contains(&server),
        "{message}"
    );
    op.wait_for_log(&rejected, WAIT).await;
    // Nothing reached the zone: SOA, NS, ns1's A, SOA.
    assert_eq!(bind.axfr().len(), 4, "{:#?}", bind.axfr());
}

#[tokio::test]
async fn rfc2136_wrong_tsig_secret_is_a_clear_error() {
    a_wrong_tsig_key_is_a_clear_error("rfc2136-badkey", KEY_NAME, "hmac-sha256", true, "BADSIG")
        .await;
}

#[tokio::test]
async fn rfc2136_wrong_tsig_key_name_is_a_clear_error() {
    a_wrong_tsig_key_is_a_clear_error(
        "rfc2136-badname",
        "not-the-servers-key",
        "hmac-sha256",
        false,
        "BADKEY",
    )
    .await;
}

#[tokio::test]
async fn rfc2136_wrong_tsig_algorithm_is_a_clear_error() {
    a_wrong_tsig_key_is_a_clear_error("rfc2136-badalg", KEY_NAME, "hmac-sha512", false, "BADKEY")
        .await;
}

#[tokio::test]
async fn rfc2136_missing_flags_stop_the_operator_with_the_flag_named() {
    let ns = TestNs::new("rfc2136-flags").await;
    let args = operator_args_with(
        &ns.name,
        &ns.name,
        &[
            ("--zone-backend", "rfc2136"),
            ("--rfc2136-server", "127.0.0.1:9"),
            ("--leader-election", "false"),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut op = Operator::start("rfc2136-flags", &args);
    eventually(WAIT, || {
        let running = op.is_running();
        async move {
            ensure!(!running, "the operator is still running");
            Ok::<_, anyhow::Error>(())
        }
    })
    .await;
    let logs = op.logs();
    assert!(
        logs.contains("--tsig-key-name: required for the rfc2136 backend"),
        "{logs}"
    );
}

/// Without the control plane: a zone of thousands of RRsets with 4096-bit-sized
/// DKIM keys goes out in many bounded UPDATEs, comes back whole through a
/// transfer of many messages (a second sync finds nothing to do), and shrinks
/// again in batches of deletes.
#[tokio::test]
async fn rfc2136_large_zones_go_in_batches_and_come_back_whole() {
    use anypost_operator::adapters::dns::rfc2136::Error;
    use anypost_operator::adapters::dns::rfc2136::{
        Rfc2136Config, Rfc2136Settings, Server, sync_once,
    };
    use anypost_operator::adapters::kube::LeaderGuard;
    use anypost_operator::core::zone::{
        DeleteGuard, RData, RecordType, RrSet, ZoneConfig, ZoneSettings, dkim_text,
    };
    let deletes = DeleteGuard::default();

    let bind = BindPrimary::start(ZONE).await;
    let config = Rfc2136Config::new(&Rfc2136Settings {
        server: Some(bind.addr()),
        key_name: Some(KEY_NAME.into()),
        secret_file: Some(bind.secret_file()),
        algorithm: "hmac-sha256".into(),
        resync: Duration::from_secs(300),
    })
    .unwrap();
    let cfg = ZoneConfig::new(&ZoneSettings {
        zone: ZONE.into(),
        mx_host: "mx.anypost.test".into(),
        spf_include: "spf.anypost.test".into(),
        tracking_host: "t.anypost.test".into(),
        nameservers: vec![],
        nameserver_addresses: vec![],
        soa_contact: None,
        record_ttl: 300,
    })
    .unwrap();
    let server = Server::new(&config);
    // A 4096-bit RSA key is about 736 base64 characters.
    let key = |i: usize| format!("{}{i:04}", "K".repeat(732));
    let mut desired = cfg.apex_zone();
    const N: usize = 800;
    for i in 0..N {
        let base = format!("t{i:04}.{ZONE}");
        desired.insert(
            &base,
            RrSet::one(
                300,
                RData::Mx {
                    preference: 10,
                    exchange: "mx.anypost.test".into(),
                },
            ),
        );
        desired.insert(
            &format!("anypost1._domainkey.{base}"),
            RrSet::one(300, RData::txt(&dkim_text(&key(i)))),
        );
    }

    let first = sync_once(&server, &desired, &LeaderGuard::always(), &deletes)
        .await
        .unwrap();
    assert_eq!(
        (first.created, first.replaced, first.deleted),
        (2 * N, 0, 0)
    );
    assert!(first.batches > 2 * N / 100, "{} batches", first.batches);
    assert_eq!(
        bind.txt(&format!("anypost1._domainkey.t{:04}", N - 1)),
        [dkim_text(&key(N - 1))]
    );

    // What was written reads back exactly, across a transfer of many messages.
    let second = sync_once(&server, &desired, &LeaderGuard::always(), &deletes)
        .await
        .unwrap();
    assert_eq!(
        (
            second.created,
            second.replaced,
            second.deleted,
            second.batches
        ),
        (0, 0, 0, 0)
    );
    let logs = bind.logs();
    let messages: Vec<u32> = logs
        .lines()
        .filter_map(|l| {
            l.split("AXFR ended: ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        messages.iter().any(|&m| m > 1),
        "no transfer of several messages: {messages:?}"
    );

    // Half the domains go, one key changes.
    for i in (0..N).step_by(2) {
        let base = format!("t{i:04}.{ZONE}");
        desired.remove(&base, RecordType::Mx);
        desired.remove(&format!("anypost1._domainkey.{base}"), RecordType::Txt);
    }
    desired.insert(
        &format!("anypost1._domainkey.t0001.{ZONE}"),
        RrSet::one(300, RData::txt(&dkim_text("QUJD"))),
    );
    let third = sync_once(&server, &desired, &LeaderGuard::always(), &deletes)
        .await
        .unwrap();
    assert_eq!((third.created, third.replaced, third.deleted), (0, 1, N));
    assert!(bind.dig("t0000", "MX").is_empty());
    assert_eq!(bind.dig("t0001", "MX"), ["10 mx.anypost.test."]);
    assert_eq!(bind.txt("anypost1._domainkey.t0001"), [dkim_text("QUJD")]);
    let fourth = sync_once(&server, &desired, &LeaderGuard::always(), &deletes)
        .await
        .unwrap();
    assert_eq!(fourth.batches, 0);
    assert_eq!(fourth.zone.len(), desired.len() + 1, "plus ns1's address");

    // Every domain gone at once (a wrong selector, statuses lost): deleting all
    // the record sets the operator owns is refused and nothing changes, until
    // exactly that many deletions are confirmed.
    let empty = cfg.apex_zone();
    let refused = sync_once(&server, &empty, &LeaderGuard::always(), &deletes)
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        matches!(
            refused,
            Error::DeleteRefused {
                deletes: N,
                owned: N,
                percent: 100,
                max: 50,
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains(&format!("--rfc2136-confirm-deletes={N}")),
        "{message}"
    );
    assert_eq!(
        bind.dig("t0001", "MX"),
        ["10 mx.anypost.test."],
        "nothing was deleted"
    );
    let one_short = DeleteGuard {
        confirmed: N - 1,
        ..deletes
    };
    assert!(
        sync_once(&server, &empty, &LeaderGuard::always(), &one_short)
            .await
            .is_err()
    );
    let confirmed = DeleteGuard {
        confirmed: N,
        ..deletes
    };
    let fifth = sync_once(&server, &empty, &LeaderGuard::always(), &confirmed)
        .await
        .unwrap();
    assert_eq!(fifth.deleted, N);
    assert!(bind.dig("t0001", "MX").is_empty());
}

#[tokio::test]
async fn rfc2136_only_the_leader_writes_and_a_successor_takes_over() {
    let bind = BindPrimary::start(ZONE).await;
    let ns = TestNs::new("rfc2136-leader").await;
    let run = ns.name.clone();
    let secret = bind.secret_file();
    let (mut first, _) = operator("rfc2136-leader-a", &ns.name, &run, &bind, &secret, true);
    first
        .wait_for_log("became the leader", Duration::from_secs(30))
        .await;
    let (second, _) = operator("rfc2136-leader-b", &ns.name, &run, &bind, &secret, true);
    let api: Api<SendingDomain> = ns.api();
    for name in ["one", "two"] {
        ns.apply_ok(&manifest(
            name,
            &run,
            &format!("  domain: {name}.example.com\n  dkim:\n    keyBits: 1024\n"),
        ));
        let sd = wait_published(&api, name).await;
        wait_served(&bind, &sd).await;
    }
    assert!(first.logs().contains("rfc2136 sync done"));
    assert!(
        !second.logs().contains("rfc2136 sync"),
        "the standby replica synced:\n{}",
        second.logs()
    );

    let since = |sd: &SendingDomain| {
        sd.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "RecordsPublished")
                .map(|c| (c.status.clone(), c.last_transition_time.clone()))
        })
    };
    let one_before = since(&api.get("one").await.unwrap());

    // The leader dies; once its lease runs out the other replica leads and syncs.
    first.kill();
    ns.apply_ok(&manifest(
        "three",
        &run,
        "  domain: three.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let sd = wait_published(&api, "three").await;
    wait_served(&bind, &sd).await;
    assert!(second.logs().contains("rfc2136 sync done"));
    // The standby knew what the server held: the failover (whose controller
    // reconciled every domain on taking over) did not flip the domains published
    // before it.
    assert_eq!(since(&api.get("one").await.unwrap()), one_before);
}

/// How many syncs failed with `outcome` so far (no series before the first).
fn failed_syncs(http: SocketAddr, outcome: &str) -> f64 {
    metric_or_absent(
        http,
        &format!("anypost_rfc2136_syncs_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap()
    .unwrap_or(0.0)
}

/// Waits for two more syncs failed with `outcome` than `before`, failing at
/// once if the SendingDomain "gone-com" or its finalizer is gone meanwhile.
async fn stays_through_failed_syncs(
    api: &Api<SendingDomain>,
    http: SocketAddr,
    outcome: &str,
    before: f64,
    timeout: Duration,
) {
    eventually(timeout, || async {
        let sd = api
            .get_opt("gone-com")
            .await?
            .expect("deleted before its records were removed");
        assert!(
            sd.metadata
                .finalizers
                .as_deref()
                .unwrap_or_default()
                .contains(&"anypost.com/dns-records".to_string()),
            "the finalizer went before the records: {:?}",
            sd.metadata.finalizers
        );
        let now = failed_syncs(http, outcome);
        ensure!(
            now >= before + 2.0,
            "{} syncs failed with {outcome} so far",
            now - before
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    // And still there after the last of them.
    assert!(api.get_opt("gone-com").await.unwrap().is_some());
}

/// With records on an external server, a deleted SendingDomain stays (its
/// finalizer) until the server no longer holds its records: not while BIND is
/// down, not while BIND is up but refuses the UPDATE that removes them, and once
/// it goes, its records are gone.
#[tokio::test]
async fn rfc2136_deletion_waits_until_the_records_are_removed() {
    let mut bind = BindPrimary::start(ZONE).await;
    let ns = TestNs::new("rfc2136-finalizer").await;
    let run = ns.name.clone();
    let (_op, http) = operator(
        "rfc2136-finalizer",
        &ns.name,
        &run,
        &bind,
        &bind.secret_file(),
        false,
    );
    ns.apply_ok(&manifest(
        "gone-com",
        &run,
        "  domain: gone.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let api: Api<SendingDomain> = ns.api();
    let sd = wait_published(&api, "gone-com").await;
    let t = token(&sd);
    wait_served(&bind, &sd).await;
    let sd = api.get("gone-com").await.unwrap();
    assert!(
        sd.metadata
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .contains(&"anypost.com/dns-records".to_string()),
        "{:?}",
        sd.metadata.finalizers
    );

    // While the server is away the records cannot be removed: the object stays
    // through failed syncs (each one a chance for a wrong finalizer to let go).
    bind.stop();
    let axfr_failures = failed_syncs(http, "Rfc2136Axfr");
    api.delete("gone-com", &DeleteParams::default())
        .await
        .unwrap();
    stays_through_failed_syncs(&api, http, "Rfc2136Axfr", axfr_failures, WAIT).await;
    let sd = api.get("gone-com").await.unwrap();
    assert!(sd.metadata.deletion_timestamp.is_some(), "not terminating");

    // Up again but refusing every UPDATE: the zone reads fine and still holds
    // the records, so the object still stays.
    let update_failures = failed_syncs(http, "Rfc2136Update");
    bind.accept_updates(false).await;
    // The sync's backoff grew in the outage (up to 30 s a try).
    stays_through_failed_syncs(&api, http, "Rfc2136Update", update_failures, 2 * WAIT).await;
    let held: Vec<String> = bind.axfr().into_iter().filter(|l| l.contains(&t)).collect();
    assert!(
        held.len() >= 4,
        "the domain's records are still served: {held:?}"
    );

    // Accepting UPDATEs again: the records are removed, then the object goes.
    bind.accept_updates(true).await;
    eventually(WAIT, || async {
        ensure!(
            api.get_opt("gone-com").await?.is_none(),
            "still terminating"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let left: Vec<String> = bind.axfr().into_iter().filter(|l| l.contains(&t)).collect();
    assert!(
        left.is_empty(),
        "records left after the deletion finished: {left:?}"
    );
}
