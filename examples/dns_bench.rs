//! Serves a generated zone of N sending domains with the embedded DNS server, and
//! writes the same zone as a master file plus a dnsperf query list, so that
//! `scripts/bench-dns` can measure it beside BIND and Knot serving that file.
//!
//! Usage: dns_bench DOMAINS DIR LISTEN [UNPROTECTED_LISTEN]
//! Writes DIR/zone.db and DIR/queries.txt, serves the zone on LISTEN as the
//! operator does by default (rate limiting on, cookies on), and, if given, on
//! UNPROTECTED_LISTEN with rate limiting off (to measure what a flood gets
//! without it). Prints `cookie HEX` (a client and server cookie valid for
//! 127.0.0.1 for an hour, for dnsperf's EDNS option) and `ready ADDR` once
//! serving, and serves until killed.

use anypost_operator::adapters::dns::embedded::{
    CookieSecrets, DnsServer, RrlConfig, ServeOptions, ZoneHandle,
};
use anypost_operator::core::api::SendingDomain;
use anypost_operator::core::trust::Trust;
use anypost_operator::core::zone::desired_zone;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

#[path = "support/bench_domains.rs"]
mod bench_domains;

use bench_domains::{Rng, ZONE, domains, zone_config};

/// What resolvers ask for in practice: MX and SPF at the verification name, the
/// DKIM key, the tracking CNAME, and some names that do not exist; shuffled.
fn queries(generated: &[(SendingDomain, String, bool)], rng: &mut Rng) -> String {
    let mut lines = Vec::new();
    for (i, (_, t, tracking)) in generated.iter().enumerate() {
        lines.push(format!("{t}.{ZONE} MX"));
        lines.push(format!("{t}.{ZONE} TXT"));
        lines.push(format!("anypost1._domainkey.{t}.{ZONE} TXT"));
        if *tracking {
            lines.push(format!("track.{t}.{ZONE} CNAME"));
        }
        if i % 10 == 0 {
            lines.push(format!("missing.{t}.{ZONE} A"));
        }
    }
    for i in (1..lines.len()).rev() {
        lines.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    lines.iter().fold(String::new(), |mut out, l| {
        let _ = writeln!(out, "{l}");
        out
    })
}

/// A cookie option (client cookie, then our server cookie) that the server
/// accepts from 127.0.0.1 for the next hour, in hex.
fn bench_cookie(secrets: &CookieSecrets) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let mut reply = [0u8; 24];
    let mut cache = Default::default();
    let client = [0xbe, 0x4c, 0x4d, 0x41, 0x52, 0x4b, 0x00, 0x01];
    let ip = std::net::Ipv4Addr::LOCALHOST.into();
    secrets.check(&mut cache, &client, ip, now, &mut reply);
    reply.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Serves `handle` on `listen` with `options`, in the background.
async fn serve(
    handle: &ZoneHandle,
    listen: SocketAddr,
    options: ServeOptions,
) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let server = DnsServer::bind(listen).await?;
    let addr = server.local_addr();
    let handle = handle.clone();
    tokio::spawn(async move {
        if let Err(e) = server
            .run_with(handle, options, std::future::pending())
            .await
        {
            eprintln!("serving {addr}: {e}");
            std::process::exit(1);
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (n, dir, listen, unprotected) = match args.as_slice() {
        [_, n, dir, listen] => (n, dir, listen, None),
        [_, n, dir, listen, open] => (n, dir, listen, Some(open.parse::<SocketAddr>()?)),
        _ => return Err("usage: dns_bench DOMAINS DIR LISTEN [UNPROTECTED_LISTEN]".into()),
    };
    let n: usize = n.parse()?;
    let dir = PathBuf::from(dir);
    let listen: SocketAddr = listen.parse()?;

    let cfg = zone_config();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let generated = domains(n, &mut rng);
    let sds: Vec<SendingDomain> = generated.iter().map(|(d, _, _)| d.clone()).collect();
    let handle = ZoneHandle::new();
    handle.publish(desired_zone(&cfg, &Trust::as_written(), &sds));
    let zone = handle.current().ok_or("the zone was not published")?;
    std::fs::write(dir.join("zone.db"), zone.to_zone_file())?;
    std::fs::write(dir.join("queries.txt"), queries(&generated, &mut rng))?;
    eprintln!("{} RRsets for {n} domains", zone.len());
    // The operator's defaults, with a cookie secret of the bench's own.
    let secrets = CookieSecrets::new(b"dns_bench shared secret", 86_400);
    let options = ServeOptions {
        cookies: Some(secrets.clone()),
        ..Default::default()
    };
    println!("cookie {}", bench_cookie(&secrets));
    if let Some(open) = unprotected {
        let off = ServeOptions {
            rrl: RrlConfig {
                rate: 0,
                ..Default::default()
            },
            ..options.clone()
        };
        println!("unprotected {}", serve(&handle, open, off).await?);
    }
    println!("ready {}", serve(&handle, listen, options).await?);
    std::future::pending::<()>().await;
    Ok(())
}
