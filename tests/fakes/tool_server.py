#!/usr/bin/python3
"""Test tool endpoint: what an operator's HTTP tool (function) server looks like to the product.

TEST SERVER ONLY. When the model calls a tool, the product POSTs
    {"callSid": "CA...", "name": "<tool name>", "arguments": {...}}
as application/json to the tool's URL, signed with
    X-Voice-Signature: t=<unix seconds>,v1=<lowercase hex HMAC-SHA256(secret, "<t>.<body>")>
where <t> is the header's value as sent and <body> the exact request bytes. This server checks
all of it (constant-time compare, 300 s tolerance on t), answers per path as configured, and
records every request for the tests (GET /_fake/requests).

    /usr/bin/python3 tests/fakes/tool_server.py --secret S [--host 127.0.0.1] [--port 0]

prints exactly one line `READY <port>` on stdout once listening; logs go to stderr. The secret
can come from the environment instead (VOICE_TOOL_SECRET). Run with /usr/bin/python3 only
(Debian's aiohttp). See README.md, "tool_server.py".
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aiohttp import web  # noqa: E402

import common as C  # noqa: E402

log = C.Log("tool-server")

SIG_HEADER = "X-Voice-Signature"
SIG_RE = re.compile(r"^t=(\d{1,20}),v1=([0-9a-fA-F]{64})$")
CALL_SID_RE = re.compile(r"^CA[0-9a-f]{32}$")
TOLERANCE_S = 300
PATH_KEYS = {"delay_ms", "status", "body", "content_type", "size", "reply", "drop"}


def sign(secret, t, body):
    """The signature the product must send: lowercase hex HMAC-SHA256(secret, t + "." + body),
    t as a string (as it appears in the header), body the raw bytes."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return hmac.new(secret.encode("utf-8"), str(t).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret, body, t=None):
    t = int(time.time()) if t is None else t
    return "t=%s,v1=%s" % (t, sign(secret, t, body))


def weather(request_json):
    """The built-in "/weather" example: a tool that looks something up."""
    args = request_json.get("arguments") or {}
    return {"location": args.get("location", "unknown"), "temperature_c": 18, "conditions": "light rain",
            "source": "tool_server.py (fake data)"}


PRESETS = {"/weather": {"reply": "weather"}}


class ToolServer:
    def __init__(self, secret):
        self.secret = secret
        self.t0 = time.monotonic()
        self.requests = []
        self.paths = json.loads(json.dumps(PRESETS))

    def at_ms(self):
        return int(round((time.monotonic() - self.t0) * 1000))

    # ---------------------------------------------------------------- checks
    def check_signature(self, header, body):
        """None when the signature is good, else why not."""
        if header is None:
            return "missing %s header" % SIG_HEADER
        m = SIG_RE.match(header.strip())
        if not m:
            return "malformed %s header (expected t=UNIX_SECONDS,v1=64 lowercase hex)" % SIG_HEADER
        t_raw, v1 = m.group(1), m.group(2)
        if v1 != v1.lower():
            return "malformed %s header: v1 must be lowercase hex" % SIG_HEADER
        expected = sign(self.secret, t_raw, body)
        if not hmac.compare_digest(expected.encode("ascii"), v1.encode("ascii")):
            return "wrong signature"
        skew = int(t_raw) - time.time()
        if abs(skew) > TOLERANCE_S:
            return "timestamp t=%s is %d s from now (tolerance %d s)" % (t_raw, int(skew), TOLERANCE_S)
        return None

    @staticmethod
    def check_body(content_type, body):
        """(parsed JSON, None) or (None, why the body is refused)."""
        base = (content_type or "").split(";")[0].strip().lower()
        if base != "application/json":
            return None, "Content-Type must be application/json, got %r" % content_type
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return None, "body is not JSON: %s" % e
        if not isinstance(obj, dict):
            return None, "body must be a JSON object"
        keys = set(obj)
        want = {"callSid", "name", "arguments"}
        if keys != want:
            return None, "body must have exactly the keys %s (missing %s, extra %s)" % (
                sorted(want), sorted(want - keys), sorted(keys - want))
        if not isinstance(obj["callSid"], str) or not CALL_SID_RE.match(obj["callSid"]):
            return None, "callSid must be CA + 32 lowercase hex, got %r" % (obj["callSid"],)
        if not isinstance(obj["name"], str) or not obj["name"]:
            return None, "name must be a non-empty string"
        if not isinstance(obj["arguments"], dict):
            return None, "arguments must be a JSON object (parse the model's arguments string), got %s" % (
                type(obj["arguments"]).__name__,)
        return obj, None

    # ---------------------------------------------------------------- requests
    async def tool(self, request):
        rec = {"method": request.method, "path": request.path, "query": request.query_string,
               "headers": dict(request.headers), "body": None, "json": None, "signature_ok": False,
               "error": None, "at_ms": self.at_ms(), "answered_status": None, "answered_at_ms": None}
        self.requests.append(rec)
        resp = await self._tool(request, rec)
        if resp is not None:
            rec["answered_status"] = resp.status
        rec["answered_at_ms"] = self.at_ms()
        log("%s %s -> %s%s", request.method, request.path_qs, rec["answered_status"] or "dropped",
            (" (%s)" % rec["error"]) if rec["error"] else "")
        return resp

    def refuse(self, rec, status, why):
        rec["error"] = why
        return web.json_response({"error": why}, status=status)

    async def _tool(self, request, rec):
        if request.method != "POST":
            return self.refuse(rec, 405, "only POST is answered here")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as e:
            return self.refuse(rec, 413, "body too large: %s" % e.text)
        rec["body"] = body.decode("utf-8", "replace")
        why = self.check_signature(request.headers.get(SIG_HEADER), body)
        if why:
            return self.refuse(rec, 401, why)
        rec["signature_ok"] = True
        obj, why = self.check_body(request.headers.get("Content-Type"), body)
        if why:
            return self.refuse(rec, 400, why)
        rec["json"] = obj
        conf = self.paths.get(request.path, {})
        if conf.get("delay_ms"):
            await asyncio.sleep(float(conf["delay_ms"]) / 1000.0)
        if conf.get("drop"):
            rec["error"] = "dropped the connection (configured)"
            if request.transport is not None:
                request.transport.close()
            return None
        status = int(conf.get("status", 200))
        if "body" in conf:
            text = conf["body"] if isinstance(conf["body"], str) else json.dumps(conf["body"])
            ctype = conf.get("content_type")
            if ctype is None:
                try:
                    json.loads(text)
                    ctype = "application/json"
                except ValueError:
                    ctype = "text/plain"
            return web.Response(status=status, body=text.encode("utf-8"), content_type=ctype)
        if conf.get("reply") == "weather":
            answer = weather(obj)
        elif isinstance(conf.get("reply"), dict):
            answer = conf["reply"]
        else:
            answer = {"ok": True, "name": obj["name"], "arguments": obj["arguments"]}
        text = json.dumps(answer, separators=(",", ":"))
        if conf.get("size"):
            size = int(conf["size"])
            head = dict(answer)
            head["padding"] = ""
            room = size - len(json.dumps(head, separators=(",", ":")))
            if room > 0:
                head["padding"] = "x" * room
                text = json.dumps(head, separators=(",", ":"))
        return web.Response(status=status, body=text.encode("utf-8"),
                            content_type=conf.get("content_type", "application/json"))

    # ---------------------------------------------------------------- control
    async def control(self, request):
        path, m = request.path, request.method
        if path == "/_fake/health" and m == "GET":
            return web.json_response({"ok": True, "requests": len(self.requests)})
        if path == "/_fake/requests" and m == "GET":
            return web.json_response(self.requests)
        if path == "/_fake/reset" and m == "POST":
            self.requests.clear()
            self.paths = json.loads(json.dumps(PRESETS))
            return web.json_response({"ok": True})
        if path == "/_fake/config" and m in ("GET", "POST"):
            if m == "POST":
                try:
                    body = await request.json()
                except ValueError:
                    return web.json_response({"error": "body must be JSON"}, status=400)
                err = self.apply_config(body)
                if err:
                    return web.json_response({"error": err}, status=400)
            return web.json_response({"paths": self.paths, "tolerance_s": TOLERANCE_S})
        return web.json_response({"error": "unknown control endpoint %s %s" % (m, path)}, status=404)

    def apply_config(self, body):
        if not isinstance(body, dict) or set(body) - {"paths", "secret"}:
            return "config is {\"paths\": {\"/path\": {...}}} (and optionally \"secret\")"
        if "secret" in body:
            if not isinstance(body["secret"], str) or not body["secret"]:
                return "secret must be a non-empty string"
            self.secret = body["secret"]
        paths = body.get("paths", {})
        if not isinstance(paths, dict):
            return "paths must be an object"
        for p, conf in paths.items():
            if not isinstance(p, str) or not p.startswith("/") or p.startswith("/_fake/"):
                return "bad path %r" % p
            if conf is None:
                self.paths.pop(p, None)
                continue
            if not isinstance(conf, dict) or set(conf) - PATH_KEYS:
                return "path %s: keys are %s" % (p, sorted(PATH_KEYS))
            for k in ("delay_ms", "status", "size"):
                if k in conf and (not isinstance(conf[k], (int, float)) or isinstance(conf[k], bool)
                                  or conf[k] < 0):
                    return "path %s: %s must be a number >= 0" % (p, k)
            if "status" in conf and not 100 <= int(conf["status"]) <= 599:
                return "path %s: status must be 100..599" % p
            self.paths[p] = conf
        log("paths now: %s", json.dumps(self.paths)[:400])
        return None

    async def dispatch(self, request):
        if request.path.startswith("/_fake/"):
            return await self.control(request)
        return await self.tool(request)


async def amain(args, secret):
    server = ToolServer(secret)
    log("TEST tool server (not an operator's real endpoint); signature header %s, tolerance %d s",
        SIG_HEADER, TOLERANCE_S)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", server.dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = C.bind_socket(args.host, args.port)
    await web.SockSite(runner, sock).start()
    port = sock.getsockname()[1]
    log("listening on http://%s:%d", args.host, port)
    C.print_ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log("shutting down")
    await runner.cleanup()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Test tool endpoint (signed JSON POSTs) for the e2e tests.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--secret", help="HMAC secret (default: $VOICE_TOOL_SECRET)")
    args = ap.parse_args(argv)
    secret = args.secret or os.environ.get("VOICE_TOOL_SECRET")
    if not secret:
        ap.error("give --secret or set VOICE_TOOL_SECRET")
    try:
        asyncio.run(amain(args, secret))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
