//! Command-line interface: every flag of `anypost-operator` and its environment
//! variable, and the dispatch to each subcommand.

use crate::adapters::dns::embedded::{
    CookieSecrets, RrlConfig, ServeOptions, TcpLimits, TransferConfig, TransferKeys,
};
use crate::adapters::dns::rfc2136::Rfc2136Settings;
use crate::adapters::kube::leader::LeaseTimings;
use crate::controller;
use crate::core::config::FieldError;
use crate::core::naming::host_name;
use crate::core::status::schedule::Intervals;
use crate::core::zone::config::zone_name;
use crate::core::zone::{DeleteGuard, ZoneSettings};
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

/// A rate: a number, zero or more.
fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of zero or more")),
    }
}

/// A duration that must be longer than zero (an interval, a timeout).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} must be longer than 0s")),
        d => Ok(d),
    }
}

/// A count that must be at least 1 (a concurrency bound).
fn positive_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err(format!("{s:?} must be at least 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a count: {e}")),
    }
}

/// A shard's name: one DNS label (it ends the leader Lease's name).
fn shard_name(s: &str) -> Result<String, String> {
    let label = s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.is_empty();
    if label {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} must be lower-case letters, digits and inner hyphens, at most 40 characters"
        ))
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

    /// Client networks allowed to transfer the zone (AXFR, IXFR) without TSIG
    /// (CIDR, repeatable). Default: none. Unsafe behind source NAT (a Service's
    /// default externalTrafficPolicy: Cluster): prefer --dns-transfer-key-file.
    #[arg(long = "allow-axfr", env = "ANYPOST_ALLOW_AXFR", value_delimiter = ',')]
    pub allow_axfr: Vec<ipnet::IpNet>,

    #[command(flatten)]
    pub dns: DnsArgs,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ANYPOST_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// /readyz fails once the watch of SendingDomains has failed for this long
    /// without a success: the zone this replica serves may then be stale. (In an
    /// outage of the whole API nothing can act on readiness anyway; this takes a
    /// replica cut off on its own out of its Service.)
    #[arg(long, env = "ANYPOST_STALE_AFTER", default_value = "5m", value_parser = positive_duration)]
    pub stale_after: Duration,

    /// /healthz fails once reconciles are in flight and none has finished for
    /// this long: the controller is stuck, and a restart is the cure. (Longer
    /// than the API client's own request timeout, so a slow API is not "stuck".)
    #[arg(long, env = "ANYPOST_STUCK_AFTER", default_value = "10m", value_parser = positive_duration)]
    pub stuck_after: Duration,

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
    #[arg(long, env = "ANYPOST_VERIFY_CONCURRENCY", default_value = "16", value_parser = positive_count)]
    pub verify_concurrency: usize,

    /// Most checks started per second, over all domains (each check asks the
    /// resolver 6 to 12 questions); 0 for no limit. Checks are shared fairly
    /// between namespaces.
    #[arg(long, env = "ANYPOST_VERIFY_QPS", default_value_t = 100.0, value_parser = non_negative)]
    pub verify_qps: f64,

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

    /// With --selector: the SendingDomains claims are judged against (a label
    /// selector), so that shards of one installation never both publish a
    /// domain. Default: every SendingDomain in the cluster. Installations that
    /// serve separate zones and must not block each other's claims (staging and
    /// production in one cluster) set it to a label all their shards share.
    #[arg(long, env = "ANYPOST_CLAIM_SCOPE")]
    pub claim_scope: Option<String>,

    /// Name of this shard: its replicas elect their leader with the Lease
    /// anypost-operator-leader-<shard>. Default: with --selector, a name derived
    /// from the selector (operators with different selectors lead side by side);
    /// without, the unsharded anypost-operator-leader.
    #[arg(long, env = "ANYPOST_SHARD", value_parser = shard_name)]
    pub shard: Option<String>,

    /// Elect a leader with a Lease so that only one replica writes. Turn off only
    /// when running a single replica outside a cluster.
    #[arg(long, env = "ANYPOST_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// How long the leader Lease stays valid without renewal: another replica
    /// takes over once the Lease has not changed for this long (whole seconds).
    #[arg(long, env = "ANYPOST_LEADER_LEASE_DURATION", default_value = "15s", value_parser = positive_duration)]
    pub leader_lease_duration: Duration,

    /// How long the leader keeps writing after its last successful renewal; it
    /// stops at once when this passes. Shorter than --leader-lease-duration.
    #[arg(long, env = "ANYPOST_LEADER_RENEW_DEADLINE", default_value = "10s", value_parser = positive_duration)]
    pub leader_renew_deadline: Duration,

    /// How often the leader renews its Lease and the others try to take it.
    /// Shorter than --leader-renew-deadline.
    #[arg(long, env = "ANYPOST_LEADER_RETRY_PERIOD", default_value = "2s", value_parser = positive_duration)]
    pub leader_retry_period: Duration,

    #[command(flatten)]
    pub rfc2136: Rfc2136Args,

    /// Log format.
    #[arg(long, env = "ANYPOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// On SIGTERM, how long to keep answering DNS (after handing the leader Lease
    /// over and failing /readyz) while load balancers stop sending queries here.
    #[arg(long, env = "ANYPOST_SHUTDOWN_DRAIN", default_value = "0s", value_parser = duration)]
    pub shutdown_drain: Duration,
}

/// Flags of the embedded server facing the internet: rate limiting, cookies, TCP
/// limits, transfers to secondaries.
#[derive(Args, Debug, Clone)]
pub struct DnsArgs {
    /// UDP responses per second per source prefix and kind of response, before
    /// responses are dropped or slipped (response rate limiting). 0 turns it off.
    #[arg(long, env = "ANYPOST_DNS_RRL_RATE", default_value_t = 20)]
    pub dns_rrl_rate: u16,

    /// Every Nth rate-limited response is sent truncated (TC=1) so that real
    /// resolvers retry over TCP; 0 drops them all.
    #[arg(long, env = "ANYPOST_DNS_RRL_SLIP", default_value_t = 2)]
    pub dns_rrl_slip: u8,

    /// Seconds over which a source's excess is remembered: a flooding prefix
    /// stays limited until its average falls below the rate for this long.
    #[arg(long, env = "ANYPOST_DNS_RRL_WINDOW", default_value_t = 15)]
    pub dns_rrl_window: u16,

    /// IPv4 source prefix length that shares one account.
    #[arg(long, env = "ANYPOST_DNS_RRL_IPV4_PREFIX", default_value_t = 24)]
    pub dns_rrl_ipv4_prefix: u8,

    /// IPv6 source prefix length that shares one account.
    #[arg(long, env = "ANYPOST_DNS_RRL_IPV6_PREFIX", default_value_t = 56)]
    pub dns_rrl_ipv6_prefix: u8,

    /// Client networks never rate limited (CIDR, repeatable), e.g. your own
    /// resolvers. Clients with a valid DNS cookie are exempt anyway.
    #[arg(
        long = "dns-rrl-exempt",
        env = "ANYPOST_DNS_RRL_EXEMPT",
        value_delimiter = ','
    )]
    pub dns_rrl_exempt: Vec<ipnet::IpNet>,

    /// Rate-limiting accounts kept: a fixed table of 8 bytes an account
    /// (rounded up to a power of two).
    #[arg(long, env = "ANYPOST_DNS_RRL_TABLE_SIZE", default_value_t = 65536)]
    pub dns_rrl_table_size: usize,

    /// Answer DNS cookies (RFC 7873, RFC 9018) with a server cookie; clients that
    /// return a valid one are exempt from rate limiting.
    #[arg(long, env = "ANYPOST_DNS_COOKIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub dns_cookies: bool,

    /// How often the server-cookie secret changes (derived from the identity
    /// key, so every replica has it; at least 2h).
    #[arg(long, env = "ANYPOST_DNS_COOKIE_ROTATION", default_value = "24h", value_parser = positive_duration)]
    pub dns_cookie_rotation: Duration,

    /// Most TCP connections open at once; at the limit the connection idle
    /// longest is closed for a new one.
    #[arg(long, env = "ANYPOST_DNS_TCP_MAX_CONNECTIONS", default_value_t = 150)]
    pub dns_tcp_max_connections: usize,

    /// A TCP connection with no request for this long is closed.
    #[arg(long, env = "ANYPOST_DNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub dns_tcp_idle_timeout: Duration,

    /// Every TCP connection is closed this long after it opened, busy or not.
    #[arg(long, env = "ANYPOST_DNS_TCP_LIFETIME", default_value = "2m", value_parser = positive_duration)]
    pub dns_tcp_lifetime: Duration,

    /// A started TCP message must arrive, and each answer be taken, within this.
    #[arg(long, env = "ANYPOST_DNS_TCP_IO_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub dns_tcp_io_timeout: Duration,

    /// A TSIG key secondaries may transfer the zone (AXFR, IXFR) with: a file
    /// holding a BIND key clause as `tsig-keygen NAME` prints it (repeatable).
    #[arg(
        long = "dns-transfer-key-file",
        env = "ANYPOST_DNS_TRANSFER_KEY_FILES",
        value_delimiter = ','
    )]
    pub dns_transfer_key_files: Vec<PathBuf>,

    /// A secondary to send NOTIFY to after every change of the zone (IP:PORT,
    /// repeatable); signed with the first transfer key, if any.
    #[arg(long = "dns-notify", env = "ANYPOST_DNS_NOTIFY", value_delimiter = ',')]
    pub dns_notify: Vec<SocketAddr>,
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

    /// The largest share (percent) of the record sets the operator owns on the
    /// server that one sync may delete; a sync deleting more (and more than 25
    /// record sets) is refused, with an error, the metric
    /// anypost_rfc2136_deletes_refused and an alert, until confirmed.
    #[arg(long, env = "ANYPOST_RFC2136_MAX_DELETE_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub rfc2136_max_delete_percent: u8,

    /// Confirms a refused sync: a sync deleting at most this many record sets goes
    /// ahead whatever their share (the refusal names the number). Remove it once
    /// the sync is done.
    #[arg(long, env = "ANYPOST_RFC2136_CONFIRM_DELETES", default_value_t = 0)]
    pub rfc2136_confirm_deletes: usize,
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
    /// How much of the zone one sync may delete.
    pub fn delete_guard(&self) -> DeleteGuard {
        DeleteGuard {
            max_percent: self.rfc2136_max_delete_percent,
            confirmed: self.rfc2136_confirm_deletes,
            ..DeleteGuard::default()
        }
    }

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

impl DnsArgs {
    /// The embedded server's options as the flags give them (cookies are added
    /// once the identity key is loaded: see [`DnsArgs::cookie_secrets`]).
    pub fn options(&self, allow_axfr: &[ipnet::IpNet]) -> Result<ServeOptions, FieldError> {
        let rrl = RrlConfig {
            rate: self.dns_rrl_rate,
            slip: self.dns_rrl_slip,
            window: self.dns_rrl_window,
            ipv4_prefix: self.dns_rrl_ipv4_prefix,
            ipv6_prefix: self.dns_rrl_ipv6_prefix,
            exempt: self.dns_rrl_exempt.clone(),
            table_size: self.dns_rrl_table_size,
        };
        rrl.check().map_err(|(field, reason)| {
            let value = match field {
                "rate" => format!("{} (window {})", self.dns_rrl_rate, self.dns_rrl_window),
                "prefix" => format!("{}/{}", self.dns_rrl_ipv4_prefix, self.dns_rrl_ipv6_prefix),
                _ => self.dns_rrl_table_size.to_string(),
            };
            FieldError::new(field, &value, reason)
        })?;
        if self.dns_tcp_max_connections == 0 {
            return Err(FieldError::new(
                "tcp_max_connections",
                "0",
                "at least one connection",
            ));
        }
        Ok(ServeOptions {
            allow_axfr: allow_axfr.to_vec(),
            rrl,
            cookies: None,
            tcp: TcpLimits {
                max_connections: self.dns_tcp_max_connections,
                idle_timeout: self.dns_tcp_idle_timeout,
                lifetime: self.dns_tcp_lifetime,
                io_timeout: self.dns_tcp_io_timeout,
            },
            transfer: TransferConfig {
                keys: TransferKeys::from_files(&self.dns_transfer_key_files)?,
                notify: self.dns_notify.clone(),
            },
        })
    }

    /// The server-cookie secrets, from the identity key every replica shares.
    pub fn cookie_secrets(&self, identity_key: &[u8]) -> Option<CookieSecrets> {
        let rotation = u32::try_from(self.dns_cookie_rotation.as_secs()).unwrap_or(u32::MAX);
        self.dns_cookies
            .then(|| CookieSecrets::new(identity_key, rotation))
    }
}

impl RunArgs {
    /// The leader election's timings as the flags give them.
    pub fn lease_timings(&self) -> Result<LeaseTimings, FieldError> {
        LeaseTimings::new(
            self.leader_lease_duration,
            self.leader_renew_deadline,
            self.leader_retry_period,
        )
    }

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
            verify_qps: self.verify_qps,
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
    ("lease_duration", "--leader-lease-duration"),
    ("renew_deadline", "--leader-renew-deadline"),
    ("retry_period", "--leader-retry-period"),
    ("rate", "--dns-rrl-rate"),
    ("prefix", "--dns-rrl-ipv4-prefix/--dns-rrl-ipv6-prefix"),
    ("table_size", "--dns-rrl-table-size"),
    ("tcp_max_connections", "--dns-tcp-max-connections"),
    ("transfer_key_file", "--dns-transfer-key-file"),
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
            ("--verify-concurrency", "0", "must be at least 1"),
            ("--leader-retry-period", "0s", "must be longer than 0s"),
            ("--shard", "Gold", "lower-case"),
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
            "lease_duration",
            "renew_deadline",
            "retry_period",
        ] {
            assert!(FLAGS.iter().any(|(f, _)| *f == field), "{field}");
        }
    }
}
