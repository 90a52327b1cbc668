//! Metrics of the embedded server.

use hickory_net::xfer::Protocol;
use hickory_proto::op::ResponseCode;
use hickory_server::server::ResponseInfo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct QueryLabels {
    /// udp or tcp.
    transport: &'static str,
    /// The response code, e.g. NOERROR, NXDOMAIN, REFUSED.
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabels {
    /// acknowledged or failed.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TransferLabels {
    /// axfr or ixfr (an IXFR answered with the whole zone counts as axfr).
    kind: &'static str,
}

/// The response codes the metrics tell apart (the rest are OTHER).
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER",
];

fn rcode_index(rcode: u16) -> usize {
    match rcode {
        0..=5 => usize::from(rcode),
        _ => 6,
    }
}

/// Metrics of the embedded server; register them with [`DnsMetrics::register`].
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    /// The counters of `queries` by transport (udp, tcp) and [`RCODES`], so that
    /// the fast path counts without a lookup.
    by_code: [[Counter; 7]; 2],
    truncated: Counter,
    pub(super) rrl_dropped: Counter,
    pub(super) rrl_slipped: Counter,
    pub(super) cookie_valid: Counter,
    pub(super) tcp_connections: Gauge,
    pub(super) tcp_refused: Counter,
    pub(super) tcp_closed_idle: Counter,
    pub(super) tcp_closed_lifetime: Counter,
    notifies: Family<ResultLabels, Counter>,
    transfers: Family<TransferLabels, Counter>,
    pub(super) publishes: Counter,
    pub(super) serial: Gauge,
    pub(super) rrsets: Gauge,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        let queries = Family::<QueryLabels, Counter>::default();
        let by_code = ["udp", "tcp"].map(|transport| {
            RCODES.map(|rcode| {
                queries
                    .get_or_create(&QueryLabels { transport, rcode })
                    .clone()
            })
        });
        DnsMetrics {
            queries,
            by_code,
            truncated: Counter::default(),
            rrl_dropped: Counter::default(),
            rrl_slipped: Counter::default(),
            cookie_valid: Counter::default(),
            tcp_connections: Gauge::default(),
            tcp_refused: Counter::default(),
            tcp_closed_idle: Counter::default(),
            tcp_closed_lifetime: Counter::default(),
            notifies: Family::default(),
            transfers: Family::default(),
            publishes: Counter::default(),
            serial: Gauge::default(),
            rrsets: Gauge::default(),
        }
    }
}

impl DnsMetrics {
    /// Adds the metrics to `registry` (names prefixed `dns_`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let counters = [
            (
                "dns_truncated",
                "UDP answers sent truncated (the client retries over TCP)",
                &self.truncated,
            ),
            (
                "dns_rrl_dropped",
                "UDP responses not sent: over the response rate limit",
                &self.rrl_dropped,
            ),
            (
                "dns_rrl_slipped",
                "UDP responses over the rate limit sent truncated instead (slip)",
                &self.rrl_slipped,
            ),
            (
                "dns_cookie_valid",
                "Queries with a valid server cookie (exempt from rate limiting)",
                &self.cookie_valid,
            ),
            (
                "dns_tcp_refused",
                "TCP connections closed at once or evicted: the connection limit was reached",
                &self.tcp_refused,
            ),
            (
                "dns_tcp_closed_idle",
                "TCP connections closed after the idle timeout",
                &self.tcp_closed_idle,
            ),
            (
                "dns_tcp_closed_lifetime",
                "TCP connections closed at the end of their lifetime",
                &self.tcp_closed_lifetime,
            ),
            (
                "dns_zone_publishes",
                "Zone contents published (each gets a new SOA serial)",
                &self.publishes,
            ),
        ];
        registry.register(
            "dns_queries",
            "Queries answered by the embedded DNS server, by transport and response code",
            self.queries.clone(),
        );
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "dns_notifies",
            "NOTIFY messages to secondaries, by result (acknowledged, failed after retries)",
            self.notifies.clone(),
        );
        registry.register(
            "dns_transfers",
            "Zone transfers served, by type (axfr: the whole zone; ixfr: changes from the journal)",
            self.transfers.clone(),
        );
        let gauges = [
            (
                "dns_tcp_connections",
                "Open TCP connections",
                &self.tcp_connections,
            ),
            (
                "dns_zone_serial",
                "SOA serial of the zone served now",
                &self.serial,
            ),
            (
                "dns_zone_rrsets",
                "RRsets in the zone served now",
                &self.rrsets,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    fn transport(protocol: Protocol) -> usize {
        match protocol {
            Protocol::Udp => 0,
            _ => 1,
        }
    }

    pub(super) fn answered(&self, protocol: Protocol, info: &ResponseInfo) {
        let code = u16::from(info.response_code);
        let named = match info.response_code {
            ResponseCode::BADVERS => Some("BADVERS"),
            ResponseCode::NotAuth => Some("NOTAUTH"),
            _ => None,
        };
        match named {
            Some(rcode) => {
                let transport = ["udp", "tcp"][Self::transport(protocol)];
                self.queries
                    .get_or_create(&QueryLabels { transport, rcode })
                    .inc();
            }
            None => {
                self.by_code[Self::transport(protocol)][rcode_index(code)].inc();
            }
        }
        if info.truncation {
            self.truncated.inc();
        }
    }

    /// One response of the fast path.
    pub(super) fn answered_fast(&self, protocol: Protocol, rcode: u8, truncated: bool) {
        self.by_code[Self::transport(protocol)][rcode_index(u16::from(rcode))].inc();
        if truncated {
            self.truncated.inc();
        }
    }

    pub(super) fn transferred(&self, incremental: bool) {
        let kind = if incremental { "ixfr" } else { "axfr" };
        self.transfers.get_or_create(&TransferLabels { kind }).inc();
    }

    pub(super) fn notified(&self, acknowledged: bool) {
        let result = if acknowledged {
            "acknowledged"
        } else {
            "failed"
        };
        self.notifies.get_or_create(&ResultLabels { result }).inc();
    }
}
