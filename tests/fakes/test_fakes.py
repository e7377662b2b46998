"""Tests of the protocol fakes themselves (no product needed).

Run: /usr/bin/python3 -m pytest tests/fakes -q
Each fake runs as a subprocess on a free port (it prints `READY <port>`); where the fake
needs a product to talk to, a small in-process stand-in (aiohttp, own thread) answers the
signed /twiml webhook and the media WebSocket. Speech fixtures are made with espeak-ng +
sox when present, else a synthetic burst pattern is used, so nothing is skipped.
"""

import asyncio
import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import requests
import websockets
from aiohttp import web

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C  # noqa: E402

PY = "/usr/bin/python3"
ACC = "AC" + "0" * 31 + "1"
TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://voice.example.test"
OAI_KEY = "sk-test-fake"
PHRASE_TEXT = "Hello, I would like to book a table for two at seven pm."


# ------------------------------------------------------------------------- helpers

class Proc:
    """A fake started as a subprocess; waits for its READY line."""

    def __init__(self, args, tmp_path, name):
        self.log_path = os.path.join(str(tmp_path), name + ".log")
        self.log = open(self.log_path, "w")
        self.p = subprocess.Popen([PY] + args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        q = queue.Queue()
        threading.Thread(target=lambda: q.put(self.p.stdout.readline()), daemon=True).start()
        try:
            line = q.get(timeout=15)
        except queue.Empty:
            line = ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError("%s did not start: %r\n%s" % (name, line, open(self.log_path).read()))
        self.port = int(line.split()[1])
        self.base = "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
        self.log.close()


def wait_for(pred, timeout=10.0, step=0.02):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met within %.1f s" % timeout)


def make_speech(path, text):
    if shutil.which("espeak-ng") and shutil.which("sox"):
        wav = path + ".wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", wav, text], check=True)
        subprocess.run(["sox", "-D", wav, "-r", "8000", "-c", "1", "-e", "mu-law", "-b", "8", "-t", "raw", path],
                       check=True)
        return C.read_file_bytes(path)
    import math
    import struct
    lin = b""
    for burst in range(6):  # 6 bursts of 250 ms tone with 100 ms gaps
        f = 300 + 70 * burst
        lin += b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * f * i / 8000))) for i in range(2000))
        lin += b"\0\0" * 800
    data = C.audioop.lin2ulaw(lin, 2)
    with open(path, "wb") as fh:
        fh.write(data)
    return data


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    phrase = os.path.join(str(d), "phrase.ulaw")
    reply = os.path.join(str(d), "reply.ulaw")
    short = os.path.join(str(d), "short.ulaw")
    make_speech(phrase, PHRASE_TEXT)
    make_speech(reply, "Sure, for what time?")
    with open(short, "wb") as f:  # 0.5 s of a known non-silent pattern for call tests
        f.write(bytes((0x10 + i % 64) for i in range(4000)))
    return {"phrase": phrase, "reply": reply, "short": short, "dir": str(d)}


class StandIn:
    """Minimal stand-in for the product: signed /twiml (+ /status) and the media WebSocket.
    `twiml` (form -> text), `ws_script` (async (ws, start, standin)) set the behaviour."""

    def __init__(self, ssl_ctx=None):
        self.ssl_ctx = ssl_ctx
        self.webhooks = []
        self.ws_requests = []
        self.ws_messages = []
        self.ws_script = None
        self.twiml = self.default_twiml
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    @staticmethod
    def default_twiml(form):
        return ('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                '<Stream url="wss://voice.example.test/media-stream">'
                '<Parameter name="callSid" value="%s"/><Parameter name="direction" value="%s"/>'
                '</Stream></Connect></Response>' % (form.get("CallSid"), form.get("Direction")))

    def _run(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/twiml", self.on_webhook)
        app.router.add_route("*", "/status", self.on_webhook)
        app.router.add_get("/media-stream", self.on_media)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        sock = C.bind_socket("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.loop.run_until_complete(web.SockSite(self.runner, sock, ssl_context=self.ssl_ctx).start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        async def _cleanup():
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(_cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def on_webhook(self, request):
        if request.method == "POST":
            pairs = list((await request.post()).items())
            url = PUBLIC + request.path
        else:
            pairs = []
            url = PUBLIC + request.path_qs
        sig = request.headers.get("X-Twilio-Signature")
        rec = {"path": request.path, "method": request.method, "form": dict(pairs),
               "query": dict(request.query), "headers": dict(request.headers),
               "sig_ok": C.validate_twilio_signature(TOKEN, url, pairs, sig)}
        self.webhooks.append(rec)
        if request.path == "/twiml":
            form = dict(pairs) if request.method == "POST" else dict(request.query)
            return web.Response(text=self.twiml(form), content_type="text/xml")
        return web.Response(text="")

    async def on_media(self, request):
        self.ws_requests.append({
            "headers": list(request.headers.items()),
            "sig_ok": C.validate_twilio_signature(TOKEN, "wss://voice.example.test/media-stream", None,
                                                  request.headers.get("x-twilio-signature")),
            "https_sig_ok": C.validate_twilio_signature(TOKEN, "https://voice.example.test/media-stream", None,
                                                        request.headers.get("x-twilio-signature"))})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        task = None
        async for m in ws:
            msg = json.loads(m.data)
            self.ws_messages.append(msg)
            if msg["event"] == "start" and self.ws_script:
                task = asyncio.ensure_future(self.ws_script(ws, msg, self))
            if msg["event"] == "stop":
                break
        if task:
            task.cancel()
        await ws.close()
        return ws


@pytest.fixture
def standin():
    s = StandIn()
    yield s
    s.stop()


def start_twilio(tmp_path, deliver_port, *extra, scheme="http"):
    return Proc([os.path.join(HERE, "fake_twilio.py"), "--account-sid", ACC, "--auth-token", TOKEN,
                 "--public-url", PUBLIC, "--deliver-to", "%s://127.0.0.1:%d" % (scheme, deliver_port)]
                + list(extra), tmp_path, "fake_twilio")


def rest(fake, method, tail, auth=(ACC, TOKEN), **kw):
    return requests.request(method, fake.base + "/2010-04-01/Accounts/%s/%s" % (ACC, tail), auth=auth,
                            timeout=10, **kw)


def assert_twilio_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["more_info"] == "https://www.twilio.com/docs/errors/%d" % code
    assert isinstance(body["message"], str) and body["message"]
    assert {"code", "message", "more_info", "status"} <= set(body)


# ------------------------------------------------------------------------- signatures

def test_selftest_cli():
    r = subprocess.run([PY, os.path.join(HERE, "fake_twilio.py"), "--selftest"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all ok" in r.stdout


def test_signature_vectors_direct():
    import fake_twilio
    assert fake_twilio.selftest(verbose=False)
    # docs/protocols.md, Twilio REST §10.1 B: the wss URL, not https
    assert C.twilio_signature(TOKEN, "wss://bridge.example.com/media-stream") == "0ZvicYzAOFzBhn5l69PEtGsZ3pk="
    assert not C.validate_twilio_signature(TOKEN, "wss://bridge.example.com/media-stream", None,
                                           "EeRO3/dKOQfrpbyue97XBwvuqA4=")


# ------------------------------------------------------------------------- REST

NUMBER_KEYS = {"sid", "account_sid", "phone_number", "friendly_name", "capabilities", "voice_url", "voice_method",
               "voice_fallback_url", "voice_fallback_method", "voice_application_sid", "voice_caller_id_lookup",
               "voice_receive_mode", "status_callback", "status_callback_method", "sms_url", "sms_method",
               "sms_fallback_url", "sms_fallback_method", "sms_application_sid", "trunk_sid", "address_sid",
               "address_requirements", "identity_sid", "bundle_sid", "emergency_status", "emergency_address_sid",
               "emergency_address_status", "origin", "status", "type", "beta", "api_version", "date_created",
               "date_updated", "uri"}


def test_numbers_paging_contract(tmp_path):
    fake = start_twilio(tmp_path, 9, "--numbers", "7")
    try:
        r = rest(fake, "GET", "IncomingPhoneNumbers.json", params={"PageSize": 3})
        assert r.status_code == 200
        seen = []
        pages = 0
        body = r.json()
        while True:
            pages += 1
            assert set(body) >= {"incoming_phone_numbers", "page", "page_size", "start", "end", "uri",
                                 "first_page_uri", "next_page_uri", "previous_page_uri"}
            assert body["page_size"] == 3
            assert body["start"] == body["page"] * 3
            for n in body["incoming_phone_numbers"]:
                assert set(n) == NUMBER_KEYS
                assert C.is_e164(n["phone_number"]) and n["sid"].startswith("PN") and len(n["sid"]) == 34
                seen.append(n["phone_number"])
            assert body["end"] == body["start"] + len(body["incoming_phone_numbers"]) - 1
            if body["page"] == 0:
                assert body["previous_page_uri"] is None
            else:
                prev = requests.get("http://127.0.0.1:%d%s" % (fake.port, body["previous_page_uri"]),
                                    auth=(ACC, TOKEN))
                assert prev.status_code == 200 and prev.json()["page"] == body["page"] - 1
            if body["next_page_uri"] is None:
                break
            nxt = urllib.parse.urlsplit(body["next_page_uri"])
            assert not nxt.scheme and nxt.path.endswith("/IncomingPhoneNumbers.json")
            q = urllib.parse.parse_qs(nxt.query)
            assert set(q) == {"PageSize", "Page", "PageToken"}
            body = requests.get("http://127.0.0.1:%d%s" % (fake.port, body["next_page_uri"]),
                                auth=(ACC, TOKEN)).json()
        assert pages == 3
        assert seen == ["+1500555%04d" % i for i in range(1, 8)]
        # a client that fabricates page URLs instead of following next_page_uri fails
        assert_twilio_error(rest(fake, "GET", "IncomingPhoneNumbers.json", params={"PageSize": 3, "Page": 1}),
                            400, 20001)
        assert_twilio_error(rest(fake, "GET", "IncomingPhoneNumbers.json",
                                 params={"PageSize": 3, "Page": 1, "PageToken": "PAPN123"}), 400, 20001)
        assert_twilio_error(rest(fake, "GET", "IncomingPhoneNumbers.json", params={"PageSize": 0}), 400, 20001)
        assert_twilio_error(rest(fake, "GET", "IncomingPhoneNumbers.json", params={"PageSize": 1001}), 400, 20001)
        default = rest(fake, "GET", "IncomingPhoneNumbers.json").json()
        assert default["page_size"] == 50 and default["next_page_uri"] is None
        assert len(default["incoming_phone_numbers"]) == 7
    finally:
        fake.stop()


def test_rest_error_shapes(tmp_path):
    fake = start_twilio(tmp_path, 9)
    try:
        url = "https://voice.example.test/twiml"
        r = rest(fake, "GET", "IncomingPhoneNumbers.json", auth=None)
        assert_twilio_error(r, 401, 20003)
        assert r.json()["message"] == "Authenticate"
        assert_twilio_error(rest(fake, "GET", "IncomingPhoneNumbers.json", auth=(ACC, "wrong")), 401, 20003)
        other = "AC" + "2" * 32
        r = requests.get(fake.base + "/2010-04-01/Accounts/%s/IncomingPhoneNumbers.json" % other, auth=(ACC, TOKEN))
        assert_twilio_error(r, 401, 20003)
        assert_twilio_error(rest(fake, "POST", "Calls.json", data={"From": "+15005550001", "Url": url}), 400, 21200)
        assert_twilio_error(rest(fake, "POST", "Calls.json", data={"To": "+14155550123", "Url": url}), 400, 21213)
        assert_twilio_error(rest(fake, "POST", "Calls.json", data={"To": "+14155550123", "From": "+15005550001"}),
                            400, 21200)
        assert_twilio_error(rest(fake, "POST", "Calls.json", data={"To": "4155550123", "From": "+15005550001",
                                                                   "Url": url}), 400, 21211)
        # a literal '+' in a form body is a space: the number becomes invalid
        r = rest(fake, "POST", "Calls.json", data="To=+14155550123&From=%2B15005550001&Url=" + url,
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert_twilio_error(r, 400, 21211)
        assert_twilio_error(rest(fake, "POST", "Calls.json", data={"To": "+14155550123", "From": "+0123",
                                                                   "Url": url}), 400, 21212)
        assert_twilio_error(rest(fake, "POST", "Calls.json", data={"To": "+14155550123", "From": "+15005550999",
                                                                   "Url": url}), 400, 21210)
        assert_twilio_error(rest(fake, "POST", "Calls.json", data={"To": "+14155550123", "From": "+15005550001",
                                                                   "Url": "not a url"}), 400, 21205)
        missing = "CA" + "f" * 32
        assert_twilio_error(rest(fake, "GET", "Calls/%s.json" % missing), 404, 20404)
        assert_twilio_error(rest(fake, "POST", "Calls/%s.json" % missing, data={"Status": "completed"}), 404, 20404)
        assert_twilio_error(rest(fake, "GET", "Nope.json"), 404, 20404)
        requests.post(fake.base + "/_fake/config", json={"fail_next": {"status": 503, "code": 20503,
                                                                       "message": "Service unavailable"}})
        assert_twilio_error(rest(fake, "GET", "IncomingPhoneNumbers.json"), 503, 20503)
        assert rest(fake, "GET", "IncomingPhoneNumbers.json").status_code == 200
        log = requests.get(fake.base + "/_fake/requests").json()
        assert log[0]["authorized"] is False and log[-1]["authorized"] is True
        assert {"method", "path", "query", "form", "authorized"} <= set(log[-1])
    finally:
        fake.stop()


# ------------------------------------------------------------------------- calls

def test_outbound_call_end_to_end(tmp_path, standin, fixtures):
    """Calls.json -> signed status callbacks + /twiml -> media WebSocket with the exact
    headers and messages -> app audio played and marks echoed -> REST hang-up -> stop."""
    reply = bytes(range(256)) * 4  # 1024 bytes = 128 ms

    async def script(ws, start, s):
        sid = start["streamSid"]
        await ws.send_str(json.dumps({"event": "media", "streamSid": sid,
                                      "media": {"payload": base64.b64encode(reply).decode()}}))
        await ws.send_str(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "r1-0001"}}))

    standin.ws_script = script
    fake = start_twilio(tmp_path, standin.port, "--caller-audio", fixtures["short"])
    try:
        r = rest(fake, "POST", "Calls.json", data=[
            ("To", "+14155550123"), ("From", "+15005550002"), ("Url", PUBLIC + "/twiml"),
            ("StatusCallback", PUBLIC + "/status"), ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"), ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed")])
        assert r.status_code == 201, r.text
        call = r.json()
        sid = call["sid"]
        assert sid.startswith("CA") and len(sid) == 34 and sid == sid[:2] + sid[2:].lower()
        assert call["status"] == "queued" and call["direction"] == "outbound-api"
        assert call["from_formatted"] == "(500) 555-0002" and call["to"] == "+14155550123"
        ctl = fake.base + "/_fake/calls/" + sid
        wait_for(lambda: requests.get(ctl).json()["marks_echoed"] == ["r1-0001"], timeout=10)
        view = requests.get(ctl).json()
        assert base64.b64decode(view["received_audio_b64"]) == reply
        assert base64.b64decode(view["played_audio_b64"]) == reply
        mark = view["marks"][0]
        assert mark["played_bytes_at_echo"] == len(reply) and not mark["flushed"]
        assert mark["echoed_at_ms"] - mark["received_at_ms"] >= 100  # 128 ms of audio had to play first
        assert view["customParameters"] == {"callSid": sid, "direction": "outbound-api"}
        assert view["violations"] == []
        # the voice webhook: signed over the public URL, standard params of §8.1
        hook = [w for w in standin.webhooks if w["path"] == "/twiml"][0]
        assert hook["sig_ok"] and hook["method"] == "POST"
        f = hook["form"]
        assert f["CallSid"] == sid and f["AccountSid"] == ACC and f["ApiVersion"] == "2010-04-01"
        assert f["CallStatus"] == "in-progress" and f["Direction"] == "outbound-api"
        assert f["From"] == f["Caller"] == "+15005550002" and f["To"] == f["Called"] == "+14155550123"
        # the upgrade: exactly the §3 header set, signature over the wss:// URL
        wsreq = standin.ws_requests[0]
        names = [k.lower() for k, _ in wsreq["headers"]]
        assert wsreq["sig_ok"] and not wsreq["https_sig_ok"]
        assert "x-twilio-signature" in [k for k, _ in wsreq["headers"]]  # lower-case on the wire
        assert dict((k.lower(), v) for k, v in wsreq["headers"])["user-agent"] == "Twilio.TmeWs/1.0"
        for absent in ("origin", "sec-websocket-protocol", "sec-websocket-extensions"):
            assert absent not in names
        # hang up over REST once the caller's clip has been sent
        wait_for(lambda: requests.get(ctl).json()["caller_speech_end_ms"], timeout=10)
        r = rest(fake, "POST", "Calls/%s.json" % sid, data={"Status": "completed"})
        assert r.status_code == 200 and r.json()["status"] == "completed"
        wait_for(lambda: any(m["event"] == "stop" for m in standin.ws_messages))
        wait_for(lambda: len(requests.get(ctl).json()["callbacks"]) == 4, timeout=10)
        msgs = standin.ws_messages
        assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        st = msgs[1]
        assert st["event"] == "start" and st["sequenceNumber"] == "1" and set(st) == {
            "event", "sequenceNumber", "start", "streamSid"}
        assert st["start"] == {"accountSid": ACC, "streamSid": st["streamSid"], "callSid": sid,
                               "tracks": ["inbound"], "customParameters": view["customParameters"],
                               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
        seqs = [int(m["sequenceNumber"]) for m in msgs[1:]]
        assert seqs == list(range(1, len(seqs) + 1))
        media = [m for m in msgs if m["event"] == "media"]
        assert media[0]["media"]["chunk"] == "1" and media[1]["media"]["chunk"] == "2"
        assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)
        assert all(isinstance(m["media"]["timestamp"], str) and m["media"]["track"] == "inbound" for m in media)
        sent = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
        short = C.read_file_bytes(fixtures["short"])
        assert sent.startswith(C.pad_to_frames(short)) and set(sent[len(short):]) <= {0xFF}
        echoed = [m for m in msgs if m["event"] == "mark"]
        assert echoed and echoed[0]["mark"] == {"name": "r1-0001"}
        stop = msgs[-1]
        assert stop["event"] == "stop" and stop["stop"] == {"accountSid": ACC, "callSid": sid}
        view = requests.get(ctl).json()
        assert base64.b64decode(view["sent_audio_b64"]) == sent
        assert view["status"] == "completed" and view["close_initiator"] == "twilio"
        cbs = [w for w in standin.webhooks if w["path"] == "/status"]
        assert all(w["sig_ok"] for w in cbs)
        assert [w["form"]["CallStatus"] for w in cbs] == ["initiated", "ringing", "in-progress", "completed"]
        assert [w["form"]["SequenceNumber"] for w in cbs] == ["0", "1", "2", "3"]
        assert cbs[-1]["form"]["CallbackSource"] == "call-progress-events" and "CallDuration" in cbs[-1]["form"]
        assert rest(fake, "GET", "Calls/%s.json" % sid).json()["status"] == "completed"
    finally:
        fake.stop()


def test_media_violations_and_clear(tmp_path, standin):
    """Wrong shapes from the app are recorded; clear drops audio and flushes marks."""

    async def script(ws, start, s):
        sid = start["streamSid"]
        big = base64.b64encode(b"\x55" * 8000).decode()  # 1 s
        await ws.send_str(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": big}}))
        await ws.send_str(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "a"}}))
        await ws.send_str(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": big}}))
        await ws.send_str(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "b"}}))
        await asyncio.sleep(0.3)
        await ws.send_str(json.dumps({"event": "clear", "streamSid": sid}))
        await ws.send_bytes(b"\xff" * 160)
        await ws.send_str(json.dumps({"event": "media", "streamSid": sid, "sequenceNumber": "1",
                                      "media": {"payload": "////"}}))
        await ws.send_str(json.dumps({"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "////"}}))
        await ws.send_str(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "////",
                                                                                  "track": "outbound"}}))
        await ws.send_str(json.dumps({"event": "stop", "streamSid": sid}))
        await ws.send_str("not json")

    standin.ws_script = script
    fake = start_twilio(tmp_path, standin.port)
    try:
        sid = requests.post(fake.base + "/_fake/inbound", json={"from": "+14155550100"}).json()["callSid"]
        ctl = fake.base + "/_fake/calls/" + sid
        wait_for(lambda: len(requests.get(ctl).json()["violations"]) >= 6, timeout=10)
        view = requests.get(ctl).json()
        v = "\n".join(view["violations"])
        assert "binary frame" in v and "extra fields ['sequenceNumber']" in v and "wrong streamSid" in v
        assert "media.media must be exactly" in v and "unknown event 'stop'" in v and "not JSON" in v
        assert view["clears"] == 1
        assert view["marks_echoed"] == ["a", "b"] and all(m["flushed"] for m in view["marks"])
        played = len(base64.b64decode(view["played_audio_b64"]))
        assert 1000 < played < 12000  # ~300 ms of the 2 s played before the clear (slack for a busy CI)
        assert view["direction"] == "inbound"
        hook = standin.webhooks[0]
        assert hook["sig_ok"] and hook["form"]["Direction"] == "inbound" and hook["form"]["CallStatus"] == "ringing"
        requests.post(ctl + "/hangup")
        assert requests.get(ctl).json()["status"] == "completed"
    finally:
        fake.stop()


def test_twiml_with_query_string_fails_the_call(tmp_path, standin):
    standin.twiml = lambda form: ('<Response><Connect><Stream url="wss://voice.example.test/media-stream?x=1"/>'
                                  '</Connect></Response>')
    fake = start_twilio(tmp_path, standin.port)
    try:
        sid = rest(fake, "POST", "Calls.json", data={"To": "+14155550123", "From": "+15005550001",
                                                     "Url": PUBLIC + "/twiml", "Method": "GET"}).json()["sid"]
        ctl = fake.base + "/_fake/calls/" + sid
        view = wait_for(lambda: (lambda v: v if v["status"] == "failed" else None)(requests.get(ctl).json()))
        assert any("query string" in x for x in view["violations"])
        assert view["ws_status"] is None and standin.ws_requests == []
        hook = standin.webhooks[0]
        assert hook["method"] == "GET" and hook["sig_ok"] and hook["query"]["CallSid"] == sid
    finally:
        fake.stop()


def test_handshake_refused_is_recorded(tmp_path, standin):
    standin.twiml = lambda form: ('<Response><Connect><Stream url="wss://voice.example.test/nope"/>'
                                  '</Connect></Response>')
    fake = start_twilio(tmp_path, standin.port)
    try:
        sid = requests.post(fake.base + "/_fake/inbound", json={}).json()["callSid"]
        ctl = fake.base + "/_fake/calls/" + sid
        view = wait_for(lambda: (lambda v: v if v["status"] == "completed" else None)(requests.get(ctl).json()))
        assert view["ws_status"] == "failed" and view["handshake_status"] == 404
    finally:
        fake.stop()


# ------------------------------------------------------------------------- fake OpenAI

GA_SESSION = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
              "audio": {"input": {"format": {"type": "audio/pcmu"},
                                  "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                                  "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                                     "silence_duration_ms": 500, "create_response": True,
                                                     "interrupt_response": True}},
                        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}


@pytest.fixture
def openai(tmp_path, fixtures):
    p = Proc([os.path.join(HERE, "fake_openai.py"), "--api-key", OAI_KEY, "--reply-audio", fixtures["reply"],
              "--reply-text", "Sure, for what time?", "--phrase", "%s=%s" % (fixtures["phrase"], PHRASE_TEXT),
              "--pace", "8", "--transcription-delay-ms", "50", "400"], tmp_path, "fake_openai")
    yield p
    p.stop()


def ws_url(p):
    return "ws://127.0.0.1:%d/v1/realtime?model=gpt-realtime" % p.port


async def collect(ws, until, timeout=10):
    out = []
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        out.append(ev)
        if until(ev, out):
            return out


def test_openai_turn(openai, fixtures):
    phrase = C.read_file_bytes(fixtures["phrase"])
    audio = b"\xff" * 4000 + phrase + b"\xff" * 8000

    async def run():
        async with websockets.connect(ws_url(openai), extra_headers={"Authorization": "Bearer " + OAI_KEY},
                                      compression=None) as ws:
            created = json.loads(await ws.recv())
            assert created["type"] == "session.created"
            s = created["session"]
            assert s["id"].startswith("sess_") and s["object"] == "realtime.session" and s["type"] == "realtime"
            assert s["model"] == "gpt-realtime" and isinstance(s["expires_at"], int)
            assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
            await ws.send(json.dumps({"type": "session.update", "session": GA_SESSION}))
            upd = json.loads(await ws.recv())
            assert upd["type"] == "session.updated"
            assert upd["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            assert upd["session"]["audio"]["output"]["voice"] == "marin"
            for i in range(0, len(audio), 160):
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(audio[i:i + 160]).decode()}))
            state = {}

            def until(ev, evs):
                if ev["type"] == "rate_limits.updated":
                    state["done"] = True
                if ev["type"] == "conversation.item.input_audio_transcription.completed":
                    state["tr"] = True
                return state.get("done") and state.get("tr")
            return await collect(ws, until)

    evs = asyncio.run(run())
    types = [e["type"] for e in evs if e["type"] not in (
        "response.output_audio.delta", "response.output_audio_transcript.delta",
        "conversation.item.input_audio_transcription.delta", "conversation.item.input_audio_transcription.completed")]
    assert types == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
                     "response.created", "response.output_item.added", "conversation.item.added",
                     "response.content_part.added", "response.output_audio.done",
                     "response.output_audio_transcript.done", "response.content_part.done",
                     "response.output_item.done", "conversation.item.done", "response.done",
                     "rate_limits.updated"]
    by = {}
    for e in evs:
        by.setdefault(e["type"], []).append(e)
        assert e["event_id"].startswith("event_")
    started = by["input_audio_buffer.speech_started"][0]
    user_item = started["item_id"]
    assert 150 <= started["audio_start_ms"] <= 500  # speech at 500 ms minus 300 ms prefix padding
    assert by["input_audio_buffer.speech_stopped"][0]["audio_end_ms"] > 3000
    assert by["input_audio_buffer.committed"][0]["item_id"] == user_item
    deltas = by["response.output_audio.delta"]
    assert len(deltas) > 3
    sizes = [len(base64.b64decode(d["delta"])) for d in deltas]
    assert len(set(sizes)) > 2 and all(160 <= n <= 1800 for n in sizes[:-1])
    assert b"".join(base64.b64decode(d["delta"]) for d in deltas) == C.read_file_bytes(fixtures["reply"])
    assert by["response.output_audio_transcript.done"][0]["transcript"] == "Sure, for what time?"
    assert "".join(d["delta"] for d in by["response.output_audio_transcript.delta"]) == "Sure, for what time?"
    done = by["response.done"][0]["response"]
    assert done["status"] == "completed" and done["status_details"] is None and done["usage"]["total_tokens"] > 0
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Sure, for what time?"}]
    tr = by["conversation.item.input_audio_transcription.completed"][0]
    assert tr["item_id"] == user_item and tr["transcript"] == PHRASE_TEXT
    sess = requests.get(openai.base + "/_fake/sessions").json()[-1]
    assert base64.b64decode(sess["appended_audio_b64"]) == audio
    assert sess["violations"] == [] and sess["client_event_types"][0] == "session.update"
    assert sess["responses"][0]["audio_bytes_sent"] == len(C.read_file_bytes(fixtures["reply"]))
    assert sess["user_transcripts"][0]["transcript"] == PHRASE_TEXT


def test_openai_refusals_and_errors(openai):
    async def run():
        out = {}
        # the default bad_key_mode is the verified one (acting §7.2): 101, error, close 3000
        async with websockets.connect(ws_url(openai), extra_headers={"Authorization": "Bearer wrong"}) as ws:
            out["bad_key_error"] = json.loads(await ws.recv())
            try:
                await ws.recv()
            except websockets.ConnectionClosed as e:
                out["bad_key"] = (e.code, e.reason)
        async with websockets.connect(ws_url(openai), extra_headers={"Authorization": "Bearer " + OAI_KEY,
                                                                     "OpenAI-Beta": "realtime=v1"}) as ws:
            out["beta_error"] = json.loads(await ws.recv())
            try:
                await ws.recv()
            except websockets.ConnectionClosed as e:
                out["beta_close"] = e.code
        async with websockets.connect(ws_url(openai), extra_headers={"Authorization": "Bearer " + OAI_KEY}) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "////"}))
            await ws.send(json.dumps({"type": "session.update", "event_id": "e1", "session": {"instructions": "x"}}))
            out["no_type"] = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                            "input_audio_format": "g711_ulaw"}}))
            out["beta_key"] = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "response.cancel"}))
            out["cancel"] = json.loads(await ws.recv())
        return out

    out = asyncio.run(run())
    assert out["bad_key"] == (3000, "invalid_request_error.invalid_api_key")
    assert out["bad_key_error"]["error"]["code"] == "invalid_api_key"
    assert out["beta_error"]["error"]["code"] == "beta_api_shape_disabled" and out["beta_close"] == 4000
    assert out["no_type"]["error"] == {"type": "invalid_request_error", "code": "missing_required_parameter",
                                       "message": "Missing required parameter: 'session.type'.",
                                       "param": "session.type", "event_id": "e1"}
    assert out["beta_key"]["error"]["code"] == "unknown_parameter"
    assert out["beta_key"]["error"]["message"] == "Unknown parameter: 'session.input_audio_format'."
    assert out["cancel"]["error"]["code"] == "response_cancel_not_active"
    sess = requests.get(openai.base + "/_fake/sessions").json()
    last = sess[-1]
    assert any("before session.update" in v for v in last["violations"])
    assert base64.b64decode(last["appended_audio_b64"]) == b"\xff\xff\xff"
    hs = requests.get(openai.base + "/_fake/handshakes").json()[0]
    assert hs["status"] == 101 and hs["bad_key"] is True


def test_openai_accept_delay_and_barge_in(openai, fixtures):
    phrase = C.read_file_bytes(fixtures["phrase"])
    requests.get(openai.base + "/_fake/config", params={"accept_delay_ms": "400", "pace": "1"})

    async def run():
        t = time.monotonic()
        async with websockets.connect(ws_url(openai), extra_headers={"Authorization": "Bearer " + OAI_KEY}) as ws:
            waited = time.monotonic() - t
            await ws.recv()
            await ws.send(json.dumps({"type": "session.update", "session": GA_SESSION}))
            await ws.recv()
            for i in range(0, len(phrase), 160):
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(phrase[i:i + 160]).decode()}))
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(b"\xff" * 6000).decode()}))
            first = await collect(ws, lambda ev, evs: ev["type"] == "response.output_audio.delta")
            item = first[-1]["item_id"]
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(phrase[:4000]).decode()}))
            rest_ = await collect(ws, lambda ev, evs: ev["type"] == "response.done")
            await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                                      "audio_end_ms": 100000}))
            err = await collect(ws, lambda ev, evs: ev["type"] == "error")
            await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                                      "audio_end_ms": 10}))
            ok = await collect(ws, lambda ev, evs: ev["type"] == "conversation.item.truncated")
            return waited, rest_, err[-1], ok[-1]

    waited, evs, err, ok = asyncio.run(run())
    requests.get(openai.base + "/_fake/config", params={"accept_delay_ms": "0", "pace": "8"})
    assert waited >= 0.35
    types = [e["type"] for e in evs]
    assert "input_audio_buffer.speech_started" in types
    assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
    done = evs[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["status"] == "incomplete"
    assert err["error"]["message"].startswith("Audio content of ") and err["error"]["event_id"] is None
    assert ok["audio_end_ms"] == 10


# ------------------------------------------------------ fake OpenAI: tools, MCP, idle timeout

TOOLS = [{"type": "function", "name": "lookup_order", "description": "Look up an order by its number.",
          "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}},
                         "required": ["order_number"]}},
         {"type": "function", "name": "transfer_to_human", "description": "Hand the call to a person.",
          "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}, "required": []}}]
STREAMED = ("response.output_audio.delta", "response.output_audio_transcript.delta",
            "response.function_call_arguments.delta", "response.mcp_call_arguments.delta")


def oai_config(p, **params):
    r = requests.get(p.base + "/_fake/config", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def oai_sessions(p):
    return requests.get(p.base + "/_fake/sessions").json()


async def open_session(p, model="gpt-realtime-2.1", **extra):
    """Connect, send the phone session.update (plus `extra` session keys), wait for session.updated."""
    ws = await websockets.connect("ws://127.0.0.1:%d/v1/realtime?model=%s" % (p.port, model),
                                  extra_headers={"Authorization": "Bearer " + OAI_KEY})
    assert json.loads(await ws.recv())["type"] == "session.created"
    await ws.send(json.dumps({"type": "session.update", "session": dict(GA_SESSION, model=model, **extra)}))
    ev = json.loads(await ws.recv())
    assert ev["type"] == "session.updated", ev
    return ws


async def send(ws, **ev):
    await ws.send(json.dumps(ev))


def types_of(evs, skip=STREAMED):
    return [e["type"] for e in evs if e["type"] not in skip]


def until_type(t):
    return lambda ev, evs: ev["type"] == t


def test_openai_tool_call_on_cue_and_outputs(openai):
    async def run():
        out = {}
        ws = await open_session(openai, tools=TOOLS, tool_choice="auto")
        r = requests.get(openai.base + "/_fake/cue", params={"name": "lookup_order",
                                                             "arguments": json.dumps({"order_number": "48213"})})
        assert r.status_code == 200, r.text
        out["cue"] = r.json()
        out["call"] = await collect(ws, until_type("rate_limits.updated"))
        call_id = out["cue"]["call_id"]
        await send(ws, type="conversation.item.create", event_id="c1",
                   item={"type": "function_call_output", "call_id": call_id, "output": '{"status":"shipped"}'})
        out["output"] = await collect(ws, until_type("conversation.item.done"))
        await send(ws, type="conversation.item.create", event_id="c2",
                   item={"type": "function_call_output", "call_id": "call_nope", "output": "x"})
        out["bad_id"] = await collect(ws, until_type("error"))
        await send(ws, type="conversation.item.create", event_id="c3",
                   item={"type": "function_call_output", "call_id": call_id, "output": {"status": "shipped"}})
        out["bad_output"] = await collect(ws, until_type("error"))
        await send(ws, type="conversation.item.create", event_id="c4",
                   item={"type": "function_call_output", "call_id": call_id, "output": "x", "extra": 1})
        out["bad_key"] = await collect(ws, until_type("error"))
        await send(ws, type="conversation.item.create",
                   item={"type": "message", "role": "user",
                         "content": [{"type": "input_text", "text": "The caller pressed 5."}]})
        await collect(ws, until_type("conversation.item.done"))
        await send(ws, type="response.create")
        out["reply"] = await collect(ws, until_type("rate_limits.updated"))
        await ws.close()
        return out

    out = asyncio.run(run())
    cue, evs = out["cue"], out["call"]
    assert types_of(evs) == ["response.created", "response.output_item.added", "conversation.item.added",
                             "response.function_call_arguments.done", "conversation.item.done",
                             "response.output_item.done", "response.done", "rate_limits.updated"]
    by = {}
    for e in evs:
        by.setdefault(e["type"], []).append(e)
    rid, call_id = cue["response_id"], cue["call_id"]
    assert call_id.startswith("call_") and rid == by["response.created"][0]["response"]["id"]
    added = by["response.output_item.added"][0]
    assert added["response_id"] == rid and added["output_index"] == 0
    assert added["item"] == {"id": cue["item_id"], "object": "realtime.item", "type": "function_call",
                             "status": "in_progress", "name": "lookup_order", "call_id": call_id, "arguments": ""}
    assert by["conversation.item.added"][0]["item"] == added["item"]
    deltas = by["response.function_call_arguments.delta"]
    assert len(deltas) >= 2
    for d in deltas:
        assert set(d) == {"type", "event_id", "response_id", "item_id", "output_index", "call_id", "delta"}
        assert (d["response_id"], d["item_id"], d["output_index"], d["call_id"]) == (rid, cue["item_id"], 0, call_id)
    args = '{"order_number":"48213"}'
    assert "".join(d["delta"] for d in deltas) == args
    done = by["response.function_call_arguments.done"][0]
    assert (done["name"], done["arguments"], done["call_id"], done["item_id"]) == ("lookup_order", args, call_id,
                                                                                   cue["item_id"])
    final = by["response.output_item.done"][0]["item"]
    assert final["status"] == "completed" and final["arguments"] == args
    resp = by["response.done"][0]["response"]
    assert resp["status"] == "completed" and resp["output"] == [final] and resp["usage"]["total_tokens"] > 0
    assert not any(t.startswith("response.content_part") or "audio" in t for t in types_of(evs, ()))
    # the output item and the errors
    o_added = out["output"][0]
    assert o_added["type"] == "conversation.item.added" and o_added["previous_item_id"] == cue["item_id"]
    assert o_added["item"]["type"] == "function_call_output" and o_added["item"]["call_id"] == call_id
    assert not any(e["type"] == "response.created" for e in out["output"])
    assert out["bad_id"][-1]["error"]["param"] == "item.call_id" and out["bad_id"][-1]["error"]["event_id"] == "c2"
    assert out["bad_output"][-1]["error"]["code"] == "invalid_type"
    assert out["bad_output"][-1]["error"]["param"] == "item.output"
    assert out["bad_key"][-1]["error"]["code"] == "unknown_parameter"
    assert out["reply"][-2]["response"]["output"][0]["type"] == "message"
    sess = oai_sessions(openai)[-1]
    assert [t["name"] for t in sess["tools"]] == ["lookup_order", "transfer_to_human"]
    call = sess["tool_calls"][0]
    assert (call["call_id"], call["name"], call["arguments"], call["status"], call["response_id"]) == (
        call_id, "lookup_order", args, "completed", rid) and isinstance(call["at_ms"], int)
    assert len(sess["function_outputs"]) == 1
    fo = sess["function_outputs"][0]
    assert (fo["call_id"], fo["output"], fo["response_requested"]) == (call_id, '{"status":"shipped"}', True)
    assert fo["response_id"] == sess["responses"][-1]["id"] and isinstance(fo["at_ms"], int)
    assert [u["text"] for u in sess["user_texts"]] == ["The caller pressed 5."]
    assert len(sess["violations"]) == 3
    assert "call_nope" in sess["violations"][0] and "item.output" in sess["violations"][1]
    assert [it["type"] for it in sess["items"]] == ["function_call", "function_call_output", "message", "message"]
    assert sess["items"][0]["call_id"] == call_id


def test_openai_tool_call_by_script_with_preamble(openai, fixtures):
    phrase = C.read_file_bytes(fixtures["phrase"])
    oai_config(openai, script=json.dumps([
        {"tool": "transfer_to_human", "arguments": {"reason": "caller asked"}, "say": "One moment please."},
        {"text": "Your order has shipped."}]))
    assert len(oai_config(openai)["script"]) == 2

    async def run():
        ws = await open_session(openai, tools=TOOLS)
        await send(ws, type="input_audio_buffer.append",
                   audio=base64.b64encode(b"\xff" * 1600 + phrase + b"\xff" * 8000).decode())
        first = await collect(ws, until_type("rate_limits.updated"))
        fc = [e for e in first if e["type"] == "response.output_item.done"][-1]["item"]
        await send(ws, type="conversation.item.create",
                   item={"type": "function_call_output", "call_id": fc["call_id"], "output": ""})
        await collect(ws, until_type("conversation.item.done"))
        await send(ws, type="response.create")
        second = await collect(ws, until_type("rate_limits.updated"))
        await ws.close()
        return first, second

    first, second = asyncio.run(run())
    t = [x for x in types_of(first) if not x.startswith("conversation.item.input_audio_transcription")]
    start = t.index("response.created")
    assert t[start:] == [
        "response.created", "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
        "response.output_item.done", "conversation.item.done",
        "response.output_item.added", "conversation.item.added", "response.function_call_arguments.done",
        "conversation.item.done", "response.output_item.done", "response.done", "rate_limits.updated"]
    adds = [e for e in first if e["type"] == "response.output_item.added"]
    assert [(a["output_index"], a["item"]["type"]) for a in adds] == [(0, "message"), (1, "function_call")]
    assert [e for e in first if e["type"] == "response.output_audio_transcript.done"][0]["transcript"] == \
        "One moment please."
    assert all(e["output_index"] == 1 for e in first if e["type"] == "response.function_call_arguments.delta")
    done = first[-2]["response"]
    assert [o["type"] for o in done["output"]] == ["message", "function_call"]
    assert done["output"][1]["arguments"] == '{"reason":"caller asked"}'
    assert second[-2]["response"]["output"][0]["content"][0]["transcript"] == "Your order has shipped."
    assert oai_config(openai)["script"] == []
    sess = oai_sessions(openai)[-1]
    assert [r["trigger"] for r in sess["responses"]] == ["server_vad", "response.create"]
    assert sess["responses"][0]["plan"]["tool"] == "transfer_to_human"
    assert sess["violations"] == [] and sess["function_outputs"][0]["output"] == ""


def test_openai_tool_call_cancelled_mid_arguments(openai, fixtures):
    phrase = C.read_file_bytes(fixtures["phrase"])
    oai_config(openai, tool_args_ms="3000")
    long_args = json.dumps({"order_number": "48213", "note": "x" * 200})

    async def run():
        ws = await open_session(openai, tools=TOOLS)
        cue = requests.get(openai.base + "/_fake/cue", params={"name": "lookup_order", "arguments": long_args})
        await collect(ws, until_type("response.function_call_arguments.delta"))
        busy = requests.get(openai.base + "/_fake/cue", params={"text": "hello"})
        await send(ws, type="response.cancel")
        by_cancel = await collect(ws, until_type("response.done"))
        requests.get(openai.base + "/_fake/cue", params={"name": "lookup_order", "arguments": long_args})
        await collect(ws, until_type("response.function_call_arguments.delta"))
        await send(ws, type="input_audio_buffer.append", audio=base64.b64encode(phrase[:6000]).decode())
        by_vad = await collect(ws, until_type("response.done"))
        await ws.close()
        return cue.json(), busy, by_cancel, by_vad

    cue, busy, by_cancel, by_vad = asyncio.run(run())
    oai_config(openai, tool_args_ms="50")
    assert busy.status_code == 409 and busy.json()["response_id"] == cue["response_id"]
    for evs, reason in ((by_cancel, "client_cancelled"), (by_vad, "turn_detected")):
        args_done = [e for e in evs if e["type"] == "response.function_call_arguments.done"][0]
        assert len(args_done["arguments"]) < len(long_args) and long_args.startswith(args_done["arguments"])
        item = [e for e in evs if e["type"] == "response.output_item.done"][0]["item"]
        assert item["status"] == "incomplete" and item["arguments"] == args_done["arguments"]
        assert [e for e in evs if e["type"] == "conversation.item.done"][-1]["item"]["status"] == "incomplete"
        resp = evs[-1]["response"]
        assert resp["status"] == "cancelled" and resp["status_details"] == {"type": "cancelled", "reason": reason}
        assert resp["output"] == [item]
    assert "input_audio_buffer.speech_started" in types_of(by_vad)
    sess = oai_sessions(openai)[-1]
    assert [c["status"] for c in sess["tool_calls"]] == ["incomplete", "incomplete"]


def test_openai_late_function_output_is_a_violation(openai):
    oai_config(openai, tool_output_deadline_ms="300")

    async def run():
        ws = await open_session(openai, tools=TOOLS)
        requests.get(openai.base + "/_fake/cue", params={"name": "transfer_to_human", "arguments": "{}"})
        await collect(ws, until_type("rate_limits.updated"))
        await send(ws, type="response.create")      # early: allowed
        await collect(ws, until_type("rate_limits.updated"))
        await asyncio.sleep(0.5)
        await send(ws, type="response.create")      # late and still no output: violation
        await collect(ws, until_type("rate_limits.updated"))
        await ws.close()

    asyncio.run(run())
    oai_config(openai, tool_output_deadline_ms="30000")
    sess = oai_sessions(openai)[-1]
    assert len(sess["violations"]) == 1 and "no function_call_output" in sess["violations"][0]
    assert sess["function_outputs"] == []


def test_openai_idle_timeout(openai, fixtures):
    reply_bytes = len(C.read_file_bytes(fixtures["reply"]))
    vad = dict(GA_SESSION["audio"]["input"]["turn_detection"], idle_timeout_ms=5000)
    audio = {"input": dict(GA_SESSION["audio"]["input"], turn_detection=vad), "output": GA_SESSION["audio"]["output"]}

    async def run():
        ws = await open_session(openai, audio=audio)
        await send(ws, type="response.create")          # the greeting arms the timer when it is done
        await collect(ws, until_type("rate_limits.updated"))
        await send(ws, type="input_audio_buffer.append", audio=base64.b64encode(b"\xff" * 8 * 4000).decode())
        await asyncio.sleep(0.3)                        # 4 s of silence: not yet
        await send(ws, type="input_audio_buffer.append", audio=base64.b64encode(b"\xff" * 8 * 4000).decode())
        evs = await collect(ws, until_type("rate_limits.updated"))
        await send(ws, type="session.update", session={"type": "realtime", "audio": {"input": {
            "turn_detection": dict(vad, idle_timeout_ms=1000)}}})
        err = await collect(ws, until_type("error"))
        await ws.close()
        return evs, err[-1]

    evs, err = asyncio.run(run())
    t = types_of(evs)
    assert t[:6] == ["input_audio_buffer.timeout_triggered", "input_audio_buffer.committed", "conversation.item.added",
                     "conversation.item.done", "response.created", "response.output_item.added"]
    trig = evs[0]
    assert set(trig) == {"type", "event_id", "audio_start_ms", "audio_end_ms", "item_id"}
    assert trig["audio_start_ms"] == reply_bytes // 8
    assert 5000 <= trig["audio_end_ms"] - trig["audio_start_ms"] <= 5020
    assert evs[1]["item_id"] == trig["item_id"]
    assert err["error"]["param"] == "session.audio.input.turn_detection.idle_timeout_ms"
    sess = oai_sessions(openai)[-1]
    assert len(sess["idle_timeouts"]) == 1 and sess["idle_timeouts"][0]["item_id"] == trig["item_id"]
    assert sess["idle_timeouts"][0]["response_id"] == sess["responses"][1]["id"]
    assert sess["responses"][1]["trigger"] == "idle_timeout"


def test_openai_mcp_list_call_and_approval(openai):
    orders = {"type": "mcp", "server_label": "orders", "server_url": "https://mcp.example.com/mcp",
              "headers": {"Authorization": "Bearer t0k3n"}, "allowed_tools": ["lookup_order"],
              "require_approval": "never", "server_description": "Order database"}
    crm = {"type": "mcp", "server_label": "crm", "server_url": "https://crm.example.com/mcp",
           "allowed_tools": {"tool_names": ["lookup_order", "refund_order"]}, "require_approval": "always"}
    call = {"server_label": "orders", "name": "lookup_order", "arguments": {"order_number": "48213"}}

    async def run():
        out = {}
        ws = await open_session(openai, tools=TOOLS + [orders])
        out["list"] = await collect(ws, until_type("conversation.item.done"))
        oai_config(openai, script=json.dumps([{"mcp": call}]))
        await send(ws, type="response.create")
        out["call"] = await collect(ws, until_type("rate_limits.updated"))
        out["quiet"] = []
        try:
            out["quiet"] = await collect(ws, lambda ev, evs: True, timeout=0.5)
        except asyncio.TimeoutError:
            pass
        await send(ws, type="session.update", session={"type": "realtime", "tools": TOOLS + [orders, crm]})
        await collect(ws, until_type("conversation.item.done"))
        requests.get(openai.base + "/_fake/cue", params={"mcp": json.dumps(dict(call, server_label="crm",
                                                                                name="refund_order"))})
        out["approval"] = await collect(ws, until_type("rate_limits.updated"))
        req = [e for e in out["approval"] if e["type"] == "response.output_item.done"][0]["item"]
        await send(ws, type="conversation.item.create", item={"type": "mcp_approval_response",
                                                              "approval_request_id": req["id"], "approve": True})
        await collect(ws, until_type("conversation.item.done"))
        await send(ws, type="response.create")
        out["approved"] = await collect(ws, until_type("rate_limits.updated"))
        await ws.close()
        return out

    out = asyncio.run(run())
    lst = out["list"]
    assert types_of(lst) == ["mcp_list_tools.in_progress", "conversation.item.added", "mcp_list_tools.completed",
                             "conversation.item.done"]
    item_id = lst[0]["item_id"]
    assert set(lst[0]) == {"type", "event_id", "item_id"} and lst[2]["item_id"] == item_id
    assert lst[1]["item"] == {"id": item_id, "type": "mcp_list_tools", "server_label": "orders", "tools": []}
    assert [t["name"] for t in lst[3]["item"]["tools"]] == ["lookup_order"]
    assert "input_schema" in lst[3]["item"]["tools"][0]
    evs = out["call"]
    assert types_of(evs) == ["response.created", "response.output_item.added", "conversation.item.added",
                             "response.mcp_call_arguments.done", "response.mcp_call.in_progress",
                             "response.mcp_call.completed", "conversation.item.done", "response.output_item.done",
                             "response.done", "rate_limits.updated"]
    added = evs[1]["item"]
    assert added["type"] == "mcp_call" and added["server_label"] == "orders" and added["name"] == "lookup_order"
    assert added["arguments"] == "" and added["output"] is None
    deltas = [e for e in evs if e["type"] == "response.mcp_call_arguments.delta"]
    assert "".join(d["delta"] for d in deltas) == '{"order_number":"48213"}'
    assert set(deltas[0]) == {"type", "event_id", "response_id", "item_id", "output_index", "delta"}
    inprog = [e for e in evs if e["type"] == "response.mcp_call.in_progress"][0]
    assert set(inprog) == {"type", "event_id", "item_id", "output_index"}
    final = [e for e in evs if e["type"] == "response.output_item.done"][0]["item"]
    assert final["output"] == '{"status":"shipped","eta":"2026-09-04"}' and final["error"] is None
    assert evs[-2]["response"]["output"] == [final]
    assert out["quiet"] == []            # no automatic follow-up response after an MCP result
    appr = [e for e in out["approval"] if e["type"] == "response.output_item.done"][0]["item"]
    assert set(appr) == {"id", "type", "server_label", "name", "arguments"}
    assert appr["type"] == "mcp_approval_request" and appr["name"] == "refund_order"
    approved = [e for e in out["approved"] if e["type"] == "response.output_item.done"][0]["item"]
    assert approved["type"] == "mcp_call" and approved["approval_request_id"] == appr["id"]
    sess = oai_sessions(openai)[-1]
    assert [(m["server_label"], m["name"], m["status"]) for m in sess["mcp_calls"]] == [
        ("orders", "lookup_order", "completed"), ("crm", "refund_order", "approval_requested"),
        ("crm", "refund_order", "completed")]
    assert sess["mcp_calls"][0]["output"] == final["output"]
    assert [m["server_label"] for m in sess["mcp_list_tools"]] == ["orders", "crm"]
    assert sess["mcp_list_tools"][1]["tools"] == ["lookup_order", "refund_order"]
    assert sess["mcp_approvals"][0]["approve"] is True
    assert len(sess["violations"]) == 1 and sess["violations"][0].startswith("approval required")


def test_openai_session_update_validation_and_models(openai):
    bad = [
        ({"tools": [{"type": "function", "name": "x", "parameters": {}, "strict": True}]},
         "unknown_parameter", "session.tools[0].strict"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "invalid_value", "session.tools[0].name"),
        ({"tools": [{"type": "function", "name": "x", "parameters": {"type": "string"}}]},
         "invalid_value", "session.tools[0].parameters"),
        ({"tools": [{"type": "mcp", "server_label": "m"}]}, "missing_required_parameter",
         "session.tools[0].server_url"),
        ({"tools": [{"type": "mcp", "server_label": "m", "server_url": "https://m.test", "require_approval": "x"}]},
         "invalid_value", "session.tools[0].require_approval"),
        ({"tools": [{"type": "mcp", "server_label": "m", "server_url": "https://m.test", "allowed_tools": [1]}]},
         "invalid_type", "session.tools[0].allowed_tools[0]"),
        ({"tools": [{"type": "mcp", "server_label": "m", "server_url": "https://m.test", "tool_names": []}]},
         "unknown_parameter", "session.tools[0].tool_names"),
        ({"tools": [{"type": "web_search"}]}, "invalid_value", "session.tools[0].type"),
        ({"tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "invalid_value", "session.tool_choice"),
        ({"reasoning": {"effort": "extreme"}}, "invalid_value", "session.reasoning.effort"),
        ({"truncation": {"type": "retention_ratio", "retention_ratio": 1.5}}, "invalid_value",
         "session.truncation.retention_ratio"),
        ({"truncation": "sometimes"}, "invalid_value", "session.truncation"),
        ({"max_output_tokens": 5000}, "invalid_value", "session.max_output_tokens"),
        ({"audio": {"output": {"speed": 2.0}}}, "invalid_value", "session.audio.output.speed"),
        ({"audio": {"input": {"noise_reduction": {"type": "studio"}}}}, "invalid_value",
         "session.audio.input.noise_reduction.type"),
        ({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}}}}, "invalid_value",
         "session.audio.input.turn_detection.eagerness"),
        ({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "idle_timeout_ms": 6000}}}},
         "unknown_parameter", "session.audio.input.turn_detection.idle_timeout_ms"),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 40000}}}}, "invalid_value",
         "session.audio.input.turn_detection.idle_timeout_ms"),
        ({"audio": {"input": {"transcription": {"model": "gpt-realtime-whisper", "prompt": "orders"}}}},
         "unsupported_parameter", "session.audio.input.transcription.prompt"),
        ({"audio": {"input": {"transcription": {"model": "whisper-1", "keywords": ["Acme"]}}}},
         "unsupported_parameter", "session.audio.input.transcription.keywords"),
        ({"audio": {"input": {"transcription": {"model": "gpt-transcribe", "hints": []}}}},
         "unknown_parameter", "session.audio.input.transcription.hints"),
    ]
    good = {"type": "realtime", "tools": TOOLS + [
        {"type": "mcp", "server_label": "orders", "server_url": "https://mcp.example.com/mcp",
         "authorization": "tok", "headers": {"X-A": "b"},
         "allowed_tools": {"tool_names": ["lookup_order"], "read_only": True},
         "require_approval": {"never": {"tool_names": ["lookup_order"]}, "always": {"read_only": False}},
         "server_description": "orders", "defer_loading": False, "allowed_callers": ["direct"]},
        {"type": "mcp", "server_label": "drive", "connector_id": "connector_googledrive"}],
        "tool_choice": {"type": "mcp", "server_label": "orders", "name": "lookup_order"},
        "reasoning": {"effort": "low"}, "parallel_tool_calls": False,
        "truncation": {"type": "retention_ratio", "retention_ratio": 0.8, "token_limits": {"post_instructions": 20000}},
        "max_output_tokens": 4096,
        "audio": {"input": {"noise_reduction": {"type": "near_field", "strength": 0.5},
                            "transcription": {"model": "gpt-transcribe", "language": "en", "languages": ["en", "es"],
                                              "keywords": ["Acme"], "prompt": "orders"},
                            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 8000, "threshold": 0.6}},
                  "output": {"speed": 1.25}}}

    async def run():
        out = {"bad": [], "models": {}}
        ws = await open_session(openai, model="gpt-realtime-2.1")
        for i, (upd, _, _) in enumerate(bad):
            await send(ws, type="session.update", event_id="b%d" % i, session=dict(upd, type="realtime"))
            out["bad"].append((await collect(ws, until_type("error")))[-1]["error"])
        await send(ws, type="session.update", session=good)
        out["good"] = (await collect(ws, until_type("session.updated")))[-1]["session"]
        await send(ws, type="session.update", session={"type": "realtime", "tool_choice": "required",
                                                      "audio": {"input": {"noise_reduction": {"type": "far_field"}}}})
        out["merged"] = (await collect(ws, until_type("session.updated")))[-1]["session"]
        await ws.close()
        for model in ("gpt-realtime-2.1-mini", "gpt-realtime-1.5", "gpt-realtime-2", "gpt-realtime"):
            ws = await open_session(openai, model=model)
            await send(ws, type="session.update", session={"type": "realtime", "reasoning": {"effort": "minimal"}})
            out["models"][model] = json.loads(await ws.recv())
            await ws.close()
        ws = await open_session(openai, model="gpt-realtime-1.5", audio={
            "input": dict(GA_SESSION["audio"]["input"], transcription={"model": "whisper-1"}),
            "output": GA_SESSION["audio"]["output"]})
        await ws.close()
        return out

    out = asyncio.run(run())
    for (upd, code, param), err in zip(bad, out["bad"]):
        assert (err["code"], err["param"]) == (code, param), (upd, err)
    s = out["good"]
    assert s["reasoning"] == {"effort": "low"} and s["truncation"]["retention_ratio"] == 0.8
    assert s["audio"]["input"]["transcription"]["languages"] == ["en", "es"]
    assert s["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 8000
    assert s["audio"]["output"]["speed"] == 1.25 and len(s["tools"]) == 4
    assert out["merged"]["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 0.5}
    assert out["models"]["gpt-realtime-2.1-mini"]["type"] == "session.updated"
    assert out["models"]["gpt-realtime-2"]["type"] == "session.updated"
    for m in ("gpt-realtime-1.5", "gpt-realtime"):
        assert out["models"][m]["type"] == "error" and out["models"][m]["error"]["code"] == "unsupported_parameter"
    sessions = oai_sessions(openai)
    first = sessions[0]
    assert len(first["violations"]) == len(bad)
    assert first["warnings"] and first["warnings"][-1]["kind"] == "tool_choice_required"
    assert [w["model"] for w in first["warnings"] if w["kind"] == "deprecated_model"] == ["gpt-4o-mini-transcribe"]
    by_model = {x["model"]: x for x in sessions[1:5]}
    assert by_model["gpt-realtime-1.5"]["violations"] and by_model["gpt-realtime"]["violations"]
    assert by_model["gpt-realtime-2"]["violations"] == []
    assert [(w["model"], w["where"]) for w in by_model["gpt-realtime"]["warnings"]
            if w["kind"] == "deprecated_model"] == [("gpt-realtime", "url"),
                                                     ("gpt-4o-mini-transcribe",
                                                      "session.audio.input.transcription.model")]
    assert not any(w["where"] == "url" for w in by_model["gpt-realtime-1.5"]["warnings"])
    last = sessions[-1]
    assert last["violations"] == []
    assert [(w["model"], w["shutdown_date"]) for w in last["warnings"]] == [("whisper-1", "2027-02-26")]
