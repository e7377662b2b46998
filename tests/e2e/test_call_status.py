"""test_call_status.py: Twilio's call status callback, signed like every
webhook.

Calls placed through /api/call ask Twilio for every progress event at
voice_status_callback_url (PUBLIC_URL/call-status by default); the fake
Twilio sends them signed, nginx checks each signature and answers 204,
logs the outcome and counts it in voice_status -- also for a call that
was never answered, which gets an empty record with its status.  Forged callbacks -- no signature, a replay with one
parameter changed, the JSON variant with a body that is not the one
hashed -- get 403; a malformed one 400.
"""

import hashlib
import json
import sys
import time

import requests

from conftest import TOP, fixture_bytes, wait_for
from test_call import CALLEE, place_call

sys.path.insert(0, str(TOP / "tests/fakes"))
import common  # noqa: E402

SID = "CA" + "5e" * 16


def callbacks_of(stack, sid, n):
    def done():
        cbs = stack.twilio_call(sid)["callbacks"]
        return cbs if len(cbs) >= n else None
    return wait_for(done, 20, 0.1, "%d status callbacks" % n)


def status_counts(stack):
    total = stack.status_counter("callStatus")
    return {k: v for k, v in total.items() if v}


def test_an_answered_call_reports_every_step(stack):
    sid = place_call(stack, number=CALLEE)

    create = [q for q in stack.tw("GET", "/_fake/requests")
              if q["method"] == "POST" and q["path"].endswith("/Calls.json")]
    form = create[0]["form"]
    assert form["StatusCallback"] == stack.public_url + "/call-status"
    assert form["StatusCallbackMethod"] == "POST"

    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    cbs = callbacks_of(stack, sid, 4)
    assert [(c["event"], c["CallStatus"], c["http_status"]) for c in cbs] \
        == [("initiated", "initiated", 204), ("ringing", "ringing", 204),
            ("answered", "in-progress", 204),
            ("completed", "completed", 204)]
    assert status_counts(stack) == {"initiated": 1, "ringing": 1,
                                    "in-progress": 1, "completed": 1}
    wait_for(lambda: "voice: call %s to %s: completed after " % (sid, CALLEE)
             in stack.log("error"), 10, 0.1, "the completed line")


def test_an_unanswered_call_leaves_a_trace(stack):
    stack.tw("POST", "/_fake/config", {"next_call_outcome": "busy"})
    sid = place_call(stack, number=CALLEE)

    cbs = callbacks_of(stack, sid, 3)
    assert [(c["CallStatus"], c["http_status"]) for c in cbs] \
        == [("initiated", 204), ("ringing", 204), ("busy", 204)]
    assert status_counts(stack) == {"initiated": 1, "ringing": 1, "busy": 1}
    wait_for(lambda: "[notice]" in stack.log("error")
             and "voice: call %s to %s: busy" % (sid, CALLEE)
             in stack.log("error"), 10, 0.1, "the busy notice")

    # no media stream, no OpenAI session; but a record, empty, with what
    # Twilio reported, written by the worker the final status reached
    assert stack.openai_sessions() == []
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["transcript"] == []
    assert (rec["status"], rec["endedBy"], rec["endReason"]) == \
        ("busy", "twilio", "busy"), rec
    assert (rec["direction"], rec["to"], rec["phoneNumber"]) == \
        ("outbound", CALLEE, CALLEE), rec
    assert rec["from"].startswith("+1500555"), rec
    assert stack.transcript_files(sid) == [stack.wait_transcript(sid)]
    # one record, though the status came once per worker's chance
    time.sleep(0.5)
    assert len(stack.transcript_files(sid)) == 1


def post(stack, path, params=None, sig=None, data=None, headers=None):
    h = dict(headers or {})
    if sig is not None:
        h["X-Twilio-Signature"] = sig
    return requests.post(stack.base + path, data=params if data is None
                         else data, headers=h, timeout=10)


def test_forged_and_malformed_callbacks(stack):
    url = stack.public_url + "/call-status"
    params = {"AccountSid": stack.account_sid, "CallSid": SID,
              "CallStatus": "completed", "CallDuration": "42",
              "To": CALLEE, "From": "+15005550001"}
    good = common.twilio_signature(stack.auth_token, url, params)

    assert post(stack, "/call-status", params, good).status_code == 204

    # no signature, a wrong one, a replay with one parameter changed
    assert post(stack, "/call-status", params).status_code == 403
    assert post(stack, "/call-status", params, "A" * 27 + "=").status_code \
        == 403
    changed = dict(params, CallStatus="busy")
    assert post(stack, "/call-status", changed, good).status_code == 403
    added = dict(params, Extra="1")
    assert post(stack, "/call-status", added, good).status_code == 403
    # signed for another URL (the TwiML webhook's)
    other = common.twilio_signature(stack.auth_token,
                                    stack.public_url + "/twiml", params)
    assert post(stack, "/call-status", params, other).status_code == 403

    # signed, but not a call status
    for bad in ({"CallSid": "CA123", "CallStatus": "completed"},
                {"CallSid": SID, "CallStatus": "exploded"},
                {"CallSid": SID}):
        sig = common.twilio_signature(stack.auth_token, url, bad)
        assert post(stack, "/call-status", bad, sig).status_code == 400, bad

    # GET: the parameters are in the signed URL
    q = "CallSid=%s&CallStatus=ringing" % SID
    sig = common.twilio_signature(stack.auth_token, url + "?" + q)
    r = requests.get(stack.base + "/call-status?" + q, timeout=10,
                     headers={"X-Twilio-Signature": sig})
    assert r.status_code == 204
    q2 = "CallSid=%s&CallStatus=no-answer" % SID
    r = requests.get(stack.base + "/call-status?" + q2, timeout=10,
                     headers={"X-Twilio-Signature": sig})
    assert r.status_code == 403

    # the JSON variant: the URL carries the body's SHA-256 and is signed
    # alone
    body = json.dumps({"CallSid": SID, "CallStatus": "failed",
                       "CallDuration": 0}).encode()
    jurl = url + "?bodySHA256=" + hashlib.sha256(body).hexdigest()
    jsig = common.twilio_signature(stack.auth_token, jurl)
    path = jurl[len(stack.public_url):]
    ct = {"Content-Type": "application/json"}
    assert post(stack, path, sig=jsig, data=body, headers=ct).status_code \
        == 204
    # another body under the same hash and signature
    forged = body.replace(b"failed", b"busy\"  ")
    assert post(stack, path, sig=jsig, data=forged, headers=ct) \
        .status_code == 403
    # the right hash of the forged body, but the signature is over the
    # first URL
    fpath = "/call-status?bodySHA256=" + hashlib.sha256(forged).hexdigest()
    assert post(stack, fpath, sig=jsig, data=forged, headers=ct) \
        .status_code == 403
    # signed and hashed, but not an object
    arr = b'["CallSid"]'
    aurl = url + "?bodySHA256=" + hashlib.sha256(arr).hexdigest()
    asig = common.twilio_signature(stack.auth_token, aurl)
    assert post(stack, aurl[len(stack.public_url):], sig=asig, data=arr,
                headers=ct).status_code == 400

    counts = status_counts(stack)
    assert counts == {"completed": 1, "ringing": 1, "failed": 1}, counts

    # after all of it, a call still goes through
    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_transcript(sid)


def test_status_callbacks_can_be_turned_off(stack_factory):
    stack = stack_factory(extra_http="voice_status_callback_url off;")
    sid = place_call(stack, number=CALLEE)
    create = [q for q in stack.tw("GET", "/_fake/requests")
              if q["method"] == "POST" and q["path"].endswith("/Calls.json")]
    assert "StatusCallback" not in create[0]["form"]
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    time.sleep(0.5)
    assert stack.twilio_call(sid)["callbacks"] == []


def test_a_record_waits_for_the_final_status_a_bounded_time(stack):
    # the final status comes 1.5 s after the call ended: the record has it
    stack.tw("POST", "/_fake/config", {"completed_callback": 1500})
    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["status"] == "completed" and rec["duration"] >= 0, rec
    assert len(rec["transcript"]) == 2

    # it never comes: the record is written without it, 10 s after the
    # stream stopped, with the last status Twilio did report
    stack.tw("POST", "/_fake/config", {"completed_callback": "drop"})
    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    t0 = time.monotonic()
    rec = json.loads(stack.wait_transcript(sid, 30).read_text())
    waited = time.monotonic() - t0
    assert 8 < waited < 20, waited
    assert rec["status"] == "in-progress" and "duration" not in rec, rec
    assert len(rec["transcript"]) == 2
    assert "no final status from Twilio within 10000 ms" in stack.log("error")

