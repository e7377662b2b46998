#!/usr/bin/python3
"""Fake Twilio: the REST API (2010-04-01) and, for every call, Twilio's media client.

SIMULATION ONLY - no phone call is ever placed. The product (nginx module + bridged) is
tested against this program instead of api.twilio.com. It follows, to the field name:
  * docs/protocols.md, Twilio REST: Basic auth, Calls.json create / fetch / update (hang-up), the Call
    resource, IncomingPhoneNumbers.json paging (next_page_uri + PageToken), the legacy
    error bodies of §7, the signed webhooks of §8 and X-Twilio-Signature of §9 (self-checked
    against every worked example of §10 by --selftest);
  * docs/protocols.md, Media Streams: TwiML <Connect><Stream> parsing (§2), the WebSocket upgrade
    with the §3 headers, connected/start/media/mark/dtmf/stop exactly as §4, 20 ms paced
    160-byte frames, real-time playout of what the app sends with mark echo and clear (§5),
    and a strict check of every app message (§3 Frames, §5) recorded as "violations";
  * docs/protocols.md, call control: call updates with new TwiML (redirect: stop + close 1000, the
    call goes on), a small sequential TwiML executor (<Say>, <Pause>, <Play>, <Hangup>,
    <Redirect>, <Dial> with simulated outcomes and its action request, <Connect><Stream>
    with a new stream for the same call), 21220 on updates of ended calls, answering
    machine detection (sync and async, §3) and DTMF digits (§5.1).
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
import socket
import struct
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
    "ClientNotificationUrl", "Passports", "RecordingConfigurationId",
}
KNOWN_UPDATE_PARAMS = {"Status", "Url", "Method", "Twiml", "FallbackUrl", "FallbackMethod",
                       "StatusCallback", "StatusCallbackMethod", "TimeLimit"}
STREAM_ATTRS = {"url", "name", "track", "statusCallback", "statusCallbackMethod", "connectorName"}
CONNECT_ATTRS = {"action", "method"}
ENDED = ("completed", "busy", "failed", "no-answer", "canceled")

# TwiML (npm twilio 6.3.1 lib/twiml/VoiceResponse.d.ts)
VOICE_VERBS = {"Connect", "Dial", "Echo", "Enqueue", "Gather", "Hangup", "Leave", "Pause", "Pay", "Play",
               "Prompt", "Queue", "Record", "Redirect", "Refer", "Reject", "Say", "Sms", "Start", "Stop"}
SAY_ATTRS = {"voice", "language", "loop"}
PAUSE_ATTRS = {"length"}
PLAY_ATTRS = {"digits", "loop"}
REDIRECT_ATTRS = {"method"}
DIAL_ATTRS = {"action", "answerOnBridge", "callerId", "events", "hangupOnStar", "method", "passports",
              "record", "recordingConfigurationId", "recordingStatusCallback",
              "recordingStatusCallbackEvent", "recordingStatusCallbackMethod", "recordingTrack",
              "referMethod", "referUrl", "ringTone", "sequential", "timeLimit", "timeout", "trim"}
NOUN_AMD_RANGES = {"machineDetectionTimeout": (3, 60, 30), "machineDetectionSpeechThreshold": (1000, 6000, 2400),
                   "machineDetectionSpeechEndThreshold": (500, 5000, 1200),
                   "machineDetectionSilenceTimeout": (2000, 10000, 5000)}
NOUN_AMD_ATTRS = {"machineDetection", "amdStatusCallback", "amdStatusCallbackMethod"} | set(NOUN_AMD_RANGES)
NUMBER_ATTRS = NOUN_AMD_ATTRS | {"byoc", "method", "sendDigits", "statusCallback", "statusCallbackEvent",
                                 "statusCallbackMethod", "url"}
SIP_ATTRS = NOUN_AMD_ATTRS | {"method", "password", "statusCallback", "statusCallbackEvent",
                              "statusCallbackMethod", "url", "username"}
DIAL_NOUNS = {"Application", "Client", "Conference", "Number", "Queue", "Sim", "Sip", "WhatsApp"}
DIAL_OUTCOMES = ("no-answer", "busy", "failed", "answered")

# Answering machine detection (docs/protocols.md, call control §3; call.d.ts CallListInstanceCreateOptions)
AMD_RANGES = {"MachineDetectionTimeout": (3, 60, 30), "MachineDetectionSpeechThreshold": (1000, 6000, 2400),
              "MachineDetectionSpeechEndThreshold": (500, 5000, 1200),
              "MachineDetectionSilenceTimeout": (2000, 10000, 5000)}
AMD_PARAMS = ("MachineDetection", "AsyncAmd", "AsyncAmdStatusCallback", "AsyncAmdStatusCallbackMethod") \
    + tuple(AMD_RANGES)
ANSWERED_BY = ("human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other",
               "fax", "unknown")


# ======================================================================================
# Self-check of the signature function against docs/protocols.md, Twilio REST §10
# ======================================================================================

def selftest(verbose=True):
    """Every worked example of docs/protocols.md, Twilio REST §10; returns True when all match."""
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
    """Legacy 2010 API error body (docs/protocols.md, Twilio REST §7)."""
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
    def __init__(self, fake, direction, from_, to, sid=None):
        self.fake = fake
        self.sid = sid or C.new_sid("CA")
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
        self.stream_status_callback = None
        self.reset_stream_fields()
        # TwiML execution
        self.documents = []        # every TwiML document run on this call
        self.verbs = []            # every verb executed, in order
        self.says = []
        self.plays = []
        self.dials = []
        self.streams = []
        self.in_dial = None        # the dial record while a <Dial> rings or is bridged
        self.redirects = 0
        self.redirect_requests = []
        self.hangup_requests = []
        self.stream_since_redirect = True
        self.ended_by = None
        self.debugger = []         # what Twilio's debugger would show (31921, 31920, 21262, ...)
        # answering machine detection
        self.amd = None
        self.answered_by = None
        self.amd_duration_ms = None
        self.greeting_done = asyncio.Event()   # caller audio of the first stream fully sent
        # bookkeeping
        self.violations = []
        self.warnings = []
        self.events = []
        self.callbacks = []
        self.webhooks = []
        self.hangup_reason = None
        self.hangup_event = asyncio.Event()
        self.redirect_event = asyncio.Event()
        self.pending_redirect = None
        self.session = None
        self.outcome_override = None
        self.cb_queue = asyncio.Queue()
        self.cb_seq = 0
        self.done = asyncio.Event()

    def reset_stream_fields(self):
        self.stream_url = None
        self.stream_name = None
        self.custom_parameters = {}
        self.connect_action = None
        self.ws_status = None
        self.ws_request_headers = None
        self.handshake_status = None
        self.close_code = None
        self.close_reason = None
        self.close_initiator = None
        self.stream_sid = None
        self.sent_audio = bytearray()
        self.received_audio = bytearray()
        self.played_audio = bytearray()
        self.marks_sent_by_app = []
        self.marks_echoed = []
        self.marks = []
        self.clears = 0
        self.dtmf_sent = []
        self.dtmf_events = []
        self.media_messages_sent = 0
        self.media_messages_received = 0
        self.caller_speech_end_ms = []
        self.first_reply_audio_ms = None

    # -- logging ---------------------------------------------------------------------
    def ms(self):
        """Milliseconds since this call was created (the base of every *_at_ms of a call)."""
        return now_ms(self.t0)

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

    def debug(self, code, level, message):
        """An entry Twilio's debugger (console) would show for this call."""
        self.debugger.append({"code": code, "level": level, "message": message, "at_ms": self.ms()})
        self.event("debugger %s %d: %s" % (level, code, message))

    def set_status(self, status):
        self.status = status
        self.updated = time.time()
        self.event("status " + status)

    def end_by(self, who):
        """Record what ended the call; the first cause wins."""
        if self.ended_by is None and who:
            self.ended_by = who

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
            "answered_by": self.answered_by,
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
            "dtmf_events": self.dtmf_events,
            "violations": self.violations,
            "warnings": self.warnings,
            "events": self.events,
            "callbacks": self.callbacks,
            "webhooks": self.webhooks,
            "hangup_reason": self.hangup_reason,
            "ended_by": self.ended_by,
            "hangup_requests": self.hangup_requests,
            "redirects": self.redirects,
            "redirect_requests": self.redirect_requests,
            "streams": self.streams,
            "dials": self.dials,
            "says": self.says,
            "plays": self.plays,
            "verbs": self.verbs,
            "documents": self.documents,
            "debugger": self.debugger,
            "amd": self.amd,
            "answered_by": self.answered_by,
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


def source_url(url, method, purpose, extra=None):
    """Where the next TwiML document comes from: a signed request to url..."""
    return {"kind": "url", "url": url, "method": method, "purpose": purpose, "extra": dict(extra or {})}


def source_twiml(text, purpose):
    """... or an inline document (Twiml= on create or update)."""
    return {"kind": "twiml", "twiml": text, "purpose": purpose}



# ======================================================================================
# Media stream (Twilio is the WebSocket client)
# ======================================================================================

class TwilioWsProtocol(WebSocketClientProtocol):
    """Writes the upgrade request with exactly the header set and order of the live
    capture in docs/protocols.md, Media Streams §3 and records it."""

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
    def __init__(self, fake, call, ws, spec, audio=b"", audio_label="caller audio file", first=True):
        self.fake = fake
        self.call = call
        self.ws = ws
        self.spec = spec
        self.audio = audio
        self.audio_label = audio_label
        self.first = first
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
        """Send one message; numbered ones get the next shared sequenceNumber, which is
        returned (as an int)."""
        async with self.lock:
            seq = None
            if numbered:
                self.seq += 1
                seq = self.seq
                obj = self._with_seq(obj, str(self.seq))
            await self.ws.send(json.dumps(obj, separators=(",", ":")))
            return seq

    @staticmethod
    def _with_seq(obj, seq):
        if obj["event"] == "dtmf":
            # exactly the field order of docs/protocols.md, Media Streams §4.4
            return {"event": "dtmf", "streamSid": obj["streamSid"], "sequenceNumber": seq,
                    "dtmf": obj["dtmf"]}
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
                if self.first:
                    call.greeting_done.set()

    async def player(self):
        while True:
            await asyncio.sleep(0.010)
            for rec in self.playout.tick():
                await self.echo_mark(rec, flushed=False)

    async def echo_mark(self, rec, flushed):
        if self.call.fake.settings.get("drop_mark_echoes") and not flushed:
            # a lost echo: the mark is never reported as played
            self.call.event("mark %s played, its echo dropped (drop_mark_echoes)" % rec["name"])
            return
        rec["echoed"] = True
        rec["flushed"] = flushed
        if flushed:
            rec["played_bytes_at_echo"] = len(self.call.played_audio)
        rec["echoed_at_ms"] = now_ms(self.t0)
        rec["echoed_at_call_ms"] = self.call.ms()
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
        """Validate one app->Twilio message against docs/protocols.md, Media Streams §3/§5.
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
                       "received_at_call_ms": call.ms(),
                       "audio_bytes_before": len(call.received_audio), "echoed": False,
                       "flushed": False, "played_bytes_at_echo": None, "echoed_at_ms": None,
                       "echoed_at_call_ms": None}
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
        """Returns 'hangup' (the call ended: REST, caller, time limit, auto-hangup),
        'redirected' (REST update with new TwiML: stop + close, the call goes on) or
        'app_closed' (the app closed / dropped the socket: <Connect> ends)."""
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
        audio = self.audio
        if audio:
            self.queue_speech(audio, self.audio_label)
        elif self.first:
            call.greeting_done.set()
        tasks = {}
        tasks["sender"] = asyncio.ensure_future(self.sender())
        tasks["receiver"] = asyncio.ensure_future(self.receiver())
        tasks["player"] = asyncio.ensure_future(self.player())
        waiters = {asyncio.ensure_future(call.hangup_event.wait()): "hangup",
                   asyncio.ensure_future(call.redirect_event.wait()): "redirect"}
        if fake.settings.get("auto_hangup") and audio:
            waiters[asyncio.ensure_future(self.auto_hangup())] = "auto"
        waiters[tasks["receiver"]] = "receiver"
        done, _ = await asyncio.wait(list(waiters), return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        why = waiters[first]
        if why != "receiver" and call.hangup_event.is_set():
            why = "hangup"  # a hang-up wins over a redirect that came at the same time
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
            call.debug(31921, "ERROR", "Stream - WebSocket - Close Error: the application closed the "
                       "WebSocket (code %s)" % call.close_code)
            if call.close_code not in (1000, 1001):
                call.warning("media WebSocket ended with close code %s" % call.close_code)
        elif why == "redirect":
            outcome = "redirected"
            call.event("redirected: the call leaves this TwiML; sending stop and closing the media "
                       "WebSocket (the call stays %s)" % call.status)
        else:
            if why == "auto":
                call.hangup_reason = first.result()
                call.end_by("auto_hangup")
                call.hangup_event.set()
            call.hangup_reason = call.hangup_reason or "hang-up requested"
            call.event("hanging up: %s" % call.hangup_reason)
        self.stop_sending.set()
        await asyncio.gather(tasks["sender"], return_exceptions=True)
        tasks["player"].cancel()
        if outcome in ("hangup", "redirected"):
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
            "drop_mark_echoes": False,
            # the final status callback: null (at once), a delay in ms, or "drop"
            "completed_callback": None,
            "ping_interval": args.ping_interval,
            "max_page_size": args.max_page_size,
            # TwiML executor (fake time)
            "say_ms_per_word": 50,
            "pause_ms_per_second": 100,
            "play_ms": 500,
            # <Dial>
            "dial_outcome": "no-answer",
            "next_dial_outcome": None,
            "dial_ring_ms": 300,
            "dial_talk_ms": 500,
            # a new stream on the same call (after a redirect or an action)
            "next_stream_audio": None,
            "next_stream_audio_bytes": None,
            # answering machine detection
            "amd_delay_ms": 2000,
            "amd_beep_ms": 300,
            "next_answered_by": None,
        }
        self.t0 = time.monotonic()
        self.calls = collections.OrderedDict()
        self.requests = []
        self.numbers = []
        for i in range(args.numbers):
            e164 = "+1500555%04d" % (i + 1)
            self.numbers.append({"e164": e164, "sid": C.stable_sid("PN", self.account_sid, e164),
                                 "friendly_name": C.format_national(e164)})
        self.number_by_e164 = {n["e164"]: n for n in self.numbers}
        self.http = None
        self.runner = self.site = self.sock = self.ssl_ctx = None
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
        """docs/protocols.md, Twilio REST §8.1 standard voice request parameters."""
        p = {"AccountSid": self.account_sid, "ApiVersion": API_VERSION, "CallSid": call.sid,
             "CallStatus": call_status, "Called": call.to, "Caller": call.from_,
             "Direction": call.direction, "From": call.from_, "To": call.to}
        for pre in GEO_PREFIXES:
            num = call.from_ if pre in ("From", "Caller") else call.to
            for suf in GEO_SUFFIXES:
                p[pre + suf] = ("US" if num.startswith("+1") else "") if suf == "Country" else ""
        return p

    async def webhook(self, call, purpose, url, method, params):
        """Signed request to a product URL (docs/protocols.md, Twilio REST §8, §9). Returns (status,
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
        """Status callbacks (docs/protocols.md, Twilio REST §8.2): 'completed' always when StatusCallback
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
        if call.answered_by:
            params["AnsweredBy"] = call.answered_by
            params["MachineDetectionDuration"] = str(call.amd_duration_ms)
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
            if event == "completed" and self.settings["completed_callback"] == "drop":
                # as when the application is unreachable: Twilio gives the callback up
                call.event("status callback (completed) dropped (test setting)")
                call.callbacks.append({"event": event, "CallStatus": params["CallStatus"],
                                       "SequenceNumber": params["SequenceNumber"],
                                       "CallDuration": params.get("CallDuration"),
                                       "http_status": None, "dropped": True})
                continue
            if event == "completed" and self.settings["completed_callback"]:
                await asyncio.sleep(self.settings["completed_callback"] / 1000.0)
            res = await self.webhook(call, "status callback (%s)" % event, call.status_callback,
                                     call.status_callback_method, params)
            call.callbacks.append({"event": event, "CallStatus": params["CallStatus"],
                                   "SequenceNumber": params["SequenceNumber"],
                                   "CallDuration": params.get("CallDuration"),
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
    def resolve_url(self, call, what, url, doc_url):
        """A URL from a TwiML attribute: absolute http(s) as is, relative ones against the
        document's own URL (as Twilio does). None (and a violation) when impossible."""
        url = (url or "").strip()
        if not url:
            call.violation("%s: empty URL" % what)
            return None
        if is_absolute_http_url(url):
            return url
        if urllib.parse.urlsplit(url).scheme:
            call.violation("%s: %r is not an http(s) URL" % (what, url))
            return None
        if doc_url:
            return urllib.parse.urljoin(doc_url, url)
        call.violation("%s: relative URL %r in an inline (Twiml=) document cannot be resolved" % (what, url))
        return None

    def check_attrs(self, call, el, allowed):
        bad = set(el.attrib) - allowed
        if bad:
            call.violation("<%s> has unknown attributes %s" % (el.tag, sorted(bad)))

    def check_method(self, call, el, attr="method"):
        m = el.attrib.get(attr, "POST").upper()
        if m not in ("GET", "POST"):
            call.violation("<%s %s=%r>: must be GET or POST" % (el.tag, attr, el.attrib.get(attr)))
            return "POST"
        return m

    def int_attr(self, call, el, attr, default, lo=None, hi=None):
        raw = el.attrib.get(attr)
        if raw is None:
            return default
        if not re.match(r"^\d+$", raw.strip()):
            call.violation("<%s %s=%r>: must be a non-negative integer" % (el.tag, attr, raw))
            return default
        v = int(raw)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            call.violation("<%s %s=%r>: must be within %s..%s" % (el.tag, attr, raw, lo, hi))
            return default
        return v

    def enum_attr(self, call, el, attr, values, multi=False):
        raw = el.attrib.get(attr)
        if raw is None:
            return None
        items = raw.split() if multi else [raw]
        for it in items:
            if it not in values:
                call.violation("<%s %s=%r>: %r is not one of %s" % (el.tag, attr, raw, it, sorted(values)))
        return raw

    def parse_document(self, call, text, doc_url):
        """Parse a whole TwiML document (Twilio parses before executing). Returns the list
        of verbs to run, or None when the document is unusable (the call fails)."""
        try:
            root = ET.fromstring(text.strip().encode("utf-8"))
        except ET.ParseError as e:
            call.violation("TwiML is not well-formed XML: %s" % e)
            return None
        if root.tag != "Response":
            call.violation("TwiML root element is <%s>, expected <Response>" % root.tag)
            return None
        if not list(root):
            call.violation("TwiML <Response> is empty (the call would just hang up)")
            return None
        verbs = []
        for el in root:
            tag = el.tag
            if tag == "Connect":
                spec = self.parse_connect(call, el, doc_url)
                if spec is None:
                    return None
                verbs.append({"verb": "Connect", "spec": spec})
            elif tag == "Say":
                self.check_attrs(call, el, SAY_ATTRS)
                loop = self.int_attr(call, el, "loop", 1)
                text_ = " ".join("".join(el.itertext()).split())
                if not text_:
                    call.violation("<Say> without text")
                verbs.append({"verb": "Say", "text": text_, "loop": loop,
                              "voice": el.attrib.get("voice"), "language": el.attrib.get("language")})
            elif tag == "Pause":
                self.check_attrs(call, el, PAUSE_ATTRS)
                if list(el) or (el.text or "").strip():
                    call.violation("<Pause> must be empty")
                verbs.append({"verb": "Pause", "length": self.int_attr(call, el, "length", 1)})
            elif tag == "Hangup":
                self.check_attrs(call, el, set())
                for ch in el:
                    if ch.tag != "Parameter":
                        call.violation("<Hangup> child <%s> (only <Parameter> allowed)" % ch.tag)
                verbs.append({"verb": "Hangup"})
            elif tag == "Dial":
                verbs.append(self.parse_dial(call, el, doc_url))
            elif tag == "Play":
                self.check_attrs(call, el, PLAY_ATTRS)
                digits = el.attrib.get("digits")
                url = (el.text or "").strip()
                if digits is not None and not re.match(r"^[0-9*#w]+$", digits):
                    call.violation("<Play digits=%r>: only 0-9, *, # and w are allowed" % digits)
                if not digits and not url:
                    call.violation("<Play> needs a URL or digits")
                verbs.append({"verb": "Play", "digits": digits, "url": url or None,
                              "loop": self.int_attr(call, el, "loop", 1)})
            elif tag == "Redirect":
                self.check_attrs(call, el, REDIRECT_ATTRS)
                url = self.resolve_url(call, "<Redirect>", el.text, doc_url)
                verbs.append({"verb": "Redirect", "url": url, "method": self.check_method(call, el)})
            elif tag in VOICE_VERBS:
                call.violation("TwiML verb <%s> is not simulated by the fake (skipped)" % tag)
                verbs.append({"verb": tag, "unsupported": True})
            else:
                call.violation("TwiML: <%s> is not a TwiML voice verb (Twilio: 12100 Document parse "
                               "failure)" % tag)
                return None
        return verbs

    def parse_connect(self, call, connect, doc_url):
        """Strict <Connect><Stream url="wss://..."><Parameter/>... Returns a StreamSpec or
        None (the call fails; violations recorded)."""
        spec = StreamSpec()
        self.check_attrs(call, connect, CONNECT_ATTRS)
        if "action" in connect.attrib:
            spec.action = self.resolve_url(call, "<Connect action>", connect.attrib["action"], doc_url)
        spec.action_method = self.check_method(call, connect)
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

    def check_noun_amd(self, call, el):
        self.enum_attr(call, el, "machineDetection", {"Enable", "DetectMessageEnd"})
        for attr, (lo, hi, _default) in NOUN_AMD_RANGES.items():
            self.int_attr(call, el, attr, None, lo, hi)
        self.check_method(call, el, "amdStatusCallbackMethod")

    def parse_dial(self, call, el, doc_url):
        """<Dial> (VoiceResponse.d.ts DialAttributes, NumberAttributes, SipAttributes).
        Problems that make the dial fail are collected in 'errors' (dial outcome failed)."""
        errors = []
        self.check_attrs(call, el, DIAL_ATTRS)
        action = None
        if "action" in el.attrib:
            action = self.resolve_url(call, "<Dial action>", el.attrib["action"], doc_url)
        method = self.check_method(call, el)
        timeout = self.int_attr(call, el, "timeout", 30, 1, 600)
        time_limit = self.int_attr(call, el, "timeLimit", 14400, 1, 86400)
        for attr in ("answerOnBridge", "hangupOnStar", "sequential"):
            self.enum_attr(call, el, attr, {"true", "false"})
        self.enum_attr(call, el, "record", {"do-not-record", "record-from-answer", "record-from-ringing",
                                            "record-from-answer-dual", "record-from-ringing-dual"})
        self.enum_attr(call, el, "recordingTrack", {"both", "inbound", "outbound"})
        self.enum_attr(call, el, "recordingStatusCallbackEvent", {"in-progress", "completed", "absent"},
                       multi=True)
        self.enum_attr(call, el, "trim", {"trim-silence", "do-not-trim"})
        self.enum_attr(call, el, "events", {"call-progress-event"})
        for attr in ("recordingStatusCallbackMethod", "referMethod"):
            if attr in el.attrib:
                self.check_method(call, el, attr)
        targets = []
        text = (el.text or "").strip()
        children = list(el)
        if text and children:
            errors.append("<Dial> mixes a plain number with child nouns")
        if text:
            kind = "Sip" if text.startswith("sip:") else "text"
            targets.append({"noun": kind, "to": text, "attributes": {}})
        for ch in children:
            if (ch.tail or "").strip():
                errors.append("<Dial> has text after <%s>" % ch.tag)
            to = (ch.text or "").strip()
            if ch.tag == "Number":
                self.check_attrs(call, ch, NUMBER_ATTRS)
                self.check_noun_amd(call, ch)
                for attr in ("method", "statusCallbackMethod"):
                    self.check_method(call, ch, attr)
                self.enum_attr(call, ch, "statusCallbackEvent", set(CALLBACK_EVENTS), multi=True)
                sd = ch.attrib.get("sendDigits")
                if sd is not None and not re.match(r"^[0-9A-D#*wW]{1,32}$", sd):
                    call.violation("<Number sendDigits=%r>: only 0-9 A-D # * w W, at most 32" % sd)
            elif ch.tag == "Sip":
                self.check_attrs(call, ch, SIP_ATTRS)
                self.check_noun_amd(call, ch)
                for attr in ("method", "statusCallbackMethod"):
                    self.check_method(call, ch, attr)
                self.enum_attr(call, ch, "statusCallbackEvent", set(CALLBACK_EVENTS), multi=True)
            elif ch.tag in DIAL_NOUNS:
                errors.append("<Dial><%s> is not simulated by the fake" % ch.tag)
            else:
                errors.append("<Dial> child <%s> is not a <Dial> noun" % ch.tag)
            targets.append({"noun": ch.tag, "to": to, "attributes": dict(ch.attrib)})
        if not targets:
            errors.append("<Dial> has nothing to dial")
        if sum(1 for t in targets if t["noun"] == "Number") > 10:
            errors.append("<Dial> has more than 10 <Number>s")
        for t in targets:
            if t["noun"] in ("Number", "text") and not C.is_e164(t["to"]):
                errors.append("<Dial> number %r is not E.164 (the dial fails)" % t["to"])
            elif t["noun"] == "Sip" and not t["to"].startswith("sip:"):
                errors.append("<Sip> URI %r does not start with sip: (the dial fails)" % t["to"])
        caller_id = el.attrib.get("callerId")
        pstn = any(t["noun"] in ("Number", "text") for t in targets)
        if caller_id is not None and pstn and caller_id not in self.number_by_e164:
            errors.append("<Dial callerId=%r> is not a number of this account (Twilio: 13214 Dial: "
                          "Invalid callerId value; same rule as From)" % caller_id)
        elif caller_id is not None and not caller_id.strip():
            errors.append("<Dial callerId=\"\"> is empty")
        return {"verb": "Dial", "targets": targets, "callerId": caller_id, "timeout": timeout,
                "timeLimit": time_limit, "action": action, "method": method,
                "attributes": dict(el.attrib), "errors": errors}

    async def fetch_twiml(self, call, source, call_status):
        """Get one TwiML document. Returns (text or None, the document's URL or None)."""
        doc = {"purpose": source["purpose"], "at_ms": call.ms(), "url": source.get("url"),
               "method": source.get("method"), "status": None, "twiml": None}
        call.documents.append(doc)
        if source["kind"] == "twiml":
            call.twiml = source["twiml"]
            call.twiml_status = None
            call.twiml_content_type = None
            doc["twiml"] = source["twiml"]
            return source["twiml"], None
        url, method, purpose = source["url"], source["method"], source["purpose"]
        params = self.standard_params(call, call_status)
        params.update(source.get("extra") or {})
        res = await self.webhook(call, purpose, url, method, params)
        if res is None:
            return None, url
        status, ctype, text = res
        if source.get("dial") is not None:
            source["dial"]["action_status"] = status
        call.twiml_status = status
        call.twiml = text
        call.twiml_content_type = ctype
        doc["status"] = status
        doc["twiml"] = text
        if status != 200:
            call.violation("%s answered HTTP %d (expected 200 with TwiML)" % (purpose, status))
            return None, url
        base_ctype = ctype.split(";")[0].strip().lower()
        if base_ctype not in ("text/xml", "application/xml"):
            call.violation("%s Content-Type is %r, expected text/xml or application/xml" % (purpose, ctype))
        return text, url

    # ------------------------------------------------------------------ call runner
    async def run_call(self, call, source):
        worker = asyncio.ensure_future(self.callback_worker(call))
        watchdog = asyncio.ensure_future(self.watchdog(call))
        call.amd_task = None
        try:
            await self._run_call(call, source)
        except Exception as e:  # keep the fake alive whatever happens
            call.event("internal error in the fake: %r" % e)
            log.loud("internal error in call %s: %r", call.sid, e)
            if call.status not in ENDED:
                call.status = "failed"
            call.end_by("error")
        finally:
            watchdog.cancel()
            if call.amd_task is not None and not call.amd_task.done():
                call.amd_task.cancel()
                call.event("AMD still undecided when the call ended (no verdict, no callback)")
            if call.status not in ENDED:
                call.set_status("completed")
            if call.ended_by is None:
                call.end_by({"failed": "error", "busy": "not_answered", "no-answer": "not_answered",
                             "canceled": "rest"}.get(call.status, "twiml"))
            if not call.ended:
                call.ended = time.time()
            call.updated = time.time()
            self.queue_callback(call, "completed")
            call.cb_queue.put_nowait((None, None))
            try:
                await asyncio.wait_for(worker, timeout=20)
            except asyncio.TimeoutError:
                worker.cancel()
            call.event("call over: %s (ended_by %s)" % (call.status, call.ended_by))
            call.done.set()

    async def watchdog(self, call):
        """--max-call-seconds (safety) and TimeLimit (can change on a live call)."""
        while True:
            limit = self.settings.get("max_call_seconds") or 120
            which = "max-call-seconds"
            if call.time_limit and call.time_limit < limit:
                limit, which = call.time_limit, "TimeLimit"
            remaining = limit - (time.monotonic() - call.t0)
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, 0.5))
        if call.status in ENDED or call.hangup_event.is_set():
            return
        call.hangup_reason = "%s (%s s) reached" % (which, limit)
        if which == "max-call-seconds":
            log.loud("%s SAFETY: call reached --max-call-seconds=%s; hanging up", call.sid, limit)
        call.end_by("time_limit")
        call.event("hanging up: " + call.hangup_reason)
        call.hangup_event.set()

    async def _wait_or_hangup(self, seconds, call):
        try:
            await asyncio.wait_for(call.hangup_event.wait(), timeout=seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def interruptible(self, call, seconds):
        """Sleep for a verb's duration; returns 'hangup' or 'redirect' if that came first."""
        if call.hangup_event.is_set():
            return "hangup"
        if call.redirect_event.is_set():
            return "redirect"
        waits = {asyncio.ensure_future(call.hangup_event.wait()): "hangup",
                 asyncio.ensure_future(call.redirect_event.wait()): "redirect"}
        done, pending = await asyncio.wait(list(waits), timeout=max(0.0, seconds),
                                           return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            p.cancel()
        if call.hangup_event.is_set():
            return "hangup"
        if done:
            return waits[next(iter(done))]
        return None

    def take_redirect(self, call):
        src, call.pending_redirect = call.pending_redirect, None
        call.redirect_event.clear()
        return src

    async def _run_call(self, call, source):
        call_status = "in-progress"
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
                call.end_by("not_answered")
                return
            call.started = time.time()
            call.set_status("in-progress")
            self.queue_callback(call, "answered")
            if call.amd and not call.amd["ignored"]:
                if call.amd["mode"] == "async":
                    call.amd_task = asyncio.ensure_future(self.amd_async(call))
                else:
                    # sync AMD: the TwiML fetch waits for the verdict and carries it
                    if not await self.amd_decide(call):
                        return
                    if source["kind"] == "url":
                        source["extra"].update({"AnsweredBy": call.answered_by,
                                                "MachineDetectionDuration": str(call.amd_duration_ms)})
        else:
            call_status = "ringing"
        while source is not None:
            if call.hangup_event.is_set():
                return
            if call.redirect_event.is_set():
                source = self.take_redirect(call)
            text, doc_url = await self.fetch_twiml(call, source, call_status)
            source = None
            if call.direction == "inbound" and call.status == "ringing":
                call.started = time.time()
                call.set_status("in-progress")
            call_status = "in-progress"
            if call.hangup_event.is_set():
                return
            if call.redirect_event.is_set():
                call.event("a redirect came while the TwiML was fetched: that document is dropped")
                source = self.take_redirect(call)
                continue
            if text is None:
                call.set_status("failed")
                call.end_by("error")
                return
            verbs = self.parse_document(call, text, doc_url)
            if verbs is None:
                call.set_status("failed")
                call.end_by("error")
                return
            source = await self.execute(call, verbs, text)

    async def execute(self, call, verbs, doc_text):
        """Run the verbs of one document in order. Returns where the next document comes
        from (action URL, <Redirect>, REST redirect) or None when the call is over."""
        hint = "twiml"
        for v in verbs:
            if call.hangup_event.is_set():
                return None
            if call.redirect_event.is_set():
                return self.take_redirect(call)
            call.verbs.append({"verb": v["verb"], "at_ms": call.ms()})
            if v.get("unsupported"):
                continue
            handler = getattr(self, "verb_" + v["verb"].lower())
            kind, val = await handler(call, v, doc_text)
            if kind == "goto":
                return val
            if kind == "end":
                call.end_by(val)
                return None
            hint = val or "twiml"
        if call.hangup_event.is_set():
            return None
        if call.redirect_event.is_set():
            return self.take_redirect(call)
        call.event("no verbs left: the call ends")
        call.end_by(hint)
        return None

    async def verb_say(self, call, v, doc_text):
        loops = v["loop"] if v["loop"] > 0 else 10 ** 6   # loop="0": until the call ends
        ms = len(v["text"].split()) * float(self.settings["say_ms_per_word"]) * loops
        rec = {"text": v["text"], "voice": v["voice"], "language": v["language"], "loop": v["loop"],
               "at_ms": call.ms(), "duration_ms": None, "interrupted_by": None}
        call.says.append(rec)
        call.event("<Say> %r (%d ms of fake time)" % (v["text"][:80], min(ms, 10 ** 9)))
        why = await self.interruptible(call, ms / 1000.0)
        rec["duration_ms"] = call.ms() - rec["at_ms"]
        rec["interrupted_by"] = why
        return "next", "twiml"

    async def verb_pause(self, call, v, doc_text):
        ms = v["length"] * float(self.settings["pause_ms_per_second"])
        call.event("<Pause length=%d> (%d ms of fake time)" % (v["length"], ms))
        await self.interruptible(call, ms / 1000.0)
        return "next", "twiml"

    async def verb_play(self, call, v, doc_text):
        loops = v["loop"] if v["loop"] > 0 else 10 ** 6
        if v["digits"]:
            ms = sum(500 if d == "w" else 100 for d in v["digits"]) * loops
        else:
            ms = float(self.settings["play_ms"]) * loops
        rec = {"url": v["url"], "digits": v["digits"], "loop": v["loop"], "at_ms": call.ms()}
        call.plays.append(rec)
        call.event("<Play> %s (%d ms of fake time)" % (
            ("digits=%s" % v["digits"]) if v["digits"] else v["url"], min(ms, 10 ** 9)))
        await self.interruptible(call, ms / 1000.0)
        return "next", "twiml"

    async def verb_hangup(self, call, v, doc_text):
        call.event("<Hangup/>")
        return "end", "twiml"

    async def verb_redirect(self, call, v, doc_text):
        if not v["url"]:
            return "next", "twiml"
        call.event("<Redirect> to %s" % v["url"])
        return "goto", source_url(v["url"], v["method"], "<Redirect>")

    async def verb_connect(self, call, v, doc_text):
        spec = v["spec"]
        outcome = await self.stream(call, spec)
        if outcome == "redirected":
            return "next", None         # execute() picks the redirect up
        if outcome == "hangup":
            return "end", None          # whoever hung up recorded ended_by
        # app_closed / handshake_failed: <Connect> is over (docs/protocols.md, call control §2)
        if spec.action:
            call.event("<Connect> ended (%s): requesting its action %s" % (outcome, spec.action))
            return "goto", source_url(spec.action, spec.action_method, "<Connect action>")
        return "next", "app_close" if outcome == "app_closed" else "stream_failed"

    async def verb_dial(self, call, v, doc_text):
        s = self.settings
        t = v["targets"][0] if v["targets"] else {"to": None}
        rec = {"to": t["to"], "targets": v["targets"], "callerId": v["callerId"],
               "timeout": v["timeout"], "timeLimit": v["timeLimit"], "action": v["action"],
               "method": v["method"], "attributes": v["attributes"], "twiml": doc_text,
               "at_ms": call.ms(), "outcome": None, "DialCallSid": C.new_sid("CA"),
               "DialCallDuration": None, "state": "ringing", "answered_at_ms": None,
               "ended_at_ms": None, "interrupted_by": None, "action_status": None,
               "errors": list(v["errors"]), "from_redirect": call.redirects > 0}
        call.dials.append(rec)
        for err in v["errors"]:
            call.violation(err)
        if v["errors"]:
            planned = "failed"
            ring_ms = 20
        else:
            planned = s.get("next_dial_outcome") or s.get("dial_outcome") or "no-answer"
            s["next_dial_outcome"] = None
            ring_ms = min(float(s["dial_ring_ms"]), v["timeout"] * 1000.0)
        call.in_dial = rec
        call.event("<Dial> %s (%s, callerId %s): %s after %d ms" % (
            ", ".join(str(x["to"]) for x in v["targets"]) or "-", rec["DialCallSid"],
            v["callerId"] or call.from_, planned, ring_ms))
        why = await self.interruptible(call, ring_ms / 1000.0)
        if why:
            rec["outcome"] = "canceled"
        elif planned == "answered":
            rec["state"] = "in-progress"
            rec["answered_at_ms"] = call.ms()
            call.event("<Dial>: %s answered; bridged" % rec["to"])
            talk = min(float(s["dial_talk_ms"]), v["timeLimit"] * 1000.0)
            why = await self.interruptible(call, talk / 1000.0)
            talked = call.ms() - rec["answered_at_ms"]
            rec["DialCallDuration"] = str(int(talked / 1000.0 + 0.5))
            rec["outcome"] = "completed"
        else:
            rec["outcome"] = planned
        rec["state"] = "ended"
        rec["ended_at_ms"] = call.ms()
        rec["interrupted_by"] = why
        call.in_dial = None
        call.event("<Dial> over: DialCallStatus=%s%s" % (
            rec["outcome"], (" (%s)" % why) if why else ""))
        if why == "redirect":
            # the document was replaced: no action request (fake's choice, like <Connect>)
            return "next", None
        params = {}
        if v["action"]:
            params = {"DialCallStatus": rec["outcome"], "DialCallSid": rec["DialCallSid"]}
            if rec["DialCallDuration"] is not None:
                params["DialCallDuration"] = rec["DialCallDuration"]
        if why == "hangup":
            if v["action"]:
                # the parent call is gone: Twilio still reports the dial; its TwiML is ignored
                p = self.standard_params(call, call.status if call.status in ENDED else "completed")
                p.update(params)
                res = await self.webhook(call, "<Dial action> (after hang-up)", v["action"], v["method"], p)
                rec["action_status"] = res[0] if res else None
            return "end", None
        if v["action"]:
            src = source_url(v["action"], v["method"], "<Dial action>", params)
            src["dial"] = rec   # fetch_twiml fills in action_status
            return "goto", src
        return "next", "dial"

    async def stream(self, call, spec):
        s = self.settings
        first = not call.streams
        if not first:
            call.reset_stream_fields()
        audio, label = s.get("caller_audio_bytes") or b"", "caller audio file"
        if not first and s.get("next_stream_audio_bytes") is not None:
            audio, label = s["next_stream_audio_bytes"], "next_stream_audio %s" % s.get("next_stream_audio")
            s["next_stream_audio_bytes"] = None
            s["next_stream_audio"] = None
        call.stream_url = spec.url
        call.stream_name = spec.name
        call.custom_parameters = dict(spec.params)
        call.connect_action = spec.action
        call.stream_sid = C.new_sid("MZ")
        rec = {"streamSid": call.stream_sid, "customParameters": dict(spec.params), "url": spec.url,
               "name": spec.name, "opened_at_ms": None, "closed_at_ms": None, "close_code": None,
               "close_reason": None, "close_initiator": None, "ws_status": "connecting",
               "handshake_status": None, "end": None}
        call.streams.append(rec)
        outcome = await self._stream(call, spec, rec, audio, label, first)
        rec.update({"closed_at_ms": call.ms() if rec["opened_at_ms"] is not None else None,
                    "close_code": call.close_code, "close_reason": call.close_reason,
                    "close_initiator": call.close_initiator, "ws_status": call.ws_status,
                    "handshake_status": call.handshake_status, "end": outcome,
                    "media_messages_sent": call.media_messages_sent,
                    "media_messages_received": call.media_messages_received,
                    "marks_echoed": list(call.marks_echoed), "clears": call.clears,
                    "dtmf_sent": list(call.dtmf_sent),
                    "sent_audio_b64": C.b64(call.sent_audio),
                    "received_audio_b64": C.b64(call.received_audio),
                    "played_audio_b64": C.b64(call.played_audio)})
        return outcome

    async def _stream(self, call, spec, rec, audio, label, first):
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
            call.debug(31920, "ERROR", "Stream - WebSocket - Handshake Error: HTTP %d" % e.status_code)
            await self.stream_callback(call, spec, "stream-error", "31920 handshake error: HTTP %d" % e.status_code)
            return "handshake_failed"
        except InvalidHandshake as e:
            call.ws_status = "failed"
            call.violation("media WebSocket handshake invalid (31920): %s" % e)
            call.debug(31920, "ERROR", "Stream - WebSocket - Handshake Error")
            await self.stream_callback(call, spec, "stream-error", "31920 handshake error")
            return "handshake_failed"
        except asyncio.TimeoutError:
            call.ws_status = "failed"
            call.event("media WebSocket connection timed out (31901)")
            call.debug(31901, "ERROR", "Stream - WebSocket - Connection Timeout")
            await self.stream_callback(call, spec, "stream-error", "31901 connection timeout")
            return "handshake_failed"
        except OSError as e:
            call.ws_status = "failed"
            call.event("media WebSocket connection failed (31902): %r" % e)
            call.debug(31902, "ERROR", "Stream - WebSocket - Connection Refused")
            await self.stream_callback(call, spec, "stream-error", "31902 connection refused")
            return "handshake_failed"
        call.ws_status = "open"
        rec["opened_at_ms"] = call.ms()
        rec["ws_status"] = "open"
        call.stream_since_redirect = True
        if ws.subprotocol:
            call.violation("server selected subprotocol %r that Twilio never offers" % ws.subprotocol)
        if ws.extensions:
            call.violation("server negotiated extensions %r that Twilio never offers" % ws.extensions)
        asyncio.ensure_future(self.stream_callback(call, spec, "stream-started"))
        session = MediaSession(self, call, ws, spec, audio=audio, audio_label=label, first=first)
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

    # ------------------------------------------------------------------ AMD
    async def amd_decide(self, call):
        """Wait until the AMD verdict (docs/protocols.md, call control §3.4 timing, scaled down by the
        settings) and record it. Returns False when the call was hung up meanwhile."""
        amd = call.amd
        s = self.settings
        verdict = amd["planned_verdict"]
        timeout_ms = amd["effective"]["MachineDetectionTimeout"] * 1000.0
        t = time.monotonic()
        machine_end = amd["MachineDetection"] == "DetectMessageEnd" and verdict.startswith("machine_end")
        if machine_end and amd["mode"] == "async":
            # the verdict comes after the machine's greeting (the caller audio) has been sent
            waits = {asyncio.ensure_future(call.greeting_done.wait()): "greeting",
                     asyncio.ensure_future(call.hangup_event.wait()): "hangup"}
            done, pending = await asyncio.wait(list(waits), timeout=timeout_ms / 1000.0,
                                               return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            if call.hangup_event.is_set():
                return False
            wait_ms = float(s["amd_beep_ms"])
        elif machine_end:
            wait_ms = len(s.get("caller_audio_bytes") or b"") / 8.0 + float(s["amd_beep_ms"])
        else:
            wait_ms = float(s["amd_delay_ms"])
        remaining_ms = timeout_ms - (time.monotonic() - t) * 1000.0
        if await self._wait_or_hangup(max(0.0, min(wait_ms, remaining_ms)) / 1000.0, call):
            return False
        duration = int(round((time.monotonic() - t) * 1000.0))
        if duration >= timeout_ms - 1:
            call.event("AMD: MachineDetectionTimeout (%d s) reached before a verdict: unknown"
                       % amd["effective"]["MachineDetectionTimeout"])
            verdict = "unknown"
        call.answered_by = verdict
        call.amd_duration_ms = duration
        amd["verdict"] = verdict
        amd["MachineDetectionDuration"] = duration
        amd["decided_at_ms"] = call.ms()
        call.event("AMD verdict: AnsweredBy=%s after %d ms (%s)" % (verdict, duration, amd["mode"]))
        return True

    async def amd_async(self, call):
        amd = call.amd
        if not await self.amd_decide(call):
            return
        url = amd["AsyncAmdStatusCallback"]
        if not url:
            return
        params = {"AccountSid": self.account_sid, "CallSid": call.sid, "AnsweredBy": call.answered_by,
                  "MachineDetectionDuration": str(call.amd_duration_ms)}
        amd["callback_params"] = params
        amd["callback_at_ms"] = call.ms()
        res = await self.webhook(call, "AMD status callback", url, amd["AsyncAmdStatusCallbackMethod"], params)
        amd["callback_status"] = res[0] if res else None

    def start_call(self, call, source):
        self.calls[call.sid] = call
        asyncio.ensure_future(self.run_call(call, source))


    # ------------------------------------------------------------------ REST API
    def rest_log(self, request, form_pairs, raw_body):
        entry = {"time": time.time(), "at_ms": now_ms(self.t0), "method": request.method, "path": request.path,
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
        fault = self.take_fault(request)
        if fault is not None:
            entry["fault"] = fault.get("mode", "error")
            resp = await self.injected(request, entry, fault, form_pairs, raw)
        else:
            resp = await self._rest(request, entry, form_pairs, raw)
        entry["status"] = resp.status if resp is not None else None
        if resp is None:
            log("REST %s %s -> no answer (injected: %s)", request.method, request.path_qs,
                entry["fault"])
            # the connection is gone: aiohttp must not answer on it
            raise asyncio.CancelledError()
        log("REST %s %s -> %d%s%s", request.method, request.path_qs, resp.status,
            "" if resp.status < 400 else " " + resp.text,
            " (injected: %s)" % entry["fault"] if fault else "")
        return resp

    # ------------------------------------------------------------ injected faults
    def take_fault(self, request):
        """The fault fail_next holds for this request, or None. fail_next selects requests by
        "match" (a substring of the path) and "method", and takes "count" of them in a row
        (default 1); requests it does not select pass and do not count."""
        f = self.settings.get("fail_next")
        if not f:
            return None
        if f.get("match") and f["match"] not in request.path:
            return None
        if f.get("method") and str(f["method"]).upper() != request.method:
            return None
        left = int(f.get("count", 1)) - 1
        if left > 0:
            self.settings["fail_next"] = dict(f, count=left)
        else:
            self.settings["fail_next"] = None
        return f

    async def injected(self, request, entry, fault, form_pairs, raw):
        """What a failing Twilio (or the network in front of it) does to one request:
        "error" answers Twilio's error body (with Retry-After when asked, as a 429 may),
        "reset" drops the connection with a TCP RST and no answer, "hang" never answers
        (until the client gives up, at most hang_ms), "slow" does the request after
        delay_ms (a call is created even when the client has stopped waiting)."""
        mode = fault.get("mode", "error")
        if mode == "reset":
            self.reset_connection(request)
            return None
        if mode == "hang":
            await asyncio.sleep(float(fault.get("hang_ms", 300000)) / 1000.0)
            self.reset_connection(request)
            return None
        if mode == "slow":
            await asyncio.sleep(float(fault.get("delay_ms", 0)) / 1000.0)
            return await self._rest(request, entry, form_pairs, raw)
        st = int(fault.get("status", 500))
        default = {429: (20429, "Too Many Requests"), 503: (20503, "Service Unavailable")}.get(
            st, (20500, "Internal Server Error"))
        resp = twilio_error(st, int(fault.get("code", default[0])), fault.get("message", default[1]))
        ra = fault.get("retry_after")
        if ra is not None:
            resp.headers["Retry-After"] = str(ra)
        return resp

    @staticmethod
    def reset_connection(request):
        """abort the client's connection with a RST (SO_LINGER 0), as a peer that crashed"""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()

    async def refuse(self, ms):
        """stop listening for ms: connections are refused (the ones kept alive are closed),
        as when Twilio's edge cannot be reached; then listen again on the same port"""
        await asyncio.sleep(0.05)  # the /_fake/config answer leaves first
        if self.site is None:
            return
        port = self.sock.getsockname()[1]
        await self.site.stop()
        log.loud("refusing connections for %d ms", ms)
        await asyncio.sleep(ms / 1000.0)
        self.sock = C.bind_socket(self.args.host, port)
        self.site = web.SockSite(self.runner, self.sock, ssl_context=self.ssl_ctx, shutdown_timeout=0.5)
        await self.site.start()
        log("listening again on port %d", port)

    async def _rest(self, request, entry, form_pairs, raw):
        delay = self.settings.get("rest_delay_ms") or 0
        if delay:
            await asyncio.sleep(delay / 1000.0)
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
        # answering machine detection (docs/protocols.md, call control §3.1)
        md = form.get("MachineDetection")
        if md is not None and md not in ("Enable", "DetectMessageEnd"):
            return bad(21200, "MachineDetection must be Enable or DetectMessageEnd")
        async_amd = form.get("AsyncAmd")
        if async_amd is not None and async_amd not in ("true", "false"):
            return bad(21200, "AsyncAmd must be true or false")
        amd_cb = form.get("AsyncAmdStatusCallback")
        if amd_cb is not None and not is_absolute_http_url(amd_cb):
            return bad(21205, "AsyncAmdStatusCallback is not a valid URL: %s" % amd_cb)
        amd_cbm = form.get("AsyncAmdStatusCallbackMethod", "POST").upper()
        if amd_cbm not in ("GET", "POST"):
            return bad(21200, "AsyncAmdStatusCallbackMethod must be GET or POST")
        effective = {}
        for k, (lo, hi, default) in AMD_RANGES.items():
            if k in form:
                if not re.match(r"^\d+$", form[k]) or not lo <= int(form[k]) <= hi:
                    return bad(21200, "%s must be an integer between %d and %d" % (k, lo, hi))
                effective[k] = int(form[k])
            else:
                effective[k] = default
        send_digits = form.get("SendDigits")
        if send_digits is not None and not re.match(r"^[0-9A-D#*wW]{1,32}$", send_digits):
            return bad(21200, "SendDigits may hold only 0-9 A-D # * w W, at most 32")
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
        if send_digits:
            call.event("SendDigits=%s (sent to the far end after answer; not simulated)" % send_digits)
        if md:
            amd = {"params": {k: form[k] for k in AMD_PARAMS if k in form},
                   "MachineDetection": md, "mode": "async" if async_amd == "true" else "sync",
                   "AsyncAmdStatusCallback": amd_cb, "AsyncAmdStatusCallbackMethod": amd_cbm,
                   "effective": effective, "ignored": False, "planned_verdict": None, "verdict": None,
                   "MachineDetectionDuration": None, "decided_at_ms": None, "callback_params": None,
                   "callback_at_ms": None, "callback_status": None, "warnings": []}
            call.amd = amd
            if send_digits is not None:
                amd["ignored"] = True
                amd["warnings"].append("SendDigits with MachineDetection: AMD is ignored")
                call.warning("Calls.json: SendDigits together with MachineDetection: Twilio ignores "
                             "MachineDetection (call.d.ts)")
            else:
                amd["planned_verdict"] = self.settings.get("next_answered_by") or "human"
                self.settings["next_answered_by"] = None
                if not amd_cb:
                    amd["warnings"].append("21262")
                    call.debug(21262, "WARNING", "No AMD status callback URL provided: AMD results "
                               "will only be on the Call resource")
                    call.warning("Calls.json: MachineDetection without AsyncAmdStatusCallback "
                                 "(Twilio warning 21262)")
        else:
            stray = [k for k in AMD_PARAMS if k in form]
            if stray:
                call.warning("Calls.json: %s without MachineDetection has no effect" % stray)
        source = source_url(url, method, "voice URL") if url else source_twiml(twiml, "Twiml (create)")
        call.event("created by REST: To=%s From=%s %s" % (to, from_, ("Url=" + url) if url else "Twiml"))
        self.start_call(call, source)
        return web.json_response(call.resource(), status=201)

    async def update_call(self, call, form, entry):
        """POST Calls/{sid}.json (docs/protocols.md, call control §1): Status, Url/Twiml (redirect),
        StatusCallback*, TimeLimit. Any update of an ended call: 400 21220."""
        unknown = sorted(set(form) - KNOWN_UPDATE_PARAMS)
        if unknown:
            entry["warnings"].append("unknown parameters ignored: %s" % unknown)
        entry["call_at_ms"] = call.ms()
        status = form.get("Status")
        url = form.get("Url")
        twiml = form.get("Twiml")
        hangup_rec = redirect_rec = None
        if status is not None:
            hangup_rec = {"at_ms": call.ms(), "fake_at_ms": entry["at_ms"], "via": "rest",
                          "Status": status, "call_status": call.status, "http_status": None}
            call.hangup_requests.append(hangup_rec)
        elif url or twiml:
            redirect_rec = {"at_ms": call.ms(), "fake_at_ms": entry["at_ms"],
                            "Url": url, "Method": form.get("Method"), "Twiml": twiml,
                            "call_status": call.status, "http_status": None}
            call.redirect_requests.append(redirect_rec)
        resp = self._update_call(call, form, status, url, twiml)
        for rec in (hangup_rec, redirect_rec):
            if rec is not None:
                rec["http_status"] = resp.status
        return resp

    def _update_call(self, call, form, status, url, twiml):
        if status is not None and status not in ("completed", "canceled"):
            return twilio_error(400, 21200, "Status must be 'completed' or 'canceled'")
        if url and twiml:
            return twilio_error(400, 21200, "Url and Twiml are mutually exclusive")
        if url and not is_absolute_http_url(url):
            return twilio_error(400, 21205, "Url is not a valid URL: %s" % url)
        method = form.get("Method", "POST").upper()
        if method not in ("GET", "POST"):
            return twilio_error(400, 21200, "Method must be GET or POST")
        sc = form.get("StatusCallback")
        if sc and not is_absolute_http_url(sc):
            return twilio_error(400, 21205, "StatusCallback is not a valid URL: %s" % sc)
        scm = form.get("StatusCallbackMethod", call.status_callback_method).upper()
        if scm not in ("GET", "POST"):
            return twilio_error(400, 21200, "StatusCallbackMethod must be GET or POST")
        tl = form.get("TimeLimit")
        if tl is not None and not re.match(r"^\d+$", tl):
            return twilio_error(400, 21200, "TimeLimit must be an integer")
        if call.status in ENDED:
            call.event("REST update on an ended call (%s): 400 21220" % call.status)
            return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if sc:
            call.status_callback = sc
        if "StatusCallbackMethod" in form:
            call.status_callback_method = scm
        if tl is not None:
            call.time_limit = int(tl)
            call.event("REST TimeLimit=%s: the call may last %s s in all" % (tl, tl))
        if status == "completed" or status == "canceled":
            if status == "canceled" and call.status == "in-progress":
                call.warning("REST Status=canceled on an in-progress call has no effect (use completed)")
                return web.json_response(call.resource())
            call.hangup_reason = "REST Status=%s" % status
            call.end_by("rest")
            if call.status in ("queued", "ringing"):
                call.set_status("canceled")
            else:
                call.set_status("completed")
            call.ended = time.time()
            call.hangup_event.set()
            return web.json_response(call.resource())
        if url or twiml:
            if twiml and len(twiml) > 4000:
                call.warning("REST Twiml of %d characters (create allows 4000; the update limit is "
                             "UNVERIFIED)" % len(twiml))
            call.redirects += 1
            n = call.redirects
            if n >= 2 and (call.in_dial is not None or not call.stream_since_redirect):
                if call.in_dial is not None:
                    what = "a <Dial> from the previous redirect is still %s" % (
                        "ringing" if call.in_dial["state"] == "ringing" else "bridged")
                else:
                    what = "the TwiML of the previous redirect is still running (no stream since)"
                call.warning("redirected twice: redirect #%d while %s (Twilio allows it; the product "
                             "must not do it)" % (n, what))
            call.stream_since_redirect = False
            if url:
                call.pending_redirect = source_url(url, method, "redirect URL")
            else:
                call.pending_redirect = source_twiml(twiml, "redirect Twiml")
            call.event("REST redirect #%d requested (%s)" % (n, ("Url=" + url) if url else "Twiml"))
            call.redirect_event.set()
            return web.json_response(call.resource())
        return web.json_response(call.resource())

    # -------------------------------------------------------------- paging
    def page(self, request, key, items, sid_of, base_path, to_json):
        """One page per docs/protocols.md, Twilio REST §5. Page>0 needs the PageToken that the previous
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
            return web.json_response(self.settings_view())
        if path == "/_fake/reset" and m == "POST":
            for c in self.calls.values():
                if c.status not in ENDED:
                    c.hangup_reason = "reset"
                    c.end_by("reset")
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
                call.hangup_requests.append({"at_ms": call.ms(), "fake_at_ms": now_ms(self.t0),
                                             "via": "control", "Status": None, "call_status": call.status,
                                             "http_status": None})
                if call.status not in ENDED:
                    call.hangup_reason = "control API hang-up"
                    call.end_by("caller")
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
                return await self.ctl_dtmf(call, body)
        return web.json_response({"error": "unknown control endpoint %s %s" % (m, path)}, status=404)

    async def ctl_dtmf(self, call, body):
        """{"digit":"5"} or {"digits":"123"} (one dtmf message per key, "gap_ms" apart,
        default 100); answers once all were sent."""
        digits = body.get("digits")
        if digits is None:
            digits = body.get("digit", "")
        digits = str(digits)
        if not re.match(r"^[0-9*#A-D]+$", digits):
            return web.json_response({"error": "digits must be 0-9, *, #, A-D"}, status=400)
        if call.session is None:
            return web.json_response({"error": "no media stream open"}, status=400)
        gap = float(body.get("gap_ms", 100)) / 1000.0
        sent = ""
        for i, d in enumerate(digits):
            if i:
                await asyncio.sleep(gap)
            session = call.session
            if session is None or session.stop_sending.is_set():
                break
            try:
                seq = await session.send({"event": "dtmf", "streamSid": call.stream_sid,
                                          "dtmf": {"track": "inbound_track", "digit": d}})
            except websockets.ConnectionClosed:
                break
            call.dtmf_sent.append(d)
            call.dtmf_events.append({"digit": d, "sequenceNumber": str(seq), "streamSid": call.stream_sid,
                                     "at_ms": call.ms()})
            call.event("sent dtmf %s (sequenceNumber %d)" % (d, seq))
            sent += d
        if sent != digits:
            return web.json_response({"error": "the stream ended after %r" % sent, "sent": sent}, status=409)
        return web.json_response({"ok": True, "sent": sent})

    def settings_view(self):
        return {k: v for k, v in self.settings.items() if not k.endswith("_bytes")}

    def apply_config(self, body):
        if not isinstance(body, dict):
            return "config must be a JSON object"
        for k, v in body.items():
            if k in ("caller_audio", "next_stream_audio"):
                try:
                    data = C.read_file_bytes(v) if v else (b"" if v == "" else None)
                except OSError as e:
                    return "cannot read %s: %s" % (k, e)
                if k == "caller_audio":
                    data = data or b""
                self.settings[k + "_bytes"] = data
                self.settings[k] = v
            elif k in ("dial_outcome", "next_dial_outcome"):
                if v not in DIAL_OUTCOMES and not (k == "next_dial_outcome" and v is None):
                    return "%s must be one of %s" % (k, list(DIAL_OUTCOMES))
                self.settings[k] = v
            elif k == "next_answered_by":
                if v is not None and v not in ANSWERED_BY:
                    return "next_answered_by must be one of %s" % list(ANSWERED_BY)
                self.settings[k] = v
            elif k in ("say_ms_per_word", "pause_ms_per_second", "play_ms", "dial_ring_ms", "dial_talk_ms",
                       "amd_delay_ms", "amd_beep_ms"):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                    return "%s must be a number >= 0" % k
                self.settings[k] = v
            elif k == "fail_next":
                if v is not None and not isinstance(v, dict):
                    return "fail_next must be an object or null"
                if v and v.get("mode", "error") not in ("error", "reset", "hang", "slow"):
                    return "fail_next mode must be error, reset, hang or slow"
                if v and (not isinstance(v.get("count", 1), int) or v.get("count", 1) < 1):
                    return "fail_next count must be an integer >= 1"
                self.settings[k] = v
            elif k == "completed_callback":
                if not (v is None or v == "drop"
                        or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 60000)):
                    return "completed_callback must be null, \"drop\" or a delay in ms up to 60000"
                self.settings[k] = v
            elif k == "refuse_ms":
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 60000:
                    return "refuse_ms must be a number of ms from 1 to 60000"
                asyncio.ensure_future(self.refuse(v))
            elif k in ("rest_delay_ms", "auto_hangup", "max_call_seconds", "host_header",
                       "ring_ms", "next_call_outcome", "ping_interval", "max_page_size",
                       "drop_mark_echoes"):
                self.settings[k] = v
            else:
                return "unknown setting %r" % k
        log("config now: %s", self.settings_view())
        return None

    def ctl_inbound(self, body):
        from_ = body.get("from", "+14155550100")
        to = body.get("to") or self.numbers[0]["e164"]
        if not C.is_e164(from_) or to not in self.number_by_e164:
            return web.json_response({"error": "from must be E.164 and to an owned number"}, status=400)
        path = body.get("path", "/twiml")
        method = body.get("method", "POST").upper()
        # a test may pick the SID, to choose which bridged owns the call
        sid = body.get("callSid")
        if sid is not None and (not re.fullmatch(r"CA[0-9a-f]{32}", sid)
                                or sid in self.calls):
            return web.json_response({"error": "callSid must be CA + 32 hex digits, not in use"},
                                     status=400)
        call = Call(self, "inbound", from_, to, sid)
        call.event("inbound call from %s to %s (simulated)" % (from_, to))
        self.start_call(call, source_url(self.public_url + path, method, "voice URL"))
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
    # a short shutdown: refuse_ms stops the site, and a hung request must not hold it
    site = web.SockSite(runner, sock, ssl_context=ssl_ctx, shutdown_timeout=0.5)
    await site.start()
    fake.runner, fake.site, fake.sock, fake.ssl_ctx = runner, site, sock, ssl_ctx
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
            c.end_by("shutdown")
            c.hangup_event.set()
    await asyncio.sleep(0.2)
    await runner.cleanup()
    await fake.http.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Twilio (REST + media client) for tests. SIMULATION only.")
    ap.add_argument("--selftest", action="store_true", help="check the signature function against "
                    "docs/protocols.md, Twilio REST §10 and exit 0/1")
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
