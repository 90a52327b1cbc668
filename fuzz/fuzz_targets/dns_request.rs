//! Arbitrary bytes through the embedded DNS server's whole request path: the
//! same parsing the transport does, then our handler, then encoding. Every
//! answer must be a well-formed response to the request that caused it, fit the
//! UDP size, and nothing may panic.
#![no_main]

use anypost_operator::core::api::{
    DkimStatus, SelectorState, SelectorStatus, SendingDomain, SendingDomainSpec,
    SendingDomainStatus, TrackingSpec,
};
use anypost_operator::adapters::dns::embedded::{MAX_UDP_PAYLOAD, ZoneHandle, answer_raw};
use anypost_operator::core::trust::Trust;
use anypost_operator::core::zone::{ZoneConfig, ZoneSettings, desired_zone};
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::LazyLock;

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

static ZONE: LazyLock<ZoneHandle> = LazyLock::new(|| {
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
    .unwrap();
    let handle = ZoneHandle::new();
    handle.publish(desired_zone(
        &cfg,
        &Trust::as_written(),
        &[
            domain("a.example", "aaaaaaaaaaaaaaaa", &"A".repeat(736), true),
            domain("b.example", "bbbbbbbbbbbbbbbb", "QUJD", false),
        ],
    ));
    handle
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, raw)) = data.split_first() else {
        return;
    };
    let protocol = if mode & 1 == 0 {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    let allow: Vec<ipnet::IpNet> = if mode & 2 == 0 {
        vec![]
    } else {
        vec!["127.0.0.0/8".parse().unwrap()]
    };
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let out = answer_raw(&ZONE, &allow, raw, src, protocol);
    if raw.len() < 12 {
        assert!(out.is_empty(), "a packet shorter than a header is dropped");
    }
    for bytes in &out {
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
        assert!(!m.metadata.recursion_available);
    }
});
