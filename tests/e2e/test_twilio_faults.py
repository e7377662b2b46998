"""test_twilio_faults.py: the API when Twilio's REST API fails.

Requests that are safe to repeat -- listing numbers, ending a call with
Status=completed -- are sent again after a 5xx, a 429 (waiting at least
its Retry-After), a reset or refused connection or a time-out, within
bridged's deadline; creating a call is never sent twice (a second phone
call is worse than an error): the API answers 502 with Twilio's code and
message, or 504 when Twilio did not answer in time.  The fake Twilio
injects each fault (fail_next, refuse_ms) the way a struggling Twilio or
the network in front of it gives it.

POST /api/call's Idempotency-Key: the same key again, on any worker,
gets the first answer (Idempotent-Replayed: true) and Twilio no second
Calls.json; in flight, 409; with another body, 422.  A key is forgotten
when Twilio surely placed no call, kept when it may have, kept for a
client that gave up, and the zone that holds them is bounded (LRU).
"""

import json
import re
import threading
import time

import pytest

from conftest import json_of, wait_for

CALLEE = "+14155550123"
CALLER = "+14155550166"


def error_of(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.text)
    j = json_of(resp)
    assert j["success"] is False and j["error"]
    return j


def fail_next(stack, **fault):
    stack.tw("POST", "/_fake/config", {"fail_next": fault})


def requests_since(stack, n, tail=None, method=None):
    """the fake's REST requests after the first n, those whose path ends
    with tail and whose method is method when given"""
    return [q for q in stack.tw("GET", "/_fake/requests")[n:]
            if (tail is None or q["path"].endswith(tail))
            and (method is None or q["method"] == method)]


def mark(stack):
    return len(stack.tw("GET", "/_fake/requests"))


# --- requests that are safe to repeat ----------------------------------------

def test_numbers_are_retried_after_a_503_then_succeed(stack):
    n = mark(stack)
    fail_next(stack, status=503, count=2, match="IncomingPhoneNumbers")

    r = stack.api("GET", "/api/numbers")
    assert r.status_code == 200, r.text
    assert len(json_of(r)) == 3

    tries = requests_since(stack, n, "/IncomingPhoneNumbers.json")
    assert [q["status"] for q in tries] == [503, 503, 200]
    assert [q.get("fault") for q in tries] == ["error", "error", None]
    # waits that grow: 250-500 ms, then 500-1000 ms
    gaps = [b["at_ms"] - a["at_ms"] for a, b in zip(tries, tries[1:])]
    assert 200 <= gaps[0] <= 900 and 450 <= gaps[1] <= 1500, gaps
    assert "trying again" in stack.log("bridged")


def test_429_retry_after_is_honoured_within_a_bound(stack):
    n = mark(stack)
    fail_next(stack, status=429, retry_after=2, match="IncomingPhoneNumbers")

    t0 = time.monotonic()
    r = stack.api("GET", "/api/numbers")
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 >= 2

    tries = requests_since(stack, n, "/IncomingPhoneNumbers.json")
    assert [q["status"] for q in tries] == [429, 200]
    # not before Twilio said, and not much later
    gap = tries[1]["at_ms"] - tries[0]["at_ms"]
    assert 2000 <= gap <= 2600, gap

    # a Retry-After beyond bridged's deadline (20 s) is not waited for:
    # the answer comes at once, with Twilio's code and its Retry-After
    n = mark(stack)
    fail_next(stack, status=429, retry_after=60, match="IncomingPhoneNumbers")
    t0 = time.monotonic()
    j = error_of(stack.api("GET", "/api/numbers"), 502)
    assert time.monotonic() - t0 < 2
    assert j["twilioCode"] == 20429 and j["twilioStatus"] == 429
    assert j["retryAfter"] == 60
    assert "Too Many Requests" in j["error"]
    assert len(requests_since(stack, n, "/IncomingPhoneNumbers.json")) == 1


def test_numbers_give_up_after_the_retries_with_twilios_error(stack):
    n = mark(stack)
    fail_next(stack, status=500, code=20500, count=5,
              message="Internal Server Error", match="IncomingPhoneNumbers")

    j = error_of(stack.api("GET", "/api/numbers"), 502)
    assert j["twilioCode"] == 20500 and j["twilioStatus"] == 500
    assert "Internal Server Error (3 attempts)" in j["error"]
    # --twilio-retries 2: three attempts, no more
    assert len(requests_since(stack, n, "/IncomingPhoneNumbers.json")) == 3


def test_refused_connections_are_retried(stack_factory):
    stack = stack_factory(bridged_args=["--twilio-retries", "5"])
    n = mark(stack)
    stack.tw("POST", "/_fake/config", {"refuse_ms": 1500})
    time.sleep(0.3)

    r = stack.api("GET", "/api/numbers")
    assert r.status_code == 200, r.text
    assert "Connection refused" in stack.log("bridged") \
        or "Couldn't connect" in stack.log("bridged")
    # only the attempt that found Twilio listening reached it
    assert [q["status"] for q in requests_since(
        stack, n, "/IncomingPhoneNumbers.json")] == [200]


@pytest.mark.parametrize("fault", [
    {"status": 503, "count": 2},
    {"mode": "reset"},
])
def test_end_call_is_retried(stack, fault):
    sid = stack.tw("POST", "/_fake/inbound", {"from": CALLER})["callSid"]
    wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", 20,
             what="the media stream")

    n = mark(stack)
    fail_next(stack, match="/Calls/", method="POST", **fault)
    r = stack.api("POST", "/api/end-call", json={"callSid": sid})
    assert r.status_code == 200, r.text
    assert json_of(r) == {"success": True,
                          "message": "Call ended successfully"}

    tries = requests_since(stack, n, sid + ".json", "POST")
    assert all(q["form"] == {"Status": "completed"} for q in tries)
    assert [q["status"] for q in tries][-1] == 200
    assert len(tries) == fault.get("count", 1) + 1
    stack.wait_call_completed(sid)


def test_end_call_answered_twice_is_ended(stack_factory):
    # the first hang-up reaches Twilio and ends the call, but its answer
    # comes too late; the retry gets 21220 (not in progress): ended
    stack = stack_factory(twilio_timeout_ms=1000)
    sid = stack.tw("POST", "/_fake/inbound", {"from": CALLER})["callSid"]
    wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", 20,
             what="the media stream")

    n = mark(stack)
    fail_next(stack, mode="slow", delay_ms=1200, match="/Calls/",
              method="POST")
    r = stack.api("POST", "/api/end-call", json={"callSid": sid})
    assert r.status_code == 200, r.text

    tries = requests_since(stack, n, sid + ".json", "POST")
    assert len(tries) == 2, tries
    stack.wait_call_completed(sid)
    assert "taken as ended" in stack.log("bridged")


def test_the_assistants_own_hang_up_is_retried(stack):
    from urllib.parse import quote
    stack.oai("/_fake/config?script=" + quote(json.dumps([
        {"tool": "end_call", "arguments": {"reason": "done"},
         "say": "Goodbye!"}]), safe=""))
    fail_next(stack, status=502, code=20500, match="/Calls/", method="POST")
    sid = stack.tw("POST", "/_fake/inbound", {"from": CALLER})["callSid"]

    call = stack.wait_call_completed(sid, 40)
    assert call["ended_by"] == "rest"
    tries = [q for q in stack.tw("GET", "/_fake/requests")
             if q["method"] == "POST" and q["path"].endswith(sid + ".json")]
    assert [q["status"] for q in tries] == [502, 200]
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert rec["endedBy"] == "assistant"


# --- creating a call: never twice ---------------------------------------------

@pytest.mark.parametrize("fault,text", [
    ({"status": 500, "code": 20500, "message": "Internal Server Error"},
     "Twilio error 20500: Internal Server Error"),
    ({"status": 503}, "Twilio error 20503: Service Unavailable"),
    ({"status": 429, "retry_after": 1}, "Twilio error 20429"),
    ({"mode": "reset"}, "Twilio unreachable"),
])
def test_call_create_is_never_retried(stack, fault, text):
    n = mark(stack)
    fail_next(stack, match="/Calls.json", method="POST", count=3, **fault)

    r = stack.api("POST", "/api/call", json={"number": CALLEE,
                                             "fromNumber": "+15005550001"})
    j = error_of(r, 502)
    assert text in j["error"], j
    if "status" in fault:
        assert j["twilioStatus"] == fault["status"]
        assert j["twilioCode"] == fault.get("code", {
            503: 20503, 429: 20429}.get(fault["status"]))
    assert "attempts" not in j["error"]

    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 1
    assert stack.tw("GET", "/_fake/calls") == []


def test_call_create_time_out_is_504_and_not_retried(stack_factory):
    stack = stack_factory(twilio_timeout_ms=1000)
    n = mark(stack)
    # Twilio takes the call, but answers after bridged stopped waiting
    fail_next(stack, mode="slow", delay_ms=2500, match="/Calls.json")

    t0 = time.monotonic()
    j = error_of(stack.api("POST", "/api/call", json={
        "number": CALLEE, "fromNumber": "+15005550001"}), 504)
    assert time.monotonic() - t0 < 2
    assert "may have been placed" in j["error"]

    # one request, and the call it placed: why it is never sent again
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 1
    placed = wait_for(lambda: stack.tw("GET", "/_fake/calls"), 10, 0.1,
                      "the call Twilio placed anyway")
    stack.tw("POST", "/_fake/calls/%s/hangup" % placed[0], {"wait": True})


def test_a_hang_is_504_within_the_deadline(stack_factory):
    stack = stack_factory(twilio_timeout_ms=1000,
                          bridged_args=["--twilio-deadline-ms", "3000"])
    n = mark(stack)
    fail_next(stack, mode="hang", hang_ms=30000, count=10,
              match="IncomingPhoneNumbers")

    t0 = time.monotonic()
    j = error_of(stack.api("GET", "/api/numbers"), 504)
    took = time.monotonic() - t0
    assert 2 <= took < 3.6, took
    assert "did not answer in time" in j["error"]
    assert len(requests_since(stack, n, "/IncomingPhoneNumbers.json")) >= 2


# --- Idempotency-Key -----------------------------------------------------------

@pytest.fixture
def quiet(stack_factory):
    """a stack whose calls ring until the test is over: no media stream
    keeps nginx from stopping"""
    s = stack_factory()
    s.tw("POST", "/_fake/config", {"ring_ms": 600000})
    return s


def ringing(stack):
    stack.tw("POST", "/_fake/config", {"ring_ms": 600000})
    return stack


def call_with_key(stack, key, number=CALLEE, close=False, **kw):
    headers = {"Idempotency-Key": key}
    if close:
        headers["Connection"] = "close"
    return stack.api("POST", "/api/call", json={"number": number},
                     headers=headers, **kw)


def replay_pids(stack):
    """the pids of the workers that replayed an answer, from error.log"""
    return {m.group(1) for m in re.finditer(
        r"\[info\] (\d+)#\d+: .*replayed for its Idempotency-Key",
        stack.log("error"))}


def test_the_same_key_answers_the_first_call_on_every_worker(quiet):
    stack = quiet
    n = mark(stack)
    first = call_with_key(stack, "order-4711")
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    sid = json_of(first)["callSid"]

    # fresh connections until both workers have answered from the zone
    for i in range(200):
        r = call_with_key(stack, "order-4711", close=True)
        assert r.status_code == 200, r.text
        assert r.headers["Idempotent-Replayed"] == "true"
        assert r.content == first.content
        if i >= 2 and len(replay_pids(stack)) >= 2:
            break
    assert len(replay_pids(stack)) == 2, replay_pids(stack)

    # one call: Twilio got one Calls.json
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 1
    assert stack.tw("GET", "/_fake/calls") == [sid]
    zone = [w["idempotency"] for w in stack.status_all().values()]
    assert zone[0] == zone[1] and zone[0]["keys"] == 1
    assert zone[0]["replayed"] >= 3

    # the quoted form of the IETF draft is the same key
    r = call_with_key(stack, '"order-4711"')
    assert r.status_code == 200 and r.content == first.content


def test_a_different_key_places_a_new_call(quiet):
    stack = quiet
    n = mark(stack)
    a = call_with_key(stack, "key-a")
    b = call_with_key(stack, "key-b")
    assert a.status_code == 200 and b.status_code == 200
    assert json_of(a)["callSid"] != json_of(b)["callSid"]
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 2
    # and without a key, every request is a call
    c = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert c.status_code == 200
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 3


def test_the_same_key_in_flight_is_409(quiet):
    stack = quiet
    n = mark(stack)
    fail_next(stack, mode="slow", delay_ms=1500, match="/Calls.json")
    out = {}
    t = threading.Thread(target=lambda: out.update(
        first=call_with_key(stack, "slow-one")))
    t.start()
    wait_for(lambda: requests_since(stack, n, "/Calls.json", "POST"), 10,
             0.02, "the first Calls.json")

    r = call_with_key(stack, "slow-one")
    j = error_of(r, 409)
    assert r.headers["Retry-After"] == "1"
    assert "in progress" in j["error"]

    t.join(10)
    assert out["first"].status_code == 200, out["first"].text
    r = call_with_key(stack, "slow-one")
    assert r.status_code == 200 and r.content == out["first"].content
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 1


def test_the_same_key_with_another_request_is_422(quiet):
    stack = quiet
    assert call_with_key(stack, "k-422").status_code == 200
    j = error_of(call_with_key(stack, "k-422", number="+14155550124"), 422)
    assert "another request" in j["error"]


@pytest.mark.parametrize("key", ["", "a b", "x" * 256, '"open', "caf\u00e9"])
def test_a_malformed_key_is_400(quiet, key):
    stack = quiet
    n = mark(stack)
    r = stack.api("POST", "/api/call", json={"number": CALLEE},
                  headers={"Idempotency-Key": key.encode("utf-8")})
    error_of(r, 400)
    assert requests_since(stack, n, "/Calls.json") == []


def test_a_key_is_free_again_when_no_call_was_placed(quiet):
    stack = quiet
    # Twilio's 429 is never processed: the client may retry with its key
    n = mark(stack)
    fail_next(stack, status=429, match="/Calls.json")
    error_of(call_with_key(stack, "after-429"), 502)
    r = call_with_key(stack, "after-429")
    assert r.status_code == 200, r.text
    assert "Idempotent-Replayed" not in r.headers
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 2


@pytest.mark.parametrize("fault,status", [
    ({"status": 500}, 502),
    ({"mode": "slow", "delay_ms": 1500}, 504),
])
def test_a_key_keeps_an_answer_that_may_hide_a_call(stack_factory, fault,
                                                    status):
    # a 5xx or a time-out may come after Twilio placed the call: the same
    # key must not place another
    stack = ringing(stack_factory(twilio_timeout_ms=1000))
    n = mark(stack)
    fail_next(stack, match="/Calls.json", **fault)
    first = call_with_key(stack, "maybe")
    error_of(first, status)
    r = call_with_key(stack, "maybe")
    assert r.status_code == status and r.content == first.content
    assert r.headers["Idempotent-Replayed"] == "true"
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 1


def test_a_client_that_gave_up_gets_the_call_with_its_key(quiet):
    stack = quiet
    import requests as rq
    n = mark(stack)
    fail_next(stack, mode="slow", delay_ms=2000, match="/Calls.json")
    with pytest.raises(rq.Timeout):
        call_with_key(stack, "impatient", timeout=0.5)

    # the client is gone; Twilio places the call; bridged's answer is kept
    wait_for(lambda: "after the client left" in stack.log("error"), 10,
             0.1, "bridged's answer")
    r = call_with_key(stack, "impatient")
    assert r.status_code == 200, r.text
    assert r.headers["Idempotent-Replayed"] == "true"
    assert stack.tw("GET", "/_fake/calls") == [json_of(r)["callSid"]]
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == 1


def test_the_zone_is_bounded_and_evicts_the_least_recently_used(
        stack_factory):
    stack = ringing(stack_factory(extra_http="voice_zone small 32k;"))
    n = mark(stack)
    # answers that are kept (a 5xx may hide a call), without placing calls
    fail_next(stack, status=500, count=1000, match="/Calls.json")
    for i in range(120):
        error_of(call_with_key(stack, "k%03d" % i), 502)
    zone = list(stack.status_all().values())[0]["idempotency"]
    assert zone["evicted"] > 0 and zone["keys"] < 120, zone

    # the latest is still there; the oldest went, and is a new request
    sent = len(requests_since(stack, n, "/Calls.json", "POST"))
    assert call_with_key(stack, "k119").headers.get(
        "Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in call_with_key(stack, "k000").headers
    assert len(requests_since(stack, n, "/Calls.json", "POST")) == sent + 1


def test_a_reload_keeps_the_keys(quiet):
    stack = quiet
    first = call_with_key(stack, "across-reload")
    assert first.status_code == 200
    n = mark(stack)
    stack.reload_nginx()
    r = call_with_key(stack, "across-reload")
    assert r.status_code == 200 and r.content == first.content
    assert requests_since(stack, n, "/Calls.json", "POST") == []
