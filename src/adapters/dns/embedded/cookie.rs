//! DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018): a client
//! that returns a server cookie we made for its address has proven it receives
//! our answers there, so it is no spoofed source and is exempt from rate limiting.
//!
//! Every replica must accept every other replica's cookies, so the secret is not
//! random per process: it is derived from a key all replicas share (the
//! operator's identity key) and from the period of the cookie's own timestamp.
//! A new secret is used every rotation period, and a cookie is checked with the
//! secret of the period it was made in, so cookies made before a rotation stay
//! valid for their hour (RFC 9018 §4's rollover) on every replica.

use hmac::{KeyInit, Mac};
use std::net::IpAddr;

/// A server cookie is valid this long after its timestamp (RFC 9018 §4.3).
const LIFETIME: u32 = 3600;
/// ... and from this far in the future (clock skew between replicas).
const FUTURE: u32 = 300;
/// A valid cookie older than this is replaced by a fresh one in the response.
const REFRESH: u32 = 1800;

/// SipHash-2-4 of `data` with the 128-bit `key` (the hash RFC 9018 specifies).
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    let chunks = data.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        let m = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Where the server secrets come from; shared by every replica.
#[derive(Clone)]
pub struct CookieSecrets {
    master: Vec<u8>,
    /// Seconds between two secrets.
    rotation: u32,
}

impl std::fmt::Debug for CookieSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieSecrets")
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

/// The secrets of the last two periods a worker used: deriving one costs an
/// HMAC, checking a cookie only a SipHash.
#[derive(Default)]
pub struct SecretCache([(u32, [u8; 16]); 2]);

/// What a request's cookie option said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// It carried a server cookie we made for this client: not spoofed.
    Valid,
    /// Only a client cookie, or a server cookie that is not ours or too old.
    Unproven,
}

impl CookieSecrets {
    /// Secrets derived from `shared_key` (the same on every replica), a new one
    /// every `rotation` seconds (at least two hours, so that a cookie is always
    /// checked with its period's secret or the one before).
    pub fn new(shared_key: &[u8], rotation: u32) -> CookieSecrets {
        CookieSecrets {
            master: shared_key.to_vec(),
            rotation: rotation.max(2 * LIFETIME),
        }
    }

    /// The secret of the period `timestamp` falls in.
    fn secret(&self, cache: &mut SecretCache, timestamp: u32) -> [u8; 16] {
        let period = timestamp / self.rotation;
        if let Some((_, s)) = cache.0.iter().find(|(p, _)| *p == period + 1) {
            return *s;
        }
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.master)
            .expect("HMAC takes keys of any length");
        mac.update(b"anypost DNS server cookie secret\0");
        mac.update(&period.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut s = [0u8; 16];
        s.copy_from_slice(&out[..16]);
        // Slot 0 holds the newer period.
        cache.0[1] = cache.0[0];
        cache.0[0] = (period + 1, s);
        if cache.0[0].0 < cache.0[1].0 {
            cache.0.swap(0, 1);
        }
        s
    }

    fn hash(&self, cache: &mut SecretCache, client: &[u8], ts: u32, ip: IpAddr) -> [u8; 8] {
        let mut data = [0u8; 8 + 8 + 16];
        data[..8].copy_from_slice(client);
        data[8] = 1;
        data[12..16].copy_from_slice(&ts.to_be_bytes());
        let len = match ip {
            IpAddr::V4(v4) => {
                data[16..20].copy_from_slice(&v4.octets());
                20
            }
            IpAddr::V6(v6) => {
                data[16..32].copy_from_slice(&v6.octets());
                32
            }
        };
        // Byte order as the reference implementation writes it.
        siphash24(&self.secret(cache, ts), &data[..len]).to_le_bytes()
    }

    /// Checks the cookie option `option` (client cookie, then maybe a server
    /// cookie) from `ip` at `now` (unix seconds) and writes into `reply` the
    /// cookie to return: the client's, then our server cookie. Returns how many
    /// bytes of `reply` that is, and the verdict.
    pub fn check(
        &self,
        cache: &mut SecretCache,
        option: &[u8],
        ip: IpAddr,
        now: u32,
        reply: &mut [u8; 24],
    ) -> Check {
        let client = &option[..8];
        reply[..8].copy_from_slice(client);
        if option.len() == 24 && option[8] == 1 {
            let ts = u32::from_be_bytes(option[12..16].try_into().expect("4 bytes"));
            let age = now.wrapping_sub(ts) as i32;
            if (-(FUTURE as i32)..=LIFETIME as i32).contains(&age)
                && self.hash(cache, client, ts, ip) == option[16..24]
            {
                if age <= REFRESH as i32 {
                    reply[8..].copy_from_slice(&option[8..]);
                } else {
                    self.fresh(cache, client, ip, now, reply);
                }
                return Check::Valid;
            }
        }
        self.fresh(cache, client, ip, now, reply);
        Check::Unproven
    }

    fn fresh(
        &self,
        cache: &mut SecretCache,
        client: &[u8],
        ip: IpAddr,
        now: u32,
        reply: &mut [u8; 24],
    ) {
        reply[8..12].copy_from_slice(&[1, 0, 0, 0]);
        reply[12..16].copy_from_slice(&now.to_be_bytes());
        let h = self.hash(cache, client, now, ip);
        reply[16..24].copy_from_slice(&h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference test vectors of SipHash-2-4 (key 00..0f, messages 00..).
    #[test]
    fn siphash_matches_the_reference_vectors() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0..64u8).collect();
        assert_eq!(siphash24(&key, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(&key, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(&key, &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    fn option(reply: &[u8; 24]) -> Vec<u8> {
        reply.to_vec()
    }

    #[test]
    fn a_returned_server_cookie_is_valid_for_its_client_only_and_for_an_hour() {
        let s = CookieSecrets::new(b"shared identity key", 86_400);
        let mut cache = SecretCache::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut reply = [0u8; 24];
        let client = [7u8; 8];
        assert_eq!(
            s.check(&mut cache, &client, ip, 1_000_000, &mut reply),
            Check::Unproven
        );
        let cookie = option(&reply);
        let mut again = [0u8; 24];
        assert_eq!(
            s.check(&mut cache, &cookie, ip, 1_000_100, &mut again),
            Check::Valid
        );
        assert_eq!(again, reply, "a fresh cookie is returned as it is");
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            s.check(&mut cache, &cookie, other, 1_000_100, &mut again),
            Check::Unproven
        );
        let mut forged = cookie.clone();
        forged[23] ^= 1;
        assert_eq!(
            s.check(&mut cache, &forged, ip, 1_000_100, &mut again),
            Check::Unproven
        );
        // Older than half an hour: still valid, but replaced.
        assert_eq!(
            s.check(&mut cache, &cookie, ip, 1_002_000, &mut again),
            Check::Valid
        );
        assert_ne!(again, reply);
        // Older than an hour, or from the future: not valid.
        assert_eq!(
            s.check(&mut cache, &cookie, ip, 1_003_601, &mut again),
            Check::Unproven
        );
        assert_eq!(
            s.check(&mut cache, &cookie, ip, 999_000, &mut again),
            Check::Unproven
        );
    }

    #[test]
    fn every_replica_accepts_cookies_across_a_rotation() {
        let rotation = 7200;
        let a = CookieSecrets::new(b"shared", rotation);
        let b = CookieSecrets::new(b"shared", rotation);
        let stranger = CookieSecrets::new(b"another key", rotation);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let (mut ca, mut cb, mut cs) = Default::default();
        let mut reply = [0u8; 24];
        // Made by replica a a minute before a rotation...
        let made = 10 * rotation - 60;
        a.check(&mut ca, &[1; 8], ip, made, &mut reply);
        let cookie = option(&reply);
        let mut out = [0u8; 24];
        // ...checked by replica b after it, on the other side of the boundary.
        assert_eq!(
            b.check(&mut cb, &cookie, ip, made + 600, &mut out),
            Check::Valid
        );
        assert_eq!(
            stranger.check(&mut cs, &cookie, ip, made + 600, &mut out),
            Check::Unproven
        );
        // The secrets of two periods differ.
        let (mut c1, mut c2) = (SecretCache::default(), SecretCache::default());
        assert_ne!(a.secret(&mut c1, made), a.secret(&mut c2, made + 120));
    }
}
