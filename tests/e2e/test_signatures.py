"""test_signatures.py: X-Twilio-Signature wherever Twilio calls us.

/twiml by POST (the form's parameters signed), by GET (the query inside
the signed URL) and in the JSON variant (bodySHA256); the media
WebSocket's upgrade, signed over the wss:// URL alone.  Each is accepted
signed as Twilio signs it -- also over the URL with the default port --
and refused with 403 when the signature is missing, made over another URL
(https:// instead of wss://) or replayed with one parameter changed; a
refused request never reaches bridged.  Turning the check off is an
explicit directive, warned about at start.
"""

import hashlib
import json
import socket
import sys

import requests

from conftest import TOP, fixture_bytes

sys.path.insert(0, str(TOP / "tests/fakes"))
import common  # noqa: E402

SID = "CA" + "9f" * 16
PARAMS = {"AccountSid": "AC" + "01" * 16, "CallSid": SID,
          "CallStatus": "ringing", "Direction": "inbound",
          "From": "+14155550100", "To": "+15005550001",
          "CallerName": "Jane Doe"}


def twiml(stack, method="POST", params=None, sig=None, query="",
          data=None, headers=None):
    h = dict(headers or {})
    if sig is not None:
        h["X-Twilio-Signature"] = sig
    return requests.request(method, stack.base + "/twiml" + query,
                            data=params if data is None else data,
                            headers=h, timeout=10)


def test_twiml_signatures(stack):
    url = stack.public_url + "/twiml"
    sig = common.twilio_signature(stack.auth_token, url, PARAMS)

    r = twiml(stack, params=PARAMS, sig=sig)
    assert r.status_code == 200 and "<Stream" in r.text

    # the same request with the default port in the signed URL
    sig443 = common.twilio_signature(
        stack.auth_token, "https://voice.example.test:443/twiml", PARAMS)
    assert twiml(stack, params=PARAMS, sig=sig443).status_code == 200

    # replayed with one parameter changed, added or dropped
    for k, v in (("From", "+14155550101"), ("CallerName", "Jane  Doe"),
                 ("Extra", "1")):
        assert twiml(stack, params=dict(PARAMS, **{k: v}),
                     sig=sig).status_code == 403, k
    dropped = dict(PARAMS)
    del dropped["CallerName"]
    assert twiml(stack, params=dropped, sig=sig).status_code == 403
    # no signature, another URL, another token
    assert twiml(stack, params=PARAMS).status_code == 403
    other = common.twilio_signature(stack.auth_token,
                                    stack.public_url + "/twiml2", PARAMS)
    assert twiml(stack, params=PARAMS, sig=other).status_code == 403
    wrong = common.twilio_signature("0" * 32, url, PARAMS)
    assert twiml(stack, params=PARAMS, sig=wrong).status_code == 403

    # GET: the parameters are part of the signed URL
    q = "?CallSid=%s&From=%%2B14155550100&Direction=inbound" % SID
    gsig = common.twilio_signature(stack.auth_token, url + q)
    r = twiml(stack, "GET", sig=gsig, query=q)
    assert r.status_code == 200 and "+14155550100" in r.text
    assert twiml(stack, "GET", sig=gsig,
                 query=q.replace("0100", "0101")).status_code == 403

    # the JSON variant
    body = json.dumps(PARAMS).encode()
    jq = "?bodySHA256=" + hashlib.sha256(body).hexdigest()
    jsig = common.twilio_signature(stack.auth_token, url + jq)
    ct = {"Content-Type": "application/json"}
    r = twiml(stack, sig=jsig, query=jq, data=body, headers=ct)
    assert r.status_code == 200 and SID in r.text
    r = twiml(stack, sig=jsig, query=jq, headers=ct,
              data=body.replace(b"Jane", b"John"))
    assert r.status_code == 403

    # nothing of it reached bridged
    assert SID not in stack.log("bridged")


def test_webhook_bodies_are_bounded(stack):
    # voice_api_max_body_size (16k): by Content-Length, and chunked, where
    # only the read body tells
    big = "CallSid=%s&Pad=%s" % (SID, "x" * 20000)
    assert twiml(stack, data=big).status_code == 413

    def chunks():
        for _ in range(20):
            yield b"x" * 1000
    r = requests.post(stack.base + "/call-status", data=chunks(),
                      timeout=10)
    assert r.status_code == 413
    # the API's bodies the same way
    r = stack.api("POST", "/api/call", data=chunks(),
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "larger than 16384 bytes" in r.text


def upgrade(stack, sig):
    s = socket.create_connection(("127.0.0.1", stack.port), 10)
    head = ("GET /media-stream HTTP/1.1\r\nHost: voice.example.test\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n")
    if sig is not None:
        head += "x-twilio-signature: %s\r\n" % sig
    s.sendall((head + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return int(data.split()[1])


def test_media_stream_signatures(stack):
    wss = "wss://voice.example.test/media-stream"
    assert upgrade(stack, common.twilio_signature(stack.auth_token, wss)) \
        == 101
    assert upgrade(stack, common.twilio_signature(
        stack.auth_token, "wss://voice.example.test:443/media-stream")) == 101

    # the wrong reconstruction: https:// rather than wss://
    assert upgrade(stack, common.twilio_signature(
        stack.auth_token, "https://voice.example.test/media-stream")) == 403
    assert upgrade(stack, None) == 403
    assert upgrade(stack, common.twilio_signature(
        stack.auth_token, wss + "?x=1")) == 403
    assert upgrade(stack, "not a signature") == 403

    # no refused upgrade became a call
    assert stack.openai_sessions() == []

    # and a real call, signed by the fake Twilio, still goes through
    sid = stack.tw("POST", "/_fake/inbound",
                   {"from": "+14155550142"})["callSid"]
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_transcript(sid)


def test_turning_the_check_off_is_warned_about(stack_factory):
    stack = stack_factory(extra_http="voice_signature off;")
    # nginx says so while reading its configuration, on stderr
    assert "[warn]" in stack.log("nginx")
    assert "Twilio signature checking is off" in stack.log("nginx")
    r = twiml(stack, params=PARAMS)
    assert r.status_code == 200
