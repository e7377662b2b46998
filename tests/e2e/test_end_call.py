"""test_end_call.py: the assistant hangs up, and hears the keypad.

The model calls the built-in end_call (offered unless voice_end_call off)
after its goodbye: bridged answers the function call, waits until Twilio
has echoed the goodbye's last mark, and only then asks Twilio's REST API
to complete the call (Status=completed) -- never by closing the media
stream.  The record says the assistant ended it and holds the tool call.
Keys the caller presses reach the model as user items and the record as
keypad entries, in conversation order.
"""

import base64
import json

from conftest import fixture_bytes, fixture_text, wait_for

CALLER = "+14155550177"


def script(stack, plans):
    stack.oai("/_fake/config?script=" + requests_quote(json.dumps(plans)))


def requests_quote(s):
    from urllib.parse import quote
    return quote(s, safe="")


def inbound(stack):
    return stack.tw("POST", "/_fake/inbound", {"from": CALLER})["callSid"]


def record(stack, sid):
    return json.loads(stack.wait_transcript(sid).read_text())


def test_end_call_waits_for_the_goodbye_then_completes_by_rest(stack):
    goodbye = "Thank you for calling, goodbye!"
    script(stack, [{"tool": "end_call", "arguments": {"reason": "caller is done"},
                    "say": goodbye}])
    sid = inbound(stack)

    # the caller's sentence gets the goodbye and the hang-up, by REST
    call = stack.wait_call_completed(sid, 40)
    rec = record(stack, sid)

    updates = [q for q in stack.tw("GET", "/_fake/requests")
               if q["method"] == "POST" and q["path"].endswith(sid + ".json")]
    assert len(updates) == 1, updates
    assert updates[0]["form"] == {"Status": "completed"}

    # the media stream was not closed by the server: Twilio stopped it
    assert call["close_initiator"] == "twilio", call["close_initiator"]

    # the whole goodbye was heard, and its last mark echoed, before the
    # REST request came
    assert len(base64.b64decode(call["played_audio_b64"])) \
        >= len(fixture_bytes("reply"))
    echoed = [m["echoed_at_call_ms"] for m in call["marks"] if m["echoed"]]
    assert echoed and not any(m["flushed"] for m in call["marks"])
    assert len(call["hangup_requests"]) == 1
    hangup = call["hangup_requests"][0]
    assert hangup["via"] == "rest" and hangup["Status"] == "completed"
    assert max(echoed) <= hangup["at_ms"], (max(echoed), hangup)
    assert call["ended_by"] == "rest"

    # bridged answered the call and asked for nothing more
    s = stack.openai_sessions()[0]
    assert "end_call" in [t.get("name") for t in s["session"]["tools"]]
    outs = s["function_outputs"]
    assert len(outs) == 1 and json.loads(outs[0]["output"])["ok"] is True
    assert not outs[0]["response_requested"]

    # the record: who ended it, and the tool call in its place
    assert rec["endedBy"] == "assistant"
    assert rec["endReason"] == "caller is done"
    roles = [e["role"] for e in rec["transcript"]]
    assert roles == ["user", "assistant", "tool"], roles
    tool = rec["transcript"][2]
    assert tool["name"] == "end_call"
    assert tool["arguments"] == {"reason": "caller is done"}
    assert json.loads(tool["output"])["ok"] is True
    assert rec["transcript"][1]["text"] == goodbye

    text = stack.api("GET", "/api/transcript/%s?format=text" % sid).text
    assert 'Tool: end_call {"reason":"caller is done"} -> ' in text

    assert "31921" not in json.dumps(call["debugger"])
    assert "asking Twilio to end the call" in stack.log("bridged")


def test_a_lost_echo_costs_a_bounded_wait(stack):
    """the goodbye's last mark never comes back: the call still ends,
    once the goodbye should have played and a margin has passed"""
    stack.tw("POST", "/_fake/config", {"drop_mark_echoes": True})
    script(stack, [{"tool": "end_call", "arguments": {"reason": "done"},
                    "say": "Goodbye!"}])
    sid = inbound(stack)

    call = stack.wait_call_completed(sid, 40)
    assert call["ended_by"] == "rest"
    assert not any(m["echoed"] for m in call["marks"])
    assert "did not finish playing in time (no echo of the last mark)" \
        in stack.log("bridged")

    # the goodbye's 3.2 s, a 2 s margin: well before the 15 s cap
    calls = stack.openai_sessions()[0]["tool_calls"]
    assert calls and calls[0]["name"] == "end_call"
    hangup = call["hangup_requests"][0]["at_ms"]
    first_reply = call["first_reply_audio_ms"]
    assert hangup - first_reply < 12000, (first_reply, hangup)
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["endedBy"] == "assistant"


def test_end_call_off_is_not_offered_and_the_caller_hangs_up(stack_factory):
    stack = stack_factory(server_include="voice_end_call off;")
    sid = inbound(stack)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = record(stack, sid)
    s = stack.openai_sessions()[0]["session"]
    assert "end_call" not in [t.get("name") for t in s.get("tools", [])]
    assert rec["endedBy"] == "caller"


def test_api_end_call_is_in_the_record(stack):
    sid = inbound(stack)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    r = stack.api("POST", "/api/end-call", json={"callSid": sid})
    assert r.status_code == 200, r.text
    rec = record(stack, sid)
    assert rec["endedBy"] == "api"


def test_keypad_reaches_the_model_and_the_record(stack):
    sid = inbound(stack)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))

    stack.tw("POST", "/_fake/calls/%s/dtmf" % sid, {"digit": "5"})

    def told():
        s = stack.openai_sessions()[0]
        return [u["text"] for u in s["user_texts"]]
    assert wait_for(lambda: "The caller pressed 5." in told(), 10,
                    what="the key at the model")

    # the model answers the key press (a response was requested)
    wait_for(lambda: len(stack.openai_sessions()[0]["responses"]) >= 2, 10,
             what="a response to the key")

    stack.tw("POST", "/_fake/calls/%s/dtmf" % sid, {"digit": "#"})
    wait_for(lambda: "The caller pressed #." in told(), 10,
             what="the second key")
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    rec = record(stack, sid)
    keys = [e for e in rec["transcript"] if e["role"] == "dtmf"]
    assert [k["digit"] for k in keys] == ["5", "#"]
    assert set(keys[0]) == {"role", "digit", "timestamp"}

    # in conversation order: the key comes after the first exchange
    roles = [e["role"] for e in rec["transcript"]]
    assert roles.index("dtmf") > roles.index("assistant"), roles

    text = stack.api("GET", "/api/transcript/%s?format=text" % sid).text
    assert "Keypad: 5\n" in text and "Keypad: #\n" in text
    assert text.startswith("User: " + fixture_text("caller"))
