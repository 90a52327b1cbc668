//! The programs the GitOps and observability tests run: the Go tools of
//! `tests/tools` (built by `scripts/test-tools` on first use, then cached), and
//! promtool from Debian's prometheus package. A tool that is missing or cannot be
//! built fails the test with the reason: nothing skips.

use super::repo_root;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The path of `name` (argocd-health, kstatus, kube-state-metrics), built for this
/// checkout's `tests/tools` if it is not yet.
pub fn test_tool(name: &str) -> PathBuf {
    static PATHS: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    // One build at a time (the script also locks), and one answer per run.
    let mut paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
    let found = paths.entry(name.to_string()).or_insert_with(|| {
        let script = repo_root().join("scripts/test-tools");
        let out = Command::new(&script)
            .args(["path", name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`scripts/test-tools path {name}` failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match found {
        Ok(p) => p.clone(),
        Err(e) => panic!("the test tool {name} is not available:\n{e}"),
    }
}

/// Runs `program args` with `stdin`; returns (success, stdout, stderr).
pub fn run(program: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", program.display()));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("waiting for a tool");
    let _ = writer.join();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A health verdict: Argo CD's (status, message) or kstatus' (status, message).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Verdict {
    pub status: String,
    pub message: String,
}

/// The Argo CD health check in `deploy/argocd/…/health.lua`.
pub fn health_lua() -> PathBuf {
    repo_root().join("deploy/argocd/anypost.com/SendingDomain/health.lua")
}

/// What Argo CD's health check makes of `object` (JSON, as `kubectl get -o json`
/// prints it), run as Argo CD runs a script from argocd-cm: without Lua's other
/// standard libraries.
pub fn argocd_health(object: &str) -> Verdict {
    let script = health_lua();
    let (ok, out, err) = run(
        &test_tool("argocd-health"),
        &["eval", script.to_str().expect("UTF-8 path"), "-"],
        object,
    );
    assert!(ok, "argocd-health failed: {err}\nobject: {object}");
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("argocd-health printed {out:?}: {e}"))
}

/// What the kstatus library computes for `object` (JSON).
pub fn kstatus(object: &str) -> Verdict {
    let (ok, out, err) = run(&test_tool("kstatus"), &["-"], object);
    assert!(ok, "kstatus failed: {err}\nobject: {object}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("kstatus printed {out:?}: {e}"))
}

/// promtool, from Debian's prometheus package.
pub fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|c| c.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("promtool is not installed: scripts/install-test-deps installs it (Debian's prometheus package)")
    })
}

/// What the `openssl` command makes of a private key in PEM, independently of
/// the crate's own PEM, RSA and SPKI code (which the key generator shares):
/// `(bits, public key)`, the public key as base64 SubjectPublicKeyInfo, the form
/// of DKIM's `p=` and of `status.dkim.selectors[].publicKey`. Fails the test
/// when openssl rejects the key (`openssl rsa -check`).
#[track_caller]
pub fn openssl_key(pem: &str) -> (u32, String) {
    let openssl = Path::new("openssl");
    let (ok, out, err) = run(openssl, &["rsa", "-check", "-noout"], pem);
    assert!(
        ok && out.trim() == "RSA key ok",
        "openssl rsa -check: {out}{err}"
    );
    let (ok, text, err) = run(openssl, &["pkey", "-noout", "-text"], pem);
    assert!(ok, "openssl pkey -text: {err}");
    let bits = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Private-Key: ("))
        .and_then(|l| l.split(' ').next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no size in openssl's text: {text}"));
    let (ok, public, err) = run(openssl, &["pkey", "-pubout"], pem);
    assert!(ok, "openssl pkey -pubout: {err}");
    let spki: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!spki.is_empty(), "openssl printed no public key: {public}");
    (bits, spki)
}

/// Signs a message for `domain` with `selector` and the private key `pem`, then
/// verifies it, both with dkimpy (Debian's python3-dkim), an implementation
/// independent of the operator's: the verifier's DNS look-up goes to the
/// recursive resolver at `resolver`, so the key is found through the customer's
/// `<selector>._domainkey.<domain>` CNAME. Returns dkimpy's verdict and log.
pub fn dkimpy_sign_and_verify(
    pem: &str,
    selector: &str,
    domain: &str,
    resolver: std::net::SocketAddr,
) -> (bool, String) {
    const SCRIPT: &str = r#"
import logging, subprocess, sys
import dkim
selector, domain, ip, port = sys.argv[1:5]
key = sys.stdin.buffer.read()
message = (
    "From: Sender <sender@" + domain + ">\r\n"
    "To: someone@example.org\r\n"
    "Subject: DKIM through the customer's CNAME\r\n"
    "Message-ID: <e2e@" + domain + ">\r\n"
    "\r\n"
    "Signed by dkimpy with the operator's key, verified by dkimpy through DNS.\r\n"
).encode()
signature = dkim.sign(message, selector.encode(), domain.encode(), key,
                      include_headers=[b"from", b"to", b"subject", b"message-id"])
def txt(name, timeout=5):
    out = subprocess.run(
        ["dig", "@" + ip, "-p", port, "+time=2", "+tries=2", "+short",
         name.decode().rstrip(".") + ".", "TXT"],
        capture_output=True, text=True, check=True).stdout
    records = ["".join(l.strip().strip('"').split('" "'))
               for l in out.splitlines() if l.startswith('"')]
    print("DNS", name.decode(), "->", records, file=sys.stderr)
    return records[0].encode() if len(records) == 1 else b""
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
ok = dkim.verify(signature + message, logger=logging.getLogger("dkim"), dnsfunc=txt)
print("verified" if ok else "NOT verified")
sys.exit(0 if ok else 1)
"#;
    let (ok, out, err) = run(
        // Debian's python, where python3-dkim installs (not a pyenv on PATH).
        Path::new("/usr/bin/python3"),
        &[
            "-c",
            SCRIPT,
            selector,
            domain,
            &resolver.ip().to_string(),
            &resolver.port().to_string(),
        ],
        pem,
    );
    (ok && out.trim() == "verified", format!("{out}{err}"))
}
