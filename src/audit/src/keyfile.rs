//! The log's signing key on disk: `audit.key` (mode 0600, created on first use) and
//! `audit.pub`, the verifier key in note format beside it.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{AuditError, Result};
use crate::note::{NoteSigner, VerifierKey};

/// The signing key file's name in the audit dir.
pub const KEY_FILE: &str = "audit.key";
/// The verifier key file's name in the audit dir.
pub const PUB_FILE: &str = "audit.pub";

/// Loads the signing key from `dir/audit.key`, creating it (mode 0600) for `name` if missing.
/// Refuses a key file that group or others may access, and one for another name.
#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
pub fn load_or_create(dir: &Path, name: &str) -> Result<NoteSigner> {
    let path = dir.join(KEY_FILE);
    let signer = match load(&path) {
        Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create(&path, name)?
        }
        other => other?,
    };
    if signer.name() != name {
        return Err(AuditError::BadKey {
            what: format!("signing key file {}", path.display()),
            reason: format!(
                "it is for {:?}, the log's origin is {name:?}",
                signer.name()
            ),
        });
    }
    write_pub(&dir.join(PUB_FILE), &signer.verifier())?;
    Ok(signer)
}

/// Creates a new key file atomically: written to a temporary file (mode 0600) and linked into
/// place, so a crash never leaves a half-written key, and a concurrent creator cannot be
/// overwritten.
#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
fn create(path: &Path, name: &str) -> Result<NoteSigner> {
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let signer = NoteSigner::generate(name)?;
    let text = format!("{}\n", signer.to_private_string());
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(|e| AuditError::io("write", &tmp, e))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), key = %signer.verifier(), "created audit signing key");
            Ok(signer)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(AuditError::io("link", path, e)),
    }
}

/// Loads a signing key file, refusing one that group or others may access.
#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
pub fn load(path: &Path) -> Result<NoteSigner> {
    let mut f = std::fs::File::open(path).map_err(|e| AuditError::io("open", path, e))?;
    let mode = f
        .metadata()
        .map_err(|e| AuditError::io("stat", path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(AuditError::KeyPermissions {
            path: path.display().to_string(),
            mode: mode & 0o7777,
        });
    }
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| AuditError::io("read", path, e))?;
    NoteSigner::parse(&text).map_err(|e| match e {
        AuditError::BadKey { reason, .. } => AuditError::BadKey {
            what: format!("signing key file {}", path.display()),
            reason,
        },
        other => other,
    })
}

/// Reads a verifier key file (`audit.pub` or one a third party was given).
#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
pub fn read_verifier(path: &Path) -> Result<VerifierKey> {
    let text = std::fs::read_to_string(path).map_err(|e| AuditError::io("read", path, e))?;
    VerifierKey::parse(text.trim())
}

/// Where the verifier key of the log in `dir` is.
pub fn pub_path(dir: &Path) -> PathBuf {
    dir.join(PUB_FILE)
}

#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
fn write_pub(path: &Path, key: &VerifierKey) -> Result<()> {
    let text = format!("{key}\n");
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| AuditError::io("write", path, e))
}
