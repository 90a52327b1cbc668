//! Conversions between the zone model and hickory's wire-format records, shared by
//! the embedded server and the RFC2136 backend.

use crate::core::naming::normalize;
use crate::core::zone::{RData, RecordType, Soa};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{self as hrr, Name};

fn soa_i32(field: &str, v: u32) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("SOA {field} {v} does not fit the wire format"))
}

pub fn dns_name(name: &str) -> Result<Name, String> {
    Name::from_ascii(format!("{name}.")).map_err(|e| format!("{name:?} is not a valid name: {e}"))
}

pub fn model_name(name: &Name) -> String {
    normalize(&name.to_ascii())
}

pub fn to_hickory(r: &RData) -> Result<hrr::RData, String> {
    Ok(match r {
        RData::Soa(s) => hrr::RData::SOA(SOA::new(
            dns_name(&s.mname)?,
            dns_name(&s.rname)?,
            s.serial,
            soa_i32("refresh", s.refresh)?,
            soa_i32("retry", s.retry)?,
            soa_i32("expire", s.expire)?,
            s.minimum,
        )),
        RData::Ns(n) => hrr::RData::NS(NS(dns_name(n)?)),
        RData::A(ip) => hrr::RData::A(A(*ip)),
        RData::Aaaa(ip) => hrr::RData::AAAA(AAAA(*ip)),
        RData::Mx {
            preference,
            exchange,
        } => hrr::RData::MX(MX::new(*preference, dns_name(exchange)?)),
        RData::Txt(strings) => {
            hrr::RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
        }
        RData::Cname(n) => hrr::RData::CNAME(CNAME(dns_name(n)?)),
    })
}

pub fn from_hickory(r: &hrr::RData) -> Option<RData> {
    Some(match r {
        hrr::RData::SOA(s) => RData::Soa(Soa {
            mname: model_name(&s.mname),
            rname: model_name(&s.rname),
            serial: s.serial,
            refresh: s.refresh as u32,
            retry: s.retry as u32,
            expire: s.expire as u32,
            minimum: s.minimum,
        }),
        hrr::RData::NS(n) => RData::Ns(model_name(&n.0)),
        hrr::RData::A(a) => RData::A(a.0),
        hrr::RData::AAAA(a) => RData::Aaaa(a.0),
        hrr::RData::MX(mx) => RData::Mx {
            preference: mx.preference,
            exchange: model_name(&mx.exchange),
        },
        hrr::RData::TXT(t) => RData::Txt(t.txt_data.iter().map(|s| s.to_vec()).collect()),
        hrr::RData::CNAME(c) => RData::Cname(model_name(&c.0)),
        _ => return None,
    })
}

pub fn model_type(t: hrr::RecordType) -> Option<RecordType> {
    Some(match t {
        hrr::RecordType::SOA => RecordType::Soa,
        hrr::RecordType::NS => RecordType::Ns,
        hrr::RecordType::A => RecordType::A,
        hrr::RecordType::AAAA => RecordType::Aaaa,
        hrr::RecordType::MX => RecordType::Mx,
        hrr::RecordType::TXT => RecordType::Txt,
        hrr::RecordType::CNAME => RecordType::Cname,
        _ => return None,
    })
}

pub fn hickory_type(t: RecordType) -> hrr::RecordType {
    match t {
        RecordType::Soa => hrr::RecordType::SOA,
        RecordType::Ns => hrr::RecordType::NS,
        RecordType::A => hrr::RecordType::A,
        RecordType::Aaaa => hrr::RecordType::AAAA,
        RecordType::Mx => hrr::RecordType::MX,
        RecordType::Txt => hrr::RecordType::TXT,
        RecordType::Cname => hrr::RecordType::CNAME,
    }
}
