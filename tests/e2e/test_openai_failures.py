"""test_openai_failures.py: a call survives what goes wrong with OpenAI.

One mechanism for every reconnect: a call whose OpenAI session goes -- a
connection cut mid-reply, a close 1011, a server error, session_expired,
or its own lifetime -- opens a new session with the same settings and the
conversation so far given back as items, before any caller audio; the
caller's audio during the gap is held and sent on, a reply that was cut
is answered again, and the record notes the hand-over.  Errors that will
not go away (a refused key, no quota, an upgrade refused with 403) are not
retried: the stream closes at once and Twilio speaks the fallback message
after </Connect>.
"""

import base64
import json
import time

import pytest

from conftest import fixture_bytes, fixture_text, sent_session, wait_for


def inbound(stack):
    return stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]


def record(stack, sid):
    return json.loads(stack.wait_transcript(sid).read_text())


def check_caller_audio(stack, sid, sessions, gap_max=1600):
    """What the caller said reached the sessions in order: each session's
    audio is the next stretch of the caller's, with at most gap_max bytes
    (200 ms) written into a connection as it died."""
    sent = base64.b64decode(stack.twilio_call(sid)["sent_audio_b64"])
    at = 0
    for s in sessions:
        got = base64.b64decode(s["appended_audio_b64"])
        if not got:
            continue
        k = sent.find(got, at)
        assert k >= 0, "session %s: its audio is not the caller's" % s["id"]
        assert k - at <= gap_max, "%d bytes of caller audio lost" % (k - at)
        at = k + len(got)
    return at, len(sent)


def check_resumed(s, caller_text):
    """The history came first, as text items, before any audio."""
    items = s["client_items"]
    assert items, "no history given back"
    assert items[0]["role"] == "system"
    assert "technical interruption" in items[0]["text"]
    assert all(i["before_first_append"] for i in items), items
    said = [(i["role"], i["text"]) for i in items[1:]]
    assert ("user", caller_text) in said, said
    return items


@pytest.mark.parametrize("fault", ["abrupt", "1011", "server_error"])
def test_a_session_lost_mid_reply_resumes_with_history(stack_factory, fault):
    stack = stack_factory(transcription_delay_ms=[0, 20])
    if fault == "server_error":
        # the error and its close come when the reply has started
        stack.oai("/_fake/config?pace=1.0")
    else:
        stack.oai("/_fake/config?drop_after_deltas=4&drop_mode=" + fault)

    sid = inbound(stack)
    if fault == "server_error":
        wait_for(lambda: any(r.get("audio_deltas_sent", 0) >= 2
                             for s in stack.openai_sessions()
                             for r in s["responses"]),
                 30, 0.05, "the reply to start")
        stack.oai("/_fake/fatal?code=server_error")

    wait_for(lambda: len(stack.openai_sessions()) >= 2, 30, 0.1,
             "a second session")
    reply = fixture_bytes("reply")

    # the second session answered the cut reply again, in full
    def answered():
        s = stack.openai_sessions()[1]
        return s["responses"] and s["responses"][0].get("status") \
            == "completed" and s
    s2 = wait_for(answered, 30, 0.1, "the reply of the second session")
    first, s2 = stack.openai_sessions()[0], s2
    assert first["responses"][0]["status"] in ("dropped", "cancelled"), \
        first["responses"][0]
    assert s2["responses"][0]["trigger"] == "response.create"
    assert sent_session(s2["session_updates"][0]) == \
        sent_session(first["session_updates"][0])
    check_resumed(s2, fixture_text("caller"))

    # the caller heard the start of the first reply, then all of the second
    heard = base64.b64decode(stack.twilio_call(sid)["received_audio_b64"])
    wait_for(lambda: len(base64.b64decode(stack.twilio_call(sid)[
        "received_audio_b64"])) >= len(reply) + 1, 30, 0.1, "the reply")
    heard = base64.b64decode(stack.twilio_call(sid)["received_audio_b64"])
    assert heard.endswith(reply)

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    call = stack.wait_call_completed(sid)
    assert call["close_initiator"] == "twilio"
    assert "31921" not in json.dumps(call["debugger"])
    check_caller_audio(stack, sid, stack.openai_sessions())

    rec = record(stack, sid)
    roles = [u["role"] for u in rec["transcript"]]
    assert roles[0] == "user" and roles.count("assistant") == 1, roles
    notes = [u["text"] for u in rec["transcript"] if u["role"] == "note"]
    assert len(notes) == 1 and "OpenAI session 2 took over" in notes[0], notes
    text = stack.api("GET", "/api/transcript/%s?format=text" % sid).text
    assert "\nNote: OpenAI session 2 took over" in text

    # and the next call starts afresh
    sid2 = inbound(stack)
    stack.wait_reply_heard(sid2, len(reply))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid2, {"wait": True})
    assert not stack.openai_sessions()[-1]["client_items"]


def test_a_session_moves_at_a_quiet_moment_before_its_lifetime(
        stack_factory):
    stack = stack_factory(bridged_args=["--session-max-s", "3"])
    sid = inbound(stack)

    # the caller's turn and the whole reply, then a quiet moment: moved
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    wait_for(lambda: (lambda ss: len(ss) >= 2 and ss[1]["client_items"])(
        stack.openai_sessions()), 20, 0.1, "the second session's history")
    first, second = stack.openai_sessions()[:2]

    # nothing was cut: the old session was closed politely after its reply
    assert [r["status"] for r in first["responses"]] == ["completed"]
    wait_for(lambda: stack.openai_sessions()[0]["close_code"] is not None,
             10, 0.1, "the first session to close")
    assert stack.openai_sessions()[0]["close_code"] == 1000
    assert stack.openai_sessions()[0]["ended_by"] == "client"

    items = check_resumed(second, fixture_text("caller"))
    assert ("assistant", fixture_text("reply")) in [
        (i["role"], i["text"]) for i in items]
    assert [i["content_types"] for i in items if i["role"] == "assistant"] \
        == [["output_text"]]

    # the last word was the assistant's: the new session waits for the
    # caller rather than speaking
    assert second["responses"] == []

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = record(stack, sid)
    assert [u["role"] for u in rec["transcript"]][:2] == ["user", "assistant"]
    assert any(u["role"] == "note" and "lifetime" in u["text"]
               for u in rec["transcript"])


def test_session_expired_hands_over_to_a_new_session(stack):
    sid = inbound(stack)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    # the caller's words are transcribed (a transcription still due when
    # a session ends goes with it: the utterance in flight)
    wait_for(lambda: stack.openai_sessions()[0]["user_transcripts"], 10,
             0.1, "the caller's transcript")

    stack.oai("/_fake/fatal?code=session_expired")
    wait_for(lambda: len(stack.openai_sessions()) >= 2, 20, 0.1,
             "the second session")
    s2 = wait_for(lambda: (lambda s: s["client_items"] and s)(
        stack.openai_sessions()[1]), 10, 0.1, "history in session 2")
    check_resumed(s2, fixture_text("caller"))
    assert "session expired" in s2["client_items"][0]["text"]

    call = stack.twilio_call(sid)
    assert call["status"] == "in-progress" and call["ws_status"] == "open"
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    check_caller_audio(stack, sid, stack.openai_sessions())


@pytest.mark.parametrize("fault,code", [
    ("api_key=sk-test-revoked", "invalid_api_key"),     # 101, error, 3000
    ("fatal_next=1&fatal_code=insufficient_quota", "insufficient_quota"),
    ("fatal_next=1&fatal_code=invalid_model", "invalid_model"),   # 4000
    ("refuse_next=1&refuse_status=403", "403"),         # upgrade refused
])
def test_an_error_that_will_not_go_away_ends_the_call_with_the_fallback(
        stack, fault, code):
    stack.oai("/_fake/config?" + fault)
    sid = inbound(stack)

    call = stack.wait_call_completed(sid, 30)

    # not retried: one attempt, then the stream closed from our side
    assert len(stack.oai("/_fake/handshakes")) == 1
    assert call["close_initiator"] == "app"
    says = call["says"]
    assert len(says) == 1 and says[0]["text"].startswith(
        "We are sorry, the assistant cannot continue"), says
    opened = call["streams"][0]["opened_at_ms"]
    assert says[0]["at_ms"] - opened < 2000, (opened, says[0]["at_ms"])

    rec = record(stack, sid)
    assert rec["transcript"] == []
    assert rec["endedBy"] == "bridge"
    assert code in rec["endReason"] and "OpenAI" in rec["endReason"], \
        rec["endReason"]

    # a call after the fault is cleared works
    stack.oai("/_fake/config?api_key=" + stack.api_key)
    sid2 = inbound(stack)
    stack.wait_reply_heard(sid2, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid2, {"wait": True})


def test_a_busy_upgrade_is_retried(stack):
    # 503 and 429 are OpenAI being busy: tried again after a backoff
    stack.oai("/_fake/config?refuse_next=2&refuse_status=503"
              "&refuse_retry_after=1")
    sid = inbound(stack)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    assert [h.get("injected") for h in stack.oai("/_fake/handshakes")][:2] \
        == ["refuse_next", "refuse_next"]
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = record(stack, sid)
    assert [u["role"] for u in rec["transcript"]] == ["user", "assistant"]


def test_the_fallback_message_is_configured(stack_factory):
    stack = stack_factory(server_include="voice_fallback_message off;")
    stack.oai("/_fake/config?api_key=sk-test-revoked")
    sid = inbound(stack)
    call = stack.wait_call_completed(sid, 30)
    assert call["says"] == []
    assert "<Say>" not in call["twiml"]


def test_a_session_closes_when_the_caller_hangs_up_mid_reply(stack_factory):
    stack = stack_factory(transcription_delay_ms=[0, 20])
    # a slow reply: about five seconds of audio generated at a quarter of
    # real time would keep the session open long after the caller left
    stack.oai("/_fake/config?pace=0.25")
    sid = inbound(stack)
    wait_for(lambda: stack.twilio_call(sid)["media_messages_received"] > 0,
             30, 0.05, "the reply to start")

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    t0 = time.monotonic()
    wait_for(lambda: stack.openai_sessions()[0]["close_code"] is not None,
             10, 0.05, "the OpenAI session to close")
    closed = time.monotonic() - t0
    s = stack.openai_sessions()[0]
    assert s["close_code"] == 1000
    assert s["responses"][0]["status"] == "cancelled", s["responses"][0]
    # no transcript was due: it closes at once, not when the reply ends
    assert closed < 2.0, closed
    rec = record(stack, sid)
    assert rec["transcript"][0]["role"] == "user"


def test_a_busy_openai_is_tried_a_bounded_number_of_times(stack):
    stack.oai("/_fake/config?refuse_next=50&refuse_status=503")
    sid = inbound(stack)

    # 1 + 5 attempts over about 8 s, then the fallback
    call = stack.wait_call_completed(sid, 40)
    assert len(stack.oai("/_fake/handshakes")) == 6
    assert len(call["says"]) == 1
    waited = call["says"][0]["at_ms"] - call["streams"][0]["opened_at_ms"]
    assert 5000 < waited < 15000, waited
    rec = record(stack, sid)
    assert rec["endedBy"] == "bridge"
    assert rec["endReason"].startswith("OpenAI unreachable"), rec["endReason"]
    assert "503" in rec["endReason"]
