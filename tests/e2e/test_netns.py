"""test_netns.py: bridged on another host, over tcp://.

The test makes two hosts of its own with network namespaces: an edge host
running nginx, and a bridge host running bridged and the outside services
(the fakes of OpenAI and Twilio).  A veth pair joins them with
loopback-range addresses only (127.100.x.1 and .2; each namespace narrows
its local 127/8 route to 127.0.0.1 and allows route_localnet, so nothing
leaves the machine or touches its own routes).  nginx reaches bridged at
tcp://127.100.x.2; the fake Twilio reaches nginx at 127.100.x.1.  A whole
inbound call must work across them.  The test talks to nginx through a
Unix socket and to the fakes with `ip netns exec`, since neither host is
reachable from the root namespace.

Making the hosts is transactional: whatever step fails (`ip netns exec`
does in a chroot), what was made -- the namespaces, the veth pair, any
process in them -- is removed and the test is skipped, saying why; after
the test the same removal runs, and must leave none of it behind
(test_failed_setup_leaves_nothing fails each step in turn).
"""

import base64
import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import (BUILD, CERTS, FIXTURES, PY, TOP, fixture_bytes,
                      fixture_text, render, wait_for)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2")


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, capture_output=True,
                          text=True, **kw)


class Hosts:
    """Two hosts: network namespaces joined by a veth pair.  Hosts() only
    names them; setup() makes them, step by step; delete() removes
    whatever of them exists, whichever step failed."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.edge, self.bridge = "vbe" + tag, "vbb" + tag
        self.net = "127.100.%d" % (int(tag[:2], 16) % 250 + 1)
        self.edge_ip, self.bridge_ip = self.net + ".1", self.net + ".2"
        self.veth_e, self.veth_b = "ve" + tag, "vb" + tag

    def setup(self):
        sh("ip", "netns", "add", self.edge)
        sh("ip", "netns", "add", self.bridge)
        sh("ip", "link", "add", self.veth_e, "type", "veth", "peer", "name",
           self.veth_b)
        for ns, veth, ip in ((self.edge, self.veth_e, self.edge_ip),
                             (self.bridge, self.veth_b, self.bridge_ip)):
            sh("ip", "link", "set", veth, "netns", ns)
            run = ("ip", "netns", "exec", ns)
            sh(*run, "ip", "link", "set", "lo", "up")
            sh(*run, "ip", "route", "del", "local", "127.0.0.0/8", "dev",
               "lo", "table", "local")
            sh(*run, "ip", "route", "replace", "local", "127.0.0.1", "dev",
               "lo", "table", "local")
            sh(*run, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
            sh(*run, "sysctl", "-qw",
               "net.ipv4.conf.%s.route_localnet=1" % veth)
            sh(*run, "ip", "addr", "add", ip + "/24", "dev", veth)
            sh(*run, "ip", "link", "set", veth, "up")

    def run(self, ns, *argv):
        return ["ip", "netns", "exec", ns] + list(argv)

    def left(self):
        """what of the hosts the root namespace still shows"""
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True,
                            text=True).stdout.split()
        links = subprocess.run(["ip", "-o", "link", "show"],
                               capture_output=True, text=True).stdout
        links = [l.split(":")[1].strip().split("@")[0]
                 for l in links.splitlines() if ":" in l]
        return [n for n in (self.edge, self.bridge) if n in ns] + \
            [n for n in (self.veth_e, self.veth_b) if n in links]

    def delete(self):
        """removes whatever of the hosts exists: the processes in the
        namespaces (a namespace lives on while one runs in it, and so
        does a veth in it), the veth pair, the namespaces; returns what
        could not be removed"""
        quiet = dict(capture_output=True, text=True)
        for ns in (self.edge, self.bridge):
            pids = subprocess.run(["ip", "netns", "pids", ns],
                                  **quiet).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        # one end still in the root namespace (a failure before it moved)
        for veth in (self.veth_e, self.veth_b):
            subprocess.run(["ip", "link", "del", veth], **quiet)
        for ns in (self.edge, self.bridge):
            subprocess.run(["ip", "netns", "del", ns], **quiet)
        # the kernel takes a moment over a veth whose namespace went
        deadline = time.monotonic() + 5
        while self.left() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.left()


def make_hosts(h):
    """h.setup(), or, when a step fails, h.delete() and a skip that says
    which step and why"""
    try:
        h.setup()
    except BaseException as e:
        left = h.delete()
        assert not left, "left behind by a failed set-up: %s" % left
        if isinstance(e, subprocess.CalledProcessError):
            pytest.skip("this machine cannot make the test's network "
                        "namespaces: `%s` failed (%s): %s" % (
                            " ".join(e.cmd), e.returncode,
                            (e.stderr or "").strip()))
        if isinstance(e, OSError):
            pytest.skip("this machine cannot make the test's network "
                        "namespaces: %s" % e)
        raise
    return h


@pytest.fixture
def hosts():
    h = make_hosts(Hosts())
    try:
        yield h
    finally:
        left = h.delete()
    assert not left, "left behind: %s" % left


# (step to fail, which of those steps): the chroot case is the first
# `ip netns exec`
SETUP_STEPS = [("ip netns add", 1), ("ip netns add", 2), ("ip link add", 1),
               ("ip link set", 1), ("ip netns exec", 1), ("ip link set", 2),
               ("ip netns exec", 14)]


@pytest.mark.parametrize("step,nth", SETUP_STEPS)
def test_failed_setup_leaves_nothing(monkeypatch, step, nth):
    seen, real_sh = [], sh

    def failing_sh(*argv, **kw):
        if " ".join(argv).startswith(step):
            seen.append(argv)
            if len(seen) == nth:
                raise subprocess.CalledProcessError(
                    1, list(argv), "", "setting the network namespace "
                    "failed: Invalid argument (injected)")
        return real_sh(*argv, **kw)

    monkeypatch.setitem(globals(), "sh", failing_sh)
    h = Hosts()
    try:
        with pytest.raises(pytest.skip.Exception) as skipped:
            make_hosts(h)
        assert "cannot make the test's network namespaces" in \
            str(skipped.value), skipped.value
        # (a real failure before the injected one skips just the same)
        assert len(seen) == nth or "(injected)" not in str(skipped.value)
        assert h.left() == []
    finally:
        h.delete()


def test_bridged_on_another_host(hosts):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="voice-netns-"))
    (tmp / "tmp").mkdir()
    transcripts = tmp / "transcripts"
    transcripts.mkdir()
    procs = []
    token, key = secrets.token_hex(16), "sk-test-" + secrets.token_hex(8)
    account = "AC" + secrets.token_hex(16)
    api_token = secrets.token_urlsafe(24)
    # (ports of the test's own namespaces: nothing else uses them)
    nginx_port, bridge_ep = 8080, "tcp://%s:5555" % hosts.bridge_ip

    def spawn(name, argv, env=None, ready=False):
        log = open(tmp / (name + ".log"), "wb")
        p = subprocess.Popen(argv, env=env, stderr=log,
                             stdout=subprocess.PIPE if ready else log)
        procs.append(p)
        if ready:
            line = p.stdout.readline().decode()
            assert line.startswith("READY "), (tmp / (name + ".log")).read_text()
            return int(line.split()[1])

    def fake(method, port, path, body=None):
        argv = ["curl", "-sS", "--fail", "--cacert", str(CERTS / "ca.pem"),
                "-X", method, "https://localhost:%d%s" % (port, path)]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d",
                     json.dumps(body)]
        return json.loads(sh(*hosts.run(hosts.bridge, *argv)).stdout)

    def nginx(path):
        return subprocess.run(
            ["curl", "-sS", "--unix-socket", str(tmp / "nginx.sock"),
             "-H", "Authorization: Bearer " + api_token,
             "-o", "-", "-w", "\n%{http_code}", "http://edge" + path],
            capture_output=True, text=True, check=True).stdout

    try:
        # the bridge host: the outside services and bridged
        oai = spawn("fake_openai", hosts.run(
            hosts.bridge, PY, str(TOP / "tests/fakes/fake_openai.py"),
            "--port", "0", "--tls-cert", str(CERTS / "server.pem"),
            "--tls-key", str(CERTS / "server.key"), "--api-key", key,
            "--reply-audio", str(FIXTURES / "reply.ulaw"),
            "--reply-text", fixture_text("reply"),
            "--phrase", "%s=%s" % (FIXTURES / "caller.ulaw",
                                   fixture_text("caller"))), ready=True)
        tw = spawn("fake_twilio", hosts.run(
            hosts.bridge, PY, str(TOP / "tests/fakes/fake_twilio.py"),
            "--port", "0", "--tls-cert", str(CERTS / "server.pem"),
            "--tls-key", str(CERTS / "server.key"),
            "--account-sid", account, "--auth-token", token,
            "--public-url", "https://voice.example.test",
            "--deliver-to", "http://%s:%d" % (hosts.edge_ip, nginx_port),
            "--caller-audio", str(FIXTURES / "caller.ulaw")), ready=True)
        env = dict(os.environ, TWILIO_ACCOUNT_SID=account,
                   TWILIO_AUTH_TOKEN=token, OPENAI_API_KEY=key,
                   TWILIO_API_URL="https://localhost:%d" % tw,
                   OPENAI_REALTIME_URL="wss://localhost:%d/v1/realtime" % oai,
                   BRIDGED_CA_FILE=str(CERTS / "ca.pem"))
        spawn("bridged", hosts.run(hosts.bridge, str(BUILD / "bridged/bridged"),
                                   "--listen", bridge_ep), env=env)
        wait_for(lambda: "listening on" in (tmp / "bridged.log").read_text(),
                 10, what="bridged")

        # the edge host: nginx, reaching bridged across the link
        conf = tmp / "nginx.conf"
        conf.write_text(render(TOP / "conf/nginx.conf.in", {
            "USER_LINE": "user root;", "RUN_DIR": str(tmp),
            "ERROR_LOG": str(tmp / "error.log"),
            "MODULE": str(BUILD / "nginx/ngx_http_voice_module.so"),
            "BRIDGE_ENDPOINT": bridge_ep,
            "LISTEN": "%s:%d;\n        listen unix:%s" % (
                hosts.edge_ip, nginx_port, tmp / "nginx.sock")}))
        spawn("nginx", hosts.run(hosts.edge, "/usr/sbin/nginx", "-p",
                                 str(tmp), "-c", str(conf)),
              env=dict(os.environ, PUBLIC_URL="https://voice.example.test",
                       TWILIO_AUTH_TOKEN=token, VOICE_API_TOKEN=api_token,
                       TRANSCRIPT_DIR=str(transcripts)))
        wait_for(lambda: (tmp / "nginx.sock").exists()
                 and nginx("/api/numbers").endswith("\n200"), 15, 0.2,
                 "nginx to reach bridged across the link")

        # a whole call, across both hosts
        sid = fake("POST", tw, "/_fake/inbound",
                   {"from": "+14155550142"})["callSid"]
        def heard():
            # played in full, its marks echoed: bridged knows it was heard
            c = fake("GET", tw, "/_fake/calls/" + sid)
            return len(base64.b64decode(c["played_audio_b64"])) >= len(
                fixture_bytes("reply")) and all(m["echoed"]
                                                for m in c["marks"])
        wait_for(heard, 40, 0.2, "the reply")
        fake("POST", tw, "/_fake/calls/%s/hangup" % sid, {"wait": True})

        call = fake("GET", tw, "/_fake/calls/" + sid)
        assert call["violations"] == []
        assert base64.b64decode(call["received_audio_b64"]) \
            == fixture_bytes("reply")
        wait_for(lambda: list(transcripts.glob(sid + "_*.json")), 20,
                 what="the transcript")
        out = nginx("/api/transcript/%s?format=text" % sid)
        assert out == "User: %s\nAssistant: %s\n\n200" % (
            fixture_text("caller"), fixture_text("reply"))

        # the worker's connection really came over the link
        assert "nginx worker" in (tmp / "bridged.log").read_text()
        ss = sh(*hosts.run(hosts.bridge, "ss", "-tnH", "state",
                           "established", "sport", "= :5555")).stdout
        assert hosts.edge_ip in ss, ss
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGQUIT if p is procs[-1]
                              and "nginx" in " ".join(p.args)
                              else signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    err = (tmp / "error.log").read_text()
    assert "[alert]" not in err and "[crit]" not in err, err
    shutil.rmtree(tmp, ignore_errors=True)
