//! Where Firecracker's programs are found — one lookup for the backend, `doctor` and the CLI.

use std::path::{Path, PathBuf};

pub const FIRECRACKER: &str = "firecracker";
pub const JAILER: &str = "jailer";

/// `explicit` if given (configured: `host.firecracker`, `host.jailer`, `host.seccompiler`;
/// and then only that: a wrong explicit path is not silently replaced), else `name` next to
/// `near` (the firecracker binary: a release ships its tools together), else on `PATH` — the
/// first that is a file.
pub async fn find_tool(
    explicit: Option<&Path>,
    name: &str,
    near: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return tokio::fs::metadata(p)
            .await
            .is_ok_and(|m| m.is_file())
            .then(|| p.to_owned());
    }
    let mut candidates: Vec<PathBuf> = near
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    for c in candidates {
        if tokio::fs::metadata(&c).await.is_ok_and(|m| m.is_file()) {
            return Some(c);
        }
    }
    None
}
