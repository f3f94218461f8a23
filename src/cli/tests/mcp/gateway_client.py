"""A real MCP client (the official Python SDK) driving `luminaguard mcp gateway` over stdio.

Run by src/cli/tests/mcp_gateway.rs as `python gateway_client.py`, with the gateway's command
line as a JSON array in LG_SERVER and the calls to make as a JSON array in LG_CALLS
(`[{"tool": NAME, "arguments": {...}}, ...]`). With LG_ELICIT set (`approve` or `deny`) the
client declares elicitation and answers every question so. It lists the tools, makes the calls
in order (a JSON-RPC error is reported, not raised), and prints one JSON line: the tools (name,
description, input schema) and each call's result (isError, text, structured content). The Rust
side asserts.
"""

import asyncio
import json
import os

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

SERVER = json.loads(os.environ["LG_SERVER"])
CALLS = json.loads(os.environ.get("LG_CALLS", "[]"))
ELICIT = os.environ.get("LG_ELICIT")


def text_of(result):
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def elicit(context, params):
    asked.append(params.message)
    return types.ElicitResult(action="accept", content={"approve": ELICIT == "approve"})


asked = []


async def main():
    server = StdioServerParameters(command=SERVER[0], args=SERVER[1:], env=dict(os.environ))
    out = {"tools": [], "calls": [], "asked": asked}
    async with stdio_client(server) as (r, w):
        kwargs = {"elicitation_callback": elicit} if ELICIT else {}
        async with ClientSession(r, w, **kwargs) as session:
            init = await session.initialize()
            out["server"] = init.serverInfo.name
            listed = await session.list_tools()
            out["tools"] = [
                {"name": t.name, "description": t.description, "inputSchema": t.inputSchema}
                for t in listed.tools
            ]
            for c in CALLS:
                try:
                    result = await session.call_tool(c["tool"], c.get("arguments") or {})
                    out["calls"].append(
                        {
                            "tool": c["tool"],
                            "isError": bool(result.isError),
                            "text": text_of(result),
                            "structured": result.structuredContent,
                        }
                    )
                except McpError as e:
                    out["calls"].append(
                        {"tool": c["tool"], "rpcError": e.error.message, "code": e.error.code}
                    )
            if os.environ.get("LG_LIST_AGAIN"):
                listed = await session.list_tools()
                out["tools_after"] = [t.name for t in listed.tools]
    print(json.dumps(out))


asyncio.run(main())
