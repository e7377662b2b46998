"""test_live.py: the live calls, seen from any worker.

GET /api/calls lists the calls of every worker (from the shared zone);
GET /api/transcript/{callSid}/live streams a call's entries as
Server-Sent Events while it runs, then its final record, then ends; a
client that comes back with Last-Event-ID gets what it did not see, once.
nginx runs two workers here, and each request is pinned to a known worker
(a keep-alive connection stays on the worker that accepted it: its
/voice-status says which), so both the worker that holds the call and the
other one answer.

Debian has no SSE client library (no python3-sseclient), so most tests
read the events with EventStream below, a small parser written to the
WHATWG HTML standard's "Server-sent events" section (9.2.6, interpreting
an event stream), over requests' streamed body: it also shows what a
client hides (comments, the headers, the stream's end).  The tests named
test_eventsource_* read the stream the way an operator's dashboard
would, with a real client that is not ours: the npm package eventsource
(the WHATWG EventSource for Node.js, the one most Node code uses), run
by tests/sse/watch.js.  Its version is pinned by tests/sse/package-lock.json
at 4.1.1: the newest line that runs on the machines' Node.js 20 (5.x wants
22.12), and, like 3.x, it takes a fetch function, which is how the
bearer token goes on its requests (2.x took headers, and is no longer
maintained).  build.sh installs it with npm ci into the build directory
(sse/node_modules).
"""

import json
import os
import re
import secrets
import subprocess
import threading
import time

import pytest
import requests

from conftest import BUILD, TOP, fixture_bytes, fixture_text, json_of, \
    wait_for

CALLEE = "+14155550123"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class EventStream:
    """Events of a text/event-stream body, as the WHATWG standard says a
    user agent reads them: lines end at CRLF, LF or CR; a blank line
    dispatches the event (none when its data is empty); a line starting
    with ':' is a comment; "field: value" loses one leading space of its
    value; data lines are joined with LF; id sets the last event id (not
    when it holds NUL); an event cut off by the end of the stream is
    dropped."""

    def __init__(self, resp):
        self.resp = resp
        self.chunks = resp.iter_content(chunk_size=None)
        self.buf = ""
        self.pending_cr = False
        self.last_id = ""
        self.comments = []
        self.ended = False
        self.decoder = None

    def _lines(self):
        import codecs
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        for chunk in self.chunks:
            text = self.decoder.decode(chunk)
            if self.pending_cr and text.startswith("\n"):
                text = text[1:]
            self.pending_cr = False
            self.buf += text
            while True:
                m = re.search(r"\r\n|\r|\n", self.buf)
                if not m:
                    break
                if m.group() == "\r" and m.end() == len(self.buf):
                    # a CR at the end of a chunk may be half of a CRLF
                    self.pending_cr = True
                line, self.buf = self.buf[:m.start()], self.buf[m.end():]
                yield line
        self.ended = True

    def __iter__(self):
        etype, data = "", []
        for line in self._lines():
            if line == "":
                if data:
                    yield {"event": etype or "message",
                           "data": "\n".join(data), "id": self.last_id}
                etype, data = "", []
                continue
            if line.startswith(":"):
                self.comments.append(line[1:])
                continue
            field, sep, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                etype = value
            elif field == "data":
                data.append(value)
            elif field == "id" and "\0" not in value:
                self.last_id = value
            # retry and unknown fields: nothing to do here

    def close(self):
        self.resp.close()


def pinned(stack, want=None, avoid=None):
    """a session on one keep-alive connection, and the pid of the worker
    that holds it: want or, else, one other than avoid"""
    for _ in range(200):
        s = requests.Session()
        pid = s.get(stack.base + "/voice-status", timeout=5).json()["pid"]
        if (want is None or pid == want) and (avoid is None or pid != avoid):
            return s, pid
        s.close()
    raise AssertionError("no connection reached the worker wanted")


def auth(stack):
    return {"Authorization": "Bearer " + stack.api_token}


def calls(session, stack):
    r = session.get(stack.base + "/api/calls", headers=auth(stack),
                    timeout=10)
    assert r.status_code == 200, r.text
    assert r.text.endswith("}\n")
    return json_of(r)["calls"]


def live(session, stack, sid, last_id=None):
    headers = auth(stack)
    headers["Accept"] = "text/event-stream"
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    r = session.get(stack.base + "/api/transcript/%s/live" % sid,
                    headers=headers, stream=True, timeout=(5, 30))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/event-stream"
    assert r.headers["Cache-Control"] == "no-cache"
    return EventStream(r)


def take(events, n):
    it = iter(events)
    return [next(it) for _ in range(n)]


def place_call(stack):
    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 200, r.text
    return json_of(r)["callSid"]


WATCH_JS = TOP / "tests" / "sse" / "watch.js"
SSE_MODULES = BUILD / "sse" / "node_modules"


class Watcher:
    """tests/sse/watch.js following one call with the npm eventsource
    client, in a process of its own; events holds the JSON lines it
    printed ({"type", "id", "data"}), as they came"""

    def __init__(self, stack, sid, args, n):
        assert (SSE_MODULES / "eventsource").is_dir(), \
            "no eventsource client in %s: ./build.sh build installs it" \
            % SSE_MODULES
        # the token in the environment: a command line is public (ps)
        env = dict(os.environ, NODE_PATH=str(SSE_MODULES),
                   VOICE_API_TOKEN=stack.api_token,
                   NODE_EXTRA_CA_CERTS=stack.ca)
        self.stderr = stack.dir / ("watch-%d.log" % n)
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                ["node", str(WATCH_JS),
                 stack.base + "/api/transcript/%s/live" % sid] + list(args),
                stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        self.events = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def of(self, kind):
        return [e for e in list(self.events) if e["type"] == kind]

    def wait(self, kind, n, timeout=30):
        """the first n events of that type, once they came"""
        wait_for(lambda: len(self.of(kind)) >= n or self.proc.poll()
                 is not None, timeout, 0.05, "%d %s events" % (n, kind))
        got = self.of(kind)
        assert len(got) >= n, (self.events, self.stderr.read_text())
        return got[:n]

    def finish(self, timeout=30):
        """its exit status, once it has ended and all it printed is read"""
        rc = self.proc.wait(timeout)
        self.reader.join(5)
        assert not self.reader.is_alive()
        return rc

    def types(self):
        return [e["type"] for e in self.events]


@pytest.fixture
def watch(stack):
    """watch(sid, *args): a Watcher; any still running at the end is
    killed before the stack stops"""
    started = []

    def make(sid, *args):
        w = Watcher(stack, sid, args, len(started))
        started.append(w)
        return w
    yield make
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait(10)


def said(entries):
    return sorted((e["role"], e["text"]) for e in entries)


def test_live_calls_and_their_stream_on_every_worker(stack):
    a, pid_a = pinned(stack)
    b, pid_b = pinned(stack, avoid=pid_a)

    assert calls(a, stack) == [] and calls(b, stack) == []

    sid = place_call(stack)

    # every worker lists it at once: ringing (Twilio has not fetched the
    # TwiML yet) or already live
    for s in (a, b):
        listed = calls(s, stack)
        assert len(listed) == 1, listed
        c = listed[0]
        assert (c["callSid"], c["direction"], c["phoneNumber"]) == \
            (sid, "outbound", CALLEE)
        assert c["state"] in ("ringing", "live") and ISO.match(c["timestamp"])

    # a watcher on each worker, from the start
    streams = {pid_a: iter(live(a, stack, sid)), pid_b: iter(live(b, stack, sid))}

    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))

    # while the call runs: both entries, in the order they were journaled,
    # numbered from 1, on both workers alike
    seen = {}
    for pid, events in streams.items():
        got = take(events, 2)
        assert [e["event"] for e in got] == ["utterance", "utterance"]
        assert [e["id"] for e in got] == ["1", "2"]
        seen[pid] = [json.loads(e["data"]) for e in got]
    assert seen[pid_a] == seen[pid_b]
    entries = seen[pid_a]
    assert sorted((e["role"], e["text"]) for e in entries) == sorted(
        [("user", fixture_text("caller")), ("assistant", fixture_text("reply"))])
    assert all(isinstance(e["order"], int) and ISO.match(e["timestamp"])
               for e in entries)

    # ... and it does run: Twilio has not ended it, every worker says live
    assert stack.twilio_call(sid)["status"] == "in-progress"
    for s in (a, b):
        assert [(c["callSid"], c["state"]) for c in calls(s, stack)] == \
            [(sid, "live")]

    # a client back after event 1 gets event 2, and only it, on either
    # worker
    c1, _ = pinned(stack, want=pid_b)
    again = live(c1, stack, sid, last_id="1")
    resumed = iter(again)
    e = next(resumed)
    assert (e["event"], e["id"], json.loads(e["data"])) == \
        ("utterance", "2", entries[1])
    c2, _ = pinned(stack, want=pid_a)
    caught_up = iter(live(c2, stack, sid, last_id="2"))

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_transcript(sid)
    record = json_of(stack.api("GET", "/api/transcript/" + sid))

    # then the final record, as GET /api/transcript has it, and the end
    for events in list(streams.values()) + [resumed, caught_up]:
        rest = list(events)
        assert [e["event"] for e in rest] == ["record"], rest
        assert json.loads(rest[0]["data"]) == record

    # gone from the list, on every worker
    for s in (a, b):
        wait_for(lambda: calls(s, stack) == [], 20, 0.2,
                 "the call to leave the list")

    # once over, a stream is the record alone, on either worker
    for s in (a, b):
        after = list(live(s, stack, sid))
        assert len(after) == 1 and after[0]["event"] == "record"
        assert json.loads(after[0]["data"]) == record


def test_inbound_call_listed_and_kept_alive(stack):
    caller = "+14155550177"
    sid = stack.tw("POST", "/_fake/inbound", {"from": caller})["callSid"]
    s, _ = pinned(stack)

    def listed():
        got = [c for c in calls(s, stack) if c["state"] == "live"]
        return got and got[0]
    c = wait_for(listed, 20, 0.1, "the inbound call to be live")
    assert (c["callSid"], c["direction"], c["phoneNumber"]) == \
        (sid, "inbound", caller)

    # a quiet call: a comment every 15 s keeps the stream's proxies and
    # clients from timing it out
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    w, _ = pinned(stack)
    stream = live(w, stack, sid)
    events = iter(stream)
    assert [e["id"] for e in take(events, 2)] == ["1", "2"]
    time.sleep(16)

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_transcript(sid)
    assert [e["event"] for e in events] == ["record"]
    assert " keepalive" in stream.comments
    wait_for(lambda: calls(s, stack) == [], 20, 0.2, "an empty list")


def test_reload_ends_streams_and_the_client_resumes(stack):
    """a reload's old worker ends its streams (it keeps its calls); the
    client comes back to a new worker with Last-Event-ID"""
    sid = stack.tw("POST", "/_fake/inbound",
                   {"from": "+14155550178"})["callSid"]
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    s, _ = pinned(stack)
    stream = live(s, stack, sid)
    events = iter(stream)
    first = take(events, 2)

    stack.reload_nginx()
    assert list(events) == [] and stream.ended
    assert stream.last_id == "2"

    n, _ = pinned(stack)
    events = iter(live(n, stack, sid, last_id=stream.last_id))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rest = list(events)
    assert [e["event"] for e in rest] == ["record"]
    record = json.loads(rest[0]["data"])
    assert sorted(u["text"] for u in record["transcript"]) == \
        sorted(json.loads(e["data"])["text"] for e in first)


def test_unknown_call_bad_requests_and_auth(stack):
    unknown = "CA" + secrets.token_hex(16)
    r = stack.api("GET", "/api/transcript/%s/live" % unknown)
    assert r.status_code == 404, r.text
    assert unknown in json_of(r)["error"]

    r = stack.api("GET", "/api/transcript/CAnothex/live")
    assert r.status_code == 400
    r = stack.api("POST", "/api/transcript/%s/live" % unknown)
    assert r.status_code == 405
    r = stack.api("POST", "/api/calls")
    assert r.status_code == 405
    r = stack.api("GET", "/api/transcript/%s/live" % unknown,
                  headers={"Last-Event-ID": "x1"})
    assert r.status_code == 400

    for path in ("/api/calls", "/api/transcript/%s/live" % unknown):
        r = stack.api("GET", path, token=False)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = stack.api("GET", path, token="wrong-" + secrets.token_hex(8))
        assert r.status_code == 403


def test_record_without_live_call_is_one_event(stack):
    """a record on disk (an earlier call) and no call: the record, and the
    stream ends"""
    sid = "CA" + secrets.token_hex(16)
    doc = {"callSid": sid, "phoneNumber": "+14155550100",
           "timestamp": "2026-12-01T09:00:00.000Z",
           "transcript": [{"role": "user", "text": "hello",
                           "timestamp": "2026-12-01T09:00:01.000Z"}]}
    text = json.dumps(doc, indent=2) + "\n"
    (stack.transcripts / ("%s_+14155550100_2026-12-01T09-00-00-000Z.json"
                          % sid)).write_text(text)
    s, _ = pinned(stack)
    started = time.monotonic()
    got = list(live(s, stack, sid))
    assert len(got) == 1 and got[0]["event"] == "record"
    assert got[0]["data"] == text[:-1]
    assert json.loads(got[0]["data"]) == doc
    assert time.monotonic() - started < 5


def test_clients_that_leave_mid_stream(stack):
    """watchers that go at any point (before an event, after one, while a
    tick reads) leave nothing behind: the call goes on, a new watcher is
    served, the workers log nothing alarming (the conftest checks)"""
    sid = stack.tw("POST", "/_fake/inbound",
                   {"from": "+14155550179"})["callSid"]
    # known once Twilio has fetched /twiml: before, its SID is nobody's
    # (404)
    s, _ = pinned(stack)
    wait_for(lambda: calls(s, stack), 20, 0.05, "the call to be listed")
    gone = []
    for _ in range(6):
        s, _ = pinned(stack)
        gone.append(live(s, stack, sid))
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    for i, stream in enumerate(gone):
        if i % 2:
            take(iter(stream), 1)
        stream.close()
    time.sleep(0.6)

    s, _ = pinned(stack)
    events = iter(live(s, stack, sid))
    assert [e["id"] for e in take(events, 2)] == ["1", "2"]
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    assert [e["event"] for e in events] == ["record"]


def test_eventsource_client_follows_a_call(stack, watch):
    """the npm eventsource client, with the bearer token: each entry while
    the call runs, ids increasing, then the record as GET
    /api/transcript/{callSid} has it; one that stops after the first, and
    one that starts with Last-Event-ID, see each entry once between them"""
    sid = place_call(stack)
    whole = watch(sid)
    first = watch(sid, "--close-after", "1")

    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    during = whole.wait("utterance", 2)
    assert stack.twilio_call(sid)["status"] == "in-progress"
    assert [e["id"] for e in during] == ["1", "2"]
    entries = [json.loads(e["data"]) for e in during]
    assert said(entries) == said([
        {"role": "user", "text": fixture_text("caller")},
        {"role": "assistant", "text": fixture_text("reply")}])

    # closed by its own choice after one: no record, no reconnection
    assert first.finish() == 0, first.stderr.read_text()
    assert [(e["type"], e["id"]) for e in first.events] == \
        [("open", None), ("utterance", "1")]
    assert json.loads(first.events[1]["data"]) == entries[0]

    # its successor says where it stopped, as a client that kept the id
    # across its own restart would: it gets the rest only
    rest = watch(sid, "--last-event-id", first.events[1]["id"])
    resumed = rest.wait("utterance", 1)
    assert resumed[0]["id"] == "2"
    assert json.loads(resumed[0]["data"]) == entries[1]

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_transcript(sid)
    record = json_of(stack.api("GET", "/api/transcript/" + sid))

    for w, want in ((whole, ["open", "utterance", "utterance", "record"]),
                    (rest, ["open", "utterance", "record"])):
        assert w.finish() == 0, w.stderr.read_text()
        assert w.types() == want, w.events
        assert json.loads(w.events[-1]["data"]) == record
    assert said(record["transcript"]) == said(entries)


def test_eventsource_client_reconnects_with_its_last_event_id(stack, watch):
    """a reload ends the old worker's streams: the client reconnects by
    itself (after its default 3 s: the server sends no retry field),
    sending the last id it saw, and gets no entry twice, then the
    record"""
    sid = stack.tw("POST", "/_fake/inbound",
                   {"from": "+14155550180"})["callSid"]
    # an inbound call's SID is known once Twilio has fetched /twiml
    s, _ = pinned(stack)
    wait_for(lambda: calls(s, stack), 20, 0.05, "the call to be listed")
    w = watch(sid)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    before = w.wait("utterance", 2)

    stack.reload_nginx()
    w.wait("open", 2)
    assert "error" in w.types()
    assert w.proc.poll() is None

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_transcript(sid)
    record = json_of(stack.api("GET", "/api/transcript/" + sid))
    assert w.finish() == 0, w.stderr.read_text()

    # the end of the first stream is an error event (the client's
    # reconnection), more of them if a try failed; then it opens again
    types = w.types()
    assert [t for t in types if t != "error"] == \
        ["open", "utterance", "utterance", "open", "record"], w.events
    assert types[types.index("open", 1) - 1] == "error"
    assert [e["id"] for e in w.of("utterance")] == ["1", "2"]
    assert w.of("utterance") == before
    assert json.loads(w.events[-1]["data"]) == record
    assert said(record["transcript"]) == \
        said(json.loads(e["data"]) for e in before)
