"""test_packages.py: the Debian packages, installed into a throwaway root.

./build.sh package makes libnginx-mod-http-voice and voice-bridged in
BUILD/pkg.  This test installs both with dpkg into a throwaway Debian
root and runs them from what they installed:

- the root is an overlay of this machine's root (which has Debian's nginx
  and the packages' libraries; there is no network to debootstrap one)
  with a scratch upper layer, mounted in a mount namespace of its own that
  a holder process keeps; every command runs in it through nsenter and
  chroot.  Users, /etc and dpkg's database change only in the overlay,
  and the test checks that the host's are as they were;
- `nginx -t` with Debian's nginx.conf must load the module through the
  modules-enabled symlink the package made, and accept the shipped example
  site once its secrets and certificate are in place;
- `systemd-analyze verify` must accept the shipped unit (and refuse a
  broken copy of it, so the check can fail);
- a call placed through the API must go through nginx and bridged run from
  the installed files: bridged as the unit says (its user and group, its
  umask, its runtime directory, its environment file -- there is no
  systemd to run it in a chroot, so the test reads those from the unit),
  nginx with Debian's nginx.conf and the example site on a free port; the
  fakes of Twilio and OpenAI run outside, as in tests/e2e.
"""

import json
import os
import pathlib
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest
import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
from conftest import (BUILD, CERTS, Stack, fixture_text,  # noqa: E402
                      print_log_tails, wait_for)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None
    or shutil.which("nsenter") is None,
    reason="a mount namespace and dpkg in a chroot need root")

PKG = BUILD / "pkg"
SITE = "/etc/nginx/sites-available/voice.example"
UNIT = "/lib/systemd/system/voice-bridged.service"
CALLEE = "+14155550123"


def debs():
    found = sorted(PKG.glob("*.deb"))
    names = [p.name.split("_")[0] for p in found]
    assert names == ["libnginx-mod-http-voice", "voice-bridged"], \
        "run ./build.sh package first (found %s in %s)" % (names, PKG)
    return found


def host_state():
    """what the packages would change on the host if anything leaked"""
    me = pathlib.Path("/etc/nginx/modules-enabled")
    return {
        "modules-enabled": sorted(os.listdir(me)) if me.exists() else None,
        "sites-enabled": sorted(os.listdir("/etc/nginx/sites-enabled"))
        if os.path.isdir("/etc/nginx/sites-enabled") else None,
        "user": any(u.pw_name == "voice-bridged" for u in pwd.getpwall()),
        "etc": os.path.exists("/etc/voice-bridged")
        or os.path.exists("/etc/nginx/voice"),
        "module": os.path.exists(
            "/usr/lib/nginx/modules/ngx_http_voice_module.so"),
        "dpkg": subprocess.run(
            ["dpkg-query", "-W", "libnginx-mod-http-voice", "voice-bridged"],
            capture_output=True).returncode,
    }


class Root:
    """An overlay of / in a mount namespace held by a sleeping process."""

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="voice-pkg-"))
        self.root = self.dir / "root"
        self.upper = self.dir / "upper"
        for d in (self.root, self.upper, self.dir / "work"):
            d.mkdir()
        self.procs = []
        script = """
            set -e
            mount -t overlay overlay -o lowerdir=/,upperdir={u},workdir={w} {r}
            mount -t proc proc {r}/proc
            mount --rbind /dev {r}/dev
            mount --rbind /sys {r}/sys
            mount -t tmpfs -o mode=755 tmpfs {r}/run
            echo ready
            exec sleep infinity
        """.format(u=self.upper, w=self.dir / "work", r=self.root)
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            self.holder.wait()
            raise AssertionError("the throwaway root was not made: %s"
                                 % self.holder.stderr.read())

    def argv(self, *argv):
        return ["nsenter", "-t", str(self.holder.pid), "-m", "chroot",
                str(self.root)] + list(argv)

    def run(self, *argv, check=True, **kw):
        p = subprocess.run(self.argv(*argv), capture_output=True, text=True,
                           **kw)
        if check and p.returncode != 0:
            raise AssertionError("%s: status %d\n%s%s" % (
                " ".join(argv), p.returncode, p.stdout, p.stderr))
        return p

    def spawn(self, name, argv, **kw):
        log = open(self.dir / (name + ".log"), "wb")
        p = subprocess.Popen(self.argv(*argv), stdout=log, stderr=log, **kw)
        self.procs.append(p)
        return p

    def write(self, path, text, mode=0o644):
        # through the namespace: the overlay is not visible from outside
        self.run("sh", "-c", 'cat > "$0" && chmod %o "$0"' % mode, path,
                 input=text)

    def read(self, path):
        return self.run("cat", path).stdout

    def log(self, name):
        p = self.dir / (name + ".log")
        return p.read_text(errors="replace") if p.exists() else ""

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.holder.kill()
        self.holder.wait()


def unit_service(text):
    """the [Service] section of a unit: the keys the test runs bridged by"""
    keys, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line \
                and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys[k.strip()] = v.strip()
    return keys


def env_file(text):
    """systemd's EnvironmentFile: KEY=VALUE lines, # comments"""
    env = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2)
    return env


@pytest.fixture(scope="module")
def root():
    packages = debs()
    before = host_state()
    r = Root()
    try:
        # a chroot starts no services (policy-rc.d), as in any chroot
        r.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
        r.run("dpkg", "-i", *[str(p) for p in packages])
        yield r
    finally:
        r.close()
        after = host_state()
        if os.environ.get("VOICE_KEEP"):
            print("kept %s" % r.dir)
        else:
            shutil.rmtree(r.dir, ignore_errors=True)
        assert after == before, "the host changed: %s -> %s" % (before, after)


def test_installed_the_debian_way(root):
    # the module is enabled by a symlink, as Debian's own modules are
    link = root.run("readlink",
                    "/etc/nginx/modules-enabled/50-mod-http-voice.conf")
    assert link.stdout.strip() == \
        "/usr/share/nginx/modules-available/mod-http-voice.conf"
    assert root.read("/usr/share/nginx/modules-available/mod-http-voice.conf") \
        == "load_module modules/ngx_http_voice_module.so;\n"

    # it depends on the very ABI the installed nginx provides
    depends = root.run("dpkg-query", "-W", "-f=${Depends}",
                       "libnginx-mod-http-voice").stdout
    provides = root.run("dpkg-query", "-W", "-f=${Provides}",
                        "nginx").stdout
    abi = re.search(r"nginx-abi-[^ ,]+", provides).group(0)
    assert abi in [d.strip() for d in depends.split(",")], depends
    assert "libzmq5" in depends

    bd = root.run("dpkg-query", "-W", "-f=${Depends}", "voice-bridged").stdout
    for lib in ("libzmq5", "libwebsockets17", "libwebsockets-evlib-uv",
                "libcurl4", "libuv1", "libcjson1", "adduser"):
        assert lib in bd, bd

    # its own user, no login; the secrets' files root's and 600
    pw = root.run("getent", "passwd", "voice-bridged").stdout.split(":")
    assert pw[6].strip() in ("/usr/sbin/nologin", "/bin/false"), pw
    for path in ("/etc/voice-bridged/env", "/etc/nginx/voice/api-token"):
        st = root.run("stat", "-c", "%a %U %G", path).stdout.split()
        assert st == ["600", "root", "root"], (path, st)
    assert len(root.read("/etc/nginx/voice/api-token")) == 48
    st = root.run("stat", "-c", "%a %U", "/var/lib/voice/transcripts")
    assert st.stdout.split() == ["750", "www-data"]

    conffiles = root.run("dpkg-query", "-W", "-f=${Conffiles}",
                         "voice-bridged", "libnginx-mod-http-voice").stdout
    for f in ("/etc/voice-bridged/env", SITE,
              "/etc/nginx/modules-enabled/60-voice.conf"):
        assert f in conffiles

    # enabled for boot, as dh_installsystemd does (systemd is not running
    # here, so nothing was started)
    assert root.run("test", "-L", "/etc/systemd/system/multi-user.target"
                    ".wants/voice-bridged.service", check=False
                    ).returncode == 0


def test_systemd_accepts_the_unit(root):
    p = root.run("systemd-analyze", "verify", UNIT, check=False)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr

    # and the check can fail: the same unit with a binary that is not there
    broken = root.read(UNIT).replace("ExecStart=/usr/sbin/voice-bridged",
                                     "ExecStart=/usr/sbin/voice-bridgd")
    root.write("/etc/systemd/system/voice-broken.service", broken)
    p = root.run("systemd-analyze", "verify",
                 "/etc/systemd/system/voice-broken.service", check=False)
    root.run("rm", "/etc/systemd/system/voice-broken.service")
    assert p.returncode != 0 and "voice-bridgd" in p.stderr, p.stderr


def enable_site(root, site_text, name="voice"):
    root.run("install", "-d", "/etc/ssl/voice")
    root.write("/etc/ssl/voice/fullchain.pem",
               (CERTS / "server.pem").read_text())
    root.write("/etc/ssl/voice/privkey.pem",
               (CERTS / "server.key").read_text(), 0o600)
    root.write("/etc/nginx/sites-available/" + name, site_text)
    root.run("rm", "-f", "/etc/nginx/sites-enabled/default")
    root.run("ln", "-sf", "../sites-available/" + name,
             "/etc/nginx/sites-enabled/" + name)


def test_nginx_loads_the_module_with_the_example_site(root):
    root.write("/etc/nginx/voice/twilio-auth-token", secrets.token_hex(16),
               0o600)
    enable_site(root, root.read(SITE), "voice.example")
    try:
        p = root.run("nginx", "-t", check=False)
        assert p.returncode == 0, p.stderr
        assert "test is successful" in p.stderr

        # without the module's symlink, the same site is refused: the
        # directives come from the module the package enabled
        root.run("mv", "/etc/nginx/modules-enabled/50-mod-http-voice.conf",
                 "/tmp/50-mod-http-voice.conf")
        p = root.run("nginx", "-t", check=False)
        root.run("mv", "/tmp/50-mod-http-voice.conf",
                 "/etc/nginx/modules-enabled/50-mod-http-voice.conf")
        assert p.returncode != 0
        assert 'unknown directive "voice_bridge"' in p.stderr, p.stderr
    finally:
        root.run("rm", "-f", "/etc/nginx/sites-enabled/voice.example")


def start_bridged_as_the_unit_says(root, stack):
    """what systemd does with the unit: the runtime directory, the
    environment file, the user and group, the umask, ExecStart"""
    svc = unit_service(root.read(UNIT))
    user, group = svc["User"], svc["Group"]
    rundir = "/run/" + svc["RuntimeDirectory"]
    root.run("install", "-d", "-o", user, "-g", group, "-m",
             svc["RuntimeDirectoryMode"], rundir)

    env = env_file(root.read(svc["EnvironmentFile"]))
    assert set(env) >= {"BRIDGED_LISTEN", "TWILIO_ACCOUNT_SID",
                        "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY"}
    assert env["BRIDGED_LISTEN"].startswith("ipc://" + rundir + "/")
    # the operator's edit: the secrets, and (for the test) the fakes
    root.write("/etc/voice-bridged/test-ca.pem", (CERTS / "ca.pem").read_text())
    edited = root.read(svc["EnvironmentFile"])
    for k, v in stack.bridged_env().items():
        if k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY",
                 "TWILIO_API_URL", "OPENAI_REALTIME_URL"):
            edited = re.sub(r"(?m)^# ?%s=.*$|^%s=.*$" % (k, k),
                            "%s=%s" % (k, v), edited)
    edited += "BRIDGED_CA_FILE=/etc/voice-bridged/test-ca.pem\n"
    root.write(svc["EnvironmentFile"], edited, 0o600)
    env = env_file(root.read(svc["EnvironmentFile"]))
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"

    p = root.spawn("bridged", ["setpriv", "--reuid", user, "--regid", group,
                           "--clear-groups", "--no-new-privs"]
               + svc["ExecStart"].split(), env=env,
               umask=int(svc["UMask"], 8))
    wait_for(lambda: "listening on" in root.log("bridged"), 10,
             what="bridged to listen")
    return p, env["BRIDGED_LISTEN"][len("ipc://"):]


def test_a_call_goes_through_the_installed_files(root):
    stack = Stack(tempfile.mkdtemp(prefix="voice-pkg-stack-"), tls=True,
                  public_url="https://voice.example.com")
    try:
        stack.start_fakes()
        bridged, sock = start_bridged_as_the_unit_says(root, stack)

        # the socket nginx's workers (www-data) connect to
        st = root.run("stat", "-c", "%a %U %G", sock).stdout.split()
        assert st == ["770", "voice-bridged", "www-data"], st
        st = root.run("stat", "-c", "%a %U %G", os.path.dirname(sock))
        assert st.stdout.split() == ["750", "voice-bridged", "www-data"]

        # the example site, on a free port of this machine's loopback
        stack.api_token = root.read("/etc/nginx/voice/api-token")
        root.write("/etc/nginx/voice/twilio-auth-token", stack.auth_token,
                   0o600)
        site = root.read(SITE)
        site = site.replace("listen 443 ssl;",
                            "listen 127.0.0.1:%d ssl;" % stack.port)
        site = site.replace("listen [::]:443 ssl;", "")
        assert str(stack.port) in site
        enable_site(root, site)
        root.run("nginx", "-t")
        root.spawn("nginx", ["nginx", "-g", "daemon off;"])

        def up():
            try:
                return stack.api("GET", "/api/numbers").status_code == 200
            except requests.ConnectionError:
                return False
        wait_for(up, 20, 0.2, "nginx and the bridge channel")

        r = stack.api("POST", "/api/call", json={"number": CALLEE})
        assert r.status_code == 200, r.text
        sid = r.json()["callSid"]
        stack.wait_call_completed(sid, 60)

        def record():
            p = root.run("sh", "-c", "cat /var/lib/voice/transcripts/"
                         "%s_*.json" % sid, check=False)
            return p.returncode == 0 and p.stdout
        doc = json.loads(wait_for(record, 30, 0.5, "the call's record"))
        roles = [(u["role"], u["text"]) for u in doc["transcript"]
                 if u["role"] in ("user", "assistant")]
        assert roles[:2] == [("user", fixture_text("caller")),
                             ("assistant", fixture_text("reply"))], roles
        owner = root.run("sh", "-c", "stat -c %%U /var/lib/voice/transcripts/"
                         "%s_*.json" % sid).stdout.strip()
        assert owner == "www-data"

        # bridged ran as its own user, and no secret reached a log
        # (the chroot shares the host's pids: this bridged's own, by pid)
        uid = root.run("id", "-u", "voice-bridged").stdout.strip()
        gid = root.run("getent", "group", "www-data").stdout.split(":")[2]
        status = pathlib.Path("/proc/%d/status" % bridged.pid).read_text()
        assert re.search(r"(?m)^Uid:\t%s\t" % uid, status), status
        assert re.search(r"(?m)^Gid:\t%s\t" % gid, status), status
        assert re.search(r"(?m)^Groups:[\t ]*$", status), status
        logs = root.log("bridged") + root.read(
            "/var/log/nginx/voice.error.log")
        for s in stack.secrets:
            assert s not in logs
        for level in ("[alert]", "[crit]", "[emerg]"):
            assert level not in logs, logs
    except BaseException:
        print_log_tails(stack)
        for name in ("bridged", "nginx"):
            print("----- %s\n%s" % (name, root.log(name)[-4000:]))
        print(root.run("tail", "-n", "40", "/var/log/nginx/voice.error.log",
                       check=False).stdout)
        raise
    finally:
        for p in root.procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)
        stack.stop()
        shutil.rmtree(stack.dir, ignore_errors=True)
