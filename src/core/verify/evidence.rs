//! What the resolver showed for one record, in the core's own terms: the CNAME chain
//! as walked, hop by hop, and the answers at its end. The resolver adapter fills
//! these in; the rules in [`super::chain`] judge them without any DNS.

use crate::core::naming::normalize;
use crate::core::zone::{RData, RecordType};
use std::fmt;

/// Most CNAMEs followed from the customer's name.
pub const MAX_HOPS: usize = 8;

/// What one query at one name returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Records of the queried type owned by the queried name.
    Records(Vec<RData>),
    /// The name exists but holds nothing of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// No usable answer: not evidence of anything.
    Failed(QueryFailure),
}

/// Why the resolver gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryFailure {
    /// No answer within the timeout.
    Timeout,
    /// The resolver answered SERVFAIL: it could not get an answer upstream (the
    /// customer's servers, or the operator's zone, did not answer it properly).
    ServFail,
    /// The resolver refused the query.
    Refused,
    /// Another error response code.
    Rcode(String),
    /// A transport or protocol error.
    Other(String),
}

impl fmt::Display for QueryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryFailure::Timeout => f.write_str("timed out"),
            QueryFailure::ServFail => f.write_str("SERVFAIL"),
            QueryFailure::Refused => f.write_str("REFUSED"),
            QueryFailure::Rcode(c) => f.write_str(c),
            QueryFailure::Other(e) => f.write_str(e),
        }
    }
}

/// The CNAME chain as walked from the customer's name, one query per hop.
#[derive(Debug, Clone, PartialEq)]
pub struct Walk {
    /// `names[0]` is the customer's name; each next one the CNAME target of the
    /// previous. Lower case, no trailing dot.
    pub names: Vec<String>,
    /// How the walk ended at the last name.
    pub end: End,
}

impl Default for Walk {
    fn default() -> Self {
        Walk {
            names: vec![],
            end: End::NxDomain,
        }
    }
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The last name exists and holds no CNAME.
    Exists,
    /// The last name does not exist.
    NxDomain,
    /// No usable answer for the last name.
    Failed(QueryFailure),
    /// The last name's CNAME points back into the chain.
    Loop,
    /// More than [`MAX_HOPS`] CNAMEs.
    TooLong,
}

/// Everything looked up for one record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence {
    pub walk: Walk,
    /// When the customer's name holds no CNAME: what it holds instead.
    pub instead: Vec<Found>,
    /// A CNAME at the doubled name and its target.
    pub doubled: Option<(String, String)>,
    /// MX at the end of the chain (verification).
    pub mx: Option<Answer>,
    /// TXT at the end of the chain (verification, DKIM).
    pub txt: Option<Answer>,
}

/// A record found at a name, for display: its type and its data as a zone file
/// would show it (TXT strings joined and quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub rtype: RecordType,
    pub data: String,
}

impl Found {
    pub fn new(rtype: RecordType, data: impl Into<String>) -> Self {
        Found {
            rtype,
            data: data.into(),
        }
    }

    /// A record as found, if it is of a type worth showing.
    pub fn of(rdata: &RData) -> Option<Found> {
        Some(match rdata {
            RData::Txt(_) => Found::new(RecordType::Txt, format!("\"{}\"", txt_string(rdata)?)),
            RData::A(a) => Found::new(RecordType::A, a.to_string()),
            RData::Aaaa(a) => Found::new(RecordType::Aaaa, a.to_string()),
            RData::Mx {
                preference,
                exchange,
            } => Found::new(
                RecordType::Mx,
                format!("{preference} {}", normalize(exchange)),
            ),
            RData::Cname(c) => Found::new(RecordType::Cname, normalize(c)),
            RData::Soa(_) | RData::Ns(_) => return None,
        })
    }

    /// `TXT "v=spf1 …"`, `A 192.0.2.1`, shortened to stay readable in a table.
    pub fn display(&self) -> String {
        format!(
            "{} {}",
            self.rtype,
            super::messages::shorten(&self.data, 60)
        )
    }
}

/// A TXT record's character-strings joined, as SPF and DKIM read them.
pub fn txt_string(rdata: &RData) -> Option<String> {
    match rdata {
        RData::Txt(strings) => Some(
            strings
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect::<String>(),
        ),
        _ => None,
    }
}

/// The `p=` tag of a DKIM record, whitespace removed (RFC 6376 allows folding).
pub fn dkim_key(txt: &str) -> Option<String> {
    txt.split(';').find_map(|tag| {
        let (k, v) = tag.split_once('=')?;
        (k.trim() == "p").then(|| v.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// Whether an SPF record includes `include` (any SPF counts when `None`).
pub fn spf_includes(txt: &str, include: Option<&str>) -> bool {
    let mut terms = txt.split_ascii_whitespace();
    if !terms
        .next()
        .is_some_and(|v| v.eq_ignore_ascii_case("v=spf1"))
    {
        return false;
    }
    match include {
        None => true,
        Some(want) => terms.any(|t| {
            let t = t.trim_start_matches(['+', '?', '~']);
            t.len() > 8
                && t[..8].eq_ignore_ascii_case("include:")
                && normalize(&t[8..]) == normalize(want)
        }),
    }
}

/// Whether a TXT string is an SPF record.
pub fn is_spf(txt: &str) -> bool {
    spf_includes(txt, None)
}
