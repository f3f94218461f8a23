//! Sandboxed third-party MCP servers behind one gateway (`luminaguard mcp gateway`): the
//! pure parts — its configuration, the pins of the tools it exposes, and the scanner that keeps
//! secrets out of tool arguments and results. The runtime lives beside them.

pub mod config;
pub mod pins;
pub mod secrets;
