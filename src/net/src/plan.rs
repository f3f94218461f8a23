//! A network policy compiled into the firewall's ordered stages.
//!
//! Order (first match decides; [`FirewallPlan::verdict`] and the nftables rendering both walk
//! [`FirewallPlan::stages`], so they cannot disagree):
//!
//! 1. the user's **deny** list — always wins;
//! 2. allow entries that lie *inside* an always-denied range — naming a private address, the
//!    metadata endpoint or a link-local address explicitly is how one reaches it;
//! 3. the **always-denied** ranges: private, shared, loopback, link-local (with the cloud
//!    metadata endpoints), multicast, reserved, v4-mapped/NAT64/6to4 forms of them, and the
//!    host's own addresses — so `0.0.0.0/0` does not open them, and a DNS answer pointing into
//!    them (rebinding) is dropped;
//! 4. the remaining **allow** entries;
//! 5. addresses the LuminaGuard resolver returned for allowed domains (filled at run time);
//! 6. everything else: dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use luminaguard_core::NetworkPolicy;
use luminaguard_core::network::{DomainPattern, EgressRule, Host};

/// Why a policy cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("network policy allows nothing: an egress policy must name at least one destination")]
    Empty,
}

/// One destination matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// Any port of an address range.
    Net(IpNet),
    /// One TCP or UDP port of one address.
    Port(IpAddr, u16),
}

impl Dest {
    pub fn matches(&self, ip: IpAddr, port: Option<u16>) -> bool {
        match *self {
            Self::Net(net) => net.contains(&ip),
            Self::Port(a, p) => a == ip && port == Some(p),
        }
    }

    fn net(&self) -> IpNet {
        match *self {
            Self::Net(n) => n,
            Self::Port(a, _) => IpNet::from(a),
        }
    }
}

/// What a stage does with a packet it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
}

/// The stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    UserDeny,
    NamedException,
    AlwaysDenied,
    Allow,
    Resolved,
}

impl Stage {
    pub const ALL: [Self; 5] = [
        Self::UserDeny,
        Self::NamedException,
        Self::AlwaysDenied,
        Self::Allow,
        Self::Resolved,
    ];

    pub fn action(self) -> Action {
        match self {
            Self::UserDeny | Self::AlwaysDenied => Action::Drop,
            Self::NamedException | Self::Allow | Self::Resolved => Action::Accept,
        }
    }

    /// Short name, used in nftables set names.
    pub fn tag(self) -> &'static str {
        match self {
            Self::UserDeny => "deny",
            Self::NamedException => "named",
            Self::AlwaysDenied => "never",
            Self::Allow => "allow",
            Self::Resolved => "dns",
        }
    }
}

/// A domain the resolver may answer, and the port its answers are opened for (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainAllow {
    pub pattern: DomainPattern,
    pub port: Option<u16>,
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallPlan {
    pub user_deny: Vec<Dest>,
    pub named_exceptions: Vec<Dest>,
    pub always_denied: Vec<IpNet>,
    pub allow: Vec<Dest>,
    /// Domains the resolver answers (their answers fill the `Resolved` stage).
    pub domains: Vec<DomainAllow>,
    /// Domains the resolver refuses even when an allowed pattern matches them.
    pub denied_domains: Vec<DomainPattern>,
}

/// Ranges no sandbox reaches unless an allow entry names a destination inside them.
pub fn always_denied_ranges() -> Vec<IpNet> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16", // link-local, with 169.254.169.254 (cloud metadata)
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",  // v4-mapped: would reach the v4 ranges above
        "64:ff9b::/96",   // NAT64: likewise
        "64:ff9b:1::/48", // local-use NAT64
        "2002::/16",      // 6to4: embeds v4 addresses
        "fc00::/7",       // unique local, with fd00:ec2::254 (cloud metadata)
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

impl FirewallPlan {
    /// Compiles `policy`; `host_addrs` are the host's own addresses (always denied unless named).
    /// `Ok(None)` for [`NetworkPolicy::None`]: no network at all, nothing to filter.
    pub fn compile(
        policy: &NetworkPolicy,
        host_addrs: &[IpAddr],
    ) -> Result<Option<Self>, PlanError> {
        let NetworkPolicy::Egress { allow, deny } = policy else {
            return Ok(None);
        };
        if allow.is_empty() {
            return Err(PlanError::Empty);
        }
        let mut always_denied = always_denied_ranges();
        always_denied.extend(host_addrs.iter().map(|a| IpNet::from(*a)));
        let mut plan = Self {
            user_deny: Vec::new(),
            named_exceptions: Vec::new(),
            always_denied,
            allow: Vec::new(),
            domains: Vec::new(),
            denied_domains: Vec::new(),
        };
        for rule in deny {
            match rule {
                EgressRule::Cidr(net) => plan.user_deny.push(Dest::Net(net.trunc())),
                EgressRule::HostPort {
                    host: Host::Ip(ip),
                    port,
                } => plan.user_deny.push(Dest::Port(*ip, *port)),
                // A denied name is refused by the resolver, whatever port was given.
                EgressRule::HostPort {
                    host: Host::Domain(d),
                    ..
                }
                | EgressRule::Domain(d) => plan.denied_domains.push(d.clone()),
            }
        }
        for rule in allow {
            let dest = match rule {
                EgressRule::Cidr(net) => Dest::Net(net.trunc()),
                EgressRule::HostPort {
                    host: Host::Ip(ip),
                    port,
                } => Dest::Port(*ip, *port),
                EgressRule::HostPort {
                    host: Host::Domain(d),
                    port,
                } => {
                    plan.domains.push(DomainAllow {
                        pattern: d.clone(),
                        port: Some(*port),
                    });
                    continue;
                }
                EgressRule::Domain(d) => {
                    plan.domains.push(DomainAllow {
                        pattern: d.clone(),
                        port: None,
                    });
                    continue;
                }
            };
            // Named explicitly = lies entirely inside an always-denied range.
            let inside = plan
                .always_denied
                .iter()
                .any(|range| range.contains(&dest.net()));
            if inside {
                plan.named_exceptions.push(dest);
            } else {
                plan.allow.push(dest);
            }
        }
        Ok(Some(plan))
    }

    /// The destinations of a stage (the `Resolved` stage is filled at run time: empty here).
    pub fn stage(&self, stage: Stage) -> Vec<Dest> {
        match stage {
            Stage::UserDeny => self.user_deny.clone(),
            Stage::NamedException => self.named_exceptions.clone(),
            Stage::AlwaysDenied => self.always_denied.iter().map(|n| Dest::Net(*n)).collect(),
            Stage::Allow => self.allow.clone(),
            Stage::Resolved => Vec::new(),
        }
    }

    /// What the firewall does with a new connection to `ip` (and TCP/UDP `port`), given the
    /// addresses the resolver has returned so far.
    pub fn verdict(&self, ip: IpAddr, port: Option<u16>, resolved: &[Dest]) -> Action {
        for stage in Stage::ALL {
            let dests = match stage {
                Stage::Resolved => resolved.to_vec(),
                s => self.stage(s),
            };
            if dests.iter().any(|d| d.matches(ip, port)) {
                return stage.action();
            }
        }
        Action::Drop
    }
}

/// Cloud metadata endpoints (for tests and docs).
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn policy(allow: &[&str], deny: &[&str]) -> NetworkPolicy {
        NetworkPolicy::Egress {
            allow: allow.iter().map(|r| r.parse().unwrap()).collect(),
            deny: deny.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn plan(allow: &[&str], deny: &[&str]) -> FirewallPlan {
        FirewallPlan::compile(&policy(allow, deny), &["203.0.113.7".parse().unwrap()])
            .unwrap()
            .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn none_means_no_plan_and_empty_allow_is_refused() {
        assert_eq!(FirewallPlan::compile(&NetworkPolicy::None, &[]), Ok(None));
        assert_eq!(
            FirewallPlan::compile(&policy(&[], &[]), &[]),
            Err(PlanError::Empty)
        );
    }

    #[test]
    fn everything_allowed_still_spares_private_metadata_and_the_host() {
        let p = plan(&["0.0.0.0/0", "::/0"], &[]);
        assert_eq!(
            p.verdict(ip("93.184.216.34"), Some(443), &[]),
            Action::Accept
        );
        for never in [
            "169.254.169.254",
            "fd00:ec2::254",
            "10.1.2.3",
            "192.168.1.1",
            "127.0.0.1",
            "::1",
            "::ffff:10.0.0.1",
            "203.0.113.7", // the host itself
        ] {
            assert_eq!(p.verdict(ip(never), Some(80), &[]), Action::Drop, "{never}");
        }
    }

    #[test]
    fn named_exceptions_open_exactly_what_they_name() {
        let p = plan(&["169.254.169.254:80", "10.9.0.0/16"], &[]);
        assert_eq!(
            p.verdict(IpAddr::V4(METADATA_V4), Some(80), &[]),
            Action::Accept
        );
        assert_eq!(
            p.verdict(IpAddr::V4(METADATA_V4), Some(81), &[]),
            Action::Drop
        );
        assert_eq!(p.verdict(ip("10.9.1.1"), None, &[]), Action::Accept);
        assert_eq!(p.verdict(ip("10.8.1.1"), None, &[]), Action::Drop);
    }

    #[test]
    fn resolved_answers_inside_denied_ranges_are_dropped() {
        let p = plan(&["api.example.com:443"], &[]);
        let rebinding = [Dest::Port(ip("10.0.0.5"), 443)];
        assert_eq!(
            p.verdict(ip("10.0.0.5"), Some(443), &rebinding),
            Action::Drop
        );
        let honest = [Dest::Port(ip("198.51.100.10"), 443)];
        assert_eq!(
            p.verdict(ip("198.51.100.10"), Some(443), &honest),
            Action::Accept
        );
        assert_eq!(
            p.verdict(ip("198.51.100.10"), Some(80), &honest),
            Action::Drop
        );
        assert_eq!(p.domains.len(), 1);
    }

    fn net() -> impl Strategy<Value = IpNet> {
        (any::<u32>(), 0u8..=32).prop_map(|(a, len)| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).unwrap()).trunc()
        })
    }

    proptest! {
        #[test]
        fn deny_always_wins(allow in proptest::collection::vec(net(), 1..5),
                            deny in proptest::collection::vec(net(), 1..5),
                            addr in any::<u32>(), port in any::<u16>()) {
            let a: Vec<String> = allow.iter().map(ToString::to_string).collect();
            let d: Vec<String> = deny.iter().map(ToString::to_string).collect();
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let d: Vec<&str> = d.iter().map(String::as_str).collect();
            let p = plan(&a, &d);
            let target = IpAddr::V4(Ipv4Addr::from(addr));
            if deny.iter().any(|n| n.contains(&target)) {
                prop_assert_eq!(p.verdict(target, Some(port), &[]), Action::Drop);
            }
            // Metadata is reachable only through an allow entry inside 169.254.0.0/16.
            let link_local: IpNet = "169.254.0.0/16".parse().unwrap();
            let named = allow.iter().any(|n| link_local.contains(n) && n.contains(&IpAddr::V4(METADATA_V4)));
            let v = p.verdict(IpAddr::V4(METADATA_V4), Some(80), &[]);
            let denied = deny.iter().any(|n| n.contains(&IpAddr::V4(METADATA_V4)));
            prop_assert_eq!(v == Action::Accept, named && !denied);
        }
    }
}
