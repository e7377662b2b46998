"""test_call_context.py: a call placed through the API has its own
instructions, greeting and context.

They travel sealed (AES-256-GCM, keyed from the Twilio auth token) in the
TwiML URL given to Twilio, then as <Parameter>s of the stream, so they
reach the call's session whichever nginx worker answers the TwiML fetch
and the media stream, and whichever bridged owns the call.  They appear
neither in Twilio's view of the URL and parameters nor in any log; the
record keeps the context.  Bad values get 400 with a clear error.
"""

import json
import re

import pytest

from conftest import fixture_bytes, json_of, sent_session, wait_for

CALLEE = "+14155550123"


def update_of(session):
    return sent_session(session["session_updates"][-1])


def configured(stack, n=1):
    """the first n OpenAI sessions, once each has had its session.update"""
    return wait_for(lambda: (lambda ss: len(ss) >= n
                             and all(x["session_updates"] for x in ss[:n])
                             and ss)(stack.openai_sessions()),
                    30, 0.1, "%d configured sessions" % n)


def place(stack, **extra):
    body = {"number": CALLEE}
    body.update(extra)
    r = stack.api("POST", "/api/call", json=body)
    assert r.status_code == 200, r.text
    return json_of(r)["callSid"]


def test_own_instructions_greeting_and_context(stack):
    secret_word = "Zanzibar-7731"
    sid = place(stack,
                instructions="You confirm table bookings for Bistro Nine. "
                             "The code word is " + secret_word + ".",
                greeting="Greet Jane and confirm her booking.",
                context={"name": "Jane Doe", "time": "7 pm",
                         "note": "window \"seat\" \u00e9"})

    s = configured(stack)[0]
    u = update_of(s)
    assert u["instructions"].startswith(
        "You confirm table bookings for Bistro Nine. The code word is "
        + secret_word + ".")
    assert "- name: Jane Doe\n" in u["instructions"]
    assert "- time: 7 pm\n" in u["instructions"]
    assert "- note: window \"seat\" \u00e9\n" in u["instructions"]

    # the assistant speaks first, prompted by the call's greeting
    wait_for(lambda: any("Greet Jane" in t["text"]
                         for t in stack.openai_sessions()[0]["user_texts"]),
             10, what="the greeting")
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["context"] == {"name": "Jane Doe", "time": "7 pm",
                              "note": "window \"seat\" \u00e9"}

    # sealed all the way: never in the clear at Twilio or in a log
    call = stack.twilio_call(sid)
    create = [q for q in stack.tw("GET", "/_fake/requests")
              if q["path"].endswith("/Calls.json") and q["method"] == "POST"]
    url = create[0]["form"]["Url"]
    assert re.fullmatch(r"https://voice\.example\.test/twiml\?ctx=v1\.[A-Za-z0-9_-]+",
                        url), url
    params = call["customParameters"]
    assert "ctx0" in params and all(len(k) + len(v) < 500
                                    for k, v in params.items())
    seen = json.dumps(call) + json.dumps(create)
    for log in ("access", "error", "bridged", "nginx"):
        seen += stack.log(log)
    for word in (secret_word, "Jane Doe", "Bistro Nine", "Greet Jane"):
        assert word not in seen, word


def test_each_call_its_own_across_workers_and_bridges(stack_factory):
    stack = stack_factory(bridges=2)
    sids = {}
    for i in range(4):
        sid = place(stack, instructions="You are assistant number %d." % i,
                    context={"n": str(i)})
        sids[sid] = i
    got = sorted(update_of(s)["instructions"].split("\n")[0]
                 for s in configured(stack, 4))
    assert got == ["You are assistant number %d." % i for i in range(4)]
    for sid in sids:
        stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    for sid, i in sids.items():
        rec = json.loads(stack.wait_transcript(sid).read_text())
        assert rec["context"] == {"n": str(i)}


def test_without_own_values_the_location_decides(stack_factory):
    stack = stack_factory(server_include='voice_instructions "Location.";')
    sid = place(stack)
    s = configured(stack)[0]
    assert update_of(s)["instructions"] == "Location."
    create = [q for q in stack.tw("GET", "/_fake/requests")
              if q["path"].endswith("/Calls.json")]
    assert "ctx=" not in create[0]["form"]["Url"]
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    assert "context" not in json.loads(stack.wait_transcript(sid).read_text())


@pytest.mark.parametrize("extra,why", [
    ({"instructions": 5}, "instructions must be a string"),
    ({"instructions": ""}, "instructions must be a string"),
    ({"instructions": "x" * 2001}, "instructions must be a string of 1 to 2000"),
    ({"greeting": ["hi"]}, "greeting must be a string"),
    ({"greeting": "x" * 501}, "greeting must be a string of 1 to 500"),
    ({"context": "name=Jane"}, "context must be a flat JSON object"),
    ({"context": {"n": 1}}, "context must be a flat JSON object"),
    ({"context": {"n": {"m": "x"}}}, "context must be a flat JSON object"),
    ({"context": {str(i): "v" for i in range(17)}}, "at most 16"),
    ({"context": {"k": "v" * 257}}, "values of 1 to 256"),
    ({"instructions": "x" * 1800, "greeting": "y" * 400}, "2048 bytes"),
    ({"machineDetection": "yes"}, "machineDetection must be true or false"),
])
def test_bad_values_get_400(stack, extra, why):
    body = {"number": CALLEE}
    body.update(extra)
    r = stack.api("POST", "/api/call", json=body)
    assert r.status_code == 400, r.text
    j = json_of(r)
    assert j["success"] is False and why in j["error"], j
    assert not [q for q in stack.tw("GET", "/_fake/requests")
                if q["path"].endswith("/Calls.json")]
