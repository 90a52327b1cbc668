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

/// Metrics of the embedded server; register them with [`DnsMetrics::register`].
#[derive(Default)]
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    truncated: Counter,
    pub(super) publishes: Counter,
    pub(super) serial: Gauge,
    pub(super) rrsets: Gauge,
}

impl DnsMetrics {
    /// Adds the metrics to `registry` (names prefixed `dns_`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "dns_queries",
            "Queries answered by the embedded DNS server, by transport and response code",
            self.queries.clone(),
        );
        registry.register(
            "dns_truncated",
            "UDP answers sent truncated (the client retries over TCP)",
            self.truncated.clone(),
        );
        registry.register(
            "dns_zone_publishes",
            "Zone contents published (each gets a new SOA serial)",
            self.publishes.clone(),
        );
        registry.register(
            "dns_zone_serial",
            "SOA serial of the zone served now",
            self.serial.clone(),
        );
        registry.register(
            "dns_zone_rrsets",
            "RRsets in the zone served now",
            self.rrsets.clone(),
        );
    }

    pub(super) fn answered(&self, protocol: Protocol, info: &ResponseInfo) {
        let transport = match protocol {
            Protocol::Udp => "udp",
            _ => "tcp",
        };
        let rcode = match info.response_code {
            ResponseCode::NoError => "NOERROR",
            ResponseCode::NXDomain => "NXDOMAIN",
            ResponseCode::Refused => "REFUSED",
            ResponseCode::ServFail => "SERVFAIL",
            ResponseCode::FormErr => "FORMERR",
            ResponseCode::NotImp => "NOTIMP",
            ResponseCode::BADVERS => "BADVERS",
            _ => "OTHER",
        };
        self.queries
            .get_or_create(&QueryLabels { transport, rcode })
            .inc();
        if info.truncation {
            self.truncated.inc();
        }
    }
}
