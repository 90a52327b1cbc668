//! The API clients of `run`. Every request names the replica in its User-Agent
//! (`anypost-operator/<version> (<identity>)`), so the apiserver's audit log says
//! which replica wrote what.
//!
//! - The **fenced** client is topped by the leader's [`Fence`]: every write is
//!   checked against the [`LeaderGuard`] before it is handed to the HTTP client,
//!   and goes over connections of its own ([`FencedConnector`]) that check the
//!   guard again before every write to the socket. Its reads (watches, lists,
//!   the live reads that fence writes) go over ordinary connections: a follower
//!   keeps its caches warm. It does not retry by itself: a retry made long after
//!   the fence checked the first attempt would be a write nobody checked; a
//!   failed write goes back to the controller, which retries with backoff.
//! - The **plain** client writes what any replica may write whether or not it
//!   leads: the Lease itself, and the identity Secret on first start. It does not
//!   retry either: the election has its own rhythm and deadlines.

use super::fence::{Fence, LeaderGuard};
use super::wire_fence::FencedConnector;
use http::header::USER_AGENT;
use http::{HeaderValue, Request, Response};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt};
use kube::{Client, Config};
use tower::util::BoxService;
use tower::{BoxError, ServiceBuilder};

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
    let fenced = fenced(&config, guard)?;
    Ok(Clients { fenced, plain })
}

/// The fenced client: reads over ordinary connections, writes over fenced ones.
fn fenced(config: &Config, guard: &LeaderGuard) -> anyhow::Result<Client> {
    if let Some(proxy) = &config.proxy_url {
        anyhow::bail!(
            "the kubeconfig's proxy-url ({proxy}) is not supported: reach the API server directly"
        );
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let reads = stack(config, http.clone())?;
    let writes = stack(config, FencedConnector::new(http, guard.clone()))?;
    Ok(Client::new(
        Fence::new(reads, writes, guard.clone()),
        config.default_namespace.clone(),
    ))
}

type Stack = BoxService<Request<Body>, Response<hyper::body::Incoming>, BoxError>;

/// What kube's own client builder makes of `config`, over `connect`: TLS and the
/// connection timeouts, the API server's URL, the credentials and the headers.
fn stack<C>(config: &Config, connect: C) -> anyhow::Result<Stack>
where
    C: tower::Service<http::Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Send + Unpin + 'static,
    C::Future: Send + 'static,
    C::Error: std::error::Error + Send + Sync + 'static,
{
    let tls = config.rustls_https_connector_with_connector(connect)?;
    let mut timed = hyper_timeout::TimeoutConnector::new(tls);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    timed.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(timed);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(BoxService::new(service))
}
