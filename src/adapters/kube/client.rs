//! The API clients of `run`. Every request names the replica in its User-Agent
//! (`anypost-operator/<version> (<identity>)`), so the apiserver's audit log says
//! which replica wrote what.
//!
//! - The **fenced** client carries the [`FenceLayer`]: every write it sends is
//!   checked against the [`LeaderGuard`] at the moment it goes out. It does not
//!   retry by itself: a retry made long after the fence checked the first
//!   attempt would be a write nobody checked; a failed write goes back to the
//!   controller, which retries with backoff.
//! - The **plain** client writes what any replica may write whether or not it
//!   leads: the Lease itself, and the identity Secret on first start. It does not
//!   retry either: the election has its own rhythm and deadlines.

use super::fence::{FenceLayer, LeaderGuard};
use http::HeaderValue;
use http::header::USER_AGENT;
use kube::client::ClientBuilder;
use kube::{Client, Config};

/// The clients of one replica.
pub struct Clients {
    pub fenced: Client,
    pub plain: Client,
}

/// Connects (in-cluster config or KUBECONFIG) as `identity`.
pub async fn connect(identity: &str, guard: &LeaderGuard) -> anyhow::Result<Clients> {
    let mut config = Config::infer().await?;
    let agent = format!(
        "anypost-operator/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    );
    let agent = HeaderValue::from_str(&agent)
        .unwrap_or_else(|_| HeaderValue::from_static("anypost-operator"));
    config.headers.push((USER_AGENT, agent));
    config.default_retry = false;
    let plain = Client::try_from(config.clone())?;
    let fenced = ClientBuilder::try_from(config)?
        .with_layer(&FenceLayer(guard.clone()))
        .build();
    Ok(Clients { fenced, plain })
}
