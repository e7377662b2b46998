"""test_bridged_failover.py: nginx holds the call, bridged is disposable.

A bridged that dies mid-call (kill -9) is noticed by nginx's heartbeat
within 3 s; each of its calls goes to another live bridged with its
settings and its conversation so far (the record's finished entries, as
the HISTORY of a new stream.start), and goes on: the caller speaks again
and hears the assistant, and the record is one, in order.  With no live
bridged a call waits, bounded, for one to answer again -- the same one,
restarted -- holding what the caller says meanwhile, and with none in
time it ends with the fallback message.
"""

import base64
import json
import signal
import threading
import time

from conftest import fixture_bytes, fixture_text, wait_for, FIXTURES


def carrier(stack, sid):
    """the bridged whose log has the call's stream"""
    return wait_for(lambda: next((n for n in stack.bridged_names
                                  if "[%s] stream" % sid in stack.log(n)),
                                 None), 10, 0.1, "the call's bridged")


def noticed(stack):
    """nginx took a bridged for down: its connection dropped, or it left
    its pings unanswered"""
    err = stack.log("error")
    return "dropped its connection" in err or "does not answer" in err


def heard(stack, sid):
    return len(base64.b64decode(stack.twilio_call(sid)["received_audio_b64"]))


def first_turn(stack, sid):
    """the caller's sentence and the whole reply, both in nginx's journal
    of the call (what the next bridged will be given)"""
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))

    def journaled():
        js = list(stack.transcripts.glob(".%s_*.journal" % sid))
        return js and len(js[0].read_text().splitlines()) >= 3
    wait_for(journaled, 10, 0.05, "both utterances in the journal")


def speak_and_hear(stack, sid, what):
    """the caller speaks again and hears the assistant's reply in full"""
    before = heard(stack, sid)
    stack.tw("POST", "/_fake/calls/%s/say" % sid,
             {"audio": str(FIXTURES / "caller.ulaw")})
    wait_for(lambda: heard(stack, sid) >= before + len(fixture_bytes("reply")),
             30, 0.1, what)


def test_a_call_goes_on_when_its_bridged_dies(stack_factory):
    stack = stack_factory(bridges=2, transcription_delay_ms=[0, 20])
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]
    dead = carrier(stack, sid)
    other = [n for n in stack.bridged_names if n != dead][0]
    first_turn(stack, sid)

    t0 = time.monotonic()
    stack.procs[dead].kill()
    wait_for(lambda: "[%s] taking the call over" % sid in stack.log(other),
             10, 0.05, "the other bridged to take the call")
    took = time.monotonic() - t0
    print("bridged killed -> call taken over: %.2f s" % took)
    assert took < 4.5, took

    # the new session starts from the conversation so far, before audio
    s2 = wait_for(lambda: (lambda ss: len(ss) >= 2 and ss[1]["client_items"]
                           and ss[1])(stack.openai_sessions()), 10, 0.1,
                  "the new session's history")
    said = [(i["role"], i["text"]) for i in s2["client_items"]]
    assert said[0][0] == "system"
    assert ("user", fixture_text("caller")) in said, said
    assert ("assistant", fixture_text("reply")) in said, said
    assert all(i["before_first_append"] for i in s2["client_items"])
    # nobody is greeted again
    assert s2["responses"] == []

    # the call goes on: the caller speaks, the assistant answers
    speak_and_hear(stack, sid, "the reply after the hand-over")

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    call = stack.twilio_call(sid)
    assert call["close_initiator"] == "twilio"
    assert call["says"] == []

    rec = json.loads(stack.wait_transcript(sid, 30).read_text())
    roles = [u["role"] for u in rec["transcript"]]
    assert roles == ["user", "assistant", "note", "user", "assistant"], roles
    # a crash: its connection dropped (a hang is "stopped answering")
    assert "its bridged dropped its connection" in rec["transcript"][2][
        "text"], rec["transcript"][2]["text"]

    # a new call works, whichever bridged its SID hashes to
    for _ in range(2):
        sid2 = stack.tw("POST", "/_fake/inbound", {"from": "+14155550101"})[
            "callSid"]
        stack.wait_reply_heard(sid2, len(fixture_bytes("reply")))
        stack.tw("POST", "/_fake/calls/%s/hangup" % sid2, {"wait": True})
        assert "[%s] stream" % sid2 in stack.log(other)


def test_a_call_waits_for_its_bridged_to_come_back(stack_factory):
    stack = stack_factory(transcription_delay_ms=[0, 20])
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]
    first_turn(stack, sid)

    # the only bridged dies and is started again, as a service manager
    # would (./build.sh run does)
    stack.procs["bridged"].kill()
    stack.procs["bridged"].wait()
    wait_for(lambda: noticed(stack), 10, 0.1, "nginx to notice")

    # the caller speaks while there is no bridged at all: nginx holds the
    # audio and gives it to the one that takes the call
    before = heard(stack, sid)
    stack.tw("POST", "/_fake/calls/%s/say" % sid,
             {"audio": str(FIXTURES / "caller.ulaw")})
    time.sleep(len(fixture_bytes("caller")) / 8000 + 0.2)
    stack.start_bridged()   # a fresh log
    wait_for(lambda: "[%s] taking the call over" % sid in stack.log(
        "bridged"), 10, 0.1, "the restarted bridged to take it")
    wait_for(lambda: heard(stack, sid) >= before + len(fixture_bytes("reply")),
             30, 0.1, "the reply to what was said while no bridged was up")
    assert "frames of the caller's audio held during the wait were sent " \
        "on" in stack.log("error")

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid, 30).read_text())
    roles = [u["role"] for u in rec["transcript"]]
    assert roles == ["user", "assistant", "note", "user", "assistant"], roles
    assert rec["transcript"][3]["text"] == fixture_text("caller")
    # the note says how the bridged went, though the call waited between
    assert "its bridged dropped its connection" in rec["transcript"][2][
        "text"], rec["transcript"][2]["text"]


def test_with_no_bridged_the_call_ends_with_the_fallback(stack_factory):
    stack = stack_factory()
    stack.stop_process("bridged")
    wait_for(lambda: noticed(stack), 10, 0.1, "nginx to notice")

    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]
    call = stack.wait_call_completed(sid, 30)
    assert call["close_initiator"] == "app"
    assert len(call["says"]) == 1
    opened = call["streams"][0]["opened_at_ms"]
    waited = call["says"][0]["at_ms"] - opened
    assert 9000 <= waited < 12000, waited
    rec = json.loads(stack.wait_transcript(sid, 30).read_text())
    assert rec["endedBy"] == "bridge"
    assert rec["endReason"] == "bridged is not reachable"


def test_a_hung_bridged_is_found_by_the_heartbeat(stack_factory):
    stack = stack_factory(bridges=2, transcription_delay_ms=[0, 20])
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]
    hung = carrier(stack, sid)
    other = [n for n in stack.bridged_names if n != hung][0]
    first_turn(stack, sid)

    # its connection stays up: only the missed pings tell
    t0 = time.monotonic()
    stack.procs[hung].send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: "[%s] taking the call over" % sid in stack.log(
            other), 10, 0.05, "the other bridged to take the call")
        took = time.monotonic() - t0
        print("bridged hung -> call taken over: %.2f s" % took)
        assert took < 5.0, took
    finally:
        stack.procs[hung].send_signal(signal.SIGCONT)

    # woken, the hung one is told the call left, and ends its part
    wait_for(lambda: "[%s] call done" % sid in stack.log(hung), 15, 0.1,
             "the woken bridged to let the call go")

    speak_and_hear(stack, sid, "the reply after the hand-over")
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    # one record, nothing from the bridged the call left after it did
    rec = json.loads(stack.wait_transcript(sid, 30).read_text())
    roles = [u["role"] for u in rec["transcript"]]
    assert roles == ["user", "assistant", "note", "user", "assistant"], roles


def test_requests_wait_for_a_workers_first_bridged(stack_factory):
    stack = stack_factory()
    stack.stop_process("bridged")
    wait_for(lambda: noticed(stack), 10, 0.1, "nginx to notice")

    # new workers that have not heard from any bridged yet
    old = set(stack.status_all())
    stack.procs["nginx"].send_signal(signal.SIGHUP)
    wait_for(lambda: not (set(stack.status_all()) & old), 20, 0.2,
             "the new workers")

    done = {}

    def ask():
        r = stack.api("GET", "/api/numbers")
        done["status"] = r.status_code
        done["at"] = time.monotonic()

    t = threading.Thread(target=ask)
    t0 = time.monotonic()
    t.start()
    time.sleep(1.0)
    assert "status" not in done, "the request was answered without bridged"
    stack.start_bridged()
    t.join(20)

    # it waited for the first contact, and was answered
    assert done["status"] == 200, done
    assert done["at"] - t0 < 6
    assert "request waits for the first" in stack.log("error")
