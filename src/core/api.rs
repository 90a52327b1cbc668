//! The `SendingDomain` API (`anypost.com/v1alpha1`).
//!
//! The Rust types are the source of the CRD: `anypost-operator crd` prints what
//! [`crd`] builds from them, and `crds/` holds that output.
//! Everything admission can check is expressed here as OpenAPI constraints or CEL
//! rules, so a bad manifest is rejected by `kubectl apply` with a message naming the
//! field, instead of surfacing later as a status condition.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every resource this operator defines.
pub const GROUP: &str = "anypost.com";
/// Annotation whose every new value asks for an immediate verification.
pub const VERIFY_ANNOTATION: &str = "anypost.com/verify";
/// Annotation whose every new value asks for an immediate DKIM rotation.
pub const ROTATE_ANNOTATION: &str = "anypost.com/rotate";
/// Label put on every object the operator writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGER: &str = "anypost-operator";

/// The DKIM key sizes a SendingDomain may ask for.
pub const KEY_BITS: [u32; 4] = [1024, 2048, 3072, 4096];
/// The key size used when `spec.dkim.keyBits` is absent.
pub const DEFAULT_KEY_BITS: u32 = 2048;
/// The longest `metadata.name`: the DKIM Secret is named `<name>-dkim`, and a
/// Secret's name is at most 253 characters.
pub const MAX_NAME_LEN: usize = 253 - "-dkim".len();

/// The CRD: what the derive builds from the types, plus the rules on the object as
/// a whole (the derive places rules on the spec and its fields only, where
/// `metadata.name` cannot be seen).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = SendingDomain::crd();
    let root = crd
        .spec
        .versions
        .iter_mut()
        .filter_map(|v| v.schema.as_mut()?.open_api_v3_schema.as_mut());
    for schema in root {
        schema.x_kubernetes_validations = Some(vec![ValidationRule {
            rule: format!("size(self.metadata.name) <= {MAX_NAME_LEN}"),
            message: Some(format!(
                "metadata.name must be at most {MAX_NAME_LEN} characters: the DKIM Secret is named <name>-dkim, and a Secret name is at most 253"
            )),
            ..Default::default()
        }]);
    }
    crd
}

/// A domain the email service sends from.
///
/// The operator generates the domain's DKIM keys, publishes its SPF, DKIM and MX
/// records in the operator's own DNS zone, lists in `status.dnsRecords` the CNAMEs
/// the domain's owner publishes once, and keeps verifying them.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "anypost.com",
    version = "v1alpha1",
    kind = "SendingDomain",
    plural = "sendingdomains",
    shortname = "sd",
    category = "anypost",
    namespaced,
    status = "SendingDomainStatus",
    derive = "PartialEq",
    doc = "A domain the email service sends from: its DKIM keys, its records in the operator's DNS zone, and the verification of the CNAMEs its owner publishes.",
    printcolumn = r#"{"name": "Domain", "type": "string", "jsonPath": ".spec.domain", "description": "The sending domain"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.state", "description": "pending or verified"}"#,
    printcolumn = r#"{"name": "Failure", "type": "string", "jsonPath": ".status.verificationFailure.code", "description": "Why verification fails, if it does"}"#,
    printcolumn = r#"{"name": "Tracking", "type": "string", "jsonPath": ".status.tracking.state", "description": "Branded tracking: pending or verified"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "ID", "type": "string", "jsonPath": ".status.id", "priority": 1, "description": "Stable domain id"}"#,
    printcolumn = r#"{"name": "Selector", "type": "string", "jsonPath": ".status.dkim.activeSelector", "priority": 1, "description": "Active DKIM selector"}"#,
    printcolumn = r#"{"name": "Last Checked", "type": "date", "jsonPath": ".status.lastCheckedTime", "priority": 1, "description": "When the CNAMEs were last resolved"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.tracking) || size(self.tracking.subdomain) + 1 + size(self.domain) <= 253",
        "message": "spec.tracking.subdomain is too long for this domain: <subdomain>.<domain> must be at most 253 characters",
        "fieldPath": ".tracking.subdomain"
    }
]))]
pub struct SendingDomainSpec {
    /// The exact domain used in From addresses, e.g. example.com or mail.example.com.
    /// Lower case ASCII; internationalised names in their A-label (xn--) form.
    /// Immutable: to send from another domain, create another SendingDomain.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "spec.domain is immutable: create a new SendingDomain to send from another domain"},
        {"rule": "!isIP(self)", "message": "spec.domain must be a domain name, not an IP address"},
        {"rule": "self.matches('^[\\\\x00-\\\\x7f]*$')", "message": "spec.domain must be ASCII: write an internationalised domain in its A-label (xn--) form"},
        {"rule": "self == self.lowerAscii()", "message": "spec.domain must be lower case"},
        {"rule": "!self.endsWith('.')", "message": "spec.domain must not end with a dot: write example.com, not example.com."},
        {"rule": "!self.contains('*')", "message": "spec.domain must not be a wildcard: add each sending domain by its name"},
        {"rule": "!self.contains('_')", "message": "spec.domain must not contain underscores: a sending domain is a host name (letters, digits, hyphens)"},
        {"rule": "self.contains('.')", "message": "spec.domain must have at least two labels, e.g. example.com"},
        {"rule": "self.endsWith('.') || self.split('.').all(l, size(l) > 0)", "message": "spec.domain must not contain empty labels (a leading dot or '..')"},
        {"rule": "self.split('.').all(l, size(l) <= 63)", "message": "spec.domain must not have a label longer than 63 characters"},
        {"rule": "self.split('.').all(l, !l.startsWith('-') && !l.endsWith('-'))", "message": "spec.domain must not have a label that starts or ends with a hyphen"},
        {"rule": "self.matches('^[a-zA-Z0-9.*_-]*$') || !self.matches('^[\\\\x00-\\\\x7f]*$')", "message": "spec.domain may contain only letters, digits, hyphens and dots"},
        {"rule": "isIP(self) || !self.matches('(^|\\\\.)[0-9]+$')", "message": "spec.domain must not end in an all-numeric label"}
    ]))]
    pub domain: String,

    /// DKIM signing keys. Absent means 2048-bit keys and no scheduled rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimSpec>,

    /// Branded open and click tracking under a subdomain of `domain`. Tracking is
    /// verified separately and never affects whether the domain can send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingSpec>,
}

/// DKIM key settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimSpec {
    /// RSA key size in bits: 1024, 2048 (default), 3072 or 4096. A change applies to
    /// keys generated from then on (the next rotation), never to existing ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [1024, 2048, 3072, 4096]))]
    pub key_bits: Option<u32>,

    /// How often the active key is rotated, as a duration such as 2160h (90 days).
    /// Absent means no scheduled rotation. At least 120h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^([0-9]+(\\\\.[0-9]+)?(h|m|s|ms))+$')", "message": "spec.dkim.rotationInterval must be a duration such as 2160h"},
        {"rule": "!self.matches('^([0-9]+(\\\\.[0-9]+)?(h|m|s|ms))+$') || duration(self) >= duration('120h')", "message": "spec.dkim.rotationInterval must be at least 120h"}
    ]))]
    pub rotation_interval: Option<String>,
}

/// Branded tracking settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackingSpec {
    /// One DNS label: `track` gives track.<domain>. Lower case letters, digits and
    /// hyphens; not `anypost`, which the verification record uses.
    #[schemars(length(min = 1, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$')", "message": "spec.tracking.subdomain must be one lower-case DNS label (letters, digits, inner hyphens), e.g. track"},
        {"rule": "self != 'anypost'", "message": "spec.tracking.subdomain must not be anypost: that name holds the verification record"}
    ]))]
    pub subdomain: String,
}

/// Observed state, written only by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendingDomainStatus {
    /// Stable id, `domain_<token>`: the same domain in the same namespace always gets
    /// the same id and the same CNAME targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,

    /// The operator's seal on this status: an HMAC, under a key derived from its
    /// identity key, over the namespace, the domain, `id`, whether the claim is
    /// verified or has proved control of the domain, and the DKIM public keys. The
    /// zone serves only what a valid seal covers, so a status written by anyone but
    /// the operator is never served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,

    /// `pending` until every required CNAME verifies, then `verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DomainState>,

    /// Why the domain is not (or, within the grace period, no longer) verified: the
    /// first failing record in `dnsRecords` order. Absent when everything verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_failure: Option<Failure>,

    /// The CNAMEs to publish at the domain's DNS provider, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_records: Vec<DnsRecord>,

    /// DKIM keys: where the private keys are and which selector signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimStatus>,

    /// Verification of the branded tracking CNAME, if `spec.tracking` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingStatus>,

    /// DMARC advice: whether the domain publishes a DMARC policy. Never affects
    /// `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc: Option<DmarcStatus>,

    /// When the CNAMEs were last resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,

    /// When every required CNAME last verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,

    /// The last `anypost.com/verify` annotation value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_verify_request: Option<String>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// KeysReady, RecordsPublished, Verified, TrackingVerified, DmarcPublished,
    /// Ready, and kstatus' Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Whether the domain may send.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    /// Not all required records verify yet.
    Pending,
    /// Every required record verifies.
    Verified,
}

impl DomainState {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Pending => "pending",
            DomainState::Verified => "verified",
        }
    }
}

/// A verification failure: a fixed code and a message naming the real records.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// One of apex_cname_missing, apex_cname_mismatch, dkim_cname_missing,
    /// dkim_cname_mismatch, dkim_mismatch, chain_broken, mx_missing, spf_missing.
    pub code: String,
    /// The problem restated with the domain's record names, what was found, what
    /// was expected, and a hint where the mistake is recognisable.
    pub message: String,
    /// When this run of failures began (kept while the code stays failing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// What a record is for.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Proves control of the domain; also the bounce (MAIL FROM) domain: MX and SPF.
    Verification,
    /// A DKIM selector.
    Dkim,
    /// Branded open and click tracking.
    Tracking,
}

/// The outcome of resolving one customer record.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Not resolved yet.
    Unchecked,
    /// The CNAME is published and its chain reaches the expected records.
    Ok,
    /// Nothing is published at the name (or something other than a CNAME).
    Missing,
    /// A CNAME is published but points elsewhere.
    Mismatch,
    /// The CNAME is right but the chain does not reach the operator's records.
    ChainBroken,
    /// The DKIM record resolves but its key is not the domain's key.
    KeyMismatch,
    /// The verification chain resolves but no MX answers through it.
    MxMissing,
    /// The verification chain resolves but no SPF record answers through it.
    SpfMissing,
    /// The resolver failed (timeout, SERVFAIL): no evidence either way.
    Unknown,
}

/// One CNAME the domain's owner publishes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecord {
    /// Always CNAME.
    #[serde(rename = "type")]
    pub type_: String,
    /// The record name relative to the registered domain (what provider UIs expect).
    pub name: String,
    /// The absolute record name.
    pub fqdn: String,
    /// The CNAME target, without a trailing dot.
    pub value: String,
    /// verification, dkim or tracking.
    pub purpose: Purpose,
    /// The outcome of the last check of this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RecordState>,
    /// What the resolver actually returned at the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
}

/// DKIM keys and their rotation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimStatus {
    /// The Secret in this namespace holding the private keys (`anypost1.key`,
    /// `anypost2.key`, and `selector`, the active one).
    pub secret_name: String,
    /// The selector mail is signed with.
    pub active_selector: String,
    /// When the active selector last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// When the next scheduled rotation is due, if rotation is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    /// The last `anypost.com/rotate` annotation value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rotate_request: Option<String>,
    /// Both selectors, always published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<SelectorStatus>,
}

/// One DKIM selector.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorStatus {
    /// anypost1 or anypost2.
    pub name: String,
    /// active, standby or retiring.
    pub state: SelectorState,
    /// The public key (base64 DER SubjectPublicKeyInfo), as published in DNS.
    pub public_key: String,
    /// Key size in bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_bits: Option<u32>,
    /// When this key was generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// For a retiring key: when it is replaced by a fresh standby key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<Time>,
}

/// The role of a DKIM selector.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SelectorState {
    /// Mail is signed with this key.
    Active,
    /// Published and verified-ready; becomes active at the next rotation.
    Standby,
    /// Was active; still published for mail in flight until `retireAt`.
    Retiring,
}

/// Verification of the tracking CNAME.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackingStatus {
    /// pending or verified.
    pub state: DomainState,
    /// Why the tracking CNAME does not verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// What the DMARC lookup found.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DmarcState {
    /// A valid record with a policy.
    Found,
    /// No DMARC record.
    Missing,
    /// A record receivers ignore.
    Invalid,
}

/// DMARC advice for the domain.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DmarcStatus {
    /// found, missing or invalid.
    pub state: DmarcState,
    /// The name the policy was found at, or where to publish one.
    pub name: String,
    /// The record found there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Its policy: none, quarantine or reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A record to start with, when none (or no valid one) is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested: Option<String>,
}

impl SendingDomain {
    /// The key size for newly generated keys.
    pub fn key_bits(&self) -> u32 {
        self.spec
            .dkim
            .as_ref()
            .and_then(|d| d.key_bits)
            .unwrap_or(DEFAULT_KEY_BITS)
    }

    /// The tracking label, if branded tracking is on.
    pub fn tracking_subdomain(&self) -> Option<&str> {
        self.spec.tracking.as_ref().map(|t| t.subdomain.as_str())
    }

    /// The scheduled rotation interval, if any (admission checks its syntax).
    pub fn rotation_interval(&self) -> Option<std::time::Duration> {
        let interval = self.spec.dkim.as_ref()?.rotation_interval.as_deref()?;
        super::duration::parse(interval).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_is_namespaced_with_status_and_columns() {
        let crd = crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["sd".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["anypost".to_string()]));
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
            .collect();
        assert_eq!(
            cols,
            vec![
                ("Domain", 0),
                ("Status", 0),
                ("Failure", 0),
                ("Tracking", 0),
                ("Age", 0),
                ("ID", 1),
                ("Selector", 1),
                ("Last Checked", 1)
            ]
        );
    }

    #[test]
    fn the_name_leaves_room_for_the_secret_name() {
        assert_eq!(
            crate::core::dkim::secret_name(&"a".repeat(MAX_NAME_LEN)).len(),
            253
        );
        let crd = crd();
        let root = crd.spec.versions[0].schema.as_ref().unwrap();
        let rules = root.open_api_v3_schema.as_ref().unwrap();
        let rule = &rules.x_kubernetes_validations.as_ref().unwrap()[0];
        assert_eq!(rule.rule, "size(self.metadata.name) <= 248");
    }

    #[test]
    fn status_serialises_in_api_shape() {
        let rec = DnsRecord {
            type_: "CNAME".into(),
            name: "anypost".into(),
            fqdn: "anypost.example.com".into(),
            value: "abc.dns.example".into(),
            purpose: Purpose::Verification,
            state: Some(RecordState::ChainBroken),
            observed: None,
        };
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["type"], "CNAME");
        assert_eq!(v["purpose"], "verification");
        assert_eq!(v["state"], "chain_broken");
    }
}
