//! Where the CLI's requests go: `luminaguard-front` (the daemon when one answers on its socket,
//! else the service in this process), shared with the MCP server.

pub use luminaguard_front::{Choice, Execution, Front};

use luminaguard_service::ExecOutput;

use crate::stream::Running;

impl Running for Execution {
    async fn next(&mut self) -> anyhow::Result<Option<ExecOutput>> {
        Ok(Execution::next(self).await?)
    }

    async fn write_stdin(&mut self, data: &[u8]) -> anyhow::Result<()> {
        Ok(Execution::write_stdin(self, data).await?)
    }

    async fn close_stdin(&mut self) -> anyhow::Result<()> {
        Ok(Execution::close_stdin(self).await?)
    }
}
