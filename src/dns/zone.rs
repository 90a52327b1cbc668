//! The record model of the operator's zone, and the zone the SendingDomains ask for.
//!
//! A [`Zone`] is plain data: an ordered map from (owner name, type) to an RRset.
//! Names are absolute, lower case, without the trailing dot. [`desired_zone`]
//! computes the whole zone from the SendingDomains' spec and status alone (the
//! public keys are in status), so every replica derives the same zone from its own
//! watch, and no DNS code ever reads a Secret.

use super::Error;
use super::claims;
use crate::api::SendingDomain;
use crate::cli::ZoneArgs;
use crate::naming::{self, SELECTORS, ZoneNames};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TTL of the apex SOA and NS and of the nameservers' addresses: they never change
/// with SendingDomains.
pub const APEX_TTL: u32 = 3600;
/// SOA minimum, the negative-caching TTL: short, so that a name published moments
/// after someone looked for it is not hidden for long.
pub const NEGATIVE_TTL: u32 = 60;
/// SOA refresh, retry and expire for secondaries that transfer the zone.
pub const SOA_REFRESH: u32 = 3600;
pub const SOA_RETRY: u32 = 600;
pub const SOA_EXPIRE: u32 = 1_209_600;
/// MX preference of the bounce host.
pub const MX_PREFERENCE: u16 = 10;
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

/// Key of an RRset: owner name and type.
pub type RrKey = (String, RecordType);

/// A DNS name as the zone stores it: lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is `origin` or below it (both normalized).
pub fn in_zone(name: &str, origin: &str) -> bool {
    name == origin
        || (name.len() > origin.len()
            && name.ends_with(origin)
            && name.as_bytes()[name.len() - origin.len() - 1] == b'.')
}

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
        let mut a = self.clone();
        a.set_serial(other.serial().unwrap_or(0));
        a.rrsets == other.rrsets
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

/// What goes into the zone besides the SendingDomains, from the `run` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `dns.anypost.example`.
    pub zone: String,
    pub mx_host: String,
    pub spf_include: String,
    pub tracking_host: String,
    /// Apex NS targets; the first is the SOA's primary.
    pub nameservers: Vec<String>,
    /// Addresses of nameservers inside the zone.
    pub nameserver_addresses: Vec<(String, IpAddr)>,
    /// SOA contact as a name.
    pub soa_contact: String,
    /// TTL of every per-domain record.
    pub record_ttl: u32,
}

impl ZoneConfig {
    /// Checks the zone flags: nameserver addresses are `NAME=IP` with NAME inside
    /// the zone; the MX host, SPF include and tracking host are outside it (the
    /// zone would not hold their records).
    pub fn from_args(args: &ZoneArgs) -> Result<ZoneConfig, Error> {
        let zone = normalize(&args.zone);
        let outside = |flag: &'static str, value: &str| -> Result<String, Error> {
            let v = normalize(value);
            if in_zone(&v, &zone) {
                return Err(Error::ZoneConfig {
                    flag,
                    value: value.to_string(),
                    reason: format!(
                        "it is inside the zone {zone}, which holds no address records for it"
                    ),
                });
            }
            Ok(v)
        };
        let mx_host = outside("--mx-host", &args.mx_host)?;
        let spf_include = outside("--spf-include", &args.spf_include)?;
        let tracking_host = outside("--tracking-host", &args.tracking_host)?;
        let mut nameservers: Vec<String> = args.nameservers.iter().map(|n| normalize(n)).collect();
        nameservers.dedup();
        if nameservers.is_empty() {
            nameservers.push(format!("ns1.{zone}"));
        }
        let mut nameserver_addresses = Vec::new();
        for entry in &args.nameserver_addresses {
            let bad = |reason: String| Error::ZoneConfig {
                flag: "--nameserver-address",
                value: entry.clone(),
                reason,
            };
            let (name, ip) = entry
                .split_once('=')
                .ok_or_else(|| bad("expected NAME=IP, e.g. ns1.<zone>=192.0.2.53".into()))?;
            let name = normalize(name.trim());
            let ip: IpAddr = ip
                .trim()
                .parse()
                .map_err(|_| bad(format!("{:?} is not an IP address", ip.trim())))?;
            if !in_zone(&name, &zone) {
                return Err(bad(format!(
                    "{name} is not inside the zone {zone}; only in-zone nameservers need addresses here"
                )));
            }
            nameserver_addresses.push((name, ip));
        }
        let soa_contact = args
            .soa_contact
            .as_deref()
            .map(normalize)
            .unwrap_or_else(|| format!("hostmaster.{zone}"));
        Ok(ZoneConfig {
            zone,
            mx_host,
            spf_include,
            tracking_host,
            nameservers,
            nameserver_addresses,
            soa_contact,
            record_ttl: args.record_ttl,
        })
    }

    /// The names below the zone for one token.
    pub fn names(&self, token: &str) -> ZoneNames {
        ZoneNames::new(token, &self.zone)
    }

    /// The records the operator never changes: apex SOA (serial 0; the publisher
    /// assigns it) and NS, and the in-zone nameservers' addresses.
    pub fn apex_zone(&self) -> Zone {
        let mut zone = Zone::new(&self.zone);
        let soa = Soa {
            mname: self.nameservers[0].clone(),
            rname: self.soa_contact.clone(),
            serial: 0,
            refresh: SOA_REFRESH,
            retry: SOA_RETRY,
            expire: SOA_EXPIRE,
            minimum: NEGATIVE_TTL,
        };
        zone.insert(&self.zone, RrSet::one(APEX_TTL, RData::Soa(soa)));
        zone.insert(
            &self.zone,
            RrSet::new(
                APEX_TTL,
                self.nameservers.iter().map(|n| RData::Ns(n.clone())),
            ),
        );
        let mut by_name: BTreeMap<(&str, RecordType), Vec<RData>> = BTreeMap::new();
        for (name, ip) in &self.nameserver_addresses {
            let r = RData::address(*ip);
            by_name
                .entry((name.as_str(), r.record_type()))
                .or_default()
                .push(r);
        }
        for ((name, _), rdata) in by_name {
            zone.insert(name, RrSet::new(APEX_TTL, rdata));
        }
        zone
    }

    /// The SPF policy published at every verification name.
    pub fn spf(&self) -> String {
        format!("v=spf1 include:{} -all", self.spf_include)
    }
}

/// The DKIM TXT text for a public key (base64 SPKI DER).
pub fn dkim_text(public_key: &str) -> String {
    format!("v=DKIM1; k=rsa; p={public_key}")
}

/// A public key as status holds it is base64; anything else is not published (it
/// would make a TXT record no verifier accepts, or inject other tags).
fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// The token a SendingDomain publishes under, if its `status.id` is valid.
pub fn domain_token(d: &SendingDomain) -> Option<&str> {
    let id = d.status.as_ref()?.id.as_deref()?;
    naming::token_from_id(id)
}

/// The zone the SendingDomains ask for: the apex records, then for every domain
/// that wins its claim and has a valid `status.id`, its MX and SPF, one DKIM TXT per
/// selector with a public key in status, and the tracking CNAME when
/// `spec.tracking` is set. The SOA serial is 0; [`super::ZoneHandle::publish`]
/// assigns the real one.
pub fn desired_zone<D: std::borrow::Borrow<SendingDomain>>(
    cfg: &ZoneConfig,
    domains: &[D],
) -> Zone {
    let mut zone = cfg.apex_zone();
    let mut winners: Vec<&SendingDomain> = claims::winning_claims(domains).into_values().collect();
    // Two winners with one token cannot happen unless a status was copied by hand;
    // the stronger claim keeps the names.
    winners.sort_by(|a, b| claims::claim_order(a, b));
    let mut tokens = BTreeSet::new();
    let ttl = cfg.record_ttl;
    for d in winners {
        let Some(token) = domain_token(d) else {
            continue;
        };
        if !tokens.insert(token) {
            continue;
        }
        let names = cfg.names(token);
        zone.insert(
            &names.verification,
            RrSet::one(
                ttl,
                RData::Mx {
                    preference: MX_PREFERENCE,
                    exchange: cfg.mx_host.clone(),
                },
            ),
        );
        zone.insert(&names.verification, RrSet::one(ttl, RData::txt(&cfg.spf())));
        let selectors = d
            .status
            .as_ref()
            .and_then(|s| s.dkim.as_ref())
            .map(|k| k.selectors.as_slice())
            .unwrap_or_default();
        for (selector, name) in SELECTORS.iter().zip(&names.dkim) {
            if let Some(s) = selectors
                .iter()
                .find(|s| s.name == *selector && is_base64(&s.public_key))
            {
                zone.insert(name, RrSet::one(ttl, RData::txt(&dkim_text(&s.public_key))));
            }
        }
        if d.spec.tracking.is_some() {
            zone.insert(
                &names.tracking,
                RrSet::one(ttl, RData::Cname(cfg.tracking_host.clone())),
            );
        }
    }
    zone
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{
        DkimStatus, SelectorState, SelectorStatus, SendingDomainSpec, SendingDomainStatus,
        TrackingSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub(crate) fn cfg() -> ZoneConfig {
        ZoneConfig::from_args(&ZoneArgs {
            zone: "dns.anypost.example".into(),
            mx_host: "bounce.anypost.example".into(),
            spf_include: "spf.anypost.example".into(),
            tracking_host: "track.anypost.example".into(),
            nameservers: vec![],
            nameserver_addresses: vec![
                "ns1.dns.anypost.example=192.0.2.53".into(),
                "ns1.dns.anypost.example=2001:db8::53".into(),
            ],
            soa_contact: None,
            record_ttl: 300,
        })
        .unwrap()
    }

    pub(crate) fn domain(
        ns: &str,
        domain: &str,
        token: &str,
        keys: &[(&str, &str)],
        tracking: bool,
        created: i64,
    ) -> SendingDomain {
        let mut d = SendingDomain::new(
            &domain.replace('.', "-"),
            SendingDomainSpec {
                domain: domain.into(),
                dkim: None,
                tracking: tracking.then(|| TrackingSpec {
                    subdomain: "track".into(),
                }),
            },
        );
        d.metadata.namespace = Some(ns.into());
        d.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        d.status = Some(SendingDomainStatus {
            id: Some(naming::domain_id(token)),
            dkim: Some(DkimStatus {
                secret_name: "x-dkim".into(),
                active_selector: "anypost1".into(),
                selectors: keys
                    .iter()
                    .map(|(name, key)| SelectorStatus {
                        name: name.to_string(),
                        state: SelectorState::Active,
                        public_key: key.to_string(),
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

    const T1: &str = "abcdefghijklmnop";
    const T2: &str = "qrstuvwxyz234567";

    #[test]
    fn defaults_and_apex() {
        let c = cfg();
        assert_eq!(c.nameservers, vec!["ns1.dns.anypost.example"]);
        assert_eq!(c.soa_contact, "hostmaster.dns.anypost.example");
        let z = c.apex_zone();
        let soa = z.soa().unwrap();
        assert_eq!(soa.mname, "ns1.dns.anypost.example");
        assert_eq!(soa.minimum, NEGATIVE_TTL);
        assert_eq!(z.nameservers(), vec!["ns1.dns.anypost.example"]);
        assert_eq!(
            z.get("ns1.dns.anypost.example", RecordType::A)
                .unwrap()
                .rdata(),
            &[RData::A("192.0.2.53".parse().unwrap())]
        );
        assert!(z.get("ns1.dns.anypost.example", RecordType::Aaaa).is_some());
        assert_eq!(z.len(), 4);
    }

    #[test]
    fn bad_flags_are_named() {
        let mut a = ZoneArgs {
            zone: "dns.anypost.example".into(),
            mx_host: "mx.dns.anypost.example".into(),
            spf_include: "spf.example".into(),
            tracking_host: "t.example".into(),
            nameservers: vec![],
            nameserver_addresses: vec![],
            soa_contact: None,
            record_ttl: 300,
        };
        let e = ZoneConfig::from_args(&a).unwrap_err().to_string();
        assert!(
            e.contains("--mx-host") && e.contains("inside the zone"),
            "{e}"
        );
        a.mx_host = "mx.example".into();
        a.nameserver_addresses = vec!["ns1.dns.anypost.example".into()];
        let e = ZoneConfig::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("NAME=IP"), "{e}");
        a.nameserver_addresses = vec!["ns1.dns.anypost.example=1.2.3".into()];
        let e = ZoneConfig::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("not an IP address"), "{e}");
        a.nameserver_addresses = vec!["ns.elsewhere.example=192.0.2.1".into()];
        let e = ZoneConfig::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("not inside the zone"), "{e}");
        a.nameserver_addresses = vec!["NS1.dns.anypost.example.=192.0.2.1".into()];
        a.nameservers = vec!["ns1.dns.anypost.example".into(), "ns2.other.example".into()];
        a.soa_contact = Some("ops.example".into());
        let c = ZoneConfig::from_args(&a).unwrap();
        assert_eq!(
            c.nameserver_addresses,
            vec![(
                "ns1.dns.anypost.example".to_string(),
                "192.0.2.1".parse().unwrap()
            )]
        );
        assert_eq!(c.apex_zone().soa().unwrap().rname, "ops.example");
    }

    #[test]
    fn a_domain_gets_mx_spf_dkim_and_tracking() {
        let key = "A".repeat(400);
        let d = domain(
            "acme",
            "example.com",
            T1,
            &[("anypost1", &key), ("anypost2", "QUJD")],
            true,
            1,
        );
        let z = desired_zone(&cfg(), &[d]);
        let base = format!("{T1}.dns.anypost.example");
        assert_eq!(
            z.get(&base, RecordType::Mx).unwrap().rdata(),
            &[RData::Mx {
                preference: 10,
                exchange: "bounce.anypost.example".into()
            }]
        );
        assert_eq!(
            z.get(&base, RecordType::Txt).unwrap().rdata(),
            &[RData::Txt(vec![
                b"v=spf1 include:spf.anypost.example -all".to_vec()
            ])]
        );
        let dkim1 = z
            .get(&format!("anypost1._domainkey.{base}"), RecordType::Txt)
            .unwrap();
        let RData::Txt(strings) = &dkim1.rdata()[0] else {
            panic!()
        };
        assert!(strings.iter().all(|s| s.len() <= TXT_STRING_MAX));
        assert_eq!(strings.len(), 2);
        assert_eq!(strings.concat(), dkim_text(&key).into_bytes());
        assert_eq!(dkim1.ttl, 300);
        assert!(
            z.get(&format!("anypost2._domainkey.{base}"), RecordType::Txt)
                .is_some()
        );
        assert_eq!(
            z.get(&format!("track.{base}"), RecordType::Cname)
                .unwrap()
                .rdata(),
            &[RData::Cname("track.anypost.example".into())]
        );
        assert_eq!(z.len(), 4 + 5);
        assert!(z.name_exists(&format!("_domainkey.{base}")));
        assert!(!z.name_exists(&format!("x._domainkey.{base}")));
        assert!(!z.name_exists("example.com"));
    }

    #[test]
    fn unpublishable_domains_are_left_out() {
        let c = cfg();
        let mut no_id = domain("a", "one.com", T1, &[("anypost1", "QUJD")], false, 1);
        no_id.status.as_mut().unwrap().id = None;
        let mut bad_id = domain("a", "two.com", T1, &[], false, 1);
        bad_id.status.as_mut().unwrap().id = Some("domain_SHORT".into());
        let mut no_status = domain("a", "three.com", T1, &[], false, 1);
        no_status.status = None;
        let z = desired_zone(&c, &[no_id, bad_id, no_status]);
        assert_eq!(z, c.apex_zone());
    }

    #[test]
    fn only_the_winning_claim_is_published() {
        let old = domain("a", "example.com", T1, &[], false, 1);
        let young = domain("b", "example.com", T2, &[], false, 2);
        let z = desired_zone(&cfg(), &[young.clone(), old]);
        assert!(z.name_exists(&format!("{T1}.dns.anypost.example")));
        assert!(!z.name_exists(&format!("{T2}.dns.anypost.example")));
        let z = desired_zone(&cfg(), &[young]);
        assert!(z.name_exists(&format!("{T2}.dns.anypost.example")));
    }

    #[test]
    fn keys_that_are_not_base64_and_unknown_selectors_are_skipped() {
        let d = domain(
            "a",
            "example.com",
            T1,
            &[
                ("anypost1", "QUJD; t=y"),
                ("other", "QUJD"),
                ("anypost2", ""),
            ],
            false,
            1,
        );
        let z = desired_zone(&cfg(), &[d]);
        assert_eq!(z.len(), 4 + 2);
    }

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
