"""How a model call's record is stored: inline in its journal entry, only long strings in blobs.

Entries written before 0.2.0 hold the whole record as one blob (``{"__o":"ref",...}``): they
are written here with that encoder (what the older version ran) and must replay unchanged.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from tests.llmkit import Crash, oai, run_twice

import outlast
from outlast import serde
from outlast.llm import record
from outlast.store.base import Entry
from outlast.testing import FakeLLMServer

# A request field of 600 characters: the request's encoding stays under 1 KB, the record with
# the response's fields is over it, and the old encoder moved the record into a blob of its
# own. Of 1,000: the request's encoding is over 1 KB, one reference to a blob of its own.
SMALL, LARGE = 600, 1000
PROMPT = {"user": ""}


def _user(size: int) -> str:
    return ("customer-" + "0123456789abcdef" * 64)[:size]


def _old_encode(payload: dict[str, Any], *, what: str, blobs: dict[str, bytes]) -> bytes:
    """The encoder of 0.1.0: a record of 1 KB or more became one blob of its own."""
    return serde.pack(serde.dumps(payload, what=what, blobs=blobs))


def _text(entry: Entry) -> bytes:
    out = entry.output or b""
    return zlib.decompress(out) if out[:1] == b"x" else out


def _request(text: bytes) -> str:
    """The request text of a record written by :func:`record.encode` (no blobs needed)."""
    value = json.loads(text)["request"]
    assert isinstance(value, str)
    return value


def _calls(app: outlast.App, run_id: str) -> list[Entry]:
    return [e for e in app.store.load_journal(run_id) if e.kind == "llm"]


def _conversation(app: outlast.App, server: FakeLLMServer, flag: dict[str, bool]) -> Any:
    llm = oai(server)

    @app.workflow(name="talk")
    def talk(ctx: outlast.Context) -> list[str]:
        messages: list[Any] = []
        answers = []
        for turn in range(3):
            messages.append({"role": "user", "content": f"question {turn}"})
            reply = llm.chat.completions.create(
                model="gpt-4o", messages=messages, user=PROMPT["user"]
            )
            messages.append(reply.choices[0].message)
            answers.append(reply.choices[0].message.content or "")
        if flag["crash"]:
            raise Crash
        return answers

    return talk


@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_a_record_is_written_inline_and_its_reply_text_shared(
    store_url: str, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PROMPT, "user", _user(size))
    flag = {"crash": False}
    with FakeLLMServer(reply_tokens=400) as server, outlast.App(store_url) as app:
        talk = _conversation(app, server, flag)
        answers = run_twice(app, talk, run_id="inline", flag=flag)
        assert server.count() == 3  # the second execution replayed all three
        calls = _calls(app, "inline")
        assert len(calls) == 3
        for entry in calls:
            text = _text(entry)
            # the record's own JSON is in the row; its reply text (1.6 KB) is a shared blob
            assert text.startswith(b'{"request":"'), text[:60]
            assert len(text) >= serde.BLOB_THRESHOLD
            assert text.count(b'"k":"s"') == 1  # the reply's text
            # the request is its encoding, or the text of the blob that encoding names: not
            # stored as a blob of its own
            request = _request(text)
            assert request.startswith('{"model":"gpt-4o"'), request[:60]
            assert app.store.get_blobs([serde.fingerprint(request.encode())]) == {}
        # the first reply's blob is the one the second request's history names
        first = _text(calls[0]).split(b'"content":{"__o":"ref","h":"')[1][:32].decode()
        assert first in app.store.get_blobs([first])
        assert answers[0].startswith("Reply to:")


@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_an_entry_written_the_old_way_replays(
    store_url: str, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PROMPT, "user", _user(size))
    flag = {"crash": False}
    with FakeLLMServer(reply_tokens=400) as server, outlast.App(store_url) as app:
        talk = _conversation(app, server, flag)
        flag["crash"] = True
        with monkeypatch.context() as old:
            old.setattr(record, "encode", _old_encode)
            with pytest.raises(Crash):
                app.run(talk, run_id="old")
        old_entries = _calls(app, "old")
        # the old shapes: the whole record in a blob, or the request as a reference
        old_shape = b'{"__o":"ref","h":"' if size == SMALL else b'{"request":"{\\"__o\\":\\"ref'
        assert all(_text(e).startswith(old_shape) for e in old_entries), _text(old_entries[0])
        flag["crash"] = False
        answers = app.run(talk, run_id="old")
        assert server.count() == 3  # nothing sent again: all three answered from the journal
        assert [a.startswith("Reply to: question") for a in answers] == [True] * 3
        assert _calls(app, "old") == old_entries


@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_a_changed_prompt_is_described_from_an_old_entry(
    sqlite_url: str, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PROMPT, "user", _user(size))
    flag = {"crash": True}
    with FakeLLMServer(reply_tokens=400) as server, outlast.App(sqlite_url) as app:
        talk = _conversation(app, server, flag)
        with monkeypatch.context() as old:
            old.setattr(record, "encode", _old_encode)
            with pytest.raises(Crash):
                app.run(talk, run_id="changed")
        monkeypatch.setitem(PROMPT, "user", "customer-2")
        flag["crash"] = False
        with pytest.raises(outlast.NonDeterminismError) as err:
            app.run(talk, run_id="changed")
        assert server.count() == 3
    message = str(err.value)
    assert "user" in message and "'customer-2'" in message, message
