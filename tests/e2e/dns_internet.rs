//! The embedded server as the internet sees it: a real BIND secondary of the
//! zone (the operator as hidden primary: TSIG-signed transfers, NOTIFY, IXFR),
//! the TCP limits, and rate limiting with cookies, against the real sockets on
//! loopback. No cluster: the zone is built from hand-made SendingDomains.

use crate::dns_embedded::{T1, T2, ZONE, config, domains, name};
use crate::support::bind_secondary::{BindSecondary, key_clause, reserve_port};
use crate::support::eventually;
use anypost_operator::adapters::dns::embedded::{
    CookieSecrets, DnsServer, RrlConfig, ServeOptions, TcpLimits, TransferConfig, TransferKeys,
    ZoneHandle,
};
use anypost_operator::core::api::SendingDomain;
use anypost_operator::core::trust::Trust;
use anypost_operator::core::zone::desired_zone;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running embedded server on 127.0.0.1 with a free port; stopped on drop.
struct Running {
    handle: ZoneHandle,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a server with `options` on its own runtime and thread.
fn start(domains: &[SendingDomain], options: ServeOptions) -> Running {
    let handle = ZoneHandle::new();
    handle
        .publish(desired_zone(&config(), &Trust::as_written(), domains))
        .expect("the first publish serves a zone");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = handle.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the DNS server");
        rt.block_on(async move {
            let server = DnsServer::bind("127.0.0.1:0".parse().unwrap())
                .await
                .expect("binding loopback port 0");
            addr_tx.send(server.local_addr()).unwrap();
            let stopped = async {
                let _ = stopped.await;
            };
            server
                .run_with(served, options, stopped)
                .await
                .expect("the DNS server runs until stopped");
        });
    });
    let addr = addr_rx.recv().expect("the DNS server started");
    Running {
        handle,
        addr,
        stop: Some(stop),
    }
}

/// A random TSIG secret in base64.
fn random_secret() -> String {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the OS random source works");
    data_encoding::BASE64.encode(&raw)
}

/// `dig` against the embedded server; all of its output.
fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run dig (Debian package bind9-dnsutils): {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

const KEY: &str = "anypost-transfer";

/// The server's metrics as /metrics shows them.
fn metrics(handle: &ZoneHandle) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    handle.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_secondary_follows_through_notify_and_ixfr_and_wrong_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = random_secret();
    let clause = key_clause(KEY, &secret);
    let key_file = dir.path().join("transfer.key");
    std::fs::write(&key_file, &clause).unwrap();
    let secondary = reserve_port();
    let options = ServeOptions {
        transfer: TransferConfig {
            keys: TransferKeys::from_files(&[key_file]).expect("the key file reads"),
            notify: vec![secondary],
        },
        ..Default::default()
    };
    let s = start(&domains()[..1], options);
    let bind = BindSecondary::start(ZONE, secondary, s.addr, KEY, &clause).await;
    let mx = bind.dig(&[&name("", T1), "MX"]);
    assert!(mx.contains("bounce.anypost.example."), "{mx}");
    assert_eq!(bind.serial(), s.handle.serial());

    // A new SendingDomain: NOTIFY, then IXFR, within 2 s.
    let published = Instant::now();
    s.handle
        .publish(desired_zone(&config(), &Trust::as_written(), &domains()))
        .unwrap();
    let b = &bind;
    eventually(Duration::from_secs(2), || async move {
        let mx = b.dig(&[&name("", T2), "MX"]);
        mx.contains("bounce").then_some(()).ok_or(mx)
    })
    .await;
    assert!(published.elapsed() < Duration::from_secs(2));
    let transfers = metrics(&s.handle);
    assert!(
        transfers.contains(r#"dns_transfers_total{kind="ixfr"} 1"#),
        "the secondary did not use IXFR:\n{transfers}"
    );

    // A deleted one disappears from the secondary too.
    let deleted = Instant::now();
    s.handle
        .publish(desired_zone(
            &config(),
            &Trust::as_written(),
            &domains()[1..],
        ))
        .unwrap();
    eventually(Duration::from_secs(2), || async move {
        let mx = b.dig(&[&name("", T1), "MX"]);
        mx.is_empty().then_some(()).ok_or(mx)
    })
    .await;
    assert!(deleted.elapsed() < Duration::from_secs(2));
    assert_eq!(bind.serial(), s.handle.serial());
    assert!(bind.dig(&[&name("", T2), "MX"]).contains("bounce"));

    // The right key transfers; a wrong secret, an unknown key or none do not.
    let zone = format!("{ZONE}.");
    let ok = dig(
        s.addr,
        &["-y", &format!("hmac-sha256:{KEY}:{secret}"), &zone, "AXFR"],
    );
    assert!(ok.contains("XFR size"), "{ok}");
    for (what, args) in [
        (
            "a wrong secret",
            vec![
                "-y".to_string(),
                format!("hmac-sha256:{KEY}:{}", random_secret()),
            ],
        ),
        (
            "an unknown key",
            vec!["-y".to_string(), format!("hmac-sha256:stranger:{secret}")],
        ),
        ("no key", vec![]),
    ] {
        let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
        argv.extend([zone.as_str(), "AXFR"]);
        let out = dig(s.addr, &argv);
        assert!(
            out.contains("Transfer failed") && !out.contains("XFR size"),
            "{what}: {out}"
        );
    }
    // A wrong key also gets no IXFR.
    let ixfr = dig(
        s.addr,
        &[
            "-y",
            &format!("hmac-sha256:{KEY}:{}", random_secret()),
            &zone,
            "IXFR=1",
        ],
    );
    assert!(!ixfr.contains("bounce"), "{ixfr}");
}

/// Reads from `s` until the server closes it; how long that took.
fn closed_after(mut s: &TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

/// One query for the MX of T1 over `s`; whether it was answered.
fn tcp_query(s: &mut TcpStream, id: u16) -> bool {
    let q = query(id, &name("", T1), 15, None);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let mut len = [0u8; 2];
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    if s.write_all(&framed).is_err() || s.read_exact(&mut len).is_err() {
        return false;
    }
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).is_ok() && buf[..2] == id.to_be_bytes()
}

#[tokio::test]
async fn tcp_connections_are_capped_and_closed_when_idle_or_old() {
    let limits = TcpLimits {
        max_connections: 3,
        idle_timeout: Duration::from_millis(400),
        lifetime: Duration::from_millis(1500),
        io_timeout: Duration::from_millis(400),
    };
    let s = start(
        &domains(),
        ServeOptions {
            tcp: limits,
            ..Default::default()
        },
    );

    // Idle: closed after the idle timeout.
    let idle = TcpStream::connect(s.addr).unwrap();
    let t = closed_after(&idle, Duration::from_secs(3)).expect("an idle connection is closed");
    assert!(
        t >= Duration::from_millis(300) && t < Duration::from_secs(2),
        "{t:?}"
    );

    // Busy below the idle timeout: still closed at the end of its lifetime.
    let mut busy = TcpStream::connect(s.addr).unwrap();
    let opened = Instant::now();
    let mut answered = 0;
    while tcp_query(&mut busy, answered + 1) {
        answered += 1;
        std::thread::sleep(Duration::from_millis(200));
        assert!(opened.elapsed() < Duration::from_secs(5), "never closed");
    }
    assert!(answered >= 4, "{answered} answers before the close");
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(1400) && lived < Duration::from_secs(3),
        "{lived:?}"
    );

    // A message started but never finished: closed after the I/O timeout.
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.write_all(&[0, 40, 1, 2]).unwrap();
    let t = closed_after(&slow, Duration::from_secs(3)).expect("a stalled message is dropped");
    assert!(t < Duration::from_secs(1), "{t:?}");

    // At the cap, a client from another network takes the place of an idle
    // connection of the network holding them all, and is answered; one more
    // from that network is turned away instead.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut fresh = connect_from("127.55.0.1", s.addr).await;
    assert!(
        tcp_query(&mut fresh, 77),
        "a new client is answered at the cap"
    );
    let evicted = held
        .iter()
        .filter(|h| closed_after(h, Duration::from_millis(100)).is_some())
        .count();
    assert_eq!(evicted, 1, "one idle connection made room");
    let more = TcpStream::connect(s.addr).unwrap();
    assert!(
        closed_after(&more, Duration::from_secs(1)).is_some(),
        "the flooding network gets no more"
    );
    assert!(
        tcp_query(&mut fresh, 78),
        "the new client keeps its connection"
    );
}

/// A TCP connection to `to` from the local address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(to).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// A query with EDNS and, if given, a cookie option.
fn query(id: u16, name: &str, rtype: u16, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&rtype.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    let cookie = cookie.unwrap_or(&[]);
    let rdlen = if cookie.is_empty() {
        0
    } else {
        cookie.len() + 4
    };
    q.extend_from_slice(&(rdlen as u16).to_be_bytes());
    if !cookie.is_empty() {
        q.extend_from_slice(&[0, 10]);
        q.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
        q.extend_from_slice(cookie);
    }
    q
}

/// The cookie option's data in a response, if any.
fn response_cookie(r: &[u8]) -> Option<Vec<u8>> {
    let m = hickory_proto::op::Message::from_vec(r).ok()?;
    let edns = m.edns?;
    edns.options()
        .as_ref()
        .iter()
        .find_map(|(code, o)| match (code, o) {
            (
                hickory_proto::rr::rdata::opt::EdnsCode::Cookie,
                hickory_proto::rr::rdata::opt::EdnsOption::Unknown(_, d),
            ) => Some(d.clone()),
            _ => None,
        })
}

/// Sends `n` copies of `q` (with fresh ids) from `sock`; (answered, truncated).
/// The answers are read while the queries go out, so that none is lost to a full
/// socket buffer on a loaded machine.
fn burst(sock: &UdpSocket, to: SocketAddr, n: u16, q: &[u8]) -> (usize, usize) {
    let reader = sock.try_clone().unwrap();
    // A second of silence ends the burst: generous on a loaded machine.
    reader
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let reading = std::thread::spawn(move || {
        let (mut answered, mut truncated) = (0, 0);
        let mut buf = [0u8; 4096];
        while reader.recv(&mut buf).is_ok() {
            if buf[2] & 0x02 != 0 {
                truncated += 1;
            } else {
                answered += 1;
            }
        }
        (answered, truncated)
    });
    let mut q = q.to_vec();
    for id in 0..n {
        q[..2].copy_from_slice(&id.to_be_bytes());
        sock.send_to(&q, to).unwrap();
        // Loopback UDP drops what a full socket queue cannot take: a pause every
        // ten queries lets a server on a loaded machine keep up, while the burst
        // stays far above any rate limit (100 queries in a few milliseconds).
        if id % 10 == 9 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    reading.join().unwrap()
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_a_client_with_a_server_cookie_is_not() {
    let options = ServeOptions {
        rrl: RrlConfig {
            rate: 10,
            slip: 2,
            ..Default::default()
        },
        cookies: Some(CookieSecrets::new(b"test key shared by replicas", 86_400)),
        ..Default::default()
    };
    let s = start(&domains(), options);
    let dkim = name("anypost1._domainkey", T1);

    // Without a cookie: about the rate is answered, about half the rest slips.
    let flooder = UdpSocket::bind("127.66.0.1:0").unwrap();
    let (answered, truncated) = burst(&flooder, s.addr, 100, &query(0, &dkim, 16, None));
    assert!((10..=20).contains(&answered), "{answered} answered");
    assert!((35..=55).contains(&truncated), "{truncated} truncated");

    // A client that learnt its server cookie is answered every time.
    let client = UdpSocket::bind("127.55.0.1:0").unwrap();
    client
        .send_to(&query(1, &dkim, 16, Some(&[9; 8])), s.addr)
        .unwrap();
    let mut buf = [0u8; 4096];
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let n = client.recv(&mut buf).unwrap();
    let cookie = response_cookie(&buf[..n]).expect("the response carries a server cookie");
    assert_eq!(cookie.len(), 24);
    assert_eq!(cookie[..8], [9; 8]);
    let (answered, truncated) = burst(&client, s.addr, 100, &query(0, &dkim, 16, Some(&cookie)));
    // Never limited: nothing slipped, and (loopback UDP being UDP on a loaded
    // machine) at most a handful lost, where a limited client gets 20 at most.
    assert_eq!(truncated, 0, "{answered} answered, {truncated} truncated");
    assert!(answered >= 95, "{answered} answered, {truncated} truncated");

    // The same cookie from another address proves nothing.
    let thief = UdpSocket::bind("127.77.0.1:0").unwrap();
    let (answered, _) = burst(&thief, s.addr, 100, &query(0, &dkim, 16, Some(&cookie)));
    assert!(answered <= 20, "{answered}");

    // dig, which speaks cookies, gets one back.
    let out = dig(s.addr, &["+cookie", &name("", T1), "MX"]);
    assert!(out.contains("COOKIE:") && out.contains("(good)"), "{out}");
}
