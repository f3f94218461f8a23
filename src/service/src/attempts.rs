//! What a speculative run tried on the network. A preview has no network at all; in the process
//! sandbox, opening an internet socket is refused by the seccomp policy, and the refusal is
//! recorded with the address family — so the card can say that the command tried, how often
//! and as which program. The destination is never known: the socket is refused before any
//! address is given. A microVM guest has no network device during a preview, and its attempts
//! are not recorded.

use std::collections::BTreeMap;

use luminaguard_protocol::message::SeccompAudit;

/// The card's lines about network attempts (empty: none were recorded).
pub(crate) fn lines(audit: &SeccompAudit) -> Vec<String> {
    if !audit.enabled {
        return Vec::new();
    }
    let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for d in &audit.recent {
        if d.syscall == "socket" && d.arg0 != 1 {
            *by.entry((d.comm.clone(), family(d.arg0))).or_default() += 1;
        }
    }
    let total = audit
        .counts
        .iter()
        .find(|(name, _)| name == "socket")
        .map_or(0, |(_, n)| *n);
    let seen: u64 = by.values().sum();
    let mut out: Vec<String> = by
        .into_iter()
        .map(|((comm, fam), n)| format!("{comm}: socket({fam}) ×{n}, refused"))
        .collect();
    if total > seen {
        out.push(format!(
            "{} more socket attempt(s), no longer kept in detail, refused",
            total - seen
        ));
    }
    out
}

fn family(af: u64) -> String {
    match af {
        2 => "AF_INET".into(),
        10 => "AF_INET6".into(),
        16 => "AF_NETLINK".into(),
        17 => "AF_PACKET".into(),
        n => format!("family {n}"),
    }
}

/// The card's text section for `lines`.
pub(crate) fn render(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut t = String::from(
        "Network during the preview (none: nothing left the sandbox; destinations are not \
         known — the socket is refused before an address is given):\n",
    );
    for l in lines {
        t.push_str("    ");
        t.push_str(l);
        t.push('\n');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use luminaguard_protocol::message::SeccompDenial;

    fn denial(comm: &str, syscall: &str, arg0: u64) -> SeccompDenial {
        SeccompDenial {
            unix_ms: 0,
            pid: 2,
            comm: comm.into(),
            syscall: syscall.into(),
            arg0,
        }
    }

    #[test]
    fn internet_sockets_are_counted_by_program_and_family() {
        let audit = SeccompAudit {
            enabled: true,
            recent: vec![
                denial("curl", "socket", 2),
                denial("curl", "socket", 2),
                denial("curl", "socket", 10),
                denial("python3", "socket", 2),
                denial("x", "ptrace", 0),
            ],
            counts: vec![("socket".into(), 6), ("ptrace".into(), 1)],
            dropped: 2,
        };
        assert_eq!(
            lines(&audit),
            [
                "curl: socket(AF_INET) ×2, refused",
                "curl: socket(AF_INET6) ×1, refused",
                "python3: socket(AF_INET) ×1, refused",
                "2 more socket attempt(s), no longer kept in detail, refused",
            ]
        );
        assert!(render(&lines(&audit)).contains("nothing left the sandbox"));
    }

    #[test]
    fn nothing_recorded_says_nothing() {
        let off = SeccompAudit {
            enabled: false,
            recent: vec![denial("curl", "socket", 2)],
            counts: vec![],
            dropped: 0,
        };
        assert!(lines(&off).is_empty());
        assert_eq!(render(&[]), "");
    }
}
