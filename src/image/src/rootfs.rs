//! The read-only root filesystem of an image: an ext4 file system built from a directory,
//! reproducibly.
//!
//! [`build_ext4`] runs `mkfs.ext4 -d DIR` (e2fsprogs) with everything that would otherwise vary
//! pinned: the file-system UUID and directory hash seed (derived from the tree's digest), the
//! creation time (`E2FSPROGS_FAKE_TIME`, `SOURCE_DATE_EPOCH`: the tree's newest mtime), the root
//! owner, the size (computed from the tree), no journal (the guest mounts it read-only) and no
//! reserved blocks. `mkfs.ext4 -d` copies each file's access and change times from the
//! directory, which differ between two copies of the same tree, so a `debugfs` pass then sets
//! every inode's `atime` and `ctime` to the same fixed time. The same tree (contents, modes,
//! owners, mtimes) thus gives the same bytes.
//!
//! [`scan_tree`] walks the directory once for what the build needs: its digest (the build's
//! input), and the counts that size the file system.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Block size of the file system.
const BLOCK: u64 = 4096;
/// Bytes per inode on disk.
const INODE_SIZE: u64 = 256;
/// The most entries a tree may hold.
const MAX_ENTRIES: u64 = 4_000_000;

/// Why a root filesystem cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Reading the source tree failed.
    #[error("reading rootfs tree {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The tree holds something that cannot go into the image.
    #[error("rootfs tree {path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// A tool could not be started.
    #[error("running {tool} (e2fsprogs; apt-get install e2fsprogs): {source}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    /// A tool failed.
    #[error("{tool} failed building {path} ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// Writing the output failed.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`scan_tree`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSummary {
    /// SHA-256 over every entry's path, type, mode, owner, mtime (ns), size and contents (or link
    /// target, or device number), in path order: the same tree gives the same digest.
    pub digest: Digest,
    /// Entries (the root included).
    pub entries: u64,
    /// Blocks the data needs, rounded up per file.
    pub data_blocks: u64,
    /// The newest mtime in the tree (seconds; 0 for an empty tree).
    pub newest_mtime: u64,
    /// Paths relative to the root (`""` is the root), in path order.
    pub paths: Vec<String>,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Read {
        path: path.to_owned(),
        source,
    }
}

/// Walks `dir` (not following symbolic links) and digests it.
pub fn scan_tree(dir: &Path) -> Result<TreeSummary, RootfsError> {
    let meta = std::fs::symlink_metadata(dir).map_err(read_err(dir))?;
    if !meta.is_dir() {
        return Err(RootfsError::Unsupported {
            path: dir.to_owned(),
            reason: "not a directory".to_owned(),
        });
    }
    let mut hasher = Sha256::new();
    let mut summary = TreeSummary {
        digest: Digest::of(b""),
        entries: 0,
        data_blocks: 0,
        newest_mtime: 0,
        paths: Vec::new(),
    };
    // Depth first, children sorted by name: a deterministic order.
    let mut pending: Vec<String> = vec![String::new()];
    let mut buf = vec![0u8; 1 << 16];
    while let Some(rel) = pending.pop() {
        let path = if rel.is_empty() {
            dir.to_owned()
        } else {
            dir.join(&rel)
        };
        if rel.contains('\n') {
            return Err(RootfsError::Unsupported {
                path,
                reason: "a file name holds a newline".to_owned(),
            });
        }
        let meta = std::fs::symlink_metadata(&path).map_err(read_err(&path))?;
        summary.entries += 1;
        if summary.entries > MAX_ENTRIES {
            return Err(RootfsError::Unsupported {
                path: dir.to_owned(),
                reason: format!("more than {MAX_ENTRIES} entries"),
            });
        }
        summary.newest_mtime = summary
            .newest_mtime
            .max(u64::try_from(meta.mtime()).unwrap_or(0));
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_file() {
            "f"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else if ft.is_fifo() {
            "p"
        } else {
            "s"
        };
        hasher.update(
            format!(
                "{}\0{kind} {:o} {}:{} {}.{:09} {}\0",
                rel,
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.size()
            )
            .as_bytes(),
        );
        if ft.is_file() {
            summary.data_blocks += meta.size().div_ceil(BLOCK);
            let mut file = std::fs::File::open(&path).map_err(read_err(&path))?;
            loop {
                let n = file.read(&mut buf).map_err(read_err(&path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(read_err(&path))?;
            hasher.update(target.as_os_str().as_encoded_bytes());
            if target.as_os_str().len() >= 60 {
                summary.data_blocks += 1;
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            hasher.update(meta.rdev().to_le_bytes());
        } else if ft.is_dir() {
            summary.data_blocks += 1;
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&path).map_err(read_err(&path))? {
                let entry = entry.map_err(read_err(&path))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    return Err(RootfsError::Unsupported {
                        path: entry.path(),
                        reason: "file name is not UTF-8".to_owned(),
                    });
                };
                names.push(name.to_owned());
            }
            summary.data_blocks += (names.len() as u64 * 64).div_ceil(BLOCK);
            names.sort();
            // Reversed onto the stack so that they come off in order.
            for name in names.into_iter().rev() {
                pending.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
        }
        hasher.update(b"\n");
        summary.paths.push(rel);
    }
    summary.digest = Digest::from_hasher(hasher);
    Ok(summary)
}

/// The size of the file system for a tree: its data and inode tables plus a quarter, plus
/// 16 MiB for metadata; a whole number of MiB.
pub fn ext4_size(summary: &TreeSummary) -> u64 {
    let inodes = inode_count(summary);
    let need = summary.data_blocks * BLOCK + inodes * INODE_SIZE;
    let size = need + need / 4 + (16 << 20);
    size.div_ceil(1 << 20) << 20
}

fn inode_count(summary: &TreeSummary) -> u64 {
    summary.entries + summary.entries / 4 + 64
}

/// A UUID string from 16 bytes.
fn uuid(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The file system's UUID and hash seed for a tree digest.
fn uuids(digest: &Digest) -> (String, String) {
    let bytes = Sha256::digest(format!("luminaguard rootfs {digest}").as_bytes());
    (uuid(&bytes[0..16]), uuid(&bytes[16..32]))
}

/// The root filesystem built by [`build_ext4`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Image {
    /// Size of the image file in bytes.
    pub size: u64,
    /// The file system UUID.
    pub uuid: String,
    /// The tree it was built from.
    pub tree: TreeSummary,
}

/// Builds an ext4 image of `dir` at `out` (replacing any file there). The tree is scanned
/// first ([`scan_tree`]); pass a summary already made with `summary` to skip that.
pub fn build_ext4(
    dir: &Path,
    out: &Path,
    summary: Option<TreeSummary>,
) -> Result<Ext4Image, RootfsError> {
    let tree = match summary {
        Some(s) => s,
        None => scan_tree(dir)?,
    };
    let size = ext4_size(&tree);
    let (uuid, hash_seed) = uuids(&tree.digest);
    let epoch = tree.newest_mtime.max(1).to_string();
    match std::fs::remove_file(out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(RootfsError::Write {
                path: out.to_owned(),
                source,
            });
        }
    }
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args([
        "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0",
    ])
    .args(["-O", "^has_journal", "-L", "luminaguard-root"])
    .args(["-N", &inode_count(&tree).to_string()])
    .args(["-U", &uuid])
    .arg("-E")
    .arg(format!(
        "hash_seed={hash_seed},root_owner=0:0,lazy_itable_init=0,nodiscard"
    ))
    .arg("-d")
    .arg(dir)
    .arg(out)
    .arg(format!("{}k", size / 1024));
    run_tool(&mut mkfs, "mkfs.ext4", out, &epoch, None)?;

    // Pin every inode's atime and ctime (copied from the source tree) to the fixed time.
    let mut script = Vec::new();
    for rel in tree.paths.iter().map(String::as_str).chain(["lost+found"]) {
        let quoted = format!("\"/{}\"", rel.replace('"', "\"\""));
        for field in ["atime", "ctime"] {
            writeln!(script, "sif {quoted} {field} @{epoch}").map_err(|source| {
                RootfsError::Write {
                    path: out.to_owned(),
                    source,
                }
            })?;
        }
    }
    let mut debugfs = Command::new("debugfs");
    debugfs.args(["-w", "-f", "-"]).arg(out);
    let stderr = run_tool(&mut debugfs, "debugfs", out, &epoch, Some(&script))?;
    // debugfs reports a failed command on stderr but still exits 0.
    if let Some(line) = stderr
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
    {
        return Err(RootfsError::Unsupported {
            path: out.to_owned(),
            reason: format!("debugfs could not set times: {line}"),
        });
    }
    let size = std::fs::metadata(out).map_err(read_err(out))?.len();
    tracing::debug!(path = %out.display(), size, %uuid, entries = tree.entries, "built ext4 root filesystem");
    Ok(Ext4Image { size, uuid, tree })
}

/// Runs a tool with the fixed time, feeding it `stdin`; returns its stderr (it must succeed).
fn run_tool(
    cmd: &mut Command,
    tool: &'static str,
    out: &Path,
    epoch: &str,
    stdin: Option<&[u8]>,
) -> Result<String, RootfsError> {
    cmd.env("E2FSPROGS_FAKE_TIME", epoch)
        .env("SOURCE_DATE_EPOCH", epoch)
        .env_remove("MKE2FS_CONFIG")
        .env_remove("MKE2FS_SYNC")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|source| RootfsError::Spawn { tool, source })?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // The script is small next to the pipe buffer only for small trees: write it from a
        // thread so that a tool filling stderr first cannot deadlock us.
        let data = data.to_vec();
        let writer = std::thread::spawn(move || pipe.write_all(&data));
        let output = child
            .wait_with_output()
            .map_err(|source| RootfsError::Spawn { tool, source })?;
        match writer.join() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(RootfsError::Write {
                    path: out.to_owned(),
                    source,
                });
            }
            Err(_) => {
                return Err(RootfsError::Unsupported {
                    path: out.to_owned(),
                    reason: format!("the thread feeding {tool} panicked"),
                });
            }
        }
        return check(tool, out, output);
    }
    let output = child
        .wait_with_output()
        .map_err(|source| RootfsError::Spawn { tool, source })?;
    check(tool, out, output)
}

fn check(
    tool: &'static str,
    out: &Path,
    output: std::process::Output,
) -> Result<String, RootfsError> {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(RootfsError::Tool {
            tool,
            path: out.to_owned(),
            status: output.status,
            stderr: stderr.trim().chars().take(2000).collect(),
        });
    }
    Ok(stderr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uuid_format() {
        assert_eq!(
            uuid(&[0x12; 16]),
            "12121212-1212-1212-1212-121212121212".to_owned()
        );
        let (a, b) = uuids(&Digest::of(b"x"));
        assert_ne!(a, b);
        assert_eq!(uuids(&Digest::of(b"x")), (a, b));
    }

    #[test]
    fn tree_digest_sees_content_mode_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"one").unwrap();
        std::os::unix::fs::symlink("d/f", dir.path().join("l")).unwrap();
        let a = scan_tree(dir.path()).unwrap();
        assert_eq!(a.paths, vec!["", "d", "d/f", "l"]);
        assert_eq!(a.entries, 4);
        assert_eq!(scan_tree(dir.path()).unwrap().digest, a.digest);
        // Same size, different contents (mtime kept).
        let f = dir.path().join("d/f");
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, b"two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let b = scan_tree(dir.path()).unwrap();
        assert_ne!(a.digest, b.digest);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(scan_tree(dir.path()).unwrap().digest, b.digest);
        assert!(ext4_size(&a) >= 16 << 20);
    }

    /// A small tree with awkward names, every mtime fixed.
    fn make_tree(dir: &Path) {
        std::fs::create_dir_all(dir.join("d/sub dir")).unwrap();
        std::fs::write(dir.join("d/f"), b"contents").unwrap();
        std::fs::write(dir.join("d/sub dir/q\"uote"), vec![7u8; 10_000]).unwrap();
        // (No symbolic link: std cannot set a link's own mtime, so two copies would differ.)
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let times = std::fs::FileTimes::new().set_modified(t).set_accessed(t);
        for p in ["d/sub dir/q\"uote", "d/f", "d/sub dir", "d", ""] {
            std::fs::File::open(dir.join(p))
                .unwrap()
                .set_times(times)
                .unwrap();
        }
    }

    #[test]
    fn two_copies_of_a_tree_give_identical_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        make_tree(&a);
        make_tree(&b); // created later: other atimes, ctimes and inode numbers
        let ia = build_ext4(&a, &tmp.path().join("a.ext4"), None).unwrap();
        let ib = build_ext4(&b, &tmp.path().join("b.ext4"), None).unwrap();
        assert_eq!(ia.tree.digest, ib.tree.digest);
        assert_eq!(ia.uuid, ib.uuid);
        assert_eq!(ia.size % 4096, 0);
        let bytes_a = std::fs::read(tmp.path().join("a.ext4")).unwrap();
        assert!(bytes_a == std::fs::read(tmp.path().join("b.ext4")).unwrap());
        // Building again over an existing output replaces it.
        build_ext4(&a, &tmp.path().join("a.ext4"), None).unwrap();
        assert!(bytes_a == std::fs::read(tmp.path().join("a.ext4")).unwrap());
        // A clean file system holding the tree.
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(tmp.path().join("a.ext4"))
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        // Another tree, another file system.
        std::fs::write(b.join("d/f"), b"changed!").unwrap();
        let ic = build_ext4(&b, &tmp.path().join("c.ext4"), None).unwrap();
        assert_ne!(ic.uuid, ia.uuid);
    }

    #[test]
    fn refuses_a_file_and_newlines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        assert!(scan_tree(&dir.path().join("f")).is_err());
        std::fs::write(dir.path().join("a\nb"), b"").unwrap();
        let err = scan_tree(dir.path()).unwrap_err();
        assert!(err.to_string().contains("newline"), "{err}");
    }
}
