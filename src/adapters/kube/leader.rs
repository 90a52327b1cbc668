//! Leader election with a coordination.k8s.io Lease: every replica serves DNS, one
//! writes. Every write the operator makes happens in the controller, which runs
//! only while this replica holds the lease.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::Duration;
use tokio::sync::watch;

/// Name of the Lease in the operator's namespace.
pub const LEASE_NAME: &str = "anypost-operator-leader";
/// How long a lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and others retry.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(4);

fn lease_body(
    identity: &str,
    now: Timestamp,
    transitions: i32,
    acquired: Option<MicroTime>,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// One round of the election: returns whether this replica holds the lease.
async fn try_acquire(
    api: &Api<Lease>,
    namespace: &str,
    identity: &str,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(lease_body(identity, now, 0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let dur = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(LEASE_DURATION);
        t.0.checked_add(jiff::SignedDuration::try_from(dur).unwrap_or_default())
            .is_ok_and(|end| end < now)
    });
    let new_spec = if holder == identity {
        lease_body(
            identity,
            now,
            spec.lease_transitions.unwrap_or(0),
            spec.acquire_time,
        )
    } else if holder.is_empty() || expired {
        lease_body(identity, now, spec.lease_transitions.unwrap_or(0) + 1, None)
    } else {
        return Ok(false);
    };
    lease.spec = Some(new_spec);
    write_read_lease(api, &lease).await
}

/// Writes back a Lease as read. The write carries the resourceVersion read, so
/// if anyone wrote the Lease in between it is refused (409): `Ok(false)`.
async fn write_read_lease(api: &Api<Lease>, lease: &Lease) -> Result<bool, kube::Error> {
    match api.replace(LEASE_NAME, &PostParams::default(), lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election forever, publishing whether this replica leads.
pub async fn run(client: Client, namespace: String, identity: String, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        match try_acquire(&api, &namespace, &identity).await {
            Ok(true) => {
                if !*tx.borrow() {
                    tracing::info!(lease = LEASE_NAME, %namespace, %identity, "became the leader");
                }
                last_renewal = Some(tokio::time::Instant::now());
                tx.send_replace(true);
            }
            Ok(false) => {
                if *tx.borrow() {
                    tracing::warn!(lease = LEASE_NAME, "lost the leader lease");
                }
                tx.send_replace(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = LEASE_NAME, "leader election round failed");
                // Keep leading only while the last renewal is still valid.
                if last_renewal.is_none_or(|t| t.elapsed() > LEASE_DURATION - RENEW_INTERVAL) {
                    tx.send_replace(false);
                }
            }
        }
        tokio::time::sleep(RENEW_INTERVAL).await;
    }
}

/// Gives the lease up if this replica holds it, so that another takes over at
/// its next round instead of waiting for the lease to run out. Called on a
/// graceful shutdown, after the controller has stopped.
pub async fn release(client: Client, namespace: &str, identity: &str) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(false);
    }
    let now = MicroTime(Timestamp::now());
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    // Refused if someone else wrote it meanwhile: then it is not ours to release.
    write_read_lease(&api, &lease).await
}
