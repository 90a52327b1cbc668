//! The hidden primary's side of zone transfers: TSIG keys that authorise AXFR
//! and IXFR (RFC 8945), the signing of every message of a transfer, and the
//! journal of recent changes that IXFR (RFC 1995) answers from.

use crate::adapters::dns::rfc2136::config::{Algorithm, read_secret};
use crate::core::config::FieldError;
use crate::core::naming::normalize;
use hickory_proto::rr::rdata::tsig::{TSIG, TsigError, make_tsig_record};
use hickory_proto::rr::{Name, Record, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Clock difference allowed between a secondary and us (RFC 8945 recommends 300 s).
pub const TSIG_FUDGE: u16 = 300;

/// The TSIG keys secondaries may transfer the zone with.
#[derive(Clone, Default)]
pub struct TransferKeys(Arc<Vec<TSigner>>);

impl std::fmt::Debug for TransferKeys {
    /// Names and algorithms, never secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| s.signer_name().to_ascii()))
            .finish()
    }
}

/// Transfers and NOTIFY: who may transfer, whom to tell of a new serial.
#[derive(Clone, Debug, Default)]
pub struct TransferConfig {
    pub keys: TransferKeys,
    /// Secondaries sent a NOTIFY after every publish.
    pub notify: Vec<SocketAddr>,
}

/// A key clause's `keyword value;` (`algorithm hmac-sha256;`), or the key name
/// after `key`.
fn clause_value<'t>(text: &'t str, keyword: &str) -> Option<&'t str> {
    let at = text.find(keyword)? + keyword.len();
    let rest = text[at..].trim_start();
    let end = rest.find([';', '{', '\n']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

impl TransferKeys {
    /// Reads BIND key clauses, one per file, as `tsig-keygen NAME` prints them:
    /// `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`.
    pub fn from_files(paths: &[PathBuf]) -> Result<TransferKeys, FieldError> {
        paths
            .iter()
            .map(|p| key_from_file(p))
            .collect::<Result<Vec<_>, _>>()
            .map(|keys| TransferKeys(Arc::new(keys)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key of `name` with `algorithm`, if we have it.
    fn find(
        &self,
        name: &Name,
        algorithm: &hickory_proto::rr::rdata::tsig::TsigAlgorithm,
    ) -> Option<&TSigner> {
        self.0
            .iter()
            .find(|s| s.signer_name().eq_case(name) || s.signer_name() == name)
            .filter(|s| s.algorithm() == algorithm)
    }

    /// The first key, which signs our NOTIFY messages.
    pub fn first(&self) -> Option<&TSigner> {
        self.0.first()
    }
}

fn key_from_file(path: &Path) -> Result<TSigner, FieldError> {
    let shown = path.display().to_string();
    let bad = |reason: String| FieldError::new("transfer_key_file", &shown, reason);
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("reading it: {e}")))?;
    let name = clause_value(&text, "key")
        .map(normalize)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("no `key \"NAME\" {` clause (as tsig-keygen prints it)".into()))?;
    let algorithm = clause_value(&text, "algorithm").unwrap_or("hmac-sha256");
    let algorithm = Algorithm::parse(algorithm).ok_or_else(|| {
        bad(format!(
            "algorithm {algorithm:?} is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512"
        ))
    })?;
    let secret = read_secret(path).map_err(|e| bad(e.reason))?;
    let key_name = Name::from_ascii(format!("{name}."))
        .map_err(|e| bad(format!("{name:?} is not a valid key name: {e}")))?;
    TSigner::new(secret, algorithm.tsig(), key_name, TSIG_FUDGE)
        .map_err(|e| bad(format!("cannot sign with {}: {e}", algorithm.as_str())))
}

/// A request whose TSIG verified: its responses are signed with the same key.
#[derive(Clone)]
pub(super) struct Signed {
    signer: TSigner,
    request_mac: Vec<u8>,
    id: u16,
}

/// Why a signed request is refused (NOTAUTH with this TSIG error).
pub(super) struct Refused {
    id: u16,
    error: TsigError,
    key: Name,
    signer: Option<TSigner>,
    request_mac: Vec<u8>,
}

/// Verifies the TSIG of request `raw` (whose parsed TSIG record is `sig`) at
/// `now` (unix seconds).
pub(super) fn verify(
    keys: &TransferKeys,
    raw: &[u8],
    sig: &Record<TSIG>,
    now: u64,
) -> Result<Signed, Refused> {
    let id = sig.data.oid;
    let refused = |error, signer: Option<&TSigner>, request_mac: Vec<u8>| Refused {
        id,
        error,
        key: sig.name.clone(),
        signer: signer.cloned(),
        request_mac,
    };
    let Some(signer) = keys.find(&sig.name, &sig.data.algorithm) else {
        return Err(refused(TsigError::BadKey, None, Vec::new()));
    };
    let Ok((mac, _, valid)) = signer.verify_message_byte(raw, None, true) else {
        return Err(refused(TsigError::BadSig, Some(signer), Vec::new()));
    };
    if now < valid.start || now > valid.end {
        return Err(refused(TsigError::BadTime, Some(signer), mac));
    }
    Ok(Signed {
        signer: signer.clone(),
        request_mac: mac,
        id,
    })
}

/// Appends `tsig` to the message `msg` and counts it in the header.
fn append(msg: &mut Vec<u8>, tsig: &Record<TSIG>) -> Result<(), String> {
    let mut rr = Vec::with_capacity(128);
    let mut enc = BinEncoder::new(&mut rr);
    let mut enc = enc.with_name_encoding(NameEncoding::Uncompressed);
    tsig.emit(&mut enc).map_err(|e| e.to_string())?;
    drop(enc);
    let count = u16::from_be_bytes([msg[10], msg[11]]) + 1;
    msg[10..12].copy_from_slice(&count.to_be_bytes());
    msg.extend_from_slice(&rr);
    Ok(())
}

/// Signs the messages of one response (RFC 8945 §5.3): the first covers the
/// request's MAC, each later one the MAC before it and only the TSIG timers.
pub(super) fn sign(signed: &Signed, messages: &mut [Vec<u8>], now: u64) -> Result<(), String> {
    let mut previous = signed.request_mac.clone();
    for (i, msg) in messages.iter_mut().enumerate() {
        let tsig = if i == 0 {
            TSigResponseContext::new(signed.id, now, signed.signer.clone(), previous, None)
                .sign(msg)
                .map_err(|e| e.to_string())?
        } else {
            let mut tbs = Vec::with_capacity(msg.len() + previous.len() + 10);
            tbs.extend_from_slice(&(previous.len() as u16).to_be_bytes());
            tbs.extend_from_slice(&previous);
            tbs.extend_from_slice(msg);
            tbs.extend_from_slice(&((now >> 32) as u16).to_be_bytes());
            tbs.extend_from_slice(&(now as u32).to_be_bytes());
            tbs.extend_from_slice(&signed.signer.fudge().to_be_bytes());
            let mac = signed.signer.sign(&tbs).map_err(|e| e.to_string())?;
            let rdata = TSIG::new(
                signed.signer.algorithm().clone(),
                now,
                signed.signer.fudge(),
                mac,
                signed.id,
                None,
                Vec::new(),
            );
            Box::new(make_tsig_record(signed.signer.signer_name().clone(), rdata))
        };
        previous = tsig.data.mac.clone();
        append(msg, &tsig)?;
    }
    Ok(())
}

/// Adds the TSIG error record to the NOTAUTH response `msg` (unsigned for an
/// unknown key or a bad MAC, signed for a bad time, as RFC 8945 §5.3.2 says).
pub(super) fn refuse(refused: Refused, msg: &mut Vec<u8>, now: u64) -> Result<(), String> {
    let ctx = match (refused.error, refused.signer) {
        (TsigError::BadTime, Some(signer)) => TSigResponseContext::new(
            refused.id,
            now,
            signer,
            refused.request_mac,
            Some(TsigError::BadTime),
        ),
        (TsigError::BadSig, Some(signer)) => {
            TSigResponseContext::bad_signature(refused.id, now, signer)
        }
        _ => TSigResponseContext::unknown_key(refused.id, now, refused.key),
    };
    let tsig = ctx.sign(msg).map_err(|e| e.to_string())?;
    append(msg, &tsig)
}

/// The change from one serial to the next, record by record, for IXFR.
#[derive(Debug)]
pub(super) struct Delta {
    pub(super) old_soa: Record,
    pub(super) new_soa: Record,
    pub(super) deleted: Vec<Record>,
    pub(super) added: Vec<Record>,
}

impl Delta {
    pub(super) fn old_serial(&self) -> u32 {
        soa_serial(&self.old_soa)
    }

    pub(super) fn len(&self) -> usize {
        self.deleted.len() + self.added.len() + 2
    }
}

pub(super) fn soa_serial(r: &Record) -> u32 {
    match &r.data {
        hickory_proto::rr::RData::SOA(s) => s.serial,
        _ => 0,
    }
}

/// The deltas that lead from `serial` to the newest, if the journal has them
/// all (oldest first).
pub(super) fn chain_from(journal: &[Arc<Delta>], serial: u32) -> Option<&[Arc<Delta>]> {
    let start = journal.iter().position(|d| d.old_serial() == serial)?;
    let chain = &journal[start..];
    let contiguous = chain
        .windows(2)
        .all(|w| soa_serial(&w[0].new_soa) == w[1].old_serial());
    contiguous.then_some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_keys_are_read_from_bind_key_clauses() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(
            &f,
            "key \"Secondary-1.\" {\n\talgorithm hmac-sha512;\n\tsecret \"c2VjcmV0\";\n};\n",
        )
        .unwrap();
        let keys = TransferKeys::from_files(&[f]).unwrap();
        let s = keys.first().unwrap();
        assert_eq!(s.signer_name().to_ascii(), "secondary-1.");
        assert_eq!(s.key(), b"secret");
        assert!(!format!("{keys:?}").contains("c2Vj"));

        let bad = dir.path().join("bad");
        std::fs::write(&bad, "secret \"c2VjcmV0\";").unwrap();
        let e = TransferKeys::from_files(&[bad]).unwrap_err();
        assert_eq!(e.field, "transfer_key_file");
        assert!(e.reason.contains("key"), "{e}");
        let md5 = dir.path().join("md5");
        std::fs::write(&md5, "key k { algorithm hmac-md5; secret \"c2VjcmV0\"; };").unwrap();
        let e = TransferKeys::from_files(&[md5]).unwrap_err();
        assert!(e.reason.contains("hmac-md5"), "{e}");
    }
}
