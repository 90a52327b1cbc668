//! The operator's DNS zone as data: the record [`model`], its [`config`] (apex,
//! nameservers, the hosts records point at), the zone the SendingDomains ask for
//! ([`desired`]), and the [`diff`] between two zone states. Whoever serves the zone
//! (the embedded server, the RFC2136 sync) builds on these.

pub mod config;
pub mod desired;
pub mod diff;
pub mod guard;
pub mod model;

pub use config::{ZoneConfig, ZoneSettings};
pub use desired::{desired_zone, dkim_text, serves};
pub use diff::{Change, Plan, plan};
pub use guard::{DeleteGuard, Refused};
pub use model::{RData, RecordType, RrKey, RrSet, Soa, TXT_STRING_MAX, Zone, next_serial};

/// Zones and SendingDomains for the tests of everything that serves a zone.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::core::api::{
        DkimStatus, SelectorState, SelectorStatus, SendingDomain, SendingDomainSpec,
        SendingDomainStatus, TrackingSpec,
    };
    use crate::core::naming;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// The zone the tests serve: `dns.anypost.example`, with an in-zone
    /// nameserver's two addresses.
    pub(crate) fn cfg() -> ZoneConfig {
        let mut s = ZoneSettings::new(
            "dns.anypost.example",
            "bounce.anypost.example",
            "spf.anypost.example",
            "track.anypost.example",
        );
        s.nameserver_addresses = vec![
            "ns1.dns.anypost.example=192.0.2.53".into(),
            "ns1.dns.anypost.example=2001:db8::53".into(),
        ];
        ZoneConfig::new(&s).unwrap()
    }

    pub(crate) fn domain(
        ns: &str,
        domain: &str,
        token: &str,
        keys: &[(&str, &str)],
        tracking: bool,
        created: i64,
    ) -> SendingDomain {
        let mut d = SendingDomain::new(
            &domain.replace('.', "-"),
            SendingDomainSpec {
                domain: domain.into(),
                dkim: None,
                tracking: tracking.then(|| TrackingSpec {
                    subdomain: "track".into(),
                }),
            },
        );
        d.metadata.namespace = Some(ns.into());
        d.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        d.status = Some(SendingDomainStatus {
            id: Some(naming::domain_id(token)),
            dkim: Some(DkimStatus {
                secret_name: "x-dkim".into(),
                active_selector: "anypost1".into(),
                selectors: keys
                    .iter()
                    .map(|(name, key)| SelectorStatus {
                        name: name.to_string(),
                        state: SelectorState::Active,
                        public_key: key.to_string(),
                        key_bits: None,
                        created_at: None,
                        retire_at: None,
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        });
        d
    }

    /// `d` as the controller writes it under `trust`: its own id, sealed.
    pub(crate) fn sealed(trust: &crate::core::trust::Trust, mut d: SendingDomain) -> SendingDomain {
        let token = trust.token(&d).unwrap();
        let mut status = d.status.take().unwrap_or_default();
        status.id = Some(naming::domain_id(&token));
        status.seal = trust.seal(&d, &status);
        d.status = Some(status);
        d
    }
}
