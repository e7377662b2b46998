"""test_logs.py: every log line about a call names it.

nginx's error_log lines of a request about a call end with ", call: CA...";
$voice_call_sid and $voice_call_status put the call in an access log;
bridged's lines carry [CA...], on stderr or, with --log syslog:..., as
syslog datagrams at the same levels.
"""

import re

from conftest import fixture_bytes, wait_for

CALLEE = "+14155550123"

LOG_FORMAT = """
    log_format voice '$request_method $uri $status '
                     'sid=$voice_call_sid status=$voice_call_status';
    access_log %s voice;
"""


def place_call(stack):
    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 200, r.text
    assert r.content.endswith(b"}\n"), r.content
    return r.json()["callSid"]


def talk_and_hang_up(stack, sid):
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_call_completed(sid)


def access_lines(path):
    out = []
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"(\S+) (\S+) (\d+) sid=(\S+) status=(\S+)", line)
        assert m, line
        out.append(m.groups())
    return out


def test_nginx_names_the_call_in_error_and_access_logs(stack_factory,
                                                        tmp_path):
    access = tmp_path / "voice-access.log"
    stack = stack_factory(extra_http=LOG_FORMAT % access)

    sid = place_call(stack)
    talk_and_hang_up(stack, sid)
    stack.wait_transcript(sid)
    r = stack.api("GET", "/api/transcript/" + sid)
    assert r.status_code == 200
    assert stack.api("GET", "/api/numbers").content.endswith(b"]\n")

    # every line of a request about this call names it: Twilio's webhooks,
    # the API's, and the media stream's once its start event came
    err = stack.log("error").splitlines()
    about = [ln for ln in err if "voice:" in ln and 'request: "' in ln
             and sid in ln.split(", client:")[0]]
    assert about, "\n".join(err[-40:])
    for ln in about:
        assert ln.endswith(", call: " + sid), ln

    stream = [ln for ln in err if 'request: "GET /media-stream' in ln]
    started = [i for i, ln in enumerate(stream) if " started" in ln]
    assert started, stream
    for ln in stream[started[0]:]:
        assert ln.endswith(", call: " + sid), ln
    # stopped after N frames, closed by Twilio: lines with no SID in their
    # text are found by it now
    assert any("stream stopped" in ln and ln.endswith(sid) for ln in stream)

    # the access log: each request with its call and the call's status
    def wait_lines():
        lines = access_lines(access)
        return any(u == "/call-status" and st == "completed"
                   for _, u, _, _, st in lines) and lines
    lines = wait_for(wait_lines, 10, what="the final status's access line")

    by_uri = {}
    for method, uri, status, s, st in lines:
        by_uri.setdefault(uri, []).append((s, st))

    assert by_uri["/api/call"] == [(sid, "queued")]
    assert set(by_uri["/api/numbers"]) == {("-", "-")}
    assert by_uri["/api/transcript/" + sid] == [(sid, "-")]
    assert all(s == sid for s, _ in by_uri["/twiml"])
    assert {st for _, st in by_uri["/twiml"]} <= {"ringing", "in-progress"}
    statuses = [st for s, st in by_uri["/call-status"] if s == sid]
    assert statuses[0] == "initiated" and statuses[-1] == "completed", \
        statuses
    assert "in-progress" in statuses
    assert by_uri["/media-stream"] == [(sid, "in-progress")] or \
        by_uri["/media-stream"] == [(sid, "completed")], by_uri

    # bridged: each line about the call carries it
    text = stack.log("bridged")
    call_lines = [ln for ln in text.splitlines()
                  if "stream MZ" in ln or "call done" in ln
                  or "call.create" in ln]
    assert len(call_lines) >= 3, text
    for ln in call_lines:
        assert "[%s] " % sid in ln, ln

    # an end-call names its call and says it is completed
    sid2 = place_call(stack)
    wait_for(lambda: stack.twilio_call(sid2)["ws_status"] == "open", 20,
             what="the second call's stream")
    r = stack.api("POST", "/api/end-call", json={"callSid": sid2})
    assert r.status_code == 200, r.text
    assert r.content.endswith(b"}\n")
    wait_for(lambda: ("/api/end-call", sid2, "completed") in
             [(u, s, st) for _, u, _, s, st in access_lines(access)], 10,
             what="the end-call's access line")
    stack.wait_transcript(sid2)


def test_bridged_logs_to_syslog(stack_factory):
    stack = stack_factory(bridged_syslog=True)

    sid = place_call(stack)
    talk_and_hang_up(stack, sid)
    stack.wait_transcript(sid)

    def done():
        return "call done" in stack.log("bridged.syslog") and \
            stack.log("bridged.syslog")
    text = wait_for(done, 10, what="bridged's last line of the call")

    # nothing on stderr: every line went to syslog, one datagram each
    assert stack.log("bridged").replace(text, "").strip() == ""

    lines = text.splitlines()
    syslog = re.compile(r"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ "
                        r"bridged: (.*)")
    parsed = []
    for ln in lines:
        m = syslog.fullmatch(ln)
        assert m, ln
        parsed.append((int(m.group(1)), m.group(2)))

    # facility daemon (3): info lines are 30, warnings 28, errors 27
    assert {pri for pri, _ in parsed} <= {27, 28, 30}, parsed
    assert (30, "listening on %s" % stack.endpoints[0]) in parsed
    mine = [msg for _, msg in parsed if msg.startswith("[%s] " % sid)]
    assert any("stream MZ" in msg and "started" in msg for msg in mine), \
        mine
    assert any(msg.startswith("[%s] call done" % sid) for msg in mine), mine
