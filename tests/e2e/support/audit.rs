//! The apiserver's audit log (`scripts/dev-cluster` turns it on for writes to
//! SendingDomains, Secrets and Leases): who wrote what, and when the apiserver
//! received it. The operator names its replica in its User-Agent
//! (`anypost-operator/<version> (<identity>)`), so a write can be traced to the
//! replica that sent it, independently of what the replica says about itself.

use super::target_dir;
use jiff::Timestamp;
use serde::Deserialize;

/// One write, as the apiserver recorded it.
#[derive(Debug, Clone)]
pub struct Write {
    /// When the apiserver received it.
    pub received: Timestamp,
    pub user_agent: String,
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: String,
    pub name: String,
    pub code: u16,
}

impl Write {
    /// The replica that sent it, from `anypost-operator/<version> (<identity>)`.
    pub fn replica(&self) -> Option<&str> {
        let rest = self.user_agent.strip_prefix("anypost-operator/")?;
        rest.split_once(" (")?.1.strip_suffix(')')
    }

    /// Whether the apiserver applied it.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    stage: String,
    verb: String,
    #[serde(default)]
    user_agent: String,
    object_ref: Option<ObjectRef>,
    response_status: Option<Status>,
    request_received_timestamp: Timestamp,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    resource: Option<String>,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    code: Option<u16>,
}

/// Every write recorded for objects in `namespaces`, in the order received.
pub fn writes(namespaces: &[&str]) -> Vec<Write> {
    writes_in(&target_dir().join("dev-cluster/logs"), namespaces)
}

/// Like [`writes`], from the audit log in `dir` (a private cluster's logs).
pub fn writes_in(dir: &std::path::Path, namespaces: &[&str]) -> Vec<Write> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("audit") && n.ends_with(".log"))
    });
    let mut out: Vec<Write> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| parse(&l))
        .filter(|w| namespaces.contains(&w.namespace.as_str()))
        .collect();
    out.sort_by_key(|w| w.received);
    out
}

fn parse(line: &str) -> Option<Write> {
    let e: Event = serde_json::from_str(line).ok()?;
    if e.stage != "ResponseComplete" {
        return None;
    }
    let o = e.object_ref?;
    Some(Write {
        received: e.request_received_timestamp,
        user_agent: e.user_agent,
        verb: e.verb,
        resource: o.resource.unwrap_or_default(),
        subresource: o.subresource,
        namespace: o.namespace.unwrap_or_default(),
        name: o.name.unwrap_or_default(),
        code: e.response_status.and_then(|s| s.code).unwrap_or(0),
    })
}
