//! Domain types shared by every LuminaGuard component.
//!
//! Everything that crosses a trust boundary into LuminaGuard — a sandbox id typed by a user or an
//! agent, a sandbox spec read from a file, a configuration layer — is parsed into a type from this
//! crate, and validated there, before anything else sees it.

pub mod child;
pub mod config;
pub mod id;
pub mod network;
pub mod runtime;
pub mod shell;
pub mod size;
pub mod spec;
pub mod workspace;

pub use config::{Config, ConfigError, ConfigLayer};
pub use id::{IdError, SandboxId};
pub use network::{EgressRule, NetworkPolicy};
pub use runtime::{RuntimeDir, RuntimeDirError};
pub use size::ByteSize;
pub use spec::{BackendChoice, Limits, ReadOnlyMount, SandboxSpec, SpecError};
pub use workspace::{Protected, Workspace, WorkspaceError, WorkspacePolicy};
