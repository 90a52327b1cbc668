//! The controller's view of the rfc2136 backend, shared with the sync loop.

use super::Error;
use super::config::Rfc2136Config;
use crate::core::naming::normalize;
use crate::core::ports::{Published, Publisher};
use crate::core::vocab::Reason;
use crate::core::zone::{Zone, serves};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct PublisherState {
    /// The zone on the server after the last successful sync.
    synced: Option<Arc<Zone>>,
    /// The last sync's error, while syncs fail.
    failure: Option<String>,
}

/// The controller's view of the rfc2136 backend, shared with the sync loop: a
/// domain's records are published when the last successful sync left them on
/// the server.
///
/// A failing sync changes nothing about that: an outage of the server (or of
/// the way to it) is reported once, by the sync loop (log, metrics, alert), and
/// only a domain whose records the last successful sync showed absent turns
/// `RecordsPublished=False` (reason `SyncFailed`, with the error). Before the
/// first successful read (a start during an outage), nothing is known, and what
/// each status reported stands.
#[derive(Clone)]
pub struct Rfc2136Publisher {
    zone: String,
    server: SocketAddr,
    state: Arc<Mutex<PublisherState>>,
}

impl Rfc2136Publisher {
    pub fn new(zone: &str, cfg: &Rfc2136Config) -> Rfc2136Publisher {
        Rfc2136Publisher {
            zone: normalize(zone),
            server: cfg.server,
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PublisherState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a successful sync: the server holds `zone`.
    pub fn succeeded(&self, zone: Zone) {
        let mut s = self.state();
        s.synced = Some(Arc::new(zone));
        s.failure = None;
    }

    /// Records a failed sync.
    pub fn failed(&self, error: &Error) {
        self.state().failure = Some(error.to_string());
    }

    /// The error of the last sync, while syncs fail.
    pub fn last_error(&self) -> Option<String> {
        self.state().failure.clone()
    }

    /// Whether a sync has succeeded.
    pub fn is_synced(&self) -> bool {
        self.state().synced.is_some()
    }

    /// Whether the last successful sync left nothing at or below `<token>.<zone>`
    /// (false before the first sync: nothing is known yet). A finalizer waits for
    /// this before letting a deleted SendingDomain go.
    pub fn absent(&self, token: &str) -> bool {
        let Some(zone) = self.state().synced.clone() else {
            return false;
        };
        let base = format!("{token}.{}", self.zone);
        !zone.name_exists(&base)
    }
}

impl Publisher for Rfc2136Publisher {
    fn external(&self) -> bool {
        true
    }

    fn absent(&self, token: &str) -> bool {
        Rfc2136Publisher::absent(self, token)
    }

    fn published(&self, token: &str, public_keys: &[&str]) -> Published {
        let (synced, failure) = {
            let s = self.state();
            (s.synced.clone(), s.failure.clone())
        };
        let Some(zone) = synced else {
            let waiting = format!(
                "waiting for the first read of zone {} from {}",
                self.zone, self.server
            );
            return match failure {
                Some(e) => Published::Unknown {
                    reason: Reason::SyncFailed,
                    message: format!("{waiting}: {e}; retrying with backoff"),
                },
                None => Published::Unknown {
                    reason: Reason::Publishing,
                    message: waiting,
                },
            };
        };
        if serves(&zone, token, public_keys) {
            return Published::Yes;
        }
        match failure {
            Some(error) => Published::No {
                reason: Reason::SyncFailed,
                message: format!(
                    "the records at {token}.{} are not on the server yet: {error}; retrying with backoff",
                    self.zone
                ),
            },
            None => Published::No {
                reason: Reason::Publishing,
                message: format!(
                    "the next sync to {} publishes the records at {token}.{}",
                    self.server, self.zone
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zone::desired_zone;
    use crate::core::zone::fixtures::{cfg, domain};

    const T1: &str = "abcdefghijklmnop";

    fn test_config() -> (tempfile::TempDir, Rfc2136Config) {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "c2VjcmV0").unwrap();
        let c = Rfc2136Config::new(&super::super::Rfc2136Settings {
            server: Some("127.0.0.1:5300".parse().unwrap()),
            key_name: Some("anypost-key".into()),
            secret_file: Some(secret),
            algorithm: "hmac-sha256".into(),
            resync: std::time::Duration::from_secs(300),
        })
        .unwrap();
        (dir, c)
    }

    fn refused() -> Error {
        Error::Axfr {
            zone: "anypost.test".into(),
            server: "127.0.0.1:5300".parse().unwrap(),
            key: "anypost-key".into(),
            reason: "connecting: Connection refused".into(),
        }
    }

    fn no(p: &Rfc2136Publisher, token: &str, keys: &[&str]) -> (Reason, String) {
        match p.published(token, keys) {
            Published::No { reason, message } => (reason, message),
            other => panic!("expected No, got {other:?}"),
        }
    }

    #[test]
    fn published_follows_the_last_sync() {
        let (_dir, rc) = test_config();
        let c = cfg();
        let p = Rfc2136Publisher::new(&c.zone, &rc);
        let keys = ["QUJD", "REVG"];
        // Before the first read nothing is known: status stands.
        match p.published(T1, &keys) {
            Published::Unknown { message, .. } => assert!(
                message.contains("first read") && message.contains("127.0.0.1:5300"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(!p.absent(T1));

        p.succeeded(c.apex_zone());
        assert_eq!(no(&p, T1, &keys).0, Reason::Publishing);
        assert!(p.absent(T1));

        let d = domain(
            "a",
            "example.com",
            T1,
            &[("anypost1", "QUJD"), ("anypost2", "REVG")],
            false,
            1,
        );
        p.succeeded(desired_zone(
            &c,
            &crate::core::trust::Trust::as_written(),
            &[d],
        ));
        assert_eq!(p.published(T1, &keys), Published::Yes);
        assert!(!p.absent(T1));
        assert!(p.absent("qrstuvwxyz234567"));
        // A key the server does not have yet.
        let other = ["QUJD", "WFla"];
        assert_eq!(no(&p, T1, &other).0, Reason::Publishing);
        p.succeeded(desired_zone(
            &c,
            &crate::core::trust::Trust::as_written(),
            &[] as &[crate::core::api::SendingDomain],
        ));
        assert!(p.last_error().is_none());
        assert!(p.absent(T1));
    }

    /// An outage of the server is not news for every domain: records the last
    /// good sync left there are still published; only those it showed absent
    /// report the failure.
    #[test]
    fn a_failing_sync_flips_only_domains_whose_records_were_absent() {
        let (_dir, rc) = test_config();
        let c = cfg();
        let p = Rfc2136Publisher::new(&c.zone, &rc);
        let keys = ["QUJD", "REVG"];
        let d = domain(
            "a",
            "example.com",
            T1,
            &[("anypost1", "QUJD"), ("anypost2", "REVG")],
            false,
            1,
        );
        p.succeeded(desired_zone(
            &c,
            &crate::core::trust::Trust::as_written(),
            &[d],
        ));
        p.failed(&refused());
        assert_eq!(p.published(T1, &keys), Published::Yes);
        for (token, keys) in [(T1, &["QUJD", "WFla"]), ("qrstuvwxyz234567", &keys)] {
            let (reason, message) = no(&p, token, keys);
            assert_eq!(reason, Reason::SyncFailed);
            assert!(
                message.contains("127.0.0.1:5300") && message.contains("TSIG key anypost-key"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_start_during_an_outage_knows_nothing_and_says_why() {
        let (_dir, rc) = test_config();
        let p = Rfc2136Publisher::new(&cfg().zone, &rc);
        p.failed(&refused());
        match p.published(T1, &["QUJD"]) {
            Published::Unknown { reason, message } => {
                assert_eq!(reason, Reason::SyncFailed);
                assert!(message.contains("Connection refused"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
