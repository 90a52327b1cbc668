//! The request path under hostile input: a small zone, the options of a server
//! facing the internet, and the rules every answer must keep. Two drivers use it:
//! the coverage-guided fuzz target (`fuzz/fuzz_targets/dns_request.rs`, `cargo
//! fuzz`) and `tests/request_path.rs`, which replays the checked-in seeds and
//! corpus and mutates them for a bounded time in every `cargo test`.

use super::{
    CookieSecrets, MAX_UDP_PAYLOAD, RrlConfig, ServeOptions, TransferConfig, TransferKeys, Worker,
    ZoneHandle, endpoint,
};
use crate::core::api::{
    DkimStatus, SelectorState, SelectorStatus, SendingDomain, SendingDomainSpec,
    SendingDomainStatus, TrackingSpec,
};
use crate::core::trust::Trust;
use crate::core::zone::{ZoneConfig, ZoneSettings, desired_zone};
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Message, MessageType};
use std::net::SocketAddr;

fn domain(name: &str, token: &str, key: &str, tracking: bool) -> SendingDomain {
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
    d.metadata.namespace = Some("fuzz".into());
    d.status = Some(SendingDomainStatus {
        id: Some(format!("domain_{token}")),
        dkim: Some(DkimStatus {
            selectors: ["anypost1", "anypost2"]
                .iter()
                .map(|s| SelectorStatus {
                    name: s.to_string(),
                    state: SelectorState::Active,
                    public_key: key.into(),
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

/// The zone `z.example` with two domains (one with a DKIM key long enough to need
/// TCP, one with tracking), published twice so that IXFR has a change to send.
pub fn zone() -> ZoneHandle {
    let cfg = ZoneConfig::new(&ZoneSettings {
        zone: "z.example".into(),
        mx_host: "mx.example".into(),
        spf_include: "spf.example".into(),
        tracking_host: "t.example".into(),
        nameservers: vec!["ns1.z.example".into(), "ns2.other.example".into()],
        nameserver_addresses: vec![
            "ns1.z.example=192.0.2.1".into(),
            "ns1.z.example=2001:db8::1".into(),
        ],
        soa_contact: None,
        record_ttl: 300,
    })
    .expect("the harness zone's settings are valid");
    let a = domain("a.example", "aaaaaaaaaaaaaaaa", &"A".repeat(736), true);
    let b = domain("b.example", "bbbbbbbbbbbbbbbb", "QUJD", false);
    let handle = ZoneHandle::new();
    let trust = Trust::as_written();
    handle.publish(desired_zone(&cfg, &trust, std::slice::from_ref(&a)));
    handle.publish(desired_zone(&cfg, &trust, &[a, b]));
    handle
}

/// A server facing the internet: rate limiting low enough that a few requests
/// reach it, cookies, a TSIG transfer key (written to `key_file`); unsigned
/// transfers from loopback allowed or not.
pub fn options(allow_loopback: bool, key_file: &std::path::Path) -> ServeOptions {
    std::fs::write(
        key_file,
        "key \"fuzz-key\" { algorithm hmac-sha256; secret \"c2VjcmV0LXNlY3JldA==\"; };",
    )
    .expect("writing the harness's transfer key");
    ServeOptions {
        allow_axfr: if allow_loopback {
            vec!["127.0.0.0/8".parse().expect("a network")]
        } else {
            vec![]
        },
        rrl: RrlConfig {
            rate: 5,
            slip: 2,
            window: 2,
            table_size: 1024,
            ..Default::default()
        },
        cookies: Some(CookieSecrets::new(b"fuzz", 7200)),
        transfer: TransferConfig {
            keys: TransferKeys::from_files(&[key_file.to_path_buf()])
                .expect("the harness's transfer key parses"),
            notify: vec![],
        },
        ..Default::default()
    }
}

/// Two workers over one zone: unsigned transfers refused (`[0]`) and allowed from
/// loopback (`[1]`).
pub fn workers(zone: &ZoneHandle, key_file: &std::path::Path) -> [Worker; 2] {
    [false, true].map(|allow| endpoint(zone, &options(allow, key_file)))
}

/// One input as the fuzz target reads it: the first byte picks the transport
/// (bit 0), the worker (bit 1) and the source network (high nibble); the rest is
/// the request. Returns the answers after checking every rule; panics on a
/// broken one, naming it.
pub async fn exercise(workers: &mut [Worker; 2], data: &[u8]) -> Vec<Vec<u8>> {
    let Some((&mode, raw)) = data.split_first() else {
        return vec![];
    };
    let protocol = if mode & 1 == 0 {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    let worker = &mut workers[usize::from(mode & 2 != 0)];
    let src = SocketAddr::from(([127, 0, mode >> 4, 1], 5353));
    let out = worker.answer(raw, src, protocol).await;
    check(raw, protocol, &out);
    out
}

/// The rules every answer keeps: nothing for a packet shorter than a header; over
/// UDP within the payload limit (512 bytes without EDNS); a response parsing as
/// DNS, with the request's id, never offering recursion.
pub fn check(raw: &[u8], protocol: Protocol, out: &[Vec<u8>]) {
    if raw.len() < 12 {
        assert!(out.is_empty(), "a packet shorter than a header is dropped");
    }
    for bytes in out {
        if protocol == Protocol::Udp {
            assert!(
                bytes.len() <= MAX_UDP_PAYLOAD as usize,
                "{} bytes over UDP",
                bytes.len()
            );
        }
        let m = Message::from_vec(bytes).expect("every response parses");
        if protocol == Protocol::Udp && m.edns.is_none() {
            assert!(
                bytes.len() <= 512,
                "{} bytes over UDP without EDNS",
                bytes.len()
            );
        }
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.id, u16::from_be_bytes([raw[0], raw[1]]));
        assert!(!m.metadata.recursion_available, "RA set");
    }
}
