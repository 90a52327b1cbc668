//! The record model of the operator's zone.
//!
//! A [`Zone`] is plain data: an ordered map from (owner name, type) to an RRset.
//! Names are absolute, lower case, without the trailing dot.

pub use crate::core::naming::{in_zone, normalize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest character-string in a TXT record (RFC 1035 §3.3).
pub const TXT_STRING_MAX: usize = 255;

/// The record types the zone holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordType {
    Soa,
    Ns,
    A,
    Aaaa,
    Mx,
    Txt,
    Cname,
}

impl RecordType {
    pub const ALL: [RecordType; 7] = [
        RecordType::Soa,
        RecordType::Ns,
        RecordType::A,
        RecordType::Aaaa,
        RecordType::Mx,
        RecordType::Txt,
        RecordType::Cname,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Soa => "SOA",
            RecordType::Ns => "NS",
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
            RecordType::Cname => "CNAME",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Start of authority.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Soa {
    /// Primary nameserver.
    pub mname: String,
    /// Contact mailbox as a name (`hostmaster.<zone>`).
    pub rname: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308).
    pub minimum: u32,
}

/// Typed record data. Names inside are absolute, lower case, without trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    Soa(Soa),
    Ns(String),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    /// The character-strings, each at most [`TXT_STRING_MAX`] bytes.
    Txt(Vec<Vec<u8>>),
    Cname(String),
}

impl RData {
    pub fn record_type(&self) -> RecordType {
        match self {
            RData::Soa(_) => RecordType::Soa,
            RData::Ns(_) => RecordType::Ns,
            RData::A(_) => RecordType::A,
            RData::Aaaa(_) => RecordType::Aaaa,
            RData::Mx { .. } => RecordType::Mx,
            RData::Txt(_) => RecordType::Txt,
            RData::Cname(_) => RecordType::Cname,
        }
    }

    /// A TXT record holding `text`, split into character-strings of at most 255
    /// bytes. Verifiers (DKIM, SPF) concatenate the strings back.
    pub fn txt(text: &str) -> RData {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return RData::Txt(vec![Vec::new()]);
        }
        RData::Txt(bytes.chunks(TXT_STRING_MAX).map(<[u8]>::to_vec).collect())
    }

    /// The address record for `ip`.
    pub fn address(ip: IpAddr) -> RData {
        match ip {
            IpAddr::V4(v4) => RData::A(v4),
            IpAddr::V6(v6) => RData::Aaaa(v6),
        }
    }
}

/// All records of one type at one name, with their TTL. The data are kept sorted
/// and without duplicates, so equal sets compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    pub ttl: u32,
    rdata: Vec<RData>,
}

impl RrSet {
    /// An RRset of the given data (all of one type; at least one).
    pub fn new(ttl: u32, rdata: impl IntoIterator<Item = RData>) -> RrSet {
        let rdata: BTreeSet<RData> = rdata.into_iter().collect();
        let rdata: Vec<RData> = rdata.into_iter().collect();
        debug_assert!(!rdata.is_empty(), "an RRset holds at least one record");
        debug_assert!(
            rdata
                .iter()
                .all(|r| r.record_type() == rdata[0].record_type()),
            "an RRset holds one type"
        );
        RrSet { ttl, rdata }
    }

    pub fn one(ttl: u32, rdata: RData) -> RrSet {
        RrSet::new(ttl, [rdata])
    }

    pub fn rdata(&self) -> &[RData] {
        &self.rdata
    }

    pub fn record_type(&self) -> RecordType {
        self.rdata[0].record_type()
    }
}

/// Whether two SOA RRsets differ at most in their serials.
fn same_but_serial(a: &RrSet, b: &RrSet) -> bool {
    a.ttl == b.ttl
        && a.rdata.len() == b.rdata.len()
        && a.rdata.iter().zip(&b.rdata).all(|(x, y)| match (x, y) {
            (RData::Soa(x), RData::Soa(y)) => {
                let serial_aside = Soa {
                    serial: y.serial,
                    ..x.clone()
                };
                serial_aside == *y
            }
            _ => x == y,
        })
}

/// Key of an RRset: owner name and type.
pub type RrKey = (String, RecordType);

/// The contents of the operator's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    origin: String,
    rrsets: BTreeMap<RrKey, RrSet>,
}

impl Zone {
    /// An empty zone (not even an SOA) for `origin`.
    pub fn new(origin: &str) -> Zone {
        Zone {
            origin: normalize(origin),
            rrsets: BTreeMap::new(),
        }
    }

    /// The zone apex.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Sets the RRset at `name` (which must be in the zone), replacing any of its type.
    pub fn insert(&mut self, name: &str, rrset: RrSet) {
        let name = normalize(name);
        debug_assert!(
            in_zone(&name, &self.origin),
            "{name} is outside {}",
            self.origin
        );
        self.rrsets.insert((name, rrset.record_type()), rrset);
    }

    pub fn remove(&mut self, name: &str, rtype: RecordType) -> Option<RrSet> {
        self.rrsets.remove(&(normalize(name), rtype))
    }

    pub fn get(&self, name: &str, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets.get(&(normalize(name), rtype))
    }

    /// Every RRset, ordered by name then type.
    pub fn iter(&self) -> impl Iterator<Item = (&str, RecordType, &RrSet)> {
        self.rrsets.iter().map(|((n, t), s)| (n.as_str(), *t, s))
    }

    /// Number of RRsets.
    pub fn len(&self) -> usize {
        self.rrsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty()
    }

    /// The apex SOA, if the zone has one.
    pub fn soa(&self) -> Option<&Soa> {
        match self.get(&self.origin, RecordType::Soa)?.rdata().first() {
            Some(RData::Soa(soa)) => Some(soa),
            _ => None,
        }
    }

    pub fn serial(&self) -> Option<u32> {
        self.soa().map(|s| s.serial)
    }

    /// Sets the apex SOA serial (no-op without an SOA).
    pub fn set_serial(&mut self, serial: u32) {
        let key = (self.origin.clone(), RecordType::Soa);
        if let Some(set) = self.rrsets.get_mut(&key) {
            for r in &mut set.rdata {
                if let RData::Soa(soa) = r {
                    soa.serial = serial;
                }
            }
        }
    }

    /// Equal apart from the SOA serial: whether publishing `other` over `self`
    /// changes anything a client can see besides the serial.
    pub fn same_content(&self, other: &Zone) -> bool {
        if self.origin != other.origin || self.rrsets.len() != other.rrsets.len() {
            return false;
        }
        // Both maps are in the same order: compare them pair by pair (no copy
        // of either zone, which with many domains is most of the cost).
        self.rrsets
            .iter()
            .zip(&other.rrsets)
            .all(|((ka, a), (kb, b))| {
                ka == kb
                    && (a == b
                        || (ka.1 == RecordType::Soa
                            && ka.0 == self.origin
                            && same_but_serial(a, b)))
            })
    }

    /// Targets of the apex NS records.
    pub fn nameservers(&self) -> Vec<&str> {
        self.get(&self.origin, RecordType::Ns)
            .map(|s| {
                s.rdata()
                    .iter()
                    .filter_map(|r| match r {
                        RData::Ns(n) => Some(n.as_str()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a name exists in the zone: it owns records, or a name below it does
    /// (an empty non-terminal such as `_domainkey.<t>.Z`, which answers NODATA,
    /// not NXDOMAIN).
    pub fn name_exists(&self, name: &str) -> bool {
        let name = normalize(name);
        if !in_zone(&name, &self.origin) {
            return false;
        }
        let suffix = format!(".{name}");
        self.rrsets
            .keys()
            .any(|(n, _)| *n == name || n.ends_with(&suffix))
    }
}

impl fmt::Display for RData {
    /// Master-file (RFC 1035 §5) presentation of the data; names get their dot.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RData::Soa(s) => write!(
                f,
                "{}. {}. {} {} {} {} {}",
                s.mname, s.rname, s.serial, s.refresh, s.retry, s.expire, s.minimum
            ),
            RData::Ns(n) | RData::Cname(n) => write!(f, "{n}."),
            RData::A(ip) => write!(f, "{ip}"),
            RData::Aaaa(ip) => write!(f, "{ip}"),
            RData::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}."),
            RData::Txt(strings) => {
                for (i, s) in strings.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    f.write_str("\"")?;
                    for &b in s {
                        match b {
                            b'"' | b'\\' => write!(f, "\\{}", b as char)?,
                            0x20..=0x7e => write!(f, "{}", b as char)?,
                            _ => write!(f, "\\{b:03}")?,
                        }
                    }
                    f.write_str("\"")?;
                }
                Ok(())
            }
        }
    }
}

impl Zone {
    /// The zone as a master file, loadable by BIND and Knot (for the benchmark,
    /// and for anyone who wants to see what is served).
    pub fn to_zone_file(&self) -> String {
        let mut out = format!("$ORIGIN {}.\n", self.origin);
        for (name, _, set) in self.iter() {
            for r in set.rdata() {
                out.push_str(&format!("{name}. {} IN {} {r}\n", set.ttl, r.record_type()));
            }
        }
        out
    }
}

/// The next SOA serial after `previous`, given the time: the unix time when that is
/// ahead of `previous` in serial-number arithmetic (RFC 1982), else `previous + 1`.
/// Serials therefore stay readable as times and still increase on every change,
/// however many changes a second brings.
pub fn next_serial(previous: u32, now_unix: u32) -> u32 {
    let ahead = (now_unix.wrapping_sub(previous) as i32) > 0;
    if ahead {
        now_unix
    } else {
        previous.wrapping_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zone::fixtures::cfg;

    const T1: &str = "abcdefghijklmnop";

    #[test]
    fn serials_increase() {
        assert_eq!(next_serial(5, 100), 100);
        assert_eq!(next_serial(100, 100), 101);
        assert_eq!(next_serial(200, 100), 201);
        assert_eq!(next_serial(u32::MAX, 3), 3);
        assert_eq!(next_serial(u32::MAX, u32::MAX), 0);
    }

    #[test]
    fn same_content_ignores_only_the_serial() {
        let a = cfg().apex_zone();
        let mut b = a.clone();
        b.set_serial(77);
        assert_eq!(b.serial(), Some(77));
        assert!(a.same_content(&b));
        b.insert(
            &format!("{T1}.dns.anypost.example"),
            RrSet::one(1, RData::txt("x")),
        );
        assert!(!a.same_content(&b));
    }

    #[test]
    fn zone_file_lines() {
        let mut z = cfg().apex_zone();
        z.insert(
            &format!("{T1}.dns.anypost.example"),
            RrSet::one(300, RData::Txt(vec![b"a\"b\\c".to_vec(), vec![7]])),
        );
        let text = z.to_zone_file();
        assert!(text.starts_with("$ORIGIN dns.anypost.example.\n"));
        assert!(text.contains(
            "dns.anypost.example. 3600 IN SOA ns1.dns.anypost.example. hostmaster.dns.anypost.example. 0 3600 600 1209600 60\n"
        ));
        assert!(text.contains(&format!(
            "{T1}.dns.anypost.example. 300 IN TXT \"a\\\"b\\\\c\" \"\\007\"\n"
        )));
        assert!(text.contains("ns1.dns.anypost.example. 3600 IN AAAA 2001:db8::53\n"));
    }

    #[test]
    fn txt_splitting() {
        assert_eq!(RData::txt(""), RData::Txt(vec![vec![]]));
        let RData::Txt(s) = RData::txt(&"x".repeat(511)) else {
            panic!()
        };
        assert_eq!(
            s.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![255, 255, 1]
        );
        assert!(in_zone("a.b.c", "b.c") && in_zone("b.c", "b.c"));
        assert!(!in_zone("ab.c", "b.c") && !in_zone("c", "b.c"));
    }
}
