//! How long a change of one SendingDomain takes to reach the served zone, inside
//! the operator: the zone rebuilt from every SendingDomain (`desired_zone`) and
//! served (`ZoneHandle::publish`: compared with the zone served now, indexed,
//! responses prepared, the IXFR delta recorded). The publisher runs this after
//! each batch of changes the watch delivers (batched over 100 ms), so the time
//! from a status change to the record being served is about 100 ms plus this,
//! plus the watch's delivery.
//!
//! Baseline, same run: the same zone published into an empty handle (nothing to
//! share with a previous snapshot), as after a start.
//!
//! Usage: zone_publish [N...]   (default: 1000 10000); 100 changes per size,
//! each one domain's DKIM key replaced, or a domain added or removed.

use anypost_operator::adapters::dns::embedded::ZoneHandle;
use anypost_operator::core::trust::Trust;
use anypost_operator::core::zone::desired_zone;
use std::time::{Duration, Instant};

#[path = "support/bench_domains.rs"]
mod bench_domains;

use bench_domains::{Rng, domains, zone_config};

const CHANGES: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:8.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers of domains"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1000, 10000]
    } else {
        sizes
    };
    let cfg = zone_config();
    let trust = Trust::as_written();
    println!(
        "one SendingDomain changed, {CHANGES} times per size: desired_zone + publish, p50 / p99"
    );
    println!(
        "{:>8} {:>24} {:>24} {:>26}",
        "domains", "rebuild (desired_zone)", "publish", "baseline: publish from empty"
    );
    for n in sizes {
        let mut rng = Rng(42);
        // One more domain than served, to add and remove.
        let mut all: Vec<_> = domains(n + 1, &mut rng)
            .into_iter()
            .map(|(d, _, _)| d)
            .collect();
        let spare = all.pop().expect("n + 1 domains");
        let handle = ZoneHandle::new();
        handle.publish(desired_zone(&cfg, &trust, &all));
        let (mut rebuild, mut publish, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
        let mut added = false;
        for round in 0..CHANGES {
            match round % 4 {
                // Add the spare domain, or remove it again.
                3 if added => {
                    all.pop();
                    added = false;
                }
                3 => {
                    all.push(spare.clone());
                    added = true;
                }
                _ => {
                    let k = (rng.next() as usize) % n;
                    let status = all[k].status.as_mut().expect("bench domains have status");
                    let dkim = status.dkim.as_mut().expect("and keys");
                    let key = &mut dkim.selectors[1].public_key;
                    // Rotate the key's characters: a new key of the same length.
                    let first = key.remove(0);
                    key.push(first);
                }
            }
            let t = Instant::now();
            let zone = desired_zone(&cfg, &trust, &all);
            rebuild.push(t.elapsed());
            let copy = zone.clone();
            let t = Instant::now();
            assert!(
                handle.publish(zone).is_some(),
                "every change changes the zone"
            );
            publish.push(t.elapsed());
            if round % 10 == 0 {
                let t = Instant::now();
                ZoneHandle::new().publish(copy);
                fresh.push(t.elapsed());
            }
        }
        for v in [&mut rebuild, &mut publish, &mut fresh] {
            v.sort();
        }
        println!(
            "{n:>8} {} {} {} {} {} {}",
            ms(percentile(&rebuild, 0.5)),
            ms(percentile(&rebuild, 0.99)),
            ms(percentile(&publish, 0.5)),
            ms(percentile(&publish, 0.99)),
            ms(percentile(&fresh, 0.5)),
            ms(percentile(&fresh, 0.99)),
        );
    }
}
