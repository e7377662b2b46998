#!/usr/bin/python3
"""Fake Twilio: the REST API (2010-04-01) and, for every call, Twilio's media client.

SIMULATION ONLY - no phone call is ever placed. The product (nginx module + bridged) is
tested against this program instead of api.twilio.com. It follows, to the field name:
  * twilio-rest.md: Basic auth, Calls.json create / fetch / update (hang-up), the Call
    resource, IncomingPhoneNumbers.json paging (next_page_uri + PageToken), the legacy
    error bodies of §7, the signed webhooks of §8 and X-Twilio-Signature of §9 (self-checked
    against every worked example of §10 by --selftest);
  * twilio-media-streams.md: TwiML <Connect><Stream> parsing (§2), the WebSocket upgrade
    with the §3 headers, connected/start/media/mark/dtmf/stop exactly as §4, 20 ms paced
    160-byte frames, real-time playout of what the app sends with mark echo and clear (§5),
    and a strict check of every app message (§3 Frames, §5) recorded as "violations".
URLs the product hands out are on --public-url; the fake signs over them exactly as given
but delivers to --deliver-to (a TLS-terminating proxy in front of the product, in effect).
A control API under /_fake/ (no auth, not Twilio's) lets tests start inbound calls, hang
up, inject caller speech and read everything that was sent and received.
Run with /usr/bin/python3 only (Debian's aiohttp 3.8 and websockets 10.4).
"""

import argparse
import asyncio
import base64
import binascii
import collections
import hmac
import json
import os
import re
import signal
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aiohttp  # noqa: E402
import yarl  # noqa: E402
from aiohttp import web  # noqa: E402
import websockets  # noqa: E402
from websockets.datastructures import Headers  # noqa: E402
from websockets.exceptions import InvalidHandshake, InvalidStatusCode  # noqa: E402
from websockets.legacy.client import WebSocketClientProtocol  # noqa: E402

import common as C  # noqa: E402

API_VERSION = "2010-04-01"
log = C.Log("fake-twilio")

GEO_PREFIXES = ("From", "To", "Caller", "Called")
GEO_SUFFIXES = ("City", "State", "Zip", "Country")
CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
KNOWN_CREATE_PARAMS = {
    "To", "From", "Url", "Method", "Twiml", "ApplicationSid", "FallbackUrl", "FallbackMethod",
    "StatusCallback", "StatusCallbackEvent", "StatusCallbackMethod", "Timeout", "TimeLimit",
    "Record", "RecordingChannels", "RecordingStatusCallback", "RecordingStatusCallbackMethod",
    "RecordingStatusCallbackEvent", "RecordingTrack", "Trim", "MachineDetection",
    "MachineDetectionTimeout", "MachineDetectionSpeechThreshold",
    "MachineDetectionSpeechEndThreshold", "MachineDetectionSilenceTimeout", "AsyncAmd",
    "AsyncAmdStatusCallback", "AsyncAmdStatusCallbackMethod", "SendDigits", "CallerId",
    "CallReason", "CallToken", "Byoc", "SipAuthUsername", "SipAuthPassword",
    "ClientNotificationUrl",
}
KNOWN_UPDATE_PARAMS = {"Status", "Url", "Method", "Twiml", "FallbackUrl", "FallbackMethod",
                       "StatusCallback", "StatusCallbackMethod", "TimeLimit"}
STREAM_ATTRS = {"url", "name", "track", "statusCallback", "statusCallbackMethod", "connectorName"}
CONNECT_ATTRS = {"action", "method"}
ENDED = ("completed", "busy", "failed", "no-answer", "canceled")


# ======================================================================================
# Self-check of the signature function against twilio-rest.md §10
# ======================================================================================

def selftest(verbose=True):
    """Every worked example of twilio-rest.md §10; returns True when all match."""
    checks = []

    def check(name, got, want):
        checks.append((name, got == want, got, want))

    u0 = "https://mycompany.com/myapp.php?foo=1&bar=2"
    p0 = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
          "From": "+14158675309", "To": "+18005551212"}
    check("10.0 params", C.twilio_signature("12345", u0, p0), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    check("10.0 repeated key", C.twilio_signature(
        "12345", u0, [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                      ("Digits", "1234"), ("Digits", "1234")]), "IK+Dwps556ElfBT0I3Rgjkr1wJU=")
    body0 = b'{"property": "value", "boolean": true}'
    h0 = __import__("hashlib").sha256(body0).hexdigest()
    check("10.0 bodySHA256 hash", h0,
          "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620")
    check("10.0 bodySHA256", C.twilio_signature("12345", u0 + "&bodySHA256=" + h0),
          "a9nBmqA0ju/hNViExpshrM61xv4=")
    check("10.0 :443", C.twilio_signature("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", p0),
          "kvajT1Ptam85bY51eRf/AJRuM3w=")
    check("10.0 http :80", C.twilio_signature("12345", "http://mycompany.com:80/myapp.php?foo=1&bar=2", p0),
          "0ZXoZLH/DfblKGATFgpif+LLRf4=")
    check("10.0 http :1234", C.twilio_signature("12345", "http://mycompany.com:1234/myapp.php?foo=1&bar=2", p0),
          "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=")

    tok = "0123456789abcdef0123456789abcdef"
    body_a = ("AccountSid=AC00000000000000000000000000000001&ApiVersion=2010-04-01&CallDuration=42"
              "&CallSid=CA00000000000000000000000000000002&CallStatus=completed"
              "&CallbackSource=call-progress-events&Called=%2B14155550123&Caller=%2B15005550006"
              "&Direction=outbound-api&From=%2B15005550006&SequenceNumber=3"
              "&Timestamp=Tue%2C+01+Sep+2026+10%3A00%3A00+%2B0000&To=%2B14155550123")
    pa = urllib.parse.parse_qsl(body_a, keep_blank_values=True)
    ua = "https://bridge.example.com/twilio/status?tenant=acme"
    check("10.1 A string", C.twilio_signature_string(ua, pa),
          "https://bridge.example.com/twilio/status?tenant=acmeAccountSidAC00000000000000000000000000000001"
          "ApiVersion2010-04-01CallDuration42CallSidCA00000000000000000000000000000002CallStatuscompleted"
          "CallbackSourcecall-progress-eventsCalled+14155550123Caller+15005550006Directionoutbound-api"
          "From+15005550006SequenceNumber3TimestampTue, 01 Sep 2026 10:00:00 +0000To+14155550123")
    check("10.1 A", C.twilio_signature(tok, ua, pa), "t74VYw87Kcu0wLA/vgbdMscMkSg=")
    check("10.1 A :443", C.twilio_signature(tok, "https://bridge.example.com:443/twilio/status?tenant=acme", pa),
          "Eoi3xVkUFSq8O4yuVr9ExXusOsI=")
    check("10.1 A validator accepts :443 form", C.validate_twilio_signature(
        tok, ua, pa, "Eoi3xVkUFSq8O4yuVr9ExXusOsI="), True)
    check("10.1 B wss", C.twilio_signature(tok, "wss://bridge.example.com/media-stream"),
          "0ZvicYzAOFzBhn5l69PEtGsZ3pk=")
    check("10.1 B https (wrong reconstruction)", C.twilio_signature(tok, "https://bridge.example.com/media-stream"),
          "EeRO3/dKOQfrpbyue97XBwvuqA4=")
    check("10.1 B https signature rejected for the wss URL", C.validate_twilio_signature(
        tok, "wss://bridge.example.com/media-stream", None, "EeRO3/dKOQfrpbyue97XBwvuqA4="), False)
    body_c = b'{"event":"test","value":1}'
    hc = __import__("hashlib").sha256(body_c).hexdigest()
    check("10.1 C hash", hc, "7be7ef15405a070759439234b1431f7e8435071ed72dc35fa03fcce0c70b7999")
    check("10.1 C", C.twilio_signature(tok, "https://bridge.example.com/twilio/json-hook?bodySHA256=" + hc),
          "tEp34ggaWukSu2R/3xrOe+ViMfQ=")
    body_d = ("AccountSid=AC00000000000000000000000000000001&CallSid=CA00000000000000000000000000000003"
              "&CallStatus=ringing&CallerName=Jane+Doe&Direction=inbound&From=%2B14155550100&To=%2B15005550006")
    pd = urllib.parse.parse_qsl(body_d, keep_blank_values=True)
    ud = "https://bridge.example.com/twilio/voice"
    check("10.1 D string", C.twilio_signature_string(ud, pd),
          "https://bridge.example.com/twilio/voiceAccountSidAC00000000000000000000000000000001CallSid"
          "CA00000000000000000000000000000003CallStatusringingCallerNameJane DoeDirectioninbound"
          "From+14155550100To+15005550006")
    check("10.1 D", C.twilio_signature(tok, ud, pd), "i/EjGw9taxhXdkt9CEEx4ybi5Ao=")

    ok = all(c[1] for c in checks)
    if verbose:
        for name, good, got, want in checks:
            print("%-48s %s" % (name, "ok" if good else "FAIL got %r want %r" % (got, want)))
        print("selftest: %d checks, %s" % (len(checks), "all ok" if ok else "FAILED"))
    return ok


# ======================================================================================
# Helpers
# ======================================================================================

def twilio_error(status, code, message, **extra):
    """Legacy 2010 API error body (twilio-rest.md §7)."""
    body = {"code": code, "message": message,
            "more_info": "https://www.twilio.com/docs/errors/%d" % code, "status": status}
    body.update(extra)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return web.json_response(body, status=status, headers=headers)


def origin_of(url):
    """(scheme class, host lower, effective port) with https~wss and http~ws."""
    p = urllib.parse.urlsplit(url)
    scheme = {"wss": "https", "ws": "http"}.get(p.scheme.lower(), p.scheme.lower())
    port = p.port or {"https": 443, "http": 80}.get(scheme)
    return scheme, (p.hostname or "").lower(), port


def is_absolute_http_url(url):
    try:
        p = urllib.parse.urlsplit(url)
        return p.scheme in ("http", "https") and bool(p.hostname)
    except ValueError:
        return False


def now_ms(t0):
    return int(round((time.monotonic() - t0) * 1000))


class Violation(Exception):
    pass


# ======================================================================================
# Call state
# ======================================================================================

class Call:
    def __init__(self, fake, direction, from_, to):
        self.fake = fake
        self.sid = C.new_sid("CA")
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.status = "queued" if direction == "outbound-api" else "ringing"
        self.created = time.time()
        self.updated = self.created
        self.started = None
        self.ended = None
        self.t0 = time.monotonic()
        owned = fake.number_by_e164.get(from_ if direction == "outbound-api" else to)
        self.phone_number_sid = owned["sid"] if owned else None
        # request parameters
        self.url = None
        self.method = "POST"
        self.inline_twiml = None
        self.status_callback = None
        self.status_callback_method = "POST"
        self.status_callback_events = set()
        self.time_limit = None
        # TwiML / stream
        self.twiml = None
        self.twiml_status = None
        self.twiml_content_type = None
        self.stream_url = None
        self.stream_name = None
        self.stream_status_callback = None
        self.custom_parameters = {}
        self.connect_action = None
        self.ws_status = None
        self.ws_request_headers = None
        self.handshake_status = None
        self.close_code = None
        self.close_reason = None
        self.close_initiator = None
        self.stream_sid = None
        # media
        self.sent_audio = bytearray()
        self.received_audio = bytearray()
        self.played_audio = bytearray()
        self.marks_sent_by_app = []
        self.marks_echoed = []
        self.marks = []
        self.clears = 0
        self.dtmf_sent = []
        self.media_messages_sent = 0
        self.media_messages_received = 0
        self.caller_speech_end_ms = []
        self.first_reply_audio_ms = None
        # bookkeeping
        self.violations = []
        self.warnings = []
        self.events = []
        self.callbacks = []
        self.webhooks = []
        self.hangup_reason = None
        self.hangup_event = asyncio.Event()
        self.pending_redirect = None
        self.session = None
        self.outcome_override = None
        self.cb_queue = asyncio.Queue()
        self.cb_seq = 0
        self.done = asyncio.Event()

    # -- logging ---------------------------------------------------------------------
    def event(self, msg):
        self.events.append("%6d %s" % (now_ms(self.t0), msg))
        log("%s %s", self.sid, msg)

    def violation(self, msg):
        self.violations.append(msg)
        self.events.append("%6d VIOLATION %s" % (now_ms(self.t0), msg))
        log.loud("%s VIOLATION: %s", self.sid, msg)

    def warning(self, msg):
        self.warnings.append(msg)
        self.event("warning: " + msg)

    def set_status(self, status):
        self.status = status
        self.updated = time.time()
        self.event("status " + status)

    # -- views -----------------------------------------------------------------------
    def resource(self):
        acc = self.fake.account_sid
        base = "/%s/Accounts/%s/Calls/%s" % (API_VERSION, acc, self.sid)
        duration = None
        if self.ended and self.started:
            duration = str(int(round(self.ended - self.started)))
        elif self.ended:
            duration = "0"
        return {
            "account_sid": acc,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": C.rfc2822(self.created),
            "date_updated": C.rfc2822(self.updated),
            "direction": self.direction,
            "duration": duration,
            "end_time": C.rfc2822(self.ended) if self.ended else None,
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": C.format_national(self.from_),
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": self.phone_number_sid,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": self.sid,
            "start_time": C.rfc2822(self.started) if self.started else None,
            "status": self.status,
            "subresource_uris": {
                "notifications": base + "/Notifications.json",
                "recordings": base + "/Recordings.json",
                "streams": base + "/Streams.json",
            },
            "to": self.to,
            "to_formatted": C.format_national(self.to),
            "trunk_sid": None,
            "uri": base + ".json",
        }

    def control_view(self):
        return {
            "sid": self.sid,
            "status": self.status,
            "direction": self.direction,
            "from": self.from_,
            "to": self.to,
            "twiml": self.twiml,
            "twiml_status": self.twiml_status,
            "twiml_content_type": self.twiml_content_type,
            "stream_url": self.stream_url,
            "stream_name": self.stream_name,
            "customParameters": self.custom_parameters,
            "ws_status": self.ws_status,
            "ws_request_headers": self.ws_request_headers,
            "handshake_status": self.handshake_status,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "close_initiator": self.close_initiator,
            "streamSid": self.stream_sid,
            "sent_audio_b64": C.b64(self.sent_audio),
            "received_audio_b64": C.b64(self.received_audio),
            "played_audio_b64": C.b64(self.played_audio),
            "media_messages_sent": self.media_messages_sent,
            "media_messages_received": self.media_messages_received,
            "caller_speech_end_ms": self.caller_speech_end_ms,
            "first_reply_audio_ms": self.first_reply_audio_ms,
            "marks_sent_by_app": self.marks_sent_by_app,
            "marks_echoed": self.marks_echoed,
            "marks": self.marks,
            "clears": self.clears,
            "dtmf_sent": self.dtmf_sent,
            "violations": self.violations,
            "warnings": self.warnings,
            "events": self.events,
            "callbacks": self.callbacks,
            "webhooks": self.webhooks,
            "hangup_reason": self.hangup_reason,
            "resource": self.resource(),
        }


class StreamSpec:
    def __init__(self):
        self.url = None
        self.name = None
        self.params = {}
        self.status_callback = None
        self.status_callback_method = "POST"
        self.action = None
        self.action_method = "POST"


# ======================================================================================
# Media stream (Twilio is the WebSocket client)
# ======================================================================================

class TwilioWsProtocol(WebSocketClientProtocol):
    """Writes the upgrade request with exactly the header set and order of the live
    capture in twilio-media-streams.md §3 and records it."""

    def __init__(self, *args, host_override=None, on_request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._host_override = host_override
        self._on_request = on_request

    def write_http_request(self, path, headers):
        order = ["Host", "User-Agent", "Connection", "Upgrade", "Sec-WebSocket-Key",
                 "Sec-WebSocket-Version", "x-twilio-signature", "Accept-Encoding"]
        new = Headers()
        for name in order:
            if name == "Host" and self._host_override:
                new[name] = self._host_override
            elif name in headers:
                new[name] = headers[name]
        for name, value in headers.raw_items():
            if name.lower() not in [o.lower() for o in order]:
                new[name] = value
        if self._on_request:
            self._on_request(path, list(new.raw_items()))
        super().write_http_request(path, new)


class Playout:
    """What the caller hears: the app's audio played at 8 bytes/ms, marks echoed when the
    audio queued before them has played, clear = drop + echo every pending mark."""

    def __init__(self, session):
        self.s = session
        self.items = collections.deque()  # ["audio", bytearray] | ["mark", record]
        self.buffered = 0
        self.last = time.monotonic()
        self.budget = 0.0
        self.idle_since = time.monotonic()

    def idle(self):
        return not self.items

    def add_audio(self, data):
        if not self.items:
            self.last = time.monotonic()
            self.budget = 0.0
        self.idle_since = None
        if self.items and self.items[-1][0] == "audio":
            self.items[-1][1].extend(data)
        else:
            self.items.append(["audio", bytearray(data)])
        self.buffered += len(data)

    def add_mark(self, rec):
        if not self.items:
            self.last = time.monotonic()
            self.budget = 0.0
        self.idle_since = None
        self.items.append(["mark", rec])

    def tick(self):
        """Advance playback to now; returns the marks reached."""
        now = time.monotonic()
        reached = []
        if not self.items:
            self.last = now
            return reached
        self.budget += (now - self.last) * 8000.0
        self.last = now
        call = self.s.call
        while self.items:
            kind, val = self.items[0]
            if kind == "mark":
                self.items.popleft()
                val["played_bytes_at_echo"] = len(call.played_audio)
                reached.append(val)
                continue
            take = min(len(val), int(self.budget))
            if take <= 0:
                break
            call.played_audio.extend(val[:take])
            del val[:take]
            self.budget -= take
            self.buffered -= take
            if val:
                break
            self.items.popleft()
        if not self.items:
            self.budget = 0.0
            self.idle_since = now
        return reached

    def clear(self):
        flushed = [val for kind, val in self.items if kind == "mark"]
        dropped = self.buffered
        self.items.clear()
        self.buffered = 0
        self.budget = 0.0
        self.idle_since = time.monotonic()
        return flushed, dropped


class MediaSession:
    def __init__(self, fake, call, ws, spec):
        self.fake = fake
        self.call = call
        self.ws = ws
        self.spec = spec
        self.seq = 0
        self.lock = asyncio.Lock()
        self.stop_sending = asyncio.Event()
        self.outgoing = collections.deque()   # caller frames still to send (speech)
        self.labels = []
        self.playout = Playout(self)
        self.t0 = time.monotonic()
        self.caller_done = asyncio.Event()
        self.stop_sent = False
        self.mark_names = set()

    # -- sending --------------------------------------------------------------------
    async def send(self, obj, numbered=True):
        async with self.lock:
            if numbered:
                self.seq += 1
                obj = self._with_seq(obj, str(self.seq))
            await self.ws.send(json.dumps(obj, separators=(",", ":")))

    @staticmethod
    def _with_seq(obj, seq):
        # key order as in Twilio's own examples: event, sequenceNumber, <body>, streamSid
        out = {"event": obj["event"], "sequenceNumber": seq}
        for k, v in obj.items():
            if k not in ("event", "streamSid"):
                out[k] = v
        if "streamSid" in obj:
            out["streamSid"] = obj["streamSid"]
        return out

    def queue_speech(self, audio, label):
        frames = C.pad_to_frames(bytes(audio))
        for i in range(0, len(frames), C.FRAME_BYTES):
            self.outgoing.append(frames[i:i + C.FRAME_BYTES])
        self.labels.append(label)
        self.caller_done.clear()

    async def sender(self):
        """One 160-byte media message every 20 ms on a monotonic schedule (no drift):
        queued caller speech first, then 0xFF silence, as a live phone line does."""
        call = self.call
        n = 0
        in_speech = False
        base = time.monotonic()
        while not self.stop_sending.is_set():
            delay = base + n * 0.020 - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop_sending.wait(), timeout=delay)
                    break
                except asyncio.TimeoutError:
                    pass
            if self.outgoing:
                frame = self.outgoing.popleft()
                in_speech = True
            else:
                frame = C.SILENCE_FRAME
            ts = int((time.monotonic() - base) * 1000)
            msg = {"event": "media",
                   "media": {"track": "inbound", "chunk": str(n + 1), "timestamp": str(ts),
                             "payload": base64.b64encode(frame).decode("ascii")},
                   "streamSid": call.stream_sid}
            try:
                await self.send(msg)
            except websockets.ConnectionClosed:
                break
            call.sent_audio.extend(frame)
            call.media_messages_sent += 1
            n += 1
            if in_speech and not self.outgoing:
                in_speech = False
                call.caller_speech_end_ms.append(now_ms(self.t0))
                call.event("caller speech sent (%s); %d bytes sent so far" % (
                    ", ".join(self.labels), len(call.sent_audio)))
                self.labels = []
                self.caller_done.set()

    async def player(self):
        while True:
            await asyncio.sleep(0.010)
            for rec in self.playout.tick():
                await self.echo_mark(rec, flushed=False)

    async def echo_mark(self, rec, flushed):
        rec["echoed"] = True
        rec["flushed"] = flushed
        if flushed:
            rec["played_bytes_at_echo"] = len(self.call.played_audio)
        rec["echoed_at_ms"] = now_ms(self.t0)
        self.call.marks_echoed.append(rec["name"])
        if self.stop_sent:
            return
        try:
            await self.send({"event": "mark", "streamSid": self.call.stream_sid,
                             "mark": {"name": rec["name"]}})
        except websockets.ConnectionClosed:
            pass

    # -- receiving ------------------------------------------------------------------
    def check_message(self, raw):
        """Validate one app->Twilio message against twilio-media-streams.md §3/§5.
        Returns the parsed message or raises Violation (31950/31951)."""
        if isinstance(raw, (bytes, bytearray)):
            raise Violation("binary frame of %d bytes (31950: messages must be JSON text frames)" % len(raw))
        try:
            msg = json.loads(raw)
        except ValueError:
            raise Violation("text frame is not JSON (31951): %r" % raw[:80])
        if not isinstance(msg, dict):
            raise Violation("message is not a JSON object (31951): %r" % raw[:80])
        ev = msg.get("event")
        shapes = {"media": {"event", "streamSid", "media"},
                  "mark": {"event", "streamSid", "mark"},
                  "clear": {"event", "streamSid"}}
        if ev not in shapes:
            raise Violation("unknown event %r (31951; the app may send only media, mark, clear)" % (ev,))
        keys = set(msg)
        if keys != shapes[ev]:
            extra = sorted(keys - shapes[ev])
            missing = sorted(shapes[ev] - keys)
            raise Violation("%s message with %s%s (31951)" % (
                ev, ("extra fields %s" % extra) if extra else "",
                ((" " if extra else "") + "missing fields %s" % missing) if missing else ""))
        if msg["streamSid"] != self.call.stream_sid:
            raise Violation("%s message with wrong streamSid %r (expected %s) (31951)" % (
                ev, msg["streamSid"], self.call.stream_sid))
        if ev == "media":
            media = msg["media"]
            if not isinstance(media, dict) or set(media) != {"payload"}:
                raise Violation("media.media must be exactly {\"payload\"}, got %r (31951)" % (
                    sorted(media) if isinstance(media, dict) else media,))
            payload = media["payload"]
            if not isinstance(payload, str):
                raise Violation("media.payload is not a string (31951)")
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise Violation("media.payload is not valid standard base64 (31951)")
            if not data:
                raise Violation("media.payload is empty")
            if data[:4] in (b"RIFF", b".snd"):
                raise Violation("media.payload starts with a %r file header (must be raw mu-law)" % data[:4])
            msg["_audio"] = data
        elif ev == "mark":
            mark = msg["mark"]
            if not isinstance(mark, dict) or set(mark) != {"name"}:
                raise Violation("mark.mark must be exactly {\"name\"}, got %r (31951)" % (
                    sorted(mark) if isinstance(mark, dict) else mark,))
            if not isinstance(mark["name"], str) or not mark["name"]:
                raise Violation("mark.name must be a non-empty string (31951)")
        return msg

    async def receiver(self):
        call = self.call
        async for raw in self.ws:
            try:
                msg = self.check_message(raw)
            except Violation as v:
                call.violation(str(v))
                continue
            ev = msg["event"]
            if ev == "media":
                data = msg["_audio"]
                if call.first_reply_audio_ms is None:
                    call.first_reply_audio_ms = now_ms(self.t0)
                    call.event("first app audio received")
                call.received_audio.extend(data)
                call.media_messages_received += 1
                self.playout.add_audio(data)
            elif ev == "mark":
                name = msg["mark"]["name"]
                if name in self.mark_names:
                    call.warning("mark name %r reused (names should be unique)" % name)
                self.mark_names.add(name)
                rec = {"name": name, "received_at_ms": now_ms(self.t0),
                       "audio_bytes_before": len(call.received_audio), "echoed": False,
                       "flushed": False, "played_bytes_at_echo": None, "echoed_at_ms": None}
                call.marks.append(rec)
                call.marks_sent_by_app.append(name)
                self.playout.add_mark(rec)
            elif ev == "clear":
                call.clears += 1
                flushed, dropped = self.playout.clear()
                call.event("clear: dropped %d unplayed bytes (%d ms), played so far %d bytes, "
                           "flushing %d marks" % (dropped, dropped // 8, len(call.played_audio), len(flushed)))
                for rec in flushed:
                    await self.echo_mark(rec, flushed=True)

    # -- hang-up ----------------------------------------------------------------------
    async def auto_hangup(self):
        call = self.call
        await self.caller_done.wait()
        base_bytes = len(call.received_audio)
        t = time.monotonic()
        while len(call.received_audio) <= base_bytes:
            if time.monotonic() - t > 20.0:
                log.loud("%s AUTO-HANGUP: no reply audio within 20 s after the caller spoke; hanging up", call.sid)
                call.warning("auto-hangup: no reply audio within 20 s")
                return "auto-hangup (no reply audio within 20 s)"
            await asyncio.sleep(0.05)
        while True:
            idle_since = self.playout.idle_since
            if self.playout.idle() and idle_since is not None and time.monotonic() - idle_since >= 1.5:
                return "auto-hangup (reply played)"
            await asyncio.sleep(0.05)

    async def run(self):
        """Returns 'hangup' (we ended it) or 'app_closed' (the app closed / dropped)."""
        call = self.call
        fake = self.fake
        call.event("media stream open to %s" % call.stream_url)
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"}, numbered=False)
        await self.send({"event": "start",
                         "start": {"accountSid": fake.account_sid, "streamSid": call.stream_sid,
                                   "callSid": call.sid, "tracks": ["inbound"],
                                   "customParameters": dict(call.custom_parameters),
                                   "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                   "channels": 1}},
                         "streamSid": call.stream_sid})
        audio = fake.settings.get("caller_audio_bytes")
        if audio:
            self.queue_speech(audio, "caller audio file")
        tasks = {}
        tasks["sender"] = asyncio.ensure_future(self.sender())
        tasks["receiver"] = asyncio.ensure_future(self.receiver())
        tasks["player"] = asyncio.ensure_future(self.player())
        waiters = {asyncio.ensure_future(call.hangup_event.wait()): "hangup"}
        if fake.settings.get("auto_hangup") and audio:
            waiters[asyncio.ensure_future(self.auto_hangup())] = "auto"
        limit = fake.settings.get("max_call_seconds") or 120
        if call.time_limit:
            limit = min(limit, call.time_limit)
        waiters[asyncio.ensure_future(asyncio.sleep(max(0.0, limit - (time.monotonic() - call.t0))))] = "limit"
        waiters[tasks["receiver"]] = "receiver"
        done, _ = await asyncio.wait(list(waiters), return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        why = waiters[first]
        for w in waiters:
            if w is not tasks["receiver"] and not w.done():
                w.cancel()
        outcome = "hangup"
        if why == "receiver":
            outcome = "app_closed"
            exc = first.exception()
            call.close_code = self.ws.close_code
            call.close_reason = self.ws.close_reason
            call.close_initiator = "app"
            if exc is not None and not isinstance(exc, websockets.ConnectionClosed):
                call.event("receiver error: %r" % exc)
            call.event("app closed the media WebSocket (code %s%s)" % (
                call.close_code, (" reason %r" % call.close_reason) if call.close_reason else ""))
            if call.close_code not in (1000, 1001):
                call.warning("media WebSocket ended with close code %s" % call.close_code)
        else:
            if why == "auto":
                call.hangup_reason = first.result()
            elif why == "limit":
                call.hangup_reason = "max-call-seconds (%s s) reached" % limit
                log.loud("%s SAFETY: call reached --max-call-seconds=%s; hanging up", call.sid, limit)
            call.hangup_reason = call.hangup_reason or "hang-up requested"
            call.event("hanging up: %s" % call.hangup_reason)
        self.stop_sending.set()
        await asyncio.gather(tasks["sender"], return_exceptions=True)
        tasks["player"].cancel()
        if outcome == "hangup":
            try:
                await self.send({"event": "stop",
                                 "stop": {"accountSid": fake.account_sid, "callSid": call.sid},
                                 "streamSid": call.stream_sid})
                self.stop_sent = True
                call.event("sent stop (sequenceNumber %d)" % self.seq)
                await asyncio.wait_for(self.ws.close(1000), timeout=5)
            except (websockets.ConnectionClosed, asyncio.TimeoutError) as e:
                call.event("closing after stop: %r" % e)
            await asyncio.gather(tasks["receiver"], return_exceptions=True)
            call.close_code = 1000
            call.close_initiator = "twilio"
            if self.ws.close_code is not None and self.ws.close_code != 1000:
                call.warning("app answered our close with code %s" % self.ws.close_code)
        await asyncio.gather(tasks["player"], return_exceptions=True)
        return outcome


# ======================================================================================
# The fake
# ======================================================================================

class FakeTwilio:
    def __init__(self, args):
        self.args = args
        self.account_sid = args.account_sid
        self.auth_token = args.auth_token
        self.public_url = args.public_url.rstrip("/")
        self.deliver_to = args.deliver_to.rstrip("/") if args.deliver_to else None
        self.settings = {
            "rest_delay_ms": 0,
            "fail_next": None,
            "caller_audio": args.caller_audio,
            "caller_audio_bytes": C.read_file_bytes(args.caller_audio) if args.caller_audio else b"",
            "auto_hangup": bool(args.auto_hangup),
            "max_call_seconds": args.max_call_seconds,
            "host_header": args.host_header,
            "ring_ms": 100,
            "next_call_outcome": None,
            "ping_interval": args.ping_interval,
            "max_page_size": args.max_page_size,
        }
        self.calls = collections.OrderedDict()
        self.requests = []
        self.numbers = []
        for i in range(args.numbers):
            e164 = "+1500555%04d" % (i + 1)
            self.numbers.append({"e164": e164, "sid": C.stable_sid("PN", self.account_sid, e164),
                                 "friendly_name": C.format_national(e164)})
        self.number_by_e164 = {n["e164"]: n for n in self.numbers}
        self.http = None
        self.client_ssl = C.make_client_ssl(args.ca_file) if args.ca_file else None

    # ---------------------------------------------------------------- delivery helpers
    def deliver_url(self, public):
        """Public URL (https/wss on --public-url) -> URL actually dialled on --deliver-to,
        or None if it is not on the public origin."""
        if origin_of(public) != origin_of(self.public_url):
            return None
        p = urllib.parse.urlsplit(public)
        d = urllib.parse.urlsplit(self.deliver_to)
        if p.scheme in ("wss", "ws"):
            scheme = "wss" if d.scheme == "https" else "ws"
        else:
            scheme = d.scheme
        return urllib.parse.urlunsplit((scheme, d.netloc, p.path, p.query, ""))

    def public_host(self):
        return urllib.parse.urlsplit(self.public_url).netloc

    def standard_params(self, call, call_status):
        """twilio-rest.md §8.1 standard voice request parameters."""
        p = {"AccountSid": self.account_sid, "ApiVersion": API_VERSION, "CallSid": call.sid,
             "CallStatus": call_status, "Called": call.to, "Caller": call.from_,
             "Direction": call.direction, "From": call.from_, "To": call.to}
        for pre in GEO_PREFIXES:
            num = call.from_ if pre in ("From", "Caller") else call.to
            for suf in GEO_SUFFIXES:
                p[pre + suf] = ("US" if num.startswith("+1") else "") if suf == "Country" else ""
        return p

    async def webhook(self, call, purpose, url, method, params):
        """Signed request to a product URL (twilio-rest.md §8, §9). Returns (status,
        content_type, text) or None when it could not be delivered."""
        target = self.deliver_url(url)
        rec = {"purpose": purpose, "url": url, "method": method, "params": dict(params)}
        call.webhooks.append(rec)
        if target is None:
            call.violation("%s URL %s is not on PUBLIC_URL %s (the fake cannot deliver it)" % (
                purpose, url, self.public_url))
            rec["error"] = "not on public url"
            return None
        headers = {"User-Agent": "TwilioProxy/1.1", "Accept": "*/*"}
        if self.settings["host_header"] == "public":
            headers["Host"] = self.public_host()
        if method == "GET":
            sep = "&" if urllib.parse.urlsplit(url).query else "?"
            signed_url = url + sep + urllib.parse.urlencode(params)
            target = target + sep + urllib.parse.urlencode(params)
            headers["X-Twilio-Signature"] = C.twilio_signature(self.auth_token, signed_url)
            data = None
            rec["signed_url"] = signed_url
        else:
            headers["X-Twilio-Signature"] = C.twilio_signature(self.auth_token, url, params)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urllib.parse.urlencode(params)
        rec["signature"] = headers["X-Twilio-Signature"]
        rec["delivered_to"] = target
        try:
            async with self.http.request(method, yarl.URL(target, encoded=True), data=data,
                                         headers=headers, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=15),
                                         ssl=self.client_ssl) as resp:
                text = await resp.text(errors="replace")
                rec["status"] = resp.status
                call.event("%s %s %s -> HTTP %d" % (purpose, method, url, resp.status))
                return resp.status, resp.headers.get("Content-Type", ""), text
        except asyncio.TimeoutError:
            rec["error"] = "timeout (15 s)"
            call.event("%s %s %s -> timeout (15 s)" % (purpose, method, url))
        except aiohttp.ClientError as e:
            rec["error"] = repr(e)
            call.event("%s %s %s -> %r" % (purpose, method, url, e))
        return None

    # ------------------------------------------------------------ status callbacks
    def queue_callback(self, call, event):
        """Status callbacks (twilio-rest.md §8.2): 'completed' always when StatusCallback
        is set, the others only when asked for in StatusCallbackEvent."""
        if not call.status_callback:
            return
        if event != "completed" and event not in call.status_callback_events:
            return
        status = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}.get(
            event, call.status)
        params = self.standard_params(call, status)
        params.update({"CallbackSource": "call-progress-events", "SequenceNumber": str(call.cb_seq),
                       "Timestamp": C.rfc2822()})
        if event == "completed":
            dur = int(round((call.ended or time.time()) - call.started)) if call.started else 0
            params["CallDuration"] = str(dur)
            params["Duration"] = str((dur + 59) // 60)
            params["SipResponseCode"] = {"completed": "200", "busy": "486", "no-answer": "487",
                                         "canceled": "487", "failed": "500"}.get(call.status, "200")
        call.cb_seq += 1
        call.cb_queue.put_nowait((event, params))

    async def callback_worker(self, call):
        while True:
            event, params = await call.cb_queue.get()
            if event is None:
                return
            res = await self.webhook(call, "status callback (%s)" % event, call.status_callback,
                                     call.status_callback_method, params)
            call.callbacks.append({"event": event, "CallStatus": params["CallStatus"],
                                   "SequenceNumber": params["SequenceNumber"],
                                   "http_status": res[0] if res else None})

    async def stream_callback(self, call, spec, event, error=None):
        if not spec.status_callback:
            return
        params = {"AccountSid": self.account_sid, "CallSid": call.sid,
                  "StreamSid": call.stream_sid or "", "StreamName": spec.name or call.stream_sid or "",
                  "StreamEvent": event, "Timestamp": C.rfc2822()}
        if error:
            params["StreamError"] = error
        await self.webhook(call, "stream status callback (%s)" % event, spec.status_callback,
                           spec.status_callback_method, params)

    # ------------------------------------------------------------------ TwiML
    def parse_twiml(self, call, text):
        """Strict <Response><Connect><Stream url="wss://..."><Parameter/>... Returns a
        StreamSpec or None (call fails; violations recorded)."""
        try:
            root = ET.fromstring(text.strip().encode("utf-8"))
        except ET.ParseError as e:
            call.violation("TwiML is not well-formed XML: %s" % e)
            return None
        if root.tag != "Response":
            call.violation("TwiML root element is <%s>, expected <Response>" % root.tag)
            return None
        verbs = list(root)
        if not verbs:
            call.violation("TwiML <Response> is empty (the call would just hang up)")
            return None
        if verbs[0].tag != "Connect":
            call.violation("TwiML: first verb is <%s>; this project's TwiML must start with <Connect><Stream>"
                           % verbs[0].tag)
            return None
        for extra in verbs[1:]:
            call.warning("TwiML verb <%s> after <Connect> is only reached when the stream ends "
                         "(the fake does not execute it)" % extra.tag)
        connect = verbs[0]
        spec = StreamSpec()
        bad = set(connect.attrib) - CONNECT_ATTRS
        if bad:
            call.violation("<Connect> has unknown attributes %s" % sorted(bad))
        spec.action = connect.attrib.get("action")
        spec.action_method = connect.attrib.get("method", "POST").upper()
        streams = list(connect)
        if len(streams) != 1 or streams[0].tag != "Stream":
            call.violation("<Connect> must contain exactly one <Stream>, has %s" % [c.tag for c in streams])
            return None
        stream = streams[0]
        if (connect.text or "").strip() or (stream.text or "").strip():
            call.violation("unexpected text content inside <Connect>/<Stream>")
        bad = set(stream.attrib) - STREAM_ATTRS
        if bad:
            call.violation("<Stream> has unknown attributes %s" % sorted(bad))
        if "track" in stream.attrib:
            call.violation("<Stream track=...> under <Connect> (bidirectional streams carry only the "
                           "inbound track; a real call reported error 31941; omit the attribute)")
        url = stream.attrib.get("url")
        if not url:
            call.violation("<Stream> has no url attribute")
            return None
        try:
            pu = urllib.parse.urlsplit(url)
        except ValueError:
            pu = None
        if pu is None or not pu.scheme or not pu.netloc:
            call.violation("<Stream url=%r> is not an absolute URL (31923)" % url)
            return None
        if pu.scheme != "wss":
            call.violation("<Stream url=%r> scheme is %r, only wss is supported (31922)" % (url, pu.scheme))
            return None
        if pu.query or "?" in url:
            call.violation("<Stream url=%r> has a query string (not supported by Twilio: stripped or "
                           "handshake error 31920; use <Parameter>)" % url)
            return None
        if pu.fragment:
            call.violation("<Stream url=%r> has a fragment" % url)
            return None
        spec.url = url
        spec.name = stream.attrib.get("name")
        spec.status_callback = stream.attrib.get("statusCallback")
        spec.status_callback_method = stream.attrib.get("statusCallbackMethod", "POST").upper()
        for prm in stream:
            if prm.tag != "Parameter":
                call.violation("<Stream> child <%s> (only <Parameter> allowed)" % prm.tag)
                continue
            if set(prm.attrib) != {"name", "value"}:
                call.violation("<Parameter> must have exactly name and value attributes, has %s"
                               % sorted(prm.attrib))
                if "name" not in prm.attrib:
                    continue
            name = prm.attrib["name"]
            value = prm.attrib.get("value", "")
            if len(name) + len(value) >= 500:
                call.violation("<Parameter name=%r> name+value is %d chars (must be < 500)"
                               % (name, len(name) + len(value)))
            if name in spec.params:
                call.warning("<Parameter name=%r> given twice; the last value wins" % name)
            spec.params[name] = value
        return spec

    async def fetch_twiml(self, call, source, call_status):
        kind = source[0]
        if kind == "twiml":
            call.twiml = source[1]
            call.twiml_status = None
            return source[1]
        _, url, method, purpose = source
        res = await self.webhook(call, purpose, url, method, self.standard_params(call, call_status))
        if res is None:
            return None
        status, ctype, text = res
        call.twiml_status = status
        call.twiml = text
        call.twiml_content_type = ctype
        if status != 200:
            call.violation("%s answered HTTP %d (expected 200 with TwiML)" % (purpose, status))
            return None
        base_ctype = ctype.split(";")[0].strip().lower()
        if base_ctype not in ("text/xml", "application/xml"):
            call.violation("%s Content-Type is %r, expected text/xml or application/xml" % (purpose, ctype))
        return text

    # ------------------------------------------------------------------ call runner
    async def run_call(self, call, source):
        worker = asyncio.ensure_future(self.callback_worker(call))
        try:
            await self._run_call(call, source)
        except Exception as e:  # keep the fake alive whatever happens
            call.event("internal error in the fake: %r" % e)
            log.loud("internal error in call %s: %r", call.sid, e)
            if call.status not in ENDED:
                call.status = "failed"
        finally:
            if call.status not in ENDED:
                call.set_status("completed")
            if not call.ended:
                call.ended = time.time()
            call.updated = time.time()
            self.queue_callback(call, "completed")
            call.cb_queue.put_nowait((None, None))
            try:
                await asyncio.wait_for(worker, timeout=20)
            except asyncio.TimeoutError:
                worker.cancel()
            call.event("call over: %s" % call.status)
            call.done.set()

    async def _wait_or_hangup(self, seconds, call):
        try:
            await asyncio.wait_for(call.hangup_event.wait(), timeout=seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def _run_call(self, call, source):
        if call.direction == "outbound-api":
            self.queue_callback(call, "initiated")
            call.event("dialling %s from %s (simulated)" % (call.to, call.from_))
            if await self._wait_or_hangup(0.02, call):
                return
            call.set_status("ringing")
            self.queue_callback(call, "ringing")
            if await self._wait_or_hangup(self.settings["ring_ms"] / 1000.0, call):
                return
            outcome = call.outcome_override
            if outcome in ("busy", "no-answer", "failed"):
                call.set_status(outcome)
                return
            call.started = time.time()
            call.set_status("in-progress")
            self.queue_callback(call, "answered")
            call_status = "in-progress"
        else:
            call_status = "ringing"
        while source is not None:
            text = await self.fetch_twiml(call, source, call_status)
            source = None
            if call.direction == "inbound" and call.status == "ringing":
                call.started = time.time()
                call.set_status("in-progress")
            call_status = "in-progress"
            if text is None or call.hangup_event.is_set():
                if call.status not in ENDED:
                    call.set_status("failed")
                return
            spec = self.parse_twiml(call, text)
            if spec is None:
                call.set_status("failed")
                return
            outcome = await self.stream(call, spec)
            if call.pending_redirect is not None:
                source, call.pending_redirect = call.pending_redirect, None
                call.hangup_event.clear()
                continue
            if outcome in ("app_closed", "handshake_failed") and spec.action:
                source = ("url", spec.action, spec.action_method, "<Connect action>")
                continue

    async def stream(self, call, spec):
        call.stream_url = spec.url
        call.stream_name = spec.name
        call.custom_parameters = dict(spec.params)
        call.stream_sid = C.new_sid("MZ")
        target = self.deliver_url(spec.url)
        if target is None:
            call.violation("<Stream url=%s> is not on PUBLIC_URL %s" % (spec.url, self.public_url))
            call.ws_status = "failed"
            return "handshake_failed"
        signature = C.twilio_signature(self.auth_token, spec.url)  # wss URL, no params (§9)
        call.ws_status = "connecting"
        call.event("connecting media WebSocket %s (delivered to %s)" % (spec.url, target))
        host_override = self.public_host() if self.settings["host_header"] == "public" else None

        def on_request(path, headers):
            call.ws_request_headers = [[k, v] for k, v in headers]

        def factory(*a, **kw):
            return TwilioWsProtocol(*a, host_override=host_override, on_request=on_request, **kw)

        try:
            ws = await websockets.connect(
                target, create_protocol=factory, compression=None, origin=None, extensions=None,
                subprotocols=None, user_agent_header=None,
                extra_headers=[("User-Agent", "Twilio.TmeWs/1.0"), ("x-twilio-signature", signature),
                               ("Accept-Encoding", "gzip")],
                ssl=(self.client_ssl or C.make_client_ssl()) if target.startswith("wss:") else None,
                open_timeout=10, ping_interval=self.settings["ping_interval"], ping_timeout=20,
                close_timeout=5, max_size=4 * 1024 * 1024, max_queue=1024)
        except InvalidStatusCode as e:
            call.handshake_status = e.status_code
            call.ws_status = "failed"
            call.event("media WebSocket upgrade refused with HTTP %d (31920)" % e.status_code)
            await self.stream_callback(call, spec, "stream-error", "31920 handshake error: HTTP %d" % e.status_code)
            return "handshake_failed"
        except InvalidHandshake as e:
            call.ws_status = "failed"
            call.violation("media WebSocket handshake invalid (31920): %s" % e)
            await self.stream_callback(call, spec, "stream-error", "31920 handshake error")
            return "handshake_failed"
        except asyncio.TimeoutError:
            call.ws_status = "failed"
            call.event("media WebSocket connection timed out (31901)")
            await self.stream_callback(call, spec, "stream-error", "31901 connection timeout")
            return "handshake_failed"
        except OSError as e:
            call.ws_status = "failed"
            call.event("media WebSocket connection failed (31902): %r" % e)
            await self.stream_callback(call, spec, "stream-error", "31902 connection refused")
            return "handshake_failed"
        call.ws_status = "open"
        if ws.subprotocol:
            call.violation("server selected subprotocol %r that Twilio never offers" % ws.subprotocol)
        if ws.extensions:
            call.violation("server negotiated extensions %r that Twilio never offers" % ws.extensions)
        asyncio.ensure_future(self.stream_callback(call, spec, "stream-started"))
        session = MediaSession(self, call, ws, spec)
        call.session = session
        try:
            outcome = await session.run()
        finally:
            call.session = None
            call.ws_status = "closed"
            if not ws.closed:
                await ws.close(1000)
        await self.stream_callback(call, spec, "stream-stopped")
        return outcome

    def start_call(self, call, source):
        self.calls[call.sid] = call
        asyncio.ensure_future(self.run_call(call, source))

    # ------------------------------------------------------------------ REST API
    def rest_log(self, request, form_pairs, raw_body):
        entry = {"time": time.time(), "method": request.method, "path": request.path,
                 "query": {k: v for k, v in request.query.items()},
                 "query_multi": [[k, v] for k, v in request.query.items()],
                 "form": {k: v for k, v in form_pairs},
                 "form_multi": [[k, v] for k, v in form_pairs],
                 "content_type": request.headers.get("Content-Type"),
                 "raw_body": raw_body.decode("utf-8", "replace"),
                 "authorized": False, "status": None, "warnings": []}
        self.requests.append(entry)
        return entry

    def check_auth(self, request):
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            user, _, pwd = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if hmac.compare_digest(user.encode(), self.account_sid.encode()) and \
                hmac.compare_digest(pwd.encode(), self.auth_token.encode()):
            return user
        return None

    async def rest(self, request):
        raw = await request.read()
        form_pairs = []
        if request.method == "POST":
            form_pairs = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        entry = self.rest_log(request, form_pairs, raw)
        resp = await self._rest(request, entry, form_pairs, raw)
        entry["status"] = resp.status
        log("REST %s %s -> %d%s", request.method, request.path_qs, resp.status,
            "" if resp.status < 400 else " " + resp.text)
        return resp

    async def _rest(self, request, entry, form_pairs, raw):
        delay = self.settings.get("rest_delay_ms") or 0
        if delay:
            await asyncio.sleep(delay / 1000.0)
        fail = self.settings.get("fail_next")
        if fail:
            self.settings["fail_next"] = None
            st = int(fail.get("status", 500))
            return twilio_error(st, int(fail.get("code", 20500)), fail.get("message", "Internal Server Error"))
        if request.method == "POST":
            ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if raw and ctype != "application/x-www-form-urlencoded":
                entry["warnings"].append("POST body Content-Type is %r, not application/x-www-form-urlencoded"
                                         % request.headers.get("Content-Type"))
                log.loud("REST POST %s with Content-Type %r: Twilio reads only form bodies",
                         request.path, request.headers.get("Content-Type"))
                form_pairs = []
        user = self.check_auth(request)
        if user is None:
            return twilio_error(401, 20003, "Authenticate",
                                detail="Your AccountSid or AuthToken was incorrect.")
        m = re.match(r"^/2010-04-01/Accounts/([^/]+)(/.*)?$", request.path)
        if not m:
            return self.not_found(request)
        if m.group(1) != user:
            return twilio_error(401, 20003, "Authenticate",
                                detail="The AccountSid in the URL does not match the credentials.")
        entry["authorized"] = True
        rest = m.group(2) or ""
        form = {}
        for k, v in form_pairs:
            form[k] = v
        if rest == "/Calls.json":
            if request.method == "POST":
                return self.create_call(form, form_pairs, entry)
            if request.method == "GET":
                return self.list_calls(request)
        mm = re.match(r"^/Calls/([^/]+)\.json$", rest)
        if mm:
            call = self.calls.get(mm.group(1))
            if call is None:
                return self.not_found(request)
            if request.method == "GET":
                return web.json_response(call.resource())
            if request.method == "POST":
                return await self.update_call(call, form, entry)
        if rest == "/IncomingPhoneNumbers.json" and request.method == "GET":
            return self.list_numbers(request)
        if rest in ("/Calls.json", "/IncomingPhoneNumbers.json") or mm:
            return twilio_error(405, 20004, "Method not allowed")
        return self.not_found(request)

    def not_found(self, request):
        return twilio_error(404, 20404, "The requested resource %s was not found" % request.path)

    def create_call(self, form, form_pairs, entry):
        def bad(code, msg):
            return twilio_error(400, code, msg)

        unknown = sorted({k for k, _ in form_pairs} - KNOWN_CREATE_PARAMS)
        if unknown:
            entry["warnings"].append("unknown parameters ignored: %s" % unknown)
        to = form.get("To")
        from_ = form.get("From")
        if not to:
            return bad(21200, "Required parameter 'To' is missing.")
        if not from_:
            return bad(21213, "No 'From' number is specified")
        url = form.get("Url")
        twiml = form.get("Twiml")
        if not url and not twiml:
            if form.get("ApplicationSid"):
                return bad(21200, "ApplicationSid is not supported by this fake; send Url")
            return bad(21200, "Either a 'Url', 'Twiml' or 'ApplicationSid' parameter is required")
        if url and not is_absolute_http_url(url):
            return bad(21205, "Url is not a valid URL: %s" % url)
        if url and twiml:
            entry["warnings"].append("both Url and Twiml given: Twiml is ignored on create (send only one)")
        if twiml and len(twiml) > 4000:
            return bad(21200, "Twiml is longer than 4000 characters")
        method = form.get("Method", "POST").upper()
        if method not in ("GET", "POST"):
            return bad(21200, "Method must be GET or POST")
        if not C.is_e164(to):
            return bad(21211, "The 'To' number %s is not a valid phone number." % to)
        if not C.is_e164(from_):
            return bad(21212, "The 'From' number %s is not a valid phone number, shortcode, "
                              "or alphanumeric sender ID." % from_)
        if from_ not in self.number_by_e164:
            return bad(21210, "The source phone number provided, %s, is not yet verified for your "
                              "account. You may only make calls from phone numbers that you've "
                              "verified or purchased from Twilio." % from_)
        if to == from_:
            return bad(21211, "The 'To' number %s is not a valid phone number." % to)
        sc = form.get("StatusCallback")
        if sc and not is_absolute_http_url(sc):
            return bad(21205, "StatusCallback is not a valid URL: %s" % sc)
        scm = form.get("StatusCallbackMethod", "POST").upper()
        if scm not in ("GET", "POST"):
            return bad(21200, "StatusCallbackMethod must be GET or POST")
        events = set()
        for k, v in form_pairs:
            if k == "StatusCallbackEvent":
                for e in v.split():
                    if e not in CALLBACK_EVENTS:
                        return bad(21200, "Invalid StatusCallbackEvent %r" % e)
                    events.add(e)
        for k in ("Timeout", "TimeLimit"):
            if k in form and not re.match(r"^\d+$", form[k]):
                return bad(21200, "%s must be an integer" % k)
        if "Timeout" in form and not 1 <= int(form["Timeout"]) <= 600:
            return bad(21200, "Timeout must be between 1 and 600")
        call = Call(self, "outbound-api", from_, to)
        call.url = url
        call.method = method
        call.inline_twiml = None if url else twiml
        call.status_callback = sc
        call.status_callback_method = scm
        call.status_callback_events = events
        call.outcome_override = self.settings.get("next_call_outcome")
        self.settings["next_call_outcome"] = None
        for w in entry["warnings"]:
            call.warning("Calls.json: " + w)
        if "TimeLimit" in form:
            call.time_limit = int(form["TimeLimit"])
        source = ("url", url, method, "voice URL") if url else ("twiml", twiml)
        call.event("created by REST: To=%s From=%s %s" % (to, from_, ("Url=" + url) if url else "Twiml"))
        self.start_call(call, source)
        return web.json_response(call.resource(), status=201)

    async def update_call(self, call, form, entry):
        unknown = sorted(set(form) - KNOWN_UPDATE_PARAMS)
        if unknown:
            entry["warnings"].append("unknown parameters ignored: %s" % unknown)
        status = form.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            return twilio_error(400, 21200, "Status must be 'completed' or 'canceled'")
        if (form.get("Url") or form.get("Twiml")) and status is None:
            if form.get("Url") and form.get("Twiml"):
                return twilio_error(400, 21200, "Url and Twiml are mutually exclusive")
            if call.status in ENDED:
                return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            if form.get("Url"):
                if not is_absolute_http_url(form["Url"]):
                    return twilio_error(400, 21205, "Url is not a valid URL: %s" % form["Url"])
                call.pending_redirect = ("url", form["Url"], form.get("Method", "POST").upper(), "redirect URL")
            else:
                call.pending_redirect = ("twiml", form["Twiml"])
            call.event("REST redirect requested")
            call.hangup_reason = "REST redirect"
            call.hangup_event.set()
            return web.json_response(call.resource())
        if status == "completed" or status == "canceled":
            if call.status in ENDED:
                call.event("REST Status=%s on an already ended call (no change)" % status)
                return web.json_response(call.resource())
            if status == "canceled" and call.status == "in-progress":
                call.warning("REST Status=canceled on an in-progress call has no effect (use completed)")
                return web.json_response(call.resource())
            call.hangup_reason = "REST Status=%s" % status
            if call.status in ("queued", "ringing"):
                call.set_status("canceled")
            else:
                call.set_status("completed")
            call.ended = time.time()
            call.hangup_event.set()
            return web.json_response(call.resource())
        return web.json_response(call.resource())

    # -------------------------------------------------------------- paging
    def page(self, request, key, items, sid_of, base_path, to_json):
        """One page per twilio-rest.md §5. Page>0 needs the PageToken that the previous
        (PA<last sid of the previous page>) or next (PB<first sid of the next page>) page's
        URI carried, so a client must follow next_page_uri instead of fabricating it."""
        q = request.query
        try:
            page_size = int(q.get("PageSize", "50"))
            page_no = int(q.get("Page", "0"))
        except ValueError:
            return twilio_error(400, 20001, "PageSize and Page must be integers")
        if not 1 <= page_size <= 1000:
            return twilio_error(400, 20001, "PageSize must be between 1 and 1000")
        if page_no < 0:
            return twilio_error(400, 20001, "Page must be >= 0")
        # a server may answer smaller pages than asked for; a client must
        # follow next_page_uri, which carries the size actually used
        cap = self.settings.get("max_page_size")
        if cap:
            page_size = min(page_size, int(cap))
        token = q.get("PageToken")
        start = page_no * page_size
        if page_no > 0 or token:
            ok = False
            if token and token.startswith("PA"):
                prev_last = start - 1
                ok = 0 <= prev_last < len(items) and sid_of(items[prev_last]) == token[2:]
            elif token and token.startswith("PB"):
                nxt_first = start + page_size
                ok = 0 <= nxt_first < len(items) and sid_of(items[nxt_first]) == token[2:]
            if not ok:
                return twilio_error(400, 20001, "Invalid PageToken %r for Page %d: follow next_page_uri"
                                    % (token, page_no))
        chunk = items[start:start + page_size]
        base = "/%s/Accounts/%s/%s" % (API_VERSION, self.account_sid, base_path)

        def uri(p, tok=None):
            s = "%s?PageSize=%d&Page=%d" % (base, page_size, p)
            return s + ("&PageToken=%s" % tok if tok else "")

        nxt = None
        if start + page_size < len(items):
            nxt = uri(page_no + 1, "PA" + sid_of(items[start + page_size - 1]))
        prev = None
        if page_no > 0 and chunk:
            prev = uri(page_no - 1, "PB" + sid_of(chunk[0]))
        body = {
            key: [to_json(x) for x in chunk],
            "end": start + len(chunk) - 1 if chunk else start,
            "first_page_uri": uri(0),
            "next_page_uri": nxt,
            "page": page_no,
            "page_size": page_size,
            "previous_page_uri": prev,
            "start": start,
            "uri": uri(page_no, token),
        }
        return web.json_response(body)

    def number_json(self, n):
        acc = self.account_sid
        date = "Mon, 03 Aug 2026 09:00:00 +0000"
        return {
            "account_sid": acc, "address_requirements": "none", "address_sid": None,
            "api_version": API_VERSION, "beta": False,
            "bundle_sid": None,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
            "date_created": date, "date_updated": date,
            "emergency_address_sid": None, "emergency_address_status": "unregistered",
            "emergency_status": "Inactive",
            "friendly_name": n["friendly_name"], "identity_sid": None, "origin": "twilio",
            "phone_number": n["e164"], "sid": n["sid"],
            "sms_application_sid": "", "sms_fallback_method": "POST", "sms_fallback_url": "",
            "sms_method": "POST", "sms_url": "",
            "status": "in-use", "status_callback": "", "status_callback_method": "POST",
            "trunk_sid": None, "type": "local",
            "uri": "/%s/Accounts/%s/IncomingPhoneNumbers/%s.json" % (API_VERSION, acc, n["sid"]),
            "voice_application_sid": "", "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST", "voice_fallback_url": "",
            "voice_method": "POST", "voice_receive_mode": "voice",
            "voice_url": self.public_url + "/twiml",
        }

    def list_numbers(self, request):
        items = self.numbers
        pn = request.query.get("PhoneNumber")
        if pn:
            items = [n for n in items if pn in n["e164"]]
        fn = request.query.get("FriendlyName")
        if fn:
            items = [n for n in items if n["friendly_name"] == fn]
        return self.page(request, "incoming_phone_numbers", items, lambda n: n["sid"],
                         "IncomingPhoneNumbers.json", self.number_json)

    def list_calls(self, request):
        items = list(self.calls.values())
        for key, attr in (("To", "to"), ("From", "from_"), ("Status", "status")):
            if request.query.get(key):
                items = [c for c in items if getattr(c, attr) == request.query[key]]
        items.reverse()  # newest first, as Twilio lists calls
        return self.page(request, "calls", items, lambda c: c.sid, "Calls.json", lambda c: c.resource())

    # ---------------------------------------------------------------- control API
    async def control(self, request):
        path = request.path
        m = request.method
        try:
            body = await request.json() if m == "POST" and request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if path == "/_fake/health" and m == "GET":
            return web.json_response({"ok": True})
        if path == "/_fake/inbound" and m == "POST":
            return self.ctl_inbound(body)
        if path == "/_fake/calls" and m == "GET":
            return web.json_response(list(self.calls))
        if path == "/_fake/requests" and m == "GET":
            return web.json_response(self.requests)
        if path == "/_fake/numbers" and m == "GET":
            return web.json_response([{"phone_number": n["e164"], "sid": n["sid"],
                                       "friendly_name": n["friendly_name"]} for n in self.numbers])
        if path == "/_fake/config":
            if m == "POST":
                err = self.apply_config(body)
                if err:
                    return web.json_response({"error": err}, status=400)
            view = {k: v for k, v in self.settings.items() if k != "caller_audio_bytes"}
            return web.json_response(view)
        if path == "/_fake/reset" and m == "POST":
            for c in self.calls.values():
                if c.status not in ENDED:
                    c.hangup_reason = "reset"
                    c.hangup_event.set()
            self.calls.clear()
            self.requests.clear()
            return web.json_response({"ok": True})
        mm = re.match(r"^/_fake/calls/([^/]+)(/hangup|/say|/dtmf|/wait)?$", path)
        if mm:
            call = self.calls.get(mm.group(1))
            if call is None:
                return web.json_response({"error": "unknown call"}, status=404)
            action = mm.group(2)
            if action is None and m == "GET":
                return web.json_response(call.control_view())
            if action == "/hangup" and m == "POST":
                if call.status not in ENDED:
                    call.hangup_reason = "control API hang-up"
                    if call.status in ("queued", "ringing") and call.session is None:
                        call.set_status("canceled")
                    call.hangup_event.set()
                if body.get("wait", True):
                    try:
                        await asyncio.wait_for(call.done.wait(), timeout=10)
                    except asyncio.TimeoutError:
                        pass
                return web.json_response({"ok": True, "status": call.status})
            if action == "/wait" and m == "POST":
                try:
                    await asyncio.wait_for(call.done.wait(), timeout=float(body.get("timeout", 30)))
                except asyncio.TimeoutError:
                    pass
                return web.json_response({"ok": True, "status": call.status})
            if action == "/say" and m == "POST":
                if call.session is None:
                    return web.json_response({"error": "no media stream open"}, status=409)
                if "audio_b64" in body:
                    audio = base64.b64decode(body["audio_b64"])
                elif "audio" in body:
                    audio = C.read_file_bytes(body["audio"])
                else:
                    return web.json_response({"error": "give audio (path) or audio_b64"}, status=400)
                call.session.queue_speech(audio, body.get("label", "say"))
                call.event("control API: queued %d bytes of caller speech" % len(audio))
                return web.json_response({"ok": True, "bytes": len(audio)})
            if action == "/dtmf" and m == "POST":
                digit = str(body.get("digit", ""))
                if call.session is None or not re.match(r"^[0-9*#A-D]$", digit):
                    return web.json_response({"error": "need an open stream and one digit"}, status=400)
                await call.session.send({"event": "dtmf", "streamSid": call.stream_sid,
                                         "dtmf": {"track": "inbound_track", "digit": digit}})
                call.dtmf_sent.append(digit)
                call.event("sent dtmf %s" % digit)
                return web.json_response({"ok": True})
        return web.json_response({"error": "unknown control endpoint %s %s" % (m, path)}, status=404)

    def apply_config(self, body):
        if not isinstance(body, dict):
            return "config must be a JSON object"
        for k, v in body.items():
            if k == "caller_audio":
                try:
                    self.settings["caller_audio_bytes"] = C.read_file_bytes(v) if v else b""
                except OSError as e:
                    return "cannot read caller_audio: %s" % e
                self.settings["caller_audio"] = v
            elif k in ("rest_delay_ms", "fail_next", "auto_hangup", "max_call_seconds", "host_header",
                       "ring_ms", "next_call_outcome", "ping_interval", "max_page_size"):
                self.settings[k] = v
            else:
                return "unknown setting %r" % k
        log("config now: %s", {k: v for k, v in self.settings.items() if k != "caller_audio_bytes"})
        return None

    def ctl_inbound(self, body):
        from_ = body.get("from", "+14155550100")
        to = body.get("to") or self.numbers[0]["e164"]
        if not C.is_e164(from_) or to not in self.number_by_e164:
            return web.json_response({"error": "from must be E.164 and to an owned number"}, status=400)
        path = body.get("path", "/twiml")
        method = body.get("method", "POST").upper()
        call = Call(self, "inbound", from_, to)
        call.event("inbound call from %s to %s (simulated)" % (from_, to))
        self.start_call(call, ("url", self.public_url + path, method, "voice URL"))
        return web.json_response({"callSid": call.sid})

    # ---------------------------------------------------------------- dispatch
    async def dispatch(self, request):
        if request.path.startswith("/_fake/"):
            return await self.control(request)
        if request.path.startswith("/2010-04-01/"):
            return await self.rest(request)
        self.rest_log(request, [], b"")
        return self.not_found(request)


async def amain(args):
    fake = FakeTwilio(args)
    log.loud("SIMULATION: this is a fake Twilio, no real phone call is placed")
    log("account %s, %d numbers (%s..), public url %s, delivering to %s", fake.account_sid,
        len(fake.numbers), fake.numbers[0]["e164"] if fake.numbers else "-", fake.public_url, fake.deliver_to)
    fake.http = aiohttp.ClientSession(auto_decompress=True)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", fake.dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = C.bind_socket(args.host, args.port)
    ssl_ctx = C.make_server_ssl(args.tls_cert, args.tls_key) if args.tls_cert else None
    site = web.SockSite(runner, sock, ssl_context=ssl_ctx)
    await site.start()
    port = sock.getsockname()[1]
    log("listening on %s://%s:%d", "https" if ssl_ctx else "http", args.host, port)
    C.print_ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log("shutting down")
    for c in fake.calls.values():
        if c.status not in ENDED:
            c.hangup_reason = "fake shutting down"
            c.hangup_event.set()
    await asyncio.sleep(0.2)
    await runner.cleanup()
    await fake.http.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Twilio (REST + media client) for tests. SIMULATION only.")
    ap.add_argument("--selftest", action="store_true", help="check the signature function against "
                    "twilio-rest.md §10 and exit 0/1")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--account-sid", default="AC" + "0" * 31 + "1")
    ap.add_argument("--auth-token", default="0123456789abcdef0123456789abcdef")
    ap.add_argument("--numbers", type=int, default=3, help="owned numbers +15005550001..")
    ap.add_argument("--max-page-size", type=int, default=0,
                    help="largest page the server answers, whatever PageSize asks (0: 1000)")
    ap.add_argument("--public-url", default="https://voice.example.test")
    ap.add_argument("--deliver-to", help="origin that actually receives webhooks/WebSockets, "
                    "e.g. http://127.0.0.1:8080")
    ap.add_argument("--caller-audio", help="raw mu-law 8 kHz mono file: what the caller says")
    ap.add_argument("--auto-hangup", action="store_true")
    ap.add_argument("--ca-file", help="CA to trust for https/wss delivery")
    ap.add_argument("--max-call-seconds", type=float, default=120)
    ap.add_argument("--host-header", choices=("deliver", "public"), default="deliver",
                    help="Host header on deliveries: the deliver-to host (default) or the public host")
    ap.add_argument("--ping-interval", type=float, default=None,
                    help="send WebSocket pings every N s on media streams (Twilio: UNVERIFIED; default off)")
    args = ap.parse_args(argv)
    if args.selftest:
        return 0 if selftest() else 1
    if not re.match(r"^AC[0-9a-f]{32}$", args.account_sid):
        ap.error("--account-sid must be AC + 32 lowercase hex")
    if not args.deliver_to:
        ap.error("--deliver-to is required (except with --selftest)")
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
