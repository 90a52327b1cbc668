//! The operator's fixed vocabularies, each one enum with its spelling on the wire:
//! condition types and statuses, the reasons it writes, verification failure codes,
//! why a domain is blocked, the DKIM selectors and the Event reasons. A typo is a
//! compile error, every `match` over them is exhaustive, and metric labels built
//! from them stay bounded.

use std::fmt;
use std::ops::{Index, IndexMut};
use std::time::Duration;

/// Declares an enum whose values have one fixed spelling each.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The spelling on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The value spelled `s`, if any.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// The types of `status.conditions`, in the order status lists them.
    ConditionType {
        /// The DKIM keys are stored and their public halves are in status.
        KeysReady => "KeysReady",
        /// The operator's zone serves the domain's records.
        RecordsPublished => "RecordsPublished",
        /// Every required CNAME verifies.
        Verified => "Verified",
        /// The tracking CNAME verifies (never affects Ready).
        TrackingVerified => "TrackingVerified",
        /// A DMARC record is published for the domain (advice: never affects Ready).
        DmarcPublished => "DmarcPublished",
        /// Keys ready, records published, verified: the domain can send.
        Ready => "Ready",
        /// kstatus: the operator is still making the keys or the records, or has
        /// not yet acted on the latest spec.
        Reconciling => "Reconciling",
        /// kstatus: nothing will change without a person: a blocked domain, or a
        /// verified domain whose records are failing (its grace period runs).
        Stalled => "Stalled",
    }
}

vocabulary! {
    /// A condition's status.
    ConditionStatus {
        True => "True",
        False => "False",
        Unknown => "Unknown",
    }
}

vocabulary! {
    /// Why verification fails (`status.verificationFailure.code`), plus the tracking
    /// record's own codes (`status.tracking.failure.code`).
    FailureCode {
        ApexCnameMissing => "apex_cname_missing",
        ApexCnameMismatch => "apex_cname_mismatch",
        DkimCnameMissing => "dkim_cname_missing",
        DkimCnameMismatch => "dkim_cname_mismatch",
        DkimMismatch => "dkim_mismatch",
        ChainBroken => "chain_broken",
        MxMissing => "mx_missing",
        SpfMissing => "spf_missing",
        TrackingCnameMissing => "tracking_cname_missing",
        TrackingCnameMismatch => "tracking_cname_mismatch",
    }
}

impl FailureCode {
    /// The condition reason for this code: the code in CamelCase.
    pub const fn reason(self) -> Reason {
        match self {
            FailureCode::ApexCnameMissing => Reason::ApexCnameMissing,
            FailureCode::ApexCnameMismatch => Reason::ApexCnameMismatch,
            FailureCode::DkimCnameMissing => Reason::DkimCnameMissing,
            FailureCode::DkimCnameMismatch => Reason::DkimCnameMismatch,
            FailureCode::DkimMismatch => Reason::DkimMismatch,
            FailureCode::ChainBroken => Reason::ChainBroken,
            FailureCode::MxMissing => Reason::MxMissing,
            FailureCode::SpfMissing => Reason::SpfMissing,
            FailureCode::TrackingCnameMissing => Reason::TrackingCnameMissing,
            FailureCode::TrackingCnameMismatch => Reason::TrackingCnameMismatch,
        }
    }
}

vocabulary! {
    /// Why nothing is published for a domain: it needs a change to the
    /// SendingDomain, or to another object, before it can be served.
    Block {
        /// `spec.domain` is a public suffix such as `co.uk`.
        PublicSuffix => "PublicSuffix",
        /// `spec.domain` is not a host name (admission should have caught it).
        InvalidDomain => "InvalidDomain",
        /// An older SendingDomain claims the same domain.
        DomainConflict => "DomainConflict",
        /// A Secret the operator did not create holds the DKIM Secret's name.
        SecretConflict => "SecretConflict",
        /// The SendingDomain carries an id made with another identity key.
        IdentityMismatch => "IdentityMismatch",
        /// The domain-claim policy does not allow this namespace this domain.
        NotAllowed => "NotAllowed",
    }
}

/// How often a domain blocked by another object looks again by itself.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

impl Block {
    /// The condition reason for this block.
    pub const fn reason(self) -> Reason {
        match self {
            Block::PublicSuffix => Reason::PublicSuffix,
            Block::InvalidDomain => Reason::InvalidDomain,
            Block::DomainConflict => Reason::DomainConflict,
            Block::SecretConflict => Reason::SecretConflict,
            Block::IdentityMismatch => Reason::IdentityMismatch,
            Block::NotAllowed => Reason::NotAllowed,
        }
    }

    /// When a blocked domain looks again by itself; `None`: only when the
    /// SendingDomain changes. An invalid name is fixed by a change to the
    /// SendingDomain, which triggers a reconcile. A conflict is settled by a change
    /// to another object: the older claim's deletion triggers a reconcile, but that
    /// one may still see the deleted claim in the cache; a foreign Secret in the
    /// way is deleted or labelled without triggering anything. A periodic look
    /// makes both certain.
    pub const fn recheck(self) -> Option<Duration> {
        match self {
            Block::DomainConflict
            | Block::SecretConflict
            | Block::IdentityMismatch
            | Block::NotAllowed => Some(CONFLICT_RECHECK),
            Block::PublicSuffix | Block::InvalidDomain => None,
        }
    }
}

vocabulary! {
    /// Every reason the operator writes into a condition.
    Reason {
        KeysStored => "KeysStored",
        Published => "Published",
        /// The zone does not serve the records yet; they follow status shortly.
        Publishing => "Publishing",
        /// The embedded zone has not loaded the SendingDomains yet.
        ZoneNotLoaded => "ZoneNotLoaded",
        /// The last sync to the RFC2136 server failed.
        SyncFailed => "SyncFailed",
        Verified => "Verified",
        /// Verified, but the records are failing; the domain stays verified for
        /// the grace period.
        GracePeriod => "GracePeriod",
        /// Waiting for the customer's CNAMEs.
        Pending => "Pending",
        NotPublished => "NotPublished",
        NotChecked => "NotChecked",
        /// The resolver gave no usable answer: no evidence either way.
        ResolverError => "ResolverError",
        PublicSuffix => "PublicSuffix",
        InvalidDomain => "InvalidDomain",
        DomainConflict => "DomainConflict",
        SecretConflict => "SecretConflict",
        IdentityMismatch => "IdentityMismatch",
        NotAllowed => "NotAllowed",
        /// The keys or the records are being made (Reconciling=True).
        Progressing => "Progressing",
        /// The operator has done its part (Reconciling=False, Stalled=False).
        UpToDate => "UpToDate",
        /// A DMARC record with a policy is published.
        DmarcFound => "DmarcFound",
        /// No DMARC record is published for the domain.
        DmarcMissing => "DmarcMissing",
        /// A record is published at the DMARC name but does not parse as one.
        DmarcInvalid => "DmarcInvalid",
        ApexCnameMissing => "ApexCnameMissing",
        ApexCnameMismatch => "ApexCnameMismatch",
        DkimCnameMissing => "DkimCnameMissing",
        DkimCnameMismatch => "DkimCnameMismatch",
        DkimMismatch => "DkimMismatch",
        ChainBroken => "ChainBroken",
        MxMissing => "MxMissing",
        SpfMissing => "SpfMissing",
        TrackingCnameMissing => "TrackingCnameMissing",
        TrackingCnameMismatch => "TrackingCnameMismatch",
    }
}

impl Reason {
    /// The block this reason stands for, if it is one.
    pub fn block(self) -> Option<Block> {
        Block::ALL.iter().copied().find(|b| b.reason() == self)
    }
}

vocabulary! {
    /// The reasons of the Events the operator publishes.
    EventReason {
        KeysGenerated => "KeysGenerated",
        KeyRegenerated => "KeyRegenerated",
        Rotated => "Rotated",
        RotationDeferred => "RotationDeferred",
        KeyRetired => "KeyRetired",
        Verified => "Verified",
        VerificationFailing => "VerificationFailing",
        RecordsFailing => "RecordsFailing",
        VerificationLost => "VerificationLost",
        Blocked => "Blocked",
        TrackingVerified => "TrackingVerified",
        TrackingFailing => "TrackingFailing",
        PublishFailed => "PublishFailed",
    }
}

vocabulary! {
    /// The two DKIM selectors, both always published.
    Selector {
        Anypost1 => "anypost1",
        Anypost2 => "anypost2",
    }
}

impl Selector {
    /// Both selectors, in order.
    pub const BOTH: [Selector; 2] = [Selector::Anypost1, Selector::Anypost2];

    /// The other selector.
    pub const fn other(self) -> Selector {
        match self {
            Selector::Anypost1 => Selector::Anypost2,
            Selector::Anypost2 => Selector::Anypost1,
        }
    }

    const fn index(self) -> usize {
        match self {
            Selector::Anypost1 => 0,
            Selector::Anypost2 => 1,
        }
    }

    /// The selector a DKIM record name or target starts with
    /// (`anypost1._domainkey…`), if any.
    pub fn of_name(name: &str) -> Option<Selector> {
        let first = name.split('.').next()?;
        Selector::parse(first).filter(|_| name[first.len()..].starts_with("._domainkey"))
    }
}

/// One value per selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BySelector<T>(pub [T; 2]);

impl<T> BySelector<T> {
    /// Both values, with their selector.
    pub fn iter(&self) -> impl Iterator<Item = (Selector, &T)> {
        Selector::BOTH.into_iter().zip(self.0.iter())
    }

    /// Builds one value per selector.
    pub fn from_fn(mut f: impl FnMut(Selector) -> T) -> Self {
        BySelector(Selector::BOTH.map(&mut f))
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> BySelector<U> {
        BySelector(self.0.map(f))
    }
}

impl<T> Index<Selector> for BySelector<T> {
    type Output = T;
    fn index(&self, s: Selector) -> &T {
        &self.0[s.index()]
    }
}

impl<T> IndexMut<Selector> for BySelector<T> {
    fn index_mut(&mut self, s: Selector) -> &mut T {
        &mut self.0[s.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for c in FailureCode::ALL {
            assert_eq!(FailureCode::parse(c.as_str()), Some(*c));
            // The reason is the code in CamelCase.
            let camel: String = c
                .as_str()
                .split('_')
                .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
                .collect();
            assert_eq!(c.reason().as_str(), camel);
        }
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        for b in Block::ALL {
            assert_eq!(b.reason().block(), Some(*b));
        }
        assert_eq!(Reason::Pending.block(), None);
        assert_eq!(ConditionStatus::parse("True"), Some(ConditionStatus::True));
        assert_eq!(ConditionStatus::parse("true"), None);
    }

    #[test]
    fn selectors() {
        assert_eq!(Selector::Anypost1.other(), Selector::Anypost2);
        assert_eq!(
            Selector::of_name("anypost2._domainkey.mail"),
            Some(Selector::Anypost2)
        );
        assert_eq!(
            Selector::of_name("anypost1._domainkey.abc.dns.example"),
            Some(Selector::Anypost1)
        );
        assert_eq!(Selector::of_name("anypost1.example.com"), None);
        assert_eq!(Selector::of_name("anypost"), None);
        let mut v = BySelector([1, 2]);
        v[Selector::Anypost2] = 5;
        assert_eq!(v[Selector::Anypost1], 1);
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [(Selector::Anypost1, &1), (Selector::Anypost2, &5)]
        );
    }

    #[test]
    fn blocks_recheck_only_when_another_object_decides() {
        assert_eq!(Block::DomainConflict.recheck(), Some(CONFLICT_RECHECK));
        assert_eq!(Block::SecretConflict.recheck(), Some(CONFLICT_RECHECK));
        assert_eq!(Block::PublicSuffix.recheck(), None);
        assert_eq!(Block::InvalidDomain.recheck(), None);
    }
}
