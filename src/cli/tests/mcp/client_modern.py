"""A client of the stateless 2026-07-28 revision (the official Python SDK 2.x) driving
`luminaguard mcp serve` over stdio: no `initialize` — `server/discover`, then self-contained
requests; a question from the server comes as an *input-required* result, which the SDK
answers through its elicitation callback and retries with the `requestState` handle.

Run by src/cli/tests/mcp.rs as `python client_modern.py MODE` with the server's command line
as a JSON array in LG_SERVER; its last line on stdout is a JSON summary.

Modes:
  stateless  negotiates 2026-07-28; lists tools and checks their schemas; runs a command;
             an asked write approved through input-required happens, one denied does not;
             a client that declared no elicitation is refused at once (nobody to ask).
  http       over streamable HTTP (LG_URL, the bearer token in LG_TOKEN): negotiates
             2026-07-28; its calls carry no session and still share one sandbox.
"""

import asyncio
import json
import os
import sys

import jsonschema
from mcp import types
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

SERVER = json.loads(os.environ.get("LG_SERVER", "[]"))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def text_of(result):
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def params():
    return StdioServerParameters(command=SERVER[0], args=SERVER[1:], env=dict(os.environ))


async def mode_stateless():
    asked = []

    async def answer(context, p):
        asked.append(p.message)
        return types.ElicitResult(action="accept", content={"approve": len(asked) == 1})

    async with Client(params(), elicitation_callback=answer) as c:
        check(c.protocol_version == "2026-07-28", f"negotiated {c.protocol_version}")
        tools = {t.name: t for t in (await c.list_tools()).tools}
        check("run_command" in tools and "approval_wait" in tools, f"tools: {sorted(tools)}")
        for t in tools.values():
            jsonschema.Draft202012Validator.check_schema(t.input_schema)
            jsonschema.Draft202012Validator.check_schema(t.output_schema)

        r = await c.call_tool("run_command", {"command": "echo hi"})
        check(not r.is_error, f"run: {text_of(r)}")
        jsonschema.validate(r.structured_content, tools["run_command"].output_schema)
        check(r.structured_content["stdout"] == "hi\n", f"run: {r.structured_content}")
        sandbox = r.structured_content["sandbox_id"]

        ok = await c.call_tool("write_file", {"path": ".git/approved.txt", "content": "yes\n"})
        check(not ok.is_error, f"approved write: {text_of(ok)}")
        jsonschema.validate(ok.structured_content, tools["write_file"].output_schema)
        check("approved" in ok.structured_content["approvals"][0], f"{ok.structured_content}")
        no = await c.call_tool("write_file", {"path": ".git/denied.txt", "content": "no\n"})
        check(no.is_error and "a person was asked" in text_of(no), f"denied: {text_of(no)}")
        check(len(asked) == 2, f"asked {len(asked)} times")
        check("protected-writes" in asked[0] and ".git/approved.txt" in asked[0]
              and "+yes" in asked[0], f"the card: {asked[0]}")
        # State is kept between the session's calls (the same sandbox).
        r = await c.call_tool("run_command", {"command": "cat /workspace/.git/approved.txt"})
        check(r.structured_content["sandbox_id"] == sandbox, "one sandbox")

    async with Client(params()) as c:
        r = await c.call_tool("write_file", {"path": ".git/unasked.txt", "content": "x\n"})
        check(r.is_error and "nobody to ask" in text_of(r), f"no elicitation: {text_of(r)}")
    print(json.dumps({"asked": asked, "sandbox": sandbox}))


async def mode_http():
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {os.environ['LG_TOKEN']}"})
    async with http, Client(streamable_http_client(os.environ["LG_URL"], http_client=http)) as c:
        check(c.protocol_version == "2026-07-28", f"negotiated {c.protocol_version}")
        first = await c.call_tool("run_command", {"command": "echo kept > /tmp/k; echo one"})
        check(not first.is_error, f"first: {text_of(first)}")
        second = await c.call_tool("run_command", {"command": "cat /tmp/k"})
        check(not second.is_error and second.structured_content["stdout"] == "kept\n",
              f"second: {text_of(second)}")
        sandbox = first.structured_content["sandbox_id"]
        check(second.structured_content["sandbox_id"] == sandbox, "one sandbox")
    print(json.dumps({"sandbox": sandbox}))


if __name__ == "__main__":
    asyncio.run({"stateless": mode_stateless, "http": mode_http}[sys.argv[1]]())
