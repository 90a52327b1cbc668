//! Command-line interface: every flag of `anypost-operator` and its environment
//! variable, and the dispatch to each subcommand.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Kubernetes operator for email sending domains.
///
/// A SendingDomain names a domain mail is sent from. The operator generates its DKIM
/// keys into Secrets, publishes SPF, DKIM and MX records in its own DNS zone, lists the
/// CNAMEs the domain's owner publishes once, and keeps verifying them.
#[derive(Parser, Debug)]
#[command(name = "anypost-operator", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller, the DNS zone and the metrics/health endpoints.
    Run(Box<RunArgs>),
    /// Print the SendingDomain CustomResourceDefinition (the YAML kept in crds/).
    Crd,
    /// Check a domain's CNAMEs from a terminal and print the records and the verdict.
    ///
    /// The token comes from --token, or from the operator's identity key in the
    /// cluster (with --namespace). With cluster access the SendingDomain for DOMAIN
    /// in --namespace also gives the expected DKIM keys and tracking subdomain;
    /// with --token alone DKIM keys are not compared (the output says so).
    ///
    /// Exit status: 0 verified, 1 pending (a record fails), 2 usage, cluster or
    /// resolver error (including a check that got no usable answer).
    Check(Box<CheckArgs>),
}

/// Where the zone's records are served from.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneBackend {
    /// An authoritative server inside every replica (hickory-server).
    Embedded,
    /// DNS UPDATE (TSIG-signed) to an existing authoritative server.
    Rfc2136,
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

/// What goes into the operator's zone and how it is answered.
#[derive(Args, Debug, Clone)]
pub struct ZoneArgs {
    /// The DNS zone the operator owns, e.g. dns.anypost.example. Customers' CNAMEs
    /// point at names below it.
    #[arg(long, env = "ANYPOST_ZONE", value_parser = zone_name)]
    pub zone: String,

    /// Host that receives bounces: the MX target published at every domain's
    /// verification name (must not be a name inside --zone).
    #[arg(long, env = "ANYPOST_MX_HOST", value_parser = host_name)]
    pub mx_host: String,

    /// Domain included by every domain's SPF record: v=spf1 include:<this> -all.
    #[arg(long, env = "ANYPOST_SPF_INCLUDE", value_parser = host_name)]
    pub spf_include: String,

    /// Host serving branded open/click tracking: the target of track.<token>.<zone>.
    #[arg(long, env = "ANYPOST_TRACKING_HOST", value_parser = host_name)]
    pub tracking_host: String,

    /// Names of the zone's nameservers, published as NS at the zone apex
    /// (repeatable or comma-separated). Default: ns1.<zone>.
    #[arg(long = "nameserver", env = "ANYPOST_NAMESERVERS", value_delimiter = ',', value_parser = host_name)]
    pub nameservers: Vec<String>,

    /// Addresses of in-zone nameservers (NAME=IP, repeatable), published as A/AAAA.
    #[arg(
        long = "nameserver-address",
        env = "ANYPOST_NAMESERVER_ADDRESSES",
        value_delimiter = ','
    )]
    pub nameserver_addresses: Vec<String>,

    /// The SOA contact mailbox as a domain name. Default: hostmaster.<zone>.
    #[arg(long, env = "ANYPOST_SOA_CONTACT", value_parser = host_name)]
    pub soa_contact: Option<String>,

    /// TTL of the records the operator publishes, in seconds.
    #[arg(long, env = "ANYPOST_RECORD_TTL", default_value_t = 300)]
    pub record_ttl: u32,
}

/// Flags of `anypost-operator run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub zone: ZoneArgs,

    /// Namespace holding the identity Secret and the leader Lease. Default: the pod's
    /// namespace, else anypost-system.
    #[arg(long, env = "ANYPOST_NAMESPACE")]
    pub namespace: Option<String>,

    /// Where the zone is served: embedded (in every replica) or rfc2136 (pushed to an
    /// existing authoritative server).
    #[arg(long, env = "ANYPOST_ZONE_BACKEND", value_enum, default_value_t = ZoneBackend::Embedded)]
    pub zone_backend: ZoneBackend,

    /// UDP and TCP address of the embedded DNS server.
    #[arg(long, env = "ANYPOST_DNS_LISTEN", default_value = "0.0.0.0:5353")]
    pub dns_listen: SocketAddr,

    /// Client networks allowed to transfer the zone with AXFR (CIDR, repeatable).
    /// Default: none; AXFR is refused.
    #[arg(long = "allow-axfr", env = "ANYPOST_ALLOW_AXFR", value_delimiter = ',')]
    pub allow_axfr: Vec<ipnet::IpNet>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ANYPOST_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// Resolver used to verify customers' CNAMEs (IP:PORT, repeatable). Default: the
    /// system's resolvers (/etc/resolv.conf).
    #[arg(long = "resolver", env = "ANYPOST_RESOLVERS", value_delimiter = ',')]
    pub resolvers: Vec<SocketAddr>,

    /// Timeout of one resolver query.
    #[arg(long, env = "ANYPOST_RESOLVER_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub resolver_timeout: Duration,

    /// How often verified domains are re-checked (with ±10% jitter).
    #[arg(long, env = "ANYPOST_VERIFY_INTERVAL", default_value = "1h", value_parser = duration)]
    pub verify_interval: Duration,

    /// Longest wait between checks of a pending domain (checks start seconds apart
    /// and back off to this).
    #[arg(long, env = "ANYPOST_PENDING_MAX_INTERVAL", default_value = "1h", value_parser = duration)]
    pub pending_max_interval: Duration,

    /// How long a verified domain whose records disappeared stays verified (with the
    /// failure shown) before it returns to pending.
    #[arg(long, env = "ANYPOST_VERIFIED_GRACE", default_value = "72h", value_parser = duration)]
    pub verified_grace: Duration,

    /// Most domains verified at once.
    #[arg(long, env = "ANYPOST_VERIFY_CONCURRENCY", default_value_t = 16)]
    pub verify_concurrency: usize,

    /// How long a replaced DKIM key stays published for mail in flight.
    #[arg(long, env = "ANYPOST_DKIM_RETIRE_AFTER", default_value = "7d", value_parser = duration)]
    pub dkim_retire_after: Duration,

    /// How long a standby DKIM key must have been published before a rotation may
    /// make it sign (resolvers may still cache its absence).
    #[arg(long, env = "ANYPOST_DKIM_MIN_STANDBY_AGE", default_value = "1h", value_parser = duration)]
    pub dkim_min_standby_age: Duration,

    /// Name the namespace of the older claim in a DomainConflict message. Off by
    /// default: tenants must not learn about each other.
    #[arg(long, env = "ANYPOST_REVEAL_CONFLICTS", default_value_t = false)]
    pub reveal_conflicts: bool,

    /// Manage and serve only SendingDomains matching this label selector (e.g.
    /// `tier=gold`), to shard domains across operator installations. Default: all.
    #[arg(long, env = "ANYPOST_SELECTOR")]
    pub selector: Option<String>,

    /// Elect a leader with a Lease so that only one replica writes. Turn off only
    /// when running a single replica outside a cluster.
    #[arg(long, env = "ANYPOST_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    #[command(flatten)]
    pub rfc2136: Rfc2136Args,

    /// Log format.
    #[arg(long, env = "ANYPOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Flags of the rfc2136 backend.
#[derive(Args, Debug, Clone)]
pub struct Rfc2136Args {
    /// The authoritative server to update (IP:PORT).
    #[arg(long, env = "ANYPOST_RFC2136_SERVER")]
    pub rfc2136_server: Option<SocketAddr>,

    /// TSIG key name, as in the server's key clause.
    #[arg(long, env = "ANYPOST_TSIG_KEY_NAME")]
    pub tsig_key_name: Option<String>,

    /// File holding the TSIG secret, base64 (as in BIND's key clause).
    #[arg(long, env = "ANYPOST_TSIG_SECRET_FILE")]
    pub tsig_secret_file: Option<PathBuf>,

    /// TSIG algorithm.
    #[arg(long, env = "ANYPOST_TSIG_ALGORITHM", default_value = "hmac-sha256")]
    pub tsig_algorithm: String,

    /// How often the zone is re-read and re-synced even without changes.
    #[arg(long, env = "ANYPOST_RFC2136_RESYNC", default_value = "5m", value_parser = duration)]
    pub rfc2136_resync: Duration,
}

/// Flags of `anypost-operator check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The sending domain to check, e.g. example.com.
    pub domain: String,

    /// The operator's zone.
    #[arg(long, env = "ANYPOST_ZONE", value_parser = zone_name)]
    pub zone: String,

    /// The SendingDomain's namespace (with the identity key, this gives the token).
    #[arg(long)]
    pub namespace: Option<String>,

    /// The domain's token (the part of status.id after domain_), instead of reading
    /// the identity key from the cluster.
    #[arg(long)]
    pub token: Option<String>,

    /// Namespace of the operator's identity Secret.
    #[arg(long, default_value = "anypost-system")]
    pub operator_namespace: String,

    /// Tracking subdomain to check as well.
    #[arg(long)]
    pub tracking: Option<String>,

    /// Expected MX host (as `run --mx-host`). Unset: any MX counts.
    #[arg(long, env = "ANYPOST_MX_HOST", value_parser = host_name)]
    pub mx_host: Option<String>,

    /// Expected SPF include (as `run --spf-include`). Unset: any SPF record counts.
    #[arg(long, env = "ANYPOST_SPF_INCLUDE", value_parser = host_name)]
    pub spf_include: Option<String>,

    /// Expected tracking host (as `run --tracking-host`). Unset: any CNAME counts.
    #[arg(long, env = "ANYPOST_TRACKING_HOST", value_parser = host_name)]
    pub tracking_host: Option<String>,

    /// Resolver to use (IP:PORT, repeatable). Default: the system's.
    #[arg(long = "resolver", value_delimiter = ',')]
    pub resolvers: Vec<SocketAddr>,

    /// Timeout of one resolver query.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub resolver_timeout: Duration,
}

fn host_name(s: &str) -> Result<String, String> {
    let n = s.trim_end_matches('.').to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(n)
    } else {
        Err(format!("{s:?} is not a valid DNS name"))
    }
}

fn zone_name(s: &str) -> Result<String, String> {
    let n = host_name(s)?;
    if !n.contains('.') {
        return Err(format!(
            "{s:?}: the zone needs at least two labels, e.g. dns.anypost.example"
        ));
    }
    Ok(n)
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::controller::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => crate::controller::main(*args),
        Command::Check(args) => crate::verify::check_main(*args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_needs_a_zone_with_two_labels() {
        let e = Cli::try_parse_from([
            "anypost-operator",
            "run",
            "--zone",
            "local",
            "--mx-host",
            "mx.example",
            "--spf-include",
            "spf.example",
            "--tracking-host",
            "t.example",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least two labels"), "{e}");
    }
}
