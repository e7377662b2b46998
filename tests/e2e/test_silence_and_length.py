"""test_silence_and_length.py: voice_idle_timeout and voice_max_call_duration.

When the caller says nothing for voice_idle_timeout, the assistant
prompts again -- OpenAI's own idle timeout where the turn detection has
one (server_vad), bridged's timer where it does not (semantic_vad) -- and
after voice_idle_prompts unanswered prompts it says goodbye and the call
ends through Twilio's REST API.  Shortly before voice_max_call_duration the
model is told to wrap up; at the limit it says goodbye and the call ends;
a call placed through the API also carries Twilio's TimeLimit.
"""

import json

from conftest import json_of, sent_session


def test_openai_prompts_then_bridged_says_goodbye(stack_factory):
    stack = stack_factory(server_include="voice_idle_timeout 5s;\n"
                                         "voice_idle_prompts 1;")
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]

    call = stack.wait_call_completed(sid, 60)
    s = stack.openai_sessions()[0]

    # OpenAI kept the first silence (server_vad) ...
    first = sent_session(s["session_updates"][0])
    assert first["audio"]["input"]["turn_detection"]["idle_timeout_ms"] \
        == 5000
    assert len(s["idle_timeouts"]) == 1, s["idle_timeouts"]

    # ... then bridged took the last one over, and said goodbye
    last = sent_session(s["session_updates"][-1])
    assert last["audio"]["input"]["turn_detection"]["idle_timeout_ms"] is None
    triggers = [r["trigger"] for r in s["responses"]]
    assert triggers == ["server_vad", "idle_timeout", "response.create"], \
        triggers

    assert call["ended_by"] == "rest"
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["endedBy"] == "assistant" and rec["endReason"] == "idle"
    assert "prompt 1 of 1" in stack.log("bridged")


def test_bridged_keeps_the_idle_timer_without_server_vad(stack_factory):
    stack = stack_factory(server_include="voice_turn_detection semantic_vad;\n"
                                         "voice_idle_timeout 2s;\n"
                                         "voice_idle_prompts 2;")
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]

    call = stack.wait_call_completed(sid, 60)
    s = stack.openai_sessions()[0]
    td = sent_session(s["session_updates"][0])["audio"]["input"]["turn_detection"]
    assert td["type"] == "semantic_vad" and "idle_timeout_ms" not in td
    assert not s["idle_timeouts"]

    # the reply, two prompts, the goodbye
    triggers = [r["trigger"] for r in s["responses"]]
    assert triggers[0] != "response.create"
    assert triggers[1:] == ["response.create"] * 3, triggers
    assert call["ended_by"] == "rest"
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["endReason"] == "idle"
    log = stack.log("bridged")
    assert "prompt 1 of 2" in log and "prompt 2 of 2" in log


def test_the_call_ends_at_its_time_limit(stack_factory):
    stack = stack_factory(server_include="voice_max_call_duration 15s;")
    r = stack.api("POST", "/api/call", json={"number": "+14155550123"})
    assert r.status_code == 200, r.text
    sid = json_of(r)["callSid"]

    form = [q for q in stack.tw("GET", "/_fake/requests")
            if q["path"].endswith("/Calls.json")][0]["form"]
    assert form["TimeLimit"] == "45"

    call = stack.wait_call_completed(sid, 60)
    assert call["ended_by"] == "rest"
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["endedBy"] == "assistant" and rec["endReason"] == "time limit"

    # told to wrap up first, then ended close to the limit
    log = stack.log("bridged")
    assert "told to wrap up" in log
    hangup = call["hangup_requests"][0]["at_ms"]
    assert 15000 <= hangup <= 15000 + 20000, hangup
