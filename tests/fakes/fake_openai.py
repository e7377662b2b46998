#!/usr/bin/python3
"""Fake OpenAI Realtime server (GA interface, WebSocket) for tests.

SIMULATION ONLY - there is no model here. The product's bridged daemon connects to this
program instead of wss://api.openai.com/v1/realtime. It follows openai-realtime.md:
  * §1 connect: GET /v1/realtime?model=..., Authorization: Bearer <key> (else the upgrade
    is refused with 401 and an OpenAI JSON error body), optional delayed handshake
    (--accept-delay-ms) to prove the product buffers caller audio meanwhile;
    OpenAI-Beta: realtime=v1 -> error beta_api_shape_disabled + close 4000 (§0);
  * §2 session.update validation (GA nested shape, session.type required, beta keys
    refused with the observed error texts), session.created / session.updated (§4);
  * §3 client events, each checked field by field; mistakes become "violations";
  * §5.1 one turn: an energy VAD on the appended mu-law (threshold, prefix_padding_ms,
    silence_duration_ms from the session) -> speech_started / speech_stopped / committed /
    conversation.item.added+done -> a full GA response whose audio deltas are the
    --reply-audio bytes in irregular 20-200 ms chunks, paced faster than real time;
    input transcription from a fake ASR that byte-matches known --phrase recordings,
    delivered at a random delay (it may arrive after the assistant's transcript);
  * §5.2 greeting (conversation.item.create + response.create), §5.3 barge-in (cancel
    with reason turn_detected), truncate / cancel / active-response errors (§3, §6),
    session expiry (§7).
Everything the product sent is recorded, including every appended audio byte, and served
on the same port under /_fake/ (HTTP GET; settings go in the query string because
websockets 10's process_request only sees the path and headers).
Run with /usr/bin/python3 only (Debian's websockets 10.4).
"""

import argparse
import asyncio
import base64
import binascii
import copy
import http
import json
import math
import os
import random
import re
import signal
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

import common as C  # noqa: E402

log = C.Log("fake-openai")

GA_MODELS = {
    "gpt-realtime", "gpt-realtime-2025-08-28", "gpt-realtime-mini", "gpt-realtime-mini-2025-10-06",
    "gpt-realtime-mini-2025-12-15", "gpt-realtime-1.5", "gpt-realtime-2", "gpt-realtime-2.1",
    "gpt-realtime-2.1-mini", "gpt-4o-realtime-preview", "gpt-4o-realtime-preview-2024-10-01",
    "gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview-2025-06-03",
    "gpt-4o-mini-realtime-preview", "gpt-4o-mini-realtime-preview-2024-12-17",
}
GA_SESSION_KEYS = {"type", "model", "output_modalities", "instructions", "audio", "include", "tracing",
                   "tools", "tool_choice", "max_output_tokens", "truncation", "prompt"}
BETA_SESSION_KEYS = {"modalities", "input_audio_format", "output_audio_format", "voice", "turn_detection",
                     "input_audio_transcription", "input_audio_noise_reduction", "temperature",
                     "max_response_output_tokens", "speed"}
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
TRANSCRIBE_MODELS = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize",
                     "gpt-4o-mini-transcribe-2025-12-15", "gpt-transcribe", "gpt-live-transcribe",
                     "gpt-realtime-whisper"}
CLIENT_EVENT_FIELDS = {
    "session.update": {"session"},
    "input_audio_buffer.append": {"audio"},
    "input_audio_buffer.commit": set(),
    "input_audio_buffer.clear": set(),
    "conversation.item.create": {"previous_item_id", "item"},
    "conversation.item.truncate": {"item_id", "content_index", "audio_end_ms"},
    "conversation.item.delete": {"item_id"},
    "conversation.item.retrieve": {"item_id"},
    "response.create": {"response"},
    "response.cancel": {"response_id"},
    "output_audio_buffer.clear": {"response_id"},
}
RESPONSE_CREATE_KEYS = {"output_modalities", "instructions", "audio", "conversation", "input", "metadata",
                        "max_output_tokens", "tools", "tool_choice", "prompt"}
BETA_RESPONSE_KEYS = {"modalities", "voice", "output_audio_format", "temperature",
                      "max_response_output_tokens"}
VAD_START_FRAMES = 2          # consecutive voiced 20 ms frames that start speech
RATE_LIMITS = [{"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
               {"name": "tokens", "limit": 800000, "remaining": 799000, "reset_seconds": 0.075}]


def openai_error_body(message, code, etype="invalid_request_error", param=None):
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def default_session(model):
    """GA session object as session.created carries it (§1, §4): pcm 24 kHz defaults."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": C.openai_id("sess_"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 500, "idle_timeout_ms": None,
                                   "create_response": True, "interrupt_response": True},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0},
        },
        "include": None,
    }


class ClientError(Exception):
    """An error event to send back: (code, message, param)."""

    def __init__(self, code, message, param=None, violation=True, event_id_null=False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.violation = violation
        self.event_id_null = event_id_null


def unknown_param(path):
    return ClientError("unknown_parameter", "Unknown parameter: '%s'." % path, path)


def invalid_value(path, message=None):
    return ClientError("invalid_value", message or "Invalid value for '%s'." % path, path)


def check_format(fmt, path):
    if not isinstance(fmt, dict) or "type" not in fmt:
        raise invalid_value(path, "Invalid type for '%s': expected an object with 'type'." % path)
    t = fmt["type"]
    if t in ("audio/pcmu", "audio/pcma"):
        extra = set(fmt) - {"type"}
    elif t == "audio/pcm":
        extra = set(fmt) - {"type", "rate"}
        if fmt.get("rate", 24000) != 24000:
            raise invalid_value(path + ".rate", "Invalid value: %r. Supported values are: 24000." % fmt["rate"])
    else:
        raise invalid_value(path + ".type", "Invalid value: %r. Supported values are: 'audio/pcm', "
                                             "'audio/pcmu', and 'audio/pcma'." % (t,))
    if extra:
        raise unknown_param(path + "." + sorted(extra)[0])


def check_turn_detection(td, path):
    if td is None:
        return None
    if not isinstance(td, dict):
        raise invalid_value(path)
    t = td.get("type")
    if t == "server_vad":
        allowed = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms",
                   "create_response", "interrupt_response"}
    elif t == "semantic_vad":
        allowed = {"type", "eagerness", "create_response", "interrupt_response"}
    else:
        raise invalid_value(path + ".type", "Invalid value: %r. Supported values are: 'server_vad' and "
                                             "'semantic_vad'." % (t,))
    extra = set(td) - allowed
    if extra:
        raise unknown_param(path + "." + sorted(extra)[0])
    out = {"type": t}
    if t == "server_vad":
        out.update({"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
                    "idle_timeout_ms": None})
    else:
        out["eagerness"] = "auto"
    out.update({"create_response": True, "interrupt_response": True})
    out.update(td)
    if t == "server_vad":
        if not isinstance(out["threshold"], (int, float)) or not 0.0 <= out["threshold"] <= 1.0:
            raise invalid_value(path + ".threshold")
        for k in ("prefix_padding_ms", "silence_duration_ms"):
            if not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < 0:
                raise invalid_value(path + "." + k)
        if out["idle_timeout_ms"] is not None and not isinstance(out["idle_timeout_ms"], int):
            raise invalid_value(path + ".idle_timeout_ms")
    elif out["eagerness"] not in ("low", "medium", "high", "auto"):
        raise invalid_value(path + ".eagerness")
    for k in ("create_response", "interrupt_response"):
        if not isinstance(out[k], bool):
            raise invalid_value(path + "." + k)
    return out


def validate_session_update(sess, current, audio_produced):
    """GA session.update (§2). Returns the new full config or raises ClientError."""
    if not isinstance(sess, dict):
        raise ClientError("invalid_type", "Invalid type for 'session': expected an object.", "session")
    if "type" not in sess:
        raise ClientError("missing_required_parameter", "Missing required parameter: 'session.type'.",
                          "session.type")
    if sess["type"] != "realtime":
        raise invalid_value("session.type", "Invalid value: %r. This fake supports only 'realtime' "
                                            "sessions." % (sess["type"],))
    for k in sess:
        if k in BETA_SESSION_KEYS or k not in GA_SESSION_KEYS:
            raise unknown_param("session." + k)
    new = copy.deepcopy(current)
    for k in ("instructions", "tools", "tool_choice", "tracing", "truncation", "prompt", "include"):
        if k in sess:
            new[k] = sess[k]
    if "instructions" in sess and not isinstance(sess["instructions"], str):
        raise invalid_value("session.instructions")
    if "model" in sess and sess["model"] != current["model"]:
        raise invalid_value("session.model", "Cannot update a session's model (was %r)." % current["model"])
    if "output_modalities" in sess:
        om = sess["output_modalities"]
        if om not in (["audio"], ["text"]):
            raise invalid_value("session.output_modalities",
                                "Invalid value: %r. Supported values are: ['audio'] or ['text']." % (om,))
        new["output_modalities"] = om
    if "max_output_tokens" in sess:
        m = sess["max_output_tokens"]
        if not (m == "inf" or (isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= 4096)):
            raise invalid_value("session.max_output_tokens")
        new["max_output_tokens"] = m
    if "audio" in sess:
        audio = sess["audio"]
        if not isinstance(audio, dict):
            raise invalid_value("session.audio")
        for k in audio:
            if k not in ("input", "output"):
                raise unknown_param("session.audio." + k)
        inp = audio.get("input")
        if inp is not None:
            if not isinstance(inp, dict):
                raise invalid_value("session.audio.input")
            for k in inp:
                if k not in ("format", "transcription", "noise_reduction", "turn_detection"):
                    raise unknown_param("session.audio.input." + k)
            if "format" in inp:
                check_format(inp["format"], "session.audio.input.format")
                new["audio"]["input"]["format"] = inp["format"]
            if "transcription" in inp:
                tr = inp["transcription"]
                if tr is not None:
                    if not isinstance(tr, dict):
                        raise invalid_value("session.audio.input.transcription")
                    for k in tr:
                        if k not in ("model", "language", "prompt"):
                            raise unknown_param("session.audio.input.transcription." + k)
                    if tr.get("model") not in TRANSCRIBE_MODELS:
                        raise invalid_value("session.audio.input.transcription.model",
                                            "Invalid value: %r." % (tr.get("model"),))
                new["audio"]["input"]["transcription"] = tr
            if "noise_reduction" in inp:
                nr = inp["noise_reduction"]
                if nr is not None and (not isinstance(nr, dict) or set(nr) != {"type"}
                                       or nr["type"] not in ("near_field", "far_field")):
                    raise invalid_value("session.audio.input.noise_reduction")
                new["audio"]["input"]["noise_reduction"] = nr
            if "turn_detection" in inp:
                new["audio"]["input"]["turn_detection"] = check_turn_detection(
                    inp["turn_detection"], "session.audio.input.turn_detection")
        out = audio.get("output")
        if out is not None:
            if not isinstance(out, dict):
                raise invalid_value("session.audio.output")
            for k in out:
                if k not in ("format", "voice", "speed"):
                    raise unknown_param("session.audio.output." + k)
            if "format" in out:
                check_format(out["format"], "session.audio.output.format")
                new["audio"]["output"]["format"] = out["format"]
            if "voice" in out:
                v = out["voice"]
                if not (v in VOICES or (isinstance(v, dict) and isinstance(v.get("id"), str))):
                    raise invalid_value("session.audio.output.voice", "Invalid value: %r." % (v,))
                if audio_produced and v != current["audio"]["output"]["voice"]:
                    raise ClientError("cannot_update_voice", "Cannot update a conversation's voice if "
                                      "assistant audio is present.", "session.audio.output.voice")
                new["audio"]["output"]["voice"] = v
            if "speed" in out:
                sp = out["speed"]
                if not isinstance(sp, (int, float)) or not 0.25 <= sp <= 1.5:
                    raise invalid_value("session.audio.output.speed")
                new["audio"]["output"]["speed"] = sp
    return new


# ======================================================================================
# One response
# ======================================================================================

class Response:
    def __init__(self, sess, trigger, conversation="auto", modalities=None):
        self.sess = sess
        self.id = C.openai_id("resp_")
        self.item_id = C.openai_id("item_")
        self.trigger = trigger
        self.conversation = conversation
        self.conversation_id = sess.conversation_id
        self.modalities = modalities or sess.config["output_modalities"]
        self.status = "in_progress"
        self.status_details = None
        self.sent_audio = bytearray()       # mu-law bytes, whatever the output format
        self.transcript = ""
        self.stop = asyncio.Event()
        self.stop_reason = None
        self.task = None
        self.prev_item_id = None
        self.started_ms = sess.now_ms()

    def audio_ms(self):
        return len(self.sent_audio) // 8

    def summary(self):
        return {"id": self.id, "item_id": self.item_id, "trigger": self.trigger, "status": self.status,
                "status_details": self.status_details, "audio_bytes_sent": len(self.sent_audio),
                "audio_b64": C.b64(self.sent_audio), "transcript": self.transcript,
                "started_ms": self.started_ms}

    def item(self, status, final):
        audio_mode = "audio" in self.modalities
        content = []
        if final:
            content = [{"type": "output_audio", "transcript": self.transcript}] if audio_mode else \
                [{"type": "output_text", "text": self.transcript}]
        return {"id": self.item_id, "object": "realtime.item", "type": "message", "status": status,
                "role": "assistant", "content": content}

    def resource(self, output):
        fmt = self.sess.config["audio"]["output"]
        body = {"id": self.id, "object": "realtime.response", "status": self.status,
                "status_details": self.status_details, "output": output,
                "conversation_id": self.conversation_id if self.conversation == "auto" else None,
                "output_modalities": self.modalities,
                "max_output_tokens": self.sess.config["max_output_tokens"],
                "audio": {"output": {"format": fmt["format"], "voice": fmt["voice"]}},
                "usage": None, "metadata": None}
        if self.status != "in_progress":
            audio_tokens = self.audio_ms() // 50
            text_tokens = max(1, len(self.transcript.split()))
            inp = 120 + self.sess.appended_len() // 400
            body["usage"] = {
                "total_tokens": inp + audio_tokens + text_tokens, "input_tokens": inp,
                "output_tokens": audio_tokens + text_tokens,
                "input_token_details": {"text_tokens": 100, "audio_tokens": inp - 100, "image_tokens": 0,
                                        "cached_tokens": 0,
                                        "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0,
                                                                  "image_tokens": 0}},
                "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens}}
        return body

    async def run(self):
        s = self.sess
        fake = s.fake
        audio_mode = "audio" in self.modalities
        rng = random.Random(fake.seed * 7919 + len(s.responses))
        ulaw = fake.reply_audio
        text = fake.reply_text
        self.prev_item_id = s.last_item_id()
        await s.send("response.created", response=self.resource([]))
        await s.send("response.output_item.added", response_id=self.id, output_index=0,
                     item=self.item("in_progress", False))
        if self.conversation == "auto":
            s.add_item(self.item("in_progress", False), audio_owner=self)
            await s.send("conversation.item.added", previous_item_id=self.prev_item_id,
                         item=self.item("in_progress", False))
        part_type = "audio" if audio_mode else "text"
        part = {"type": "audio", "transcript": ""} if audio_mode else {"type": "text", "text": ""}
        await s.send("response.content_part.added", response_id=self.id, item_id=self.item_id,
                     output_index=0, content_index=0, part=part)
        ids = {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}
        words = re.findall(r"\S+\s*", text) or [text]
        if audio_mode:
            chunks = []
            pos = 0
            while pos < len(ulaw):
                n = rng.randint(20, 200) * 8
                if len(ulaw) - (pos + n) < 160:
                    n = len(ulaw) - pos
                chunks.append(ulaw[pos:pos + n])
                pos += n
        else:
            chunks = [b""] * len(words)
        per_chunk = [[] for _ in chunks]
        for i, w in enumerate(words):
            per_chunk[min(len(chunks) - 1, i * len(chunks) // max(1, len(words)))].append(w)
        fmt_type = s.config["audio"]["output"]["format"]["type"]
        for i, chunk in enumerate(chunks):
            if self.stop.is_set():
                break
            if audio_mode:
                await s.send("response.output_audio.delta", **ids,
                             delta=C.b64(C.ulaw_to_format(chunk, fmt_type)))
                self.sent_audio.extend(chunk)
                s.audio_produced = True
            for w in per_chunk[i]:
                self.transcript += w
                await s.send("response.output_audio_transcript.delta" if audio_mode else
                             "response.output_text.delta", **ids, delta=w)
            wait = (len(chunk) / 8000.0 if audio_mode else 0.05) / max(0.1, fake.pace)
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
        if self.stop.is_set():
            self.status = "cancelled"
            self.status_details = {"type": "cancelled", "reason": self.stop_reason}
            item_status = "incomplete"
        else:
            self.status = "completed"
            item_status = "completed"
        if audio_mode:
            await s.send("response.output_audio.done", **ids)
            await s.send("response.output_audio_transcript.done", **ids, transcript=self.transcript)
            done_part = {"type": "audio", "transcript": self.transcript}
        else:
            await s.send("response.output_text.done", **ids, text=self.transcript)
            done_part = {"type": "text", "text": self.transcript}
        await s.send("response.content_part.done", **ids, part=done_part)
        final = self.item(item_status, True)
        await s.send("response.output_item.done", response_id=self.id, output_index=0, item=final)
        if self.conversation == "auto":
            s.replace_item(final)
            await s.send("conversation.item.done", previous_item_id=self.prev_item_id, item=final)
        await s.send("response.done", response=self.resource([final]))
        await s.send("rate_limits.updated", rate_limits=RATE_LIMITS)
        s.log("response %s %s (%d ms audio, %s) %s" % (self.id, self.status, self.audio_ms(), part_type,
                                                       self.status_details or ""))
        if s.active is self:
            s.active = None


# ======================================================================================
# One WebSocket session
# ======================================================================================

class Session:
    def __init__(self, fake, ws):
        self.fake = fake
        self.ws = ws
        self.t0 = time.monotonic()
        self.opened = time.time()
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.path).query)
        self.query = {k: v[0] for k, v in q.items()}
        self.model = self.query.get("model")
        self.headers = [[k, ("Bearer <redacted>" if k.lower() == "authorization" else v)]
                        for k, v in ws.request_headers.raw_items()]
        self.config = default_session(self.model)
        self.conversation_id = C.openai_id("conv_")
        self.update_accepted = False
        self.session_updates = []
        self.client_event_types = []
        self.server_event_types = []
        self.violations = []
        self.errors = []
        self.appended = bytearray()
        self.appended_before_update = 0
        self.items = []
        self.item_audio_owner = {}
        self.responses = []
        self.active = None
        self.user_transcripts = []
        self.truncations = []
        self.speech = []
        self.audio_produced = False
        self.close_code = None
        self.close_reason = None
        self.closed_ms = None
        self.lock = asyncio.Lock()
        self.tasks = set()
        # VAD / input buffer
        self.buffer_start = 0
        self.analysed = 0
        self.in_speech = False
        self.voiced_run = 0
        self.silence_run_ms = 0
        self.speech_item = None
        self.speech_start_byte = 0
        self.last_voiced_end = 0

    # -- utilities ------------------------------------------------------------------
    def now_ms(self):
        return int((time.monotonic() - self.t0) * 1000)

    def appended_len(self):
        return len(self.appended)

    def log(self, msg):
        log("%s %s", self.config["id"], msg)

    def violation(self, msg):
        self.violations.append(msg)
        log.loud("%s VIOLATION: %s", self.config["id"], msg)

    def last_item_id(self):
        return self.items[-1]["id"] if self.items else None

    def add_item(self, item, audio_owner=None, after=None):
        if after is not None and after != "root":
            idx = next(i for i, it in enumerate(self.items) if it["id"] == after)
            self.items.insert(idx + 1, item)
        elif after == "root":
            self.items.insert(0, item)
        else:
            self.items.append(item)
        if audio_owner is not None:
            self.item_audio_owner[item["id"]] = audio_owner

    def replace_item(self, item):
        for i, it in enumerate(self.items):
            if it["id"] == item["id"]:
                self.items[i] = item

    def find_item(self, item_id):
        return next((it for it in self.items if it["id"] == item_id), None)

    def spawn(self, coro):
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    async def send(self, etype, **fields):
        ev = {"type": etype, "event_id": C.openai_id("event_")}
        ev.update(fields)
        async with self.lock:
            self.server_event_types.append(etype)
            try:
                await self.ws.send(json.dumps(ev, separators=(",", ":")))
            except websockets.ConnectionClosed:
                pass

    async def send_error(self, err, client_event_id):
        body = {"type": "invalid_request_error", "code": err.code, "message": err.message,
                "param": err.param, "event_id": None if err.event_id_null else client_event_id}
        self.errors.append(body)
        self.log("error sent: %s %s" % (err.code, err.message))
        if err.violation:
            self.violation("%s -> error %s: %s" % (self.client_event_types[-1] if self.client_event_types
                                                   else "?", err.code, err.message))
        await self.send("error", error=body)

    def summary(self):
        return {
            "id": self.config["id"], "model": self.model, "query": self.query, "headers": self.headers,
            "opened_at": self.opened, "closed_ms": self.closed_ms, "session": self.config,
            "session_updates": self.session_updates, "update_accepted": self.update_accepted,
            "client_event_types": self.client_event_types, "server_event_types": self.server_event_types,
            "appended_audio_b64": C.b64(self.appended), "appended_bytes": len(self.appended),
            "appended_before_update_bytes": self.appended_before_update,
            "violations": self.violations, "errors": self.errors,
            "close_code": self.close_code, "close_reason": self.close_reason,
            "responses": [r.summary() for r in self.responses],
            "user_transcripts": self.user_transcripts, "speech": self.speech,
            "truncations": self.truncations,
            "items": [{"id": it["id"], "type": it["type"], "role": it.get("role"), "status": it.get("status")}
                      for it in self.items],
        }

    # -- input audio / VAD -------------------------------------------------------------
    def vad_params(self):
        td = self.config["audio"]["input"]["turn_detection"]
        if td is None:
            return None
        if td["type"] == "server_vad":
            thr, prefix, silence = td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"]
        else:  # semantic_vad approximated by energy + an eagerness-dependent pause
            thr, prefix = 0.5, 300
            silence = {"low": 1500, "medium": 800, "auto": 800, "high": 400}[td["eagerness"]]
        # threshold 0..1 -> RMS of 16-bit linear; 0.5 -> 400 (speech frames of the
        # espeak fixture are mostly 1000-8000, 0xFF silence is 0)
        rms_thr = 1600.0 * thr * thr
        return td, rms_thr, prefix, silence

    async def feed_vad(self):
        params = self.vad_params()
        while self.analysed + C.FRAME_BYTES <= len(self.appended):
            pos = self.analysed
            self.analysed += C.FRAME_BYTES
            if params is None:
                continue
            td, rms_thr, prefix, silence = params
            voiced = C.ulaw_rms(bytes(self.appended[pos:pos + C.FRAME_BYTES])) >= max(1.0, rms_thr)
            if not self.in_speech:
                self.voiced_run = self.voiced_run + 1 if voiced else 0
                if self.voiced_run >= VAD_START_FRAMES and pos >= self.buffer_start:
                    first = pos - (VAD_START_FRAMES - 1) * C.FRAME_BYTES
                    start = max(self.buffer_start, first - prefix * 8)
                    self.in_speech = True
                    self.speech_start_byte = start
                    self.last_voiced_end = pos + C.FRAME_BYTES
                    self.silence_run_ms = 0
                    self.speech_item = C.openai_id("item_")
                    self.speech.append({"item_id": self.speech_item, "audio_start_ms": start // 8,
                                        "audio_end_ms": None})
                    self.log("speech started at %d ms (item %s)" % (start // 8, self.speech_item))
                    await self.send("input_audio_buffer.speech_started", audio_start_ms=start // 8,
                                    item_id=self.speech_item)
                    if self.active is not None and td["interrupt_response"]:
                        self.log("barge-in: cancelling %s (turn_detected)" % self.active.id)
                        await self.cancel_active("turn_detected")
            else:
                if voiced:
                    self.silence_run_ms = 0
                    self.last_voiced_end = pos + C.FRAME_BYTES
                else:
                    self.silence_run_ms += 20
                if self.silence_run_ms >= silence:
                    end_ms = self.last_voiced_end // 8
                    self.in_speech = False
                    self.voiced_run = 0
                    item_id = self.speech_item
                    self.speech[-1]["audio_end_ms"] = end_ms
                    self.log("speech stopped at %d ms" % end_ms)
                    await self.send("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id)
                    await self.commit(item_id, pos + C.FRAME_BYTES)
                    if td["create_response"]:
                        if self.active is None:
                            await self.start_response("server_vad")
                        else:
                            self.log("VAD turn ended while %s is active: no new response" % self.active.id)

    async def commit(self, item_id, end_byte):
        start = self.buffer_start
        segment = bytes(self.appended[start:end_byte])
        self.buffer_start = end_byte
        prev = self.last_item_id()
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        self.add_item(item)
        await self.send("input_audio_buffer.committed", previous_item_id=prev, item_id=item_id)
        await self.send("conversation.item.added", previous_item_id=prev, item=item)
        await self.send("conversation.item.done", previous_item_id=prev, item=item)
        if self.config["audio"]["input"]["transcription"] is not None:
            transcript = self.fake.recognise(segment)
            self.spawn(self.transcribe(item, transcript, len(segment) // 8))

    async def transcribe(self, item, transcript, audio_ms):
        lo, hi = self.fake.transcription_delay_ms
        await asyncio.sleep(random.uniform(lo, hi) / 1000.0)
        item["content"][0]["transcript"] = transcript
        await self.send("conversation.item.input_audio_transcription.delta", item_id=item["id"],
                        content_index=0, delta=transcript)
        toks = max(1, audio_ms // 100)
        await self.send("conversation.item.input_audio_transcription.completed", item_id=item["id"],
                        content_index=0, transcript=transcript,
                        usage={"type": "tokens", "input_tokens": toks, "output_tokens": len(transcript.split()),
                               "total_tokens": toks + len(transcript.split()),
                               "input_token_details": {"text_tokens": 0, "audio_tokens": toks}})
        self.user_transcripts.append({"item_id": item["id"], "transcript": transcript, "audio_ms": audio_ms,
                                      "at_ms": self.now_ms()})
        self.log("user transcript for %s: %r" % (item["id"], transcript))

    # -- responses ----------------------------------------------------------------------
    async def start_response(self, trigger, conversation="auto", modalities=None):
        resp = Response(self, trigger, conversation, modalities)
        self.responses.append(resp)
        if conversation == "auto":
            self.active = resp
        self.log("response %s started (%s)" % (resp.id, trigger))
        resp.task = self.spawn(resp.run())
        return resp

    async def cancel_active(self, reason):
        resp = self.active
        if resp is None:
            return
        resp.stop_reason = reason
        resp.stop.set()
        await asyncio.gather(resp.task, return_exceptions=True)

    # -- client events --------------------------------------------------------------------
    async def handle(self, raw):
        if isinstance(raw, bytes):
            self.client_event_types.append("<binary>")
            raise ClientError(None, "Binary frames are not supported; send JSON text events.")
        try:
            ev = json.loads(raw)
        except ValueError:
            self.client_event_types.append("<invalid json>")
            raise ClientError("invalid_json", "The event is not valid JSON.")
        if not isinstance(ev, dict):
            self.client_event_types.append("<not an object>")
            raise ClientError("invalid_type", "The event must be a JSON object.")
        etype = ev.get("type")
        self.client_event_types.append(etype if isinstance(etype, str) else repr(etype))
        if etype not in CLIENT_EVENT_FIELDS:
            raise ClientError("invalid_value", "Invalid value: %r. Supported values are: %s." % (
                etype, ", ".join("'%s'" % t for t in CLIENT_EVENT_FIELDS)), "type")
        for k in ev:
            if k not in ("type", "event_id") and k not in CLIENT_EVENT_FIELDS[etype]:
                raise unknown_param(k)
        if "event_id" in ev and not isinstance(ev["event_id"], str):
            raise invalid_value("event_id")
        await getattr(self, "on_" + etype.replace(".", "_"))(ev)

    async def on_session_update(self, ev):
        if "session" not in ev:
            raise ClientError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
        self.session_updates.append(ev["session"])
        self.config = validate_session_update(ev["session"], self.config, self.audio_produced)
        self.update_accepted = True
        fin = self.config["audio"]["input"]["format"]["type"]
        fout = self.config["audio"]["output"]["format"]["type"]
        if fin != "audio/pcmu":
            self.violation("input audio format is %s, not audio/pcmu (Twilio's mu-law would be "
                           "misread)" % fin)
        if fout != "audio/pcmu":
            self.violation("output audio format is %s, not audio/pcmu (Twilio would play noise)" % fout)
        self.log("session.update accepted: in=%s out=%s vad=%s transcription=%s" % (
            fin, fout, self.config["audio"]["input"]["turn_detection"],
            self.config["audio"]["input"]["transcription"]))
        await self.send("session.updated", session=self.config)

    async def on_input_audio_buffer_append(self, ev):
        audio = ev.get("audio")
        if not isinstance(audio, str):
            raise ClientError("missing_required_parameter", "Missing required parameter: 'audio'.", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_value("audio", "Invalid 'audio'. Expected base64-encoded audio bytes.")
        if not data:
            self.violation("input_audio_buffer.append with empty audio")
            return
        if not self.update_accepted:
            if self.appended_before_update == 0:
                self.violation("input_audio_buffer.append before session.update was accepted (the audio "
                               "would be read as the default audio/pcm 24 kHz)")
            self.appended_before_update += len(data)
        self.appended.extend(data)
        await self.feed_vad()

    async def on_input_audio_buffer_commit(self, ev):
        pending = len(self.appended) - self.buffer_start
        if pending < 800:  # 100 ms of mu-law
            raise ClientError(None, "Error committing input audio buffer: the buffer is empty.",
                              violation=False)
        item_id = self.speech_item if self.in_speech else C.openai_id("item_")
        self.in_speech = False
        self.voiced_run = 0
        self.analysed = len(self.appended)
        await self.commit(item_id, len(self.appended))

    async def on_input_audio_buffer_clear(self, ev):
        self.buffer_start = len(self.appended)
        self.analysed = len(self.appended)
        self.in_speech = False
        self.voiced_run = 0
        await self.send("input_audio_buffer.cleared")

    async def on_conversation_item_create(self, ev):
        item = ev.get("item")
        if not isinstance(item, dict):
            raise ClientError("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        t = item.get("type")
        allowed = {"message": {"id", "type", "role", "content", "status", "object"},
                   "function_call_output": {"id", "type", "call_id", "output", "status", "object"},
                   "function_call": {"id", "type", "call_id", "name", "arguments", "status", "object"}}
        if t not in allowed:
            raise invalid_value("item.type", "Invalid value: %r. Supported values are: 'message', "
                                             "'function_call', and 'function_call_output'." % (t,))
        for k in item:
            if k not in allowed[t]:
                raise unknown_param("item." + k)
        if t == "message":
            role = item.get("role")
            ok_types = {"user": {"input_text", "input_audio", "input_image"}, "system": {"input_text"},
                        "assistant": {"output_text"}}
            if role not in ok_types:
                raise invalid_value("item.role")
            content = item.get("content")
            if not isinstance(content, list) or not content:
                raise ClientError("missing_required_parameter", "Missing required parameter: 'item.content'.",
                                  "item.content")
            for i, c in enumerate(content):
                if not isinstance(c, dict) or c.get("type") not in ok_types[role]:
                    raise invalid_value("item.content[%d].type" % i, "Invalid value: %r for a %s message. "
                                        "Supported values are: %s." % (
                                            c.get("type") if isinstance(c, dict) else c, role,
                                            sorted(ok_types[role])))
        prev_req = ev.get("previous_item_id")
        if prev_req is not None and prev_req != "root" and self.find_item(prev_req) is None:
            raise invalid_value("previous_item_id", "Previous item with id '%s' not found." % prev_req)
        new = dict(item)
        new.setdefault("id", C.openai_id("item_"))
        new["object"] = "realtime.item"
        new.setdefault("status", "completed")
        if prev_req is None:
            prev = self.last_item_id()
        elif prev_req == "root":
            prev = None
        else:
            prev = prev_req
        self.add_item(new, after=prev_req)
        await self.send("conversation.item.added", previous_item_id=prev, item=new)
        await self.send("conversation.item.done", previous_item_id=prev, item=new)

    async def on_conversation_item_truncate(self, ev):
        for k in ("item_id", "content_index", "audio_end_ms"):
            if k not in ev:
                raise ClientError("missing_required_parameter", "Missing required parameter: '%s'." % k, k)
        item_id, ci, end = ev["item_id"], ev["content_index"], ev["audio_end_ms"]
        if not isinstance(ci, int) or ci != 0:
            raise invalid_value("content_index")
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            raise invalid_value("audio_end_ms")
        item = self.find_item(item_id)
        owner = self.item_audio_owner.get(item_id)
        rec = {"item_id": item_id, "audio_end_ms": end, "at_ms": self.now_ms()}
        self.truncations.append(rec)
        if item is None:
            rec["result"] = "unknown item"
            raise invalid_value("item_id", "Conversation item with id '%s' not found." % item_id)
        if owner is None or owner.audio_ms() == 0:
            rec["result"] = "not audio"
            raise ClientError("invalid_value", "Only model output audio messages can be truncated", "item_id")
        rec["item_audio_ms"] = owner.audio_ms()
        rec["response_id"] = owner.id
        if end > owner.audio_ms():
            rec["result"] = "beyond audio"
            raise ClientError("invalid_value", "Audio content of %dms is already shorter than %dms"
                              % (owner.audio_ms(), end), "audio_end_ms", event_id_null=True)
        rec["result"] = "truncated"
        for c in item.get("content", []):
            if c.get("type") == "output_audio":
                c["transcript"] = ""
        self.log("truncated %s at %d ms of %d ms" % (item_id, end, owner.audio_ms()))
        await self.send("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end)

    async def on_conversation_item_delete(self, ev):
        item_id = ev.get("item_id")
        if self.find_item(item_id) is None:
            raise invalid_value("item_id", "Conversation item with id '%s' not found." % item_id)
        self.items = [it for it in self.items if it["id"] != item_id]
        await self.send("conversation.item.deleted", item_id=item_id)

    async def on_conversation_item_retrieve(self, ev):
        item = self.find_item(ev.get("item_id"))
        if item is None:
            raise invalid_value("item_id", "Conversation item with id '%s' not found." % ev.get("item_id"))
        await self.send("conversation.item.retrieved", item=item)

    async def on_response_create(self, ev):
        r = ev.get("response") or {}
        if not isinstance(r, dict):
            raise invalid_value("response")
        for k in r:
            if k in BETA_RESPONSE_KEYS or k not in RESPONSE_CREATE_KEYS:
                raise unknown_param("response." + k)
        conversation = r.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise invalid_value("response.conversation")
        modalities = r.get("output_modalities")
        if modalities is not None and modalities not in (["audio"], ["text"]):
            raise invalid_value("response.output_modalities")
        if conversation == "auto" and self.active is not None:
            raise ClientError("conversation_already_has_active_response",
                              "Conversation already has an active response in progress: %s. Wait until the "
                              "response is finished before creating a new one." % self.active.id,
                              violation=False)
        await self.start_response("response.create", conversation, modalities)

    async def on_response_cancel(self, ev):
        rid = ev.get("response_id")
        if self.active is None or (rid is not None and rid != self.active.id):
            raise ClientError("response_cancel_not_active", "Cancellation failed: no active response found",
                              violation=False)
        await self.cancel_active("client_cancelled")

    async def on_output_audio_buffer_clear(self, ev):
        raise ClientError("invalid_value", "output_audio_buffer.clear is only supported for WebRTC and SIP "
                          "sessions.", "type")

    # -- lifecycle --------------------------------------------------------------------------
    async def expire_later(self, seconds):
        await asyncio.sleep(seconds)
        minutes = max(1, int(round(seconds / 60)))
        msg = "Your session hit the maximum duration of %d minutes." % minutes
        self.log("session expired")
        await self.send("error", error={"type": "invalid_request_error", "code": "session_expired",
                                        "message": msg, "param": None, "event_id": None})
        await self.ws.close(1001, msg)

    async def run(self):
        ws = self.ws
        beta = ws.request_headers.get("OpenAI-Beta")
        if beta is not None:
            if self.fake.beta_mode == "refuse":
                self.violation("OpenAI-Beta header sent (%r): the beta shape is disabled" % beta)
                body = {"type": "invalid_request_error", "code": "beta_api_shape_disabled",
                        "message": "The Realtime API beta shape (OpenAI-Beta: realtime=v1) is no longer "
                                   "supported. Use the GA interface.", "param": None, "event_id": None}
                self.errors.append(body)
                await self.send("error", error=body)
                await ws.close(4000, "beta_api_shape_disabled")
                return
            self.violation("OpenAI-Beta header sent (%r); answering with the GA interface" % beta)
        await self.send("session.created", session=self.config)
        if self.fake.max_session_seconds:
            self.spawn(self.expire_later(self.fake.max_session_seconds))
        try:
            async for raw in ws:
                ev_id = None
                try:
                    if isinstance(raw, str):
                        try:
                            ev_id = json.loads(raw).get("event_id")
                        except (ValueError, AttributeError):
                            pass
                    await self.handle(raw)
                except ClientError as e:
                    await self.send_error(e, ev_id if isinstance(ev_id, str) else None)
        except websockets.ConnectionClosed:
            pass


# ======================================================================================
# Server
# ======================================================================================

class FakeOpenAI:
    def __init__(self, args):
        self.api_key = args.api_key
        self.accept_delay_ms = args.accept_delay_ms
        self.beta_mode = args.beta_mode
        self.bad_key_mode = args.bad_key_mode
        self.reply_audio_path = args.reply_audio
        self.reply_audio = C.read_file_bytes(args.reply_audio) if args.reply_audio else self.tone()
        self.reply_text = args.reply_text
        self.pace = args.pace
        self.seed = args.seed
        self.transcription_delay_ms = tuple(args.transcription_delay_ms)
        self.max_session_seconds = args.max_session_seconds
        self.phrases = []
        for spec in args.phrase or []:
            self.add_phrase(spec)
        self.sessions = []
        self.handshakes = []

    @staticmethod
    def tone(ms=1200, hz=440):
        import struct
        lin = b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * hz * i / 8000)))
                       for i in range(ms * 8))
        return C.audioop.lin2ulaw(lin, 2)

    def add_phrase(self, spec):
        path, sep, text = spec.partition("=")
        if not sep:
            raise ValueError("--phrase wants path.ulaw=TEXT")
        fp = C.ulaw_fingerprint(C.read_file_bytes(path))
        if fp is None:
            raise ValueError("phrase %s has too little non-silent audio for a fingerprint" % path)
        self.phrases.append({"path": path, "text": text, "fp": fp})

    def recognise(self, segment):
        for ph in self.phrases:
            if ph["fp"] in segment:
                return ph["text"]
        return "[unrecognized speech, %d ms]" % (len(segment) // 8)

    def settings_view(self):
        return {"api_key_set": bool(self.api_key), "accept_delay_ms": self.accept_delay_ms,
                "beta_mode": self.beta_mode, "bad_key_mode": self.bad_key_mode,
                "reply_audio": self.reply_audio_path, "reply_audio_bytes": len(self.reply_audio),
                "reply_text": self.reply_text, "pace": self.pace, "seed": self.seed,
                "transcription_delay_ms": list(self.transcription_delay_ms),
                "max_session_seconds": self.max_session_seconds,
                "phrases": [{"path": p["path"], "text": p["text"]} for p in self.phrases]}

    # -- HTTP side -----------------------------------------------------------------------
    @staticmethod
    def http_json(status, obj):
        body = json.dumps(obj).encode()
        return (http.HTTPStatus(status), [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body))), ("Connection", "close")], body)

    def control(self, path, query):
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        if path == "/_fake/health":
            return self.http_json(200, {"ok": True, "sessions": len(self.sessions)})
        if path == "/_fake/sessions":
            return self.http_json(200, [s.summary() for s in self.sessions])
        if path == "/_fake/handshakes":
            return self.http_json(200, self.handshakes)
        if path == "/_fake/reset":
            self.sessions = []
            self.handshakes = []
            return self.http_json(200, {"ok": True})
        if path == "/_fake/config":
            try:
                for k, vals in q.items():
                    v = vals[-1]
                    if k == "accept_delay_ms":
                        self.accept_delay_ms = int(v)
                    elif k == "reply_text":
                        self.reply_text = v
                    elif k == "reply_audio":
                        self.reply_audio = C.read_file_bytes(v) if v else self.tone()
                        self.reply_audio_path = v or None
                    elif k == "pace":
                        self.pace = float(v)
                    elif k == "seed":
                        self.seed = int(v)
                    elif k == "transcription_delay_ms":
                        lo, _, hi = v.partition(",")
                        self.transcription_delay_ms = (int(lo), int(hi or lo))
                    elif k == "beta_mode":
                        if v not in ("refuse", "ignore"):
                            raise ValueError("beta_mode is refuse or ignore")
                        self.beta_mode = v
                    elif k == "bad_key_mode":
                        if v not in ("refuse", "error"):
                            raise ValueError("bad_key_mode is refuse or error")
                        self.bad_key_mode = v
                    elif k == "api_key":
                        self.api_key = v
                    elif k == "max_session_seconds":
                        self.max_session_seconds = float(v) if v else None
                    elif k == "phrase":
                        for spec in vals:
                            self.add_phrase(spec)
                    elif k == "clear_phrases":
                        self.phrases = []
                    else:
                        raise ValueError("unknown setting %r" % k)
            except (ValueError, OSError) as e:
                return self.http_json(400, {"error": str(e)})
            log("config now: %s", self.settings_view())
            return self.http_json(200, self.settings_view())
        return self.http_json(404, {"error": "unknown control endpoint %s" % path})

    async def process_request(self, path, headers):
        parts = urllib.parse.urlsplit(path)
        if parts.path.startswith("/_fake/"):
            return self.control(parts.path, parts.query)
        rec = {"path": path, "at": time.time(),
               "headers": [[k, ("Bearer <redacted>" if k.lower() == "authorization" else v)]
                           for k, v in headers.raw_items()]}
        self.handshakes.append(rec)

        def refuse(status, message, code, etype="invalid_request_error"):
            rec["status"] = status
            rec["refused"] = message
            log.loud("refusing WebSocket upgrade %s: HTTP %d %s", path, status, message)
            return self.http_json(status, openai_error_body(message, code, etype))

        if parts.path != "/v1/realtime":
            return refuse(404, "Invalid URL (GET %s)" % parts.path, None)
        q = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        modes = [k for k in ("model", "call_id", "intent") if k in q]
        if len(modes) != 1:
            return refuse(400, "Exactly one of 'model', 'call_id' or 'intent' is required in the query "
                               "string.", "invalid_request")
        if modes[0] != "model":
            return refuse(400, "This fake supports only ?model= sessions.", "invalid_request")
        model = q["model"][0]
        if model not in GA_MODELS:
            return refuse(404, "The model '%s' does not exist or you do not have access to it." % model,
                          "model_not_found")
        extra = sorted(set(q) - {"model"})
        auth = headers.get("Authorization", "")
        if not (self.api_key and auth == "Bearer " + self.api_key):
            if self.bad_key_mode == "refuse":
                shown = auth[7:] if auth.startswith("Bearer ") else ""
                masked = (shown[:3] + "*" * 8 + shown[-4:]) if len(shown) > 8 else "<none>"
                return refuse(401, "Incorrect API key provided: %s. You can find your API key at "
                                   "https://platform.openai.com/account/api-keys." % masked, "invalid_api_key")
            rec["bad_key"] = True
        rec["extra_query"] = extra
        if self.accept_delay_ms:
            log("delaying the handshake of %s by %d ms", path, self.accept_delay_ms)
            await asyncio.sleep(self.accept_delay_ms / 1000.0)
        rec["status"] = 101
        return None

    async def handler(self, ws):
        sess = Session(self, ws)
        self.sessions.append(sess)
        sess.log("session opened: %s" % ws.path)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.path).query)
        extra = sorted(set(q) - {"model"})
        if extra:
            sess.violation("undocumented query parameters %s on the Realtime URL (only model=...)" % extra)
        auth = ws.request_headers.get("Authorization", "")
        if not (self.api_key and auth == "Bearer " + self.api_key):
            sess.violation("wrong or missing API key")
            body = {"type": "invalid_request_error", "code": "invalid_api_key",
                    "message": "Incorrect API key provided.", "param": None, "event_id": None}
            sess.errors.append(body)
            await sess.send("error", error=body)
            await ws.close(1008, "invalid_api_key")
        else:
            try:
                await sess.run()
            except Exception as e:  # keep the server up
                log.loud("internal error in session %s: %r", sess.config["id"], e)
                import traceback
                traceback.print_exc()
                sess.violations.append("fake internal error (not the product's fault): %r" % e)
                await ws.close(1011, "fake internal error")
        if sess.active is not None:
            sess.active.stop_reason = "client_closed"
            sess.active.stop.set()
        for t in list(sess.tasks):
            t.cancel()
        await ws.wait_closed()
        sess.close_code = ws.close_code
        sess.close_reason = ws.close_reason
        sess.closed_ms = sess.now_ms()
        sess.log("session closed (code %s)" % ws.close_code)


async def amain(args):
    fake = FakeOpenAI(args)
    log.loud("SIMULATION: this is a fake OpenAI Realtime server")
    ssl_ctx = C.make_server_ssl(args.tls_cert, args.tls_key) if args.tls_cert else None
    sock = C.bind_socket(args.host, args.port)
    server = await websockets.serve(
        fake.handler, sock=sock, ssl=ssl_ctx, process_request=fake.process_request,
        compression=None, subprotocols=None, server_header=None, max_size=32 * 1024 * 1024,
        max_queue=4096, ping_interval=args.ping_interval, ping_timeout=20)
    port = sock.getsockname()[1]
    log("listening on %s://%s:%d/v1/realtime (api key %s)", "wss" if ssl_ctx else "ws", args.host, port,
        "set" if args.api_key else "NOT SET: every connection is refused")
    C.print_ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log("shutting down")
    server.close()
    await server.wait_closed()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake OpenAI Realtime (GA) server for tests. SIMULATION only.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--api-key", default="sk-test-fake")
    ap.add_argument("--accept-delay-ms", type=int, default=0)
    ap.add_argument("--reply-audio", help="raw mu-law 8 kHz mono: the assistant's reply (default: a tone)")
    ap.add_argument("--reply-text", default="Sure, for what time?")
    ap.add_argument("--phrase", action="append", metavar="PATH.ulaw=TEXT",
                    help="a known caller sentence for the fake ASR (repeatable)")
    ap.add_argument("--beta-mode", choices=("refuse", "ignore"), default="refuse")
    ap.add_argument("--bad-key-mode", choices=("refuse", "error"), default="refuse",
                    help="wrong key: refuse the upgrade with 401 (default) or upgrade, send "
                         "invalid_api_key and close")
    ap.add_argument("--pace", type=float, default=2.0, help="reply audio speed vs real time (default 2x)")
    ap.add_argument("--seed", type=int, default=1, help="seed for chunk sizes")
    ap.add_argument("--transcription-delay-ms", type=int, nargs=2, default=[200, 2000], metavar=("MIN", "MAX"))
    ap.add_argument("--max-session-seconds", type=float, default=3600,
                    help="session_expired + close 1001 after this long (0 = never)")
    ap.add_argument("--ping-interval", type=float, default=None)
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
