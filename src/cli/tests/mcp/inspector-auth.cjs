// Loaded into the MCP Inspector's CLI with NODE_OPTIONS=--require by src/cli/tests/mcp_http.rs:
// the pinned Inspector (0.15.0, the newest for Node 20) has no way to send a header, and
// `mcp serve --http` refuses every request without `Authorization: Bearer TOKEN`. This adds the
// token from LG_TOKEN to each request the CLI's fetch makes; nothing else changes.
"use strict";
const token = process.env.LG_TOKEN;
const original = globalThis.fetch;
if (token && original) {
  globalThis.fetch = (input, init = {}) => {
    const headers = new Headers(init.headers || {});
    headers.set("Authorization", `Bearer ${token}`);
    return original(input, { ...init, headers });
  };
}
