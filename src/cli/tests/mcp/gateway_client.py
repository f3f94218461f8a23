"""A real MCP client (the official Python SDK) driving `luminaguard mcp gateway` over stdio.

Run by src/cli/tests/mcp_gateway.rs as `python gateway_client.py`, with the gateway's command
line as a JSON array in LG_SERVER and the calls to make as a JSON array in LG_CALLS
(`[{"tool": NAME, "arguments": {...}}, ...]`; with LG_CONCURRENT set, made all at once, and
`finished` says in which order their results came back). With LG_ELICIT set (`approve` or `deny`) the
client declares elicitation and answers every question so. It lists the tools, makes the calls
in order (a JSON-RPC error is reported, not raised), and prints one JSON line: the tools (name,
description, input schema) and each call's result (isError, text, structured content). The Rust
side asserts.

With LG_RESOURCES=1 it also lists the prompts, resources and resource templates, gets one prompt
(LG_PROMPT names it; else the first listed that needs no argument) and reads the first resource
listed, then the URIs of LG_READS (a JSON array), and adds them to its JSON: `prompts`, `resources`
(URI and name), `templates`, `prompt` (its messages' texts, or the JSON-RPC error) and `reads`
(each read's texts, or the JSON-RPC error).
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


def rpc_error(e):
    return {"rpcError": e.error.message, "code": e.error.code}


async def resources(session, out):
    prompts = (await session.list_prompts()).prompts
    out["prompts"] = [p.name for p in prompts]
    listed = (await session.list_resources()).resources
    out["resources"] = [{"uri": str(r.uri), "name": r.name} for r in listed]
    templates = (await session.list_resource_templates()).resourceTemplates
    out["templates"] = [{"uriTemplate": t.uriTemplate, "name": t.name} for t in templates]
    name = os.environ.get("LG_PROMPT") or next(
        p.name for p in prompts if not any(a.required for a in p.arguments or [])
    )
    try:
        got = await session.get_prompt(name)
        out["prompt"] = {
            "name": name,
            "texts": [m.content.text for m in got.messages if isinstance(m.content, types.TextContent)],
        }
    except McpError as e:
        out["prompt"] = {"name": name, **rpc_error(e)}
    uris = [str(listed[0].uri)] + json.loads(os.environ.get("LG_READS", "[]"))
    out["reads"] = []
    for uri in uris:
        try:
            read = await session.read_resource(uri)
            texts = [c.text for c in read.contents if isinstance(c, types.TextResourceContents)]
            out["reads"].append({"uri": uri, "texts": texts})
        except McpError as e:
            out["reads"].append({"uri": uri, **rpc_error(e)})


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
            finished = []

            async def one(i, c):
                try:
                    result = await session.call_tool(c["tool"], c.get("arguments") or {})
                    done = {
                        "tool": c["tool"],
                        "isError": bool(result.isError),
                        "text": text_of(result),
                        "structured": result.structuredContent,
                    }
                except McpError as e:
                    done = {"tool": c["tool"], "rpcError": e.error.message, "code": e.error.code}
                finished.append(i)
                return done

            if os.environ.get("LG_CONCURRENT"):
                # All at once; `finished` says in which order they came back.
                out["calls"] = list(await asyncio.gather(*(one(i, c) for i, c in enumerate(CALLS))))
            else:
                for i, c in enumerate(CALLS):
                    out["calls"].append(await one(i, c))
            out["finished"] = finished
            if os.environ.get("LG_RESOURCES"):
                await resources(session, out)
            if os.environ.get("LG_LIST_AGAIN"):
                listed = await session.list_tools()
                out["tools_after"] = [t.name for t in listed.tools]
    print(json.dumps(out))


asyncio.run(main())
