//! The keys phase: read what the Secret holds (from the watch cache in steady
//! state, live otherwise), plan, generate what is missing, store the Secret.
//! A key reaches the Secret before its public half reaches status (the next
//! phases), so a crash at any point never publishes a key that is not stored.

use super::{Context, Error};
use crate::adapters::kube::writes;
use crate::core::api::{
    DkimStatus, MANAGED_BY_LABEL, MANAGER, ROTATE_ANNOTATION, SendingDomain, SendingDomainStatus,
};
use crate::core::dkim::keys::{adoptable, holds, is_stand_in, steady};
use crate::core::dkim::{KeyMaterial, Plan, PlanInput, StoredKeys, plan, secret_data, secret_name};
use crate::core::status::events::Event;
use crate::core::status::selectors_verified;
use crate::core::vocab::{BySelector, EventReason};
use crate::telemetry::SourceLabels;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use std::sync::Arc;

/// The keys as stored, and what status says of them.
pub(super) struct Keys {
    pub keys: BySelector<KeyMaterial>,
    pub plan: Plan,
    pub status: DkimStatus,
    /// Told once status carries the keys: a failed status write is retried, and
    /// the retry must not tell them twice.
    events: Vec<Event>,
}

pub(super) enum Stored {
    Keys(Box<Keys>),
    /// A Secret of that name the operator may not manage: why, and what to do.
    Conflict(String),
}

/// What the Secret holds, and the plan made from it.
struct Read {
    secret: Option<Arc<Secret>>,
    stored: StoredKeys,
    plan: Plan,
}

pub(super) async fn store(
    sd: &SendingDomain,
    ctx: &Context,
    previous: &SendingDomainStatus,
    now: Timestamp,
) -> Result<Stored, Error> {
    let name = secret_name(&sd.name_any());
    let plan_for = |stored: &StoredKeys| {
        plan(&PlanInput {
            now,
            previous: previous.dkim.as_ref(),
            stored,
            rotation_interval: sd.rotation_interval(),
            rotate_request: sd.annotations().get(ROTATE_ANNOTATION).map(String::as_str),
            verified: selectors_verified(&previous.dns_records),
            retire_after: ctx.config.dkim_retire_after,
            min_standby_age: ctx.config.dkim_min_standby_age,
        })
    };
    let read = match from_cache(sd, ctx, &name, previous, &plan_for) {
        Some(read) => read,
        None => match read_live(sd, ctx, &name, &plan_for).await? {
            Ok(read) => read,
            Err(conflict) => return Ok(Stored::Conflict(conflict)),
        },
    };
    let mut keys = read.stored.keys.clone();
    for &sel in &read.plan.generate {
        keys[sel] = Some(
            ctx.generate_key(&sd.namespace().unwrap_or_default(), sd.key_bits())
                .await?,
        );
    }
    let keys = keys.map(|k| k.expect("every missing key was generated"));
    let data = secret_data(&keys, read.plan.active);
    // Other keys someone added to the Secret are theirs: only ours are compared
    // (server-side apply leaves the rest alone).
    let uid = sd.metadata.uid.as_deref().unwrap_or_default();
    if !read.secret.as_ref().is_some_and(|s| holds(s, &data, uid)) {
        // A cached read is used only when it holds what it would write
        // (`steady`); a stand-in reaching a write would be a bug, and is stopped.
        if keys.iter().any(|(_, k)| is_stand_in(k)) {
            return Err(Error::StandInWrite {
                secret: format!("{}/{name}", sd.namespace().unwrap_or_default()),
            });
        }
        writes::secret(&ctx.client, sd, &name, data, read.secret.as_deref()).await?;
        ctx.metrics.secret_writes.inc();
        crash_point("dkim-secret");
    }
    let events = key_events(&read, &name, sd.key_bits());
    let status = read.plan.status(&name, &keys);
    Ok(Stored::Keys(Box::new(Keys {
        keys,
        plan: read.plan,
        status,
        events,
    })))
}

/// The Events about the keys: what the plan noted, and the first keys made.
fn key_events(read: &Read, secret: &str, bits: u32) -> Vec<Event> {
    let mut events: Vec<Event> = read
        .plan
        .notes
        .iter()
        .map(|n| Event {
            warning: n.warning,
            reason: n.reason,
            message: n.message.clone(),
        })
        .collect();
    if !read.plan.generate.is_empty() && read.secret.is_none() {
        events.push(Event {
            warning: false,
            reason: EventReason::KeysGenerated,
            message: format!(
                "generated {bits}-bit DKIM keys for anypost1 and anypost2 in Secret {secret}"
            ),
        });
    }
    events
}

/// In steady state the watch cache answers. It may lag the API, so it is used
/// only when it agrees with status and the plan writes nothing; anything that
/// would write (a new key, a rotation, a repair) re-reads the Secret live first.
fn from_cache(
    sd: &SendingDomain,
    ctx: &Context,
    name: &str,
    previous: &SendingDomainStatus,
    plan_for: &impl Fn(&StoredKeys) -> Plan,
) -> Option<Read> {
    let uid = sd.metadata.uid.as_deref().unwrap_or_default();
    let secret = ctx
        .cached_secret(&sd.namespace().unwrap_or_default(), name)
        .filter(|s| adoptable(s, uid).is_ok())?;
    let stored = StoredKeys::from_cache(secret.data.as_ref());
    let plan = plan_for(&stored);
    if !steady(&secret, &stored, &plan, previous.dkim.as_ref(), uid) {
        return None;
    }
    ctx.metrics
        .secret_reads
        .get_or_create(&SourceLabels { source: "cache" })
        .inc();
    Some(Read {
        secret: Some(secret),
        stored,
        plan,
    })
}

/// Reads the Secret from the API: what it holds, or why the operator may not
/// manage it (a Secret of that name it did not create).
async fn read_live(
    sd: &SendingDomain,
    ctx: &Context,
    name: &str,
    plan_for: &impl Fn(&StoredKeys) -> Plan,
) -> Result<Result<Read, String>, Error> {
    let ns = sd.namespace().unwrap_or_default();
    ctx.metrics
        .secret_reads
        .get_or_create(&SourceLabels { source: "api" })
        .inc();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadDkimSecret {
            secret: format!("{ns}/{name}"),
            source,
        })?;
    let uid = sd.metadata.uid.as_deref().unwrap_or_default();
    if let Some(s) = &secret
        && let Err(why) = adoptable(s, uid)
    {
        return Ok(Err(format!(
            "Secret {name} exists and {why}; the operator does not overwrite it. Delete it, or label it {MANAGED_BY_LABEL}={MANAGER} to import its keys (anypost1.key, anypost2.key as PKCS#8 PEM)."
        )));
    }
    let stored = StoredKeys::from_data(secret.as_ref().and_then(|s| s.data.as_ref()));
    for (sel, why) in &stored.invalid {
        tracing::warn!(namespace = %ns, name = %sd.name_any(), selector = %sel, error = %why, "stored DKIM key is unreadable; it will be replaced");
    }
    let plan = plan_for(&stored);
    Ok(Ok(Read {
        secret: secret.map(Arc::new),
        stored,
        plan,
    }))
}

impl Keys {
    /// Publishes the Events about the keys (after status carries them).
    pub(super) async fn tell(&self, sd: &SendingDomain, ctx: &Context) {
        for e in &self.events {
            ctx.event(sd, e).await;
        }
    }

    /// The public keys, every selector's.
    pub(super) fn public(&self) -> BySelector<String> {
        self.keys.clone().map(|k| k.public_key)
    }
}

/// Fault injection for crash-safety tests: with `ANYPOST_CRASH_AFTER=<point>` the
/// process dies right after that write, as if the node had failed there. Compiled
/// only into test builds (debug builds, or the `crash-points` feature): a release
/// binary has no way to be told to exit.
#[cfg(any(debug_assertions, feature = "crash-points"))]
fn crash_point(point: &str) {
    if std::env::var("ANYPOST_CRASH_AFTER").is_ok_and(|p| p == point) {
        tracing::error!(point, "ANYPOST_CRASH_AFTER: exiting on purpose");
        std::process::exit(86);
    }
}

#[cfg(not(any(debug_assertions, feature = "crash-points")))]
fn crash_point(_point: &str) {}
