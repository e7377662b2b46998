"""Tests of fake_openai.py's fault injection (docs/protocols.md, Realtime acting §7): the verified
bad-key answer (101, error, close 3000), expires_at and session expiry, a connection dropped
mid-response (after N audio deltas, or now through /_fake/drop; abrupt or 1011), errors that
end a live session (/_fake/fatal), refused upgrades (refuse_next) and sessions that end at
once (fatal_next), and history re-created with conversation.item.create (§7.6).

Run: /usr/bin/python3 -m pytest tests/fakes -q -p no:cacheprovider
Each test drives the fake (a subprocess on a free port) with a real websockets client.
"""

import asyncio
import json
import os
import sys
import time

import pytest
import requests
import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_fakes import GA_SESSION, OAI_KEY, Proc, wait_for  # noqa: E402  (one harness for the fakes)

AUTH = {"Authorization": "Bearer " + OAI_KEY}


@pytest.fixture
def oai(tmp_path):
    """The fake with its default tone reply (1.2 s, about 10 audio deltas) at real-time pace,
    so that a response is still streaming when a test acts on it."""
    p = Proc([os.path.join(HERE, "fake_openai.py"), "--api-key", OAI_KEY, "--pace", "1"], tmp_path, "fake_openai")
    yield p
    p.stop()


def url(p, model="gpt-realtime-2.1"):
    return "ws://127.0.0.1:%d/v1/realtime?model=%s" % (p.port, model)


def config(p, **params):
    r = requests.get(p.base + "/_fake/config", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def sessions(p):
    return requests.get(p.base + "/_fake/sessions").json()


async def connect(p, headers=AUTH, model="gpt-realtime-2.1"):
    return await websockets.connect(url(p, model), extra_headers=headers, compression=None)


async def open_session(p, model="gpt-realtime-2.1"):
    """Connect, wait for session.created, send the phone session.update, wait for session.updated."""
    ws = await connect(p, model=model)
    created = json.loads(await ws.recv())
    assert created["type"] == "session.created"
    await ws.send(json.dumps({"type": "session.update", "session": dict(GA_SESSION, model=model)}))
    ev = json.loads(await ws.recv())
    assert ev["type"] == "session.updated", ev
    return ws, created


async def read_until_closed(ws, timeout=10):
    """Every event until the connection closes: (events, close code, close reason)."""
    evs = []
    try:
        while True:
            evs.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except websockets.ConnectionClosed as e:
        return evs, e.code, e.reason


async def read_until(ws, etype, timeout=10):
    evs = []
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        evs.append(ev)
        if ev["type"] == etype:
            return evs


def count(evs, etype):
    return sum(1 for e in evs if e["type"] == etype)


# ------------------------------------------------------------------------- 1. bad key

def test_bad_key_default_is_error_then_close_3000(oai):
    async def run():
        ws = await connect(oai, headers={"Authorization": "Bearer sk-proj-WRONGkey0123sQoA"})
        return await read_until_closed(ws)

    evs, code, reason = asyncio.run(run())
    # acting §7.2: the upgrade succeeds, one error, close 3000 "<type>.<code>"; no session.created
    assert [e["type"] for e in evs] == ["error"]
    assert evs[0]["event_id"].startswith("event_")
    assert evs[0]["error"] == {
        "type": "invalid_request_error", "code": "invalid_api_key",
        "message": "Incorrect API key provided: sk-proj-...sQoA. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.", "param": None, "event_id": None}
    assert (code, reason) == (3000, "invalid_request_error.invalid_api_key")
    s = wait_for(lambda: (lambda v: v if v and v[-1]["closed_ms"] is not None else None)(sessions(oai)))[-1]
    assert s["server_event_types"] == ["error"] and s["errors"] == [evs[0]["error"]]
    assert (s["close_code"], s["close_reason"]) == (3000, "invalid_request_error.invalid_api_key")
    assert s["ended_by"] == "invalid_api_key" and s["dropped_by_fake"] is False
    assert s["fatal"]["trigger"] == "bad_key" and s["fatal"]["close_code"] == 3000
    assert "wrong or missing API key" in s["violations"]
    hs = requests.get(oai.base + "/_fake/handshakes").json()[-1]
    assert hs["status"] == 101 and hs["bad_key"] is True
    assert config(oai)["bad_key_mode"] == "error"

    # the alternative: refuse the upgrade with HTTP 401 and an OpenAI JSON body
    config(oai, bad_key_mode="refuse")

    async def refused():
        try:
            await connect(oai, headers={})
        except websockets.InvalidStatusCode as e:
            return e.status_code
    assert asyncio.run(refused()) == 401
    r = requests.get(oai.base + "/v1/realtime?model=gpt-realtime-2.1", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert requests.get(oai.base + "/_fake/config", params={"bad_key_mode": "maybe"}).status_code == 400


# ------------------------------------------------------------------------- 2. expiry

def test_expires_at_follows_the_limit_and_expiry_closes_1001(oai):
    async def created_only(p):
        ws = await connect(p)
        ev = json.loads(await ws.recv())
        await ws.close()
        return ev

    t = time.time()
    default = asyncio.run(created_only(oai))["session"]["expires_at"]
    assert int(t) + 3599 <= default <= int(time.time()) + 3600       # the 60 minutes of §7.1
    assert config(oai, max_session_seconds="0")["max_session_seconds"] is None
    assert abs(asyncio.run(created_only(oai))["session"]["expires_at"] - (time.time() + 3600)) <= 2
    assert requests.get(oai.base + "/_fake/config", params={"max_session_seconds": "-1"}).status_code == 400

    assert config(oai, max_session_seconds="2.5")["max_session_seconds"] == 2.5

    async def run():
        t0 = time.time()
        ws, created = await open_session(oai)
        evs, code, reason = await read_until_closed(ws)
        return t0, created, evs, code, reason, time.time()

    t0, created, evs, code, reason, t1 = asyncio.run(run())
    assert int(t0 + 2.5) - 1 <= created["session"]["expires_at"] <= int(t0 + 2.5) + 1
    assert 2.3 <= t1 - t0 <= 5.0
    assert t1 >= created["session"]["expires_at"]             # never earlier than announced
    msg = "Your session hit the maximum duration of 1 minutes."
    assert evs[-1]["type"] == "error"
    assert evs[-1]["error"] == {"type": "invalid_request_error", "code": "session_expired", "message": msg,
                                "param": None, "event_id": None}
    assert (code, reason) == (1001, msg)
    s = wait_for(lambda: (lambda v: v if v[-1]["closed_ms"] is not None else None)(sessions(oai)))[-1]
    assert s["ended_by"] == "session_expired" and s["max_session_seconds"] == 2.5
    assert s["fatal"]["trigger"] == "max_session_seconds" and s["errors"][-1]["code"] == "session_expired"
    assert (s["close_code"], s["close_reason"]) == (1001, msg)


# ------------------------------------------------------------------------- 3. drops

def test_drop_after_deltas_abrupt_fires_once(oai):
    view = config(oai, drop_after_deltas="3")
    assert view["drop_after_deltas"] == 3 and view["drop_mode"] == "abrupt"

    async def run():
        ws, _ = await open_session(oai)
        await ws.send(json.dumps({"type": "response.create"}))
        first = await read_until_closed(ws)
        ws2, _ = await open_session(oai)                     # the drop has fired: this one completes
        await ws2.send(json.dumps({"type": "response.create"}))
        second = await read_until(ws2, "response.done")
        await ws2.close()
        return first, second

    (evs, code, reason), second = asyncio.run(run())
    assert count(evs, "response.output_audio.delta") == 3
    assert "response.done" not in [e["type"] for e in evs] and "response.output_audio.done" not in \
        [e["type"] for e in evs]
    assert code == 1006                                      # no close frame
    assert second[-1]["response"]["status"] == "completed" and count(second, "response.output_audio.delta") > 3
    assert config(oai)["drop_after_deltas"] is None
    v = wait_for(lambda: (lambda v: v if len(v) == 2 and v[0]["closed_ms"] is not None else None)(sessions(oai)))
    s = v[0]
    assert s["dropped_by_fake"] is True and s["ended_by"] == "drop"
    assert (s["close_code"], s["close_reason"]) == (1006, "")
    assert s["drop"]["mode"] == "abrupt" and s["drop"]["trigger"] == "drop_after_deltas"
    assert s["drop"]["audio_deltas_sent"] == 3 and s["drop"]["response_id"] == s["responses"][0]["id"]
    assert s["responses"][0]["dropped"] is True and s["responses"][0]["status"] == "dropped"
    assert s["responses"][0]["audio_deltas_sent"] == 3
    assert s["server_event_types"].count("response.output_audio.delta") == 3
    assert v[1]["dropped_by_fake"] is False and v[1]["drop"] is None and v[1]["ended_by"] == "client"


def test_drop_after_deltas_1011_in_a_named_session(oai):
    async def run():
        ws_a, _ = await open_session(oai)
        ws_b, _ = await open_session(oai)
        view = config(oai, drop_after_deltas="2", drop_mode="1011", drop_session="1")
        assert view["drop_session"] == "1" and view["drop_mode"] == "1011"
        await ws_a.send(json.dumps({"type": "response.create"}))
        a = await read_until(ws_a, "response.done")         # session 0 is not the named one
        await ws_b.send(json.dumps({"type": "response.create"}))
        b = await read_until_closed(ws_b)
        await ws_a.close()
        return a, b

    a, (evs, code, reason) = asyncio.run(run())
    assert a[-1]["response"]["status"] == "completed"
    assert count(evs, "response.output_audio.delta") == 2 and evs[-1]["type"] != "response.done"
    assert (code, reason) == (1011, "internal error")
    s = wait_for(lambda: (lambda v: v if v[1]["closed_ms"] is not None else None)(sessions(oai)))[1]
    assert s["dropped_by_fake"] is True and (s["close_code"], s["close_reason"]) == (1011, "internal error")
    assert s["drop"]["mode"] == "1011" and s["drop"]["audio_deltas_sent"] == 2
    assert config(oai)["drop_after_deltas"] is None and config(oai)["drop_session"] is None
    assert requests.get(oai.base + "/_fake/config", params={"drop_mode": "rst"}).status_code == 400
    assert requests.get(oai.base + "/_fake/config", params={"drop_after_deltas": "-2"}).status_code == 400


def test_drop_endpoint_cuts_every_open_session(oai):
    async def run():
        ws_a, _ = await open_session(oai)
        ws_b, _ = await open_session(oai)
        await ws_a.send(json.dumps({"type": "response.create"}))
        await read_until(ws_a, "response.output_audio.delta")   # A is mid-response
        r = requests.get(oai.base + "/_fake/drop")
        a = await read_until_closed(ws_a)
        b = await read_until_closed(ws_b)
        ws_c, _ = await open_session(oai)
        r2 = requests.get(oai.base + "/_fake/drop", params={"mode": "1011", "session": "2"})
        c = await read_until_closed(ws_c)
        return r, a, b, r2, c

    r, a, b, r2, c = asyncio.run(run())
    assert r.status_code == 200 and r.json()["mode"] == "abrupt"
    assert [d["session"] for d in r.json()["dropped"]] == [0, 1]
    assert a[1] == 1006 and b[1] == 1006 and "response.done" not in [e["type"] for e in a[0]]
    assert r2.status_code == 200 and (c[1], c[2]) == (1011, "internal error")
    v = wait_for(lambda: (lambda v: v if all(x["closed_ms"] is not None for x in v) else None)(sessions(oai)))
    assert [x["dropped_by_fake"] for x in v] == [True, True, True]
    assert [x["close_code"] for x in v] == [1006, 1006, 1011]
    assert [x["drop"]["trigger"] for x in v] == ["endpoint"] * 3
    assert v[0]["drop"]["response_id"] == v[0]["responses"][0]["id"] and v[0]["responses"][0]["dropped"]
    assert v[1]["drop"]["response_id"] is None
    # nothing open any more; a closed or unknown session, or a bad mode, is refused
    assert requests.get(oai.base + "/_fake/drop").json()["dropped"] == []
    assert requests.get(oai.base + "/_fake/drop", params={"session": "0"}).status_code == 409
    assert requests.get(oai.base + "/_fake/drop", params={"session": "7"}).status_code == 404
    assert requests.get(oai.base + "/_fake/drop", params={"mode": "rst"}).status_code == 400


# ------------------------------------------------------------------------- 4. fatal errors

def test_fatal_endpoint_session_expired_and_server_error(oai):
    async def run():
        ws_a, _ = await open_session(oai)
        ws_b, _ = await open_session(oai)
        await ws_b.send(json.dumps({"type": "response.create"}))
        await read_until(ws_b, "response.output_audio.delta")
        r = requests.get(oai.base + "/_fake/fatal", params={"code": "session_expired"})
        a = await read_until_closed(ws_a)
        b = await read_until_closed(ws_b)
        ws_c, _ = await open_session(oai)
        r2 = requests.get(oai.base + "/_fake/fatal", params={"code": "server_error"})
        c = await read_until_closed(ws_c)
        return r, a, b, r2, c

    r, a, b, r2, c = asyncio.run(run())
    msg = "Your session hit the maximum duration of 60 minutes."
    assert r.status_code == 200 and len(r.json()["sessions"]) == 2
    for evs, code, reason in (a, b):
        assert evs[-1]["type"] == "error"                   # the error is the last event
        assert evs[-1]["error"] == {"type": "invalid_request_error", "code": "session_expired", "message": msg,
                                    "param": None, "event_id": None}
        assert (code, reason) == (1001, msg)
    assert "response.done" not in [e["type"] for e in b[0]]
    evs, code, reason = c
    assert evs[-1]["error"]["type"] == "server_error" and evs[-1]["error"]["code"] == "server_error"
    assert (code, reason) == (1011, "internal error")
    v = wait_for(lambda: (lambda v: v if all(x["closed_ms"] is not None for x in v) else None)(sessions(oai)))
    assert [x["ended_by"] for x in v] == ["fatal"] * 3 and not any(x["dropped_by_fake"] for x in v)
    assert [x["fatal"]["code"] for x in v] == ["session_expired", "session_expired", "server_error"]
    assert [x["fatal"]["trigger"] for x in v] == ["endpoint"] * 3
    assert [x["close_code"] for x in v] == [1001, 1001, 1011]
    assert v[1]["responses"][0]["status"] == "cancelled"
    assert v[1]["responses"][0]["status_details"]["reason"] == "session_ended"
    assert requests.get(oai.base + "/_fake/fatal").status_code == 400
    assert requests.get(oai.base + "/_fake/fatal", params={"code": "x", "close": "1006"}).status_code == 400
    assert requests.get(oai.base + "/_fake/fatal", params={"code": "x", "session": "0"}).status_code == 409


def test_refuse_next_counts_down_with_status_and_retry_after(oai):
    view = config(oai, refuse_next="2", refuse_status="503", refuse_retry_after="7")
    assert (view["refuse_next"], view["refuse_status"], view["refuse_retry_after"]) == (2, 503, 7)

    async def attempt():
        try:
            ws = await connect(oai)
        except websockets.InvalidStatusCode as e:
            return e.status_code, e.headers.get("Retry-After")
        ev = json.loads(await ws.recv())
        await ws.close()
        return ev["type"], None

    assert asyncio.run(attempt()) == (503, "7")
    r = requests.get(oai.base + "/v1/realtime?model=gpt-realtime-2.1", headers=AUTH)   # the body, as HTTP
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    assert r.json()["error"]["type"] == "server_error"
    assert asyncio.run(attempt()) == ("session.created", None)         # the counter stopped at 0
    assert config(oai)["refuse_next"] == 0
    hs = requests.get(oai.base + "/_fake/handshakes").json()
    assert [h["status"] for h in hs] == [503, 503, 101]
    assert hs[0]["injected"] == "refuse_next" and hs[0]["retry_after"] == 7

    config(oai, refuse_next="1", refuse_status="429", refuse_retry_after="2")
    r = requests.get(oai.base + "/v1/realtime?model=gpt-realtime-2.1", headers=AUTH)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json()["error"]["type"] == "requests" and r.json()["error"]["code"] == "rate_limit_exceeded"
    config(oai, refuse_next="1", refuse_status="403")                  # no Retry-After on a 403
    assert asyncio.run(attempt()) == (403, None)
    config(oai, refuse_next="1", refuse_status="401", refuse_retry_after="")
    r = requests.get(oai.base + "/v1/realtime?model=gpt-realtime-2.1", headers=AUTH)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    config(oai, refuse_next="1", refuse_status="500")
    assert asyncio.run(attempt()) == (500, None)
    assert requests.get(oai.base + "/_fake/config", params={"refuse_status": "418"}).status_code == 400
    assert wait_for(lambda: sessions(oai)[0]["ended_by"]) == "client"


def test_fatal_next_insufficient_quota_then_invalid_model(oai):
    view = config(oai, fatal_next="2", fatal_code="insufficient_quota")
    assert (view["fatal_next"], view["fatal_code"]) == (2, "insufficient_quota")

    async def attempt():
        ws = await connect(oai)
        return await read_until_closed(ws, timeout=5)

    async def normal():
        ws = await connect(oai)
        ev = json.loads(await ws.recv())
        await ws.close()
        return ev

    evs, code, reason = asyncio.run(attempt())
    assert [e["type"] for e in evs] == ["error"]                     # no session.created
    assert evs[0]["error"]["type"] == "insufficient_quota" and evs[0]["error"]["code"] == "insufficient_quota"
    assert evs[0]["error"]["message"].startswith("You exceeded your current quota")
    assert (code, reason) == (3000, "insufficient_quota.insufficient_quota")
    config(oai, fatal_code="invalid_model")
    evs, code, reason = asyncio.run(attempt())
    assert evs[0]["error"] == {"type": "invalid_request_error", "code": "invalid_model",
                               "message": 'Model "gpt-realtime-2.1" is not supported in realtime mode.',
                               "param": None, "event_id": None}
    assert (code, reason) == (4000, "invalid_request_error.invalid_model")
    assert config(oai)["fatal_next"] == 0
    assert asyncio.run(normal())["type"] == "session.created"
    v = wait_for(lambda: (lambda v: v if all(x["closed_ms"] is not None for x in v) else None)(sessions(oai)))
    assert [x["ended_by"] for x in v] == ["fatal", "fatal", "client"]
    assert [(x["fatal"] or {}).get("trigger") for x in v] == ["fatal_next", "fatal_next", None]
    assert [x["close_code"] for x in v[:2]] == [3000, 4000]
    assert requests.get(oai.base + "/_fake/config", params={"fatal_code": "Bad Code"}).status_code == 400
    # /_fake/reset disarms every pending fault
    config(oai, fatal_next="3", refuse_next="3", drop_after_deltas="1")
    requests.get(oai.base + "/_fake/reset")
    view = config(oai)
    assert (view["fatal_next"], view["refuse_next"], view["drop_after_deltas"]) == (0, 0, None)


# ------------------------------------------------------------------------- 5. history

HISTORY = [
    ("h1", "system", "input_text", "Continuation of a phone call that started at 14:02. The caller is Jane."),
    ("h2", "user", "input_text", "Can you tell me when it arrives?"),
    ("h3", "assistant", "output_text", "It should arrive on September 4th."),
]


def test_history_items_are_accepted_echoed_and_recorded_before_audio(oai):
    async def run():
        ws, _ = await open_session(oai)
        echoes = []
        for eid, role, ptype, text in HISTORY:               # acting §7.6 step 2, oldest first
            await ws.send(json.dumps({"type": "conversation.item.create", "event_id": eid, "item": {
                "type": "message", "role": role, "content": [{"type": ptype, "text": text}]}}))
            echoes.append(await read_until(ws, "conversation.item.done"))
        bad = []
        for eid, item in (
                ("b1", {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "x"}]}),
                ("b2", {"type": "message", "role": "assistant",
                        "content": [{"type": "output_audio", "transcript": "x"}]}),
                ("b3", {"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "x", "audio": "//8="}]}),
                ("b4", {"type": "message", "role": "system", "content": [{"type": "output_text", "text": "x"}]})):
            await ws.send(json.dumps({"type": "conversation.item.create", "event_id": eid, "item": item}))
            bad.append(await read_until(ws, "error"))
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "/////w=="}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "after audio"}]}}))
        late = await read_until(ws, "conversation.item.done")
        try:                                                # items never start a response (§7.6)
            extra = json.loads(await asyncio.wait_for(ws.recv(), 0.4))
        except asyncio.TimeoutError:
            extra = None
        await ws.close()
        return echoes, bad, late, extra

    echoes, bad, late, extra = asyncio.run(run())
    assert extra is None
    prev = None
    for (eid, role, ptype, text), evs in zip(HISTORY, echoes):
        assert [e["type"] for e in evs] == ["conversation.item.added", "conversation.item.done"]
        added, done = evs
        assert added["item"] == done["item"] and added["previous_item_id"] == prev == done["previous_item_id"]
        item = added["item"]
        assert item["id"].startswith("item_") and item["object"] == "realtime.item"
        assert item["type"] == "message" and item["role"] == role and item["status"] == "completed"
        assert item["content"] == [{"type": ptype, "text": text}]
        prev = item["id"]
    for evs, param in zip(bad, ("item.content[0].type", "item.content[0].type", "item.content[0].audio",
                                "item.content[0].type")):
        assert [e["type"] for e in evs] == ["error"]
        assert evs[0]["error"]["code"] == "invalid_value" and evs[0]["error"]["param"] == param
    assert "cannot contain audio" in bad[1][0]["error"]["message"]
    assert bad[0][0]["error"]["event_id"] == "b1"
    s = wait_for(lambda: (lambda v: v if v[-1]["closed_ms"] is not None else None)(sessions(oai)))[-1]
    items = s["client_items"]
    assert [(x["role"], x["text"]) for x in items] == [(r, t) for _, r, _, t in HISTORY] + [("user", "after audio")]
    assert [x["item_id"] for x in items[:3]] == [e[0]["item"]["id"] for e in echoes]
    assert items[3]["item_id"] == late[-1]["item"]["id"]
    assert [x["content_types"] for x in items] == [["input_text"], ["input_text"], ["output_text"], ["input_text"]]
    assert [x["before_first_append"] for x in items] == [True, True, True, False]
    assert s["first_append_ms"] is not None
    assert all(x["at_ms"] <= s["first_append_ms"] for x in items[:3]) and items[3]["at_ms"] >= s["first_append_ms"]
    assert [x["previous_item_id"] for x in items[1:3]] == [items[0]["item_id"], items[1]["item_id"]]
    assert s["responses"] == [] and "response.created" not in s["server_event_types"]
    assert [it["role"] for it in s["items"]] == ["system", "user", "assistant", "user"]
    assert len([v for v in s["violations"] if "invalid_value" in v]) == 4


# ------------------------------------------------------------------------- command line

def test_fault_options_on_the_command_line(tmp_path):
    p = Proc([os.path.join(HERE, "fake_openai.py"), "--api-key", OAI_KEY, "--bad-key-mode", "refuse",
              "--max-session-seconds", "1.5", "--drop-after-deltas", "4", "--drop-mode", "1011",
              "--refuse-next", "1", "--refuse-status", "429", "--refuse-retry-after", "3",
              "--fatal-next", "1", "--fatal-code", "invalid_model"], tmp_path, "fake_openai_cli")
    try:
        view = config(p)
        assert view["bad_key_mode"] == "refuse" and view["max_session_seconds"] == 1.5
        assert (view["drop_after_deltas"], view["drop_mode"]) == (4, "1011")
        assert (view["refuse_next"], view["refuse_status"], view["refuse_retry_after"]) == (1, 429, 3)
        assert (view["fatal_next"], view["fatal_code"]) == (1, "invalid_model")

        async def run():
            try:
                await connect(p)
            except websockets.InvalidStatusCode as e:
                first = (e.status_code, e.headers.get("Retry-After"))
            ws = await connect(p)
            return first, await read_until_closed(ws, timeout=5)

        first, (evs, code, reason) = asyncio.run(run())
        assert first == (429, "3")
        assert evs[0]["error"]["code"] == "invalid_model" and (code, reason) == (4000, "invalid_request_error."
                                                                                       "invalid_model")
    finally:
        p.stop()
