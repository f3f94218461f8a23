//! What the QEMU backend needs from the host: its programs and an image.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use luminaguard_image::store::{Image, Store, StoreError};

/// The QEMU binary the backend runs.
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";
/// The vhost-user vsock device.
pub const VHOST_PROGRAM: &str = "vhost-device-vsock";

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    #[allow(clippy::disallowed_methods)] // one stat per candidate, at start-up
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `name`: `explicit` if given (and then only that: a wrong explicit path is not
/// silently replaced; configured as `host.qemu` / `host.vhost_device_vsock`), else on `PATH`,
/// else in `$CARGO_HOME/bin` or `~/.cargo/bin` (where `scripts/setup-vm` installs
/// vhost-device-vsock). Blocking (a few `stat`s).
pub fn find_program(name: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return is_executable(p).then(|| p.to_owned());
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin"));
    path_dirs
        .into_iter()
        .chain(cargo_bin)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// The newest intact image in `store` (by when it entered the store), if any. Blocking.
pub fn newest_image(store: &Store) -> Result<Option<Image>, StoreError> {
    let mut images: Vec<(SystemTime, Image)> = store
        .list()?
        .into_iter()
        .flatten()
        .map(|image| {
            #[allow(clippy::disallowed_methods)] // blocking by contract
            let when = std::fs::metadata(&image.dir)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (when, image)
        })
        .collect();
    images.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.digest.cmp(&b.1.digest)));
    Ok(images.pop().map(|(_, image)| image))
}

/// The first line of `program --version` (e.g. `QEMU emulator version 7.2.22 (…)`).
pub async fn version(program: &Path) -> Result<String, std::io::Error> {
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{} --version: {}",
            program.display(),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}
