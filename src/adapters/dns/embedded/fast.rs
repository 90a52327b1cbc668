//! The fast path: ordinary queries answered from responses prepared when the zone
//! is published, with no parsing into hickory's types and no allocation per query.
//!
//! A query qualifies when it is exactly one plain question (no compression) of
//! class IN for a data type, with at most an OPT record (EDNS version 0, any
//! options, at most one well-formed cookie). Everything else (zone transfers,
//! ANY, TSIG, NOTIFY, malformed packets) goes to the full handler in
//! [`super::answer`], which answers the same way for the same question.
//!
//! Each name's answers are encoded once, behind a copy of the name's own
//! question: a client's question has the same length and labels (case aside), so
//! the compression pointers into it stay right when its bytes are echoed.

use super::answer::{Reply, lookup};
use super::transport::MAX_UDP_PAYLOAD;
use super::zone_handle::Served;
use hickory_proto::op::{Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// EDNS option code of a DNS cookie (RFC 7873).
pub const COOKIE_OPTION: u16 = 10;
/// Type code of OPT.
const OPT: u16 = 41;

/// A query the fast path answers, parsed in place.
#[derive(Debug, Clone, Copy)]
pub struct Query<'p> {
    pub id: [u8; 2],
    /// The second header byte's flags of the request (RD is echoed from byte 2,
    /// CD from byte 3).
    flags: [u8; 2],
    /// Name, type and class, as received.
    pub question: &'p [u8],
    pub qtype: u16,
    pub edns: Option<Opt<'p>>,
}

/// The OPT record of a query.
#[derive(Debug, Clone, Copy)]
pub struct Opt<'p> {
    pub payload: u16,
    pub dnssec_ok: bool,
    /// The cookie option's data: the client cookie (8 bytes) and possibly the
    /// server cookie (8 to 32 bytes).
    pub cookie: Option<&'p [u8]>,
}

impl Query<'_> {
    /// The question's name in wire format, as received.
    pub fn name(&self) -> &[u8] {
        &self.question[..self.question.len() - 4]
    }

    /// The largest response the client takes over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.payload.clamp(512, MAX_UDP_PAYLOAD)),
            None => 512,
        }
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Parses a query the fast path can answer, or `None` for the full handler.
pub fn parse(p: &[u8]) -> Option<Query<'_>> {
    let header = p.get(..12)?;
    // A query (QR=0) with opcode QUERY; one question, nothing else but an OPT.
    if header[2] & 0xf8 != 0 || header[4..10] != [0, 1, 0, 0, 0, 0] || header[10] != 0 {
        return None;
    }
    let additionals = header[11];
    let mut i = 12;
    loop {
        let len = usize::from(*p.get(i)?);
        if len == 0 {
            break;
        }
        if len >= 64 {
            return None;
        }
        i += 1 + len;
    }
    let name_end = i + 1;
    if name_end - 12 > 255 {
        return None;
    }
    let qtype = u16_at(p, name_end)?;
    // Class IN, and a data type (meta types, OPT and ANY take the full handler).
    if u16_at(p, name_end + 2)? != 1 || qtype == OPT || (128..=255).contains(&qtype) {
        return None;
    }
    let end = name_end + 4;
    let edns = match additionals {
        0 if p.len() == end => None,
        1 => Some(parse_opt(p, end)?),
        _ => return None,
    };
    Some(Query {
        id: [header[0], header[1]],
        flags: [header[2], header[3]],
        question: &p[12..end],
        qtype,
        edns,
    })
}

/// The OPT record at `at`, which must end the packet.
fn parse_opt(p: &[u8], at: usize) -> Option<Opt<'_>> {
    if *p.get(at)? != 0 || u16_at(p, at + 1)? != OPT {
        return None;
    }
    let payload = u16_at(p, at + 3)?;
    // Extended RCODE and version 0 (other versions get BADVERS from the handler).
    if *p.get(at + 5)? != 0 || *p.get(at + 6)? != 0 {
        return None;
    }
    let dnssec_ok = *p.get(at + 7)? & 0x80 != 0;
    let rdlen = usize::from(u16_at(p, at + 9)?);
    let mut i = at + 11;
    if p.len() != i + rdlen {
        return None;
    }
    let mut cookie = None;
    while i < p.len() {
        let code = u16_at(p, i)?;
        let len = usize::from(u16_at(p, i + 2)?);
        let data = p.get(i + 4..i + 4 + len)?;
        if code == COOKIE_OPTION {
            // A malformed or repeated cookie gets FORMERR from the handler.
            if cookie.is_some() || !(len == 8 || (16..=40).contains(&len)) {
                return None;
            }
            cookie = Some(data);
        }
        i += 4 + len;
    }
    Some(Opt {
        payload,
        dnssec_ok,
        cookie,
    })
}

/// How a response counts for response rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A positive answer; `name` identifies the RRset asked for.
    Answer { name: u32 },
    /// NXDOMAIN or NODATA: accounted to the zone, so that random names share one
    /// account.
    Negative,
    /// REFUSED, FORMERR and other errors.
    Error,
}

/// One prepared response: what follows the question, and its header fields.
#[derive(Debug, Clone)]
pub struct Body {
    bytes: Box<[u8]>,
    counts: [u16; 3],
    rcode: u8,
    pub kind: Kind,
}

/// The responses of one name: for each type it holds, and for any other type
/// (the CNAME of a name that has one; otherwise the zone's NODATA response).
#[derive(Debug)]
struct Node {
    by_type: Vec<(u16, Body)>,
    other: Option<Body>,
}

/// A fast hash for the zone's own names (the keys are ours; lookups never insert).
#[derive(Default)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        self.0 = h;
    }
}

type Names = HashMap<Box<[u8]>, Arc<Node>, BuildHasherDefault<NameHasher>>;

/// Every response of a zone, prepared when it is published.
pub struct Prepared {
    /// The zone's name, lower case, wire format.
    origin: Box<[u8]>,
    /// Each name's responses; those of a name whose records did not change
    /// are shared with the previous snapshot.
    names: Names,
    /// NXDOMAIN's and NODATA's authority section; its first two bytes (the
    /// SOA's owner) are a pointer to the zone's name inside the question, set
    /// per query.
    nxdomain: Body,
    nodata: Body,
    /// The next RRset id to give out (ids of shared responses are kept).
    next_id: u32,
}

/// `name` in lower-case wire format.
fn wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// Encodes sections behind a question for `name`, compressed against it.
fn encode(name: &Name, reply: &Reply<'_>, id: u32) -> Option<Body> {
    let Reply::Answer {
        code,
        answers,
        authorities,
        additionals,
        ..
    } = reply
    else {
        return None;
    };
    let mut buf = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut buf);
    enc.emit_vec(&[0; 12]).ok()?;
    HQuery::query(name.clone(), RecordType::NULL)
        .emit(&mut enc)
        .ok()?;
    let start = enc.offset();
    for r in answers.iter().chain(authorities).chain(additionals) {
        r.emit(&mut enc).ok()?;
    }
    let kind = match (*code, answers.is_empty()) {
        (ResponseCode::NoError, false) => Kind::Answer { name: id },
        _ => Kind::Negative,
    };
    Some(Body {
        bytes: buf[start..].into(),
        counts: [
            answers.len() as u16,
            authorities.len() as u16,
            additionals.len() as u16,
        ],
        rcode: u16::from(*code) as u8,
        kind,
    })
}

/// The NXDOMAIN or NODATA authority section: the SOA with a pointer for its
/// owner.
fn negative_body(soa: &Record, rcode: ResponseCode) -> Option<Body> {
    let mut buf = Vec::with_capacity(128);
    let mut enc = BinEncoder::new(&mut buf);
    // Pointers would be relative to this buffer: none.
    let mut enc = enc.with_name_encoding(NameEncoding::Uncompressed);
    // The owner is replaced per query: emit the record with the root as owner and
    // put two placeholder bytes in its place.
    let mut rec = soa.clone();
    rec.name = Name::root();
    rec.emit(&mut enc).ok()?;
    drop(enc);
    let mut bytes = vec![0xc0, 0x0c];
    bytes.extend_from_slice(&buf[1..]);
    Some(Body {
        bytes: bytes.into(),
        counts: [0, 1, 0],
        rcode: u16::from(rcode) as u8,
        kind: Kind::Negative,
    })
}

/// Whether a name's responses depend on its own records only: no NS (whose
/// answer carries the glue of other names) and no CNAME into the zone (whose
/// answer follows it).
fn self_contained(sets: &[Box<[Record]>], origin: &LowerName) -> bool {
    sets.iter().flatten().all(|r| match &r.data {
        RData::NS(_) => false,
        RData::CNAME(CNAME(target)) => !origin.zone_of(&LowerName::new(target)),
        _ => true,
    })
}

/// The responses of one name: for each RRset it holds, and the CNAME answer for
/// any other type if it has one (ids numbered from `id`).
fn prepare(
    served: &Served,
    lower: &LowerName,
    rrsets: &[Box<[Record]>],
    id: &mut u32,
) -> Option<Node> {
    let name = Name::from(lower);
    let mut by_type = Vec::with_capacity(rrsets.len());
    for set in rrsets {
        let t = set[0].record_type();
        *id = id.wrapping_add(1);
        let body = encode(&name, &lookup(served, lower, t), *id)?;
        by_type.push((u16::from(t), body));
    }
    let has_cname = rrsets
        .iter()
        .any(|s| s[0].record_type() == RecordType::CNAME);
    let other = if has_cname {
        *id = id.wrapping_add(1);
        Some(encode(
            &name,
            &lookup(served, lower, RecordType::NULL),
            *id,
        )?)
    } else {
        None
    };
    Some(Node { by_type, other })
}

impl Prepared {
    /// Nothing prepared (while the index is built).
    pub(super) fn empty() -> Prepared {
        let none = Body {
            bytes: Box::new([]),
            counts: [0; 3],
            rcode: 3,
            kind: Kind::Negative,
        };
        Prepared {
            origin: Box::new([0]),
            names: Names::default(),
            nxdomain: none.clone(),
            nodata: none,
            next_id: 0,
        }
    }

    /// Prepares every response of `served` (whose lookup index is built),
    /// taking over from `previous` the responses of every name whose RRsets it
    /// took over.
    pub(super) fn build(served: &Served, previous: Option<&Served>) -> Option<Prepared> {
        let mut names = Names::default();
        names.reserve(served.nodes.len());
        let mut id = previous.map_or(0, |p| p.prepared.next_id);
        for (lower, rrsets) in &served.nodes {
            let key: Box<[u8]> = lower_wire(lower).into();
            let kept = previous.and_then(|p| {
                let old = p.nodes.get(lower)?;
                let same = Arc::ptr_eq(old, rrsets) || (old.is_empty() && rrsets.is_empty());
                let node = p.prepared.names.get(&key)?;
                (same && self_contained(rrsets, &served.origin)).then(|| node.clone())
            });
            let node = match kept {
                Some(node) => node,
                None => Arc::new(prepare(served, lower, rrsets, &mut id)?),
            };
            names.insert(key, node);
        }
        Some(Prepared {
            origin: wire(&Name::from(&served.origin)).into(),
            names,
            nxdomain: negative_body(&served.negative_soa, ResponseCode::NXDomain)?,
            nodata: negative_body(&served.negative_soa, ResponseCode::NoError)?,
            next_id: id,
        })
    }

    /// The response for a question of `qtype` about `name` (wire format, lower
    /// case): `None` for a name outside the zone; the NXDOMAIN body for a name
    /// in it that does not exist.
    pub fn find(&self, name: &[u8], qtype: u16) -> Option<&Body> {
        if let Some(node) = self.names.get(name) {
            let body = node.by_type.iter().find(|(t, _)| *t == qtype);
            return Some(
                body.map_or_else(|| node.other.as_ref().unwrap_or(&self.nodata), |(_, b)| b),
            );
        }
        self.in_zone(name).then_some(&self.nxdomain)
    }

    /// Where the zone's name starts in `name`, if `name` is in the zone.
    fn origin_at(&self, name: &[u8]) -> Option<usize> {
        let at = name.len().checked_sub(self.origin.len())?;
        let mut i = 0;
        // Only at a label boundary.
        while i < at {
            i += 1 + usize::from(name[i]);
        }
        (i == at && name[at..] == *self.origin).then_some(at)
    }

    fn in_zone(&self, name: &[u8]) -> bool {
        self.origin_at(name).is_some()
    }
}

/// What the fast path made of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub kind: Kind,
    pub rcode: u8,
    pub truncated: bool,
}

/// The OPT record of the response: the server's payload, DO echoed, and the
/// cookie to return (if any).
fn emit_opt(out: &mut Vec<u8>, q: &Query<'_>, cookie: &[u8]) {
    let Some(e) = q.edns else { return };
    out.extend_from_slice(&[0, 0, 41]);
    out.extend_from_slice(&e.payload.clamp(512, MAX_UDP_PAYLOAD).to_be_bytes());
    out.extend_from_slice(&[0, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0]);
    if cookie.is_empty() {
        out.extend_from_slice(&[0, 0]);
    } else {
        out.extend_from_slice(&(cookie.len() as u16 + 4).to_be_bytes());
        out.extend_from_slice(&COOKIE_OPTION.to_be_bytes());
        out.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
        out.extend_from_slice(cookie);
    }
}

fn emit_header(out: &mut Vec<u8>, q: &Query<'_>, aa: bool, tc: bool, rcode: u8, counts: [u16; 3]) {
    out.extend_from_slice(&q.id);
    out.push(0x80 | if aa { 0x04 } else { 0 } | if tc { 0x02 } else { 0 } | (q.flags[0] & 0x01));
    out.push((q.flags[1] & 0x10) | rcode);
    out.extend_from_slice(&[0, 1]);
    let ar = counts[2] + u16::from(q.edns.is_some());
    for c in [counts[0], counts[1], ar] {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

/// Writes the response to `q` into `out` (cleared first): from `prepared`, with
/// `cookie` (client and server cookie) in its OPT, at most `limit` bytes (a
/// larger answer is sent truncated, without records). `lower` is scratch space.
pub fn respond(
    prepared: &Prepared,
    q: &Query<'_>,
    cookie: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Outcome {
    out.clear();
    let mut lower = [0u8; 255];
    let name = q.name();
    let lower = &mut lower[..name.len()];
    for (l, b) in lower.iter_mut().zip(name) {
        *l = b.to_ascii_lowercase();
    }
    let Some(body) = prepared.find(lower, q.qtype) else {
        emit_header(out, q, false, false, 5, [0; 3]);
        out.extend_from_slice(q.question);
        emit_opt(out, q, cookie);
        return Outcome {
            kind: Kind::Error,
            rcode: 5,
            truncated: false,
        };
    };
    let opt_len = if q.edns.is_some() {
        11 + if cookie.is_empty() {
            0
        } else {
            4 + cookie.len()
        }
    } else {
        0
    };
    let truncated = 12 + q.question.len() + body.bytes.len() + opt_len > limit;
    let counts = if truncated { [0; 3] } else { body.counts };
    emit_header(out, q, true, truncated, body.rcode, counts);
    out.extend_from_slice(q.question);
    if !truncated {
        let start = out.len();
        out.extend_from_slice(&body.bytes);
        if std::ptr::eq(body, &prepared.nxdomain) || std::ptr::eq(body, &prepared.nodata) {
            let at = prepared.origin_at(lower).unwrap_or(0) + 12;
            out[start..start + 2].copy_from_slice(&(0xc000 | at as u16).to_be_bytes());
        }
    }
    emit_opt(out, q, cookie);
    Outcome {
        kind: body.kind,
        rcode: body.rcode,
        truncated,
    }
}

/// The lookup index of names, for [`Prepared::find`] (exposed for the tests).
pub fn lower_wire(name: &LowerName) -> Vec<u8> {
    wire(&Name::from(name))
}
