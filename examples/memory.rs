//! Where the operator's memory goes, per sending domain: bytes held (counted by
//! the allocator, not RSS) by each structure the operator keeps for N domains,
//! measured at several N so the per-domain slope shows.
//!
//! Usage: memory [N...]   (default: 1000 5000 10000)
//!
//! Measured, each on its own:
//! - a cached SendingDomain: as the watch keeps it (trimmed), with a status as the
//!   operator writes it for a verified domain (conditions, records, keys, seal);
//! - a cached DKIM Secret: labels, owner, and for each of its two 2048-bit
//!   private keys the stand-in the watch cache keeps (size and public key);
//! - the zone model built from the statuses (`desired_zone`);
//! - the zone as served (`ZoneHandle::publish`: the model, the lookup index, the
//!   prepared answers; a transfer is made from the index when asked), and the
//!   peak while a changed zone replaces it (both held at once, plus the IXFR
//!   delta).

use anypost_operator::adapters::dns::embedded::ZoneHandle;
use anypost_operator::core::api::SendingDomain;
use anypost_operator::core::dkim::generate;
use anypost_operator::core::dkim::keys::compact_for_cache;
use anypost_operator::core::trust::Trust;
use anypost_operator::core::zone::desired_zone;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "support/bench_domains.rs"]
mod bench_domains;

use bench_domains::{Rng, ZONE, domains, zone_config};

/// The system allocator, counting the bytes held and their peak.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Bytes allocated by `make` and still held by what it returns.
fn measure<T>(make: impl FnOnce() -> T) -> (T, usize) {
    let before = held();
    let value = make();
    (value, held().saturating_sub(before))
}

/// The status the operator writes for a verified domain with tracking, as the
/// watch caches it (the values are of realistic length; the keys come from the
/// generator).
fn with_full_status(mut sd: SendingDomain, token: &str, i: usize) -> SendingDomain {
    let domain = sd.spec.domain.clone();
    let now = "2026-11-27T10:00:00Z";
    let status = serde_json::json!({
        "state": "verified",
        "dnsRecords": [
            {"type": "CNAME", "name": "anypost", "fqdn": format!("anypost.{domain}"), "value": format!("{token}.{ZONE}"), "purpose": "verification", "state": "ok"},
            {"type": "CNAME", "name": "anypost1._domainkey", "fqdn": format!("anypost1._domainkey.{domain}"), "value": format!("anypost1._domainkey.{token}.{ZONE}"), "purpose": "dkim", "state": "ok"},
            {"type": "CNAME", "name": "anypost2._domainkey", "fqdn": format!("anypost2._domainkey.{domain}"), "value": format!("anypost2._domainkey.{token}.{ZONE}"), "purpose": "dkim", "state": "ok"},
            {"type": "CNAME", "name": "track", "fqdn": format!("track.{domain}"), "value": format!("track.{token}.{ZONE}"), "purpose": "tracking", "state": "ok"},
        ],
        "tracking": {"state": "verified"},
        "dmarc": {"state": "missing", "name": format!("_dmarc.{domain}")},
        "lastCheckedTime": now,
        "lastVerifiedTime": now,
        "observedGeneration": 1,
        "conditions": [
            {"type": "KeysReady", "status": "True", "reason": "KeysStored", "message": format!("DKIM keys are in Secret d{i}-dkim; selector anypost1 signs"), "lastTransitionTime": now, "observedGeneration": 1},
            {"type": "RecordsPublished", "status": "True", "reason": "Published", "message": "the operator's zone serves the MX, SPF and DKIM records", "lastTransitionTime": now, "observedGeneration": 1},
            {"type": "Verified", "status": "True", "reason": "Verified", "message": "every CNAME resolves to the operator's records", "lastTransitionTime": now, "observedGeneration": 1},
            {"type": "DmarcPublished", "status": "False", "reason": "DmarcMissing", "message": format!("no DMARC record at _dmarc.{domain}; publish one, e.g. v=DMARC1; p=none"), "lastTransitionTime": now, "observedGeneration": 1},
            {"type": "Ready", "status": "True", "reason": "Verified", "message": "keys stored, records published, domain verified", "lastTransitionTime": now, "observedGeneration": 1},
            {"type": "Reconciling", "status": "False", "reason": "Verified", "message": "", "lastTransitionTime": now, "observedGeneration": 1},
            {"type": "Stalled", "status": "False", "reason": "Verified", "message": "", "lastTransitionTime": now, "observedGeneration": 1},
        ],
    });
    let mut full: serde_json::Value = serde_json::to_value(&sd.status).expect("a status");
    for (k, v) in status.as_object().expect("an object") {
        full[k] = v.clone();
    }
    sd.status = Some(serde_json::from_value(full).expect("the sample status parses"));
    // A sealed status carries its seal (the zone built here believes statuses as
    // written, so it is not checked).
    if let Some(s) = sd.status.as_mut() {
        s.seal = Some("v1.3q2+7wAbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjK".into());
    }
    sd.metadata.uid = Some(format!("{i:08x}-1234-4321-abcd-0123456789ab"));
    sd.metadata.resource_version = Some(format!("{}", 100_000 + i));
    sd.metadata.generation = Some(1);
    sd.metadata.creation_timestamp = sd.status.as_ref().and_then(|s| s.last_checked_time.clone());
    sd.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/part-of".to_string(),
        "mail".to_string(),
    )]));
    sd.metadata.finalizers = Some(vec!["anypost.com/records".into()]);
    sd
}

/// A DKIM Secret as the operator's cache keeps it: no managedFields, and each
/// private key replaced by its checked stand-in (`compact_for_cache`). `pems`
/// are two real 2048-bit keys (made once; the cache parses them).
fn secret(i: usize, pems: &[String; 2]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(format!("d{i}-dkim"));
    s.metadata.namespace = Some("bench".into());
    s.metadata.uid = Some(format!("{i:08x}-5678-8765-abcd-0123456789ab"));
    s.metadata.resource_version = Some(format!("{}", 200_000 + i));
    s.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "anypost-operator".to_string(),
    )]));
    s.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "anypost.com/v1alpha1".into(),
            kind: "SendingDomain".into(),
            name: format!("d{i}"),
            uid: format!("{i:08x}-1234-4321-abcd-0123456789ab"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    s.data = Some(BTreeMap::from([
        (
            "anypost1.key".to_string(),
            ByteString(pems[0].clone().into_bytes()),
        ),
        (
            "anypost2.key".to_string(),
            ByteString(pems[1].clone().into_bytes()),
        ),
        ("selector".to_string(), ByteString(b"anypost1".to_vec())),
    ]));
    s.type_ = Some("Opaque".into());
    compact_for_cache(&mut s);
    s
}

fn kib(bytes: usize, n: usize) -> String {
    format!("{:>9.1}", bytes as f64 / n as f64 / 1024.0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N is a number of domains"))
        .collect();
    let sizes = if args.is_empty() {
        vec![1000, 5000, 10000]
    } else {
        args
    };
    let cfg = zone_config();
    let pems = [0, 1].map(|_| generate(2048).expect("a key").pem);
    let trust = Trust::as_written();
    println!("KiB per domain, held (allocator count), by structure");
    println!(
        "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "domains", "cached sd", "secret", "zone", "served", "republish", "total"
    );
    for n in sizes {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (generated, _) = measure(|| domains(n, &mut rng));
        let (sds, sd_bytes) = measure(|| {
            generated
                .iter()
                .enumerate()
                .map(|(i, (d, t, _))| std::sync::Arc::new(with_full_status(d.clone(), t, i)))
                .collect::<Vec<_>>()
        });
        drop(generated);
        let (secrets, secret_bytes) =
            measure(|| (0..n).map(|i| secret(i, &pems)).collect::<Vec<_>>());
        let (zone, zone_bytes) = measure(|| desired_zone(&cfg, &trust, &sds));
        let handle = ZoneHandle::new();
        let (_, served_bytes) = measure(|| handle.publish(zone));
        // A changed zone (one domain fewer) replaces the served one.
        let before = held();
        PEAK.store(before, Ordering::Relaxed);
        handle.publish(desired_zone(&cfg, &trust, &sds[1..]));
        let republish = PEAK.load(Ordering::Relaxed) - before;
        let total = sd_bytes + secret_bytes + served_bytes;
        println!(
            "{n:>7} {} {} {} {} {} {}",
            kib(sd_bytes, n),
            kib(secret_bytes, n),
            kib(zone_bytes, n),
            kib(served_bytes, n),
            kib(republish, n),
            kib(total, n),
        );
        drop((sds, secrets, handle));
    }
    println!(
        "(served includes the zone model it keeps; republish is the extra peak while a new zone replaces it; total = cached sd + secret + served)"
    );
}
