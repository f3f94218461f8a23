//! Which host directory may be shared read-write with a sandbox as its workspace.
//!
//! A workspace is handed to code that is assumed hostile, with write access. So it must not be
//! the whole host (`/`), a system directory or anything inside one (`/etc`, `/usr`, `/run`,
//! `/var/lib`, …, see [`SYSTEM_TREES`]), a directory every user and service shares (`/tmp`,
//! `/home`, …, see [`SHARED_DIRS`]; a directory *inside* one is fine), LuminaGuard's own state
//! (the runtime directory, the image store, the configuration: whatever the caller marks
//! [`Protected`]) or anything inside it — nor a **parent** of any of those, since a parent
//! contains them (`/var` holds `/var/lib`; a temporary directory may hold the runtime directory).
//!
//! The rules apply to the path with every symbolic link resolved, and the resolved path is what a
//! [`Workspace`] carries on: a link named on the command line is never looked at again, so it
//! cannot be re-pointed after the check. [`Workspace::recheck_blocking`] resolves it once more
//! just before use and refuses if the result differs (a directory on the way became a link).
//!
//! Home directories are not system directories: a project directory inside one is what a
//! workspace is for. A home directory itself is refused only when it holds LuminaGuard state
//! that the caller protects (its configuration or image store): a sandbox with it read-write
//! could rewrite that state for every later sandbox.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Directories that belong to the operating system: a workspace may not be one of them, lie
/// inside one, or contain one.
pub const SYSTEM_TREES: &[&str] = &[
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/efi",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/lib",
    "/var/run",
    "/var/lock",
    "/var/log",
    "/var/cache",
    "/var/spool",
    "/var/mail",
    "/var/backups",
    "/var/db",
    "/var/empty",
    "/var/opt",
    "/var/snap",
    "/var/crash",
    "/snap",
    "/nix",
    "/gnu",
];

/// Directories shared by every user or service: refused themselves (a sandbox would see and
/// could replace everyone's files, sockets and mount points in them); a directory inside one is
/// an ordinary workspace.
pub const SHARED_DIRS: &[&str] = &[
    "/tmp", "/var/tmp", "/home", "/mnt", "/media", "/srv", "/opt",
];

/// A path of LuminaGuard's own (or anything else a caller wants kept out of sandboxes): a
/// workspace may not be it, lie inside it or contain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// As the caller named it.
    path: PathBuf,
    /// With the symbolic links of its existing part resolved (the same as `path` until
    /// [`Protected::resolved_blocking`]).
    resolved: PathBuf,
    /// What it is, for messages: "the runtime directory", "LuminaGuard's image store", …
    what: String,
}

impl Protected {
    pub fn new(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        let path = path.into();
        Self {
            resolved: path.clone(),
            path,
            what: what.into(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same, with the links of the part of the path that exists resolved (the rest need not
    /// exist yet: a runtime directory is created on first use). Blocking.
    pub fn resolved_blocking(mut self) -> Self {
        self.resolved = resolve_existing_prefix(&self.path);
        self
    }
}

/// `path` with the symbolic links of its longest existing prefix resolved and the rest appended.
/// Blocking.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

/// The set of [`Protected`] paths a workspace is checked against, besides the fixed rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspacePolicy {
    protected: Vec<Protected>,
    /// `Some(uid)`: the workspace must be owned by this user — the caller a service acts for,
    /// so that nobody can hand a sandbox (which a more privileged service creates) a directory
    /// that is not theirs.
    owner: Option<u32>,
}

/// How a workspace stands to a path it may not touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// It is that path.
    Is,
    /// It lies inside it.
    Inside,
    /// It contains it (it is a parent).
    Contains,
}

/// Which rule refused a workspace, and what it collided with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `/` itself.
    WholeHost,
    /// One of [`SYSTEM_TREES`].
    System {
        dir: &'static str,
        relation: Relation,
    },
    /// Exactly one of [`SHARED_DIRS`].
    Shared { dir: &'static str },
    /// Not owned by the user the sandbox is for.
    NotOwned { owner: u32, required: u32 },
    /// A [`Protected`] path.
    Protected {
        path: PathBuf,
        what: String,
        relation: Relation,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WholeHost => f.write_str(
                "it is the whole host file system (rule: never the whole host, a system \
                 directory or LuminaGuard's own state)",
            ),
            Self::System { dir, relation } => {
                let how = match relation {
                    Relation::Is => "it is",
                    Relation::Inside => "it is inside",
                    Relation::Contains => "it contains",
                };
                write!(
                    f,
                    "{how} system directory {dir} (rule: no system directory, nothing inside \
                     one, no parent of one)"
                )
            }
            Self::NotOwned { owner, required } => write!(
                f,
                "it is owned by uid {owner}, not by uid {required} who asked for it (rule: a \
                 workspace is the caller's own directory)"
            ),
            Self::Shared { dir } => write!(
                f,
                "it is {dir}, a directory shared by every user and service (rule: no shared \
                 top-level directory; use a directory inside it)"
            ),
            Self::Protected {
                path,
                what,
                relation,
            } => {
                let how = match relation {
                    Relation::Is => "it is",
                    Relation::Inside => "it is inside",
                    Relation::Contains => "it contains",
                };
                write!(
                    f,
                    "{how} {what} {} (rule: no LuminaGuard state, nothing inside it, no parent \
                     of it)",
                    path.display()
                )
            }
        }
    }
}

/// Why a directory cannot be a workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The path does not resolve (it does not exist, a link on the way is dangling, …).
    #[error("workspace {given}: cannot resolve it: {source}")]
    Resolve {
        given: Shown,
        source: std::io::Error,
    },
    /// It resolves to something that is not a directory.
    #[error("workspace {0}: not a directory")]
    NotADirectory(Shown),
    /// The path handed to the rules is not absolute and normal (a caller bug: resolve first).
    #[error(
        "workspace {0:?}: not an absolute path without '.' or '..' (it must be resolved first)"
    )]
    NotResolved(PathBuf),
    /// One of the rules refused it.
    #[error("workspace {workspace} refused: {rule}")]
    Refused { workspace: Shown, rule: Rule },
    /// Resolving it again (just before use) gave another directory: something on the way
    /// became a link since the check.
    #[error(
        "workspace {checked} changed since it was checked: it now resolves to {now}; refusing it"
    )]
    Changed { checked: PathBuf, now: PathBuf },
}

/// A workspace path as the user gave it, with what it resolves to when that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub given: PathBuf,
    pub resolved: Option<PathBuf>,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.given.display())?;
        match &self.resolved {
            Some(r) if *r != self.given => write!(f, " (resolves to {})", r.display()),
            _ => Ok(()),
        }
    }
}

fn is_absolute_normal(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// How `ws` stands to `other` (both absolute and normal), if they overlap.
fn relation(ws: &Path, other: &Path) -> Option<Relation> {
    if ws == other {
        Some(Relation::Is)
    } else if ws.starts_with(other) {
        Some(Relation::Inside)
    } else if other.starts_with(ws) {
        Some(Relation::Contains)
    } else {
        None
    }
}

impl WorkspacePolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `path` (and what is inside it, and its parents) from being a workspace.
    pub fn protect(mut self, path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        self.protected.push(Protected::new(path, what));
        self
    }

    pub fn protected(&self) -> &[Protected] {
        &self.protected
    }

    /// Also requires the workspace to be owned by `uid`.
    pub fn owned_by(mut self, uid: u32) -> Self {
        self.owner = Some(uid);
        self
    }

    /// The ownership rule, on the resolved directory's metadata.
    fn check_owner(&self, meta: &std::fs::Metadata) -> Result<(), Rule> {
        use std::os::unix::fs::MetadataExt;
        match self.owner {
            Some(required) if meta.uid() != required => Err(Rule::NotOwned {
                owner: meta.uid(),
                required,
            }),
            _ => Ok(()),
        }
    }

    /// The rules, on an already resolved path (pure: no file system access). `Ok` when `ws`
    /// may be a workspace; otherwise the first rule it breaks: the whole host, a system
    /// directory (inside, or containing one), a shared directory, protected state.
    pub fn check(&self, ws: &Path) -> Result<(), Rule> {
        if ws == Path::new("/") {
            return Err(Rule::WholeHost);
        }
        for rel in [Relation::Is, Relation::Inside, Relation::Contains] {
            if let Some(dir) = SYSTEM_TREES
                .iter()
                .find(|d| relation(ws, Path::new(d)) == Some(rel))
            {
                return Err(Rule::System { dir, relation: rel });
            }
        }
        if let Some(dir) = SHARED_DIRS.iter().find(|d| ws == Path::new(d)) {
            return Err(Rule::Shared { dir });
        }
        self.check_protected(ws)
    }

    /// The [`Rule::Protected`] rule alone, on an already resolved path (pure): what a host path
    /// shown to a sandbox *read-only* must pass too — reading a system directory is harmless,
    /// reading LuminaGuard's state (the runtime directory's sockets, the audit log) is not.
    pub fn check_protected(&self, ws: &Path) -> Result<(), Rule> {
        for p in &self.protected {
            for candidate in [&p.resolved, &p.path] {
                if !is_absolute_normal(candidate) {
                    continue;
                }
                if let Some(relation) = relation(ws, candidate) {
                    return Err(Rule::Protected {
                        path: p.path.clone(),
                        what: p.what.clone(),
                        relation,
                    });
                }
            }
        }
        Ok(())
    }

    /// [`WorkspacePolicy::check_protected`] with the protected paths' links resolved first (as
    /// [`Workspace::resolve_blocking`] does). Blocking.
    pub fn check_protected_blocking(&self, resolved: &Path) -> Result<(), Rule> {
        let policy = Self {
            protected: self
                .protected
                .iter()
                .cloned()
                .map(Protected::resolved_blocking)
                .collect(),
            owner: None,
        };
        policy.check_protected(resolved)
    }

    /// [`WorkspacePolicy::check`] with the error a caller reports.
    fn refuse(&self, given: &Path, resolved: &Path) -> Result<(), WorkspaceError> {
        if !is_absolute_normal(resolved) {
            return Err(WorkspaceError::NotResolved(resolved.to_owned()));
        }
        self.check(resolved)
            .map_err(|rule| WorkspaceError::Refused {
                workspace: Shown {
                    given: given.to_owned(),
                    resolved: Some(resolved.to_owned()),
                },
                rule,
            })
    }
}

/// A host directory that passed the workspace rules: the only way to give a sandbox one
/// (`luminaguard_backend::CreateRequest` holds this type, and its create re-checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Resolved: absolute, no links, no `.`/`..`.
    path: PathBuf,
    policy: WorkspacePolicy,
}

impl Workspace {
    /// Resolves `given` (relative paths against the current directory; every link followed),
    /// checks that it is a directory and passes the rules of `policy`. Blocking.
    pub fn resolve_blocking(
        given: &Path,
        policy: &WorkspacePolicy,
    ) -> Result<Self, WorkspaceError> {
        let shown = |resolved: Option<&Path>| Shown {
            given: given.to_owned(),
            resolved: resolved.map(Path::to_owned),
        };
        let path = std::fs::canonicalize(given).map_err(|source| WorkspaceError::Resolve {
            given: shown(None),
            source,
        })?;
        let policy = WorkspacePolicy {
            protected: policy
                .protected
                .iter()
                .cloned()
                .map(Protected::resolved_blocking)
                .collect(),
            owner: policy.owner,
        };
        policy.refuse(given, &path)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                policy
                    .check_owner(&m)
                    .map_err(|rule| WorkspaceError::Refused {
                        workspace: shown(Some(&path)),
                        rule,
                    })?;
            }
            Ok(_) => return Err(WorkspaceError::NotADirectory(shown(Some(&path)))),
            Err(source) => {
                return Err(WorkspaceError::Resolve {
                    given: shown(Some(&path)),
                    source,
                });
            }
        }
        Ok(Self { path, policy })
    }

    /// The resolved directory: what to mount, and nothing else.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves the path again and checks it against the rules, the policy it was made with and
    /// `also` (e.g. the runtime directory the sandbox is about to be created in): refuses if it
    /// no longer resolves to itself (a directory on the way became a link) or breaks a rule.
    /// Blocking.
    pub fn recheck_blocking(&self, also: &[Protected]) -> Result<(), WorkspaceError> {
        let now = std::fs::canonicalize(&self.path).map_err(|source| WorkspaceError::Resolve {
            given: Shown {
                given: self.path.clone(),
                resolved: None,
            },
            source,
        })?;
        if now != self.path {
            return Err(WorkspaceError::Changed {
                checked: self.path.clone(),
                now,
            });
        }
        let mut policy = self.policy.clone();
        policy
            .protected
            .extend(also.iter().cloned().map(Protected::resolved_blocking));
        policy.refuse(&self.path, &self.path)?;
        let meta = std::fs::metadata(&self.path).map_err(|source| WorkspaceError::Resolve {
            given: Shown {
                given: self.path.clone(),
                resolved: None,
            },
            source,
        })?;
        policy
            .check_owner(&meta)
            .map_err(|rule| WorkspaceError::Refused {
                workspace: Shown {
                    given: self.path.clone(),
                    resolved: None,
                },
                rule,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> WorkspacePolicy {
        WorkspacePolicy::new()
            .protect("/tmp/lg-rt", "the runtime directory")
            .protect(
                "/home/u/.local/share/luminaguard",
                "LuminaGuard's image store",
            )
    }

    fn rule(p: &str) -> Result<(), Rule> {
        policy().check(Path::new(p))
    }

    #[test]
    fn the_whole_host_and_system_directories_are_refused() {
        assert_eq!(rule("/"), Err(Rule::WholeHost));
        assert_eq!(
            rule("/etc"),
            Err(Rule::System {
                dir: "/etc",
                relation: Relation::Is
            })
        );
        assert_eq!(
            rule("/usr/lib/x"),
            Err(Rule::System {
                dir: "/usr",
                relation: Relation::Inside
            })
        );
        assert_eq!(
            rule("/var"),
            Err(Rule::System {
                dir: "/var/lib",
                relation: Relation::Contains
            })
        );
        for p in [
            "/run/luminaguard",
            "/var/run",
            "/proc/1",
            "/dev/shm",
            "/boot/efi",
        ] {
            assert!(matches!(rule(p), Err(Rule::System { .. })), "{p}");
        }
        // Component-wise: /etcetera is not /etc.
        assert_eq!(rule("/etcetera"), Ok(()));
        assert_eq!(rule("/usr2/x"), Ok(()));
    }

    #[test]
    fn shared_directories_are_refused_but_not_what_is_inside() {
        for d in SHARED_DIRS {
            assert_eq!(rule(d), Err(Rule::Shared { dir: d }), "{d}");
        }
        assert_eq!(rule("/tmp/job"), Ok(()));
        assert_eq!(rule("/home/u/project"), Ok(()));
        assert_eq!(rule("/srv/www"), Ok(()));
    }

    #[test]
    fn protected_state_its_contents_and_its_parents_are_refused() {
        let is = |p: &str, rel| match rule(p) {
            Err(Rule::Protected { relation, .. }) => relation == rel,
            _ => false,
        };
        assert!(is("/tmp/lg-rt", Relation::Is));
        assert!(is("/tmp/lg-rt/sandboxes/x", Relation::Inside));
        assert!(is("/home/u/.local", Relation::Contains));
        // The home itself holds the image store here.
        assert!(is("/home/u", Relation::Contains));
        // …while a project next to it is fine.
        assert_eq!(rule("/home/u/src/project"), Ok(()));
        assert_eq!(rule("/tmp/lg-rt2"), Ok(()));
    }

    #[test]
    fn messages_name_the_rule_and_what_was_hit() {
        let err = policy()
            .refuse(Path::new("/x/to-etc"), Path::new("/etc"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/x/to-etc (resolves to /etc)") && err.contains("system directory /etc"),
            "{err}"
        );
        let err = policy()
            .refuse(Path::new("/tmp"), Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shared") && err.contains("inside it"), "{err}");
        let err = policy()
            .refuse(Path::new("/home/u"), Path::new("/home/u"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("contains LuminaGuard's image store /home/u/.local/share/luminaguard"),
            "{err}"
        );
        assert!(matches!(
            policy().refuse(Path::new("x"), Path::new("x/../y")),
            Err(WorkspaceError::NotResolved(_))
        ));
    }

    #[test]
    fn resolving_follows_links_and_the_result_is_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let ws = Workspace::resolve_blocking(&link, &WorkspacePolicy::new()).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(ws.path(), real);
        ws.recheck_blocking(&[]).unwrap();

        // A link to a system directory is refused by what it points at, and says so.
        let to_etc = dir.path().join("to-etc");
        std::os::unix::fs::symlink("/etc", &to_etc).unwrap();
        let err = Workspace::resolve_blocking(&to_etc, &WorkspacePolicy::new()).unwrap_err();
        assert!(
            err.to_string().contains("resolves to /etc")
                && matches!(err, WorkspaceError::Refused { .. }),
            "{err}"
        );

        // A protected directory named through a link is protected all the same.
        let policy = WorkspacePolicy::new().protect(link.join("rt"), "the runtime directory");
        let err = Workspace::resolve_blocking(&real, &policy).unwrap_err();
        assert!(
            err.to_string().contains("contains the runtime directory"),
            "{err}"
        );

        // Not a directory; does not exist.
        let file = dir.path().join("file");
        std::fs::File::create(&file).unwrap();
        assert!(matches!(
            Workspace::resolve_blocking(&file, &WorkspacePolicy::new()),
            Err(WorkspaceError::NotADirectory(_))
        ));
        assert!(matches!(
            Workspace::resolve_blocking(&dir.path().join("nope"), &WorkspacePolicy::new()),
            Err(WorkspaceError::Resolve { .. })
        ));
    }

    #[test]
    fn a_recheck_refuses_a_workspace_that_became_a_link_or_is_now_protected() {
        let dir = tempfile::tempdir().unwrap();
        let ws_dir = dir.path().join("ws");
        std::fs::create_dir(&ws_dir).unwrap();
        let ws = Workspace::resolve_blocking(&ws_dir, &WorkspacePolicy::new()).unwrap();
        // The runtime directory a create is about to use lies inside it.
        let err = ws
            .recheck_blocking(&[Protected::new(ws_dir.join("rt"), "the runtime directory")])
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::Refused { .. }), "{err}");
        // Swapped for a link (to a directory the attacker likes) after the check.
        std::fs::rename(&ws_dir, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink("/etc", &ws_dir).unwrap();
        let err = ws.recheck_blocking(&[]).unwrap_err();
        assert!(
            matches!(&err, WorkspaceError::Changed { now, .. } if now == Path::new("/etc")),
            "{err}"
        );
    }

    #[test]
    fn an_owner_rule_refuses_a_directory_of_another_user_at_resolve_and_recheck() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mine = std::fs::metadata(dir.path()).unwrap().uid();
        let other = mine.wrapping_add(1);
        let ws = Workspace::resolve_blocking(dir.path(), &WorkspacePolicy::new().owned_by(mine))
            .unwrap();
        ws.recheck_blocking(&[]).unwrap();
        let err = Workspace::resolve_blocking(dir.path(), &WorkspacePolicy::new().owned_by(other))
            .unwrap_err();
        assert!(
            matches!(&err, WorkspaceError::Refused { rule: Rule::NotOwned { owner, required }, .. }
                if *owner == mine && *required == other),
            "{err}"
        );
        assert!(
            err.to_string().contains("the caller's own directory"),
            "{err}"
        );
        // The rule travels with the workspace: a recheck applies it again.
        let ws = Workspace {
            path: std::fs::canonicalize(dir.path()).unwrap(),
            policy: WorkspacePolicy::new().owned_by(other),
        };
        assert!(ws.recheck_blocking(&[]).is_err());
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9._-]{1,12}".prop_filter("not . or ..", |c| c != "." && c != "..")
    }

    proptest! {
        /// Nothing inside a system directory is ever a workspace.
        #[test]
        fn nothing_under_a_system_directory_passes(
            i in 0..SYSTEM_TREES.len(),
            rest in prop::collection::vec(component(), 0..5),
        ) {
            let mut p = PathBuf::from(SYSTEM_TREES[i]);
            p.extend(&rest);
            let system = matches!(policy().check(&p), Err(Rule::System { .. }));
            prop_assert!(system, "{} passed", p.display());
        }

        /// Neither a protected path, nor anything inside it, nor any of its parents passes.
        #[test]
        fn protected_paths_their_contents_and_parents_never_pass(
            base in prop::collection::vec(component(), 1..4),
            below in prop::collection::vec(component(), 0..4),
            cut in 0usize..4,
        ) {
            let mut protected = PathBuf::from("/srv/state");
            protected.extend(&base);
            let policy = WorkspacePolicy::new().protect(&protected, "state");
            let mut inside = protected.clone();
            inside.extend(&below);
            prop_assert!(policy.check(&inside).is_err());
            let parent = protected.ancestors().nth(cut.min(base.len())).unwrap();
            prop_assert!(policy.check(parent).is_err());
        }

        /// A directory inside /tmp or a home that protects nothing passes.
        #[test]
        fn ordinary_directories_pass(
            top in prop::sample::select(vec!["/tmp", "/home/u/src", "/var/tmp", "/data"]),
            rest in prop::collection::vec(component(), 1..5),
        ) {
            let mut p = PathBuf::from(top);
            p.extend(&rest);
            prop_assume!(!p.starts_with("/tmp/lg-rt"));
            prop_assert_eq!(policy().check(&p), Ok(()));
        }
    }
}
