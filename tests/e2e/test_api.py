"""test_api.py: the REST API's answers and every error status.

400 for a malformed body, phone number or call SID; 404 for an unknown
call or transcript; 502 when Twilio refuses (with Twilio's code and
message); 503 when bridged cannot be reached; 504 when Twilio does not
answer in time; 401 without the API's bearer token, 403 with a wrong
one.  Errors are JSON {"success": false, "error": "..."}.
"""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import json_of, wait_for

UNKNOWN_SID = "CA" + "0" * 31 + "1"


def error_of(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.text)
    j = json_of(resp)
    assert j["success"] is False
    assert isinstance(j["error"], str) and j["error"]
    return j["error"]


def test_numbers_over_three_pages(stack_factory):
    stack = stack_factory(numbers=7, max_page_size=3)

    r = stack.api("GET", "/api/numbers")
    assert r.status_code == 200
    numbers = json_of(r)
    expected = stack.tw("GET", "/_fake/numbers")
    assert [n["phoneNumber"] for n in numbers] \
        == [e["phone_number"] for e in expected]
    assert [n["sid"] for n in numbers] == [e["sid"] for e in expected]
    assert [n["friendlyName"] for n in numbers] \
        == [e["friendly_name"] for e in expected]
    assert len(numbers) == 7
    for n in numbers:
        assert set(n) == {"sid", "phoneNumber", "friendlyName"}
        assert n["sid"].startswith("PN") and n["friendlyName"]

    pages = [q for q in stack.tw("GET", "/_fake/requests")
             if q["path"].endswith("/IncomingPhoneNumbers.json")]
    # the readiness probe made one listing too: look at the last one
    last = pages[-3:]
    assert [q["query"].get("Page", "0") for q in last] == ["0", "1", "2"]
    assert all(q["status"] == 200 for q in last)
    assert "PageToken" in last[1]["query"] and "PageToken" in last[2]["query"]


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    b'{"number": 14155550123}',
    b'{"number": "14155550123"}',
    b'{"number": "+0123"}',
    b'{"number": "+1415555012345678"}',
    b'{"number": "+14155550123", "fromNumber": "me"}',
    b'{}',
    b'',
])
def test_call_rejects_malformed_bodies(stack, body):
    r = stack.api("POST", "/api/call", data=body,
                  headers={"Content-Type": "application/json"})
    error_of(r, 400)


@pytest.mark.parametrize("sid", ["", "CA123", "ca" + "0" * 32,
                                 "CA" + "g" * 32, "PN" + "0" * 32])
def test_end_call_rejects_malformed_call_sids(stack, sid):
    error_of(stack.api("POST", "/api/end-call", json={"callSid": sid}), 400)


def test_end_call_of_an_unknown_call_is_404(stack):
    msg = error_of(stack.api("POST", "/api/end-call",
                             json={"callSid": UNKNOWN_SID}), 404)
    assert UNKNOWN_SID in msg


@pytest.mark.parametrize("path", [
    "/api/transcript/CA123",
    "/api/transcript/CA" + "0" * 32 + "%2F..",
    "/api/transcript/" + UNKNOWN_SID + "?format=xml",
])
def test_transcript_rejects_malformed_requests(stack, path):
    error_of(stack.api("GET", path), 400)


PLANTED_SID = "CA" + "7" * 32

# every way out of TRANSCRIPT_DIR a path can spell: dot segments plain,
# percent-encoded, double-encoded and overlong UTF-8, encoded slashes and
# backslashes, absolute paths, NUL; sent as raw bytes, so no client
# library normalises them first
TRAVERSALS = [
    "../" + PLANTED_SID,
    "..%2F" + PLANTED_SID,
    "%2e%2e%2f" + PLANTED_SID,
    "%2E%2E/" + PLANTED_SID,
    ".%2e/" + PLANTED_SID,
    "..%252f" + PLANTED_SID,
    "%c0%ae%c0%ae%c0%af" + PLANTED_SID,
    "..%5c" + PLANTED_SID,
    "..\\" + PLANTED_SID,
    "%2F" + PLANTED_SID,
    "%2Fetc%2Fpasswd",
    "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/etc/passwd",
    "//etc/passwd",
    PLANTED_SID + "%00",
    PLANTED_SID + "%00.json",
    "%00" + PLANTED_SID,
    PLANTED_SID + "%2F..%2F..%2F" + PLANTED_SID,
    "CA" + "7" * 31 + "%2F",
    "CA" + "7" * 16 + "%2E%2E" + "7" * 14,
    PLANTED_SID + "_",
    PLANTED_SID + "*",
    "CA" + "7" * 31 + "?",
]


def raw_get(stack, target):
    """one request with the target exactly as given; (status, body)"""
    with socket.create_connection(("127.0.0.1", stack.port), 10) as s:
        s.sendall(b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\n"
                  b"Host: localhost\r\nConnection: close\r\n"
                  b"Authorization: Bearer " + stack.api_token.encode()
                  + b"\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_transcript_lookup_never_leaves_its_directory(stack):
    # a transcript that exists, but outside TRANSCRIPT_DIR (in its parent):
    # no spelling of a path may serve it
    secret = "the planted transcript must stay unread"
    (stack.dir / (PLANTED_SID + "_+14155550123_2026-11-24T10-00-00-000Z"
                  ".json")).write_text(json.dumps({
                      "callSid": PLANTED_SID, "phoneNumber": "+14155550123",
                      "timestamp": "2026-11-24T10:00:00.000Z",
                      "transcript": [{"role": "user", "text": secret,
                                      "timestamp":
                                      "2026-11-24T10:00:00.000Z"}]}))

    for t in TRAVERSALS:
        for query in ("", "?format=text"):
            status, body = raw_get(stack, "/api/transcript/" + t + query)
            assert status in (400, 404), (t, status)
            assert secret.encode() not in body, t
            assert b"root:" not in body, t

    # nginx is still well, and the lookup itself works
    assert stack.api("GET", "/api/transcript/" + PLANTED_SID).status_code \
        == 404
    (stack.transcripts / ("%s_+14155550123_2026-11-24T10-00-00-000Z.json"
                          % PLANTED_SID)).write_text(
        (stack.dir / (PLANTED_SID + "_+14155550123_2026-11-24T10-00-00-000Z"
                      ".json")).read_text())
    r = stack.api("GET", "/api/transcript/" + PLANTED_SID)
    assert r.status_code == 200 and secret in r.text


def test_transcript_of_an_unknown_call_is_404(stack):
    error_of(stack.api("GET", "/api/transcript/" + UNKNOWN_SID), 404)


def test_twilio_refusal_is_502_with_its_code(stack):
    # a From number the account does not own: Twilio answers 21210
    msg = error_of(stack.api("POST", "/api/call",
                             json={"number": "+14155550123",
                                   "fromNumber": "+15005559999"}), 502)
    assert "21210" in msg


def test_bridged_down_is_503(stack):
    stack.stop_process("bridged")
    deadline = time.monotonic() + 10
    while True:
        r = stack.api("GET", "/api/numbers")
        if r.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    error_of(r, 503)
    error_of(stack.api("POST", "/api/call", json={"number": "+14155550123"}),
             503)


def test_slow_twilio_is_504(stack_factory):
    # a listing is tried again after a time-out, within bridged's deadline
    stack = stack_factory(twilio_timeout_ms=1000,
                          bridged_args=["--twilio-deadline-ms", "2500"])
    stack.tw("POST", "/_fake/config", {"rest_delay_ms": 4000})
    t0 = time.monotonic()
    error_of(stack.api("GET", "/api/numbers"), 504)
    assert time.monotonic() - t0 < 3.5
    stack.tw("POST", "/_fake/config", {"rest_delay_ms": 0})
    assert stack.api("GET", "/api/numbers").status_code == 200


def test_wrong_methods_are_405(stack):
    error_of(stack.api("GET", "/api/call"), 405)
    error_of(stack.api("POST", "/api/numbers"), 405)
    # (DELETE deletes a record: test_records_over_time.py)
    error_of(stack.api("PUT", "/api/transcript/" + UNKNOWN_SID), 405)
    error_of(stack.api("DELETE", "/api/transcripts"), 405)


def test_unsigned_twiml_is_refused(stack):
    r = stack.api("POST", "/twiml",
                  data={"CallSid": UNKNOWN_SID, "Direction": "inbound",
                        "From": "+14155550100"})
    error_of(r, 403)


# --- the bearer token ---------------------------------------------------------

API_PATHS = [("GET", "/api/numbers"), ("POST", "/api/call"),
             ("POST", "/api/end-call"),
             ("GET", "/api/transcript/" + UNKNOWN_SID),
             ("DELETE", "/api/transcript/" + UNKNOWN_SID),
             ("GET", "/api/transcripts")]


@pytest.mark.parametrize("method,path", API_PATHS)
def test_api_without_a_bearer_token_is_401(stack, method, path):
    r = stack.api(method, path, token=False, json={})
    error_of(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")

    # another scheme is no bearer token either
    r = stack.api(method, path, token=False, json={},
                  headers={"Authorization": "Basic dXNlcjpwYXNz"})
    error_of(r, 401)


@pytest.mark.parametrize("method,path", API_PATHS)
def test_api_with_a_wrong_bearer_token_is_403(stack, method, path):
    for wrong in (stack.api_token[:-1], stack.api_token + "x",
                  "x" * len(stack.api_token)):
        error_of(stack.api(method, path, token=wrong, json={}), 403)

    # the right one is let through (to whatever the request deserves)
    assert stack.api(method, path, json={}).status_code not in (401, 403)


def test_api_token_from_a_file_wins(stack_factory, tmp_path):
    f = tmp_path / "api-token"
    f.write_text("token-from-the-file\n")
    stack = stack_factory(extra_http="voice_api_token_file %s;" % f)

    error_of(stack.api("GET", "/api/numbers"), 403)       # the environment's

    # the stack's start-up probe used the environment's token, so it may
    # have been answered before the bridge channel was up
    wait_for(lambda: stack.api("GET", "/api/numbers",
                               token="token-from-the-file").status_code
             != 503, 10, 0.1, "the bridge channel")
    r = stack.api("GET", "/api/numbers", token="token-from-the-file")
    assert r.status_code == 200, r.text


def test_nginx_refuses_to_start_without_an_api_token(stack):
    env = {k: v for k, v in os.environ.items() if k != "VOICE_API_TOKEN"}
    env.update({"PUBLIC_URL": stack.public_url,
                "TWILIO_AUTH_TOKEN": stack.auth_token,
                "TRANSCRIPT_DIR": str(stack.transcripts)})
    out = subprocess.run(["/usr/sbin/nginx", "-t", "-p", str(stack.dir),
                          "-c", str(stack.dir / "nginx.conf")],
                         env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "needs a bearer token" in out.stderr
