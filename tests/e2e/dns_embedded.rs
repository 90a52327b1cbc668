//! The embedded DNS server, queried by real clients (`dig` and hickory's client)
//! over UDP and TCP on loopback. No cluster: the zone is built from hand-made
//! SendingDomains with the same code the operator runs, and republished directly.

use crate::support::eventually;
use anypost_operator::adapters::dns::embedded::{DnsServer, ZoneHandle};
use anypost_operator::core::api::{
    DkimStatus, SelectorState, SelectorStatus, SendingDomain, SendingDomainSpec,
    SendingDomainStatus, TrackingSpec,
};
use anypost_operator::core::naming::domain_id;
use anypost_operator::core::trust::Trust;
use anypost_operator::core::zone::{ZoneConfig, ZoneSettings, desired_zone};
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// How long a test waits for a condition: generous, since the machine may be
/// busy; a condition met sooner ends the wait sooner.
const WAIT: Duration = Duration::from_secs(30);

pub(crate) const ZONE: &str = "dns.anypost.example";
pub(crate) const T1: &str = "abcdefghijklmnop";
pub(crate) const T2: &str = "qrstuvwxyz234567";
pub(crate) const SMALL_KEY: &str = "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK1x";

/// A real 4096-bit RSA public key (base64 SPKI DER, 736 characters).
pub(crate) const KEY_4096: &str = concat!(
    "MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAi27JlQuzE40WdRnELjUqpRluDuXmkF22z6dn",
    "cAuIsyZQ8ggCHt4hMPJiV5xOjNtuAVIzMQGyQYOfxS4DOwYXo2S6wevxr9nmUZY5DhlzOxSO9tJNKaZ+",
    "a+9ri+8pd9Tetb/Pagz5ov0gj8ad3ITKb1LGKlFgK+rHhJXLFsHpIixyzuoJL5ZGbUTE/vto/CiGOZbY",
    "7FzqdPyeb28VxF7MV1+xtr7nmkkWjKSvXVIttX3pjv8Ixmr5wSAMzsy3IUPejMQ3/y1MyGDEtWtMEz/l",
    "Fsm4TLKAGpW8WaDEN6s2riEi5EKxtfRkpJuNh4ImR/8rgb+GCHYDhvW4FYSSuaHyIbBTvQ0kWYTWJrHF",
    "ReUEjkCbC59BJalfWqtWPd4+x0goFARGRp0nBk1AZC9HlQwfDhi5Ezg/qIUtetyBTFGqzknMFNa7GCMa",
    "zDLe/DCQVKNfcZJFlisfouanX8UBm7X7E/IeIHg254Bn2Y01xxzY6LpnHnEWFONa7xmijNY0Oj5TN6UP",
    "CGBsMBPNovjVgNwyrSGPp0+UJdJORw7JskTps5PFVwSF9RSbhTKC12XhKZT99s6gz+Rmg+LNf8rqnott",
    "8qYRnZVFDupyS4VnMDbieLy0eXGdtk4LWvJ7nmahf4RuvDt2FtsceV8Uq9sOa3Z4srvTM+le0iHHTlur",
    "rP9udrcCAwEAAQ==",
);

pub(crate) fn config() -> ZoneConfig {
    ZoneConfig::new(&ZoneSettings {
        zone: ZONE.into(),
        mx_host: "bounce.anypost.example".into(),
        spf_include: "spf.anypost.example".into(),
        tracking_host: "t.anypost.example".into(),
        nameservers: vec![],
        nameserver_addresses: vec![format!("ns1.{ZONE}=192.0.2.53")],
        soa_contact: None,
        record_ttl: 300,
    })
    .expect("the test's zone flags are valid")
}

pub(crate) fn domain(
    ns: &str,
    name: &str,
    token: &str,
    keys: &[(&str, &str)],
    tracking: bool,
) -> SendingDomain {
    let mut d = SendingDomain::new(
        &name.replace('.', "-"),
        SendingDomainSpec {
            domain: name.into(),
            dkim: None,
            tracking: tracking.then(|| TrackingSpec {
                subdomain: "track".into(),
            }),
        },
    );
    d.metadata.namespace = Some(ns.into());
    d.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    d.status = Some(SendingDomainStatus {
        id: Some(domain_id(token)),
        dkim: Some(DkimStatus {
            secret_name: format!("{}-dkim", name.replace('.', "-")),
            active_selector: "anypost1".into(),
            selectors: keys
                .iter()
                .map(|(sel, key)| SelectorStatus {
                    name: sel.to_string(),
                    state: SelectorState::Active,
                    public_key: key.to_string(),
                    key_bits: None,
                    created_at: None,
                    retire_at: None,
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    });
    d
}

/// The two domains most tests use: one with tracking and a 4096-bit key.
pub(crate) fn domains() -> Vec<SendingDomain> {
    vec![
        domain(
            "acme",
            "example.com",
            T1,
            &[("anypost1", KEY_4096), ("anypost2", SMALL_KEY)],
            true,
        ),
        domain(
            "other",
            "mail.example.org",
            T2,
            &[("anypost1", SMALL_KEY)],
            false,
        ),
    ]
}

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

/// Starts a server on its own runtime and thread, so that tests may block on
/// `dig` without starving it.
fn start(domains: &[SendingDomain], allow_axfr: &[&str]) -> Running {
    let handle = ZoneHandle::new();
    handle
        .publish(desired_zone(&config(), &Trust::as_written(), domains))
        .expect("the first publish serves a zone");
    let allow: Vec<ipnet::IpNet> = allow_axfr.iter().map(|n| n.parse().unwrap()).collect();
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
            server
                .run(served, allow, async {
                    let _ = stopped.await;
                })
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

/// What `dig` printed, split into the parts the tests look at.
#[derive(Debug, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<Vec<String>>,
    pub authority: Vec<Vec<String>>,
    pub additional: Vec<Vec<String>>,
    pub raw: String,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// The answer records of `rtype`, as their data fields joined by spaces.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        self.answer
            .iter()
            .filter(|r| r.get(3).map(String::as_str) == Some(rtype))
            .map(|r| r[4..].join(" "))
            .collect()
    }
}

/// Runs the real `dig` against the server. A missing `dig` fails the test.
pub fn dig(addr: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string()])
        .args(["+norecurse", "+time=2", "+tries=1", "+nocookie"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run dig (Debian package bind9-dnsutils; `make test` installs it): {e}"
            )
        });
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        raw: raw.clone(),
        ..Default::default()
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.trim().is_empty() || line.starts_with(';') {
            section = "";
        } else {
            let fields = line.split_whitespace().map(str::to_string).collect();
            match section {
                "answer" => d.answer.push(fields),
                "authority" => d.authority.push(fields),
                "additional" => d.additional.push(fields),
                // AXFR output has no section headers.
                _ => d.answer.push(fields),
            }
        }
    }
    d
}

pub(crate) fn name(rel: &str, token: &str) -> String {
    if rel.is_empty() {
        format!("{token}.{ZONE}.")
    } else {
        format!("{rel}.{token}.{ZONE}.")
    }
}

/// An answer's data as dig prints it, TXT back to one string.
fn unquote_txt(rtype: &str, data: &str) -> String {
    if rtype == "TXT" {
        unquote(data)
    } else {
        data.to_string()
    }
}

/// TXT data as dig prints it, back to one string.
pub fn unquote(txt: &str) -> String {
    txt.split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect()
}

#[tokio::test]
async fn dig_every_record_type_over_udp_and_tcp() {
    let s = start(&domains(), &[]);
    for transport in ["+notcp", "+tcp"] {
        let mx = dig(s.addr, &[transport, &name("", T1), "MX"]);
        assert_eq!(mx.status, "NOERROR", "{}", mx.raw);
        assert!(mx.has_flag("aa") && !mx.has_flag("ra"), "{}", mx.raw);
        assert_eq!(mx.data("MX"), vec!["10 bounce.anypost.example."]);
        assert_eq!(mx.answer[0][1], "300");

        let spf = dig(s.addr, &[transport, &name("", T1), "TXT"]);
        assert_eq!(
            spf.data("TXT"),
            vec!["\"v=spf1 include:spf.anypost.example -all\""]
        );

        let dkim = dig(
            s.addr,
            &[transport, &name("anypost2._domainkey", T1), "TXT"],
        );
        assert_eq!(
            unquote(&dkim.data("TXT")[0]),
            format!("v=DKIM1; k=rsa; p={SMALL_KEY}")
        );

        let cname = dig(s.addr, &[transport, &name("track", T1), "CNAME"]);
        assert_eq!(cname.data("CNAME"), vec!["t.anypost.example."]);
        // A CNAME answers queries of every type at its name.
        let via = dig(s.addr, &[transport, &name("track", T1), "A"]);
        assert_eq!(via.data("CNAME"), vec!["t.anypost.example."], "{}", via.raw);

        let soa = dig(s.addr, &[transport, &format!("{ZONE}."), "SOA"]);
        let soa_data = soa.data("SOA");
        assert!(
            soa_data[0].starts_with(&format!("ns1.{ZONE}. hostmaster.{ZONE}. ")),
            "{}",
            soa.raw
        );
        assert!(soa.has_flag("aa"));

        let ns = dig(s.addr, &[transport, &format!("{ZONE}."), "NS"]);
        assert_eq!(ns.data("NS"), vec![format!("ns1.{ZONE}.")]);
        assert_eq!(
            ns.additional.iter().filter(|r| r[3] == "A").count(),
            1,
            "{}",
            ns.raw
        );

        let a = dig(s.addr, &[transport, &format!("ns1.{ZONE}."), "A"]);
        assert_eq!(a.data("A"), vec!["192.0.2.53"]);

        // The second domain has no tracking and one key.
        assert_eq!(
            dig(s.addr, &[transport, &name("track", T2), "CNAME"]).status,
            "NXDOMAIN"
        );
        assert_eq!(
            dig(
                s.addr,
                &[transport, &name("anypost2._domainkey", T2), "TXT"]
            )
            .status,
            "NXDOMAIN"
        );
    }
}

#[tokio::test]
async fn dig_nxdomain_nodata_and_refused() {
    let s = start(&domains(), &[]);
    let nx = dig(s.addr, &[&name("nothing", T1), "A"]);
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    assert!(nx.has_flag("aa"));
    assert_eq!(nx.authority[0][3], "SOA", "{}", nx.raw);
    // Negative answers are cached for the SOA minimum (RFC 2308), 60s.
    assert_eq!(nx.authority[0][1], "60");

    for (n, t) in [
        (name("", T1), "A"),
        (name("anypost1._domainkey", T1), "MX"),
        // An empty non-terminal exists: NODATA, not NXDOMAIN.
        (name("_domainkey", T1), "TXT"),
        (format!("{ZONE}."), "TXT"),
    ] {
        let nodata = dig(s.addr, &[&n, t]);
        assert_eq!(nodata.status, "NOERROR", "{n} {t}: {}", nodata.raw);
        assert!(nodata.answer.is_empty() && nodata.has_flag("aa"));
        assert_eq!(nodata.authority[0][3], "SOA");
    }

    for n in ["example.com.", "anypost.example.", "."] {
        let refused = dig(s.addr, &["+recurse", n, "A"]);
        assert_eq!(refused.status, "REFUSED", "{n}: {}", refused.raw);
        assert!(!refused.has_flag("aa") && !refused.has_flag("ra"));
    }
}

#[tokio::test]
async fn dig_axfr_refused_unless_allowed() {
    let closed = start(&domains(), &[]);
    let refused = dig(closed.addr, &[&format!("{ZONE}."), "AXFR"]);
    assert!(refused.raw.contains("Transfer failed"), "{}", refused.raw);
    assert!(refused.answer.is_empty());

    let other = start(&domains(), &["10.0.0.0/8"]);
    let refused = dig(other.addr, &[&format!("{ZONE}."), "AXFR"]);
    assert!(refused.raw.contains("Transfer failed"), "{}", refused.raw);

    let open = start(&domains(), &["127.0.0.0/8", "::1/128"]);
    let xfr = dig(open.addr, &[&format!("{ZONE}."), "AXFR"]);
    let types: Vec<&str> = xfr.answer.iter().map(|r| r[3].as_str()).collect();
    assert_eq!(types.first(), Some(&"SOA"), "{}", xfr.raw);
    assert_eq!(types.last(), Some(&"SOA"));
    // SOA, NS, ns1 A; MX, SPF, 2 DKIM, CNAME; MX, SPF, 1 DKIM; SOA.
    assert_eq!(types.len(), 12, "{}", xfr.raw);
    assert!(
        xfr.answer
            .iter()
            .any(|r| r[0] == name("anypost1._domainkey", T1))
    );
}

#[tokio::test]
async fn dig_any_is_answered_minimally() {
    let s = start(&domains(), &[]);
    for n in [name("", T1), format!("{ZONE}.")] {
        let any = dig(s.addr, &[&n, "ANY"]);
        assert_eq!(any.status, "NOERROR", "{}", any.raw);
        let types: std::collections::BTreeSet<&str> =
            any.answer.iter().map(|r| r[3].as_str()).collect();
        assert_eq!(types.len(), 1, "one RRset (RFC 8482): {}", any.raw);
    }
}

#[tokio::test]
async fn a_4096_bit_key_is_truncated_over_small_udp_and_whole_over_tcp() {
    let s = start(&domains(), &[]);
    let n = name("anypost1._domainkey", T1);
    let expected = format!("v=DKIM1; k=rsa; p={KEY_4096}");

    // No EDNS: 512 bytes, too small. +ignore keeps dig from retrying over TCP.
    let udp = dig(s.addr, &["+notcp", "+noedns", "+ignore", &n, "TXT"]);
    assert!(udp.has_flag("tc"), "{}", udp.raw);
    assert!(udp.data("TXT").is_empty());
    // EDNS with a small buffer is honoured too.
    let udp = dig(s.addr, &["+notcp", "+bufsize=600", "+ignore", &n, "TXT"]);
    assert!(udp.has_flag("tc"), "{}", udp.raw);

    // dig's default: UDP, sees TC, retries over TCP and gets it all.
    let retried = dig(s.addr, &["+noedns", &n, "TXT"]);
    assert!(
        retried.raw.contains("retrying in TCP mode"),
        "{}",
        retried.raw
    );
    assert_eq!(unquote(&retried.data("TXT")[0]), expected);

    let tcp = dig(s.addr, &["+tcp", &n, "TXT"]);
    assert!(!tcp.has_flag("tc"));
    let txt = &tcp.data("TXT")[0];
    assert_eq!(unquote(txt), expected);
    // Three character-strings, none longer than 255 bytes.
    assert_eq!(txt.matches('"').count(), 6, "{txt}");

    // A 1232-byte EDNS buffer fits it over UDP.
    let fits = dig(s.addr, &["+notcp", "+bufsize=1232", "+ignore", &n, "TXT"]);
    assert!(!fits.has_flag("tc"), "{}", fits.raw);
    assert_eq!(unquote(&fits.data("TXT")[0]), expected);
}

/// A published change is served (how fast is the DNS bench's business, not a
/// test's) and the names of a removed domain all go.
#[tokio::test]
async fn a_change_is_served_and_removed_names_are_gone() {
    let s = start(&domains()[..1], &[]);
    assert_eq!(dig(s.addr, &[&name("", T2), "MX"]).status, "NXDOMAIN");
    let serial = s.handle.serial().unwrap();

    s.handle
        .publish(desired_zone(&config(), &Trust::as_written(), &domains()))
        .unwrap();
    let addr = s.addr;
    eventually(WAIT, || async move {
        let d = dig(addr, &[&name("", T2), "MX"]);
        (d.status == "NOERROR" && d.answer.len() == 1)
            .then_some(())
            .ok_or(d.raw)
    })
    .await;
    assert!(s.handle.serial().unwrap() > serial);

    // The first domain is deleted: every one of its names goes.
    s.handle
        .publish(desired_zone(
            &config(),
            &Trust::as_written(),
            &domains()[1..],
        ))
        .unwrap();
    eventually(WAIT, || async move {
        for rel in [
            "",
            "anypost1._domainkey",
            "anypost2._domainkey",
            "track",
            "_domainkey",
        ] {
            let d = dig(addr, &[&name(rel, T1), "TXT"]);
            if d.status != "NXDOMAIN" {
                return Err(format!("{rel}: {}", d.raw));
            }
        }
        Ok::<_, String>(())
    })
    .await;
    let soa = dig(addr, &[&format!("{ZONE}."), "SOA"]);
    let serial_now: u32 = soa.answer[0][6].parse().unwrap();
    assert_eq!(Some(serial_now), s.handle.serial());
}

async fn hickory_udp(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

async fn hickory_tcp(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

#[tokio::test]
async fn hickory_client_over_udp_and_tcp() {
    let s = start(&domains(), &[]);
    let q = |n: &str| Name::from_ascii(n).unwrap();
    for mut client in [hickory_udp(s.addr).await, hickory_tcp(s.addr).await] {
        let r = client
            .query(q(&name("", T1)), DNSClass::IN, RecordType::MX)
            .await
            .unwrap();
        assert!(r.metadata.authoritative && !r.metadata.recursion_available);
        let RData::MX(mx) = &r.answers[0].data else {
            panic!("{r:?}")
        };
        assert_eq!(mx.exchange, q("bounce.anypost.example."));

        let r = client
            .query(
                q(&name("anypost1._domainkey", T1)),
                DNSClass::IN,
                RecordType::TXT,
            )
            .await
            .unwrap();
        let RData::TXT(txt) = &r.answers[0].data else {
            panic!("{r:?}")
        };
        let text: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(text, format!("v=DKIM1; k=rsa; p={KEY_4096}").into_bytes());

        let r = client
            .query(q(&name("nothing", T1)), DNSClass::IN, RecordType::A)
            .await
            .unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);

        let r = client
            .query(q("example.com."), DNSClass::IN, RecordType::A)
            .await
            .unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);

        let r = client
            .query(q(&format!("{ZONE}.")), DNSClass::IN, RecordType::SOA)
            .await
            .unwrap();
        assert_eq!(r.answers.len(), 1);
    }
}

#[tokio::test]
async fn malformed_packets_do_no_harm() {
    let s = start(&domains(), &[]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x00",
        b"hello, this is not DNS at all",
        // A header announcing a question that is not there.
        &[0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0],
        // A name with a compression pointer to itself.
        &[
            0xab, 0xce, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1,
        ],
    ];
    for g in garbage {
        sock.send_to(g, s.addr).await.unwrap();
    }
    // Whatever came back for those, each is at most a FORMERR.
    let mut buf = [0u8; 512];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await
    {
        let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{m:?}");
    }
    // And the server still answers.
    let ok = dig(s.addr, &[&name("", T1), "MX"]);
    assert_eq!(ok.status, "NOERROR", "{}", ok.raw);
    // Also over TCP, after a connection that sends junk and hangs up.
    {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff])
            .await
            .unwrap();
    }
    let ok = dig(s.addr, &["+tcp", &name("", T1), "MX"]);
    assert_eq!(ok.status, "NOERROR", "{}", ok.raw);
}

/// The status a test writes by hand, with `id` and the keys of [`KEY_4096`] and
/// [`SMALL_KEY`], and `seal` if given.
fn hand_written(id: &str, seal: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "seal": seal,
        "dkim": {
            "secretName": "watched-dkim",
            "activeSelector": "anypost1",
            "selectors": [
                {"name": "anypost1", "state": "active", "publicKey": KEY_4096},
                {"name": "anypost2", "state": "standby", "publicKey": SMALL_KEY}
            ]
        }
    })
}

/// keep_publishing against the real apiserver: a status written by hand is not
/// served (another domain's id, or its own id without the operator's seal), one
/// the operator's seal covers is served exactly as written, and a deleted
/// SendingDomain's names disappear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_serves_only_sealed_status_writes_and_forgets_deleted_domains() {
    use anypost_operator::adapters::kube::identity::TrustState;
    use anypost_operator::core::naming::token;
    use anypost_operator::core::policy::Policy;
    use kube::api::{DeleteParams, Patch, PatchParams};
    let ns = crate::support::TestNs::new("dns-watch").await;
    let s = start(&[], &[]);
    let selector = format!("anypost.com/e2e-run={}", ns.name);
    let (domains, drive) = anypost_operator::adapters::kube::Domains::start(
        ns.client.clone(),
        Some(&selector),
        Some(&selector),
    );
    let key = [42u8; 32];
    let trust = Trust::new(&key, false, Policy::default());
    let (_tx, trust_rx) = tokio::sync::watch::channel(TrustState::Trusted(trust.clone().into()));
    let metrics = std::sync::Arc::new(anypost_operator::telemetry::Metrics::default());
    let publishing = anypost_operator::adapters::dns::embedded::keep_publishing(
        domains,
        config(),
        trust_rx,
        s.handle.clone(),
        metrics.clone(),
        || {},
    );
    let watch = tokio::spawn(async move {
        tokio::join!(drive, publishing);
    });
    let domain = format!("{}.watch.example", ns.name);
    ns.apply_ok(&format!(
        "apiVersion: anypost.com/v1alpha1\nkind: SendingDomain\nmetadata:\n  name: watched\n  labels:\n    anypost.com/e2e-run: \"{}\"\nspec:\n  domain: {domain}\n  tracking:\n    subdomain: track\n",
        ns.name
    ));
    let api = ns.api::<SendingDomain>();
    let own = token(&key, &ns.name, &domain);
    let write = |status: serde_json::Value| {
        let api = api.clone();
        async move {
            let patch = serde_json::json!({ "status": status });
            api.patch_status("watched", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("writing the status");
        }
    };
    // Every name under a token, as DNS answers it: (name type rcode, data).
    let addr = s.addr;
    let answers = move |token: &str| -> Vec<(String, Vec<String>)> {
        [
            ("", "MX"),
            ("", "TXT"),
            ("anypost1._domainkey", "TXT"),
            ("anypost2._domainkey", "TXT"),
            ("track", "CNAME"),
        ]
        .iter()
        .map(|(rel, t)| {
            let d = dig(addr, &["+tcp", &name(rel, token), t]);
            let data = d.data(t).iter().map(|x| unquote_txt(t, x)).collect();
            (format!("{rel} {t} {}", d.status), data)
        })
        .collect()
    };
    // What the test wrote (hand_written's keys), and nothing else.
    let as_written = || -> Vec<(String, Vec<String>)> {
        let one = |x: &str| vec![x.to_string()];
        vec![
            (" MX NOERROR".into(), one("10 bounce.anypost.example.")),
            (
                " TXT NOERROR".into(),
                one("v=spf1 include:spf.anypost.example -all"),
            ),
            (
                "anypost1._domainkey TXT NOERROR".into(),
                one(&format!("v=DKIM1; k=rsa; p={KEY_4096}")),
            ),
            (
                "anypost2._domainkey TXT NOERROR".into(),
                one(&format!("v=DKIM1; k=rsa; p={SMALL_KEY}")),
            ),
            ("track CNAME NOERROR".into(), one("t.anypost.example.")),
        ]
    };
    let nothing = || -> Vec<(String, Vec<String>)> {
        [
            " MX",
            " TXT",
            "anypost1._domainkey TXT",
            "anypost2._domainkey TXT",
            "track CNAME",
        ]
        .iter()
        .map(|k| (format!("{k} NXDOMAIN"), vec![]))
        .collect()
    };
    // Waits until DNS serves `own` exactly as written (or nothing under it), and
    // counts `untrusted` statuses.
    let serves = |served: bool, untrusted: i64| {
        let (metrics, handle, own) = (metrics.clone(), s.handle.clone(), own.clone());
        let want = if served { as_written() } else { nothing() };
        async move {
            eventually(WAIT, || async {
                let held = handle.holds(&own, &[KEY_4096, SMALL_KEY]);
                let seen = metrics.untrusted_statuses.get();
                let got = answers(&own);
                anyhow::ensure!(
                    held == served && seen == untrusted && got == want,
                    "serves {own}: {held}, untrusted statuses: {seen}, DNS: {got:#?}"
                );
                Ok(())
            })
            .await
        }
    };
    // Another domain's token, with keys of the writer's choosing: not served.
    write(hand_written(&domain_id(T2), None)).await;
    serves(false, 1).await;
    assert!(!s.handle.holds(T2, &[]));

    // Its own id, unsealed: not served either. Sealed by the operator (here:
    // the test, with the key): served, exactly as written.
    write(hand_written(&domain_id(&own), None)).await;
    serves(false, 1).await;
    let unsealed = api.get("watched").await.unwrap();
    let seal = trust.seal(&unsealed, unsealed.status.as_ref().unwrap());
    write(hand_written(&domain_id(&own), seal.as_deref())).await;
    serves(true, 0).await;

    // The same seal over another key: the domain is no longer served at all.
    let mut swapped = hand_written(&domain_id(&own), seal.as_deref());
    swapped["dkim"]["selectors"][1]["publicKey"] = KEY_4096.into();
    write(swapped).await;
    serves(false, 1).await;
    write(hand_written(&domain_id(&own), seal.as_deref())).await;
    serves(true, 0).await;
    // The seal removed: not served either.
    let patch = serde_json::json!({ "status": { "seal": null } });
    api.patch_status("watched", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("removing the seal");
    serves(false, 1).await;
    write(hand_written(&domain_id(&own), seal.as_deref())).await;
    serves(true, 0).await;

    api.delete("watched", &DeleteParams::default())
        .await
        .expect("deleting the SendingDomain");
    eventually(WAIT, || {
        let own = own.clone();
        async move {
            let d = dig(addr, &[&name("", &own), "MX"]);
            (d.status == "NXDOMAIN").then_some(()).ok_or(d.raw)
        }
    })
    .await;
    watch.abort();
}
