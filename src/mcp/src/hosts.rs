//! `luminaguard mcp config HOST`: the exact snippet each MCP host takes to launch
//! `luminaguard mcp serve` — a command line for Claude Code, a JSON file entry for Claude
//! Desktop, Cursor and VS Code, a TOML table for Codex. Each is what that host reads; a test
//! parses every one and launches the command it names.

/// The hosts there is a snippet for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    ClaudeCode,
    ClaudeDesktop,
    Cursor,
    Codex,
    Vscode,
}

impl Host {
    pub const ALL: [Self; 5] = [
        Self::ClaudeCode,
        Self::ClaudeDesktop,
        Self::Cursor,
        Self::Codex,
        Self::Vscode,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::ClaudeDesktop => "claude-desktop",
            Self::Cursor => "cursor",
            Self::Codex => "codex",
            Self::Vscode => "vscode",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }

    /// Where the snippet goes, for the person (printed beside it, not in it).
    pub const fn where_it_goes(self) -> &'static str {
        match self {
            Self::ClaudeCode => "run it in a shell (add `--scope user` for every project)",
            Self::ClaudeDesktop => {
                "merge into claude_desktop_config.json (macOS: ~/Library/Application \
                 Support/Claude/, Linux: ~/.config/Claude/, Windows: %APPDATA%\\Claude\\)"
            }
            Self::Cursor => "merge into ~/.cursor/mcp.json (or .cursor/mcp.json in a project)",
            Self::Codex => "append to ~/.codex/config.toml",
            Self::Vscode => "merge into .vscode/mcp.json in the workspace (or the user mcp.json)",
        }
    }
}

/// The name the server is registered under in every host.
pub const SERVER_NAME: &str = "luminaguard";

/// The snippet for `host` that launches `exe mcp serve ARGS…`.
pub fn snippet(host: Host, exe: &str, serve_args: &[String]) -> String {
    let mut args = vec!["mcp".to_owned(), "serve".to_owned()];
    args.extend(serve_args.iter().cloned());
    match host {
        Host::ClaudeCode => {
            let words: Vec<String> = std::iter::once(exe.to_owned())
                .chain(args)
                .map(|w| luminaguard_core::shell::quote(&w))
                .collect();
            format!("claude mcp add {SERVER_NAME} -- {}\n", words.join(" "))
        }
        Host::ClaudeDesktop | Host::Cursor => pretty(&serde_json::json!({
            "mcpServers": { SERVER_NAME: { "command": exe, "args": args } }
        })),
        Host::Vscode => pretty(&serde_json::json!({
            "servers": { SERVER_NAME: { "type": "stdio", "command": exe, "args": args } }
        })),
        Host::Codex => {
            let quote = |s: &str| toml_string(s);
            format!(
                "[mcp_servers.{SERVER_NAME}]\ncommand = {}\nargs = [{}]\n",
                quote(exe),
                args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// The snippet for `host` that connects to a running `mcp serve --http` at `url` with bearer
/// token `token`; `None` for a host whose configuration file takes no remote server (Claude
/// Desktop adds those as connectors in its settings; Codex is not covered yet).
pub fn http_snippet(host: Host, url: &str, token: &str) -> Option<String> {
    let bearer = format!("Bearer {token}");
    match host {
        Host::ClaudeCode => Some(format!(
            "claude mcp add --transport http {SERVER_NAME} {} --header {}\n",
            luminaguard_core::shell::quote(url),
            luminaguard_core::shell::quote(&format!("Authorization: {bearer}"))
        )),
        Host::Cursor => Some(pretty(&serde_json::json!({
            "mcpServers": { SERVER_NAME: { "url": url, "headers": { "Authorization": bearer } } }
        }))),
        Host::Vscode => Some(pretty(&serde_json::json!({
            "servers": { SERVER_NAME: {
                "type": "http", "url": url, "headers": { "Authorization": bearer } } }
        }))),
        Host::ClaudeDesktop | Host::Codex => None,
    }
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` as one word of a POSIX shell: bare when that is safe, else single-quoted.
#[cfg(test)]
mod tests {
    use super::*;

    const ODD: &str = "/home/me/my \"work\" 'dir'\\x";

    #[test]
    fn json_hosts_carry_the_command_and_args_exactly() {
        for host in [Host::ClaudeDesktop, Host::Cursor, Host::Vscode] {
            let s = snippet(
                host,
                "/usr/bin/luminaguard",
                &["--workspace".into(), ODD.into()],
            );
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            let key = if host == Host::Vscode {
                "servers"
            } else {
                "mcpServers"
            };
            let entry = &v[key][SERVER_NAME];
            assert_eq!(entry["command"], "/usr/bin/luminaguard");
            assert_eq!(
                entry["args"],
                serde_json::json!(["mcp", "serve", "--workspace", ODD])
            );
        }
    }

    #[test]
    fn the_codex_table_is_toml_with_the_same_words() {
        let s = snippet(
            Host::Codex,
            "/opt/lg bin/luminaguard",
            &["--workspace".into(), ODD.into()],
        );
        let v: toml::Table = s.parse().unwrap();
        let t = &v["mcp_servers"][SERVER_NAME];
        assert_eq!(t["command"].as_str(), Some("/opt/lg bin/luminaguard"));
        let args: Vec<&str> = t["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args, ["mcp", "serve", "--workspace", ODD]);
    }

    #[test]
    fn the_claude_code_line_quotes_what_a_shell_would_split() {
        let s = snippet(
            Host::ClaudeCode,
            "/usr/bin/luminaguard",
            &["--workspace".into(), ODD.into()],
        );
        assert!(
            s.starts_with(
                "claude mcp add luminaguard -- /usr/bin/luminaguard mcp serve --workspace '"
            ),
            "{s}"
        );
    }

    #[test]
    fn http_snippets_carry_the_url_and_the_bearer_token() {
        let url = "http://127.0.0.1:8765/mcp";
        let token = "ab'cd";
        for host in [Host::Cursor, Host::Vscode] {
            let v: serde_json::Value =
                serde_json::from_str(&http_snippet(host, url, token).unwrap()).unwrap();
            let key = if host == Host::Vscode {
                "servers"
            } else {
                "mcpServers"
            };
            let entry = &v[key][SERVER_NAME];
            assert_eq!(entry["url"], url);
            assert_eq!(entry["headers"]["Authorization"], "Bearer ab'cd");
            assert_eq!(
                entry["type"],
                if host == Host::Vscode {
                    serde_json::json!("http")
                } else {
                    serde_json::Value::Null
                }
            );
        }
        assert_eq!(
            http_snippet(Host::ClaudeCode, url, token).unwrap(),
            "claude mcp add --transport http luminaguard http://127.0.0.1:8765/mcp --header \
             'Authorization: Bearer ab'\\''cd'\n"
        );
        assert_eq!(http_snippet(Host::ClaudeDesktop, url, token), None);
    }

    #[test]
    fn every_host_has_a_name_that_parses_back() {
        for h in Host::ALL {
            assert_eq!(Host::parse(h.name()), Some(h));
        }
        assert_eq!(Host::parse("emacs"), None);
    }
}
