//! Compiled rules and their matchers: `exec`/`program` argv patterns, `write`/`delete` path
//! globs, `net` destinations and `mcp` tool calls.

use std::ops::Range;

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use ipnet::IpNet;

use crate::classify::{Cmd, Prog};
use crate::decision::{Risk, Verdict};
use crate::file::RawRule;
use crate::pattern::{self, Atom, Elem, Fit};

/// One rule, ready to match.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: Option<String>,
    /// Line of its `[[rule]]` header.
    pub line: usize,
    pub verdict: Verdict,
    pub risk: Risk,
    pub reason: String,
    pub outside: bool,
    pub matcher: Matcher,
    /// The matcher's canonical text: equal for rules that match the same actions.
    pub canonical: String,
}

/// What a rule matches.
#[derive(Debug)]
pub(crate) enum Matcher {
    Exec(ExecPat),
    Write(PathPat),
    Delete(PathPat),
    Net(Vec<NetPat>),
    Mcp(McpPat),
}

/// A problem found while compiling: the byte span it is about, and the message.
pub(crate) type Problem = (Range<usize>, String);

/// An argv pattern: alternatives for the program, then argument elements.
#[derive(Debug)]
pub(crate) struct ExecPat {
    program: Vec<(String, Atom)>,
    args: Vec<Elem>,
}

impl ExecPat {
    fn compile(elems: &[String], span: &Range<usize>, problems: &mut Vec<Problem>) -> Option<Self> {
        let Some((first, rest)) = elems.split_first() else {
            problems.push((
                span.clone(),
                "an empty pattern: name the program first".into(),
            ));
            return None;
        };
        if first == "**" || first.is_empty() {
            let msg =
                format!("`{first}` in the program position: name the program, or `*` for any");
            problems.push((span.clone(), msg));
            return None;
        }
        let mut program = Vec::new();
        let alts: Vec<&str> = if first.starts_with("re:") {
            vec![first]
        } else {
            first.split('|').collect()
        };
        for alt in alts {
            // `*` here is any program name (a glob), not "one word".
            match Elem::parse(if alt == "*" { "?*" } else { alt }) {
                Ok(Elem::Alts(mut a)) if a.len() == 1 => {
                    program.push((alt.to_owned(), a.remove(0)))
                }
                Ok(_) => problems.push((span.clone(), format!("`{alt}` in the program position"))),
                Err(e) => problems.push((span.clone(), e)),
            }
        }
        let mut args = Vec::new();
        for e in rest {
            match Elem::parse(e) {
                Ok(p) => args.push(p),
                Err(msg) => problems.push((span.clone(), msg)),
            }
        }
        Some(ExecPat { program, args })
    }

    /// How well this pattern fits a command.
    pub(crate) fn fit(&self, cmd: &Cmd) -> Fit {
        let traversal = cmd.given.starts_with("../") || cmd.given.contains("/../");
        let prog_ok = self.program.iter().any(|(src, atom)| match &cmd.prog {
            Prog::Name(n) if !src.contains('/') => atom.is_match(n),
            Prog::Name(_) | Prog::Path(_) if src.contains('/') && !traversal => {
                atom.is_match(&cmd.given)
            }
            _ => false,
        });
        if !prog_ok {
            return Fit::No;
        }
        pattern::fit_args(&self.args, &cmd.args)
    }

    /// Whether the pattern names this argv explicitly enough to allow a script run: it
    /// constrains an argument, or names the program by path.
    pub(crate) fn explicit(&self) -> bool {
        self.args.iter().any(|e| !matches!(e, Elem::Rest))
            || self.program.iter().any(|(s, _)| s.contains('/'))
    }

    /// The literal program names this pattern can match, for the index; `None` if it has an
    /// alternative that is a glob, a regex or a path.
    pub(crate) fn index_names(&self) -> Option<Vec<&str>> {
        self.program
            .iter()
            .map(|(src, a)| if src.contains('/') { None } else { a.literal() })
            .collect()
    }
}

/// A set of path globs (`.git/**`, `**/*.lock`, `/etc/**`): `*` stays within one path component.
#[derive(Debug)]
pub(crate) struct PathPat(GlobSet);

impl PathPat {
    fn compile(globs: &[String], span: &Range<usize>, problems: &mut Vec<Problem>) -> Option<Self> {
        if globs.is_empty() {
            problems.push((span.clone(), "an empty list of paths".into()));
            return None;
        }
        let mut set = GlobSetBuilder::new();
        for g in globs {
            match GlobBuilder::new(g).literal_separator(true).build() {
                Ok(g) => {
                    set.add(g);
                }
                Err(e) => problems.push((span.clone(), format!("invalid path glob `{g}`: {e}"))),
            }
        }
        match set.build() {
            Ok(s) => Some(PathPat(s)),
            Err(e) => {
                problems.push((span.clone(), format!("invalid path globs: {e}")));
                None
            }
        }
    }

    pub(crate) fn is_match(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

/// A network destination: a domain glob or an address range, and optionally a port.
#[derive(Debug)]
pub(crate) struct NetPat {
    host: HostPat,
    port: Option<u16>,
}

#[derive(Debug)]
enum HostPat {
    Range(IpNet),
    Name(GlobMatcher),
}

/// Splits `host:port`, `[v6]:port`, `v6` or `host` into host and optional port text.
pub(crate) fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((h, after)) = rest.split_once(']')
    {
        return (h, after.strip_prefix(':'));
    }
    match s.matches(':').count() {
        1 => s.split_once(':').map_or((s, None), |(h, p)| (h, Some(p))),
        _ => (s, None),
    }
}

impl NetPat {
    fn compile(s: &str) -> Result<Self, String> {
        let (host, port) = split_host_port(s);
        let port = match port {
            None | Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("invalid port in `{s}`"))?,
            ),
        };
        let host = if let Ok(net) = host.parse::<IpNet>() {
            HostPat::Range(net)
        } else if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            HostPat::Range(IpNet::from(ip))
        } else if host.is_empty() || host.contains('/') {
            return Err(format!(
                "invalid host in `{s}`: a domain glob, an address or a CIDR range"
            ));
        } else {
            let g = Glob::new(&host.to_ascii_lowercase())
                .map_err(|e| format!("invalid host glob `{host}`: {e}"))?;
            HostPat::Name(g.compile_matcher())
        };
        Ok(NetPat { host, port })
    }

    pub(crate) fn is_match(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match (&self.host, host.parse::<std::net::IpAddr>()) {
            (HostPat::Range(net), Ok(ip)) => net.contains(&ip),
            (HostPat::Range(_), Err(_)) => false,
            (HostPat::Name(g), _) => g.is_match(host.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

/// An MCP tool call: server and tool globs, and globs over arguments picked by JSON pointer.
#[derive(Debug)]
pub(crate) struct McpPat {
    server: Option<GlobMatcher>,
    tool: Option<GlobMatcher>,
    args: Vec<(String, GlobMatcher)>,
}

impl McpPat {
    pub(crate) fn is_match(&self, server: &str, tool: &str, arguments: &serde_json::Value) -> bool {
        self.server.as_ref().is_none_or(|g| g.is_match(server))
            && self.tool.as_ref().is_none_or(|g| g.is_match(tool))
            && self
                .args
                .iter()
                .all(|(ptr, g)| match arguments.pointer(ptr) {
                    Some(serde_json::Value::String(s)) => g.is_match(s),
                    Some(v) => g.is_match(v.to_string()),
                    None => false,
                })
    }
}

fn word_glob(
    s: &str,
    what: &str,
    span: &Range<usize>,
    problems: &mut Vec<Problem>,
) -> Option<GlobMatcher> {
    match GlobBuilder::new(s).literal_separator(false).build() {
        Ok(g) => Some(g.compile_matcher()),
        Err(e) => {
            problems.push((span.clone(), format!("invalid {what} glob `{s}`: {e}")));
            None
        }
    }
}

/// Compiles one raw rule; problems are pushed with their spans.
pub(crate) fn compile(
    raw: &RawRule,
    line: usize,
    span: &Range<usize>,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let before = problems.len();
    let verdict = Verdict::parse(raw.decision.get_ref());
    if verdict.is_none() {
        let msg = format!(
            "unknown decision `{}`: use allow, ask or deny",
            raw.decision.get_ref()
        );
        problems.push((raw.decision.span(), msg));
    }
    let risk = match &raw.risk {
        None => None,
        Some(r) => match Risk::parse(r.get_ref()) {
            Some(r) => Some(r),
            None => {
                let msg = format!(
                    "unknown risk `{}`: use low, medium, high or critical",
                    r.get_ref()
                );
                problems.push((r.span(), msg));
                None
            }
        },
    };
    let kinds: Vec<&str> = [
        ("exec", raw.exec.is_some()),
        ("program", raw.program.is_some()),
        ("write", raw.write.is_some()),
        ("delete", raw.delete.is_some()),
        ("net", raw.net.is_some()),
        ("mcp", raw.mcp.is_some()),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| *k)
    .collect();
    let matcher = match kinds.as_slice() {
        [] => {
            problems.push((
                span.clone(),
                "a rule without a matcher: give one of exec, program, write, delete, net, mcp"
                    .into(),
            ));
            None
        }
        [_] => compile_matcher(raw, problems),
        many => {
            let msg = format!(
                "a rule with {} matchers ({}): give one per rule",
                many.len(),
                many.join(", ")
            );
            problems.push((span.clone(), msg));
            None
        }
    };
    let (verdict, (matcher, canonical)) = (verdict?, matcher?);
    if problems.len() > before {
        return None;
    }
    Some(Rule {
        id: raw.id.clone(),
        line,
        verdict,
        risk: risk.unwrap_or(Risk::for_verdict(verdict)),
        reason: raw.reason.clone().unwrap_or_else(|| match &raw.id {
            Some(id) => id.replace(['-', '_'], " "),
            None => format!("{} by policy", verdict.as_str()),
        }),
        outside: raw.outside,
        matcher,
        canonical,
    })
}

fn compile_matcher(raw: &RawRule, problems: &mut Vec<Problem>) -> Option<(Matcher, String)> {
    if let Some(e) = &raw.exec {
        let p = ExecPat::compile(e.get_ref(), &e.span(), problems)?;
        return Some((
            Matcher::Exec(p),
            format!("exec {}", pattern::canonical(e.get_ref())),
        ));
    }
    if let Some(progs) = &raw.program {
        let elems = vec![progs.get_ref().join("|"), "**".to_owned()];
        if progs.get_ref().is_empty() {
            problems.push((progs.span(), "an empty list of programs".into()));
            return None;
        }
        let p = ExecPat::compile(&elems, &progs.span(), problems)?;
        return Some((
            Matcher::Exec(p),
            format!("exec {}", pattern::canonical(&elems)),
        ));
    }
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v.join(" ")
    };
    if let Some(w) = &raw.write {
        let p = PathPat::compile(w.get_ref(), &w.span(), problems)?;
        return Some((Matcher::Write(p), format!("write {}", sorted(w.get_ref()))));
    }
    if let Some(d) = &raw.delete {
        let p = PathPat::compile(d.get_ref(), &d.span(), problems)?;
        return Some((
            Matcher::Delete(p),
            format!("delete {}", sorted(d.get_ref())),
        ));
    }
    if let Some(n) = &raw.net {
        if n.get_ref().is_empty() {
            problems.push((n.span(), "an empty list of destinations".into()));
            return None;
        }
        let mut pats = Vec::new();
        for s in n.get_ref() {
            match NetPat::compile(s) {
                Ok(p) => pats.push(p),
                Err(e) => problems.push((n.span(), e)),
            }
        }
        return Some((Matcher::Net(pats), format!("net {}", sorted(n.get_ref()))));
    }
    let m = raw.mcp.as_ref()?;
    let (span, r) = (m.span(), m.get_ref());
    let server = r
        .server
        .as_deref()
        .and_then(|s| word_glob(s, "server", &span, problems));
    let tool = r
        .tool
        .as_deref()
        .and_then(|s| word_glob(s, "tool", &span, problems));
    let mut args = Vec::new();
    for (ptr, g) in &r.args {
        if !ptr.starts_with('/') {
            problems.push((
                span.clone(),
                format!("argument `{ptr}` is not a JSON pointer (start it with `/`)"),
            ));
        }
        if let Some(g) = word_glob(g, "argument", &span, problems) {
            args.push((ptr.clone(), g));
        }
    }
    let canonical = format!(
        "mcp {} {} {:?}",
        r.server.as_deref().unwrap_or("*"),
        r.tool.as_deref().unwrap_or("*"),
        r.args
    );
    Some((Matcher::Mcp(McpPat { server, tool, args }), canonical))
}
