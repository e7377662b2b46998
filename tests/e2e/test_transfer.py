"""test_transfer.py: the assistant hands the caller to a person.

transfer_call (offered when voice_transfer_to names destinations)
redirects the live call through Twilio's REST API with TwiML
<Dial callerId=THE_CALL'S_TWILIO_NUMBER action=/twiml...>, once, after
the assistant's last words.  The stream's stop that follows ends bridged's
part without hanging up on the caller.  When nobody answers, Twilio
requests the action and the call comes back to the assistant as a new
stream of the same call, which continues the same record; when the person
answered and hung up, the action ends the call.  A redirect Twilio refuses
goes back to the model as an error, and the call goes on.
"""

import json
from urllib.parse import quote

from conftest import fixture_bytes, wait_for

CALLER = "+14155550199"
SALES = "+14155550111"

INCLUDE = """
    voice_transfer_to sales %s;
    voice_transfer_to desk sip:desk@pbx.example.com;
""" % SALES


def script(stack, plans):
    stack.oai("/_fake/config?script=" + quote(json.dumps(plans), safe=""))


def transfer_plan(dest="sales"):
    return {"tool": "transfer_call",
            "arguments": {"destination": dest, "reason": "wants a quote"},
            "say": "Let me put you through to sales."}


def records(stack, sid):
    return stack.transcript_files(sid)


def test_nobody_answers_and_the_call_comes_back(stack_factory):
    stack = stack_factory(server_include=INCLUDE)
    stack.tw("POST", "/_fake/config", {"dial_outcome": "no-answer",
                                       "dial_ring_ms": 300})
    script(stack, [transfer_plan()])
    sid = stack.tw("POST", "/_fake/inbound", {"from": CALLER})["callSid"]

    # the redirect, once, with the Dial bridged built
    call = wait_for(lambda: (lambda c: len(c["streams"]) >= 2 and c)(
        stack.twilio_call(sid)), 40, 0.2, "the second stream")
    assert call["redirects"] == 1
    redirect = call["redirect_requests"][0]
    twiml = redirect["Twiml"]
    ours = call["to"]
    assert '<Dial callerId="%s" timeout="25"' % ours in twiml, twiml
    assert "<Number>%s</Number>" % SALES in twiml
    assert 'action="https://voice.example.test/twiml?transfer=1&amp;record=' \
        in twiml
    dial = call["dials"][0]
    assert dial["to"] == SALES and dial["outcome"] == "no-answer"
    assert dial["callerId"] == ours

    # the first stream ended by the redirect, not by a hang-up or a close
    first, second = call["streams"][0], call["streams"][1]
    assert first["end"] == "redirected", first
    assert first["close_initiator"] == "twilio"
    assert not call["hangup_requests"]
    assert second["customParameters"]["transfer"] == "no-answer"
    assert second["customParameters"]["record"].isdigit()

    # the new session starts by telling the caller (its item comes once
    # the session is configured, a moment after the session opens)
    sessions = wait_for(lambda: len(stack.openai_sessions()) >= 2
                        and any("did not go through" in u["text"]
                                for u in stack.openai_sessions()[1][
                                    "user_texts"])
                        and stack.openai_sessions(), 20,
                        what="the second session told of the transfer")
    # the first session asked for nothing after the transfer (its output,
    # if it got there before the socket closed, wants no response)
    outs = sessions[0]["function_outputs"]
    assert not any(o["response_requested"] for o in outs), outs
    assert len(sessions[0]["responses"]) == 1

    # (the top-level fields describe the latest stream)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    # one record for the whole call, the transfer in its place
    wait_for(lambda: records(stack, sid) and not list(
        stack.transcripts.glob(".*journal")), 20, what="the record")
    files = records(stack, sid)
    assert len(files) == 1, files
    rec = json.loads(files[0].read_text())
    roles = [e["role"] for e in rec["transcript"]]
    assert roles[:3] == ["user", "assistant", "tool"], roles
    assert roles.count("assistant") >= 2, roles
    tool = rec["transcript"][2]
    assert tool["name"] == "transfer_call"
    assert tool["arguments"] == {"destination": "sales",
                                 "reason": "wants a quote"}
    assert rec["endedBy"] == "caller"
    assert "Twilio took the transfer" in stack.log("bridged")


def test_the_person_answers_and_the_call_ends_there(stack_factory):
    stack = stack_factory(server_include=INCLUDE)
    stack.tw("POST", "/_fake/config", {"dial_outcome": "answered",
                                       "dial_ring_ms": 200,
                                       "dial_talk_ms": 500})
    script(stack, [transfer_plan("desk")])
    sid = stack.tw("POST", "/_fake/inbound", {"from": CALLER})["callSid"]

    call = stack.wait_call_completed(sid, 40)
    dial = call["dials"][0]
    assert dial["to"] == "sip:desk@pbx.example.com"
    assert dial["outcome"] == "completed" and dial["action_status"] == 200
    assert len(call["streams"]) == 1
    assert call["ended_by"] != "app_close"

    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["endedBy"] == "transfer"
    assert rec["endReason"] == "desk"
    assert [e["role"] for e in rec["transcript"]] \
        == ["user", "assistant", "tool"]


def test_a_refused_transfer_goes_back_to_the_model(stack_factory):
    stack = stack_factory(server_include=INCLUDE)
    script(stack, [transfer_plan(), {"text": "Sorry, I could not transfer "
                                             "you. How else can I help?"}])
    sid = stack.tw("POST", "/_fake/inbound", {"from": CALLER})["callSid"]

    # the caller's turn is done and the tool call comes: Twilio then
    # refuses the redirect
    wait_for(lambda: stack.openai_sessions()
             and stack.openai_sessions()[0]["tool_calls"], 30, 0.1,
             "the transfer call")
    stack.tw("POST", "/_fake/config", {"fail_next": {
        "status": 500, "code": 20500, "message": "Internal Server Error"}})

    outs = wait_for(lambda: stack.openai_sessions()[0]["function_outputs"],
                    30, 0.2, "the transfer's output")
    assert "the transfer failed" in json.loads(outs[0]["output"])["error"]
    assert outs[0]["response_requested"]
    wait_for(lambda: any(r["transcript"].startswith("Sorry, I could not")
                         for r in stack.openai_sessions()[0]["responses"]),
             20, what="the model telling the caller")

    call = stack.twilio_call(sid)
    assert len(call["streams"]) == 1 and call["status"] == "in-progress"
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["endedBy"] == "caller"
