//! `/readyz` and `/healthz` tell the truth: a replica cut off from the apiserver
//! (its requests hang, no error comes back) stops being ready once its zone may
//! be stale, and stops being live once its reconciles hang; both recover when
//! the network does, without a restart.

use crate::controller::{manifest, operator_args_with, wait_published};
use crate::support::dns_topology::free_port;
use crate::support::proxy::ApiProxy;
use crate::support::{Operator, TestNs, eventually, http_get};
use anyhow::{Context as _, ensure};
use anypost_operator::core::api::SendingDomain;
use kube::Api;
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// Waits until `path` answers `code` with a body containing `says`.
async fn answers(op: &mut Operator, http: SocketAddr, path: &str, code: u16, says: &str) {
    eventually(WAIT, || {
        let running = op.is_running();
        async move {
            assert!(running, "the operator exited");
            let (got, body) = http_get(http, path).context("no answer")?;
            ensure!(
                got == code && body.contains(says),
                "{path} answered {got}: {body}"
            );
            Ok::<_, anyhow::Error>(())
        }
    })
    .await
}

#[tokio::test]
async fn a_replica_cut_off_from_the_api_turns_unready_then_not_live_and_recovers() {
    let ns = TestNs::new("health").await;
    let run = ns.name.clone();
    let proxy = ApiProxy::start();
    let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let args = operator_args_with(
        &ns.name,
        &run,
        &[
            ("--http-listen", &http.to_string()),
            ("--stale-after", "3s"),
            ("--stuck-after", "4s"),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kubeconfig = proxy.kubeconfig.display().to_string();
    let mut op = Operator::start_with_env("health", &args, &[("KUBECONFIG", &kubeconfig)]);
    answers(&mut op, http, "/readyz", 200, "ok").await;
    answers(&mut op, http, "/healthz", 200, "ok").await;

    // Domains whose checks keep failing (the resolver never answers): a
    // reconcile every few seconds, each one writing status.
    let api: Api<SendingDomain> = ns.api();
    for i in 0..3 {
        ns.apply_ok(&manifest(
            &format!("d{i}"),
            &run,
            &format!("  domain: d{i}.health.example.com\n  dkim:\n    keyBits: 1024\n"),
        ));
    }
    for i in 0..3 {
        wait_published(&api, &format!("d{i}")).await;
    }

    // Cut off: the watch hangs without an error, and so does every write.
    proxy.cut();
    answers(
        &mut op,
        http,
        "/readyz",
        503,
        "watch: reaching the API has failed for",
    )
    .await;
    answers(
        &mut op,
        http,
        "/healthz",
        503,
        "controller: reconciles: nothing finished for",
    )
    .await;
    // Unready and not live is a verdict for the kubelet; the process itself
    // keeps serving what it has.
    assert!(op.is_running());

    proxy.heal();
    answers(&mut op, http, "/healthz", 200, "ok").await;
    answers(&mut op, http, "/readyz", 200, "ok").await;
    // And it goes on reconciling: a domain applied now is published.
    ns.apply_ok(&manifest(
        "after",
        &run,
        "  domain: after.health.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    wait_published(&api, "after").await;
}
