"""Encoder and decoder of the nginx <-> bridged frames, for the tests.

The format is the one of proto/voice_proto.h, byte for byte:

    header   version (u8) | type (u8) | reserved (u16, 0) | body length (u32)
    field    tag (u8) | length (u32) | value

All integers are little-endian.  Integer fields hold exactly 4 or 8 bytes,
string and blob fields hold raw bytes (no NUL).  Fields may come in any
order, a tag at most once; unknown tags are skipped.  Each message type
requires some fields, as the C decoder does.

    >>> frame = encode(MSG_PING, request_id=7)
    >>> decode(frame)
    Message(type=1, name='ping', fields={'request_id': 7})

Strings are given as str (UTF-8) or bytes; the decoder returns str for
string fields and bytes for the blobs (audio, body).
"""

import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

VERSION = 1
HEADER_SIZE = 8
FIELD_HEADER = 5

MAX_FRAME = 1024 * 1024
MAX_AUDIO = 16384
MAX_SID = 64
MAX_TEXT = 65536

MSG_PING = 0x01
MSG_PONG = 0x02
MSG_STREAM_START = 0x10
MSG_AUDIO_IN = 0x11
MSG_MARK_ACK = 0x12
MSG_DTMF = 0x13
MSG_STREAM_STOP = 0x14
MSG_CALL_EVENT = 0x15
MSG_AUDIO_OUT = 0x20
MSG_MARK = 0x21
MSG_CLEAR = 0x22
MSG_HANGUP = 0x23
MSG_TRANSCRIPT = 0x24
MSG_CALL_DONE = 0x25
MSG_CALL_CREATE = 0x30
MSG_CALL_END = 0x31
MSG_NUMBERS_LIST = 0x32
MSG_REPLY = 0x3F
MSG_ERROR = 0x7F

ROLE_USER = 1
ROLE_ASSISTANT = 2

U32, U64, STR, BLOB = "u32", "u64", "str", "blob"

# tag: (name, kind, longest value for strings and blobs)
FIELDS = {
    1: ("request_id", U64, 8),
    2: ("status", U32, 4),
    3: ("seq", U32, 4),
    4: ("timestamp", U64, 8),
    5: ("order", U32, 4),
    6: ("role", U32, 4),
    7: ("count", U32, 4),
    11: ("flags", U32, 4),
    12: ("time_limit", U32, 4),
    32: ("call_sid", STR, MAX_SID),
    33: ("stream_sid", STR, MAX_SID),
    34: ("account_sid", STR, MAX_SID),
    35: ("phone", STR, MAX_SID),
    36: ("direction", STR, MAX_SID),
    37: ("to", STR, MAX_SID),
    38: ("from", STR, MAX_SID),
    39: ("url", STR, 4096),
    40: ("name", STR, 256),
    41: ("text", STR, MAX_TEXT),
    42: ("reason", STR, 1024),
    43: ("body", BLOB, MAX_FRAME),
    44: ("audio", BLOB, MAX_AUDIO),
    50: ("status_url", STR, 4096),
    51: ("settings", BLOB, 256 * 1024),
    52: ("arguments", BLOB, MAX_TEXT),
    53: ("ended_by", STR, 64),
    54: ("answered_by", STR, 64),
}

TAGS = {name: tag for tag, (name, _, _) in FIELDS.items()}

# type: (name, required field names)
TYPES = {
    MSG_PING: ("ping", ("request_id",)),
    MSG_PONG: ("pong", ("request_id",)),
    MSG_STREAM_START: ("stream.start",
                       ("call_sid", "stream_sid", "phone", "direction",
                        "settings")),
    MSG_AUDIO_IN: ("audio.in", ("call_sid", "audio")),
    MSG_MARK_ACK: ("mark.ack", ("call_sid", "name")),
    MSG_DTMF: ("dtmf", ("call_sid", "text")),
    MSG_STREAM_STOP: ("stream.stop", ("call_sid",)),
    MSG_CALL_EVENT: ("call.event", ("call_sid", "name", "text")),
    MSG_AUDIO_OUT: ("audio.out", ("call_sid", "audio")),
    MSG_MARK: ("mark", ("call_sid", "name")),
    MSG_CLEAR: ("clear", ("call_sid",)),
    MSG_HANGUP: ("hangup", ("call_sid",)),
    MSG_TRANSCRIPT: ("transcript",
                     ("call_sid", "order", "role", "text", "timestamp")),
    MSG_CALL_DONE: ("call.done", ("call_sid",)),
    MSG_CALL_CREATE: ("call.create", ("request_id", "to", "url")),
    MSG_CALL_END: ("call.end", ("request_id", "call_sid")),
    MSG_NUMBERS_LIST: ("numbers.list", ("request_id",)),
    MSG_REPLY: ("reply", ("request_id", "status", "body")),
    MSG_ERROR: ("error", ("reason",)),
}

NAMES = {name: t for t, (name, _) in TYPES.items()}


class ProtoError(ValueError):
    """A frame the C decoder would refuse (or a message it cannot encode)."""


@dataclass
class Message:
    type: int
    name: str
    fields: Dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key):
        return self.fields[key]

    def get(self, key, default=None):
        return self.fields.get(key, default)

    def __contains__(self, key):
        return key in self.fields


def _value(name: str, kind: str, limit: int, value) -> bytes:
    if kind == U32:
        if not 0 <= int(value) < 1 << 32:
            raise ProtoError(f"{name}: {value} is not a u32")
        return struct.pack("<I", int(value))
    if kind == U64:
        if not 0 <= int(value) < 1 << 64:
            raise ProtoError(f"{name}: {value} is not a u64")
        return struct.pack("<Q", int(value))
    data = value.encode() if isinstance(value, str) else bytes(value)
    if len(data) > limit:
        raise ProtoError(f"{name}: {len(data)} bytes, the limit is {limit}")
    return data


def encode(msg_type: int, check: bool = True, **fields) -> bytes:
    """Builds one frame.  Field names are those of voice_proto_msg_t
    ("from" may be given as from_).  With check=False the required fields
    are not enforced, to build frames a peer must refuse."""
    if msg_type not in TYPES:
        raise ProtoError(f"unknown message type {msg_type:#x}")
    if "from_" in fields:
        fields["from"] = fields.pop("from_")
    if check:
        missing = [f for f in TYPES[msg_type][1] if f not in fields]
        if missing:
            raise ProtoError(f"{TYPES[msg_type][0]}: missing {missing}")
    body = bytearray()
    for name, value in fields.items():
        if value is None:
            continue
        if name not in TAGS:
            raise ProtoError(f"unknown field {name}")
        tag = TAGS[name]
        _, kind, limit = FIELDS[tag]
        data = _value(name, kind, limit, value)
        body += struct.pack("<BI", tag, len(data)) + data
    if HEADER_SIZE + len(body) > MAX_FRAME:
        raise ProtoError("frame too large")
    return struct.pack("<BBHI", VERSION, msg_type, 0, len(body)) + bytes(body)


def decode(frame: bytes) -> Message:
    """Decodes one whole frame (one ZeroMQ message part); raises ProtoError
    for anything voice_proto_decode() refuses, or for trailing bytes."""
    msg, used = decode_prefix(frame)
    if used != len(frame):
        raise ProtoError("bytes after the frame")
    return msg


def decode_prefix(buf: bytes) -> Tuple[Message, int]:
    """Decodes the frame at the start of buf; returns it and its size."""
    if len(buf) < HEADER_SIZE:
        raise ProtoError("truncated header")
    version, msg_type, reserved, body_len = struct.unpack_from("<BBHI", buf)
    if version != VERSION:
        raise ProtoError("unsupported version")
    if msg_type not in TYPES:
        raise ProtoError("unknown message type")
    if reserved:
        raise ProtoError("reserved bits set")
    if body_len > MAX_FRAME - HEADER_SIZE:
        raise ProtoError("frame too large")
    if len(buf) - HEADER_SIZE < body_len:
        raise ProtoError("truncated frame")

    name, required = TYPES[msg_type]
    fields: Dict[str, Any] = {}
    pos, end = HEADER_SIZE, HEADER_SIZE + body_len
    while pos < end:
        if end - pos < FIELD_HEADER:
            raise ProtoError("truncated field header")
        tag, flen = struct.unpack_from("<BI", buf, pos)
        pos += FIELD_HEADER
        if end - pos < flen:
            raise ProtoError("truncated field")
        value = bytes(buf[pos:pos + flen])
        pos += flen
        if tag not in FIELDS:
            continue
        fname, kind, limit = FIELDS[tag]
        if fname in fields:
            raise ProtoError("duplicate field")
        if kind == U32:
            if flen != 4:
                raise ProtoError("bad integer field length")
            fields[fname] = struct.unpack("<I", value)[0]
        elif kind == U64:
            if flen != 8:
                raise ProtoError("bad integer field length")
            fields[fname] = struct.unpack("<Q", value)[0]
        else:
            if flen > limit:
                raise ProtoError("field too long")
            fields[fname] = (value if kind == BLOB
                             else value.decode("utf-8", "surrogateescape"))
    if any(f not in fields for f in required):
        raise ProtoError("required field missing")
    return Message(msg_type, name, fields), end


def type_name(msg_type: int) -> str:
    return TYPES.get(msg_type, ("unknown",))[0]


def owner_hash(call_sid) -> int:
    """voice_proto_hash(): FNV-1a over the call SID, which picks the
    bridged instance that owns a call (hash % number of endpoints)."""
    data = call_sid.encode() if isinstance(call_sid, str) else call_sid
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h
