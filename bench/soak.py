#!/usr/bin/python3
"""bench/soak.py: a bounded soak of the voice bridge, faults under load.

    ./build.sh bench --soak [--minutes N] [options]      (or bench/soak.py)

nginx (2 workers, the shipped conf/nginx.conf.in) with 2 bridged daemons
behind it (voice_bridge with two endpoints), bench_fake_openai as OpenAI,
and bench_load playing Twilio: waves of calls started all the time, each
wave --ramp calls a second for (longest - shortest call) seconds, so that
its calls last from the shortest to the longest call length; a wave starts
every few seconds so that about --calls calls are live at once.  Every
minute of --minutes:

  :20  one bridged is killed (SIGKILL), bridged 1 and 2 in turn, and is
       started again --restart-after seconds later with the same command
       line, as a service manager would; nginx hands its calls to the other
  :50  nginx -s reload: new workers, the old ones keep their calls

Every --sample seconds (at :05, :15, ...): RSS and open descriptors of the
nginx master, of every worker (the new ones after a reload, and the old
ones while they drain), of each bridged (a restarted one from its start)
and of the fake OpenAI; the calls each process holds (its TCP connections:
nginx's media streams, bridged's to the fake); the sessions the fake
OpenAI has open (it prints them on SIGUSR1); every worker's voice_status;
CPU of the bridge and of the tools, and of each core.

After the last minute no wave starts; once the running ones are over and
--grace seconds have passed, the end state is checked: no OpenAI session
open at the fake, no call in voice_status nor in any process, no old
worker left, descriptors back to their idle baseline, memory flat (see
check_memory), no call refused or dropped, no crash.  It prints a table
per minute, the findings and a verdict (exit status 1 on FAIL), and writes
every sample to bench/results/soak-<timestamp>.json.  The binaries come
from VOICE_BUILD_DIR (default build/); the load tools are built into
bench/build.  Cores: like bench/bench.py, the tools and this script on
core 0, nginx and bridged on core 1 (--no-pin: anywhere).
"""

import argparse
import calendar
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import (BUILD, CLK_TCK, NGINX, RESULTS, SIGN_URL, TOOLS,
                      BenchError, bridged_env, build_tools, children_of,
                      cmdline, cpu_ticks, free_port, grouped, nginx_conf,
                      nginx_env, pin, raise_nofile, read, rss_kb, start_fake,
                      tree, wait_bridged)

# descriptors a process may hold at the end beyond its idle baseline:
# ZeroMQ opens some of its own lazily (a reconnecting pipe, a signaler)
FD_TOLERANCE = 2


def interrupt(signo, frame):
    raise KeyboardInterrupt


def say(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


# --- /proc ------------------------------------------------------------------

def fds(pid):
    """the targets of the process's open descriptors, or None"""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    out = []
    for n in names:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{n}"))
        except OSError:
            pass
    return out


def tcp_sockets():
    """inode -> (local port, remote port, state) of every IPv4 TCP socket"""
    out = {}
    for line in (read("/proc/net/tcp") or "").splitlines()[1:]:
        f = line.split()
        lport = int(f[1].split(":")[1], 16)
        rport = int(f[2].split(":")[1], 16)
        out[f[9]] = (lport, rport, f[3])
    return out


def tcp_conns(targets, socks, port, remote):
    """how many of a process's descriptors (their targets) are TCP
    connections, not listening, with that local port (or remote port)"""
    n = 0
    for target in targets:
        m = re.match(r"socket:\[(\d+)\]", target)
        s = m and socks.get(m.group(1))
        if s and s[2] != "0A" and s[1 if remote else 0] == port:
            n += 1
    return n


def core_busy():
    """per core: (busy, total) jiffies"""
    out = {}
    for line in (read("/proc/stat") or "").splitlines():
        m = re.match(r"cpu(\d+) (.*)", line)
        if m:
            v = [int(x) for x in m.group(2).split()]
            idle = v[3] + v[4]
            out[int(m.group(1))] = (sum(v) - idle, sum(v))
    return out


# --- the processes ----------------------------------------------------------

class Bridged:
    """one bridged endpoint, kept running with the same command line"""

    def __init__(self, slot, argv, env, log):
        self.slot, self.argv, self.env, self.log = slot, argv, env, log
        self.proc = None
        self.started = None          # time.monotonic() of this incarnation
        self.incarnation = 0
        self.last_ticks = {}         # pid -> last CPU ticks seen

    def start(self, now):
        self.incarnation += 1
        with open(self.log, "ab") as f:
            f.write(f"soak: --- bridged {self.slot}, incarnation "
                    f"{self.incarnation}, at {now:.1f} s\n".encode())
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=f,
                                         stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.started = time.monotonic()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def kill(self):
        t = cpu_ticks(self.pid)
        if t is not None:
            self.last_ticks[self.pid] = t
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None


class Stack:
    """fake OpenAI, two bridged, nginx: started, watched, stopped"""

    def __init__(self, args, work):
        self.args, self.work = args, work
        self.token = secrets.token_hex(16)          # Twilio's auth token
        self.api_token = secrets.token_hex(16)
        self.api_key = "sk-soak-" + secrets.token_hex(12)
        self.port = free_port()
        self.fake = None
        self.fake_port = None
        self.bridged = []
        self.master = None
        self.workers = {}        # pid -> {"first", "draining", "last", "gen"}
        self.generation = 0      # counts reloads
        self.unexpected = []     # processes that ended without being told

    def pin(self, core):
        return pin(core, not self.args.no_pin)

    # -- start
    def start(self):
        w = self.work
        (w / "tmp").mkdir()
        (w / "transcripts").mkdir()

        self.fake_log = w / "fake.log"
        self.fake, self.fake_port = start_fake(
            w, ["--api-key", self.api_key], not self.args.no_pin)

        endpoints = [f"ipc://{w}/bridged-{i}.sock" for i in (1, 2)]
        # 2 workers (the template's), error_log at notice: a hand-over is
        # logged at notice ("goes on with bridged")
        nginx_conf(w, endpoints, self.port, "notice", 2)

        env = bridged_env(self.api_key,
                          f"ws://127.0.0.1:{self.fake_port}/v1/realtime",
                          self.token)
        for i, ep in enumerate(endpoints, 1):
            argv = self.pin(1) + [self.args.bridged, "--listen", ep,
                                  "--log-level", self.args.bridged_log]
            b = Bridged(i, argv, env, w / f"bridged-{i}.log")
            b.start(0.0)
            self.bridged.append(b)

        env = nginx_env(self.token, self.api_token, w / "transcripts")
        self.nginx_env = env
        with open(w / "nginx.out", "wb") as f:
            self.master = subprocess.Popen(
                self.pin(1) + [NGINX, "-p", str(w), "-c",
                               str(w / "nginx.conf")],
                env=env, stdout=f, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

        # up, and a request reaches bridged (benchlib.wait_bridged)
        procs = {"nginx": self.master}
        procs.update((f"bridged {b.slot}", b.proc) for b in self.bridged)
        wait_bridged(self.port, self.api_token, procs,
                     [w / "nginx.out", w / "error.log"])
        self.see_workers(0.0)

    # -- the workers the master has now, new and draining
    def see_workers(self, now):
        pids = children_of(self.master.pid)
        for pid in pids:
            cl = cmdline(pid)
            if "worker process" not in cl:
                continue
            w = self.workers.setdefault(pid, {"first": now, "draining": None,
                                              "last": now,
                                              "gen": self.generation})
            w["last"] = now
            if "shutting down" in cl and w["draining"] is None:
                w["draining"] = now
        return [p for p in pids if p in self.workers]

    def reload(self):
        subprocess.run([NGINX, "-p", str(self.work), "-c",
                        str(self.work / "nginx.conf"), "-s", "reload"],
                       env=self.nginx_env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.generation += 1

    # -- the fake OpenAI's own count, on SIGUSR1
    def fake_open(self):
        size = os.path.getsize(self.fake_log)
        self.fake.send_signal(signal.SIGUSR1)
        pat = re.compile(r"open: (\d+) connections, (\d+) sessions "
                         r"\((\d+) accepted, (\d+) upgraded\)")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with open(self.fake_log) as f:
                f.seek(size)
                m = pat.search(f.read())
            if m:
                c, s, a, u = map(int, m.groups())
                return {"connections": c, "sessions": s, "accepted": a,
                        "upgraded": u}
            time.sleep(0.02)
        return None

    # -- voice_status of every worker that accepts (not the draining ones)
    def voice_status(self, want):
        seen = {}
        for _ in range(24):
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.port}/voice-status",
                        timeout=2) as r:
                    st = json.loads(r.read())
                seen[st["pid"]] = st
            except (OSError, ValueError, KeyError):
                pass
            if want <= set(seen):
                break
        return seen

    def check_alive(self, now):
        """a process that ended and was not told to: noted, and a bridged
        is started again as its service manager would"""
        if self.master.poll() is not None:
            self.unexpected.append(f"nginx master exited with "
                                   f"{self.master.returncode} at {now:.0f} s")
            return False
        for b in self.bridged:
            if b.proc is not None and b.proc.poll() is not None:
                self.unexpected.append(f"bridged {b.slot} (pid {b.pid}) "
                                       f"exited with {b.proc.returncode} at "
                                       f"{now:.0f} s")
                b.start(now)
        if self.fake.poll() is not None:
            self.unexpected.append(f"bench_fake_openai exited at {now:.0f} s")
            return False
        return True

    def stop(self):
        """graceful first (nginx -s quit, SIGTERM), SIGKILL after 15 s"""
        procs = []
        if self.master and self.master.poll() is None:
            self.master.send_signal(signal.SIGQUIT)
            procs.append(self.master)
        for b in self.bridged:
            if b.proc and b.proc.poll() is None:
                b.proc.terminate()
                procs.append(b.proc)
        if self.fake and self.fake.poll() is None:
            self.fake.terminate()
            procs.append(self.fake)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # workers the master left behind, if it was killed
        for pid in self.workers:
            if "nginx" in cmdline(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


# --- the load ---------------------------------------------------------------

class Wave:
    """one bench_load: `calls` calls started `ramp` a second, all of which
    stop `seconds` after the last one started"""

    def __init__(self, n, stack, work, calls, ramp, seconds, t):
        self.n, self.t0, self.t1 = n, t, None
        self.out = work / f"wave-{n:03d}.json"
        self.err = work / f"wave-{n:03d}.log"
        self.result = None
        self.last_ticks = 0
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(
                stack.pin(0) + [
                    str(TOOLS / "bench_load"), "--host", "127.0.0.1",
                    "--port", str(stack.port), "--path", "/media-stream",
                    "--sign-url", SIGN_URL, "--auth-token", stack.token,
                    "--calls", str(calls), "--ramp-per-sec", str(ramp),
                    "--seconds", str(seconds), "--json"],
                stdout=o, stderr=e, stdin=subprocess.DEVNULL)

    def poll(self, now):
        t = cpu_ticks(self.proc.pid)
        if t is not None:
            self.last_ticks = t
        if self.proc.poll() is None:
            return False
        self.t1 = now
        try:
            self.result = json.loads(read(self.out) or "")
        except ValueError:
            self.result = {"error": f"no result (exit {self.proc.returncode})"
                                    f": {(read(self.err) or '')[-300:]}"}
        return True


# --- one sample -------------------------------------------------------------

class Sampler:
    def __init__(self, stack):
        self.stack = stack
        self.cores0 = core_busy()
        self.t_prev = None
        self.svc_prev = None
        self.tools_prev = None

    def service_ticks(self, workers):
        """CPU ticks so far of nginx (the master's own and its reaped
        workers', and the live workers') and of bridged (every
        incarnation's, the killed ones' as last seen)"""
        st = self.stack
        n = cpu_ticks(st.master.pid, children=True) or 0
        n += sum(cpu_ticks(p) or 0 for p in workers)
        b = 0
        for br in st.bridged:
            if br.pid:
                v = cpu_ticks(br.pid)
                if v is not None:
                    br.last_ticks[br.pid] = v
            b += sum(br.last_ticks.values())
        return n, b

    def take(self, now, label, waves):
        st = self.stack
        workers = st.see_workers(now)
        socks = tcp_sockets()

        def proc_info(pid, count_port=None, remote=None):
            f = fds(pid)
            info = {"pid": pid, "rss": rss_kb(pid),
                    "fds": len(f) if f is not None else None}
            if f is not None and count_port is not None:
                info["conns"] = tcp_conns(f, socks, count_port, remote)
            return info

        s = {"t": round(now, 1), "label": label,
             "master": proc_info(st.master.pid),
             "workers": [], "bridged": [], "waves_running":
                 sum(1 for w in waves if w.t1 is None)}
        for pid in workers:
            info = proc_info(pid, st.port)
            w = st.workers[pid]
            info.update(gen=w["gen"], draining=w["draining"] is not None)
            s["workers"].append(info)
        for b in st.bridged:
            if b.pid is None:
                s["bridged"].append({"slot": b.slot, "pid": None})
                continue
            info = proc_info(b.pid, st.fake_port, remote=True)
            info.update(slot=b.slot, incarnation=b.incarnation,
                        age=round(time.monotonic() - b.started, 1))
            s["bridged"].append(info)
        fk = proc_info(st.fake.pid, st.fake_port)
        fk["open"] = st.fake_open()
        s["fake"] = fk

        current = {w["pid"] for w in s["workers"] if not w["draining"]}
        status = st.voice_status(current)
        s["status"] = {str(p): {"calls": v.get("calls"),
                                "audioDropped": v.get("audioDropped"),
                                "alive": [b.get("alive")
                                          for b in v.get("bridges", [])]}
                       for p, v in status.items()}
        s["status_missing"] = sorted(current - set(status))

        # CPU since the last sample, in % of one core
        svc = self.service_ticks(workers)
        tools = (cpu_ticks(st.fake.pid) or 0) + sum(w.last_ticks
                                                    for w in waves)
        cores = core_busy()
        mono = time.monotonic()
        if self.t_prev is not None:
            dt = mono - self.t_prev
            pct = lambda a, b: round((a - b) / CLK_TCK / dt * 100, 1)
            s["cpu"] = {
                "bridge": pct(sum(svc), sum(self.svc_prev)),
                "nginx": pct(svc[0], self.svc_prev[0]),
                "bridged": pct(svc[1], self.svc_prev[1]),
                "tools": round((tools - self.tools_prev) / CLK_TCK / dt * 100,
                               1),
                "cores": {c: round(100 * (cores[c][0] - self.cores0[c][0])
                                   / max(1, cores[c][1] - self.cores0[c][1]),
                                   1) for c in cores}}
        self.t_prev, self.svc_prev, self.tools_prev = mono, svc, tools
        self.cores0 = cores
        return s


# --- logs -------------------------------------------------------------------

def nginx_log_events(path, t0_wall):
    """(t, kind, line) of the error.log lines that matter"""
    kinds = [("handover", "goes on with bridged"),
             ("wait", "waits up to"),
             ("fallback", "no bridged answered"),
             ("crash", "exited on signal"),
             ("alert", "[alert]"), ("alert", "[crit]"), ("alert", "[emerg]"),
             ("error", "[error]")]
    out = []
    for line in (read(path) or "").splitlines():
        m = re.match(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) ", line)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1), "%Y/%m/%d %H:%M:%S"))
        for kind, needle in kinds:
            if needle in line:
                out.append((t - t0_wall, kind, line))
                break
    return out


def bridged_log_events(paths, t0_wall):
    out = []
    for path in paths:
        for line in (read(path) or "").splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z "
                         r"\[(\w+)\]", line)
            if not m:
                if re.search(r"Sanitizer|runtime error|Segmentation", line):
                    out.append((None, "sanitizer", line))
                continue
            t = calendar.timegm(time.strptime(m.group(1),
                                              "%Y-%m-%dT%H:%M:%S"))
            t += int(m.group(2)) / 1000 - t0_wall
            if "taking the call over" in line:
                out.append((t, "takeover", line))
            elif m.group(3) in ("warn", "error"):
                out.append((t, m.group(3), line))
    return out


# --- the verdict ------------------------------------------------------------

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def slope_per_min(points):
    """least squares, kB a minute, through (minute, kB)"""
    pts = [(t, v) for t, v in points if v is not None]
    if len(pts) < 3:
        return None
    mt = sum(t for t, _ in pts) / len(pts)
    mv = sum(v for _, v in pts) / len(pts)
    den = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (v - mv) for t, v in pts) / den if den else None


def classes(s):
    """RSS (kB) per class in one sample.  The workers are the current
    ones: old ones draining after a reload are apart, as how many are
    still there at a sample depends on when their last call ends, not on
    what they hold"""
    w = [x["rss"] for x in s["workers"]
         if x["rss"] is not None and not x["draining"]]
    d = [x["rss"] for x in s["workers"]
         if x["rss"] is not None and x["draining"]]
    b = [x["rss"] for x in s["bridged"] if x.get("rss") is not None]
    m = s["master"]["rss"]
    return {"master": m, "workers": sum(w), "draining": sum(d),
            "bridged": sum(b), "all": (m or 0) + sum(w) + sum(b)}


def live_calls(s):
    return sum(w.get("conns") or 0 for w in s["workers"])


# Memory tolerances (kB).  The nginx master carries no call: what a reload
# allocates (a configuration cycle) is freed once the old workers are gone,
# and it moved by tens of kB in development runs; 512 kB over ten reloads
# is a leak of 50 kB a reload.  Workers and bridged follow the live calls
# (about 15 KB a call in each, docs/performance.md), which move by a tenth
# around the target between samples (0.5 MB at 150 calls), and a bridged
# that takes the other's calls keeps the high-water mark of both (1.5 MB);
# minutes 2 and 3 of development runs differed by up to 1.1 MB.  3 MB, or
# 5 % of the class when that is more, is about three times that.
MASTER_TOLERANCE = 512
CLASS_TOLERANCE = 3072
CLASS_TOLERANCE_PCT = 5


def tolerance(cls, first_kb):
    if cls == "master":
        return MASTER_TOLERANCE
    return max(CLASS_TOLERANCE, CLASS_TOLERANCE_PCT / 100 * first_kb)


def check_memory(samples, minutes, notes, fails):
    """Flat memory: each class's RSS (the master, the current workers,
    both bridged, and their sum), the median of each minute's samples (the
    same phases of the minute: before and after the kill, before and after
    the reload), in the first minutes after the ramp (minutes 2-3) against
    the last three.  Under this fault schedule only the master lives the
    whole run (a worker lives a minute and its drain, a bridged two
    minutes), so this is what accumulates across processes and fault
    cycles; bridged's own per-call leaks are the ASan/LSan suite's (./build.sh
    test).  Each bridged life and worker generation is also compared with
    the first of the same length: at the same age under the same load
    they must hold the same."""
    steady = [s for s in samples if s["label"] == "load"
              and 60 <= s["t"] < minutes * 60]
    if minutes < 3:
        notes.append("memory: fewer than 3 minutes, nothing to compare "
                     "(the first minute is the ramp)")
        return {}
    if minutes < 6:
        first_m, last_m = [1], list(range(max(2, minutes - 1), minutes))
    else:
        first_m, last_m = [1, 2], list(range(minutes - 3, minutes))
    per_min = {}
    for s in steady:
        per_min.setdefault(int(s["t"] // 60), []).append(s)
    out = {}
    for cls in ("master", "workers", "bridged", "all"):
        med = {m: median(classes(s)[cls] for s in ss)
               for m, ss in per_min.items()}
        a = median(med[m] for m in first_m if m in med)
        b = median(med[m] for m in last_m if m in med)
        slope = slope_per_min(sorted(med.items()))
        tol = tolerance(cls, a)
        out[cls] = {"first_kb": a, "last_kb": b, "growth_kb": b - a,
                    "tolerance_kb": round(tol),
                    "slope_kb_per_min": None if slope is None
                    else round(slope, 1),
                    "per_minute_kb": {m + 1: v
                                      for m, v in sorted(med.items())}}
        if b - a > tol:
            fails.append(f"memory: {cls} grew {b - a:.0f} kB from minutes "
                         f"{[m + 1 for m in first_m]} to "
                         f"{[m + 1 for m in last_m]} (tolerance {tol:.0f} kB"
                         f", {slope or 0:+.0f} kB/min)")
    out["calls"] = {
        "first": median(live_calls(s) for m in first_m
                        for s in per_min.get(m, [])),
        "last": median(live_calls(s) for m in last_m
                       for s in per_min.get(m, []))}

    # the same point of each life: bridged at its last sample before its
    # kill, a worker generation at its last sample before the next reload
    br, wk = lives(samples)
    full = [(k, v) for k, v in sorted(br.items(), key=lambda kv: kv[0][::-1])
            if v["age"] >= 90]
    if len(full) >= 2:
        (k0, v0), (k1, v1) = full[0], full[-1]
        tol = tolerance("bridged", v0["rss"])
        if v1["rss"] - v0["rss"] > tol:
            fails.append(f"memory: bridged {k1[0]}.{k1[1]} held "
                         f"{v1['rss'] - v0['rss']} kB more than "
                         f"{k0[0]}.{k0[1]} at the same age (tolerance "
                         f"{tol:.0f} kB)")
    gens = [(g, v) for g, v in sorted(wk.items()) if v["samples"] >= 5]
    if len(gens) >= 2:
        (g0, v0), (g1, v1) = gens[0], gens[-1]
        tol = tolerance("workers", v0["rss"])
        if v1["rss"] - v0["rss"] > tol:
            fails.append(f"memory: worker generation {g1} held "
                         f"{v1['rss'] - v0['rss']} kB more than generation "
                         f"{g0} before its reload (tolerance {tol:.0f} kB)")
    return out


def lives(samples):
    """bridged by incarnation ((slot, n): its last sample under load), and
    nginx's workers by generation (the sum of its workers at its last
    sample under load while current)"""
    br, wk = {}, {}
    for s in samples:
        if s["label"] != "load":
            continue
        for b in s["bridged"]:
            if b.get("rss") is not None:
                br[(b["slot"], b["incarnation"])] = {
                    "age": b["age"], "rss": b["rss"], "calls": b.get("conns")}
        gens = {}
        for w in s["workers"]:
            if not w["draining"] and w["rss"] is not None:
                g = gens.setdefault(w["gen"], {"rss": 0, "calls": 0})
                g["rss"] += w["rss"]
                g["calls"] += w.get("conns") or 0
        for g, v in gens.items():
            n = wk.get(g, {}).get("samples", 0) + 1
            wk[g] = dict(v, samples=n)
    return br, wk


# --- the run ----------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=10,
                    help="minutes of load and faults (10)")
    ap.add_argument("--calls", type=int, default=150,
                    help="calls live at once, about (150)")
    ap.add_argument("--shortest", type=int, default=20,
                    help="shortest call, s (20)")
    ap.add_argument("--longest", type=int, default=40,
                    help="longest call, s (40)")
    ap.add_argument("--ramp", type=int, default=2,
                    help="calls a wave starts a second (2)")
    ap.add_argument("--sample", type=int, default=10,
                    help="seconds between samples (10)")
    ap.add_argument("--kill-at", type=int, default=20,
                    help="second of each minute a bridged is killed (20)")
    ap.add_argument("--reload-at", type=int, default=50,
                    help="second of each minute nginx reloads (50)")
    ap.add_argument("--restart-after", type=float, default=1.0,
                    help="seconds before a killed bridged is started (1)")
    ap.add_argument("--grace", type=float, default=6.0,
                    help="seconds after the last call before the end state "
                         "is checked (6: bridged's final wait is 5 s)")
    ap.add_argument("--bridged", default=str(BUILD / "bridged" / "bridged"),
                    help="the bridged binary "
                         "(VOICE_BUILD_DIR/bridged/bridged)")
    ap.add_argument("--bridged-log", default="info")
    ap.add_argument("--no-pin", action="store_true",
                    help="no taskset (by default as bench/bench.py: tools on "
                         "core 0, nginx and bridged on core 1)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (logs, transcripts)")
    args = ap.parse_args()
    if args.longest <= args.shortest:
        ap.error("--longest must be over --shortest")

    for f in (args.bridged, BUILD / "nginx" / "ngx_http_voice_module.so"):
        if not os.path.exists(f):
            sys.exit(f"soak: {f} is missing: ./build.sh build first "
                     "(VOICE_BUILD_DIR names another build directory)")
    try:
        build_tools()
    except BenchError as e:
        sys.exit(f"soak: {e}")
    if not args.no_pin and (os.cpu_count() or 1) < 2:
        args.no_pin = True
    if not args.no_pin:
        os.sched_setaffinity(0, {0})

    raise_nofile()

    # a wave: calls from --shortest to --longest s (+1 s bench_load drains)
    wave_calls = args.ramp * (args.longest - args.shortest)
    mean_call = (args.shortest + args.longest) / 2 + 1
    interval = wave_calls * mean_call / args.calls
    load_s = args.minutes * 60

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="voice-soak."))
    RESULTS.mkdir(exist_ok=True)
    out_json = RESULTS / f"soak-{stamp}.json"
    head, dirty = tree()
    load_avg = os.getloadavg()

    print("voice bridge soak, "
          + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    print(f"command: {' '.join(sys.argv)}")
    print(f"tree:    {head}{' (with local changes)' if dirty else ''}; "
          f"build {BUILD}")
    print(f"machine: {os.cpu_count()} cores, load average "
          f"{load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f} at the "
          f"start")
    print(f"load:    waves of {wave_calls} calls ({args.ramp}/s, "
          f"{args.shortest}-{args.longest} s each), one every {interval:.1f} s"
          f": about {args.calls} live; {args.minutes} min, then the last "
          f"calls end")
    print(f"faults:  each minute, kill -9 a bridged at :{args.kill_at:02d} "
          f"(1 and 2 in turn; restarted {args.restart_after:g} s later), "
          f"nginx -s reload at :{args.reload_at:02d}")
    print("pinning: " + ("none" if args.no_pin else
                         "tools and this script on core 0, nginx and bridged "
                         "on core 1"))
    print(flush=True)

    # SIGTERM stops the run as Ctrl-C does: everything started is stopped
    signal.signal(signal.SIGTERM, interrupt)

    stack = Stack(args, work)
    waves, samples, events = [], [], []
    failed_waves = []
    rc = 1
    interrupted = False
    try:
        try:
            stack.start()
        except BenchError as e:
            sys.exit(f"soak: {e}")
        time.sleep(2)
        sampler = Sampler(stack)
        idle = sampler.take(0.0, "idle", waves)
        samples.append(idle)
        say(f"nginx {stack.master.pid} on :{stack.port} (workers "
            f"{', '.join(str(w['pid']) for w in idle['workers'])}), bridged "
            f"{', '.join(str(b.pid) for b in stack.bridged)}, fake OpenAI "
            f"{stack.fake.pid} on :{stack.fake_port}; work dir {work}")

        # the timeline, in seconds from the start of the load
        plan = []
        k = 0
        while k * interval < load_s:
            plan.append((k * interval, "wave", k))
            k += 1
        for m in range(args.minutes):
            plan.append((m * 60 + args.kill_at, "kill", m % 2))
            plan.append((m * 60 + args.kill_at + args.restart_after,
                         "restart", m % 2))
            plan.append((m * 60 + args.reload_at, "reload", None))
        t = args.sample / 2
        while t < load_s:
            plan.append((t, "sample", None))
            t += args.sample
        plan.sort(key=lambda p: (p[0], p[1] != "sample"))

        t0 = time.monotonic()
        t0_wall = time.time()

        def now():
            return time.monotonic() - t0

        def poll_waves():
            for w in waves:
                if w.t1 is None and w.poll(now()) and w.result.get("error"):
                    failed_waves.append(w.n)

        for at, what, arg in plan:
            while now() < at:
                poll_waves()
                time.sleep(min(0.1, max(0.0, at - now())))
            if not stack.check_alive(now()):
                break
            if what == "wave":
                waves.append(Wave(arg, stack, work, wave_calls, args.ramp,
                                  args.shortest, now()))
            elif what == "kill":
                b = stack.bridged[arg]
                pid = b.pid
                f = fds(pid)
                carried = (tcp_conns(f, tcp_sockets(), stack.fake_port, True)
                           if f is not None else None)
                t_kill = now()
                b.kill()
                events.append({"t": round(t_kill, 3), "what": "kill",
                               "bridged": b.slot, "pid": pid,
                               "openai_sessions": carried})
                say(f"{now():6.1f} s  kill -9 bridged {b.slot} (pid {pid}, "
                    f"{carried} OpenAI sessions)")
            elif what == "restart":
                b = stack.bridged[arg]
                b.start(now())
                events.append({"t": round(now(), 2), "what": "restart",
                               "bridged": b.slot, "pid": b.pid})
            elif what == "reload":
                stack.reload()
                events.append({"t": round(now(), 2), "what": "reload",
                               "generation": stack.generation})
                say(f"{now():6.1f} s  nginx -s reload")
            elif what == "sample":
                poll_waves()
                s = sampler.take(now(), "load", waves)
                samples.append(s)
                say(f"{now():6.1f} s  calls {live_calls(s)}, OpenAI sessions "
                    f"{(s['fake']['open'] or {}).get('sessions')}, RSS "
                    f"{classes(s)['all'] / 1024:.1f} MB, CPU nginx "
                    f"{s.get('cpu', {}).get('nginx')} % bridged "
                    f"{s.get('cpu', {}).get('bridged')} % tools "
                    f"{s.get('cpu', {}).get('tools')} %")

        # no new wave: the running ones end, then the grace period
        say("the last waves end")
        deadline = now() + args.longest + 30
        while any(w.t1 is None for w in waves) and now() < deadline:
            poll_waves()
            stack.check_alive(now())
            time.sleep(0.2)
        for w in waves:
            if w.t1 is None:
                w.proc.send_signal(signal.SIGINT)
                w.proc.wait(10)
                w.poll(now())
                failed_waves.append(w.n)
        t_end_load = now()
        time.sleep(args.grace)
        final = sampler.take(now(), "final", waves)
        samples.append(final)

        # how long it takes to get there, when it is not at once
        settle = None
        if not is_idle(final):
            say("not idle after the grace period: watching for 30 s more")
            for _ in range(30):
                time.sleep(1)
                s = sampler.take(now(), "settle", waves)
                samples.append(s)
                if is_idle(s):
                    settle = round(s["t"] - t_end_load, 1)
                    break

        rc = report(args, stack, work, samples, events, waves, failed_waves,
                    final, settle, t0_wall, out_json,
                    dict(tree=head, dirty=dirty, load_avg=load_avg,
                         wave_calls=wave_calls, interval=interval))
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted")
    finally:
        for w in waves:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        stack.stop()
        if args.keep or interrupted:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 130 if interrupted else rc


def is_idle(s):
    fo = s["fake"].get("open") or {}
    return (fo.get("sessions") == 0 and fo.get("connections") == 0
            and live_calls(s) == 0
            and all(b.get("conns") == 0 for b in s["bridged"])
            and not any(w["draining"] for w in s["workers"])
            and all(v["calls"] == 0 for v in s["status"].values()))


# --- the report -------------------------------------------------------------

def report(args, stack, work, samples, events, waves, failed_waves, final,
           settle, t0_wall, out_json, meta):
    fails, notes = [], []
    idle = samples[0]

    # -- the table, one row a minute
    print(f"{'':6} {'calls':>9} {'OpenAI':>9}  {'RSS MB':^22}  "
          f"{'descriptors':^20}  {'CPU % of a core':^17} {'cores':>7}")
    print(f"{'minute':6} {'live':>9} {'sessions':>9}  {'master':>6} "
          f"{'workers':>7} {'bridged':>7}  {'master':>6} {'workers':>6} "
          f"{'bridged':>6}  {'nginx':>5} {'bridged':>5} {'tools':>5} "
          f"{'0/1 %':>7}  faults (sessions the killed bridged had: calls "
          f"handed over by nginx / taken by bridged)")
    print("(workers: the current ones, not the old ones still draining after "
          "a reload; medians of the minute's samples)")
    rows = []
    load = [s for s in samples if s["label"] == "load"]
    nginx_ev = nginx_log_events(work / "error.log", t0_wall)
    br_ev = bridged_log_events(sorted(work.glob("bridged-*.log")), t0_wall)
    for m in range(args.minutes):
        ss = [s for s in load if m * 60 <= s["t"] < (m + 1) * 60]
        if not ss:
            continue
        calls = [live_calls(s) for s in ss]
        sess = [(s["fake"]["open"] or {}).get("sessions") for s in ss]
        sess = [x for x in sess if x is not None]
        cl = [classes(s) for s in ss]
        fd = lambda sel: median(sel(s) for s in ss)
        cpu = [s["cpu"] for s in ss if "cpu" in s]
        kills = [e for e in events if e["what"] == "kill"
                 and m * 60 <= e["t"] < (m + 1) * 60]
        faults = []
        for e in kills:
            ho = sum(1 for t, k, _ in nginx_ev
                     if k == "handover" and e["t"] - 1 <= t < e["t"] + 10)
            tk = [t for t, k, _ in br_ev
                  if k == "takeover" and e["t"] - 1 <= t < e["t"] + 10]
            # bridged's lines carry milliseconds: the last call taken over,
            # after the kill
            e.update(handed_over=ho, taken_over=len(tk),
                     last_taken_ms=round(1000 * (max(tk) - e["t"]))
                     if tk else None)
            tk = len(tk)
            faults.append(f"kill bridged {e['bridged']} "
                          f"({e['openai_sessions']}: {ho}/{tk})")
        if any(e["what"] == "reload" and m * 60 <= e["t"] < (m + 1) * 60
               for e in events):
            faults.append("reload")
        row = {
            "minute": m + 1,
            "calls": [min(calls), max(calls)],
            "sessions": [min(sess), max(sess)] if sess else None,
            "rss_kb": {k: median(c[k] for c in cl)
                       for k in ("master", "workers", "bridged", "all")},
            "fds": {"master": fd(lambda s: s["master"]["fds"]),
                    "workers": fd(lambda s: sum(w["fds"] or 0
                                                for w in s["workers"]
                                                if not w["draining"])),
                    "bridged": fd(lambda s: sum(b.get("fds") or 0
                                                for b in s["bridged"]))},
            "cpu": {"bridge": median(c["bridge"] for c in cpu),
                    "nginx": median(c["nginx"] for c in cpu),
                    "bridged": median(c["bridged"] for c in cpu),
                    "tools": median(c["tools"] for c in cpu),
                    "core0": median(c["cores"][0] for c in cpu),
                    "core1": median(c["cores"][1] for c in cpu)}
            if cpu else None,
            "faults": faults}
        rows.append(row)
        r, f, c = row["rss_kb"], row["fds"], row["cpu"] or {}
        print(f"{m + 1:>6} {'%d-%d' % tuple(row['calls']):>9} "
              f"{'%d-%d' % tuple(row['sessions']) if sess else '?':>9}  "
              f"{r['master'] / 1024:6.1f} {r['workers'] / 1024:7.1f} "
              f"{r['bridged'] / 1024:7.1f}  {f['master']:6.0f} "
              f"{f['workers']:6.0f} {f['bridged']:6.0f}  "
              f"{c.get('nginx') or 0:5.0f} {c.get('bridged') or 0:5.0f} "
              f"{c.get('tools') or 0:5.0f} "
              f"{'%.0f/%.0f' % (c.get('core0') or 0, c.get('core1') or 0):>7}"
              f"  {'; '.join(faults)}")
    print()

    # -- the calls
    res = [w.result for w in waves if w.result and "error" not in w.result]
    tot = lambda k: sum(r.get(k, 0) for r in res)
    calls = tot("calls")
    connected = tot("connected")
    print(f"calls: {calls} in {len(waves)} waves; {connected} connected, "
          f"{tot('failed')} failed to connect, {tot('dropped')} hung up by "
          f"the server; {len(failed_waves)} waves gave no result")
    if failed_waves:
        fails.append(f"load: waves {failed_waves} gave no result or had to "
                     f"be stopped")
    if tot("failed"):
        fails.append(f"load: {tot('failed')} calls failed to connect")
    if tot("dropped"):
        reasons = sorted({r["drop_reason"] for r in res if r.get("dropped")})
        fails.append(f"load: {tot('dropped')} calls were hung up by the "
                     f"server ({'; '.join(reasons)})")
    for k in ("misrouted", "corrupt", "protocol_errors"):
        if tot(k):
            fails.append(f"load: {tot(k)} {k} frames")

    # which waves saw a kill while their calls were live
    kills = [e["t"] for e in events if e["what"] == "kill"]
    hit = lambda w: any(w.t0 <= k < (w.t1 or 1e9) for k in kills)
    lost = lambda r: r["frames_sent"] - r["frames_echoed"]
    with_kill = [w.result for w in waves
                 if w.result and "error" not in w.result and hit(w)]
    without = [w.result for w in waves
               if w.result and "error" not in w.result and not hit(w)]
    frames = {}
    for name, rs in (("with a kill", with_kill), ("without", without)):
        if not rs:
            continue
        sent = sum(r["frames_sent"] for r in rs)
        ls = sum(lost(r) for r in rs)
        p50 = median(r["all_rtt_p50_ms"] for r in rs)
        p99 = max(r["all_rtt_p99_ms"] for r in rs)
        p99m = median(r["all_rtt_p99_ms"] for r in rs)
        mx = max(r["all_rtt_max_ms"] for r in rs)
        frames[name] = dict(waves=len(rs), calls=sum(r["calls"] for r in rs),
                            frames_sent=sent, frames_lost=ls,
                            start_lost=sum(r["start_lost"] for r in rs),
                            rtt_p50_median=p50, rtt_p99_median=p99m,
                            rtt_p99_worst=p99, rtt_max=mx,
                            duplicates=sum(r["duplicates"] for r in rs),
                            late_frames=sum(r["late_frames"] for r in rs))
        print(f"frames, waves {name} of a bridged during their calls: "
              f"{len(rs)} waves, {sent} frames sent, {ls} lost "
              f"({100 * ls / max(1, sent):.3f} %, {ls / 50:.1f} s of audio), "
              f"{frames[name]['duplicates']} duplicated; RTT of every frame "
              f"p50 {p50:.2f} ms (median of the waves), p99 {p99m:.2f} ms "
              f"(median) / {p99:.2f} ms (worst wave), max {mx:.2f} ms")
    if without and frames["without"]["frames_lost"]:
        fails.append(f"load: {frames['without']['frames_lost']} frames lost "
                     f"in waves that saw no kill (reloads must lose nothing)")
    late = tot("late_frames")
    if late:
        notes.append(f"bench_load sent {late} frames over 5 ms late (its own "
                     f"core was busy; worst "
                     f"{max(r['late_max_ms'] for r in res):.1f} ms)")

    # -- hand-overs
    ho = [e for e in events if e["what"] == "kill"]
    carried = sum(e["openai_sessions"] or 0 for e in ho)
    handed = sum(e.get("handed_over", 0) for e in ho)
    taken = sum(e.get("taken_over", 0) for e in ho)
    print(f"hand-overs: {len(ho)} kills of a bridged carrying {carried} "
          f"OpenAI sessions; nginx logged {handed} \"goes on with bridged\", "
          f"bridged {taken} \"taking the call over\"")
    took = [e["last_taken_ms"] for e in ho if e.get("last_taken_ms")]
    if took:
        print(f"  the last call of a kill was taken over {min(took)} to "
              f"{max(took)} ms after the kill -9 (median {median(took):.0f} "
              f"ms; bridged's log times, ms, against this script's clock)")
    # a worker's first moments, before a bridged has answered it, make a
    # call wait too (docs/operations.md): a wait within 2 s of a reload
    reloads = [e["t"] for e in events if e["what"] == "reload"]
    waits = [t for t, k, _ in nginx_ev if k == "wait"]
    fresh = [t for t in waits if any(0 <= t - r < 2 for r in reloads)]
    if waits:
        notes.append(f"nginx: {len(waits)} calls waited for a bridged "
                     f"(\"waits up to\"), {len(fresh)} of them in a new "
                     f"worker's first moments after a reload")
    n = sum(1 for _, k, _ in nginx_ev if k == "fallback")
    if n:
        fails.append(f"nginx: {n} calls ended with the fallback message "
                     f"(no bridged within 10 s)")
    if ho and handed == 0:
        fails.append("hand-over: no call was handed over after any kill")

    # -- the logs
    for kind, what in (("crash", "a worker crashed"),
                       ("alert", "alert/crit/emerg lines")):
        lines = [l for _, k, l in nginx_ev if k == kind]
        if lines:
            fails.append(f"nginx: {len(lines)} {what}: {lines[0][:160]}")
    san = [l for _, k, l in br_ev if k == "sanitizer"]
    if san:
        fails.append(f"bridged: {len(san)} sanitizer/crash lines: "
                     f"{san[0][:160]}")
    # the start-up probe (GET /api/numbers until it is not 503) leaves
    # "no bridged takes the request" and bridged's numbers.list warning
    # before the load: not counted
    ngx_err = [l for t, k, l in nginx_ev if k == "error" and t >= 0]
    br_warn = [l for t, k, l in br_ev if k in ("warn", "error") and t >= 0]
    print(f"nginx error.log: {len(ngx_err)} [error] lines under load")
    for k, n in grouped(ngx_err):
        print(f"  {n:6}  {k[:150]}")
    print(f"bridged logs: {len(br_warn)} warn/error lines under load")
    for k, n in grouped(br_warn):
        print(f"  {n:6}  {k[:150]}")
    for s in stack.unexpected:
        fails.append(f"process: {s}")

    # -- transcripts: one per call, nothing left half written
    tr = list((work / "transcripts").glob("*.json"))
    journals = list((work / "transcripts").glob(".*.journal"))
    noted = 0
    ended = {}
    for p in tr:
        try:
            d = json.loads(p.read_text())
        except ValueError:
            continue
        ended[d.get("endedBy")] = ended.get(d.get("endedBy"), 0) + 1
        if any(e.get("role") == "note" for e in d.get("transcript", [])):
            noted += 1
    print(f"records: {len(tr)} transcripts for {connected} calls "
          f"(endedBy {ended}); {noted} with a hand-over note; "
          f"{len(journals)} journals left")
    if len(tr) != connected:
        fails.append(f"records: {len(tr)} transcripts for {connected} "
                     f"connected calls")
    if journals:
        fails.append(f"records: {len(journals)} journals left behind")

    # -- the end state
    fo = final["fake"].get("open") or {}
    print(f"end ({final['t'] - 0:.0f} s, {args.grace:g} s after the last "
          f"call): fake OpenAI {fo.get('sessions')} sessions and "
          f"{fo.get('connections')} connections open ({fo.get('upgraded')} "
          f"sessions in all); nginx {live_calls(final)} media streams, "
          f"voice_status calls "
          f"{ {p: v['calls'] for p, v in final['status'].items()} }; "
          f"bridged OpenAI connections "
          f"{[b.get('conns') for b in final['bridged']]}")
    if fo.get("sessions") != 0 or fo.get("connections") != 0:
        fails.append(f"end: the fake OpenAI still has {fo.get('sessions')} "
                     f"sessions and {fo.get('connections')} connections open")
    if live_calls(final):
        fails.append(f"end: nginx still holds {live_calls(final)} media "
                     f"streams")
    if any(v["calls"] for v in final["status"].values()):
        fails.append("end: voice_status reports calls: "
                     + str({p: v["calls"]
                            for p, v in final["status"].items()}))
    if final["status_missing"]:
        fails.append(f"end: workers {final['status_missing']} did not answer "
                     f"voice_status")
    if any(b.get("conns") for b in final["bridged"]):
        fails.append(f"end: bridged holds OpenAI connections "
                     f"{[b.get('conns') for b in final['bridged']]}")
    draining = [w["pid"] for w in final["workers"] if w["draining"]]
    if draining:
        fails.append(f"end: old workers {draining} have not exited")
    if settle is not None:
        notes.append(f"idle only {settle} s after the last call")

    # -- old workers: each leaves once its last call has ended, so none is
    # seen more than the longest call (and a margin) after its reload
    drains = []
    for pid, w in stack.workers.items():
        if w["draining"] is not None and w["gen"] < len(reloads):
            drains.append(w["last"] - reloads[w["gen"]])
    if drains:
        print(f"old workers: {len(drains)} drained after their reload; the "
              f"last seen {min(drains):.0f} to {max(drains):.0f} s after it "
              f"(samples every {args.sample} s; the longest call is "
              f"{args.longest} s)")
        if max(drains) > args.longest + 15:
            fails.append(f"old workers: one was still there "
                         f"{max(drains):.0f} s after its reload (a call "
                         f"longer than the longest, {args.longest} s)")

    # -- descriptors against the idle baseline
    fd_rows = []
    def fd_check(name, base, end):
        fd_rows.append((name, base, end))
        if end is None or base is None or end > base + FD_TOLERANCE:
            fails.append(f"descriptors: {name} has {end} open, {base} at "
                         f"idle before the load (tolerance {FD_TOLERANCE})")
    fd_check("nginx master", idle["master"]["fds"], final["master"]["fds"])
    wb = max(w["fds"] for w in idle["workers"])
    for w in final["workers"]:
        fd_check(f"nginx worker {w['pid']} (gen {w['gen']})", wb, w["fds"])
    for b0, b1 in zip(idle["bridged"], final["bridged"]):
        fd_check(f"bridged {b1['slot']} (incarnation {b1.get('incarnation')})",
                 b0["fds"], b1.get("fds"))
    fd_check("fake OpenAI", idle["fake"]["fds"], final["fake"]["fds"])
    print("descriptors, idle before the load -> at the end: " + "; ".join(
        f"{n} {a} -> {b}" for n, a, b in fd_rows))
    # the master keeps the old configuration's files (logs, listening
    # sockets) open while old workers drain: its count is compared only in
    # the samples where no worker drains
    quiet = sorted({s["master"]["fds"] for s in samples
                    if not any(w["draining"] for w in s["workers"])})
    busy = sorted({s["master"]["fds"] for s in samples
                   if any(w["draining"] for w in s["workers"])})
    if quiet != [idle["master"]["fds"]]:
        fails.append(f"descriptors: the nginx master held {quiet} with no "
                     f"worker draining, {idle['master']['fds']} at idle")
    print(f"nginx master descriptors: {quiet} with no old worker left, "
          f"{busy} while old workers drain")

    # -- memory
    mem = check_memory(samples, args.minutes, notes, fails)
    for cls, v in mem.items():
        if cls == "calls":
            continue
        print(f"memory {cls:8}: {v['first_kb'] / 1024:7.1f} MB in the first "
              f"minutes, {v['last_kb'] / 1024:7.1f} MB in the last "
              f"({v['growth_kb']:+.0f} kB, tolerance {v['tolerance_kb']} kB; "
              f"slope {v['slope_kb_per_min']} kB/min)")
    if mem:
        print(f"  (live calls, median: {mem['calls']['first']} then "
              f"{mem['calls']['last']})")
    br, wk = lives(samples)
    print("bridged at its last sample, by life (slot.n: age s, MB, calls): "
          + "  ".join(f"{k[0]}.{k[1]}: {v['age']:.0f}, {v['rss'] / 1024:.1f}"
                      f", {v['calls']}"
                      for k, v in sorted(br.items(),
                                         key=lambda kv: kv[0][::-1])))
    print("nginx workers at their last sample before a reload, by "
          "generation (MB, calls): " + "  ".join(
              f"{g}: {v['rss'] / 1024:.1f}, {v['calls']}"
              for g, v in sorted(wk.items())))
    print(f"idle RSS before the load -> at the end, MB: master "
          f"{idle['master']['rss'] / 1024:.1f} -> "
          f"{final['master']['rss'] / 1024:.1f}"
          f", workers {classes(idle)['workers'] / 1024:.1f} -> "
          f"{classes(final)['workers'] / 1024:.1f}, bridged "
          f"{classes(idle)['bridged'] / 1024:.1f} -> "
          f"{classes(final)['bridged'] / 1024:.1f}")

    # -- CPU: did the machine carry it?
    # from the second minute on (the first is the ramp)
    cpus = [s["cpu"] for s in load if "cpu" in s and s["t"] >= 60]
    if cpus:
        b = median(c["bridge"] for c in cpus)
        tl = median(c["tools"] for c in cpus)
        c0 = median(c["cores"][0] for c in cpus)
        c1 = median(c["cores"][1] for c in cpus)
        per_call = median(s["cpu"]["bridge"] * 10 / live_calls(s)
                          for s in load if "cpu" in s and s["t"] >= 60
                          and live_calls(s))
        print(f"CPU after the first minute: nginx + bridged median {b:.0f} % "
              f"of a core (most {max(c['bridge'] for c in cpus):.0f} %; "
              f"{per_call:.2f} CPU-ms per call-second), tools median "
              f"{tl:.0f} % (most {max(c['tools'] for c in cpus):.0f} %); "
              f"cores busy, everything on the machine, median {c0:.0f} % / "
              f"{c1:.0f} %")
        if b > 85 or tl > 85:
            notes.append("SATURATED: a side of the load used over 85 % of "
                         "its core: latencies are the machine's")
        if min(c0, c1) > 95:
            notes.append("both cores were busy nearly all the time (other "
                         "work on the machine too): CPU times include "
                         "contention, latencies are the machine's")

    verdict = "FAIL" if fails else "PASS"
    print()
    for n in notes:
        print(f"note: {n}")
    for f in fails:
        print(f"FAIL: {f}")
    print(f"verdict: {verdict}")

    meta.update(args=vars(args), verdict=verdict, fails=fails, notes=notes,
                minutes=rows, events=events, memory=mem, frames=frames,
                samples=samples,
                waves=[{"n": w.n, "t0": round(w.t0, 1),
                        "t1": w.t1 and round(w.t1, 1), "result": w.result}
                       for w in waves],
                bridged_lives={f"{s}.{n}": v for (s, n), v in br.items()},
                worker_generations=wk,
                records=dict(transcripts=len(tr), noted=noted, ended=ended,
                             journals=len(journals)))
    out_json.write_text(json.dumps(meta, indent=1, default=str))
    print(f"samples: {out_json}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
