//! `make demo` end to end: the script a newcomer runs first, on the shared local
//! control plane, then `make demo-down` leaving nothing behind; with the operator
//! as a process, and as the chart's pods on the local node (`make demo MODE=pods`).

use crate::support::node::node;
use crate::support::{cluster, eventually, kubectl_ok, repo_root};
use std::process::Command;
use std::time::Duration;

fn demo(arg: &str, mode: &str) -> (bool, String) {
    let out = Command::new(repo_root().join("scripts/demo"))
        .arg(arg)
        .env("DEMO_MODE", mode)
        .env(
            "ANYPOST_OPERATOR_BIN",
            env!("CARGO_BIN_EXE_anypost-operator"),
        )
        .env("DEMO_TIMEOUT", "120")
        .output()
        .expect("running scripts/demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn port_free(port: u16) -> bool {
    std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The demo verifies two domains, explains the third and cleans up. Both modes in
/// one test, one after the other: they use the same namespaces and
/// files, and a second test waiting for the first would hold a test thread idle.
#[tokio::test]
async fn the_demo_runs_as_a_process_and_as_pods() {
    cluster();
    run_the_demo("process");
    node();
    run_the_demo("pods");
    // The release is gone with its pods; the node stays for whoever else uses it.
    eventually(Duration::from_secs(120), || async {
        let left = kubectl_ok(&[
            "get",
            "deployments,pods,services",
            "-n",
            "anypost-system",
            "-l",
            "app.kubernetes.io/instance=anypost",
            "-o",
            "name",
        ]);
        if left.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("left after demo down: {left}"))
        }
    })
    .await;
}

fn run_the_demo(mode: &str) {
    let (ok, out) = demo("up", mode);
    assert!(ok, "scripts/demo up failed:\n{out}");
    // The final table: two verified, the mistaken one pending with its code.
    let last_table: Vec<&str> = out
        .split("NAME               DOMAIN")
        .last()
        .unwrap()
        .lines()
        .collect();
    let row = |name: &str| {
        last_table
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(&row("example-com ")[1..3], ["example.com", "verified"]);
    assert_eq!(
        &row("mail-example-org")[1..4],
        ["mail.example.org", "verified", "verified"]
    );
    assert_eq!(
        &row("example-net")[1..4],
        ["example.net", "pending", "apex_cname_missing"]
    );
    assert!(
        out.contains("A CNAME was found at anypost.example.net.example.net"),
        "the describe output explains the mistake:\n{out}"
    );
    assert!(out.contains("make demo-down"), "{out}");

    // Another shell sees the same.
    let all = kubectl_ok(&["get", "sd", "-A"]);
    assert!(
        all.lines().any(|l| l.starts_with("demo ")
            && l.contains("example-net")
            && l.contains("apex_cname_missing")),
        "{all}"
    );

    if mode == "pods" {
        assert!(
            out.contains("all pods Ready (2 controller, 2 DNS)"),
            "the demo ran without the chart's pods:\n{out}"
        );
    }

    // Running it again does not break anything.
    let (ok, again) = demo("up", mode);
    assert!(ok, "a second scripts/demo up failed:\n{again}");

    let ports = std::fs::read_to_string(repo_root().join("target/demo/ports.env")).unwrap();
    let processes: &[&str] = if mode == "pods" {
        &["named.pid.demo", "unbound.pid.demo"]
    } else {
        &["operator.pid", "named.pid.demo", "unbound.pid.demo"]
    };
    let pids: Vec<String> = processes
        .iter()
        .map(|f| {
            std::fs::read_to_string(repo_root().join("target/demo").join(f))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    let (ok, down) = demo("down", mode);
    assert!(ok, "scripts/demo down failed:\n{down}");
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "process {pid} still runs after demo down"
        );
    }
    for line in ports.lines() {
        let port: u16 = line.split('=').nth(1).unwrap().parse().unwrap();
        assert!(port_free(port), "{line} still bound after demo down");
    }
    // The shared control plane was running before, so the demo left it alone.
    assert!(down.contains("left running"), "{down}");
    kubectl_ok(&["get", "--raw", "/readyz"]);
}
