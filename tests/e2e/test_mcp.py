"""test_mcp.py: remote MCP servers (voice_mcp_server).

They are handed to OpenAI in the session -- label, URL, the allowed tools,
the authorization from a file or the environment, approval never
required -- and OpenAI calls them itself; bridged records each call in
the transcript, in conversation order, and asks for the response that
speaks its result.  The authorization appears in no log.
"""

import json
import os
from urllib.parse import quote

from conftest import wait_for


def test_an_mcp_server_is_offered_called_and_recorded(stack_factory,
                                                      tmp_path):
    token = "Bearer mcp-" + os.urandom(8).hex()
    os.environ["VOICE_TEST_MCP_TOKEN"] = token
    try:
        stack = stack_factory(server_include=(
            "voice_mcp_server kb https://mcp.example.com/mcp "
            "allowed=lookup_order authorization=env:VOICE_TEST_MCP_TOKEN;"))
    finally:
        del os.environ["VOICE_TEST_MCP_TOKEN"]
    stack.secrets.append(token)

    plan = [{"mcp": {"server_label": "kb", "name": "lookup_order",
                     "arguments": {"order_number": "42"}},
             "output": "{\"status\":\"shipped\"}"},
            {"text": "Your order has shipped."}]
    stack.oai("/_fake/config?script=" + quote(json.dumps(plan), safe=""))
    sid = stack.tw("POST", "/_fake/inbound", {"from": "+14155550100"})[
        "callSid"]

    s = wait_for(lambda: (lambda ss: ss and ss[0]["mcp_calls"] and ss[0])(
        stack.openai_sessions()), 30, 0.2, "the MCP call")
    tools = s["session"]["tools"]
    mcp = [t for t in tools if t["type"] == "mcp"]
    assert mcp == [{"type": "mcp", "server_label": "kb",
                    "server_url": "https://mcp.example.com/mcp",
                    "require_approval": "never", "authorization": token,
                    "allowed_tools": ["lookup_order"]}], mcp
    assert not s["mcp_approvals"]

    # the model speaks the result in a response bridged asks for
    wait_for(lambda: any(r["transcript"] == "Your order has shipped."
                         for r in stack.openai_sessions()[0]["responses"]),
             20, what="the reply after the MCP call")
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})

    rec = json.loads(stack.wait_transcript(sid).read_text())
    tool = [e for e in rec["transcript"] if e["role"] == "tool"]
    assert len(tool) == 1
    assert tool[0]["name"] == "kb.lookup_order"
    assert tool[0]["arguments"] == {"order_number": "42"}
    assert tool[0]["output"] == "{\"status\":\"shipped\"}"
    roles = [e["role"] for e in rec["transcript"]]
    assert roles.index("tool") < len(roles) - 1 \
        and roles[-1] == "assistant", roles
