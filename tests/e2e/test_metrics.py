"""test_metrics.py: voice_metrics, scraped and parsed with the Prometheus
client library's own text parser (Debian's python3-prometheus-client).

The counters live in shared memory: both workers report the same figures
(fresh connections land on either), and a reload keeps them.  bridged's
own counters come over the channel with a bridged="<endpoint>" label.
Each figure must move by exactly what happened: a Twilio REST request
(/api/numbers), a call refused at voice_max_calls, a call that stays up
and is hung up, a call the assistant ends with its end_call tool.
"""

import collections
import json
import math
from urllib.parse import quote

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import fixture_bytes, wait_for

SCALARS = ("counter", "gauge")


def scrape(stack, path="/metrics"):
    """one scrape on a fresh connection: {(name, labels): value} and the
    families' types"""
    r = requests.get(stack.base + path, timeout=10, verify=stack.ca,
                     headers={"Connection": "close"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(
        "text/plain; version=0.0.4"), r.headers
    samples, types = {}, {}
    for fam in text_string_to_metric_families(r.text):
        types[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, key
            samples[key] = s.value
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, metric, **labels):
    """the sum of a metric's series whose labels include these"""
    return sum(v for (n, ls), v in samples.items() if n == metric
               and all(dict(ls).get(k) == x for k, x in labels.items()))


def nginx_own(samples):
    """what nginx keeps in shared memory (the round trip goes on moving
    with the heartbeats, and bridged's lines are bridged's)"""
    return {k: v for k, v in samples.items()
            if "bridged" not in dict(k[1]) and "bridge_rtt" not in k[0]}


def inbound(stack, caller):
    return stack.tw("POST", "/_fake/inbound", {"from": caller})["callSid"]


def test_metrics_count_what_happened(stack_factory):
    stack = stack_factory(extra_http="voice_max_calls 1;")
    ep = stack.endpoints[0]

    before, types = scrape(stack)
    # the families, Prometheus-named and typed
    for name, kind in (("voice_calls_active", "gauge"),
                       ("voice_calls", "counter"),
                       ("voice_calls_refused", "counter"),
                       ("voice_media_frames", "counter"),
                       ("voice_media_frames_dropped", "counter"),
                       ("voice_bridge_rtt_seconds", "histogram"),
                       ("voice_turn_latency_seconds", "histogram"),
                       ("voice_openai_sessions", "counter"),
                       ("voice_openai_reconnects", "counter"),
                       ("voice_openai_errors", "counter"),
                       ("voice_tool_calls", "counter"),
                       ("voice_twilio_requests", "counter"),
                       ("voice_twilio_request_seconds", "histogram"),
                       ("voice_transcripts_written", "counter"),
                       ("voice_transcripts_failed", "counter"),
                       ("voice_webhook_deliveries", "counter"),
                       ("voice_bridged_up", "gauge")):
        assert types.get(name) == kind, (name, types.get(name))
    assert value(before, "voice_bridged_up", bridged=ep) == 1
    # the heartbeats have made round trips already
    assert value(before, "voice_bridge_rtt_seconds_count") > 0
    assert value(before, "voice_bridge_rtt_seconds_bucket", le="+Inf") \
        == value(before, "voice_bridge_rtt_seconds_count")

    tw_before = len(stack.tw("GET", "/_fake/requests"))
    sessions_before = len(stack.openai_sessions())

    # a Twilio REST request
    assert stack.api("GET", "/api/numbers").status_code == 200

    # a call that stays up, and one refused while it does
    up = inbound(stack, "+14155550131")
    wait_for(lambda: stack.twilio_call(up)["ws_status"] == "open", 20, 0.1,
             "the first call's stream")
    during, _ = scrape(stack)
    assert value(during, "voice_calls_active", direction="inbound") == 1
    refused = inbound(stack, "+14155550132")
    stack.wait_call_completed(refused, 30)
    stack.tw("POST", "/_fake/calls/%s/hangup" % up, {"wait": True})
    stack.wait_transcript(up)

    # a call the assistant ends with its tool
    stack.oai("/_fake/config?script=" + quote(json.dumps(
        [{"tool": "end_call", "arguments": {"reason": "done"},
          "say": "Goodbye!"}]), safe=""))
    ended = inbound(stack, "+14155550133")
    stack.wait_call_completed(ended, 40)
    stack.wait_transcript(ended)

    def settled():
        s, _ = scrape(stack)
        files = len(stack.transcript_files())
        return (value(s, "voice_transcripts_written_total") == files
                and total(s, "voice_calls_total") == files
                and value(s, "voice_calls_active", direction="inbound") == 0
                and s)
    after = wait_for(settled, 30, 0.2, "every record counted")

    def delta(metric, **labels):
        return (total(after, metric, **labels)
                - total(before, metric, **labels))

    # nginx's own: the refused call has no record (an inbound number
    # that reports no status to us)
    records = [json.loads(p.read_text()) for p in stack.transcript_files()]
    assert sorted(r["callSid"] for r in records) == sorted([up, ended])
    assert delta("voice_transcripts_written_total") == 2
    assert delta("voice_transcripts_failed_total") == 0
    for rec in records:
        outcome = rec.get("status") or "unknown"
        assert value(after, "voice_calls_total", direction="inbound",
                     outcome=outcome) >= 1, (rec["callSid"], outcome)
    assert delta("voice_calls_total", direction="inbound") == 2
    assert delta("voice_calls_total", direction="outbound") == 0
    assert delta("voice_calls_refused_total", reason="limit") == 1
    assert delta("voice_calls_refused_total", reason="bridged_full") == 0
    assert delta("voice_media_frames_total", direction="in") > 0
    assert delta("voice_media_frames_total", direction="out") > 0
    assert delta("voice_media_frames_dropped_total") == 0
    turns = sum(1 for rec in records for e in rec["transcript"]
                if e.get("latencyMs"))
    assert turns > 0
    assert delta("voice_turn_latency_seconds_count") == turns
    assert value(after, "voice_turn_latency_seconds_bucket", le="+Inf") \
        == value(after, "voice_turn_latency_seconds_count")
    ms = sum(e["latencyMs"] for rec in records for e in rec["transcript"]
             if e.get("latencyMs"))
    assert math.isclose(delta("voice_turn_latency_seconds_sum"), ms / 1000,
                        abs_tol=0.001)
    assert delta("voice_webhook_deliveries_total") == 0

    # bridged's, as the fakes saw it
    new = stack.tw("GET", "/_fake/requests")[tw_before:]
    by_status = collections.Counter(str(q["status"]) for q in new)
    for status, n in by_status.items():
        assert delta("voice_twilio_requests_total", bridged=ep,
                     status=status) == n, (status, by_status)
    assert delta("voice_twilio_requests_total", bridged=ep) == len(new)
    assert delta("voice_twilio_request_seconds_count", bridged=ep) \
        == len(new)
    sessions = len(stack.openai_sessions()) - sessions_before
    assert sessions == 2
    assert delta("voice_openai_sessions_total", bridged=ep) == sessions
    assert delta("voice_openai_reconnects_total", bridged=ep) == 0
    assert delta("voice_tool_calls_total", bridged=ep, name="end_call",
                 outcome="ok") == 1
    assert delta("voice_tool_calls_total", bridged=ep) == 1
    assert value(after, "voice_bridged_calls", bridged=ep) == 0

    # voice_status reads the same counters
    for w in stack.status_all().values():
        assert w["audioIn"] == value(after, "voice_media_frames_total",
                                     direction="in")
        assert w["admitted"]["refused"] == value(
            after, "voice_calls_refused_total", reason="limit")


def test_openai_errors_by_code_and_reconnects(stack):
    ep = stack.endpoints[0]
    sid = inbound(stack, "+14155550151")
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    before, _ = scrape(stack)
    assert value(before, "voice_openai_sessions_total", bridged=ep) == 1
    assert value(before, "voice_bridged_calls", bridged=ep) == 1

    # OpenAI ends the session with an error: a new one takes over
    stack.oai("/_fake/fatal?code=session_expired")
    wait_for(lambda: len(stack.openai_sessions()) >= 2, 20, 0.1,
             "the second session")
    after = wait_for(lambda: (lambda s: value(
        s, "voice_openai_reconnects_total", bridged=ep) == 1 and s)(
            scrape(stack)[0]), 10, 0.1, "the reconnect counted")
    assert value(after, "voice_openai_sessions_total", bridged=ep) == 2
    assert value(after, "voice_openai_errors_total", bridged=ep,
                 code="session_expired") == 1
    assert total(after, "voice_openai_errors_total") == 1
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})


def test_every_worker_the_same_and_a_reload_keeps_them(stack):
    assert stack.api("GET", "/api/numbers").status_code == 200
    sid = stack.tw("POST", "/_fake/inbound",
                   {"from": "+14155550141"})["callSid"]
    wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", 20, 0.1,
             "the call's stream")
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_transcript(sid)
    wait_for(lambda: value(scrape(stack)[0],
                           "voice_transcripts_written_total") == 1,
             20, 0.2, "the record counted")

    # both workers answer (voice_status names them), and every scrape,
    # wherever it lands, says the same
    assert len(stack.status_all()) == 2
    views = [nginx_own(scrape(stack)[0]) for _ in range(12)]
    assert all(v == views[0] for v in views)
    assert value(views[0], "voice_media_frames_total", direction="in") > 0

    stack.reload_nginx()
    after = nginx_own(scrape(stack)[0])
    assert after == views[0]


def test_a_bridged_that_does_not_answer_is_down(stack_factory):
    stack = stack_factory(bridges=2)
    samples, _ = scrape(stack)
    for ep in stack.endpoints:
        assert value(samples, "voice_bridged_up", bridged=ep) == 1
        assert ("voice_openai_sessions_total", (("bridged", ep),)) \
            in samples

    stack.stop_process(stack.bridged_names[1])
    samples = wait_for(
        lambda: (lambda s: value(s, "voice_bridged_up",
                                 bridged=stack.endpoints[1]) == 0 and s)(
            scrape(stack)[0]), 10, 0.2, "the stopped bridged down")
    assert value(samples, "voice_bridged_up", bridged=stack.endpoints[0]) == 1
    assert ("voice_openai_sessions_total",
            (("bridged", stack.endpoints[1]),)) not in samples


def test_protected_like_any_location(stack_factory):
    """by address (conf/nginx.conf.in's /metrics), or by a bearer token
    the way docs/directives.md shows it"""
    token = "metrics-token-0123456789abcdef"
    stack = stack_factory(http_include="""
        map $http_authorization $metrics_denied {
            "Bearer %s" 0;
            default 1;
        }
    """ % token, server_include="""
        location = /metrics-open { voice_metrics; }
        location = /metrics-closed { deny all; voice_metrics; }
        location = /metrics-token {
            if ($metrics_denied) { return 401; }
            voice_metrics;
        }
    """)
    stack.secrets.append(token)
    assert requests.get(stack.base + "/metrics-closed",
                        timeout=10).status_code == 403
    assert requests.post(stack.base + "/metrics-open",
                         timeout=10).status_code == 405
    samples, _ = scrape(stack, "/metrics-open")
    assert value(samples, "voice_bridged_up", bridged=stack.endpoints[0]) == 1

    url = stack.base + "/metrics-token"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, timeout=10, headers={
        "Authorization": "Bearer nope"}).status_code == 401
    r = requests.get(url, timeout=10,
                     headers={"Authorization": "Bearer " + token})
    assert r.status_code == 200
    assert "voice_bridged_up{" in r.text

    # HEAD: the headers alone
    r = requests.head(stack.base + "/metrics-open", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
