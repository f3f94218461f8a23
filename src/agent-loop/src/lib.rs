//! The agent loop (`luminaguard agent`): a model on a real provider — OpenAI-compatible chat
//! completions, Anthropic Messages or Ollama, spoken by `luminaguard-llm` — proposes tool
//! calls, and each runs in the task's LuminaGuard sandbox through [`luminaguard_front::Front`]:
//! the service judges it by the policy, asks a person when the policy says ask (a Diff Card
//! for a write), and records it on the audit log. The loop is one more caller of the service,
//! never a judge: a refused call is a result the model reads.
//!
//! - [`client`]: the provider over HTTP, streamed, with retries;
//! - [`tools`]: the tools and how each runs in the sandbox;
//! - [`task`]: the bounded loop;
//! - [`transcript`]: every task's record in the state directory;
//! - [`launch`]: a task's start, the same for the CLI and the daemon;
//! - [`host`]: the daemon's agent tasks (`/v1/agent/tasks`).

pub mod client;
pub mod host;
pub mod launch;
pub mod mcp;
pub mod task;
pub mod tools;
pub mod transcript;

pub use client::{ApiKey, Client, ClientError, ModelConfig, Retry};
pub use task::{Limits, Observer};
pub use transcript::{Entry, Status, Store, Summary, TaskId};
