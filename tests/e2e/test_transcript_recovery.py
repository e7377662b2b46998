"""test_transcript_recovery.py: a call's record survives its process.

While a call lives, its journal (TRANSCRIPT_DIR/.{name}.journal) holds each
entry as it happened, locked by the worker that writes it.  When that
worker dies (kill -9), or nginx as a whole, the next worker to start --
the master's respawn, or the next start -- finds the journal no process
holds and makes it the call's record, marked incomplete, with every entry
the journal had.  A reload never does that to a live call: its old worker
still holds the journal, and writes the record, complete, when the call
ends.  A journal torn by a crash mid-write loses only its torn line.
"""

import json
import os
import re
import secrets
import signal
import time

from conftest import fixture_bytes, fixture_text, free_port, wait_for
from test_call import ISO, place_call

CALLEE = "+14155550123"


def journal_of(stack, sid):
    found = sorted(stack.transcripts.glob(".%s_*.journal" % sid))
    return found[0] if found else None


def journal_entries(stack, sid):
    """the entries a call's journal holds now (its header left out)"""
    path = journal_of(stack, sid)
    if path is None:
        return []
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "role" in d:
            entries.append(d)
    return entries


def live_call_with_two_entries(stack):
    """a call whose journal holds the caller's sentence and the reply"""
    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    wait_for(lambda: len(journal_entries(stack, sid)) >= 2, 20, 0.1,
             "two entries in the journal")
    assert stack.transcript_files(sid) == []
    return sid


def owner_pid(stack):
    owners = [pid for pid, j in stack.status_all().items() if j["calls"]]
    assert len(owners) == 1, owners
    return owners[0]


def check_recovered(stack, sid):
    path = stack.wait_transcript(sid)
    doc = json.loads(path.read_text())
    assert doc["callSid"] == sid
    assert doc["phoneNumber"] == CALLEE
    assert ISO.match(doc["timestamp"])
    assert doc["incomplete"] is True
    assert doc["endedBy"] == "server"
    assert "server stopped" in doc["endReason"]
    assert [(e["role"], e["text"]) for e in doc["transcript"]] == [
        ("user", fixture_text("caller")), ("assistant", fixture_text("reply"))]
    for e in doc["transcript"]:
        assert ISO.match(e["timestamp"])

    # the journal is gone, nothing else is left, and the API serves it
    wait_for(lambda: journal_of(stack, sid) is None, 10, 0.1,
             "the journal to go")
    assert [p.name for p in stack.transcripts.iterdir()] == [path.name]
    r = stack.api("GET", "/api/transcript/%s?format=text" % sid)
    assert r.status_code == 200
    assert r.text == "User: %s\nAssistant: %s\n" % (fixture_text("caller"),
                                                     fixture_text("reply"))
    assert re.search(r"\[warn\].*call %s: its record was not written before "
                     r"the server stopped; recovered from its journal" % sid,
                     stack.log("error"))
    return doc


def test_worker_killed_mid_call(stack):
    sid = live_call_with_two_entries(stack)

    pid = owner_pid(stack)
    # the master says so at [alert]: expected here
    stack.expected_log.append(r"worker process %d exited on signal 9" % pid)
    os.kill(pid, signal.SIGKILL)

    # the master starts another worker, which finds the journal unheld
    check_recovered(stack, sid)
    workers = stack.status_all()
    assert pid not in workers
    assert stack.status_counter("transcriptsRecovered", workers) == 1
    assert stack.status_counter("transcriptErrors", workers) == 0


def test_whole_nginx_killed_mid_call(stack):
    sid = live_call_with_two_entries(stack)

    # master and workers at once, as a host that dies
    nginx = stack.procs["nginx"]
    os.killpg(nginx.pid, signal.SIGKILL)
    nginx.wait()
    wait_for(lambda: stack.transcript_files(sid) == [] and
             journal_of(stack, sid) is not None, 5, 0.1,
             "the journal left behind")

    # on another port: the one just freed may be another stack's by now
    stack.port = free_port()
    stack.base = "http://127.0.0.1:%d" % stack.port
    stack.start_nginx()
    check_recovered(stack, sid)
    assert stack.status_counter("transcriptsRecovered") == 1


def test_reload_never_takes_a_live_call_journal(stack):
    sid = live_call_with_two_entries(stack)
    journal = journal_of(stack, sid)
    owner = owner_pid(stack)

    stack.reload_nginx()

    # each new worker looked, and left the live call's journal alone
    wait_for(lambda: len(re.findall(
        r"transcript recovery in .*: 0 records recovered, 0 already "
        r"written, 1 journals held by live processes left alone, 0 failed",
        stack.log("error"))) == 2, 10, 0.1, "both new workers' recovery")
    time.sleep(0.5)
    assert journal.exists()
    assert stack.transcript_files(sid) == []

    # the old worker still has the call: its end writes the record, whole
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    doc = json.loads(stack.wait_transcript(sid).read_text())
    assert "incomplete" not in doc
    assert doc["endedBy"] == "caller"
    assert [(e["role"], e["text"]) for e in doc["transcript"]] == [
        ("user", fixture_text("caller")), ("assistant", fixture_text("reply"))]
    wait_for(lambda: journal_of(stack, sid) is None, 10, 0.1,
             "the journal to go")
    assert stack.status_counter("transcriptsRecovered") == 0

    # by the old worker, which waited for its file operation to end
    wait_for(lambda: re.search(r"\[info\] %d#.*call %s: transcript written "
                               r"to" % (owner, sid), stack.log("error")),
             10, 0.1, "the old worker's word")


def write_journal(stack, sid, lines):
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S-042Z", time.gmtime())
    name = "%s_%s_%s" % (sid, CALLEE, stamp)
    path = stack.transcripts / (".%s.journal" % name)
    path.write_bytes("".join(lines).encode())
    return name, path


def entry(order, role, text, t="2026-11-24T10:15:01.000Z"):
    return json.dumps({"order": order, "role": role, "text": text,
                       "timestamp": t}, separators=(",", ":")) + "\n"


def test_torn_journal_is_recovered_without_its_torn_line(stack):
    # a crash in the middle of writing the third entry
    sid = "CA" + secrets.token_hex(16)
    header = json.dumps({"callSid": sid, "phoneNumber": CALLEE,
                         "timestamp": "2026-11-24T10:15:00.042Z",
                         "continued": False,
                         "context": {"customer": "Ada", "order": "42"}},
                        separators=(",", ":")) + "\n"
    torn = entry(3, "user", "And one more thing")[:30]
    name, path = write_journal(stack, sid, [
        header, entry(2, "assistant", "Hello, how can I help?",
                      "2026-11-24T10:15:02.000Z"),
        entry(1, "user", "Hi there"), torn])

    # and one whose record was written just before its process died
    sid2 = "CA" + secrets.token_hex(16)
    name2, path2 = write_journal(stack, sid2, [entry(1, "user", "Hi")])
    final2 = stack.transcripts / (name2 + ".json")
    final2.write_text('{"callSid": "%s", "transcript": []}\n' % sid2)

    # and files that are not journals of ours, left alone
    other = stack.transcripts / ".not-a-call.journal"
    other.write_text("x\n")

    # the new workers of a reload look
    stack.reload_nginx()

    doc = json.loads(stack.wait_transcript(sid).read_text())
    assert stack.transcript_files(sid)[0].name == name + ".json"
    assert doc["callSid"] == sid
    assert doc["phoneNumber"] == CALLEE
    assert doc["incomplete"] is True
    assert doc["endedBy"] == "server"
    assert doc["context"] == {"customer": "Ada", "order": "42"}
    # in conversation order, without the torn line
    assert [(e["role"], e["text"]) for e in doc["transcript"]] == [
        ("user", "Hi there"), ("assistant", "Hello, how can I help?")]
    assert re.search(r"call %s: .*marked incomplete \(2 entries, 1 lines "
                     r"left out\)" % sid, stack.log("error"))
    wait_for(lambda: not path.exists(), 10, 0.1, "the journal to go")

    wait_for(lambda: not path2.exists(), 10, 0.1, "the second journal")
    assert json.loads(final2.read_text()) == {"callSid": sid2,
                                              "transcript": []}
    assert re.search(r"call %s: its record was written, its journal was "
                     r"left: removed" % sid2, stack.log("error"))
    assert other.exists()
    assert stack.status_counter("transcriptsRecovered") == 1
