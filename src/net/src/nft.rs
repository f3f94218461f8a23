//! The firewall plan as one nftables table (family `inet`), applied and removed atomically.
//!
//! The table is meant for a namespace that only this sandbox's traffic crosses (its router
//! namespace), so its base chains can have `policy drop` without touching anyone else:
//!
//! - `forward` (policy drop): established/related pass; new connections arriving from the
//!   sandbox's interface jump to `egress`; nothing else is forwarded — no ingress, ever.
//! - `egress`: one rule per stage and set kind, in [`Stage::ALL`] order, then drop.
//! - `input` / `output` (policy drop): only loopback and established traffic — and, when the
//!   policy names domains, DNS from the sandbox to the resolver on the router's inner address.
//! - `postrouting` (nat): masquerade out of the uplink.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::cmd::{CmdError, Netns};

use crate::plan::{Action, Dest, FirewallPlan, Stage};
use crate::resolver_service::PORT as DNS_PORT;
use crate::topology::ROUTER_INNER_ADDR;

/// Why nft refused or could not run.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("nft rejected the ruleset for table {table}: {message}")]
    Rejected { table: String, message: String },
}

/// Interfaces the table refers to.
#[derive(Debug, Clone)]
pub struct Interfaces<'a> {
    /// Where the sandbox's packets enter the filtering namespace.
    pub from_sandbox: &'a str,
    /// Where they leave it towards the world (masqueraded).
    pub uplink: &'a str,
}

fn verdict(a: Action) -> &'static str {
    match a {
        Action::Accept => "accept",
        // Refused, not silently dropped: a program in the sandbox fails at once ("no route to
        // host") instead of waiting out TCP's retries — and learns nothing it did not know.
        Action::Drop => REFUSE,
    }
}

/// What the egress chain does with a connection the policy does not allow.
const REFUSE: &str = "reject with icmpx type admin-prohibited";

/// Address ranges merged (nft refuses overlapping intervals in one set), split by family.
fn nets(dests: &[Dest]) -> (Vec<IpNet>, Vec<IpNet>) {
    let all: Vec<IpNet> = dests
        .iter()
        .filter_map(|d| match d {
            Dest::Net(n) => Some(*n),
            Dest::Port(..) => None,
        })
        .collect();
    IpNet::aggregate(&all)
        .into_iter()
        .partition(|n| matches!(n, IpNet::V4(_)))
}

/// An address and a TCP/UDP port.
type AddrPort = (IpAddr, u16);

fn ports(dests: &[Dest]) -> (Vec<AddrPort>, Vec<AddrPort>) {
    let mut v: Vec<AddrPort> = dests
        .iter()
        .filter_map(|d| match d {
            Dest::Port(a, p) => Some((*a, *p)),
            Dest::Net(_) => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v.into_iter().partition(|(a, _)| a.is_ipv4())
}

fn elements<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = items.iter().map(show).collect();
        format!(" elements = {{ {} }};", list.join(", "))
    }
}

/// The whole table, as an atomic replace: `add` (so that `delete` cannot fail), `delete`, then
/// the definition — one transaction for `nft -f`.
pub fn render(table: &str, plan: &FirewallPlan, ifs: &Interfaces<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "add table inet {table}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    let mut rules = String::new();
    for stage in Stage::ALL {
        let tag = stage.tag();
        let dests = plan.stage(stage);
        let (n4, n6) = nets(&dests);
        let (p4, p6) = ports(&dests);
        // Resolver-filled sets expire their entries; the others are fixed for the sandbox's life.
        let (net_flags, port_flags) = if stage == Stage::Resolved {
            ("flags timeout;", "flags timeout;")
        } else {
            ("flags interval; auto-merge;", "")
        };
        let _ = writeln!(
            s,
            "  set {tag}_net4 {{ type ipv4_addr; {net_flags}{} }}",
            elements(&n4, ToString::to_string)
        );
        let _ = writeln!(
            s,
            "  set {tag}_net6 {{ type ipv6_addr; {net_flags}{} }}",
            elements(&n6, ToString::to_string)
        );
        let _ = writeln!(
            s,
            "  set {tag}_port4 {{ type ipv4_addr . inet_service; {port_flags}{} }}",
            elements(&p4, |(a, p)| format!("{a} . {p}"))
        );
        let _ = writeln!(
            s,
            "  set {tag}_port6 {{ type ipv6_addr . inet_service; {port_flags}{} }}",
            elements(&p6, |(a, p)| format!("{a} . {p}"))
        );
        let v = verdict(stage.action());
        let _ = writeln!(rules, "    ip daddr @{tag}_net4 counter {v}");
        let _ = writeln!(rules, "    ip6 daddr @{tag}_net6 counter {v}");
        let _ = writeln!(
            rules,
            "    meta l4proto {{ tcp, udp }} ip daddr . th dport @{tag}_port4 counter {v}"
        );
        let _ = writeln!(
            rules,
            "    meta l4proto {{ tcp, udp }} ip6 daddr . th dport @{tag}_port6 counter {v}"
        );
    }
    let from = ifs.from_sandbox;
    let up = ifs.uplink;
    let _ = writeln!(s, "  chain egress {{\n{rules}    counter {REFUSE}\n  }}");
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    \
         ct state established,related accept\n    ct state invalid drop\n    \
         iifname \"{from}\" oifname \"{up}\" ct state new jump egress\n  }}"
    );
    // The resolver (when the policy names domains) listens on the router's inner address: the
    // only new connection the sandbox may open to the router namespace itself.
    let dns = if plan.domains.is_empty() && plan.denied_domains.is_empty() {
        String::new()
    } else {
        format!(
            "\n    iifname \"{from}\" ip daddr {ROUTER_INNER_ADDR} meta l4proto {{ tcp, udp }} \
             th dport {DNS_PORT} counter accept"
        )
    };
    for (chain, dir, extra) in [
        ("input", "iifname", dns.as_str()),
        ("output", "oifname", ""),
    ] {
        let _ = writeln!(
            s,
            "  chain {chain} {{\n    type filter hook {chain} priority filter; policy drop;\n    \
             ct state established,related accept\n    {dir} \"lo\" accept{extra}\n  }}"
        );
    }
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         oifname \"{up}\" masquerade\n  }}"
    );
    s.push_str("}\n");
    s
}

/// Runs `nft -f -` with `script` in `netns`. nft applies a script as one transaction: all of it
/// or nothing.
pub async fn run_script(netns: Netns<'_>, table: &str, script: &str) -> Result<(), NftError> {
    crate::cmd::run(netns, "nft", &["-f", "-"], Some(script))
        .await
        .map(drop)
        .map_err(|e| cmd_error(e, table))
}

/// The table every sandbox shares in the uplink namespace (the host's, by default). Created
/// once and kept: sandboxes come and go as elements of its `uplinks` set, so that adding or
/// removing one never registers or unregisters a hook (each costs an RCU grace period) and
/// never grows with the number of sandboxes.
pub const UPLINK_TABLE: &str = "luminaguard";
/// Prefix of every uplink link name (see [`crate::names`]).
const UPLINK_GLOB: &str = "lgu*";

/// The shared uplink table. Its base chains have policy accept — the host's other traffic is
/// none of its business — and act only on sandbox uplink links: nothing enters a link but
/// replies; nothing leaves one but from the router address registered for it (IPv4 only);
/// nothing from one reaches the host itself or another sandbox; and what leaves towards the
/// world is masqueraded.
pub fn uplink_table() -> String {
    format!(
        "table inet {UPLINK_TABLE} {{\n  \
         set uplinks {{ type ifname . ipv4_addr; }}\n  \
         chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         iifname \"{UPLINK_GLOB}\" iifname . ip saddr != @uplinks counter drop\n    \
         iifname \"{UPLINK_GLOB}\" meta nfproto ipv6 counter drop\n    \
         oifname \"{UPLINK_GLOB}\" ct state established,related accept\n    \
         oifname \"{UPLINK_GLOB}\" counter drop\n  }}\n  \
         chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname \"{UPLINK_GLOB}\" ct state established,related accept\n    \
         iifname \"{UPLINK_GLOB}\" counter drop\n  }}\n  \
         chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         iifname \"{UPLINK_GLOB}\" oifname != \"{UPLINK_GLOB}\" masquerade\n  }}\n}}\n"
    )
}

/// Creates the shared uplink table in `netns` unless it is there. Callers serialise (the
/// uplink allocation lock), so check-then-create does not race.
pub async fn ensure_uplink_table(netns: Netns<'_>) -> Result<(), NftError> {
    let listed = crate::cmd::run(netns, "nft", &["-j", "list", "tables"], None)
        .await
        .map_err(|e| cmd_error(e, UPLINK_TABLE))?;
    let tables: serde_json::Value =
        serde_json::from_slice(&listed).map_err(|e| NftError::Rejected {
            table: UPLINK_TABLE.to_owned(),
            message: format!("unreadable `nft -j list tables` output: {e}"),
        })?;
    let present = tables["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["table"]["family"] == "inet" && t["table"]["name"] == UPLINK_TABLE);
    if present {
        return Ok(());
    }
    run_script(netns, UPLINK_TABLE, &uplink_table()).await
}

fn uplink_element(link: &str, router: Ipv4Addr) -> String {
    format!("{{ \"{link}\" . {router} }}")
}

/// Registers uplink `link` with its router's address `router`.
pub async fn add_uplink(netns: Netns<'_>, link: &str, router: Ipv4Addr) -> Result<(), NftError> {
    let script = format!(
        "add element inet {UPLINK_TABLE} uplinks {}\n",
        uplink_element(link, router)
    );
    run_script(netns, UPLINK_TABLE, &script).await
}

/// Unregisters every element of uplink `link` (there is one; after a crash there may be a stale
/// one). Succeeds when none is registered, or the table does not exist.
pub async fn remove_uplink(netns: Netns<'_>, link: &str) -> Result<(), NftError> {
    let script: String = uplinks(netns)
        .await?
        .into_iter()
        .filter(|(l, _)| l == link)
        .map(|(l, a)| {
            format!(
                "delete element inet {UPLINK_TABLE} uplinks {}\n",
                uplink_element(&l, a)
            )
        })
        .collect();
    if script.is_empty() {
        return Ok(());
    }
    run_script(netns, UPLINK_TABLE, &script).await
}

/// The registered uplinks: `(link, router address)`. None when the table does not exist.
pub async fn uplinks(netns: Netns<'_>) -> Result<Vec<(String, Ipv4Addr)>, NftError> {
    let listed = match crate::cmd::run(
        netns,
        "nft",
        &["-j", "list", "set", "inet", UPLINK_TABLE, "uplinks"],
        None,
    )
    .await
    {
        Ok(out) => out,
        Err(CmdError::Failed { message, .. }) if message.contains("No such file") => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(cmd_error(e, UPLINK_TABLE)),
    };
    let v: serde_json::Value = serde_json::from_slice(&listed).map_err(|e| NftError::Rejected {
        table: UPLINK_TABLE.to_owned(),
        message: format!("unreadable set listing: {e}"),
    })?;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for elem in item["set"]["elem"].as_array().into_iter().flatten() {
            let parts = &elem["concat"];
            if let (Some(link), Some(addr)) = (parts[0].as_str(), parts[1].as_str())
                && let Ok(a) = addr.parse()
            {
                out.push((link.to_owned(), a));
            }
        }
    }
    Ok(out)
}

fn cmd_error(e: CmdError, table: &str) -> NftError {
    match e {
        CmdError::Spawn { program, source } => NftError::Spawn { program, source },
        CmdError::Failed { message, .. } => NftError::Rejected {
            table: table.to_owned(),
            message,
        },
    }
}

/// Applies the plan as table `table` (replacing any previous version atomically).
pub async fn apply(
    netns: Netns<'_>,
    table: &str,
    plan: &FirewallPlan,
    ifs: &Interfaces<'_>,
) -> Result<(), NftError> {
    run_script(netns, table, &render(table, plan, ifs)).await
}

/// Removes table `table` in one transaction; removing a table that does not exist succeeds.
pub async fn remove(netns: Netns<'_>, table: &str) -> Result<(), NftError> {
    let script = format!("add table inet {table}\ndelete table inet {table}\n");
    run_script(netns, table, &script).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use luminaguard_core::NetworkPolicy;

    fn rendered(allow: &[&str]) -> String {
        let policy = NetworkPolicy::Egress {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: Vec::new(),
        };
        let plan = FirewallPlan::compile(&policy, &[]).unwrap().unwrap();
        let ifs = Interfaces {
            from_sandbox: "sbx0",
            uplink: "up0",
        };
        render("lgtest", &plan, &ifs)
    }

    fn input_chain(script: &str) -> &str {
        let start = script.find("chain input").unwrap();
        let end = start + script[start..].find("\n  }").unwrap();
        &script[start..end]
    }

    #[test]
    fn dns_to_the_resolver_is_admitted_only_when_the_policy_names_domains() {
        let with = rendered(&["api.example.com:443"]);
        let input = input_chain(&with);
        assert!(
            input.contains(
                "iifname \"sbx0\" ip daddr 10.255.255.1 meta l4proto { tcp, udp } th dport 53 \
                 counter accept"
            ),
            "{input}"
        );
        let without = rendered(&["198.51.100.10:443"]);
        assert!(!input_chain(&without).contains("dport"), "{without}");
    }
}
