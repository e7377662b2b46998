"""test_config.py: where configuration comes from.

.env sets what the environment does not (the environment wins); nginx.conf
stays where operators configure the service: a directive written there
wins over the environment's default.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

from conftest import TOP

sys.path.insert(0, str(TOP / "tests/fakes"))
import common  # noqa: E402  (the fakes' signature code)

CALL_SID = "CA" + "ab" * 16


def test_dotenv_does_not_override_the_environment():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="voice-env-"))
    (tmp / ".env").write_text(
        "# a comment\n"
        "PORT=4000\n"
        "export PUBLIC_URL=\"https://from-dotenv.example\"\n"
        "OPENAI_MODEL='gpt-realtime-mini'\n"
        "TRANSCRIPT_DIR=/tmp/x\r\n"
        "not a line\n")
    script = ('eval "$(sed -n \'/^load_env()/,/^}/p\' %s)"; TOP=%s; load_env; '
              'echo "$PORT|$PUBLIC_URL|$OPENAI_MODEL|$TRANSCRIPT_DIR"'
              % (TOP / "build.sh", tmp))
    env = {"PATH": os.environ["PATH"], "PORT": "5000"}
    out = subprocess.run(["bash", "-c", script], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == "5000|https://from-dotenv.example|gpt-realtime-mini|/tmp/x"


def test_a_directive_wins_over_the_environment(stack_factory):
    # the environment says voice.example.test; nginx.conf says otherwise
    stack = stack_factory(extra_http="voice_public_url https://edge.example;")
    url = "https://edge.example/twiml"
    params = {"CallSid": CALL_SID, "Direction": "inbound",
              "From": "+14155550100", "To": "+15005550001"}
    sig = common.twilio_signature(stack.auth_token, url, params)

    r = stack.api("POST", "/twiml", data=params,
                  headers={"X-Twilio-Signature": sig})
    assert r.status_code == 200, r.text
    assert '<Stream url="wss://edge.example/media-stream">' in r.text

    # signed over the environment's URL, the same request is refused
    sig = common.twilio_signature(stack.auth_token,
                                  "https://voice.example.test/twiml", params)
    r = stack.api("POST", "/twiml", data=params,
                  headers={"X-Twilio-Signature": sig})
    assert r.status_code == 403


SCHED_BATCH = 3


def sched_policy(pid):
    """the scheduling policy of a process (field 41 of /proc/PID/stat)"""
    stat = open("/proc/%d/stat" % pid).read()
    return int(stat[stat.rindex(")") + 2:].split()[38])


def test_workers_and_bridged_run_as_sched_batch(stack):
    # conf/nginx.conf.in says voice_worker_sched batch; bridged's default
    for pid in stack.status_all():
        assert sched_policy(pid) == SCHED_BATCH
    assert sched_policy(stack.procs["bridged"].pid) == SCHED_BATCH

    # and a call still goes through end to end
    assert stack.api("GET", "/api/numbers").status_code == 200
