"""test_run_supervision.py: `./build.sh run` as a service manager.

bridged that dies is started again, as systemd's Restart=on-failure would,
with the same command line, and the service answers again; one that fails
at every start (its configuration) is given up on after a bounded number of
tries, and everything stops.  nginx dying stops everything, its orphaned
workers too.  SIGTERM to build.sh alone (not its process group) leaves
nothing running: not the stand-ins of the simulation, not nginx's workers,
and not a process that does not stop on SIGTERM (SIGKILL after a bounded
wait).  Each run is in a session of its own (test_readme.build_sh_run), on
free ports.
"""

import os
import re
import signal
import time

from conftest import wait_for
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
