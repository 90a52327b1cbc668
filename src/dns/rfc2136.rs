//! The rfc2136 backend: the leader keeps an existing authoritative server (BIND,
//! Knot, PowerDNS) in step with the SendingDomains, with TSIG-signed DNS UPDATE.
//!
//! One sync is a pipeline: read the server's zone with a TSIG-signed AXFR, compute
//! the desired zone from the SendingDomains (the same [`desired_zone`] the embedded
//! server serves), [`plan`] the difference, and send it in bounded UPDATE messages.
//! A read that is not a complete transfer (no opening or closing SOA, a dropped
//! connection, a bad signature) aborts the sync before anything is planned, so a
//! failed read can never turn into a mass delete or a mass re-add. Every UPDATE
//! carries prerequisites stating what the read saw, so a zone changed behind our
//! back makes the server refuse the batch instead of applying a stale plan.
//!
//! The wire exchange is done here over one TCP connection per sync rather than
//! through hickory's multiplexing client: a zone transfer is a long run of
//! messages, and the multiplexer delivers them through a small bounded channel
//! that drops what a slow reader has not taken yet. Reading the framed stream
//! ourselves keeps every message, and lets an error answer whose TSIG does not
//! verify (wrong secret, unknown key) still be explained by its rcode.

use super::diff::{Change, plan};
use super::wire::{dns_name, from_hickory, hickory_type, model_name, model_type, to_hickory};
use super::zone::{RData, RecordType, RrSet, Zone, ZoneConfig, desired_zone, dkim_text};
use super::zone::{in_zone, normalize};
use crate::api::SendingDomain;
use crate::cli::Rfc2136Args;
use crate::controller::status::Published;
use crate::naming::ZoneNames;
use futures::StreamExt;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::{self as hrr, DNSClass, Name, Record, TSigVerifier, TSigner};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

/// Most changes (RRset creates, replaces, deletes) sent in one UPDATE message.
pub const MAX_CHANGES_PER_UPDATE: usize = 100;
/// Most bytes of record data (estimated) in one UPDATE message: well below the
/// 64 KiB a DNS message over TCP can hold, even with 4096-bit DKIM keys.
pub const MAX_UPDATE_BYTES: usize = 32 * 1024;
/// Time to connect, and to wait for any one message from the server.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a whole zone transfer may take.
pub const AXFR_TIMEOUT: Duration = Duration::from_secs(120);
/// SendingDomain changes arriving within this window are synced together.
pub const COALESCE: Duration = Duration::from_millis(500);
/// First wait after a failed sync; it doubles on each further failure...
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// ...up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Clock difference TSIG tolerates between us and the server (RFC 8945 suggests 300s).
const TSIG_FUDGE: u16 = 300;

/// What went wrong in the rfc2136 backend; each variant names the failed action,
/// and the sync errors name the server and the TSIG key, so a condition message
/// or a log line says where to look.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag of the backend is missing or unusable.
    #[error("{flag}: {reason}")]
    Config { flag: &'static str, reason: String },
    /// The zone could not be read completely.
    #[error("reading zone {zone} from {server} by AXFR with TSIG key {key}: {reason}")]
    Axfr {
        zone: String,
        server: SocketAddr,
        key: String,
        reason: String,
    },
    /// An UPDATE was not applied.
    #[error("updating zone {zone} on {server} with TSIG key {key}: {reason}")]
    Update {
        zone: String,
        server: SocketAddr,
        key: String,
        reason: String,
    },
}

impl Error {
    /// A fixed string per variant, for Event reasons and metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Config { .. } => "Rfc2136Config",
            Error::Axfr { .. } => "Rfc2136Axfr",
            Error::Update { .. } => "Rfc2136Update",
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration

/// The TSIG algorithms the backend signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    /// Parses the `--tsig-algorithm` value (BIND's spelling, any case).
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha384" => Some(Algorithm::HmacSha384),
            "hmac-sha512" => Some(Algorithm::HmacSha512),
            _ => None,
        }
    }

    fn tsig(self) -> TsigAlgorithm {
        match self {
            Algorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            Algorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            Algorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// The checked flags of the backend.
#[derive(Clone)]
pub struct Rfc2136Config {
    /// The primary server to read from and update.
    pub server: SocketAddr,
    /// TSIG key name, lower case, without the trailing dot.
    pub key_name: String,
    pub algorithm: Algorithm,
    /// How often the zone is re-read even without changes.
    pub resync: Duration,
    secret: Vec<u8>,
    signer: TSigner,
}

impl fmt::Debug for Rfc2136Config {
    /// Everything but the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136Config")
            .field("server", &self.server)
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

impl Rfc2136Config {
    /// Checks the flags `--zone-backend rfc2136` needs; every error names its flag.
    pub fn from_args(args: &Rfc2136Args) -> Result<Rfc2136Config, Error> {
        let missing = |flag: &'static str, what: &str| Error::Config {
            flag,
            reason: format!("required with --zone-backend rfc2136 ({what})"),
        };
        let server = args.rfc2136_server.ok_or_else(|| {
            missing(
                "--rfc2136-server",
                "IP:PORT of the primary server to update",
            )
        })?;
        let key_name = args
            .tsig_key_name
            .as_deref()
            .map(normalize)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                missing(
                    "--tsig-key-name",
                    "the name of the TSIG key, as in the server's key clause",
                )
            })?;
        let key_dns = Name::from_ascii(format!("{key_name}.")).map_err(|e| Error::Config {
            flag: "--tsig-key-name",
            reason: format!("{key_name:?} is not a valid key name: {e}"),
        })?;
        let path = args.tsig_secret_file.as_deref().ok_or_else(|| {
            missing(
                "--tsig-secret-file",
                "a file holding the TSIG secret in base64",
            )
        })?;
        let secret = read_secret(path)?;
        let algorithm = Algorithm::parse(&args.tsig_algorithm).ok_or_else(|| Error::Config {
            flag: "--tsig-algorithm",
            reason: format!(
                "{:?} is not supported; use hmac-sha256 (the default), hmac-sha384 or hmac-sha512",
                args.tsig_algorithm
            ),
        })?;
        let signer =
            TSigner::new(secret.clone(), algorithm.tsig(), key_dns, TSIG_FUDGE).map_err(|e| {
                Error::Config {
                    flag: "--tsig-algorithm",
                    reason: format!("cannot sign with {}: {e}", algorithm.as_str()),
                }
            })?;
        Ok(Rfc2136Config {
            server,
            key_name,
            algorithm,
            resync: args.rfc2136_resync,
            secret,
            signer,
        })
    }

    /// The secret's length in bytes (never the secret itself).
    pub fn secret_len(&self) -> usize {
        self.secret.len()
    }
}

/// Reads a base64 TSIG secret: the bare secret (surrounding white space is fine),
/// or a whole BIND key clause as `tsig-keygen` prints it (`secret "...";` is used).
fn read_secret(path: &Path) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| Error::Config {
        flag: "--tsig-secret-file",
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("reading {}: {e}", path.display())))?;
    let encoded: String = match text.find("secret") {
        Some(at) => text[at..].split('"').nth(1).unwrap_or_default().to_string(),
        None => text.to_string(),
    };
    let encoded: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    if encoded.is_empty() {
        return Err(bad(format!("{} holds no secret", path.display())));
    }
    let secret = data_encoding::BASE64
        .decode(encoded.as_bytes())
        .map_err(|e| {
            bad(format!(
                "{} does not hold a base64 secret (as in BIND's key clause): {e}",
                path.display()
            ))
        })?;
    if secret.is_empty() {
        return Err(bad(format!("{} holds an empty secret", path.display())));
    }
    Ok(secret)
}

// ---------------------------------------------------------------------------
// Batching

/// Splits the plan into consecutive batches of at most `max_changes` changes and
/// about `max_bytes` of record data each (a single larger change goes alone).
/// Order is kept, so deletes still precede the creates that may depend on them.
pub fn batches(changes: &[Change], max_changes: usize, max_bytes: usize) -> Vec<&[Change]> {
    let max_changes = max_changes.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, change) in changes.iter().enumerate() {
        let size = change_size(change);
        let count = i - start;
        if count > 0 && (count >= max_changes || bytes + size > max_bytes) {
            out.push(&changes[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

/// Wire size of a name, about.
fn name_size(name: &str) -> usize {
    name.len() + 2
}

fn rdata_size(r: &RData) -> usize {
    match r {
        RData::Soa(s) => name_size(&s.mname) + name_size(&s.rname) + 20,
        RData::Ns(n) | RData::Cname(n) => name_size(n),
        RData::A(_) => 4,
        RData::Aaaa(_) => 16,
        RData::Mx { exchange, .. } => 2 + name_size(exchange),
        RData::Txt(strings) => strings.iter().map(|s| s.len() + 1).sum(),
    }
}

/// Bytes a change adds to an UPDATE message, about: its records (old ones as
/// prerequisites, new ones as additions) and the RRset deletion.
fn change_size(change: &Change) -> usize {
    const RR_OVERHEAD: usize = 10;
    let set = |name: &str, s: &RrSet| -> usize {
        s.rdata()
            .iter()
            .map(|r| name_size(name) + RR_OVERHEAD + rdata_size(r))
            .sum()
    };
    let name = change.name();
    let fixed = name_size(name) + RR_OVERHEAD;
    match change {
        Change::Create { new, .. } => fixed + set(name, new),
        Change::Replace { old, new, .. } => 2 * fixed + set(name, old) + set(name, new),
        Change::Delete { old, .. } => 2 * fixed + set(name, old),
    }
}

/// Record types the server maintains itself (DNSSEC signing and its bookkeeping):
/// never deleted, whoever's name they are at.
fn server_maintained(t: hrr::RecordType) -> bool {
    use hrr::RecordType as T;
    matches!(
        t,
        T::RRSIG | T::NSEC | T::NSEC3 | T::NSEC3PARAM | T::DNSKEY | T::CDS | T::CDNSKEY
    ) || u16::from(t) == 65534 // BIND's private signing-state type
}

/// The server's zone as one complete AXFR gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The RRsets of the types the operator publishes (and the apex ones).
    pub zone: Zone,
    /// RRsets of other types below the apex (someone else's, hence stale), by
    /// name and type; server-maintained DNSSEC types are not listed.
    pub foreign: BTreeSet<(String, hrr::RecordType)>,
}

impl Snapshot {
    /// Builds the snapshot from a transfer's records (the closing SOA included or
    /// not); records outside `origin` are ignored.
    pub fn from_records<'a>(origin: &str, records: impl IntoIterator<Item = &'a Record>) -> Self {
        let origin = normalize(origin);
        let mut sets: std::collections::BTreeMap<(String, RecordType), (u32, Vec<RData>)> =
            Default::default();
        let mut foreign = BTreeSet::new();
        for r in records {
            let name = model_name(&r.name);
            if !in_zone(&name, &origin) {
                continue;
            }
            match (model_type(r.record_type()), from_hickory(&r.data)) {
                (Some(t), Some(data)) => {
                    let entry = sets.entry((name, t)).or_insert((r.ttl, Vec::new()));
                    entry.1.push(data);
                }
                _ => {
                    let t = r.record_type();
                    if name != origin && !server_maintained(t) {
                        foreign.insert((name, t));
                    }
                }
            }
        }
        let mut zone = Zone::new(&origin);
        for ((name, t), (ttl, mut data)) in sets {
            if t == RecordType::Soa {
                // The transfer repeats the SOA at its end; one is the RRset.
                data.truncate(1);
            }
            zone.insert(&name, RrSet::new(ttl, data));
        }
        Snapshot { zone, foreign }
    }
}

/// The UPDATE message for one batch: zone section, then for every change its
/// prerequisite (what the read saw: the old RRset exactly, or no RRset) and its
/// updates (delete the RRset, add the new records).
pub fn update_message(origin: &str, batch: &[Change]) -> Result<Message, String> {
    let zone = dns_name(origin)?;
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Update;
    msg.metadata.recursion_desired = false;
    let mut q = Query::new();
    q.set_name(zone)
        .set_query_type(hrr::RecordType::SOA)
        .set_query_class(DNSClass::IN);
    msg.add_query(q);
    let records = |name: &Name, set: &RrSet, ttl: u32| -> Result<Vec<Record>, String> {
        set.rdata()
            .iter()
            .map(|r| Ok(Record::from_rdata(name.clone(), ttl, to_hickory(r)?)))
            .collect()
    };
    for change in batch {
        let name = dns_name(change.name())?;
        let t = hickory_type(change.rtype());
        let mut delete = Record::update0(name.clone(), 0, t);
        delete.dns_class = DNSClass::ANY;
        match change {
            Change::Create { new, .. } => {
                let mut absent = Record::update0(name.clone(), 0, t);
                absent.dns_class = DNSClass::NONE;
                msg.add_answer(absent);
                for r in records(&name, new, new.ttl)? {
                    msg.add_authority(r);
                }
            }
            Change::Replace { old, new, .. } => {
                for r in records(&name, old, 0)? {
                    msg.add_answer(r);
                }
                msg.add_authority(delete);
                for r in records(&name, new, new.ttl)? {
                    msg.add_authority(r);
                }
            }
            Change::Delete { old, .. } => {
                for r in records(&name, old, 0)? {
                    msg.add_answer(r);
                }
                msg.add_authority(delete);
            }
        }
    }
    Ok(msg)
}

/// The UPDATE deleting RRsets of types the operator does not publish.
fn delete_foreign_message(
    origin: &str,
    foreign: &[(String, hrr::RecordType)],
) -> Result<Message, String> {
    let mut msg = update_message(origin, &[])?;
    for (name, t) in foreign {
        let mut delete = Record::update0(dns_name(name)?, 0, *t);
        delete.dns_class = DNSClass::ANY;
        msg.add_authority(delete);
    }
    Ok(msg)
}

// ---------------------------------------------------------------------------
// The wire: TSIG-signed requests over TCP

fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

/// Why the server answered an error, in words that point at the fix.
fn explain_rcode(code: ResponseCode, update: bool) -> String {
    let name = rcode_name(code);
    match code {
        ResponseCode::Refused if update => {
            format!("the server refused the update ({name}): its update policy must allow this key")
        }
        ResponseCode::Refused => format!(
            "the server refused the transfer ({name}): its allow-transfer must allow this key"
        ),
        ResponseCode::NotAuth => {
            format!("the server is not authoritative for the zone or rejected the key ({name})")
        }
        ResponseCode::NotZone => format!("a name is outside the zone ({name})"),
        ResponseCode::YXRRSet | ResponseCode::NXRRSet | ResponseCode::YXDomain => format!(
            "the zone changed on the server since it was read (prerequisite failed: {name}); the next sync re-reads it"
        ),
        _ => format!("the server answered {name}"),
    }
}

/// An answer whose TSIG did not verify: if the server says why (a TSIG error such
/// as BADSIG), say that; else report the verification failure.
fn explain_unverified(bytes: &[u8], key: &str, error: &dyn fmt::Display) -> String {
    let Ok(msg) = Message::from_vec(bytes) else {
        return format!("the answer could not be decoded: {error}");
    };
    let tsig_error = msg.signature().and_then(|s| s.data.error);
    let rcode = msg.metadata.response_code;
    match tsig_error {
        Some(TsigError::BadSig) => format!(
            "the server rejected TSIG key {key} (BADSIG: the secret differs from the server's; check --tsig-secret-file)"
        ),
        Some(TsigError::BadKey) => format!(
            "the server rejected TSIG key {key} (BADKEY: it knows no key of this name and algorithm; check --tsig-key-name and --tsig-algorithm)"
        ),
        Some(TsigError::BadTime) => format!(
            "the server rejected TSIG key {key} (BADTIME: the clocks of the operator and the server differ by more than {TSIG_FUDGE}s)"
        ),
        Some(other) => format!("the server rejected TSIG key {key} ({other:?})"),
        None if rcode != ResponseCode::NoError => format!(
            "{}; its answer is not signed with TSIG key {key}",
            explain_rcode(rcode, msg.metadata.op_code == OpCode::Update)
        ),
        None => format!(
            "the answer's TSIG signature did not verify with key {key} (is the secret right?): {error}"
        ),
    }
}

/// One TCP connection to the server.
struct Connection {
    stream: TcpStream,
    key: String,
}

impl Connection {
    async fn open(server: SocketAddr, key: &str) -> Result<Connection, String> {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(server))
            .await
            .map_err(|_| format!("connecting timed out after {IO_TIMEOUT:?}"))?
            .map_err(|e| format!("connecting: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            key: key.to_string(),
        })
    }

    /// Signs and sends `msg`; the verifier checks the answers.
    async fn send(&mut self, mut msg: Message, signer: &TSigner) -> Result<TSigVerifier, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let verifier = msg
            .finalize(signer, now)
            .map_err(|e| format!("signing the request: {e}"))?
            .ok_or("signing the request gave no verifier")?;
        let bytes = msg
            .to_vec()
            .map_err(|e| format!("encoding the request: {e}"))?;
        let len = u16::try_from(bytes.len())
            .map_err(|_| format!("the request is too large ({} bytes)", bytes.len()))?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(&framed))
            .await
            .map_err(|_| "sending timed out".to_string())?
            .map_err(|e| format!("sending: {e}"))?;
        Ok(verifier)
    }

    /// Receives one answer to `id`, verifies its signature and its rcode.
    async fn receive(
        &mut self,
        verifier: &mut TSigVerifier,
        id: u16,
        update: bool,
    ) -> Result<Message, String> {
        let bytes = tokio::time::timeout(IO_TIMEOUT, async {
            let mut len = [0u8; 2];
            self.stream.read_exact(&mut len).await?;
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            self.stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(|_| format!("no answer within {IO_TIMEOUT:?}"))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "the server closed the connection before answering completely".to_string()
            }
            _ => format!("receiving: {e}"),
        })?;
        let msg = match verifier.verify(&bytes) {
            Ok(response) => response.into_message(),
            Err(e) => return Err(explain_unverified(&bytes, &self.key, &e)),
        };
        if msg.metadata.id != id {
            return Err(format!(
                "the answer's id {} does not match the request's {id}",
                msg.metadata.id
            ));
        }
        if msg.metadata.response_code != ResponseCode::NoError {
            return Err(explain_rcode(msg.metadata.response_code, update));
        }
        Ok(msg)
    }
}

/// Adds one transfer message's answers to `records`; true once the closing SOA
/// has arrived (anything after it is ignored). A transfer must open with the SOA.
fn take_transfer_answers(records: &mut Vec<Record>, answers: Vec<Record>) -> Result<bool, String> {
    for r in answers {
        let is_soa = r.record_type() == hrr::RecordType::SOA;
        if records.is_empty() && !is_soa {
            return Err(
                "the transfer does not start with the zone's SOA (is the server authoritative for it?)"
                    .into(),
            );
        }
        let closing = is_soa && !records.is_empty();
        records.push(r);
        if closing {
            return Ok(true);
        }
    }
    if records.is_empty() {
        return Err("the server sent no SOA: the transfer is empty".into());
    }
    Ok(false)
}

/// The server the backend syncs with.
#[derive(Clone)]
pub struct Server {
    addr: SocketAddr,
    key: String,
    signer: TSigner,
}

impl Server {
    pub fn new(cfg: &Rfc2136Config) -> Server {
        Server {
            addr: cfg.server,
            key: cfg.key_name.clone(),
            signer: cfg.signer.clone(),
        }
    }

    fn axfr_error(&self, zone: &str, reason: String) -> Error {
        Error::Axfr {
            zone: zone.to_string(),
            server: self.addr,
            key: self.key.clone(),
            reason,
        }
    }

    fn update_error(&self, zone: &str, reason: String) -> Error {
        Error::Update {
            zone: zone.to_string(),
            server: self.addr,
            key: self.key.clone(),
            reason,
        }
    }

    /// Reads the whole zone with a TSIG-signed AXFR. Anything but a complete
    /// transfer (opening SOA, records, closing SOA, every message signed) is an
    /// error.
    pub async fn read_zone(&self, origin: &str) -> Result<Snapshot, Error> {
        let records = tokio::time::timeout(AXFR_TIMEOUT, self.transfer(origin))
            .await
            .map_err(|_| format!("the transfer took longer than {AXFR_TIMEOUT:?}"))
            .and_then(|r| r)
            .map_err(|reason| self.axfr_error(origin, reason))?;
        Ok(Snapshot::from_records(origin, &records))
    }

    async fn transfer(&self, origin: &str) -> Result<Vec<Record>, String> {
        let mut conn = Connection::open(self.addr, &self.key).await?;
        let mut msg = Message::query();
        msg.metadata.recursion_desired = false;
        let mut q = Query::new();
        q.set_name(dns_name(origin)?)
            .set_query_type(hrr::RecordType::AXFR)
            .set_query_class(DNSClass::IN);
        msg.add_query(q);
        let id = msg.metadata.id;
        let mut verifier = conn.send(msg, &self.signer).await?;
        let mut records: Vec<Record> = Vec::new();
        loop {
            let answer = conn.receive(&mut verifier, id, false).await?;
            if take_transfer_answers(&mut records, answer.answers)? {
                return Ok(records);
            }
        }
    }

    /// Sends one UPDATE and waits for the server to apply it.
    async fn send_update(&self, conn: &mut Connection, msg: Message) -> Result<(), String> {
        let id = msg.metadata.id;
        let mut verifier = conn.send(msg, &self.signer).await?;
        conn.receive(&mut verifier, id, true).await.map(|_| ())
    }

    /// Applies the changes (and deletes the foreign RRsets) in batches over one
    /// connection; stops at the first batch the server does not apply.
    pub async fn apply(
        &self,
        origin: &str,
        changes: &[Change],
        foreign: &[(String, hrr::RecordType)],
    ) -> Result<usize, Error> {
        if changes.is_empty() && foreign.is_empty() {
            return Ok(0);
        }
        let mut conn = Connection::open(self.addr, &self.key)
            .await
            .map_err(|reason| self.update_error(origin, reason))?;
        let plan_batches = batches(changes, MAX_CHANGES_PER_UPDATE, MAX_UPDATE_BYTES);
        let total = plan_batches.len() + foreign.chunks(MAX_CHANGES_PER_UPDATE).count();
        let mut sent = 0;
        for batch in plan_batches {
            let msg = update_message(origin, batch)
                .map_err(|reason| self.update_error(origin, reason))?;
            self.send_update(&mut conn, msg).await.map_err(|reason| {
                self.update_error(
                    origin,
                    format!(
                        "batch {} of {total} ({} changes): {reason}",
                        sent + 1,
                        batch.len()
                    ),
                )
            })?;
            sent += 1;
        }
        for chunk in foreign.chunks(MAX_CHANGES_PER_UPDATE) {
            let msg = delete_foreign_message(origin, chunk)
                .map_err(|reason| self.update_error(origin, reason))?;
            self.send_update(&mut conn, msg).await.map_err(|reason| {
                self.update_error(
                    origin,
                    format!(
                        "batch {} of {total} (deleting {} RRsets): {reason}",
                        sent + 1,
                        chunk.len()
                    ),
                )
            })?;
            sent += 1;
        }
        Ok(sent)
    }
}

// ---------------------------------------------------------------------------
// One sync

/// What one successful sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// The zone on the server now (what was read, with the changes applied).
    pub zone: Zone,
    pub serial_read: Option<u32>,
    pub created: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub batches: usize,
}

/// The domains whose records belong in the zone: a SendingDomain being deleted
/// has its records removed (its finalizer waits for that).
pub fn live_domains(domains: &[Arc<SendingDomain>]) -> Vec<Arc<SendingDomain>> {
    domains
        .iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect()
}

/// Reads the server's zone, plans against `desired` and applies the plan.
pub async fn sync_once(server: &Server, desired: &Zone) -> Result<SyncReport, Error> {
    let origin = desired.origin();
    let snapshot = server.read_zone(origin).await?;
    let plan = plan(&snapshot.zone, desired);
    let foreign: Vec<(String, hrr::RecordType)> = snapshot.foreign.iter().cloned().collect();
    let batches = server.apply(origin, &plan.changes, &foreign).await?;
    let (created, replaced, deleted) = plan.counts();
    let mut zone = snapshot.zone;
    plan.apply(&mut zone);
    Ok(SyncReport {
        serial_read: zone.serial(),
        zone,
        created,
        replaced,
        deleted: deleted + foreign.len(),
        batches,
    })
}

// ---------------------------------------------------------------------------
// Metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct SyncLabels {
    /// ok, or the error's category (Rfc2136Axfr, Rfc2136Update, Rfc2136Config).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ChangeLabels {
    /// create, replace or delete (of one RRset).
    op: &'static str,
}

/// Metrics of the sync loop; register them with [`SyncMetrics::register`].
pub struct SyncMetrics {
    syncs: Family<SyncLabels, Counter>,
    changes: Family<ChangeLabels, Counter>,
    duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    failing: Gauge,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            syncs: Family::default(),
            changes: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            last_success: Gauge::default(),
            failing: Gauge::default(),
        }
    }
}

impl SyncMetrics {
    /// Adds the metrics to `registry` (names prefixed `rfc2136_`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "rfc2136_syncs",
            "Syncs of the zone to the server (by the leader), by outcome",
            self.syncs.clone(),
        );
        registry.register(
            "rfc2136_changes",
            "RRset changes the server accepted, by operation",
            self.changes.clone(),
        );
        registry.register(
            "rfc2136_sync_duration_seconds",
            "Time per sync: zone transfer, plan and UPDATEs",
            self.duration.clone(),
        );
        registry.register(
            "rfc2136_last_success_timestamp_seconds",
            "Unix time of the last successful sync or read of the zone",
            self.last_success.clone(),
        );
        registry.register(
            "rfc2136_failing",
            "1 while the last attempt to sync or read the zone failed",
            self.failing.clone(),
        );
    }

    fn succeeded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
        self.failing.set(0);
    }

    fn synced(&self, report: &SyncReport, took: Duration) {
        self.succeeded();
        self.syncs
            .get_or_create(&SyncLabels { outcome: "ok" })
            .inc();
        self.duration.observe(took.as_secs_f64());
        for (op, n) in [
            ("create", report.created),
            ("replace", report.replaced),
            ("delete", report.deleted),
        ] {
            self.changes
                .get_or_create(&ChangeLabels { op })
                .inc_by(n as u64);
        }
    }

    fn sync_failed(&self, error: &Error, took: Duration) {
        self.failing.set(1);
        self.syncs
            .get_or_create(&SyncLabels {
                outcome: error.category(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }
}

// ---------------------------------------------------------------------------
// What the controller sees

#[derive(Default)]
struct PublisherState {
    /// The zone on the server after the last successful sync.
    synced: Option<Arc<Zone>>,
    /// The last sync's error, while syncs fail.
    failure: Option<String>,
}

/// The controller's view of the rfc2136 backend, shared with the sync loop: a
/// domain's records are published when the last successful sync left them on
/// the server.
#[derive(Clone)]
pub struct Rfc2136Publisher {
    zone: String,
    server: SocketAddr,
    state: Arc<Mutex<PublisherState>>,
}

impl Rfc2136Publisher {
    pub fn new(zone: &str, cfg: &Rfc2136Config) -> Rfc2136Publisher {
        Rfc2136Publisher {
            zone: normalize(zone),
            server: cfg.server,
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PublisherState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a successful sync: the server holds `zone`.
    pub fn succeeded(&self, zone: Zone) {
        let mut s = self.state();
        s.synced = Some(Arc::new(zone));
        s.failure = None;
    }

    /// Records a failed sync.
    pub fn failed(&self, error: &Error) {
        self.state().failure = Some(error.to_string());
    }

    /// The error of the last sync, while syncs fail.
    pub fn last_error(&self) -> Option<String> {
        self.state().failure.clone()
    }

    /// Whether a sync has succeeded.
    pub fn is_synced(&self) -> bool {
        self.state().synced.is_some()
    }

    /// Whether the last successful sync left nothing at or below `<token>.<zone>`
    /// (false before the first sync: nothing is known yet). A finalizer waits for
    /// this before letting a deleted SendingDomain go.
    pub fn absent(&self, token: &str) -> bool {
        let Some(zone) = self.state().synced.clone() else {
            return false;
        };
        let base = format!("{token}.{}", self.zone);
        !zone.name_exists(&base)
    }
}

/// Whether `zone` holds the token's MX and SPF and a DKIM TXT for every key.
fn holds(zone: &Zone, token: &str, public_keys: &[&str]) -> bool {
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

impl crate::controller::Publisher for Rfc2136Publisher {
    fn external(&self) -> bool {
        true
    }

    fn absent(&self, token: &str) -> bool {
        Rfc2136Publisher::absent(self, token)
    }

    fn published(&self, token: &str, public_keys: &[String; 2]) -> Published {
        let (synced, failure) = {
            let s = self.state();
            (s.synced.clone(), s.failure.clone())
        };
        if let Some(error) = failure {
            return Published::No {
                reason: "SyncFailed",
                message: format!("{error}; retrying with backoff"),
            };
        }
        let keys: Vec<&str> = public_keys
            .iter()
            .map(String::as_str)
            .filter(|k| !k.is_empty())
            .collect();
        match synced {
            Some(zone) if holds(&zone, token, &keys) => Published::Yes,
            Some(_) => Published::No {
                reason: "Publishing",
                message: format!(
                    "the next sync to {} publishes the records at {token}.{}",
                    self.server, self.zone
                ),
            },
            None => Published::No {
                reason: "Publishing",
                message: format!(
                    "waiting for the first sync of zone {} to {}",
                    self.zone, self.server
                ),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// The loop

/// The next wait after a failure.
pub fn next_backoff(previous: Option<Duration>) -> Duration {
    previous
        .map(|d| d.saturating_mul(2))
        .unwrap_or(BACKOFF_START)
        .min(BACKOFF_CAP)
}

/// Longest the startup read of the zone may hold up the start of the controller.
pub const STARTUP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the server's zone once into `publisher`, before the controller starts:
/// its first reconciles then see what the server already holds, and an operator
/// restart does not report every domain as unpublished until the first sync. A
/// failure is recorded (the condition says SyncFailed) and does not stop startup.
pub async fn prime(publisher: &Rfc2136Publisher, config: &Rfc2136Config, origin: &str) {
    let server = Server::new(config);
    let read = tokio::time::timeout(STARTUP_READ_TIMEOUT, server.read_zone(origin)).await;
    match read {
        Ok(Ok(snapshot)) => {
            info!(zone = %origin, server = %config.server, rrsets = snapshot.zone.len(), "read the zone from the server");
            publisher.succeeded(snapshot.zone);
        }
        Ok(Err(error)) => {
            warn!(zone = %origin, server = %config.server, key = %config.key_name, %error, "reading the zone at startup failed; the sync retries");
            publisher.failed(&error);
        }
        Err(_) => warn!(
            zone = %origin,
            server = %config.server,
            "reading the zone at startup took longer than {STARTUP_READ_TIMEOUT:?}; the sync goes on reading it"
        ),
    }
}

/// Everything the sync loop needs.
pub struct Rfc2136Sync {
    pub client: kube::Client,
    pub zone: ZoneConfig,
    pub config: Rfc2136Config,
    /// Label selector of the SendingDomains this installation manages.
    pub selector: Option<String>,
    pub publisher: Rfc2136Publisher,
    /// Whether this replica leads; only the leader writes.
    pub leader: watch::Receiver<bool>,
    pub metrics: Arc<SyncMetrics>,
}

/// Watches the SendingDomains (all namespaces, filtered by the selector) and, while
/// this replica leads, syncs the server's zone after every change (coalesced) and
/// every `resync`; a failed sync is retried with capped exponential backoff. A
/// standby only reads the zone, every `resync`, to know what is published.
/// `on_loaded` runs once the first complete list of SendingDomains is in.
/// Runs until the future is dropped or the watch ends.
pub async fn run(sync: Rfc2136Sync, on_loaded: impl FnOnce() + Send) {
    let api: Api<SendingDomain> = Api::all(sync.client.clone());
    let mut wc = watcher::Config::default();
    if let Some(sel) = &sync.selector {
        wc = wc.labels(sel);
    }
    let (store, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let events = watcher(api, wc)
        .default_backoff()
        .modify(|d| d.managed_fields_mut().clear())
        .reflect(writer);
    let notify = changed.clone();
    let drive = events.for_each(|event| {
        match event {
            Ok(_) => notify.notify_one(),
            Err(error) => warn!(%error, "watching SendingDomains failed; retrying"),
        }
        std::future::ready(())
    });
    tokio::select! {
        () = drive => warn!("the SendingDomain watch ended"),
        () = keep_syncing(store, sync, changed, on_loaded) => {}
    }
}

/// Resolves when leadership changes (never, once nobody can change it).
async fn leadership_changes(leader: &mut watch::Receiver<bool>) {
    if leader.changed().await.is_err() {
        futures::future::pending::<()>().await;
    }
}

async fn keep_syncing(
    store: Store<SendingDomain>,
    mut sync: Rfc2136Sync,
    changed: Arc<Notify>,
    on_loaded: impl FnOnce() + Send,
) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    on_loaded();
    let server = Server::new(&sync.config);
    let (zone, addr, key) = (
        sync.zone.zone.clone(),
        sync.config.server,
        sync.config.key_name.clone(),
    );
    let mut backoff: Option<Duration> = None;
    // The desired zone of the last successful sync: a SendingDomain change that
    // leaves it as it was (most are status writes) needs no transfer.
    let mut synced: Option<Zone> = None;
    let mut next_resync = tokio::time::Instant::now();
    let mut must_sync = true;
    loop {
        if !*sync.leader.borrow_and_update() {
            // A standby never writes, but keeps its view of the server fresh, so
            // that when it takes over, its controller starts from what the server
            // holds instead of reporting every domain as not yet published.
            match server.read_zone(&zone).await {
                Ok(snapshot) => {
                    debug!(%zone, server = %addr, rrsets = snapshot.zone.len(), "rfc2136 read (standby)");
                    sync.metrics.succeeded();
                    sync.publisher.succeeded(snapshot.zone);
                }
                Err(error) => {
                    warn!(%zone, server = %addr, key = %key, %error, "rfc2136 read failed (standby)");
                    sync.metrics.failing.set(1);
                    sync.publisher.failed(&error);
                }
            }
            must_sync = true;
            tokio::select! {
                () = tokio::time::sleep(sync.config.resync) => {}
                () = leadership_changes(&mut sync.leader) => {}
            }
            continue;
        }
        let domains = store.state();
        let desired = desired_zone(&sync.zone, &live_domains(&domains));
        let due = must_sync
            || backoff.is_some()
            || tokio::time::Instant::now() >= next_resync
            || synced.as_ref() != Some(&desired);
        if due {
            let started = std::time::Instant::now();
            match sync_once(&server, &desired).await {
                Ok(report) => {
                    info!(
                        %zone,
                        server = %addr,
                        key = %key,
                        serial = report.serial_read.unwrap_or_default(),
                        domains = domains.len(),
                        created = report.created,
                        replaced = report.replaced,
                        deleted = report.deleted,
                        batches = report.batches,
                        millis = started.elapsed().as_millis() as u64,
                        "rfc2136 sync done"
                    );
                    sync.metrics.synced(&report, started.elapsed());
                    sync.publisher.succeeded(report.zone);
                    synced = Some(desired);
                    backoff = None;
                    must_sync = false;
                    next_resync = tokio::time::Instant::now() + sync.config.resync;
                }
                Err(error) => {
                    let wait = next_backoff(backoff);
                    backoff = Some(wait);
                    warn!(
                        %zone,
                        server = %addr,
                        key = %key,
                        category = error.category(),
                        %error,
                        retry_in_secs = wait.as_secs_f64(),
                        "rfc2136 sync failed"
                    );
                    sync.metrics.sync_failed(&error, started.elapsed());
                    sync.publisher.failed(&error);
                }
            }
        } else {
            debug!("the SendingDomains changed but not the zone they ask for");
        }
        match backoff {
            Some(wait) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = leadership_changes(&mut sync.leader) => must_sync = true,
                }
            }
            None => {
                tokio::select! {
                    () = changed.notified() => tokio::time::sleep(COALESCE).await,
                    () = tokio::time::sleep_until(next_resync) => debug!("periodic resync"),
                    () = leadership_changes(&mut sync.leader) => must_sync = true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Publisher as _;
    use crate::dns::zone::tests::{cfg, domain};
    use hickory_proto::rr::rdata::{A, NS, SOA, TXT};

    const T1: &str = "abcdefghijklmnop";

    fn args(dir: &Path) -> Rfc2136Args {
        let secret = dir.join("secret");
        std::fs::write(&secret, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n").unwrap();
        Rfc2136Args {
            rfc2136_server: Some("127.0.0.1:5300".parse().unwrap()),
            tsig_key_name: Some("Anypost-Key.".into()),
            tsig_secret_file: Some(secret),
            tsig_algorithm: "hmac-sha256".into(),
            rfc2136_resync: Duration::from_secs(300),
        }
    }

    fn config_error(a: &Rfc2136Args) -> String {
        Rfc2136Config::from_args(a).unwrap_err().to_string()
    }

    #[test]
    fn config_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        let c = Rfc2136Config::from_args(&args(dir.path())).unwrap();
        assert_eq!(c.key_name, "anypost-key");
        assert_eq!(c.algorithm, Algorithm::HmacSha256);
        assert_eq!(c.secret_len(), "secret-secret-secret".len());
        assert!(!format!("{c:?}").contains("c2Vj"), "{c:?}");
    }

    #[test]
    fn config_errors_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let good = args(dir.path());

        let mut a = good.clone();
        a.rfc2136_server = None;
        let e = config_error(&a);
        assert!(e.starts_with("--rfc2136-server: required"), "{e}");

        let mut a = good.clone();
        a.tsig_key_name = None;
        assert!(config_error(&a).starts_with("--tsig-key-name: required"));

        let mut a = good.clone();
        a.tsig_secret_file = None;
        assert!(config_error(&a).starts_with("--tsig-secret-file: required"));

        let mut a = good.clone();
        a.tsig_secret_file = Some(dir.path().join("nope"));
        let e = config_error(&a);
        assert!(
            e.starts_with("--tsig-secret-file: reading") && e.contains("nope"),
            "{e}"
        );

        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not base64 at all!").unwrap();
        let mut a = good.clone();
        a.tsig_secret_file = Some(bad);
        let e = config_error(&a);
        assert!(
            e.starts_with("--tsig-secret-file:") && e.contains("does not hold a base64 secret"),
            "{e}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let mut a = good.clone();
        a.tsig_secret_file = Some(empty);
        assert!(config_error(&a).contains("holds no secret"));

        let mut a = good.clone();
        a.tsig_algorithm = "hmac-md5".into();
        let e = config_error(&a);
        assert!(
            e.starts_with("--tsig-algorithm: \"hmac-md5\" is not supported"),
            "{e}"
        );

        let mut a = good;
        a.tsig_algorithm = "HMAC-SHA512".into();
        assert_eq!(
            Rfc2136Config::from_args(&a).unwrap().algorithm,
            Algorithm::HmacSha512
        );
    }

    #[test]
    fn a_bind_key_clause_is_accepted_as_the_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key.conf");
        std::fs::write(
            &f,
            "key \"anypost\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        )
        .unwrap();
        assert_eq!(read_secret(&f).unwrap(), b"secret");
    }

    fn txt_change(i: usize, bytes: usize) -> Change {
        Change::Create {
            name: format!("n{i}.dns.anypost.example"),
            rtype: RecordType::Txt,
            new: RrSet::one(300, RData::txt(&"k".repeat(bytes))),
        }
    }

    #[test]
    fn batches_are_bounded_by_count_and_size_and_keep_order() {
        let changes: Vec<Change> = (0..250).map(|i| txt_change(i, 10)).collect();
        let b = batches(&changes, 100, MAX_UPDATE_BYTES);
        assert_eq!(
            b.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(b.concat(), changes);

        // 4096-bit DKIM keys are ~740 bytes of TXT: the byte bound cuts first.
        let big: Vec<Change> = (0..100).map(|i| txt_change(i, 740)).collect();
        let b = batches(&big, 100, MAX_UPDATE_BYTES);
        assert!(b.len() > 1, "{}", b.len());
        for s in &b {
            assert!(s.iter().map(change_size).sum::<usize>() <= MAX_UPDATE_BYTES);
            let msg = update_message("dns.anypost.example", s).unwrap();
            assert!(msg.to_vec().unwrap().len() < 60_000);
        }
        assert_eq!(b.concat(), big);

        // A change larger than the bound goes alone; nothing is empty.
        let huge = vec![txt_change(0, 10), txt_change(1, 5000), txt_change(2, 10)];
        let b = batches(&huge, 100, 1000);
        assert_eq!(b.iter().map(|s| s.len()).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(batches(&[], 100, 1000).is_empty());
        assert_eq!(batches(&changes[..3], 0, 1000).len(), 3);
    }

    #[test]
    fn update_messages_carry_prerequisites_and_updates() {
        let name = "a.dns.anypost.example".to_string();
        let old = RrSet::one(300, RData::txt("old"));
        let new = RrSet::one(300, RData::txt("new"));
        let changes = vec![
            Change::Delete {
                name: "gone.dns.anypost.example".into(),
                rtype: RecordType::Cname,
                old: RrSet::one(60, RData::Cname("x.example".into())),
            },
            Change::Replace {
                name: name.clone(),
                rtype: RecordType::Txt,
                old,
                new,
            },
            Change::Create {
                name: name.clone(),
                rtype: RecordType::Mx,
                new: RrSet::one(
                    300,
                    RData::Mx {
                        preference: 10,
                        exchange: "mx.example".into(),
                    },
                ),
            },
        ];
        let msg = update_message("dns.anypost.example", &changes).unwrap();
        assert_eq!(msg.metadata.op_code, OpCode::Update);
        assert_eq!(msg.queries[0].query_type(), hrr::RecordType::SOA);
        // Prerequisites: the deleted CNAME and the replaced TXT exactly as read
        // (TTL 0, class IN), no MX yet (class NONE).
        let pre: Vec<(String, hrr::RecordType, DNSClass, u32)> = msg
            .answers
            .iter()
            .map(|r| (model_name(&r.name), r.record_type(), r.dns_class, r.ttl))
            .collect();
        assert_eq!(
            pre,
            [
                (
                    "gone.dns.anypost.example".into(),
                    hrr::RecordType::CNAME,
                    DNSClass::IN,
                    0
                ),
                (name.clone(), hrr::RecordType::TXT, DNSClass::IN, 0),
                (name.clone(), hrr::RecordType::MX, DNSClass::NONE, 0),
            ]
        );
        // Updates: delete CNAME; delete TXT, add TXT; add MX.
        let upd: Vec<(hrr::RecordType, DNSClass, u32)> = msg
            .authorities
            .iter()
            .map(|r| (r.record_type(), r.dns_class, r.ttl))
            .collect();
        assert_eq!(
            upd,
            [
                (hrr::RecordType::CNAME, DNSClass::ANY, 0),
                (hrr::RecordType::TXT, DNSClass::ANY, 0),
                (hrr::RecordType::TXT, DNSClass::IN, 300),
                (hrr::RecordType::MX, DNSClass::IN, 300),
            ]
        );
        // It encodes and decodes.
        let back = Message::from_vec(&msg.to_vec().unwrap()).unwrap();
        assert_eq!(back.authorities.len(), 4);
    }

    fn record(name: &str, ttl: u32, data: hrr::RData) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, data)
    }

    #[test]
    fn a_transfer_becomes_a_snapshot() {
        let z = "dns.anypost.example.";
        let soa = hrr::RData::SOA(SOA::new(
            Name::from_ascii("ns1.dns.anypost.example.").unwrap(),
            Name::from_ascii("hostmaster.dns.anypost.example.").unwrap(),
            7,
            3600,
            600,
            1209600,
            60,
        ));
        let srv = hrr::RData::SRV(hrr::rdata::SRV::new(
            0,
            0,
            25,
            Name::from_ascii("x.example.").unwrap(),
        ));
        let records = vec![
            record(z, 3600, soa.clone()),
            record(
                z,
                3600,
                hrr::RData::NS(NS(Name::from_ascii("NS1.dns.anypost.example.").unwrap())),
            ),
            record(
                "ABC.dns.anypost.example.",
                300,
                hrr::RData::TXT(TXT::from_bytes(vec![b"v=spf1", b" -all"])),
            ),
            record(
                "abc.dns.anypost.example.",
                300,
                hrr::RData::TXT(TXT::new(vec!["b".into()])),
            ),
            record("_x.dns.anypost.example.", 300, srv.clone()),
            record(z, 300, srv),
            record(
                "elsewhere.example.",
                300,
                hrr::RData::A(A::new(192, 0, 2, 1)),
            ),
            record(z, 3600, soa),
        ];
        let s = Snapshot::from_records(z, &records);
        assert_eq!(s.zone.serial(), Some(7));
        assert_eq!(s.zone.nameservers(), ["ns1.dns.anypost.example"]);
        assert_eq!(
            s.zone
                .get("abc.dns.anypost.example", RecordType::Txt)
                .unwrap()
                .rdata(),
            &[
                RData::Txt(vec![b"b".to_vec()]),
                RData::Txt(vec![b"v=spf1".to_vec(), b" -all".to_vec()]),
            ]
        );
        assert_eq!(s.zone.len(), 3);
        // Another type below the apex is listed for deletion; at the apex it is not.
        assert_eq!(
            s.foreign.into_iter().collect::<Vec<_>>(),
            [("_x.dns.anypost.example".to_string(), hrr::RecordType::SRV)]
        );
    }

    #[test]
    fn only_a_transfer_from_soa_to_soa_is_complete() {
        let z = "dns.anypost.example.";
        let soa = || {
            record(
                z,
                3600,
                hrr::RData::SOA(SOA::new(
                    Name::from_ascii("ns1.dns.anypost.example.").unwrap(),
                    Name::from_ascii("h.dns.anypost.example.").unwrap(),
                    1,
                    1,
                    1,
                    1,
                    1,
                )),
            )
        };
        let ns = || {
            record(
                z,
                3600,
                hrr::RData::NS(NS(Name::from_ascii("ns1.dns.anypost.example.").unwrap())),
            )
        };
        // An empty first answer, or one not opening with the SOA, is a failure.
        let mut r = vec![];
        let e = take_transfer_answers(&mut r, vec![]).unwrap_err();
        assert!(e.contains("no SOA"), "{e}");
        let e = take_transfer_answers(&mut r, vec![ns(), soa()]).unwrap_err();
        assert!(e.contains("does not start with the zone's SOA"), "{e}");
        // Spread over messages: complete only at the closing SOA.
        let mut r = vec![];
        assert!(!take_transfer_answers(&mut r, vec![soa()]).unwrap());
        assert!(!take_transfer_answers(&mut r, vec![]).unwrap());
        assert!(!take_transfer_answers(&mut r, vec![ns()]).unwrap());
        assert!(take_transfer_answers(&mut r, vec![soa(), ns()]).unwrap());
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn model_records_round_trip_through_hickory() {
        let c = cfg();
        let d = domain(
            "acme",
            "example.com",
            T1,
            &[("anypost1", &"A".repeat(600))],
            true,
            1,
        );
        let zone = desired_zone(&c, &[d]);
        let records: Vec<Record> = zone
            .iter()
            .flat_map(|(name, _, set)| {
                set.rdata().iter().map(move |r| {
                    Record::from_rdata(dns_name(name).unwrap(), set.ttl, to_hickory(r).unwrap())
                })
            })
            .collect();
        let s = Snapshot::from_records(&c.zone, &records);
        assert_eq!(s.zone, zone);
        assert!(s.foreign.is_empty());
    }

    fn test_config() -> (tempfile::TempDir, Rfc2136Config) {
        let dir = tempfile::tempdir().unwrap();
        let c = Rfc2136Config::from_args(&args(dir.path())).unwrap();
        (dir, c)
    }

    #[test]
    fn published_follows_the_last_sync() {
        let (_dir, rc) = test_config();
        let c = cfg();
        let p = Rfc2136Publisher::new(&c.zone, &rc);
        let keys = ["QUJD".to_string(), "REVG".to_string()];
        let no = |p: &Rfc2136Publisher| match p.published(T1, &keys) {
            Published::No { reason, message } => (reason, message),
            Published::Yes => panic!("published"),
        };
        let (reason, message) = no(&p);
        assert_eq!(reason, "Publishing");
        assert!(
            message.contains("first sync") && message.contains("127.0.0.1:5300"),
            "{message}"
        );
        assert!(!p.absent(T1));

        p.succeeded(c.apex_zone());
        assert_eq!(no(&p).0, "Publishing");
        assert!(p.absent(T1));

        let d = domain(
            "a",
            "example.com",
            T1,
            &[("anypost1", "QUJD"), ("anypost2", "REVG")],
            false,
            1,
        );
        p.succeeded(desired_zone(&c, &[d]));
        assert_eq!(p.published(T1, &keys), Published::Yes);
        assert!(!p.absent(T1));
        assert!(p.absent("qrstuvwxyz234567"));
        // A key the server does not have yet.
        let other = ["QUJD".to_string(), "WFla".to_string()];
        assert!(matches!(p.published(T1, &other), Published::No { .. }));

        let err = Error::Axfr {
            zone: c.zone.clone(),
            server: rc.server,
            key: rc.key_name.clone(),
            reason: "connecting: Connection refused".into(),
        };
        p.failed(&err);
        let (reason, message) = no(&p);
        assert_eq!(reason, "SyncFailed");
        assert!(
            message.contains("127.0.0.1:5300") && message.contains("TSIG key anypost-key"),
            "{message}"
        );
        p.succeeded(desired_zone(&c, &[] as &[SendingDomain]));
        assert!(p.last_error().is_none());
        assert!(p.absent(T1));
    }

    #[test]
    fn deleting_domains_leave_the_zone() {
        let c = cfg();
        let mut d = domain("a", "example.com", T1, &[], false, 1);
        let keep = Arc::new(d.clone());
        d.metadata.deletion_timestamp = d.metadata.creation_timestamp.clone();
        let live = live_domains(&[keep, Arc::new(d)]);
        assert_eq!(live.len(), 1);
        assert!(desired_zone(&c, &live).name_exists(&format!("{T1}.{}", c.zone)));
        assert!(live_domains(&[Arc::new(domain("a", "x.com", T1, &[], false, 1))]).len() == 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = None;
        let mut seen = vec![];
        for _ in 0..8 {
            let next = next_backoff(b);
            seen.push(next.as_secs());
            b = Some(next);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn unverifiable_answers_are_explained() {
        let mut m = Message::new(1, hickory_proto::op::MessageType::Response, OpCode::Update);
        m.metadata.response_code = ResponseCode::NotAuth;
        let bytes = m.to_vec().unwrap();
        let e = explain_unverified(&bytes, "k1", &"no TSIG");
        assert!(e.contains("NOTAUTH") && e.contains("k1"), "{e}");
        let e = explain_unverified(b"\x00", "k1", &"short");
        assert!(e.contains("could not be decoded"), "{e}");
        assert!(explain_rcode(ResponseCode::NXRRSet, true).contains("changed on the server"));
        assert!(explain_rcode(ResponseCode::Refused, false).contains("allow-transfer"));
    }
}
