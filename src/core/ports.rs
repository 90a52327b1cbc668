//! What the controller needs from the world, as traits the adapters implement: a
//! [`Publisher`] says whether the zone serves a domain's records (the embedded
//! server, or an RFC2136 server), a [`Verifier`] resolves a domain's CNAMEs.

use crate::core::api::DnsRecord;
use crate::core::verify::{Control, Outcome};
use crate::core::vocab::{BySelector, Reason};
use futures::future::BoxFuture;

/// Whether the zone serves a domain's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Yes,
    /// Not yet (or not any more): the reason, for the condition message.
    No {
        reason: Reason,
        message: String,
    },
    /// The backend cannot tell now (an RFC2136 server out of reach since the
    /// start): a domain status reported published stays published; any other
    /// reports `reason` and `message`.
    Unknown {
        reason: Reason,
        message: String,
    },
}

/// The zone a controller publishes through.
pub trait Publisher: Send + Sync {
    /// Whether the zone serves the token's records with a DKIM record for each
    /// of `public_keys` (embedded: this replica's zone holds them; rfc2136: the
    /// last successful sync left them on the server).
    fn published(&self, token: &str, public_keys: &[&str]) -> Published;

    /// Whether records live outside the cluster, so a deleted SendingDomain must
    /// wait (finalizer) until they are removed.
    fn external(&self) -> bool {
        false
    }

    /// Whether nothing is published under this token any more.
    fn absent(&self, _token: &str) -> bool {
        true
    }
}

/// What a check asks the verifier.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub domain: String,
    pub records: Vec<DnsRecord>,
    /// The public key (base64 SPKI) each selector's DKIM record must carry.
    pub dkim_keys: BySelector<String>,
}

/// Resolves a domain's records.
pub trait Verifier: Send + Sync {
    fn check(&self, req: CheckRequest) -> BoxFuture<'_, Outcome>;

    /// Whether the claim's verification record resolves to its own target
    /// (`record.value`): its proof of control while another claim holds the domain.
    fn control(&self, record: DnsRecord) -> BoxFuture<'_, Control>;
}
