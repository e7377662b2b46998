"""test_ws_hostile.py: what RFC 6455 forbids gets the right close code.

A raw client, signed like Twilio, sends one forbidden thing per
connection: an unmasked frame, reserved bits, a reserved opcode, a control
frame over 125 bytes or fragmented, text that is not UTF-8, a message over
the 64 KiB limit.  nginx must close with 1002, 1007 or 1009 as the RFC
says, answer a ping with its payload, and finish a close handshake the
client starts.  A client that trickles a message byte by byte is closed
with 1008, and one that stays quiet and leaves a ping unanswered with
1001.  After all of it, a normal call still goes through on the same
server.
"""

import base64
import json
import os
import socket
import struct
import time

import pytest

from conftest import fixture_bytes, json_of, wait_for
from test_media_framing import ACCOUNT, CALL, STREAM, Client, frame


def raw_frame(first, payload, masked=True):
    """a frame with the first byte given as is (FIN, RSV, opcode)"""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 65536:
        head = bytes([first, mask_bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(s):
    """one server frame: (opcode, payload); the server never masks"""
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf
    b0, b1 = exactly(2)
    assert not b1 & 0x80, "a server frame is masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exactly(8))[0]
    return b0 & 0x0F, exactly(n)


def close_code(s):
    """reads until the server's Close; returns its status code"""
    s.settimeout(10)
    while True:
        op, payload = read_frame(s)
        if op == 0x8:
            assert len(payload) >= 2, payload
            return struct.unpack(">H", payload[:2])[0]


CASES = [
    ("unmasked", lambda: raw_frame(0x81, b'{"event":"x"}', masked=False),
     1002),
    ("reserved bit", lambda: raw_frame(0x81 | 0x40, b'{"event":"x"}'), 1002),
    ("reserved opcode", lambda: raw_frame(0x83, b"abc"), 1002),
    ("control frame over 125 bytes", lambda: raw_frame(0x89, b"p" * 126),
     1002),
    ("fragmented control frame", lambda: raw_frame(0x09, b"ping"), 1002),
    ("text that is not UTF-8", lambda: raw_frame(0x81, b'{"event":"\xff"}'),
     1007),
    ("message over 64 KiB", lambda: raw_frame(0x81, b"x" * (64 * 1024 + 1)),
     1009),
    ("fragments over 64 KiB", lambda: raw_frame(0x01, b"x" * 40000)
     + raw_frame(0x80, b"x" * 40000), 1009),
]


@pytest.mark.parametrize("name,make,code", CASES, ids=[c[0] for c in CASES])
def test_forbidden_frames_get_the_right_close_code(stack, name, make, code):
    c = Client(stack, CALL, STREAM)
    c.s.sendall(make())
    assert close_code(c.s) == code, name
    c.s.close()


def test_ping_pong_and_close_handshake(stack):
    c = Client(stack, CALL, STREAM)
    c.s.settimeout(10)

    c.s.sendall(frame(0x9, b"are you there"))
    op, payload = read_frame(c.s)
    assert (op, payload) == (0xA, b"are you there")

    c.s.sendall(frame(0x8, struct.pack(">H", 1000) + b"bye"))
    assert close_code(c.s) == 1000
    # and then the server closes the TCP connection
    assert c.s.recv(16) == b""


def counters(stack):
    ws = stack.status_all()
    return (stack.status_counter("eventsIgnored", ws),
            stack.status_counter("eventsInvalid", ws))


def test_bad_twilio_events_are_refused_and_counted(stack):
    ignored0, invalid0 = counters(stack)
    c = Client(stack, CALL, STREAM)
    c.start()

    good = b""
    bad_ignored = [
        # another stream's media: its audio must not reach this call
        c.message({"event": "media", "media": {
            "track": "inbound", "chunk": "1", "timestamp": "0",
            "payload": base64.b64encode(b"\x01" * 160).decode()}})
        .replace(STREAM.encode(), b"MZ" + b"ab" * 16),
        c.message({"event": "no-such-event", "x": {"y": 1}}),
        # a second start, valid in itself
        c.message({"event": "start", "start": {
            "accountSid": ACCOUNT, "streamSid": STREAM, "callSid": CALL,
            "tracks": ["inbound"], "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                            "channels": 1}}}),
    ]
    bad_invalid = [
        b"not json at all",
        b'["event", "media"]',
        c.message({"event": "media", "media": {"payload": "!!!notbase64"}}),
        c.message({"event": "media", "media": {"payload": "QUJD"[:3]}}),
        c.message({"event": "media", "media": {
            "payload": base64.b64encode(b"\x02" * 8193).decode()}}),
        c.message({"event": "media", "media": {"payload": 160}}),
        c.message({"event": "media"}),
        json.dumps({"event": "media", "streamSid": "MZ123",
                    "media": {"payload": "AAAA"}}).encode(),
    ]
    for i in range(1, 11):
        audio = bytes((i * 3 + k) & 0xFF for k in range(160))
        c.s.sendall(frame(1, c.media(i, audio)))
        good += audio
        for m in (bad_ignored + bad_invalid)[i - 1:i]:
            c.s.sendall(frame(1, m))
    for m in (bad_ignored + bad_invalid)[10:]:
        c.s.sendall(frame(1, m))

    def got():
        s = stack.openai_sessions()
        return len(s) == 1 and s[0]["appended_bytes"] >= len(good)
    wait_for(got, 15, 0.2, "the good audio at OpenAI")
    time.sleep(0.3)
    assert base64.b64decode(stack.openai_sessions()[0]["appended_audio_b64"]) \
        == good

    ignored, invalid = counters(stack)
    assert ignored - ignored0 == len(bad_ignored)
    assert invalid - invalid0 == len(bad_invalid)

    # the stream is still up and ends normally
    c.s.sendall(frame(1, c.message({"event": "stop", "stop": {
        "accountSid": ACCOUNT, "callSid": CALL}})))
    assert close_code(c.s) == 1000
    c.s.close()
    stack.wait_transcript(CALL)
    line = "%d Twilio messages ignored, %d invalid" % (len(bad_ignored),
                                                       len(bad_invalid))
    wait_for(lambda: line in stack.log("error"), 10, 0.1, "the stream's end")
    err = stack.log("error")
    # one line for the invalid ones, not one each
    assert err.count("invalid Twilio message ignored") == 1


# short timers, so that the slow and idle cases take a second or two
TIMERS = "voice_ws_message_timeout 1s; voice_ws_ping_interval 1s;"


def test_a_slow_sender_is_dropped(stack_factory):
    stack = stack_factory(extra_http=TIMERS)
    c = Client(stack, CALL, STREAM)
    data = raw_frame(0x81, b'{"event":"connected","protocol":"Call"}' * 4)
    c.s.settimeout(0.2)
    start = time.monotonic()
    code = None
    # a byte every 100 ms: the connection is never quiet, but the message
    # would take 16 s to arrive
    for i in range(len(data)):
        c.s.sendall(data[i:i + 1])
        try:
            op, payload = read_frame(c.s)
        except socket.timeout:
            continue
        if op == 0x8:
            code = struct.unpack(">H", payload[:2])[0]
            break
    elapsed = time.monotonic() - start
    assert code == 1008, code
    assert 0.9 < elapsed < 5, elapsed
    assert "not finished in 1000 ms" in stack.log("error")

    # a message whose bytes come quickly, but each read short, is fine
    c = Client(stack, CALL, STREAM)
    c.s.settimeout(5)
    data = raw_frame(0x89, b"still here")
    for i in range(len(data)):
        c.s.sendall(data[i:i + 1])
        time.sleep(0.02)
    assert read_frame(c.s) == (0xA, b"still here")
    c.s.close()


def test_an_idle_stream_is_pinged_then_dropped(stack_factory):
    stack = stack_factory(extra_http=TIMERS)
    c = Client(stack, CALL, STREAM)
    c.s.settimeout(10)
    start = time.monotonic()
    op, payload = read_frame(c.s)
    assert op == 0x9, op
    # not answered: gone a tick later
    assert close_code(c.s) == 1001
    assert 1.5 < time.monotonic() - start < 6

    # answered pings keep a quiet stream open
    c = Client(stack, CALL, STREAM)
    c.s.settimeout(10)
    for _ in range(2):
        op, payload = read_frame(c.s)
        assert op == 0x9, op
        c.s.sendall(frame(0xA, payload))
    c.s.sendall(frame(0x8, struct.pack(">H", 1000)))
    assert close_code(c.s) == 1000


def test_a_normal_call_after_hostile_clients(stack):
    for name, make, code in CASES:
        c = Client(stack, CALL, STREAM)
        c.s.sendall(make())
        assert close_code(c.s) == code, name
        c.s.close()

    sid = stack.tw("POST", "/_fake/inbound",
                   {"from": "+14155550142"})["callSid"]
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    def done():
        r = stack.api("GET", "/api/transcript/%s" % sid)
        return r.status_code == 200 and len(json_of(r)["transcript"]) == 2
    wait_for(done, 30, 0.2, "the call's transcript")
