//! Metrics of the sync loop.

use super::Error;
use super::sync::SyncReport;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct SyncLabels {
    /// ok, or the error's category (Rfc2136Axfr, Rfc2136Update, Rfc2136Config).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ChangeLabels {
    /// create, replace or delete (of one RRset).
    op: &'static str,
}

/// Metrics of the sync loop; register them with [`SyncMetrics::register`].
pub struct SyncMetrics {
    syncs: Family<SyncLabels, Counter>,
    changes: Family<ChangeLabels, Counter>,
    duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    pub(super) failing: Gauge,
    deletes_refused: Gauge,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            syncs: Family::default(),
            changes: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            last_success: Gauge::default(),
            failing: Gauge::default(),
            deletes_refused: Gauge::default(),
        }
    }
}

impl SyncMetrics {
    /// Adds the metrics to `registry` (names prefixed `rfc2136_`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "rfc2136_syncs",
            "Syncs of the zone to the server (by the leader), by outcome",
            self.syncs.clone(),
        );
        registry.register(
            "rfc2136_changes",
            "RRset changes the server accepted, by operation",
            self.changes.clone(),
        );
        registry.register(
            "rfc2136_sync_duration_seconds",
            "Time per sync: zone transfer, plan and UPDATEs",
            self.duration.clone(),
        );
        registry.register(
            "rfc2136_last_success_timestamp_seconds",
            "Unix time of the last successful sync or read of the zone",
            self.last_success.clone(),
        );
        registry.register(
            "rfc2136_failing",
            "1 while the last attempt to sync or read the zone failed",
            self.failing.clone(),
        );
        registry.register(
            "rfc2136_deletes_refused",
            "Record sets the last sync would have deleted, had the delete guard not refused it (0 once a sync succeeds)",
            self.deletes_refused.clone(),
        );
    }

    pub(super) fn succeeded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
        self.failing.set(0);
    }

    pub(super) fn synced(&self, report: &SyncReport, took: Duration) {
        self.succeeded();
        self.deletes_refused.set(0);
        self.syncs
            .get_or_create(&SyncLabels { outcome: "ok" })
            .inc();
        self.duration.observe(took.as_secs_f64());
        for (op, n) in [
            ("create", report.created),
            ("replace", report.replaced),
            ("delete", report.deleted),
        ] {
            self.changes
                .get_or_create(&ChangeLabels { op })
                .inc_by(n as u64);
        }
    }

    pub(super) fn sync_failed(&self, error: &Error, took: Duration) {
        self.failing.set(1);
        if let Error::DeleteRefused { deletes, .. } = error {
            self.deletes_refused.set(*deletes as i64);
        }
        self.syncs
            .get_or_create(&SyncLabels {
                outcome: error.category(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }
}
