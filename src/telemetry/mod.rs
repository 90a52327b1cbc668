//! Logs, the metrics registry and the health checks: a leaf every layer above
//! the core may use.
//!
//! Metric labels are fixed vocabularies (error categories, outcomes), never object
//! names or error text, so label sets stay bounded however many domains there are.

pub mod health;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Instant;

/// Sets up `tracing` output.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,hickory=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// A fixed category from the controller's error enum.
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// cache (the operator's watch of its Secrets) or api (a live read).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// The Ready condition's status: True, False or Unknown.
    pub ready: &'static str,
    /// Its reason, e.g. Verified, GracePeriod, Pending, ApexCnameMissing,
    /// DomainConflict; NotReconciled before the first status, Other for a reason
    /// the operator does not write.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// verified, failing, transient.
    pub outcome: &'static str,
}

/// The operator's metrics.
pub struct Metrics {
    registry: std::sync::RwLock<Registry>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_seconds: Histogram,
    pub status_writes: Counter,
    pub secret_writes: Counter,
    pub secret_reads: Family<SourceLabels, Counter>,
    pub keys_generated: Counter,
    pub key_generation_seconds: Histogram,
    pub checks: Family<OutcomeLabels, Counter>,
    pub check_seconds: Histogram,
    pub leader: Gauge,
    pub domains: Family<ReadyLabels, Gauge>,
    /// 1 while the identity key is in doubt (see `adapters::kube::identity`).
    pub identity_mismatch: Gauge,
    /// 1 while the claim policy file does not parse (the last good one is used).
    pub policy_invalid: Gauge,
    /// SendingDomains whose status the zone does not believe.
    pub untrusted_statuses: Gauge,
    /// DKIM Secrets in the controller's cache.
    pub secrets_cached: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            status_writes: Counter::default(),
            secret_writes: Counter::default(),
            secret_reads: Family::default(),
            keys_generated: Counter::default(),
            key_generation_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            checks: Family::default(),
            check_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            leader: Gauge::default(),
            domains: Family::default(),
            identity_mismatch: Gauge::default(),
            policy_invalid: Gauge::default(),
            untrusted_statuses: Gauge::default(),
            secrets_cached: Gauge::default(),
            registry: std::sync::RwLock::new(Registry::with_prefix("anypost")),
        };
        m.register(|r| m.register_own(r));
        m
    }
}

impl Metrics {
    fn register_own(&self, r: &mut Registry) {
        r.register(
            "reconciles",
            "SendingDomain reconciles",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            self.reconcile_errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time per reconcile",
            self.reconcile_seconds.clone(),
        );
        r.register(
            "status_writes",
            "Status patches written",
            self.status_writes.clone(),
        );
        r.register(
            "secret_writes",
            "DKIM Secret writes",
            self.secret_writes.clone(),
        );
        r.register(
            "secret_reads",
            "DKIM Secret reads by reconcile, from the watch cache or the API",
            self.secret_reads.clone(),
        );
        r.register(
            "dkim_keys_generated",
            "DKIM keys generated",
            self.keys_generated.clone(),
        );
        r.register(
            "dkim_key_generation_seconds",
            "Time to generate one DKIM key",
            self.key_generation_seconds.clone(),
        );
        r.register(
            "verification_checks",
            "Verification checks by outcome",
            self.checks.clone(),
        );
        r.register(
            "verification_check_duration_seconds",
            "Time to check one domain's records",
            self.check_seconds.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            self.leader.clone(),
        );
        r.register(
            "sendingdomains",
            "SendingDomains by their Ready condition (status and reason); exported by the leader, refreshed every 10 s",
            self.domains.clone(),
        );
        r.register(
            "identity_mismatch",
            "1 while the identity key is in doubt: the identity Secret is missing or holds a key that made none of the SendingDomains' ids (nothing is reconciled, or served by a replica that starts), or it no longer holds the key in use",
            self.identity_mismatch.clone(),
        );
        r.register(
            "claim_policy_invalid",
            "1 while the claim policy file does not parse; the last good policy stays in use",
            self.policy_invalid.clone(),
        );
        r.register(
            "zone_untrusted_statuses",
            "SendingDomains whose status the zone does not believe (an id not their own, or no valid seal): not served",
            self.untrusted_statuses.clone(),
        );
        r.register(
            "dkim_secrets_cached",
            "DKIM Secrets in the controller's cache: only those owned by a SendingDomain it manages",
            self.secrets_cached.clone(),
        );
    }
}

/// Observes a histogram when dropped.
pub struct Timer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconcile and times it until the guard drops.
    pub fn reconcile_timer(&self) -> Timer<'_> {
        self.reconciles.inc();
        Timer {
            start: Instant::now(),
            histogram: &self.reconcile_seconds,
        }
    }

    /// Adds another subsystem's metrics (they get the `anypost_` prefix too).
    pub fn register(&self, add: impl FnOnce(&mut Registry)) {
        let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
        add(&mut registry);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}
