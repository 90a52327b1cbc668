//! The wire: TSIG-signed requests over one TCP connection, their answers checked
//! and explained in words that point at the fix.

use super::config::Rfc2136Config;
use super::messages::{Snapshot, batches, delete_foreign_message, update_message};
use super::{
    AXFR_TIMEOUT, Error, IO_TIMEOUT, MAX_CHANGES_PER_UPDATE, MAX_UPDATE_BYTES, TSIG_FUDGE,
};
use crate::adapters::dns::wire::dns_name;
use crate::adapters::kube::LeaderGuard;
use crate::core::zone::Change;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::{self as hrr, DNSClass, Record, TSigVerifier, TSigner};
use std::fmt;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

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

    /// Sends one UPDATE, if the leader's fence allows it now, and waits for the
    /// server to apply it.
    async fn send_update(
        &self,
        conn: &mut Connection,
        msg: Message,
        guard: &LeaderGuard,
    ) -> Result<(), String> {
        let id = msg.metadata.id;
        // Once on the wire the UPDATE is the server's; until then, a replica
        // held up past its renew deadline drops it.
        let mut verifier = guard
            .while_leading("rfc2136", conn.send(msg, &self.signer))
            .await
            .map_err(|e| e.to_string())??;
        conn.receive(&mut verifier, id, true).await.map(|_| ())
    }

    /// Applies the changes (and deletes the foreign RRsets) in batches over one
    /// connection; stops at the first batch the server does not apply, or that
    /// `guard` does not allow (this replica no longer leads).
    pub async fn apply(
        &self,
        origin: &str,
        changes: &[Change],
        foreign: &[(String, hrr::RecordType)],
        guard: &LeaderGuard,
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
            self.send_update(&mut conn, msg, guard)
                .await
                .map_err(|reason| {
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
            self.send_update(&mut conn, msg, guard)
                .await
                .map_err(|reason| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{NS, SOA};

    fn record(name: &str, ttl: u32, data: hrr::RData) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, data)
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
