//! Sending domains for the benchmarks: a deterministic set of N SendingDomains
//! with status as the operator writes it for published domains (two 2048-bit
//! DKIM public keys, every other domain with tracking).

use anypost_operator::core::api::{
    DkimStatus, SelectorState, SelectorStatus, SendingDomain, SendingDomainSpec,
    SendingDomainStatus, TrackingSpec,
};
use anypost_operator::core::naming::{domain_id, token};
use anypost_operator::core::zone::{ZoneConfig, ZoneSettings};

pub const ZONE: &str = "dns.anypost.example";

/// A small deterministic generator (xorshift), so every run serves the same zone.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A stand-in for a 2048-bit key: base64 of the same length (392 characters).
fn fake_key(rng: &mut Rng) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut k = String::from("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA");
    while k.len() < 388 {
        k.push(B64[(rng.next() % 64) as usize] as char);
    }
    k.push_str("IDAQAB");
    k
}

pub fn domains(n: usize, rng: &mut Rng) -> Vec<(SendingDomain, String, bool)> {
    (0..n)
        .map(|i| {
            let name = format!("d{i}.example.com");
            let t = token(&[7u8; 32], "bench", &name);
            let tracking = i % 2 == 0;
            let mut d = SendingDomain::new(
                &format!("d{i}"),
                SendingDomainSpec {
                    domain: name,
                    dkim: None,
                    tracking: tracking.then(|| TrackingSpec {
                        subdomain: "track".into(),
                    }),
                },
            );
            d.metadata.namespace = Some("bench".into());
            d.status = Some(SendingDomainStatus {
                id: Some(domain_id(&t)),
                dkim: Some(DkimStatus {
                    selectors: ["anypost1", "anypost2"]
                        .iter()
                        .map(|s| SelectorStatus {
                            name: s.to_string(),
                            state: SelectorState::Active,
                            public_key: fake_key(rng),
                            key_bits: Some(2048),
                            created_at: None,
                            retire_at: None,
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            (d, t, tracking)
        })
        .collect()
}

/// The zone the benchmarks serve.
pub fn zone_config() -> ZoneConfig {
    ZoneConfig::new(&ZoneSettings {
        zone: ZONE.into(),
        mx_host: "bounce.anypost.example".into(),
        spf_include: "spf.anypost.example".into(),
        tracking_host: "t.anypost.example".into(),
        nameservers: vec![],
        nameserver_addresses: vec![format!("ns1.{ZONE}=127.0.0.1")],
        soa_contact: None,
        record_ttl: 300,
    })
    .expect("a valid zone configuration")
}
