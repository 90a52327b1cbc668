//! What `/readyz` and `/healthz` report: named checks that the parts of the
//! process register, each saying what is wrong in words an operator can act on.
//!
//! Readiness is whether this replica should take traffic now (its zone is loaded
//! and current); liveness is whether it makes progress at all (a restart is the
//! only cure for a replica whose controller or zone builder hangs). A watch that
//! keeps failing makes a replica unready, never dead: restarting it would only
//! throw away the zone it still serves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A check: `Err` says what is wrong.
pub type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The process's readiness and liveness checks.
#[derive(Default)]
pub struct Health {
    ready: Mutex<Vec<(&'static str, Check)>>,
    live: Mutex<Vec<(&'static str, Check)>>,
    /// The process is stopping: it still answers DNS, but takes no new traffic.
    draining: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn failures(checks: &[(&'static str, Check)]) -> Result<(), Vec<String>> {
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|(name, check)| check().err().map(|why| format!("{name}: {why}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

impl Health {
    /// Adds a readiness check.
    pub fn ready_when(&self, name: &'static str, check: Check) {
        lock(&self.ready).push((name, check));
    }

    /// Adds a liveness check.
    pub fn live_when(&self, name: &'static str, check: Check) {
        lock(&self.live).push((name, check));
    }

    /// Stops taking traffic for good (shutdown).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready, or what stands in the way (every failing check).
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut result = failures(&lock(&self.ready));
        if self.draining.load(Ordering::Relaxed) {
            let mut why = result.err().unwrap_or_default();
            why.insert(0, "shutting down".to_string());
            result = Err(why);
        }
        result
    }

    /// Live, or what is stuck.
    pub fn liveness(&self) -> Result<(), Vec<String>> {
        failures(&lock(&self.live))
    }
}

/// A flag a check reads: set once something has happened (a zone loaded).
#[derive(Default)]
pub struct Flag(AtomicBool);

impl Flag {
    pub fn set(&self, value: bool) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A stream that fails and recovers (a watch): since when it has been failing,
/// with no success in between.
#[derive(Default)]
pub struct Failing(Mutex<Option<Instant>>);

impl Failing {
    /// The stream delivered something: it works.
    pub fn ok(&self) {
        *lock(&self.0) = None;
    }

    /// The stream failed; the first failure of a run is kept.
    pub fn failed(&self) {
        lock(&self.0).get_or_insert_with(Instant::now);
    }

    /// How long the stream has been failing, if it is.
    pub fn failing_for(&self) -> Option<Duration> {
        lock(&self.0).map(|since| since.elapsed())
    }

    /// A check that fails once the stream has failed for longer than `bound`.
    pub fn within(self: &std::sync::Arc<Self>, what: &'static str, bound: Duration) -> Check {
        let me = self.clone();
        Box::new(move || match me.failing_for() {
            Some(d) if d > bound => Err(format!(
                "{what} has failed for {}s without a success (bound {}s)",
                d.as_secs(),
                bound.as_secs()
            )),
            _ => Ok(()),
        })
    }
}

/// Whether work that was started gets finished: stalled when something is in
/// flight and nothing has started or finished for a while. Waiting in a queue
/// behind work that keeps finishing is progress; a hang is not.
#[derive(Default)]
pub struct Progress(Mutex<ProgressState>);

#[derive(Default)]
struct ProgressState {
    in_flight: usize,
    last: Option<Instant>,
}

/// One piece of work in flight; finished when dropped.
pub struct Working<'a>(&'a Progress);

impl Drop for Working<'_> {
    fn drop(&mut self) {
        let mut s = lock(&(self.0).0);
        s.in_flight = s.in_flight.saturating_sub(1);
        s.last = Some(Instant::now());
    }
}

impl Progress {
    /// Starts a piece of work.
    pub fn begin(&self) -> Working<'_> {
        let mut s = lock(&self.0);
        if s.in_flight == 0 {
            s.last = Some(Instant::now());
        }
        s.in_flight += 1;
        Working(self)
    }

    /// How long work has been in flight with nothing finishing.
    pub fn stalled_for(&self) -> Option<Duration> {
        let s = lock(&self.0);
        match (s.in_flight, s.last) {
            (0, _) | (_, None) => None,
            (_, Some(last)) => Some(last.elapsed()),
        }
    }

    /// A check that fails once work has been stalled for longer than `bound`.
    pub fn within(self: &std::sync::Arc<Self>, what: &'static str, bound: Duration) -> Check {
        let me = self.clone();
        Box::new(move || match me.stalled_for() {
            Some(d) if d > bound => Err(format!(
                "{what}: nothing finished for {}s while work is in flight (bound {}s)",
                d.as_secs(),
                bound.as_secs()
            )),
            _ => Ok(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_failing_check_is_named_and_draining_comes_first() {
        let h = Health::default();
        let loaded = Arc::new(Flag::default());
        let l = loaded.clone();
        h.ready_when(
            "zone",
            Box::new(move || l.get().then_some(()).ok_or("not loaded yet".into())),
        );
        h.ready_when("identity", Box::new(|| Ok(())));
        assert_eq!(h.readiness(), Err(vec!["zone: not loaded yet".to_string()]));
        loaded.set(true);
        assert_eq!(h.readiness(), Ok(()));
        h.drain();
        assert_eq!(h.readiness(), Err(vec!["shutting down".to_string()]));
        assert_eq!(h.liveness(), Ok(()));
    }

    #[test]
    fn a_stream_fails_the_check_only_after_failing_longer_than_the_bound() {
        let f = Arc::new(Failing::default());
        let check = f.within("the watch", Duration::from_millis(20));
        f.failed();
        assert!(check().is_ok(), "a fresh failure is within the bound");
        std::thread::sleep(Duration::from_millis(30));
        f.failed(); // a later failure does not restart the clock
        let err = check().unwrap_err();
        assert!(err.starts_with("the watch has failed for"), "{err}");
        f.ok();
        assert!(check().is_ok());
        assert_eq!(f.failing_for(), None);
    }

    #[test]
    fn work_is_stalled_only_when_nothing_finishes() {
        let p = Arc::new(Progress::default());
        let check = p.within("reconciles", Duration::from_millis(20));
        assert_eq!(p.stalled_for(), None, "nothing in flight");
        let hung = p.begin();
        std::thread::sleep(Duration::from_millis(30));
        assert!(check().is_err(), "one piece of work hangs");
        // Other work finishing is progress: the queue moves.
        drop(p.begin());
        assert!(check().is_ok());
        drop(hung);
        assert_eq!(p.stalled_for(), None);
    }
}
