//! Runs the controller while this replica leads: one kube-runtime controller per
//! leadership term, fed by the shared SendingDomain cache and by a watch of the
//! operator's own DKIM Secrets; and the count of SendingDomains by Ready.
//!
//! The Secret watch keeps only the Secrets the operator owns: labelled, named
//! `<name>-dkim` and controlled by a SendingDomain this installation manages.
//! Anyone can label a Secret; nothing else is ever held in memory (a Secret the
//! operator may import is read live when its SendingDomain asks for it).

use super::reconcile::reconcile;
use super::{Context, Error};
use crate::adapters::kube::Domains;
use crate::adapters::kube::identity::TrustState;
use crate::adapters::kube::writes::WriteError;
use crate::core::api::{GROUP, MANAGED_BY_LABEL, MANAGER, SendingDomain};
use crate::core::dkim;
use crate::core::status::conditions;
use crate::core::vocab::{ConditionStatus, ConditionType, Reason};
use crate::telemetry::{ErrorLabels, Metrics, ReadyLabels};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The wait after a first failed reconcile; it doubles with each failure in a
/// row, up to [`ERROR_REQUEUE_MAX`], and is jittered (see [`retry_after`]).
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// The longest wait between failed reconciles of one SendingDomain: short
/// enough that domains failed by an API outage are back within a minute of its
/// end (the jitter still spreads them).
pub const ERROR_REQUEUE_MAX: Duration = Duration::from_secs(60);
/// The wait before trying again an object whose write the fence refused: about
/// the election's retry period, by which a late renewal has opened it again.
pub const NOT_LEADER_RETRY: Duration = Duration::from_secs(1);
/// How often `anypost_sendingdomains` is recounted.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(10);

/// Runs a controller during each term this replica leads (all the time when
/// `leader` never changes from true), until the leader channel closes.
pub async fn run(ctx: Arc<Context>, mut leader: watch::Receiver<bool>) {
    loop {
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return;
            }
        }
        ctx.metrics.leader.set(1);
        tracing::info!("starting the controller");
        tokio::select! {
            () = term(ctx.clone()) => {}
            () = async {
                while *leader.borrow_and_update() {
                    if leader.changed().await.is_err() {
                        futures::future::pending::<()>().await;
                    }
                }
            } => tracing::warn!("stopped the controller: no longer the leader"),
        }
        ctx.metrics.leader.set(0);
        // Only the leader counts SendingDomains, so a sum over replicas is right.
        ctx.metrics.domains.clear();
    }
}

/// One leadership term: a controller reconciling every SendingDomain once, then
/// each one that changes (or whose Secret or rival claim changes), and all of
/// them again whenever what may be believed changes (the identity key, the
/// claim policy).
async fn term(ctx: Arc<Context>) {
    // Claims are judged against the cache: never before it holds a full list;
    // and nothing is judged before the identity Secret has been.
    let mut trust = ctx.trust.clone();
    let judged = trust
        .wait_for(|t| !matches!(t, TrustState::Starting))
        .await
        .is_ok();
    trust.mark_unchanged();
    if !judged || !ctx.domains.ready().await {
        return;
    }
    // The operator's own Secrets, watched whole (not just metadata) so that a
    // reconcile in steady state reads its keys from memory instead of the API.
    let secrets: Api<Secret> = Api::all(ctx.client.clone());
    let (secret_store, secret_writer) = reflector::store();
    let domains = ctx.domains.clone();
    let secret_events = watcher::watcher(
        secrets,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
    )
    .default_backoff()
    .map_ok(move |event| keep_owned(&domains, event))
    .reflect(secret_writer)
    .touched_objects();
    ctx.use_secrets(secret_store.clone());
    let store = ctx.domains.store();
    let everything_again =
        futures::stream::once(std::future::ready(()))
            .chain(futures::stream::unfold(trust, |mut t| async move {
                t.changed().await.ok().map(|()| ((), t))
            }));
    let controller = Controller::for_shared_stream(ctx.domains.subscribe(), store.clone())
        .owns_stream(secret_events)
        .reconcile_all_on(everything_again)
        .run(tracked, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    tokio::select! {
        () = controller => {}
        () = count_domains(store, ctx.clone()) => {}
        () = count_secrets(secret_store, ctx.metrics.clone()) => {}
    }
}

/// The watch event with every Secret the operator does not own turned into its
/// deletion: it never enters the cache, and one that stops being owned leaves it.
/// An owned one enters it compacted (`compact_for_cache`: its keys parsed once,
/// here, and kept as stand-ins).
fn keep_owned(domains: &Domains, event: watcher::Event<Secret>) -> watcher::Event<Secret> {
    use watcher::Event::{Apply, Delete, InitApply};
    match event {
        Apply(s) | InitApply(s) if !owned_dkim_secret(domains, &s) => Delete(s),
        Apply(mut s) => {
            dkim::keys::compact_for_cache(&mut s);
            Apply(s)
        }
        InitApply(mut s) => {
            dkim::keys::compact_for_cache(&mut s);
            InitApply(s)
        }
        other => other,
    }
}

/// Whether `secret` is the DKIM Secret of a SendingDomain this installation
/// manages: named after it, and controlled by it (the same uid).
fn owned_dkim_secret(domains: &Domains, secret: &Secret) -> bool {
    let ns = secret.namespace().unwrap_or_default();
    secret.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == "SendingDomain"
            && o.api_version.starts_with(&format!("{GROUP}/"))
            && secret.name_any() == dkim::secret_name(&o.name)
            && domains
                .store()
                .get(&ObjectRef::new(&o.name).within(&ns))
                .is_some_and(|d| d.metadata.uid.as_deref() == Some(o.uid.as_str()))
    })
}

/// Keeps `anypost_dkim_secrets_cached` up to date.
async fn count_secrets(store: Store<Secret>, metrics: Arc<Metrics>) {
    loop {
        metrics.secrets_cached.set(store.len() as i64);
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
}

fn error_policy(sd: Arc<SendingDomain>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            category: err.category(),
        })
        .inc();
    if let Error::Write(WriteError::NotLeader { .. }) = err {
        // The fence closed: the term is ending, and the election stops this
        // controller at once; or the renewal came late (a starved replica, a
        // slow apiserver) and the next one opens the fence again while this
        // controller keeps running. Then the object must be tried again: left
        // to wait for a change of its own, it would never be reconciled.
        tracing::info!(
            namespace = %sd.namespace().unwrap_or_default(),
            name = %sd.name_any(),
            "write refused: not the leader (or past the renew deadline); trying again shortly"
        );
        return Action::requeue(NOT_LEADER_RETRY);
    }
    if let Error::Write(WriteError::Superseded { .. }) = err {
        // Not a failure: the object that replaced it has its own reconcile.
        tracing::info!(
            namespace = %sd.namespace().unwrap_or_default(),
            name = %sd.name_any(),
            error = %err,
            "write refused: the object changed identity"
        );
        return Action::await_change();
    }
    tracing::warn!(
        namespace = %sd.namespace().unwrap_or_default(),
        name = %sd.name_any(),
        category = err.category(),
        error = %err,
        "reconcile failed"
    );
    Action::requeue(retry_after(ctx.failed(&sd), random_unit()))
}

/// A reconcile in its turn, counted for /healthz, its failures in a row for the
/// back-off; after a start, once the DKIM Secret cache is filled. Until its
/// turn comes it holds only this small future and the object's reference: the
/// reconcile's own state (several KB) is made then, on the heap, and the object
/// is read from the cache then.
///
/// The object handed over when the reconcile was queued may be minutes old by
/// its turn (thousands of domains queue after a start), and may predate this
/// controller's own last status write by longer than the write is remembered
/// ([`crate::controller::own_writes`]): acting on it checked domains a second
/// time. Holding it also kept a second copy of every queued object alive once
/// the cache had a newer one.
async fn tracked(sd: Arc<SendingDomain>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*sd);
    let namespace = sd.namespace().unwrap_or_default();
    drop(sd);
    ctx.secrets_loaded().await;
    let _turn = ctx.reconcile_turn(&namespace).await;
    let Some(sd) = latest(&ctx.domains.store(), &key) else {
        // Gone from the cache meanwhile: deleted, nothing left to do.
        return Ok(Action::await_change());
    };
    let _working = ctx.progress.begin();
    let result = Box::pin(reconcile(sd.clone(), ctx.clone())).await;
    if result.is_ok() {
        ctx.succeeded(&sd);
    }
    result
}

/// The object `key` names as the cache holds it now.
fn latest(
    store: &Store<SendingDomain>,
    key: &ObjectRef<SendingDomain>,
) -> Option<Arc<SendingDomain>> {
    store.get(key)
}

/// The wait before retrying a SendingDomain whose reconcile failed `failures`
/// times in a row: [`ERROR_REQUEUE`] doubled per failure up to
/// [`ERROR_REQUEUE_MAX`], then between half of that and all of it (`jitter`,
/// 0 to 1), so that many domains failing together (an API or resolver outage)
/// do not all come back in the same second.
pub fn retry_after(failures: u32, jitter: f64) -> Duration {
    let doubled = ERROR_REQUEUE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled
        .min(ERROR_REQUEUE_MAX)
        .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A random number from 0 to 1.
fn random_unit() -> f64 {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).unwrap_or(());
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// Keeps `anypost_sendingdomains` up to date from the cache (and drops the
/// failure counts of SendingDomains that are gone).
async fn count_domains(store: Store<SendingDomain>, ctx: Arc<Context>) {
    let metrics = &ctx.metrics;
    let mut shown: Vec<ReadyLabels> = Vec::new();
    loop {
        ctx.forget_gone(&store);
        let counts = count_by_ready(&store.state());
        for gone in shown.iter().filter(|l| !counts.contains_key(*l)) {
            metrics.domains.remove(gone);
        }
        for (labels, n) in &counts {
            metrics.domains.get_or_create(labels).set(*n);
        }
        shown = counts.into_keys().collect();
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
}

/// SendingDomains counted by their Ready condition's status and reason. Only the
/// operator's own vocabulary becomes a label value: whoever can write status
/// cannot grow the label set.
pub fn count_by_ready(domains: &[Arc<SendingDomain>]) -> HashMap<ReadyLabels, i64> {
    let mut counts = HashMap::new();
    for d in domains {
        let ready = d
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, ConditionType::Ready));
        let labels = match ready {
            Some(c) => ReadyLabels {
                ready: ConditionStatus::parse(&c.status)
                    .unwrap_or(ConditionStatus::Unknown)
                    .as_str(),
                reason: Reason::parse(&c.reason).map_or("Other", Reason::as_str),
            },
            None => ReadyLabels {
                ready: ConditionStatus::Unknown.as_str(),
                reason: "NotReconciled",
            },
        };
        *counts.entry(labels).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_version(version: &str) -> SendingDomain {
        let mut sd = (*domain(None)).clone();
        sd.metadata.namespace = Some("acme".into());
        sd.metadata.uid = Some("u1".into());
        sd.metadata.resource_version = Some(version.into());
        sd
    }

    #[test]
    fn a_queued_reconcile_acts_on_the_object_the_cache_holds_at_its_turn() {
        let (store, mut writer) = reflector::store::<SendingDomain>();
        let queued = at_version("1");
        writer.apply_watcher_event(&watcher::Event::Apply(queued.clone()));
        let key = ObjectRef::from_obj(&queued);
        // The controller's own status write arrives while the reconcile waits.
        writer.apply_watcher_event(&watcher::Event::Apply(at_version("2")));
        let now = latest(&store, &key).expect("still there");
        assert_eq!(now.metadata.resource_version.as_deref(), Some("2"));
        writer.apply_watcher_event(&watcher::Event::Delete(at_version("3")));
        assert!(latest(&store, &key).is_none(), "deleted meanwhile");
    }

    #[test]
    fn failed_reconciles_back_off_doubling_to_a_cap_with_jitter_below() {
        let s = Duration::from_secs;
        // No jitter drawn (1.0): the full wait.
        let full: Vec<Duration> = (1..=8).map(|n| retry_after(n, 1.0)).collect();
        assert_eq!(
            full,
            [s(5), s(10), s(20), s(40), s(60), s(60), s(60), s(60)]
        );
        // Jitter takes off up to half, never more, never adds.
        assert_eq!(retry_after(1, 0.0), Duration::from_millis(2500));
        assert_eq!(retry_after(3, 0.5), s(15));
        // Thousands of failures in a row neither overflow nor exceed the cap.
        assert_eq!(retry_after(u32::MAX, 1.0), s(60));
        assert_eq!(retry_after(0, 1.0), s(5));
    }
    use crate::core::api::{SendingDomainSpec, SendingDomainStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn domain(ready: Option<(&str, &str)>) -> Arc<SendingDomain> {
        let mut sd = SendingDomain::new(
            "d",
            SendingDomainSpec {
                domain: "example.com".into(),
                dkim: None,
                tracking: None,
            },
        );
        sd.status = ready.map(|(status, reason)| SendingDomainStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::now()),
            }],
            ..Default::default()
        });
        Arc::new(sd)
    }

    #[test]
    fn domains_are_counted_by_ready_status_and_reason() {
        let counts = count_by_ready(&[
            domain(Some(("True", "Verified"))),
            domain(Some(("True", "Verified"))),
            domain(Some(("False", "DomainConflict"))),
            domain(None),
            // Written by someone else: counted, but never as a label of its own.
            domain(Some(("Maybe", "Anything-at-all"))),
        ]);
        let n = |ready: &'static str, reason: &'static str| {
            counts.get(&ReadyLabels { ready, reason }).copied()
        };
        assert_eq!(n("True", "Verified"), Some(2));
        assert_eq!(n("False", "DomainConflict"), Some(1));
        assert_eq!(n("Unknown", "NotReconciled"), Some(1));
        assert_eq!(n("Unknown", "Other"), Some(1));
        assert_eq!(counts.len(), 4);
    }
}
