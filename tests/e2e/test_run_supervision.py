"""test_run_supervision.py: `./build.sh run` as a service manager.

bridged that dies is started again, as systemd's Restart=on-failure would,
with the same command line, and the service answers again -- a call that
was live on it goes on, handed to the new one; one that fails
at every start (its configuration) is given up on after a bounded number of
tries, and everything stops.  nginx dying stops everything, its orphaned
workers too.  SIGTERM to build.sh alone (not its process group) leaves
nothing running: not the stand-ins of the simulation, not nginx's workers,
and not a process that does not stop on SIGTERM (SIGKILL after a bounded
wait).  Each run is in a session of its own (test_readme.build_sh_run), on
free ports.
"""

import json
import os
import re
import signal
import time

import requests
import urllib3

from conftest import FIXTURES, wait_for
from test_readme import alive, build_sh_run, describe

STOP_GRACE_S = 10       # build.sh's SIGTERM-then-SIGKILL wait


def bridged(run):
    return {pid: args for pid, args in run.find("bridged").items()
            if "--listen" in args}


def nginx_master(run):
    masters = [pid for pid, args in run.find("nginx").items()
               if "master process" in args]
    assert len(masters) == 1, run.find("nginx")
    return masters[0]


def test_bridged_is_restarted_when_it_dies():
    with build_sh_run(prefix="voice-restart-") as run:
        (old, argv), = bridged(run).items()
        master = nginx_master(run)
        os.kill(old, signal.SIGKILL)

        # a new bridged, with the same command line (the same endpoint,
        # which nginx's workers reconnect to), within a few seconds
        new = wait_for(lambda: [p for p in bridged(run) if p != old], 5, 0.1,
                       "a new bridged")
        assert len(new) == 1, new
        assert bridged(run)[new[0]] == argv
        wait_for(lambda: re.search(
            r"^build\.sh: bridged \(pid %d\) was killed by signal 9\b.*; "
            r"restarting it in 1 s \(restart #1\)$" % old, run.log(), re.M),
            5, 0.1, "the restart in build.sh's log")

        # the service answers again (both workers reach the new bridged)
        wait_for(run.answers, 15, 0.2, "the API to answer again")
        # nothing else was restarted
        assert nginx_master(run) == master
        assert "stopping everything" not in run.log()

        rc, left = run.stop()
        assert rc == 0, run.log()[-3000:]
        assert not left, left


def test_a_live_call_goes_on_across_a_restart():
    """the simulation's call, its bridged killed as the stream starts: the
    restarted bridged takes it over, and the caller, speaking again, gets
    the whole scripted conversation; one record, with the hand-over noted,
    and no fallback message"""
    urllib3.disable_warnings()
    with build_sh_run(prefix="voice-restart-call-") as run:
        twilio = re.search(r"fake Twilio at (https://[^\s,]+)",
                           run.log()).group(1)

        def tw(method, path, body=None):
            # (the stand-in's certificate is the build's test CA's)
            r = requests.request(method, twilio + path, json=body,
                                 verify=False, timeout=30)
            r.raise_for_status()
            return r.json()

        r = requests.post(run.base + "/api/call", headers=run.auth,
                          json={"number": "+14155550123"}, timeout=10)
        assert r.status_code == 200, r.text
        sid = r.json()["callSid"]
        logs = run.tmp + "/logs"

        # the call's stream started (its journal is there): kill bridged
        wait_for(lambda: any(f.startswith(".%s_" % sid)
                             for f in os.listdir(logs)),
                 20, 0.02, "the call's journal")
        (old, _), = bridged(run).items()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: [p for p in bridged(run) if p != old], 5, 0.1,
                 "a new bridged")
        wait_for(lambda: "took over" in "".join(
            open(os.path.join(logs, f)).read() for f in os.listdir(logs)
            if f.startswith(".%s_" % sid)), 15, 0.1, "the hand-over's note")

        # the caller speaks again (unless the rest of the first sentence,
        # heard by the new session, was enough: the call may be over):
        # the new session plays the whole script, to the assistant's
        # end_call
        requests.post(twilio + "/_fake/calls/%s/say" % sid, verify=False,
                      json={"audio": str(FIXTURES / "caller.ulaw")},
                      timeout=30)
        rec = wait_for(lambda: next(
            (json.load(open(os.path.join(logs, f)))
             for f in os.listdir(logs)
             if f.startswith(sid + "_") and f.endswith(".json")), None),
            60, 0.2, "the call's record")
        entries = rec["transcript"]
        notes = [e for e in entries if e["role"] == "note"]
        assert len(notes) == 1 and "dropped its connection" in \
            notes[0]["text"], entries
        after = entries[entries.index(notes[0]):]
        assert [e.get("name") for e in after if e["role"] == "tool"] == \
            ["check_tables", "end_call"], entries
        assert rec["endedBy"] == "assistant", rec
        assert tw("GET", "/_fake/calls/" + sid)["says"] == []
        assert "restarting it in 1 s (restart #1)" in run.log()

        rc, left = run.stop()
        assert rc == 0, run.log()[-3000:]
        assert not left, left


def test_bridged_failing_at_start_is_given_up():
    # bridged refuses this at start (exit status 2): a configuration error
    with build_sh_run({"BRIDGED_FINAL_WAIT_MS": "not-a-number"},
                      wait_up=False, prefix="voice-giveup-") as run:
        # 5 quick failures, with 1 + 2 + 4 + 8 s between them
        rc = run.p.wait(90)
        log = run.log()
        assert rc != 0, log[-3000:]
        delays = re.findall(r"^build\.sh: bridged \(pid \d+\) exited with "
                            r"status 2; restarting it in (\d+) s", log, re.M)
        assert delays == ["1", "2", "4", "8"], log[-3000:]
        assert re.search(r"^build\.sh: error: bridged failed 5 times in a "
                         r"row .*stopping everything$", log, re.M), log[-3000:]
        rc2, left = run.stop()
        assert not left, left


def test_nginx_dying_stops_everything():
    with build_sh_run(prefix="voice-nginx-dies-") as run:
        master = nginx_master(run)
        workers = [p for p, a in run.find("nginx").items() if p != master]
        assert workers
        os.kill(master, signal.SIGKILL)
        rc = run.p.wait(20)
        assert rc != 0
        assert re.search(r"^build\.sh: nginx \(pid %d\) was killed by signal "
                         r"9\b.*stopping everything$" % master, run.log(),
                         re.M), run.log()[-3000:]
        # its workers, orphaned, are stopped too
        rc2, left = run.stop(timeout=0)
        assert not left, left


def test_sigterm_to_build_sh_alone_stops_everything():
    with build_sh_run(prefix="voice-sigterm-") as run:
        procs = run.processes()
        names = " ".join(" ".join(a) for a in procs.values())
        # (not vacuous: everything it starts is seen)
        for what in ("nginx: master", "nginx: worker", "/bridged --listen",
                     "fake_openai.py", "fake_twilio.py", "tool_server.py"):
            assert what in names, (what, names)

        t0 = time.monotonic()
        os.kill(run.p.pid, signal.SIGTERM)      # build.sh alone
        rc = run.p.wait(STOP_GRACE_S + 10)
        assert rc == 0, run.log()[-3000:]
        left = [k for k in procs if alive(k)]
        assert not left, "left running:\n" + describe(left)
        assert not run.left(), describe(run.left())
        assert time.monotonic() - t0 < STOP_GRACE_S, \
            "a graceful stop took %.1f s" % (time.monotonic() - t0)
        assert "still running after" not in run.log()


def test_sigterm_kills_what_does_not_stop():
    with build_sh_run(prefix="voice-sigkill-") as run:
        procs = run.processes()
        # two that cannot act on SIGTERM: nginx's master (its workers are
        # then stopped by nobody but build.sh) and a stand-in
        stuck = [nginx_master(run), run.fake("fake_openai")]
        for p in stuck:
            os.kill(p, signal.SIGSTOP)

        t0 = time.monotonic()
        os.kill(run.p.pid, signal.SIGTERM)      # build.sh alone
        rc = run.p.wait(STOP_GRACE_S + 15)
        took = time.monotonic() - t0
        assert rc == 0, run.log()[-3000:]
        left = [k for k in procs if alive(k)]
        assert not left, "left running:\n" + describe(left)
        assert not run.left(), describe(run.left())
        assert STOP_GRACE_S - 1 < took < STOP_GRACE_S + 10, took
        assert re.search(r"^build\.sh: still running after %d s.*killed "
                         r"\(SIGKILL\)" % STOP_GRACE_S, run.log(), re.M), \
            run.log()[-3000:]
