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
    # twilio-rest.md §10.1 B: the wss URL, not https
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
        try:
            async with websockets.connect(ws_url(openai), extra_headers={"Authorization": "Bearer wrong"}):
                pass
        except websockets.InvalidStatusCode as e:
            out["bad_key"] = e.status_code
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
    assert out["bad_key"] == 401
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
    assert requests.get(openai.base + "/_fake/handshakes").json()[0]["status"] == 401


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
