"""bench/benchlib.py: what the benchmark (bench/bench.py) and the soak
(bench/soak.py) share.

Reading /proc (CPU ticks, RSS, a process's children), a free port, core
pinning with taskset, building the load tools, starting the fake OpenAI
and waiting for its READY line, rendering conf/nginx.conf.in through the
project's one renderer (tools/render.py), the start-up probe that waits
until nginx really reaches bridged, stopping a process gracefully, and
folding log lines so that they group.  Standard library only: the
benchmark runs where the tests run.
"""

import json
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
BENCH = TOP / "bench"
TOOLS = BENCH / "build"
BUILD = Path(os.environ.get("VOICE_BUILD_DIR") or TOP / "build")
RESULTS = BENCH / "results"
NGINX = "/usr/sbin/nginx"
PUBLIC = "voice.example.test"
SIGN_URL = f"wss://{PUBLIC}/media-stream"
CLK_TCK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, str(TOP / "tools"))
from render import render  # noqa: E402  (tools/render.py)


class BenchError(Exception):
    """the run cannot go on: the message says why"""


# --- /proc ------------------------------------------------------------------

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def rss_kb(pid):
    """VmRSS in kB, or None when the process is gone."""
    s = read(f"/proc/{pid}/status") if pid else None
    m = re.search(r"^VmRSS:\s+(\d+)", s or "", re.M)
    return int(m.group(1)) if m else None


def cpu_ticks(pid, children=False):
    """utime + stime (+ cutime + cstime of reaped children), or None"""
    s = read(f"/proc/{pid}/stat") if pid else None
    if not s:
        return None
    f = s[s.rindex(")") + 2:].split()
    # after "pid (comm) ": state is f[0], utime f[11], stime f[12], ...
    t = int(f[11]) + int(f[12])
    if children:
        t += int(f[13]) + int(f[14])
    return t


def children_of(pid):
    s = read(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in s.split()] if s else []


def cmdline(pid):
    s = read(f"/proc/{pid}/cmdline")
    return s.replace("\0", " ").strip() if s else ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- set-up -----------------------------------------------------------------

def can_pin():
    """cores 0 and 1 both available to taskset"""
    try:
        return {0, 1} <= os.sched_getaffinity(0)
    except OSError:
        return False


def pin(core, pinned):
    """the taskset prefix that puts a command on a core, when pinning"""
    return ["taskset", "-c", str(core)] if pinned else []


def build_tools():
    if subprocess.run(["make", "-s", "-C", str(BENCH),
                       f"O={TOOLS}"]).returncode:
        raise BenchError("the benchmark tools do not build")


def raise_nofile():
    """every tool holds one socket per call (nginx two, with bridged's)"""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tree():
    """(the tree's short commit, whether it has local changes)"""
    head = subprocess.run(["git", "-C", str(TOP), "rev-parse", "--short",
                           "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(TOP), "diff", "--quiet",
                            "HEAD"], stderr=subprocess.DEVNULL).returncode
    return head, dirty != 0


# --- the processes ----------------------------------------------------------

def start_fake(work, args, pinned):
    """bench_fake_openai on core 0 with its output in work/fake.out and
    fake.log; returns (process, port) once it says READY"""
    out, log = work / "fake.out", work / "fake.log"
    with open(out, "wb") as fo, open(log, "wb") as fe:
        proc = subprocess.Popen(
            pin(0, pinned) + [str(TOOLS / "bench_fake_openai"), "--port",
                              "0"] + list(args),
            stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    for _ in range(100):
        m = re.search(r"^READY (\d+)", read(out) or "", re.M)
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop(proc)
    raise BenchError(f"bench_fake_openai did not start: {read(log)}")


def nginx_conf(work, endpoints, port, error_level, workers, extra_http=""):
    """conf/nginx.conf.in rendered as build.sh renders it, into
    work/nginx.conf (work is also its prefix), for bridged at the
    endpoints and listening on the port, with `workers` worker processes
    and error_log at error_level; the template must have one line of each
    to set"""
    text = render(TOP / "conf" / "nginx.conf.in", dict(
        USER_LINE="user root;" if os.getuid() == 0 else "",
        RUN_DIR=work, ERROR_LOG=work / "error.log",
        MODULE=BUILD / "nginx" / "ngx_http_voice_module.so",
        BRIDGE_ENDPOINT=" ".join(endpoints), LISTEN=f"127.0.0.1:{port}",
        EXTRA_HTTP=extra_http))
    text, n = re.subn(r"^(\s*)worker_processes .*;",
                      rf"\g<1>worker_processes {workers};", text, flags=re.M)
    text, m = re.subn(r"^(\s*error_log [^;]*) [a-z]+;",
                      rf"\1 {error_level};", text, flags=re.M)
    if n != 1 or m != 1:
        raise BenchError("conf/nginx.conf.in has no worker_processes line "
                         "or no error_log line to set")
    (work / "nginx.conf").write_text(text)


def bridged_env(api_key, oai_url, token):
    """bridged's environment: the fake OpenAI, Twilio's auth token, no
    Twilio API (a closed port), the test CA"""
    return dict(os.environ, OPENAI_API_KEY=api_key,
                OPENAI_REALTIME_URL=oai_url, OPENAI_MODEL="gpt-realtime",
                TWILIO_ACCOUNT_SID="AC" + secrets.token_hex(16),
                TWILIO_AUTH_TOKEN=token, TWILIO_API_URL="http://127.0.0.1:9",
                BRIDGED_CA_FILE=str(BUILD / "certs" / "ca.pem"))


def nginx_env(token, api_token, transcripts):
    """nginx's environment: what the module reads, and none of bridged's
    secrets"""
    env = dict(os.environ, PUBLIC_URL=f"https://{PUBLIC}",
               TWILIO_AUTH_TOKEN=token, VOICE_API_TOKEN=api_token,
               TRANSCRIPT_DIR=str(transcripts))
    env.pop("OPENAI_API_KEY", None)
    env.pop("TWILIO_ACCOUNT_SID", None)
    return env


def http_code(url, headers=None, timeout=5):
    """the status of a GET, 0 when nothing answered"""
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return 0


def http_json(url, timeout=2):
    """a GET's JSON body, or None"""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def wait_bridged(port, api_token, procs, logs):
    """nginx is up and a request really reaches bridged (voice_status says
    "alive" before the worker's DEALER has connected): /api/numbers
    answers 502 (bridged finds no Twilio API, there is none) instead of
    503.  procs: name -> process that must stay up meanwhile; logs: the
    files to show when one does not"""
    code = 0
    for _ in range(200):
        code = http_code(f"http://127.0.0.1:{port}/api/numbers",
                         {"Authorization": f"Bearer {api_token}"})
        if code not in (0, 503):
            return
        for name, p in procs.items():
            if p.poll() is not None:
                text = "".join(read(f) or "" for f in logs)
                raise BenchError(f"{name} did not start:\n{text}")
        time.sleep(0.1)
    raise BenchError(f"nginx does not reach bridged (/api/numbers: {code})")


def stop(proc, sig=signal.SIGTERM, timeout=15):
    """a signal (SIGTERM, or nginx's SIGQUIT), then SIGKILL after timeout
    seconds"""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- logs -------------------------------------------------------------------

def fold(line):
    """a log line without its time, numbers and SIDs: lines group by it"""
    line = re.sub(r"^\S+ (\S+ )?", "", line)
    line = re.sub(r"\b(CA|MZ)[0-9a-f]{32}\b", r"\1…", line)
    line = re.sub(r"\d+#\d+: \*\d+ ", "", line)
    line = re.sub(r", client: .*", "", line)
    return re.sub(r"\d+", "N", line)


def grouped(lines, n=6):
    """the n most frequent folded lines, with their counts"""
    counts = {}
    for line in lines:
        k = fold(line)
        counts[k] = counts.get(k, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:n]
