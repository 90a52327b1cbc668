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
        if let Some(error) = failure {
            return Published::No {
                reason: Reason::SyncFailed,
                message: format!("{error}; retrying with backoff"),
            };
        }
        match synced {
            Some(zone) if serves(&zone, token, public_keys) => Published::Yes,
            Some(_) => Published::No {
                reason: Reason::Publishing,
                message: format!(
                    "the next sync to {} publishes the records at {token}.{}",
                    self.server, self.zone
                ),
            },
            None => Published::No {
                reason: Reason::Publishing,
                message: format!(
                    "waiting for the first sync of zone {} to {}",
                    self.zone, self.server
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

    #[test]
    fn published_follows_the_last_sync() {
        let (_dir, rc) = test_config();
        let c = cfg();
        let p = Rfc2136Publisher::new(&c.zone, &rc);
        let keys = ["QUJD", "REVG"];
        let no = |p: &Rfc2136Publisher| match p.published(T1, &keys) {
            Published::No { reason, message } => (reason, message),
            Published::Yes => panic!("published"),
        };
        let (reason, message) = no(&p);
        assert_eq!(reason, Reason::Publishing);
        assert!(
            message.contains("first sync") && message.contains("127.0.0.1:5300"),
            "{message}"
        );
        assert!(!p.absent(T1));

        p.succeeded(c.apex_zone());
        assert_eq!(no(&p).0, Reason::Publishing);
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
        assert!(matches!(p.published(T1, &other), Published::No { .. }));

        let err = Error::Axfr {
            zone: c.zone.clone(),
            server: rc.server,
            key: rc.key_name.clone(),
            reason: "connecting: Connection refused".into(),
        };
        p.failed(&err);
        let (reason, message) = no(&p);
        assert_eq!(reason, Reason::SyncFailed);
        assert!(
            message.contains("127.0.0.1:5300") && message.contains("TSIG key anypost-key"),
            "{message}"
        );
        p.succeeded(desired_zone(
            &c,
            &crate::core::trust::Trust::as_written(),
            &[] as &[crate::core::api::SendingDomain],
        ));
        assert!(p.last_error().is_none());
        assert!(p.absent(T1));
    }
}
