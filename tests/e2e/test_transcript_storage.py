"""test_transcript_storage.py: a call outlives the storage of its record.

The transcript directory stops working during a call -- full, read-only,
removed -- and the call goes on, audio both ways; the failure is logged
once for the call and counted in voice_status (transcriptErrors); what was
already journaled stays; and once storage works again the record is
written, complete.  The tests run as root here, and root ignores file
permissions, so each breaks storage in a way root cannot write through: a
full tmpfs mounted for the test, the directory bind-mounted read-only over
itself, the directory removed and a file put in its place.  Mounting needs
root (or CAP_SYS_ADMIN); without it those two are skipped, saying so.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import fixture_bytes, fixture_text, wait_for
from test_call import place_call
from test_transcript_recovery import journal_entries, journal_of

CALLEE = "+14155550123"


def can_mount():
    """whether this machine lets the tests mount (root, or a container
    that allows it)"""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    d = tempfile.mkdtemp(prefix="voice-mount-probe-")
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k",
                             "tmpfs", d], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d], check=True)
        return ok
    finally:
        os.rmdir(d)


MOUNT = can_mount()
NO_MOUNT = "mounting needs root or CAP_SYS_ADMIN, which this machine " \
           "does not give the tests"


def sh(*argv):
    subprocess.run(list(argv), check=True, capture_output=True)


def fill(directory):
    """writes into directory until it is full"""
    fd = os.open(os.path.join(directory, "filler"),
                 os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def say_again(stack, sid):
    """the caller says the sentence a second time, and hears the reply"""
    stack.tw("POST", "/_fake/calls/%s/say" % sid,
             {"audio_b64": base64.b64encode(fixture_bytes("caller")).decode()})
    stack.wait_reply_heard(sid, 2 * len(fixture_bytes("reply")))


def failures(stack, sid):
    return re.findall(r"\[error\].*call %s: transcript storage failed: "
                      r"(.*) failed; the call goes on" % sid,
                      stack.log("error"))


def counters(stack):
    workers = stack.status_all()
    return {k: stack.status_counter(k, workers)
            for k in ("transcriptErrors", "transcriptsLost")}


def check_record(stack, sid, entries):
    doc = json.loads(stack.wait_transcript(sid, 40).read_text())
    assert "incomplete" not in doc
    assert doc["endedBy"] == "caller"
    turn = [("user", fixture_text("caller")),
            ("assistant", fixture_text("reply"))]
    assert [(e["role"], e["text"]) for e in doc["transcript"]] \
        == turn * (entries // 2)
    wait_for(lambda: journal_of(stack, sid) is None, 10, 0.1,
             "the journal to go")
    # logged once the thread is done, a moment after the file is there
    wait_for(lambda: re.search(r"call %s: transcript written to" % sid,
                               stack.log("error")), 10, 0.1, "the word")
    assert len(re.findall(r"call %s: transcript storage works again" % sid,
                          stack.log("error"))) == 1
    assert len(failures(stack, sid)) == 1
    assert counters(stack) == {"transcriptErrors": 1, "transcriptsLost": 0}
    return doc


def hang_up_while_broken(stack, sid):
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_call_completed(sid)

    # bridged's call.done follows the stop at once, and the record's first
    # try is refused: it waits
    time.sleep(1.5)
    assert stack.transcript_files(sid) == []
    assert len(failures(stack, sid)) == 1
    assert counters(stack)["transcriptErrors"] == 1


@pytest.mark.skipif(not MOUNT, reason=NO_MOUNT)
def test_storage_full(stack):
    # the directory is a small tmpfs, full before the call starts: even
    # its journal cannot be made
    sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs",
       str(stack.transcripts))
    try:
        fill(str(stack.transcripts))

        sid = place_call(stack, number=CALLEE)
        stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
        wait_for(lambda: failures(stack, sid), 10, 0.1, "the failure logged")
        assert "No space left on device" in stack.log("error")
        assert journal_of(stack, sid) is None

        # the call goes on, both ways
        say_again(stack, sid)
        hang_up_while_broken(stack, sid)

        os.unlink(str(stack.transcripts / "filler"))
        check_record(stack, sid, 4)
        assert [p.name for p in stack.transcripts.iterdir()] \
            == [stack.transcript_files(sid)[0].name]
    finally:
        subprocess.run(["umount", "-l", str(stack.transcripts)])


@pytest.mark.skipif(not MOUNT, reason=NO_MOUNT)
def test_storage_read_only(stack):
    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    wait_for(lambda: len(journal_entries(stack, sid)) == 2, 20, 0.1,
             "two entries in the journal")

    # read-only from now on, for root too
    d = str(stack.transcripts)
    sh("mount", "--bind", d, d)
    try:
        sh("mount", "-o", "remount,bind,ro", d)

        say_again(stack, sid)
        wait_for(lambda: failures(stack, sid), 10, 0.1, "the failure logged")
        assert "Read-only file system" in stack.log("error")

        # what was journaled is still there, whole (in arrival order:
        # the record sorts it)
        kept = sorted(journal_entries(stack, sid), key=lambda e: e["order"])
        assert [(e["role"], e["text"]) for e in kept] \
            == [("user", fixture_text("caller")),
                ("assistant", fixture_text("reply"))]

        hang_up_while_broken(stack, sid)
    finally:
        subprocess.run(["umount", d])

    check_record(stack, sid, 4)


def test_storage_removed(stack):
    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    wait_for(lambda: len(journal_entries(stack, sid)) == 2, 20, 0.1,
             "two entries in the journal")

    # the directory is removed, its journal with it, and a file is put in
    # its place
    d = stack.transcripts
    shutil.rmtree(str(d))
    d.write_text("not a directory\n")

    say_again(stack, sid)
    wait_for(lambda: failures(stack, sid), 10, 0.1, "the failure logged")
    assert "Not a directory" in stack.log("error")

    # a directory again, while the call goes on: the journal is made anew,
    # with every entry of the call
    d.unlink()
    d.mkdir()
    wait_for(lambda: len(journal_entries(stack, sid)) == 4, 20, 0.2,
             "the journal made again")

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    check_record(stack, sid, 4)


@pytest.mark.skipif(not MOUNT, reason=NO_MOUNT)
def test_storage_given_up_past_the_limit(stack_factory):
    # a record waits voice_transcript_retry for storage, then is given up;
    # its journal keeps what was journaled, and the next start recovers it
    stack = stack_factory(extra_http="voice_transcript_retry 2s;")
    sid = place_call(stack, number=CALLEE)
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    wait_for(lambda: len(journal_entries(stack, sid)) == 2, 20, 0.1,
             "two entries in the journal")

    d = str(stack.transcripts)
    sh("mount", "--bind", d, d)
    try:
        sh("mount", "-o", "remount,bind,ro", d)
        say_again(stack, sid)
        stack.expected_log.append(r"\[crit\].*call %s: the record could not "
                                  r"be written" % sid)
        stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

        given_up = wait_for(lambda: re.search(
            r"\[crit\].*call %s: the record could not be written to .* "
            r"within 2000 ms \(open\(\) temporary file failed\): given up, "
            r"4 utterances lost; the journal keeps those journaled \(2\) for "
            r"the next start" % sid, stack.log("error")), 30, 0.2,
            "the record given up")
        assert given_up
        assert counters(stack) == {"transcriptErrors": 1,
                                   "transcriptsLost": 1}
    finally:
        subprocess.run(["umount", d])

    # nothing tries again in this worker; the next start recovers it
    time.sleep(1)
    assert stack.transcript_files(sid) == []
    stack.reload_nginx()
    doc = json.loads(stack.wait_transcript(sid).read_text())
    assert doc["incomplete"] is True
    assert [(e["role"], e["text"]) for e in doc["transcript"]] == [
        ("user", fixture_text("caller")), ("assistant", fixture_text("reply"))]
