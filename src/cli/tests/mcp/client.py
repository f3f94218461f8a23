"""A real MCP client (the official Python SDK) driving `luminaguard mcp serve`.

Run by src/cli/tests/mcp.rs and mcp_http.rs as `python client.py MODE`: over stdio with the
server's command line as a JSON array in LG_SERVER; over streamable HTTP when LG_URL names the
server's endpoint (`http://127.0.0.1:PORT/mcp`), with LG_TOKEN the bearer token and LG_UDS the
unix socket to connect through, if any. Each mode asserts what it checks and exits non-zero on
the first failure; its last line on stdout is a JSON summary for the Rust side.

Modes:
  tools    lists the tools, checks every input and output schema, calls every tool and checks
           each structured result against its tool's output schema; a denied command is a tool
           error naming the rule; wrong argument types are tool errors; an unknown tool is a
           JSON-RPC error; in-process without elicitation an asked write is refused (nobody to
           ask); the server keeps serving throughout.
  elicit   a client with elicitation: the first asked write is approved, the second denied.
  wait     a client without elicitation (through a daemon): the asked write waits for a person.
  pending  (through a daemon, --pending-after 3) progress notices while a command prints; an
           asked write answers pending_approval, which approval_wait resumes once a person
           approved it (src/cli/tests/mcp.rs approves when this prints `pending ID`).
  raw      bad JSON-RPC on the raw pipe: a request before initialize; a line that is not JSON
           (-32700), JSON that is not a message (-32600), parameters that do not fit (-32602),
           a line over the cap (-32600, too large); the server keeps serving throughout.
  pair     (HTTP) two sessions at once, each with elicitation: different sandboxes, neither can
           name the other's; each asked write is put to the session that made it (one
           approves, the other denies).
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys

import httpx
import jsonschema
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

SERVER = json.loads(os.environ.get("LG_SERVER", "[]"))
URL = os.environ.get("LG_URL")


def params():
    return StdioServerParameters(command=SERVER[0], args=SERVER[1:], env=dict(os.environ))


@contextlib.asynccontextmanager
async def connect():
    """The client's two streams: over HTTP when LG_URL is set, else over a launched server's
    stdio."""
    if URL is None:
        async with stdio_client(params()) as (r, w):
            yield r, w
        return
    headers = {}
    if os.environ.get("LG_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['LG_TOKEN']}"
    uds = os.environ.get("LG_UDS")
    transport = httpx.AsyncHTTPTransport(uds=uds) if uds else None
    client = httpx.AsyncClient(headers=headers, transport=transport,
                               timeout=httpx.Timeout(60, read=300))
    async with client:
        async with streamable_http_client(URL, http_client=client) as (r, w, _):
            yield r, w


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def text_of(result):
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def validate_result(tools, name, result):
    check(not result.isError, f"{name} failed: {text_of(result)}")
    check(result.structuredContent is not None, f"{name}: no structured content")
    jsonschema.validate(result.structuredContent, tools[name].outputSchema)
    check(text_of(result), f"{name}: no text rendering")
    return result.structuredContent


async def call(session, tools, name, args):
    return validate_result(tools, name, await session.call_tool(name, args))


async def tool_error(session, name, args):
    result = await session.call_tool(name, args)
    check(result.isError, f"{name} {args} should have failed: {result}")
    return text_of(result)


async def list_tools(session):
    listed = await session.list_tools()
    tools = {t.name: t for t in listed.tools}
    expected = {"run_command", "read_file", "write_file", "list_files", "delete_file",
                "sandbox_create", "sandbox_destroy", "sandbox_list", "approval_wait"}
    check(set(tools) == expected, f"tools: {sorted(tools)}")
    for t in tools.values():
        check(t.inputSchema.get("type") == "object", f"{t.name}: input schema {t.inputSchema}")
        check(t.outputSchema and t.outputSchema.get("type") == "object",
              f"{t.name}: output schema {t.outputSchema}")
        jsonschema.Draft202012Validator.check_schema(t.inputSchema)
        jsonschema.Draft202012Validator.check_schema(t.outputSchema)
        check(t.annotations is not None, f"{t.name}: no annotations")
    for name in ("read_file", "list_files", "sandbox_list"):
        check(tools[name].annotations.readOnlyHint is True, f"{name} is read-only")
    for name in ("run_command", "write_file", "delete_file", "sandbox_destroy"):
        check(tools[name].annotations.readOnlyHint is False, f"{name} changes things")
        check(tools[name].annotations.destructiveHint is True, f"{name} may destroy")
    check(tools["run_command"].annotations.openWorldHint is False, "no network: closed world")
    # The input schemas accept what the tools take and refuse the wrong types.
    jsonschema.validate({"command": "echo hi", "timeout": 5}, tools["run_command"].inputSchema)
    try:
        jsonschema.validate({"path": 7}, tools["read_file"].inputSchema)
        raise AssertionError("read_file's schema accepted a number for path")
    except jsonschema.ValidationError:
        pass
    return tools


async def mode_tools():
    async with connect() as (r, w):
        async with ClientSession(r, w) as session:
            init = await session.initialize()
            check(init.serverInfo.name == "luminaguard", f"server: {init.serverInfo}")
            tools = await list_tools(session)

            check((await call(session, tools, "sandbox_list", {}))["sandboxes"] == [],
                  "no sandbox before the first call")
            out = await call(session, tools, "run_command",
                             {"command": "echo hello; echo oops >&2; exit 3"})
            check(out["exit_code"] == 3 and out["stdout"] == "hello\n"
                  and out["stderr"] == "oops\n" and not out["truncated"], f"run: {out}")
            session_sandbox = out["sandbox_id"]
            out = await call(session, tools, "run_command",
                             {"argv": ["sh", "-c", "echo $X; pwd"], "env": {"X": "42"},
                              "cwd": "/tmp", "timeout": 30})
            check(out["stdout"] == "42\n/tmp\n" and out["exit_code"] == 0, f"argv: {out}")
            check(out["sandbox_id"] == session_sandbox, "one sandbox per session")
            # Output is kept bounded: head and tail, marked.
            out = await call(session, tools, "run_command",
                             {"command": "head -c 300000 /dev/zero | tr '\\0' a; echo END"})
            check(out["truncated"] and out["stdout"].endswith("END\n")
                  and "bytes of output dropped here" in out["stdout"]
                  and len(out["stdout"]) < 70000, f"bounded: {len(out['stdout'])}")
            out = await call(session, tools, "run_command",
                             {"command": "sleep 5", "timeout": 1})
            check(out["timed_out"], f"timeout: {out}")

            err = await tool_error(session, "write_file", {"path": "notes/a.txt", "content": "x"})
            check("Directory nonexistent" in err or "No such file" in err, f"no dir: {err}")
            await call(session, tools, "run_command", {"command": "mkdir notes"})
            w = await call(session, tools, "write_file",
                           {"path": "notes/a.txt", "content": "first line\n"})
            check(w["bytes"] == 11 and w["path"] == "/workspace/notes/a.txt", f"write: {w}")
            rd = await call(session, tools, "read_file", {"path": "/workspace/notes/a.txt"})
            check(rd["content"] == "first line\n" and rd["encoding"] == "utf-8", f"read: {rd}")
            await call(session, tools, "run_command",
                       {"command": "printf '\\377\\376' > /tmp/bin"})
            rd = await call(session, tools, "read_file", {"path": "/tmp/bin"})
            check(rd["encoding"] == "base64" and rd["content"] == "//4=", f"binary: {rd}")
            ls = await call(session, tools, "list_files", {"path": "notes"})
            check([(e["name"], e["kind"], e["size"]) for e in ls["entries"]]
                  == [("a.txt", "file", 11)], f"list: {ls}")
            # State is kept between calls: the file is there for the next command.
            out = await call(session, tools, "run_command", {"command": "cat notes/a.txt"})
            check(out["stdout"] == "first line\n", f"state: {out}")
            # A file outside the workspace: the policy asks; this sandbox's workspace is
            # written directly, and in-process with no elicitation nobody can be asked.
            err = await tool_error(session, "write_file", {"path": ".git/config", "content": "x"})
            check("nobody to ask" in err and "protected-writes" in err, f"held: {err}")
            d = await call(session, tools, "delete_file", {"path": "notes/a.txt"})
            check(d["path"] == "/workspace/notes/a.txt", f"delete: {d}")
            check((await call(session, tools, "list_files", {"path": "notes"}))["entries"] == [],
                  "deleted")
            err = await tool_error(session, "delete_file", {"path": "notes/a.txt"})
            check("No such file" in err, f"delete again: {err}")

            # Denied: a tool error that names the rule and why.
            err = await tool_error(session, "run_command", {"command": "rm -rf /"})
            check("denied by policy" in err and "rm-root" in err, f"deny: {err}")

            other = (await call(session, tools, "sandbox_create", {}))["sandbox_id"]
            check(other != session_sandbox, "a second sandbox")
            listed = await call(session, tools, "sandbox_list", {})
            check({s["sandbox_id"] for s in listed["sandboxes"]} == {session_sandbox, other},
                  f"list: {listed}")
            await call(session, tools, "write_file",
                       {"path": "/tmp/only-here", "content": "x", "sandbox_id": other})
            err = await tool_error(session, "read_file", {"path": "/tmp/only-here"})
            check("only-here" in err, f"sandboxes are separate: {err}")
            out = await call(session, tools, "run_command",
                             {"command": "cat /tmp/only-here", "sandbox_id": other})
            check(out["stdout"] == "x", f"other: {out}")
            await call(session, tools, "sandbox_destroy", {"sandbox_id": other})
            err = await tool_error(session, "run_command",
                                   {"command": "true", "sandbox_id": other})
            check("no sandbox" in err, f"destroyed: {err}")

            # Bad arguments: tool errors the model can act on; the server keeps serving.
            for name, args in [("run_command", {"command": 5}),
                               ("run_command", {}),
                               ("run_command", {"command": "x", "argv": ["y"]}),
                               ("read_file", {}),
                               ("write_file", {"path": "x", "content": "y", "bogus": 1}),
                               ("run_command", {"command": "true", "timeout": "soon"})]:
                err = await tool_error(session, name, args)
                check("invalid-arguments" in err, f"{name} {args}: {err}")
            huge = "y" * (5 << 20)
            err = await tool_error(session, "write_file", {"path": "big", "content": huge})
            check("too-large" in err, f"huge: {err[:200]}")
            try:
                await session.call_tool("no_such_tool", {})
                raise AssertionError("an unknown tool was called")
            except McpError as e:
                check(e.error.code == -32602 and "unknown tool" in e.error.message, f"{e.error}")
            out = await call(session, tools, "run_command", {"command": "echo still here"})
            check(out["stdout"] == "still here\n", "the server keeps serving")
    print(json.dumps({"sandboxes": [session_sandbox, other]}))


async def mode_elicit():
    asked = []

    async def answer(context, p):
        asked.append(p.message)
        # In order: the first approved, the second denied; of the two asked at once, the one
        # that writes "one" approved.
        approve = len(asked) == 1 or (len(asked) > 2 and "+one" in p.message)
        return types.ElicitResult(action="accept", content={"approve": approve})

    async with connect() as (r, w):
        async with ClientSession(r, w, elicitation_callback=answer) as session:
            await session.initialize()
            tools = await list_tools(session)
            ok = await call(session, tools, "write_file",
                            {"path": ".git/approved.txt", "content": "yes\n"})
            check(any("approved" in a for a in ok["approvals"]) or asked, f"approved: {ok}")
            err = await tool_error(session, "write_file",
                                   {"path": ".git/denied.txt", "content": "no\n"})
            check("denied" in err and "a person was asked" in err, f"denied: {err}")
            check(len(asked) == 2, f"asked {len(asked)} times")
            check("protected-writes" in asked[0] and ".git/approved.txt" in asked[0],
                  f"the card: {asked[0]}")
            # A Diff Card of exactly the write: the person sees the content.
            check("Diff Card" in asked[0] and "+yes" in asked[0], f"the diff: {asked[0]}")
            sandbox = ok["sandbox_id"]
            # Two asked at once in one sandbox: both cards wait side by side, each answered
            # for itself.
            one, two = await asyncio.gather(
                session.call_tool("write_file", {"path": ".git/one.txt", "content": "one\n"}),
                session.call_tool("write_file", {"path": ".git/two.txt", "content": "two\n"}))
            check(not one.isError, f"one: {text_of(one)}")
            check(two.isError and "denied" in text_of(two), f"two: {text_of(two)}")
            check(len(asked) == 4, f"asked {len(asked)} times")
    print(json.dumps({"sandboxes": [sandbox], "asked": asked}))


async def mode_wait():
    async with connect() as (r, w):
        async with ClientSession(r, w) as session:
            await session.initialize()
            tools = await list_tools(session)
            out = await call(session, tools, "run_command", {"command": "echo ready"})
            sys.stderr.write(f"session sandbox {out['sandbox_id']}\n")
            sys.stderr.flush()
            ok = await call(session, tools, "write_file",
                            {"path": ".git/waited.txt", "content": "approved\n"})
            check(ok["approvals"] and "approved" in ok["approvals"][0], f"waited: {ok}")
    print(json.dumps({"sandboxes": [ok["sandbox_id"]], "approvals": ok["approvals"]}))


async def mode_pending():
    notes = []

    async def progress(done, total, message):
        notes.append(message or "")

    async with connect() as (r, w):
        async with ClientSession(r, w) as session:
            await session.initialize()
            tools = await list_tools(session)
            out = validate_result(tools, "run_command", await session.call_tool(
                "run_command", {"command": "for i in 1 2 3 4; do echo $i; sleep 1; done"},
                progress_callback=progress))
            check(out["stdout"] == "1\n2\n3\n4\n", f"run: {out}")
            check(len(notes) >= 2 and all("bytes of output" in n for n in notes),
                  f"progress while output arrives: {notes}")
            ran = len(notes)

            p = validate_result(tools, "write_file", await session.call_tool(
                "write_file", {"path": ".git/later.txt", "content": "later\n"},
                progress_callback=progress))
            check(p["status"] == "pending_approval" and p["approval_id"].startswith("ap-")
                  and p["tool"] == "write_file", f"pending: {p}")
            check(any("waiting for a person's approval" in n for n in notes[ran:]),
                  f"progress while a person is awaited: {notes[ran:]}")
            sys.stderr.write(f"pending {p['approval_id']}\n")
            sys.stderr.flush()

            err = await tool_error(session, "approval_wait",
                                   {"approval_id": "ap-0000000000000000"})
            check("not-found" in err, f"unknown approval: {err}")
            waits = 0
            while True:
                waits += 1
                r = validate_result(tools, "approval_wait", await session.call_tool(
                    "approval_wait", {"approval_id": p["approval_id"]}))
                if r["status"] == "done":
                    break
                check(r["status"] == "pending_approval" and waits < 40, f"wait: {r}")
            check(r["tool"] == "write_file" and r["result"]["bytes"] == 6, f"resumed: {r}")
            jsonschema.validate(r["result"], tools["write_file"].outputSchema)
            check(any(p["approval_id"] in a and "approved" in a for a in r["result"]["approvals"]),
                  f"the approval on the result: {r}")
            err = await tool_error(session, "approval_wait", {"approval_id": p["approval_id"]})
            check("not-found" in err, f"collected twice: {err}")
    print(json.dumps({"approval": p["approval_id"], "waits": waits, "notes": notes}))


async def mode_pair():
    asked = {"a": [], "b": []}

    def answerer(who, approve):
        async def answer(context, p):
            asked[who].append(p.message)
            return types.ElicitResult(action="accept", content={"approve": approve})
        return answer

    async with connect() as (ra, wa), connect() as (rb, wb):
        async with ClientSession(ra, wa, elicitation_callback=answerer("a", True)) as a, \
                ClientSession(rb, wb, elicitation_callback=answerer("b", False)) as b:
            await asyncio.gather(a.initialize(), b.initialize())
            tools = await list_tools(a)
            await list_tools(b)
            # The sessions' sandboxes are made at once.
            outs = await asyncio.gather(
                call(a, tools, "run_command", {"command": "echo a > /tmp/who; cat /tmp/who"}),
                call(b, tools, "run_command", {"command": "echo b > /tmp/who; cat /tmp/who"}))
            sa, sb = outs[0]["sandbox_id"], outs[1]["sandbox_id"]
            check(sa != sb, f"one sandbox per session: {sa} {sb}")
            check(outs[0]["stdout"] == "a\n" and outs[1]["stdout"] == "b\n", f"{outs}")
            # Neither session can name the other's sandbox.
            err = await tool_error(a, "run_command", {"command": "true", "sandbox_id": sb})
            check("not-found" in err, f"a naming b's sandbox: {err}")
            err = await tool_error(b, "read_file", {"path": "/tmp/who", "sandbox_id": sa})
            check("not-found" in err, f"b naming a's sandbox: {err}")
            err = await tool_error(b, "sandbox_destroy", {"sandbox_id": sa})
            check("not-found" in err, f"b destroying a's sandbox: {err}")
            # Each question goes to the session that made the call, at the same time.
            ok, err = await asyncio.gather(
                call(a, tools, "write_file", {"path": ".git/from-a.txt", "content": "a\n"}),
                tool_error(b, "write_file", {"path": ".git/from-b.txt", "content": "b\n"}))
            check("denied" in err and "a person was asked" in err, f"b denied: {err}")
            check(len(asked["a"]) == 1 and "from-a.txt" in asked["a"][0], f"a asked: {asked}")
            check(len(asked["b"]) == 1 and "from-b.txt" in asked["b"][0], f"b asked: {asked}")
    print(json.dumps({"sandboxes": [sa, sb], "asked": asked}))


def mode_raw():
    p = subprocess.Popen(SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(obj_or_line):
        if isinstance(obj_or_line, bytes):
            line = obj_or_line
        elif isinstance(obj_or_line, str):
            line = obj_or_line.encode()
        else:
            line = json.dumps(obj_or_line).encode()
        p.stdin.write(line + b"\n")
        p.stdin.flush()

    def recv():
        line = p.stdout.readline()
        check(line, "the server closed its stdout")
        return json.loads(line)

    def error_reply(code, id, what):
        r = recv()
        check(r.get("jsonrpc") == "2.0" and "id" in r and r["id"] == id
              and r.get("error", {}).get("code") == code
              and isinstance(r["error"].get("message"), str), f"{what}: {r}")
        return r

    answered = []
    # Before initialize: a request gets an error; a malformed line -32700; the server waits.
    send({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    r = recv()
    check(r.get("id") == 1 and "error" in r, f"before initialize: {r}")
    send("{this is not json")
    answered.append(error_reply(-32700, None, "malformed before initialize"))
    send({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}})
    r = recv()
    check(r.get("id") == 2 and r["result"]["serverInfo"]["name"] == "luminaguard", f"init: {r}")
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    # Not JSON: -32700, id null (JSON-RPC 2.0 §5.1).
    send("{this is not json")
    answered.append(error_reply(-32700, None, "a malformed line"))
    send(b"\xff\xfe not UTF-8")
    answered.append(error_reply(-32700, None, "a line that is not UTF-8"))
    # JSON that is not a message: -32600, with the id when one can be read.
    send("[]")
    answered.append(error_reply(-32600, None, "an empty batch"))
    send("42")
    answered.append(error_reply(-32600, None, "a number"))
    send({"jsonrpc": "2.0", "id": 5, "method": 5})
    answered.append(error_reply(-32600, 5, "a method that is not a string"))
    send({"jsonrpc": "1.0", "id": "six", "method": "ping"})
    answered.append(error_reply(-32600, "six", "not JSON-RPC 2.0"))
    # A method that exists, with parameters that do not fit it: -32602 with the id.
    send({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": 7}})
    answered.append(error_reply(-32602, 7, "tools/call with a number for a name"))
    # A line over the cap (6 × the 4 MiB file limit + 1 MiB): refused unread, -32600.
    send(b'{"jsonrpc":"2.0","id":8,"method":"ping","params":{"x":"' + b"a" * (26 << 20) + b'"}}')
    r = error_reply(-32600, None, "a line over the cap")
    check("too large" in r["error"]["message"], f"too large: {r}")
    answered.append(r)
    # … and the server keeps serving, in order.
    send({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}})
    r = recv()
    check(r.get("id") == 3 and len(r["result"]["tools"]) == 9, f"after the bad lines: {r}")
    send({"jsonrpc": "2.0", "id": 4, "method": "no/such/method", "params": {}})
    r = recv()
    check(r.get("id") == 4 and r["error"]["code"] == -32601, f"unknown method: {r}")
    p.stdin.close()
    check(p.stdout.read() == b"", "nothing more on stdout")
    check(p.wait(timeout=30) == 0, f"exit status {p.returncode}")
    print(json.dumps({"answered": [[a["id"], a["error"]["code"]] for a in answered]}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "raw":
        mode_raw()
    else:
        asyncio.run({"tools": mode_tools, "elicit": mode_elicit, "wait": mode_wait,
                     "pending": mode_pending, "pair": mode_pair}[mode]())
