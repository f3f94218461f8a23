//! Network policy as written in a sandbox spec. Default: no network at all.
//!
//! This module only *describes* and validates policy; enforcement (namespaces, firewall, DNS
//! pinning) lives with the backends. A policy that would enable networking must say what it
//! allows: an egress policy with an empty allowlist is refused rather than read as "allow all".

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Who may talk to what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NetworkPolicy {
    /// No network: a microVM gets no NIC, a process sandbox only loopback.
    #[default]
    None,
    /// Outbound connections to the allowlisted destinations only; `deny` always wins.
    Egress {
        allow: Vec<EgressRule>,
        #[serde(default)]
        deny: Vec<EgressRule>,
    },
}

impl NetworkPolicy {
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }
}

/// One destination in an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EgressRule {
    /// An address range, `10.1.0.0/16` or a single address.
    Cidr(IpNet),
    /// A host (address or domain) and one port: `1.2.3.4:443`, `api.example.com:443`.
    HostPort { host: Host, port: u16 },
    /// A domain and its resolution, any port; `*.example.com` matches every subdomain.
    Domain(DomainPattern),
}

/// The host part of a [`EgressRule::HostPort`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Domain(DomainPattern),
}

/// A lower-cased DNS name, optionally with a leading `*.` wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    pub wildcard: bool,
    pub name: String,
}

/// Why a rule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("network rule {0:?} is empty")]
    Empty(String),
    #[error("network rule {rule:?} has invalid port {port:?}")]
    BadPort { rule: String, port: String },
    #[error("network rule {rule:?}: {reason}")]
    BadDomain { rule: String, reason: &'static str },
}

impl FromStr for EgressRule {
    type Err = RuleError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(RuleError::Empty(raw.to_owned()));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self::Cidr(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Cidr(IpNet::from(ip)));
        }
        // `[v6]:port`, `v4:port`, `name:port`.
        if let Some((host, port)) = s.rsplit_once(':') {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| RuleError::BadPort {
                    rule: raw.to_owned(),
                    port: port.to_owned(),
                })?;
            let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
            let host = match bracketed.unwrap_or(host).parse::<IpAddr>() {
                Ok(ip) => Host::Ip(ip),
                Err(_) => Host::Domain(DomainPattern::parse(host, raw)?),
            };
            return Ok(Self::HostPort { host, port });
        }
        Ok(Self::Domain(DomainPattern::parse(s, raw)?))
    }
}

impl DomainPattern {
    fn parse(s: &str, rule: &str) -> Result<Self, RuleError> {
        let bad = |reason| RuleError::BadDomain {
            rule: rule.to_owned(),
            reason,
        };
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.len() > 253 {
            return Err(bad("a domain name must be 1 to 253 characters"));
        }
        if name.contains('*') {
            return Err(bad("'*' is only allowed as a leading '*.' wildcard"));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad(
                    "each label of a domain name must be 1 to 63 characters",
                ));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return Err(bad("labels hold letters, digits and inner '-' only"));
            }
        }
        Ok(Self { wildcard, name })
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr(net) => write!(f, "{net}"),
            Self::HostPort {
                host: Host::Ip(IpAddr::V6(ip)),
                port,
            } => write!(f, "[{ip}]:{port}"),
            Self::HostPort {
                host: Host::Ip(ip),
                port,
            } => write!(f, "{ip}:{port}"),
            Self::HostPort {
                host: Host::Domain(d),
                port,
            } => write!(f, "{d}:{port}"),
            Self::Domain(d) => write!(f, "{d}"),
        }
    }
}

impl TryFrom<String> for EgressRule {
    type Error = RuleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<EgressRule> for String {
    fn from(r: EgressRule) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rule_forms() {
        assert_eq!(
            "10.0.0.0/8".parse::<EgressRule>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "1.2.3.4".parse::<EgressRule>().unwrap().to_string(),
            "1.2.3.4/32"
        );
        assert_eq!(
            "1.2.3.4:443".parse::<EgressRule>().unwrap().to_string(),
            "1.2.3.4:443"
        );
        assert_eq!(
            "[::1]:53".parse::<EgressRule>().unwrap().to_string(),
            "[::1]:53"
        );
        assert_eq!(
            "API.Example.com:443"
                .parse::<EgressRule>()
                .unwrap()
                .to_string(),
            "api.example.com:443"
        );
        assert_eq!(
            "*.github.com".parse::<EgressRule>().unwrap().to_string(),
            "*.github.com"
        );
    }

    #[test]
    fn rejects_bad_rules() {
        assert!(matches!("".parse::<EgressRule>(), Err(RuleError::Empty(_))));
        assert!(matches!(
            "a.com:0".parse::<EgressRule>(),
            Err(RuleError::BadPort { .. })
        ));
        assert!(matches!(
            "a.com:99999".parse::<EgressRule>(),
            Err(RuleError::BadPort { .. })
        ));
        assert!(matches!(
            "a.*.com".parse::<EgressRule>(),
            Err(RuleError::BadDomain { .. })
        ));
        assert!(matches!(
            "-a.com".parse::<EgressRule>(),
            Err(RuleError::BadDomain { .. })
        ));
        assert!(matches!(
            "a..com".parse::<EgressRule>(),
            Err(RuleError::BadDomain { .. })
        ));
    }

    #[test]
    fn default_is_no_network() {
        assert!(NetworkPolicy::default().is_none());
    }
}
