#!/usr/bin/python3
"""bench/live_watchers.py: what watchers of a live call cost.

    VOICE_BUILD=/path/to/build bench/live_watchers.py [WATCHERS]

Starts the end-to-end stack of tests/e2e (real nginx with 2 workers, real
bridged, the fake Twilio and OpenAI), lets the fake Twilio make one inbound
call, and has WATCHERS (200) clients follow it on
GET /api/transcript/{callSid}/live.  Prints the CPU the nginx workers took
over 10 s while the call was quiet (each watcher's tick: one pread() and
one stat() on the thread pool every 250 ms), and the time from each
entry's timestamp to its event at a client.
"""

import datetime
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

import requests

TOP = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("VOICE_TOP", str(TOP))
sys.path.insert(0, str(TOP / "tests/e2e"))

from conftest import Stack, fixture_bytes  # noqa: E402
from test_live import EventStream  # noqa: E402


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        f = pathlib.Path("/proc/%d/stat" % pid).read_text().split()
        total += int(f[13]) + int(f[14])
    return total / os.sysconf("SC_CLK_TCK")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    stack = Stack(tempfile.mkdtemp(prefix="live-bench-")).start()
    try:
        sid = stack.tw("POST", "/_fake/inbound",
                       {"from": "+14155550100"})["callSid"]
        delays, lock = [], threading.Lock()

        def watch():
            r = requests.get(stack.base + "/api/transcript/%s/live" % sid,
                             headers={"Authorization": "Bearer "
                                      + stack.api_token},
                             stream=True, timeout=(5, 60))
            for e in EventStream(r):
                if e["event"] == "record":
                    break
                t = datetime.datetime.strptime(
                    json.loads(e["data"])["timestamp"],
                    "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                        tzinfo=datetime.timezone.utc).timestamp()
                with lock:
                    delays.append(time.time() - t)

        threads = [threading.Thread(target=watch, daemon=True)
                   for _ in range(n)]
        for t in threads:
            t.start()
        workers = [int(p) for p in os.popen(
            "pgrep -P %d" % stack.procs["nginx"].pid).read().split()]

        stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
        time.sleep(1)
        c0, t0 = cpu_seconds(workers), time.monotonic()
        time.sleep(10)
        c1, t1 = cpu_seconds(workers), time.monotonic()

        stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
        for t in threads:
            t.join(30)

        delays.sort()
        print("%d watchers: nginx workers took %.1f %% of a core while the "
              "call was quiet" % (n, 100 * (c1 - c0) / (t1 - t0)))
        print("entry to event: %d events, median %.0f ms, max %.0f ms" % (
            len(delays), 1000 * delays[len(delays) // 2],
            1000 * delays[-1]))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
