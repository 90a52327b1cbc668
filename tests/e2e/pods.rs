//! The chart as real pods on the local node (`scripts/dev-cluster up --node`),
//! with the image built here (`make image`): what a platform team meets first.
//!
//! One release goes through its life: `helm install` with two controller and two
//! DNS replicas, every pod Ready through the real readiness probe and running with
//! the securityContext the kubelet applied; SendingDomains published and answered
//! through the DNS Service's ClusterIP on port 53 over UDP and TCP; the leader's
//! pod deleted while a query loop runs through the Service; a `helm upgrade`
//! rolling every pod within the PodDisruptionBudgets under the same loop; each
//! component's ServiceAccount against what the README documents for it; and
//! `helm uninstall` leaving only what the README says stays.
//!
//! Pods and Services are found by the release's label, never by a Deployment's
//! name, so a chart that runs the controller and the DNS zone as two Deployments
//! changes which pods a step looks at, not how it looks.

use crate::chart::{chart, helm_run};
use crate::controller::{manifest, wait_published};
use crate::dns_embedded::{dig, unquote};
use crate::support::node::{NODE_NAME, Node, node};
use crate::support::{TestNs, cluster, eventually, kubectl, kubectl_ok, random_suffix, repo_root};
use anyhow::{Context as _, ensure};
use anypost_operator::core::api::SendingDomain;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ZONE: &str = "dns.anypost.example";
/// The operator's process name as the kernel keeps it (15 characters).
const COMM: &str = "anypost-operato";
/// The answer rate the issue demands of the DNS Service while pods come and go.
const MIN_ANSWER_RATE: f64 = 0.99;
const POD_WAIT: Duration = Duration::from_secs(180);

/// A Helm release in its own namespace; uninstalled (best effort) if the test
/// fails before it does so itself.
struct Release {
    name: String,
    /// The leader Lease of the release's shard (it runs with a selector).
    lease: String,
    ns: TestNs,
    values: std::path::PathBuf,
    installed: bool,
}

impl Release {
    fn selector(&self) -> String {
        format!("app.kubernetes.io/instance={}", self.name)
    }

    /// The pods of one component: `controller` or `dns`.
    fn component(&self, component: &str) -> String {
        format!(
            "{},app.kubernetes.io/component={component}",
            self.selector()
        )
    }

    fn pods(&self) -> Api<Pod> {
        self.ns.api()
    }

    fn helm(&self, args: &[&str]) -> String {
        helm(&[args, &["-n", &self.ns.name]].concat())
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            let kubeconfig = cluster().kubeconfig.display().to_string();
            let _ = helm_run(&[
                "uninstall",
                &self.name,
                "-n",
                &self.ns.name,
                "--kubeconfig",
                &kubeconfig,
            ]);
        }
        let _ = std::fs::remove_file(&self.values);
    }
}

/// Runs helm against the dev cluster; panics with its output unless it succeeds.
#[track_caller]
fn helm(args: &[&str]) -> String {
    let kubeconfig = cluster().kubeconfig.display().to_string();
    let all = [args, &["--kubeconfig", &kubeconfig]].concat();
    let (ok, out, err) = helm_run(&all);
    assert!(ok, "helm {} failed:\n{out}{err}", args.join(" "));
    out
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Waits until exactly `n` of the component's pods exist, all Ready, and none of
/// them is in `gone`.
async fn wait_ready(r: &Release, component: &str, n: usize, gone: &BTreeSet<String>) -> Vec<Pod> {
    eventually(POD_WAIT, || async {
        let all = r
            .pods()
            .list(&ListParams::default().labels(&r.component(component)))
            .await?;
        let names: Vec<String> = all.items.iter().map(name_of).collect();
        let ready: Vec<Pod> = all.items.into_iter().filter(is_ready).collect();
        ensure!(
            ready.len() == n && names.len() == n && !names.iter().any(|p| gone.contains(p)),
            "{} of {n} {component} pods Ready; pods now: {names:?}",
            ready.len()
        );
        Ok::<_, anyhow::Error>(ready)
    })
    .await
}

async fn lease_holder(r: &Release) -> anyhow::Result<String> {
    let lease = Api::<Lease>::namespaced(r.ns.client.clone(), &r.ns.name)
        .get(&r.lease)
        .await?;
    lease
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .context("the Lease has no holder")
}

/// The release's DNS Service (the one with a `dns-udp` port): its ClusterIP, port 53.
async fn dns_service(r: &Release) -> (String, SocketAddr) {
    let services = Api::<Service>::namespaced(r.ns.client.clone(), &r.ns.name)
        .list(&ListParams::default().labels(&r.selector()))
        .await
        .unwrap();
    let svc = services
        .items
        .into_iter()
        .find(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .is_some_and(|ps| ps.iter().any(|p| p.name.as_deref() == Some("dns-udp")))
        })
        .expect("the release has a DNS Service");
    let spec = svc.spec.unwrap();
    let ports = spec.ports.unwrap();
    for (name, proto) in [("dns-udp", "UDP"), ("dns-tcp", "TCP")] {
        let p = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap();
        assert_eq!(p.port, 53, "{name}");
        assert_eq!(p.protocol.as_deref(), Some(proto), "{name}");
    }
    let ip = IpAddr::from_str(&spec.cluster_ip.unwrap()).unwrap();
    (svc.metadata.name.unwrap(), SocketAddr::new(ip, 53))
}

/// How many distinct addresses the slices list as ready.
fn ready_addresses(slices: &[EndpointSlice]) -> usize {
    slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.clone())
        .collect::<BTreeSet<String>>()
        .len()
}

/// How many of the Service's endpoints are ready now.
async fn ready_endpoints(r: &Release, service: &str) -> anyhow::Result<usize> {
    let slices = Api::<EndpointSlice>::namespaced(r.ns.client.clone(), &r.ns.name)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await?;
    Ok(ready_addresses(&slices.items))
}

// ---------------------------------------------------------------------------
// What the kernel says about a pod's process

/// The host pid of the operator process in the pod with this uid, found through
/// the pod's cgroup (the kubelet names it `pod<uid>`).
fn operator_pid(pod_uid: &str) -> anyhow::Result<u32> {
    let needle = format!("pod{pod_uid}");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != COMM {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.contains(&needle) {
            return Ok(pid);
        }
    }
    anyhow::bail!("no {COMM} process in a cgroup named {needle}")
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {field} in /proc/PID/status:\n{status}"))
}

/// Checks, from the kernel's own view of the pod's process, what the chart's
/// securityContext asks and the kubelet must have applied.
fn assert_runs_confined(pod: &str, pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    // runAsUser/runAsGroup 65532 (runAsNonRoot): real, effective, saved, fs.
    assert_eq!(
        status_field(&status, "Uid"),
        "65532 65532 65532 65532",
        "{pod}"
    );
    assert_eq!(
        status_field(&status, "Gid"),
        "65532 65532 65532 65532",
        "{pod}"
    );
    // capabilities.drop [ALL]: nothing permitted, effective, or in the bounding set.
    for caps in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&status, caps),
            "0000000000000000",
            "{pod}: {caps}"
        );
    }
    // allowPrivilegeEscalation: false.
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{pod}");
    // seccompProfile RuntimeDefault: a filter is installed (mode 2).
    assert_eq!(status_field(&status, "Seccomp"), "2", "{pod}");

    // readOnlyRootFilesystem: the container's / is mounted read-only, and even
    // root on the host cannot write through it.
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("{pod}: no / in its mountinfo:\n{mountinfo}"));
    let opts = root.split_whitespace().nth(5).unwrap();
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "{pod}: / is mounted {opts}"
    );
    let probe = format!("/proc/{pid}/root/write-probe");
    let err = std::fs::write(&probe, b"x").expect_err("the root filesystem is writable");
    assert_eq!(
        err.raw_os_error(),
        Some(30),
        "{pod}: EROFS expected, got {err}"
    );

    // The image: the binary, and no shell or anything else to run.
    let rootfs = format!("/proc/{pid}/root");
    assert!(
        std::path::Path::new(&format!("{rootfs}/usr/local/bin/anypost-operator")).exists(),
        "{pod}"
    );
    for shell in ["bin/sh", "bin/bash", "bin/busybox", "usr/bin/env"] {
        assert!(
            !std::path::Path::new(&format!("{rootfs}/{shell}")).exists(),
            "{pod}: the image has /{shell}"
        );
    }
}

// ---------------------------------------------------------------------------
// DNS through the Service

/// One query with a socket (and so a source port) of its own, as resolvers send
/// them: each new flow goes through kube-proxy's current rules.
fn query(server: SocketAddr, name: &str, rtype: RecordType, tcp: bool) -> anyhow::Result<Message> {
    let timeout = Duration::from_secs(1);
    let mut msg = Message::query();
    msg.add_query(Query::query(Name::from_ascii(name)?, rtype));
    let id = msg.metadata.id;
    let wire = msg.to_vec()?;
    let reply = if tcp {
        let mut s = TcpStream::connect_timeout(&server, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&wire);
        s.write_all(&framed)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf)?;
        buf
    } else {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(server)?;
        s.set_read_timeout(Some(timeout))?;
        s.send(&wire)?;
        let mut buf = vec![0u8; 4096];
        let n = s.recv(&mut buf)?;
        buf.truncate(n);
        buf
    };
    let reply = Message::from_vec(&reply)?;
    ensure!(reply.metadata.id == id, "a reply to another query");
    Ok(reply)
}

fn answered(reply: &anyhow::Result<Message>) -> bool {
    reply
        .as_ref()
        .is_ok_and(|m| m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty())
}

#[derive(Debug, Default)]
struct Tally {
    udp: (u32, u32),
    tcp: (u32, u32),
    failures: Vec<String>,
    elapsed: Duration,
}

impl Tally {
    fn rate(&self) -> f64 {
        f64::from(self.udp.1 + self.tcp.1) / f64::from((self.udp.0 + self.tcp.0).max(1))
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} queries answered ({:.2}%: UDP {}/{}, TCP {}/{}) over {:.1}s",
            self.udp.1 + self.tcp.1,
            self.udp.0 + self.tcp.0,
            self.rate() * 100.0,
            self.udp.1,
            self.udp.0,
            self.tcp.1,
            self.tcp.0,
            self.elapsed.as_secs_f64()
        )?;
        if !self.failures.is_empty() {
            write!(f, "; unanswered: {}", self.failures.join("; "))?;
        }
        Ok(())
    }
}

/// A loop of queries through the Service, alternating UDP and TCP, until stopped.
struct QueryLoop {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Tally>,
}

impl QueryLoop {
    fn start(server: SocketAddr, name: &str) -> QueryLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let name = name.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut t = Tally::default();
            let mut tcp = false;
            while !flag.load(Ordering::Relaxed) {
                let reply = query(server, &name, RecordType::TXT, tcp);
                let ok = answered(&reply);
                let counts = if tcp { &mut t.tcp } else { &mut t.udp };
                counts.0 += 1;
                if ok {
                    counts.1 += 1;
                } else if t.failures.len() < 10 {
                    let what = match &reply {
                        Ok(m) => format!(
                            "{} with {} answers",
                            m.metadata.response_code,
                            m.answers.len()
                        ),
                        Err(e) => format!("{e:#}"),
                    };
                    t.failures.push(format!(
                        "{:.2}s {}: {what}",
                        start.elapsed().as_secs_f64(),
                        if tcp { "TCP" } else { "UDP" }
                    ));
                }
                tcp = !tcp;
                std::thread::sleep(Duration::from_millis(20));
            }
            t.elapsed = start.elapsed();
            t
        });
        QueryLoop { stop, thread }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the query loop panicked")
    }
}

// ---------------------------------------------------------------------------
// RBAC

/// `kubectl auth can-i --list` for `user` in `ns`: resource → verbs.
fn permissions(user: &str, ns: &str) -> BTreeMap<String, BTreeSet<String>> {
    let out = kubectl_ok(&["auth", "can-i", "--list", "--as", user, "-n", ns]);
    let mut perms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in out.lines().skip(1) {
        let Some(bracket) = line.find('[') else {
            continue;
        };
        let resource = line[..bracket].trim();
        // Non-resource URLs (health, discovery) have no resource.
        if resource.is_empty() {
            continue;
        }
        let verbs = line
            .rsplit_once('[')
            .and_then(|(_, v)| v.strip_suffix(']'))
            .unwrap_or_else(|| panic!("unexpected can-i line: {line}"));
        perms
            .entry(resource.to_string())
            .or_default()
            .extend(verbs.split_whitespace().map(str::to_string));
    }
    perms
}

/// What the ServiceAccount `sa` of namespace `home` may do in namespace `ns`
/// beyond what every ServiceAccount may (the `default` one of `home`, which
/// nothing binds).
fn granted(sa: &str, home: &str, ns: &str) -> BTreeMap<String, BTreeSet<String>> {
    let everyone = permissions(&format!("system:serviceaccount:{home}:default"), ns);
    permissions(&format!("system:serviceaccount:{home}:{sa}"), ns)
        .into_iter()
        .filter_map(|(resource, verbs)| {
            let extra: BTreeSet<String> = match everyone.get(&resource) {
                Some(base) => verbs.difference(base).cloned().collect(),
                None => verbs,
            };
            (!extra.is_empty()).then_some((resource, extra))
        })
        .collect()
}

/// The README's table of what a component's ServiceAccount may do, as `kubectl
/// auth can-i --list` names it: (in the release's namespace only?, resource, verbs).
fn documented_rbac(component: &str) -> Vec<(bool, String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let marker = format!("<!-- rbac-table {component} -->");
    let table = readme.split(&marker).nth(1).unwrap_or_else(|| {
        panic!("README.md has the {component} RBAC table between {marker} markers")
    });
    let mut rows = Vec::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let unquote = |s: &str| s.trim_matches('`').to_string();
        let (resource, group, verbs, scope) =
            (unquote(cells[0]), unquote(cells[1]), cells[2], cells[3]);
        let name = match (resource.split_once('/'), group.as_str()) {
            (_, "") => resource.clone(),
            (Some((r, sub)), g) => format!("{r}.{g}/{sub}"),
            (None, g) => format!("{resource}.{g}"),
        };
        let verbs = verbs
            .split(',')
            .map(|v| v.trim().trim_matches('`').to_string())
            .collect();
        rows.push((scope.contains("release"), name, verbs));
    }
    assert!(!rows.is_empty(), "no rows in the README's RBAC table");
    rows
}

fn expected_rbac(component: &str, in_release_ns: bool) -> BTreeMap<String, BTreeSet<String>> {
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (release_only, name, verbs) in documented_rbac(component) {
        if in_release_ns || !release_only {
            want.entry(name).or_default().extend(verbs);
        }
    }
    want
}

/// Fails on any sign of a refused API call in the operator's logs.
fn assert_no_forbidden(logs: &str) {
    for line in logs.lines() {
        let l = line.to_ascii_lowercase();
        assert!(
            !(l.contains("forbidden") || l.contains("code: 403") || l.contains("\"code\":403")),
            "the operator was refused an API call: {line}"
        );
    }
}

fn pod_logs(ns: &str, pod: &str) -> String {
    kubectl_ok(&["logs", pod, "-n", ns, "--all-containers"])
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_chart_runs_as_pods_on_a_real_node() {
    let node: &Node = node();
    let run = random_suffix();
    let ns = TestNs::new("pods").await;
    let tenant = TestNs::new("pods-tenant").await;
    let values = repo_root().join(format!("target/e2e-logs/pods-values-{run}.yaml"));
    std::fs::create_dir_all(values.parent().unwrap()).unwrap();
    let selector = format!("anypost.com/e2e-run={run}");
    let release = Release {
        name: format!("ap{run}"),
        lease: anypost_operator::adapters::kube::leader::lease_name(None, Some(&selector)),
        ns,
        values,
        installed: false,
    };
    // Verification is not what this test is about: the resolver is an address in
    // the pod where nothing answers, so checks are inconclusive at once.
    std::fs::write(
        &release.values,
        format!(
            "zone: {{name: {ZONE}, mxHost: mx.anypost.example, spfInclude: spf.anypost.example, trackingHost: t.anypost.example}}\n\
             image: {{repository: {}, tag: \"{}\", pullPolicy: IfNotPresent}}\n\
             controller: {{replicaCount: 2}}\n\
             dns: {{replicaCount: 2}}\n\
             selector: {selector}\n\
             verification: {{resolvers: [\"127.0.0.1:53\"], resolverTimeout: 1s}}\n",
            node.image_repository, node.image_tag
        ),
    )
    .unwrap();
    let values = release.values.display().to_string();
    let mut release = release;

    // --- helm install: every pod Ready through the real readiness probe.
    let start = Instant::now();
    release.helm(&["install", &release.name, &chart(), "-f", &values]);
    release.installed = true;
    let controllers = wait_ready(&release, "controller", 2, &BTreeSet::new()).await;
    let dns_pods = wait_ready(&release, "dns", 2, &BTreeSet::new()).await;
    let install_to_ready = start.elapsed();
    eprintln!(
        "pods: helm install → 2 controller and 2 DNS pods Ready in {:.1}s (image {}, archive {} KiB)",
        install_to_ready.as_secs_f64(),
        node.image(),
        std::fs::metadata(&node.image_archive).unwrap().len() / 1024
    );
    for pod in controllers.iter().chain(&dns_pods) {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
        let c = &pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert_eq!(c.image, node.image(), "{}", name_of(pod));
        assert_eq!(c.restart_count, 0, "{} restarted", name_of(pod));
        let pid = operator_pid(pod.metadata.uid.as_deref().unwrap()).unwrap();
        assert_runs_confined(&name_of(pod), pid);
    }

    // --- SendingDomains applied → published → answered through the Service.
    let small = format!("pods-{run}.example.com");
    let big = format!("pods-big-{run}.example.com");
    tenant.apply_ok(&manifest(
        "small",
        &run,
        &format!("  domain: {small}\n  dkim:\n    keyBits: 1024\n"),
    ));
    tenant.apply_ok(&manifest(
        "big",
        &run,
        &format!("  domain: {big}\n  dkim:\n    keyBits: 4096\n"),
    ));
    let api: Api<SendingDomain> = tenant.api();
    let small_sd = wait_published(&api, "small").await;
    let big_sd = wait_published(&api, "big").await;
    let target = |sd: &SendingDomain, i: usize| {
        format!("{}.", sd.status.as_ref().unwrap().dns_records[i].value)
    };
    let spf_name = target(&small_sd, 0);
    let dkim_big = target(&big_sd, 1);
    let (service, dns) = dns_service(&release).await;
    eventually(Duration::from_secs(30), || async {
        for tcp in [false, true] {
            let reply = query(dns, &spf_name, RecordType::TXT, tcp);
            ensure!(
                answered(&reply),
                "{spf_name} TXT over {}: {reply:?}",
                if tcp { "TCP" } else { "UDP" }
            );
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let key = big_sd
        .status
        .as_ref()
        .unwrap()
        .dkim
        .as_ref()
        .unwrap()
        .selectors[0]
        .public_key
        .clone();
    let expected = format!("v=DKIM1; k=rsa; p={key}");
    eventually(Duration::from_secs(30), || async {
        // 512 bytes without EDNS: too small for a 4096-bit key; TCP carries it whole.
        let udp = dig(dns, &["+notcp", "+noedns", "+ignore", &dkim_big, "TXT"]);
        ensure!(udp.has_flag("tc"), "no truncation over UDP:\n{}", udp.raw);
        let tcp = dig(dns, &["+tcp", &dkim_big, "TXT"]);
        ensure!(
            tcp.data("TXT").first().map(|t| unquote(t)) == Some(expected.clone()),
            "over TCP:\n{}",
            tcp.raw
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;

    // --- The leader's pod is deleted: the other replica takes the Lease, and the
    // Service keeps answering.
    let leader = eventually(Duration::from_secs(60), || lease_holder(&release)).await;
    let names: BTreeSet<String> = controllers.iter().map(name_of).collect();
    assert!(
        names.contains(&leader),
        "the Lease holder {leader} is not one of {names:?}"
    );
    let mut logs = String::new();
    for pod in names
        .iter()
        .chain(&dns_pods.iter().map(name_of).collect::<BTreeSet<_>>())
    {
        logs.push_str(&pod_logs(&release.ns.name, pod));
    }
    let queries = QueryLoop::start(dns, &spf_name);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deleted = Instant::now();
    release
        .ns
        .kubectl_ok(&["delete", "pod", &leader, "--wait=false"]);
    let new_leader = eventually(Duration::from_secs(90), || async {
        let holder = lease_holder(&release).await?;
        ensure!(holder != leader, "{leader} still holds the Lease");
        Ok::<_, anyhow::Error>(holder)
    })
    .await;
    let takeover = deleted.elapsed();
    let gone = BTreeSet::from([leader.clone()]);
    let controllers = wait_ready(&release, "controller", 2, &gone).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failover = queries.finish();
    eprintln!(
        "pods: failover: leader {leader} deleted; {new_leader} took the Lease after {:.1}s; {failover}",
        takeover.as_secs_f64()
    );
    assert!(
        controllers.iter().any(|p| name_of(p) == new_leader),
        "the new holder {new_leader} is not a running controller replica"
    );
    assert!(
        failover.rate() >= MIN_ANSWER_RATE,
        "the Service answered too few queries during the failover: {failover}; first failures: {:#?}",
        failover.failures
    );

    // --- helm upgrade with a value both components take rolls every pod within
    // the budgets.
    let before: BTreeSet<String> = controllers.iter().chain(&dns_pods).map(name_of).collect();
    for pod in &before {
        logs.push_str(&pod_logs(&release.ns.name, pod));
    }
    let queries = QueryLoop::start(dns, &spf_name);
    let watching = Arc::new(AtomicBool::new(true));
    let fewest = {
        let watching = watching.clone();
        let client = release.ns.client.clone();
        let ns = release.ns.name.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let slices = Api::<EndpointSlice>::namespaced(client, &ns);
            let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
            let mut fewest = usize::MAX;
            while watching.load(Ordering::Relaxed) {
                if let Ok(list) = slices.list(&lp).await {
                    fewest = fewest.min(ready_addresses(&list.items));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            fewest
        })
    };
    let rollout = Instant::now();
    release.helm(&[
        "upgrade",
        &release.name,
        &chart(),
        "-f",
        &values,
        "--set",
        "logFormat=text",
    ]);
    let controllers = wait_ready(&release, "controller", 2, &before).await;
    let pods = wait_ready(&release, "dns", 2, &before).await;
    let rollout = rollout.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    watching.store(false, Ordering::Relaxed);
    let fewest = fewest.await.unwrap();
    let rolled = queries.finish();
    let pdb = Api::<PodDisruptionBudget>::namespaced(release.ns.client.clone(), &release.ns.name)
        .list(&ListParams::default().labels(&release.component("dns")))
        .await
        .unwrap()
        .items;
    assert_eq!(pdb.len(), 1, "one PodDisruptionBudget for the DNS replicas");
    let min_available = pdb[0].spec.as_ref().unwrap().min_available.clone();
    let min_available = match min_available {
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n as usize,
        other => panic!("minAvailable {other:?}"),
    };
    eprintln!(
        "pods: rollout (helm upgrade) took {:.1}s; never fewer than {fewest} ready DNS endpoints (minAvailable {min_available}); {rolled}",
        rollout.as_secs_f64()
    );
    assert!(
        fewest >= min_available,
        "only {fewest} ready endpoints during the rollout"
    );
    assert!(
        rolled.rate() >= MIN_ANSWER_RATE,
        "the Service answered too few queries during the rollout: {rolled}; first failures: {:#?}",
        rolled.failures
    );
    for pod in controllers.iter().chain(&pods) {
        let args = pod.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap_or_default();
        assert!(
            args.iter().any(|a| a == "--log-format=text"),
            "{} runs {args:?}",
            name_of(pod)
        );
    }
    assert_eq!(ready_endpoints(&release, &service).await.unwrap(), 2);

    // The budget itself: one pod may be evicted, the second not until the first
    // is replaced.
    eventually(Duration::from_secs(60), || async {
        let pdb =
            Api::<PodDisruptionBudget>::namespaced(release.ns.client.clone(), &release.ns.name)
                .get(pdb[0].metadata.name.as_deref().unwrap())
                .await?;
        let allowed = pdb.status.map(|s| s.disruptions_allowed).unwrap_or(0);
        ensure!(allowed == 1, "disruptionsAllowed {allowed}");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    for pod in &pods {
        logs.push_str(&pod_logs(&release.ns.name, &name_of(pod)));
    }
    // Through kubectl, which (unlike kube's client) does not retry a 429 until
    // the budget allows it.
    let evict = |pod: &str| {
        release.ns.kubectl_stdin(
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/{}/pods/{pod}/eviction", release.ns.name),
                "-f",
                "-",
            ],
            &format!(
                r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}"}}}}"#
            ),
        )
    };
    // Both at once: asked one after the other, on a loaded machine the first
    // pod's replacement was once Ready before the second request, and the budget
    // rightly allowed it.
    let names = [name_of(&pods[0]), name_of(&pods[1])];
    let outcomes = std::thread::scope(|s| {
        let asked: Vec<_> = names.iter().map(|n| s.spawn(|| evict(n))).collect();
        asked
            .into_iter()
            .map(|h| h.join().expect("the eviction thread"))
            .collect::<Vec<_>>()
    });
    let evicted: Vec<&String> = names
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.status.success())
        .map(|(n, _)| n)
        .collect();
    let refusals: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(
        evicted.len() == 1 && refusals.iter().all(|r| r.contains("disruption budget")),
        "of two evictions at once, one is within the budget and the other refused by it: evicted {evicted:?}, refused with {refusals:?}"
    );
    let gone = BTreeSet::from([evicted[0].clone()]);
    let pods = wait_ready(&release, "dns", 2, &gone).await;

    // --- The real ServiceAccounts: nothing refused, nothing beyond the README.
    for pod in controllers.iter().chain(&pods) {
        logs.push_str(&pod_logs(&release.ns.name, &name_of(pod)));
    }
    assert_no_forbidden(&logs);
    for (component, pod) in [("controller", &controllers[0]), ("dns", &pods[0])] {
        let sa = pod
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .clone()
            .unwrap();
        assert_eq!(
            granted(&sa, &release.ns.name, &release.ns.name),
            expected_rbac(component, true),
            "{component} in the release's namespace"
        );
        assert_eq!(
            granted(&sa, &release.ns.name, &tenant.name),
            expected_rbac(component, false),
            "{component} in a tenant's namespace"
        );
    }

    // --- helm uninstall removes every object of the release.
    release.helm(&["uninstall", &release.name, "--wait"]);
    release.installed = false;
    let expected: BTreeSet<String> = [
        // Made by the operator, not by Helm: the README says why they stay.
        "secret/anypost-operator-identity",
        &format!("lease.coordination.k8s.io/{}", release.lease),
        // Every namespace has these.
        "configmap/kube-root-ca.crt",
        "serviceaccount/default",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    eventually(Duration::from_secs(120), || async {
        let left = namespaced_objects(&release.ns.name);
        ensure!(
            left == expected,
            "left in the release's namespace: {left:?}"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let cluster_wide = kubectl_ok(&[
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        &release.selector(),
        "-o",
        "name",
    ]);
    assert!(
        cluster_wide.trim().is_empty(),
        "left cluster-wide: {cluster_wide}"
    );
    // The tenants' SendingDomains, and so their keys, are theirs: untouched.
    assert_eq!(
        tenant
            .kubectl_ok(&["get", "sd", "-o", "name"])
            .lines()
            .count(),
        2
    );
}

/// Every object in the namespace, as `kind[.group]/name`, events aside.
fn namespaced_objects(ns: &str) -> BTreeSet<String> {
    let kinds = kubectl_ok(&[
        "api-resources",
        "--verbs=list",
        "--namespaced",
        "-o",
        "name",
    ]);
    let kinds: Vec<&str> = kinds
        .lines()
        .filter(|k| *k != "events" && *k != "events.events.k8s.io")
        .collect();
    let out = kubectl(&[
        "get",
        &kinds.join(","),
        "-n",
        ns,
        "-o",
        "name",
        "--ignore-not-found",
    ]);
    assert!(
        out.status.success(),
        "listing the namespace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The image scripts/image built is the Dockerfile's last stage: an empty base, the
/// stage's user, ports, entrypoint and command, and one layer holding nothing but
/// the binary its tag names.
#[test]
fn the_image_built_here_is_the_dockerfiles_runtime_stage() {
    let node = node();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let stage: Vec<&str> = dockerfile
        .rsplit_once("\nFROM ")
        .expect("the Dockerfile has stages")
        .1
        .lines()
        .collect();
    assert_eq!(stage[0].trim(), "scratch", "the runtime stage starts empty");
    let directive = |name: &str| -> String {
        stage
            .iter()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in the Dockerfile's last stage"))
            .trim()
            .to_string()
    };

    let dir = tempfile::tempdir().unwrap();
    let untar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&node.image_archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let json = |digest: &str| -> serde_json::Value {
        let path = dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let manifest = json(index["manifests"][0]["digest"].as_str().unwrap());
    let config = json(manifest["config"]["digest"].as_str().unwrap());
    let c = &config["config"];

    assert_eq!(c["User"], directive("USER"));
    let exposed: BTreeSet<String> = c["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let declared: BTreeSet<String> = directive("EXPOSE")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(exposed, declared);
    let entrypoint: serde_json::Value = serde_json::from_str(&directive("ENTRYPOINT")).unwrap();
    assert_eq!(c["Entrypoint"], entrypoint);
    let cmd: serde_json::Value = serde_json::from_str(&directive("CMD")).unwrap();
    assert_eq!(c["Cmd"], cmd);

    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: the binary");
    let layer = dir.path().join("blobs/sha256").join(
        layers[0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let listing = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&layer)
        .output()
        .unwrap();
    let files: Vec<String> = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .filter(|f| !f.ends_with('/'))
        .map(str::to_string)
        .collect();
    let binary = entrypoint[0].as_str().unwrap().trim_start_matches('/');
    assert_eq!(files, [binary], "the layer holds only the binary");
    let content = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(&layer)
        .arg(binary)
        .output()
        .unwrap()
        .stdout;
    let digest = {
        use sha2::Digest as _;
        data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&content)[..])
    };
    assert!(
        node.image_tag.ends_with(&digest[..12]),
        "the tag {} names another binary than the image's ({digest})",
        node.image_tag
    );
    // Static: a 64-bit ELF whose program headers ask for no interpreter (no
    // dynamic loader), so it runs on the empty base.
    assert_eq!(&content[..5], b"\x7fELF\x02");
    let u16_at = |at: usize| u16::from_le_bytes([content[at], content[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(content[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(content[at..at + 4].try_into().unwrap());
        assert_ne!(p_type, PT_INTERP, "the binary asks for a dynamic loader");
    }
}
