//! Verification rules: what the resolver showed for each of a domain's CNAMEs,
//! judged into a per-record state, a failure code and a message a person can act
//! on. Pure: [`evidence`] holds what was seen, [`chain`] judges one record,
//! [`messages`] words the problem, [`verdict`] folds the records into the domain's
//! verdict. The resolver adapter gathers the evidence.
//!
//! Decisions a user can observe:
//! - A provider that *flattens* CNAMEs (serves the target's records at the
//!   customer's name, without a CNAME) does not verify, even when the copies are
//!   exact: copies do not follow key rotation or MX changes, and carry no token. The
//!   `*_cname_missing` message says the name answers without a CNAME.
//! - A chain through names of the customer's own (`anypost.example.com →
//!   alias.example.net → <t>.Z`) verifies: what counts is reaching the target.
//! - Resolver failures are not evidence ([`Verdict::Unknown`]), except SERVFAIL for
//!   names inside the operator's zone once the customer's CNAME is confirmed right:
//!   the zone not answering is `chain_broken`.
//! - Tracking is judged alike but separately, with its own codes
//!   (`tracking_cname_missing`, `tracking_cname_mismatch`, or `chain_broken`).

pub mod chain;
pub mod control;
pub mod dmarc;
pub mod evidence;
pub mod messages;
pub mod verdict;

pub use chain::{Judgement, judge};
pub use control::Control;
pub use dmarc::Dmarc;
pub use evidence::{Answer, End, Evidence, Found, QueryFailure, Walk};
pub use verdict::{Expected, Finding, Outcome, Verdict};
