"""Tests of tool_server.py, the test stand-in for an operator's tool endpoint.

Run: /usr/bin/python3 -m pytest tests/fakes -q -p no:cacheprovider
The signature is computed here independently (hmac + hashlib), not with tool_server.sign.
"""

import hashlib
import hmac
import json
import os
import queue
import subprocess
import threading
import time

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
SECRET = "tool-secret-0123456789"
CALL_SID = "CA" + "0123456789abcdef" * 2


def start(tmp_path, *args, env=None):
    log = open(os.path.join(str(tmp_path), "tool_server.log"), "w")
    p = subprocess.Popen([PY, os.path.join(HERE, "tool_server.py")] + list(args), stdout=subprocess.PIPE,
                         stderr=log, text=True, env=env)
    q = queue.Queue()
    threading.Thread(target=lambda: q.put(p.stdout.readline()), daemon=True).start()
    try:
        line = q.get(timeout=15)
    except queue.Empty:
        line = ""
    return p, line, log


def stop(p, log):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    log.close()


@pytest.fixture
def tool(tmp_path):
    p, line, log = start(tmp_path, "--port", "0", "--secret", SECRET)
    assert line.startswith("READY "), line
    base = "http://127.0.0.1:%d" % int(line.split()[1])
    yield base
    stop(p, log)


def signed(body, secret=SECRET, t=None):
    t = str(int(time.time())) if t is None else str(t)
    mac = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return "t=%s,v1=%s" % (t, mac)


def body_of(name="get_weather", arguments=None, **extra):
    obj = {"callSid": CALL_SID, "name": name, "arguments": arguments if arguments is not None else {"x": 1}}
    obj.update(extra)
    return json.dumps(obj).encode()


def post(base, path, body, sig="auto", ctype="application/json", timeout=10):
    headers = {"Content-Type": ctype} if ctype else {}
    if sig == "auto":
        sig = signed(body)
    if sig is not None:
        headers["X-Voice-Signature"] = sig
    return requests.post(base + path, data=body, headers=headers, timeout=timeout)


def test_ready_line_and_secret_from_env(tmp_path):
    p, line, log = start(tmp_path, "--port", "0")
    assert p.wait(timeout=10) != 0 and line == ""   # no secret at all: refuses to start
    log.close()
    env = dict(os.environ, VOICE_TOOL_SECRET="from-env")
    p, line, log = start(tmp_path, env=env)
    try:
        assert line.startswith("READY ") and line.count("\n") == 1
        base = "http://127.0.0.1:%d" % int(line.split()[1])
        assert requests.get(base + "/_fake/health").json()["ok"] is True
        b = body_of()
        assert post(base, "/echo", b, sig=signed(b, secret="from-env")).status_code == 200
        assert post(base, "/echo", b).status_code == 401
    finally:
        stop(p, log)


def test_default_echo_and_record(tool):
    b = body_of("book_table", {"people": 2, "time": "19:00"})
    sig = signed(b)
    r = post(tool, "/anything/at/all", b, sig=sig)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"ok": True, "name": "book_table", "arguments": {"people": 2, "time": "19:00"}}
    (rec,) = requests.get(tool + "/_fake/requests").json()
    assert rec["path"] == "/anything/at/all" and rec["method"] == "POST"
    assert rec["body"] == b.decode() and rec["json"]["name"] == "book_table"
    assert rec["headers"]["X-Voice-Signature"] == sig
    assert rec["signature_ok"] is True and rec["answered_status"] == 200 and rec["error"] is None
    assert isinstance(rec["at_ms"], int) and rec["at_ms"] >= 0


def test_signature_refusals(tool):
    b = body_of()
    now = int(time.time())
    good_mac = signed(b, t=now).split("v1=")[1]
    cases = [
        (None, "missing"),
        ("v1=%s" % good_mac, "malformed"),
        ("t=%d,v1=%s" % (now, good_mac[:-2]), "malformed"),
        ("t=%d, v1=%s" % (now, good_mac), "malformed"),
        ("t=%d,v1=%s" % (now, good_mac.upper()), "lowercase"),
        ("t=%d,v1=%s" % (now, "0" * 64), "wrong signature"),
        (signed(b, secret="other"), "wrong signature"),
        (signed(b + b" "), "wrong signature"),             # over other bytes than those sent
        # (signed as sent: a loaded machine may take seconds over the list)
        (lambda: signed(b, t=int(time.time()) - 301), "tolerance"),
        (lambda: signed(b, t=int(time.time()) + 301), "tolerance"),
    ]
    for sig, why in cases:
        sig = sig() if callable(sig) else sig
        r = post(tool, "/echo", b, sig=sig)
        assert r.status_code == 401, (sig, r.text)
        assert set(r.json()) == {"error"} and why in r.json()["error"], (sig, r.json())
    assert post(tool, "/echo", b,
                sig=signed(b, t=int(time.time()) - 290)).status_code == 200
    recs = requests.get(tool + "/_fake/requests").json()
    assert [x["signature_ok"] for x in recs] == [False] * len(cases) + [True]
    assert all(x["answered_status"] == 401 for x in recs[:-1])


def test_body_and_content_type_refusals(tool):
    cases = [
        (body_of(), "text/plain", "Content-Type"),
        (body_of(), None, "Content-Type"),
        (b"not json", "application/json", "not JSON"),
        (b"[1,2]", "application/json", "JSON object"),
        (json.dumps({"callSid": CALL_SID, "name": "x"}).encode(), "application/json", "missing ['arguments']"),
        (body_of(extra=1), "application/json", "extra ['extra']"),
        (body_of(callSid="CA123"), "application/json", "callSid"),
        (body_of(name=""), "application/json", "name"),
        (body_of(arguments="{\"x\": 1}"), "application/json", "arguments must be a JSON object"),
    ]
    for body, ctype, why in cases:
        r = post(tool, "/echo", body, ctype=ctype)
        assert r.status_code == 400, (body, r.text)
        assert why in r.json()["error"], (why, r.json())
    assert post(tool, "/echo", body_of(), ctype="application/json; charset=utf-8").status_code == 200
    assert requests.get(tool + "/echo").status_code == 405


def test_configured_paths(tool):
    r = requests.post(tool + "/_fake/config", json={"paths": {
        "/slow": {"delay_ms": 600}, "/fail": {"status": 500, "body": "internal trouble"},
        "/failjson": {"status": 503, "body": {"error": "down"}}, "/big": {"size": 200000},
        "/fixed": {"reply": {"booked": True}}, "/echo": {}}})
    assert r.status_code == 200 and "/slow" in r.json()["paths"]
    assert requests.post(tool + "/_fake/config", json={"paths": {"/x": {"bogus": 1}}}).status_code == 400
    t = time.time()
    assert post(tool, "/slow", body_of()).status_code == 200 and time.time() - t >= 0.55
    r = post(tool, "/fail", body_of())
    assert r.status_code == 500 and r.text == "internal trouble" and r.headers["Content-Type"].startswith("text/plain")
    r = post(tool, "/failjson", body_of())
    assert r.status_code == 503 and r.json() == {"error": "down"}
    r = post(tool, "/big", body_of("lookup", {"q": "menu"}))
    assert r.status_code == 200 and len(r.content) == 200000
    big = r.json()
    assert big["ok"] is True and big["name"] == "lookup" and big["arguments"] == {"q": "menu"}
    assert post(tool, "/fixed", body_of()).json() == {"booked": True}
    r = post(tool, "/weather", body_of("get_weather", {"location": "Lisbon"}))
    assert r.json()["location"] == "Lisbon" and r.json()["conditions"]
    # a bad signature is refused before any configured behaviour
    t = time.time()
    assert post(tool, "/slow", body_of(), sig=None).status_code == 401 and time.time() - t < 0.4
    recs = requests.get(tool + "/_fake/requests").json()
    assert [x["answered_status"] for x in recs] == [200, 500, 503, 200, 200, 200, 401]
    assert recs[0]["answered_at_ms"] - recs[0]["at_ms"] >= 550
    # reset forgets requests and configured paths, keeps the /weather example
    assert requests.post(tool + "/_fake/reset").json() == {"ok": True}
    assert requests.get(tool + "/_fake/requests").json() == []
    assert set(requests.get(tool + "/_fake/config").json()["paths"]) == {"/weather"}


def test_dropped_connection(tool):
    requests.post(tool + "/_fake/config", json={"paths": {"/drop": {"drop": True}}})
    with pytest.raises(requests.exceptions.ConnectionError):
        post(tool, "/drop", body_of())
    assert post(tool, "/echo", body_of()).status_code == 200
    recs = requests.get(tool + "/_fake/requests").json()
    assert recs[0]["answered_status"] is None and "dropped" in recs[0]["error"]
