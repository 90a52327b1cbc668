//! Two shards side by side in one namespace: two operators with different
//! `--selector`s, each electing its own leader (a Lease per shard), judging claims
//! across shards. The same domain claimed in both: the older claim keeps it, the
//! younger shows DomainConflict, and only the winner's zone serves it; when the
//! older goes, the younger takes over.

use crate::controller::{ZONE, condition, operator_args_with, wait_published};
use crate::replicas::dig_short;
use crate::support::dns_topology::free_port;
use crate::support::{Operator, TestNs, eventually, random_suffix};
use anyhow::{anyhow, ensure};
use anypost_operator::adapters::kube::leader;
use anypost_operator::core::api::SendingDomain;
use anypost_operator::core::naming;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::DeleteParams;
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

struct Shard {
    op: Operator,
    dns: SocketAddr,
    selector: String,
}

impl Shard {
    fn start(name: &str, ns: &str, run: &str) -> Shard {
        let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let selector = format!("anypost.com/e2e-run={run},anypost.com/shard={name}");
        let args = operator_args_with(
            ns,
            run,
            &[
                ("--selector", &selector),
                ("--leader-election", "true"),
                ("--dns-listen", &dns.to_string()),
            ],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pod = format!("shard-{name}-0");
        let op = Operator::start_with_env(&format!("shard-{name}"), &args, &[("POD_NAME", &pod)]);
        Shard { op, dns, selector }
    }

    /// The MX this shard's zone serves at `<token>.<zone>`.
    fn mx(&self, token: &str) -> Vec<String> {
        dig_short(self.dns, &format!("{token}.{ZONE}."), "MX")
    }
}

fn manifest(name: &str, run: &str, shard: &str, domain: &str) -> String {
    format!(
        "apiVersion: anypost.com/v1alpha1\nkind: SendingDomain\nmetadata:\n  name: {name}\n  labels:\n    anypost.com/e2e-run: \"{run}\"\n    anypost.com/shard: {shard}\nspec:\n  domain: {domain}\n  dkim:\n    keyBits: 1024\n"
    )
}

#[tokio::test]
async fn two_shards_lead_side_by_side_and_judge_claims_across_each_other() {
    let ns = TestNs::new("shards").await;
    let run = ns.name.clone();
    let mut a = Shard::start("a", &ns.name, &run);
    let mut b = Shard::start("b", &ns.name, &run);
    let api: Api<SendingDomain> = ns.api();
    let shared = format!("shared-{}.example.com", random_suffix());
    ns.apply_ok(&manifest("older", &run, "a", &shared));
    wait_published(&api, "older").await;
    ns.apply_ok(&manifest("younger", &run, "b", &shared));
    ns.apply_ok(&manifest("solo", &run, "b", "solo.shards.example.com"));

    // Each shard leads with a Lease of its own.
    a.op.wait_for_log("starting the controller", WAIT).await;
    b.op.wait_for_log("starting the controller", WAIT).await;
    let leases: Api<Lease> = ns.api();
    for (shard, pod) in [(&a, "shard-a-0"), (&b, "shard-b-0")] {
        let name = leader::lease_name(None, Some(&shard.selector));
        let lease = leases.get(&name).await.unwrap();
        let holder = lease.spec.and_then(|s| s.holder_identity);
        assert_eq!(holder.as_deref(), Some(pod), "{name}");
    }
    wait_published(&api, "solo").await;

    // The younger claim, in the other shard, loses to the older one.
    let c = eventually(WAIT, || async {
        let sd = api.get("younger").await?;
        let c = condition(&sd, "Ready").ok_or_else(|| anyhow!("no Ready yet"))?;
        ensure!(c.1 == "DomainConflict", "Ready={c:?}");
        Ok::<_, anyhow::Error>(c)
    })
    .await;
    assert_eq!(c.0, "False");
    let secrets: Api<Secret> = ns.api();
    assert!(secrets.get_opt("younger-dkim").await.unwrap().is_none());
    // One namespace, one domain: both claims would publish under one token. Only
    // the winner's shard serves it.
    let identity = secrets.get("anypost-operator-identity").await.unwrap();
    let key = identity.data.unwrap()["identity.key"].0.clone();
    let token = naming::token(&key, &ns.name, &shared);
    assert_eq!(a.mx(&token), ["10 mx.anypost.test."]);
    assert!(b.mx(&token).is_empty(), "shard b serves {:?}", b.mx(&token));

    // The older claim goes: the younger takes over, in its own shard.
    api.delete("older", &DeleteParams::default()).await.unwrap();
    let sd = wait_published(&api, "younger").await;
    assert_eq!(sd.status.unwrap().id, Some(naming::domain_id(&token)));
    eventually(WAIT, || async {
        ensure!(
            b.mx(&token) == ["10 mx.anypost.test."],
            "shard b: {:?}",
            b.mx(&token)
        );
        ensure!(a.mx(&token).is_empty(), "shard a still serves it");
        Ok::<_, anyhow::Error>(())
    })
    .await;
}
