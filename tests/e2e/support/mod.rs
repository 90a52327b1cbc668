//! What every end-to-end test shares: the local control plane (started or reused
//! once per test run), a namespace of its own, `kubectl`, the operator process, and
//! `eventually` instead of sleeps.
//!
//! Nothing here skips: when the control plane cannot start, every test that needs
//! it fails with `scripts/dev-cluster up`'s own explanation.

// Each test module uses a different part of this toolbox; unused parts are fine.
#![allow(dead_code, unused_imports)]

pub mod audit;
pub mod bind_rfc2136;
pub mod bind_secondary;
mod cluster;
pub mod dns_topology;
pub mod node;
mod operator;
pub mod proxy;
pub mod tools;

pub use cluster::{
    Cluster, PrivateCluster, TestNs, client, cluster, kubectl, kubectl_ok, kubectl_stdin,
    service_account_kubeconfig,
};
pub use operator::Operator;

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` of this repository: the dev cluster's state and the tests' logs live
/// there, whatever CARGO_TARGET_DIR says about build outputs.
pub fn target_dir() -> PathBuf {
    repo_root().join("target")
}

/// A short random lower-case hex string, for names that must not collide between
/// tests or between runs against the same long-lived cluster.
pub fn random_suffix() -> String {
    let n = getrandom::u32().expect("the OS random source works");
    format!("{n:08x}")
}

/// Retries `check` until it returns `Ok`, then returns its value. On timeout it
/// panics with the last failure, so a test says what it was waiting for.
///
/// ```ignore
/// let sd = eventually(Duration::from_secs(30), || async {
///     let sd = api.get("example-com").await?;
///     anyhow::ensure!(sd.status.is_some(), "no status yet");
///     Ok(sd)
/// })
/// .await;
/// ```
pub async fn eventually<T, E, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() >= timeout {
            panic!(
                "not true after {:.1}s ({attempts} attempts); last failure: {last}",
                start.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(pause.min(timeout.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// `GET path` over HTTP/1.1: (status code, body), or `None` when nothing answers.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let code = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// One sample's value from the operator's `/metrics` on `addr`: `name` is the
/// sample as exposed, labels included (`anypost_x_total{k="v"}`). A series that
/// is not exposed is an error (a renamed metric must not read as 0); use
/// [`metric_or_absent`] where the series may rightly not exist yet.
pub fn metric(addr: std::net::SocketAddr, name: &str) -> Result<f64, String> {
    metric_or_absent(addr, name)?.ok_or_else(|| format!("no series {name} on /metrics"))
}

/// [`metric`], `None` when the series is not exposed (a labelled counter before
/// its first increment). Only for series that may rightly be absent.
pub fn metric_or_absent(addr: std::net::SocketAddr, name: &str) -> Result<Option<f64>, String> {
    let (code, body) = http_get(addr, "/metrics").ok_or("/metrics does not answer")?;
    if code != 200 {
        return Err(format!("/metrics answered {code}: {body}"));
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|e| format!("{name} has the value {v:?}: {e}"))
        })
        .transpose()
}
