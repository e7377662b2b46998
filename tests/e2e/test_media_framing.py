"""test_media_framing.py: Twilio messages however TCP and RFC 6455 cut them.

A raw WebSocket client, signed like Twilio, sends a media stream whose
messages are split across TCP writes (so nginx reads them in pieces) and
fragmented into continuation frames, with pings in between; the audio must
still reach OpenAI byte for byte, and a message split across reads must
not disturb another call's messages meanwhile.
"""

import base64
import json
import os
import socket
import struct
import sys
import time

from conftest import TOP, wait_for

sys.path.insert(0, str(TOP / "tests/fakes"))
import common  # noqa: E402

CALL = "CA" + "12" * 16
STREAM = "MZ" + "34" * 16
ACCOUNT = "AC" + "56" * 16


def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Client:
    def __init__(self, stack, call_sid, stream_sid):
        self.call_sid, self.stream_sid = call_sid, stream_sid
        url = "wss://voice.example.test/media-stream"
        sig = common.twilio_signature(stack.auth_token, url, {})
        self.s = socket.create_connection(("127.0.0.1", stack.port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.sendall((
            "GET /media-stream HTTP/1.1\r\nHost: voice.example.test\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nx-twilio-signature: %s\r\n\r\n"
            % sig).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        self.seq = 0

    def message(self, obj):
        self.seq += 1
        if obj["event"] != "connected":
            obj["sequenceNumber"] = str(self.seq)
            obj["streamSid"] = self.stream_sid
        return json.dumps(obj).encode()

    def start(self, **params):
        custom = {"callSid": self.call_sid, "phoneNumber": "+14155550123",
                  "direction": "outbound"}
        custom.update(params)
        self.s.sendall(frame(1, self.message(
            {"event": "connected", "protocol": "Call", "version": "1.0.0"})))
        self.s.sendall(frame(1, self.message({"event": "start", "start": {
            "accountSid": ACCOUNT, "streamSid": self.stream_sid,
            "callSid": self.call_sid, "tracks": ["inbound"],
            "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                            "channels": 1}}})))

    def media(self, chunk, audio):
        return self.message({"event": "media", "media": {
            "track": "inbound", "chunk": str(chunk),
            "timestamp": str(chunk * 20),
            "payload": base64.b64encode(audio).decode()}})


def test_split_and_fragmented_messages(stack):
    a = Client(stack, CALL, STREAM)
    b = Client(stack, "CA" + "78" * 16, "MZ" + "9a" * 16)
    a.start()
    b.start()
    time.sleep(0.3)

    sent_a, sent_b = b"", b""
    for i in range(1, 41):
        audio = bytes((i * 7 + k) & 0xff for k in range(160))
        msg = a.media(i, audio)
        if i % 3 == 0:
            # fragmented: text frame, continuation, continuation, a ping
            # between fragments, all in separate writes
            third = len(msg) // 3
            a.s.sendall(frame(1, msg[:third], fin=False))
            time.sleep(0.01)
            a.s.sendall(frame(9, b"hi"))
            a.s.sendall(frame(0, msg[third:2 * third], fin=False))
            time.sleep(0.01)
            a.s.sendall(frame(0, msg[2 * third:], fin=True))
        else:
            # one frame, cut in two TCP writes in the middle of the payload
            data = frame(1, msg)
            a.s.sendall(data[:len(data) // 2])
            # meanwhile another call's whole message is read and handled
            other = bytes((i * 5 + k) & 0xff for k in range(160))
            b.s.sendall(frame(1, b.media(i, other)))
            sent_b += other
            time.sleep(0.01)
            a.s.sendall(data[len(data) // 2:])
        sent_a += audio

    def got():
        sessions = stack.openai_sessions()
        return (len(sessions) == 2
                and sum(s["appended_bytes"] for s in sessions)
                >= len(sent_a) + len(sent_b))
    wait_for(got, 15, 0.2, "the audio at OpenAI")

    streams = sorted(base64.b64decode(s["appended_audio_b64"])
                     for s in stack.openai_sessions())
    assert streams == sorted([sent_a, sent_b])

    for c in (a, b):
        c.s.sendall(frame(1, c.message({"event": "stop", "stop": {
            "accountSid": ACCOUNT, "callSid": c.call_sid}})))
        c.s.sendall(frame(8, struct.pack(">H", 1000)))
    for sid in (CALL, b.call_sid):
        stack.wait_transcript(sid)
