"""test_http_tools.py: the HTTP tools of nginx.conf (voice_tool).

When the model calls one, bridged POSTs {"callSid", "name", "arguments"}
to its URL, signed with X-Voice-Signature (HMAC-SHA256 of "{t}.{body}"
with VOICE_TOOL_SECRET); the 2xx answer goes back to the model as the
function's output and a response is requested.  A tool that fails, is too
slow, answers too much or drops the connection gives an error output the
model can talk about, within the tool's timeout, and the call goes on.
While a tool runs the caller still barges in.  Each call and its outcome
is in the record, in conversation order.
"""

import base64
import hashlib
import hmac
import json
import re
import time
from urllib.parse import quote

from conftest import fixture_bytes, wait_for

CALLER = "+14155550188"

SCHEMA = {"description": "Look up an order by its number.",
          "parameters": {"type": "object",
                         "properties": {"order": {"type": "string"}},
                         "required": ["order"]}}


def tool_stack(stack_factory, tmp_path, tools):
    """a stack with a tool server and one voice_tool per (name, path,
    timeout)"""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    stack = stack_factory(tool_server=True, server_include="")
    lines = "".join("voice_tool %s %s%s %s timeout=%s;\n"
                    % (name, stack.tool_base, path, schema, timeout)
                    for name, path, timeout in tools)
    # the tool server's port is known only now: reload nginx with the
    # tools (a reload is what an operator does too)
    (stack.dir / "server_include.conf").write_text(lines)
    stack.reload_nginx()
    return stack


def script(stack, plans):
    stack.oai("/_fake/config?script=" + quote(json.dumps(plans), safe=""))


def inbound(stack):
    return stack.tw("POST", "/_fake/inbound", {"from": CALLER})["callSid"]


def session(stack):
    return wait_for(stack.openai_sessions, 20, what="a session")[-1]


def outputs(stack):
    return session(stack)["function_outputs"]


def test_a_tool_answer_goes_back_to_the_model(stack_factory, tmp_path):
    stack = tool_stack(stack_factory, tmp_path,
                       [("lookup_order", "/order", "3s")])
    reply = "Your order 42 has shipped."
    script(stack, [{"tool": "lookup_order", "arguments": {"order": "42"}},
                   {"text": reply}])
    sid = inbound(stack)

    reqs = wait_for(lambda: stack.tools("GET", "/_fake/requests"), 30,
                    0.2, "the tool request")
    assert len(reqs) == 1
    q = reqs[0]
    assert q["path"] == "/order" and q["signature_ok"], q
    assert q["json"] == {"callSid": sid, "name": "lookup_order",
                         "arguments": {"order": "42"}}

    # the signature, checked here independently of the tool server
    sig = q["headers"]["X-Voice-Signature"]
    m = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", sig)
    assert m, sig
    assert abs(int(m.group(1)) - time.time()) < 60
    mac = hmac.new(stack.tool_secret.encode(),
                   m.group(1).encode() + b"." + q["body"].encode(),
                   hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, m.group(2))

    # the answer is the output, and the model was asked to speak again
    out = wait_for(lambda: outputs(stack), 10, what="the function output")[0]
    assert json.loads(out["output"]) == {"ok": True, "name": "lookup_order",
                                         "arguments": {"order": "42"}}
    assert out["response_requested"]
    s = session(stack)
    assert s["tool_calls"][0]["output_given"]

    # the reply after the tool is heard
    wait_for(lambda: any(r["transcript"] == reply and r["status"] ==
                         "completed" for r in session(stack)["responses"]),
             20, what="the reply after the tool")
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    rec = json.loads(stack.wait_transcript(sid).read_text())
    roles = [e["role"] for e in rec["transcript"]]
    assert roles == ["user", "tool", "assistant"], roles
    t = rec["transcript"][1]
    assert t["name"] == "lookup_order"
    assert t["arguments"] == {"order": "42"}
    assert json.loads(t["output"])["ok"] is True
    assert rec["transcript"][2]["text"] == reply

    # no secret, no tool body in the logs
    assert stack.tool_secret not in stack.log("bridged")


def test_failing_tools_give_the_model_an_error(stack_factory, tmp_path):
    stack = tool_stack(stack_factory, tmp_path,
                       [("fails", "/fail", "3s"), ("slow", "/slow", "1s"),
                        ("big", "/big", "3s"), ("drops", "/drop", "3s"),
                        ("plain", "/plain", "3s")])
    stack.tools("POST", "/_fake/config", {"paths": {
        "/fail": {"status": 500, "body": "database down"},
        "/slow": {"delay_ms": 5000},
        "/big": {"size": 200000},
        "/drop": {"drop": True},
        "/plain": {"body": "Order 1: shipped \u2713",
                   "content_type": "text/plain"}}})
    plans = [{"tool": name, "arguments": {"order": "1"}}
             for name in ("fails", "slow", "big", "drops", "plain",
                          "no_such_tool")]
    script(stack, plans + [{"text": "Sorry, I cannot look that up."}])
    sid = inbound(stack)

    outs = wait_for(lambda: len(outputs(stack)) >= 6 and outputs(stack),
                    60, 0.2, "six function outputs")
    # any 2xx text is the output, as it came
    assert outs[4]["output"] == "Order 1: shipped \u2713"
    del outs[4]

    errors = [json.loads(o["output"])["error"] for o in outs]
    assert "HTTP status 500" in errors[0]
    assert "did not answer within 1000 ms" in errors[1]
    assert "larger than" in errors[2]
    assert "could not be reached" in errors[3]
    assert "there is no tool named no_such_tool" in errors[4]
    assert all(o["response_requested"] for o in outs)

    # the slow tool's error came within its timeout, not the tool's 5 s
    calls = {c["call_id"]: c for c in session(stack)["tool_calls"]}
    slow = outs[1]
    assert slow["at_ms"] - calls[slow["call_id"]]["done_ms"] < 2500

    # and the call went on to the model's answer
    wait_for(lambda: any(r["transcript"] == "Sorry, I cannot look that up."
                         for r in session(stack)["responses"]), 20,
             what="the reply after the failures")
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert [e["name"] for e in rec["transcript"] if e["role"] == "tool"] \
        == ["fails", "slow", "big", "drops", "plain", "no_such_tool"]
    assert not session(stack)["violations"], session(stack)["violations"]


def test_barge_in_while_a_tool_runs(stack_factory, tmp_path):
    stack = tool_stack(stack_factory, tmp_path,
                       [("lookup_order", "/slow", "10s")])
    stack.tools("POST", "/_fake/config",
                {"paths": {"/slow": {"delay_ms": 4000}}})
    script(stack, [{"tool": "lookup_order", "arguments": {"order": "7"},
                    "say": "Let me check that for you."}])
    sid = inbound(stack)

    # the preamble plays while the tool runs; the caller talks over it
    wait_for(lambda: stack.tools("GET", "/_fake/requests"), 30, 0.1,
             "the tool request")
    wait_for(lambda: len(base64.b64decode(
        stack.twilio_call(sid)["played_audio_b64"])) > 4000, 10, 0.05,
        "the preamble playing")
    assert not outputs(stack), "the tool answered too soon for the test"
    stack.tw("POST", "/_fake/calls/%s/say" % sid,
             {"audio": str(stack.dir.parent / "unused")} if False else
             {"audio_b64": base64.b64encode(
                 fixture_bytes("caller")).decode()})

    wait_for(lambda: stack.twilio_call(sid)["clears"], 10, 0.1,
             "a clear for the barge-in")

    # the tool still answers, and the call goes on
    out = wait_for(lambda: outputs(stack), 15, 0.2, "the function output")[0]
    assert json.loads(out["output"])["ok"] is True
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert "tool" in [e["role"] for e in rec["transcript"]]


def test_a_tool_that_answers_after_a_new_session_took_over(stack_factory,
                                                           tmp_path):
    stack = tool_stack(stack_factory, tmp_path,
                       [("lookup_order", "/slow", "10s")])
    stack.tools("POST", "/_fake/config",
                {"paths": {"/slow": {"delay_ms": 3000}}})
    script(stack, [{"tool": "lookup_order", "arguments": {"order": "7"},
                    "say": "Let me check that for you."}])
    sid = inbound(stack)
    wait_for(lambda: stack.tools("GET", "/_fake/requests"), 30, 0.1,
             "the tool request")

    # the session goes while the tool runs
    stack.oai("/_fake/drop?mode=1011")
    wait_for(lambda: len(stack.openai_sessions()) >= 2, 20, 0.1,
             "the next session")

    # its answer reaches the new session as text, and the model speaks
    def told():
        s = stack.openai_sessions()[1]
        return [i for i in s["client_items"] if i["role"] == "system"
                and "lookup_order" in i["text"]
                and "before the interruption" in i["text"]]
    item = wait_for(told, 15, 0.1, "the tool's answer in the new session")[0]
    assert '"ok"' in item["text"], item["text"]
    wait_for(lambda: stack.openai_sessions()[1]["responses"], 10, 0.1,
             "a response to it")
    assert stack.openai_sessions()[1]["function_outputs"] == []
    assert not [e for e in stack.openai_sessions()[1]["errors"]
                if "call_id" in json.dumps(e)]

    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    rec = json.loads(stack.wait_transcript(sid).read_text())
    assert "tool" in [e["role"] for e in rec["transcript"]]
