//! `luminaguard image build|ls|rm`: guest images for the microVM backends (docs/images.md).
//!
//! Images live in a content-addressed store (`luminaguard_image::store`): `--store DIR`, else
//! `LUMINAGUARD_IMAGE_STORE`, else `/var/lib/luminaguard/images` for root and
//! `$XDG_DATA_HOME/luminaguard/images` (or `~/.local/share/…`) for other users. Everything here
//! is blocking file work and runs before (and without) an async runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use luminaguard_core::Config;
use luminaguard_image::build::{BuildInputs, KernelSource};
use luminaguard_image::hostroot;
use luminaguard_image::include::{Include, Included};
use luminaguard_image::store::{ArtifactKind, Image, Store};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image (kernel, initramfs with the guest agent, read-only root file system)
    /// into the store; prints its digest. Nothing is rebuilt when the same inputs were built.
    Build(BuildArgs),
    /// List the images in the store.
    Ls {
        #[command(flatten)]
        store: StoreArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove images (by digest or a unique prefix of at least 8 hex digits).
    Rm {
        #[command(flatten)]
        store: StoreArg,
        #[arg(required = true, value_name = "DIGEST")]
        digests: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct StoreArg {
    /// Image store directory (default: host.image_store in the configuration, set also by
    /// LUMINAGUARD_IMAGE_STORE; else this user's, under XDG_DATA_HOME or ~/.local/share).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    store: StoreArg,
    /// An unpacked kernel package: boot/vmlinuz-<release> and lib/modules/<release>/ (what
    /// scripts/fetch-guest-kernel prints).
    #[arg(
        long,
        value_name = "DIR",
        env = "LUMINAGUARD_GUEST_KERNEL_DIR",
        required_unless_present = "kernel"
    )]
    kernel_dir: Option<PathBuf>,
    /// A bzImage, instead of --kernel-dir (with --modules).
    #[arg(
        long,
        value_name = "FILE",
        requires = "modules",
        conflicts_with = "kernel_dir"
    )]
    kernel: Option<PathBuf>,
    /// The kernel's module directory (lib/modules/<release>), with --kernel.
    #[arg(long, value_name = "DIR", requires = "kernel")]
    modules: Option<PathBuf>,
    /// Directory that becomes the read-only root file system (e.g. made with `debootstrap
    /// --variant=minbase bookworm DIR`). Default: a minimal root of host programs (sh and a
    /// few basics, with their libraries).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Instead of --rootfs: a Debian base made with debootstrap (minbase plus python3, git and
    /// ca-certificates), kept in the store's `bases/` and reused, so rebuilding gives the same
    /// image. Optional suite (default bookworm). Needs root and debootstrap.
    #[arg(
        long,
        value_name = "SUITE",
        num_args = 0..=1,
        default_missing_value = "bookworm",
        conflicts_with = "rootfs"
    )]
    debian: Option<String>,
    /// With --debian: a Debian package to install into the base besides the defaults
    /// (repeatable; e.g. nodejs). The base is kept per package set: other packages, another
    /// base.
    #[arg(long = "package", value_name = "PKG", requires = "debian")]
    packages: Vec<String>,
    /// Copy a host directory or file into the image's root at AT (repeatable), read-only in the
    /// guest like the rest of the root; e.g. /var/cache/luminaguard/mcp-servers/node:/opt/mcp/node.
    /// Its content is part of the image's inputs. Links are kept as links, modes and mtimes
    /// kept; device files are refused; AT may not be /, nor at, in or above /proc, /sys,
    /// /dev, /run or /workspace, nor below a symbolic link of the root.
    #[arg(long = "include", value_name = "HOST:AT")]
    includes: Vec<Include>,
    /// Debian mirror for --debian.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://deb.debian.org/debian"
    )]
    debian_mirror: String,
    /// The static guest agent (scripts/build-static-agent prints its path).
    #[arg(long, value_name = "PATH", env = "LUMINAGUARD_STATIC_AGENT")]
    agent: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn open_store(arg: &StoreArg, config: &Config) -> anyhow::Result<Store> {
    let root = match arg.store.as_ref().or(config.host.image_store.as_ref()) {
        Some(dir) => dir.clone(),
        None => {
            let env_path = |k: &str| std::env::var_os(k).map(PathBuf::from);
            luminaguard_image::store::default_root(
                nix::unistd::getuid().as_raw(),
                env_path("XDG_DATA_HOME").as_deref(),
                env_path("HOME").as_deref(),
            )
            .context("no image store: set --store, LUMINAGUARD_IMAGE_STORE or HOME")?
        }
    };
    anyhow::ensure!(
        root.is_absolute(),
        "image store {} is not an absolute path",
        root.display()
    );
    Store::open(&root).with_context(|| format!("opening image store {}", root.display()))
}

#[derive(Debug, Serialize)]
struct ImageJson {
    digest: String,
    kernel_release: String,
    dir: PathBuf,
    modules: Vec<String>,
    created_by: String,
    /// Packages added to the Debian base (--package).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    packages: Vec<String>,
    /// What was copied into the root (--include): place and content digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    includes: Vec<Included>,
    /// File name → (sha256, size).
    artifacts: Vec<ArtifactJson>,
}

#[derive(Debug, Serialize)]
struct ArtifactJson {
    file: &'static str,
    path: PathBuf,
    sha256: String,
    size: u64,
}

impl From<&Image> for ImageJson {
    fn from(image: &Image) -> Self {
        let m = &image.manifest;
        Self {
            digest: image.digest.to_string(),
            kernel_release: m.kernel_release.clone(),
            dir: image.dir.clone(),
            modules: m.modules.clone(),
            created_by: m.created_by.clone(),
            packages: m.packages.clone(),
            includes: m.includes.clone(),
            artifacts: m
                .artifacts()
                .into_iter()
                .map(|(kind, a)| ArtifactJson {
                    file: kind.file_name(),
                    path: image.dir.join(kind.file_name()),
                    sha256: a.sha256.to_string(),
                    size: a.size,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct BuildJson {
    #[serde(flatten)]
    image: ImageJson,
    /// An image built from the same inputs was already in the store.
    reused: bool,
    /// Milliseconds per step.
    steps_ms: Vec<(&'static str, u128)>,
}

/// A scratch root of host programs, removed on drop.
struct TempRoot(PathBuf);

impl Drop for TempRoot {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.0.display(), error = %e, "removing temporary root tree");
            }
            _ => {}
        }
    }
}

/// Packages a Debian base gets on top of minbase: what agents' commands most often need.
const DEBIAN_PACKAGES: &str = "python3,git,ca-certificates";

/// The Debian base for `suite`: made once with debootstrap into the store's `bases/`, then
/// reused (a new debootstrap run would differ in timestamps, so reuse is what keeps `image
/// build --debian` idempotent). Blocking, like the rest of `image build`.
#[allow(clippy::disallowed_methods)] // a synchronous CLI command: no async runtime here
fn debian_base(
    store: &Store,
    suite: &str,
    mirror: &str,
    extra: &[String],
) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        !suite.is_empty() && suite.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
        "Debian suite {suite:?} is not a suite name (e.g. bookworm)"
    );
    let bases = store.root().join("bases");
    let base = bases.join(debian_base_name(suite, extra));
    let packages = debian_packages(extra);
    if base.join(".complete").exists() {
        tracing::info!(dir = %base.display(), "image build: reusing the Debian {suite} base");
        return Ok(base.join("root"));
    }
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "--debian needs root (debootstrap creates device nodes and sets ownership)"
    );
    std::fs::create_dir_all(&bases).with_context(|| format!("creating {}", bases.display()))?;
    let work = store
        .root()
        .join("tmp")
        .join(format!("debootstrap-{}-0", std::process::id()));
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let temp = TempRoot(work.clone());
    tracing::info!(%suite, %mirror, "image build: debootstrap (minbase + {packages}); takes minutes");
    let started = std::time::Instant::now();
    run_debootstrap(suite, mirror, &packages, &work.join("root"))?;
    // What the guest never uses and what varies run to run: package caches and logs.
    for junk in ["var/cache/apt/archives", "var/lib/apt/lists", "var/log"] {
        let p = work.join("root").join(junk);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        }
    }
    std::fs::write(work.join("packages"), format!("{packages}\n"))?;
    std::fs::write(work.join(".complete"), b"")?;
    std::fs::rename(&work, &base)
        .with_context(|| format!("moving the base into {}", base.display()))?;
    drop(temp); // moved into place: nothing left to remove
    tracing::info!(elapsed = ?started.elapsed(), dir = %base.display(), "image build: Debian {suite} base ready");
    Ok(base.join("root"))
}

/// Whether `name` is a Debian package name (Debian Policy 5.6.1: lower case letters, digits,
/// `+`, `-`, `.`; at least two characters, starting with a letter or digit).
fn is_debian_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// The extra packages, checked, sorted and without duplicates.
fn extra_packages(given: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for p in given {
        anyhow::ensure!(
            is_debian_package_name(p),
            "--package {p:?} is not a Debian package name (lower case letters, digits, '+', '-', '.')"
        );
        out.push(p.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The base's directory name in `bases/`: keyed by what debootstrap is given. Without extra
/// packages it is `debian-SUITE` (as before); with them, `debian-SUITE+` and the first 16 hex
/// digits of the SHA-256 of the sorted list (suites have no `+`, so no name is two bases').
/// The mirror is not part of the key: a mirror serves the same suite.
fn debian_base_name(suite: &str, extra: &[String]) -> String {
    if extra.is_empty() {
        format!("debian-{suite}")
    } else {
        let key = luminaguard_image::Digest::of(extra.join(",").as_bytes());
        format!("debian-{suite}+{}", &key.as_str()[..16])
    }
}

/// debootstrap's `--include`: the defaults, then the extra packages.
fn debian_packages(extra: &[String]) -> String {
    std::iter::once(DEBIAN_PACKAGES)
        .chain(extra.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs debootstrap, showing on stderr (when it is a terminal) which phase it is in and how many
/// packages each phase has done — its own `I:` lines, counted; it announces no total, so there is
/// no percentage. On failure the error carries the end of its output.
#[allow(clippy::disallowed_methods)] // a synchronous CLI command: no async runtime here
fn run_debootstrap(
    suite: &str,
    mirror: &str,
    packages: &str,
    target: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::{BufRead, Read};
    let mut child = std::process::Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={packages}"), suite])
        .arg(target)
        .arg(mirror)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running debootstrap (install it: apt-get install debootstrap)")?;
    // Drained on its own thread so that neither pipe can fill while the other is read.
    let mut stderr = child.stderr.take().context("debootstrap's stderr")?;
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} debootstrap {prefix}: {msg} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_prefix(suite.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut progress = DebootstrapProgress::default();
    let mut tail = std::collections::VecDeque::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(msg) = progress.update(&line) {
                bar.set_message(msg);
            }
            if tail.len() == 15 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let status = child.wait().context("waiting for debootstrap")?;
    bar.finish_and_clear();
    let errors = errors.join().unwrap_or_default();
    anyhow::ensure!(
        status.success(),
        "debootstrap {suite} failed ({status}):\n{}\n{errors}",
        Vec::from(tail).join("\n")
    );
    Ok(())
}

/// debootstrap's phase and the packages counted in it, from its `I: <Verb>ing <package>` lines.
#[derive(Debug, Default)]
struct DebootstrapProgress {
    phase: String,
    count: usize,
}

impl DebootstrapProgress {
    /// The message to show after `line`, if it changes anything.
    fn update(&mut self, line: &str) -> Option<String> {
        let info = line.strip_prefix("I: ")?;
        let (verb, rest) = info.split_once(' ').unwrap_or((info, ""));
        let per_package = [
            "Retrieving",
            "Validating",
            "Extracting",
            "Unpacking",
            "Configuring",
        ];
        // `Retrieving apt 2.6.1`, `Extracting apt...`; not `Unpacking required packages...` nor
        // `Retrieving InRelease` (package names are lower case).
        let words: Vec<&str> = rest.trim_end_matches("...").split_whitespace().collect();
        let names_a_package = matches!(words.len(), 1 | 2)
            && words.last() != Some(&"packages")
            && words[0].starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        if per_package.contains(&verb) && names_a_package {
            if verb != self.phase {
                self.phase = verb.to_owned();
                self.count = 0;
            }
            self.count += 1;
            Some(format!("{} {} packages", verb.to_lowercase(), self.count))
        } else {
            self.phase.clear();
            Some(info.trim_end().trim_end_matches('.').to_owned())
        }
    }
}

fn build(args: BuildArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store, config)?;
    let kernel = match (&args.kernel_dir, &args.kernel, &args.modules) {
        (_, Some(bzimage), Some(modules)) => KernelSource {
            bzimage: bzimage.clone(),
            modules_dir: modules.clone(),
        },
        (Some(dir), _, _) => KernelSource::from_tree(dir)?,
        _ => anyhow::bail!("give --kernel-dir DIR, or --kernel FILE with --modules DIR"),
    };
    // Default root: host programs, assembled in the store's scratch space (same every time,
    // so the image is found again rather than rebuilt).
    let mut _temp = None;
    let packages = extra_packages(&args.packages)?;
    luminaguard_image::include::validate_all(&args.includes)?;
    let rootfs = match (&args.rootfs, &args.debian) {
        (Some(dir), _) => dir.clone(),
        (None, Some(suite)) => debian_base(&store, suite, &args.debian_mirror, &packages)?,
        (None, None) => {
            let dir = store
                .root()
                .join("tmp")
                .join(format!("hostroot-{}-0", std::process::id()));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing stale {}", dir.display()))?;
            }
            let temp = TempRoot(dir.clone());
            let made = hostroot::assemble(&dir, hostroot::HOST_TOOLS)
                .context("assembling the default root of host programs")?;
            tracing::info!(
                programs = made.programs.len(),
                libraries = made.libraries.len(),
                "image build: root of host programs ({})",
                hostroot::HOST_TOOLS.join(" ")
            );
            _temp = Some(temp);
            dir
        }
    };
    let inputs = BuildInputs {
        kernel,
        agent: args.agent.clone(),
        rootfs,
        includes: args.includes.clone(),
        packages,
        created_by: format!("luminaguard {}", env!("CARGO_PKG_VERSION")),
    };
    let built = luminaguard_image::build::build(&store, &inputs)?;
    if args.json {
        let out = BuildJson {
            image: ImageJson::from(&built.image),
            reused: built.reused,
            steps_ms: built
                .steps
                .iter()
                .map(|(s, d)| (*s, d.as_millis()))
                .collect(),
        };
        outln!("{}", serde_json::to_string(&out)?);
    } else {
        if built.reused {
            eprintln!("image already built from these inputs");
        }
        outln!("{}", built.image.digest);
    }
    Ok(ExitCode::SUCCESS)
}

fn ls(store: &Store, json: bool) -> anyhow::Result<ExitCode> {
    let mut images = Vec::new();
    let mut broken = 0;
    for entry in store.list()? {
        match entry {
            Ok(image) => images.push(image),
            Err(e) => {
                broken += 1;
                eprintln!("luminaguard: image store: {e}");
            }
        }
    }
    if json {
        let list: Vec<ImageJson> = images.iter().map(ImageJson::from).collect();
        outln!("{}", serde_json::to_string(&list)?);
    } else {
        outln!(
            "{:<14} {:<24} {:>12}  CREATED BY",
            "IMAGE",
            "KERNEL",
            "ROOTFS"
        );
        for image in &images {
            let rootfs = image
                .manifest
                .artifact(ArtifactKind::Rootfs)
                .map_or("-".to_owned(), |a| format!("{} MiB", a.size >> 20));
            outln!(
                "{:<14} {:<24} {:>12}  {}",
                image.digest.short(),
                image.manifest.kernel_release,
                rootfs,
                image.manifest.created_by
            );
        }
    }
    Ok(if broken == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn rm(store: &Store, digests: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let mut removed = Vec::new();
    let mut failed = false;
    for reference in digests {
        match store.remove(reference) {
            Ok(digest) => removed.push(digest.to_string()),
            Err(e) => {
                failed = true;
                eprintln!("luminaguard: image rm {reference}: {e}");
            }
        }
    }
    if json {
        outln!("{}", serde_json::json!({ "removed": removed }));
    } else {
        for digest in &removed {
            outln!("removed {digest}");
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs an `image` subcommand.
pub fn run(cmd: ImageCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Build(args) => build(args, config),
        ImageCommand::Ls { store, json } => ls(&open_store(&store, config)?, json),
        ImageCommand::Rm {
            store,
            digests,
            json,
        } => rm(&open_store(&store, config)?, &digests, json),
    }
}

#[cfg(test)]
mod tests {
    use super::{DebootstrapProgress, debian_base_name, debian_packages, extra_packages};

    #[test]
    fn extra_packages_key_their_own_base() {
        let none: Vec<String> = Vec::new();
        assert_eq!(debian_base_name("bookworm", &none), "debian-bookworm");
        let a = extra_packages(&["nodejs".into(), "jq".into(), "nodejs".into()]).unwrap();
        assert_eq!(a, ["jq", "nodejs"]);
        let b = extra_packages(&["jq".into(), "nodejs".into()]).unwrap();
        let name = debian_base_name("bookworm", &a);
        assert_eq!(
            name,
            debian_base_name("bookworm", &b),
            "order does not matter"
        );
        assert!(
            name.starts_with("debian-bookworm+") && name.len() == 32,
            "{name}"
        );
        assert_ne!(name, debian_base_name("bookworm", &["nodejs".into()]));
        assert_eq!(debian_packages(&a), "python3,git,ca-certificates,jq,nodejs");
        for bad in ["Node", "-x", "a", "a b", "x;rm", "a,b", "../x", ""] {
            assert!(extra_packages(&[bad.into()]).is_err(), "{bad:?} accepted");
        }
        assert!(extra_packages(&["libstdc++6".into(), "g++-12".into()]).is_ok());
    }

    #[test]
    fn debootstrap_lines_become_phases_with_package_counts() {
        let mut p = DebootstrapProgress::default();
        let mut last = String::new();
        for line in [
            "I: Retrieving InRelease ",
            "I: Resolving dependencies of required packages...",
            "I: Retrieving adduser 3.134",
            "I: Retrieving apt 2.6.1",
            "not an info line",
            "I: Extracting adduser...",
            "I: Extracting apt...",
            "I: Unpacking required packages...",
            "I: Unpacking adduser...",
        ] {
            if let Some(m) = p.update(line) {
                last = m;
            }
            match line {
                "I: Retrieving InRelease " => assert_eq!(last, "Retrieving InRelease"),
                "I: Retrieving apt 2.6.1" => assert_eq!(last, "retrieving 2 packages"),
                "I: Extracting apt..." => assert_eq!(last, "extracting 2 packages"),
                "I: Unpacking required packages..." => {
                    assert_eq!(last, "Unpacking required packages")
                }
                _ => {}
            }
        }
        assert_eq!(last, "unpacking 1 packages");
    }
}
