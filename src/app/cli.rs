//! Command-line interface: every flag of `anypost-operator` and its environment
//! variable, and the dispatch to each subcommand.

use crate::adapters::dns::rfc2136::Rfc2136Settings;
use crate::controller;
use crate::core::config::FieldError;
use crate::core::naming::host_name;
use crate::core::status::schedule::Intervals;
use crate::core::zone::ZoneSettings;
use crate::core::zone::config::zone_name;
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

/// What `run` runs in this process.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The controller and the DNS zone in one process (the demo, small installs).
    All,
    /// Reconcile SendingDomains: keys, Secrets, status, the leader Lease, the
    /// RFC2136 sync. No DNS listener.
    Controller,
    /// Serve the zone only: reads SendingDomains and the identity Secret, writes
    /// nothing. Needs --zone-backend embedded.
    Dns,
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::core::duration::parse(s)
}

/// A duration that must be longer than zero (an interval, a timeout).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} must be longer than 0s")),
        d => Ok(d),
    }
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

    /// What this process runs: all (the controller and the DNS zone), controller
    /// (no DNS listener), or dns (serves the zone and writes nothing: no Secret
    /// but the identity Secret is read, no status written). The chart runs one
    /// Deployment of each of the last two.
    #[arg(long, env = "ANYPOST_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// A YAML file with the domain-claim policy: which namespaces may claim which
    /// domain suffixes (see the README). Read again every 10 s. Default: every
    /// claim is allowed.
    #[arg(long, env = "ANYPOST_CLAIM_POLICY")]
    pub claim_policy: Option<PathBuf>,

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
    #[arg(long, env = "ANYPOST_RESOLVER_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub resolver_timeout: Duration,

    /// How often verified domains are re-checked (with ±10% jitter).
    #[arg(long, env = "ANYPOST_VERIFY_INTERVAL", default_value = "1h", value_parser = positive_duration)]
    pub verify_interval: Duration,

    /// Longest wait between checks of a pending domain (checks start seconds apart
    /// and back off to this).
    #[arg(long, env = "ANYPOST_PENDING_MAX_INTERVAL", default_value = "1h", value_parser = positive_duration)]
    pub pending_max_interval: Duration,

    /// How long a verified domain whose records disappeared stays verified (with the
    /// failure shown) before it returns to pending.
    #[arg(long, env = "ANYPOST_VERIFIED_GRACE", default_value = "72h", value_parser = duration)]
    pub verified_grace: Duration,

    /// Most domains verified at once.
    #[arg(long, env = "ANYPOST_VERIFY_CONCURRENCY", default_value_t = 16)]
    pub verify_concurrency: usize,

    /// How long a replaced DKIM key stays published for mail in flight.
    #[arg(long, env = "ANYPOST_DKIM_RETIRE_AFTER", default_value = "7d", value_parser = positive_duration)]
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
    #[arg(long, env = "ANYPOST_RFC2136_RESYNC", default_value = "5m", value_parser = positive_duration)]
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
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub resolver_timeout: Duration,
}

impl ZoneArgs {
    /// The zone's settings as the flags give them.
    pub fn settings(&self) -> ZoneSettings {
        ZoneSettings {
            zone: self.zone.clone(),
            mx_host: self.mx_host.clone(),
            spf_include: self.spf_include.clone(),
            tracking_host: self.tracking_host.clone(),
            nameservers: self.nameservers.clone(),
            nameserver_addresses: self.nameserver_addresses.clone(),
            soa_contact: self.soa_contact.clone(),
            record_ttl: self.record_ttl,
        }
    }
}

impl Rfc2136Args {
    /// The rfc2136 backend's settings as the flags give them.
    pub fn settings(&self) -> Rfc2136Settings {
        Rfc2136Settings {
            server: self.rfc2136_server,
            key_name: self.tsig_key_name.clone(),
            secret_file: self.tsig_secret_file.clone(),
            algorithm: self.tsig_algorithm.clone(),
            resync: self.rfc2136_resync,
        }
    }
}

impl RunArgs {
    /// What reconcile depends on.
    pub fn controller_config(&self) -> controller::Config {
        controller::Config {
            zone: self.zone.zone.clone(),
            intervals: Intervals {
                verify: self.verify_interval,
                pending_max: self.pending_max_interval,
            },
            verified_grace: self.verified_grace,
            dkim_retire_after: self.dkim_retire_after,
            dkim_min_standby_age: self.dkim_min_standby_age,
            reveal_conflicts: self.reveal_conflicts,
            verify_concurrency: self.verify_concurrency,
        }
    }
}

/// The flag that sets each field of the zone's and the rfc2136 backend's settings.
const FLAGS: &[(&str, &str)] = &[
    ("zone", "--zone"),
    ("mx_host", "--mx-host"),
    ("spf_include", "--spf-include"),
    ("tracking_host", "--tracking-host"),
    ("nameservers", "--nameserver"),
    ("nameserver_addresses", "--nameserver-address"),
    ("soa_contact", "--soa-contact"),
    ("record_ttl", "--record-ttl"),
    ("server", "--rfc2136-server"),
    ("key_name", "--tsig-key-name"),
    ("secret_file", "--tsig-secret-file"),
    ("algorithm", "--tsig-algorithm"),
    ("resync", "--rfc2136-resync"),
];

/// A settings error in the words of the command line: the flag, the value, why.
pub fn flag_error(e: FieldError) -> anyhow::Error {
    let flag = FLAGS
        .iter()
        .find(|(field, _)| *field == e.field)
        .map_or(e.field, |(_, flag)| *flag);
    if e.value.is_empty() {
        anyhow::anyhow!("{flag}: {}", e.reason)
    } else {
        anyhow::anyhow!("{flag} {:?}: {}", e.value, e.reason)
    }
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => {
            print!("{}", super::crd::yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => super::run::main(*args),
        Command::Check(args) => super::check::main(*args),
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

    #[test]
    fn durations_that_make_no_sense_are_refused_naming_the_flag() {
        let base = [
            "anypost-operator",
            "run",
            "--zone",
            "dns.example.com",
            "--mx-host",
            "mx.example",
            "--spf-include",
            "spf.example",
            "--tracking-host",
            "t.example",
        ];
        for (flag, value, says) in [
            ("--rfc2136-resync", "0s", "must be longer than 0s"),
            ("--verify-interval", "0m", "must be longer than 0s"),
            ("--resolver-timeout", "0ms", "must be longer than 0s"),
            (
                "--pending-max-interval",
                "99999999999999999999h",
                "too long",
            ),
        ] {
            let mut argv = base.to_vec();
            argv.extend([flag, value]);
            let e = Cli::try_parse_from(argv).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(says), "{flag}: {e}");
        }
    }

    #[test]
    fn settings_errors_name_the_flag() {
        let e = flag_error(FieldError::new(
            "mx_host",
            "mx.z.example",
            "inside the zone",
        ));
        assert_eq!(e.to_string(), "--mx-host \"mx.z.example\": inside the zone");
        let e = flag_error(FieldError::new(
            "key_name",
            "",
            "required for the rfc2136 backend",
        ));
        assert_eq!(
            e.to_string(),
            "--tsig-key-name: required for the rfc2136 backend"
        );
        // Every field of the settings has its flag.
        for field in [
            "zone",
            "mx_host",
            "spf_include",
            "tracking_host",
            "nameservers",
            "nameserver_addresses",
            "soa_contact",
            "record_ttl",
            "server",
            "key_name",
            "secret_file",
            "algorithm",
            "resync",
        ] {
            assert!(FLAGS.iter().any(|(f, _)| *f == field), "{field}");
        }
    }
}
