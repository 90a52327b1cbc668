//! The domain-claim policy: which namespaces may claim which domains.
//!
//! An administrator lists domain suffixes and, for each, the namespaces whose
//! SendingDomains may claim that domain or any name below it. The most specific
//! listed suffix decides; a domain under no listed suffix is allowed to everyone
//! unless `otherDomains: deny`. A claim the policy refuses is not a claim at all:
//! the controller marks it `NotAllowed`, nothing is published for it, and it never
//! stands in the way of an allowed claim, however old it is.
//!
//! ```yaml
//! rules:
//!   - suffix: acme.com
//!     namespaces: [acme, acme-staging]
//!   - suffix: mail.acme.com        # more specific: decides for names below it
//!     namespaces: [acme-mail]
//! otherDomains: allow              # or deny
//! ```

use crate::core::naming::{check_syntax, in_zone};
use serde::Deserialize;

/// What the policy says of domains under no listed suffix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Others {
    #[default]
    Allow,
    Deny,
}

/// One suffix and the namespaces that may claim names at or below it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub suffix: String,
    pub namespaces: Vec<String>,
}

/// The policy. The default (no policy) allows every claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub other_domains: Others,
}

impl Policy {
    /// Reads a policy (YAML), naming the field at fault.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let policy: Policy = if text.trim().is_empty() {
            Policy::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        };
        for (i, rule) in policy.rules.iter().enumerate() {
            // A suffix may be a single label (`com`): check it as a name below it.
            check_syntax(&format!("x.{}", rule.suffix))
                .map_err(|why| format!("rules[{i}].suffix {:?}: {why}", rule.suffix))?;
            if rule.namespaces.is_empty() {
                return Err(format!(
                    "rules[{i}].namespaces is empty: list the namespaces that may claim {}",
                    rule.suffix
                ));
            }
        }
        Ok(policy)
    }

    /// The rules of the most specific listed suffix `domain` is at or below.
    fn deciding(&self, domain: &str) -> Vec<&Rule> {
        let matching = self.rules.iter().filter(|r| in_zone(domain, &r.suffix));
        let longest = matching.clone().map(|r| r.suffix.len()).max();
        matching
            .filter(|r| Some(r.suffix.len()) == longest)
            .collect()
    }

    /// Whether a SendingDomain in `namespace` may claim `domain`.
    pub fn allows(&self, namespace: &str, domain: &str) -> bool {
        let rules = self.deciding(domain);
        if rules.is_empty() {
            return self.other_domains == Others::Allow;
        }
        rules
            .iter()
            .any(|r| r.namespaces.iter().any(|n| n == namespace))
    }

    /// Why a claim is refused, for its condition message (names no other tenant).
    pub fn refusal(&self, namespace: &str, domain: &str) -> String {
        match self.deciding(domain).first() {
            Some(rule) => format!(
                "the domain-claim policy does not allow namespace {namespace} to claim names under {}; nothing is published for this SendingDomain. Ask the operator's administrators to add {namespace} to the rule for {}, or delete this SendingDomain.",
                rule.suffix, rule.suffix
            ),
            None => format!(
                "the domain-claim policy allows claims only for the domains it lists, and {domain} is not under any of them; nothing is published for this SendingDomain. Ask the operator's administrators to add a rule for it."
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "
rules:
  - suffix: acme.com
    namespaces: [acme, acme-staging]
  - suffix: mail.acme.com
    namespaces: [acme-mail]
";

    #[test]
    fn the_most_specific_suffix_decides() {
        let p = Policy::parse(POLICY).unwrap();
        assert!(p.allows("acme", "acme.com"));
        assert!(p.allows("acme-staging", "shop.acme.com"));
        assert!(!p.allows("evil", "acme.com"));
        assert!(!p.allows("evil", "x.acme.com"));
        assert!(p.allows("acme-mail", "mail.acme.com"));
        assert!(p.allows("acme-mail", "eu.mail.acme.com"));
        assert!(!p.allows("acme", "eu.mail.acme.com"));
        // Not below the suffix, only sharing its ending.
        assert!(p.allows("evil", "notacme.com"));
        assert!(p.allows("anyone", "example.org"));
    }

    #[test]
    fn unlisted_domains_follow_other_domains() {
        let p = Policy::parse(&format!("{POLICY}otherDomains: deny\n")).unwrap();
        assert!(!p.allows("acme", "example.org"));
        assert!(p.allows("acme", "acme.com"));
        assert!(
            p.refusal("acme", "example.org")
                .contains("not under any of them")
        );
        assert!(
            p.refusal("evil", "x.acme.com")
                .contains("claim names under acme.com")
        );
    }

    #[test]
    fn no_policy_allows_everything() {
        for text in ["", "  \n", "rules: []\n"] {
            let p = Policy::parse(text).unwrap();
            assert!(p.allows("anyone", "acme.com"), "{text:?}");
        }
        assert!(Policy::parse("rules:\n  - suffix: com\n    namespaces: [a]\n").is_ok());
    }

    #[test]
    fn mistakes_name_the_field() {
        for (text, says) in [
            (
                "rules:\n  - suffix: Acme.com\n    namespaces: [a]\n",
                "rules[0].suffix \"Acme.com\"",
            ),
            (
                "rules:\n  - suffix: acme.com\n    namespaces: []\n",
                "rules[0].namespaces is empty",
            ),
            (
                "rules:\n  - suffix: acme.com\n",
                "missing field `namespaces`",
            ),
            ("rule: []\n", "unknown field `rule`"),
            ("otherDomains: maybe\n", "unknown variant `maybe`"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
