//! A real BIND primary for the rfc2136 backend: one dynamic zone on 127.0.0.1 (a
//! free port), updatable and transferable with one TSIG key, the way an operator's
//! users run it. Tests query it with `dig` and change it by hand with `nsupdate`,
//! both signed with the same key.
//!
//! Stopping and starting it again keeps the port, the configuration and the
//! zone's journal, so what was published survives like on a real server. When
//! `named` cannot start, [`BindPrimary::start`] panics with its log: nothing skips.

use std::fs;
// One allocator for every server the tests start: it never hands out a port
// twice in this process.
use super::dns_topology::PortHold;
pub use super::dns_topology::free_port;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TSIG key's name in named.conf and in the operator's flags.
pub const KEY_NAME: &str = "anypost-e2e-key";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `named` serving one dynamic zone. Dropping it stops it.
pub struct BindPrimary {
    dir: tempfile::TempDir,
    zone: String,
    addr: SocketAddr,
    secret: String,
    named: Option<Child>,
    /// The port while `named` is stopped on purpose.
    hold: Option<PortHold>,
}

impl BindPrimary {
    /// Starts BIND with `zone` (SOA, NS `ns1.<zone>`, and `ns1`'s address, nothing
    /// else) and returns once it answers for the zone.
    pub async fn start(zone: &str) -> BindPrimary {
        let dir = tempfile::Builder::new()
            .prefix("anypost-rfc2136-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the OS random source works");
        let secret = data_encoding::BASE64.encode(&raw);
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let zone_file = dir.path().join("zone.db");
        fs::write(
            &zone_file,
            format!(
                "$ORIGIN {zone}.\n$TTL 3600\n\
                 @ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 1209600 60\n\
                 @ IN NS ns1.{zone}.\n\
                 ns1 IN A 127.0.0.1\n"
            ),
        )
        .expect("writing the zone file");
        fs::write(dir.path().join("tsig.secret"), format!("{secret}\n")).expect("secret file");
        // Same length and alphabet, another secret: the server answers BADSIG.
        let mut wrong = [0u8; 32];
        getrandom::fill(&mut wrong).expect("the OS random source works");
        fs::write(
            dir.path().join("wrong.secret"),
            data_encoding::BASE64.encode(&wrong),
        )
        .expect("secret file");
        let mut bind = BindPrimary {
            dir,
            zone,
            addr,
            secret,
            named: None,
            hold: None,
        };
        bind.write_conf(true);
        bind.start_again().await;
        bind
    }

    /// Starts `named` again after [`Self::stop`] (same port, zone and journal) and
    /// returns once it answers for the zone.
    pub async fn start_again(&mut self) {
        assert!(self.named.is_none(), "named is already running");
        self.hold = None;
        let log = self.dir.path().join("named.log");
        let out = fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(tool("named"))
            .args(["-g", "-c"])
            .arg(self.dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("could not run named ({}): {e}", tool("named").display()));
        self.named = Some(child);
        let start = Instant::now();
        loop {
            if self.serial().is_some() {
                return;
            }
            if let Some(Ok(Some(status))) = self.named.as_mut().map(Child::try_wait) {
                panic!("named exited during startup ({status})\n{}", self.logs());
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "named not answering for {} after {START_TIMEOUT:?}\n{}",
                    self.zone,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Restarts `named` (same port, zone and journal) accepting UPDATEs signed
    /// with the key, or refusing every UPDATE while still answering queries and
    /// transfers: a server that is up but will not take the operator's changes.
    pub async fn accept_updates(&mut self, accept: bool) {
        self.stop();
        self.write_conf(accept);
        self.start_again().await;
    }

    fn write_conf(&self, accept_updates: bool) {
        let d = self.dir.path().display();
        let port = self.addr.port();
        let zone = &self.zone;
        let secret = &self.secret;
        let zf = self.dir.path().join("zone.db");
        let zf = zf.display();
        let updates = if accept_updates {
            format!("key \"{KEY_NAME}\";")
        } else {
            "none;".to_string()
        };
        fs::write(
            self.dir.path().join("named.conf"),
            format!(
                r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify no;
}};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{zone}" {{
    type primary;
    file "{zf}";
    allow-update {{ {updates} }};
    allow-transfer {{ key "{KEY_NAME}"; }};
}};
"#
            ),
        )
        .expect("writing named.conf");
    }

    /// Stops `named` (SIGKILL, like a crash: only the journal keeps the updates).
    /// Its port stays held until [`Self::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.named.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.hold = Some(PortHold::take(&[self.addr]));
        }
    }

    /// IP:PORT of the server (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// A file holding the key's secret in base64, for `--tsig-secret-file`.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.path().join("tsig.secret")
    }

    /// A file holding a secret the server does not know under [`KEY_NAME`].
    pub fn wrong_secret_file(&self) -> PathBuf {
        self.dir.path().join("wrong.secret")
    }

    /// `named`'s log so far.
    pub fn logs(&self) -> String {
        format!(
            "--- named.log ---\n{}",
            fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
        )
    }

    /// `dig +short` answers for `name` (relative to the zone unless it ends with
    /// a dot), as dig prints them.
    pub fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = self.dig_raw(&["+short", &self.absolute(name), rtype]);
        out.lines().map(str::to_string).collect()
    }

    /// The TXT data at `name`, its character-strings joined (as DKIM and SPF
    /// verifiers read it).
    pub fn txt(&self, name: &str) -> Vec<String> {
        self.dig(name, "TXT")
            .iter()
            .map(|line| {
                line.split('"')
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 1)
                    .map(|(_, s)| s)
                    .collect::<String>()
            })
            .collect()
    }

    /// The whole zone by AXFR (signed), one record a line, comments and the
    /// transfer's TSIG records dropped. Panics when the transfer fails: a failed
    /// transfer is not an empty zone.
    #[track_caller]
    pub fn axfr(&self) -> Vec<String> {
        self.try_axfr().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::axfr`], or why the transfer failed (dig's exit status, a
    /// "Transfer failed" comment, or a transfer that does not begin and end with
    /// the zone's SOA).
    pub fn try_axfr(&self) -> Result<Vec<String>, String> {
        let key = format!("hmac-sha256:{KEY_NAME}:{}", self.secret);
        axfr(self.addr, &self.zone, Some(&key))
    }

    /// The SOA serial served now, if named answers.
    pub fn serial(&self) -> Option<u32> {
        let out = Command::new(tool("dig"))
            .args(["+short", "+time=1", "+tries=1", "-p"])
            .arg(self.addr.port().to_string())
            .arg(format!("@{}", self.addr.ip()))
            .args([&format!("{}.", self.zone), "SOA"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(2)?.parse().ok()
    }

    /// Runs `nsupdate` signed with the key; `commands` are nsupdate lines
    /// (e.g. `update add stale.<zone> 60 TXT "x"`); `send` is appended.
    #[track_caller]
    pub fn nsupdate(&self, commands: &[String]) {
        let key = format!("hmac-sha256:{KEY_NAME}:{}", self.secret);
        let script = format!(
            "server {} {}\nzone {}\n{}\nsend\n",
            self.addr.ip(),
            self.addr.port(),
            self.zone,
            commands.join("\n")
        );
        let mut child = Command::new(tool("nsupdate"))
            .args(["-y", &key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run nsupdate: {e}"));
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())
                .expect("writing to nsupdate");
        }
        let out = child.wait_with_output().expect("nsupdate runs");
        assert!(
            out.status.success(),
            "nsupdate failed: {}{}\nscript:\n{script}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn absolute(&self, name: &str) -> String {
        if name.ends_with('.') {
            name.to_string()
        } else if name.is_empty() || name == "@" {
            format!("{}.", self.zone)
        } else {
            format!("{name}.{}.", self.zone)
        }
    }

    /// dig's output; panics when dig gets no answer (an unreachable server is
    /// not a name without records).
    #[track_caller]
    fn dig_raw(&self, args: &[&str]) -> String {
        let out = Command::new(tool("dig"))
            .args(["+time=2", "+tries=3", "-p"])
            .arg(self.addr.port().to_string())
            .arg(format!("@{}", self.addr.ip()))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run dig: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "dig {args:?} at {} failed ({}): {text}{}",
            self.addr,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

impl Drop for BindPrimary {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        }
        self.stop();
    }
}

/// A system tool: from PATH, else from /usr/sbin (where Debian puts the daemons).
pub fn tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    });
    on_path.unwrap_or_else(|| Path::new("/usr/sbin").join(name))
}

/// The whole zone `zone` by AXFR from `server` (signed with `key`,
/// `alg:name:secret`, if given), one record a line with single spaces, comments
/// and TSIG records left out. A transfer that fails, or does not hold a whole
/// zone between two SOAs, is an error.
pub fn axfr(server: SocketAddr, zone: &str, key: Option<&str>) -> Result<Vec<String>, String> {
    let mut dig = Command::new(tool("dig"));
    dig.args(["+time=2", "+tries=1", "-p"])
        .arg(server.port().to_string())
        .arg(format!("@{}", server.ip()));
    if let Some(key) = key {
        dig.args(["-y", key]);
    }
    let out = dig
        .args(["+nocmd", "+nostats", "AXFR", zone])
        .output()
        .unwrap_or_else(|e| panic!("could not run dig: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let failed = |why: &str| {
        Err(format!(
            "AXFR of {zone} from {server} failed ({why}): {}\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    if !out.status.success() {
        return failed("dig's exit status");
    }
    if text.lines().any(|l| l.starts_with("; Transfer failed")) {
        return failed("transfer failed");
    }
    let records: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        // dig prints the transfer's TSIG records too; they are not zone data.
        .filter(|l| l.split(' ').nth(3) != Some("TSIG"))
        .collect();
    let soa = |l: Option<&String>| l.and_then(|l| l.split(' ').nth(3)) == Some("SOA");
    if records.len() < 2 || !soa(records.first()) || !soa(records.last()) {
        return failed("not a whole zone between two SOAs");
    }
    Ok(records)
}
