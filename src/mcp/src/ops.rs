//! What a sandbox tool does, apart from how it is called: paths as the sandbox sees them, the
//! commands that list and delete, and the text a model reads of a command's end. Shared by the
//! MCP server's tools and the agent loop's, so that both speak of a sandbox the same way.

use luminaguard_core::SandboxId;
use luminaguard_front::{Front, FrontError};
use luminaguard_service::{ExecOptions, ExecOutput, ExitReport};

use crate::bounded::Bounded;
use crate::tools::{CommandResult, Entry};

/// Runs `opts` in sandbox `id` (feeding it `stdin`, then closing it), keeping at most `limit`
/// bytes of each of stdout and stderr (head and tail); `seen` is told the size of each piece
/// of output as it arrives.
pub async fn run_bounded(
    front: &Front,
    id: &SandboxId,
    mut opts: ExecOptions,
    stdin: Option<Vec<u8>>,
    limit: usize,
    seen: &(dyn Fn(usize) + Sync),
) -> Result<(ExitReport, Bounded, Bounded), FrontError> {
    opts.stdin = stdin.is_some();
    let mut stdin = stdin;
    let mut exec = front.exec(id, opts).await?;
    let (mut out, mut err) = (Bounded::new(limit), Bounded::new(limit));
    loop {
        match exec.next().await? {
            Some(ExecOutput::Started { .. }) => {
                if let Some(data) = stdin.take() {
                    exec.write_stdin(&data).await?;
                    exec.close_stdin().await?;
                }
            }
            Some(ExecOutput::Stdout(b)) => {
                seen(b.len());
                out.push(&b);
            }
            Some(ExecOutput::Stderr(b)) => {
                seen(b.len());
                err.push(&b);
            }
            Some(ExecOutput::Exit(report)) => return Ok((report, out, err)),
            None => {
                return Err(FrontError::Protocol(
                    "the command's output ended without its exit status".into(),
                ));
            }
        }
    }
}

/// A front's error as a tool's failure says it: its code first, then the whole chain
/// ("forbidden: starting the sandbox: denied by policy: …").
pub fn error_text(e: &FrontError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    match e.code() {
        Some(code) => format!("{code}: {text}"),
        None => text,
    }
}

/// The most entries a listing gives.
pub const MAX_ENTRIES: usize = 10_000;

/// A path as the sandbox sees it: relative ones are under /workspace.
pub fn in_sandbox(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/workspace/{path}")
    }
}

/// The command a delete of `path` is sent as.
pub fn delete_argv(path: &str) -> Vec<String> {
    vec!["rm".to_owned(), "--".to_owned(), path.to_owned()]
}

/// The command that lists directory `path`: `find` prints each entry as "kind size mode name"
/// ending in a NUL byte (a name may hold any byte but NUL and '/').
pub fn list_argv(path: &str) -> Vec<String> {
    [
        "find",
        path,
        "-mindepth",
        "1",
        "-maxdepth",
        "1",
        "-printf",
        "%y %s %m %f\\0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The entries of [`list_argv`]'s output (`cut`: the output was truncated), sorted by name, at
/// most [`MAX_ENTRIES`]; and whether some were left out.
pub fn parse_listing(raw: &str, cut: bool) -> (Vec<Entry>, bool) {
    let mut entries: Vec<Entry> = raw
        .split('\0')
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (kind, size, mode, name) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some(Entry {
                name: name.to_owned(),
                kind: match kind {
                    "f" => "file",
                    "d" => "dir",
                    "l" => "symlink",
                    _ => "other",
                }
                .to_owned(),
                size: size.parse().unwrap_or(0),
                mode: mode.to_owned(),
            })
        })
        .collect();
    let truncated = cut || entries.len() > MAX_ENTRIES;
    if truncated {
        // The entry cut by the marker is not listed.
        entries.retain(|e| !e.name.contains("[... "));
    }
    entries.truncate(MAX_ENTRIES);
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    (entries, truncated)
}

/// A listing as a person (or model) reads it.
pub fn render_listing(path: &str, entries: &[Entry], truncated: bool) -> String {
    let mut text = entries
        .iter()
        .map(|e| format!("{:<7} {:>5} {:>10}  {}", e.kind, e.mode, e.size, e.name))
        .collect::<Vec<_>>()
        .join("\n");
    if entries.is_empty() {
        text = format!("{path} is empty");
    }
    if truncated {
        text.push_str("\n(more entries than listed)");
    }
    text
}

/// The approvals a call met, as a line to append (empty when none).
pub fn approvals_line(approvals: &[String]) -> String {
    if approvals.is_empty() {
        String::new()
    } else {
        format!("\napprovals: {}", approvals.join("; "))
    }
}

/// A command's end as a tool gives it back: its status and bounded output.
pub fn command_result(
    report: &ExitReport,
    out: &Bounded,
    err: &Bounded,
    sandbox: &SandboxId,
    approvals: Vec<String>,
) -> CommandResult {
    CommandResult {
        exit_code: report.code,
        signal: report.signal,
        truncated: out.truncated() || err.truncated() || report.output_truncated,
        stdout: out.text(),
        stderr: err.text(),
        timed_out: report.timed_out,
        duration_ms: report.duration_ms,
        sandbox_id: sandbox.to_string(),
        approvals,
    }
}

/// A command's end as text: its status, what the sandbox refused, its output.
pub fn render_command(r: &CommandResult, report: &ExitReport) -> String {
    let mut t = String::new();
    match (r.exit_code, r.signal) {
        (Some(c), _) => t.push_str(&format!("exit code {c}")),
        (None, Some(s)) => t.push_str(&format!("killed by signal {s}")),
        (None, None) => t.push_str("no exit status"),
    }
    if r.timed_out {
        t.push_str(" (timed out)");
    }
    if report.oom_killed {
        t.push_str(" (out of memory)");
    }
    if let Some(e) = &report.error {
        t.push_str(&format!(": {e}"));
    }
    t.push_str(&format!(" in {} ms", r.duration_ms));
    if !report.seccomp_denied.is_empty() {
        let calls: Vec<String> = report
            .seccomp_denied
            .iter()
            .map(|(c, n)| format!("{c} ×{n}"))
            .collect();
        t.push_str(&format!("; system calls refused: {}", calls.join(", ")));
    }
    if !r.stdout.is_empty() {
        t.push_str(&format!("\n--- stdout ---\n{}", r.stdout));
    }
    if !r.stderr.is_empty() {
        t.push_str(&format!("\n--- stderr ---\n{}", r.stderr));
    }
    if r.truncated {
        t.push_str("\n(output truncated: the middle was dropped)");
    }
    t.push_str(&approvals_line(&r.approvals));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_under_the_workspace() {
        assert_eq!(in_sandbox("a/b"), "/workspace/a/b");
        assert_eq!(in_sandbox("/etc/x"), "/etc/x");
    }

    #[test]
    fn a_listing_parses_odd_names_and_drops_the_cut_one() {
        let raw = "f 3 644 b c\0d 4096 755 a\0f 1 600 x[... 9 bytes";
        let (entries, truncated) = parse_listing(raw, true);
        assert!(truncated);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b c"]);
        assert_eq!(entries[0].kind, "dir");
    }
}
