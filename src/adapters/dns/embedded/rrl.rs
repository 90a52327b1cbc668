//! Response rate limiting (RRL), as BIND and Knot do it: UDP responses to one
//! source prefix (a /24 or a /56 by default) are counted per kind of response,
//! and past a rate per second most are dropped while every `slip`-th is sent
//! truncated, so that a real resolver retries over TCP (which a spoofed source
//! cannot) and a spoofed flood gains almost nothing.
//!
//! Accounts live in a fixed-size table of 64-bit words, updated without locks:
//! a tag of the account's key, the second it was last charged, and its balance.
//! A lost update under a race costs one response's accounting, never safety.

use super::fast::Kind;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Responses larger than this many times their query are accounted to the zone
/// per prefix, whatever the name: every DKIM key is, so that an attacker cycling
/// through the zone's keys shares one account.
pub const AMPLIFYING_FACTOR: usize = 3;

/// What the limiter was configured with (see `--dns-rrl-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second per account; 0 turns rate limiting off.
    pub rate: u16,
    /// Every `slip`-th limited response is sent truncated; 0 drops them all.
    pub slip: u8,
    /// Seconds of debt an account may run up: a source must stay below the rate
    /// for up to this long before it is answered again.
    pub window: u16,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Sources never limited.
    pub exempt: Vec<IpNet>,
    /// Accounts in the table (rounded up to a power of two).
    pub table_size: usize,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            rate: 20,
            slip: 2,
            window: 15,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: Vec::new(),
            table_size: 1 << 16,
        }
    }
}

impl RrlConfig {
    /// Checks the values; errors name the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if u32::from(self.rate) * u32::from(self.window) > i16::MAX as u32 {
            return Err((
                "rate",
                format!(
                    "rate × window must stay below {}: {} × {}",
                    i16::MAX,
                    self.rate,
                    self.window
                ),
            ));
        }
        if self.ipv4_prefix > 32 || self.ipv6_prefix > 128 {
            return Err(("prefix", "IPv4 prefixes are 0–32 bits, IPv6 0–128".into()));
        }
        if self.table_size == 0 || self.table_size > 1 << 24 {
            return Err(("table_size", "must be 1 to 16777216 accounts".into()));
        }
        Ok(())
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send it truncated, without records (the client may retry over TCP).
    Slip,
    Drop,
}

/// The limiter: one per server, shared by its UDP loops.
pub struct Rrl {
    cfg: RrlConfig,
    table: Box<[AtomicU64]>,
    seed: u64,
}

/// A strong 64-bit mix (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Packs an account: tag (32 bits), second (16 bits), balance (16 bits).
fn pack(tag: u32, second: u16, balance: i16) -> u64 {
    (u64::from(tag) << 32) | (u64::from(second) << 16) | u64::from(balance as u16)
}

fn unpack(word: u64) -> (u32, u16, i16) {
    ((word >> 32) as u32, (word >> 16) as u16, word as u16 as i16)
}

impl Rrl {
    /// A limiter, or `None` when `cfg.rate` is 0.
    pub fn new(cfg: RrlConfig) -> Option<Rrl> {
        if cfg.rate == 0 {
            return None;
        }
        let size = cfg.table_size.next_power_of_two();
        let seed = u64::from(getrandom::u32().unwrap_or(0x5eed)) << 32
            | u64::from(getrandom::u32().unwrap_or(0xcafe));
        Some(Rrl {
            table: (0..size).map(|_| AtomicU64::new(0)).collect(),
            cfg,
            seed,
        })
    }

    pub fn config(&self) -> &RrlConfig {
        &self.cfg
    }

    /// Whether `ip` is exempt from limiting by configuration.
    pub fn exempt(&self, ip: IpAddr) -> bool {
        !self.cfg.exempt.is_empty() && self.cfg.exempt.iter().any(|n| n.contains(&ip))
    }

    /// The source's prefix as a number (the address with the host bits cleared).
    fn prefix(&self, ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let p = u32::from(self.cfg.ipv4_prefix);
                u128::from(if p == 0 {
                    0
                } else {
                    bits & (u32::MAX << (32 - p))
                })
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let p = u32::from(self.cfg.ipv6_prefix);
                let masked = if p == 0 {
                    0
                } else {
                    bits & (u128::MAX << (128 - p))
                };
                // Keep IPv6 accounts apart from IPv4 ones.
                masked ^ (1 << 127)
            }
        }
    }

    /// The account a response is charged to.
    fn key(&self, ip: IpAddr, kind: Kind, amplifying: bool) -> u64 {
        let p = self.prefix(ip);
        let what = match (kind, amplifying) {
            (Kind::Answer { .. }, true) => 1,
            (Kind::Answer { name }, false) => 0x100 | u64::from(name) << 8,
            (Kind::Negative, _) => 2,
            (Kind::Error, _) => 3,
        };
        mix(mix(self.seed ^ p as u64 ^ ((p >> 64) as u64).rotate_left(29)) ^ what)
    }

    /// Charges one response of `response_len` bytes to a query of `query_len`
    /// from `ip`, at `now` (seconds on any monotonic clock), and says what to do.
    pub fn account(
        &self,
        ip: IpAddr,
        kind: Kind,
        query_len: usize,
        response_len: usize,
        now: u32,
    ) -> Verdict {
        let amplifying = response_len > AMPLIFYING_FACTOR * query_len.max(1);
        let key = self.key(ip, kind, amplifying);
        let slot = &self.table[key as usize & (self.table.len() - 1)];
        let tag = (key >> 32) as u32;
        let second = now as u16;
        let rate = i32::from(self.cfg.rate);
        let (old_tag, last, balance) = unpack(slot.load(Ordering::Relaxed));
        let mut balance = if old_tag == tag {
            let elapsed = i32::from(second.wrapping_sub(last));
            (i32::from(balance) + elapsed.saturating_mul(rate)).min(rate)
        } else {
            // A new account (or a colliding one taken over): a full second's credit.
            rate
        };
        balance = (balance - 1).max(-rate * i32::from(self.cfg.window));
        slot.store(pack(tag, second, balance as i16), Ordering::Relaxed);
        if balance >= 0 {
            Verdict::Send
        } else if self.cfg.slip > 0 && balance.rem_euclid(i32::from(self.cfg.slip)) == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrl(rate: u16, slip: u8) -> Rrl {
        Rrl::new(RrlConfig {
            rate,
            slip,
            window: 5,
            ..Default::default()
        })
        .unwrap()
    }

    fn count(r: &Rrl, ip: &str, kind: Kind, n: usize, now: u32) -> [usize; 3] {
        let ip: IpAddr = ip.parse().unwrap();
        let mut c = [0; 3];
        for _ in 0..n {
            match r.account(ip, kind, 60, 100, now) {
                Verdict::Send => c[0] += 1,
                Verdict::Slip => c[1] += 1,
                Verdict::Drop => c[2] += 1,
            }
        }
        c
    }

    const A: Kind = Kind::Answer { name: 7 };

    #[test]
    fn the_rate_is_kept_per_second_and_every_slip_th_excess_is_truncated() {
        let r = rrl(10, 2);
        assert_eq!(count(&r, "192.0.2.1", A, 30, 100), [10, 10, 10]);
        // The next second: the debt (20) is not paid back by one second's credit.
        assert_eq!(count(&r, "192.0.2.1", A, 1, 101)[0], 0);
        // After the window the account is back to a second's credit.
        assert_eq!(count(&r, "192.0.2.1", A, 12, 110), [10, 1, 1]);
    }

    #[test]
    fn a_prefix_shares_one_account_and_other_prefixes_are_unaffected() {
        let r = rrl(5, 0);
        assert_eq!(count(&r, "192.0.2.1", A, 5, 7), [5, 0, 0]);
        assert_eq!(count(&r, "192.0.2.200", A, 3, 7), [0, 0, 3]);
        assert_eq!(count(&r, "192.0.3.1", A, 5, 7), [5, 0, 0]);
        assert_eq!(count(&r, "2001:db8:0:1::1", A, 5, 7), [5, 0, 0]);
        assert_eq!(count(&r, "2001:db8:0:1::2", A, 1, 7), [0, 0, 1]);
        // Another /56.
        assert_eq!(count(&r, "2001:db8:0:100::1", A, 1, 7), [1, 0, 0]);
    }

    #[test]
    fn names_have_their_own_accounts_unless_the_answer_amplifies() {
        let r = rrl(2, 0);
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        for name in 0..10 {
            let kind = Kind::Answer { name };
            assert_eq!(r.account(ip, kind, 60, 100, 1), Verdict::Send);
        }
        // Large answers (DKIM keys) share one account whatever the name.
        let sent = (0..10)
            .filter(|&name| r.account(ip, Kind::Answer { name }, 60, 600, 1) == Verdict::Send)
            .count();
        assert_eq!(sent, 2);
        // NXDOMAIN for random names too.
        assert_eq!(count(&r, "198.51.100.9", Kind::Negative, 5, 1), [2, 0, 3]);
    }

    #[test]
    fn rate_zero_is_off_and_config_errors_name_the_field() {
        assert!(
            Rrl::new(RrlConfig {
                rate: 0,
                ..Default::default()
            })
            .is_none()
        );
        let c = RrlConfig {
            rate: 10_000,
            window: 15,
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().0, "rate");
        let c = RrlConfig {
            ipv4_prefix: 33,
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().0, "prefix");
        assert!(RrlConfig::default().check().is_ok());
        let r = Rrl::new(RrlConfig {
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        })
        .unwrap();
        assert!(r.exempt("127.1.2.3".parse().unwrap()));
        assert!(!r.exempt("192.0.2.1".parse().unwrap()));
    }
}
