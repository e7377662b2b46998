#!/usr/bin/python3
"""bench/bench.py: the voice bridge's benchmark (what `./build.sh bench`
runs once everything is built).

  bench/bench.py               nginx + bridged against bench_fake_openai,
                               one row per level of BENCH_LEVELS, then one
                               row with a slow OpenAI (caller audio held)
                               and a ws/wss pair
  bench/bench.py --calibrate   bench_load against bench_fake_openai
                               --twilio-echo, no bridge: the tools' floor
  bench/bench.py --scale       one level (BENCH_SCALE_CALLS, 600) with 1, 2
                               and 3 bridged daemons (BENCH_SCALE_BRIDGES)
                               behind the one nginx
  bench/bench.py --callgrind   nginx and bridged under valgrind's callgrind,
                               BENCH_CG_CALLS (10) calls of 5 s and of 15 s,
                               with the fake echoing and not: instructions
                               per frame in each direction
  bench/bench.py --overload    voice_max_calls BENCH_MAX_CALLS (800), and
                               BENCH_OVERLOAD_CALLS (twice as many) calls
                               offered: the admitted calls' round trips and
                               losses, and how many were refused (1013);
                               then the same offer without the limit
                               (BENCH_OVERLOAD_CONTROL=0 skips it)

The load tools (bench_load, bench_fake_openai, this script) run on core 0,
nginx (one worker) and bridged on core 1 (taskset).  Each level gets a
fresh nginx, bridged and fake OpenAI (a Stack).  bench_load marks its
steady window on stderr and the Sampler reads /proc there: utime + stime
of the nginx master and worker and of bridged, their VmRSS (over the idle
RSS taken before the level), and the tools' own CPU.  The Report prints
the rows and writes them, with every counter, to the results file.

Environment: BENCH_LEVELS ("100 500 1000"), BENCH_SECONDS (30: seconds of
full load per level, after the ramp), BENCH_RAMP (200 calls/s),
BENCH_DELAY_CALLS (50) and BENCH_DELAY_MS (300) for the slow-OpenAI row
(BENCH_DELAY_CALLS=0 skips it), BENCH_BRIDGES (1: bridged daemons behind
nginx, all on core 1), BENCH_TLS_CALLS (200: a row with the fake OpenAI
behind TLS, to show what TLS costs bridged; 0 skips it),
BENCH_BRIDGED_LOG (info), BENCH_QUICKACK=1 (bench_load --quickack: no
delayed ACKs, unlike Twilio; shows what Nagle costs a server without
TCP_NODELAY), BENCH_KEEP=1 keeps the temporary directory.
BENCH_WRAP_BRIDGED and BENCH_WRAP_NGINX put a command in front of bridged
or nginx (valgrind --tool=massif, say).  BENCH_SCALE_CALLS (600) and
BENCH_SCALE_BRIDGES ("1 2 3") for --scale, BENCH_CG_CALLS (10) for
--callgrind, BENCH_MAX_CALLS (800), BENCH_OVERLOAD_CALLS (twice that) and
BENCH_OVERLOAD_CONTROL (1) for --overload.  VOICE_BUILD_DIR: the build
(build/).  Results also go to bench/results/<timestamp>.txt.
"""

import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (BUILD, CLK_TCK, NGINX, RESULTS, SIGN_URL, TOOLS,
                      BenchError, bridged_env, build_tools, can_pin,
                      children_of, cpu_ticks, free_port, grouped, http_json,
                      nginx_conf, nginx_env, pin, raise_nofile, read, rss_kb,
                      start_fake, stop, tree, wait_bridged)

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


class Settings:
    """what the environment asks for (bench.py --help lists it)"""

    def __init__(self, env):
        self.levels = env.get("BENCH_LEVELS", "100 500 1000").split()
        self.seconds = int(env.get("BENCH_SECONDS", "30"))
        self.ramp = int(env.get("BENCH_RAMP", "200"))
        self.delay_calls = int(env.get("BENCH_DELAY_CALLS", "50"))
        self.delay_ms = int(env.get("BENCH_DELAY_MS", "300"))
        self.bridged_log = env.get("BENCH_BRIDGED_LOG", "info")
        self.quickack = env.get("BENCH_QUICKACK", "0") == "1"
        self.bridges = int(env.get("BENCH_BRIDGES", "1"))
        self.tls_calls = int(env.get("BENCH_TLS_CALLS", "200"))
        self.wrap_bridged = shlex.split(env.get("BENCH_WRAP_BRIDGED", ""))
        self.wrap_nginx = shlex.split(env.get("BENCH_WRAP_NGINX", ""))
        self.keep = env.get("BENCH_KEEP", "0") == "1"
        self.scale_calls = int(env.get("BENCH_SCALE_CALLS", "600"))
        self.scale_bridges = [int(b) for b in
                              env.get("BENCH_SCALE_BRIDGES", "1 2 3").split()]
        self.cg_calls = int(env.get("BENCH_CG_CALLS", "10"))
        self.max_calls = int(env.get("BENCH_MAX_CALLS", "800"))
        self.overload_calls = int(env.get("BENCH_OVERLOAD_CALLS",
                                          str(2 * self.max_calls)))
        self.overload_control = env.get("BENCH_OVERLOAD_CONTROL", "1") == "1"
        self.pinned = can_pin() and shutil.which("taskset") is not None


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --- the processes ----------------------------------------------------------

class Stack:
    """one level's fake OpenAI (behind a TLS proxy if tls), bridged
    daemons and nginx, in their own directory: start() and stop()"""

    def __init__(self, s, run, bridges=None, max_calls=0, tls=False,
                 wrap_nginx=None, wrap_bridged=None, fake_args=()):
        self.s, self.run = s, run
        self.bridges = bridges or s.bridges
        self.max_calls, self.tls = max_calls, tls
        self.wrap_nginx = s.wrap_nginx if wrap_nginx is None else wrap_nginx
        self.wrap_bridged = (s.wrap_bridged if wrap_bridged is None
                             else wrap_bridged)
        self.fake_args = list(fake_args)
        self.token = secrets.token_hex(16)          # Twilio's auth token
        self.api_token = secrets.token_hex(16)
        self.api_key = "sk-bench-" + secrets.token_hex(12)
        self.port = free_port()
        self.fake = self.fake_port = self.tls_proxy = None
        self.bridged = []
        self.master = self.worker = None

    def start(self):
        run, s = self.run, self.s
        run.mkdir(parents=True, exist_ok=True)
        self.fake, self.fake_port = start_fake(
            run, ["--api-key", self.api_key] + self.fake_args, s.pinned)
        oai_url = f"ws://127.0.0.1:{self.fake_port}/v1/realtime"
        if self.tls:
            oai_url = f"wss://127.0.0.1:{self.start_tls_proxy()}/v1/realtime"

        # the configuration: the template, then one worker and quiet logs
        (run / "tmp").mkdir(exist_ok=True)
        (run / "transcripts").mkdir(exist_ok=True)
        endpoints = [f"ipc://{run}/bridged-{i}.sock"
                     for i in range(1, self.bridges + 1)]
        nginx_conf(run, endpoints, self.port, "warn", 1,
                   f"voice_max_calls {self.max_calls};"
                   if self.max_calls > 0 else "")

        env = bridged_env(self.api_key, oai_url, self.token)
        for i, ep in enumerate(endpoints, 1):
            with open(run / f"bridged-{i}.log", "wb") as log:
                self.bridged.append(subprocess.Popen(
                    pin(1, s.pinned) + self.wrap_bridged + [
                        str(BUILD / "bridged" / "bridged"), "--listen", ep,
                        "--log-level", s.bridged_log],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL))

        env = nginx_env(self.token, self.api_token, run / "transcripts")
        with open(run / "nginx.out", "wb") as out:
            self.master = subprocess.Popen(
                pin(1, s.pinned) + self.wrap_nginx + [
                    NGINX, "-p", str(run), "-c", str(run / "nginx.conf")],
                env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

        procs = {"nginx": self.master}
        procs.update((f"bridged {i}", b)
                     for i, b in enumerate(self.bridged, 1))
        wait_bridged(self.port, self.api_token, procs,
                     [run / "nginx.out", run / "error.log"]
                     + sorted(run.glob("bridged-*.log")))
        workers = children_of(self.master.pid)
        if not workers:
            raise BenchError("no nginx worker")
        self.worker = workers[0]
        say(f"nginx {self.master.pid} (worker {self.worker}) on "
            f":{self.port}, bridged "
            f"{' '.join(str(b.pid) for b in self.bridged)}, fake OpenAI "
            f"{self.fake.pid} on :{self.fake_port}")

    def start_tls_proxy(self):
        """a stock nginx (stream module) on core 0 that terminates TLS in
        front of the fake OpenAI, with the test certificate: bridged then
        speaks wss:// and verifies it against the test CA, as it does with
        OpenAI; returns its port"""
        d = self.run / "tls"
        d.mkdir(exist_ok=True)
        port = free_port()
        user = "user root;\n" if os.getuid() == 0 else ""
        (d / "nginx.conf").write_text(f"""load_module {STREAM_MODULE};
{user}worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {BUILD}/certs/server.pem;
        ssl_certificate_key {BUILD}/certs/server.key;
        proxy_pass 127.0.0.1:{self.fake_port};
    }}
}}
""")
        with open(d / "nginx.out", "wb") as out:
            self.tls_proxy = subprocess.Popen(
                pin(0, self.s.pinned) + [NGINX, "-p", str(d), "-c",
                                         str(d / "nginx.conf")],
                stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return port
            except OSError:
                pass
            if self.tls_proxy.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchError(f"the TLS proxy did not start: "
                         f"{read(d / 'nginx.out')}{read(d / 'error.log')}")

    def status(self):
        return http_json(f"http://127.0.0.1:{self.port}/voice-status")

    def nginx_pids(self):
        return [self.master.pid, self.worker]

    def bridged_pids(self):
        return [b.pid for b in self.bridged]

    def stop(self):
        """once the calls' transcripts are written (nginx has no live
        call), everything stops"""
        if self.master is not None:
            calls = None
            for _ in range(300):
                if self.master.poll() is not None:
                    break
                calls = (self.status() or {}).get("calls")
                if calls == 0:
                    break
                time.sleep(0.1)
            if calls != 0:
                n = "?" if calls is None else calls
                say(f"warning: nginx still has {n} live calls after 30 s")
                with open(self.run / "leftover", "a") as f:
                    f.write(f"nginx still had {n} live calls 30 s after "
                            "the level\n")
            stop(self.master, signal.SIGQUIT)
        for b in self.bridged:
            stop(b)
        stop(self.fake)
        stop(self.tls_proxy, signal.SIGQUIT)

    def kill(self):
        """on the way out (an error, Ctrl-C): everything, at once"""
        for p in [self.master, self.tls_proxy, self.fake] + self.bridged:
            stop(p, timeout=5)


# --- the steady window ------------------------------------------------------

class Sampler:
    """CPU ticks and RSS of the bridge (nginx master and worker, bridged)
    and of the tools, taken when bench_load says its steady window begins
    and ends; the bridge's idle RSS before the level"""

    def __init__(self, nginx, bridged):
        self.nginx, self.bridged, self.tools = nginx, bridged, []
        self.nginx_idle = self.rss(nginx)
        self.bridged_idle = self.rss(bridged)
        self.begin = self.end = None

    @staticmethod
    def ticks(pids):
        return sum(cpu_ticks(p) or 0 for p in pids)

    @staticmethod
    def rss(pids):
        return sum(rss_kb(p) or 0 for p in pids)

    def take(self):
        return {"t": time.time(), "nginx": self.ticks(self.nginx),
                "bridged": self.ticks(self.bridged),
                "tools": self.ticks(self.tools),
                "nginx_rss": self.rss(self.nginx),
                "bridged_rss": self.rss(self.bridged)}

    def line(self, line):
        """one line of bench_load's stderr"""
        if "event steady-begin" in line:
            self.begin = self.take()
        elif "event steady-end" in line:
            self.end = self.take()

    def window(self):
        """the window's seconds, and the ticks in it of nginx, bridged and
        the tools (zeros when bench_load marked no window)"""
        if not self.begin or not self.end:
            return 0.0, 0, 0, 0
        b, e = self.begin, self.end
        return (e["t"] - b["t"], e["nginx"] - b["nginx"],
                e["bridged"] - b["bridged"], e["tools"] - b["tools"])


def run_load(s, run, port, token, calls, seconds, ramp, extra=()):
    """bench_load started on core 0 against the port: its JSON goes to
    load.json, its stderr (the steady window's marks) is a pipe"""
    with open(run / "load.json", "wb") as out:
        proc = subprocess.Popen(
            pin(0, s.pinned) + [
                str(TOOLS / "bench_load"), "--host", "127.0.0.1", "--port",
                str(port), "--path", "/media-stream", "--sign-url", SIGN_URL,
                "--auth-token", token, "--calls", str(calls), "--seconds",
                str(seconds), "--ramp-per-sec", str(ramp), "--json"]
            + list(extra),
            stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, errors="replace")
    return proc


# --- the report -------------------------------------------------------------

class Report:
    """the lines on the terminal and in the results file; the details
    and logs of each level, printed after the rows"""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "w")
        self.details = []
        self.logs = []

    def out(self, text=""):
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()

    def header(self):
        self.out("%-10s %11s %8s %8s %-24s %-14s %6s %6s %6s %s" % (
            "level", "calls", "CPU-ms/", "RSS-KB/", "  RTT ms p50/p99/max",
            "frames lost", "bridge", "tools", "window", "notes"))
        self.out("%-10s %11s %8s %8s %-24s %-14s %6s %6s" % (
            "", "ok/failed", "call-s", "call", "", " steady/start", "CPU",
            "CPU"))

    def footer(self, calibrate):
        self.out()
        for line in FOOTER:
            self.out(line)
        self.out()
        self.out("per level:")
        for text in self.details + self.logs:
            self.out(text)
        if not calibrate:
            self.out('(the start-up probe, GET /api/numbers until it is not '
                     '503, accounts for')
            self.out('"no bridged takes the request" in error.log and for '
                     "bridged's")
            self.out("numbers.list warning: there is no Twilio API in the "
                     "benchmark)")
        self.out()
        self.out(f"results: {self.path}")


FOOTER = [
    "calls: connected/failed to connect.  CPU-ms/call-s: utime+stime of nginx",
    "(master+worker) and bridged over the steady window / (calls x seconds).",
    "RSS-KB/call: their VmRSS at the end of the window minus before the "
    "level,",
    "/ calls.  RTT: frames sent in the steady window.  frames lost: sent in "
    "the",
    "window and not back 1 s after the end / of each call's first second.",
    "bridge, tools: CPU of nginx+bridged, of bench_load+fake, in % of a core.",
]


def notes_of(r, label, mode, leftover):
    """the row's notes: what bench_load counted that should be zero, and
    what the mode adds"""
    notes = ""
    if r.get("refused"):
        notes += f" offered={r['connected']} refused={r['refused']}(1013)"
    if mode == "overload":
        # the ramp, refusals and all, as well as the steady window
        notes += (f" RTT of all frames p99/max {r['all_rtt_p99_ms']:.2f}/"
                  f"{r['all_rtt_max_ms']:.2f} ms")
    if r.get("dropped"):
        notes += f" hung-up={r['dropped']}({r.get('drop_reason')})"
    if r.get("failed_status"):
        notes += f" non-101={r['failed_status']}(last {r['last_status']})"
    for k in ("failed_refused", "failed_timeout", "failed_other",
              "misrouted", "corrupt", "duplicates"):
        if r.get(k):
            notes += f" {k}={r[k]}"
    if r.get("late_frames"):
        notes += (f" late>5ms={r['late_frames']}(max "
                  f"{r['late_max_ms']:.2f} ms)")
    if r.get("backlog_max_bytes"):
        notes += f" send-backlog={r['backlog_max_bytes']}B"
    if label == "delay":
        notes += (f" RTT of all frames (held ones too) p99/max "
                  f"{r['all_rtt_p99_ms']:.2f}/{r['all_rtt_max_ms']:.2f} ms")
    if leftover:
        notes += " " + leftover.strip()
    return notes


def row(label, r, sampler, calibrate, notes):
    """one result row (docs/performance.md explains the columns), and the
    detail line of nginx and bridged apart (None when calibrating)"""
    ok = r["connected"] - r.get("refused", 0)
    win, nt, bt, tt = sampler.window()
    bms = (nt + bt) * 1000 / CLK_TCK
    tms = tt * 1000 / CLK_TCK
    rss_end = sampler.end or {}
    idle = sampler.nginx_idle + sampler.bridged_idle
    ss = rss_end.get("nginx_rss", 0) + rss_end.get("bridged_rss", 0)
    if calibrate or win <= 0 or ok == 0:
        cpu = rssc = bpct = "-"
    else:
        cpu = "%.3f" % (bms / (ok * win))
        rssc = "%.1f" % ((ss - idle) / ok)
        bpct = "%.0f%%" % (bms / 10 / win)
    tpct = tms / 10 / win if win > 0 else 0
    if not calibrate and win > 0 and bms / 10 / win > 95:
        notes += " BRIDGE SATURATED (its core is full: CPU/call is a floor)"
    if tpct > 90:
        notes += " TOOLS SATURATED"
    text = ("%-10s %5s/%-5s %8s %8s %7.2f/%7.2f/%8.2f %7s/%-6s %6s %5.0f%% "
            "%5.1fs%s" % (label, ok, r["failed"], cpu, rssc,
                          r.get("rtt_p50_ms", 0), r.get("rtt_p99_ms", 0),
                          r.get("rtt_max_ms", 0), r.get("frames_lost", 0),
                          r.get("start_lost", 0), bpct, tpct, win, notes))
    detail = None
    if not calibrate and win > 0 and ok > 0:
        nms, dms = nt * 1000 / CLK_TCK, bt * 1000 / CLK_TCK
        ni, di = sampler.nginx_idle, sampler.bridged_idle
        ns, ds = rss_end["nginx_rss"], rss_end["bridged_rss"]
        detail = (
            f"{label}: nginx {nms / 10 / win:.0f}% of a core, "
            f"{nms / (ok * win):.3f} CPU-ms/call-s, RSS {ni} -> {ns} kB "
            f"({(ns - ni) / ok:.1f} KB/call); bridged {dms / 10 / win:.0f}%, "
            f"{dms / (ok * win):.3f} CPU-ms/call-s, RSS {di} -> {ds} kB "
            f"({(ds - di) / ok:.1f} KB/call)")
    return text, detail


def log_summary(report, label, run, bridged_log):
    """what the level's logs say, grouped (numbers and SIDs folded)"""
    nginx = (read(run / "error.log") or "").splitlines()
    lines = [f"{label}: nginx error.log, {len(nginx)} lines at warn or above"]
    lines += ["%7d %s" % (n, k) for k, n in grouped(nginx, 8)]
    bridged = []
    for f in sorted(run.glob("bridged-*.log")):
        bridged += (read(f) or "").splitlines()
    bad = [x for x in bridged if re.search(r"\[(warn|error)\]", x)]
    lines.append(f"{label}: bridged logs, {len(bridged)} lines (level "
                 f"{bridged_log}), {len(bad)} at warn or above")
    lines += ["%7d %s" % (n, k) for k, n in grouped(bad, 8)]
    lines.append(f"{label}: {(read(run / 'fake.log') or '').strip()}")
    report.logs += lines


# --- one level --------------------------------------------------------------

def run_level(s, report, mode, label, calls, run, port, token, stack=None,
              fake=None):
    """bench_load with `calls` calls against the port (the stack's nginx,
    or the fake itself when calibrating), sampled over its steady window;
    prints the row.  Returns bench_load's result (a dict, maybe empty)"""
    calibrate = stack is None
    if calibrate:
        nginx, bridged, fake_pid = [], [], fake.pid
    else:
        nginx, bridged = stack.nginx_pids(), stack.bridged_pids()
        fake_pid = stack.fake.pid

    sampler = Sampler(nginx, bridged)       # the idle RSS, before the load
    say(f"level {label}: {calls} calls, {s.seconds} s at full load")
    extra = ["--quickack"] if s.quickack else []
    proc = run_load(s, run, port, token, calls, s.seconds, s.ramp, extra)
    sampler.tools = [proc.pid, fake_pid]
    try:
        with open(run / "load.log", "w") as log:
            for line in proc.stderr:
                log.write(line)
                sampler.line(line)
        rc = proc.wait()
    except BaseException:
        stop(proc, timeout=5)
        raise

    # bench_load ends on SIGINT with 130 and its partial report
    if rc in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        raise KeyboardInterrupt
    if rc != 0:
        say(f"bench_load exited with {rc}")

    notes, status = "", None
    if not calibrate:
        status = stack.status()
        dropped_in = (status or {}).get("audioDropped")
        if dropped_in:
            notes += f" nginx-dropped-frames={dropped_in}"

    text = (read(run / "load.json") or "").strip()
    try:
        r = json.loads(text)
    except ValueError:
        report.out("%-14s bench_load gave no result (exit %s)" % (label, rc))
        return {}

    notes += notes_of(r, label, mode, read(run / "leftover"))
    line, detail = row(label, r, sampler, calibrate, notes)
    report.out(line)
    if detail:
        report.details.append(detail)
    report.details.append(f"{label}: {text}")
    if status is not None:
        report.details.append(f"{label}: voice_status after the level: "
                              f"{json.dumps(status, separators=(',', ':'))}")
    return r


def level_on_stack(s, report, mode, label, calls, run, **stack_args):
    """a fresh stack, one level against it, its logs summed up"""
    stack = Stack(s, run, **stack_args)
    try:
        stack.start()
        run_level(s, report, mode, label, calls, run, stack.port,
                  stack.token, stack=stack)
        stack.stop()
    except BaseException:
        stack.kill()
        raise
    log_summary(report, label if mode != "overload" else
                f"overload-{stack.max_calls}", run, s.bridged_log)
    return stack


# --- the modes --------------------------------------------------------------

def levels(s, report, work):
    """one row per level, then the slow OpenAI and the ws/wss pair"""
    report.header()
    for n in s.levels:
        level_on_stack(s, report, "levels", n, int(n), work / n)

    if s.delay_calls > 0:
        level_on_stack(s, report, "levels", "delay", s.delay_calls,
                       work / "delay",
                       fake_args=["--accept-delay-ms", str(s.delay_ms)])
        report.out(f"delay: {s.delay_calls} calls, with a fake OpenAI that "
                   f"answers each upgrade after {s.delay_ms} ms")

    if s.tls_calls > 0 and not os.path.exists(STREAM_MODULE):
        report.out(f"tls: skipped ({STREAM_MODULE} is missing: "
                   "libnginx-mod-stream)")
    elif s.tls_calls > 0:
        for tls in (False, True):
            label = f"{'wss' if tls else 'ws'}-{s.tls_calls}"
            level_on_stack(s, report, "levels", label, s.tls_calls,
                           work / f"tls-{int(tls)}", tls=tls)
        report.out(f"ws/wss: {s.tls_calls} calls with the fake OpenAI on "
                   "ws://, then behind a TLS")
        report.out("proxy (stock nginx, stream module, on core 0) on "
                   "wss://, verified against")
        report.out("the test CA: the difference in bridged's RSS per call "
                   "is TLS's")


def calibrate(s, report, work):
    """the load tools against each other, no bridge"""
    report.out("calibration: the load tools against each other, no bridge")
    report.header()
    for n in s.levels:
        run = work / n
        run.mkdir(parents=True)
        fake, port = start_fake(run, ["--twilio-echo"], s.pinned)
        try:
            run_level(s, report, "calibrate", n, int(n), run, port,
                      secrets.token_hex(16), fake=fake)
        finally:
            stop(fake)
        report.logs.append(f"{n}: {(read(run / 'fake.log') or '').strip()}")


def scale(s, report, work):
    """one level behind 1, 2 and 3 bridged daemons"""
    n = s.scale_calls
    report.out(f"scale-out: {n} calls behind one nginx worker, with 1, 2 "
               "and 3")
    report.out("bridged daemons (all on core 1 with nginx: this shows how "
               "calls and")
    report.out("work divide between daemons, not more cores)")
    report.header()
    for b in s.scale_bridges:
        run = work / f"scale-{b}"
        level_on_stack(s, report, "scale", f"{n}x{b}b", n, run, bridges=b)
        owned = [len(re.findall(r"stream \S+ started: ", read(f) or ""))
                 for f in sorted(run.glob("bridged-*.log"))]
        report.out("           calls owned by each bridged: "
                   + "/".join(map(str, owned)))


def overload(s, report, work):
    """voice_max_calls N and more calls offered, then without the limit"""
    limit, offer = s.max_calls, s.overload_calls
    report.out(f"overload: {offer} calls offered, with voice_max_calls "
               f"{limit}, then")
    report.out("without a limit.  With it, the calls past the limit are "
               "refused")
    report.out("(their stream closed with 1013 at its start) and the row's "
               "figures")
    report.out("are the admitted calls'; without it, every call is admitted")
    report.header()
    for m in [limit] + ([0] if s.overload_control else []):
        label = f"{offer}>{limit}" if m > 0 else str(offer)
        level_on_stack(s, report, "overload", label, offer,
                       work / f"overload-{m}", max_calls=m)


def cg_total(files):
    """total instructions (Ir) in callgrind output files"""
    t = 0
    for f in files:
        m = re.search(r"^totals: *(\d+)", read(f) or "", re.M)
        t += int(m.group(1)) if m else 0
    return t


def cg_run(s, work, echo, secs):
    """one run under callgrind: (nginx Ir, bridged Ir, frames sent,
    frames back)"""
    run = work / f"cg-{int(echo)}-{secs}"
    stack = Stack(s, run,
                  wrap_nginx=["valgrind", "--tool=callgrind",
                              f"--callgrind-out-file={run}/cg.nginx.%p"],
                  wrap_bridged=["valgrind", "--tool=callgrind",
                                f"--callgrind-out-file={run}/cg.bridged.%p"],
                  fake_args=[] if echo else ["--no-echo"])
    try:
        stack.start()
        proc = run_load(s, run, stack.port, stack.token, s.cg_calls, secs, 5)
        try:
            with open(run / "load.log", "w") as log:
                log.writelines(proc.stderr)
            proc.wait()
        except BaseException:
            stop(proc, timeout=5)
            raise
        stack.stop()
    except BaseException:
        stack.kill()
        raise
    try:
        r = json.loads(read(run / "load.json") or "")
    except ValueError:
        r = {}
    return (cg_total(run.glob("cg.nginx.*")),
            cg_total(run.glob("cg.bridged.*")),
            r.get("frames_sent", 0), r.get("media_in", 0))


def callgrind(s, report, work):
    """instructions per frame in each direction: the difference between
    runs of 5 s and 15 s over the difference in frames"""
    if not shutil.which("valgrind"):
        raise BenchError("valgrind is not installed")
    for line in [
            f"callgrind: {s.cg_calls} calls, runs of 5 s and 15 s; "
            "instructions per frame",
            "are the difference between the two runs over the difference "
            "in frames,",
            "so start-up, call set-up and tear-down cancel out.  With the "
            "fake OpenAI",
            "silent (--no-echo) only caller audio flows: that is the "
            "inbound cost.",
            "Outbound is the echoing run's cost per round trip minus the "
            "inbound one;",
            "it includes the marks (one per 100 ms of reply audio) and "
            "their echoes."]:
        report.out(line)
    ni0, di0, fi0, _ = cg_run(s, work, False, 5)
    ni1, di1, fi1, _ = cg_run(s, work, False, 15)
    ne0, de0, fe0, be0 = cg_run(s, work, True, 5)
    ne1, de1, fe1, be1 = cg_run(s, work, True, 15)
    if fi1 <= fi0 or fe1 <= fe0:
        report.out("callgrind: no frames counted")
    else:
        nin, din = (ni1 - ni0) / (fi1 - fi0), (di1 - di0) / (fi1 - fi0)
        nrt, drt = (ne1 - ne0) / (fe1 - fe0), (de1 - de0) / (fe1 - fe0)
        fmt = "%-28s %10.0f %10.0f %10.0f"
        report.out("%-28s %10s %10s %10s" % ("instructions per frame",
                                             "nginx", "bridged", "both"))
        report.out(fmt % ("caller -> OpenAI (in)", nin, din, nin + din))
        report.out(fmt % ("OpenAI -> caller (out)", nrt - nin, drt - din,
                          nrt + drt - nin - din))
        report.out(fmt % ("round trip", nrt, drt, nrt + drt))
        report.out(f"frames: silent run {fi0} -> {fi1} sent; echo run "
                   f"{fe0} -> {fe1} sent, {be0} -> {be1} back")
    report.out()
    report.out(f"results: {report.path}")


MODES = {"--calibrate": calibrate, "--scale": scale,
         "--callgrind": callgrind, "--overload": overload}


# --- the run ----------------------------------------------------------------

def preamble(s, report, mode):
    model = re.search(r"^model name\s*: (.*)$", read("/proc/cpuinfo") or "",
                      re.M)
    report.out("voice bridge benchmark, "
               + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    report.out(f"command: {' '.join(sys.argv)}  (BENCH_LEVELS="
               f"\"{' '.join(s.levels)}\" BENCH_SECONDS={s.seconds} "
               f"BENCH_RAMP={s.ramp}"
               f"{' BENCH_QUICKACK=1' if s.quickack else ''})")
    report.out(f"machine: {os.cpu_count()} cores, "
               f"{model.group(1) if model else '?'}, kernel "
               f"{platform.release()}")
    head, dirty = tree()
    report.out(f"tree:    {head}"
               f"{' (with local changes)' if dirty else ''}")
    if not s.pinned:
        report.out("pinning: none (cores 0 and 1 are not both available)")
    elif mode is calibrate:
        report.out("pinning: bench_load and bench_fake_openai --twilio-echo "
                   "on core 0 (no bridge)")
    else:
        report.out("pinning: bench_load and bench_fake_openai on core 0; "
                   "nginx (1 worker) and bridged on core 1")
    report.out()


def interrupt(signo, frame):
    raise KeyboardInterrupt


def main(argv):
    mode = levels
    for a in argv:
        if a in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if a not in MODES:
            say(f"error: unknown argument: {a} (try --help)")
            return 1
        mode = MODES[a]

    signal.signal(signal.SIGTERM, interrupt)
    try:
        s = Settings(os.environ)
    except ValueError as e:
        say(f"error: a BENCH_ setting is not a number: {e}")
        return 1
    work = Path(tempfile.mkdtemp(prefix="voice-bench."))
    try:
        build_tools()
        if not s.pinned:
            say("cores 0 and 1 are not both available: running unpinned")
        else:
            # this script, and what it starts without saying, on core 0
            os.sched_setaffinity(0, {0})
        raise_nofile()
        RESULTS.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        suffix = "-calibrate" if mode is calibrate else ""
        report = Report(RESULTS / f"{stamp}{suffix}.txt")
        preamble(s, report, mode)
        mode(s, report, work)
        if mode is not callgrind:
            report.footer(mode is calibrate)
        return 0
    except BenchError as e:
        say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if s.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
