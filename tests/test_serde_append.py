"""Appendable lists (outlast.serde_append): a growing conversation stored as a mountain range
reads back equal, costs each version about what it added, and leaves model-call fingerprints
as they were (runs recorded before keep replaying)."""

from __future__ import annotations

import json
import math
import random
import string
import zlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.llmkit import Crash, oai, run_twice

import outlast
from outlast import serde
from outlast.serde_append import LEAF, dumps_appendable
from outlast.testing import FakeLLMServer


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


_element = st.one_of(
    st.integers(),
    st.text(max_size=30),
    st.text(min_size=300, max_size=400),  # past the blob threshold in UTF-8 at 4 bytes a char
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                           "content": st.text(max_size=1200)}),
    st.lists(st.integers(), max_size=40),
)


@settings(max_examples=60, deadline=None)
@given(
    lists=st.dictionaries(st.text(max_size=8), st.lists(_element, max_size=70), max_size=3),
    extra=st.one_of(st.none(), st.text(max_size=50)),
)
def test_any_request_reads_back_equal(lists: dict[str, list[Any]], extra: str | None) -> None:
    value: dict[str, Any] = {**lists, "__extra": extra}
    blobs: dict[str, bytes] = {}
    data = dumps_appendable(value, what="request", blobs=blobs)
    assert serde.loads(data, blobs=blobs) == value
    assert serde.loads(data, blobs=lambda hashes: {h: blobs[h] for h in hashes if h in blobs}) == value


def test_values_that_are_not_plain_dicts_are_stored_as_dumps_stores_them() -> None:
    for value in ([1, 2, "x" * 2000], {1: "a"}, {"__o": "t"}, "text", None):
        blobs: dict[str, bytes] = {}
        again: dict[str, bytes] = {}
        assert dumps_appendable(value, what="v", blobs=blobs) == serde.dumps(value, blobs=again)
        assert blobs == again


def test_each_version_of_a_growing_conversation_costs_what_it_added() -> None:
    # 300 versions of a conversation of 2 KB messages, each stored as a model call stores its
    # request: the row (inline part) and the blobs that version is the first to need.
    rng = random.Random(7)
    messages: list[dict[str, str]] = []
    stored: set[str] = set()
    payload = rows = new_blobs = 0
    largest_row = 0
    for n in range(1, 301):
        messages.append({"role": "user" if n % 2 else "assistant", "content": _text(rng, 2048)})
        payload += len(json.dumps(messages[-1]))
        blobs: dict[str, bytes] = {}
        row = dumps_appendable({"model": "m", "messages": messages}, what="r", blobs=blobs)
        assert serde.loads(row, blobs=blobs)["messages"] == messages
        fresh = {h: b for h, b in blobs.items() if h not in stored}
        stored.update(fresh)
        rows += len(row)
        new_blobs += sum(map(len, fresh.values()))
        largest_row = max(largest_row, len(row))
    # The row holds a short list as it is (under 1 KB), else at most LEAF - 1 elements (a
    # reference each, ~90 bytes) and a hash per peak (at most log2(leaves) + 1).
    per_ref, per_hash = 95, 35
    bound = 60 + (LEAF - 1) * per_ref + per_hash * (math.log2(300 / LEAF) + 1)
    assert largest_row <= max(bound, serde.BLOB_THRESHOLD), largest_row
    # Linear: the messages once, plus the leaves and nodes (a few percent), plus the rows.
    assert new_blobs <= 1.1 * payload, (new_blobs, payload)
    assert rows + new_blobs <= 1.3 * payload, (rows, new_blobs, payload)


def test_the_ordinary_encoding_of_the_same_versions_costs_more() -> None:
    # What the mountain range is for, side by side (the same versions, blob bytes and rows).
    rng = random.Random(8)
    messages: list[dict[str, str]] = []
    seen: dict[str, set[str]] = {"ordinary": set(), "range": set()}
    cost = {"ordinary": 0, "range": 0}
    for n in range(1, 201):
        messages.append({"role": "user" if n % 2 else "assistant", "content": _text(rng, 2048)})
        request = {"model": "m", "messages": messages}
        for name in cost:
            blobs: dict[str, bytes] = {}
            if name == "ordinary":
                row = serde.dumps(request, blobs=blobs)
            else:
                row = dumps_appendable(request, what="r", blobs=blobs)
            fresh = {h: b for h, b in blobs.items() if h not in seen[name]}
            seen[name].update(fresh)
            cost[name] += len(zlib.compress(row)) + sum(map(len, fresh.values()))
    messages_once = sum(len(m["content"]) for m in messages)
    assert cost["range"] - messages_once < 0.6 * (cost["ordinary"] - messages_once), cost


def test_a_model_call_keeps_its_fingerprint_and_stores_the_conversation_appendable(
    store_url: str,
) -> None:
    rng = random.Random(9)
    app = outlast.App(store_url)
    flag = {"crash": False}
    with FakeLLMServer(lambda req: _text(rng, 1500)) as server:
        llm = oai(server)

        @app.workflow(name="talk")
        def talk(ctx: outlast.Context, turns: int) -> list[str]:
            messages: list[Any] = []
            for turn in range(turns):
                messages.append({"role": "user", "content": f"turn {turn}: " + "q" * 1200})
                reply = llm.chat.completions.create(model="gpt-4o", messages=messages)
                messages.append(reply.choices[0].message)
            if flag["crash"]:
                raise Crash
            return [m.content for m in messages[1::2]]

        answers = run_twice(app, talk, 12, run_id="talk", flag=flag)
        assert server.count() == 12  # the second execution replayed every call
        calls = [e for e in app.store.load_journal("talk") if e.kind == "llm"]
        assert len(calls) == 12
        output = calls[-1].output or b""
        request_text = json.loads(zlib.decompress(output) if output[:1] == b"x" else output)[
            "request"
        ]
        assert '"t":[' in request_text  # the conversation is a mountain range...
        recorded = serde.loads(request_text.encode(), blobs=app.store.get_blobs)
        assert len(recorded["messages"]) == 23
        assert recorded["messages"][-2]["content"] == answers[-2]
        # ...and the fingerprint is still that of the ordinary encoding of the request, so runs
        # recorded before this storage (their fingerprints taken the same way) replay unchanged
        ordinary = serde.dumps(recorded, blobs={})
        assert json.loads(calls[-1].meta or "{}")["fp"] == serde.fingerprint(ordinary)
    app.close()
