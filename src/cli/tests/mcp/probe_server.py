"""A small MCP server (stdio, the standard library only: it runs in a sandbox on Debian's
python3) that the gateway's tests use as a probe:

- every message it receives is appended to $PROBE_LOG (so a test can show that a refused call
  never arrived);
- its tool `probe`'s description is read from $PROBE_DESCRIPTION_FILE when set (a test changes
  it between runs: a "rug pull");
- `leak` answers with $PROBE_TOKEN (a secret the gateway must redact);
- `crash` exits the process at once (the gateway restarts it);
- `connect` tries a TCP connection (a server with no network must fail);
- `read` reads a file (isolation: what the sandbox hides stays hidden);
- `echo` answers with its text.
"""

import json
import os
import socket
import sys


def log(message):
    path = os.environ.get("PROBE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(message) + "\n")


def description():
    path = os.environ.get("PROBE_DESCRIPTION_FILE")
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    return "Answers with what it is given."


def text_schema(*names):
    return {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "required": list(names),
    }


def tools():
    return [
        {"name": "probe", "description": description(), "inputSchema": text_schema("text")},
        {"name": "echo", "description": "Echoes its text.", "inputSchema": text_schema("text")},
        {"name": "leak", "description": "Tells its token.", "inputSchema": {"type": "object"}},
        {"name": "crash", "description": "Exits at once.", "inputSchema": {"type": "object"}},
        {
            "name": "connect",
            "description": "Connects to HOST:PORT over TCP.",
            "inputSchema": text_schema("host", "port"),
        },
        {"name": "read", "description": "Reads a file.", "inputSchema": text_schema("path")},
    ]


def text(t, error=False):
    return {"content": [{"type": "text", "text": t}], "isError": error}


def call(name, args):
    if name in ("probe", "echo"):
        return text(args.get("text", ""))
    if name == "leak":
        return text("my token is " + os.environ.get("PROBE_TOKEN", "(none)"))
    if name == "crash":
        sys.stdout.flush()
        os._exit(3)
    if name == "connect":
        try:
            s = socket.create_connection((args["host"], int(args["port"])), timeout=3)
            s.close()
            return text("connected")
        except OSError as e:
            return text("failed: %s" % e, error=True)
    if name == "read":
        try:
            with open(args["path"]) as f:
                return text(f.read())
        except OSError as e:
            return text("failed: %s" % e, error=True)
    return None


def answer(msg_id, result=None, error=None):
    out = {"jsonrpc": "2.0", "id": msg_id}
    if error is not None:
        out["error"] = error
    else:
        out["result"] = result
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        log(msg)
        method = msg.get("method")
        if "id" not in msg:
            continue
        if method == "initialize":
            answer(
                msg["id"],
                {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "probe", "version": "1"},
                },
            )
        elif method == "tools/list":
            answer(msg["id"], {"tools": tools()})
        elif method == "tools/call":
            params = msg.get("params", {})
            result = call(params.get("name"), params.get("arguments") or {})
            if result is None:
                answer(msg["id"], error={"code": -32602, "message": "unknown tool"})
            else:
                answer(msg["id"], result)
        elif method == "ping":
            answer(msg["id"], {})
        else:
            answer(msg["id"], error={"code": -32601, "message": "method not found"})


if __name__ == "__main__":
    main()
