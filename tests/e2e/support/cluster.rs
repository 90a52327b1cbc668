//! The local control plane (`scripts/dev-cluster`), `kubectl`, and a namespace per test.

use super::{random_suffix, repo_root, target_dir};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The name of the CRD the tests install from `crds/`.
const CRD: &str = "sendingdomains.anypost.com";

/// A running control plane: where its kubeconfig, its kubectl and its state
/// (logs, the audit log) are.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub state: PathBuf,
}

/// The control plane, started (or found running) by the first caller in this test
/// run, with `crds/` applied and Established. Panics with the reason when that
/// fails; every later caller gets the same panic message rather than a retry.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("the local control plane is not available:\n{e}"),
    }
}

fn start() -> Result<Cluster, String> {
    start_at(&target_dir().join("dev-cluster"))
}

/// `scripts/dev-cluster up` for the cluster whose state lives in `state`
/// (`ANYPOST_DEV_STATE`), then `crds/` applied and Established.
fn start_at(state: &Path) -> Result<Cluster, String> {
    run_script_env("scripts/dev-cluster", &["up"], &dev_state_env(state))?;
    let cluster = Cluster {
        kubeconfig: state.join("kubeconfig"),
        kubectl: state.join("bin/kubectl"),
        state: state.to_path_buf(),
    };

    // Server-side apply: idempotent, and no last-applied annotation on a large CRD.
    // Then wait until the CRD is Established. Both retried for a while: every test
    // of the binary depends on this one setup; an apiserver starved by the work
    // beside it (etcd briefly unreachable) must not fail them all at once, and
    // `kubectl wait` gives up at once ("status.conditions accessor error") on a CRD
    // whose conditions the apiserver has not written yet.
    let crds = repo_root().join("crds");
    let crds = crds.to_str().expect("the repository path is UTF-8");
    let crd = format!("crd/{CRD}");
    let steps: [&[&str]; 2] = [
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=anypost-e2e",
            "-f",
            crds,
        ],
        &["wait", "--for=condition=Established", &crd, "--timeout=30s"],
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    for args in steps {
        loop {
            let out = run_kubectl(&cluster, args, None);
            if out.status.success() {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "kubectl {} failed for 180 s; last:\n{}{}",
                    args[0],
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    Ok(cluster)
}

/// Runs one of the repository's scripts and returns its stdout. Its progress
/// (stderr: a first run may build for minutes) goes straight to the terminal, past
/// the test harness's capture, and is kept for the error when it fails.
pub fn run_script(script: &str, args: &[&str]) -> Result<String, String> {
    run_script_env(script, args, &[])
}

/// Like [`run_script`], with extra environment variables.
pub fn run_script_env(script: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let path = repo_root().join(script);
    let mut child = Command::new(&path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run {}: {e}", path.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let echo = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(std::io::stderr(), "{line}");
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", path.display()))?;
    let said = echo.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "`{script} {}` failed ({}):\n{stdout}{said}",
            args.join(" "),
            out.status,
        ));
    }
    Ok(stdout)
}

fn run_kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(&cluster.kubectl);
    cmd.arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", cluster.kubectl.display()));
    // Written from another thread so that a kubectl that talks before it has read
    // all of its input cannot deadlock against us.
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_owned();
        std::thread::spawn(move || pipe.write_all(input.as_bytes()))
    });
    let out = child.wait_with_output().expect("waiting for kubectl");
    if let Some(w) = writer {
        // kubectl may exit (e.g. on a parse error) before reading everything.
        let _ = w.join();
    }
    out
}

/// Runs the dev cluster's kubectl with its admin kubeconfig.
pub fn kubectl(args: &[&str]) -> Output {
    cluster().kubectl(args)
}

/// Runs kubectl with `input` on its stdin (for `apply -f -`).
pub fn kubectl_stdin(args: &[&str], input: &str) -> Output {
    cluster().kubectl_stdin(args, input)
}

/// Runs kubectl, panics with its stderr unless it succeeds, and returns its stdout.
#[track_caller]
pub fn kubectl_ok(args: &[&str]) -> String {
    cluster().kubectl_ok(args)
}

/// A client for the dev cluster, bound to the calling test's runtime.
pub async fn client() -> Client {
    cluster().client().await
}

impl Cluster {
    /// Runs this cluster's kubectl with its admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        run_kubectl(self, args, None)
    }

    /// Runs kubectl with `input` on its stdin (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        run_kubectl(self, args, Some(input))
    }

    /// Runs kubectl, panics with its stderr unless it succeeds, and returns its
    /// stdout.
    #[track_caller]
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }

    /// A client for this cluster, bound to the calling test's runtime.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.kubeconfig.display()));
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("the dev cluster's kubeconfig is usable");
        Client::try_from(config).expect("building a client for the dev cluster")
    }

    /// Where the components' logs and the apiserver's audit log are.
    pub fn logs_dir(&self) -> PathBuf {
        self.state.join("logs")
    }
}

fn dev_state_env(state: &Path) -> [(&'static str, &str); 1] {
    [(
        "ANYPOST_DEV_STATE",
        state.to_str().expect("the repository path is UTF-8"),
    )]
}

/// A control plane of the test's own (`scripts/dev-cluster` with a state
/// directory of its own, on its own free ports), for tests that restart its
/// parts: the shared one serves every other test meanwhile. `down` when dropped,
/// on failure too, and its state directory is removed (kept on failure with
/// `ANYPOST_E2E_KEEP_NS=1`, for its logs).
pub struct PrivateCluster {
    cluster: Cluster,
}

impl PrivateCluster {
    /// Starts `target/dev-cluster-<name>-<random>`; panics with the script's
    /// explanation when it cannot start: nothing skips.
    pub fn start(name: &str) -> PrivateCluster {
        let state = target_dir().join(format!("dev-cluster-{name}-{}", random_suffix()));
        match start_at(&state) {
            Ok(cluster) => PrivateCluster { cluster },
            Err(e) => {
                let _ = run_script_env("scripts/dev-cluster", &["down"], &dev_state_env(&state));
                let _ = std::fs::remove_dir_all(&state);
                panic!("a private control plane could not start:\n{e}")
            }
        }
    }

    /// `scripts/dev-cluster restart <component>`: stops etcd, kube-apiserver or
    /// kube-controller-manager and starts it again on the same ports with the same
    /// data; returns once it is ready again. Panics when it does not come back.
    pub fn restart(&self, component: &str) {
        if let Err(e) = run_script_env(
            "scripts/dev-cluster",
            &["restart", component],
            &dev_state_env(&self.cluster.state),
        ) {
            panic!("restarting {component}: {e}");
        }
    }
}

impl std::ops::Deref for PrivateCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let state = &self.cluster.state;
        if let Err(e) = run_script_env("scripts/dev-cluster", &["down"], &dev_state_env(state)) {
            eprintln!(
                "stopping the private control plane in {}: {e}",
                state.display()
            );
        }
        if std::thread::panicking() && std::env::var_os("ANYPOST_E2E_KEEP_NS").is_some() {
            eprintln!("keeping {} of the failed test", state.display());
        } else {
            let _ = std::fs::remove_dir_all(state);
        }
    }
}

/// A namespace of the test's own, deleted (without waiting) when dropped. Set
/// `ANYPOST_E2E_KEEP_NS=1` to keep the namespaces of failed tests for inspection.
pub struct TestNs {
    pub name: String,
    pub client: Client,
    cluster: Cluster,
}

impl TestNs {
    /// Creates `<prefix>-<random>`; `prefix` names the test, for whoever lists
    /// namespaces while debugging.
    pub async fn new(prefix: &str) -> TestNs {
        TestNs::new_in(cluster(), prefix).await
    }

    /// Like [`TestNs::new`], in the control plane `cluster` (a private one).
    pub async fn new_in(cluster: &Cluster, prefix: &str) -> TestNs {
        let client = cluster.client().await;
        let prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!("e2e-{}-{}", prefix.trim_matches('-'), random_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("anypost.com/e2e".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNs {
            name,
            client,
            cluster: cluster.clone(),
        }
    }

    /// The namespaced API of `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// `kubectl <args> -n <this namespace>`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["-n", &self.name]);
        self.cluster.kubectl(&all)
    }

    /// Like [`TestNs::kubectl`], but panics with kubectl's stderr unless it
    /// succeeds, and returns its stdout.
    #[track_caller]
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["-n", &self.name]);
        self.cluster.kubectl_ok(&all)
    }

    /// `kubectl <args> -n <this namespace>` with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut all = args.to_vec();
        all.extend(["-n", &self.name]);
        self.cluster.kubectl_stdin(&all, input)
    }

    /// `kubectl apply -n <this namespace> -f -` with `manifest` on stdin.
    pub fn apply(&self, manifest: &str) -> Output {
        self.cluster
            .kubectl_stdin(&["apply", "-n", &self.name, "-f", "-"], manifest)
    }

    /// Like [`TestNs::apply`], but panics with kubectl's stderr unless it succeeds.
    #[track_caller]
    pub fn apply_ok(&self, manifest: &str) -> String {
        let out = self.apply(manifest);
        assert!(
            out.status.success(),
            "kubectl apply failed ({}):\n{}\nmanifest:\n{manifest}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("ANYPOST_E2E_KEEP_NS").is_some() {
            eprintln!("keeping namespace {} of the failed test", self.name);
            return;
        }
        // The test's operator is gone by now, so nothing would ever release the
        // RFC2136 finalizer: drop it, or the namespace would stay Terminating.
        let kubectl = |args: &[&str]| self.cluster.kubectl(args);
        let names = kubectl(&["get", "sd", "-n", &self.name, "-o", "name"]);
        for sd in String::from_utf8_lossy(&names.stdout).lines() {
            let _ = kubectl(&[
                "patch",
                sd,
                "-n",
                &self.name,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
        // Synchronous and non-blocking: Drop may run outside any runtime, and the
        // namespace controller finishes the deletion after the test.
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// A kubeconfig for ServiceAccount `sa` of namespace `ns`, with a fresh token:
/// to run a process with exactly the rights RBAC gives that identity.
pub fn service_account_kubeconfig(ns: &str, sa: &str) -> PathBuf {
    let token = kubectl_ok(&["create", "token", sa, "-n", ns, "--duration", "1h"]);
    let server = kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let path = target_dir().join(format!("e2e-logs/kubeconfig-{ns}-{sa}"));
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating e2e-logs");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa}}\ncurrent-context: c\n",
            token.trim()
        ),
    )
    .expect("writing the kubeconfig");
    path
}
