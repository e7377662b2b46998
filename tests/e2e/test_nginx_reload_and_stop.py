"""test_nginx_reload_and_stop.py: live calls across nginx's own life cycle.

`nginx -s reload` with live calls drops none: the old workers keep their
media WebSockets until the calls end, bridged keeps sending each call's
audio and transcripts to the worker that holds it, and every call's audio
both ways and its record are complete.  A graceful stop (or a reload's old
worker) waits for live calls up to voice_shutdown_timeout, then has their
bridged end them politely -- a goodbye, then Twilio's REST API -- and
writes their records.
"""

import base64
import json
import signal
import time

from conftest import fixture_bytes, fixture_text, wait_for

CALLS = 50


def test_a_reload_drops_no_live_call(stack_factory):
    stack = stack_factory(transcription_delay_ms=[0, 50])
    old = set(stack.status_all())
    sids = [stack.tw("POST", "/_fake/inbound",
                     {"from": "+1415555%04d" % (100 + i)})["callSid"]
            for i in range(CALLS)]
    for sid in sids:
        wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", 30,
                 0.1, "the media stream of " + sid)

    # mid-call: new workers take new connections, the old keep theirs
    stack.procs["nginx"].send_signal(signal.SIGHUP)
    wait_for(lambda: set(stack.status_all()) - old, 20, 0.2,
             "the new workers")

    reply = fixture_bytes("reply")
    for sid in sids:
        stack.wait_reply_heard(sid, len(reply), 60)
    for sid in sids:
        stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    sessions = {s["id"]: s for s in stack.openai_sessions()}
    assert len(sessions) == CALLS
    caller = fixture_bytes("caller")
    for sid in sids:
        call = stack.twilio_call(sid)
        assert call["close_initiator"] == "twilio", sid
        assert base64.b64decode(call["received_audio_b64"]) == reply, sid
        rec = json.loads(stack.wait_transcript(sid, 30).read_text())
        assert [(u["role"], u["text"]) for u in rec["transcript"]] == [
            ("user", fixture_text("caller")),
            ("assistant", fixture_text("reply"))], sid

    # every caller's words reached OpenAI whole, from the first frame
    appended = sorted(base64.b64decode(s["appended_audio_b64"])[:len(caller)]
                      for s in sessions.values())
    assert all(a == caller for a in appended)

    # and the old workers went once their calls were over
    wait_for(lambda: not (set(stack.status_all()) & old), 30, 0.2,
             "the old workers to exit")


def test_a_graceful_stop_ends_live_calls_politely(stack_factory):
    stack = stack_factory(http_include="voice_shutdown_timeout 2s;")
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))

    t0 = time.monotonic()
    stack.procs["nginx"].send_signal(signal.SIGQUIT)

    # the call goes on for the timeout, then a goodbye and Twilio ends it
    time.sleep(1.0)
    assert stack.twilio_call(sid)["status"] == "in-progress"
    call = stack.wait_call_completed(sid, 30)
    assert call["ended_by"] == "rest", call["ended_by"]
    assert call["hangup_requests"][0]["Status"] == "completed"
    assert call["close_initiator"] == "twilio"
    assert "31921" not in json.dumps(call["debugger"])

    s = stack.openai_sessions()[0]
    assert s["responses"][-1]["trigger"] == "response.create"

    assert stack.procs["nginx"].wait(20) == 0
    stopped = time.monotonic() - t0
    assert stopped < 15, stopped

    rec = json.loads(stack.wait_transcript(sid, 10).read_text())
    assert rec["endedBy"] == "server"
    assert rec["endReason"] == "the server stops"
