//! The SendingDomain CRD as users meet it: the checked-in YAML, `kubectl apply`,
//! admission (OpenAPI schema and CEL rules), the status subresource, the printer
//! columns, `kubectl explain`, and the garbage collection and namespace deletion
//! the operator relies on.

use crate::controller;
use crate::support::{TestNs, eventually, kubectl_ok, repo_root};
use anypost_operator::core::api::{
    DkimSpec, DomainState, SendingDomain, SendingDomainSpec, TrackingSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const CRD_FILE: &str = "crds/sendingdomains.anypost.com.yaml";

/// A SendingDomain manifest (JSON, which kubectl reads like YAML).
fn manifest(name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "anypost.com/v1alpha1",
        "kind": "SendingDomain",
        "metadata": { "name": name },
        "spec": spec,
    })
    .to_string()
}

/// Splits a `kubectl get` line into cells: columns are separated by runs of at
/// least two spaces, while a header such as `LAST CHECKED` keeps its one space.
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies each `(name suffix, spec, expected message)` and returns a description
/// of every case that was not rejected with that message, so that one run reports
/// all broken rules at once.
fn rejections(ns: &TestNs, cases: &[(Value, String)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, (spec, expected)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let out = ns.apply(&manifest(&name, spec.clone()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("spec {spec} was accepted; expected: {expected}"));
        } else if !stderr.contains(expected.as_str()) {
            failures.push(format!(
                "spec {spec}:\n    expected: {expected}\n    got:      {}",
                stderr.trim().replace('\n', "\n              ")
            ));
        }
    }
    failures
}

/// Applies each spec and returns a description of every one that was refused.
fn acceptances(ns: &TestNs, prefix: &str, specs: &[Value]) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let out = ns.apply(&manifest(&format!("{prefix}-{i}"), spec.clone()));
        if !out.status.success() {
            failures.push(format!(
                "spec {spec} was refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    failures
}

#[track_caller]
fn assert_none(what: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{what}: {} case(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn invalid(field: &str, value: &str, message: &str) -> String {
    format!("{field}: Invalid value: \"{value}\": {message}")
}

#[test]
fn crd_command_prints_the_checked_in_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_anypost-operator"))
        .arg("crd")
        .output()
        .expect("running anypost-operator crd");
    assert!(
        out.status.success(),
        "anypost-operator crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read(repo_root().join(CRD_FILE)).expect("reading the checked-in CRD");
    if out.stdout != file {
        let printed = String::from_utf8_lossy(&out.stdout);
        let checked_in = String::from_utf8_lossy(&file);
        let (line, (a, b)) = printed
            .lines()
            .chain(std::iter::repeat("<end of output>"))
            .zip(checked_in.lines().chain(std::iter::repeat("<end of file>")))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, pair)| (i + 1, pair))
            .unwrap_or((0, ("", "(only line endings differ)")));
        panic!(
            "{CRD_FILE} is not what `anypost-operator crd` prints: run `make crds` and commit it.\n\
             first difference, line {line}:\n  printed:    {a}\n  checked in: {b}"
        );
    }
}

#[test]
fn crd_is_established_and_served_under_its_names() {
    let conditions = kubectl_ok(&[
        "get",
        "crd",
        "sendingdomains.anypost.com",
        "-o",
        r#"jsonpath={range .status.conditions[*]}{.type}={.status}{"\n"}{end}"#,
    ]);
    for c in ["Established=True", "NamesAccepted=True"] {
        assert!(
            conditions.lines().any(|l| l == c),
            "{c} missing: {conditions}"
        );
    }

    let resources = kubectl_ok(&["api-resources", "--api-group=anypost.com", "-o", "wide"]);
    let row = resources
        .lines()
        .find(|l| l.starts_with("sendingdomains "))
        .unwrap_or_else(|| panic!("sendingdomains not served:\n{resources}"));
    assert_eq!(
        cells(row)[..5],
        [
            "sendingdomains",
            "sd",
            "anypost.com/v1alpha1",
            "true",
            "SendingDomain"
        ],
        "{resources}"
    );
    assert!(row.contains("anypost"), "category missing: {row}");
}

// These tests write status by hand, as the operator would. An operator running
// against the same cluster without a `--selector` that excludes them (another
// test, or one started by hand) may write it too; so every assertion about status
// is made on the response of the write that set it, or under a resourceVersion
// precondition, or retried with `eventually`, and holds however writes interleave.

#[tokio::test]
async fn sending_domain_round_trips_and_status_is_a_subresource() {
    let ns = TestNs::new("crd-roundtrip").await;
    let api: Api<SendingDomain> = ns.api();
    let spec = json!({
        "domain": "example.com",
        "dkim": { "keyBits": 3072, "rotationInterval": "2160h" },
        "tracking": { "subdomain": "track" },
    });
    let want_spec = SendingDomainSpec {
        domain: "example.com".into(),
        dkim: Some(DkimSpec {
            key_bits: Some(3072),
            rotation_interval: Some("2160h".into()),
        }),
        tracking: Some(TrackingSpec {
            subdomain: "track".into(),
        }),
    };

    // A status in a created manifest is dropped: only /status writes it.
    let mut with_status: Value = serde_json::from_str(&manifest("example-com", spec)).unwrap();
    with_status["status"] = json!({ "state": "verified" });
    let created = ns.kubectl_stdin(
        &["apply", "-o", "json", "-f", "-"],
        &with_status.to_string(),
    );
    assert!(
        created.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: SendingDomain = serde_json::from_slice(&created.stdout).expect("apply -o json");
    assert_eq!(created.spec, want_spec);
    assert_eq!(created.status, None, "status is not set by a create");
    assert_eq!(created.metadata.generation, Some(1));

    let read = api.get("example-com").await.expect("reading it back");
    assert_eq!(read.spec, want_spec);
    assert_eq!(read.metadata.uid, created.metadata.uid);

    // The status is written through /status ...
    let status = json!({ "status": {
        "id": "domain_abcdefghijklmnop",
        "state": "pending",
        "verificationFailure": { "code": "apex_cname_missing", "message": "no CNAME at anypost.example.com" },
        "observedGeneration": 1,
    }});
    let written = api
        .patch_status(
            "example-com",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("patching /status");
    let st = written.status.expect("status after the /status patch");
    assert_eq!(st.state, Some(DomainState::Pending));
    assert_eq!(st.id.as_deref(), Some("domain_abcdefghijklmnop"));
    assert_eq!(
        st.verification_failure.map(|f| f.code).as_deref(),
        Some("apex_cname_missing")
    );
    assert_eq!(
        written.metadata.generation,
        Some(1),
        "a status write is not a spec change"
    );

    // ... and a /status write cannot change the spec,
    let sneaky = json!({ "spec": { "tracking": { "subdomain": "click" } } });
    let after = api
        .patch_status(
            "example-com",
            &PatchParams::default(),
            &Patch::Merge(&sneaky),
        )
        .await
        .expect("patching /status with a spec change");
    assert_eq!(after.spec, want_spec);

    // while a write to the object itself cannot change the status (kubectl patch,
    // pinned to the version read so that the comparison is exact).
    eventually(Duration::from_secs(30), || async {
        let before = api.get("example-com").await?;
        let patch = json!({
            "metadata": { "resourceVersion": before.metadata.resource_version },
            "status": { "state": "verified", "id": "domain_zzzzzzzzzzzzzzzz" },
        });
        let out = ns.kubectl(&[
            "patch",
            "sendingdomain",
            "example-com",
            "--type=merge",
            "-o",
            "json",
            "-p",
            &patch.to_string(),
        ]);
        anyhow::ensure!(
            out.status.success(),
            "kubectl patch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after: SendingDomain = serde_json::from_slice(&out.stdout)?;
        assert_eq!(
            after.status, before.status,
            "a main-resource patch changed status"
        );
        assert_eq!(after.metadata.generation, before.metadata.generation);
        anyhow::Ok(())
    })
    .await;

    // A spec change bumps the generation and keeps the status.
    eventually(Duration::from_secs(30), || async {
        let before = api.get("example-com").await?;
        let patch = json!({
            "metadata": { "resourceVersion": before.metadata.resource_version },
            "spec": { "tracking": { "subdomain": "click" } },
        });
        let after = api
            .patch(
                "example-com",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        assert_eq!(after.spec.tracking.as_ref().unwrap().subdomain, "click");
        assert_eq!(
            after.metadata.generation,
            before.metadata.generation.map(|g| g + 1)
        );
        assert_eq!(after.status, before.status, "a spec patch changed status");
        anyhow::Ok(())
    })
    .await;
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let ns = TestNs::new("crd-columns").await;
    let api: Api<SendingDomain> = ns.api();
    ns.apply_ok(&manifest(
        "mail-example-com",
        json!({ "domain": "mail.example.com", "tracking": { "subdomain": "track" } }),
    ));
    let status = json!({ "status": {
        "id": "domain_k3v9aaaabbbbcccc",
        "state": "pending",
        "verificationFailure": { "code": "dkim_cname_missing", "message": "no CNAME at anypost1._domainkey.mail.example.com" },
        "tracking": { "state": "verified" },
        "dkim": { "secretName": "mail-example-com-dkim", "activeSelector": "anypost1" },
        "lastCheckedTime": "2020-01-01T00:00:00Z",
    }});
    let patch_status = || async {
        api.patch_status(
            "mail-example-com",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("patching /status")
    };

    let out = eventually(Duration::from_secs(30), || async {
        patch_status().await;
        let out = kubectl_ok(&["get", "sd", "-n", &ns.name]);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(
            cells(lines[0]),
            ["NAME", "DOMAIN", "STATUS", "FAILURE", "TRACKING", "AGE"],
            "{out}"
        );
        let want = [
            "mail-example-com",
            "mail.example.com",
            "pending",
            "dkim_cname_missing",
            "verified",
        ];
        if cells(lines[1])[..5] == want {
            Ok(out)
        } else {
            Err(format!("want {want:?} in\n{out}"))
        }
    })
    .await;
    assert_eq!(out.lines().count(), 2, "{out}");

    eventually(Duration::from_secs(30), || async {
        patch_status().await;
        let out = kubectl_ok(&["get", "sendingdomains", "-n", &ns.name, "-o", "wide"]);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(
            cells(lines[0]),
            [
                "NAME",
                "DOMAIN",
                "STATUS",
                "FAILURE",
                "TRACKING",
                "AGE",
                "ID",
                "SELECTOR",
                "LAST CHECKED"
            ],
            "{out}"
        );
        let row = cells(lines[1]);
        // LAST CHECKED is a date column, rendered as an age: 2020 is years ago.
        if row.len() == 9
            && row[6..8] == ["domain_k3v9aaaabbbbcccc", "anypost1"]
            && row[8].contains('y')
        {
            Ok(())
        } else {
            Err(format!("unexpected wide row in\n{out}"))
        }
    })
    .await;

    // The category finds it too.
    let out = kubectl_ok(&["get", "anypost", "-n", &ns.name, "-o", "name"]);
    assert_eq!(
        out.trim(),
        "sendingdomain.anypost.com/mail-example-com",
        "{out}"
    );
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    crate::support::cluster();
    let crd = anypost_operator::core::api::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    let description = schema.properties.as_ref().unwrap()["spec"]
        .properties
        .as_ref()
        .unwrap()["domain"]
        .description
        .clone()
        .expect("spec.domain is documented");
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let want = words(&description);
    assert!(want.contains("From addresses"), "{want}");

    // The apiserver publishes a new CRD's OpenAPI shortly after it is Established.
    eventually(Duration::from_secs(30), || async {
        let out = crate::support::kubectl(&["explain", "sendingdomain.spec.domain"]);
        let text = String::from_utf8_lossy(&out.stdout);
        if words(&text).contains(&want) {
            Ok(())
        } else {
            Err(format!(
                "explain does not show the description yet: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .await;
}

#[tokio::test]
async fn malformed_domains_are_rejected_at_admission() {
    let ns = TestNs::new("crd-bad-domain").await;
    let domain =
        |d: &str, message: &str| (json!({ "domain": d }), invalid("spec.domain", d, message));
    let label64 = "a".repeat(64);
    let name254 = format!("{}examplexyz.com", "abcdefghi.".repeat(24));
    assert_eq!(name254.len(), 254);
    let cases = [
        domain(
            "192.0.2.1",
            "spec.domain must be a domain name, not an IP address",
        ),
        domain(
            "2001:db8::1",
            "spec.domain must be a domain name, not an IP address",
        ),
        domain(
            "bücher.example",
            "spec.domain must be ASCII: write an internationalised domain in its A-label (xn--) form",
        ),
        domain("Example.com", "spec.domain must be lower case"),
        domain(
            "example.com.",
            "spec.domain must not end with a dot: write example.com, not example.com.",
        ),
        domain(
            "*.example.com",
            "spec.domain must not be a wildcard: add each sending domain by its name",
        ),
        domain(
            "_dmarc.example.com",
            "spec.domain must not contain underscores: a sending domain is a host name (letters, digits, hyphens)",
        ),
        domain(
            "localhost",
            "spec.domain must have at least two labels, e.g. example.com",
        ),
        domain(
            "mail..example.com",
            "spec.domain must not contain empty labels (a leading dot or '..')",
        ),
        domain(
            ".example.com",
            "spec.domain must not contain empty labels (a leading dot or '..')",
        ),
        domain(
            &format!("{label64}.com"),
            "spec.domain must not have a label longer than 63 characters",
        ),
        (
            json!({ "domain": name254 }),
            "spec.domain: Too long: may not be more than 253 bytes".to_string(),
        ),
        domain(
            "-mail.example.com",
            "spec.domain must not have a label that starts or ends with a hyphen",
        ),
        domain(
            "mail-.example.com",
            "spec.domain must not have a label that starts or ends with a hyphen",
        ),
        domain(
            "example.123",
            "spec.domain must not end in an all-numeric label",
        ),
        domain(
            "ex!ample.com",
            "spec.domain may contain only letters, digits, hyphens and dots",
        ),
        domain(
            "exa mple.com",
            "spec.domain may contain only letters, digits, hyphens and dots",
        ),
        domain("", "spec.domain in body should be at least 1 chars long"),
    ];
    assert_none("malformed spec.domain", rejections(&ns, &cases));
}

#[tokio::test]
async fn well_formed_domains_are_accepted() {
    let ns = TestNs::new("crd-good-domain").await;
    let name253 = format!("{}example.co.uk", "abcdefghi.".repeat(24));
    assert_eq!(name253.len(), 253);
    let specs: Vec<Value> = [
        "example.com",
        "mail.example.co.uk",
        "xn--bcher-kva.example",
        "a-b.example.com",
        "1password.com",
        "example.c0m",
        &format!("{}.com", "a".repeat(63)),
        &name253,
    ]
    .iter()
    .map(|d| json!({ "domain": d }))
    .collect();
    assert_none("well-formed spec.domain", acceptances(&ns, "good", &specs));
}

/// Every name admitted leaves room for its DKIM Secret, `<name>-dkim`, which
/// may be at most 253 characters long: a longer name would be accepted and then
/// never get keys.
#[tokio::test]
async fn a_name_too_long_for_its_secret_is_rejected_at_admission() {
    let ns = TestNs::new("crd-long-name").await;
    // Names are DNS subdomains: labels of at most 63 characters.
    let name =
        |len: usize| -> String { format!("{}.", "a".repeat(62)).repeat(4)[..len].to_string() };
    let (fits, too_long) = (name(248), name(249));
    assert_eq!((fits.len(), too_long.len()), (248, 249));
    let out = ns.apply(&manifest(&too_long, json!({ "domain": "long.example" })));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 249-character name was admitted");
    assert!(
        stderr.contains(
            "metadata.name must be at most 248 characters: the DKIM Secret is named <name>-dkim, and a Secret name is at most 253"
        ),
        "{stderr}"
    );
    ns.apply_ok(&manifest(&fits, json!({ "domain": "long.example" })));
}

#[tokio::test]
async fn spec_domain_is_immutable() {
    let ns = TestNs::new("crd-immutable").await;
    ns.apply_ok(&manifest("sd", json!({ "domain": "example.com" })));
    let out = ns.apply(&manifest("sd", json!({ "domain": "example.org" })));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "changing spec.domain was accepted");
    let want = invalid(
        "spec.domain",
        "example.org",
        "spec.domain is immutable: create a new SendingDomain to send from another domain",
    );
    assert!(stderr.contains(&want), "expected {want}\ngot {stderr}");

    // Everything else in the spec may change.
    ns.apply_ok(&manifest(
        "sd",
        json!({ "domain": "example.com", "tracking": { "subdomain": "track" } }),
    ));
}

#[tokio::test]
async fn dkim_settings_are_checked_at_admission() {
    let ns = TestNs::new("crd-dkim").await;
    let bits = |b: Value, message: &str| {
        (
            json!({ "domain": "example.com", "dkim": { "keyBits": b } }),
            message.to_string(),
        )
    };
    let unsupported = |n: u32| {
        format!(
            "spec.dkim.keyBits: Unsupported value: {n}: supported values: \"1024\", \"2048\", \"3072\", \"4096\""
        )
    };
    let interval = |i: &str, message: &str| {
        (
            json!({ "domain": "example.com", "dkim": { "rotationInterval": i } }),
            invalid("spec.dkim.rotationInterval", i, message),
        )
    };
    let too_short = "spec.dkim.rotationInterval must be at least 120h";
    let malformed = "spec.dkim.rotationInterval must be a duration such as 2160h";
    let cases = [
        bits(json!(1000), &unsupported(1000)),
        bits(json!(8192), &unsupported(8192)),
        bits(json!(0), &unsupported(0)),
        bits(
            json!("2048"),
            "spec.dkim.keyBits in body must be of type integer: \"string\"",
        ),
        interval("119h", too_short),
        interval("7199m59s", too_short),
        interval("1h", too_short),
        interval("90d", malformed),
        interval("2160", malformed),
        interval("P90D", malformed),
        interval("", malformed),
    ];
    assert_none("bad spec.dkim", rejections(&ns, &cases));

    let good: Vec<Value> = [
        json!({ "keyBits": 1024 }),
        json!({ "keyBits": 2048 }),
        json!({ "keyBits": 3072 }),
        json!({ "keyBits": 4096 }),
        json!({ "rotationInterval": "120h" }),
        json!({ "rotationInterval": "7200m" }),
        json!({ "rotationInterval": "200h30m" }),
        json!({ "keyBits": 2048, "rotationInterval": "2160h" }),
    ]
    .into_iter()
    .map(|dkim| json!({ "domain": "example.com", "dkim": dkim }))
    .collect();
    assert_none("good spec.dkim", acceptances(&ns, "good", &good));
}

#[tokio::test]
async fn tracking_subdomain_is_checked_at_admission() {
    let ns = TestNs::new("crd-tracking").await;
    let sub = |s: &str, message: &str| {
        (
            json!({ "domain": "example.com", "tracking": { "subdomain": s } }),
            message.to_string(),
        )
    };
    let one_label = "spec.tracking.subdomain must be one lower-case DNS label (letters, digits, inner hyphens), e.g. track";
    let label = |s: &str| sub(s, &invalid("spec.tracking.subdomain", s, one_label));
    // 251 characters: valid alone, too long with "tracking." in front.
    let long_domain = format!("{}example.com", "abcdefghi.".repeat(24));
    let cases = [
        label("Track"),
        label("a.b"),
        label("-track"),
        label("track-"),
        label("tr_ack"),
        sub(
            "anypost",
            &invalid(
                "spec.tracking.subdomain",
                "anypost",
                "spec.tracking.subdomain must not be anypost: that name holds the verification record",
            ),
        ),
        sub(
            &"t".repeat(64),
            "spec.tracking.subdomain: Too long: may not be more than 63 bytes",
        ),
        sub(
            "",
            "spec.tracking.subdomain in body should be at least 1 chars long",
        ),
        (
            json!({ "domain": long_domain, "tracking": { "subdomain": "tracking" } }),
            "spec.tracking.subdomain: Invalid value: spec.tracking.subdomain is too long for this domain: <subdomain>.<domain> must be at most 253 characters".to_string(),
        ),
        (
            json!({ "domain": "example.com", "tracking": {} }),
            "spec.tracking.subdomain: Required value".to_string(),
        ),
    ];
    assert_none("bad spec.tracking", rejections(&ns, &cases));

    let good: Vec<Value> = ["track", "click-1", "t", "links"]
        .into_iter()
        .map(|s| json!({ "domain": "example.com", "tracking": { "subdomain": s } }))
        .collect();
    assert_none("good spec.tracking", acceptances(&ns, "good", &good));
}

/// The operator's `<name>-dkim` Secret goes with its SendingDomain: the
/// operator makes it owned by the SendingDomain (controller ownerReference with
/// the object's UID), and deleting the SendingDomain removes it.
#[tokio::test]
async fn deleting_a_sending_domain_removes_its_dkim_secret() {
    let ns = TestNs::new("crd-gc").await;
    let run = ns.name.clone();
    let _op = controller::operator("crd-gc", &ns.name, &run, &[]);
    ns.apply_ok(&controller::manifest(
        "owner",
        &run,
        "  domain: owner.example\n  dkim:\n    keyBits: 1024\n",
    ));
    let domains: Api<SendingDomain> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let owner = controller::wait_published(&domains, "owner").await;
    let secret = secrets.get("owner-dkim").await.unwrap();
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owners.len() == 1
            && owners[0].kind == "SendingDomain"
            && Some(&owners[0].uid) == owner.metadata.uid.as_ref()
            && owners[0].controller == Some(true),
        "{owners:#?}"
    );

    domains
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), || async {
        match secrets.get_opt("owner-dkim").await? {
            None => anyhow::Ok(()),
            Some(_) => anyhow::bail!("the -dkim Secret is still there"),
        }
    })
    .await;
    assert!(domains.get_opt("owner").await.unwrap().is_none());
}

#[tokio::test]
async fn a_namespace_with_sending_domains_is_deleted_completely() {
    let ns = TestNs::new("crd-ns-delete").await;
    ns.apply_ok(&manifest("a", json!({ "domain": "a.example" })));
    ns.apply_ok(&manifest("b", json!({ "domain": "b.example" })));
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), || async {
        match namespaces.get_opt(&ns.name).await? {
            None => anyhow::Ok(()),
            Some(n) => anyhow::bail!(
                "namespace still there: {:?}",
                n.status.and_then(|s| s.conditions)
            ),
        }
    })
    .await;
}
