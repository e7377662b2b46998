"""test_overload.py: past its limits, the bridge refuses new calls politely
and the calls already up go on.

voice_max_calls counts every worker's calls in the shared zone, ringing
ones included (from /api/call's request or /twiml's answer until the
call's record is written, or until Twilio says it ended unanswered).  Past
it, /twiml answers TwiML that speaks voice_fallback_message and hangs up,
/api/call answers 503 with Retry-After, and a media stream that arrives
anyway is closed with 1013 (try again later), after which Twilio speaks
the fallback.  bridged's own limit (--max-calls) refuses a stream the same
way, and nginx then takes that bridged for full (its pongs say so too)
until it has room again; a call whose own bridged is full goes to another
with room, and only when every one is full is it refused.
"""

import json
import os
import re
import secrets
import signal
import sys
import time

import requests

from conftest import TOP, fixture_bytes, json_of, wait_for

sys.path.insert(0, str(TOP / "tests/lib"))
from voice_proto import owner_hash  # noqa: E402

FALLBACK = "We are sorry, the assistant cannot continue this call"
CALLEE = "+14155550123"


def inbound(stack, caller="+14155550101"):
    return stack.tw("POST", "/_fake/inbound", {"from": caller})["callSid"]


def stream_open(stack, sid, timeout=20):
    wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", timeout,
             0.1, "the media stream of " + sid)


def admitted(stack):
    """the zone's counts, as every worker sees them (one zone: the same;
    the workers are asked one after the other, so a slot let go between
    two answers is read again, not taken for two zones)"""
    for _ in range(20):
        views = [w["admitted"] for w in stack.status_all().values()]
        if all(v == views[0] for v in views):
            return views[0]
        time.sleep(0.05)
    assert all(v == views[0] for v in views), views
    return views[0]


def refusal_pids(stack, what):
    return {m.group(1) for m in re.finditer(
        r"\[notice\] (\d+)#\d+: .*" + re.escape(what), stack.log("error"))}


def refused_by_twiml(call):
    """the TwiML of a refused call: the fallback, then a hang-up, and no
    media stream at all"""
    assert call["streams"] == [], call["streams"]
    assert "<Connect>" not in call["twiml"]
    assert re.search(r"<Say>%s[^<]*</Say><Hangup/></Response>"
                     % re.escape(FALLBACK), call["twiml"]), call["twiml"]
    assert len(call["says"]) == 1
    assert call["says"][0]["text"].startswith(FALLBACK)


def test_voice_max_calls_across_workers(stack_factory):
    stack = stack_factory(extra_http="voice_max_calls 2;")

    a, b = inbound(stack, "+14155550101"), inbound(stack, "+14155550102")
    stream_open(stack, a)
    stream_open(stack, b)
    assert admitted(stack)["calls"] == 2

    # a third inbound call: the fallback, and the call ends
    c = inbound(stack, "+14155550103")
    call = stack.wait_call_completed(c, 30)
    refused_by_twiml(call)

    # /api/call: 503 with Retry-After, on whichever worker answers; fresh
    # connections until both workers have refused (each holds fewer than
    # two calls itself: the count is the instance's)
    for _ in range(200):
        r = stack.api("POST", "/api/call", json={"number": CALLEE},
                      headers={"Connection": "close"})
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5"
        assert "too many calls" in json_of(r)["error"]
        if len(refusal_pids(stack, "/api/call refused: voice_max_calls")) \
                == 2:
            break
    assert len(refusal_pids(stack, "/api/call refused: voice_max_calls")) \
        == 2
    assert not [q for q in stack.tw("GET", "/_fake/requests")
                if q["path"].endswith("/Calls.json")]
    live = sum(w["calls"] for w in stack.status_all().values())
    assert live == 2
    assert admitted(stack)["refused"] >= 3

    # the calls up are not degraded: both hear their assistant in full
    for sid in (a, b):
        stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
        assert stack.twilio_call(sid)["status"] == "in-progress"

    # one ends: once its record is written, a new call is admitted
    stack.tw("POST", "/_fake/calls/%s/hangup" % a, {"wait": True})
    stack.wait_transcript(a)
    wait_for(lambda: admitted(stack)["calls"] == 1, 10, 0.2,
             "the slot to be let go")
    d = inbound(stack, "+14155550104")
    stream_open(stack, d)
    stack.wait_reply_heard(d, len(fixture_bytes("reply")))
    assert admitted(stack)["calls"] == 2

    for sid in (b, d):
        stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
        stack.wait_transcript(sid)
    wait_for(lambda: admitted(stack)["calls"] == 0, 10, 0.2,
             "every slot to be let go")


def test_api_call_is_503_past_the_limit_and_ringing_calls_count(
        stack_factory):
    stack = stack_factory(extra_http="voice_max_calls 1;")
    # the call rings (no stream yet): it counts already
    stack.tw("POST", "/_fake/config", {"ring_ms": 600000})
    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 200, r.text
    sid = json_of(r)["callSid"]
    assert admitted(stack) == dict(admitted(stack), calls=1, waiting=1)

    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    # and an inbound call is refused at /twiml
    stack.tw("POST", "/_fake/config", {"ring_ms": 100})
    c = inbound(stack)
    refused_by_twiml(stack.wait_call_completed(c, 30))

    # the ringing call ends unanswered: Twilio's status callback lets its
    # slot go at once
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    wait_for(lambda: admitted(stack)["calls"] == 0, 10, 0.2,
             "the unanswered call's slot to go")
    stack.tw("POST", "/_fake/config", {"ring_ms": 600000})
    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 200, r.text


def test_a_stream_past_the_limit_is_refused(stack_factory):
    # a stream whose call took no slot (its /twiml went to another host)
    # arrives past the limit: closed with 1013, Twilio speaks the fallback
    stack = stack_factory(extra_http="voice_max_calls 1;")
    a = inbound(stack, "+14155550101")
    stream_open(stack, a)

    # the stand-in for another host's /twiml: the same TwiML, served by
    # the fake itself (inline TwiML through the REST API)
    twiml = stack.twilio_call(a)["twiml"].replace(a, "CA" + "e" * 32)
    r = requests.post(stack.tw_base + "/2010-04-01/Accounts/%s/Calls.json"
                      % stack.account_sid, verify=stack.tw_ca,
                      auth=(stack.account_sid, stack.auth_token),
                      data={"To": CALLEE, "From": "+15005550001",
                            "Twiml": twiml}, timeout=10)
    assert r.status_code == 201, r.text
    b = r.json()["sid"]
    call = stack.wait_call_completed(b, 30)
    assert call["streams"][0]["close_code"] == 1013
    assert call["streams"][0]["close_reason"] == "over capacity"
    assert call["close_initiator"] == "app"
    assert call["says"] and call["says"][0]["text"].startswith(FALLBACK)
    assert "voice_max_calls 1 reached" in stack.log("error")

    # the first call goes on
    stack.wait_reply_heard(a, len(fixture_bytes("reply")))
    assert stack.twilio_call(a)["status"] == "in-progress"
    stack.tw("POST", "/_fake/calls/%s/hangup" % a, {"wait": True})


def test_bridgeds_own_limit_refuses_a_stream(stack_factory):
    # no pong between the two calls (a long heartbeat): bridged's refusal
    # is what tells nginx it is full
    stack = stack_factory(bridged_args=["--max-calls", "1"],
                          extra_http="voice_bridge_heartbeat 30s;")
    # the workers' first pings, 50 ms apart until bridged answers, are
    # over: the next ones come in 30 s
    time.sleep(1)
    a = inbound(stack, "+14155550101")
    stream_open(stack, a)

    b = inbound(stack, "+14155550102")
    call = stack.wait_call_completed(b, 30)
    assert len(call["streams"]) == 1
    assert call["streams"][0]["close_code"] == 1013
    assert call["streams"][0]["close_reason"] == "over capacity"
    assert call["says"] and call["says"][0]["text"].startswith(FALLBACK)
    assert "stream refused: 1 calls already (--max-calls)" \
        in stack.log("bridged")
    assert "bridged refuses the call: bridged has too many calls" \
        in stack.log("error")

    # the call refused has its record: the bridge ended it, and why
    rec = json.loads(stack.wait_transcript(b).read_text())
    assert rec["endedBy"] == "bridge"
    assert rec["endReason"] == "bridged has too many calls"

    # the first call is not degraded
    stack.wait_reply_heard(a, len(fixture_bytes("reply")))
    assert stack.twilio_call(a)["status"] == "in-progress"
    stack.tw("POST", "/_fake/calls/%s/hangup" % a, {"wait": True})


def sids_of_one_owner(n, bridges):
    """n call SIDs the same bridged owns (nginx's FNV-1a of the SID), and
    which one it is"""
    sids, owner = [], None
    while len(sids) < n:
        sid = "CA" + secrets.token_hex(16)
        o = owner_hash(sid) % bridges
        if owner is None:
            owner = o
        if o == owner:
            sids.append(sid)
    return sids, owner


def test_a_call_whose_bridged_is_full_goes_to_one_with_room(stack_factory):
    # two bridged of one call each, and no pong between the calls: nginx
    # learns that a call's owner is full from its refusal
    stack = stack_factory(bridges=2, bridged_args=["--max-calls", "1"],
                          extra_http="voice_bridge_heartbeat 30s;")
    time.sleep(1)
    (a, b, c), o = sids_of_one_owner(3, 2)
    owner, other = stack.bridged_names[o], stack.bridged_names[1 - o]

    stack.tw("POST", "/_fake/inbound", {"from": "+14155550101", "callSid": a})
    stream_open(stack, a)
    wait_for(lambda: ("[%s] stream" % a) in stack.log(owner), 10,
             what="the first call at its owner")

    # the second call's owner is full: it refuses the stream, and the
    # other bridged carries the call, greeting and all
    stack.tw("POST", "/_fake/inbound", {"from": "+14155550102", "callSid": b})
    stack.wait_reply_heard(b, len(fixture_bytes("reply")))
    call = stack.twilio_call(b)
    assert call["status"] == "in-progress", call
    assert len(call["streams"]) == 1 and call["ws_status"] == "open", call
    assert "stream refused: 1 calls already (--max-calls)" \
        in stack.log(owner)
    assert ("[%s] stream" % b) in stack.log(other)
    assert re.search(r"call %s goes to bridged at \"[^\"]+\", which has "
                     r"room" % b, stack.log("error"))
    assert not call["says"], call

    # both are full now: the third call is refused, politely
    stack.tw("POST", "/_fake/inbound", {"from": "+14155550103", "callSid": c})
    call = stack.wait_call_completed(c, 30)
    assert call["says"] and call["says"][0]["text"].startswith(FALLBACK)
    assert all(s.get("close_code") in (None, 1013) for s in call["streams"])

    # the first two are not degraded
    for sid in (a, b):
        assert stack.twilio_call(sid)["status"] == "in-progress"
        stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
        rec = json.loads(stack.wait_transcript(sid).read_text())
        assert rec["endedBy"] == "caller", rec
        assert {e["role"] for e in rec["transcript"]} \
            >= {"user", "assistant"}, rec


def test_a_full_bridged_is_known_from_its_pongs(stack_factory):
    stack = stack_factory(bridged_args=["--max-calls", "1"])
    a = inbound(stack, "+14155550101")
    stream_open(stack, a)

    # within a heartbeat, every worker takes bridged for full
    wait_for(lambda: all(w["bridges"][0]["full"]
                         and w["bridges"][0]["calls"] == 1
                         for w in stack.status_all().values()),
             10, 0.2, "every worker to know bridged is full")
    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    c = inbound(stack, "+14155550103")
    refused_by_twiml(stack.wait_call_completed(c, 30))
    assert "is full" in stack.log("error")

    # it has room again once the call is over
    stack.tw("POST", "/_fake/calls/%s/hangup" % a, {"wait": True})
    wait_for(lambda: not any(w["bridges"][0]["full"]
                             for w in stack.status_all().values()),
             15, 0.2, "bridged to have room")
    stack.tw("POST", "/_fake/config", {"ring_ms": 600000})
    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 200, r.text


def test_a_reload_keeps_the_count(stack_factory):
    stack = stack_factory(extra_http="voice_max_calls 1;")
    a = inbound(stack)
    stream_open(stack, a)
    stack.reload_nginx()

    # the old worker still has the call: the new ones count it
    assert admitted(stack)["calls"] == 1
    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 503, r.text

    # the old worker writes the record: the slot goes, in the same zone
    stack.tw("POST", "/_fake/calls/%s/hangup" % a, {"wait": True})
    stack.wait_transcript(a)
    wait_for(lambda: admitted(stack)["calls"] == 0, 15, 0.2,
             "the slot to be let go")
    stack.tw("POST", "/_fake/config", {"ring_ms": 600000})
    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 200, r.text


def test_no_limit_counts_but_refuses_nothing(stack):
    a = inbound(stack)
    stream_open(stack, a)
    assert admitted(stack)["calls"] == 1
    assert admitted(stack)["refused"] == 0
    stack.tw("POST", "/_fake/calls/%s/hangup" % a, {"wait": True})
    stack.wait_transcript(a)
    wait_for(lambda: admitted(stack)["calls"] == 0, 10, 0.2, "the slot")


def test_a_crashed_workers_calls_stop_counting(stack_factory):
    stack = stack_factory(extra_http="voice_max_calls 1;")
    a = inbound(stack)
    stream_open(stack, a)
    holder = [pid for pid, w in stack.status_all().items() if w["calls"]]
    assert len(holder) == 1

    # the worker that holds the call dies: its call is gone with it, and
    # its slot with it once the limit is reached (nginx respawns a worker)
    os.kill(holder[0], signal.SIGKILL)
    wait_for(lambda: stack.twilio_call(a)["ws_status"] != "open", 10, 0.1,
             "the call's stream to drop")
    stack.tw("POST", "/_fake/config", {"ring_ms": 600000})
    r = wait_for(lambda: (lambda r: r.status_code != 503 and r)(
        stack.api("POST", "/api/call", json={"number": CALLEE})), 10, 0.2,
        "the crashed worker's slot to go")
    assert r.status_code == 200, r.text
    assert admitted(stack)["orphans"] == 1
    assert "which is gone, no longer counts" in stack.log("error")

    # the crash is this test's doing: its [alert] is not a finding
    log = stack.dir / "error.log"
    log.write_text("".join(
        ln for ln in log.read_text().splitlines(True)
        if not ("[alert]" in ln and "exited on signal 9" in ln)))
