"""conftest.py: the end-to-end harness.

Each test gets a Stack: the real nginx (Debian's /usr/sbin/nginx loading
the built module, with conf/nginx.conf.in rendered by tools/render.py, as
build.sh renders it), the real bridged, and the protocol fakes of Twilio
(HTTPS) and OpenAI (WSS) from tests/fakes, all on free ports, in a
temporary directory.
Nothing of the project's own is mocked.  After each test the logs are
checked the way Test::Nginx's no_error_log does: no [alert], [crit] or
[emerg] from nginx, no sanitizer report, and no secret in any log line.

A test that fails prints the end of every log of its stacks (CI keeps
nothing else) and keeps their directories.

Modes (environment): VOICE_KEEP=1 keeps the temporary directory;
VOICE_BRIDGED_WRAPPER="valgrind -q" runs bridged under a wrapper;
VOICE_BRIDGED=path runs another bridged binary (the sanitizer build).
"""

import base64
import json
import os
import pathlib
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

TOP = pathlib.Path(os.environ.get("VOICE_TOP")
                   or pathlib.Path(__file__).resolve().parents[2])
BUILD = pathlib.Path(os.environ.get("VOICE_BUILD") or TOP / "build")
PY = "/usr/bin/python3"
FIXTURES = BUILD / "fixtures"
CERTS = BUILD / "certs"

# render(template, values): conf/*.in -> text, with build.sh's renderer
sys.path.insert(0, str(TOP / "tools"))
from render import render  # noqa: E402


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """a port nobody listens on, for a server the test starts later.

    Not one the kernel hands out (bind to port 0): those come from the
    ephemeral range, where every outgoing connection on the machine takes
    its source port, so between this check and nginx's bind() another
    connection may take it (seen in CI: "Address already in use").  Below
    that range only a listener can take a port, and the pick is random, so
    two tests (or two machines' worth of tests) rarely try the same one.
    """
    low = max(1024, min(_ephemeral_low(), 65536) - 12000)
    high = min(_ephemeral_low(), 65536) - 1
    for _ in range(200):
        port = random.randint(low, high)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise AssertionError("no free port in %d..%d" % (low, high))


def fixture_bytes(name):
    return (FIXTURES / (name + ".ulaw")).read_bytes()


def fixture_text(name):
    return (FIXTURES / (name + ".txt")).read_text()


def sent_session(raw):
    """one session.update bridged sent, as the fake OpenAI recorded it: its
    session object"""
    u = json.loads(raw) if isinstance(raw, str) else raw
    return u.get("session", u)


def wait_for(pred, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


class Stack:
    """One running voice bridge and its fakes."""

    def __init__(self, tmp, **opts):
        self.dir = pathlib.Path(tmp)
        self.opts = opts
        self.procs = {}
        self.port = free_port()
        # tls: nginx listens with ssl (the test CA's localhost certificate)
        # and the fake Twilio reaches it over https:// and wss://
        self.tls = opts.get("tls", False)
        self.base = ("https://localhost:%d" if self.tls
                     else "http://127.0.0.1:%d") % self.port
        self.transcripts = self.dir / "transcripts"
        self.transcripts.mkdir()
        (self.dir / "tmp").mkdir()
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_hex(16)
        self.api_key = "sk-test-" + secrets.token_hex(12)
        self.api_token = secrets.token_urlsafe(24)
        self.public_url = opts.get("public_url", "https://voice.example.test")
        self.ca = str(CERTS / "ca.pem")
        self.tool_secret = secrets.token_hex(16)
        self.webhook_secret = secrets.token_hex(16)
        self.secrets = [self.auth_token, self.api_key, self.api_token,
                        self.tool_secret, self.webhook_secret]
        # patterns of [alert]/[crit] lines a test causes on purpose (the
        # master's "exited on signal 9" of a worker the test killed)
        self.expected_log = []

    # --- processes ----------------------------------------------------------

    def _spawn(self, name, argv, env=None, ready=None):
        log = open(self.dir / (name + ".log"), "wb")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE if ready else log,
                             stderr=log, env=env, cwd=str(self.dir),
                             start_new_session=True)
        self.procs[name] = p
        if ready:
            line = p.stdout.readline().decode()
            if not line.startswith("READY "):
                raise AssertionError("%s did not start: %r\n%s" % (
                    name, line, (self.dir / (name + ".log")).read_text()))
            return int(line.split()[1])
        return None

    def start_fakes(self):
        o = self.opts
        # openai_cert / twilio_cert "other": a certificate from a CA that
        # bridged does not trust
        oai_cert = o.get("openai_cert", "server")
        tw_cert = o.get("twilio_cert", "server")
        self.oai_ca = str(CERTS / ("other-ca.pem" if oai_cert == "other"
                                   else "ca.pem"))
        self.tw_ca = str(CERTS / ("other-ca.pem" if tw_cert == "other"
                                  else "ca.pem"))
        argv = [PY, str(TOP / "tests/fakes/fake_openai.py"), "--port", "0",
                "--tls-cert", str(CERTS / (oai_cert + ".pem")),
                "--tls-key", str(CERTS / (oai_cert + ".key")),
                "--api-key", self.api_key,
                "--reply-audio", str(FIXTURES / "reply.ulaw"),
                "--reply-text", fixture_text("reply"),
                "--phrase", "%s=%s" % (FIXTURES / "caller.ulaw",
                                       fixture_text("caller")),
                "--accept-delay-ms", str(o.get("accept_delay_ms", 0))]
        if o.get("transcription_delay_ms"):
            argv += ["--transcription-delay-ms"] + [
                str(v) for v in o["transcription_delay_ms"]]
        self.oai_port = self._spawn("fake_openai", argv, ready=True)

        argv = [PY, str(TOP / "tests/fakes/fake_twilio.py"), "--port", "0",
                "--tls-cert", str(CERTS / (tw_cert + ".pem")),
                "--tls-key", str(CERTS / (tw_cert + ".key")),
                "--account-sid", self.account_sid,
                "--auth-token", self.auth_token,
                "--numbers", str(o.get("numbers", 3)),
                "--max-page-size", str(o.get("max_page_size", 0)),
                "--public-url", self.public_url,
                "--deliver-to", self.base,
                "--caller-audio", str(FIXTURES / "caller.ulaw")]
        if self.tls:
            argv += ["--ca-file", self.ca]
        if o.get("auto_hangup"):
            argv.append("--auto-hangup")
        self.tw_port = self._spawn("fake_twilio", argv, ready=True)
        self.tw_base = "https://localhost:%d" % self.tw_port
        self.oai_base = "https://localhost:%d" % self.oai_port

        # an operator's HTTP tool endpoint (voice_tool), checking our
        # signature with the stack's VOICE_TOOL_SECRET
        self.tool_base = None
        if o.get("tool_server"):
            argv = [PY, str(TOP / "tests/fakes/tool_server.py"), "--port",
                    "0"]
            env = dict(os.environ, VOICE_TOOL_SECRET=self.tool_secret)
            port = self._spawn("tool_server", argv, env=env, ready=True)
            self.tool_base = "http://127.0.0.1:%d" % port

    def bridged_env(self):
        env = dict(os.environ)
        env.update({
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_API_URL": self.tw_base,
            "OPENAI_API_KEY": self.api_key,
            "OPENAI_REALTIME_URL": "wss://localhost:%d/v1/realtime"
                                   % self.oai_port,
            "OPENAI_MODEL": "gpt-realtime-2.1",
            "BRIDGED_CA_FILE": self.ca,
        })
        return env

    def start_bridged(self):
        """One bridged, or opts["bridges"] of them behind the same nginx;
        each listens on its own endpoint (opts["endpoints"], default an
        ipc:// socket in the test directory)."""
        n = self.opts.get("bridges", 1)
        eps = self.opts.get("endpoints") or [
            "ipc://%s/bridged-%d.sock" % (self.dir, i) for i in range(n)]
        self.endpoints = eps
        self.endpoint = " ".join(eps)
        self.bridged_names = ["bridged" if i == 0 else "bridged-%d" % i
                              for i in range(len(eps))]
        binary = os.environ.get("VOICE_BRIDGED") or str(BUILD / "bridged/bridged")
        # bridged_syslog: bridged logs to syslog, a datagram socket here
        # whose lines land in <name>.syslog.log (log() reads both files)
        syslog = []
        if self.opts.get("bridged_syslog"):
            syslog = ["--log", "syslog:server=unix:%s" % self._syslog()]
        wrapper = shlex.split(os.environ.get("VOICE_BRIDGED_WRAPPER", ""))
        prefix = self.opts.get("bridged_prefix", [])
        for name, ep in zip(self.bridged_names, eps):
            argv = prefix + wrapper + [
                binary, "--listen", ep,
                "--twilio-timeout-ms",
                str(self.opts.get("twilio_timeout_ms", 10000)),
                "--final-wait-ms", str(self.opts.get("final_wait_ms", 5000))
            ] + syslog + self.opts.get("bridged_args", [])
            self._spawn(name, argv, env=self.bridged_env())
        for name, ep in zip(self.bridged_names, eps):
            wait_for(lambda: "listening on" in self.log(name), 10,
                     what=name + " to listen")

    def start_nginx(self):
        values = {
            "USER_LINE": "user root;" if os.geteuid() == 0 else "",
            "RUN_DIR": str(self.dir),
            "ERROR_LOG": str(self.dir / "error.log"),
            "MODULE": str(BUILD / "nginx/ngx_http_voice_module.so"),
            "BRIDGE_ENDPOINT": self.endpoint,
            "LISTEN": "127.0.0.1:%d%s" % (self.port,
                                          " ssl" if self.tls else ""),
            "EXTRA_HTTP": self.opts.get("extra_http", "") + (
                " ssl_certificate %s; ssl_certificate_key %s;" % (
                    CERTS / "server.pem", CERTS / "server.key")
                if self.tls else ""),
        }
        # the template's include points, as VOICE_NGINX_INCLUDE and
        # VOICE_NGINX_HTTP_INCLUDE fill them under ./build.sh run
        for key, opt in (("SERVER_INCLUDE", "server_include"),
                         ("HTTP_INCLUDE", "http_include")):
            if opt in self.opts:
                f = self.dir / (opt + ".conf")
                f.write_text(self.opts[opt])
                values[key] = "include %s;" % f
        conf = self.dir / "nginx.conf"
        conf.write_text(render(TOP / "conf/nginx.conf.in", values))
        env = dict(os.environ)
        env.update({"PUBLIC_URL": self.public_url,
                    "TWILIO_AUTH_TOKEN": self.auth_token,
                    "VOICE_API_TOKEN": self.api_token,
                    "VOICE_TOOL_SECRET": self.tool_secret,
                    "VOICE_WEBHOOK_SECRET": self.webhook_secret,
                    "TRANSCRIPT_DIR": str(self.transcripts)})
        for k in ("TWILIO_ACCOUNT_SID", "OPENAI_API_KEY"):
            env.pop(k, None)
        self._spawn("nginx", ["/usr/sbin/nginx", "-p", str(self.dir), "-c",
                              str(conf)], env=env)

        def up():
            try:
                return requests.get(self.base + "/voice-status",
                                    verify=self.ca,
                                    timeout=1).status_code == 200
            except requests.ConnectionError:
                return False
        wait_for(up, 10, what="nginx")

    def start(self):
        self.start_fakes()
        self.start_bridged()
        self.start_nginx()
        # the workers' DEALERs connect asynchronously: wait until a request
        # really reaches bridged
        wait_for(lambda: self.api("GET", "/api/numbers").status_code != 503,
                 10, 0.1, "the bridge channel")
        # and every worker has heard from every bridged: just after start
        # one may not have yet, and refuses a stream (issue 10's to fix)
        wait_for(lambda: all(b["alive"] for w in self.status_all().values()
                             for b in w["bridges"]), 10, 0.1,
                 "every bridged alive in every worker")
        return self

    def stop_process(self, name, sig=signal.SIGTERM, timeout=15):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise AssertionError("%s did not stop within %ss" % (name, timeout))

    def stop(self):
        errors = []
        order = [("nginx", signal.SIGQUIT)]
        order += [(b, signal.SIGTERM) for b in getattr(self, "bridged_names",
                                                       [])]
        order += [("fake_twilio", signal.SIGTERM),
                  ("fake_openai", signal.SIGTERM),
                  ("tool_server", signal.SIGTERM)]
        for name, sig in order:
            try:
                self.stop_process(name, sig)
            except AssertionError as e:
                errors.append(str(e))
        return errors

    # --- clients ------------------------------------------------------------

    def api(self, method, path, token=True, **kw):
        """a request to nginx; /api/ ones carry the bearer token unless
        token is False (or another string to send instead)"""
        kw.setdefault("timeout", 30)
        kw.setdefault("verify", self.ca)
        if path.startswith("/api/") and token:
            headers = dict(kw.pop("headers", None) or {})
            headers.setdefault("Authorization", "Bearer %s" % (
                self.api_token if token is True else token))
            kw["headers"] = headers
        return requests.request(method, self.base + path, **kw)

    def tw(self, method, path, body=None):
        r = requests.request(method, self.tw_base + path, json=body,
                             verify=self.tw_ca, timeout=30)
        r.raise_for_status()
        return r.json()

    def oai(self, path):
        r = requests.get(self.oai_base + path, verify=self.oai_ca, timeout=30)
        r.raise_for_status()
        return r.json()

    def tools(self, method, path, body=None):
        r = requests.request(method, self.tool_base + path, json=body,
                             timeout=30)
        r.raise_for_status()
        return r.json()

    def twilio_call(self, sid):
        return self.tw("GET", "/_fake/calls/" + sid)

    def openai_sessions(self):
        return self.oai("/_fake/sessions")

    def status_all(self, workers=2):
        """voice_status of every worker: fresh connections until each pid
        has answered (the kernel spreads them over the workers)."""
        seen = {}
        for _ in range(200):
            with requests.Session() as s:
                j = s.get(self.base + "/voice-status", timeout=5,
                          verify=self.ca,
                          headers={"Connection": "close"}).json()
            seen[j["pid"]] = j
            if len(seen) >= workers:
                return seen
        raise AssertionError("only workers %s answered" % list(seen))

    def status_counter(self, key, workers=None):
        """a counter of voice_status: the instance's, in shared memory, so
        every worker says the same (workers: status_all()'s answer)"""
        views = [w[key] for w in (workers or self.status_all()).values()]
        assert all(v == views[0] for v in views), (key, views)
        return views[0]

    def reload_nginx(self):
        """SIGHUP, as an operator reloads: new workers with the new
        configuration, the old ones gone, the bridge channel up"""
        old = set(self.status_all())
        self.procs["nginx"].send_signal(signal.SIGHUP)

        def fresh():
            try:
                return not (set(self.status_all()) & old)
            except (requests.ConnectionError, ValueError):
                return False
        wait_for(fresh, 20, 0.2, "nginx to reload")
        wait_for(lambda: self.api("GET", "/api/numbers").status_code != 503,
                 10, 0.1, "the bridge channel")

    def live_calls(self):
        return sum(j["calls"] for j in self.status_all().values())

    # --- logs ---------------------------------------------------------------

    def log(self, name):
        text = ""
        for f in (name + ".log", name + ".syslog.log"):
            p = self.dir / f
            text += p.read_text(errors="replace") if p.exists() else ""
        return text

    def _syslog(self):
        """a syslog receiver: a datagram socket whose every datagram is a
        line of bridged.syslog.log (all bridged share it, as they would
        /dev/log)"""
        path = self.dir / "syslog.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        out = open(self.dir / "bridged.syslog.log", "ab", buffering=0)

        def receive():
            while True:
                try:
                    d = sock.recv(65536)
                except OSError:
                    return
                out.write(d + b"\n")
        threading.Thread(target=receive, daemon=True).start()
        self.syslog_sock = sock
        return path

    def check_logs(self):
        problems = []
        err = self.log("error")
        for level in ("[alert]", "[crit]", "[emerg]"):
            for line in err.splitlines():
                if level in line and not any(re.search(x, line) for x
                                             in self.expected_log):
                    problems.append("nginx: " + line)
        for name in ["error", "nginx"] + getattr(self, "bridged_names", []):
            text = self.log(name)
            for s in self.secrets:
                if s in text:
                    problems.append("a secret appears in %s.log" % name)
            for marker in ("ERROR: AddressSanitizer", "runtime error:",
                           "ERROR: LeakSanitizer"):
                if marker in text:
                    problems.append("%s.log: %s" % (name, marker))
        return problems

    # --- helpers for calls ----------------------------------------------------

    def transcript_files(self, sid=None):
        pat = (sid + "_*.json") if sid else "*.json"
        return sorted(self.transcripts.glob(pat))

    def wait_transcript(self, sid, timeout=30):
        return wait_for(lambda: self.transcript_files(sid), timeout,
                        what="the transcript of " + sid)[0]

    def wait_call_completed(self, sid, timeout=40):
        """the fake Twilio's view of the call, once it has ended and its
        media stream has closed (Twilio completes the call first, then
        stops the stream: the stream's close is a moment later)"""
        def ended():
            c = self.twilio_call(sid)
            return (c["status"] == "completed"
                    and c["ws_status"] not in ("connecting", "open") and c)
        return wait_for(ended, timeout, 0.2, "the call %s to end" % sid)

    def wait_reply_heard(self, sid, nbytes, timeout=40):
        """the caller has heard nbytes of the assistant: played (Twilio
        plays in real time what came faster), and every mark echoed, so
        bridged knows it was heard -- a caller who hangs up sooner cut the
        reply off, and the record says so"""
        def heard():
            c = self.twilio_call(sid)
            return len(base64.b64decode(c["played_audio_b64"])) >= nbytes \
                and all(m["echoed"] for m in c["marks"])
        wait_for(heard, timeout, 0.1, "the assistant's reply at the caller")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """the call phase's report, for stack_factory to see how the test went"""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.voice_failed = rep.failed


def print_log_tails(stack, lines=40):
    for p in sorted(stack.dir.glob("*.log")):
        text = [ln for ln in p.read_text(errors="replace").splitlines()
                if "[debug]" not in ln]
        print("----- %s (last %d lines)" % (p, min(lines, len(text))))
        for ln in text[-lines:]:
            print(ln[:300])


@pytest.fixture
def stack_factory(request):
    made = []

    def make(**opts):
        tmp = tempfile.mkdtemp(prefix="voice-e2e-")
        s = Stack(tmp, **opts)
        made.append(s)
        return s.start()

    yield make

    failures = []
    test_failed = getattr(request.node, "voice_failed", False)
    for s in made:
        failures += s.stop()
        failures += s.check_logs()
        if test_failed or failures:
            # past pytest's capture: a passing teardown's output is never
            # shown, and this is what CI's log keeps of a failure
            capman = request.config.pluginmanager.getplugin(
                "capturemanager")
            with capman.global_and_fixture_disabled():
                print_log_tails(s)
        if os.environ.get("VOICE_KEEP") or failures or test_failed:
            print("kept %s" % s.dir)
        else:
            shutil.rmtree(s.dir, ignore_errors=True)
    assert not failures, "\n".join(failures)


@pytest.fixture
def stack(stack_factory):
    return stack_factory()


def json_of(resp):
    assert resp.headers.get("Content-Type", "").startswith("application/json"), \
        resp.headers
    return json.loads(resp.content)
