//! Leader election with a coordination.k8s.io Lease, as client-go's leaderelection
//! does it: every replica serves DNS, one writes.
//!
//! - **Expiry is judged by this replica's own clock.** A replica never compares
//!   the holder's `renewTime` with its local time (clocks differ between nodes);
//!   it notes *when it saw* the Lease change (its resourceVersion or record), and
//!   takes over only once the Lease has stayed unchanged for the holder's
//!   `leaseDurationSeconds` since then.
//! - **The holder stops acting at its renew deadline.** Each successful renewal
//!   allows writes until the moment the renewal was sent plus the renew deadline
//!   (shorter than the lease duration); a renewal that fails, hangs or is slow
//!   does not extend it, and every attempt is cut off at the deadline rather
//!   than left to the client's retries. Once the deadline passes the
//!   [`LeaderGuard`] refuses every write and the controller term ends, before any
//!   other replica can have taken over.
//!
//! Sharded installations (several operators, each with its own `--selector`) each
//! elect their own leader with their own Lease: see [`lease_name`].

use super::fence::LeaderGuard;
use crate::core::config::FieldError;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};

/// Name of the Lease in the operator's namespace, without a shard.
pub const LEASE_NAME: &str = "anypost-operator-leader";

/// The Lease of a shard: `anypost-operator-leader-<shard>` with a shard name;
/// else, for an installation limited by a label selector,
/// `anypost-operator-leader-<hash of the selector>`, so that operators with
/// different selectors in one namespace each elect their own leader; else
/// [`LEASE_NAME`].
pub fn lease_name(shard: Option<&str>, selector: Option<&str>) -> String {
    use sha2::Digest;
    match (shard, selector) {
        (Some(s), _) => format!("{LEASE_NAME}-{s}"),
        (None, Some(sel)) => {
            let digest = sha2::Sha256::digest(sel.trim().as_bytes());
            let hash = data_encoding::BASE32_NOPAD
                .encode(&digest)
                .to_ascii_lowercase();
            format!("{LEASE_NAME}-{}", &hash[..10])
        }
        (None, None) => LEASE_NAME.to_string(),
    }
}

/// The election's clock, as client-go names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease stays valid without renewal; others wait this long,
    /// measured from when they saw it change, before taking over.
    pub lease_duration: Duration,
    /// How long the holder keeps acting after its last successful renewal.
    pub renew_deadline: Duration,
    /// How often the holder renews and the others try to acquire.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTimings {
    /// Checked timings: `retry_period < renew_deadline < lease_duration`, whole
    /// seconds for the lease duration (the Lease stores seconds).
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<LeaseTimings, FieldError> {
        let text = |d: Duration| crate::core::duration::format(d);
        if lease_duration.subsec_nanos() != 0 || lease_duration < Duration::from_secs(1) {
            let why = "must be a whole number of seconds, at least 1s";
            return Err(FieldError::new("lease_duration", text(lease_duration), why));
        }
        if lease_duration.as_secs() > i32::MAX as u64 {
            return Err(FieldError::new(
                "lease_duration",
                text(lease_duration),
                "too long",
            ));
        }
        if renew_deadline.is_zero() || renew_deadline >= lease_duration {
            let why = "must be longer than 0s and shorter than the lease duration";
            return Err(FieldError::new("renew_deadline", text(renew_deadline), why));
        }
        if retry_period.is_zero() || retry_period >= renew_deadline {
            let why = "must be longer than 0s and shorter than the renew deadline";
            return Err(FieldError::new("retry_period", text(retry_period), why));
        }
        Ok(LeaseTimings {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }
}

/// What this replica last saw of the Lease, and when it saw it change.
#[derive(Debug, Clone)]
struct Observed {
    spec: LeaseSpec,
    resource_version: Option<String>,
    at: Instant,
}

impl Observed {
    /// Whether the holder's lease has run out by this replica's clock: unchanged
    /// for the lease's duration since this replica saw it change.
    fn expired(&self, now: Instant, default: Duration) -> bool {
        let duration = self
            .spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(default, Duration::from_secs);
        now.saturating_duration_since(self.at) >= duration
    }
}

/// What this replica knows of the Lease after seeing `lease` at `now`: a change
/// of its record or resourceVersion restarts its expiry clock.
fn observe(previous: Option<Observed>, lease: &Lease, now: Instant) -> Observed {
    let spec = lease.spec.clone().unwrap_or_default();
    let resource_version = lease.metadata.resource_version.clone();
    match previous {
        Some(p) if p.spec == spec && p.resource_version == resource_version => p,
        _ => Observed {
            spec,
            resource_version,
            at: now,
        },
    }
}

/// The record that takes or keeps the lease for `identity`, or `None` when
/// another replica holds it and it has not expired.
fn claim(
    spec: &LeaseSpec,
    identity: &str,
    expired: bool,
    now: Timestamp,
    duration: Duration,
) -> Option<LeaseSpec> {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let transitions = spec.lease_transitions.unwrap_or(0);
    let (acquired, transitions) = if holder == identity {
        (spec.acquire_time.clone(), transitions)
    } else if holder.is_empty() || expired {
        (None, transitions.saturating_add(1))
    } else {
        return None;
    };
    Some(LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    })
}

/// How one round of the election went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// This replica holds the Lease (acquired or renewed).
    Leading,
    /// Another replica holds it.
    Following,
    /// Someone wrote the Lease between our read and our write: try again.
    Conflict,
}

/// One replica's side of the election for one Lease.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timings: LeaseTimings,
    observed: Option<Observed>,
}

impl Elector {
    /// `client` should not retry by itself (the election has its own rhythm and
    /// deadline) and must not be fenced.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: LeaseTimings,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            timings,
            observed: None,
        }
    }

    /// Notes the Lease as read or written.
    fn observe(&mut self, lease: &Lease, now: Instant) {
        self.observed = Some(observe(self.observed.take(), lease, now));
    }

    /// Reads the Lease and takes or renews it when this replica may.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Round, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return self.create().await;
        };
        self.observe(&lease, Instant::now());
        let observed = self.observed.as_ref().expect("just observed");
        let expired = observed.expired(Instant::now(), self.timings.lease_duration);
        let Some(spec) = claim(
            &observed.spec,
            &self.identity,
            expired,
            Timestamp::now(),
            self.timings.lease_duration,
        ) else {
            return Ok(Round::Following);
        };
        lease.spec = Some(spec);
        // The write carries the resourceVersion read: refused if anyone wrote since.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written, Instant::now());
                Ok(Round::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Conflict),
            Err(e) => Err(e),
        }
    }

    async fn create(&mut self) -> Result<Round, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: claim(
                &LeaseSpec::default(),
                &self.identity,
                true,
                Timestamp::now(),
                self.timings.lease_duration,
            ),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(written) => {
                self.observe(&written, Instant::now());
                Ok(Round::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Conflict),
            Err(e) => Err(e),
        }
    }
}

/// Runs the election forever: extends `guard` after every successful renewal,
/// revokes it when another replica holds the Lease or the renew deadline passes.
pub async fn run(mut elector: Elector, guard: LeaderGuard) {
    let timings = elector.timings;
    loop {
        if let Some(stall) = stall_requested() {
            tokio::time::sleep(stall).await;
        }
        let sent = Instant::now();
        // A round never outlives the deadline it could extend (nor, while
        // following, a renew deadline): no client retries past it.
        let limit = guard
            .deadline()
            .map_or(timings.renew_deadline, |d| {
                d.saturating_duration_since(sent)
            })
            .max(Duration::from_millis(100));
        let round = tokio::time::timeout(limit, elector.try_acquire_or_renew()).await;
        let round =
            round.unwrap_or_else(|_| Err(kube::Error::Service("the Lease call timed out".into())));
        settle(&elector, &guard, round, sent + timings.renew_deadline);
        let pause = tokio::time::sleep(jittered(timings.retry_period, guard.deadline().is_some()));
        match guard.deadline() {
            Some(deadline) => tokio::select! {
                () = pause => {}
                () = tokio::time::sleep_until(deadline.into()) => step_down(&elector, &guard),
            },
            None => pause.await,
        }
    }
}

/// Fault injection for tests: when the file named by
/// `ANYPOST_ELECTOR_STALL_FILE` appears, holding a number of milliseconds, the
/// election stands still that long once (no renewal, no step-down), as a
/// replica starved of CPU does: the fence closes at the renew deadline while
/// the controller keeps running, and the next renewal opens it again. The file
/// is removed. Compiled only into test builds, like the crash points of reconcile.
#[cfg(any(debug_assertions, feature = "crash-points"))]
fn stall_requested() -> Option<Duration> {
    let path = std::env::var_os("ANYPOST_ELECTOR_STALL_FILE")?;
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    let ms: u64 = text
        .trim()
        .parse()
        .expect("ANYPOST_ELECTOR_STALL_FILE holds a number of milliseconds");
    tracing::warn!(
        ms,
        "ANYPOST_ELECTOR_STALL_FILE: the election stands still (no renewal, no step-down)"
    );
    Some(Duration::from_millis(ms))
}

#[cfg(not(any(debug_assertions, feature = "crash-points")))]
fn stall_requested() -> Option<Duration> {
    None
}

/// Acts on one round's result.
fn settle(
    elector: &Elector,
    guard: &LeaderGuard,
    round: Result<Round, kube::Error>,
    until: Instant,
) {
    let (lease, identity) = (&elector.name, &elector.identity);
    match round {
        Ok(Round::Leading) => {
            let was = guard.deadline().is_some();
            let term = guard.extend(until);
            if !was && until > Instant::now() {
                tracing::info!(%lease, %identity, term, "became the leader");
            }
        }
        Ok(Round::Following) => {
            if guard.deadline().is_some() {
                tracing::warn!(%lease, %identity, term = guard.term(), "lost the leader lease: another replica holds it");
            }
            guard.revoke();
        }
        Ok(Round::Conflict) => {
            tracing::debug!(%lease, "the Lease changed while it was renewed; retrying")
        }
        Err(error) => tracing::warn!(%error, %lease, "leader election round failed"),
    }
    if guard.deadline().is_some_and(|d| d <= Instant::now()) {
        step_down(elector, guard);
    }
}

/// The renew deadline passed without a renewal: stop acting.
fn step_down(elector: &Elector, guard: &LeaderGuard) {
    if guard.deadline().is_some() {
        tracing::warn!(
            lease = %elector.name,
            identity = %elector.identity,
            term = guard.term(),
            renew_deadline = ?elector.timings.renew_deadline,
            "stepping down: the Lease was not renewed within the renew deadline"
        );
        guard.revoke();
    }
}

/// The wait before the next round: the retry period for the holder; up to 20%
/// more, at random, for the others, so that standbys do not call in step.
fn jittered(period: Duration, leading: bool) -> Duration {
    if leading {
        return period;
    }
    let mut b = [0u8; 1];
    getrandom::fill(&mut b).unwrap_or(());
    period.mul_f64(1.0 + 0.2 * f64::from(b[0]) / 255.0)
}

/// Gives the lease up if this replica holds it, so that another takes over at
/// its next round instead of waiting for the lease to run out. Called on a
/// graceful shutdown, after the controller has stopped.
pub async fn release(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let Some(mut lease) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(false);
    }
    let now = MicroTime(Timestamp::now());
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    // Refused if someone else wrote it meanwhile: then it is not ours to release.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    fn observed(spec: LeaseSpec, rv: &str, at: Instant) -> Observed {
        Observed {
            spec,
            resource_version: Some(rv.into()),
            at,
        }
    }

    #[test]
    fn expiry_is_measured_from_when_this_replica_saw_the_change() {
        let t0 = Instant::now();
        // The holder's clock is an hour behind: its renewTime looks ancient, but
        // this replica only just saw the Lease change, so it is not expired.
        let skewed = Timestamp::now() - jiff::SignedDuration::from_hours(1);
        let o = observed(held_by("a", skewed), "1", t0);
        let d = Duration::from_secs(99);
        assert!(!o.expired(t0, d));
        assert!(!o.expired(t0 + Duration::from_secs(14), d));
        assert!(o.expired(t0 + Duration::from_secs(15), d));
        // A renewTime in the future does not extend it either.
        let ahead = Timestamp::now() + jiff::SignedDuration::from_hours(1);
        assert!(observed(held_by("a", ahead), "2", t0).expired(t0 + Duration::from_secs(15), d));
    }

    #[test]
    fn a_change_of_the_lease_restarts_its_clock() {
        let t0 = Instant::now();
        let mut lease = Lease {
            metadata: ObjectMeta {
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: Some(held_by("a", Timestamp::now())),
        };
        let first = observe(None, &lease, t0);
        let same = observe(Some(first), &lease, t0 + Duration::from_secs(10));
        assert_eq!(same.at, t0);
        lease.metadata.resource_version = Some("2".into());
        let renewed = observe(Some(same), &lease, t0 + Duration::from_secs(10));
        assert_eq!(renewed.at, t0 + Duration::from_secs(10));
    }

    #[test]
    fn claims_follow_holder_and_expiry() {
        let now = Timestamp::now();
        let d = Duration::from_secs(15);
        let other = held_by("b", now);
        assert_eq!(claim(&other, "a", false, now, d), None);
        let taken = claim(&other, "a", true, now, d).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let mine = held_by("a", now - jiff::SignedDuration::from_secs(5));
        let renewed = claim(&mine, "a", false, now, d).unwrap();
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, mine.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));
        let released = LeaseSpec::default();
        assert!(claim(&released, "a", false, now, d).is_some());
    }

    #[test]
    fn timings_must_nest() {
        let s = Duration::from_secs;
        assert!(LeaseTimings::new(s(15), s(10), s(2)).is_ok());
        let LeaseTimings {
            lease_duration,
            renew_deadline,
            retry_period,
        } = LeaseTimings::default();
        assert!(LeaseTimings::new(lease_duration, renew_deadline, retry_period).is_ok());
        for (l, r, p, field) in [
            (s(10), s(10), s(2), "renew_deadline"),
            (s(10), s(0), s(2), "renew_deadline"),
            (s(10), s(5), s(5), "retry_period"),
            (s(10), s(5), s(0), "retry_period"),
            (
                Duration::from_millis(1500),
                s(1),
                Duration::from_millis(100),
                "lease_duration",
            ),
            (s(0), s(0), s(0), "lease_duration"),
        ] {
            assert_eq!(
                LeaseTimings::new(l, r, p).unwrap_err().field,
                field,
                "{l:?} {r:?} {p:?}"
            );
        }
    }

    #[test]
    fn each_shard_has_its_own_lease() {
        assert_eq!(lease_name(None, None), "anypost-operator-leader");
        assert_eq!(
            lease_name(Some("gold"), None),
            "anypost-operator-leader-gold"
        );
        assert_eq!(
            lease_name(Some("gold"), Some("tier=gold")),
            "anypost-operator-leader-gold"
        );
        let a = lease_name(None, Some("tier=gold"));
        let b = lease_name(None, Some("tier=silver"));
        assert_ne!(a, b);
        assert_eq!(a, lease_name(None, Some(" tier=gold ")));
        assert!(
            a.starts_with("anypost-operator-leader-") && a.len() == 34,
            "{a}"
        );
    }
}
