//! A minimal root tree made of the host's own programs: a root file system for tests and CI
//! that needs no network (a Debian base made with `debootstrap` is the full-size option; see
//! `docs/images.md`).
//!
//! [`assemble`] copies each program (found on `PATH`, symbolic links resolved) to `/bin/<name>`,
//! the shared libraries and ELF interpreter `ldd` lists for it to the paths `ldd` names, and
//! adds `/etc/passwd`, `/etc/group`, `/etc/hostname` and the usual empty directories. Every
//! entry gets the same fixed mtime and no symbolic links are made, so assembling the same host
//! programs twice gives trees with the same [`crate::rootfs::scan_tree`] digest (and so the
//! same image).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Programs a test root holds by default: a POSIX shell and a few basics.
pub const HOST_TOOLS: &[&str] = &[
    "sh",
    "uname",
    "cat",
    "true",
    "false",
    "sleep",
    "ls",
    "mkdir",
    "rm",
    "env",
    "id",
    "head",
    "wc",
    "sha256sum",
    "sync",
];

/// The mtime every entry of the tree gets (2024-01-01T00:00:00Z).
pub const FIXED_MTIME: u64 = 1_704_067_200;

/// Directories every root has, with their modes.
const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("workspace", 0o755),
];

const FILES: &[(&str, &str)] = &[
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ("etc/hostname", "luminaguard\n"),
    (
        "etc/os-release",
        "NAME=\"LuminaGuard host-tools root\"\nID=luminaguard-hostroot\n",
    ),
];

/// Why a host-tools root cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum HostRootError {
    /// A program is not on `PATH`.
    #[error("program {0:?} is not on PATH")]
    NotFound(String),
    /// `ldd` failed on a program.
    #[error("ldd {path}: {reason}")]
    Ldd { path: PathBuf, reason: String },
    /// The target directory is not empty.
    #[error("{0} exists and is not an empty directory")]
    NotEmpty(PathBuf),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HostRootError + 'a {
    move |source| HostRootError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What [`assemble`] put in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    /// The programs, as host paths (symbolic links resolved).
    pub programs: Vec<PathBuf>,
    /// The libraries and interpreters, as paths in the tree (absolute).
    pub libraries: Vec<String>,
}

/// Finds `name` on `PATH` (or `/usr/bin:/bin` without one) and resolves symbolic links.
pub fn which(name: &str) -> Result<PathBuf, HostRootError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .and_then(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(|| HostRootError::NotFound(name.to_owned()))
}

/// The absolute library paths in `ldd` output: `name => /path (addr)` and `/path (addr)`
/// lines; the vDSO (no path) and paths holding `..` are skipped. Empty for a static program.
pub fn parse_ldd(output: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        let candidate = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = candidate.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') && !path.contains("..") {
            paths.push(path.to_owned());
        }
    }
    paths
}

/// The shared libraries and interpreter of `program`, per `ldd`; empty for a static program.
fn libraries_of(program: &Path) -> Result<Vec<String>, HostRootError> {
    let out = Command::new("ldd")
        .arg(program)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| HostRootError::Ldd {
            path: program.to_owned(),
            reason: format!("cannot run ldd: {e}"),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(HostRootError::Ldd {
            path: program.to_owned(),
            reason: format!("{}: {}", out.status, stderr.trim()),
        });
    }
    if let Some(missing) = stdout.lines().find(|l| l.contains("=> not found")) {
        return Err(HostRootError::Ldd {
            path: program.to_owned(),
            reason: format!("missing library: {}", missing.trim()),
        });
    }
    Ok(parse_ldd(&stdout))
}

/// Copies `from` (following links) to `to` with `mode`.
fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), HostRootError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    std::fs::copy(from, to).map_err(|source| HostRootError::Io {
        op: "copying to",
        path: to.to_owned(),
        source: std::io::Error::new(source.kind(), format!("from {}: {source}", from.display())),
    })?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting mode of", to))
}

/// Assembles a root in `dir` (created if missing; it must be empty) from the host programs
/// `tools` (e.g. [`HOST_TOOLS`]).
pub fn assemble(dir: &Path, tools: &[&str]) -> Result<HostRoot, HostRootError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    if std::fs::read_dir(dir)
        .map_err(io("reading", dir))?
        .next()
        .is_some()
    {
        return Err(HostRootError::NotEmpty(dir.to_owned()));
    }
    for (rel, mode) in DIRS {
        let path = dir.join(rel);
        std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(io("setting mode of", &path))?;
    }
    for (rel, text) in FILES {
        let path = dir.join(rel);
        std::fs::write(&path, text).map_err(io("writing", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(io("setting mode of", &path))?;
    }
    let mut programs = Vec::new();
    let mut libraries = BTreeSet::new();
    for name in tools {
        let program = which(name)?;
        copy(&program, &dir.join("bin").join(name), 0o755)?;
        libraries.extend(libraries_of(&program)?);
        programs.push(program);
    }
    for lib in &libraries {
        copy(
            Path::new(lib),
            &dir.join(lib.trim_start_matches('/')),
            0o755,
        )?;
    }
    set_fixed_times(dir)?;
    Ok(HostRoot {
        programs,
        libraries: libraries.into_iter().collect(),
    })
}

/// Sets every entry's mtime (and atime) to [`FIXED_MTIME`], children before their directory.
fn set_fixed_times(dir: &Path) -> Result<(), HostRootError> {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_MTIME);
    let times = std::fs::FileTimes::new()
        .set_modified(time)
        .set_accessed(time);
    let mut all = vec![dir.to_owned()];
    let mut i = 0;
    while let Some(path) = all.get(i).cloned() {
        i += 1;
        if std::fs::symlink_metadata(&path)
            .map_err(io("reading", &path))?
            .is_dir()
        {
            for entry in std::fs::read_dir(&path).map_err(io("reading", &path))? {
                all.push(entry.map_err(io("reading", &path))?.path());
            }
        }
    }
    // Breadth-first order reversed: every entry comes before its parent directory.
    for path in all.iter().rev() {
        std::fs::File::open(path)
            .and_then(|f| f.set_times(times))
            .map_err(io("setting times of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                   \tlibevil.so => /lib/../../etc/shadow (0x1)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn assembles_the_same_tree_twice() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = assemble(a.path(), &["sh", "true"]).unwrap();
        assemble(b.path(), &["sh", "true"]).unwrap();
        assert!(a.path().join("bin/sh").is_file());
        assert!(!first.libraries.is_empty());
        let da = crate::rootfs::scan_tree(a.path()).unwrap();
        let db = crate::rootfs::scan_tree(b.path()).unwrap();
        assert_eq!(da.digest, db.digest);
        assert!(matches!(
            assemble(a.path(), &["sh"]),
            Err(HostRootError::NotEmpty(_))
        ));
        assert!(matches!(
            assemble(&a.path().join("x"), &["no-such-program-lg"]),
            Err(HostRootError::NotFound(_))
        ));
    }
}
