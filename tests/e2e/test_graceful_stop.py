"""test_graceful_stop.py: bridged stops gracefully without dropping calls
on the floor.

A graceful stop (SIGTERM) ends each live call the way every deliberate end
does: Twilio's REST API completes it (never a close of the media stream,
which Twilio logs as an error and follows with the rest of the TwiML), the
record says bridged ended it, and bridged exits within its bounded wait.
An nginx worker that a reload retires keeps its calls, and writes their
records when they end.
"""

import json
import time

from conftest import fixture_bytes


def test_sigterm_ends_live_calls_through_twilio(stack):
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))

    t0 = time.monotonic()
    assert stack.stop_process("bridged") == 0
    assert time.monotonic() - t0 < 6

    call = stack.wait_call_completed(sid, 10)
    assert call["ended_by"] == "rest", call["ended_by"]
    assert call["hangup_requests"][0]["Status"] == "completed"
    assert call["close_initiator"] == "twilio"
    assert "31921" not in json.dumps(call["debugger"])

    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["endedBy"] == "bridge"
    assert rec["endReason"] == "bridged is shutting down"
    assert [e["role"] for e in rec["transcript"]][:2] == ["user", "assistant"]
    assert "asking Twilio to end the call" in stack.log("bridged")


def test_a_call_that_ends_after_a_reload_keeps_its_record(stack):
    # the old worker keeps the call (its media stream) through a reload;
    # when the call ends, it waits for its record's file operations (the
    # thread pool is not something an exiting worker waits for by itself)
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.reload_nginx()

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert [e["role"] for e in rec["transcript"]][:2] == ["user", "assistant"]
    assert rec["endedBy"] == "caller"
