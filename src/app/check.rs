//! `anypost-operator check DOMAIN`: the controller's check, from a terminal.
//!
//! The token comes from `--token`, or from the identity key in the cluster
//! (`--namespace` given). With a cluster, the SendingDomain for DOMAIN in that
//! namespace also supplies the expected DKIM keys (its `status.dkim`) and the tracking
//! subdomain (unless `--tracking` is given); without one, DKIM keys are not compared
//! (the output says so). The MX host, SPF include and tracking host come from
//! `--mx-host`, `--spf-include`, `--tracking-host` (or the environment variables
//! `run` reads); when unset any MX / SPF record / tracking CNAME counts.
//!
//! Exit status: 0 verified, 1 pending (a record fails), 2 usage, cluster or
//! resolver errors (including a check that got no usable answer).

use super::cli::CheckArgs;
use crate::adapters::kube::identity;
use crate::adapters::resolver::{Resolver, verify};
use crate::core::api::{DnsRecord, RecordState, SendingDomain};
use crate::core::naming::{self, SendingName};
use crate::core::verify::{Expected, Outcome, Verdict};
use crate::core::vocab::{BySelector, Selector};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use std::fmt::Write as _;
use std::process::ExitCode;

const EXIT_PENDING: u8 = 1;
const EXIT_ERROR: u8 = 2;

/// `anypost-operator check`.
pub fn main(args: CheckArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return error(&format!("starting the async runtime: {e}")),
    };
    match rt.block_on(run(args)) {
        Ok((text, verdict)) => {
            print!("{text}");
            match verdict {
                Verdict::Verified => ExitCode::SUCCESS,
                Verdict::Failed(_) => ExitCode::from(EXIT_PENDING),
                Verdict::Unknown(_) => ExitCode::from(EXIT_ERROR),
            }
        }
        Err(e) => error(&e),
    }
}

fn error(msg: &str) -> ExitCode {
    eprintln!("anypost-operator check: {msg}");
    ExitCode::from(EXIT_ERROR)
}

/// What the cluster told us about the domain.
#[derive(Default)]
struct FromCluster {
    dkim_keys: BySelector<Option<String>>,
    tracking: Option<String>,
    notes: Vec<String>,
}

async fn run(args: CheckArgs) -> Result<(String, Verdict), String> {
    let name = SendingName::parse(&args.domain).map_err(|e| e.to_string())?;
    let (token, cluster) = match (&args.token, &args.namespace) {
        (Some(t), _) => (given_token(t)?, FromCluster {
            notes: vec![
                "DKIM keys not compared: with --token the expected keys are unknown (use --namespace with cluster access to compare them)".to_string(),
            ],
            ..Default::default()
        }),
        (None, Some(ns)) => from_cluster(&args, &name, ns).await?,
        (None, None) => {
            return Err(
                "give --namespace NS (the identity key is read from the cluster) or --token T"
                    .into(),
            );
        }
    };
    let tracking = args.tracking.clone().or(cluster.tracking.clone());
    let records = naming::customer_records(&name, &token, &args.zone, tracking.as_deref());
    let expected = Expected {
        zone: args.zone.clone(),
        mx_host: args.mx_host.clone(),
        spf_include: args.spf_include.clone(),
        tracking_host: args.tracking_host.clone(),
        dkim_keys: cluster.dkim_keys.clone(),
    };
    let mut notes = cluster.notes;
    notes.extend(unset_hosts(&expected, tracking.is_some()));
    let resolver =
        Resolver::new(&args.resolvers, args.resolver_timeout).map_err(|e| e.to_string())?;
    let outcome = verify(&resolver, &name, &records, &expected).await;
    let verdict = outcome.verdict.clone();
    Ok((render(&name.domain, &outcome, &notes), verdict))
}

/// The token given with `--token` (or a whole `status.id`), checked.
fn given_token(t: &str) -> Result<String, String> {
    let t = t.trim().to_ascii_lowercase();
    let t = naming::token_from_id(&t).map(str::to_string).unwrap_or(t);
    let base32 = t
        .bytes()
        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    if t.len() != naming::TOKEN_LEN || !base32 {
        return Err(format!(
            "--token {t:?} is not a token: {} base32 characters (the part of status.id after {})",
            naming::TOKEN_LEN,
            naming::ID_PREFIX
        ));
    }
    Ok(t)
}

/// Notes for the hosts not given: what counts at the target instead.
fn unset_hosts(expected: &Expected, tracking: bool) -> Vec<String> {
    [
        ("--mx-host", expected.mx_host.is_some(), "any MX"),
        (
            "--spf-include",
            expected.spf_include.is_some(),
            "any SPF record",
        ),
        (
            "--tracking-host",
            expected.tracking_host.is_some() || !tracking,
            "any tracking CNAME",
        ),
    ]
    .into_iter()
    .filter(|(_, set, _)| !set)
    .map(|(flag, _, consequence)| format!("{flag} not set: {consequence} at the target counts"))
    .collect()
}

/// Reads the identity key and, if present, the domain's SendingDomain.
async fn from_cluster(
    args: &CheckArgs,
    name: &SendingName,
    ns: &str,
) -> Result<(String, FromCluster), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("connecting to the cluster (KUBECONFIG or in-cluster config) to read the identity key: {e}; or pass --token")
    })?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.operator_namespace);
    let secret = secrets.get(identity::SECRET_NAME).await.map_err(|e| {
        format!(
            "reading Secret {}/{}: {e} (is --operator-namespace right?)",
            args.operator_namespace,
            identity::SECRET_NAME
        )
    })?;
    let key = identity::key_from_secret(&secret).map_err(|found| {
        format!(
            "Secret {}/{} has no {:?} of {} bytes ({found})",
            args.operator_namespace,
            identity::SECRET_NAME,
            identity::DATA_KEY,
            identity::KEY_LEN
        )
    })?;
    let token = naming::token(&key, ns, &name.domain);
    let domains: Api<SendingDomain> = Api::namespaced(client, ns);
    let found = match domains.list(&Default::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .find(|d| d.spec.domain == name.domain)
            .map_or_else(
                || {
                    FromCluster::noted(format!(
                        "DKIM keys not compared: no SendingDomain for {} in namespace {ns}",
                        name.domain
                    ))
                },
                FromCluster::of,
            ),
        Err(e) => FromCluster::noted(format!(
            "DKIM keys not compared: listing SendingDomains in {ns} failed: {e}"
        )),
    };
    Ok((token, found))
}

impl FromCluster {
    fn noted(note: String) -> Self {
        FromCluster {
            notes: vec![note],
            ..Default::default()
        }
    }

    /// The tracking subdomain and DKIM keys of the domain's SendingDomain.
    fn of(sd: SendingDomain) -> Self {
        let mut found = FromCluster {
            tracking: sd.tracking_subdomain().map(str::to_string),
            ..Default::default()
        };
        for s in sd
            .status
            .and_then(|s| s.dkim)
            .map(|d| d.selectors)
            .unwrap_or_default()
        {
            if let Some(sel) = Selector::parse(&s.name) {
                found.dkim_keys[sel] = Some(s.public_key);
            }
        }
        if found.dkim_keys.0.iter().all(Option::is_none) {
            found.notes.push(
                "DKIM keys not compared: the SendingDomain has no keys in its status yet".into(),
            );
        }
        found
    }
}

fn state_str(s: Option<RecordState>) -> &'static str {
    match s {
        None | Some(RecordState::Unchecked) => "unchecked",
        Some(RecordState::Ok) => "ok",
        Some(RecordState::Missing) => "missing",
        Some(RecordState::Mismatch) => "mismatch",
        Some(RecordState::ChainBroken) => "chain_broken",
        Some(RecordState::KeyMismatch) => "key_mismatch",
        Some(RecordState::MxMissing) => "mx_missing",
        Some(RecordState::SpfMissing) => "spf_missing",
        Some(RecordState::Unknown) => "unknown",
    }
}

/// The records table, the verdict and the notes, as printed.
fn render(domain: &str, outcome: &Outcome, notes: &[String]) -> String {
    let header = ["NAME", "TYPE", "VALUE", "STATE", "OBSERVED"];
    let rows: Vec<[String; 5]> = outcome
        .records
        .iter()
        .map(|r: &DnsRecord| {
            [
                r.fqdn.clone(),
                r.type_.clone(),
                r.value.clone(),
                state_str(r.state).to_string(),
                r.observed.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                let _ = write!(l, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for row in &rows {
        line(&mut out, &row.each_ref().map(String::as_str));
    }
    out.push('\n');
    let _ = writeln!(out, "{domain}: {}", verdict_line(&outcome.verdict));
    if let Some(t) = &outcome.tracking {
        let _ = writeln!(out, "tracking: {}", verdict_line(t));
    }
    if let Some(d) = &outcome.dmarc {
        let _ = writeln!(out, "dmarc: {}", crate::core::verify::dmarc::message(d));
    }
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn verdict_line(v: &Verdict) -> String {
    match v {
        Verdict::Verified => "verified".to_string(),
        Verdict::Failed(f) => format!("pending ({})\n  {}", f.code, f.message),
        Verdict::Unknown(why) => format!("unknown (resolver error)\n  {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::api::Purpose;
    use crate::core::verify::Finding;
    use crate::core::vocab::FailureCode;

    #[test]
    fn renders_an_aligned_table_and_the_verdict() {
        let rec = |fqdn: &str, state, observed: &str| DnsRecord {
            type_: "CNAME".into(),
            name: String::new(),
            fqdn: fqdn.into(),
            value: "t.z.example".into(),
            purpose: Purpose::Verification,
            state: Some(state),
            observed: Some(observed.into()),
        };
        let outcome = Outcome {
            records: vec![
                rec(
                    "anypost.example.com",
                    RecordState::Ok,
                    "CNAME → t.z.example",
                ),
                rec("a.example.com", RecordState::Missing, "no record"),
            ],
            verdict: Verdict::Failed(Finding {
                code: FailureCode::DkimCnameMissing,
                message: "The DKIM CNAME a.example.com was not found.".into(),
            }),
            tracking: None,
            dmarc: None,
        };
        assert_eq!(
            render("example.com", &outcome, &["keys not compared".into()]),
            "NAME                 TYPE   VALUE        STATE    OBSERVED\n\
             anypost.example.com  CNAME  t.z.example  ok       CNAME → t.z.example\n\
             a.example.com        CNAME  t.z.example  missing  no record\n\
             \n\
             example.com: pending (dkim_cname_missing)\n  \
             The DKIM CNAME a.example.com was not found.\n\
             note: keys not compared\n"
        );
    }
}
