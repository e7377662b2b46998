"""test_records_over_time.py: past calls, listed, deleted, and kept no
longer than voice_transcript_keep.

GET /api/transcripts lists the records newest first, by the start time and
call SID their file names hold, paged (limit, next/before) and filtered by
number and time; DELETE /api/transcript/{callSid} removes a record, but
not while its call is live (409); voice_transcript_keep deletes records
older than it, on the thread pool, and says so at notice.  The records
here are files named the way nginx names them: listing and retention read
only names, and a deleted record is one nginx wrote.
"""

import datetime
import json
import secrets

from conftest import json_of, wait_for


def stamp(dt):
    """the file-safe time of a record's name"""
    return dt.strftime("%Y-%m-%dT%H-%M-%S-") + "%03dZ" % (
        dt.microsecond // 1000)


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (
        dt.microsecond // 1000)


def record(stack, when, phone="+14155550100", sid=None):
    sid = sid or "CA" + secrets.token_hex(16)
    doc = {"callSid": sid, "phoneNumber": phone, "timestamp": iso(when),
           "transcript": []}
    (stack.transcripts / ("%s_%s_%s.json" % (sid, phone, stamp(when)))) \
        .write_text(json.dumps(doc))
    return {"callSid": sid, "phoneNumber": phone, "timestamp": iso(when)}


def listing(stack, query=""):
    r = stack.api("GET", "/api/transcripts" + query)
    assert r.status_code == 200, r.text
    return json_of(r)


def test_list_newest_first_paged_and_filtered(stack):
    t0 = datetime.datetime(2026, 12, 1, 9, 0, 0, 123000)
    made = [record(stack, t0 + datetime.timedelta(minutes=i),
                   "+14155550100" if i % 2 else "+14155550199")
            for i in range(7)]
    # a live call's journal, and a record being written: not records
    (stack.transcripts / (".CA%s_+1415_x.journal" % secrets.token_hex(16))) \
        .write_text("{}")
    (stack.transcripts / (".CA%s_x.json.tmp" % ("0" * 32))).write_text("{}")
    (stack.transcripts / "notes.txt").write_text("x")

    newest_first = list(reversed(made))
    assert listing(stack) == {"transcripts": newest_first, "next": None}

    # pages of 3: next is the key after which the next page starts
    page = listing(stack, "?limit=3")
    assert page["transcripts"] == newest_first[:3]
    assert page["next"]
    page2 = listing(stack, "?limit=3&before=" + page["next"])
    assert page2["transcripts"] == newest_first[3:6]
    page3 = listing(stack, "?limit=3&before=" + page2["next"])
    assert page3 == {"transcripts": newest_first[6:], "next": None}

    # by number (its + as %2B), and by time: since inclusive, until not
    odd = [m for m in newest_first if m["phoneNumber"] == "+14155550100"]
    assert listing(stack, "?number=%2B14155550100")["transcripts"] == odd
    t2, t5 = made[2]["timestamp"], made[5]["timestamp"]
    got = listing(stack, "?since=%s&until=%s" % (t2, t5))["transcripts"]
    assert got == [made[4], made[3], made[2]]
    assert listing(stack, "?since=2026-12-02")["transcripts"] == []
    assert listing(stack, "?until=2026-12-01T09:01")["transcripts"] == \
        [made[0]]

    for bad in ("?limit=0", "?limit=501", "?limit=x", "?number=a%20b",
                "?before=short", "?since=" + "9" * 30):
        r = stack.api("GET", "/api/transcripts" + bad)
        assert r.status_code == 400, (bad, r.text)
        assert "error" in json_of(r)

    # the bearer token, as everywhere in the API
    r = stack.api("GET", "/api/transcripts", token=None)
    assert r.status_code == 401
    assert stack.api("POST", "/api/transcripts").status_code == 405


def test_delete_a_record_not_a_live_call(stack):
    now = datetime.datetime.utcnow()
    gone = record(stack, now)
    kept = record(stack, now - datetime.timedelta(seconds=1))

    assert stack.api("DELETE", "/api/transcript/" + gone["callSid"],
                     token=None).status_code == 401
    r = stack.api("DELETE", "/api/transcript/" + gone["callSid"])
    assert r.status_code == 204, r.text
    assert stack.api("GET", "/api/transcript/"
                     + gone["callSid"]).status_code == 404
    assert stack.api("DELETE", "/api/transcript/"
                     + gone["callSid"]).status_code == 404
    assert listing(stack)["transcripts"] == [kept]
    assert "the record of call %s was deleted" % gone["callSid"] \
        in stack.log("error")

    # a call whose journal is there is live (or its record is being
    # written): its record cannot go yet
    live = "CA" + secrets.token_hex(16)
    (stack.transcripts / (".%s_+14155550100_%s.journal"
                          % (live, stamp(now)))).write_text("{}\n")
    record(stack, now - datetime.timedelta(days=1), sid=live)
    r = stack.api("DELETE", "/api/transcript/" + live)
    assert r.status_code == 409, r.text
    assert "live" in json_of(r)["error"]

    assert stack.api("DELETE", "/api/transcript/CA123").status_code == 400


def test_records_older_than_keep_are_deleted(stack_factory):
    stack = stack_factory(extra_http="voice_transcript_keep 3s;")
    now = datetime.datetime.utcnow()
    old = [record(stack, now - datetime.timedelta(hours=h)) for h in (1, 30)]
    fresh = record(stack, now + datetime.timedelta(seconds=60))

    wait_for(lambda: listing(stack)["transcripts"] == [fresh], 10, 0.2,
             "the old records to go")
    assert "2 records older than 3 s deleted from" in stack.log("error")
    for o in old:
        assert stack.api("GET", "/api/transcript/"
                         + o["callSid"]).status_code == 404
