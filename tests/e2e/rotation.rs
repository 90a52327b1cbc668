//! DKIM rotation through the running operator: its embedded zone serves the keys,
//! BIND serves the customer's CNAMEs, unbound resolves for the verifier, and the
//! rotation is asked for the way a user would, with `kubectl annotate`.
//!
//! The operator runs with a short grace period (`--dkim-retire-after`) and no
//! minimum standby age, so a whole rotation (promote, keep the old key published,
//! replace it) fits in a test.

use crate::controller::{ZONE, operator_args_with};
use crate::support::dns_topology::{DnsTopology, OperatorZone, ZoneFile, reserve_port};
use crate::support::tools::{dkimpy_sign_and_verify, openssl_key};
use crate::support::{Operator, TestNs, eventually, random_suffix};
use anyhow::{Context as _, ensure};
use anypost_operator::core::api::{
    DomainState, Purpose, RecordState, SelectorState, SendingDomain, SendingDomainStatus,
};
use anypost_operator::core::dkim;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
/// The grace period of a replaced key in these tests.
const RETIRE_AFTER: &str = "15s";

/// One operator, one customer zone (example.com), one SendingDomain below it.
struct Setup {
    ns: TestNs,
    dns: DnsTopology,
    api: Api<SendingDomain>,
    secrets: Api<Secret>,
    name: &'static str,
    operator: Operator,
    /// `anypost-operator run` arguments, for restarts.
    args: Vec<String>,
    test: String,
    /// Where the operator's embedded zone listens.
    zone_addr: SocketAddr,
    verify_requests: u32,
}

impl Setup {
    async fn start(test: &str) -> Setup {
        Setup::start_with(test, "").await
    }

    /// Like [`Setup::start`], with `dkim_extra` (indented YAML) added under
    /// `spec.dkim`.
    async fn start_with(test: &str, dkim_extra: &str) -> Setup {
        Setup::start_with_bits(test, 1024, dkim_extra).await
    }

    /// Like [`Setup::start_with`], with keys of `bits`.
    async fn start_with_bits(test: &str, bits: u32, dkim_extra: &str) -> Setup {
        let ns = TestNs::new(test).await;
        let run = ns.name.clone();
        // Held until the operator starts: the resolver is told of it first.
        let zone_port = reserve_port();
        let zone_addr = zone_port.addr();
        let dns = DnsTopology::start(
            &[ZoneFile::new("example.com")],
            OperatorZone::At {
                zone: ZONE.into(),
                addr: zone_addr,
            },
        )
        .await;
        let args = operator_args_with(
            &ns.name,
            &run,
            &[
                ("--dns-listen", &zone_addr.to_string()),
                ("--resolver", &dns.resolver().to_string()),
                ("--resolver-timeout", "2s"),
                ("--dkim-min-standby-age", "0s"),
                ("--dkim-retire-after", RETIRE_AFTER),
            ],
        );
        zone_port.release();
        let operator = Operator::start(test, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let name = "shop";
        ns.apply_ok(&format!(
            "apiVersion: anypost.com/v1alpha1\nkind: SendingDomain\nmetadata:\n  name: {name}\n  \
             labels:\n    anypost.com/e2e-run: \"{run}\"\nspec:\n  domain: shop-{}.example.com\n  \
             dkim:\n    keyBits: {bits}\n{dkim_extra}",
            random_suffix()
        ));
        Setup {
            api: ns.api(),
            secrets: ns.api(),
            ns,
            dns,
            name,
            operator,
            args,
            test: test.to_string(),
            zone_addr,
            verify_requests: 0,
        }
    }

    /// Kills the operator and starts another with the same flags and `env`
    /// (same DNS port, so the resolver keeps finding the zone).
    fn replace_operator(&mut self, suffix: &str, env: &[(&str, &str)]) {
        self.operator.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.operator = Operator::start_with_env(&format!("{}-{suffix}", self.test), &args, env);
    }

    async fn status(&self) -> anyhow::Result<SendingDomainStatus> {
        self.api
            .get(self.name)
            .await?
            .status
            .context("no status yet")
    }

    /// The status once the keys exist and the zone serves the records.
    async fn published(&self) -> SendingDomainStatus {
        eventually(WAIT, || async {
            let st = self.status().await?;
            ensure!(
                condition(&st, "RecordsPublished").0 == "True" && st.dns_records.len() == 3,
                "records not published yet: {:?}",
                condition(&st, "RecordsPublished")
            );
            Ok(st)
        })
        .await
    }

    /// Publishes the customer's CNAMEs exactly as status lists them, leaving out
    /// the records named in `except`.
    async fn publish(&self, st: &SendingDomainStatus, except: &[&str]) {
        let mut zone = ZoneFile::new("example.com");
        for r in &st.dns_records {
            if !except.iter().any(|e| r.name.starts_with(e)) {
                zone.add(format!("{}. IN CNAME {}.", r.fqdn, r.value));
            }
        }
        self.dns.set_zone(&zone).await;
    }

    /// `kubectl annotate anypost.com/verify=<new value>`, then waits for the check
    /// it asked for and returns the status it wrote.
    async fn verify_now(&mut self) -> SendingDomainStatus {
        self.verify_requests += 1;
        let value = self.verify_requests.to_string();
        // Status times have whole seconds.
        let asked = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
        self.annotate("anypost.com/verify", &value);
        eventually(WAIT, || async {
            let st = self.status().await?;
            let checked = st.last_checked_time.as_ref().map(|t| t.0);
            ensure!(
                st.observed_verify_request.as_deref() == Some(value.as_str())
                    && checked.is_some_and(|t| t >= asked),
                "verify request {value} not checked yet (observed {:?}, last checked {checked:?})",
                st.observed_verify_request
            );
            Ok(st)
        })
        .await
    }

    /// Waits until `selector` signs (status.dkim.activeSelector) and returns
    /// the status that says so.
    async fn signing_with(&self, selector: &str) -> SendingDomainStatus {
        eventually(WAIT, || async {
            let st = self.status().await?;
            ensure!(active(&st) == selector, "active selector {}", active(&st));
            Ok(st)
        })
        .await
    }

    /// Waits until the operator has acted on the `anypost.com/rotate` request
    /// `value` (status.dkim.observedRotateRequest) and returns that status.
    async fn rotate_request_seen(&self, value: &str) -> SendingDomainStatus {
        eventually(WAIT, || async {
            let st = self.status().await?;
            let seen = st
                .dkim
                .as_ref()
                .and_then(|d| d.observed_rotate_request.clone());
            ensure!(
                seen.as_deref() == Some(value),
                "rotate request {value} not acted on yet: {seen:?}"
            );
            Ok(st)
        })
        .await
    }

    fn annotate(&self, key: &str, value: &str) {
        self.ns.kubectl_ok(&[
            "annotate",
            "--overwrite",
            "sendingdomain",
            self.name,
            &format!("{key}={value}"),
        ]);
    }

    /// The DKIM Secret's data as text: `anypost1.key`, `anypost2.key`, `selector`.
    async fn secret(&self) -> std::collections::BTreeMap<String, String> {
        let s = self
            .secrets
            .get(&dkim::secret_name(self.name))
            .await
            .expect("the DKIM Secret exists");
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).expect("the Secret holds text")))
            .collect()
    }

    /// The DKIM key the operator's zone serves for `selector` (the `p=` value),
    /// asked of the zone directly with dig.
    fn served_key(&self, st: &SendingDomainStatus, selector: &str) -> Option<String> {
        let token = st
            .id
            .as_deref()
            .and_then(|id| id.strip_prefix("domain_"))
            .expect("status.id is domain_<token>");
        let name = format!("{selector}._domainkey.{token}.{ZONE}.");
        let texts = dig_txt(self.zone_addr, &name);
        assert!(
            texts.len() <= 1,
            "{name} has several TXT records: {texts:?}"
        );
        texts.into_iter().next().map(|t| {
            t.strip_prefix("v=DKIM1; k=rsa; p=")
                .unwrap_or_else(|| panic!("{name} TXT is not a DKIM record: {t}"))
                .to_string()
        })
    }

    /// Checks every selector's key without the crate's own key code: `openssl`
    /// parses the Secret's private key (of `bits`), and its public key is the
    /// one status publishes and the one a verifier gets through the customer's
    /// CNAME from the resolver.
    async fn assert_keys_check_out_with_openssl(&self, bits: u32) {
        let st = self.status().await.unwrap();
        let secret = self.secret().await;
        let dk = st.dkim.as_ref().expect("status.dkim");
        assert_eq!(dk.selectors.len(), 2);
        for sel in &dk.selectors {
            let (size, public) = openssl_key(&secret[&format!("{}.key", sel.name)]);
            assert_eq!(size, bits, "{}", sel.name);
            assert_eq!(public, sel.public_key, "{}: status and Secret", sel.name);
            let cname = st
                .dns_records
                .iter()
                .find(|r| r.fqdn.starts_with(&format!("{}._domainkey.", sel.name)))
                .unwrap_or_else(|| panic!("no CNAME for {} in {:#?}", sel.name, st.dns_records));
            let texts = eventually(WAIT, || async {
                let texts = dig_txt_via(self.dns.resolver(), &format!("{}.", cname.fqdn));
                ensure!(!texts.is_empty(), "no TXT through {} yet", cname.fqdn);
                Ok::<_, anyhow::Error>(texts)
            })
            .await;
            assert_eq!(
                texts,
                [format!("v=DKIM1; k=rsa; p={public}")],
                "{}: DNS through the customer's CNAME and Secret",
                sel.name
            );
            // A message signed with the Secret's key verifies with another DKIM
            // implementation, which finds the key through the customer's CNAME.
            let domain = cname
                .fqdn
                .strip_prefix(&format!("{}._domainkey.", sel.name))
                .unwrap();
            let (ok, log) = dkimpy_sign_and_verify(
                &secret[&format!("{}.key", sel.name)],
                &sel.name,
                domain,
                self.dns.resolver(),
            );
            assert!(ok, "dkimpy with {} of {domain}:\n{log}", sel.name);
        }
    }

    /// The Event objects about the SendingDomain, as JSON.
    fn event_items(&self) -> Vec<serde_json::Value> {
        let out = self.ns.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={}", self.name),
            "-o",
            "json",
        ]);
        let mut list: serde_json::Value = serde_json::from_str(&out).expect("event JSON");
        match list["items"].take() {
            serde_json::Value::Array(items) => items,
            other => panic!("no items in the event list: {other}"),
        }
    }

    /// Events about the SendingDomain as `(type, reason, message)`.
    fn events(&self) -> Vec<(String, String, String)> {
        self.event_items()
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("reason"), s("message"))
            })
            .collect()
    }

    /// How many times an Event of `reason` was told about the SendingDomain: the
    /// recorder folds repeats of one reason into a series with a count.
    fn told(&self, reason: &str) -> u64 {
        self.event_items()
            .iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| {
                e["series"]["count"]
                    .as_u64()
                    .or(e["count"].as_u64())
                    .unwrap_or(1)
            })
            .sum()
    }

    /// Fails if any private key ever stored in the Secret shows in the
    /// SendingDomain (status included), its events or the operator's log.
    fn assert_no_private_key_leaks(&self, pems: &[String]) {
        let sd = self
            .ns
            .kubectl(&["get", "sendingdomain", self.name, "-o", "json"]);
        let events = self.ns.kubectl(&["get", "events", "-o", "json"]);
        let places = [
            (
                "the SendingDomain",
                String::from_utf8_lossy(&sd.stdout).into_owned(),
            ),
            (
                "the events",
                String::from_utf8_lossy(&events.stdout).into_owned(),
            ),
            ("the operator log", self.operator.logs()),
        ];
        for (place, text) in &places {
            assert!(!text.is_empty(), "could not read {place}");
            assert!(!text.contains("PRIVATE KEY"), "a PEM header in {place}");
            for pem in pems {
                for piece in private_pieces(pem) {
                    assert!(!text.contains(&piece), "private key material in {place}");
                }
            }
        }
    }
}

/// Distinctive stretches of a PEM's body, with and without its line breaks, as
/// they would appear if the key were printed in either form.
fn private_pieces(pem: &str) -> Vec<String> {
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(body.len() > 6, "not a PEM key: {pem:.40}");
    let joined = body.concat();
    let mid = joined.len() / 2;
    vec![
        body[3].to_string(),
        body[body.len() / 2].to_string(),
        joined[mid..mid + 48].to_string(),
    ]
}

/// (status, reason, lastTransitionTime) of a condition, or empty strings.
fn condition(st: &SendingDomainStatus, type_: &str) -> (String, String, String) {
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone(),
                c.last_transition_time.0.to_string(),
            )
        })
        .unwrap_or_default()
}

/// `(state, publicKey, retireAt)` of a selector in status.
fn selector(st: &SendingDomainStatus, name: &str) -> (SelectorState, String, Option<String>) {
    let s = st
        .dkim
        .as_ref()
        .and_then(|d| d.selectors.iter().find(|s| s.name == name))
        .unwrap_or_else(|| panic!("no selector {name} in status.dkim"));
    (
        s.state,
        s.public_key.clone(),
        s.retire_at.as_ref().map(|t| t.0.to_string()),
    )
}

fn active(st: &SendingDomainStatus) -> &str {
    st.dkim
        .as_ref()
        .map(|d| d.active_selector.as_str())
        .unwrap_or_default()
}

/// The public key (base64 SPKI) of a PEM private key.
fn public_of(pem: &str) -> String {
    dkim::parse_pem(pem).expect("a valid key").public_key
}

/// Asserts the domain is verified with every record `ok`: no `dkim_mismatch`, no
/// failure of any kind.
fn assert_verified(st: &SendingDomainStatus, when: &str) {
    assert_eq!(st.state, Some(DomainState::Verified), "{when}");
    assert_eq!(st.verification_failure, None, "{when}");
    assert_eq!(condition(st, "Verified").0, "True", "{when}");
    for r in &st.dns_records {
        assert_eq!(
            r.state,
            Some(RecordState::Ok),
            "{when}: {} {:?}",
            r.fqdn,
            r.observed
        );
    }
}

/// The TXT data at `name` from the server at `addr`, each record's strings joined.
fn dig_txt(addr: SocketAddr, name: &str) -> Vec<String> {
    dig_txt_with(addr, name, &["+norecurse"])
}

/// The TXT data a recursive resolver at `addr` gives for `name`, following
/// CNAMEs.
fn dig_txt_via(addr: SocketAddr, name: &str) -> Vec<String> {
    dig_txt_with(addr, name, &[])
}

/// `dig +short name TXT` at `addr` with `flags`: the TXT records (CNAMEs, which
/// `+short` prints unquoted, left out), each record's strings joined.
fn dig_txt_with(addr: SocketAddr, name: &str, flags: &[&str]) -> Vec<String> {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string()])
        .args(flags)
        .args(["+time=2", "+tries=2", "+short", name, "TXT"])
        .output()
        .unwrap_or_else(|e| panic!("could not run dig (Debian package bind9-dnsutils): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains(";;"),
        "dig {name} TXT @{addr} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.starts_with('"'))
        .map(|l| l.trim().trim_matches('"').replace("\" \"", ""))
        .collect()
}

/// Keys of `bits`, checked with openssl against status and against DNS through
/// the customer's CNAMEs, and used by dkimpy to sign and verify a message,
/// before and after a rotation; and the operator reaches Verified with them.
async fn keys_check_out_with_openssl(bits: u32) {
    let mut s = Setup::start_with_bits(&format!("rotation-openssl-{bits}"), bits, "").await;
    let st = s.published().await;
    s.publish(&st, &[]).await;
    let st = s.verify_now().await;
    assert_verified(&st, "before the rotation");
    s.assert_keys_check_out_with_openssl(bits).await;

    s.annotate("anypost.com/rotate", "1");
    let st = s.rotate_request_seen("1").await;
    assert_eq!(active(&st), "anypost2");
    s.assert_keys_check_out_with_openssl(bits).await;
    let st = s.verify_now().await;
    assert_verified(&st, "after the rotation");
}

#[tokio::test]
async fn keys_of_1024_bits_check_out_with_openssl() {
    keys_check_out_with_openssl(1024).await;
}

#[tokio::test]
async fn keys_of_2048_bits_check_out_with_openssl() {
    keys_check_out_with_openssl(2048).await;
}

/// Also the operator reconciling a 4096-bit domain end to end, through
/// verification.
#[tokio::test]
async fn keys_of_4096_bits_check_out_with_openssl() {
    keys_check_out_with_openssl(4096).await;
}

#[tokio::test]
async fn a_requested_rotation_promotes_the_standby_and_replaces_the_old_key_after_grace() {
    let mut s = Setup::start("rotation").await;
    let st = s.published().await;
    s.publish(&st, &[]).await;
    let st = s.verify_now().await;
    assert_verified(&st, "before the rotation");
    let verified_since = condition(&st, "Verified").2;
    let ready_since = condition(&st, "Ready").2;
    assert_eq!(active(&st), "anypost1");
    let before = s.secret().await;
    let (old1, old2) = (
        before["anypost1.key"].clone(),
        before["anypost2.key"].clone(),
    );
    assert_eq!(selector(&st, "anypost1").1, public_of(&old1));
    assert_eq!(selector(&st, "anypost2").1, public_of(&old2));
    assert_eq!(s.served_key(&st, "anypost1"), Some(public_of(&old1)));
    assert_eq!(s.served_key(&st, "anypost2"), Some(public_of(&old2)));

    // Rotate: anypost2 signs, anypost1 stays published (retiring) for the grace period.
    s.annotate("anypost.com/rotate", "1");
    let st = s.signing_with("anypost2").await;
    let dk = st.dkim.clone().unwrap();
    assert_eq!(dk.observed_rotate_request.as_deref(), Some("1"));
    let rotated_at = dk.last_rotation_time.expect("lastRotationTime is set").0;
    let (state1, key1, retire_at) = selector(&st, "anypost1");
    assert_eq!(state1, SelectorState::Retiring);
    assert_eq!(key1, public_of(&old1), "the retiring key is the old one");
    let retire_at: jiff::Timestamp = retire_at
        .expect("a retiring key has retireAt")
        .parse()
        .unwrap();
    assert_eq!(
        retire_at.duration_since(rotated_at),
        jiff::SignedDuration::from_secs(15),
        "retireAt = rotation + --dkim-retire-after"
    );
    assert_eq!(
        selector(&st, "anypost2"),
        (SelectorState::Active, public_of(&old2), None)
    );
    let secret = s.secret().await;
    assert_eq!(
        secret["selector"], "anypost2",
        "the MTA signs with anypost2"
    );
    assert_eq!(
        (&secret["anypost1.key"], &secret["anypost2.key"]),
        (&old1, &old2)
    );
    assert_eq!(s.served_key(&st, "anypost1"), Some(public_of(&old1)));
    assert_eq!(s.served_key(&st, "anypost2"), Some(public_of(&old2)));

    // Checked again while the old key is retiring: still verified.
    let checked = s.verify_now().await;
    assert_verified(&checked, "while anypost1 is retiring");
    // Measured with the operator's own time of the check, not the test's clock.
    let checked_at = checked
        .last_checked_time
        .as_ref()
        .expect("lastCheckedTime")
        .0;
    assert!(
        checked_at < retire_at,
        "the check ran at {checked_at}, after retireAt {retire_at}: the test machine is too slow for a {RETIRE_AFTER} grace"
    );

    // The zone serves the old key until retireAt, then anypost1's fresh key.
    let new1 = eventually(Duration::from_secs(90), || async {
        let served = s.served_key(&st, "anypost1");
        if served.as_deref() == Some(public_of(&old1).as_str()) {
            anyhow::bail!("the zone still serves the old anypost1 key");
        }
        assert!(
            jiff::Timestamp::now() >= retire_at,
            "the zone stopped serving the old anypost1 key before retireAt {retire_at}: {served:?}"
        );
        served.context("no anypost1 TXT at all")
    })
    .await;
    let st = eventually(WAIT, || async {
        let st = s.status().await?;
        let (state, key, retire) = selector(&st, "anypost1");
        ensure!(
            state == SelectorState::Standby && key == new1 && retire.is_none(),
            "anypost1 is {state:?} retireAt={retire:?}"
        );
        Ok(st)
    })
    .await;
    assert_eq!(active(&st), "anypost2");
    assert_eq!(
        selector(&st, "anypost2"),
        (SelectorState::Active, public_of(&old2), None)
    );
    let secret = s.secret().await;
    assert_eq!(secret["selector"], "anypost2");
    assert_ne!(secret["anypost1.key"], old1, "anypost1 got a fresh key");
    assert_eq!(
        public_of(&secret["anypost1.key"]),
        new1,
        "status and the zone match the Secret"
    );
    assert_eq!(secret["anypost2.key"], old2);
    assert_eq!(s.served_key(&st, "anypost2"), Some(public_of(&old2)));

    // Verified throughout: a check against the new key passes, and neither
    // Verified nor Ready ever changed since before the rotation.
    let st = s.verify_now().await;
    assert_verified(&st, "after anypost1 got its fresh key");
    assert_eq!(
        condition(&st, "Verified").2,
        verified_since,
        "Verified flipped"
    );
    assert_eq!(condition(&st, "Ready").2, ready_since, "Ready flipped");
    assert_eq!(condition(&st, "Ready").0, "True");

    let events = s.events();
    let has = |reason: &str| events.iter().any(|e| e.1 == reason && e.0 == "Normal");
    assert!(has("Rotated") && has("KeyRetired"), "{events:#?}");
    let rotated = events.iter().find(|e| e.1 == "Rotated").unwrap();
    assert!(
        rotated
            .2
            .starts_with("selector anypost2 now signs; anypost1 stays published until "),
        "{}",
        rotated.2
    );
    let new_pem = secret["anypost1.key"].clone();
    s.assert_no_private_key_leaks(&[old1, old2, new_pem]);
}

#[tokio::test]
async fn a_rotation_is_refused_while_the_standby_cname_is_not_published() {
    let mut s = Setup::start("rotation-refused").await;
    let st = s.published().await;
    // Everything but anypost2's CNAME.
    s.publish(&st, &["anypost2._domainkey"]).await;
    let st = s.verify_now().await;
    assert_eq!(
        st.verification_failure.as_ref().map(|f| f.code.as_str()),
        Some("dkim_cname_missing")
    );
    let dkim2 = st
        .dns_records
        .iter()
        .find(|r| r.name.starts_with("anypost2."))
        .unwrap();
    assert_eq!(
        (dkim2.purpose, dkim2.state),
        (Purpose::Dkim, Some(RecordState::Missing))
    );
    let secret_before = s.secret().await;

    s.annotate("anypost.com/rotate", "1");
    let st = s.rotate_request_seen("1").await;
    assert_eq!(active(&st), "anypost1");
    assert_eq!(selector(&st, "anypost1").0, SelectorState::Active);
    assert_eq!(selector(&st, "anypost2").0, SelectorState::Standby);
    assert!(st.dkim.as_ref().unwrap().last_rotation_time.is_none());
    assert_eq!(s.secret().await, secret_before, "the Secret is untouched");
    let deferred = eventually(WAIT, || async {
        s.events()
            .into_iter()
            .find(|e| e.1 == "RotationDeferred")
            .context("no RotationDeferred event yet")
    })
    .await;
    assert_eq!(
        deferred,
        (
            "Warning".to_string(),
            "RotationDeferred".to_string(),
            "rotation requested by the anypost.com/rotate annotation was not done: the CNAME \
             for selector anypost2 does not verify; set a new value to ask again"
                .to_string()
        )
    );

    // Once the CNAME is published and checked, asking again rotates.
    s.publish(&st, &[]).await;
    let st = s.verify_now().await;
    assert_verified(&st, "with anypost2 published");
    s.annotate("anypost.com/rotate", "2");
    let st = s.signing_with("anypost2").await;
    assert_eq!(selector(&st, "anypost1").0, SelectorState::Retiring);
    assert_eq!(s.secret().await["selector"], "anypost2");
    let pems: Vec<String> = ["anypost1.key", "anypost2.key"]
        .iter()
        .map(|k| secret_before[*k].clone())
        .collect();
    s.assert_no_private_key_leaks(&pems);
}

#[tokio::test]
async fn a_crash_between_the_secret_and_the_status_of_a_rotation_keeps_the_rotation() {
    let mut s = Setup::start("rotation-crash").await;
    let st = s.published().await;
    s.publish(&st, &[]).await;
    let st = s.verify_now().await;
    assert_verified(&st, "before the rotation");
    let before = s.secret().await;

    // An operator that dies right after its next Secret write: the rotation's.
    s.replace_operator("crashing", &[("ANYPOST_CRASH_AFTER", "dkim-secret")]);
    s.annotate("anypost.com/rotate", "1");
    s.operator.wait_for_crash_at("dkim-secret", WAIT).await;
    assert_eq!(s.secret().await["selector"], "anypost2");
    let st = s.status().await.unwrap();
    assert_eq!(active(&st), "anypost1", "the status write never happened");

    // The next operator completes that rotation instead of rotating back.
    s.replace_operator("restarted", &[]);
    let st = s.rotate_request_seen("1").await;
    assert_eq!(active(&st), "anypost2");
    let (state1, key1, retire_at) = selector(&st, "anypost1");
    assert_eq!(state1, SelectorState::Retiring);
    assert_eq!(key1, public_of(&before["anypost1.key"]));
    assert!(retire_at.is_some());
    assert_eq!(selector(&st, "anypost2").0, SelectorState::Active);
    let secret = s.secret().await;
    assert_eq!(secret["selector"], "anypost2");
    assert_eq!(
        (&secret["anypost1.key"], &secret["anypost2.key"]),
        (&before["anypost1.key"], &before["anypost2.key"])
    );
    let rotated: Vec<_> = s
        .events()
        .into_iter()
        .filter(|e| e.1 == "Rotated")
        .collect();
    assert_eq!(rotated.len(), 1, "{rotated:#?}");
    assert!(
        rotated[0].2.starts_with("selector anypost2 now signs"),
        "{rotated:?}"
    );
    let st = s.verify_now().await;
    assert_verified(&st, "after the completed rotation");
}

/// The cache the controller acts on may lag its own writes (an apiserver under
/// load delivers watch events late). The rotation's Secret write wakes the
/// controller again before its status write is in the cache: that reconcile must
/// wait for the cache, not take the rotation for one whose status write was lost
/// and make it, and tell it, a second time.
#[tokio::test]
async fn a_cache_lagging_behind_a_rotation_does_not_rotate_or_tell_it_twice() {
    let mut s = Setup::start("rotation-lag").await;
    let st = s.published().await;
    s.publish(&st, &[]).await;
    let st = s.verify_now().await;
    assert_verified(&st, "before the rotation");

    s.replace_operator("lagging", &[("ANYPOST_WATCH_LAG", "2000")]);
    s.annotate("anypost.com/rotate", "1");
    let st = s.signing_with("anypost2").await;
    let rotated_at = st.dkim.as_ref().and_then(|d| d.last_rotation_time.clone());
    assert!(rotated_at.is_some(), "lastRotationTime is set");
    // A check asked now is answered after every change before it has been
    // through the (lagging) cache, the rotation's own writes among them.
    let after = s.verify_now().await;
    assert_verified(&after, "after the rotation");
    assert_eq!(
        after
            .dkim
            .as_ref()
            .and_then(|d| d.last_rotation_time.clone()),
        rotated_at,
        "the rotation was made again"
    );
    assert_eq!(
        s.told("Rotated"),
        1,
        "one rotation, told once: {:#?}",
        s.events()
    );
    assert!(
        s.operator.logs().contains("ANYPOST_WATCH_LAG"),
        "the operator ran with its watch held back"
    );
}

#[tokio::test]
async fn a_lost_signing_key_hands_signing_to_the_published_standby() {
    let mut s = Setup::start("rotation-lost-key").await;
    let st = s.published().await;
    s.publish(&st, &[]).await;
    let st = s.verify_now().await;
    assert_verified(&st, "before the key is lost");
    assert_eq!(active(&st), "anypost1");
    let before = s.secret().await;

    // Someone deletes the signing key from the Secret.
    s.ns.kubectl_ok(&[
        "patch",
        "secret",
        &dkim::secret_name(s.name),
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/data/anypost1.key"}]"#,
    ]);

    let st = s.signing_with("anypost2").await;
    let secret = s.secret().await;
    assert_eq!(secret["selector"], "anypost2", "the published key signs");
    assert_eq!(secret["anypost2.key"], before["anypost2.key"]);
    assert_ne!(secret["anypost1.key"], before["anypost1.key"]);
    let (state1, key1, _) = selector(&st, "anypost1");
    assert_eq!(state1, SelectorState::Standby);
    assert_eq!(key1, public_of(&secret["anypost1.key"]));
    assert_eq!(selector(&st, "anypost2").0, SelectorState::Active);
    let warning = eventually(WAIT, || async {
        s.events()
            .into_iter()
            .find(|e| e.1 == "KeyRegenerated")
            .context("no KeyRegenerated event yet")
    })
    .await;
    assert_eq!(warning.0, "Warning");
    assert!(
        warning
            .2
            .contains("selector anypost2, already published, signs instead"),
        "{}",
        warning.2
    );

    // The zone serves the fresh standby key and the domain stays verified.
    eventually(WAIT, || async {
        let served = s.served_key(&st, "anypost1");
        ensure!(
            served.as_deref() == Some(key1.as_str()),
            "zone serves {served:?}"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let st = s.verify_now().await;
    assert_verified(&st, "after the signing key was replaced");
    let pems = vec![
        before["anypost1.key"].clone(),
        before["anypost2.key"].clone(),
        secret["anypost1.key"].clone(),
    ];
    s.assert_no_private_key_leaks(&pems);
}

/// `rotationInterval` rotates by itself, counted from the last rotation (or the
/// active key's creation). The CRD's minimum of 120h keeps a real wait out of a
/// test, so the test moves `status.dkim.lastRotationTime` 121 hours back, as if
/// the domain had been running that long, and watches the operator act on it.
#[tokio::test]
async fn a_scheduled_rotation_happens_once_the_interval_has_passed() {
    let mut s = Setup::start_with("rotation-scheduled", "    rotationInterval: 120h\n").await;
    let interval = jiff::SignedDuration::from_hours(120);
    let st = s.published().await;
    let dk = st.dkim.clone().unwrap();
    let created = dk.selectors[0].created_at.clone().expect("createdAt").0;
    assert_eq!(dk.last_rotation_time, None);
    assert_eq!(
        dk.next_rotation_time.map(|t| t.0),
        Some(created + interval),
        "the first rotation is due 120h after the first key was made"
    );
    s.publish(&st, &[]).await;
    let st = s.verify_now().await;
    assert_verified(&st, "before the interval passed");
    assert_eq!(active(&st), "anypost1");
    let before = s.secret().await;

    let long_ago = jiff::Timestamp::from_second(
        (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(121)).as_second(),
    )
    .unwrap();
    let patch = serde_json::json!({"status": {"dkim": {"lastRotationTime": long_ago.to_string()}}});
    s.ns.kubectl_ok(&[
        "patch",
        "sendingdomain",
        s.name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);

    // No annotation: the schedule alone rotates.
    let st = s.signing_with("anypost2").await;
    let dk = st.dkim.clone().unwrap();
    let rotated_at = dk.last_rotation_time.expect("lastRotationTime").0;
    assert!(
        rotated_at > long_ago + interval,
        "lastRotationTime {rotated_at} is the rotation's own time"
    );
    assert_eq!(
        dk.next_rotation_time.map(|t| t.0),
        Some(rotated_at + interval)
    );
    assert_eq!(dk.observed_rotate_request, None);
    assert_eq!(selector(&st, "anypost1").0, SelectorState::Retiring);
    let secret = s.secret().await;
    assert_eq!(
        secret["selector"], "anypost2",
        "the MTA signs with anypost2"
    );
    assert_eq!(
        (&secret["anypost1.key"], &secret["anypost2.key"]),
        (&before["anypost1.key"], &before["anypost2.key"]),
        "a rotation changes which key signs, not the keys"
    );
    assert!(
        s.events().iter().any(|(_, reason, _)| reason == "Rotated"),
        "{:?}",
        s.events()
    );
    let st = s.verify_now().await;
    assert_verified(&st, "after the scheduled rotation");
}
