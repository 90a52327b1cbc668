//! What the chart ships for monitoring, each checked with the real tool:
//!
//! - the kube-state-metrics CustomResourceStateMetrics configuration, loaded by a
//!   real kube-state-metrics (built from the Go module proxy) reading the dev
//!   cluster with the chart's RBAC, exports the series of real SendingDomains;
//! - every query of the Grafana dashboard parses (promtool) and names only
//!   metrics that running operators export or that configuration defines;
//! - the PrometheusRule's alerts, rendered for both zone backends, pass
//!   `promtool test rules` (tests/prometheus/): each fires on the series that
//!   should fire it and stays silent otherwise.

use crate::chart::{REQUIRED, chart, exported_metric_names, helm_run};
use crate::controller::{
    ZONE, manifest, operator_args_with, operator_with_metrics, wait_published,
};
use crate::gitops::{Verifying, wait_ready_reason};
use crate::support::bind_rfc2136::{BindPrimary, KEY_NAME};
use crate::support::dns_topology::free_port;
use crate::support::tools::{promtool, run, test_tool};
use crate::support::{
    Operator, TestNs, eventually, http_get, kubectl, kubectl_ok, metric, random_suffix, repo_root,
    target_dir,
};
use anyhow::{Context as _, anyhow, ensure};
use anypost_operator::core::api::{DomainState, SendingDomain};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Renders the chart (release `anypost` in namespace `mail`) with `sets`.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "anypost", "-n", "mail", "--set", REQUIRED];
    let chart = chart();
    args.insert(2, &chart);
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = helm_run(&args);
    assert!(ok, "helm template {sets:?} failed:\n{err}");
    serde_yaml::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).expect("helm renders YAML"))
        .filter(|d: &Value| !d.is_null())
        .collect()
}

/// The object of `kind` named `name` among `docs`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered chart"))
}

/// The metric names a CustomResourceStateMetrics configuration defines.
fn ksm_metric_names(config: &str) -> BTreeSet<String> {
    let config: Value = serde_yaml::from_str(config).expect("the configuration is YAML");
    let mut names = BTreeSet::new();
    for resource in config["spec"]["resources"].as_array().expect("resources") {
        let prefix = resource["metricNamePrefix"]
            .as_str()
            .unwrap_or("kube_customresource");
        for m in resource["metrics"].as_array().expect("metrics") {
            names.insert(format!("{prefix}_{}", m["name"].as_str().expect("a name")));
        }
    }
    names
}

/// The shipped kube-state-metrics configuration, as the chart renders it.
fn ksm_config() -> String {
    let docs = render(&["metrics.kubeStateMetrics.enabled=true"]);
    let cm = find(
        &docs,
        "ConfigMap",
        "anypost-anypost-operator-kube-state-metrics",
    );
    cm["data"]["sendingdomains.yaml"]
        .as_str()
        .expect("the configuration in the ConfigMap")
        .to_string()
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = vec![];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: value
                .parse()
                .unwrap_or_else(|_| panic!("a number in {line:?}")),
        });
    }
    out
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_string();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "a quoted label value in {text:?}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
    labels
}

/// `GET path` over HTTP/1.0, so that the body comes whole, not chunked:
/// (status code, body), or `None` when nothing answers.
fn scrape(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let code = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// A process killed when dropped, its output in a log under target/e2e-logs/.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &str, program: &Path, args: &[String]) -> Process {
        let dir = target_dir().join("e2e-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{name}-{}.log", random_suffix()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", program.display()));
        Process { child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!(
                "----- last lines of {} -----\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Deletes cluster-scoped objects (`kind/name`) when dropped.
struct ClusterScoped(Vec<String>);

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        for o in &self.0 {
            kubectl(&["delete", o, "--ignore-not-found", "--wait=false"]);
        }
    }
}

/// A kubeconfig for ServiceAccount `sa` of `ns`, with a fresh token.
fn service_account_kubeconfig(ns: &TestNs, sa: &str) -> PathBuf {
    let token = ns.kubectl_ok(&["create", "token", sa, "--duration", "1h"]);
    let server = kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let path = target_dir().join(format!("e2e-logs/kubeconfig-{}-{sa}", ns.name));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa}}\ncurrent-context: c\n",
            token.trim()
        ),
    )
    .unwrap();
    path
}

fn unix(t: &Option<Time>) -> Option<f64> {
    t.as_ref().map(|t| t.0.as_second() as f64)
}

#[tokio::test]
async fn kube_state_metrics_exports_each_domain_with_the_charts_configuration() {
    let mut v = Verifying::start("ksm", &[]).await;
    let suffix = random_suffix();
    let (good, bad) = (
        format!("good-{suffix}.example.com"),
        format!("bad-{suffix}.example.com"),
    );
    v.ns.apply_ok(&manifest(
        "good",
        &v.run,
        &format!(
            "  domain: {good}\n  dkim:\n    keyBits: 1024\n    rotationInterval: 2160h\n  tracking:\n    subdomain: track\n"
        ),
    ));
    v.ns.apply_ok(&manifest(
        "bad",
        &v.run,
        &format!(
            "  domain: {bad}\n  dkim:\n    keyBits: 1024\n  tracking:\n    subdomain: track\n"
        ),
    ));
    v.ns.apply_ok(&manifest("co-uk", &v.run, "  domain: co.uk\n"));
    let api: Api<SendingDomain> = v.ns.api();
    let g = wait_published(&api, "good").await.status.unwrap();
    wait_published(&api, "bad").await;
    // Only good's owner publishes.
    v.publish(&[&g], |_| false).await;
    v.request_check(&["good", "bad"]);
    wait_ready_reason(&api, "good", "Verified").await;
    wait_ready_reason(&api, "bad", "ApexCnameMissing").await;
    wait_ready_reason(&api, "co-uk", "PublicSuffix").await;
    eventually(WAIT, || async {
        let st = api.get("good").await?.status.context("no status")?;
        let tracking = st.tracking.map(|t| t.state);
        ensure!(
            tracking == Some(DomainState::Verified),
            "tracking {tracking:?}"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;

    // The chart's configuration and RBAC, bound to a ServiceAccount of the test.
    let release = format!("k{suffix}");
    let sa_set = format!(
        "metrics.kubeStateMetrics.rbac.serviceAccount.name=ksm,metrics.kubeStateMetrics.rbac.serviceAccount.namespace={}",
        v.ns.name
    );
    let chart = chart();
    let (ok, rendered, err) = helm_run(&[
        "template",
        &release,
        &chart,
        "-n",
        &v.ns.name,
        "--set",
        REQUIRED,
        "--set",
        "metrics.kubeStateMetrics.enabled=true",
        "--set",
        &sa_set,
        "--show-only",
        "templates/kube-state-metrics.yaml",
    ]);
    assert!(ok, "{err}");
    let name = format!("{release}-anypost-operator-kube-state-metrics");
    let _cleanup = ClusterScoped(vec![
        format!("clusterrole/{name}"),
        format!("clusterrolebinding/{name}"),
    ]);
    v.ns.kubectl_ok(&["create", "serviceaccount", "ksm"]);
    let out = v.ns.kubectl_stdin(&["apply", "-f", "-"], &rendered);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = v.ns.kubectl_ok(&[
        "get",
        "configmap",
        &name,
        "-o",
        "jsonpath={.data.sendingdomains\\.yaml}",
    ]);
    let defined = ksm_metric_names(&config);
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("sendingdomains.yaml");
    std::fs::write(&config_file, &config).unwrap();
    let kubeconfig = service_account_kubeconfig(&v.ns, "ksm");

    let (port, telemetry) = (free_port(), free_port());
    let ksm = Process::start(
        "kube-state-metrics",
        &test_tool("kube-state-metrics"),
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            "--custom-resource-state-only".into(),
            format!(
                "--custom-resource-state-config-file={}",
                config_file.display()
            ),
            "--host=127.0.0.1".into(),
            format!("--port={port}"),
            "--telemetry-host=127.0.0.1".into(),
            format!("--telemetry-port={telemetry}"),
        ],
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ns = v.ns.name.clone();

    // Each attempt compares one scrape with the statuses read just before it: a
    // failing domain is re-checked (and its times move) every few seconds.
    let checked = eventually(Duration::from_secs(120), || {
        let (api, ns, defined, good) = (api.clone(), ns.clone(), defined.clone(), good.clone());
        async move {
            let good_domain = good;
            let good = api
                .get("good")
                .await?
                .status
                .context("good has no status")?;
            let bad = api.get("bad").await?.status.context("bad has no status")?;
            let (code, body) =
                scrape(addr, "/metrics").context("kube-state-metrics does not answer")?;
            ensure!(code == 200, "/metrics answered {code}");
            let samples: Vec<Sample> = parse_exposition(&body)
                .into_iter()
                .filter(|s| s.labels.get("namespace") == Some(&ns))
                .collect();
            let value = |metric: &str, labels: &[(&str, &str)]| {
                let found: Vec<&Sample> = samples
                    .iter()
                    .filter(|s| {
                        s.name == format!("kube_anypost_sendingdomain_{metric}")
                            && labels
                                .iter()
                                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                    })
                    .collect();
                match found.as_slice() {
                    [] => None,
                    [one] => Some(one.value),
                    more => panic!("{} samples of {metric} {labels:?}: {more:?}", more.len()),
                }
            };
            let expect = |metric: &str, labels: &[(&str, &str)], want: Option<f64>| {
                let got = value(metric, labels);
                if got == want {
                    Ok(())
                } else {
                    Err(anyhow!("{metric}{labels:?} is {got:?}, not {want:?}"))
                }
            };
            let id = good.id.clone().context("good has no id")?;
            expect(
                "info",
                &[("name", "good"), ("domain", &good_domain), ("id", &id)],
                Some(1.0),
            )?;
            expect("info", &[("name", "co-uk"), ("domain", "co.uk")], Some(1.0))?;
            expect(
                "state",
                &[("name", "good"), ("state", "verified")],
                Some(1.0),
            )?;
            expect(
                "state",
                &[("name", "good"), ("state", "pending")],
                Some(0.0),
            )?;
            expect("state", &[("name", "bad"), ("state", "pending")], Some(1.0))?;
            expect(
                "state",
                &[("name", "co-uk"), ("state", "pending")],
                Some(1.0),
            )?;
            expect(
                "ready",
                &[("name", "good"), ("status", "True"), ("reason", "Verified")],
                Some(1.0),
            )?;
            expect(
                "ready",
                &[
                    ("name", "bad"),
                    ("status", "False"),
                    ("reason", "ApexCnameMissing"),
                ],
                Some(0.0),
            )?;
            expect(
                "ready",
                &[
                    ("name", "co-uk"),
                    ("status", "False"),
                    ("reason", "PublicSuffix"),
                ],
                Some(0.0),
            )?;
            expect("verification_failure", &[("name", "good")], None)?;
            expect(
                "verification_failure",
                &[("name", "bad"), ("code", "apex_cname_missing")],
                Some(1.0),
            )?;
            let since = bad
                .verification_failure
                .as_ref()
                .and_then(|f| unix(&f.since));
            expect(
                "verification_failure_since_timestamp_seconds",
                &[("name", "bad"), ("code", "apex_cname_missing")],
                since,
            )?;
            expect(
                "tracking_state",
                &[("name", "good"), ("state", "verified")],
                Some(1.0),
            )?;
            expect(
                "tracking_state",
                &[("name", "bad"), ("state", "pending")],
                Some(1.0),
            )?;
            expect("tracking_state", &[("name", "co-uk")], None)?;
            let next = good.dkim.as_ref().and_then(|d| unix(&d.next_rotation_time));
            ensure!(next.is_some(), "good has no nextRotationTime");
            expect(
                "dkim_next_rotation_timestamp_seconds",
                &[("name", "good")],
                next,
            )?;
            expect(
                "dkim_next_rotation_timestamp_seconds",
                &[("name", "bad")],
                None,
            )?;
            expect(
                "last_checked_timestamp_seconds",
                &[("name", "good")],
                unix(&good.last_checked_time),
            )?;
            expect(
                "last_verified_timestamp_seconds",
                &[("name", "good")],
                unix(&good.last_verified_time),
            )?;
            expect(
                "last_checked_timestamp_seconds",
                &[("name", "bad")],
                unix(&bad.last_checked_time),
            )?;
            let exported: BTreeSet<String> = samples.iter().map(|s| s.name.clone()).collect();
            ensure!(
                exported == defined,
                "the configuration defines {defined:?}, kube-state-metrics exports {exported:?}"
            );
            Ok::<_, anyhow::Error>(exported)
        }
    })
    .await;
    assert_eq!(checked.len(), 9, "{checked:?}");
    drop(ksm);
    let _ = std::fs::remove_file(kubeconfig);
}

/// Every metric name the operator exports: the registries' own list, and what
/// two real operators expose once their embedded DNS server has answered a query
/// and their RFC2136 sync has run (a family with labels shows only once used).
async fn operator_metric_names() -> BTreeSet<String> {
    let mut names = exported_metric_names();

    let embedded = TestNs::new("metrics-embedded").await;
    let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (h, d) = (http.to_string(), dns.to_string());
    let run = embedded.name.clone();
    let args = operator_args_with(
        &embedded.name,
        &run,
        &[("--http-listen", h.as_str()), ("--dns-listen", d.as_str())],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _op = Operator::start("metrics-embedded", &args);
    let body = eventually(WAIT, || async move {
        // One query, the way a resolver asks: SOA of the zone's apex.
        let _ = Command::new("dig")
            .args([
                "+tries=1",
                "+time=1",
                "-p",
                &dns.port().to_string(),
                "@127.0.0.1",
                ZONE,
                "SOA",
            ])
            .stdin(Stdio::null())
            .output();
        let (_, body) = http_get(http, "/metrics").context("/metrics does not answer")?;
        ensure!(
            body.contains("anypost_dns_queries_total{"),
            "no DNS query counted yet"
        );
        Ok::<_, anyhow::Error>(body)
    })
    .await;
    names.extend(parse_exposition(&body).into_iter().map(|s| s.name));

    let pushing = TestNs::new("metrics-rfc2136").await;
    let bind = BindPrimary::start(ZONE).await;
    let (server, secret) = (
        bind.addr().to_string(),
        bind.secret_file().display().to_string(),
    );
    let run = pushing.name.clone();
    let (_op, http) = operator_with_metrics(
        "metrics-rfc2136",
        &pushing.name,
        &run,
        &[
            "--zone-backend",
            "rfc2136",
            "--rfc2136-server",
            &server,
            "--tsig-key-name",
            KEY_NAME,
            "--tsig-secret-file",
            &secret,
            "--leader-election",
            "false",
        ],
    );
    eventually(WAIT, || async {
        let ok =
            metric(http, r#"anypost_rfc2136_syncs_total{outcome="ok"}"#).map_err(|e| anyhow!(e))?;
        ensure!(ok >= 1.0, "no sync yet");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let (_, body) = http_get(http, "/metrics").expect("/metrics answers");
    names.extend(parse_exposition(&body).into_iter().map(|s| s.name));
    names
}

/// A Grafana query with its variables replaced: intervals by a duration, any
/// other variable by a plain word (they only ever stand in label values).
fn without_grafana_variables(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let name: String = if chars.peek() == Some(&'{') {
            chars.next();
            chars.by_ref().take_while(|c| *c != '}').collect()
        } else {
            let mut n = String::new();
            while let Some(c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
            {
                n.push(*c);
                chars.next();
            }
            n
        };
        let name = name.split(':').next().unwrap_or_default();
        out.push_str(match name {
            "__rate_interval" | "__interval" | "__range" => "5m",
            _ => "x",
        });
    }
    out
}

/// The metric names a PromQL expression selects: identifiers outside strings,
/// label matchers, ranges and grouping clauses that are not functions or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Strings, {…} and […] go; what remains is names, numbers and operators.
    let mut plain = String::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
                plain.push(' ');
            }
            '{' => {
                chars.by_ref().take_while(|d| *d != '}').for_each(drop);
                plain.push(' ');
            }
            '[' => {
                chars.by_ref().take_while(|d| *d != ']').for_each(drop);
                plain.push(' ');
            }
            c => plain.push(c),
        }
    }
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = plain.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() || c == '.' {
            // A number, e.g. 0.99 or 1e3.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
        {
            i += 1;
        }
        let word: String = bytes[start..i].iter().collect();
        let mut j = i;
        while j < bytes.len() && bytes[j].is_whitespace() {
            j += 1;
        }
        let rest: String = bytes[j..].iter().collect();
        // A function call, or an aggregation with its grouping first: `sum by (x) (…)`.
        let call = rest.starts_with('(')
            || ["by", "without"].iter().any(|g| {
                rest.strip_prefix(g)
                    .is_some_and(|r| r.trim_start().starts_with('('))
            });
        if GROUPING.contains(&word.as_str()) {
            if call {
                // Skip the label list.
                while j < bytes.len() && bytes[j] != ')' {
                    j += 1;
                }
                i = j + 1;
            }
            continue;
        }
        if !call && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            names.insert(word);
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="x",le!="1"}[5m])))"#),
        ["a_bucket"]
    );
    assert_eq!(
        names(r#"time() - max(b{n=~"$x"}) > 7200 or on (n) c offset 5m and bool d"#),
        ["b", "c", "d"]
    );
    assert_eq!(names("sum(rate(e[5m])) by (category) / 1e3"), ["e"]);
    assert_eq!(
        without_grafana_variables(
            r#"rate(a{n=~"$namespace",m="${sd_namespace:regex}"}[$__rate_interval])"#
        ),
        r#"rate(a{n=~"x",m="x"}[5m])"#
    );
}

#[tokio::test]
async fn the_dashboard_queries_parse_and_use_only_exported_metrics() {
    // Off by default; on, a ConfigMap the Grafana sidecar picks up.
    assert!(
        !render(&[])
            .iter()
            .any(|d| d["metadata"]["labels"]["grafana_dashboard"] == "1"),
        "the dashboard is off by default"
    );
    let docs = render(&[
        "metrics.dashboard.enabled=true",
        "metrics.dashboard.namespace=monitoring",
        "metrics.dashboard.annotations.grafana_folder=Mail",
    ]);
    let cm = find(&docs, "ConfigMap", "anypost-anypost-operator-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Mail");
    let dashboard: Value = serde_json::from_str(
        cm["data"]["anypost-operator.json"]
            .as_str()
            .expect("the dashboard in the ConfigMap"),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "anypost-operator");

    // Every query: panels (rows included) and the variables' label_values().
    let mut queries: Vec<(String, String)> = vec![];
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(p) = panels.pop() {
        if p["type"] == "row" {
            panels.extend(p["panels"].as_array().into_iter().flatten());
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        for t in targets.unwrap_or_else(|| panic!("panel {title:?} has no query")) {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            queries.push((title.clone(), expr.to_string()));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().expect("a variable's query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(metric, _)| metric.trim().to_string())
                .unwrap_or_else(|| panic!("variable {}: {q}", var["name"]));
            queries.push((format!("variable {}", var["name"]), inner));
        }
    }
    assert!(queries.len() >= 20, "{} queries", queries.len());

    // promtool parses each one, as a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, e))| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": without_grafana_variables(e)}))
        .collect();
    let file = dir.path().join("dashboard.rules.yaml");
    std::fs::write(
        &file,
        serde_yaml::to_string(
            &serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}),
        )
        .unwrap(),
    )
    .unwrap();
    let (ok, out, err) = run(&promtool(), &["check", "rules", file.to_str().unwrap()], "");
    assert!(ok, "promtool cannot parse a dashboard query:\n{out}{err}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );

    // Every metric is one the operator or the shipped kube-state-metrics
    // configuration exports, and the dashboard shows each area.
    let known: BTreeSet<String> = operator_metric_names()
        .await
        .into_iter()
        .chain(ksm_metric_names(&ksm_config()))
        .collect();
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(&without_grafana_variables(expr));
        assert!(!names.is_empty(), "{title}: {expr} uses no metric");
        for n in names {
            assert!(
                known.contains(&n),
                "{title}: {n} is exported by nothing the chart ships ({expr})\nknown: {known:?}"
            );
            used.insert(n);
        }
    }
    for needed in [
        "anypost_reconciles_total",
        "anypost_reconcile_errors_total",
        "anypost_verification_checks_total",
        "anypost_sendingdomains",
        "anypost_dkim_keys_generated_total",
        "anypost_dns_queries_total",
        "anypost_rfc2136_syncs_total",
        "anypost_rfc2136_failing",
        "kube_anypost_sendingdomain_state",
        "kube_anypost_sendingdomain_ready",
        "kube_anypost_sendingdomain_verification_failure",
        "kube_anypost_sendingdomain_dkim_next_rotation_timestamp_seconds",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}

/// The alert names of a rendered rule group, and which of them a promtool test
/// file expects to fire somewhere.
fn alerts_fired_in(test_file: &Path) -> BTreeSet<String> {
    let tests: Value =
        serde_yaml::from_str(&std::fs::read_to_string(test_file).unwrap()).expect("a test file");
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            if a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()) {
                fired.insert(a["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    fired
}

#[test]
fn the_alerts_fire_on_the_series_that_should_fire_them_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let tests = repo_root().join("tests/prometheus");
    // Each backend's rendering, by alert name.
    let mut rules: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    let mut files = vec![];
    for backend in ["embedded", "rfc2136"] {
        let docs = render(&[
            "metrics.prometheusRule.enabled=true",
            &format!("zone.backend={backend}"),
            "rfc2136.server=192.0.2.53:53,rfc2136.tsigKeyName=anypost,rfc2136.tsigSecretName=tsig",
        ]);
        let rule = docs
            .iter()
            .find(|d| d["kind"] == "PrometheusRule")
            .expect("a PrometheusRule");
        let groups = &rule["spec"]["groups"];
        std::fs::write(
            dir.path().join(format!("rules-{backend}.yaml")),
            serde_yaml::to_string(&serde_json::json!({ "groups": groups })).unwrap(),
        )
        .unwrap();
        let test_file = format!("alerts-{backend}.test.yaml");
        std::fs::copy(tests.join(&test_file), dir.path().join(&test_file)).unwrap();
        rules.insert(
            backend,
            groups[0]["rules"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| Some((r["alert"].as_str()?.to_string(), r.clone())))
                .collect(),
        );
        files.push(test_file);
    }
    // Every alert has a test in which it fires: the alerts both backends render
    // (identically) and the embedded zone's own in the embedded file, the
    // rfc2136 ones in the rfc2136 file.
    let (embedded, rfc2136) = (&rules["embedded"], &rules["rfc2136"]);
    let embedded_only = ["AnypostZoneNotServed"];
    for (alert, rule) in embedded {
        if !embedded_only.contains(&alert.as_str()) {
            assert_eq!(
                Some(rule),
                rfc2136.get(alert),
                "{alert} differs between the backends"
            );
        }
    }
    let must_fire = |file: &str, alerts: BTreeSet<&String>| {
        let fired = alerts_fired_in(&tests.join(file));
        let missing: Vec<_> = alerts.into_iter().filter(|a| !fired.contains(*a)).collect();
        assert!(
            missing.is_empty(),
            "alerts without a test that fires them in {file}: {missing:?}"
        );
    };
    must_fire("alerts-embedded.test.yaml", embedded.keys().collect());
    must_fire(
        "alerts-rfc2136.test.yaml",
        rfc2136
            .keys()
            .filter(|a| !embedded.contains_key(*a))
            .collect(),
    );
    let promtool = promtool();
    let out = Command::new(&promtool)
        .current_dir(dir.path())
        .args([
            "check",
            "rules",
            "rules-embedded.yaml",
            "rules-rfc2136.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&promtool)
        .current_dir(dir.path())
        .args(["test", "rules"])
        .args(&files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules failed:\n{said}");
    assert_eq!(said.matches("SUCCESS").count(), files.len(), "{said}");
}

#[test]
fn the_monitoring_extras_render_where_asked_and_the_apiserver_accepts_them() {
    let is_extra = |d: &&Value| {
        d["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-kube-state-metrics") || n.ends_with("-dashboard"))
    };
    assert!(!render(&[]).iter().any(|d| is_extra(&d)), "off by default");
    let docs = render(&[
        "metrics.kubeStateMetrics.enabled=true",
        "metrics.kubeStateMetrics.namespace=monitoring",
        "metrics.dashboard.enabled=true",
    ]);
    let name = "anypost-anypost-operator-kube-state-metrics";
    assert_eq!(
        find(&docs, "ConfigMap", name)["metadata"]["namespace"],
        "monitoring"
    );
    let role = find(&docs, "ClusterRole", name);
    assert_eq!(role["rules"][0]["resources"][0], "sendingdomains");
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["list", "watch"])
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == name),
        "no binding without a ServiceAccount"
    );
    let docs = render(&[
        "metrics.kubeStateMetrics.enabled=true",
        "metrics.kubeStateMetrics.rbac.serviceAccount.name=kube-state-metrics",
        "metrics.kubeStateMetrics.rbac.serviceAccount.namespace=monitoring",
    ]);
    let binding = find(&docs, "ClusterRoleBinding", name);
    assert_eq!(binding["subjects"][0]["name"], "kube-state-metrics");
    assert_eq!(binding["subjects"][0]["namespace"], "monitoring");
    let (ok, _, err) = helm_run(&[
        "template",
        "anypost",
        &chart(),
        "--set",
        REQUIRED,
        "--set",
        "metrics.kubeStateMetrics.enabled=true,metrics.kubeStateMetrics.rbac.serviceAccount.name=ksm",
    ]);
    assert!(
        !ok && err.contains("serviceAccount.namespace is required"),
        "{err}"
    );
    let (ok, _, err) = helm_run(&[
        "template",
        "anypost",
        &chart(),
        "--set",
        REQUIRED,
        "--set",
        "metrics.dashboard.enabled=yes",
    ]);
    assert!(
        !ok && err.contains("/metrics/dashboard/enabled"),
        "values.schema.json checks it: {err}"
    );

    // The apiserver takes both ConfigMaps (the dashboard is the larger one).
    let (ok, rendered, err) = helm_run(&[
        "template",
        "anypost",
        &chart(),
        "-n",
        "default",
        "--set",
        REQUIRED,
        "--set",
        "metrics.kubeStateMetrics.enabled=true,metrics.dashboard.enabled=true",
        "--show-only",
        "templates/kube-state-metrics.yaml",
        "--show-only",
        "templates/dashboard.yaml",
    ]);
    assert!(ok, "{err}");
    let out = crate::support::kubectl_stdin(
        &["apply", "--dry-run=server", "-n", "default", "-f", "-"],
        &rendered,
    );
    assert!(
        out.status.success(),
        "the apiserver refused them:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
