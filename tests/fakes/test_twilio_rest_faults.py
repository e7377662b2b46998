"""Tests of fake_twilio's REST fault injection (no product needed).

fail_next takes a count of requests in a row, selects them by path and
method, and fails each the way a struggling Twilio or the network in front
of it does: Twilio's error body (a 429 with Retry-After when asked), a
connection reset with no answer, a request that hangs, a slow request that
still creates its call; refuse_ms stops the fake listening for a while.
Run: /usr/bin/python3 -m pytest tests/fakes -q
"""

import socket
import time

import pytest
import requests

from test_fakes import ACC, assert_twilio_error, rest, start_twilio, wait_for

URL = "https://voice.example.test/twiml"
CALL = {"To": "+14155550123", "From": "+15005550001", "Url": URL}


def config(fake, **kw):
    r = requests.post(fake.base + "/_fake/config", json=kw, timeout=10)
    return r


def log_of(fake):
    return requests.get(fake.base + "/_fake/requests", timeout=10).json()


@pytest.fixture
def fake(tmp_path):
    f = start_twilio(tmp_path, 9)
    yield f
    f.stop()


def test_a_count_of_failures_then_success(fake):
    assert config(fake, fail_next={"status": 503, "count": 2}).status_code == 200
    assert_twilio_error(rest(fake, "GET", "IncomingPhoneNumbers.json"), 503, 20503)
    assert config(fake).json()["fail_next"]["count"] == 1
    assert_twilio_error(rest(fake, "GET", "IncomingPhoneNumbers.json"), 503, 20503)
    assert rest(fake, "GET", "IncomingPhoneNumbers.json").status_code == 200
    assert config(fake).json()["fail_next"] is None
    assert [e.get("fault") for e in log_of(fake)] == ["error", "error", None]


def test_match_and_method_select_the_requests(fake):
    config(fake, fail_next={"status": 500, "match": "Calls.json", "method": "POST", "code": 20500,
                            "message": "Internal Server Error"})
    # a request it does not select passes and does not count
    assert rest(fake, "GET", "IncomingPhoneNumbers.json").status_code == 200
    assert rest(fake, "GET", "Calls.json").status_code == 200
    assert_twilio_error(rest(fake, "POST", "Calls.json", data=CALL), 500, 20500)
    r = rest(fake, "POST", "Calls.json", data=CALL)
    assert r.status_code == 201
    calls = requests.get(fake.base + "/_fake/calls").json()
    assert calls == [r.json()["sid"]]      # the failed create placed nothing


def test_429_with_retry_after(fake):
    config(fake, fail_next={"status": 429, "retry_after": 2})
    r = rest(fake, "GET", "IncomingPhoneNumbers.json")
    assert_twilio_error(r, 429, 20429)
    assert r.json()["message"] == "Too Many Requests"
    assert r.headers["Retry-After"] == "2"
    # without retry_after there is none
    config(fake, fail_next={"status": 429})
    r = rest(fake, "GET", "IncomingPhoneNumbers.json")
    assert r.status_code == 429 and "Retry-After" not in r.headers


def test_reset_drops_the_connection_without_an_answer(fake):
    config(fake, fail_next={"mode": "reset"})
    with pytest.raises(requests.ConnectionError):
        rest(fake, "GET", "IncomingPhoneNumbers.json")
    assert rest(fake, "GET", "IncomingPhoneNumbers.json").status_code == 200
    assert [e.get("fault") for e in log_of(fake)] == ["reset", None]
    assert log_of(fake)[0]["status"] is None


def test_hang_never_answers(fake):
    config(fake, fail_next={"mode": "hang", "hang_ms": 5000})
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(fake.base + "/2010-04-01/Accounts/%s/IncomingPhoneNumbers.json" % ACC,
                     auth=(ACC, "0123456789abcdef0123456789abcdef"), timeout=1)
    assert time.monotonic() - t0 < 3
    assert rest(fake, "GET", "IncomingPhoneNumbers.json").status_code == 200


def test_slow_create_still_places_the_call(fake):
    config(fake, fail_next={"mode": "slow", "delay_ms": 1500, "match": "Calls.json"})
    with pytest.raises(requests.Timeout):
        requests.post(fake.base + "/2010-04-01/Accounts/%s/Calls.json" % ACC, data=CALL,
                      auth=(ACC, "0123456789abcdef0123456789abcdef"), timeout=0.5)
    # the client gave up; Twilio did not: the call exists
    wait_for(lambda: requests.get(fake.base + "/_fake/calls").json(), 5)
    e = [x for x in log_of(fake) if x["path"].endswith("/Calls.json")][0]
    assert e["fault"] == "slow" and e["status"] == 201


def test_refuse_ms_refuses_connections_then_listens_again(fake):
    assert config(fake, refuse_ms=800).status_code == 200

    def refused():
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", fake.port))
            return False
        except ConnectionRefusedError:
            return True
        finally:
            s.close()
    wait_for(refused, 2)
    wait_for(lambda: not refused(), 5)
    assert rest(fake, "GET", "IncomingPhoneNumbers.json").status_code == 200


def test_bad_fault_settings_are_refused(fake):
    assert config(fake, fail_next={"mode": "explode"}).status_code == 400
    assert config(fake, fail_next={"count": 0}).status_code == 400
    assert config(fake, fail_next=[1]).status_code == 400
    assert config(fake, refuse_ms=0).status_code == 400
