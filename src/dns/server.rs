//! The embedded authoritative server: our own request handler, answering from an
//! in-memory copy of the zone. UDP queries are received, answered and sent in one
//! loop per core with no task or channel per query (hickory-server's UDP transport
//! spawned a task per packet and sent through a channel, which cost about a third
//! of the throughput); TCP and zone transfers go through hickory-server.
//!
//! Every replica serves. The zone lives behind a [`ZoneHandle`]; publishing swaps
//! in a new immutable snapshot (with a lookup index built beforehand), so queries
//! never wait for a rebuild and never see half a change.

use super::Error;
use super::zone::{RData, RecordType, Zone, dkim_text, next_serial};
use crate::naming::ZoneNames;
use hickory_net::runtime::Time;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, NS};
use hickory_proto::rr::{self as hrr, DNSClass, LowerName, Name, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Largest UDP response, whatever the client offers: the DNS Flag Day 2020 size,
/// which avoids IP fragmentation. Larger answers are truncated (TC) and the client
/// retries over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Idle TCP connections are closed after this.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a TCP connection may queue: a whole zone transfer is queued before it
/// is written, so this bounds the zone size AXFR can serve (x AXFR_MESSAGE_BYTES).
const TCP_RESPONSE_BUFFER: usize = 4096;
/// Target size of one zone-transfer message.
const AXFR_MESSAGE_BYTES: usize = 16 * 1024;

/// The zone as served: the model plus a lookup index of wire-format records.
struct Served {
    zone: Arc<Zone>,
    origin: LowerName,
    /// Apex SOA for negative answers: TTL = min(SOA TTL, minimum) (RFC 2308).
    negative_soa: Record,
    /// Every name that exists, including empty non-terminals (no RRsets).
    nodes: HashMap<LowerName, Vec<Vec<Record>>>,
    /// The zone transfer: SOA, every other record, SOA; split into messages.
    axfr: Vec<Record>,
    axfr_chunks: Vec<std::ops::Range<usize>>,
}

fn name(n: &str) -> Option<Name> {
    super::wire::dns_name(n).ok()
}

fn to_wire(owner: &Name, ttl: u32, r: &RData) -> Option<Record> {
    let data = super::wire::to_hickory(r).ok()?;
    Some(Record::from_rdata(owner.clone(), ttl, data))
}

impl Served {
    /// Builds the index. Names that are not valid DNS names cannot come from the
    /// checked flags and tokens; they are skipped with a warning rather than
    /// failing the whole zone.
    fn build(zone: Zone) -> Option<Served> {
        let origin_name = name(zone.origin())?;
        let origin = LowerName::new(&origin_name);
        let mut nodes: HashMap<LowerName, Vec<Vec<Record>>> = HashMap::new();
        let mut soa = None;
        let mut rest = Vec::new();
        for (owner, _, set) in zone.iter() {
            let Some(owner_name) = name(owner) else {
                warn!(
                    name = owner,
                    "skipping a zone name that is not a valid DNS name"
                );
                continue;
            };
            let records: Vec<Record> = set
                .rdata()
                .iter()
                .filter_map(|r| to_wire(&owner_name, set.ttl, r))
                .collect();
            if records.is_empty() {
                continue;
            }
            if set.record_type() == RecordType::Soa && owner == zone.origin() {
                soa = Some(records[0].clone());
            } else {
                rest.extend(records.iter().cloned());
            }
            // The owner and every name between it and the apex exist.
            let mut n = LowerName::new(&owner_name);
            nodes.entry(n.clone()).or_default().push(records);
            while n != origin && n.num_labels() > origin.num_labels() {
                n = n.base_name();
                nodes.entry(n.clone()).or_default();
            }
        }
        let soa = soa?;
        let mut negative_soa = soa.clone();
        if let hrr::RData::SOA(s) = &soa.data {
            negative_soa.ttl = soa.ttl.min(s.minimum);
        }
        let mut axfr = Vec::with_capacity(rest.len() + 2);
        axfr.push(soa.clone());
        axfr.extend(rest);
        axfr.push(soa.clone());
        let mut axfr_chunks = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, r) in axfr.iter().enumerate() {
            let len = r.to_bytes().map(|b| b.len()).unwrap_or(AXFR_MESSAGE_BYTES);
            if size + len > AXFR_MESSAGE_BYTES && i > start {
                axfr_chunks.push(start..i);
                (start, size) = (i, 0);
            }
            size += len;
        }
        axfr_chunks.push(start..axfr.len());
        Some(Served {
            zone: Arc::new(zone),
            origin,
            negative_soa,
            nodes,
            axfr,
            axfr_chunks,
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct QueryLabels {
    /// udp or tcp.
    transport: &'static str,
    /// The response code, e.g. NOERROR, NXDOMAIN, REFUSED.
    rcode: &'static str,
}

/// Metrics of the embedded server; register them with [`DnsMetrics::register`].
#[derive(Default)]
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    truncated: Counter,
    publishes: Counter,
    serial: Gauge,
    rrsets: Gauge,
}

impl DnsMetrics {
    /// Adds the metrics to `registry` (names prefixed `dns_`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "dns_queries",
            "Queries answered by the embedded DNS server, by transport and response code",
            self.queries.clone(),
        );
        registry.register(
            "dns_truncated",
            "UDP answers sent truncated (the client retries over TCP)",
            self.truncated.clone(),
        );
        registry.register(
            "dns_zone_publishes",
            "Zone contents published (each gets a new SOA serial)",
            self.publishes.clone(),
        );
        registry.register(
            "dns_zone_serial",
            "SOA serial of the zone served now",
            self.serial.clone(),
        );
        registry.register(
            "dns_zone_rrsets",
            "RRsets in the zone served now",
            self.rrsets.clone(),
        );
    }

    fn answered(&self, protocol: Protocol, info: &ResponseInfo) {
        let transport = match protocol {
            Protocol::Udp => "udp",
            _ => "tcp",
        };
        let rcode = match info.response_code {
            ResponseCode::NoError => "NOERROR",
            ResponseCode::NXDomain => "NXDOMAIN",
            ResponseCode::Refused => "REFUSED",
            ResponseCode::ServFail => "SERVFAIL",
            ResponseCode::FormErr => "FORMERR",
            ResponseCode::NotImp => "NOTIMP",
            ResponseCode::BADVERS => "BADVERS",
            _ => "OTHER",
        };
        self.queries
            .get_or_create(&QueryLabels { transport, rcode })
            .inc();
        if info.truncation {
            self.truncated.inc();
        }
    }
}

/// The zone every part of the operator shares: the DNS server reads it, the watch
/// publishes it, the controller asks whether it holds a domain's records.
/// Cloning is cheap.
#[derive(Clone)]
pub struct ZoneHandle {
    served: Arc<watch::Sender<Option<Arc<Served>>>>,
    publishing: Arc<Mutex<()>>,
    metrics: Arc<DnsMetrics>,
}

impl Default for ZoneHandle {
    fn default() -> Self {
        ZoneHandle::new()
    }
}

impl ZoneHandle {
    /// A handle with no zone yet. Until the first [`publish`](Self::publish) the
    /// server answers SERVFAIL, so a starting replica never claims that names
    /// don't exist before it has read the SendingDomains.
    pub fn new() -> ZoneHandle {
        ZoneHandle {
            served: Arc::new(watch::channel(None).0),
            publishing: Arc::new(Mutex::new(())),
            metrics: Arc::default(),
        }
    }

    /// The server's metrics, to register with the operator's registry.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }

    fn snapshot(&self) -> Option<Arc<Served>> {
        self.served.borrow().clone()
    }

    /// Serves `zone` from now on, unless it has the same content as the zone
    /// served now. Gives the SOA serial of the published zone, or `None` when
    /// nothing changed. The serial is the unix time, or one more than the previous
    /// serial if that is not greater ([`next_serial`]).
    pub fn publish(&self, mut zone: Zone) -> Option<u32> {
        let _one_at_a_time = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.snapshot();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let serial = match &current {
            Some(cur) if cur.zone.same_content(&zone) => return None,
            Some(cur) => next_serial(cur.zone.serial().unwrap_or(0), now),
            None => now,
        };
        zone.set_serial(serial);
        let origin = zone.origin().to_string();
        let rrsets = zone.len();
        match Served::build(zone) {
            Some(served) => {
                self.served.send_replace(Some(Arc::new(served)));
                self.metrics.publishes.inc();
                self.metrics.serial.set(i64::from(serial));
                self.metrics.rrsets.set(rrsets as i64);
                Some(serial)
            }
            None => {
                warn!(zone = %origin, "not publishing a zone without an SOA or with an invalid origin");
                None
            }
        }
    }

    /// The zone served now (`None` before the first publish).
    pub fn current(&self) -> Option<Arc<Zone>> {
        self.snapshot().map(|s| s.zone.clone())
    }

    /// Whether a zone has been published (for readiness).
    pub fn is_loaded(&self) -> bool {
        self.served.borrow().is_some()
    }

    /// The serial of the zone served now.
    pub fn serial(&self) -> Option<u32> {
        self.snapshot().and_then(|s| s.zone.serial())
    }

    /// Whether the zone served now holds the token's verification records (MX and
    /// SPF) and a DKIM record for every given public key (base64 SPKI, as in
    /// `status.dkim.selectors[].publicKey`). This is what `RecordsPublished`
    /// reports for the embedded backend.
    pub fn holds(&self, token: &str, public_keys: &[&str]) -> bool {
        let Some(zone) = self.current() else {
            return false;
        };
        let names = ZoneNames::new(token, zone.origin());
        let has = |n: &str, t| zone.get(n, t).is_some();
        has(&names.verification, RecordType::Mx)
            && has(&names.verification, RecordType::Txt)
            && public_keys.iter().all(|key| {
                let want = RData::txt(&dkim_text(key));
                names.dkim.iter().any(|n| {
                    zone.get(n, RecordType::Txt)
                        .is_some_and(|s| s.rdata().contains(&want))
                })
            })
    }

    /// Waits until the served zone changes (for tests and callers that want to
    /// react to a publish).
    pub async fn changed(&self) {
        let mut rx = self.served.subscribe();
        let _ = rx.changed().await;
    }
}

/// The controller's view of the embedded backend: a domain's records are
/// published when this replica's zone serves them.
impl crate::controller::Publisher for ZoneHandle {
    fn published(
        &self,
        token: &str,
        public_keys: &[String; 2],
    ) -> crate::controller::status::Published {
        use crate::controller::status::Published;
        let Some(zone) = self.current() else {
            return Published::No {
                reason: "ZoneNotLoaded",
                message: "the embedded DNS zone has not loaded the SendingDomains yet".into(),
            };
        };
        let keys: Vec<&str> = public_keys
            .iter()
            .map(String::as_str)
            .filter(|k| !k.is_empty())
            .collect();
        if self.holds(token, &keys) {
            Published::Yes
        } else {
            Published::No {
                reason: "Publishing",
                message: format!(
                    "the zone does not serve the records at {token}.{} yet; they follow the status within a second",
                    zone.origin()
                ),
            }
        }
    }
}

/// The embedded server's request handler.
pub struct Responder {
    handle: ZoneHandle,
    allow_axfr: Vec<IpNet>,
}

impl Responder {
    pub fn new(handle: ZoneHandle, allow_axfr: Vec<IpNet>) -> Responder {
        Responder { handle, allow_axfr }
    }
}

/// What to send back for one request; records borrow from the served snapshot.
enum Reply<'s> {
    Error(ResponseCode),
    Answer {
        authoritative: bool,
        code: ResponseCode,
        truncated: bool,
        answers: Vec<&'s Record>,
        authorities: Vec<&'s Record>,
        additionals: Vec<&'s Record>,
    },
    Transfer,
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

fn decide<'s>(served: Option<&'s Served>, request: &Request, allow_axfr: &[IpNet]) -> Reply<'s> {
    if request.metadata.op_code != OpCode::Query {
        return Reply::Error(ResponseCode::NotImp);
    }
    let [query] = request.queries.queries() else {
        return Reply::Error(ResponseCode::FormErr);
    };
    if !question_is_plain(request) {
        return Reply::Error(ResponseCode::FormErr);
    }
    let qtype = query.query_type();
    if qtype == hrr::RecordType::OPT {
        return Reply::Error(ResponseCode::FormErr);
    }
    if query.query_class() != DNSClass::IN {
        return Reply::Error(ResponseCode::Refused);
    }
    let Some(served) = served else {
        return Reply::Error(ResponseCode::ServFail);
    };
    let qname = query.name();
    if !served.origin.zone_of(qname) {
        return Reply::Error(ResponseCode::Refused);
    }
    if matches!(qtype, hrr::RecordType::AXFR | hrr::RecordType::IXFR) {
        let allowed = allow_axfr.iter().any(|n| n.contains(&request.src().ip()));
        if !allowed || *qname != served.origin {
            return Reply::Error(ResponseCode::Refused);
        }
        if request.protocol() == Protocol::Udp {
            // A transfer never fits a datagram: ask for TCP.
            return Reply::Answer {
                authoritative: true,
                code: ResponseCode::NoError,
                truncated: true,
                answers: Vec::new(),
                authorities: Vec::new(),
                additionals: Vec::new(),
            };
        }
        return Reply::Transfer;
    }

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
            if qtype == hrr::RecordType::NS
                && let Reply::Answer { additionals, .. } = &mut reply
            {
                for ns in set {
                    if let hrr::RData::NS(NS(target)) = &ns.data
                        && let Some(glue) = served.nodes.get(&LowerName::new(target))
                    {
                        for s in glue.iter().filter(|s| {
                            matches!(
                                s[0].record_type(),
                                hrr::RecordType::A | hrr::RecordType::AAAA
                            )
                        }) {
                            additionals.extend(s.iter());
                        }
                    }
                }
            }
            return reply;
        }
        match of_type(hrr::RecordType::CNAME) {
            Some(cname) => {
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
            None => return Reply::negative(ResponseCode::NoError, served, answers),
        }
    }
    Reply::answer(answers)
}

#[async_trait::async_trait]
impl RequestHandler for Responder {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let info = self.respond(request, response_handle).await;
        self.handle.metrics.answered(request.protocol(), &info);
        info
    }
}

impl Responder {
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut edns = None;
        if let Some(req) = &request.edns {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            e.set_version(0);
            if req.version() > 0 {
                edns = Some(e);
                let replaced = replacement_questions(request);
                return send_error(
                    request,
                    replaced.as_ref().unwrap_or(&request.queries),
                    ResponseCode::BADVERS,
                    edns.as_ref(),
                    response_handle,
                )
                .await;
            }
            edns = Some(e);
        }
        let served = self.handle.snapshot();
        let replaced = replacement_questions(request);
        let questions = replaced.as_ref().unwrap_or(&request.queries);
        match decide(served.as_deref(), request, &self.allow_axfr) {
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
            Reply::Transfer => {
                let served = served.as_deref().expect("a transfer is decided on a zone");
                let mut last = failed(request);
                for chunk in &served.axfr_chunks {
                    let mut meta = Metadata::response_from_request(&request.metadata);
                    meta.authoritative = true;
                    let response = MessageResponseBuilder::new(questions, edns.as_ref()).build(
                        meta,
                        served.axfr[chunk.clone()].iter(),
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
        }
    }
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

/// The embedded server, bound but not yet serving (so a caller binding port 0
/// learns the port first).
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen`. With port 0 both get the same free port.
    pub async fn bind(listen: SocketAddr) -> Result<DnsServer, Error> {
        let mut attempts = 0;
        loop {
            let udp = UdpSocket::bind(listen)
                .await
                .map_err(|source| Error::Bind {
                    addr: listen,
                    protocol: "udp",
                    source,
                })?;
            let addr = udp.local_addr().map_err(|source| Error::Bind {
                addr: listen,
                protocol: "udp",
                source,
            })?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(DnsServer { udp, tcp, addr }),
                Err(e)
                    if listen.port() == 0
                        && e.kind() == std::io::ErrorKind::AddrInUse
                        && attempts < 20 =>
                {
                    attempts += 1;
                }
                Err(source) => {
                    return Err(Error::Bind {
                        addr,
                        protocol: "tcp",
                        source,
                    });
                }
            }
        }
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers queries from `handle` until `shutdown` completes. AXFR is served
    /// (over TCP) to clients in `allow_axfr` and refused to everyone else.
    pub async fn run(
        self,
        handle: ZoneHandle,
        allow_axfr: Vec<IpNet>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = self.addr;
        let responder = Arc::new(Responder::new(handle.clone(), allow_axfr.clone()));
        let serve_error = |e: std::io::Error| Error::Serve {
            addr,
            source: hickory_net::NetError::from(e),
        };
        // UDP: one receive loop per core, each on its own copy of the socket.
        let loops = std::thread::available_parallelism().map_or(1, |n| n.get());
        let std_udp = self.udp.into_std().map_err(serve_error)?;
        let mut udp = tokio::task::JoinSet::new();
        for _ in 0..loops {
            let socket = UdpSocket::from_std(std_udp.try_clone().map_err(serve_error)?)
                .map_err(serve_error)?;
            udp.spawn(serve_udp(socket, responder.clone()));
        }
        drop(std_udp);
        // TCP (and zone transfers) through hickory's server.
        let mut server = hickory_server::Server::new(Responder::new(handle, allow_axfr));
        server.register_listener(self.tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        let token = server.shutdown_token().clone();
        tokio::select! {
            result = server.block_until_done() => result.map_err(|source| Error::Serve { addr, source }),
            Some(result) = udp.join_next() => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(serve_error(e)),
                Err(e) => Err(serve_error(std::io::Error::other(e))),
            },
            () = shutdown => {
                token.cancel();
                udp.abort_all();
                Ok(())
            }
        }
    }
}

/// Binds `listen` (UDP and TCP) and serves the zone in `handle` until `shutdown`.
pub async fn serve(
    handle: ZoneHandle,
    listen: SocketAddr,
    allow_axfr: Vec<IpNet>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    DnsServer::bind(listen)
        .await?
        .run(handle, allow_axfr, shutdown)
        .await
}

/// A response handler that keeps the encoded messages instead of sending them.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    messages: Arc<Mutex<Vec<Vec<u8>>>>,
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

/// The whole request path without sockets: parses `raw` exactly as the server's
/// transport does and answers it, returning the encoded messages (none when the
/// packet is dropped). For fuzzing and tests.
pub fn answer_raw(
    handle: &ZoneHandle,
    allow_axfr: &[IpNet],
    raw: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> Vec<Vec<u8>> {
    let responder = Responder::new(handle.clone(), allow_axfr.to_vec());
    futures::executor::block_on(answer(&responder, raw.to_vec(), src, protocol))
}

/// Parses one request and answers it: the encoded messages to send back (none
/// when the packet is dropped: not DNS, or a response). A request that does not
/// parse but has a header gets FORMERR.
async fn answer(
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
    match Request::from_bytes(raw, src, protocol) {
        Ok(request) => {
            if request.metadata.message_type == MessageType::Response {
                return Vec::new();
            }
            responder
                .handle_request::<_, hickory_net::runtime::TokioTime>(&request, capture.clone())
                .await;
        }
        Err(_) => {
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return Vec::new();
            };
            let mut c = capture.clone();
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            let _ = c.send_response(response).await;
        }
    }
    std::mem::take(
        &mut *capture
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Answers UDP queries on `socket` until it fails: receive, answer and send in
/// one task, with no task or channel per query (the server runs one such loop
/// per core, on copies of the same socket).
async fn serve_udp(socket: UdpSocket, responder: Arc<Responder>) -> std::io::Result<()> {
    // Queries are small; 4096 bytes also holds any UDP query a client sends.
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // The socket itself is gone: the server stops (and the process with it).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotConnected | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Err(e);
            }
            // E.g. an ICMP error from an earlier send, reported on this socket.
            Err(error) => {
                debug!(%error, "receiving a UDP query failed");
                continue;
            }
        };
        // Nothing can be sent back to these.
        if src.port() == 0 || src.ip().is_unspecified() || src.ip().is_multicast() {
            continue;
        }
        for reply in answer(&responder, buf[..len].to_vec(), src, Protocol::Udp).await {
            if let Err(error) = socket.send_to(&reply, src).await {
                debug!(%error, %src, "sending a DNS response failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::desired_zone;
    use crate::dns::zone::tests::{cfg, domain};
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::RecordType as T;

    const TOKEN: &str = "abcdefghijklmnop";

    fn handle() -> ZoneHandle {
        let h = ZoneHandle::new();
        let key = "K".repeat(700);
        h.publish(desired_zone(
            &cfg(),
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
        assert_eq!(r.authorities[0].ttl, crate::dns::zone::NEGATIVE_TTL);
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
            h.publish(desired_zone(&cfg(), std::slice::from_ref(&d))),
            None
        );
        assert!(h.holds(TOKEN, &[&key, "QUJD"]));
        assert!(!h.holds(TOKEN, &["QUJE"]));
        assert!(!h.holds("qrstuvwxyz234567", &[]));
        {
            use crate::controller::Publisher;
            use crate::controller::status::Published;
            let keys = [key.clone(), "QUJD".to_string()];
            assert_eq!(h.published(TOKEN, &keys), Published::Yes);
            let other = ["QUJE".to_string(), String::new()];
            assert!(matches!(
                h.published(TOKEN, &other),
                Published::No {
                    reason: "Publishing",
                    ..
                }
            ));
            assert!(matches!(
                ZoneHandle::new().published(TOKEN, &keys),
                Published::No {
                    reason: "ZoneNotLoaded",
                    ..
                }
            ));
        }
        let next = h.publish(desired_zone(&cfg(), &[] as &[crate::api::SendingDomain]));
        assert!(next.unwrap() > serial);
        assert!(!h.holds(TOKEN, &[]));
        let r = ask(&h, &v(""), T::MX);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}
