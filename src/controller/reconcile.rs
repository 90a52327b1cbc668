//! One reconcile of one SendingDomain: gather → compute → apply → status.

use super::dkim::{self, KeyMaterial, PlanInput, StoredKeys};
use super::status::{self, CheckResult, Inputs, Published};
use super::{Context, Error};
use crate::api::{
    DnsRecord, DomainState, MANAGED_BY_LABEL, MANAGER, ROTATE_ANNOTATION, SendingDomain,
    SendingDomainStatus, VERIFY_ANNOTATION,
};
use crate::naming::{self, SendingName};
use crate::telemetry::SourceLabels;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Field manager for the DKIM Secret.
pub const SECRET_MANAGER: &str = "anypost-operator/dkim-secret";
/// Field manager for status.
pub const STATUS_MANAGER: &str = "anypost-operator/status";

/// Poll interval while waiting for the zone to serve freshly written records.
pub const PUBLISH_POLL: Duration = Duration::from_secs(1);
/// First re-check of a pending domain; later ones back off up to the configured cap.
pub const PENDING_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The status of an object that has none yet.
static NO_STATUS: std::sync::LazyLock<SendingDomainStatus> =
    std::sync::LazyLock::new(SendingDomainStatus::default);

/// What a check request carries to the verifier.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub domain: String,
    pub records: Vec<DnsRecord>,
    /// Expected public key (base64 SPKI) per selector.
    pub dkim_keys: [String; 2],
}

pub async fn reconcile(sd: Arc<SendingDomain>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = sd.namespace().unwrap_or_default();
    let name = sd.name_any();
    let _timer = ctx.metrics.reconcile_timer();
    let now = Timestamp::now();
    // Borrowed from the object rather than copied: during a burst thousands of
    // reconciles wait at once (for key generation or a check slot).
    let previous: &SendingDomainStatus = sd.status.as_ref().unwrap_or(&NO_STATUS);
    let generation = sd.metadata.generation;
    if sd.metadata.deletion_timestamp.is_some() {
        // Being deleted: the Secret goes with it (ownerReference). Records on an
        // external server go first; the zone sync drops deleted domains.
        if !super::finalizer::present(&sd) {
            return Ok(Action::await_change());
        }
        let gone = match SendingName::parse(&sd.spec.domain) {
            Ok(p) => ctx
                .publisher
                .absent(&naming::token(&ctx.identity_key, &ns, &p.domain)),
            Err(_) => true,
        };
        if gone {
            let api: Api<SendingDomain> = Api::namespaced(ctx.client.clone(), &ns);
            super::finalizer::remove(&api, &sd).await?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(PUBLISH_POLL));
    }

    // The domain name: syntax is admission's job; the public suffix list is ours.
    let parsed = match SendingName::parse(&sd.spec.domain) {
        Ok(p) => p,
        Err(e) => {
            return block(&sd, &ctx, previous, now, e.reason(), &e.to_string()).await;
        }
    };

    // Two claims on one domain: the older keeps it. The list of every claim is
    // dropped before anything is awaited: thousands of reconciles waiting for
    // key generation would otherwise each keep a copy, and through it every
    // SendingDomain version it saw, alive.
    let lost_to = {
        let all = ctx.domains();
        (!crate::dns::claims::is_winner(&all, &sd)).then(|| {
            crate::dns::claims::claim_winner(&all, &sd.spec.domain)
                .map(|w| (w.namespace().unwrap_or_default(), w.name_any()))
        })
    };
    if let Some(winner) = lost_to {
        let whose = match winner {
            Some((ns, name)) if ctx.config.reveal_conflicts => {
                format!("SendingDomain {ns}/{name}")
            }
            _ => "another SendingDomain".to_string(),
        };
        let msg = format!(
            "{} is already claimed by {whose}, created earlier; nothing is published for this one. It takes over automatically if the other claim is deleted.",
            sd.spec.domain
        );
        return block(&sd, &ctx, previous, now, "DomainConflict", &msg).await;
    }

    let token = naming::token(&ctx.identity_key, &ns, &parsed.domain);
    let id = naming::domain_id(&token);
    // What the object carries, and what of it this reconcile may build on: only a
    // status computed for this very namespace, domain and identity key (its id).
    // Every status write is fenced to the object's uid, so a trusted status was
    // also computed for this object; anything else (a status copied by hand,
    // restored onto another object, or written unfenced by an older version) is
    // ignored, and the domain is keyed, published and checked as if new.
    let written = previous;
    let previous = status::trusted(written, &id);
    if ctx.publisher.external() && !super::finalizer::present(&sd) {
        let api: Api<SendingDomain> = Api::namespaced(ctx.client.clone(), &ns);
        super::finalizer::add(&api, &sd).await?;
    }

    // Keys: read what is stored, plan, generate what is missing, store, then status.
    let secret_name = dkim::secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let rotation_interval = sd
        .spec
        .dkim
        .as_ref()
        .and_then(|d| d.rotation_interval.as_deref())
        .and_then(|s| crate::duration::parse(s).ok());
    let plan_for = |stored: &StoredKeys| {
        dkim::plan(&PlanInput {
            now,
            previous: previous.dkim.as_ref(),
            stored,
            rotation_interval,
            rotate_request: sd.annotations().get(ROTATE_ANNOTATION).map(String::as_str),
            verified: status::selectors_verified(&previous.dns_records),
            retire_after: ctx.config.dkim_retire_after,
            min_standby_age: ctx.config.dkim_min_standby_age,
        })
    };
    // In steady state the watch cache answers. It may lag the API, so it is used
    // only when it agrees with status and the plan writes nothing; anything that
    // would write (a new key, a rotation, a repair) re-reads the Secret live first.
    let cached = ctx
        .cached_secret(&ns, &secret_name)
        .filter(|s| adoptable(s, &sd).is_ok())
        .and_then(|s| {
            let stored = StoredKeys::from_secret(Some(&s));
            let plan = plan_for(&stored);
            steady(&s, &stored, &plan, previous.dkim.as_ref(), &sd).then_some((s, stored, plan))
        });
    let (secret, stored, plan) = match cached {
        Some((s, stored, plan)) => {
            ctx.metrics
                .secret_reads
                .get_or_create(&SourceLabels { source: "cache" })
                .inc();
            (Some(s), stored, plan)
        }
        None => {
            ctx.metrics
                .secret_reads
                .get_or_create(&SourceLabels { source: "api" })
                .inc();
            let secret =
                secrets
                    .get_opt(&secret_name)
                    .await
                    .map_err(|source| Error::ReadDkimSecret {
                        secret: format!("{ns}/{secret_name}"),
                        source,
                    })?;
            if let Some(s) = &secret
                && let Err(why) = adoptable(s, &sd)
            {
                let msg = format!(
                    "Secret {secret_name} exists and {why}; the operator does not overwrite it. Delete it, or label it {MANAGED_BY_LABEL}={MANAGER} to import its keys (anypost1.key, anypost2.key as PKCS#8 PEM)."
                );
                return block(&sd, &ctx, previous, now, "SecretConflict", &msg).await;
            }
            let stored = StoredKeys::from_secret(secret.as_ref());
            for (sel, why) in &stored.invalid {
                tracing::warn!(namespace = %ns, name = %name, selector = sel, error = %why, "stored DKIM key is unreadable; it will be replaced");
            }
            let plan = plan_for(&stored);
            (secret.map(Arc::new), stored, plan)
        }
    };
    let mut keys: [Option<KeyMaterial>; 2] = stored.keys.clone();
    for &i in &plan.generate {
        keys[i] = Some(ctx.generate_key(sd.key_bits()).await?);
    }
    let keys: [KeyMaterial; 2] = keys.map(|k| k.expect("every missing key was generated"));
    let data = dkim::secret_data(&keys, plan.active);
    // Other keys someone added to the Secret are theirs: only ours are compared
    // (server-side apply leaves the rest alone).
    let secret_current = secret.as_ref().is_some_and(|s| secret_holds(s, &data, &sd));
    if !secret_current {
        apply_secret(&ctx, &secrets, &sd, &secret_name, data).await?;
        ctx.metrics.secret_writes.inc();
        crash_point("dkim-secret");
    }
    // Events about the keys are told once status carries them: a failed status
    // write is retried, and the retry must not tell them twice.
    let mut key_events: Vec<(bool, &str, String)> = plan
        .notes
        .iter()
        .map(|n| (n.warning, n.reason, n.message.clone()))
        .collect();
    if !plan.generate.is_empty() && secret.is_none() {
        key_events.push((
            false,
            "KeysGenerated",
            format!(
                "generated {}-bit DKIM keys for anypost1 and anypost2 in Secret {secret_name}",
                sd.key_bits()
            ),
        ));
    }
    let dkim_status = plan.status(&secret_name, &keys);

    // Records and whether the zone serves them.
    let records =
        naming::customer_records(&parsed, &token, &ctx.config.zone, sd.tracking_subdomain());
    let public_keys = [keys[0].public_key.clone(), keys[1].public_key.clone()];
    let published = ctx.publisher.published(&token, &public_keys);
    let shown = shown_published(&published, previous, || {
        let mut active_only = [String::new(), String::new()];
        active_only[plan.active] = public_keys[plan.active].clone();
        ctx.publisher.published(&token, &active_only)
    });

    // Check now if due and the zone serves the records.
    let verify_request = sd.annotations().get(VERIFY_ANNOTATION).cloned();
    let requested = verify_request.is_some() && verify_request != previous.observed_verify_request;
    let spec_changed = previous.observed_generation != generation
        || previous.dns_records.len() != records.len()
        || previous
            .dns_records
            .iter()
            .zip(&records)
            .any(|(a, b)| a.value != b.value || a.fqdn != b.fqdn);
    let due = requested || spec_changed || check_due(previous, now, &ctx.config, &sd);
    let first_publication = published == Published::Yes && !was_published(previous);
    let check: Option<CheckResult> = if check_now(due, &published, first_publication) {
        let req = CheckRequest {
            domain: parsed.domain.clone(),
            records: records.clone(),
            dkim_keys: public_keys.clone(),
        };
        Some(ctx.verify(req).await)
    } else {
        None
    };

    let checked = check.is_some();
    let new_status = status::compute(Inputs {
        now,
        generation,
        previous,
        id,
        records,
        dkim: dkim_status,
        published: shown,
        check,
        verify_request: answered_verify_request(verify_request, requested, checked),
        verified_grace: ctx.config.verified_grace,
        tracking_enabled: sd.spec.tracking.is_some(),
    });
    write_status(&sd, &ctx, written, previous, &new_status).await?;
    for (warning, reason, message) in &key_events {
        ctx.event(&sd, *warning, reason, message).await;
    }

    // When to look again.
    let mut next = if first_publication {
        Duration::ZERO
    } else if published == Published::Yes {
        next_check_in(&new_status, now, &ctx.config, &sd)
    } else {
        PUBLISH_POLL
    };
    if let Some(t) = plan.next_event() {
        next = next.min(until(now, t));
    }
    Ok(Action::requeue(next.max(Duration::from_millis(200))))
}

/// Whether this reconcile checks the customer's records. Only once the zone
/// serves every key in status; and not in the reconcile that first finds the
/// records published: that one writes `RecordsPublished=True` at once and the
/// check follows in the next reconcile. Otherwise the condition would wait its
/// turn in the verification queue (`--verify-concurrency`), which a bulk import
/// of new domains fills for minutes.
pub fn check_now(due: bool, published: &Published, first_publication: bool) -> bool {
    due && *published == Published::Yes && !first_publication
}

fn was_published(previous: &SendingDomainStatus) -> bool {
    super::conditions::find(&previous.conditions, super::conditions::RECORDS_PUBLISHED)
        .is_some_and(|c| c.status == "True")
}

/// The `anypost.com/verify` value to record as answered: only once a check has
/// run for it. A request that arrives while the zone does not serve every key yet
/// (a new domain, a standby key just replaced) stays pending and is answered by
/// the check that follows publication, instead of being marked seen unchecked.
pub fn answered_verify_request(
    value: Option<String>,
    requested: bool,
    checked: bool,
) -> Option<String> {
    value.filter(|_| requested && checked)
}

/// What `RecordsPublished` (and through it `Ready`) reports. A published domain
/// whose standby key was just replaced (after a rotation's grace period, or a lost
/// key) keeps reporting published while the zone catches up, as long as the zone
/// serves the key that signs: mail is sent and verified throughout, so neither
/// condition flips for that moment. Checks still wait for `full`: the zone must
/// serve every key in status before the customer's chain is compared with it.
pub fn shown_published(
    full: &Published,
    previous: &SendingDomainStatus,
    signing_only: impl FnOnce() -> Published,
) -> Published {
    if *full != Published::Yes && was_published(previous) && signing_only() == Published::Yes {
        Published::Yes
    } else {
        full.clone()
    }
}

/// Whether the Secret already holds `data` (only our keys are compared: others
/// someone added are theirs, and server-side apply leaves them alone) with our
/// label and ownerReference.
fn secret_holds(s: &Secret, data: &BTreeMap<String, ByteString>, sd: &SendingDomain) -> bool {
    let stored = s.data.as_ref();
    data.iter()
        .all(|(k, v)| stored.and_then(|d| d.get(k)) == Some(v))
        && s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
        && owned_by(s, sd)
}

/// Whether a Secret read from the watch cache can stand in for a live read: its
/// keys are the ones status publishes, with the same active selector, and the
/// plan made from it generates nothing and writes nothing. A cache that lags the
/// API then at worst repeats the last status; it never drives a write.
pub fn steady(
    s: &Secret,
    stored: &StoredKeys,
    plan: &dkim::Plan,
    status: Option<&crate::api::DkimStatus>,
    sd: &SendingDomain,
) -> bool {
    let Some(status) = status else {
        return false;
    };
    let [Some(k1), Some(k2)] = &stored.keys else {
        return false;
    };
    let keys = [k1.clone(), k2.clone()];
    stored.invalid.is_empty()
        && plan.generate.is_empty()
        && stored.active == Some(plan.active)
        && status.active_selector == crate::naming::SELECTORS[plan.active]
        && crate::naming::SELECTORS.iter().zip(&keys).all(|(sel, k)| {
            status
                .selectors
                .iter()
                .any(|x| x.name == *sel && x.public_key == k.public_key)
        })
        && secret_holds(s, &dkim::secret_data(&keys, plan.active), sd)
}

/// Fault injection for crash-safety tests: with `ANYPOST_CRASH_AFTER=<point>` the
/// process dies right after that write, as if the node had failed there.
fn crash_point(point: &str) {
    if std::env::var("ANYPOST_CRASH_AFTER").is_ok_and(|p| p == point) {
        tracing::error!(point, "ANYPOST_CRASH_AFTER: exiting on purpose");
        std::process::exit(86);
    }
}

/// How often a domain blocked by another object looks again by itself.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

/// When a blocked domain looks again. An invalid name is fixed by a change to
/// the SendingDomain, which triggers a reconcile. A conflict is settled by a
/// change to another object: the older claim's deletion triggers a reconcile,
/// but that one may still see the deleted claim in the controller's cache (the
/// two arrive on different watches); a foreign Secret in the way is deleted or
/// labelled without triggering anything. A periodic look makes both certain.
pub fn blocked_action(reason: &str) -> Action {
    if matches!(reason, "DomainConflict" | "SecretConflict") {
        Action::requeue(CONFLICT_RECHECK)
    } else {
        Action::await_change()
    }
}

/// Writes a blocked status and waits, see [`blocked_action`].
async fn block(
    sd: &SendingDomain,
    ctx: &Context,
    previous: &SendingDomainStatus,
    now: Timestamp,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    let st = status::blocked(previous, sd.metadata.generation, now, reason, message);
    write_status(sd, ctx, previous, previous, &st).await?;
    Ok(blocked_action(reason))
}

/// Writes status if it differs from what the object carries (`written`), with an
/// Event for each meaningful transition from `previous` (the status this reconcile
/// built on).
///
/// The write is fenced to the object it was computed from: a JSON patch whose
/// first operation tests `metadata.uid`. A reconcile that read an object since
/// deleted and re-created under the same name therefore fails instead of writing
/// the old object's status onto the new one. (Server-side apply cannot fence a
/// status write: for a custom resource's status subresource the apiserver takes
/// every field but `status` from the stored object, `metadata.uid` included.)
async fn write_status(
    sd: &SendingDomain,
    ctx: &Context,
    written: &SendingDomainStatus,
    previous: &SendingDomainStatus,
    new: &SendingDomainStatus,
) -> Result<(), Error> {
    if written == new {
        return Ok(());
    }
    let api: Api<SendingDomain> =
        Api::namespaced(ctx.client.clone(), &sd.namespace().unwrap_or_default());
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        { "op": "test", "path": "/metadata/uid", "value": uid(sd) },
        { "op": "add", "path": "/status", "value": new },
    ]))
    .expect("a JSON patch of a test and an add");
    let params = PatchParams {
        field_manager: Some(STATUS_MANAGER.into()),
        ..Default::default()
    };
    api.patch_status(&sd.name_any(), &params, &Patch::Json::<()>(patch))
        .await
        .map_err(|source| match fence_failed(&source) {
            true => superseded(sd, "status"),
            false => Error::PatchStatus {
                domain: format!("{}/{}", sd.namespace().unwrap_or_default(), sd.name_any()),
                source,
            },
        })?;
    ctx.metrics.status_writes.inc();
    for (warning, reason, message) in transition_events(previous, new) {
        ctx.event(sd, warning, reason, &message).await;
    }
    Ok(())
}

/// The uid of an object read from the API (every stored object has one).
fn uid(sd: &SendingDomain) -> &str {
    sd.metadata.uid.as_deref().unwrap_or_default()
}

/// Whether a fenced write failed because the object is gone or is another object
/// now: 404, the JSON patch's uid test failing (422), or a server-side apply
/// carrying another uid (409 or 422).
pub fn fence_failed(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) if s.code == 404 => true,
        kube::Error::Api(s) if s.code == 409 || s.code == 422 => {
            let m = s.message.to_ascii_lowercase();
            m.contains("uid") || m.contains("test")
        }
        _ => false,
    }
}

fn superseded(sd: &SendingDomain, write: &'static str) -> Error {
    Error::Superseded {
        domain: format!("{}/{}", sd.namespace().unwrap_or_default(), sd.name_any()),
        uid: uid(sd).to_string(),
        write,
    }
}

/// Events for state changes, not for every check.
pub fn transition_events(
    old: &SendingDomainStatus,
    new: &SendingDomainStatus,
) -> Vec<(bool, &'static str, String)> {
    use super::conditions as c;
    let mut out = Vec::new();
    let old_state = old.state.unwrap_or(DomainState::Pending);
    let new_state = new.state.unwrap_or(DomainState::Pending);
    let msg = |s: &SendingDomainStatus| {
        s.verification_failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_default()
    };
    match (old_state, new_state) {
        (DomainState::Pending, DomainState::Verified) => out.push((
            false,
            "Verified",
            "every required CNAME verifies: the domain can send".to_string(),
        )),
        (DomainState::Verified, DomainState::Pending) => out.push((
            true,
            "VerificationLost",
            format!(
                "the grace period ended and the domain is pending again: {}",
                msg(new)
            ),
        )),
        _ => {}
    }
    let flipped = |t: &str| {
        let before = c::find(&old.conditions, t);
        let after = c::find(&new.conditions, t);
        match (before, after) {
            (b, Some(a)) => b
                .is_none_or(|b| b.status != a.status || b.reason != a.reason)
                .then_some(a),
            _ => None,
        }
    };
    if let Some(v) = flipped(c::VERIFIED)
        && v.status == "False"
    {
        let reason = if new_state == DomainState::Verified {
            "RecordsFailing"
        } else {
            "VerificationFailing"
        };
        out.push((true, reason, v.message.clone()));
    }
    if let Some(r) = flipped(c::READY)
        && r.status == "False"
        && matches!(
            r.reason.as_str(),
            "DomainConflict" | "PublicSuffix" | "InvalidDomain" | "SecretConflict"
        )
    {
        out.push((true, "Blocked", format!("{}: {}", r.reason, r.message)));
    }
    if let Some(t) = flipped(c::TRACKING_VERIFIED)
        && t.status != "Unknown"
    {
        let warning = t.status == "False";
        out.push((
            warning,
            if warning {
                "TrackingFailing"
            } else {
                "TrackingVerified"
            },
            t.message.clone(),
        ));
    }
    if let Some(p) = flipped(c::RECORDS_PUBLISHED)
        && p.status == "False"
        && p.reason != "Publishing"
        && !matches!(
            p.reason.as_str(),
            "DomainConflict" | "PublicSuffix" | "InvalidDomain" | "SecretConflict"
        )
    {
        out.push((true, "PublishFailed", p.message.clone()));
    }
    out
}

/// Whether `secret` may be managed for `sd`: ours, or explicitly handed over.
fn adoptable(secret: &Secret, sd: &SendingDomain) -> Result<(), &'static str> {
    if secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGER) {
        return Err("was not created by anypost-operator");
    }
    let foreign_controller = secret.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.uid != sd.metadata.uid.clone().unwrap_or_default()
            && o.kind != "SendingDomain"
    });
    if foreign_controller {
        return Err("is controlled by another object");
    }
    Ok(())
}

fn owned_by(secret: &Secret, sd: &SendingDomain) -> bool {
    secret
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == sd.metadata.uid.as_ref() && o.controller == Some(true))
}

/// Writes the DKIM Secret, fenced to the SendingDomain it was computed for: the
/// SendingDomain is read live first and must still be the same object (same uid,
/// not being deleted). A reconcile that outlived its object (key generation takes
/// seconds) would otherwise point the Secret's ownerReference at a uid that no
/// longer exists, and the garbage collector would delete the keys of the object
/// that replaced it.
async fn apply_secret(
    ctx: &Context,
    api: &Api<Secret>,
    sd: &SendingDomain,
    name: &str,
    data: BTreeMap<String, k8s_openapi::ByteString>,
) -> Result<(), Error> {
    let domains: Api<SendingDomain> =
        Api::namespaced(ctx.client.clone(), &sd.namespace().unwrap_or_default());
    let live = domains
        .get_opt(&sd.name_any())
        .await
        .map_err(|source| Error::ReadDomain {
            domain: format!("{}/{}", sd.namespace().unwrap_or_default(), sd.name_any()),
            source,
        })?;
    if live.is_none_or(|l| {
        l.metadata.uid != sd.metadata.uid || l.metadata.deletion_timestamp.is_some()
    }) {
        return Err(superseded(sd, "secret"));
    }
    let owner = sd
        .controller_owner_ref(&())
        .expect("a SendingDomain read from the API has a uid");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: sd.namespace(),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    api.patch(
        name,
        &PatchParams::apply(SECRET_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|source| Error::ApplyDkimSecret {
        secret: format!("{}/{name}", sd.namespace().unwrap_or_default()),
        source,
    })?;
    Ok(())
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    let d = t.duration_since(now);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

fn since(now: Timestamp, t: Timestamp) -> Duration {
    until(t, now)
}

/// The wait before the next check of a pending (or failing) domain: half the time
/// it has been failing, between 5 s and the cap. Checks thus start seconds apart
/// and back off geometrically, forever.
pub fn pending_interval(
    previous: &SendingDomainStatus,
    sd: &SendingDomain,
    now: Timestamp,
    cap: Duration,
) -> Duration {
    let start = previous
        .verification_failure
        .as_ref()
        .and_then(|f| f.since.as_ref().map(|t| t.0))
        .or_else(|| sd.creation_timestamp().map(|t| t.0))
        .unwrap_or(now);
    (since(now, start) / 2).clamp(PENDING_MIN_INTERVAL, cap.max(PENDING_MIN_INTERVAL))
}

fn is_healthy(st: &SendingDomainStatus) -> bool {
    st.state == Some(DomainState::Verified) && st.verification_failure.is_none()
}

fn check_due(
    previous: &SendingDomainStatus,
    now: Timestamp,
    cfg: &super::Config,
    sd: &SendingDomain,
) -> bool {
    let Some(last) = previous.last_checked_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let interval = if is_healthy(previous) {
        cfg.verify_interval.mul_f64(0.9)
    } else {
        pending_interval(previous, sd, last, cfg.pending_max_interval)
    };
    since(now, last) >= interval
}

fn next_check_in(
    st: &SendingDomainStatus,
    now: Timestamp,
    cfg: &super::Config,
    sd: &SendingDomain,
) -> Duration {
    let last = st.last_checked_time.as_ref().map(|t| t.0).unwrap_or(now);
    let interval = if is_healthy(st) {
        // ±10% jitter so that domains verified together spread out.
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).unwrap_or(());
        let j = 0.9 + 0.2 * (u16::from_le_bytes(b) as f64 / u16::MAX as f64);
        cfg.verify_interval.mul_f64(j)
    } else {
        pending_interval(st, sd, last, cfg.pending_max_interval)
    };
    let at = last
        .checked_add(SignedDuration::try_from(interval).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    until(now, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn with_published(status: &str) -> SendingDomainStatus {
        SendingDomainStatus {
            conditions: vec![Condition {
                type_: "RecordsPublished".into(),
                status: status.into(),
                reason: "Published".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::now()),
            }],
            ..Default::default()
        }
    }

    fn publishing() -> Published {
        Published::No {
            reason: "Publishing",
            message: "not yet".into(),
        }
    }

    #[test]
    fn a_lost_conflict_looks_again_and_a_bad_name_waits_for_a_change() {
        for reason in ["DomainConflict", "SecretConflict"] {
            assert_eq!(
                blocked_action(reason),
                Action::requeue(CONFLICT_RECHECK),
                "{reason}"
            );
        }
        for reason in ["PublicSuffix", "InvalidDomain"] {
            assert_eq!(blocked_action(reason), Action::await_change(), "{reason}");
        }
    }

    #[test]
    fn publication_is_recorded_before_the_first_check() {
        assert!(!check_now(true, &Published::Yes, true));
        assert!(check_now(true, &Published::Yes, false));
        assert!(!check_now(false, &Published::Yes, false));
        assert!(!check_now(true, &publishing(), false));
    }

    #[test]
    fn a_verify_request_is_answered_only_by_a_check() {
        let v = || Some("2".to_string());
        assert_eq!(answered_verify_request(v(), true, true), v());
        assert_eq!(answered_verify_request(v(), true, false), None);
        assert_eq!(answered_verify_request(v(), false, true), None);
    }

    #[test]
    fn a_replaced_standby_key_does_not_unpublish_a_published_domain() {
        let prev = with_published("True");
        assert_eq!(
            shown_published(&publishing(), &prev, || Published::Yes),
            Published::Yes
        );
        // The signing key itself is not served: not published.
        assert_eq!(
            shown_published(&publishing(), &prev, publishing),
            publishing()
        );
    }

    #[test]
    fn a_domain_not_yet_published_waits_for_every_key() {
        for prev in [SendingDomainStatus::default(), with_published("False")] {
            assert_eq!(
                shown_published(&publishing(), &prev, || Published::Yes),
                publishing()
            );
        }
        assert_eq!(
            shown_published(&Published::Yes, &SendingDomainStatus::default(), || {
                unreachable!("not asked when every key is served")
            }),
            Published::Yes
        );
    }

    mod cache {
        use super::super::*;
        use crate::api::SendingDomainSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        use std::sync::OnceLock;

        fn keys() -> &'static [KeyMaterial; 2] {
            static K: OnceLock<[KeyMaterial; 2]> = OnceLock::new();
            K.get_or_init(|| [dkim::generate(1024).unwrap(), dkim::generate(1024).unwrap()])
        }

        fn domain() -> SendingDomain {
            let mut sd = SendingDomain::new(
                "example-com",
                SendingDomainSpec {
                    domain: "example.com".into(),
                    dkim: None,
                    tracking: None,
                },
            );
            sd.metadata.namespace = Some("team-a".into());
            sd.metadata.uid = Some("uid-1".into());
            sd
        }

        fn secret(sd: &SendingDomain, keys: &[KeyMaterial; 2], active: usize) -> Secret {
            Secret {
                metadata: ObjectMeta {
                    name: Some("example-com-dkim".into()),
                    labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGER.into())])),
                    owner_references: Some(vec![sd.controller_owner_ref(&()).unwrap()]),
                    ..Default::default()
                },
                data: Some(dkim::secret_data(keys, active)),
                ..Default::default()
            }
        }

        fn plan(status: Option<&crate::api::DkimStatus>, stored: &StoredKeys) -> dkim::Plan {
            dkim::plan(&PlanInput {
                now: Timestamp::now(),
                previous: status,
                stored,
                rotation_interval: None,
                rotate_request: None,
                verified: [true, true],
                retire_after: Duration::from_secs(3600),
                min_standby_age: Duration::from_secs(3600),
            })
        }

        /// Whether `s` may stand in for a live read, given `status`.
        fn usable(s: &Secret, status: Option<&crate::api::DkimStatus>) -> bool {
            let stored = StoredKeys::from_secret(Some(s));
            steady(s, &stored, &plan(status, &stored), status, &domain())
        }

        /// The status the operator writes once the Secret holds `keys`.
        fn status_for(keys: &[KeyMaterial; 2]) -> crate::api::DkimStatus {
            let s = secret(&domain(), keys, 0);
            let stored = StoredKeys::from_secret(Some(&s));
            plan(None, &stored).status("example-com-dkim", keys)
        }

        #[test]
        fn a_cached_secret_that_agrees_with_status_is_used() {
            let s = secret(&domain(), keys(), 0);
            assert!(usable(&s, Some(&status_for(keys()))));
        }

        #[test]
        fn a_new_domain_always_reads_live() {
            assert!(!usable(&secret(&domain(), keys(), 0), None));
        }

        #[test]
        fn a_cache_behind_or_ahead_of_status_is_not_used() {
            // Status publishes a key the cached Secret does not hold yet.
            let newer = [keys()[0].clone(), dkim::generate(1024).unwrap()];
            let s = secret(&domain(), keys(), 0);
            assert!(!usable(&s, Some(&status_for(&newer))));
            // The cached Secret names another active selector than status.
            let s = secret(&domain(), keys(), 1);
            assert!(!usable(&s, Some(&status_for(keys()))));
        }

        #[test]
        fn a_secret_that_needs_a_write_is_not_used() {
            let status = status_for(keys());
            // A key is missing: the plan generates one.
            let mut s = secret(&domain(), keys(), 0);
            s.data.as_mut().unwrap().remove("anypost2.key");
            assert!(!usable(&s, Some(&status)));
            // A key is unreadable.
            let mut s = secret(&domain(), keys(), 0);
            s.data
                .as_mut()
                .unwrap()
                .insert("anypost1.key".into(), ByteString(b"garbage".to_vec()));
            assert!(!usable(&s, Some(&status)));
            // Our ownerReference is gone: the write restores it.
            let mut s = secret(&domain(), keys(), 0);
            s.metadata.owner_references = Some(vec![OwnerReference {
                uid: "someone-else".into(),
                ..Default::default()
            }]);
            assert!(!usable(&s, Some(&status)));
        }
    }
}
