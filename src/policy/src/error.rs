//! Errors of loading a policy.

use crate::lint::Problem;

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy has problems (see [`lint`](crate::lint())); it is refused as a whole.
    #[error("policy {origin} is invalid ({} problem(s)):\n{}", problems.len(), list(problems))]
    Invalid {
        /// The file or preset.
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Neither a preset nor an existing file.
    #[error("no policy preset or file named `{name}` (presets: strict, default, permissive)")]
    NotFound {
        /// The name given.
        name: String,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl PolicyError {
    /// A stable machine code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Invalid { .. } => "policy_invalid",
            PolicyError::Read { .. } => "policy_unreadable",
            PolicyError::NotFound { .. } => "policy_not_found",
        }
    }

    /// The problems, for an invalid policy.
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}
