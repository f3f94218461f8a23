//! The runtime directory: where per-sandbox state (sockets, pid files, metadata) lives.
//!
//! Every path handed out here is built from a validated [`SandboxId`], and is checked once more to
//! be a direct child of the root, so no id — whatever a future change to the id rules allows — can
//! name a path outside it.

use std::path::{Component, Path, PathBuf};

use crate::id::SandboxId;

/// Errors about the runtime directory itself.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    /// The configured root is not an absolute path.
    #[error("runtime directory {0:?} must be an absolute path")]
    NotAbsolute(PathBuf),
    /// The configured root has `.` or `..` components, so its meaning depends on symlinks.
    #[error("runtime directory {0:?} must not contain '.' or '..' components")]
    NotNormal(PathBuf),
    /// A derived path would leave the root (a bug: ids cannot produce this).
    #[error("path {path:?} derived for sandbox {id} is not inside runtime directory {root:?}")]
    Escapes {
        id: String,
        path: PathBuf,
        root: PathBuf,
    },
}

/// The root under which each sandbox gets `<root>/sandboxes/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDir {
    root: PathBuf,
}

impl RuntimeDir {
    /// Name of the directory holding one subdirectory per sandbox.
    pub const SANDBOXES: &'static str = "sandboxes";

    /// Accepts an absolute, normalized root.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, RuntimeDirError> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(RuntimeDirError::NotAbsolute(root));
        }
        if root
            .components()
            .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        {
            return Err(RuntimeDirError::NotNormal(root));
        }
        Ok(Self { root })
    }

    /// The default root: `$XDG_RUNTIME_DIR/luminaguard` for ordinary users when set, else
    /// `/run/luminaguard` for root and `/tmp/luminaguard-<uid>` for others.
    pub fn default_root(uid: u32, xdg_runtime_dir: Option<&Path>) -> PathBuf {
        match xdg_runtime_dir {
            Some(dir) if uid != 0 && dir.is_absolute() => dir.join("luminaguard"),
            _ if uid == 0 => PathBuf::from("/run/luminaguard"),
            _ => PathBuf::from(format!("/tmp/luminaguard-{uid}")),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/sandboxes`.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join(Self::SANDBOXES)
    }

    /// `<root>/sandboxes/<id>`, verified to be a direct child of [`RuntimeDir::sandboxes_dir`].
    pub fn sandbox_dir(&self, id: &SandboxId) -> Result<PathBuf, RuntimeDirError> {
        let parent = self.sandboxes_dir();
        let path = parent.join(id.as_str());
        let mut rest = path
            .strip_prefix(&parent)
            .map(Path::components)
            .into_iter()
            .flatten();
        match (rest.next(), rest.next()) {
            (Some(Component::Normal(_)), None) => Ok(path),
            _ => Err(RuntimeDirError::Escapes {
                id: id.to_string(),
                path,
                root: self.root.clone(),
            }),
        }
    }

    /// A fixed-name file inside a sandbox's directory (`agent.sock`, `pid`, `meta.json`, …).
    pub fn sandbox_file(
        &self,
        id: &SandboxId,
        name: SandboxFile,
    ) -> Result<PathBuf, RuntimeDirError> {
        Ok(self.sandbox_dir(id)?.join(name.file_name()))
    }
}

/// The files a sandbox's runtime directory may hold. Names are fixed here, never built from input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxFile {
    AgentSocket,
    Pid,
    Metadata,
    ConsoleLog,
    /// The log of the sandbox's DNS resolver (a policy naming domains).
    ResolverLog,
    /// The `resolv.conf` the sandbox sees (a policy naming domains).
    ResolvConf,
    /// The record of system calls the sandbox's seccomp policy denied, kept by the host-side
    /// supervisor (a process sandbox).
    SeccompRecord,
    /// The private layer of a speculative run's workspace overlay (a size-capped tmpfs the
    /// host mounts; `upper/` and `work/` inside), see `SandboxSpec::review`.
    Review,
}

impl SandboxFile {
    pub const fn file_name(self) -> &'static str {
        match self {
            Self::AgentSocket => "agent.sock",
            Self::Pid => "pid",
            Self::Metadata => "meta.json",
            Self::ConsoleLog => "console.log",
            Self::ResolverLog => "resolver.log",
            Self::ResolvConf => "resolv.conf",
            Self::SeccompRecord => "seccomp.audit",
            Self::Review => "review",
        }
    }
}

/// What a creator writes on its link to a sandbox to hand it over: from then on the sandbox
/// outlives its creator (the backend's `Sandbox::hand_over`; the sandbox's init waits for it).
pub const HANDED_OVER: u8 = b'H';

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn root_must_be_absolute_and_normal() {
        assert!(matches!(
            RuntimeDir::new("run/lg"),
            Err(RuntimeDirError::NotAbsolute(_))
        ));
        assert!(matches!(
            RuntimeDir::new("/run/../etc"),
            Err(RuntimeDirError::NotNormal(_))
        ));
        assert!(RuntimeDir::new("/run/luminaguard").is_ok());
    }

    #[test]
    fn default_root_depends_on_user() {
        assert_eq!(
            RuntimeDir::default_root(0, None),
            PathBuf::from("/run/luminaguard")
        );
        assert_eq!(
            RuntimeDir::default_root(1000, Some(Path::new("/run/user/1000"))),
            PathBuf::from("/run/user/1000/luminaguard")
        );
        assert_eq!(
            RuntimeDir::default_root(1000, None),
            PathBuf::from("/tmp/luminaguard-1000")
        );
    }

    #[test]
    fn sandbox_paths() {
        let rt = RuntimeDir::new("/run/lg").unwrap();
        let id = SandboxId::new("task-1").unwrap();
        assert_eq!(
            rt.sandbox_dir(&id).unwrap(),
            PathBuf::from("/run/lg/sandboxes/task-1")
        );
        assert_eq!(
            rt.sandbox_file(&id, SandboxFile::AgentSocket).unwrap(),
            PathBuf::from("/run/lg/sandboxes/task-1/agent.sock")
        );
    }

    proptest! {
        /// Whatever string arrives at the boundary, a path derived from it is either refused at
        /// parse time or lies directly inside `<root>/sandboxes`.
        #[test]
        fn derived_paths_never_leave_the_root(s in "(\\PC|[./\\\\])*") {
            let rt = RuntimeDir::new("/run/lg").unwrap();
            if let Ok(id) = SandboxId::new(&s) {
                let dir = rt.sandbox_dir(&id).unwrap();
                prop_assert!(dir.starts_with("/run/lg/sandboxes"));
                prop_assert_eq!(dir.parent(), Some(Path::new("/run/lg/sandboxes")));
                for f in [SandboxFile::AgentSocket, SandboxFile::Pid, SandboxFile::Metadata] {
                    let p = rt.sandbox_file(&id, f).unwrap();
                    prop_assert!(p.starts_with(&dir));
                    prop_assert!(p.components().all(|c| !matches!(c, Component::ParentDir | Component::CurDir)));
                }
            }
        }

        #[test]
        fn valid_ids_all_map_inside(s in "[A-Za-z0-9_][A-Za-z0-9_-]{0,63}") {
            let rt = RuntimeDir::new("/run/lg").unwrap();
            let dir = rt.sandbox_dir(&SandboxId::new(&s).unwrap()).unwrap();
            prop_assert_eq!(dir.parent(), Some(Path::new("/run/lg/sandboxes")));
        }
    }
}
