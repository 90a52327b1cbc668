//! A real BIND secondary of the embedded zone: `named` on 127.0.0.1 (a free
//! port) transferring the zone from the operator as its hidden primary, with a
//! TSIG key, and taking NOTIFY from it. When `named` cannot start or never
//! loads the zone, [`BindSecondary::start`] panics with its log: nothing skips.

use super::bind_rfc2136::{free_port, tool};
use std::fs;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `named` secondary for one zone. Dropping it stops it.
pub struct BindSecondary {
    dir: tempfile::TempDir,
    zone: String,
    addr: SocketAddr,
    named: Child,
}

/// A key clause as `tsig-keygen` prints it, for both sides.
pub fn key_clause(name: &str, secret: &str) -> String {
    format!("key \"{name}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n")
}

/// A port for the secondary, chosen before either side starts (the primary
/// sends NOTIFY to it).
pub fn reserve_port() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

impl BindSecondary {
    /// Starts BIND on `addr` as a secondary of `zone` from `primary`, using the
    /// key clause `key` for transfers; returns once it serves the zone.
    pub async fn start(
        zone: &str,
        addr: SocketAddr,
        primary: SocketAddr,
        key_name: &str,
        key: &str,
    ) -> BindSecondary {
        let dir = tempfile::Builder::new()
            .prefix("anypost-secondary-")
            .tempdir()
            .expect("creating a temporary directory");
        let d = dir.path().display();
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        fs::write(
            dir.path().join("named.conf"),
            format!(
                r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
{key}
zone "{zone}" {{
    type secondary;
    primaries {{ {pip} port {pport} key "{key_name}"; }};
    file "{d}/secondary.db";
}};
"#,
                port = addr.port(),
                pip = primary.ip(),
                pport = primary.port(),
            ),
        )
        .expect("writing named.conf");
        let log = fs::File::create(dir.path().join("named.log")).expect("log file");
        let named = Command::new(tool("named"))
            .args(["-g", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("could not run named: {e}"));
        let mut s = BindSecondary {
            dir,
            zone,
            addr,
            named,
        };
        let start = Instant::now();
        while s.serial().is_none() {
            if let Ok(Some(status)) = s.named.try_wait() {
                panic!("named exited during startup ({status})\n{}", s.logs());
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "the secondary did not load {} within {START_TIMEOUT:?}\n{}",
                s.zone,
                s.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `named`'s log so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The zone's SOA serial the secondary serves, if it serves the zone.
    pub fn serial(&self) -> Option<u32> {
        let out = self.dig(&[&format!("{}.", self.zone), "SOA"]);
        out.split_whitespace().nth(2)?.parse().ok()
    }

    /// `dig +short` at the secondary.
    pub fn dig(&self, args: &[&str]) -> String {
        let out = Command::new(tool("dig"))
            .args(["+short", "+norecurse", "+time=1", "+tries=1", "-p"])
            .arg(self.addr.port().to_string())
            .arg(format!("@{}", self.addr.ip()))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run dig: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for BindSecondary {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        }
        let _ = self.named.kill();
        let _ = self.named.wait();
    }
}
