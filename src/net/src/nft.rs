//! The firewall plan as one nftables table (family `inet`), applied and removed atomically.
//!
//! The table is meant for a namespace that only this sandbox's traffic crosses (its router
//! namespace), so its base chains can have `policy drop` without touching anyone else:
//!
//! - `forward` (policy drop): established/related pass; new connections arriving from the
//!   sandbox's interface jump to `egress`; nothing else is forwarded — no ingress, ever.
//! - `egress`: one rule per stage and set kind, in [`Stage::ALL`] order, then drop.
//! - `input` / `output` (policy drop): only loopback and established traffic (the resolver's
//!   rules join here when it exists).
//! - `postrouting` (nat): masquerade out of the uplink.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Stdio;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;

use crate::plan::{Action, Dest, FirewallPlan, Stage};

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
        Action::Drop => "drop",
    }
}

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
    let _ = writeln!(s, "  chain egress {{\n{rules}    counter drop\n  }}");
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    \
         ct state established,related accept\n    ct state invalid drop\n    \
         iifname \"{from}\" oifname \"{up}\" ct state new jump egress\n  }}"
    );
    for (chain, dir) in [("input", "iifname"), ("output", "oifname")] {
        let _ = writeln!(
            s,
            "  chain {chain} {{\n    type filter hook {chain} priority filter; policy drop;\n    \
             ct state established,related accept\n    {dir} \"lo\" accept\n  }}"
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

/// Runs `nft -f -` with `script`, inside network namespace `netns` when given (through
/// `ip netns exec`). nft applies a script as one transaction: all of it or nothing.
pub async fn run_script(netns: Option<&str>, table: &str, script: &str) -> Result<(), NftError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = tokio::process::Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let program = if netns.is_some() {
        "ip netns exec … nft"
    } else {
        "nft"
    };
    let spawn = |source| NftError::Spawn { program, source };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(spawn)?;
    }
    let out = child.wait_with_output().await.map_err(spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected {
            table: table.to_owned(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Applies the plan as table `table` (replacing any previous version atomically).
pub async fn apply(
    netns: Option<&str>,
    table: &str,
    plan: &FirewallPlan,
    ifs: &Interfaces<'_>,
) -> Result<(), NftError> {
    run_script(netns, table, &render(table, plan, ifs)).await
}

/// Removes table `table` in one transaction; removing a table that does not exist succeeds.
pub async fn remove(netns: Option<&str>, table: &str) -> Result<(), NftError> {
    let script = format!("add table inet {table}\ndelete table inet {table}\n");
    run_script(netns, table, &script).await
}
