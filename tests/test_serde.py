"""outlast.serde: round trips with type fidelity, blobs, recorded errors, and failure messages."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import random
import socket
import string
import subprocess
import sys
import uuid
from datetime import UTC, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from outlast import serde, serde_errors
from outlast.errors import RetryableError, SerializationError, StepFailed

# --- classes the values are made of (module level, so they can be found by name) ------------


class Color(enum.Enum):
    RED = "red"
    GREEN = (0, 255, 0)


class Perm(enum.Flag):
    R = 1
    W = 2
    X = 4


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Box:
    label: str
    content: Any
    corner: Point | None = None


@dataclasses.dataclass
class Basket:
    items: list[Any]
    total: float = 0.0
    seen: dict[str, int] = dataclasses.field(init=False, default_factory=dict)


class Pair(NamedTuple):
    left: Any
    right: Any


class Item(BaseModel):
    name: str
    qty: int
    price: Decimal
    tags: tuple[str, ...] = ()
    color: Color = Color.RED


class Order(BaseModel):
    id: uuid.UUID
    items: list[Item]
    placed: datetime
    where: Point | None = None
    meta: dict[str, int] = {}


class AppError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code


class Picky(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")  # args no longer match the constructor


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type at every level (NaN equals NaN, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        both_nan = math.isnan(a) and math.isnan(b)
        return both_nan or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, Decimal):
        return str(a) == str(b)  # also keeps 1.10 apart from 1.1, and never compares a NaN
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(map(same, a.items(), b.items()))
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if dataclasses.is_dataclass(a):
        return same(vars(a), vars(b))
    if isinstance(a, BaseModel):
        return same(dict(a), dict(b))
    if isinstance(a, datetime | time):
        return a == b and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    return bool(a == b)


# --- strategies -----------------------------------------------------------------------------

offsets = st.builds(timezone, st.timedeltas(-timedelta(hours=23, minutes=59), timedelta(hours=23)))
zones = st.sampled_from([ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")])
points = st.builds(Point, st.integers(), st.integers())
members = st.sampled_from([*Color, *Perm, Perm.R | Perm.W, *Level])
hashable_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary() | st.dates() | st.uuids() | st.decimals(allow_nan=False) | members | points
    | st.timedeltas() | st.datetimes(timezones=st.none() | st.just(UTC) | offsets)
)
hashables = st.recursive(
    hashable_leaves,
    lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3) | st.builds(Pair, c, c),
    max_leaves=6,
)
items = st.builds(
    Item, name=st.text(max_size=5), qty=st.integers(),
    price=st.decimals(places=2, allow_nan=False, allow_infinity=False),
    tags=st.lists(st.text(max_size=3), max_size=2).map(tuple), color=st.sampled_from(Color),
)
orders = st.builds(
    Order, id=st.uuids(), items=st.lists(items, max_size=2),
    placed=st.datetimes(timezones=st.none() | offsets), where=st.none() | points,
    meta=st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
leaves = (
    hashable_leaves | st.floats() | st.decimals() | st.binary().map(bytearray)
    | st.datetimes(timezones=zones) | st.times(timezones=st.none() | offsets) | orders
)
keys = st.text(max_size=4) | st.sampled_from(["__o", "v", "h", "c", "k"])
values = st.recursive(
    leaves,
    lambda c: (
        st.lists(c, max_size=5) | st.tuples(c) | st.tuples(c, c)
        | st.dictionaries(keys, c, max_size=4) | st.dictionaries(hashables, c, max_size=3)
        | st.sets(hashables, max_size=3) | st.frozensets(hashables, max_size=3)
        | st.builds(Box, st.text(max_size=4), c, st.none() | points) | st.builds(Pair, c, c)
        | st.builds(Basket, st.lists(c, max_size=3), st.floats())
    ),
    max_leaves=12,
)


# --- round trips ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_keeps_value_and_types(value: Any) -> None:
    data = serde.dumps(value)
    back = serde.loads(data)
    assert same(back, value)
    assert serde.dumps(back) == data  # canonical: what was read writes the same bytes


@settings(max_examples=150, deadline=None)
@given(values)
def test_round_trip_through_blobs(value: Any) -> None:
    # A tiny threshold and short chunks put nearly everything in blobs, several levels deep.
    with mock.patch.object(serde, "BLOB_THRESHOLD", 8), mock.patch.object(serde, "_CHUNK_MASK", 1):
        blobs: dict[str, bytes] = {}
        data = serde.dumps(value, blobs=blobs)
        assert same(serde.loads(data, blobs=blobs), value)
        assert same(serde.loads(data, blobs=lambda hs: {h: blobs[h] for h in hs}), value)


@pytest.mark.parametrize(
    "value",
    [
        (1, (2, 3)), {1: "a", (2, 3): b"x"}, {Level.LOW: 1}, float("inf"), -0.0, {1.5, "a"},
        datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
        time(1, 2, 3, 4, tzinfo=UTC), Decimal("-0"), Perm.R | Perm.X, Color.GREEN,
        Pair(Box("b", [1], Point(1, 2)), Basket([{1}])), "\ud800 lone surrogate", 10**200,
    ],
)
def test_round_trip_examples(value: Any) -> None:
    assert same(serde.loads(serde.dumps(value)), value)


def test_plain_json_is_written_as_plain_json() -> None:
    value = {"a": 1, "b": [1, 2.5, None, True, "x"]}
    assert serde.dumps(value) == b'{"a":1,"b":[1,2.5,null,true,"x"]}'


@pytest.mark.parametrize(
    "value",
    [{"__o": "t", "v": [1, 2]}, [{"__o": "ref", "h": "0" * 32}], {"__o": {"__o": "x"}, 1: 2}],
)
def test_user_dict_with_the_tag_key_round_trips(value: Any) -> None:
    data = serde.dumps(value)
    assert same(serde.loads(data), value)
    assert same(serde.loads(data, blobs={}), value)


def test_nan_round_trips() -> None:
    assert math.isnan(serde.loads(serde.dumps(float("nan"))))


def test_dataclass_is_restored_without_init_and_keeps_init_false_fields() -> None:
    basket = Basket([1])
    basket.seen["a"] = 1
    back = serde.loads(serde.dumps(basket))
    assert back == basket and back.seen == {"a": 1}


# --- blobs ----------------------------------------------------------------------------------


def test_growing_conversation_stores_linear_bytes() -> None:
    rng = random.Random(7)
    blobs: dict[str, bytes] = {}
    messages: list[dict[str, str]] = []
    payload = 0
    for i in range(200):
        text = "".join(rng.choices(string.ascii_letters + " ", k=2000))
        messages.append({"role": "user" if i % 2 else "assistant", "content": text})
        payload += len(json.dumps(messages[-1]))
        data = serde.dumps(messages, blobs=blobs)
        assert len(data) < 2 * serde.BLOB_THRESHOLD  # the row itself stays small
        if i % 50 == 0:
            assert serde.loads(data, blobs=blobs) == messages
    stored = sum(map(len, blobs.values()))
    assert stored < 1.5 * payload
    assert serde.loads(data, blobs=blobs) == messages


def test_fetcher_is_called_in_few_batches() -> None:
    blobs: dict[str, bytes] = {}
    value = {"history": [{"content": f"{i}" * 1500} for i in range(300)], "tag": "x" * 3000}
    data = serde.dumps(value, blobs=blobs)
    calls: list[list[str]] = []

    def fetch(hashes: list[str]) -> dict[str, bytes]:
        calls.append(hashes)
        return {h: blobs[h] for h in hashes}

    assert serde.loads(data, blobs=fetch) == value
    assert len(calls) <= 4
    assert sorted(h for call in calls for h in call) == sorted(blobs)  # each one fetched once


def test_equal_content_is_stored_once_and_small_parts_stay_inline() -> None:
    blobs: dict[str, bytes] = {}
    big = "a" * 5000
    data = serde.dumps([big, big, {"k": big}, "small", b"b" * 10], blobs=blobs)
    assert len(blobs) == 1 and list(blobs.values()) == [big.encode()]
    assert serde.loads(data, blobs=blobs) == [big, big, {"k": big}, "small", b"b" * 10]


def test_without_blobs_everything_is_inline() -> None:
    value = ["x" * 5000, list(range(2000)), {"k": "y" * 2000}]
    data = serde.dumps(value)
    assert b'"ref"' not in data and b'"lc"' not in data
    assert serde.loads(data) == value


def test_missing_or_corrupt_blob_is_named() -> None:
    blobs: dict[str, bytes] = {}
    data = serde.dumps(["x" * 5000], blobs=blobs)
    (h,) = blobs
    with pytest.raises(SerializationError, match=f"cannot read result.*{h}.*missing"):
        serde.loads(data, what="result", blobs={})
    with pytest.raises(SerializationError, match=f"{h}.*missing"):
        serde.loads(data, blobs=lambda hashes: {})
    with pytest.raises(SerializationError, match=f"{h} is corrupt"):
        serde.loads(data, blobs={h: b"y" * 5000})
    with pytest.raises(SerializationError, match="no blobs="):
        serde.loads(data)


# --- values that cannot be stored ----------------------------------------------------------


def test_unstorable_value_names_what_path_type_and_fix() -> None:
    with socket.socket() as sock, pytest.raises(SerializationError) as info:
        serde.dumps([1, 2, {"conn": sock}], what="result of step 'search'")
    err = info.value
    assert str(err).startswith("cannot store result of step 'search': result[2]['conn'] has type ")
    assert "socket.socket" in str(err) and "dataclasses or pydantic models" in str(err)
    assert (err.what, err.path, err.type_name) == (
        "result of step 'search'", "result[2]['conn']", "socket.socket",
    )


def _local_class() -> Any:
    @dataclasses.dataclass
    class Local:
        x: int

    return Local(1)


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        (lambda: 1, "value", "function"),
        ([Box("b", object())], "value[0].content", "object"),
        ({(1, 2): {object(): 1}}, "value[(1, 2)]<key <object", "object"),
        ({frozenset([1]), 2, Pair(1, iter([]))}, "value{...}[1]", "list_iterator"),
        (datetime(2020, 1, 1, tzinfo=ZoneInfo("UTC")).timetz(), "value", "datetime.time"),
        (_local_class(), "value", "Local"),
    ],
)
def test_unstorable_values(value: Any, path: str, type_name: str) -> None:
    with pytest.raises(SerializationError) as info:
        serde.dumps(value)
    assert info.value.path.startswith(path)
    assert type_name in info.value.type_name


def test_class_defined_in_a_function_says_define_it_at_module_level() -> None:
    with pytest.raises(SerializationError, match="define it at module level"):
        serde.dumps(_local_class())


def test_self_containing_value() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="contains itself"):
        serde.dumps(loop, what="result")


def test_argument_errors_name_args_and_kwargs() -> None:
    with pytest.raises(SerializationError, match=r"args\[1\] has type object"):
        serde.encode_args((1, object()), {}, what="arguments of step 'x'")
    with pytest.raises(SerializationError, match=r"kwargs\['conn'\]\[0\] has type function"):
        serde.encode_args((), {"conn": [lambda: 1]}, what="arguments of step 'x'")


# --- payloads that cannot be read -----------------------------------------------------------

WHAT = "recorded result of step 's'"


@pytest.mark.parametrize(
    "data",
    [
        serde.dumps({"a": [1, (2, 3)]})[:-3],  # truncated
        b"\xff\xfe\x00garbage", b"", b"{}extra", b'{"__o":"zz","v":1}', b'{"__o":"t","v":5}',
        b'{"__o":"dt","v":"yesterday"}', b'{"__o":"f","v":"1.5"}', b'{"__o":"d","v":[[1]]}',
    ],
)
def test_corrupt_payload_names_what(data: bytes) -> None:
    with pytest.raises(SerializationError, match=f"^cannot read {WHAT}: ") as info:
        serde.loads(data, what=WHAT)
    assert info.value.what == WHAT


def test_class_not_loaded_is_named_and_not_imported() -> None:
    data = b'{"__o":"dc","c":"json.tool:Thing","v":{}}'  # importable, but never imported here
    saved = sys.modules.pop("json.tool", None)
    try:
        with pytest.raises(SerializationError, match=r"json\.tool\.Thing.*import json\.tool"):
            serde.loads(data, what=WHAT)
        assert "json.tool" not in sys.modules
    finally:
        if saved is not None:
            sys.modules["json.tool"] = saved


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"__o":"dc","c":"os:getcwd","v":{}}', "not a dataclass"),
        (b'{"__o":"pd","c":"builtins:dict","v":{}}', "not a pydantic model"),
        (b'{"__o":"e","c":"builtins:int","n":"x"}', "not a Enum"),
        (b'{"__o":"nt","c":"builtins:tuple","v":[]}', "not a named tuple"),
        (f'{{"__o":"e","c":"{__name__}:Color","n":"PURPLE"}}'.encode(), "no member 'PURPLE'"),
        (f'{{"__o":"dc","c":"{__name__}:Point","v":{{"x":1,"y":2,"z":3}}}}'.encode(), "'z'"),
        (f'{{"__o":"dc","c":"{__name__}:Point","v":{{"x":1}}}}'.encode(), "required field 'y'"),
        (f'{{"__o":"pd","c":"{__name__}:Item","v":{{"qty":1}}}}'.encode(), "no longer validates"),
        (f'{{"__o":"dc","c":"{__name__}:Nope","v":{{}}}}'.encode(), "missing"),
    ],
)
def test_wrong_or_changed_class_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        serde.loads(data, what=WHAT)


def test_import_pulls_in_no_third_party_module() -> None:
    code = (
        "import sys; before = set(sys.modules); import outlast.serde; "
        "new = [sys.modules[m] for m in set(sys.modules) - before]; "
        "print(sorted(m.__name__ for m in new if 'site-packages' in str(getattr(m, '__file__', ''))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad", 3), KeyError("k"), TypeError(), OSError(2, "No such file"),
     AppError(404, "missing"), RuntimeError(Decimal("1.5"), (1, 2))],
)
def test_error_round_trip_rebuilds_class_and_args(exc: BaseException) -> None:
    back = serde_errors.load_error(serde_errors.dump_error(exc), step="s")
    assert type(back) is type(exc) and back.args == exc.args and str(back) == str(exc)


def test_outlast_error_keeps_its_attributes() -> None:
    back = serde_errors.load_error(serde_errors.dump_error(RetryableError("slow down", retry_after=2.5)))
    assert type(back) is RetryableError and back.retry_after == 2.5 and str(back) == "slow down"
    err = SerializationError("no", what="x", conn=object())  # what cannot be stored is left out
    back = serde_errors.load_error(serde_errors.dump_error(err))
    assert type(back) is SerializationError and back.what == "x" and not hasattr(back, "conn")


def test_error_class_not_loaded_becomes_step_failed() -> None:
    gone = type("Gone", (Exception,), {"__module__": "gone_module_xyz"})
    back = serde_errors.load_error(serde_errors.dump_error(gone("card declined")), step="charge")
    assert isinstance(back, StepFailed)
    assert (back.step, back.error_type, back.error_message) == (
        "charge", "gone_module_xyz.Gone", "card declined",
    )
    assert "step 'charge'" in str(back) and "gone_module_xyz.Gone: card declined" in str(back)


def test_error_whose_init_wants_other_args_is_rebuilt_without_calling_it() -> None:
    back = serde_errors.load_error(serde_errors.dump_error(Picky(1, 2)), step="s")
    assert type(back) is Picky and back.args == ("1-2",) and str(back) == "1-2"


def test_error_that_cannot_be_rebuilt_becomes_step_failed() -> None:
    group = ExceptionGroup("two failed", [ValueError("a"), KeyError("b")])  # args not storable
    back = serde_errors.load_error(serde_errors.dump_error(group), step="s")
    assert isinstance(back, StepFailed) and back.error_type == "builtins.ExceptionGroup"
    assert "could not be rebuilt" in str(back)


def test_error_with_unstorable_args_keeps_its_message() -> None:
    back = serde_errors.load_error(serde_errors.dump_error(ValueError(object(), "x")))
    assert type(back) is ValueError and "object object" in str(back)


@pytest.mark.parametrize("data", [b"garbage", b"[1]", b'{"c":1,"m":"x"}'])
def test_corrupt_error_payload(data: bytes) -> None:
    with pytest.raises(SerializationError, match="recorded error of step 's'"):
        serde_errors.load_error(data, step="s")


def test_missing_error_payload_is_step_failed() -> None:
    assert isinstance(serde_errors.load_error(b"null"), StepFailed)


# --- arguments and fingerprints -------------------------------------------------------------


def test_args_round_trip_with_types() -> None:
    args, kwargs = (1, (2, 3), {1: "x"}), {"k": {"a"}, "__o": Color.RED}
    back_args, back_kwargs = serde.decode_args(serde.encode_args(args, kwargs, what="a"))
    assert same(back_args, args) and same(back_kwargs, kwargs)
    with pytest.raises(SerializationError, match="not \\[args, kwargs\\]"):
        serde.decode_args(serde.dumps([1, 2]))


def test_fingerprint() -> None:
    assert serde.fingerprint(b"abc") == hashlib.blake2b(b"abc", digest_size=16).hexdigest()
    assert serde.fingerprint(b"abc") != serde.fingerprint(b"abd")


def test_fingerprint_of_a_set_is_the_same_in_every_process() -> None:
    code = (
        "from outlast import serde; "
        "print(serde.fingerprint(serde.encode_args(({'a', 'b', 'c', 'd', 'e'},), {})))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_packed_payloads_read_back_and_small_ones_stay_plain() -> None:
    big = {"text": "the same words again " * 100, "n": [1, 2, 3]}
    data = serde.dumps(big)
    packed = serde.pack(data)
    assert packed[:1] == b"x" and len(packed) < len(data) / 2
    assert serde.loads(packed) == big
    small = serde.dumps({"a": 1})
    assert serde.pack(small) == small
    noise = serde.dumps(bytes(range(256)) * 4)  # base64 of varied bytes: packs poorly
    assert serde.loads(serde.pack(noise)) == bytes(range(256)) * 4


def test_a_utc_offset_with_seconds_or_microseconds_survives() -> None:
    # fromisoformat dropped an offset's sub-minute part (found by the round-trip property)
    from datetime import datetime, time, timedelta, timezone

    for value in (
        datetime(2000, 1, 1, tzinfo=timezone(timedelta(microseconds=1))),
        datetime(2000, 1, 1, 12, tzinfo=timezone(-timedelta(hours=3, seconds=7))),
        time(1, 2, tzinfo=timezone(timedelta(seconds=30))),
    ):
        back = serde.loads(serde.dumps(value))
        assert back == value and back.utcoffset() == value.utcoffset()
    # whole-minute offsets keep the bytes they always had (fingerprints do not move)
    plain = datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert serde.dumps(plain) == b'{"__o":"dt","v":"2000-01-01T00:00:00+02:00"}'
