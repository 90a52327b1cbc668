//! The embedded server's full request handler: what it answers, from the zone
//! served now, for every request the fast path ([`super::fast`]) leaves to it:
//! zone transfers (TSIG-signed), ANY, malformed requests. It also decides what
//! the fast path's prepared responses say ([`lookup`]).

use super::cookie::{CookieSecrets, SecretCache};
use super::fast::COOKIE_OPTION;
use super::transport::MAX_UDP_PAYLOAD;
use super::xfr::{self, Delta, TransferKeys, chain_from, soa_serial};
use super::zone_handle::{AXFR_MESSAGE_BYTES, Served, ZoneHandle};
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Edns, Header, LowerQuery, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{CNAME, NS};
use hickory_proto::rr::{self as hrr, DNSClass, LowerName, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tracing::debug;

/// The embedded server's full request handler.
pub struct Responder {
    handle: ZoneHandle,
    allow_axfr: Vec<IpNet>,
    keys: TransferKeys,
    cookies: Option<CookieSecrets>,
}

impl Responder {
    pub fn new(
        handle: ZoneHandle,
        allow_axfr: Vec<IpNet>,
        keys: TransferKeys,
        cookies: Option<CookieSecrets>,
    ) -> Responder {
        Responder {
            handle,
            allow_axfr,
            keys,
            cookies,
        }
    }
}

/// What a transfer request gets.
pub(super) enum Transfer<'s> {
    /// The whole zone.
    Axfr,
    /// The changes since the client's serial, oldest first.
    Ixfr(&'s [Arc<Delta>]),
}

/// What to send back for one request; records borrow from the served snapshot.
pub(super) enum Reply<'s> {
    Error(ResponseCode),
    Answer {
        authoritative: bool,
        code: ResponseCode,
        truncated: bool,
        answers: Vec<&'s Record>,
        authorities: Vec<&'s Record>,
        additionals: Vec<&'s Record>,
    },
    Transfer(Transfer<'s>),
}

impl<'s> Reply<'s> {
    fn answer(answers: Vec<&'s Record>) -> Reply<'s> {
        Reply::Answer {
            authoritative: true,
            code: ResponseCode::NoError,
            truncated: false,
            answers,
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn negative(code: ResponseCode, served: &'s Served, answers: Vec<&'s Record>) -> Reply<'s> {
        Reply::Answer {
            authoritative: true,
            code,
            truncated: false,
            answers,
            authorities: vec![&served.negative_soa],
            additionals: Vec::new(),
        }
    }
}

/// Whether the request's question section is exactly one question written
/// without compression. The response echoes the question's original bytes; a
/// compression pointer there can only point outside the question (forward,
/// into records the response does not have), so echoing it would send a
/// malformed response. Such requests get FORMERR without a question.
fn question_is_plain(request: &Request) -> bool {
    if request.queries.len() != 1 {
        return false;
    }
    // Labels (length bytes below 64), the root, then type and class: nothing else.
    let bytes = request.queries.as_bytes();
    let mut i = 0;
    while let Some(&len) = bytes.get(i) {
        if len == 0 {
            return bytes.len() == i + 5;
        }
        if len & 0xc0 != 0 {
            return false;
        }
        i += 1 + usize::from(len);
    }
    false
}

/// The question section to echo instead of the request's, when echoing the
/// request's would corrupt the response (see [`question_is_plain`]): none.
fn replacement_questions(request: &Request) -> Option<Queries> {
    if request.queries.is_empty() || question_is_plain(request) {
        None
    } else {
        Queries::read(&mut BinDecoder::new(&[]), 0).ok()
    }
}

/// Longest chain of in-zone CNAMEs followed in one answer.
const MAX_CNAME_CHAIN: usize = 8;

fn decide<'s>(served: Option<&'s Served>, request: &Request, may_transfer: bool) -> Reply<'s> {
    let query = match question(request) {
        Ok(q) => q,
        Err(code) => return Reply::Error(code),
    };
    let Some(served) = served else {
        return Reply::Error(ResponseCode::ServFail);
    };
    let qname = query.name();
    if !served.origin.zone_of(qname) {
        return Reply::Error(ResponseCode::Refused);
    }
    match query.query_type() {
        hrr::RecordType::AXFR | hrr::RecordType::IXFR => transfer(served, request, may_transfer),
        qtype => lookup(served, qname, qtype),
    }
}

/// The one question a request may ask, or the error code it gets instead.
fn question(request: &Request) -> Result<&LowerQuery, ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    let [query] = request.queries.queries() else {
        return Err(ResponseCode::FormErr);
    };
    if !question_is_plain(request) || query.query_type() == hrr::RecordType::OPT {
        return Err(ResponseCode::FormErr);
    }
    if query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    Ok(query)
}

/// The serial an IXFR request says the client has (its authority SOA).
fn ixfr_serial(request: &Request) -> Option<u32> {
    request
        .authorities
        .iter()
        .find(|r| r.record_type() == hrr::RecordType::SOA)
        .map(soa_serial)
}

/// A zone transfer: only of the whole zone, only to allowed clients (a TSIG key
/// or an allowed network), only over TCP (a datagram gets a truncated answer, or
/// for IXFR the current SOA, so the client retries over TCP). IXFR answers from
/// the journal, or with the whole zone when the client is further behind.
fn transfer<'s>(served: &'s Served, request: &Request, allowed: bool) -> Reply<'s> {
    let qname = request.queries.queries()[0].name();
    if !allowed || *qname != served.origin {
        return Reply::Error(ResponseCode::Refused);
    }
    let ixfr = request.queries.queries()[0].query_type() == hrr::RecordType::IXFR;
    let current = soa_serial(served.soa());
    if ixfr {
        let Some(serial) = ixfr_serial(request) else {
            return Reply::Error(ResponseCode::FormErr);
        };
        // Up to date (or ahead of us), or over UDP: the current SOA alone.
        let newer = serial == current || (serial.wrapping_sub(current) as i32) > 0;
        if newer || request.protocol() == Protocol::Udp {
            return Reply::answer(vec![served.soa()]);
        }
        if let Some(chain) = chain_from(&served.journal, serial) {
            return Reply::Transfer(Transfer::Ixfr(chain));
        }
    }
    if request.protocol() == Protocol::Udp {
        return Reply::Answer {
            authoritative: true,
            code: ResponseCode::NoError,
            truncated: true,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };
    }
    Reply::Transfer(Transfer::Axfr)
}

/// The answer for `qname`, following CNAMEs inside the zone.
pub(super) fn lookup<'s>(
    served: &'s Served,
    qname: &LowerName,
    qtype: hrr::RecordType,
) -> Reply<'s> {
    let mut answers: Vec<&Record> = Vec::new();
    let mut name = std::borrow::Cow::Borrowed(qname);
    for _ in 0..MAX_CNAME_CHAIN {
        let Some(rrsets) = served.nodes.get(name.as_ref()) else {
            // (After a CNAME into the zone, the CNAME stays in the answer: RFC 6604.)
            return Reply::negative(ResponseCode::NXDomain, served, answers);
        };
        let of_type = |t: hrr::RecordType| rrsets.iter().find(|s| s[0].record_type() == t);
        if qtype == hrr::RecordType::ANY {
            // RFC 8482: one RRset is a complete answer to ANY.
            return match rrsets.first() {
                Some(set) => {
                    answers.extend(set.iter());
                    Reply::answer(answers)
                }
                None => Reply::negative(ResponseCode::NoError, served, answers),
            };
        }
        if let Some(set) = of_type(qtype) {
            answers.extend(set.iter());
            let mut reply = Reply::answer(answers);
            if let Reply::Answer { additionals, .. } = &mut reply
                && qtype == hrr::RecordType::NS
            {
                additionals.extend(glue(served, set));
            }
            return reply;
        }
        let Some(cname) = of_type(hrr::RecordType::CNAME) else {
            return Reply::negative(ResponseCode::NoError, served, answers);
        };
        answers.extend(cname.iter());
        let hrr::RData::CNAME(CNAME(target)) = &cname[0].data else {
            return Reply::answer(answers);
        };
        let target = LowerName::new(target);
        if !served.origin.zone_of(&target) {
            return Reply::answer(answers);
        }
        name = std::borrow::Cow::Owned(target);
    }
    Reply::answer(answers)
}

/// The addresses of the in-zone nameservers an NS answer names.
fn glue<'s>(served: &'s Served, ns: &'s [Record]) -> impl Iterator<Item = &'s Record> {
    ns.iter()
        .filter_map(|r| match &r.data {
            hrr::RData::NS(NS(target)) => served.nodes.get(&LowerName::new(target)),
            _ => None,
        })
        .flat_map(|sets| sets.iter())
        .filter(|s| {
            matches!(
                s[0].record_type(),
                hrr::RecordType::A | hrr::RecordType::AAAA
            )
        })
        .flatten()
}

/// The cookie option of a request: `Ok(None)` without one, `Err` when it is
/// malformed (RFC 7873 §5.2.2: FORMERR).
fn request_cookie(request: &Request) -> Result<Option<&[u8]>, ()> {
    let Some(edns) = &request.edns else {
        return Ok(None);
    };
    let mut found = None;
    for option in edns.options().as_ref().iter() {
        if let (EdnsCode::Cookie, EdnsOption::Unknown(_, data)) = option {
            if found.is_some() || !(data.len() == 8 || (16..=40).contains(&data.len())) {
                return Err(());
            }
            found = Some(data.as_slice());
        }
    }
    Ok(found)
}

impl Responder {
    /// The response's OPT record: our payload size, and a server cookie when
    /// the client sent a cookie.
    fn response_edns(&self, request: &Request, cookie: Option<&[u8]>) -> Option<Edns> {
        let req = request.edns.as_ref()?;
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        e.set_version(0);
        if let (Some(option), Some(secrets)) = (cookie, &self.cookies) {
            let mut reply = [0u8; 24];
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32);
            secrets.check(
                &mut SecretCache::default(),
                option,
                request.src().ip(),
                now,
                &mut reply,
            );
            e.options_mut()
                .insert(EdnsOption::Unknown(COOKIE_OPTION, reply.to_vec()));
        }
        Some(e)
    }

    /// Answers `request`; `signed` when its TSIG verified (which authorises a
    /// transfer).
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        signed: bool,
        mut response_handle: R,
    ) -> ResponseInfo {
        let replaced = replacement_questions(request);
        let questions = replaced.as_ref().unwrap_or(&request.queries);
        let cookie = request_cookie(request);
        let edns = self.response_edns(request, cookie.unwrap_or(None));
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            let code = ResponseCode::BADVERS;
            return send_error(request, questions, code, edns.as_ref(), response_handle).await;
        }
        if cookie.is_err() {
            let code = ResponseCode::FormErr;
            return send_error(request, questions, code, edns.as_ref(), response_handle).await;
        }
        let served = self.handle.snapshot();
        let may_transfer = signed
            || self
                .allow_axfr
                .iter()
                .any(|n| n.contains(&request.src().ip()));
        match decide(served.as_deref(), request, may_transfer) {
            Reply::Error(code) => {
                send_error(request, questions, code, edns.as_ref(), response_handle).await
            }
            Reply::Answer {
                authoritative,
                code,
                truncated,
                answers,
                authorities,
                additionals,
            } => {
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.authoritative = authoritative;
                meta.response_code = code;
                meta.truncation = truncated;
                let response = MessageResponseBuilder::new(questions, edns.as_ref()).build(
                    meta,
                    answers,
                    authorities,
                    std::iter::empty(),
                    additionals,
                );
                match response_handle.send_response(response).await {
                    Ok(info) => info,
                    Err(error) => {
                        debug!(%error, "sending a DNS response failed");
                        failed(request)
                    }
                }
            }
            Reply::Transfer(Transfer::Axfr) => {
                let served = served.as_deref().expect("a transfer is decided on a zone");
                self.handle.metrics.transferred(false);
                let chunks = by_size(served.transfer()).into_iter();
                transfer_messages(chunks, request, questions, edns.as_ref(), response_handle).await
            }
            Reply::Transfer(Transfer::Ixfr(chain)) => {
                let served = served.as_deref().expect("a transfer is decided on a zone");
                self.handle.metrics.transferred(true);
                let chunks = by_size(ixfr_records(served, chain)).into_iter();
                transfer_messages(chunks, request, questions, edns.as_ref(), response_handle).await
            }
        }
    }
}

/// An incremental transfer's records (RFC 1995 §4): the current SOA, then for
/// each change the old SOA, what it deleted, the new SOA, what it added; the
/// current SOA again.
fn ixfr_records<'s>(served: &'s Served, chain: &'s [Arc<Delta>]) -> Vec<&'s Record> {
    let mut out = vec![served.soa()];
    for d in chain {
        out.push(&d.old_soa);
        out.extend(&d.deleted);
        out.push(&d.new_soa);
        out.extend(&d.added);
    }
    out.push(served.soa());
    out
}

/// `records` in messages of about [`AXFR_MESSAGE_BYTES`].
fn by_size(records: Vec<&Record>) -> Vec<Vec<&Record>> {
    let mut out = vec![Vec::new()];
    let mut size = 0;
    for r in records {
        let len = r.to_bytes().map_or(AXFR_MESSAGE_BYTES, |b| b.len());
        if size + len > AXFR_MESSAGE_BYTES && size > 0 {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("never empty").push(r);
    }
    out
}

/// Sends a transfer, one message per chunk of records.
async fn transfer_messages<'s, R: ResponseHandler>(
    chunks: impl Iterator<Item = Vec<&'s Record>>,
    request: &Request,
    questions: &Queries,
    edns: Option<&Edns>,
    mut response_handle: R,
) -> ResponseInfo {
    let mut last = failed(request);
    for chunk in chunks {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        let response = MessageResponseBuilder::new(questions, edns).build(
            meta,
            chunk,
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => last = info,
            Err(error) => {
                debug!(%error, "sending a zone transfer message failed");
                return failed(request);
            }
        }
    }
    last
}

fn failed(request: &Request) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata: meta,
        counts: Default::default(),
    })
}

async fn send_error<R: ResponseHandler>(
    request: &Request,
    questions: &Queries,
    code: ResponseCode,
    edns: Option<&Edns>,
    mut response_handle: R,
) -> ResponseInfo {
    let response = MessageResponseBuilder::new(questions, edns).error_msg(&request.metadata, code);
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            debug!(%error, "sending a DNS error response failed");
            failed(request)
        }
    }
}

/// A response handler that keeps the encoded messages instead of sending them.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    messages: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Capture {
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(
            &mut *self
                .messages
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_net::NetError> {
        let max = match self.protocol {
            Protocol::Udp => response.edns().map_or(512, Edns::max_payload),
            _ => u16::MAX,
        };
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(buf);
        Ok(info)
    }
}

/// The whole request path without sockets (fast path and full handler, no rate
/// limiting, no cookies): parses `raw` exactly as the server's sockets do and
/// answers it, returning the encoded messages (none when the packet is
/// dropped). For fuzzing and tests; see [`super::request::endpoint`] for the
/// path with every option.
pub fn answer_raw(
    handle: &ZoneHandle,
    allow_axfr: &[IpNet],
    raw: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> Vec<Vec<u8>> {
    let options = super::request::ServeOptions {
        allow_axfr: allow_axfr.to_vec(),
        rrl: super::rrl::RrlConfig {
            rate: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut worker = super::request::endpoint(handle, &options);
    futures::executor::block_on(worker.answer(raw, src, protocol))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses one request and answers it with the full handler: the encoded
/// messages to send back (none when the packet is dropped: not DNS, or a
/// response). A request that does not parse but has a header gets FORMERR; one
/// whose TSIG does not verify gets NOTAUTH; one whose TSIG verifies gets every
/// message signed.
pub(super) async fn answer(
    responder: &Responder,
    raw: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Vec<Vec<u8>> {
    let capture = Capture {
        protocol,
        messages: Arc::default(),
    };
    // Shorter than a header: not DNS, dropped.
    let Ok(header) = Header::read(&mut BinDecoder::new(&raw)) else {
        return Vec::new();
    };
    let request = match Request::from_bytes(raw, src, protocol) {
        Ok(r) if r.metadata.message_type == MessageType::Response => return Vec::new(),
        Ok(r) => r,
        Err(_) => {
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return Vec::new();
            };
            let mut c = capture.clone();
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            let _ = c.send_response(response).await;
            return capture.take();
        }
    };
    let now = unix_now();
    let signed = match &request.signature {
        None => None,
        Some(sig) => match xfr::verify(&responder.keys, request.as_slice(), sig, now) {
            Ok(signed) => Some(signed),
            Err(refused) => {
                return not_authorised(responder, &request, refused, capture, now).await;
            }
        },
    };
    let info = responder
        .respond(&request, signed.is_some(), capture.clone())
        .await;
    responder.handle.metrics.answered(protocol, &info);
    let mut messages = capture.take();
    if let Some(signed) = signed
        && let Err(error) = xfr::sign(&signed, &mut messages, now)
    {
        debug!(%error, "signing a response with TSIG failed");
        return Vec::new();
    }
    messages
}

/// NOTAUTH, with the TSIG error that says why.
async fn not_authorised(
    responder: &Responder,
    request: &Request,
    refused: xfr::Refused,
    capture: Capture,
    now: u64,
) -> Vec<Vec<u8>> {
    let questions = replacement_questions(request);
    let questions = questions.as_ref().unwrap_or(&request.queries);
    let info = send_error(
        request,
        questions,
        ResponseCode::NotAuth,
        None,
        capture.clone(),
    )
    .await;
    responder.handle.metrics.answered(request.protocol(), &info);
    let mut messages = capture.take();
    if let Some(m) = messages.first_mut()
        && let Err(error) = xfr::refuse(refused, m, now)
    {
        debug!(%error, "adding the TSIG error failed");
        return Vec::new();
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zone::fixtures::{cfg, domain};
    use crate::core::zone::{desired_zone, dkim_text};
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType as T};

    const TOKEN: &str = "abcdefghijklmnop";

    fn handle() -> ZoneHandle {
        let h = ZoneHandle::new();
        let key = "K".repeat(700);
        h.publish(desired_zone(
            &cfg(),
            &crate::core::trust::Trust::as_written(),
            &[domain(
                "acme",
                "example.com",
                TOKEN,
                &[("anypost1", &key), ("anypost2", "QUJD")],
                true,
                1,
            )],
        ))
        .unwrap();
        h
    }

    fn ask_with(
        h: &ZoneHandle,
        name: &str,
        t: T,
        edns: Option<u16>,
        protocol: Protocol,
        allow: &[IpNet],
    ) -> Vec<Message> {
        let mut m = Message::query();
        m.metadata.id = 4711;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        answer_raw(
            h,
            allow,
            &m.to_vec().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
            protocol,
        )
        .iter()
        .map(|b| Message::from_vec(b).unwrap())
        .collect()
    }

    fn ask(h: &ZoneHandle, name: &str, t: T) -> Message {
        ask_with(h, name, t, Some(1232), Protocol::Udp, &[])
            .pop()
            .unwrap()
    }

    /// `name` under the token (the token's own name for "").
    fn v(name: &str) -> String {
        let base = format!("{TOKEN}.dns.anypost.example.");
        if name.is_empty() {
            base
        } else {
            format!("{name}.{base}")
        }
    }

    #[test]
    fn answers_are_authoritative_without_recursion() {
        let h = handle();
        let r = ask(&h, &v("anypost1._domainkey"), T::TXT);
        assert_eq!(r.metadata.id, 4711);
        assert!(r.metadata.authoritative && !r.metadata.recursion_available);
        assert!(r.metadata.recursion_desired);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        let hrr::RData::TXT(txt) = &r.answers[0].data else {
            panic!()
        };
        let text: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(text, dkim_text(&"K".repeat(700)).into_bytes());
        assert!(txt.txt_data.iter().all(|s| s.len() <= 255));
    }

    #[test]
    fn nxdomain_nodata_and_empty_non_terminals() {
        let h = handle();
        let r = ask(&h, &v("nothing"), T::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.metadata.authoritative);
        assert_eq!(r.authorities[0].record_type(), T::SOA);
        assert_eq!(
            r.authorities[0].ttl,
            crate::core::zone::config::NEGATIVE_TTL
        );
        for (name, t) in [(v("anypost1._domainkey"), T::A), (v("_domainkey"), T::TXT)] {
            let r = ask(&h, &name, t);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(r.answers.is_empty());
            assert_eq!(r.authorities[0].record_type(), T::SOA);
        }
    }

    #[test]
    fn cname_is_returned_for_every_type_and_any_is_minimal() {
        let h = handle();
        for t in [T::A, T::AAAA, T::TXT, T::CNAME] {
            let r = ask(&h, &v("track"), t);
            assert_eq!(r.answers.len(), 1);
            assert_eq!(r.answers[0].record_type(), T::CNAME);
        }
        let r = ask(&h, &v(""), T::ANY);
        assert_eq!(r.answers.len(), 1, "{:?}", r.answers);
        let r = ask(&h, "dns.anypost.example.", T::ANY);
        assert_eq!(r.answers[0].record_type(), T::SOA);
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn apex_ns_with_glue_and_soa() {
        let h = handle();
        let r = ask(&h, "DNS.anypost.example.", T::NS);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.additionals.len(), 2);
        let r = ask(&h, "dns.anypost.example.", T::SOA);
        let hrr::RData::SOA(soa) = &r.answers[0].data else {
            panic!()
        };
        assert_eq!(Some(soa.serial), h.serial());
    }

    #[test]
    fn refusals() {
        let h = handle();
        let r = ask(&h, "example.com.", T::A);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert!(!r.metadata.authoritative && !r.metadata.recursion_available);
        let r = ask(&h, "anypost.example.", T::A);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        let tcp = |allow: &[IpNet]| {
            ask_with(
                &h,
                "dns.anypost.example.",
                T::AXFR,
                None,
                Protocol::Tcp,
                allow,
            )
        };
        assert_eq!(tcp(&[])[0].metadata.response_code, ResponseCode::Refused);
        let other: IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            tcp(&[other])[0].metadata.response_code,
            ResponseCode::Refused
        );
    }

    #[test]
    fn axfr_for_allowed_clients() {
        let h = handle();
        let allow: IpNet = "127.0.0.0/8".parse().unwrap();
        let msgs = ask_with(
            &h,
            "dns.anypost.example.",
            T::AXFR,
            None,
            Protocol::Tcp,
            &[allow],
        );
        let records: Vec<_> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
        assert_eq!(records.first().unwrap().record_type(), T::SOA);
        assert_eq!(records.last().unwrap().record_type(), T::SOA);
        // SOA x2, NS, A, AAAA, MX, SPF, 2 DKIM, CNAME
        assert_eq!(records.len(), 10);
        let udp = ask_with(
            &h,
            "dns.anypost.example.",
            T::AXFR,
            None,
            Protocol::Udp,
            &[allow],
        );
        assert!(udp[0].metadata.truncation && udp[0].answers.is_empty());
    }

    #[test]
    fn udp_size_is_honoured_and_tcp_gets_everything() {
        let h = handle();
        let name = v("anypost1._domainkey");
        let r = ask_with(&h, &name, T::TXT, None, Protocol::Udp, &[])
            .pop()
            .unwrap();
        assert!(r.metadata.truncation);
        assert!(r.answers.is_empty());
        let r = ask_with(&h, &name, T::TXT, Some(600), Protocol::Udp, &[])
            .pop()
            .unwrap();
        assert!(r.metadata.truncation);
        assert_eq!(r.max_payload(), 600);
        let r = ask_with(&h, &name, T::TXT, Some(65000), Protocol::Udp, &[])
            .pop()
            .unwrap();
        assert!(!r.metadata.truncation);
        assert_eq!(r.max_payload(), MAX_UDP_PAYLOAD);
        let r = ask_with(&h, &name, T::TXT, None, Protocol::Tcp, &[])
            .pop()
            .unwrap();
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn unloaded_zone_is_servfail_and_garbage_is_harmless() {
        let h = ZoneHandle::new();
        let r = ask(&h, "dns.anypost.example.", T::SOA);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        let src = "127.0.0.1:1".parse().unwrap();
        assert!(answer_raw(&h, &[], b"short", src, Protocol::Udp).is_empty());
        let mut bad = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0x3f, b'a']);
        let out = answer_raw(&h, &[], &bad, src, Protocol::Udp);
        let r = Message::from_vec(&out[0]).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(r.metadata.id, 0x1234);
    }

    /// Found by fuzzing: a question whose name is a compression pointer past the
    /// question (or many questions with such names) made a response that did not
    /// parse, because the question bytes are echoed as they came.
    #[test]
    fn questions_with_forward_pointers_get_formerr_without_a_question() {
        let h = handle();
        let src = "127.0.0.1:1".parse().unwrap();
        let mut raw = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        raw.extend_from_slice(&[0xc0, 18, 0x00, 0x01, 0x00, 0x01]);
        raw.extend_from_slice(b"\x01a\x00");
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            let out = answer_raw(&h, &[], &raw, src, protocol);
            let r = Message::from_vec(&out[0]).expect("the response parses");
            assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
            assert!(r.queries.is_empty());
        }
        // Two questions, one of them compressed against the other: FORMERR, and
        // the echoed questions still parse.
        let mut two = vec![0x12, 0x35, 0x01, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0];
        two.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01\xc0\x0c\x00\x10\x00\x01");
        let out = answer_raw(&h, &[], &two, src, Protocol::Udp);
        let r = Message::from_vec(&out[0]).expect("the response parses");
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn metrics_count_answers_by_rcode() {
        let h = handle();
        ask(&h, &v(""), T::MX);
        ask(&h, "example.com.", T::A);
        ask_with(
            &h,
            &v("anypost1._domainkey"),
            T::TXT,
            None,
            Protocol::Udp,
            &[],
        );
        let mut registry = prometheus_client::registry::Registry::default();
        h.metrics().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"dns_queries_total{transport="udp",rcode="NOERROR"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dns_queries_total{transport="udp",rcode="REFUSED"} 1"#),
            "{text}"
        );
        assert!(text.contains("dns_truncated_total 1"), "{text}");
        assert!(text.contains("dns_zone_rrsets 9"), "{text}");
    }

    #[test]
    fn publish_bumps_the_serial_only_on_change_and_holds_tells_the_truth() {
        let h = handle();
        let serial = h.serial().unwrap();
        let key = "K".repeat(700);
        let d = domain(
            "acme",
            "example.com",
            TOKEN,
            &[("anypost1", &key), ("anypost2", "QUJD")],
            true,
            1,
        );
        assert_eq!(
            h.publish(desired_zone(
                &cfg(),
                &crate::core::trust::Trust::as_written(),
                std::slice::from_ref(&d)
            )),
            None
        );
        assert!(h.holds(TOKEN, &[&key, "QUJD"]));
        assert!(!h.holds(TOKEN, &["QUJE"]));
        assert!(!h.holds("qrstuvwxyz234567", &[]));
        {
            use crate::core::ports::{Published, Publisher};
            use crate::core::vocab::Reason;
            let keys = [key.as_str(), "QUJD"];
            assert_eq!(h.published(TOKEN, &keys), Published::Yes);
            assert!(matches!(
                h.published(TOKEN, &["QUJE"]),
                Published::No {
                    reason: Reason::Publishing,
                    ..
                }
            ));
            assert!(matches!(
                ZoneHandle::new().published(TOKEN, &keys),
                Published::Unknown {
                    reason: Reason::ZoneNotLoaded,
                    ..
                }
            ));
        }
        let next = h.publish(desired_zone(
            &cfg(),
            &crate::core::trust::Trust::as_written(),
            &[] as &[crate::core::api::SendingDomain],
        ));
        assert!(next.unwrap() > serial);
        assert!(!h.holds(TOKEN, &[]));
        let r = ask(&h, &v(""), T::MX);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}
