"""test_session_settings.py: the session directives reach OpenAI.

Every directive that shapes a call is valid in http, server and location;
the stream takes the settings of the location that answered its /twiml
(not those of /media-stream), so a /twiml per Twilio number gives each
number its own assistant.  A list given in a location replaces the
server's.  Bad values fail `nginx -t`.
"""

import json
import os
import subprocess

import pytest

from conftest import BUILD, TOP, fixture_bytes, render, wait_for
from test_media_framing import ACCOUNT, CALL, STREAM, Client, frame

CALLER = "+14155550177"

SCHEMA = {"description": "Look up an order by its number.",
          "parameters": {"type": "object",
                         "properties": {"order": {"type": "string"}},
                         "required": ["order"]}}


def inbound(stack, path="/twiml"):
    sid = stack.tw("POST", "/_fake/inbound",
                   {"from": CALLER, "path": path})["callSid"]
    stack.wait_reply_heard(sid, len(fixture_bytes("reply")))
    stack.tw("POST", "/_fake/calls/%s/hangup" % sid, {"wait": True})
    stack.wait_transcript(sid)
    return sid


def session_of(stack, n):
    """the session.update bridged sent, as sent"""
    sessions = wait_for(lambda: (lambda ss: len(ss) >= n
                                 and ss[n - 1]["session_updates"] and ss)(
                            stack.openai_sessions()), 10,
                        what="%d configured OpenAI sessions" % n)
    update = sessions[n - 1]["session_updates"][-1]
    if isinstance(update, str):
        update = json.loads(update)
    return update.get("session", update)


def tool_names(session):
    return [t.get("name") or t.get("server_label") for t in session["tools"]]


def test_each_twiml_location_has_its_own_assistant(stack_factory, tmp_path):
    schema = tmp_path / "order.json"
    schema.write_text(json.dumps(SCHEMA))
    server = """
        voice_instructions "You answer for the front desk.";
        voice_transfer_to desk +14155550100;

        location = /twiml-sales {
            voice_twiml;
            voice_instructions "You sell tables.";
            voice_voice cedar;
            voice_model gpt-realtime-1.5;
            voice_turn_detection semantic_vad eagerness=high;
            voice_interrupt_response off;
            voice_noise_reduction near_field;
            voice_speed 1.2;
            voice_max_output_tokens 500;
            voice_truncation 0.5;
            voice_transcribe_language en;
            voice_transcribe_prompt "Acme, tables";
            voice_end_call off;
            voice_tool lookup_order https://tools.example/order %s
                       timeout=2s;
            voice_transfer_to sales +14155550111;
            voice_transfer_to floor sip:floor@pbx.example;
        }
    """ % schema
    stack = stack_factory(server_include=server,
                          extra_http="voice_reasoning_effort medium;")

    # the default /twiml: the server's settings, http's reasoning effort
    first = inbound(stack, "/twiml")
    s = session_of(stack, 1)
    assert s["instructions"] == "You answer for the front desk."
    assert s["model"] == "gpt-realtime-2.1"
    assert s["reasoning"] == {"effort": "medium"}
    assert s["audio"]["output"]["voice"] == "marin"
    assert s["audio"]["input"]["transcription"]["model"] == "gpt-transcribe"
    assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert sorted(tool_names(s)) == ["end_call", "transfer_call"]
    transfer = [t for t in s["tools"] if t["name"] == "transfer_call"][0]
    assert transfer["parameters"]["properties"]["destination"]["enum"] \
        == ["desk"]

    # /twiml-sales: its own assistant, whichever location streams it
    sid = inbound(stack, "/twiml-sales")
    assert stack.twilio_call(sid)["customParameters"]["profile"] \
        != stack.twilio_call(first)["customParameters"]["profile"]
    s = session_of(stack, 2)
    assert s["instructions"] == "You sell tables."
    assert s["model"] == "gpt-realtime-1.5"
    assert "reasoning" not in s or s["reasoning"] == {"effort": "medium"}
    assert s["audio"]["output"]["voice"] == "cedar"
    assert s["audio"]["output"]["speed"] == 1.2
    td = s["audio"]["input"]["turn_detection"]
    assert td["type"] == "semantic_vad" and td["eagerness"] == "high"
    assert td["interrupt_response"] is False
    assert s["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    asr = s["audio"]["input"]["transcription"]
    assert asr["language"] == "en" and asr["prompt"] == "Acme, tables"
    assert s["max_output_tokens"] == 500
    assert s["truncation"] == {"type": "retention_ratio",
                               "retention_ratio": 0.5}

    # end_call off; the location's transfer list replaced the server's
    assert sorted(tool_names(s)) == ["lookup_order", "transfer_call"]
    t = [t for t in s["tools"] if t["name"] == "lookup_order"][0]
    assert t == {"type": "function", "name": "lookup_order",
                 "description": SCHEMA["description"],
                 "parameters": SCHEMA["parameters"]}
    transfer = [t for t in s["tools"] if t["name"] == "transfer_call"][0]
    assert transfer["parameters"]["properties"]["destination"]["enum"] \
        == ["sales", "floor"]

    # nothing of the tools' secret or URL reaches OpenAI or the logs
    raw = json.dumps(stack.openai_sessions())
    assert "tools.example" not in raw
    assert stack.tool_secret not in raw


def nginx_t(tmp_path, server, secret="s" * 32):
    """nginx -t on the shipped template with server directives added"""
    conf = tmp_path / "nginx.conf"
    inc = tmp_path / "server.conf"
    inc.write_text(server)
    values = {"USER_LINE": "user root;" if os.geteuid() == 0 else "",
              "RUN_DIR": str(tmp_path), "ERROR_LOG": str(tmp_path / "e.log"),
              "MODULE": str(BUILD / "nginx/ngx_http_voice_module.so"),
              "BRIDGE_ENDPOINT": "ipc://%s/b.sock" % tmp_path,
              "LISTEN": "127.0.0.1:1", "SERVER_INCLUDE": "include %s;" % inc}
    conf.write_text(render(TOP / "conf/nginx.conf.in", values))
    env = {"PATH": os.environ["PATH"], "PUBLIC_URL": "https://v.example",
           "TWILIO_AUTH_TOKEN": "0123456789abcdef0123456789abcdef",
           "VOICE_API_TOKEN": "t" * 32}
    if secret:
        env["VOICE_TOOL_SECRET"] = secret
    (tmp_path / "tmp").mkdir(exist_ok=True)
    r = subprocess.run(["/usr/sbin/nginx", "-t", "-p", str(tmp_path), "-c",
                        str(conf)], env=env, capture_output=True, text=True)
    return r.returncode, r.stderr


def test_nginx_t_checks_the_session_directives(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SCHEMA))
    token = tmp_path / "mcp-token"
    token.write_text("Bearer abc\n")
    rc, err = nginx_t(tmp_path, "voice_tool t https://x/t %s;\n"
                      "voice_transfer_to desk +14155550100;\n"
                      "voice_mcp_server kb https://mcp.example "
                      "allowed=search,fetch authorization=file:%s;\n"
                      % (good, token))
    assert rc == 0, err

    notjson = tmp_path / "bad1.json"
    notjson.write_text("{\"description\": \"x\",")
    noparams = tmp_path / "bad2.json"
    noparams.write_text(json.dumps({"description": "x"}))
    notobject = tmp_path / "bad3.json"
    notobject.write_text(json.dumps({"description": "x",
                                     "parameters": {"type": "string"}}))
    cases = [
        ("voice_tool t https://x/t %s;" % notjson, "not valid JSON"),
        ("voice_tool t https://x/t %s;" % noparams, "\"parameters\""),
        ("voice_tool t https://x/t %s;" % notobject, "\"type\": \"object\""),
        ("voice_tool t https://x/t /nonexistent.json;", "failed"),
        ("voice_tool end_call https://x/t %s;" % good, "built-in"),
        ("voice_tool t ftp://x/t %s;" % good, "tool URL"),
        ("voice_tool t https://x/t %s timeout=2h;" % good, "timeout"),
        ("voice_tool t https://x/t %s;\nvoice_tool t https://x/u %s;"
         % (good, good), "declared twice"),
        ("voice_transfer_to desk 4155550100;", "E.164"),
        ("voice_speed 3;", "0.25 and 1.5"),
        ("voice_vad_threshold 1.5;", "between 0 and 1"),
        ("voice_max_output_tokens 0;", "inf"),
        ("voice_truncation 1;", "retention ratio"),
        ("voice_turn_detection push_to_talk;", "semantic_vad"),
        ("voice_turn_detection server_vad eagerness=high;", "eagerness"),
        ("voice_reasoning_effort extreme;", "invalid value"),
        ("voice_noise_reduction loud;", "invalid value"),
        ("voice_machine_detection sometimes;", "invalid value"),
        ("voice_mcp_server kb https://mcp.example authorization=env:"
         "NO_SUCH_VARIABLE_X;", "not set"),
        ("voice_mcp_server kb https://mcp.example authorization=file:"
         "/nonexistent;", "failed"),
        ("voice_mcp_server kb https://mcp.example approval=always;",
         "invalid parameter"),
        ("voice_idle_prompts 99;", "between 0 and 10"),
    ]
    for line, why in cases:
        rc, err = nginx_t(tmp_path, line + "\n")
        assert rc != 0, line
        assert why in err, (line, err)


def test_a_tool_without_a_secret_fails_nginx_t(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SCHEMA))
    inc = "voice_tool t https://x/t %s;\n" % good

    a = tmp_path / "a"
    a.mkdir()
    rc, err = nginx_t(a, inc)
    assert rc == 0, err        # VOICE_TOOL_SECRET from the environment

    rc, err = nginx_t(a, inc, secret=None)
    assert rc != 0 and "VOICE_TOOL_SECRET" in err, err

    # a file wins over the environment, and must hold a real secret
    secret = tmp_path / "secret"
    secret.write_text("short\n")
    rc, err = nginx_t(a, inc + "voice_tool_secret_file %s;\n" % secret)
    assert rc != 0 and "at least 16 bytes" in err, err


@pytest.mark.parametrize("profile", ["9.00000000", "0.deadbeef", "junk"])
def test_a_stream_naming_unknown_settings_takes_its_own(stack, profile):
    """a profile from another configuration (a reload between the TwiML
    and the stream) falls back to /media-stream's settings, with a
    warning; the call still works"""
    c = Client(stack, CALL, STREAM)
    c.start(profile=profile)
    wait_for(lambda: (lambda ss: ss and ss[0]["session_updates"])(
        stack.openai_sessions()), 10, what="a configured session")
    c.s.sendall(frame(1, c.message({"event": "stop", "stop": {
        "accountSid": ACCOUNT, "callSid": CALL}})))
    stack.wait_transcript(CALL)
    assert "does not have" in stack.log("error")
    s = session_of(stack, 1)
    assert s["model"] == "gpt-realtime-2.1"
    assert s["instructions"].startswith("You are a helpful")
