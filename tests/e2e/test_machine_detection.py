"""test_machine_detection.py: answering machines.

POST /api/call with "machineDetection": true (or voice_machine_detection
as the location's default) asks Twilio for asynchronous answering-machine
detection with message-end detection; the verdict comes, signed, to
/call-status, and on to the bridged that owns the call.  A person: the
conversation goes on.  A machine whose greeting has ended: the assistant
leaves voice_voicemail_message and hangs up, or hangs up at once without
one -- through Twilio's REST API.  With voice_machine_detection wait the
assistant says nothing before the verdict.  answeredBy is in the record.
"""

import json

from conftest import fixture_bytes, json_of, sent_session, wait_for

CALLEE = "+14155550123"
VOICEMAIL = "Hello, this is Bistro Nine confirming your table for tonight."


def place(stack, **extra):
    body = {"number": CALLEE}
    body.update(extra)
    r = stack.api("POST", "/api/call", json=body)
    assert r.status_code == 200, r.text
    return json_of(r)["callSid"]


def created(stack):
    return [q for q in stack.tw("GET", "/_fake/requests")
            if q["method"] == "POST" and q["path"].endswith("/Calls.json")]


def test_a_person_answers_and_the_conversation_goes_on(stack):
    stack.tw("POST", "/_fake/config", {"next_answered_by": "human",
                                       "amd_delay_ms": 500})
    sid = place(stack, machineDetection=True)

    form = created(stack)[0]["form"]
    assert form["MachineDetection"] == "DetectMessageEnd"
    assert form["AsyncAmd"] == "true"
    assert form["AsyncAmdStatusCallback"] \
        == "https://voice.example.test/call-status"

    call = wait_for(lambda: (lambda c: c["amd"].get("callback_status")
                             and c)(stack.twilio_call(sid)), 20, 0.2,
                    "the verdict")
    assert call["amd"]["callback_status"] == 204
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["answeredBy"] == "human"
    assert rec["endedBy"] == "caller"
    assert [e["role"] for e in rec["transcript"]][:2] == ["user", "assistant"]


def test_a_machine_gets_the_voicemail_then_the_call_ends(stack_factory):
    stack = stack_factory(
        server_include='voice_voicemail_message "%s";' % VOICEMAIL)
    stack.tw("POST", "/_fake/config", {"next_answered_by": "machine_end_beep"})
    sid = place(stack, machineDetection=True)

    call = stack.wait_call_completed(sid)
    assert call["amd"]["verdict"] == "machine_end_beep"
    assert call["ended_by"] == "rest"
    hangup = call["hangup_requests"][0]
    assert hangup["via"] == "rest" and hangup["Status"] == "completed"

    # the message was asked for after the beep, and played to its end
    s = stack.openai_sessions()[0]
    asked = [e for e in s["client_event_types"] if e == "response.create"]
    assert asked, s["client_event_types"]
    echoed = [m["echoed_at_call_ms"] for m in call["marks"] if m["echoed"]]
    assert echoed and max(echoed) <= hangup["at_ms"]
    assert call["amd"]["callback_at_ms"] <= hangup["at_ms"]

    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["answeredBy"] == "machine_end_beep"
    assert rec["endedBy"] == "assistant"
    assert rec["endReason"] == "voicemail"
    assert "leaving a voicemail" in stack.log("bridged")


def test_a_machine_without_a_message_is_hung_up_on(stack):
    stack.tw("POST", "/_fake/config", {"next_answered_by": "machine_end_silence"})
    sid = place(stack, machineDetection=True)
    call = stack.wait_call_completed(sid)
    assert call["ended_by"] == "rest"
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["answeredBy"] == "machine_end_silence"
    assert rec["endedBy"] == "assistant"
    assert rec["endReason"] == "answering machine"


def test_wait_keeps_the_assistant_quiet_until_the_verdict(stack_factory):
    stack = stack_factory(server_include="voice_machine_detection wait;")
    stack.tw("POST", "/_fake/config", {"next_answered_by": "human",
                                       "amd_delay_ms": 6000})

    # the location's default: no machineDetection in the request
    sid = place(stack)
    assert created(stack)[0]["form"]["MachineDetection"] == "DetectMessageEnd"

    # the caller's sentence ends well before the verdict: no answer to it
    s = wait_for(lambda: (lambda ss: ss and ss[0]["speech"] and ss[0])(
        stack.openai_sessions()), 20, 0.2, "the caller's speech")
    td = sent_session(s["session_updates"][0])["audio"]["input"]["turn_detection"]
    assert td["create_response"] is False

    call = wait_for(lambda: (lambda c: c["amd"].get("callback_at_ms")
                             and c)(stack.twilio_call(sid)), 20, 0.2,
                    "the verdict")
    s = stack.openai_sessions()[0]
    assert all(r["trigger"] != "server_vad" for r in s["responses"]), \
        s["responses"]

    # then the assistant talks
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    s = stack.openai_sessions()[0]
    last = sent_session(s["session_updates"][-1])
    assert last["audio"]["input"]["turn_detection"]["create_response"] is True
    assert s["responses"] and s["responses"][0]["trigger"] == "response.create"
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["answeredBy"] == "human"
    assert call["amd"]["verdict"] == "human"


def test_a_forged_verdict_is_refused(stack):
    sid = "CA" + "ab" * 16
    import sys
    from conftest import TOP
    sys.path.insert(0, str(TOP / "tests/fakes"))
    import common
    url = "https://voice.example.test/call-status"
    params = {"AccountSid": stack.account_sid, "CallSid": sid,
              "AnsweredBy": "machine_end_beep",
              "MachineDetectionDuration": "2300"}
    r = stack.api("POST", "/call-status", token=False, data=params,
                  headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert r.status_code == 403
    params["AnsweredBy"] = "robot"
    r = stack.api("POST", "/call-status", token=False, data=params,
                  headers={"X-Twilio-Signature": common.twilio_signature(
                      stack.auth_token, url, params)})
    assert r.status_code == 400
    params["AnsweredBy"] = "human"
    r = stack.api("POST", "/call-status", token=False, data=params,
                  headers={"X-Twilio-Signature": common.twilio_signature(
                      stack.auth_token, url, params)})
    assert r.status_code == 204
