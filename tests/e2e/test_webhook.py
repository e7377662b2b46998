"""test_webhook.py: the post-call webhook (voice_call_webhook).

A receiver of our own (http.server on a free port) checks each POST's
X-Voice-Signature (HMAC-SHA256 of "{t}.{body}" with the secret, t fresh)
and records what came.  A call's final record arrives once, signed, equal
to what GET /api/transcript serves; a call that never connected gets its
record posted too; a receiver that refuses, or answers 500, gets the
record later, from the outbox, as does one behind an nginx that was
restarted or reloaded meanwhile; past voice_call_webhook_retry the record
is given up, with an error line; nginx -t refuses a webhook with no
secret.
"""

import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import threading
import time

from conftest import BUILD, TOP, fixture_bytes, free_port, render, wait_for
from test_metrics import scrape, value
from test_call import CALLEE, place_call


class Receiver:
    """The operator's endpoint: answers each POST with the next status of
    `statuses` (then 200), after checking its signature."""

    def __init__(self, secret, port=None, statuses=()):
        self.secret = secret.encode()
        self.port = port or free_port()
        self.statuses = list(statuses)
        self.got = []           # (headers, body) of each good POST
        self.bad = []           # what failed the signature check
        self.server = None

    def start(self):
        rcv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sig = self.headers.get("X-Voice-Signature", "")
                parts = dict(p.split("=", 1) for p in sig.split(",")
                             if "=" in p)
                want = hmac.new(rcv.secret,
                                parts.get("t", "").encode() + b"." + body,
                                hashlib.sha256).hexdigest()
                fresh = abs(time.time() - int(parts.get("t", "0"))) < 60
                if hmac.compare_digest(want, parts.get("v1", "")) and fresh:
                    status = rcv.statuses.pop(0) if rcv.statuses else 200
                    rcv.got.append((dict(self.headers), body, status))
                else:
                    status = 401
                    rcv.bad.append((dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1",
                                                       self.port), Handler)
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def delivered(self):
        return [g for g in self.got if g[2] == 200]


def hook_conf(port, retry="1d"):
    return ("voice_call_webhook http://127.0.0.1:%d/hook; "
            "voice_call_webhook_retry %s;" % (port, retry))


def webhook_status(stack):
    # the zone's counts: the same in every worker
    return next(iter(stack.status_all(1).values()))["webhook"]


def busy_call(stack):
    stack.tw("POST", "/_fake/config", {"next_call_outcome": "busy"})
    return place_call(stack, number=CALLEE)


def outbox(stack):
    d = stack.transcripts / ".outbox"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def wait_failed_attempt(stack, sid):
    wait_for(lambda: "voice: call %s: webhook to" % sid in stack.log("error"),
             30, 0.1, "a failed attempt")


def check_record(stack, sid, headers, body):
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Voice-Delivery"].startswith(sid + "."), headers
    rec = json.loads(body)
    assert rec["callSid"] == sid
    r = stack.api("GET", "/api/transcript/" + sid)
    assert r.status_code == 200
    assert json.loads(r.content) == rec
    assert stack.wait_transcript(sid).read_bytes() == body
    return rec


def test_a_calls_final_record_is_posted_once_signed(stack_factory):
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port))
    rcv = Receiver(stack.webhook_secret, port).start()
    try:
        sid = place_call(stack, number=CALLEE)
        stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
        stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
        wait_for(lambda: rcv.got, 40, 0.1, "the webhook")
        headers, body, _ = rcv.got[0]
        rec = check_record(stack, sid, headers, body)
        assert rec["status"] == "completed", rec
        assert rec["transcript"], rec
        assert rcv.bad == []
        # once: nothing more comes, the outbox is empty, and it is counted
        time.sleep(6)
        assert len(rcv.got) == 1
        assert outbox(stack) == []
        wait_for(lambda: webhook_status(stack) == {
            "delivered": 1, "failedAttempts": 0, "givenUp": 0,
            "pending": 0}, 10, 0.2, "the counts")
        assert "voice: call %s: webhook delivered to" % sid \
            in stack.log("error")
    finally:
        rcv.stop()


def test_a_call_that_never_connected_is_posted_too(stack_factory):
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port))
    rcv = Receiver(stack.webhook_secret, port).start()
    try:
        sid = busy_call(stack)
        wait_for(lambda: rcv.got, 30, 0.1, "the webhook")
        rec = check_record(stack, sid, *rcv.got[0][:2])
        assert rec["transcript"] == [] and rec["status"] == "busy", rec
    finally:
        rcv.stop()


def test_a_receiver_that_is_down_gets_it_when_it_is_up(stack_factory):
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port))
    sid = busy_call(stack)
    wait_failed_attempt(stack, sid)
    assert len(outbox(stack)) == 1
    wait_for(lambda: webhook_status(stack)["pending"] == 1, 15, 0.2,
             "the entry counted as pending")
    time.sleep(2)
    rcv = Receiver(stack.webhook_secret, port).start()
    try:
        wait_for(lambda: rcv.got, 30, 0.1, "the webhook")
        check_record(stack, sid, *rcv.got[0][:2])
        wait_for(lambda: outbox(stack) == [], 10, 0.1, "the entry to go")
        s = webhook_status(stack)
        assert s["delivered"] == 1 and s["failedAttempts"] >= 2, s
    finally:
        rcv.stop()


def test_a_receiver_that_fails_is_tried_again(stack_factory):
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port))
    rcv = Receiver(stack.webhook_secret, port, statuses=[500, 503]).start()
    try:
        sid = busy_call(stack)
        wait_for(rcv.delivered, 30, 0.1, "the webhook's success")
        assert [g[2] for g in rcv.got] == [500, 503, 200]
        # the same delivery each time
        assert len({g[0]["X-Voice-Delivery"] for g in rcv.got}) == 1
        assert len({g[1] for g in rcv.got}) == 1
        check_record(stack, sid, *rcv.got[-1][:2])
        assert "answered HTTP 500" in stack.log("error")
        wait_for(lambda: outbox(stack) == [], 10, 0.1, "the entry to go")

        # counted where Prometheus reads them, as voice_status shows them
        samples, _ = scrape(stack)
        assert value(samples, "voice_webhook_deliveries_total",
                     outcome="delivered") == 1
        assert value(samples, "voice_webhook_deliveries_total",
                     outcome="failed") == 2
        assert value(samples, "voice_webhook_given_up_total") == 0
        s = webhook_status(stack)
        assert s["delivered"] == 1 and s["failedAttempts"] == 2, s
    finally:
        rcv.stop()


def test_a_pending_record_survives_a_restart_and_a_reload(stack_factory):
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port))
    first = busy_call(stack)
    wait_failed_attempt(stack, first)

    # stopped and started again: the outbox is still there
    stack.stop_process("nginx", signal.SIGQUIT)
    assert len(outbox(stack)) == 1
    stack.start_nginx()
    wait_for(lambda: stack.api("GET", "/api/numbers").status_code != 503,
             10, 0.1, "the bridge channel")

    second = busy_call(stack)
    wait_failed_attempt(stack, second)
    stack.reload_nginx()
    assert len(outbox(stack)) == 2

    rcv = Receiver(stack.webhook_secret, port).start()
    try:
        wait_for(lambda: len(rcv.delivered()) >= 2, 40, 0.1, "both records")
        sids = sorted(json.loads(g[1])["callSid"] for g in rcv.delivered())
        assert sids == sorted([first, second])
        wait_for(lambda: outbox(stack) == [], 10, 0.1, "the entries to go")
    finally:
        rcv.stop()


def test_a_record_is_given_up_after_the_retry_time(stack_factory):
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port, "4s"))
    sid = busy_call(stack)
    wait_for(lambda: "voice: call %s: webhook to \"http://127.0.0.1:%d/hook\" "
             "given up" % (sid, port) in stack.log("error"), 30, 0.2,
             "the webhook given up")
    line = [ln for ln in stack.log("error").splitlines()
            if "given up" in ln and sid in ln][0]
    assert "[error]" in line, line
    assert outbox(stack) == []
    s = webhook_status(stack)
    assert s["givenUp"] == 1 and s["delivered"] == 0, s
    # the first at once, one a second later at least; the last fails too
    assert s["failedAttempts"] >= 2, s
    # the record itself stays
    assert stack.transcript_files(sid)
    samples, _ = scrape(stack)
    assert value(samples, "voice_webhook_given_up_total") == 1
    assert value(samples, "voice_webhook_deliveries_total",
                 outcome="failed") == s["failedAttempts"]
    # the gauge is what the first worker's last look counted
    wait_for(lambda: value(scrape(stack)[0], "voice_webhook_pending") == 0,
             10, 0.5, "the outbox counted empty")


def test_nginx_t_refuses_a_webhook_without_a_secret(tmp_path):
    (tmp_path / "tmp").mkdir()
    values = {
        "RUN_DIR": str(tmp_path),
        "ERROR_LOG": str(tmp_path / "error.log"),
        "MODULE": str(BUILD / "nginx/ngx_http_voice_module.so"),
        "BRIDGE_ENDPOINT": "ipc://%s/b.sock" % tmp_path,
        "LISTEN": "127.0.0.1:%d" % free_port(),
        "EXTRA_HTTP": hook_conf(free_port()),
    }
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(TOP / "conf/nginx.conf.in", values))
    env = {"PATH": os.environ["PATH"], "PUBLIC_URL": "https://v.example",
           "TWILIO_AUTH_TOKEN": "t" * 32, "VOICE_API_TOKEN": "a" * 32,
           "TRANSCRIPT_DIR": str(tmp_path)}

    def nginx_t(extra):
        return subprocess.run(["/usr/sbin/nginx", "-t", "-p", str(tmp_path),
                               "-c", str(conf)], env=dict(env, **extra),
                              capture_output=True, text=True)

    r = nginx_t({})
    assert r.returncode != 0
    assert "\"voice_call_webhook\" needs a secret" in r.stderr, r.stderr

    r = nginx_t({"VOICE_WEBHOOK_SECRET": "short"})
    assert r.returncode != 0
    assert "at least 16 bytes" in r.stderr, r.stderr

    r = nginx_t({"VOICE_WEBHOOK_SECRET": "s" * 32})
    assert r.returncode == 0, r.stderr

    # the secret from a file works too
    (tmp_path / "secret").write_text("f" * 32 + "\n")
    values["EXTRA_HTTP"] += " voice_call_webhook_secret_file %s;" % (
        tmp_path / "secret")
    conf.write_text(render(TOP / "conf/nginx.conf.in", values))
    r = nginx_t({})
    assert r.returncode == 0, r.stderr

    # off where the records are written: no secret needed
    values["EXTRA_HTTP"] = hook_conf(free_port())
    (tmp_path / "off.conf").write_text("voice_call_webhook off;\n")
    values["SERVER_INCLUDE"] = "include %s;" % (tmp_path / "off.conf")
    conf.write_text(render(TOP / "conf/nginx.conf.in", values))
    r = nginx_t({})
    assert r.returncode == 0, r.stderr


def test_a_record_recovered_after_a_crash_is_posted(stack_factory):
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port))
    rcv = Receiver(stack.webhook_secret, port).start()
    try:
        sid = place_call(stack, number=CALLEE)
        stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
        wait_for(lambda: list(stack.transcripts.glob(".%s_*.journal" % sid)),
                 20, 0.1, "the call's journal")
        pid = [p for p, j in stack.status_all().items() if j["calls"]][0]
        stack.expected_log.append(r"worker process %d exited on signal 9"
                                  % pid)
        os.kill(pid, signal.SIGKILL)

        # the next worker makes the journal a record, and posts it
        wait_for(lambda: rcv.got, 40, 0.1, "the recovered record")
        rec = check_record(stack, sid, *rcv.got[0][:2])
        assert rec["incomplete"] is True, rec
        wait_for(lambda: outbox(stack) == [], 10, 0.1, "the entry to go")
    finally:
        rcv.stop()


def test_a_file_that_is_not_an_entry_is_set_aside(stack_factory):
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port))
    box = stack.transcripts / ".outbox"
    box.mkdir()
    (box / ("CA" + "0" * 32 + ".1.hook")).write_text("not an entry\n")
    wait_for(lambda: "files in the webhook outbox" in stack.log("error"),
             20, 0.1, "the file set aside")
    assert outbox(stack) == [".CA%s.1.hook.bad" % ("0" * 32)]
    assert "[error]" in [ln for ln in stack.log("error").splitlines()
                         if "not entries" in ln][0]


def test_a_backlog_drains_once_each(stack_factory):
    """200 records waiting (as after a long outage): each is delivered
    once, a few at a time, none twice"""
    port = free_port()
    stack = stack_factory(extra_http=hook_conf(port))
    box = stack.transcripts / ".outbox"
    box.mkdir()
    made = int(time.time() * 1000)
    url = "http://127.0.0.1:%d/hook" % port
    sids = ["CA%032x" % i for i in range(200)]
    for sid in sids:
        body = json.dumps({"callSid": sid, "transcript": []})
        (box / ("%s.%d.hook" % (sid, made))).write_text(
            "voice-webhook 1\nurl %s\n\n%s" % (url, body))
    rcv = Receiver(stack.webhook_secret, port).start()
    try:
        t0 = time.monotonic()
        wait_for(lambda: len(rcv.got) >= len(sids), 60, 0.1, "the backlog")
        took = time.monotonic() - t0
        wait_for(lambda: outbox(stack) == [], 10, 0.1, "the outbox empty")
        time.sleep(1)
        got = sorted(json.loads(g[1])["callSid"] for g in rcv.got)
        assert got == sids
        print("backlog of %d delivered in %.2f s" % (len(sids), took))
    finally:
        rcv.stop()
