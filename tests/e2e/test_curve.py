"""test_curve.py: the link to a bridged on another host, with CURVE.

Two hosts made of network namespaces, as test_netns.py makes them: nginx
on the edge host, bridged and the fakes of OpenAI and Twilio on the bridge
host.  On the bridge host a relay that records every byte it carries
(tests/lib/tcp_tap.py; tcpdump is not installed) stands in front of
bridged, so the test sees what crosses the link.  The call's settings hold
a marker in the assistant's instructions, and the assistant's reply
becomes a transcript frame: both cross the link.

- Without CURVE both are in the recording, in clear: the check below can
  fail.
- With CURVE (keys made by `bridged --curve-keygen`) a whole call goes
  through byte for byte, and neither is in the recording.
- A key bridged does not list, a wrong public key of bridged's, and an
  nginx without CURVE all fail to connect: bridged stays unavailable to
  that nginx (503), nginx says why once, and bridged logs the refused key
  with the address it came from, or the failed handshake.
- `nginx -t` fails on a missing, malformed or world-readable key file and
  on half a configuration; it warns of a tcp:// endpoint beyond loopback
  without CURVE.
"""

import base64
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import (BUILD, CERTS, FIXTURES, PY, TOP, fixture_bytes,
                      fixture_text, render, wait_for)
from test_netns import Hosts, make_hosts, sh

BRIDGED = str(BUILD / "bridged/bridged")
MODULE = str(BUILD / "nginx/ngx_http_voice_module.so")

netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2")


@pytest.fixture
def hosts():
    h = make_hosts(Hosts())
    try:
        yield h
    finally:
        left = h.delete()
    assert not left, "left behind: %s" % left


def keygen(d, name):
    """a key pair made by bridged, as an operator makes one"""
    d.mkdir(exist_ok=True)
    out = subprocess.run([BRIDGED, "--curve-keygen", str(d / name)],
                         capture_output=True, text=True, check=True).stdout
    key, pub = d / (name + ".key"), d / (name + ".pub")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert str(pub) in out
    return key, pub


def key_text(path):
    return [l for l in path.read_text().splitlines()
            if l and not l.startswith("#")][0]


class Link:
    """the bridge host (fakes, bridged, the tap in front of it) and the
    nginx of the edge host, started again with each configuration"""

    def __init__(self, hosts):
        self.h = hosts
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="voice-curve-"))
        (self.tmp / "tmp").mkdir()
        self.transcripts = self.tmp / "transcripts"
        self.transcripts.mkdir()
        self.keys = self.tmp / "keys"
        self.procs = {}
        self.token = secrets.token_hex(16)
        self.api_key = "sk-test-" + secrets.token_hex(8)
        self.account = "AC" + secrets.token_hex(16)
        self.api_token = secrets.token_urlsafe(24)
        self.marker = "Marker-" + secrets.token_hex(12)
        self.secrets = [self.token, self.api_key, self.api_token]
        self.direct = "tcp://%s:5555" % hosts.bridge_ip
        self.tapped = "tcp://%s:5556" % hosts.bridge_ip
        self.nginx_port = 8080
        self.runs = 0

    def spawn(self, name, argv, env=None, ready=False):
        log = open(self.tmp / (name + ".log"), "ab")
        p = subprocess.Popen(argv, env=env, stderr=log,
                             stdout=subprocess.PIPE if ready else log)
        self.procs[name] = p
        if ready:
            line = p.stdout.readline().decode()
            assert line.startswith("READY "), self.log(name)
            return int(line.split()[1])

    def log(self, name):
        f = self.tmp / (name + ".log")
        return f.read_text(errors="replace") if f.exists() else ""

    def fake(self, method, port, path, body=None):
        argv = ["curl", "-sS", "--fail", "--cacert", str(CERTS / "ca.pem"),
                "-X", method, "https://localhost:%d%s" % (port, path)]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d",
                     json.dumps(body)]
        return json.loads(sh(*self.h.run(self.h.bridge, *argv)).stdout)

    def start_bridge(self, curve_args=()):
        h = self.h
        self.oai = self.spawn("fake_openai", h.run(
            h.bridge, PY, str(TOP / "tests/fakes/fake_openai.py"),
            "--port", "0", "--tls-cert", str(CERTS / "server.pem"),
            "--tls-key", str(CERTS / "server.key"), "--api-key",
            self.api_key, "--reply-audio", str(FIXTURES / "reply.ulaw"),
            "--reply-text", fixture_text("reply"),
            "--phrase", "%s=%s" % (FIXTURES / "caller.ulaw",
                                   fixture_text("caller"))), ready=True)
        self.tw = self.spawn("fake_twilio", h.run(
            h.bridge, PY, str(TOP / "tests/fakes/fake_twilio.py"),
            "--port", "0", "--tls-cert", str(CERTS / "server.pem"),
            "--tls-key", str(CERTS / "server.key"),
            "--account-sid", self.account, "--auth-token", self.token,
            "--public-url", "https://voice.example.test",
            "--deliver-to", "http://%s:%d" % (h.edge_ip, self.nginx_port),
            "--caller-audio", str(FIXTURES / "caller.ulaw")), ready=True)
        env = dict(os.environ, TWILIO_ACCOUNT_SID=self.account,
                   TWILIO_AUTH_TOKEN=self.token, OPENAI_API_KEY=self.api_key,
                   TWILIO_API_URL="https://localhost:%d" % self.tw,
                   OPENAI_REALTIME_URL="wss://localhost:%d/v1/realtime"
                   % self.oai, BRIDGED_CA_FILE=str(CERTS / "ca.pem"))
        self.spawn("bridged", h.run(h.bridge, BRIDGED, "--listen",
                                    self.direct, *curve_args), env=env)
        wait_for(lambda: "listening on" in self.log("bridged"), 10,
                 what="bridged")
        self.spawn("tap", h.run(
            h.bridge, PY, str(TOP / "tests/lib/tcp_tap.py"), "--listen",
            "%s:5556" % h.bridge_ip, "--to", "%s:5555" % h.bridge_ip,
            "--record", str(self.tmp / "link.bytes")), ready=True)

    def start_nginx(self, endpoint, extra=""):
        self.stop_nginx()
        self.runs += 1
        n = self.runs
        self.sock = self.tmp / ("nginx-%d.sock" % n)
        self.error_log = "error-%d" % n
        conf = self.tmp / ("nginx-%d.conf" % n)
        conf.write_text(render(TOP / "conf/nginx.conf.in", {
            "USER_LINE": "user root;", "RUN_DIR": str(self.tmp),
            "ERROR_LOG": str(self.tmp / (self.error_log + ".log")),
            "MODULE": MODULE, "BRIDGE_ENDPOINT": endpoint,
            "EXTRA_HTTP": 'voice_instructions "You are a test. %s";\n%s'
                          % (self.marker, extra),
            "LISTEN": "%s:%d;\n        listen unix:%s" % (
                self.h.edge_ip, self.nginx_port, self.sock)}))
        self.spawn("nginx", self.h.run(
            self.h.edge, "/usr/sbin/nginx", "-p", str(self.tmp), "-c",
            str(conf)), env=dict(
                os.environ, PUBLIC_URL="https://voice.example.test",
                TWILIO_AUTH_TOKEN=self.token, VOICE_API_TOKEN=self.api_token,
                TRANSCRIPT_DIR=str(self.transcripts)))
        wait_for(lambda: self.sock.exists(), 15, 0.1, "nginx")

    def stop_nginx(self):
        p = self.procs.pop("nginx", None)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(15)

    def nginx(self, path):
        out = subprocess.run(
            ["curl", "-sS", "--unix-socket", str(self.sock),
             "-H", "Authorization: Bearer " + self.api_token,
             "-o", "-", "-w", "\n%{http_code}", "http://edge" + path],
            capture_output=True, text=True, check=True).stdout
        body, _, code = out.rpartition("\n")
        return body, int(code)

    def connected(self):
        """how many nginx workers bridged let in"""
        return len(re.findall(r"nginx worker \S+ connected$",
                              self.log("bridged"), re.M))

    def link_bytes(self):
        f = self.tmp / "link.bytes"
        return f.read_bytes() if f.exists() else b""

    def call(self):
        """a whole inbound call across the link, checked byte for byte"""
        wait_for(lambda: self.nginx("/api/numbers")[1] == 200, 15, 0.2,
                 "nginx to reach bridged across the link")
        sid = self.fake("POST", self.tw, "/_fake/inbound",
                        {"from": "+14155550142"})["callSid"]

        def heard():
            c = self.fake("GET", self.tw, "/_fake/calls/" + sid)
            return len(base64.b64decode(c["played_audio_b64"])) >= len(
                fixture_bytes("reply")) and all(m["echoed"]
                                                for m in c["marks"])
        wait_for(heard, 40, 0.2, "the reply")
        self.fake("POST", self.tw, "/_fake/calls/%s/hangup" % sid,
                  {"wait": True})
        call = self.fake("GET", self.tw, "/_fake/calls/" + sid)
        assert call["violations"] == []
        assert base64.b64decode(call["received_audio_b64"]) \
            == fixture_bytes("reply")
        wait_for(lambda: list(self.transcripts.glob(sid + "_*.json")), 20,
                 what="the transcript")
        body, code = self.nginx("/api/transcript/%s?format=text" % sid)
        assert (body, code) == ("User: %s\nAssistant: %s\n" % (
            fixture_text("caller"), fixture_text("reply")), 200)
        # the session bridged opened carries the instructions nginx sent
        sessions = self.fake("GET", self.oai, "/_fake/sessions")
        assert self.marker in json.dumps(sessions)

    def refused(self, endpoint, extra, nginx_says):
        """nginx cannot use bridged: 503s, and it says why, once"""
        connected = self.connected()
        self.start_nginx(endpoint, extra)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert self.nginx("/api/numbers")[1] == 503
            time.sleep(0.2)
        err = wait_for(lambda: nginx_says in self.log(self.error_log)
                       and self.log(self.error_log), 5,
                       what="nginx to say: " + nginx_says)
        # each reason once per worker, though libzmq tries again ten times
        # a second
        said = [ln[ln.index("voice bridge:"):] for ln in err.splitlines()
                if nginx_says in ln]
        assert all(said.count(s) <= 2 for s in said), err
        assert self.connected() == connected

    def close(self):
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        problems = []
        for f in self.tmp.glob("*.log"):
            text = f.read_text(errors="replace")
            for level in ("[alert]", "[crit]"):
                if level in text:
                    problems.append("%s: %s" % (f.name, level))
            for s in self.secrets:
                if s in text:
                    problems.append("a secret appears in " + f.name)
        assert not problems, problems


@pytest.fixture
def link(request, hosts):
    lk = Link(hosts)
    try:
        yield lk
    finally:
        try:
            lk.close()
        finally:
            if os.environ.get("VOICE_KEEP") \
                    or getattr(request.node, "voice_failed", True):
                print("kept", lk.tmp)
            else:
                shutil.rmtree(lk.tmp, ignore_errors=True)


@netns
def test_without_curve_the_link_carries_the_call_in_clear(link):
    link.start_bridge()
    link.start_nginx(link.tapped)
    link.call()
    seen = link.link_bytes()
    # the control of the test below: its check can fail
    assert link.marker.encode() in seen
    assert fixture_text("reply").encode() in seen


@netns
def test_curve_encrypts_the_link_and_lets_in_only_listed_keys(link):
    bkey, bpub = keygen(link.keys, "bridged")
    ekey, epub = keygen(link.keys, "edge")
    okey, opub = keygen(link.keys, "other")
    link.secrets += [key_text(bkey), key_text(ekey), key_text(okey)]
    clients = link.keys / "clients"
    clients.mkdir()
    shutil.copy(epub, clients / "edge.pub")
    link.start_bridge(("--curve-secret-key", str(bkey),
                       "--curve-clients", str(clients)))
    assert "CURVE: on; bridged's public key %s; 1 nginx key let in" \
        % key_text(bpub) in link.log("bridged")
    curve = ("voice_bridge_curve_key %s;\nvoice_bridge_curve_server_key %s;"
             % (ekey, bpub))

    # a whole call, through the tap: none of it in clear
    link.start_nginx(link.tapped, curve)
    link.call()
    seen = link.link_bytes()
    assert len(seen) > 20000, len(seen)
    assert link.marker.encode() not in seen
    assert fixture_text("reply").encode() not in seen
    assert fixture_text("caller").encode() not in seen
    assert b"CURVE" in seen     # the greeting's mechanism, in clear

    # a key bridged does not list: refused, and bridged says so with the
    # address the connection came from
    link.refused(link.direct, "voice_bridge_curve_key %s;\n"
                 "voice_bridge_curve_server_key %s;" % (okey, bpub),
                 "refused this host's CURVE key")
    line = wait_for(lambda: [l for l in link.log("bridged").splitlines()
                             if "CURVE: refused nginx" in l], 5,
                    what="bridged's refusal")[0]
    assert "[warn]" in line and link.h.edge_ip in line \
        and key_text(opub) in line, line
    # retried ten times a second, said once a minute
    assert link.log("bridged").count("CURVE: refused nginx") == 1

    # a wrong public key of bridged's: no connection
    link.refused(link.direct, "voice_bridge_curve_key %s;\n"
                 "voice_bridge_curve_server_key %s;" % (ekey, opub),
                 "failed the CURVE handshake: is "
                 "voice_bridge_curve_server_key bridged's public key?")
    says = "failed its handshake: its greeting cannot be decrypted"
    line = wait_for(lambda: [l for l in link.log("bridged").splitlines()
                             if says in l], 5, what="bridged: " + says)[0]
    assert "[warn]" in line and link.direct in line, line

    # an nginx without CURVE: no connection; libzmq names the mismatch, or,
    # when bridged closes first (a loaded machine), only the failure
    link.refused(link.direct, "", "this host does not (voice_bridge_curve_key)")
    says = "failed its handshake: it does not use CURVE"
    line = wait_for(lambda: [l for l in link.log("bridged").splitlines()
                             if says in l], 5, what="bridged: " + says)[0]
    assert link.direct in line, line
    # once a minute, though retried ten times a second
    assert link.log("bridged").count(says) == 1

    # and the listed key still gets in, once more
    link.start_nginx(link.direct, curve)
    wait_for(lambda: link.nginx("/api/numbers")[1] == 200, 15, 0.2,
             "nginx with the listed key")


def nginx_t(tmp, extra, endpoint="tcp://127.0.0.1:5555"):
    conf = tmp / "nginx.conf"
    conf.write_text(render(TOP / "conf/nginx.conf.in", {
        "USER_LINE": "user root;", "RUN_DIR": str(tmp),
        "ERROR_LOG": str(tmp / "error.log"), "MODULE": MODULE,
        "BRIDGE_ENDPOINT": endpoint, "EXTRA_HTTP": extra,
        "LISTEN": "unix:%s" % (tmp / "nginx.sock")}))
    env = dict(os.environ, PUBLIC_URL="https://voice.example.test",
               TWILIO_AUTH_TOKEN="x" * 32, VOICE_API_TOKEN="y" * 32,
               TRANSCRIPT_DIR=str(tmp))
    p = subprocess.run(["/usr/sbin/nginx", "-t", "-p", str(tmp), "-c",
                        str(conf)], capture_output=True, text=True, env=env)
    return p.returncode, p.stderr


def test_nginx_t_checks_the_key_files():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="voice-curve-t-"))
    (tmp / "tmp").mkdir()
    keys = tmp / "keys"
    key, pub = keygen(keys, "edge")
    bkey, bpub = keygen(keys, "bridged")

    def conf(k, s):
        return ("voice_bridge_curve_key %s;\n"
                "voice_bridge_curve_server_key %s;" % (k, s))

    rc, err = nginx_t(tmp, conf(key, bpub))
    assert rc == 0, err
    assert "crosses the network" not in err

    cases = [
        (conf(keys / "missing.key", bpub), "voice_bridge_curve_key: stat()"),
        (conf(key, keys / "missing.pub"),
         "voice_bridge_curve_server_key: stat()"),
        (conf(bpub, bpub), "has mode 644: a secret key must be readable by "
                           "its owner only"),
        (conf(key, keys), "is not a regular file"),
        ("voice_bridge_curve_key %s;" % key, "go together"),
        ("voice_bridge_curve_server_key %s;" % bpub, "go together"),
        (conf(key, bpub) + "\nvoice_bridge_curve_key %s;" % key,
         "is duplicate"),
    ]
    bad = keys / "bad.pub"
    bad.write_text("# two keys where one goes\n%s\n%s\n"
                   % (key_text(bpub), key_text(pub)))
    cases.append((conf(key, bad), "line 3: more than 1 key"))
    short = keys / "short.key"
    short.write_text(key_text(key)[:39] + "\n")
    short.chmod(0o600)
    cases.append((conf(short, bpub), "line 1 is not a key of 40 Z85 "
                                     "characters"))
    for extra, says in cases:
        rc, err = nginx_t(tmp, extra)
        assert rc != 0 and "[emerg]" in err and says in err, (extra, err)
        # nothing of a key in what nginx says
        assert key_text(key) not in err and key_text(short) not in err

    # beyond loopback without CURVE: a warning, not a failure
    rc, err = nginx_t(tmp, "", "tcp://10.11.12.13:5555")
    assert rc == 0, err
    assert "[warn]" in err and "voice_bridge \"tcp://10.11.12.13:5555\" " \
        "crosses the network without CURVE" in err, err
    rc, err = nginx_t(tmp, "", "ipc://%s/b.sock" % tmp)
    assert rc == 0 and "crosses the network" not in err, err
    shutil.rmtree(tmp, ignore_errors=True)


def test_bridged_checks_its_key_files():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="voice-curve-b-"))
    key, pub = keygen(tmp, "bridged")
    ekey, epub = keygen(tmp, "edge")

    def bridged(*args):
        p = subprocess.run([BRIDGED, "--listen", "ipc://%s/b.sock" % tmp]
                           + list(args), capture_output=True, text=True,
                           timeout=10)
        return p.returncode, p.stderr

    # never over an existing key
    p = subprocess.run([BRIDGED, "--curve-keygen", str(tmp / "edge")],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "File exists" in p.stderr
    assert key_text(ekey) in (tmp / "edge.key").read_text()

    cases = [
        (("--curve-secret-key", str(key)), "go together"),
        (("--curve-secret-key", str(pub), "--curve-clients", str(epub)),
         "has mode 644"),
        (("--curve-secret-key", str(key), "--curve-clients",
          str(tmp / "none")), "cannot open"),
        (("--curve-secret-key", str(key), "--curve-clients",
          str(tmp / "empty")), "holds no public key"),
    ]
    (tmp / "empty").mkdir()
    (tmp / "clients.pub").write_text(key_text(epub) + "x\n")
    cases.append((("--curve-secret-key", str(key), "--curve-clients",
                   str(tmp / "clients.pub")), "line 1 is not a key"))
    for args, says in cases:
        rc, err = bridged(*args)
        assert rc == 2 and says in err, (args, err)
        assert key_text(key) not in err and key_text(ekey) not in err
    shutil.rmtree(tmp, ignore_errors=True)
