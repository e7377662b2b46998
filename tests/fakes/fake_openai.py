#!/usr/bin/python3
"""Fake OpenAI Realtime server (GA interface, WebSocket) for tests.

SIMULATION ONLY - there is no model here. The product's bridged daemon connects to this
program instead of wss://api.openai.com/v1/realtime. It follows docs/protocols.md, Realtime:
  * §1 connect: GET /v1/realtime?model=..., Authorization: Bearer <key> (else, as verified
    in acting §7.2: 101, one error invalid_api_key, close 3000; or, with --bad-key-mode
    refuse, HTTP 401 with an OpenAI JSON error body), optional delayed handshake
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
And docs/protocols.md, Realtime acting:
  * §2 function calls: a response plan (script queue via /_fake/config?script=, or at a
    moment of the test's choosing via /_fake/cue) makes the "model" call a function, with
    an optional spoken preamble; function_call_output is checked (string output, known
    call_id) and never answered with a response by itself; cancel mid-arguments (§8.4);
  * §3 MCP: mcp_list_tools after a session.update adds a server, mcp_call inside a
    response, mcp_approval_request when require_approval is not "never";
  * §7 faults a test injects: a connection dropped mid-response (after N audio deltas, or
    now via /_fake/drop; abrupt or 1011), errors that end a live session (/_fake/fatal),
    refused upgrades (refuse_next: HTTP 401/403/429/500/503..., Retry-After) and sessions
    that end at once (fatal_next: insufficient_quota, invalid_model...); session expiry
    that matches session.created's expires_at; §7.6 history re-created with
    conversation.item.create (client_items, first_append_ms);
  * §5.3 idle_timeout_ms (timeout_triggered, commit, response), §1 model/transcription
    deprecation warnings, reasoning only on the reasoning models, the tool / tool_choice /
    truncation / noise_reduction / transcription field sets of the 7.60.0 types.
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
    "gpt-audio-1.5", "gpt-audio-mini", "gpt-audio-mini-2025-10-06", "gpt-audio-mini-2025-12-15",
}
# docs/protocols.md, Realtime acting §1.1/§1.3: the reasoning models (reasoning, parallel_tool_calls)
REASONING_MODELS = {"gpt-realtime-2", "gpt-realtime-2.1", "gpt-realtime-2.1-mini"}
REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
# Announced shutdowns (types 7.60.0 deprecation comments, acting §1.1/§1.2). The preview
# names carry no date in the types; third parties say they are gone (UNVERIFIED).
DEPRECATED_MODELS = {
    "gpt-realtime": "2027-01-20", "gpt-realtime-2025-08-28": "2027-01-20", "gpt-realtime-mini": "2027-01-20",
    "gpt-realtime-mini-2025-12-15": "2027-01-20", "gpt-realtime-mini-2025-10-06": "2027-01-20",
    "gpt-audio-mini": "2027-01-20", "gpt-audio-mini-2025-12-15": "2027-01-20",
    "gpt-4o-realtime-preview": None, "gpt-4o-realtime-preview-2024-10-01": None,
    "gpt-4o-realtime-preview-2024-12-17": None, "gpt-4o-realtime-preview-2025-06-03": None,
    "gpt-4o-mini-realtime-preview": None, "gpt-4o-mini-realtime-preview-2024-12-17": None,
}
DEPRECATED_TRANSCRIBE = {"whisper-1": "2027-02-26", "gpt-4o-transcribe": "2027-02-26",
                         "gpt-4o-mini-transcribe": "2027-02-26", "gpt-4o-mini-transcribe-2025-12-15": "2027-02-26",
                         "gpt-4o-transcribe-diarize": "2027-02-26"}
GA_SESSION_KEYS = {"type", "model", "output_modalities", "instructions", "audio", "include", "tracing",
                   "tools", "tool_choice", "max_output_tokens", "truncation", "prompt", "reasoning",
                   "parallel_tool_calls"}
BETA_SESSION_KEYS = {"modalities", "input_audio_format", "output_audio_format", "voice", "turn_detection",
                     "input_audio_transcription", "input_audio_noise_reduction", "temperature",
                     "max_response_output_tokens", "speed"}
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
TRANSCRIBE_MODELS = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize",
                     "gpt-4o-mini-transcribe-2025-12-15", "gpt-transcribe", "gpt-live-transcribe",
                     "gpt-realtime-whisper"}
# AudioTranscription fields (acting §1.2 table, types 7.60.0)
TRANSCRIPTION_KEYS = {"model", "language", "languages", "keywords", "prompt", "delay"}
LANGUAGES_MODELS = {"gpt-transcribe", "gpt-live-transcribe"}     # languages, keywords
FUNCTION_TOOL_KEYS = {"type", "name", "description", "parameters"}
MCP_TOOL_KEYS = {"type", "server_label", "server_url", "connector_id", "tunnel_id", "authorization", "headers",
                 "allowed_tools", "require_approval", "server_description", "defer_loading", "allowed_callers"}
MCP_CONNECTORS = {"connector_dropbox", "connector_gmail", "connector_googlecalendar", "connector_googledrive",
                  "connector_microsoftteams", "connector_outlookcalendar", "connector_outlookemail",
                  "connector_sharepoint"}
FUNCTION_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ITEM_STATUSES = ("completed", "incomplete", "in_progress")
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
                        "max_output_tokens", "tools", "tool_choice", "prompt", "reasoning", "parallel_tool_calls"}
BETA_RESPONSE_KEYS = {"modalities", "voice", "output_audio_format", "temperature",
                      "max_response_output_tokens"}
VAD_START_FRAMES = 2          # consecutive voiced 20 ms frames that start speech
RATE_LIMITS = [{"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
               {"name": "tokens", "limit": 800000, "remaining": 799000, "reset_seconds": 0.075}]
# What the fake MCP server lists (configurable: mcp_tools=JSON)
DEFAULT_MCP_TOOLS = [
    {"name": "lookup_order", "description": "Find an order by its number.",
     "input_schema": {"type": "object", "properties": {"order_number": {"type": "string"}},
                      "required": ["order_number"]},
     "annotations": {"readOnlyHint": True}},
    {"name": "refund_order", "description": "Refund an order.",
     "input_schema": {"type": "object", "properties": {"order_number": {"type": "string"}},
                      "required": ["order_number"]},
     "annotations": {"readOnlyHint": False}},
]
DEFAULT_MCP_OUTPUT = '{"status":"shipped","eta":"2026-09-04"}'
IDLE_TIMEOUT_RANGE_MS = (5000, 30000)   # not in the 7.60.0 types: UNVERIFIED, configurable


# Errors that end a session (acting §7.2, §7.5, §1.1; docs/protocols.md, Realtime §7): code ->
# (error.type, close code, message). The close reason is "<type>.<code>" for 3xxx/4xxx
# closes (verified for the bad key, §7.2), the message for session_expired (§7.1), and
# "internal error" for server_error's 1011 (this fake's choice).
FATAL_CODES = {
    "invalid_api_key": ("invalid_request_error", 3000, "Incorrect API key provided: sk-...fake. You can find your "
                        "API key at https://platform.openai.com/account/api-keys."),
    "insufficient_quota": ("insufficient_quota", 3000, "You exceeded your current quota, please check your plan "
                           "and billing details. For more information on this error, read the docs: "
                           "https://platform.openai.com/docs/guides/error-codes/api-errors."),
    "invalid_model": ("invalid_request_error", 4000, 'Model "%(model)s" is not supported in realtime mode.'),
    "missing_model": ("invalid_request_error", 4000, "Missing required parameter: 'model'."),
    "model_not_found": ("invalid_request_error", 4000, "The model '%(model)s' does not exist or you do not have "
                        "access to it."),
    "beta_api_shape_disabled": ("invalid_request_error", 4000, "The Realtime API beta shape (OpenAI-Beta: "
                                "realtime=v1) is no longer supported. Use the GA interface."),
    "session_expired": ("invalid_request_error", 1001, "Your session hit the maximum duration of %(minutes)d "
                        "minutes."),
    "server_error": ("server_error", 1011, "The server had an error while processing your request. Sorry about "
                     "that! You can retry your request, or contact us through our help center at "
                     "help.openai.com if the error persists."),
}
SERVER_ERROR_CLOSE_REASON = "internal error"
# HTTP refusals of the upgrade (refuse_next): status -> (error.type, error.code, message)
REFUSE_STATUSES = {
    401: ("invalid_request_error", "invalid_api_key", None),      # message: the masked key
    403: ("invalid_request_error", None, "You have insufficient permissions for this operation."),
    408: ("server_error", None, "Request timed out."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for %(model)s in organization org-fake on requests "
          "per min (RPM): Limit 100, Used 100, Requested 1. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
}
RETRY_AFTER_STATUSES = (429, 503)
DROP_MODES = ("abrupt", "1011")


def openai_error_body(message, code, etype="invalid_request_error", param=None):
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def bad_key_message(auth):
    """The invalid_api_key text with the key masked as in acting §7.2 ('sk-proj-...sQoA')."""
    key = auth[7:] if auth.startswith("Bearer ") else ""
    if not key:
        return ("You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
                "https://platform.openai.com/account/api-keys.")
    prefix = "sk-proj-" if key.startswith("sk-proj-") else key[:3]
    shown = prefix + "..." + (key[-4:] if len(key) > len(prefix) + 4 else "")
    return ("Incorrect API key provided: %s. You can find your API key at "
            "https://platform.openai.com/account/api-keys." % shown)


def fatal_error(code, model=None, limit_seconds=None, etype=None, message=None, close_code=None, reason=None):
    """(error body, close code, close reason) for an error that ends a session. Unknown codes
    are invalid_request_error + 3000 unless etype / close_code say otherwise."""
    dtype, dclose, dmsg = FATAL_CODES.get(code, ("invalid_request_error", 3000, "Injected fatal error %(code)s."))
    etype = etype or dtype
    close_code = int(close_code) if close_code not in (None, "") else dclose
    minutes = max(1, int(round(limit_seconds / 60.0))) if limit_seconds else 60
    if message is None:
        message = dmsg % {"model": model, "minutes": minutes, "code": code}
    if reason is None:
        if code == "session_expired":
            reason = "Your session hit the maximum duration of %d minutes." % minutes
        elif close_code == 1011:
            reason = SERVER_ERROR_CLOSE_REASON
        else:
            reason = "%s.%s" % (etype, code)
    body = {"type": etype, "code": code, "message": message, "param": None, "event_id": None}
    return body, close_code, reason


def default_session(model, max_session_seconds=None):
    """GA session object as session.created carries it (§1, §4): pcm 24 kHz defaults.
    expires_at is the session limit (now + max_session_seconds, rounded down to the second),
    or now + 3600 (the real 60 minutes) when the fake never expires sessions."""
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
        "expires_at": int(time.time() + (max_session_seconds or 3600)),
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


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_JSON_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
                    list: "an array", dict: "an object", type(None): "null"}


def invalid_type(path, expected, value):
    got = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    return ClientError("invalid_type", "Invalid type for '%s': expected %s, but got %s instead."
                       % (path, expected, got), path)


def missing(path):
    return ClientError("missing_required_parameter", "Missing required parameter: '%s'." % path, path)


def check_keys(obj, allowed, path):
    for k in obj:
        if k not in allowed:
            raise unknown_param("%s.%s" % (path, k))


def check_str_list(v, path):
    if not isinstance(v, list):
        raise invalid_type(path, "an array of strings", v)
    for i, x in enumerate(v):
        if not isinstance(x, str):
            raise invalid_type("%s[%d]" % (path, i), "a string", x)


def check_tool_filter(f, path):
    """McpToolFilter / approval filter: {tool_names?: string[], read_only?: bool}."""
    if not isinstance(f, dict):
        raise invalid_type(path, "an object", f)
    check_keys(f, {"tool_names", "read_only"}, path)
    if "tool_names" in f:
        check_str_list(f["tool_names"], path + ".tool_names")
    if "read_only" in f and not isinstance(f["read_only"], bool):
        raise invalid_type(path + ".read_only", "a boolean", f["read_only"])


def check_tools(tools, path):
    """RealtimeToolsConfig (acting §2.1, §3.1): function tools and MCP tools, exact field sets."""
    if not isinstance(tools, list):
        raise invalid_type(path, "an array", tools)
    names, labels = set(), set()
    for i, t in enumerate(tools):
        tp = "%s[%d]" % (path, i)
        if not isinstance(t, dict):
            raise invalid_type(tp, "an object", t)
        kind = t.get("type")
        if kind == "function":
            check_keys(t, FUNCTION_TOOL_KEYS, tp)
            if "name" not in t:
                raise missing(tp + ".name")
            if not isinstance(t["name"], str):
                raise invalid_type(tp + ".name", "a string", t["name"])
            if not FUNCTION_NAME_RE.match(t["name"]):
                raise invalid_value(tp + ".name", "Invalid '%s': string does not match pattern. Expected a "
                                    "string that matches the pattern '^[a-zA-Z0-9_-]+$' (1 to 64 "
                                    "characters)." % (tp + ".name"))
            if t["name"] in names:
                raise invalid_value(tp + ".name", "Duplicate tool name: '%s'." % t["name"])
            names.add(t["name"])
            if "description" in t and not isinstance(t["description"], str):
                raise invalid_type(tp + ".description", "a string", t["description"])
            if "parameters" in t:
                par = t["parameters"]
                if not isinstance(par, dict):
                    raise invalid_type(tp + ".parameters", "an object (a JSON Schema)", par)
                if par.get("type", "object") != "object":
                    raise invalid_value(tp + ".parameters", "Invalid schema for function '%s': schema must be "
                                        "a JSON Schema of 'type: \"object\"', got 'type: \"%s\"'."
                                        % (t["name"], par.get("type")))
                if "properties" in par and not isinstance(par["properties"], dict):
                    raise invalid_type(tp + ".parameters.properties", "an object", par["properties"])
                if "required" in par:
                    check_str_list(par["required"], tp + ".parameters.required")
        elif kind == "mcp":
            check_keys(t, MCP_TOOL_KEYS, tp)
            if "server_label" not in t:
                raise missing(tp + ".server_label")
            if not isinstance(t["server_label"], str) or not t["server_label"]:
                raise invalid_type(tp + ".server_label", "a non-empty string", t["server_label"])
            if t["server_label"] in labels:
                raise invalid_value(tp + ".server_label", "Duplicate MCP server_label: '%s'." % t["server_label"])
            labels.add(t["server_label"])
            if not any(k in t for k in ("server_url", "connector_id", "tunnel_id")):
                raise missing(tp + ".server_url")
            for k in ("server_url", "tunnel_id", "authorization", "server_description"):
                if k in t and not isinstance(t[k], str):
                    raise invalid_type(tp + "." + k, "a string", t[k])
            if "server_url" in t and not re.match(r"^https?://", t["server_url"]):
                raise invalid_value(tp + ".server_url", "Invalid URL for '%s'." % (tp + ".server_url"))
            if "connector_id" in t and t["connector_id"] not in MCP_CONNECTORS:
                raise invalid_value(tp + ".connector_id", "Invalid value: %r. Supported values are: %s."
                                    % (t["connector_id"], ", ".join(sorted(MCP_CONNECTORS))))
            if t.get("headers") is not None:
                h = t["headers"]
                if not isinstance(h, dict):
                    raise invalid_type(tp + ".headers", "an object", h)
                for hk, hv in h.items():
                    if not isinstance(hv, str):
                        raise invalid_type("%s.headers.%s" % (tp, hk), "a string", hv)
            if t.get("allowed_tools") is not None:
                at = t["allowed_tools"]
                if isinstance(at, list):
                    check_str_list(at, tp + ".allowed_tools")
                else:
                    check_tool_filter(at, tp + ".allowed_tools")
            if t.get("require_approval") is not None:
                ra = t["require_approval"]
                if isinstance(ra, str):
                    if ra not in ("always", "never"):
                        raise invalid_value(tp + ".require_approval", "Invalid value: %r. Supported values "
                                            "are: 'always' and 'never'." % ra)
                elif isinstance(ra, dict):
                    check_keys(ra, {"always", "never"}, tp + ".require_approval")
                    for k in ra:
                        check_tool_filter(ra[k], "%s.require_approval.%s" % (tp, k))
                else:
                    raise invalid_type(tp + ".require_approval", "'always', 'never' or an object", ra)
            if "defer_loading" in t and not isinstance(t["defer_loading"], bool):
                raise invalid_type(tp + ".defer_loading", "a boolean", t["defer_loading"])
            if t.get("allowed_callers") is not None:
                check_str_list(t["allowed_callers"], tp + ".allowed_callers")
                for j, c in enumerate(t["allowed_callers"]):
                    if c not in ("direct", "programmatic"):
                        raise invalid_value("%s.allowed_callers[%d]" % (tp, j))
        else:
            raise invalid_value(tp + ".type", "Invalid value: %r. Supported values are: 'function' and "
                                              "'mcp'." % (kind,))
    return tools


def check_tool_choice(tc, path, tools):
    """'auto' | 'none' | 'required' | {type:'function', name} | {type:'mcp', server_label, name?}."""
    if isinstance(tc, str):
        if tc not in ("auto", "none", "required"):
            raise invalid_value(path, "Invalid value: %r. Supported values are: 'none', 'auto', and "
                                      "'required'." % tc)
        return
    if not isinstance(tc, dict):
        raise invalid_type(path, "a string or an object", tc)
    kind = tc.get("type")
    if kind == "function":
        check_keys(tc, {"type", "name"}, path)
        if not isinstance(tc.get("name"), str):
            raise missing(path + ".name")
        if not any(t.get("type") == "function" and t.get("name") == tc["name"] for t in tools):
            raise invalid_value(path, "Tool choice 'function' set, but no function named '%s' in 'tools'."
                                % tc["name"])
    elif kind == "mcp":
        check_keys(tc, {"type", "server_label", "name"}, path)
        if not isinstance(tc.get("server_label"), str):
            raise missing(path + ".server_label")
        if tc.get("name") is not None and not isinstance(tc["name"], str):
            raise invalid_type(path + ".name", "a string", tc["name"])
        if not any(t.get("type") == "mcp" and t.get("server_label") == tc["server_label"] for t in tools):
            raise invalid_value(path, "Tool choice 'mcp' set, but no MCP server labelled '%s' in 'tools'."
                                % tc["server_label"])
    else:
        raise invalid_value(path + ".type", "Invalid value: %r. Supported values are: 'function' and "
                                            "'mcp'." % (kind,))


def check_reasoning(r, path, model):
    if not isinstance(r, dict):
        raise invalid_type(path, "an object", r)
    check_keys(r, {"effort"}, path)
    if "effort" in r and r["effort"] not in REASONING_EFFORTS:
        raise invalid_value(path + ".effort", "Invalid value: %r. Supported values are: %s." % (
            r["effort"], ", ".join("'%s'" % e for e in REASONING_EFFORTS)))
    if model not in REASONING_MODELS:
        # the real answer is UNVERIFIED (acting §1.3); this fake refuses, as the types say
        # reasoning is for reasoning-capable models only
        raise ClientError("unsupported_parameter", "Unsupported parameter: '%s' is not supported with "
                          "this model (%s)." % (path, model), path)


def check_parallel_tool_calls(v, path, model):
    if not isinstance(v, bool):
        raise invalid_type(path, "a boolean", v)
    if model not in REASONING_MODELS:
        raise ClientError("unsupported_parameter", "Unsupported parameter: '%s' is not supported with "
                          "this model (%s)." % (path, model), path)


def check_truncation(t, path):
    if isinstance(t, str):
        if t not in ("auto", "disabled"):
            raise invalid_value(path, "Invalid value: %r. Supported values are: 'auto' and 'disabled'." % t)
        return
    if not isinstance(t, dict):
        raise invalid_type(path, "a string or an object", t)
    check_keys(t, {"type", "retention_ratio", "token_limits"}, path)
    if t.get("type") != "retention_ratio":
        raise invalid_value(path + ".type", "Invalid value: %r. Supported values are: 'retention_ratio'."
                            % (t.get("type"),))
    if "retention_ratio" not in t:
        raise missing(path + ".retention_ratio")
    rr = t["retention_ratio"]
    if not is_num(rr):
        raise invalid_type(path + ".retention_ratio", "a number", rr)
    if not 0.0 <= rr <= 1.0:
        raise invalid_value(path + ".retention_ratio", "Invalid '%s': expected a number between 0 and 1."
                            % (path + ".retention_ratio"))
    if "token_limits" in t:
        tl = t["token_limits"]
        if not isinstance(tl, dict):
            raise invalid_type(path + ".token_limits", "an object", tl)
        check_keys(tl, {"post_instructions"}, path + ".token_limits")
        if "post_instructions" in tl:
            pi = tl["post_instructions"]
            if not is_int(pi) or pi < 0:
                raise invalid_value(path + ".token_limits.post_instructions")


def check_max_output_tokens(m, path):
    if not (m == "inf" or (is_int(m) and 1 <= m <= 4096)):
        raise invalid_value(path, "Invalid '%s': expected an integer between 1 and 4096, or 'inf'." % path)


def check_transcription(tr, path):
    """AudioTranscription (acting §1.2): which fields each model takes."""
    if tr is None:
        return None
    if not isinstance(tr, dict):
        raise invalid_type(path, "an object", tr)
    check_keys(tr, TRANSCRIPTION_KEYS, path)
    model = tr.get("model")
    if model not in TRANSCRIBE_MODELS:
        raise invalid_value(path + ".model", "Invalid value: %r. Supported values are: %s." % (
            model, ", ".join("'%s'" % m for m in sorted(TRANSCRIBE_MODELS))))
    for k in ("language", "prompt"):
        if k in tr and not isinstance(tr[k], str):
            raise invalid_type(path + "." + k, "a string", tr[k])
    for k in ("languages", "keywords"):
        if k in tr:
            check_str_list(tr[k], path + "." + k)
            if model not in LANGUAGES_MODELS:
                raise ClientError("unsupported_parameter", "Unsupported parameter: '%s.%s' is only supported "
                                  "by gpt-transcribe and gpt-live-transcribe." % (path, k), path + "." + k)
    if "prompt" in tr and model == "gpt-realtime-whisper":
        raise ClientError("unsupported_parameter", "Unsupported parameter: '%s.prompt' is not supported with "
                          "gpt-realtime-whisper in Realtime sessions." % path, path + ".prompt")
    if "delay" in tr:
        if model != "gpt-realtime-whisper":
            raise ClientError("unsupported_parameter", "Unsupported parameter: '%s.delay' is only supported "
                              "with gpt-realtime-whisper." % path, path + ".delay")
        if tr["delay"] not in REASONING_EFFORTS:
            raise invalid_value(path + ".delay")
    return tr


def check_noise_reduction(nr, path, current):
    """{type: near_field|far_field, strength?: number} or null; omitted strength keeps the old one."""
    if nr is None:
        return None
    if not isinstance(nr, dict):
        raise invalid_type(path, "an object or null", nr)
    check_keys(nr, {"type", "strength"}, path)
    if "type" in nr and nr["type"] not in ("near_field", "far_field"):
        raise invalid_value(path + ".type", "Invalid value: %r. Supported values are: 'near_field' and "
                                            "'far_field'." % (nr["type"],))
    if "type" not in nr and current is None:
        raise missing(path + ".type")
    if "strength" in nr and (not is_num(nr["strength"]) or nr["strength"] < 0):
        raise invalid_value(path + ".strength")
    out = dict(current or {})
    out.update(nr)
    return out


def check_turn_detection(td, path, idle_range=IDLE_TIMEOUT_RANGE_MS):
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
        if not is_num(out["threshold"]) or not 0.0 <= out["threshold"] <= 1.0:
            raise invalid_value(path + ".threshold")
        for k in ("prefix_padding_ms", "silence_duration_ms"):
            if not is_int(out[k]) or out[k] < 0:
                raise invalid_value(path + "." + k)
        it = out["idle_timeout_ms"]
        if it is not None:
            if not is_int(it):
                raise invalid_type(path + ".idle_timeout_ms", "an integer or null", it)
            lo, hi = idle_range
            if not lo <= it <= hi:
                raise invalid_value(path + ".idle_timeout_ms", "Invalid '%s': expected an integer between %d "
                                    "and %d, or null." % (path + ".idle_timeout_ms", lo, hi))
    elif out["eagerness"] not in ("low", "medium", "high", "auto"):
        raise invalid_value(path + ".eagerness")
    for k in ("create_response", "interrupt_response"):
        if not isinstance(out[k], bool):
            raise invalid_value(path + "." + k)
    return out


def validate_session_update(sess, current, audio_produced, idle_range=IDLE_TIMEOUT_RANGE_MS):
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
    model = current["model"]
    if "model" in sess and sess["model"] != current["model"]:
        raise invalid_value("session.model", "Cannot update a session's model (was %r)." % current["model"])
    if "instructions" in sess and not isinstance(sess["instructions"], str):
        raise invalid_value("session.instructions")
    if "tools" in sess:
        new["tools"] = check_tools(sess["tools"], "session.tools")
    if "tool_choice" in sess:
        check_tool_choice(sess["tool_choice"], "session.tool_choice", new["tools"])
    elif isinstance(new.get("tool_choice"), dict) and "tools" in sess:
        check_tool_choice(new["tool_choice"], "session.tool_choice", new["tools"])
    if "reasoning" in sess:
        check_reasoning(sess["reasoning"], "session.reasoning", model)
        new["reasoning"] = sess["reasoning"]
    if "parallel_tool_calls" in sess:
        check_parallel_tool_calls(sess["parallel_tool_calls"], "session.parallel_tool_calls", model)
        new["parallel_tool_calls"] = sess["parallel_tool_calls"]
    if "truncation" in sess:
        check_truncation(sess["truncation"], "session.truncation")
    for k in ("instructions", "tool_choice", "tracing", "truncation", "prompt", "include"):
        if k in sess:
            new[k] = sess[k]
    if "output_modalities" in sess:
        om = sess["output_modalities"]
        if om not in (["audio"], ["text"]):
            raise invalid_value("session.output_modalities",
                                "Invalid value: %r. Supported values are: ['audio'] or ['text']." % (om,))
        new["output_modalities"] = om
    if "max_output_tokens" in sess:
        check_max_output_tokens(sess["max_output_tokens"], "session.max_output_tokens")
        new["max_output_tokens"] = sess["max_output_tokens"]
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
                new["audio"]["input"]["transcription"] = check_transcription(
                    inp["transcription"], "session.audio.input.transcription")
            if "noise_reduction" in inp:
                new["audio"]["input"]["noise_reduction"] = check_noise_reduction(
                    inp["noise_reduction"], "session.audio.input.noise_reduction",
                    current["audio"]["input"]["noise_reduction"])
            if "turn_detection" in inp:
                new["audio"]["input"]["turn_detection"] = check_turn_detection(
                    inp["turn_detection"], "session.audio.input.turn_detection", idle_range)
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
                if not is_num(sp) or not 0.25 <= sp <= 1.5:
                    raise invalid_value("session.audio.output.speed")
                new["audio"]["output"]["speed"] = sp
    return new


# ======================================================================================
# One response
# ======================================================================================

def normalize_plan(entry):
    """One response plan (script entry or cue): {"text"} | {"tool", "arguments", "say"} |
    {"mcp": {server_label, name, arguments}, "output"?, "error"?}. Raises ValueError."""
    if not isinstance(entry, dict):
        raise ValueError("a script entry must be an object, got %r" % (entry,))
    kinds = [k for k in ("text", "tool", "mcp") if k in entry]
    if len(kinds) != 1:
        raise ValueError("a script entry needs exactly one of 'text', 'tool', 'mcp': %r" % (entry,))
    kind = kinds[0]
    if kind == "text":
        if set(entry) != {"text"} or not isinstance(entry["text"], str):
            raise ValueError("a text entry is {\"text\": \"...\"}: %r" % (entry,))
        return {"text": entry["text"]}
    if kind == "tool":
        extra = set(entry) - {"tool", "arguments", "say"}
        if extra:
            raise ValueError("unknown keys %s in tool entry" % sorted(extra))
        if not isinstance(entry["tool"], str) or not entry["tool"]:
            raise ValueError("'tool' must be a function name")
        args = entry.get("arguments", {})
        if not isinstance(args, (dict, str)):
            raise ValueError("'arguments' must be an object (or a JSON text)")
        if "say" in entry and not isinstance(entry["say"], str):
            raise ValueError("'say' must be a string")
        out = {"tool": entry["tool"], "arguments": args}
        if entry.get("say"):
            out["say"] = entry["say"]
        return out
    extra = set(entry) - {"mcp", "output", "error", "approval_request_id"}
    if extra:
        raise ValueError("unknown keys %s in mcp entry" % sorted(extra))
    m = entry["mcp"]
    if not isinstance(m, dict) or not isinstance(m.get("server_label"), str) or not isinstance(m.get("name"), str):
        raise ValueError("'mcp' is {\"server_label\": L, \"name\": N, \"arguments\": {...}}")
    if set(m) - {"server_label", "name", "arguments"}:
        raise ValueError("unknown keys %s in 'mcp'" % sorted(set(m) - {"server_label", "name", "arguments"}))
    if not isinstance(m.get("arguments", {}), (dict, str)):
        raise ValueError("'mcp.arguments' must be an object (or a JSON text)")
    for k in ("output", "error"):
        if k in entry and not isinstance(entry[k], str):
            raise ValueError("'%s' must be a string" % k)
    out = {"mcp": {"server_label": m["server_label"], "name": m["name"], "arguments": m.get("arguments", {})}}
    for k in ("output", "error", "approval_request_id"):
        if k in entry:
            out[k] = entry[k]
    return out


def args_text(args):
    return args if isinstance(args, str) else json.dumps(args, separators=(",", ":"))


def split_pieces(text, rng):
    """JSON text in irregular pieces of 3-12 characters (at least two when possible)."""
    pieces = []
    pos = 0
    while pos < len(text):
        n = rng.randint(3, 12)
        if len(pieces) == 0 and n >= len(text) and len(text) > 1:
            n = max(1, len(text) // 2)
        pieces.append(text[pos:pos + n])
        pos += n
    return pieces or [""]


def mcp_tool_matches(flt, name, tool_info):
    """McpToolFilter match: the name is in tool_names, or read_only equals the tool's readOnlyHint."""
    if not isinstance(flt, dict):
        return False
    if name in (flt.get("tool_names") or []):
        return True
    if "read_only" in flt and tool_info is not None:
        hint = bool((tool_info.get("annotations") or {}).get("readOnlyHint"))
        return hint == flt["read_only"]
    return False


def mcp_needs_approval(tool_cfg, name, tool_info):
    """'never' -> no; 'always' or absent/null -> yes (the Responses API default is to ask);
    object -> 'never' filter match -> no, else yes ('always' wins when both match)."""
    if tool_cfg is None:
        return False
    ra = tool_cfg.get("require_approval")
    if ra == "never":
        return False
    if isinstance(ra, dict):
        if mcp_tool_matches(ra.get("always"), name, tool_info):
            return True
        if mcp_tool_matches(ra.get("never"), name, tool_info):
            return False
    return True


class Response:
    def __init__(self, sess, trigger, conversation="auto", modalities=None, plan=None, tools=None):
        self.sess = sess
        self.id = C.openai_id("resp_")
        self.trigger = trigger
        self.conversation = conversation
        self.conversation_id = sess.conversation_id
        self.modalities = modalities or sess.config["output_modalities"]
        self.plan = plan
        self.tools = tools if tools is not None else sess.config["tools"]
        self.kind = "reply" if plan is None or "text" in plan else ("tool" if "tool" in plan else "mcp")
        # ids made up front so /_fake/cue can answer with them
        self.msg_item_id = C.openai_id("item_") if self.kind == "reply" or \
            (self.kind == "tool" and plan.get("say")) else None
        self.fc_item_id = C.openai_id("item_") if self.kind == "tool" else None
        self.call_id = C.openai_id("call_", 16) if self.kind == "tool" else None
        self.mcp_item_id = None
        if self.kind == "mcp":
            approval = plan.get("approval_request_id") is None and mcp_needs_approval(
                self.mcp_tool_cfg(), plan["mcp"]["name"], sess.fake.mcp_tool_info(plan["mcp"]["name"]))
            self.mcp_approval = approval
            self.mcp_item_id = C.openai_id("mcpr_" if approval else "mcp_")
        self.item_id = self.msg_item_id or self.fc_item_id or self.mcp_item_id
        self.status = "in_progress"
        self.status_details = None
        self.sent_audio = bytearray()       # mu-law bytes, whatever the output format
        self.transcript = ""
        self.arguments = ""                 # function/MCP call arguments streamed so far
        self.output = []                    # final output items
        self.stop = asyncio.Event()
        self.stop_reason = None
        self.task = None
        self.started_ms = sess.now_ms()
        self.audio_deltas_sent = 0
        self.drop_after = None              # (N, mode) when this response drops the connection
        self.dropped = False
        self.usage_sent = None              # response.done's usage, once over
        self.rng = random.Random(sess.fake.seed * 7919 + len(sess.responses))

    def mcp_tool_cfg(self):
        label = self.plan["mcp"]["server_label"]
        return next((t for t in self.tools if t.get("type") == "mcp" and t.get("server_label") == label), None)

    def audio_ms(self):
        return len(self.sent_audio) // 8

    def summary(self):
        return {"id": self.id, "item_id": self.item_id, "trigger": self.trigger, "status": self.status,
                "status_details": self.status_details, "audio_bytes_sent": len(self.sent_audio),
                "audio_b64": C.b64(self.sent_audio), "transcript": self.transcript,
                "started_ms": self.started_ms, "plan": self.plan, "call_id": self.call_id,
                "audio_deltas_sent": self.audio_deltas_sent, "dropped": self.dropped,
                "usage": self.usage_sent,
                "output": [{"id": it["id"], "type": it["type"], "status": it.get("status")} for it in self.output]}

    def item(self, status, final):
        audio_mode = "audio" in self.modalities
        content = []
        if final:
            content = [{"type": "output_audio", "transcript": self.transcript}] if audio_mode else \
                [{"type": "output_text", "text": self.transcript}]
        return {"id": self.msg_item_id, "object": "realtime.item", "type": "message", "status": status,
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
            body["usage"] = self.usage()
        return body

    def usage(self):
        """response.done's usage (docs/protocols.md, Realtime): what the response took, by kind;
        fixed once the response is over, so the summary shows what response.done said."""
        if self.usage_sent is None:
            audio_tokens = self.audio_ms() // 50
            text_tokens = max(1, len(self.transcript.split()) + len(self.arguments) // 4)
            inp = 120 + self.sess.appended_len() // 400
            self.usage_sent = {
                "total_tokens": inp + audio_tokens + text_tokens, "input_tokens": inp,
                "output_tokens": audio_tokens + text_tokens,
                "input_token_details": {"text_tokens": 100, "audio_tokens": inp - 100, "image_tokens": 0,
                                        "cached_tokens": 0,
                                        "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0,
                                                                  "image_tokens": 0}},
                "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens}}
        return self.usage_sent

    async def pause(self, seconds):
        """Wait, but wake up at once when the response is stopped."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def run(self):
        s = self.sess
        await s.send("response.created", response=self.resource([]))
        idx = 0
        if self.msg_item_id:
            text = self.plan.get("text") if self.kind == "reply" and self.plan else \
                (self.plan.get("say") if self.plan else None)
            self.output.append(await self.run_message(idx, s.fake.reply_text if text is None else text))
            idx += 1
        if self.kind == "tool" and not self.stop.is_set():
            self.output.append(await self.run_function_call(idx))
        elif self.kind == "mcp" and not self.stop.is_set():
            if self.mcp_approval:
                self.output.append(await self.run_mcp_approval_request(idx))
            else:
                self.output.append(await self.run_mcp_call(idx))
        if self.drop_after is not None and not self.dropped:
            s.warning("drop_not_reached", "drop_after_deltas=%d was taken by response %s, which ended after %d "
                      "audio deltas: no drop" % (self.drop_after[0], self.id, self.audio_deltas_sent),
                      response_id=self.id)
        if self.dropped:
            pass                                # status "dropped", set by Session.drop
        elif self.stop.is_set():
            self.status = "cancelled"
            self.status_details = {"type": "cancelled", "reason": self.stop_reason}
        else:
            self.status = "completed"
        await s.send("response.done", response=self.resource(self.output))
        await s.send("rate_limits.updated", rate_limits=RATE_LIMITS)
        s.log("response %s %s (%s, %d ms audio) %s" % (self.id, self.status, self.kind, self.audio_ms(),
                                                      self.status_details or ""))
        if s.active is self:
            s.active = None
            s.arm_idle(self)

    async def add_to_conversation(self, item, audio_owner=None):
        """conversation.item.added for an output item; returns its previous_item_id."""
        if self.conversation != "auto":
            return None
        s = self.sess
        prev = s.last_item_id()
        s.add_item(copy.deepcopy(item), audio_owner=audio_owner)
        await s.send("conversation.item.added", previous_item_id=prev, item=item)
        return prev

    async def finish_in_conversation(self, prev, item):
        if self.conversation == "auto":
            self.sess.replace_item(copy.deepcopy(item))
            await self.sess.send("conversation.item.done", previous_item_id=prev, item=item)

    async def run_message(self, idx, text):
        """An assistant message item with audio (or text) content: docs/protocols.md, Realtime §5.1."""
        s = self.sess
        fake = s.fake
        audio_mode = "audio" in self.modalities
        rng = self.rng
        ulaw = fake.reply_audio
        await s.send("response.output_item.added", response_id=self.id, output_index=idx,
                     item=self.item("in_progress", False))
        prev = await self.add_to_conversation(self.item("in_progress", False), audio_owner=self)
        part_type = "audio" if audio_mode else "text"
        part = {"type": "audio", "transcript": ""} if audio_mode else {"type": "text", "text": ""}
        await s.send("response.content_part.added", response_id=self.id, item_id=self.msg_item_id,
                     output_index=idx, content_index=0, part=part)
        ids = {"response_id": self.id, "item_id": self.msg_item_id, "output_index": idx, "content_index": 0}
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
            if audio_mode and self.drop_due():
                break
            if self.stop.is_set():
                break
            if audio_mode:
                await s.send("response.output_audio.delta", **ids,
                             delta=C.b64(C.ulaw_to_format(chunk, fmt_type)))
                self.sent_audio.extend(chunk)
                self.audio_deltas_sent += 1
                s.audio_produced = True
                if self.drop_due():
                    break
            for w in per_chunk[i]:
                self.transcript += w
                await s.send("response.output_audio_transcript.delta" if audio_mode else
                             "response.output_text.delta", **ids, delta=w)
            await self.pause((len(chunk) / 8000.0 if audio_mode else 0.05) / max(0.1, fake.pace))
        item_status = "incomplete" if self.stop.is_set() else "completed"
        if audio_mode:
            await s.send("response.output_audio.done", **ids)
            await s.send("response.output_audio_transcript.done", **ids, transcript=self.transcript)
            done_part = {"type": "audio", "transcript": self.transcript}
        else:
            await s.send("response.output_text.done", **ids, text=self.transcript)
            done_part = {"type": "text", "text": self.transcript}
        await s.send("response.content_part.done", **ids, part=done_part)
        final = self.item(item_status, True)
        await s.send("response.output_item.done", response_id=self.id, output_index=idx, item=final)
        await self.finish_in_conversation(prev, final)
        s.log("message %s %s (%s, %d ms audio)" % (self.msg_item_id, item_status, part_type, self.audio_ms()))
        return final

    def drop_due(self):
        """drop_after_deltas: once N audio deltas are out, the connection goes (Session.drop)."""
        if self.drop_after is None or self.dropped or self.audio_deltas_sent < self.drop_after[0]:
            return False
        self.sess.drop(self.drop_after[1], "drop_after_deltas", self)
        return True

    async def stream_arguments(self, text, event, ids):
        """Argument deltas spread over tool_args_ms; stops early (partial JSON) on cancel."""
        pieces = split_pieces(text, self.rng)
        gap = self.sess.fake.tool_args_ms / 1000.0 / max(1, len(pieces) - 1) if len(pieces) > 1 else 0
        for i, piece in enumerate(pieces):
            if i:
                await self.pause(gap)
            if self.stop.is_set():
                break
            await self.sess.send(event, **ids, delta=piece)
            self.arguments += piece

    async def run_function_call(self, idx):
        """acting §2.2 rows 3-8: a function_call item, argument deltas, no content parts."""
        s = self.sess
        name = self.plan["tool"]
        full = args_text(self.plan["arguments"])
        names = [t.get("name") for t in self.tools if t.get("type") == "function"]
        if name not in names:
            s.warning("scripted_tool_not_declared", "the script calls %r but the session's tools are %s: the "
                      "real model could not call it" % (name, names))
        if s.config.get("tool_choice") == "none":
            s.warning("scripted_tool_with_tool_choice_none", "the script calls %r while tool_choice is "
                      "'none'" % name)
        base = {"id": self.fc_item_id, "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "name": name, "call_id": self.call_id, "arguments": ""}
        rec = {"call_id": self.call_id, "name": name, "arguments": "", "status": "in_progress",
               "response_id": self.id, "item_id": self.fc_item_id, "at_ms": s.now_ms(), "done_ms": None,
               "in_conversation": self.conversation == "auto", "output_given": False}
        s.tool_calls.append(rec)
        await s.send("response.output_item.added", response_id=self.id, output_index=idx, item=base)
        prev = await self.add_to_conversation(base)
        ids = {"response_id": self.id, "item_id": self.fc_item_id, "output_index": idx, "call_id": self.call_id}
        await self.stream_arguments(full, "response.function_call_arguments.delta", ids)
        status = "incomplete" if self.stop.is_set() else "completed"
        final = dict(base, status=status, arguments=self.arguments)
        await s.send("response.function_call_arguments.done", **ids, name=name, arguments=self.arguments)
        await self.finish_in_conversation(prev, final)
        await s.send("response.output_item.done", response_id=self.id, output_index=idx, item=final)
        rec.update(arguments=self.arguments, status=status, done_ms=s.now_ms())
        s.log("function_call %s %s(%s) %s" % (self.call_id, name, self.arguments, status))
        return final

    async def run_mcp_call(self, idx):
        """acting §3.3: an mcp_call item run by the (fake) MCP server inside the response."""
        s = self.sess
        spec = self.plan["mcp"]
        full = args_text(spec["arguments"])
        if self.mcp_tool_cfg() is None:
            s.warning("scripted_mcp_not_declared", "the script calls MCP server %r, which is not among the "
                      "session's tools" % spec["server_label"])
        base = {"id": self.mcp_item_id, "type": "mcp_call", "server_label": spec["server_label"],
                "name": spec["name"], "arguments": "", "approval_request_id": self.plan.get("approval_request_id"),
                "output": None, "error": None}
        rec = {"item_id": self.mcp_item_id, "server_label": spec["server_label"], "name": spec["name"],
               "arguments": "", "output": None, "error": None, "status": "in_progress", "response_id": self.id,
               "approval_request_id": base["approval_request_id"], "at_ms": s.now_ms()}
        s.mcp_calls.append(rec)
        await s.send("response.output_item.added", response_id=self.id, output_index=idx, item=base)
        prev = await self.add_to_conversation(base)
        ids = {"response_id": self.id, "item_id": self.mcp_item_id, "output_index": idx}
        await self.stream_arguments(full, "response.mcp_call_arguments.delta", ids)
        await s.send("response.mcp_call_arguments.done", **ids, arguments=self.arguments)
        final = dict(base, arguments=self.arguments)
        if self.stop.is_set():
            rec["status"] = "incomplete"
        else:
            await s.send("response.mcp_call.in_progress", item_id=self.mcp_item_id, output_index=idx)
            await asyncio.sleep(s.fake.mcp_call_ms / 1000.0)   # the server-side call is not interrupted
            if "error" in self.plan:
                final["error"] = {"type": "tool_execution_error", "message": self.plan["error"]}
                await s.send("response.mcp_call.failed", item_id=self.mcp_item_id, output_index=idx)
                rec["status"] = "failed"
            else:
                final["output"] = self.plan.get("output", s.fake.mcp_output)
                await s.send("response.mcp_call.completed", item_id=self.mcp_item_id, output_index=idx)
                rec["status"] = "completed"
        await self.finish_in_conversation(prev, final)
        await s.send("response.output_item.done", response_id=self.id, output_index=idx, item=final)
        rec.update(arguments=self.arguments, output=final["output"], error=final["error"], done_ms=s.now_ms())
        s.log("mcp_call %s %s.%s %s" % (self.mcp_item_id, spec["server_label"], spec["name"], rec["status"]))
        return final

    async def run_mcp_approval_request(self, idx):
        """require_approval matched: the response ends with an mcp_approval_request item."""
        s = self.sess
        spec = self.plan["mcp"]
        item = {"id": self.mcp_item_id, "type": "mcp_approval_request", "server_label": spec["server_label"],
                "name": spec["name"], "arguments": args_text(spec["arguments"])}
        s.violation("approval required: MCP server %r tool %r has require_approval %r (use 'never')" % (
            spec["server_label"], spec["name"], (self.mcp_tool_cfg() or {}).get("require_approval")))
        s.mcp_calls.append({"item_id": None, "server_label": spec["server_label"], "name": spec["name"],
                            "arguments": item["arguments"], "output": None, "error": None,
                            "status": "approval_requested", "response_id": self.id,
                            "approval_request_id": self.mcp_item_id, "at_ms": s.now_ms()})
        s.approval_plans[self.mcp_item_id] = self.plan
        await s.send("response.output_item.added", response_id=self.id, output_index=idx, item=item)
        prev = await self.add_to_conversation(item)
        await self.finish_in_conversation(prev, item)
        await s.send("response.output_item.done", response_id=self.id, output_index=idx, item=item)
        return item


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
        self.max_session_seconds = fake.max_session_seconds or None   # the limit this session got
        self.config = default_session(self.model, self.max_session_seconds)
        # script_per_session: this session plays its own copy of the script
        self.script = copy.deepcopy(fake.script) if fake.script_per_session else None
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
        self.user_texts = []
        self.truncations = []
        self.speech = []
        self.warnings = []
        self.tool_calls = []
        self.function_outputs = []
        self.mcp_calls = []
        self.mcp_list_tools = []
        self.mcp_approvals = []
        self.pending_approved = []      # approved MCP calls the next response runs
        self.approval_plans = {}        # mcp_approval_request item id -> the plan that asked
        self.idle_timeouts = []
        self.idle_anchor = None         # appended byte offset where the last response "finished playing"
        self.last_speech_end = 0
        if self.model in DEPRECATED_MODELS:
            self.warning("deprecated_model", "session model %s is announced for shutdown (%s)" % (
                self.model, DEPRECATED_MODELS[self.model] or "date not in the types; beta-era preview name"),
                model=self.model, where="url", shutdown_date=DEPRECATED_MODELS[self.model])
        self.audio_produced = False
        self.close_code = None
        self.close_reason = None
        self.closed_ms = None
        # how the session ended (fault injection, expiry, bad key...): see end_with_error / drop
        self.ending = False             # the fake is ending this session: nothing more is sent
        self.ended_by = None
        self.sent_close = None          # (code, reason) the fake closed with; (1006, "") = cut
        self.dropped_by_fake = False
        self.drop_rec = None
        self.fatal_rec = None
        # history given by the client (acting §7.6) and when audio began
        self.client_items = []
        self.first_append_ms = None
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

    def warning(self, kind, msg, **extra):
        """Not a protocol error, but worth a look (deprecated model, scripted tool not declared...)."""
        rec = {"kind": kind, "message": msg}
        rec.update(extra)
        if rec not in self.warnings:
            self.warnings.append(rec)
            log("%s WARNING %s: %s", self.config["id"], kind, msg)

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

    async def _write(self, etype, fields):
        """Send one server event; the caller holds self.lock."""
        ev = {"type": etype, "event_id": C.openai_id("event_")}
        ev.update(fields)
        self.server_event_types.append(etype)
        try:
            await self.ws.send(json.dumps(ev, separators=(",", ":")))
        except websockets.ConnectionClosed:
            pass

    async def send(self, etype, **fields):
        async with self.lock:
            if self.ending:     # the fake is closing or has cut this session: the event is not sent
                return
            await self._write(etype, fields)

    def stop_active(self, reason):
        if self.active is not None and not self.active.stop.is_set():
            self.active.stop_reason = reason
            self.active.stop.set()

    async def end_with_error(self, trigger, body, close_code, close_reason, ended_by="fatal"):
        """An error that ends the session (acting §7.2, §7.5): the error event is the last one
        sent, then the close frame. Returns False if the session was already ending."""
        async with self.lock:
            if self.ending:
                return False
            self.errors.append(body)
            await self._write("error", {"error": body})
            self.ending = True
        self.ended_by = ended_by
        self.sent_close = (close_code, close_reason)
        self.fatal_rec = {"code": body["code"], "type": body["type"], "message": body["message"],
                          "close_code": close_code, "close_reason": close_reason, "trigger": trigger,
                          "at_ms": self.now_ms()}
        self.log("ending the session: error %s.%s, close %d %r (%s)" % (body["type"], body["code"], close_code,
                                                                         close_reason, trigger))
        self.stop_active("session_ended")
        await self.ws.close(close_code, close_reason)
        return True

    def drop(self, mode, trigger, resp=None):
        """Cut the connection now: 'abrupt' = no close frame (the client sees 1006), '1011' =
        close frame 1011 'internal error'. Nothing more is sent. Returns the closing task, or
        None if the session was already ending."""
        if self.ending:
            return None
        self.ending = True
        self.ended_by = "drop"
        self.dropped_by_fake = True
        resp = resp or self.active
        if resp is not None:
            resp.dropped = True
            resp.status = "dropped"
            resp.status_details = None
            resp.stop_reason = "connection_dropped"
            resp.stop.set()
        self.sent_close = (1006, "") if mode == "abrupt" else (1011, SERVER_ERROR_CLOSE_REASON)
        self.drop_rec = {"mode": mode, "trigger": trigger, "at_ms": self.now_ms(),
                         "response_id": resp.id if resp is not None else None,
                         "audio_deltas_sent": resp.audio_deltas_sent if resp is not None else None}
        self.log("DROPPING the connection (%s, %s)%s" % (mode, trigger, " during %s after %d audio deltas" % (
            resp.id, resp.audio_deltas_sent) if resp is not None else ""))
        if mode == "abrupt":
            return self.fake.background(self.cut())
        return self.fake.background(self.ws.close(1011, SERVER_ERROR_CLOSE_REASON))

    async def cut(self):
        """Close the TCP connection without a close frame, once what was already sent has left
        the process (so the client gets every event counted as sent, then EOF)."""
        transports = [self.ws.transport]
        inner = getattr(getattr(self.ws.transport, "_ssl_protocol", None), "_transport", None)
        if inner is not None:
            transports.append(inner)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                if not any(t.get_write_buffer_size() for t in transports):
                    break
            except (AttributeError, RuntimeError):
                break
            await asyncio.sleep(0.005)
        self.ws.transport.abort()

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
            "ended_by": self.ended_by, "dropped_by_fake": self.dropped_by_fake, "drop": self.drop_rec,
            "fatal": self.fatal_rec, "max_session_seconds": self.max_session_seconds,
            "client_items": self.client_items, "first_append_ms": self.first_append_ms,
            "responses": [r.summary() for r in self.responses],
            "user_transcripts": self.user_transcripts, "speech": self.speech,
            "truncations": self.truncations,
            "items": [dict({"id": it["id"], "type": it["type"], "role": it.get("role"), "status": it.get("status")},
                           **{k: it[k] for k in ("call_id", "name", "server_label") if k in it})
                      for it in self.items],
            "warnings": self.warnings, "tools": self.config["tools"], "tool_calls": self.tool_calls,
            "function_outputs": self.function_outputs, "mcp_calls": self.mcp_calls,
            "mcp_list_tools": self.mcp_list_tools, "mcp_approvals": self.mcp_approvals,
            "user_texts": self.user_texts, "idle_timeouts": self.idle_timeouts,
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
                    self.last_speech_end = self.last_voiced_end
                    self.log("speech stopped at %d ms" % end_ms)
                    await self.send("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id)
                    await self.commit(item_id, pos + C.FRAME_BYTES)
                    if td["create_response"]:
                        if self.active is None:
                            await self.start_response("server_vad")
                        else:
                            self.log("VAD turn ended while %s is active: no new response" % self.active.id)
            end = pos + C.FRAME_BYTES
            if (td["type"] == "server_vad" and td.get("idle_timeout_ms") and not self.in_speech
                    and self.active is None and self.idle_anchor is not None):
                start = max(self.idle_anchor, self.last_speech_end)
                if end - start >= td["idle_timeout_ms"] * 8:
                    await self.idle_timeout(start, end)

    def arm_idle(self, resp):
        """idle_timeout_ms counts from response.done + the response's audio duration (types), here
        in appended-audio time: the appended offset at response.done plus the audio bytes sent."""
        self.idle_anchor = len(self.appended) + len(resp.sent_audio)

    async def idle_timeout(self, start, end):
        """acting §5.3: timeout_triggered, commit of the silent audio, then a response."""
        item_id = C.openai_id("item_")
        self.idle_anchor = None
        self.voiced_run = 0
        rec = {"item_id": item_id, "audio_start_ms": start // 8, "audio_end_ms": end // 8, "at_ms": self.now_ms(),
               "response_id": None}
        self.idle_timeouts.append(rec)
        self.log("idle timeout: no speech from %d to %d ms" % (start // 8, end // 8))
        await self.send("input_audio_buffer.timeout_triggered", audio_start_ms=start // 8, audio_end_ms=end // 8,
                        item_id=item_id)
        await self.commit(item_id, end, transcript="")
        resp = await self.start_response("idle_timeout")
        rec["response_id"] = resp.id

    async def commit(self, item_id, end_byte, transcript=None):
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
            if transcript is None:
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
    async def start_response(self, trigger, conversation="auto", modalities=None, plan=None, tools=None):
        return self.launch(trigger, conversation, modalities, plan, tools)

    def launch(self, trigger, conversation="auto", modalities=None, plan=None, tools=None):
        """Start a response. Its plan comes from (in order) the argument (a cue), an approved MCP
        call waiting to run, the fake's script queue, or else it is the default reply."""
        if plan is None and self.pending_approved:
            plan = self.pending_approved.pop(0)
        queue = self.script if self.script is not None else self.fake.script
        if plan is None and queue:
            plan = queue.pop(0)
        resp = Response(self, trigger, conversation, modalities, plan, tools)
        resp.drop_after = self.fake.claim_drop(self, resp)
        self.responses.append(resp)
        if conversation == "auto":
            self.active = resp
            self.idle_anchor = None
        self.log("response %s started (%s, plan %s)" % (resp.id, trigger, plan))
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
        old_labels = {t.get("server_label") for t in self.config["tools"] if t.get("type") == "mcp"}
        self.config = validate_session_update(ev["session"], self.config, self.audio_produced,
                                              self.fake.idle_timeout_range_ms)
        self.update_accepted = True
        tr = self.config["audio"]["input"]["transcription"]
        if tr is not None and tr.get("model") in DEPRECATED_TRANSCRIBE:
            self.warning("deprecated_model", "transcription model %s is announced for shutdown (%s)" % (
                tr["model"], DEPRECATED_TRANSCRIBE[tr["model"]]), model=tr["model"],
                where="session.audio.input.transcription.model", shutdown_date=DEPRECATED_TRANSCRIBE[tr["model"]])
        if self.config.get("tool_choice") == "required":
            self.warning("tool_choice_required", "tool_choice 'required' on the session forces a tool call in "
                         "every response, so the model never speaks a result (acting §2.1)")
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
        for t in self.config["tools"]:
            if t.get("type") == "mcp" and t["server_label"] not in old_labels:
                self.spawn(self.list_mcp_tools(t))

    async def list_mcp_tools(self, tool_cfg):
        """acting §3.3 (order per this fake's brief; UNVERIFIED): mcp_list_tools.in_progress,
        conversation.item.added (tools []), mcp_list_tools.completed|failed, conversation.item.done."""
        fake = self.fake
        label = tool_cfg["server_label"]
        tools = copy.deepcopy(fake.mcp_tools)
        allowed = tool_cfg.get("allowed_tools")
        if isinstance(allowed, list):
            tools = [t for t in tools if t.get("name") in allowed]
        elif isinstance(allowed, dict):
            tools = [t for t in tools if mcp_tool_matches(allowed, t.get("name"), t)]
        item_id = C.openai_id("mcpl_")
        item = {"id": item_id, "type": "mcp_list_tools", "server_label": label, "tools": []}
        prev = self.last_item_id()
        self.add_item(copy.deepcopy(item))
        rec = {"item_id": item_id, "server_label": label, "status": "in_progress", "tools": [], "at_ms": self.now_ms()}
        self.mcp_list_tools.append(rec)
        await self.send("mcp_list_tools.in_progress", item_id=item_id)
        await self.send("conversation.item.added", previous_item_id=prev, item=item)
        await asyncio.sleep(fake.mcp_call_ms / 1000.0)
        if fake.mcp_list_fail:
            rec["status"] = "failed"
            await self.send("mcp_list_tools.failed", item_id=item_id)
        else:
            item["tools"] = tools
            self.replace_item(copy.deepcopy(item))
            rec.update(status="completed", tools=[t.get("name") for t in tools])
            await self.send("mcp_list_tools.completed", item_id=item_id)
        await self.send("conversation.item.done", previous_item_id=prev, item=item)
        self.log("mcp_list_tools %s for %s: %s" % (item_id, label, rec["status"]))

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
        if self.first_append_ms is None:
            self.first_append_ms = self.now_ms()
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

    def find_call(self, call_id):
        return next((it for it in self.items if it.get("type") == "function_call" and it.get("call_id") == call_id),
                    None)

    async def on_conversation_item_create(self, ev):
        item = ev.get("item")
        if not isinstance(item, dict):
            raise ClientError("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        t = item.get("type")
        # exact field sets of the types' ConversationItem union (client-creatable members)
        allowed = {"message": {"id", "type", "role", "content", "status", "object"},
                   "function_call_output": {"id", "type", "call_id", "output", "status", "object"},
                   "function_call": {"id", "type", "call_id", "name", "arguments", "status", "object"},
                   "mcp_approval_response": {"id", "type", "approval_request_id", "approve", "reason"}}
        if t not in allowed:
            raise invalid_value("item.type", "Invalid value: %r. Supported values are: 'message', "
                                             "'function_call', 'function_call_output' and "
                                             "'mcp_approval_response'." % (t,))
        for k in item:
            if k not in allowed[t]:
                raise unknown_param("item." + k)
        if "id" in item:
            if not isinstance(item["id"], str):
                raise invalid_type("item.id", "a string", item["id"])
            if self.find_item(item["id"]) is not None:
                raise invalid_value("item.id", "Item with id '%s' already exists." % item["id"])
        if "object" in item and item["object"] != "realtime.item":
            raise invalid_value("item.object", "Invalid value: %r. Supported values are: 'realtime.item'."
                                % (item["object"],))
        if "status" in item and item["status"] not in ITEM_STATUSES:
            raise invalid_value("item.status", "Invalid value: %r. Supported values are: 'completed', "
                                               "'incomplete', and 'in_progress'." % (item["status"],))
        user_text = None
        item_text = None
        if t == "message":
            role = item.get("role")
            ok_types = {"user": {"input_text", "input_audio", "input_image"}, "system": {"input_text"},
                        "assistant": {"output_text"}}
            part_keys = {"user": {"type", "text", "audio", "transcript", "image_url", "detail"},
                         "system": {"type", "text"}, "assistant": {"type", "text", "audio", "transcript"}}
            if role not in ok_types:
                raise invalid_value("item.role")
            content = item.get("content")
            if not isinstance(content, list) or not content:
                raise ClientError("missing_required_parameter", "Missing required parameter: 'item.content'.",
                                  "item.content")
            texts = []
            for i, c in enumerate(content):
                ctype = c.get("type") if isinstance(c, dict) else c
                if role == "assistant" and ctype in ("output_audio", "audio"):
                    # the types' create event: "it cannot populate assistant audio messages" (acting §7.6)
                    raise invalid_value("item.content[%d].type" % i, "Invalid value: %r. Assistant messages "
                                        "created by the client cannot contain audio; use 'output_text'." % (ctype,))
                if not isinstance(c, dict) or ctype not in ok_types[role]:
                    raise invalid_value("item.content[%d].type" % i, "Invalid value: %r for %s %s message. "
                                        "Supported values are: %s." % (
                                            ctype, "an" if role[0] in "aeiou" else "a", role,
                                            ", ".join("'%s'" % x for x in sorted(ok_types[role]))))
                check_keys(c, part_keys[role], "item.content[%d]" % i)
                if role == "assistant" and "audio" in c:
                    raise invalid_value("item.content[%d].audio" % i, "Assistant messages created by the "
                                        "client cannot contain audio; use 'output_text'.")
                if c["type"] in ("input_text", "output_text"):
                    if not isinstance(c.get("text"), str):
                        raise invalid_type("item.content[%d].text" % i, "a string", c.get("text"))
                    texts.append(c["text"])
            if role == "user" and texts:
                user_text = " ".join(texts)
            item_text = " ".join(texts) if texts else None
        elif t == "function_call":
            for k in ("name", "arguments"):
                if k not in item:
                    raise missing("item." + k)
                if not isinstance(item[k], str):
                    raise invalid_type("item." + k, "a string", item[k])
            if "call_id" in item and not isinstance(item["call_id"], str):
                raise invalid_type("item.call_id", "a string", item["call_id"])
        elif t == "function_call_output":
            # acting §2.3: call_id and output (a string) required; the call must exist
            for k in ("call_id", "output"):
                if k not in item:
                    raise missing("item." + k)
            if not isinstance(item["call_id"], str):
                raise invalid_type("item.call_id", "a string", item["call_id"])
            if not isinstance(item["output"], str):
                raise invalid_type("item.output", "a string", item["output"])
            if self.find_call(item["call_id"]) is None:
                raise invalid_value("item.call_id", "No tool call found for function call output with call_id "
                                                    "'%s'." % item["call_id"])
        elif t == "mcp_approval_response":
            if "approval_request_id" not in item:
                raise missing("item.approval_request_id")
            if "approve" not in item:
                raise missing("item.approve")
            if not isinstance(item["approve"], bool):
                raise invalid_type("item.approve", "a boolean", item["approve"])
            if item.get("reason") is not None and not isinstance(item["reason"], str):
                raise invalid_type("item.reason", "a string", item["reason"])
            req = self.find_item(item["approval_request_id"]) if isinstance(item["approval_request_id"], str) \
                else None
            if req is None or req.get("type") != "mcp_approval_request":
                raise invalid_value("item.approval_request_id", "No MCP approval request with id '%s'."
                                    % (item["approval_request_id"],))
        prev_req = ev.get("previous_item_id")
        if prev_req is not None and prev_req != "root" and self.find_item(prev_req) is None:
            raise invalid_value("previous_item_id", "Previous item with id '%s' not found." % prev_req)
        new = dict(item)
        new.setdefault("id", C.openai_id("item_"))
        if t != "mcp_approval_response":
            new["object"] = "realtime.item"
            new.setdefault("status", "completed")
        if prev_req is None:
            prev = self.last_item_id()
        elif prev_req == "root":
            prev = None
        else:
            prev = prev_req
        self.add_item(new, after=prev_req)
        self.client_items.append({"item_id": new["id"], "type": t, "role": item.get("role"),
                                  "text": item_text, "content_types": [c.get("type") for c in item.get("content", [])]
                                  if t == "message" else [], "previous_item_id": prev, "at_ms": self.now_ms(),
                                  "before_first_append": self.first_append_ms is None})
        self.log("client item %s (%s%s): %r" % (new["id"], t, "/" + item["role"] if t == "message" else "",
                                                (item_text or "")[:200]))
        if user_text is not None:
            self.user_texts.append({"item_id": new["id"], "text": user_text, "at_ms": self.now_ms()})
            self.log("user text item %s: %r" % (new["id"], user_text))
        if t == "function_call_output":
            if any(o["call_id"] == item["call_id"] for o in self.function_outputs):
                self.warning("second_function_output", "a second function_call_output for call_id %s"
                             % item["call_id"], call_id=item["call_id"])
            call = self.find_call(item["call_id"])
            self.function_outputs.append({"call_id": item["call_id"], "name": call.get("name"),
                                          "output": item["output"], "item_id": new["id"], "at_ms": self.now_ms(),
                                          "response_requested": False, "response_id": None})
            for rec in self.tool_calls:
                if rec["call_id"] == item["call_id"]:
                    rec["output_given"] = True
            self.log("function_call_output for %s: %r" % (item["call_id"], item["output"][:200]))
        if t == "mcp_approval_response":
            req = self.find_item(item["approval_request_id"])
            self.mcp_approvals.append({"approval_request_id": item["approval_request_id"],
                                       "approve": item["approve"], "reason": item.get("reason"),
                                       "at_ms": self.now_ms()})
            if item["approve"]:
                plan = dict(self.approval_plans.get(req["id"]) or {"mcp": {"server_label": req["server_label"],
                                                                             "name": req["name"],
                                                                             "arguments": req["arguments"]}})
                plan["approval_request_id"] = req["id"]
                self.pending_approved.append(plan)
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
        if "instructions" in r and not isinstance(r["instructions"], str):
            raise invalid_type("response.instructions", "a string", r["instructions"])
        if "max_output_tokens" in r:
            check_max_output_tokens(r["max_output_tokens"], "response.max_output_tokens")
        tools = None
        if "tools" in r:
            tools = check_tools(r["tools"], "response.tools")
        if "tool_choice" in r:
            check_tool_choice(r["tool_choice"], "response.tool_choice",
                              tools if tools is not None else self.config["tools"])
        if "reasoning" in r:
            check_reasoning(r["reasoning"], "response.reasoning", self.model)
        if "parallel_tool_calls" in r:
            check_parallel_tool_calls(r["parallel_tool_calls"], "response.parallel_tool_calls", self.model)
        if conversation == "auto" and self.active is not None:
            raise ClientError("conversation_already_has_active_response",
                              "Conversation already has an active response in progress: %s. Wait until the "
                              "response is finished before creating a new one." % self.active.id,
                              violation=False)
        # Before the model speaks again: a completed function call of this session that is
        # still without its output after tool_output_deadline_ms is the product's fault.
        now = self.now_ms()
        for call in self.tool_calls:
            if (call["status"] == "completed" and call["in_conversation"] and not call["output_given"]
                    and not call.get("late") and now - call["done_ms"] > self.fake.tool_output_deadline_ms):
                call["late"] = True
                self.violation("response.create while function call %s (%s) has had no function_call_output "
                               "for %d ms" % (call["call_id"], call["name"], now - call["done_ms"]))
        resp = await self.start_response("response.create", conversation, modalities, tools=tools)
        for out in self.function_outputs:
            if not out["response_requested"]:
                out.update(response_requested=True, response_id=resp.id, response_requested_ms=now)

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
        """docs/protocols.md, Realtime §7, acting §7.1: error session_expired ("Your session hit the maximum
        duration of N minutes."), then close 1001 with the same text as the reason."""
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - self.t0)))
        self.log("session expired")
        body, code, reason = fatal_error("session_expired", self.model, seconds)
        self.fake.background(self.end_with_error("max_session_seconds", body, code, reason,
                                                 ended_by="session_expired"))

    async def run(self):
        ws = self.ws
        beta = ws.request_headers.get("OpenAI-Beta")
        if beta is not None:
            if self.fake.beta_mode == "refuse":
                self.violation("OpenAI-Beta header sent (%r): the beta shape is disabled" % beta)
                body, code, reason = fatal_error("beta_api_shape_disabled", self.model)
                await self.end_with_error("beta_header", body, code, reason, ended_by="beta_api_shape_disabled")
                return
            self.violation("OpenAI-Beta header sent (%r); answering with the GA interface" % beta)
        await self.send("session.created", session=self.config)
        if self.max_session_seconds:
            self.spawn(self.expire_later(self.max_session_seconds))
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
        self.tool_args_ms = args.tool_args_ms
        self.tool_output_deadline_ms = 30000
        self.mcp_tools = copy.deepcopy(DEFAULT_MCP_TOOLS)
        self.mcp_output = args.mcp_output
        self.mcp_call_ms = 50
        self.mcp_list_fail = False
        self.idle_timeout_range_ms = IDLE_TIMEOUT_RANGE_MS
        self.script = [normalize_plan(e) for e in self.parse_json_list(args.script)] if args.script else []
        self.script_per_session = bool(args.script_per_session)
        # one-shot faults (fire once, or N times, then clear themselves)
        self.drop_after_deltas = args.drop_after_deltas     # None = not armed
        self.drop_mode = args.drop_mode
        self.drop_session = None                            # None = any session
        self.refuse_next = args.refuse_next
        self.refuse_status = args.refuse_status
        self.refuse_retry_after = args.refuse_retry_after   # None = no Retry-After header
        self.fatal_next = args.fatal_next
        self.fatal_code = args.fatal_code
        self.bg = set()                 # closing tasks, kept apart from the sessions' own tasks
        self.sessions = []
        self.handshakes = []

    def background(self, coro):
        """Run a closing task that must outlive the session's own tasks (the handler cancels those)."""
        t = asyncio.ensure_future(coro)
        self.bg.add(t)
        t.add_done_callback(self.bg.discard)
        return t

    def find_session(self, spec):
        """A session by index in /_fake/sessions or by its sess_ id; None if there is none."""
        if spec.startswith("sess_"):
            return next((x for x in self.sessions if x.config["id"] == spec), None)
        try:
            return self.sessions[int(spec)]
        except (IndexError, ValueError):
            return None

    def claim_drop(self, sess, resp):
        """drop_after_deltas: the next response that has audio to send (in drop_session, if set)
        takes the armed drop, which is then cleared."""
        if self.drop_after_deltas is None:
            return None
        if resp.msg_item_id is None or "audio" not in resp.modalities:
            return None
        if self.drop_session is not None and self.find_session(self.drop_session) is not sess:
            return None
        claim = (self.drop_after_deltas, self.drop_mode)
        self.drop_after_deltas = None
        self.drop_session = None
        sess.log("response %s will drop the connection (%s) after %d audio deltas" % (resp.id, claim[1], claim[0]))
        return claim

    def open_sessions(self, spec):
        if spec is None:
            return [x for x in self.sessions if not x.ending and x.closed_ms is None and x.ws.open]
        x = self.find_session(spec)
        if x is None:
            raise LookupError("no session %r (there are %d)" % (spec, len(self.sessions)))
        if x.ending or x.closed_ms is not None or not x.ws.open:
            raise ValueError("session %r is closed or closing" % spec)
        return [x]

    @staticmethod
    async def wait_close_started(targets, timeout=1.0):
        """Until every target's close frame is out (or its transport is gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(x.ws.open and not x.ws.transport.is_closing() for x in targets):
            await asyncio.sleep(0.002)

    async def drop_now(self, q):
        """GET /_fake/drop[?mode=abrupt|1011][&session=N|sess_id]: cut every open session now."""
        one = {k: v[-1] for k, v in q.items()}
        mode = one.get("mode", self.drop_mode)
        if mode not in DROP_MODES:
            return self.http_json(400, {"error": "mode is abrupt or 1011"})
        try:
            targets = self.open_sessions(one.get("session"))
        except LookupError as e:
            return self.http_json(404, {"error": str(e)})
        except ValueError as e:
            return self.http_json(409, {"error": str(e)})
        tasks = [t for t in (x.drop(mode, "endpoint") for x in targets) if t is not None]
        if tasks and mode == "abrupt":
            await asyncio.wait(tasks, timeout=1.5)      # cut() is quick: the buffers drain, then abort
        elif tasks:
            await self.wait_close_started(targets)      # the 1011 frame is out; the handshake goes on
        log("/_fake/drop (%s): %d session(s)", mode, len(targets))
        return self.http_json(200, {"ok": True, "mode": mode, "dropped": [
            {"session": self.sessions.index(x), "session_id": x.config["id"],
             "response_id": (x.drop_rec or {}).get("response_id")} for x in targets]})

    async def fatal_now(self, q):
        """GET /_fake/fatal?code=CODE[&type=T][&message=M][&close=C][&reason=R][&session=N|sess_id]:
        send that error to every open session, then close it."""
        one = {k: v[-1] for k, v in q.items()}
        code = one.get("code")
        if not code or not re.match(r"^[a-z0-9_]{1,50}$", code):
            return self.http_json(400, {"error": "fatal needs code=... (e.g. session_expired, server_error)"})
        if one.get("type") and not re.match(r"^[a-z0-9_]{1,50}$", one["type"]):
            return self.http_json(400, {"error": "type is an error type such as server_error"})
        if len(one.get("reason", "").encode()) > 123:
            return self.http_json(400, {"error": "a close reason is at most 123 bytes"})
        close = one.get("close")
        if close not in (None, "") and not (close.isdigit() and (int(close) in (1000, 1001, 1008, 1011)
                                                                 or 3000 <= int(close) < 5000)):
            return self.http_json(400, {"error": "close is 1000, 1001, 1008, 1011 or 3000..4999"})
        try:
            targets = self.open_sessions(one.get("session"))
        except LookupError as e:
            return self.http_json(404, {"error": str(e)})
        except ValueError as e:
            return self.http_json(409, {"error": str(e)})
        ended = []
        for x in targets:
            body, close_code, reason = fatal_error(code, x.model, x.max_session_seconds, one.get("type") or None,
                                                   one.get("message"), one.get("close"), one.get("reason"))
            self.background(x.end_with_error("endpoint", body, close_code, reason))
            ended.append({"session": self.sessions.index(x), "session_id": x.config["id"], "error": body,
                          "close_code": close_code, "close_reason": reason})
        for _ in range(50):             # let each error event and close frame go out first
            if all(x.ending for x in targets):
                break
            await asyncio.sleep(0.002)
        await self.wait_close_started(targets)
        log("/_fake/fatal %s: %d session(s)", code, len(targets))
        return self.http_json(200, {"ok": True, "code": code, "sessions": ended})

    @staticmethod
    def parse_json_list(text):
        v = json.loads(text)
        if not isinstance(v, list):
            raise ValueError("expected a JSON list, got %r" % (v,))
        return v

    def mcp_tool_info(self, name):
        return next((t for t in self.mcp_tools if t.get("name") == name), None)

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
                "phrases": [{"path": p["path"], "text": p["text"]} for p in self.phrases],
                "script": self.script, "script_per_session": self.script_per_session,
                "tool_args_ms": self.tool_args_ms,
                "tool_output_deadline_ms": self.tool_output_deadline_ms, "mcp_tools": self.mcp_tools,
                "mcp_output": self.mcp_output, "mcp_call_ms": self.mcp_call_ms,
                "mcp_list_fail": self.mcp_list_fail, "idle_timeout_range_ms": list(self.idle_timeout_range_ms),
                "drop_after_deltas": self.drop_after_deltas, "drop_mode": self.drop_mode,
                "drop_session": self.drop_session, "refuse_next": self.refuse_next,
                "refuse_status": self.refuse_status, "refuse_retry_after": self.refuse_retry_after,
                "fatal_next": self.fatal_next, "fatal_code": self.fatal_code}

    # -- HTTP side -----------------------------------------------------------------------
    @staticmethod
    def http_json(status, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        return (http.HTTPStatus(status), [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body))), ("Connection", "close")]
                + list(extra_headers), body)

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
            self.script = []
            self.drop_after_deltas = self.drop_session = None
            self.refuse_next = self.fatal_next = 0
            return self.http_json(200, {"ok": True})
        if path == "/_fake/cue":
            return self.cue(q)
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
                        secs = float(v) if v else 0.0
                        if secs < 0 or math.isnan(secs) or math.isinf(secs):
                            raise ValueError("max_session_seconds is >= 0 (0 = never)")
                        self.max_session_seconds = secs or None
                    elif k == "phrase":
                        for spec in vals:
                            self.add_phrase(spec)
                    elif k == "clear_phrases":
                        self.phrases = []
                    elif k == "script":
                        self.script = [normalize_plan(e) for e in self.parse_json_list(v)]
                    elif k == "script_append":
                        self.script.extend(normalize_plan(e) for e in self.parse_json_list(v))
                    elif k == "script_per_session":
                        self.script_per_session = v not in ("", "0", "false")
                    elif k == "tool_args_ms":
                        self.tool_args_ms = max(0, int(v))
                    elif k == "tool_output_deadline_ms":
                        self.tool_output_deadline_ms = int(v)
                    elif k == "mcp_tools":
                        tools = self.parse_json_list(v)
                        if not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
                            raise ValueError("mcp_tools is a list of {name, input_schema, description?, "
                                             "annotations?}")
                        for t in tools:
                            t.setdefault("input_schema", {"type": "object", "properties": {}})
                        self.mcp_tools = tools
                    elif k == "mcp_output":
                        self.mcp_output = v
                    elif k == "mcp_call_ms":
                        self.mcp_call_ms = max(0, int(v))
                    elif k == "mcp_list_fail":
                        self.mcp_list_fail = v not in ("", "0", "false")
                    elif k == "idle_timeout_range_ms":
                        lo, _, hi = v.partition(",")
                        self.idle_timeout_range_ms = (int(lo), int(hi))
                    elif k == "drop_after_deltas":
                        n = int(v) if v not in ("", "off") else None
                        if n is not None and n < 0:
                            raise ValueError("drop_after_deltas is N >= 0, or empty to disarm")
                        self.drop_after_deltas = n
                    elif k == "drop_mode":
                        if v not in DROP_MODES:
                            raise ValueError("drop_mode is abrupt or 1011")
                        self.drop_mode = v
                    elif k == "drop_session":
                        self.drop_session = v or None
                    elif k == "refuse_next":
                        self.refuse_next = max(0, int(v or 0))
                    elif k == "refuse_status":
                        if int(v) not in REFUSE_STATUSES:
                            raise ValueError("refuse_status is one of %s" % sorted(REFUSE_STATUSES))
                        self.refuse_status = int(v)
                    elif k == "refuse_retry_after":
                        if v and int(v) < 0:
                            raise ValueError("refuse_retry_after is seconds >= 0, or empty for none")
                        self.refuse_retry_after = int(v) if v else None
                    elif k == "fatal_next":
                        self.fatal_next = max(0, int(v or 0))
                    elif k == "fatal_code":
                        if not re.match(r"^[a-z0-9_]+$", v):
                            raise ValueError("fatal_code is an error code such as insufficient_quota")
                        self.fatal_code = v
                    else:
                        raise ValueError("unknown setting %r" % k)
            except (ValueError, OSError, TypeError) as e:
                return self.http_json(400, {"error": str(e)})
            log("config now: %s", self.settings_view())
            return self.http_json(200, self.settings_view())
        return self.http_json(404, {"error": "unknown control endpoint %s" % path})

    def cue(self, q):
        """GET /_fake/cue?name=NAME&arguments=JSON[&say=TEXT] | ?text=TEXT | ?mcp=JSON[&output=..]
        [&session=INDEX]: start that response now in that session (default: the last one)."""
        one = {k: v[-1] for k, v in q.items()}
        try:
            if "name" in one:
                plan = {"tool": one["name"], "arguments": json.loads(one["arguments"]) if one.get("arguments")
                        else {}}
                if one.get("say"):
                    plan["say"] = one["say"]
            elif "text" in one:
                plan = {"text": one["text"]}
            elif "mcp" in one:
                plan = {"mcp": json.loads(one["mcp"])}
                for k in ("output", "error"):
                    if k in one:
                        plan[k] = one[k]
            else:
                raise ValueError("a cue needs name=..., text=... or mcp=...")
            plan = normalize_plan(plan)
            idx = int(one.get("session", "-1"))
        except (ValueError, TypeError) as e:
            return self.http_json(400, {"error": str(e)})
        if not self.sessions:
            return self.http_json(404, {"error": "no session yet"})
        try:
            sess = self.sessions[idx]
        except IndexError:
            return self.http_json(404, {"error": "no session %d (there are %d)" % (idx, len(self.sessions))})
        idx = self.sessions.index(sess)
        if sess.closed_ms is not None or not sess.ws.open:
            return self.http_json(409, {"error": "session %d is closed" % idx, "session": idx})
        if sess.active is not None:
            return self.http_json(409, {"error": "session %d already has an active response" % idx,
                                        "session": idx, "response_id": sess.active.id})
        resp = sess.launch("cue", plan=plan)
        return self.http_json(200, {"ok": True, "session": idx, "session_id": sess.config["id"],
                                    "response_id": resp.id, "item_id": resp.item_id, "call_id": resp.call_id})

    async def process_request(self, path, headers):
        parts = urllib.parse.urlsplit(path)
        if parts.path == "/_fake/drop":
            return await self.drop_now(urllib.parse.parse_qs(parts.query, keep_blank_values=True))
        if parts.path == "/_fake/fatal":
            return await self.fatal_now(urllib.parse.parse_qs(parts.query, keep_blank_values=True))
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
        if self.refuse_next > 0:
            # injected refusal (an outage, a rate limit...): before any other check
            self.refuse_next -= 1
            status = self.refuse_status
            etype, code, message = REFUSE_STATUSES[status]
            model = (q.get("model") or ["gpt-realtime"])[0]
            message = bad_key_message(headers.get("Authorization", "")) if status == 401 else \
                message % {"model": model}
            extra = []
            if status in RETRY_AFTER_STATUSES and self.refuse_retry_after is not None:
                extra.append(("Retry-After", str(self.refuse_retry_after)))
                rec["retry_after"] = self.refuse_retry_after
            rec.update(status=status, refused=message, injected="refuse_next")
            log.loud("refusing WebSocket upgrade %s: HTTP %d (refuse_next, %d left)", path, status, self.refuse_next)
            return self.http_json(status, openai_error_body(message, code, etype), extra)
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
                return refuse(401, bad_key_message(auth), "invalid_api_key")
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
            # acting §7.2 (verified): 101, one error invalid_api_key, close 3000 "<type>.<code>"
            sess.violation("wrong or missing API key")
            body, code, reason = fatal_error("invalid_api_key", sess.model, message=bad_key_message(auth))
            await sess.end_with_error("bad_key", body, code, reason, ended_by="invalid_api_key")
        elif self.fatal_next > 0:
            self.fatal_next -= 1
            body, code, reason = fatal_error(self.fatal_code, sess.model, sess.max_session_seconds)
            await sess.end_with_error("fatal_next", body, code, reason)
        else:
            try:
                await sess.run()
            except Exception as e:  # keep the server up
                log.loud("internal error in session %s: %r", sess.config["id"], e)
                import traceback
                traceback.print_exc()
                sess.violations.append("fake internal error (not the product's fault): %r" % e)
                if sess.ended_by is None:
                    sess.ended_by = "fake_internal_error"
                await ws.close(1011, "fake internal error")
        sess.stop_active("client_closed" if sess.ended_by is None else "session_ended")
        for t in list(sess.tasks):
            t.cancel()
        await ws.wait_closed()
        if sess.sent_close is not None:     # the fake ended it: what the fake sent (1006 = cut)
            sess.close_code, sess.close_reason = sess.sent_close
        else:
            sess.close_code = ws.close_code
            sess.close_reason = ws.close_reason
            if sess.ended_by is None:
                sess.ended_by = "fake_shutdown" if (ws.close_sent is not None and not ws.close_rcvd_then_sent) \
                    else "client"
        sess.closed_ms = sess.now_ms()
        sess.log("session closed (code %s, %s; the client saw %s)" % (sess.close_code, sess.ended_by, ws.close_code))


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
    ap.add_argument("--bad-key-mode", choices=("refuse", "error"), default="error",
                    help="wrong key: upgrade, send error invalid_api_key and close 3000 "
                         "'invalid_request_error.invalid_api_key' (default, verified), or refuse the upgrade with 401")
    ap.add_argument("--pace", type=float, default=2.0, help="reply audio speed vs real time (default 2x)")
    ap.add_argument("--seed", type=int, default=1, help="seed for chunk sizes")
    ap.add_argument("--transcription-delay-ms", type=int, nargs=2, default=[200, 2000], metavar=("MIN", "MAX"))
    ap.add_argument("--max-session-seconds", type=float, default=3600,
                    help="session_expired + close 1001 after this long, fractions allowed (0 = never); "
                         "session.created's expires_at follows it")
    ap.add_argument("--drop-after-deltas", type=int, default=None, metavar="N",
                    help="the first response with audio drops the connection after N audio deltas (once)")
    ap.add_argument("--drop-mode", choices=DROP_MODES, default="abrupt",
                    help="how a drop ends the connection: abrupt (no close frame, 1006) or 1011")
    ap.add_argument("--refuse-next", type=int, default=0, metavar="N",
                    help="refuse the next N upgrades with HTTP --refuse-status")
    ap.add_argument("--refuse-status", type=int, choices=sorted(REFUSE_STATUSES), default=503)
    ap.add_argument("--refuse-retry-after", type=int, default=None, metavar="SECONDS",
                    help="Retry-After header on a 429 or 503 refusal")
    ap.add_argument("--fatal-next", type=int, default=0, metavar="N",
                    help="the next N sessions get error --fatal-code at once, then a close")
    ap.add_argument("--fatal-code", default="insufficient_quota",
                    help="error code of --fatal-next (insufficient_quota, invalid_model, server_error...)")
    ap.add_argument("--ping-interval", type=float, default=None)
    ap.add_argument("--tool-args-ms", type=int, default=50,
                    help="total time over which function/MCP call argument deltas are spread")
    ap.add_argument("--mcp-output", default=DEFAULT_MCP_OUTPUT, help="what a fake MCP call returns")
    ap.add_argument("--script", help="JSON list of response plans (see /_fake/config?script=)")
    ap.add_argument("--script-per-session", action="store_true",
                    help="each new session plays its own copy of the script (the queue itself is kept)")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if args.drop_after_deltas is not None and args.drop_after_deltas < 0:
        ap.error("--drop-after-deltas is N >= 0")
    if args.max_session_seconds < 0:
        ap.error("--max-session-seconds is >= 0")
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
