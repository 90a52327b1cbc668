//! Arbitrary bytes through the embedded DNS server's whole request path, as the
//! sockets use it: the fast path, the full handler, DNS cookies, response rate
//! limiting, TSIG and zone transfers (`harness::exercise`: the first byte picks
//! the transport, whether unsigned transfers are allowed, and the source network).
//! Every answer must be a well-formed response to the request that caused it and
//! fit the UDP size; nothing may panic. `tests/request_path.rs` replays the same
//! seeds and corpus through the same harness in every `cargo test`.
#![no_main]

use anypost_operator::adapters::dns::embedded::{Worker, ZoneHandle, harness};
use libfuzzer_sys::fuzz_target;
use std::sync::{LazyLock, Mutex};

static ZONE: LazyLock<ZoneHandle> = LazyLock::new(harness::zone);

static WORKERS: LazyLock<Mutex<[Worker; 2]>> = LazyLock::new(|| {
    let key = std::env::temp_dir().join(format!("dns-fuzz-key-{}", std::process::id()));
    Mutex::new(harness::workers(&ZONE, &key))
});

fuzz_target!(|data: &[u8]| {
    let mut workers = WORKERS.lock().unwrap();
    futures::executor::block_on(harness::exercise(&mut workers, data));
});
