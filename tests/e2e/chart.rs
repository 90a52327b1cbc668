//! The Helm chart: it lints, refuses to render without the required values,
//! renders objects the real apiserver accepts, passes only flags the binary
//! knows, splits the controller from the DNS replicas, and its RBAC is enough
//! for each to do its whole job (and, in `security`, no more).

use crate::controller::{ZONE, manifest, operator_args_with, operator_with, wait_published};
use crate::support::dns_topology::free_port;
use crate::support::{
    Operator, TestNs, cluster, eventually, http_get, kubectl, kubectl_ok, kubectl_stdin, repo_root,
    service_account_kubeconfig,
};
use anypost_operator::core::api::SendingDomain;
use clap::Parser;
use kube::Api;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const REQUIRED: &str = "zone.name=dns.anypost.example,zone.mxHost=mx.anypost.example,zone.spfInclude=spf.anypost.example,zone.trackingHost=t.anypost.example";

pub fn helm() -> PathBuf {
    let cache = std::env::var_os("ANYPOST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/anypost-operator")
        });
    let p = cache.join("tools/helm");
    assert!(
        p.exists(),
        "helm is not installed at {} (make test installs it: scripts/install-test-deps)",
        p.display()
    );
    p
}

pub fn helm_run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm())
        .args(args)
        .output()
        .expect("running helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn chart() -> String {
    repo_root()
        .join("charts/anypost-operator")
        .display()
        .to_string()
}

#[test]
fn the_chart_ships_the_same_crd() {
    let a =
        std::fs::read_to_string(repo_root().join("crds/sendingdomains.anypost.com.yaml")).unwrap();
    let b = std::fs::read_to_string(
        repo_root().join("charts/anypost-operator/crds/sendingdomains.anypost.com.yaml"),
    )
    .unwrap();
    assert!(
        a == b,
        "charts/anypost-operator/crds differs from crds/: run make crds"
    );
}

#[test]
fn the_chart_lints_and_requires_the_zone() {
    let (ok, out, err) = helm_run(&["lint", &chart(), "--set", REQUIRED]);
    assert!(ok, "helm lint failed:\n{out}{err}");
    let (ok, _, err) = helm_run(&["template", "x", &chart()]);
    assert!(!ok);
    assert!(err.contains("zone.name is required"), "{err}");
    let (ok, _, err) = helm_run(&[
        "template",
        "x",
        &chart(),
        "--set",
        REQUIRED,
        "--set",
        "zone.backend=rfc2136",
    ]);
    assert!(!ok);
    assert!(err.contains("rfc2136.server is required"), "{err}");
    let (ok, _, err) = helm_run(&[
        "template",
        "x",
        &chart(),
        "--set",
        REQUIRED,
        "--set",
        "dns.replicaCount=0",
    ]);
    assert!(!ok, "values.schema.json rejects dns.replicaCount=0");
    assert!(err.contains("replicaCount"), "{err}");
}

#[test]
fn the_rendered_chart_is_accepted_and_its_flags_parse() {
    cluster();
    let (ok, rendered, err) = helm_run(&[
        "template",
        "anypost",
        &chart(),
        "-n",
        "default",
        "--set",
        REQUIRED,
        "--set",
        "verification.resolvers={10.0.0.10:53}",
        "--set",
        "metrics.serviceMonitor.enabled=false",
    ]);
    assert!(ok, "{err}");
    let out = kubectl_stdin(
        &["apply", "--dry-run=server", "-n", "default", "-f", "-"],
        &rendered,
    );
    assert!(
        out.status.success(),
        "the apiserver refused the chart:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let deployments: Vec<_> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    let component = |d: &serde_yaml::Value| {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let components: Vec<String> = deployments.iter().map(|d| component(d)).collect();
    assert_eq!(components, ["controller", "dns"]);
    for deploy in &deployments {
        let pod = &deploy["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let args: Vec<String> = c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert!(
            args.contains(&format!("--role={}", component(deploy))),
            "{args:?}"
        );
        let argv = std::iter::once("anypost-operator".to_string()).chain(args.clone());
        if let Err(e) = anypost_operator::app::cli::Cli::try_parse_from(argv) {
            panic!("the chart passes flags the binary refuses: {e}\nargs: {args:?}");
        }
        // Each component runs as its own ServiceAccount.
        assert_eq!(
            pod["serviceAccountName"].as_str().unwrap(),
            format!("anypost-anypost-operator-{}", component(deploy))
        );
        // Secure defaults.
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            serde_yaml::Value::Bool(true)
        );
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"],
            serde_yaml::Value::Bool(true)
        );
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    }
    // Only the DNS replicas listen for DNS, and only they are behind its Service.
    let ports = |d: &serde_yaml::Value| {
        d["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ports(deployments[0]), ["http"]);
    assert_eq!(ports(deployments[1]), ["dns-udp", "dns-tcp", "http"]);
    let dns_service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "anypost-anypost-operator-dns")
        .expect("the DNS Service");
    assert_eq!(
        dns_service["spec"]["selector"]["app.kubernetes.io/component"],
        "dns"
    );
    let pdbs = docs
        .iter()
        .filter(|d| d["kind"] == "PodDisruptionBudget")
        .count();
    assert_eq!(pdbs, 2, "one PodDisruptionBudget per component");
    assert!(
        !docs.iter().any(|d| d["kind"] == "ServiceMonitor"),
        "off by default"
    );
}

/// Renders the chart's ServiceAccounts and RBAC for `release` in `home` and
/// applies them; returns the controller's and the DNS replicas' ServiceAccounts.
pub fn install_rbac(home: &TestNs, release: &str, sets: &[&str]) -> (String, String) {
    let mut args = vec![
        "template",
        release,
        &chart(),
        "-n",
        &home.name,
        "--set",
        REQUIRED,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    for set in sets {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, rendered, err) = helm_run(&args);
    assert!(ok, "{err}");
    let out = kubectl_stdin(&["apply", "-n", &home.name, "-f", "-"], &rendered);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sa = |c: &str| format!("{release}-anypost-operator-{c}");
    (sa("controller"), sa("dns"))
}

/// Deletes what [`install_rbac`] made outside the namespace.
pub fn remove_cluster_rbac(release: &str) {
    for c in ["controller", "dns"] {
        kubectl(&[
            "delete",
            "clusterrole,clusterrolebinding",
            &format!("{release}-anypost-operator-{c}"),
            "--ignore-not-found",
        ]);
    }
}

/// Installs the chart's ServiceAccounts and RBAC for real and runs each
/// component with its own identity's token, as the chart does: the controller
/// (no DNS listener) and a DNS replica. Whatever either needs and RBAC lacks
/// fails.
#[tokio::test]
async fn the_chart_rbac_is_enough_to_run_both_components() {
    let home = TestNs::new("rbac-home").await;
    let tenant = TestNs::new("rbac-tenant").await;
    let release = format!("r{}", &home.name[home.name.len() - 8..]);
    let (controller_sa, dns_sa) = install_rbac(&home, &release, &[]);
    let controller_kc = service_account_kubeconfig(&home.name, &controller_sa);
    let dns_kc = service_account_kubeconfig(&home.name, &dns_sa);

    let run = tenant.name.clone();
    let kc = controller_kc.display().to_string();
    let _controller = operator_with(
        "rbac-controller",
        &home.name,
        &run,
        &["--role", "controller"],
        &[("KUBECONFIG", kc.as_str())],
    );
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let args = operator_args_with(
        &home.name,
        &run,
        &[
            ("--dns-listen", &dns.to_string()),
            ("--http-listen", &http.to_string()),
            ("--role", "dns"),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kc = dns_kc.display().to_string();
    let _dns = Operator::start_with_env("rbac-dns", &args, &[("KUBECONFIG", kc.as_str())]);
    tenant.apply_ok(&manifest(
        "rbac",
        &run,
        "  domain: rbac.example.com\n  dkim:\n    keyBits: 1024\n",
    ));
    let api: Api<SendingDomain> = tenant.api();
    let sd = wait_published(&api, "rbac").await;
    let id = sd.status.unwrap().id.unwrap();
    // The DNS replica serves what the controller published, and is ready.
    let token = id.strip_prefix("domain_").unwrap().to_string();
    eventually(Duration::from_secs(30), || async {
        let out = Command::new("dig")
            .args([&format!("@{}", dns.ip()), "-p", &dns.port().to_string()])
            .args(["+short", "+time=1", "+tries=1"])
            .arg(format!("{token}.{ZONE}."))
            .arg("MX")
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        anyhow::ensure!(said == "10 mx.anypost.test.", "MX: {said:?}");
        let ready = http_get(http, "/readyz").map(|(c, _)| c);
        anyhow::ensure!(ready == Some(200), "/readyz: {ready:?}");
        Ok(())
    })
    .await;
    // The controller could write its Lease, its identity Secret and an Event.
    let lease = anypost_operator::adapters::kube::leader::lease_name(
        None,
        Some(&format!("anypost.com/e2e-run={run}")),
    );
    kubectl_ok(&["get", "lease", &lease, "-n", &home.name]);
    kubectl_ok(&[
        "get",
        "secret",
        "anypost-operator-identity",
        "-n",
        &home.name,
    ]);
    let events =
        String::from_utf8(kubectl(&["get", "events", "-n", &tenant.name, "-o", "name"]).stdout)
            .unwrap();
    assert!(!events.trim().is_empty(), "no events were written");
    for kc in [controller_kc, dns_kc] {
        let _ = std::fs::remove_file(kc);
    }
    remove_cluster_rbac(&release);
}

/// Every metric name the operator can export, as Prometheus sees it (counters
/// with their `_total` suffix), from the operator's own registries. The labelled
/// families of the DNS server and the RFC2136 sync are private to them and show
/// only once used, so they are not listed: a rule on them needs this extended.
pub fn exported_metric_names() -> std::collections::BTreeSet<String> {
    use anypost_operator::adapters::dns::embedded::DnsMetrics;
    use anypost_operator::adapters::dns::rfc2136::SyncMetrics;
    use anypost_operator::telemetry::{
        ErrorLabels, Metrics, OutcomeLabels, ReadyLabels, SourceLabels,
    };
    let metrics = Metrics::default();
    let dns = DnsMetrics::default();
    let sync = SyncMetrics::default();
    metrics.register(|r| dns.register(r));
    metrics.register(|r| sync.register(r));
    // A labelled family is only exposed once it has a sample.
    metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels { category: "any" })
        .inc();
    metrics
        .domains
        .get_or_create(&ReadyLabels {
            ready: "True",
            reason: "Verified",
        })
        .set(1);
    metrics
        .checks
        .get_or_create(&OutcomeLabels {
            outcome: "verified",
        })
        .inc();
    metrics
        .secret_reads
        .get_or_create(&SourceLabels { source: "cache" })
        .inc();
    let mut names = std::collections::BTreeSet::new();
    for line in metrics.render().lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_string());
            if kind == "counter" {
                names.insert(format!("{name}_total"));
            }
            if kind == "histogram" {
                for part in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{part}"));
                }
            }
        }
    }
    names
}

#[test]
fn the_alert_rules_use_metrics_the_operator_exports() {
    let render = |backend: &str| {
        let (ok, rendered, err) = helm_run(&[
            "template",
            "anypost",
            &chart(),
            "-n",
            "mail",
            "--set",
            REQUIRED,
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            &format!("zone.backend={backend}"),
            "--set",
            "rfc2136.server=192.0.2.53:53,rfc2136.tsigKeyName=anypost,rfc2136.tsigSecretName=tsig",
        ]);
        assert!(ok, "{err}");
        let rule: serde_yaml::Value = serde_yaml::Deserializer::from_str(&rendered)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .find(|d: &serde_yaml::Value| d["kind"] == "PrometheusRule")
            .expect("a PrometheusRule");
        rule["spec"]["groups"][0]["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .map(|r| {
                (
                    r["alert"].as_str().unwrap().to_string(),
                    r["expr"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let embedded = render("embedded");
    let rfc2136 = render("rfc2136");
    let alerts = |rules: &[(String, String)]| rules.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        alerts(&embedded),
        [
            "AnypostOperatorNoLeader",
            "AnypostOperatorReconcileErrors",
            "AnypostDomainsInGracePeriod",
            "AnypostIdentityMismatch",
            "AnypostZoneUntrustedStatuses",
            "AnypostClaimPolicyInvalid",
            "AnypostZoneNotServed",
        ]
    );
    assert_eq!(
        alerts(&rfc2136).last().unwrap(),
        "AnypostRfc2136SyncFailing"
    );

    let exported = exported_metric_names();
    assert!(exported.contains("anypost_leader"), "{exported:?}");
    for (alert, expr) in rfc2136.iter().chain(&embedded) {
        assert!(expr.contains(r#"namespace="mail""#), "{alert}: {expr}");
        let used: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("anypost_"))
            .collect();
        assert!(!used.is_empty(), "{alert} uses no operator metric: {expr}");
        for name in used {
            assert!(
                exported.contains(name),
                "{alert} uses {name}, which the operator does not export; it exports {exported:?}"
            );
        }
    }
    let (ok, out, err) = helm_run(&[
        "lint",
        &chart(),
        "--set",
        REQUIRED,
        "--set",
        "metrics.prometheusRule.enabled=true",
    ]);
    assert!(ok, "helm lint with the PrometheusRule failed:\n{out}{err}");
}

/// A place in the values: an object's property or an array's item.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Item,
}

/// One rule of values.schema.json and a value that breaks it: `value` set at
/// `path` (`None`: the property left out), which helm must reject naming
/// `pointer`.
#[derive(Debug)]
struct Breach {
    rule: String,
    path: Vec<Seg>,
    value: Option<serde_json::Value>,
    pointer: String,
}

fn pointer(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => format!("/{k}"),
            Seg::Item => "/0".to_string(),
        })
        .collect()
}

/// A value `schema` accepts, for the parts of a value around a bad one.
fn valid(schema: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    match schema["type"].as_str() {
        Some("object") => {
            let mut o = serde_json::Map::new();
            for k in schema["required"].as_array().into_iter().flatten() {
                let k = k.as_str().unwrap();
                o.insert(k.into(), valid(&schema["properties"][k]));
            }
            Value::Object(o)
        }
        Some("array") => json!([valid(&schema["items"])]),
        Some("integer") => schema.get("minimum").cloned().unwrap_or(json!(1)),
        Some("boolean") => json!(true),
        _ => json!("example.com"),
    }
}

/// Every rule `schema` (at `path`) states, each with a value that breaks it.
fn breaches(schema: &serde_json::Value, path: &[Seg], out: &mut Vec<Breach>) {
    use serde_json::{Value, json};
    const KNOWN: &[&str] = &[
        "$schema",
        "type",
        "properties",
        "items",
        "required",
        "additionalProperties",
        "enum",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "minItems",
    ];
    let obj = schema.as_object().expect("a schema is an object");
    for k in obj.keys() {
        assert!(
            KNOWN.contains(&k.as_str()),
            "values.schema.json at {:?} uses {k}, which this test does not break yet: teach it",
            pointer(path)
        );
    }
    let mut add = |rule: &str, at: Vec<Seg>, value: Option<Value>, pointer_at: &[Seg]| {
        out.push(Breach {
            rule: format!("{} {rule}", pointer(path)),
            path: at,
            value,
            pointer: pointer(pointer_at),
        })
    };
    if let Some(t) = obj.get("type").and_then(Value::as_str) {
        let wrong = if t == "string" { json!(5) } else { json!("x") };
        // The root's type is not a value one can set.
        if !path.is_empty() {
            add(&format!("type {t}"), path.to_vec(), Some(wrong), path);
        }
    }
    if let Some(m) = obj.get("minimum").and_then(Value::as_i64) {
        add(
            &format!("minimum {m}"),
            path.to_vec(),
            Some(json!(m - 1)),
            path,
        );
    }
    if let Some(m) = obj.get("maximum").and_then(Value::as_i64) {
        add(
            &format!("maximum {m}"),
            path.to_vec(),
            Some(json!(m + 1)),
            path,
        );
    }
    if obj.contains_key("enum") {
        add("enum", path.to_vec(), Some(json!("not-one-of-them")), path);
    }
    if obj.contains_key("pattern") {
        add("pattern", path.to_vec(), Some(json!("Not Valid!")), path);
    }
    if let Some(n) = obj.get("minLength").and_then(Value::as_u64) {
        let short = "a".repeat(n.saturating_sub(1) as usize);
        add(
            &format!("minLength {n}"),
            path.to_vec(),
            Some(json!(short)),
            path,
        );
    }
    if let Some(n) = obj.get("minItems").and_then(Value::as_u64) {
        let few = vec![valid(&obj["items"]); n.saturating_sub(1) as usize];
        add(
            &format!("minItems {n}"),
            path.to_vec(),
            Some(json!(few)),
            path,
        );
    }
    for r in obj
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = r.as_str().unwrap();
        let mut at = path.to_vec();
        at.push(Seg::Key(r.into()));
        add(&format!("required {r}"), at, None, path);
    }
    if obj.get("additionalProperties") == Some(&json!(false)) {
        let mut at = path.to_vec();
        at.push(Seg::Key("notAValue".into()));
        add("additionalProperties false", at, Some(json!(1)), path);
    }
    for (k, sub) in obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut at = path.to_vec();
        at.push(Seg::Key(k.clone()));
        breaches(sub, &at, out);
    }
    if let Some(items) = obj.get("items") {
        let mut at = path.to_vec();
        at.push(Seg::Item);
        breaches(items, &at, out);
    }
}

/// The value at `path` within one of `schema`'s values: valid around the bad
/// `value` (`None`: that property left out).
fn around(
    schema: &serde_json::Value,
    path: &[Seg],
    value: &Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    match path.split_first() {
        None => value.clone(),
        Some((Seg::Item, rest)) => Some(serde_json::Value::Array(
            around(&schema["items"], rest, value).into_iter().collect(),
        )),
        Some((Seg::Key(k), rest)) => {
            let mut base = valid(schema);
            let o = base.as_object_mut().expect("a property of an object");
            match around(&schema["properties"][k], rest, value) {
                Some(v) => o.insert(k.clone(), v),
                None => o.remove(k),
            };
            Some(base)
        }
    }
}

/// Each rule values.schema.json states rejects a value that breaks it, found by
/// walking the schema (a rule added later is tested too, or the walk asks to
/// be taught it): `helm template` with the bad value fails, naming where.
#[test]
fn every_rule_of_the_values_schema_rejects_a_bad_value() {
    let text =
        std::fs::read_to_string(repo_root().join("charts/anypost-operator/values.schema.json"))
            .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut found = Vec::new();
    breaches(&schema, &[], &mut found);
    assert!(found.len() >= 60, "only {} rules found", found.len());
    // The required values, as --set-json (which helm applies before --set).
    let required: Vec<String> = REQUIRED
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            format!("{k}={}", serde_json::json!(v))
        })
        .collect();
    let mut wrong = Vec::new();
    for b in &found {
        let mut args = vec!["template".to_string(), "x".into(), chart()];
        // Up to the first array, --set-json sets the value at its path; an array
        // is set whole, with one item holding the bad value.
        let top = b
            .path
            .iter()
            .position(|s| matches!(s, Seg::Item))
            .unwrap_or(b.path.len());
        let keys: Vec<&str> = b.path[..top]
            .iter()
            .map(|s| match s {
                Seg::Key(k) => k.as_str(),
                Seg::Item => unreachable!(),
            })
            .collect();
        let mut sub = &schema;
        for k in &keys {
            sub = &sub["properties"][*k];
        }
        let value = around(sub, &b.path[top..], &b.value).unwrap_or(serde_json::Value::Null);
        if !(keys == ["zone"] && value.is_null()) {
            for r in &required {
                args.extend(["--set-json".into(), r.clone()]);
            }
        }
        args.extend(["--set-json".into(), format!("{}={value}", keys.join("."))]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = helm_run(&args);
        let named = format!("at '{}'", b.pointer);
        if ok || !err.contains(&named) {
            wrong.push(format!(
                "{}: {} {:?} was {}",
                b.rule,
                keys.join("."),
                value.to_string(),
                if ok {
                    "accepted".to_string()
                } else {
                    format!("rejected without naming {named}: {err}")
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
