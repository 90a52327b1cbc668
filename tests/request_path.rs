//! The embedded DNS server's request path on hostile input, in every `cargo test`
//! (the coverage-guided fuzzer, `scripts/fuzz-dns`, goes deeper but needs its own
//! instrumented build): every checked-in input of the fuzz target
//! (`fuzz/seeds/dns_request`, and `fuzz/corpus/dns_request` when present) is
//! replayed, then mutated at random for `ANYPOST_FUZZ_SECONDS` (default 30) with a
//! printed seed (`ANYPOST_FUZZ_SEED` replays a run). Every answer must keep the
//! rules of `harness::check`, and nothing may panic. A failing input is written to
//! `target/request-path-failure.bin` (feed it to the fuzz target to debug it).

use anypost_operator::adapters::dns::embedded::harness;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// xorshift64*: enough randomness for mutations, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn inputs() -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut all = Vec::new();
    for dir in ["seeds/dns_request", "corpus/dns_request"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            all.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    all
}

/// One mutation of the kinds libFuzzer starts with: flip bits, set interesting
/// bytes, insert, erase, truncate, splice two inputs.
fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len().max(1));
        match rng.below(7) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = [0, 1, 0x7f, 0x80, 0xff, 0xc0, 0x3f][rng.below(7)],
            2 => v.insert(at.min(v.len()), rng.next() as u8),
            3 if !v.is_empty() => {
                v.remove(at);
            }
            4 => v.truncate(at),
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let len = rng.below(other.len() - from + 1);
                v.splice(
                    at.min(v.len())..at.min(v.len()),
                    other[from..from + len].to_vec(),
                );
            }
            _ if v.len() > 2 => {
                // A 16-bit field (counts, types, lengths) set to an edge value.
                let at = at.min(v.len() - 2);
                let edge: u16 = [0, 1, 0xffff, 0x8000, 252, 251, 41, 255][rng.below(8)];
                v[at..at + 2].copy_from_slice(&edge.to_be_bytes());
            }
            _ => {}
        }
    }
    v
}

#[test]
fn hostile_requests_get_well_formed_answers_or_none() {
    let seeds = inputs();
    assert!(
        seeds.len() >= 50,
        "fuzz/seeds/dns_request holds {} inputs",
        seeds.len()
    );
    let key = tempfile::NamedTempFile::new().unwrap();
    let zone = harness::zone();
    let mut workers = harness::workers(&zone, key.path());
    let budget = Duration::from_secs(
        std::env::var("ANYPOST_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let seed = std::env::var("ANYPOST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!(
        "request path: {} checked-in inputs, then mutations for {budget:?} (ANYPOST_FUZZ_SEED={seed})",
        seeds.len()
    );
    let failure = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/request-path-failure.bin");
    let run = |workers: &mut [_; 2], input: &[u8]| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures::executor::block_on(harness::exercise(workers, input))
        }));
        if let Err(panic) = outcome {
            let _ = std::fs::write(&failure, input);
            std::panic::resume_unwind(panic);
        }
        outcome.unwrap()
    };
    let mut answered = 0usize;
    for input in &seeds {
        answered += usize::from(!run(&mut workers, input).is_empty());
    }
    // Most seeds are valid queries: the replay must reach answers, not only drops.
    assert!(
        answered * 2 >= seeds.len(),
        "only {answered} of {} seeds answered",
        seeds.len()
    );
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget {
        let base = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, other);
        run(&mut workers, &input);
        runs += 1;
    }
    eprintln!(
        "request path: {runs} mutated inputs in {:.0?}, every answer well formed",
        start.elapsed()
    );
}
