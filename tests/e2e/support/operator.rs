//! The operator binary as a child process, the way a Deployment would run it.

use super::{Cluster, cluster, eventually, random_suffix, target_dir};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `anypost-operator run <args>` against the dev cluster. Its stdout and stderr go
/// to one log file under `target/e2e-logs/`, kept across restarts and printed (the
/// tail) when the test fails. Killed when dropped.
pub struct Operator {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    kubeconfig: PathBuf,
}

impl Operator {
    /// Starts `anypost-operator run <args>`; `name` labels the log file.
    pub fn start(name: &str, args: &[&str]) -> Operator {
        Operator::start_with_env(name, args, &[])
    }

    /// Like [`Operator::start`], with extra environment variables.
    pub fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Operator {
        Operator::start_in(cluster(), name, args, env)
    }

    /// Like [`Operator::start_with_env`], against the control plane `cluster`
    /// (a private one).
    pub fn start_in(
        cluster: &Cluster,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let dir = target_dir().join("e2e-logs");
        std::fs::create_dir_all(&dir).expect("creating target/e2e-logs");
        let mut op = Operator {
            name: name.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path: dir.join(format!("operator-{name}-{}.log", random_suffix())),
            child: None,
            starts: 0,
            kubeconfig: cluster.kubeconfig.clone(),
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path.display()));
        self.starts += 1;
        writeln!(
            log,
            "===== start {} of operator {}: run {}",
            self.starts,
            self.name,
            self.args.join(" ")
        )
        .expect("writing the operator log");
        let stderr = log.try_clone().expect("cloning the log file handle");
        let child = Command::new(env!("CARGO_BIN_EXE_anypost-operator"))
            .arg("run")
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,anypost_operator=debug".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawning anypost-operator");
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL (no graceful shutdown, like a node dying)
    /// and reaps it. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
            if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log_path) {
                let _ = writeln!(log, "===== killed (SIGKILL) by the test");
            }
        }
    }

    /// Stops the process the way Kubernetes stops a pod: SIGTERM, then waits for
    /// it to exit (SIGKILL after `grace`). Returns whether it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + grace;
        let mut exited = false;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(
                log,
                "===== stopped (SIGTERM) by the test; exited by itself: {exited}"
            );
        }
        exited
    }

    /// Kills the process if it runs and starts it again with the same arguments;
    /// the log continues in the same file.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is still running (it may have exited on its own).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits until the process exits by itself and returns its exit status;
    /// panics (with the log) if it still runs after `timeout`.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let path = self.log_path.clone();
        let child = self.child.as_mut().expect("the operator was started");
        eventually(timeout, || {
            let status = child.try_wait();
            let path = path.clone();
            async move {
                match status {
                    Ok(Some(status)) => Ok(status),
                    Ok(None) => Err(format!("still running; log in {}", path.display())),
                    Err(e) => panic!("waiting for the operator: {e}"),
                }
            }
        })
        .await
    }

    /// Waits for the process to exit at the crash point `point` (the
    /// `ANYPOST_CRASH_AFTER` hook of debug builds): exit code 86 and the hook's
    /// log line naming `point`. Any other exit fails the test with the log.
    pub async fn wait_for_crash_at(&mut self, point: &str, timeout: Duration) {
        let status = self.wait_for_exit(timeout).await;
        let logs = self.logs();
        let hook = logs
            .lines()
            .find(|l| l.contains("ANYPOST_CRASH_AFTER: exiting on purpose"));
        assert!(
            status.code() == Some(86) && hook.is_some_and(|l| l.contains(point)),
            "the operator did not exit at crash point {point} ({status}, hook line {hook:?}):\n{logs}"
        );
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file (stdout and stderr of every start).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the operator has printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; fails early (with the log) if the
    /// process exits first.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let path = self.log_path.clone();
        eventually(timeout, || {
            let running = self.is_running();
            let path = path.clone();
            async move {
                let logs = std::fs::read_to_string(&path).unwrap_or_default();
                if logs.contains(needle) {
                    return Ok(());
                }
                if !running {
                    panic!("the operator exited before logging {needle:?}:\n{logs}");
                }
                Err(format!("{needle:?} not in {} yet", path.display()))
            }
        })
        .await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "----- last {} lines of {} -----\n{}\n-----",
                tail.len(),
                self.log_path.display(),
                tail.join("\n")
            );
        }
    }
}
