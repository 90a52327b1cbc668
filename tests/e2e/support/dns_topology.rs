//! Real DNS on loopback for verification tests: BIND (`named`) serving the customers'
//! zones, a nameserver for the operator's zone, and unbound as the recursive resolver
//! the verifier asks, with a stub zone per zone pointing at its server.
//!
//! The operator's zone is served either by a stand-in (a zone file the test writes,
//! served by the same BIND) or by whatever listens at an address the test gives (the
//! operator's embedded server): see [`OperatorZone`].
//!
//! Every start picks free ports on 127.0.0.1; nothing is shared between topologies,
//! so tests run in parallel. Answers are never cached (`stub-no-cache`, TTL caps of
//! 0), so a record changed with [`DnsTopology::set_zone`] is seen by the next query.
//! When `named` or `unbound` cannot start, [`DnsTopology::start`] panics with its log:
//! tests never skip.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A zone the test writes: its origin and its records, one zone-file line each
/// (names relative to the origin or absolute with a final dot), e.g.
/// `anypost 1 IN CNAME t.dns.anypost.example.`. SOA and NS are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneFile {
    pub origin: String,
    pub records: Vec<String>,
}

impl ZoneFile {
    pub fn new(origin: &str) -> Self {
        ZoneFile {
            origin: origin.trim_end_matches('.').to_ascii_lowercase(),
            records: vec![],
        }
    }

    /// Adds one record line.
    pub fn with(mut self, line: impl Into<String>) -> Self {
        self.records.push(line.into());
        self
    }

    /// Adds one record line.
    pub fn add(&mut self, line: impl Into<String>) {
        self.records.push(line.into());
    }

    /// Removes every line for which `drop` is true.
    pub fn without(mut self, drop: impl Fn(&str) -> bool) -> Self {
        self.records.retain(|l| !drop(l));
        self
    }

    fn render(&self, serial: u32) -> String {
        let mut z = String::new();
        let _ = writeln!(z, "$ORIGIN {}.", self.origin);
        let _ = writeln!(z, "$TTL 1");
        let _ = writeln!(
            z,
            "@ IN SOA ns.{o}. hostmaster.{o}. {serial} 60 60 3600 1",
            o = self.origin
        );
        let _ = writeln!(z, "@ IN NS ns.{}.", self.origin);
        let _ = writeln!(z, "ns IN A 127.0.0.1");
        for r in &self.records {
            let _ = writeln!(z, "{r}");
        }
        z
    }
}

/// A TXT record's data as zone-file character-strings of at most 255 bytes each,
/// as long DKIM keys are published.
pub fn txt_strings(text: &str) -> String {
    text.as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Who answers for the operator's zone.
#[derive(Debug, Clone)]
pub enum OperatorZone {
    /// A zone file standing in for the operator's zone, served by this topology's
    /// BIND next to the customers' zones.
    StandIn(ZoneFile),
    /// The zone `zone` is served at `addr` (e.g. the operator's embedded server);
    /// the resolver's stub zone points there.
    At { zone: String, addr: SocketAddr },
    /// The zone's stub points at this topology's BIND, which does not serve it: a
    /// lame delegation, answered REFUSED (the resolver then says SERVFAIL).
    Lame { zone: String },
}

impl OperatorZone {
    fn name(&self) -> String {
        match self {
            OperatorZone::StandIn(z) => z.origin.clone(),
            OperatorZone::At { zone, .. } | OperatorZone::Lame { zone } => {
                zone.trim_end_matches('.').to_ascii_lowercase()
            }
        }
    }
}

/// A running BIND + unbound pair. Dropping it stops both.
pub struct DnsTopology {
    dir: tempfile::TempDir,
    named: Child,
    named_addr: SocketAddr,
    rndc_port: u16,
    unbound: Option<Child>,
    unbound_addr: SocketAddr,
    unbound_control: SocketAddr,
    unbound_conf: PathBuf,
    /// unbound's ports while it is stopped on purpose.
    unbound_hold: Option<PortHold>,
    operator_zone: String,
    /// A zone the resolver answers for, to probe it.
    first_zone: String,
    serials: Mutex<BTreeMap<String, u32>>,
}

const RNDC_SECRET: &str = "c2VjcmV0LWtleS1mb3ItYW55cG9zdC10ZXN0LWRucy0h";
const START_TIMEOUT: Duration = Duration::from_secs(20);

impl DnsTopology {
    /// Starts BIND with `customer_zones` (and the operator zone, if a stand-in) and
    /// unbound in front of it. Returns once both answer. Panics with the servers'
    /// logs when either cannot start.
    pub async fn start(customer_zones: &[ZoneFile], operator: OperatorZone) -> DnsTopology {
        let dir = tempfile::Builder::new()
            .prefix("anypost-dns-")
            .tempdir()
            .expect("creating a temporary directory");
        let named_port = free_port();
        let rndc_port = free_port();
        let unbound_port = free_port();
        let control_port = free_port();
        let named_addr: SocketAddr = ([127, 0, 0, 1], named_port).into();
        let unbound_addr: SocketAddr = ([127, 0, 0, 1], unbound_port).into();

        let mut served: Vec<ZoneFile> = customer_zones.to_vec();
        if let OperatorZone::StandIn(z) = &operator {
            served.push(z.clone());
        }
        let mut serials = BTreeMap::new();
        let mut zone_clauses = String::new();
        for z in &served {
            fs::write(zone_path(dir.path(), &z.origin), z.render(1)).expect("writing a zone file");
            serials.insert(z.origin.clone(), 1);
            let _ = writeln!(
                zone_clauses,
                "zone \"{o}\" {{ type primary; file \"{f}\"; }};",
                o = z.origin,
                f = zone_path(dir.path(), &z.origin).display()
            );
        }
        let d = dir.path().display();
        let named_conf = dir.path().join("named.conf");
        fs::write(
            &named_conf,
            format!(
                r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    listen-on port {named_port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify no;
    check-names primary ignore;
}};
key "rndc-key" {{ algorithm hmac-sha256; secret "{RNDC_SECRET}"; }};
controls {{ inet 127.0.0.1 port {rndc_port} allow {{ 127.0.0.1; }} keys {{ "rndc-key"; }}; }};
{zone_clauses}"#
            ),
        )
        .expect("writing named.conf");
        fs::write(
            dir.path().join("rndc.conf"),
            format!(
                r#"key "rndc-key" {{ algorithm hmac-sha256; secret "{RNDC_SECRET}"; }};
options {{ default-key "rndc-key"; default-server 127.0.0.1; default-port {rndc_port}; }};
"#
            ),
        )
        .expect("writing rndc.conf");

        let named_log = dir.path().join("named.log");
        let named = Command::new(tool("named"))
            .args(["-g", "-c"])
            .arg(&named_conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&named_log).expect("log file")))
            .stderr(Stdio::from(
                fs::File::options()
                    .append(true)
                    .open(&named_log)
                    .expect("log file"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("could not run named ({}): {e}", tool("named").display()));

        let operator_name = operator.name();
        let operator_addr = match &operator {
            OperatorZone::StandIn(_) | OperatorZone::Lame { .. } => named_addr,
            OperatorZone::At { addr, .. } => *addr,
        };
        let mut stubs = String::new();
        for z in customer_zones {
            let _ = writeln!(
                stubs,
                "stub-zone:\n    name: \"{}\"\n    stub-addr: {}@{}\n    stub-no-cache: yes",
                z.origin,
                named_addr.ip(),
                named_addr.port()
            );
        }
        let _ = writeln!(
            stubs,
            "stub-zone:\n    name: \"{operator_name}\"\n    stub-addr: {}@{}\n    stub-no-cache: yes",
            operator_addr.ip(),
            operator_addr.port()
        );
        let unbound_conf = dir.path().join("unbound.conf");
        fs::write(
            &unbound_conf,
            format!(
                r#"server:
    interface: 127.0.0.1
    port: {unbound_port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    # Outgoing queries from the kernel's ephemeral range only, never from the
    # ports the tests hand their servers (reserve_port, 10000-19999).
    outgoing-port-avoid: 0-32767
    module-config: "iterator"
    qname-minimisation: no
    cache-max-ttl: 0
    cache-max-negative-ttl: 0
    infra-host-ttl: 1
    infra-keep-probing: yes
    local-zone: "test." nodefault
{stubs}
remote-control:
    control-enable: yes
    control-interface: 127.0.0.1
    control-port: {control_port}
    control-use-cert: no
"#
            ),
        )
        .expect("writing unbound.conf");

        let mut topo = DnsTopology {
            dir,
            named,
            named_addr,
            rndc_port,
            unbound: None,
            unbound_addr,
            unbound_control: ([127, 0, 0, 1], control_port).into(),
            unbound_conf,
            unbound_hold: None,
            operator_zone: operator_name,
            first_zone: served.first().map(|z| z.origin.clone()).unwrap_or_default(),
            serials: Mutex::new(serials),
        };

        // BIND first: every served zone answers with its SOA.
        for z in &served {
            let origin = z.origin.clone();
            let named_addr = topo.named_addr;
            topo.wait_until("named", || {
                let origin = origin.clone();
                async move { soa_serial(named_addr, &origin).await.is_some() }
            })
            .await;
        }
        topo.restart_resolver().await;
        topo
    }

    /// The recursive resolver (unbound) to verify through.
    pub fn resolver(&self) -> SocketAddr {
        self.unbound_addr
    }

    /// The authoritative server (BIND) of the customers' zones (and of the
    /// stand-in operator zone).
    pub fn authoritative(&self) -> SocketAddr {
        self.named_addr
    }

    /// The operator zone's name.
    pub fn operator_zone(&self) -> &str {
        &self.operator_zone
    }

    /// Replaces a zone served by BIND (a customer zone or the stand-in operator
    /// zone) and returns once BIND serves the new version. The resolver caches
    /// nothing, so the next check sees it.
    pub async fn set_zone(&self, zone: &ZoneFile) {
        let serial = {
            let mut s = self.serials.lock().unwrap();
            let serial = s
                .get_mut(&zone.origin)
                .unwrap_or_else(|| panic!("zone {} is not served by this topology", zone.origin));
            *serial += 1;
            *serial
        };
        fs::write(
            zone_path(self.dir.path(), &zone.origin),
            zone.render(serial),
        )
        .expect("writing a zone file");
        let out = Command::new(tool("rndc"))
            .arg("-c")
            .arg(self.dir.path().join("rndc.conf"))
            .args(["reload", &zone.origin])
            .output()
            .unwrap_or_else(|e| panic!("could not run rndc: {e}"));
        assert!(
            out.status.success(),
            "rndc reload {} failed: {}{}\n{}",
            zone.origin,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let origin = zone.origin.clone();
        let named_addr = self.named_addr;
        self.wait_until("the reloaded zone", || {
            let origin = origin.clone();
            async move { soa_serial(named_addr, &origin).await == Some(serial) }
        })
        .await;
        self.flush();
    }

    /// Empties the resolver's caches (answers and server state), for good measure
    /// after a change.
    pub fn flush(&self) {
        if self.unbound.is_none() {
            return;
        }
        for args in [vec!["flush_zone", "."], vec!["flush_infra", "all"]] {
            let out = Command::new(tool("unbound-control"))
                .arg("-c")
                .arg(&self.unbound_conf)
                .args(&args)
                .output()
                .unwrap_or_else(|e| panic!("could not run unbound-control: {e}"));
            assert!(
                out.status.success(),
                "unbound-control {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Stops the resolver: queries to [`Self::resolver`] then time out.
    pub fn stop_resolver(&mut self) {
        if let Some(mut c) = self.unbound.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.unbound_hold = Some(PortHold::take(&[self.unbound_addr, self.unbound_control]));
        }
    }

    /// Starts the resolver again after [`Self::stop_resolver`], on the same
    /// address, and returns once it answers.
    pub async fn restart_resolver(&mut self) {
        if self.unbound.is_some() {
            return;
        }
        self.unbound_hold = None;
        self.start_resolver();
        let (addr, origin) = (self.unbound_addr, self.first_zone.clone());
        self.wait_until("unbound", || {
            let origin = origin.clone();
            async move { soa_serial(addr, &origin).await.is_some() }
        })
        .await;
    }

    fn start_resolver(&mut self) {
        let log = self.dir.path().join("unbound.log");
        let child = Command::new(tool("unbound"))
            .arg("-d")
            .arg("-c")
            .arg(&self.unbound_conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&log).expect("log file")))
            .stderr(Stdio::from(
                fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            ))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not run unbound ({}): {e}", tool("unbound").display())
            });
        self.unbound = Some(child);
    }

    /// Both servers' logs, for failure messages.
    pub fn logs(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- named.log ---\n{}\n--- unbound.log ---\n{}",
            read("named.log"),
            read("unbound.log")
        )
    }

    /// Polls `ready` until true; panics with the logs when a server exits or the
    /// time runs out.
    async fn wait_until<F, Fut>(&self, what: &str, ready: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if ready().await {
                return;
            }
            // try_wait needs &mut; a server that died shows in its log and in the
            // timeout below, checked through /proc to keep &self.
            let dead = |c: &Child| {
                !Path::new(&format!("/proc/{}", c.id())).exists()
                    || fs::read_to_string(format!("/proc/{}/stat", c.id()))
                        .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
            };
            let named_log = fs::read_to_string(self.dir.path().join("named.log"));
            if named_log.is_ok_and(|l| l.contains("not loaded due to errors")) {
                panic!("{what}: BIND rejected a zone file\n{}", self.logs());
            }
            if dead(&self.named) || self.unbound.as_ref().is_some_and(dead) {
                panic!(
                    "{what}: a DNS server exited during startup\n{}",
                    self.logs()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "{what} not answering after {:?}\n{}",
                    START_TIMEOUT,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for DnsTopology {
    fn drop(&mut self) {
        self.stop_resolver();
        let _ = self.named.kill();
        let _ = self.named.wait();
    }
}

fn zone_path(dir: &Path, origin: &str) -> PathBuf {
    dir.join(format!("{origin}.zone"))
}

/// A system tool: from PATH, else from /usr/sbin (where Debian puts the daemons,
/// often not on a user's PATH).
fn tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    });
    on_path.unwrap_or_else(|| Path::new("/usr/sbin").join(name))
}

/// A port free on 127.0.0.1 for both UDP and TCP, never handed out twice in this
/// process. Released at once: for a server that binds it right away; one whose
/// address others must know seconds before it starts takes [`reserve_port`].
pub fn free_port() -> u16 {
    reserve_port().release()
}

/// A port on 127.0.0.1 held (its UDP and TCP sockets bound) until
/// [`Reserved::release`], never handed out twice in this process: e.g. the
/// operator's `--dns-listen`, which the resolver must know before the operator
/// starts. Nothing on the machine can take it in between (an ephemeral port of
/// someone's outgoing connection, say).
pub struct Reserved {
    port: u16,
    _held: (UdpSocket, TcpListener),
}

impl Reserved {
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Frees the port for the server about to bind it: call right before
    /// starting that server.
    pub fn release(self) -> u16 {
        self.port
    }
}

/// The ports of a server stopped on purpose, held until it starts again so that
/// nothing else on the machine takes them meanwhile (an outgoing socket's
/// ephemeral port, say: a resolver stopped for twenty seconds once came back to
/// "Address already in use"). UDP is bound and never read, so queries go
/// unanswered as to a dead server; TCP is bound without listening, so a connect is
/// refused. A port someone took already is left alone (the restart then fails
/// with the server's log, as before).
pub struct PortHold {
    _sockets: Vec<socket2::Socket>,
}

impl PortHold {
    pub fn take(addrs: &[SocketAddr]) -> PortHold {
        use socket2::{Domain, Protocol, Socket, Type};
        let mut sockets = Vec::new();
        for addr in addrs {
            for (ty, proto) in [(Type::DGRAM, Protocol::UDP), (Type::STREAM, Protocol::TCP)] {
                let Ok(s) = Socket::new(Domain::IPV4, ty, Some(proto)) else {
                    continue;
                };
                // TCP: connections the server accepted may linger in TIME_WAIT.
                let _ = s.set_reuse_address(ty == Type::STREAM);
                if s.bind(&(*addr).into()).is_ok() {
                    sockets.push(s);
                }
            }
        }
        PortHold { _sockets: sockets }
    }
}

/// Reserves a port: see [`Reserved`].
///
/// Taken from 10000–19999, below the kernel's ephemeral range (the ports it gives
/// outgoing sockets) and below the 20000–31999 of `scripts/dev-cluster`: a port
/// released for a server to bind cannot be taken meanwhile by somebody's outgoing
/// connection or query (`rndc` once found BIND's control port taken by a load
/// generator's socket). On a machine whose ephemeral range reaches down there,
/// the kernel picks instead.
pub fn reserve_port() -> Reserved {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOW: u32 = 10_000;
    const SPAN: u32 = 10_000;
    // Read once. Each test process starts somewhere else in the range, so that
    // two test binaries (or two runs) rarely try the same ports.
    static BELOW_EPHEMERAL: OnceLock<bool> = OnceLock::new();
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let below_ephemeral =
        *BELOW_EPHEMERAL.get_or_init(|| ephemeral_low().is_some_and(|low| low >= LOW + SPAN));
    let next =
        NEXT.get_or_init(|| AtomicU32::new(getrandom::u32().unwrap_or(std::process::id()) % SPAN));
    for _ in 0..SPAN {
        let (udp, port) = if below_ephemeral {
            let port = (LOW + next.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
            match UdpSocket::bind(("127.0.0.1", port)) {
                Ok(udp) => (udp, port),
                Err(_) => continue,
            }
        } else {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket on loopback");
            let port = udp.local_addr().expect("local address").port();
            (udp, port)
        };
        let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        let mut given = GIVEN.lock().unwrap();
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Reserved {
                port,
                _held: (udp, tcp),
            };
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// The lowest port the kernel gives outgoing sockets, if it says.
fn ephemeral_low() -> Option<u32> {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The SOA serial `server` answers for `zone`, if it answers.
async fn soa_serial(server: SocketAddr, zone: &str) -> Option<u32> {
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    let mut b = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            server.ip(),
            true,
            vec![udp, tcp],
        )]),
        TokioRuntimeProvider::default(),
    );
    b.options_mut().cache_size = 0;
    b.options_mut().attempts = 1;
    b.options_mut().timeout = Duration::from_millis(500);
    let r = b.build().ok()?;
    let lookup = r.lookup(format!("{zone}."), RecordType::SOA).await.ok()?;
    lookup.answers().iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}
