//! What goes into the zone besides the SendingDomains: its apex, nameservers, and
//! the hosts every domain's records point at.

use super::model::{RData, RecordType, RrSet, Soa, Zone, in_zone, normalize};
use crate::core::config::FieldError;
use crate::core::naming::{ZoneNames, host_name};
use std::collections::BTreeMap;
use std::net::IpAddr;

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
/// TTL of the per-domain records when none is given.
pub const DEFAULT_RECORD_TTL: u32 = 300;

/// The zone's settings as given (flags, a test, a benchmark): checked and
/// normalized by [`ZoneConfig::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The zone apex, e.g. `dns.anypost.example`.
    pub zone: String,
    pub mx_host: String,
    pub spf_include: String,
    pub tracking_host: String,
    /// Apex NS targets; the first is the SOA's primary. Empty: `ns1.<zone>`.
    pub nameservers: Vec<String>,
    /// `NAME=IP` for each nameserver inside the zone.
    pub nameserver_addresses: Vec<String>,
    /// The SOA contact as a name. `None`: `hostmaster.<zone>`.
    pub soa_contact: Option<String>,
    /// TTL of every per-domain record.
    pub record_ttl: u32,
}

impl ZoneSettings {
    /// The settings of `zone` with the given hosts and every default.
    pub fn new(zone: &str, mx_host: &str, spf_include: &str, tracking_host: &str) -> Self {
        ZoneSettings {
            zone: zone.into(),
            mx_host: mx_host.into(),
            spf_include: spf_include.into(),
            tracking_host: tracking_host.into(),
            nameservers: vec![],
            nameserver_addresses: vec![],
            soa_contact: None,
            record_ttl: DEFAULT_RECORD_TTL,
        }
    }
}

/// The checked zone settings.
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

/// The zone apex: a valid name of at least two labels.
pub fn zone_name(s: &str) -> Result<String, String> {
    let n = host_name(s)?;
    if !n.contains('.') {
        return Err(format!(
            "{s:?}: the zone needs at least two labels, e.g. dns.anypost.example"
        ));
    }
    Ok(n)
}

impl ZoneConfig {
    /// Checks the settings: names are valid; nameserver addresses are `NAME=IP`
    /// with NAME inside the zone; the MX host, SPF include and tracking host are
    /// outside it (the zone would not hold their records).
    pub fn new(s: &ZoneSettings) -> Result<ZoneConfig, FieldError> {
        let zone = zone_name(&s.zone).map_err(|r| FieldError::new("zone", &s.zone, r))?;
        let outside = |field: &'static str, value: &str| -> Result<String, FieldError> {
            let v = host_name(value).map_err(|r| FieldError::new(field, value, r))?;
            if in_zone(&v, &zone) {
                return Err(FieldError::new(
                    field,
                    value,
                    format!("it is inside the zone {zone}, which holds no address records for it"),
                ));
            }
            Ok(v)
        };
        let mut nameservers = Vec::new();
        for n in &s.nameservers {
            let n = host_name(n).map_err(|r| FieldError::new("nameservers", n, r))?;
            if !nameservers.contains(&n) {
                nameservers.push(n);
            }
        }
        if nameservers.is_empty() {
            nameservers.push(format!("ns1.{zone}"));
        }
        let soa_contact = match &s.soa_contact {
            Some(c) => host_name(c).map_err(|r| FieldError::new("soa_contact", c, r))?,
            None => format!("hostmaster.{zone}"),
        };
        Ok(ZoneConfig {
            mx_host: outside("mx_host", &s.mx_host)?,
            spf_include: outside("spf_include", &s.spf_include)?,
            tracking_host: outside("tracking_host", &s.tracking_host)?,
            nameservers,
            nameserver_addresses: nameserver_addresses(&s.nameserver_addresses, &zone)?,
            soa_contact,
            record_ttl: s.record_ttl,
            zone,
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

/// `NAME=IP` entries, each NAME inside `zone`.
fn nameserver_addresses(
    entries: &[String],
    zone: &str,
) -> Result<Vec<(String, IpAddr)>, FieldError> {
    let mut out = Vec::new();
    for entry in entries {
        let bad = |reason: String| FieldError::new("nameserver_addresses", entry, reason);
        let (name, ip) = entry
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=IP, e.g. ns1.<zone>=192.0.2.53".into()))?;
        let name = normalize(name.trim());
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| bad(format!("{:?} is not an IP address", ip.trim())))?;
        if !in_zone(&name, zone) {
            return Err(bad(format!(
                "{name} is not inside the zone {zone}; only in-zone nameservers need addresses here"
            )));
        }
        out.push((name, ip));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zone::fixtures::cfg;

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
    fn bad_settings_name_the_field() {
        let mut a = ZoneSettings::new(
            "dns.anypost.example",
            "mx.dns.anypost.example",
            "spf.example",
            "t.example",
        );
        let e = ZoneConfig::new(&a).unwrap_err();
        assert_eq!(e.field, "mx_host");
        assert!(e.reason.contains("inside the zone"), "{e}");
        a.zone = "local".into();
        assert_eq!(ZoneConfig::new(&a).unwrap_err().field, "zone");
        a.zone = "dns.anypost.example".into();
        a.mx_host = "mx.example".into();
        a.nameserver_addresses = vec!["ns1.dns.anypost.example".into()];
        let e = ZoneConfig::new(&a).unwrap_err().to_string();
        assert!(e.contains("NAME=IP"), "{e}");
        a.nameserver_addresses = vec!["ns1.dns.anypost.example=1.2.3".into()];
        let e = ZoneConfig::new(&a).unwrap_err().to_string();
        assert!(e.contains("not an IP address"), "{e}");
        a.nameserver_addresses = vec!["ns.elsewhere.example=192.0.2.1".into()];
        let e = ZoneConfig::new(&a).unwrap_err().to_string();
        assert!(e.contains("not inside the zone"), "{e}");
        a.nameserver_addresses = vec!["NS1.dns.anypost.example.=192.0.2.1".into()];
        a.nameservers = vec!["ns1.dns.anypost.example".into(), "ns2.other.example".into()];
        a.soa_contact = Some("ops.example".into());
        let c = ZoneConfig::new(&a).unwrap();
        assert_eq!(
            c.nameserver_addresses,
            vec![(
                "ns1.dns.anypost.example".to_string(),
                "192.0.2.1".parse().unwrap()
            )]
        );
        assert_eq!(c.apex_zone().soa().unwrap().rname, "ops.example");
    }
}
