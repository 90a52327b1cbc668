//! The abuse half of `scripts/bench-dns`: floods a DNS server on loopback and
//! measures what a victim and a legitimate client see. Bounded in count and
//! time; sends only to the server given (a loopback address).
//!
//!   dns_flood udp SERVER QUERIES SECONDS RATE
//!     A spoofed-source flood: RATE queries/s for DKIM keys (the largest answers)
//!     from 64 sources in 127.66.0.0/16 (16 /24s), none with a cookie, standing
//!     for victims whose addresses an attacker forges. Meanwhile a legitimate
//!     client at 127.55.0.1 sends 50 queries/s from the list and, like a
//!     resolver, retries once after 500 ms without an answer, and over TCP when
//!     a response is truncated. Prints
//!     `bytes_in bytes_out legit_sent legit_answered legit_over_tcp`.
//!
//!   dns_flood tcp SERVER QUERIES SECONDS CONNECTIONS PID
//!     CONNECTIONS idle TCP connections from 16 networks in 127.77.0.0/16 held
//!     open (re-opened when closed) while a legitimate client at 127.55.0.1
//!     makes one query per new connection, 20 per second; the server's RSS
//!     (process PID) is sampled throughout. Prints
//!     `held_max legit_sent legit_answered rss_before_kb rss_peak_kb`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

/// A query for `name` of `rtype` with EDNS (1232 bytes), no cookie.
fn query(id: u16, name: &str, rtype: &str) -> Vec<u8> {
    let code: u16 = match rtype {
        "A" => 1,
        "CNAME" => 5,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => 6,
    };
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&code.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    q
}

fn read_queries(path: &str) -> Result<Vec<(String, String)>, Error> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(|l| {
            let (n, t) = l.split_once(' ')?;
            Some((n.to_string(), t.to_string()))
        })
        .collect())
}

/// A TCP connection to `server` from the loopback address `from`.
fn connect_from(
    from: Ipv4Addr,
    server: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&server.into(), timeout)?;
    Ok(s.into())
}

/// The legitimate client's address: in no network the floods use.
const LEGIT: Ipv4Addr = Ipv4Addr::new(127, 55, 0, 1);

/// One query over TCP on a new connection: whether an answer came back.
fn tcp_query(server: SocketAddr, q: &[u8]) -> bool {
    let Ok(mut s) = connect_from(LEGIT, server, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    let mut len = [0u8; 2];
    if s.write_all(&framed).is_err() || s.read_exact(&mut len).is_err() {
        return false;
    }
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).is_ok() && buf[..2] == q[..2]
}

/// Sends `q` and waits for its answer: whether it came truncated, or `None`.
fn exchange(sock: &UdpSocket, server: SocketAddr, q: &[u8], buf: &mut [u8]) -> Option<bool> {
    sock.send_to(q, server).ok()?;
    loop {
        let (n, _) = sock.recv_from(buf).ok()?;
        if n >= 12 && buf[..2] == q[..2] {
            return Some(buf[2] & 0x02 != 0);
        }
    }
}

/// The legitimate client: `per_second` queries from the list until `stop`,
/// each retried over TCP when truncated. (sent, answered, over TCP).
fn legit(
    server: SocketAddr,
    queries: &[(String, String)],
    per_second: u32,
    stop: &AtomicBool,
) -> (u64, u64, u64) {
    let Ok(sock) = UdpSocket::bind((LEGIT, 0)) else {
        return (0, 0, 0);
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    let (mut sent, mut answered, mut tcp) = (0u64, 0u64, 0u64);
    let gap = Duration::from_secs(1) / per_second;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let (name, rtype) = &queries[(sent as usize * 7919) % queries.len()];
        let id = (sent as u16).wrapping_mul(31).wrapping_add(1);
        let q = query(id, name, rtype);
        sent += 1;
        // Like a resolver: one retry after a timeout, TCP after a truncation.
        for _ in 0..2 {
            match exchange(&sock, server, &q, &mut buf) {
                Some(false) => answered += 1,
                Some(true) if tcp_query(server, &q) => {
                    answered += 1;
                    tcp += 1;
                }
                Some(true) => {}
                None => continue,
            }
            break;
        }
        std::thread::sleep(gap.saturating_sub(started.elapsed()));
    }
    (sent, answered, tcp)
}

/// The spoofed-source flood: (bytes sent, bytes the "victims" received).
fn flood(
    server: SocketAddr,
    dkim: &[Vec<u8>],
    seconds: u64,
    rate: u64,
) -> Result<(u64, u64), Error> {
    let mut sockets = Vec::new();
    for i in 0..64u8 {
        let s = UdpSocket::bind((Ipv4Addr::new(127, 66, i / 4, i % 4 + 1), 0))?;
        s.set_nonblocking(true)?;
        sockets.push(s);
    }
    let (mut bytes_in, mut bytes_out, mut sent) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut buf = [0u8; 4096];
    let drain = |bytes_out: &mut u64, buf: &mut [u8]| {
        for s in &sockets {
            while let Ok(n) = s.recv(buf) {
                *bytes_out += n as u64;
            }
        }
    };
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let q = &dkim[sent as usize % dkim.len()];
            if sockets[sent as usize % sockets.len()]
                .send_to(q, server)
                .is_ok()
            {
                bytes_in += q.len() as u64;
            }
            sent += 1;
        }
        drain(&mut bytes_out, &mut buf);
        std::thread::sleep(Duration::from_micros(500));
    }
    let tail = Instant::now() + Duration::from_millis(500);
    while Instant::now() < tail {
        drain(&mut bytes_out, &mut buf);
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((bytes_in, bytes_out))
}

fn udp(
    server: SocketAddr,
    queries: Vec<(String, String)>,
    seconds: u64,
    rate: u64,
) -> Result<(), Error> {
    let dkim: Vec<Vec<u8>> = queries
        .iter()
        .filter(|(n, _)| n.contains("_domainkey"))
        .enumerate()
        .map(|(i, (n, t))| query(i as u16, n, t))
        .collect();
    if dkim.is_empty() {
        return Err("no DKIM queries in the list".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let legit_client = {
        let stop = stop.clone();
        std::thread::spawn(move || legit(server, &queries, 50, &stop))
    };
    let (bytes_in, bytes_out) = flood(server, &dkim, seconds, rate)?;
    stop.store(true, Ordering::Relaxed);
    let (sent, answered, tcp) = legit_client
        .join()
        .map_err(|_| "the legitimate client panicked")?;
    println!("{bytes_in} {bytes_out} {sent} {answered} {tcp}");
    Ok(())
}

/// Resident memory of `pid` in KiB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Holds one idle connection from `from` open until `stop`, re-opening it when
/// closed.
fn hold(server: SocketAddr, from: Ipv4Addr, open: &AtomicU64, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = connect_from(from, server, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        open.fetch_add(1, Ordering::Relaxed);
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn tcp(
    server: SocketAddr,
    queries: Vec<(String, String)>,
    seconds: u64,
    connections: usize,
    pid: u32,
) -> Result<(), Error> {
    let rss_before = rss_kb(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicU64::new(0));
    let holders: Vec<_> = (0..connections)
        .map(|i| {
            let (stop, open) = (stop.clone(), open.clone());
            // 16 networks: 127.77.0.0/24 to 127.77.15.0/24.
            let from = Ipv4Addr::new(127, 77, (i % 16) as u8, (i / 16 % 250 + 1) as u8);
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || hold(server, from, &open, &stop))
        })
        .collect::<Result<_, _>>()?;
    let (mut held_max, mut rss_peak, mut sent, mut answered) = (0, rss_before, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        held_max = held_max.max(open.load(Ordering::Relaxed));
        rss_peak = rss_peak.max(rss_kb(pid));
        // The first second only builds up the flood.
        if start.elapsed() > Duration::from_secs(1) {
            let (name, rtype) = &queries[sent as usize % queries.len()];
            sent += 1;
            if tcp_query(server, &query(sent as u16, name, rtype)) {
                answered += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        let _ = h.join();
    }
    println!("{held_max} {sent} {answered} {rss_before} {rss_peak}");
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [_, "udp", server, queries, seconds, rate] => {
            udp(server.parse()?, read_queries(queries)?, seconds.parse()?, rate.parse()?)
        }
        [_, "tcp", server, queries, seconds, connections, pid] => tcp(
            server.parse()?,
            read_queries(queries)?,
            seconds.parse()?,
            connections.parse()?,
            pid.parse()?,
        ),
        _ => Err("usage: dns_flood udp SERVER QUERIES SECONDS RATE | dns_flood tcp SERVER QUERIES SECONDS CONNECTIONS PID".into()),
    }
}
