#!/usr/bin/env python3
"""A scripted LLM provider for the agent loop's tests: a local HTTP server speaking the three
wire formats the loop speaks -- OpenAI chat completions (POST /v1/chat/completions), Anthropic
Messages (POST /v1/messages) and Ollama's chat API (POST /api/chat) -- streaming included
(SSE for the first two, NDJSON for Ollama, chunked transfer encoding), that replays a scripted
conversation and records every request it receives.

    scripted_provider.py SCRIPT.json LOG.jsonl PORT_FILE

SCRIPT.json is {"steps": [STEP, ...]}; each request takes the next step:

    {"say": "text", "calls": [{"name": "shell", "arguments": {...}}]}  an answer
    {"calls": [{"name": "shell", "raw_arguments": "{\"comm"}]}        arguments as sent
    {"status": 429, "headers": {"retry-after": "1"}, "message": "..."}  an HTTP error
    {"cut": true, "say": "partial"}      the stream stops mid-way (no terminal event)
    {"garbage": true}                    a chunk that is not JSON
    {"stream_error": "overloaded_error"} the provider's error event mid-stream
    {"hang": 30}                         headers sent, then nothing for 30 s

When the steps run out it answers "script exhausted" and ends its turn. LOG.jsonl gets one line
per request: {"path", "headers" (lowercased), "body"}. The server listens on 127.0.0.1 and
writes its port to PORT_FILE when ready.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCRIPT = json.load(open(sys.argv[1]))
LOG = sys.argv[2]
PORT_FILE = sys.argv[3]
LOCK = threading.Lock()
STEPS = list(SCRIPT["steps"])


def next_step():
    with LOCK:
        if STEPS:
            return STEPS.pop(0)
    return {"say": "script exhausted"}


def call_args(call):
    if "raw_arguments" in call:
        return call["raw_arguments"]
    return json.dumps(call.get("arguments", {}))


def openai_events(step, model):
    """The chunks of an OpenAI stream (each a `data:` payload)."""
    base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}

    def chunk(delta, finish=None):
        return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])

    out = [chunk({"role": "assistant", "content": ""})]
    text = step.get("say", "")
    for i in range(0, len(text), 7):
        out.append(chunk({"content": text[i:i + 7]}))
    for n, call in enumerate(step.get("calls", [])):
        out.append(chunk({"tool_calls": [{"index": n, "id": f"call_{n}_{int(time.time()*1000)}",
                                          "type": "function",
                                          "function": {"name": call["name"], "arguments": ""}}]}))
        args = call_args(call)
        for i in range(0, len(args), 11):
            out.append(chunk({"tool_calls": [{"index": n, "function": {"arguments": args[i:i + 11]}}]}))
    out.append(chunk({}, "tool_calls" if step.get("calls") else "stop"))
    out.append(dict(base, choices=[], usage={"prompt_tokens": 100, "completion_tokens": 20,
                                             "total_tokens": 120}))
    return [json.dumps(c) for c in out] + ["[DONE]"]


def anthropic_events(step, model):
    """(event, data) pairs of an Anthropic stream."""
    out = [("message_start", {"type": "message_start", "message": {
        "id": "msg_scripted", "type": "message", "role": "assistant", "content": [],
        "model": model, "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 1}}})]
    index = 0
    text = step.get("say", "")
    if text:
        out.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}}))
        for i in range(0, len(text), 7):
            out.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": text[i:i + 7]}}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for n, call in enumerate(step.get("calls", [])):
        i = index + n
        out.append(("content_block_start", {"type": "content_block_start", "index": i,
                                            "content_block": {"type": "tool_use",
                                                              "id": f"toolu_{n}_{int(time.time()*1000)}",
                                                              "name": call["name"], "input": {}}}))
        args = call_args(call)
        for k in range(0, len(args), 11):
            out.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                "delta": {"type": "input_json_delta",
                                                          "partial_json": args[k:k + 11]}}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": "tool_use" if step.get("calls") else "end_turn",
                                            "stop_sequence": None},
                                  "usage": {"output_tokens": 20}}))
    out.append(("message_stop", {"type": "message_stop"}))
    return out


def ollama_lines(step, model):
    def line(message, done=False, **extra):
        d = {"model": model, "created_at": "2026-12-05T00:00:00Z", "message": message, "done": done}
        d.update(extra)
        return json.dumps(d)

    out = []
    text = step.get("say", "")
    for i in range(0, len(text), 7):
        out.append(line({"role": "assistant", "content": text[i:i + 7]}))
    calls = step.get("calls", [])
    if calls:
        # Ollama sends tool calls whole, arguments as an object (raw arguments: as a string,
        # which is what a broken server would do).
        wire = []
        for call in calls:
            args = call.get("arguments", {})
            if "raw_arguments" in call:
                args = call["raw_arguments"]
            wire.append({"function": {"name": call["name"], "arguments": args}})
        out.append(line({"role": "assistant", "content": "", "tool_calls": wire}))
    out.append(line({"role": "assistant", "content": ""}, True, done_reason="stop",
                    prompt_eval_count=100, eval_count=20))
    return out


ERROR_BODY = {
    "openai": lambda kind, msg: {"error": {"message": msg, "type": kind, "code": None}},
    "anthropic": lambda kind, msg: {"type": "error", "error": {"type": kind, "message": msg}},
    "ollama": lambda kind, msg: {"error": msg},
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def provider(self):
        if self.path.endswith("/chat/completions"):
            return "openai"
        if self.path.endswith("/v1/messages"):
            return "anthropic"
        if self.path.endswith("/api/chat"):
            return "ollama"
        return None

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        with LOCK:
            with open(LOG, "a") as f:
                f.write(json.dumps({"path": self.path,
                                    "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": body}) + "\n")
        provider = self.provider()
        if provider is None:
            self.send_error(404)
            return
        step = next_step()
        model = body.get("model", "scripted")
        if "status" in step:
            payload = json.dumps(ERROR_BODY[provider](step.get("kind", "rate_limit_error"),
                                                       step.get("message", "scripted error"))).encode()
            self.send_response(step["status"])
            for k, v in step.get("headers", {}).items():
                self.send_header(k, v)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("content-type",
                         "application/x-ndjson" if provider == "ollama" else "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        if "hang" in step:
            self.wfile.flush()
            time.sleep(step["hang"])
            return
        if provider == "openai":
            frames = [f"data: {d}\n\n" for d in openai_events(step, model)]
            err = f"data: {json.dumps(ERROR_BODY['openai'](step.get('stream_error'), 'scripted stream error'))}\n\n"
        elif provider == "anthropic":
            frames = [f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in anthropic_events(step, model)]
            err = f"event: error\ndata: {json.dumps(ERROR_BODY['anthropic'](step.get('stream_error'), 'scripted stream error'))}\n\n"
        else:
            frames = [line + "\n" for line in ollama_lines(step, model)]
            err = json.dumps(ERROR_BODY["ollama"](None, "scripted stream error")) + "\n"
        if step.get("garbage"):
            # After the stream's opening event (Ollama has none: its first line is garbage).
            if provider == "ollama":
                frames = ["{not json\n"]
            else:
                frames = frames[:1] + ["data: {not json\n\n"]
        if step.get("stream_error"):
            frames = frames[:2] + [err]
        cut = step.get("cut", False)
        if cut:
            frames = frames[: max(1, len(frames) // 2)]
        for frame in frames:
            data = frame.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        if cut:
            # The connection drops without the last chunk: a stream cut mid-way.
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(PORT_FILE + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(PORT_FILE + ".tmp", PORT_FILE)
    server.serve_forever()


if __name__ == "__main__":
    main()
