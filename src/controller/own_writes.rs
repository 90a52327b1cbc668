//! The controller's own status writes, until its cache shows them.
//!
//! A reconcile acts on the object in the watch cache. Right after a status write
//! the cache may still hold the object as it was before: the write's watch event
//! has not arrived. A reconcile triggered in that moment (by the DKIM Secret the
//! same reconcile wrote, or a requeue) would build on the old status: take a
//! rotation it just recorded for one whose status write was lost and finish it
//! again, tell its Event twice, write a status already written. So each write
//! remembers the resourceVersion it was computed from, and a reconcile that finds
//! the object still at that version waits for the cache instead of acting.
//!
//! Only equality of versions is used (they are opaque). A write that changed
//! nothing leaves the version as it was and is not remembered; a remembered write
//! is forgotten once the cache shows any other version, or after [`PATIENCE`] (a
//! watch that stopped does not hold the domain forever).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a reconcile waits for the cache to show its own write.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Status writes not yet seen in the cache, by object uid.
#[derive(Default)]
pub struct OwnWrites {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// uid → (the resourceVersion the write was computed from, when written).
    by_uid: HashMap<String, (String, Instant)>,
    pruned: Option<Instant>,
}

impl OwnWrites {
    /// A status write of the object `uid` read at version `from` left it at
    /// version `to`.
    pub fn wrote(&self, uid: &str, from: &str, to: &str) {
        if from == to {
            return;
        }
        let now = Instant::now();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Objects deleted meanwhile are never reconciled again: drop what has
        // expired, at most once per PATIENCE.
        if p.pruned.is_none_or(|t| now.duration_since(t) > PATIENCE) {
            p.by_uid
                .retain(|_, (_, at)| now.duration_since(*at) < PATIENCE);
            p.pruned = Some(now);
        }
        p.by_uid.insert(uid.to_string(), (from.to_string(), now));
    }

    /// Whether the cache still shows object `uid` at a version this controller
    /// has since written over.
    pub fn behind(&self, uid: &str, version: &str) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.by_uid.get(uid) {
            None => false,
            Some((from, at)) if from == version && at.elapsed() < PATIENCE => true,
            Some((from, _)) => {
                if from == version {
                    tracing::warn!(
                        uid,
                        patience = ?PATIENCE,
                        "the SendingDomain watch has not shown this operator's last status write of the object; reconciling it as the cache has it"
                    );
                }
                p.by_uid.remove(uid);
                false
            }
        }
    }

    /// How many writes the cache has not shown yet (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_uid
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_waits_until_the_cache_moves_past_its_write() {
        let w = OwnWrites::default();
        w.wrote("u1", "100", "101");
        assert!(w.behind("u1", "100"), "the cache still shows version 100");
        assert!(w.behind("u1", "100"), "and keeps saying so until it moves");
        assert!(!w.behind("u1", "101"), "the write arrived");
        assert!(!w.behind("u1", "100"), "forgotten once seen");
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn any_other_version_counts_as_caught_up() {
        // Someone else wrote after us: versions are opaque, so any other than the
        // one the write was computed from ends the wait.
        let w = OwnWrites::default();
        w.wrote("u1", "100", "101");
        assert!(!w.behind("u1", "105"));
    }

    #[test]
    fn a_write_that_changed_nothing_is_not_waited_for() {
        let w = OwnWrites::default();
        w.wrote("u1", "100", "100");
        assert!(!w.behind("u1", "100"));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn other_objects_are_not_held() {
        let w = OwnWrites::default();
        w.wrote("u1", "100", "101");
        assert!(!w.behind("u2", "100"));
        assert!(w.behind("u1", "100"));
    }
}
