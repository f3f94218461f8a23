//! The actions an agent can take, as the sandbox service describes them to the policy.

use serde::{Deserialize, Serialize};

/// One action an agent asks to take inside (or through) its sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Run a program: `argv` exactly as it would reach `execve` (program first).
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// Working directory: absolute in the sandbox, or relative to the workspace. `None` is
        /// the workspace root.
        #[serde(default)]
        cwd: Option<String>,
    },
    /// Create or change a file. `path` is relative to the workspace, or absolute.
    Write {
        /// The file.
        path: String,
    },
    /// Delete a file or directory. `path` is relative to the workspace, or absolute.
    Delete {
        /// The file or directory.
        path: String,
    },
    /// Open a network connection.
    Net {
        /// A domain name or an IP address.
        host: String,
        /// The destination port.
        port: u16,
    },
    /// Call a tool of an MCP server.
    McpCall {
        /// The server's name.
        server: String,
        /// The tool's name.
        tool: String,
        /// The call's arguments.
        #[serde(default)]
        arguments: serde_json::Value,
    },
}

impl Action {
    /// A shorthand for an [`Action::Exec`] in the workspace root.
    pub fn exec<S: AsRef<str>>(argv: &[S]) -> Self {
        Action::Exec {
            argv: argv.iter().map(|s| s.as_ref().to_owned()).collect(),
            cwd: None,
        }
    }

    /// A shorthand for `sh -c SCRIPT` in the workspace root.
    pub fn shell(script: &str) -> Self {
        Action::exec(&["sh", "-c", script])
    }
}
