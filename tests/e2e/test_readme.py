"""test_readme.py: README's two commands and its curl commands, as written.

`./build.sh run` is started the way a newcomer starts it -- no credentials,
so it runs the simulation -- on a free port instead of 3000 (the machine is
shared); then README's curl block runs unchanged but for the port, and must
show the simulated call's transcript: the assistant calls a tool and hangs
up by itself (tests/e2e/test_simulation.py looks closer).  SIGTERM must stop
everything cleanly, leaving no process behind.

build_sh_run() is the harness for `./build.sh run` (test_run_supervision.py
uses it too): it starts it in a session of its own and, however the test
ends, leaves nothing of it running -- every process of that session and
every descendant it saw is stopped, with SIGKILL if need be.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from conftest import TOP, fixture_text, free_port, wait_for

import requests


# --- processes ---------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid, session, start time) of process pid, or None"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return f[0], int(f[1]), int(f[3]), int(f[19])


def proc_args(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace")
                    for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def all_procs():
    """{pid: (state, ppid, session, start time)} of every process"""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                out[int(d)] = st
    return out


def alive(key):
    """key = (pid, start time): that very process runs (not a zombie)"""
    st = proc_stat(key[0])
    return st is not None and st[0] != "Z" and st[3] == key[1]


def describe(keys):
    return "\n".join("%d %s" % (k[0], " ".join(proc_args(k[0]))[:150])
                     for k in sorted(keys))


# --- ./build.sh run ----------------------------------------------------------

class Run:
    """One `./build.sh run` in a session of its own."""

    def __init__(self, extra_env=None, prefix="voice-readme-"):
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.base = "http://127.0.0.1:%d" % self.port
        self.run_dir = self.tmp + "/run"
        self.token_file = self.run_dir + "/api-token"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TWILIO_", "OPENAI_", "PUBLIC_URL",
                                    "TRANSCRIPT_DIR", "PORT",
                                    "VOICE_API_TOKEN", "VOICE_NGINX_",
                                    "VOICE_TOOL_SECRET", "BRIDGED_"))}
        env.update({"PORT": str(self.port),
                    "TRANSCRIPT_DIR": self.tmp + "/logs",
                    "VOICE_RUN_DIR": self.run_dir})
        env.update(extra_env or {})
        self.logf = open(self.tmp + "/run.log", "wb")
        self.p = subprocess.Popen([str(TOP / "build.sh"), "run"], env=env,
                                  stdout=self.logf, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        self.sid = self.p.pid
        self.known = set()      # (pid, start time) of all it ever ran
        self.stopped = None     # (status, what was left) once stopped

    def log(self):
        with open(self.tmp + "/run.log", errors="replace") as f:
            return f.read()

    def processes(self):
        """{(pid, start time): args} of what runs now: the members of its
        session and its descendants (remembered in known)"""
        procs = all_procs()
        children = {}
        for pid, st in procs.items():
            children.setdefault(st[1], []).append(pid)
        mine = {pid for pid, st in procs.items()
                if st[2] == self.sid and st[0] != "Z"}
        # (its descendants while it runs: its pid is its own till then)
        queue = [self.p.pid] if self.p.poll() is None else []
        while queue:
            for c in children.get(queue.pop(), []):
                if c not in mine and procs[c][0] != "Z":
                    mine.add(c)
                    queue.append(c)
        keys = {(pid, procs[pid][3]) for pid in mine}
        self.known |= keys
        return {k: proc_args(k[0]) for k in keys}

    def left(self):
        """what of it runs still: known or in its session"""
        self.processes()
        return {k for k in self.known if alive(k)}

    def find(self, name):
        """{pid: command line} of its running processes whose program is
        name (nginx's are "nginx: master process ..." and "nginx: worker
        process")"""
        return {k[0]: " ".join(argv) for k, argv in self.processes().items()
                if argv and (os.path.basename(argv[0]) == name
                             or argv[0].startswith(name + ":"))}

    def fake(self, name):
        """pid of the stand-in tests/fakes/<name>.py"""
        pids = [k[0] for k, argv in self.processes().items()
                if len(argv) > 1 and argv[1].endswith("/%s.py" % name)]
        assert len(pids) == 1, (name, pids)
        return pids[0]

    @property
    def auth(self):
        with open(self.token_file) as f:
            return {"Authorization": "Bearer " + f.read().strip()}

    def answers(self):
        """GET /api/numbers answers 200 six times in a row: both workers
        reach bridged (fresh connections spread over them; just after a
        start one may not yet, issue 10)"""
        try:
            return all(requests.get(
                self.base + "/api/numbers", timeout=2,
                headers=dict(self.auth, Connection="close")
            ).status_code == 200 for _ in range(6))
        except (OSError, requests.ConnectionError):
            return False

    def wait_up(self, timeout=120):
        def up():
            if self.p.poll() is not None:
                raise AssertionError("./build.sh run exited (%s):\n%s" % (
                    self.p.returncode, self.log()[-3000:]))
            return self.answers()
        wait_for(up, timeout, 0.5, "./build.sh run")
        self.processes()

    def stop(self, sig=signal.SIGTERM, timeout=30, grace=10):
        """sig to build.sh alone, then wait for it and everything it ran.
        Whatever is left after that is killed (SIGKILL), so nothing ever
        stays behind; returns (build.sh's status or None if it had to be
        killed, a description of what had to be killed or "")."""
        if self.stopped is not None:
            return self.stopped
        self.processes()
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        deadline = time.monotonic() + grace
        while self.left() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.left()
        report = ""
        if rc is None or left:
            report = "left running after ./build.sh run%s:\n%s" % (
                "" if rc is not None else " (itself too, for %d s)" % timeout,
                describe(left))
            for k in left:
                if alive(k):
                    try:
                        os.kill(k[0], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            if rc is None:
                self.p.kill()
                self.p.wait(10)
            # orphans are reaped by init: only bounded waiting is needed
            deadline = time.monotonic() + 10
            while any(alive(k) for k in left) and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
        self.logf.close()
        self.stopped = (rc, report)
        return self.stopped


@contextlib.contextmanager
def build_sh_run(extra_env=None, wait_up=True, prefix="voice-readme-"):
    """`./build.sh run`, up (if wait_up), then stopped with SIGTERM unless
    the test stopped it: a test that ends well must leave nothing running
    (asserted); one that fails leaves nothing running either (killed), and
    keeps its directory"""
    run = Run(extra_env, prefix)
    ok = False
    try:
        if wait_up:
            run.wait_up()
        yield run
        ok = True
    finally:
        rc, left = run.stop()
        if ok:
            assert not left, left + "\n" + run.log()[-3000:]
            shutil.rmtree(run.tmp, ignore_errors=True)
        else:
            print("./build.sh run's directory: %s (status %s)\n%s" % (
                run.tmp, rc, left))


# --- README ------------------------------------------------------------------

def readme_curl_block():
    text = (TOP / "README.md").read_text()
    lines = text.splitlines()
    # README's first lines are exactly the two commands
    first = [l for l in lines if l.startswith("./build.sh")][:2]
    assert first[0].startswith("./build.sh run")
    assert first[1].startswith("./build.sh test")
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        if "curl" in block:
            return block
    raise AssertionError("README has no curl block")


def test_readme_commands_as_written():
    block = readme_curl_block()
    with build_sh_run() as run:
        port, token_file = run.port, run.token_file

        # without the token the API refuses
        assert requests.get("http://127.0.0.1:%d/api/numbers" % port,
                            timeout=5).status_code == 401

        script = block.replace("3000", str(port)).replace(
            "cat run/api-token", "cat " + token_file)
        assert script != block.replace("3000", str(port)), \
            "README no longer reads run/api-token"
        out = subprocess.run(["bash", "-c", "set -e\n" + script],
                             capture_output=True, timeout=120, text=True)
        assert out.returncode == 0, out.stderr
        # the simulated call (conf/simulation-script.json): the caller asks,
        # the assistant calls a tool, answers, and hangs up with end_call
        plans = json.loads((TOP / "conf/simulation-script.json").read_text())
        text = out.stdout
        # (after the numbers that README's first curl prints)
        assert "User: " in text, text
        lines = text[text.index("User: "):].splitlines()
        assert [l.split(":")[0] for l in lines] == \
            ["User", "Assistant", "Tool", "Assistant", "Tool"], out.stdout
        assert lines[0] == "User: " + fixture_text("caller")
        assert lines[1] == "Assistant: " + plans[0]["say"]
        assert lines[2].startswith("Tool: check_tables "), lines[2]
        assert lines[3] == "Assistant: " + plans[1]["say"]
        assert lines[4].startswith("Tool: end_call "), lines[4]

        # JSON answers end with a newline: the numbers are a line of their
        # own, and the transcript's lines start on the next
        first_line = text.splitlines()[0]
        assert first_line.startswith("[{") and first_line.endswith("}]"), \
            text
        assert text.startswith(first_line + "\nUser: "), text

        # what a newcomer tries first: / answers, and says where to go
        r = requests.get("http://127.0.0.1:%d/" % port, timeout=5)
        assert r.status_code == 200 and "/api/" in r.text, r.text

        # the run's log shows what matters: no error for a missing
        # index.html, not a line per poll of the loop above
        log = run.log()
        assert "[error]" not in log, [l for l in log.splitlines()
                                      if "[error]" in l]
        assert "keepalive" not in log, [l for l in log.splitlines()
                                        if "keepalive" in l][:3]
        assert re.search(r"nginx worker nginx-\d+-\d+-[0-9a-f]{8} connected",
                         log), log[-3000:]
        assert "answers again" not in log

        # the transcript landed in TRANSCRIPT_DIR
        files = os.listdir(run.tmp + "/logs")
        assert any(f.endswith(".json") for f in files), files
        assert "SIMULATION" in run.log()

        # SIGTERM stops it cleanly: status 0, and no process of build.sh's
        # (nginx, bridged, a stand-in, the tool endpoint) is left running
        rc, left = run.stop()
        assert rc == 0, run.log()[-3000:]
        assert not left, left
        assert run.log().count("build.sh: stopped") == 1, run.log()[-3000:]
        # nothing is left listening
        time.sleep(0.5)
        try:
            requests.get("http://127.0.0.1:%d/" % port, timeout=1)
            raise AssertionError(
                "nginx still answers after ./build.sh run stopped")
        except requests.ConnectionError:
            pass
