"""test_tls.py: TLS end to end.

nginx listens with `listen ... ssl` and a certificate made for the test
(build.sh's test CA); the fake Twilio fetches the TwiML over https:// and
opens the media stream over wss://, verifying nginx's certificate against
that CA; a whole call goes through, signatures checked over the public
URL.  On the other side bridged verifies the fake OpenAI's and the fake
Twilio's certificates against its configured CA (BRIDGED_CA_FILE) and
refuses a certificate from another CA: the call is not bridged, the API
gets a clear error, nothing hangs.
"""

import socket
import ssl

import requests

from conftest import CERTS, fixture_bytes, json_of, wait_for
from test_call import CALLEE, check_media, check_transcript, place_call


def test_a_call_over_https_and_wss(stack_factory):
    stack = stack_factory(tls=True)
    assert stack.base.startswith("https://")

    # the API over TLS, verified against the test CA
    numbers = json_of(stack.api("GET", "/api/numbers"))
    assert len(numbers) == 3

    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    # Twilio really came in over TLS: /twiml by https, the stream by wss
    call = stack.twilio_call(sid)
    assert call["twiml_status"] == 200
    tw_log = stack.log("fake_twilio")
    assert "delivering to https://localhost:%d" % stack.port in tw_log
    assert "delivered to wss://localhost:%d/media-stream" % stack.port \
        in tw_log
    log = stack.log("access")
    assert '"POST /twiml HTTP/1.1" 200' in log
    assert '"GET /media-stream HTTP/1.1" 101' in log
    check_media(stack, sid, stack.openai_sessions()[0])
    check_transcript(stack, sid, CALLEE)

    # plain HTTP on the TLS port is refused by nginx itself
    r = requests.get("http://127.0.0.1:%d/api/numbers" % stack.port,
                     timeout=10)
    assert r.status_code == 400

    # a client that does not trust the certificate's CA gets no session
    ctx = ssl.create_default_context(cafile=str(CERTS / "other-ca.pem"))
    with socket.create_connection(("127.0.0.1", stack.port)) as raw:
        try:
            ctx.wrap_socket(raw, server_hostname="localhost")
        except ssl.SSLCertVerificationError:
            pass
        else:
            raise AssertionError("a certificate from the test CA verified "
                                 "against another CA")


def test_bridged_refuses_openai_with_a_certificate_from_another_ca(
        stack_factory):
    stack = stack_factory(openai_cert="other")

    sid = place_call(stack, number=CALLEE)

    # the stream opens, bridged tries OpenAI and refuses its certificate:
    # a failure that will not go away, so it hangs up at once rather than
    # keep the caller waiting through retries
    wait_for(lambda: "hanging up: OpenAI refused the session: TLS: unable "
             "to get local issuer certificate" in stack.log("bridged"),
             30, 0.2, "bridged to refuse OpenAI's certificate")
    assert "OpenAI session lost" not in stack.log("bridged")

    # no session was ever set up on that server, no audio went to it
    assert stack.openai_sessions() == []

    # the call does not hang on: Twilio sees its stream closed
    wait_for(lambda: stack.twilio_call(sid)["status"] == "completed",
             30, 0.2, "the call to end")


def test_bridged_refuses_twilio_with_a_certificate_from_another_ca(
        stack_factory):
    stack = stack_factory(twilio_cert="other")

    r = stack.api("GET", "/api/numbers")
    assert r.status_code == 502, r.text
    assert json_of(r)["success"] is False
    assert "SSL certificate problem" in stack.log("bridged")

    r = stack.api("POST", "/api/call", json={"number": CALLEE})
    assert r.status_code == 502, r.text

    # and the REST API saw no request at all
    assert stack.tw("GET", "/_fake/requests") == []
