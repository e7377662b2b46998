"""test_scaleout.py: several bridged daemons behind one nginx.

Each call is owned by one bridged, chosen by a stable hash of its call SID
(FNV-1a, modulo the number of endpoints): its stream, its OpenAI session,
its transcript and the REST request that ends it must all stay with that
owner.  A request with no call yet goes to any live bridged, and keeps
working when one of them dies.
"""

import json
import re
import sys
import time

from conftest import TOP, json_of, wait_for

sys.path.insert(0, str(TOP / "tests/lib"))
from voice_proto import owner_hash  # noqa: E402

CALLS = 9


def owner(stack, sid):
    return stack.bridged_names[owner_hash(sid) % len(stack.bridged_names)]


def test_each_call_stays_with_its_owner(stack_factory):
    stack = stack_factory(bridges=3)
    # silent callers: the calls only need their streams, not a conversation
    stack.tw("POST", "/_fake/config", {"caller_audio": ""})

    sids = [stack.tw("POST", "/_fake/inbound",
                     {"from": "+1415555%04d" % (200 + i)})["callSid"]
            for i in range(CALLS)]
    for sid in sids:
        wait_for(lambda: stack.twilio_call(sid)["ws_status"] == "open", 20,
                 what="the media stream of " + sid)

    # each stream reached its owner, and no other bridged
    for sid in sids:
        wait_for(lambda: ("[%s] stream" % sid) in stack.log(owner(stack, sid)),
                 10, what="%s at its owner" % sid)
        for name in stack.bridged_names:
            if name != owner(stack, sid):
                assert sid not in stack.log(name), (sid, name)
    assert len({owner(stack, sid) for sid in sids}) > 1

    # ending a call goes to its owner, which really hangs it up
    for sid in sids:
        r = stack.api("POST", "/api/end-call", json={"callSid": sid})
        assert r.status_code == 200, r.text
    for sid in sids:
        wait_for(lambda: stack.twilio_call(sid)["status"] == "completed", 20,
                 what=sid + " to end")
        assert re.search(r"\[%s\] call\.end" % sid,
                         stack.log(owner(stack, sid))), sid
        doc = json.loads(stack.wait_transcript(sid).read_text())
        assert doc["callSid"] == sid

    # the owners' OpenAI sessions: one per call, nothing else
    assert len(stack.openai_sessions()) == CALLS


def test_requests_without_a_call_go_to_any_live_bridged(stack_factory):
    stack = stack_factory(bridges=3)


    def served():
        return {n: stack.log(n).count("numbers.list")
                for n in stack.bridged_names}

    before = served()
    for _ in range(6):
        assert stack.api("GET", "/api/numbers").status_code == 200
    after = served()
    assert all(after[n] > before[n] for n in stack.bridged_names), after

    # one dies: every request is still answered by the others
    stack.stop_process("bridged-1")
    for _ in range(10):
        r = stack.api("GET", "/api/numbers")
        assert r.status_code == 200, r.text
        assert len(json_of(r)) == 3
    time.sleep(0.1)
