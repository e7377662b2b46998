"""Shared helpers for the protocol fakes (fake_twilio.py, fake_openai.py) and their tests.

What lives here: Twilio's X-Twilio-Signature algorithm (docs/protocols.md, Twilio REST §9) and a validator
with the port variants the official SDKs accept, E.164 checking and number formatting,
SID / id generation, RFC 2822 dates, G.711 mu-law helpers (decode, RMS per frame, padding,
fingerprints for the fake ASR), the `READY <port>` line and a stderr logger.
Standard library only; run everything with /usr/bin/python3.
"""

import base64
import datetime
import hashlib
import hmac
import os
import re
import secrets
import socket
import string
import sys
import time
import urllib.parse
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # deprecated in 3.11, still shipped; only ulaw2lin/rms/lin2* are used

# --------------------------------------------------------------------------------------
# Twilio signatures (docs/protocols.md, Twilio REST §9)
# --------------------------------------------------------------------------------------


def _param_pairs(params):
    """Normalise params to a list of (name, value) string pairs.

    Accepts None, a dict name -> str | list[str], or an iterable of (name, value) pairs
    (repeated names allowed, as in a form body with a repeated key)."""
    if not params:
        return []
    if isinstance(params, dict):
        pairs = []
        for name, value in params.items():
            if isinstance(value, (list, tuple)):
                pairs.extend((name, str(v)) for v in value)
            else:
                pairs.append((name, str(value)))
        return pairs
    return [(str(n), str(v)) for n, v in params]


def twilio_signature_string(url, params=None):
    """The exact string Twilio signs: the URL as used, then for each parameter name in
    byte order, once per distinct value (values sorted the same way), name+value with no
    separators (docs/protocols.md, Twilio REST §9 step 2)."""
    by_name = {}
    for name, value in _param_pairs(params):
        by_name.setdefault(name, set()).add(value)
    s = url
    # Python str comparison is code-point order, i.e. byte order for ASCII names
    for name in sorted(by_name):
        for value in sorted(by_name[name]):
            s += name + value
    return s


def twilio_signature(auth_token, url, params=None):
    """Base64(HMAC-SHA1(auth_token, signature string)); always 28 characters."""
    msg = twilio_signature_string(url, params).encode("utf-8")
    digest = hmac.new(auth_token.encode("utf-8"), msg, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def url_port_variants(url):
    """The URL without any explicit port and with the scheme's default port added, as the
    SDK validators try (docs/protocols.md, Twilio REST §9, "Port variants")."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    if ":" in host:  # IPv6 literal
        host = "[" + host + "]"
    userinfo = ""
    if p.username is not None:
        userinfo = p.username + (":" + p.password if p.password is not None else "") + "@"
    without = urllib.parse.urlunsplit((p.scheme, userinfo + host, p.path, p.query, p.fragment))
    out = [without]
    default = _DEFAULT_PORTS.get(p.scheme.lower())
    if p.port is None and default is not None:
        out.append(urllib.parse.urlunsplit(
            (p.scheme, "%s%s:%d" % (userinfo, host, default), p.path, p.query, p.fragment)))
    return out


def validate_twilio_signature(auth_token, url, params, header_value):
    """Validator as the SDKs do it: exact URL, URL without port, URL with the default
    port; constant-time compare. Used by the tests' stand-in product, not by the fakes."""
    if not header_value:
        return False
    candidates = [url] + [u for u in url_port_variants(url) if u != url]
    ok = False
    for u in candidates:
        expected = twilio_signature(auth_token, u, params)
        if hmac.compare_digest(expected.encode(), header_value.encode()):
            ok = True
    return ok


# --------------------------------------------------------------------------------------
# Numbers, SIDs, ids, dates
# --------------------------------------------------------------------------------------

E164_RE = re.compile(r"^\+[1-9]\d{1,14}$")


def is_e164(number):
    return isinstance(number, str) and bool(E164_RE.match(number))


def format_national(number):
    """'+15005550006' -> '(500) 555-0006' (NANP), anything else unchanged; matches the
    from_formatted / friendly_name shapes of docs/protocols.md, Twilio REST §2 and §5."""
    m = re.match(r"^\+1(\d{3})(\d{3})(\d{4})$", number or "")
    if m:
        return "(%s) %s-%s" % m.groups()
    return number


def new_sid(prefix):
    """Twilio SID: 2-letter prefix + 32 lowercase hex (34 chars)."""
    return prefix + secrets.token_hex(16)


def stable_sid(prefix, *parts):
    """Deterministic SID (same inputs, same SID across runs), e.g. PN sids of numbers."""
    return prefix + hashlib.md5("|".join(parts).encode()).hexdigest()


_B62 = string.ascii_letters + string.digits


def openai_id(prefix, n=22):
    """OpenAI-style id: 'event_', 'item_', 'resp_', 'sess_', 'conv_' + base62."""
    return prefix + "".join(secrets.choice(_B62) for _ in range(n))


def rfc2822(ts=None):
    """'Tue, 01 Sep 2026 10:00:00 +0000' (UTC), the date format of Twilio resources."""
    if ts is None:
        ts = time.time()
    dt = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return dt.strftime("%a, %d %b %Y %H:%M:%S +0000")


# --------------------------------------------------------------------------------------
# G.711 mu-law helpers (docs/protocols.md, Media Streams §6)
# --------------------------------------------------------------------------------------

FRAME_BYTES = 160            # 20 ms at 8 kHz, 1 byte per sample
BYTES_PER_MS = 8
ULAW_SILENCE = 0xFF          # mu-law of 0
SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES


def ulaw_to_pcm16(data):
    return audioop.ulaw2lin(data, 2)


def ulaw_rms(data):
    """RMS of mu-law audio as 16-bit linear (0 for digital silence)."""
    if not data:
        return 0
    return audioop.rms(audioop.ulaw2lin(data, 2), 2)


def ulaw_to_format(data, fmt_type):
    """Convert mu-law 8 kHz to the given GA output format type (for a product that forgot
    to ask for audio/pcmu: it then gets what the real service would send)."""
    if fmt_type == "audio/pcmu":
        return data
    lin = audioop.ulaw2lin(data, 2)
    if fmt_type == "audio/pcma":
        return audioop.lin2alaw(lin, 2)
    # audio/pcm: 16-bit LE mono 24 kHz
    out, _ = audioop.ratecv(lin, 2, 1, 8000, 24000, None)
    return out


def pad_to_frames(data, frame=FRAME_BYTES, fill=ULAW_SILENCE):
    rem = len(data) % frame
    if rem:
        data = data + bytes([fill]) * (frame - rem)
    return data


def ulaw_first_voiced_offset(data, level=32):
    """Index of the first byte whose decoded |sample| >= level, or -1."""
    lin = audioop.ulaw2lin(data, 2)
    for i in range(0, len(lin), 2):
        v = int.from_bytes(lin[i:i + 2], "little", signed=True)
        if abs(v) >= level:
            return i // 2
    return -1


def ulaw_fingerprint(data, length=1600, min_length=800):
    """A run of the first non-silent bytes of a recording (the fake ASR looks for it,
    byte-exact, in committed user audio). None when the recording is too short."""
    start = ulaw_first_voiced_offset(data)
    if start < 0:
        return None
    fp = data[start:start + length]
    if len(fp) < min_length:
        return None
    return fp


# --------------------------------------------------------------------------------------
# Process plumbing
# --------------------------------------------------------------------------------------


def print_ready(port):
    """The one line on stdout that tells a test harness the fake is listening."""
    sys.stdout.write("READY %d\n" % port)
    sys.stdout.flush()


class Log:
    """One line per event on stderr, prefixed, with a wall-clock time."""

    def __init__(self, prefix):
        self.prefix = prefix

    def __call__(self, msg, *args):
        if args:
            msg = msg % args
        t = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + ".%03d" % int((t % 1) * 1000)
        sys.stderr.write("[%s %s] %s\n" % (self.prefix, stamp, msg))
        sys.stderr.flush()

    def loud(self, msg, *args):
        if args:
            msg = msg % args
        self("!!!!! " + msg + " !!!!!")


def bind_socket(host, port):
    """A listening TCP socket (port 0 = the kernel picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def make_server_ssl(cert, key):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def make_client_ssl(ca_file=None):
    import ssl
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    return ctx


def read_file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def b64(data):
    return base64.b64encode(bytes(data)).decode("ascii")


def here(*parts):
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), *parts)
