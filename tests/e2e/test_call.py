"""test_call.py: whole calls, end to end.

A call placed through the API (or originated by the fake Twilio as an
inbound call) is bridged to the fake OpenAI: the caller's audio must reach
OpenAI byte for byte from its first frame -- also when OpenAI is slow to
accept the WebSocket -- and the assistant's audio must reach the caller
byte for byte; the transcript must be stored, in conversation order, and
served as JSON and as text.
"""

import base64
import json
import re
import time

import pytest

from conftest import fixture_bytes, fixture_text, json_of, wait_for

CALLEE = "+14155550123"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FILE_STAMP = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z"


def place_call(stack, **body):
    r = stack.api("POST", "/api/call", json=body)
    assert r.status_code == 200, r.text
    j = json_of(r)
    assert j["success"] is True
    assert re.fullmatch(r"CA[0-9a-f]{32}", j["callSid"])
    assert j["message"] == "Call initiated to " + body["number"]
    return j["callSid"]


def check_media(stack, sid, session):
    """Byte-for-byte audio in both directions, from the first frame."""
    call = stack.twilio_call(sid)
    assert call["violations"] == [], call["violations"]

    sent = base64.b64decode(call["sent_audio_b64"])
    appended = base64.b64decode(session["appended_audio_b64"])
    caller = fixture_bytes("caller")

    # everything the caller said reached OpenAI, in order, from the first
    # frame; only frames after the hang-up may be missing
    assert len(appended) >= len(caller)
    assert appended == sent[:len(appended)]
    assert appended[:len(caller)] == caller
    assert session["appended_before_update_bytes"] == 0
    assert session["violations"] == [], session["violations"]

    # the assistant's audio reached the caller, byte for byte
    replies = [base64.b64decode(r["audio_b64"]) for r in session["responses"]]
    assert replies and replies[0] == fixture_bytes("reply")
    received = base64.b64decode(call["received_audio_b64"])
    assert received == b"".join(replies)
    return call


def check_transcript(stack, sid, phone):
    path = stack.wait_transcript(sid)
    assert re.fullmatch(r"%s_%s_%s\.json" % (sid, re.escape(phone),
                                             FILE_STAMP), path.name)
    doc = json.loads(path.read_text())
    assert doc["callSid"] == sid
    assert doc["phoneNumber"] == phone
    assert ISO.match(doc["timestamp"])

    # the file name's time is the call's start, as the document's
    stamp = re.search(FILE_STAMP, path.name).group(0)
    assert stamp[:10] == doc["timestamp"][:10]
    assert stamp[11:19].replace("-", ":") == doc["timestamp"][11:19]

    roles = [(u["role"], u["text"]) for u in doc["transcript"]]
    assert roles == [("user", fixture_text("caller")),
                     ("assistant", fixture_text("reply"))], roles
    for u in doc["transcript"]:
        assert ISO.match(u["timestamp"])
    user, reply = doc["transcript"]
    assert set(user) == {"role", "text", "timestamp"}
    # the reply heard whole, with its turn's latency: from the end of the
    # caller's speech to its first audio sent to Twilio
    assert set(reply) == {"role", "text", "latencyMs", "timestamp"}
    assert 0 < reply["latencyMs"] < 5000, reply

    # what the call was, what it cost, how quick it was
    call = stack.twilio_call(sid)
    twilio_number = call["customParameters"]["twilioNumber"]
    if call["direction"] == "inbound":
        assert (doc["direction"], doc["from"], doc["to"]) == \
            ("inbound", phone, twilio_number)
        # the fake's numbers have no status callback: none to wait for
        assert "status" not in doc and "duration" not in doc
    else:
        assert (doc["direction"], doc["from"], doc["to"]) == \
            ("outbound", twilio_number, phone)
        # the record waited for Twilio's final status callback
        done = [c for c in call["callbacks"]
                if c["CallStatus"] == "completed"]
        assert len(done) == 1, call["callbacks"]
        assert (doc["status"], doc["duration"]) == \
            ("completed", int(done[0]["CallDuration"])), doc
    sessions = stack.openai_sessions()
    asr = sessions[0]["session"]["audio"]["input"]["transcription"]["model"]
    assert doc["models"] == {"realtime": sessions[0]["model"],
                             "transcription": asr}, doc
    billed = [r["usage"] for s in sessions for r in s["responses"]
              if r.get("usage")]
    assert billed, sessions[0]["responses"]
    u = doc["usage"]
    assert u["outputAudioTokens"] == sum(
        b["output_token_details"]["audio_tokens"] for b in billed)
    assert u["inputAudioTokens"] == sum(
        b["input_token_details"]["audio_tokens"] for b in billed)
    assert u["totalTokens"] == sum(b["total_tokens"] for b in billed), u
    assert doc["turnLatency"] == {"turns": 1,
                                  "medianMs": reply["latencyMs"],
                                  "maxMs": reply["latencyMs"]}

    # the call's record is freed once its file is written
    wait_for(lambda: stack.live_calls() == 0, 10, 0.2, "the call to be freed")

    # no temporary file or journal is left behind
    leftovers = [p.name for p in stack.transcripts.iterdir()
                 if p.name != path.name]
    assert leftovers == []

    # served as stored, and as text
    r = stack.api("GET", "/api/transcript/" + sid)
    assert r.status_code == 200
    assert json_of(r) == doc
    r = stack.api("GET", "/api/transcript/%s?format=text" % sid)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text == "User: %s\nAssistant: %s\n" % (fixture_text("caller"),
                                                     fixture_text("reply"))
    return doc


@pytest.mark.parametrize("accept_delay_ms", [0, 300])
def test_outbound_call(stack_factory, accept_delay_ms):
    stack = stack_factory(accept_delay_ms=accept_delay_ms)

    numbers = json_of(stack.api("GET", "/api/numbers"))
    assert len(numbers) == 3
    sid = place_call(stack, number=CALLEE, fromNumber=numbers[1]["phoneNumber"])

    # Twilio was asked for exactly this call, with our TwiML URL
    create = [q for q in stack.tw("GET", "/_fake/requests")
              if q["method"] == "POST" and q["path"].endswith("/Calls.json")]
    assert len(create) == 1
    assert create[0]["form"]["To"] == CALLEE
    assert create[0]["form"]["From"] == numbers[1]["phoneNumber"]
    assert create[0]["form"]["Url"] == stack.public_url + "/twiml"

    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    call = stack.twilio_call(sid)
    params = dict(call["customParameters"])
    # the settings of the /twiml location travel by name with the stream
    assert re.fullmatch(r"0\.[0-9a-f]{8}", params.pop("profile"))
    assert params == {"callSid": sid, "phoneNumber": CALLEE,
                      "direction": "outbound",
                      "twilioNumber": numbers[1]["phoneNumber"]}
    assert call["stream_url"] == "wss://voice.example.test/media-stream"

    sessions = stack.openai_sessions()
    assert len(sessions) == 1
    s = sessions[0]
    assert s["model"] == "gpt-realtime-2.1"
    assert s["session"]["type"] == "realtime"
    assert s["session"]["audio"]["input"]["format"]["type"] == "audio/pcmu"
    assert s["session"]["audio"]["output"]["format"]["type"] == "audio/pcmu"
    assert s["session"]["audio"]["input"]["transcription"]
    assert s["session"]["audio"]["input"]["turn_detection"]["type"] \
        == "server_vad"
    check_media(stack, sid, s)
    check_transcript(stack, sid, CALLEE)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_inbound_call(stack, method):
    caller = "+14155550177"
    sid = stack.tw("POST", "/_fake/inbound",
                   {"from": caller, "method": method})["callSid"]

    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    call = stack.twilio_call(sid)
    assert call["direction"] == "inbound"
    assert call["twiml_status"] == 200
    params = dict(call["customParameters"])
    assert re.fullmatch(r"0\.[0-9a-f]{8}", params.pop("profile"))
    assert params.pop("twilioNumber").startswith("+1500555")
    assert params == {"callSid": sid, "phoneNumber": caller,
                      "direction": "inbound"}
    check_media(stack, sid, stack.openai_sessions()[0])
    check_transcript(stack, sid, caller)


def test_end_call(stack):
    sid = place_call(stack, number=CALLEE)

    # fromNumber was not given: the first owned number calls
    numbers = json_of(stack.api("GET", "/api/numbers"))
    wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", 20,
             what="the media stream")
    assert stack.twilio_call(sid)["from"] == numbers[0]["phoneNumber"]

    r = stack.api("POST", "/api/end-call", json={"callSid": sid})
    assert r.status_code == 200, r.text
    assert json_of(r) == {"success": True,
                          "message": "Call ended successfully"}

    wait_for(lambda: stack.twilio_call(sid)["status"] == "completed", 20,
             what="the call to end")
    path = stack.wait_transcript(sid)
    doc = json.loads(path.read_text())
    assert doc["callSid"] == sid and isinstance(doc["transcript"], list)


def test_call_without_utterance_gets_an_empty_transcript(stack):
    # a caller who says nothing: the line carries only silence
    stack.tw("POST", "/_fake/config", {"caller_audio": ""})
    sid = place_call(stack, number=CALLEE)
    wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", 20,
             what="the media stream")
    time.sleep(1)
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    path = stack.wait_transcript(sid)
    doc = json.loads(path.read_text())
    assert doc["transcript"] == []
    r = stack.api("GET", "/api/transcript/%s?format=text" % sid)
    assert r.status_code == 200 and r.text == ""


def test_transcript_is_in_conversation_order_not_arrival_order(stack_factory):
    # the caller's transcription is made to arrive well after the
    # assistant's answer: the file must still put the caller first
    stack = stack_factory(transcription_delay_ms=(3000, 3500))
    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    check_transcript(stack, sid, CALLEE)

    # the caller's transcript really did arrive last, after the hang-up
    events = stack.openai_sessions()[0]["server_event_types"]
    assert events.index("response.output_audio_transcript.done") \
        < events.index(
            "conversation.item.input_audio_transcription.completed")


def test_words_said_just_before_hanging_up_are_kept(stack):
    # the caller hangs up in the middle of the sentence, before the VAD
    # could end the turn: what was said still reaches the transcript
    sid = place_call(stack, number=CALLEE)
    wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", 20,
             what="the media stream")
    time.sleep(2.5)
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    doc = json.loads(stack.wait_transcript(sid).read_text())
    assert [u["role"] for u in doc["transcript"]][:1] == ["user"], doc
    assert doc["transcript"][0]["text"] == fixture_text("caller")


def test_a_reply_the_caller_cuts_off_keeps_what_was_heard(stack):
    # the caller talks over the assistant's reply: the record keeps what
    # played of it (the share of its text its played audio covers, back to
    # a word), marks it interrupted, and keeps all it said apart
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]
    reply = fixture_text("reply")
    played = lambda: len(base64.b64decode(
        stack.twilio_call(sid)["played_audio_b64"]))
    wait_for(lambda: played() > 8000, 20, 0.02, "a second of the reply")
    stack.tw("POST", "/_fake/calls/%s/say" % sid,
             {"audio_b64": base64.b64encode(
                 fixture_bytes("caller")).decode()})
    wait_for(lambda: stack.twilio_call(sid)["clears"], 10, 0.05,
             "the clear for the barge-in")
    heard = played()

    # the next reply plays whole
    wait_for(lambda: played() >= heard + len(fixture_bytes("reply")), 30,
             0.1, "the second reply")
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    doc = json.loads(stack.wait_transcript(sid).read_text())
    entries = doc["transcript"]
    assert [u["role"] for u in entries] == \
        ["user", "assistant", "user", "assistant"], entries

    cut = entries[1]
    assert set(cut) == {"role", "text", "interrupted", "generated",
                        "latencyMs", "timestamp"}, cut
    assert cut["interrupted"] is True
    # all it said is the reply (or the part generated before the cut) ...
    assert reply.startswith(cut["generated"]), cut
    # ... and what was heard a shorter start of it, ending at a word
    assert cut["generated"].startswith(cut["text"]), cut
    assert len(cut["text"]) < len(cut["generated"])
    assert cut["generated"][len(cut["text"])] == " ", cut
    # about the played share: Twilio played `heard` of the reply's audio
    # (a mark every 100 ms: within 100 ms, and a word)
    share = heard / len(fixture_bytes("reply"))
    assert 0 < len(cut["text"]) <= len(reply) * (share + 0.05) + 1, \
        (cut, share)
    assert len(cut["text"]) >= len(reply) * (share - 0.05) - 12, \
        (cut, share)

    # the whole reply after it was heard whole; each answered a turn
    assert entries[3] == {"role": "assistant", "text": reply,
                          "latencyMs": entries[3]["latencyMs"],
                          "timestamp": entries[3]["timestamp"]}
    assert doc["turnLatency"]["turns"] == 2
    assert doc["turnLatency"]["maxMs"] == max(cut["latencyMs"],
                                              entries[3]["latencyMs"])

    r = stack.api("GET", "/api/transcript/%s?format=text" % sid)
    assert r.text == "User: %s\nAssistant: %s\nUser: %s\nAssistant: %s\n" % (
        fixture_text("caller"), cut["text"], fixture_text("caller"), reply)

    # the next session would be given what was heard
    assert stack.openai_sessions()[0]["violations"] == []
