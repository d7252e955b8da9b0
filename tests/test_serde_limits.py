"""Stored data that fights back: serde.loads and load_error on hostile or damaged bytes give a
value or a SerializationError, within bounded memory and time, and never import or run code."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import types
import zlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlast import serde, serde_errors
from outlast.errors import SerializationError, UnreadableValue


@dataclasses.dataclass
class Point:
    x: int
    y: int


def _blob(text: str, blobs: dict[str, bytes]) -> str:
    data = text.encode()
    blobs[h := serde.fingerprint(data)] = data
    return h


# --- blob references that expand (#13.8) ----------------------------------------------------


def test_four_kb_of_references_claiming_a_billion_items_is_refused() -> None:
    """An lc node names one chunk many times, and nests: 24 hashes per level, 5 levels, 128
    items per chunk claim 128 * 24**5 = 1.02e9 items from about 4.5 KB of stored bytes."""
    blobs: dict[str, bytes] = {}
    h = _blob(json.dumps([0] * 128, separators=(",", ":")), blobs)
    for _ in range(4):
        h = _blob(json.dumps({"__o": "lc", "h": [h] * 24}, separators=(",", ":")), blobs)
    row = json.dumps({"__o": "lc", "h": [h] * 24}, separators=(",", ":")).encode()
    assert len(row) + sum(map(len, blobs.values())) < 5000
    with pytest.raises(SerializationError, match="MAX_DECODED_ITEMS") as info:
        serde.loads(row, what="result of step 'x'", blobs=blobs)
    assert "result of step 'x'" in str(info.value)
    # The same through a fetcher (the store's path), which prefetches level by level.
    with pytest.raises(SerializationError, match="MAX_DECODED_ITEMS"):
        serde.loads(row, blobs=lambda wanted: {k: blobs[k] for k in wanted if k in blobs})


def test_one_large_blob_named_many_times_is_refused() -> None:
    blobs: dict[str, bytes] = {}
    h = _blob("a" * 100_000, blobs)
    def row(copies: int) -> bytes:
        return json.dumps([{"__o": "ref", "h": h, "k": "s"}] * copies).encode()

    with mock.patch.object(serde, "MAX_DECODED_BYTES", 10_000_000):
        with pytest.raises(SerializationError, match="MAX_DECODED_BYTES"):
            serde.loads(row(200), blobs=blobs)
        assert serde.loads(row(50), blobs=blobs) == ["a" * 100_000] * 50  # under the cap


def test_real_values_with_shared_blobs_read_back_under_the_caps() -> None:
    message = {"role": "user", "content": "x" * 5000}
    value = {"turns": [message] * 300, "again": [message] * 300}
    blobs: dict[str, bytes] = {}
    assert serde.loads(serde.dumps(value, blobs=blobs), blobs=blobs) == value


# --- packed rows (#13.9) --------------------------------------------------------------------


def _packed_spaces(size: int) -> bytes:
    """A valid packed row whose JSON is ``size`` bytes, built without holding it in memory."""
    deflate = zlib.compressobj(6)
    parts = [deflate.compress(b"[")]
    block = b" " * 2**20
    for _ in range(size // len(block)):
        parts.append(deflate.compress(block))
    parts += [deflate.compress(b"]"), deflate.flush()]
    return b"".join(parts)


def test_packed_row_beyond_the_cap_is_refused() -> None:
    row = _packed_spaces(serde.MAX_UNPACKED_BYTES + 2**20)
    assert row[:1] == b"x" and len(row) < 200_000  # 65 MB of JSON in ~65 KB
    with pytest.raises(SerializationError, match="MAX_UNPACKED_BYTES"):
        serde.loads(row, what="result of step 'x'")


def test_packed_row_under_the_cap_reads_back() -> None:
    assert serde.loads(_packed_spaces(3 * 2**20)) == []


@pytest.mark.parametrize("cut", [10, -4])
def test_truncated_packed_row_is_a_serialization_error(cut: int) -> None:
    row = serde.pack(serde.dumps(["a"] * 400))
    assert row[:1] == b"x"
    with pytest.raises(SerializationError, match="corrupt"):
        serde.loads(row[:cut])


# --- class names are looked up, never imported (#13.10) -------------------------------------


@pytest.fixture
def lazy_module() -> Iterator[list[str]]:
    """A loaded module with a PEP 562 __getattr__ that records what it was asked for."""
    asked: list[str] = []
    module = types.ModuleType("lazy_mod_for_serde")

    def module_getattr(name: str) -> Any:
        asked.append(name)
        return Point

    module.__getattr__ = module_getattr  # type: ignore[method-assign]
    sys.modules[module.__name__] = module
    yield asked
    del sys.modules[module.__name__]


def test_lookup_never_calls_a_module_getattr(lazy_module: list[str]) -> None:
    with pytest.raises(UnreadableValue):
        serde.loads(b'{"__o":"dc","c":"lazy_mod_for_serde:Point","v":{"x":1,"y":2}}')
    err = serde_errors.load_error(b'{"c":"lazy_mod_for_serde:Boom","m":"x"}', step="s")
    assert type(err).__name__ == "StepFailed"
    assert lazy_module == []


def test_lookup_never_runs_code_of_a_proxy_in_sys_modules() -> None:
    asked: list[str] = []

    class Proxy:  # like the lazy objects some libraries put into sys.modules
        def __getattribute__(self, name: str) -> Any:
            asked.append(name)
            return Point

    sys.modules["proxy_mod_for_serde"] = Proxy()  # type: ignore[assignment]
    try:
        with pytest.raises(UnreadableValue):
            serde.loads(b'{"__o":"dc","c":"proxy_mod_for_serde:Point","v":{"x":1,"y":2}}')
        with pytest.raises(UnreadableValue):
            serde.loads(b'{"__o":"dc","c":"proxy_mod_for_serde:a.Point","v":{"x":1,"y":2}}')
    finally:
        del sys.modules["proxy_mod_for_serde"]
    assert asked == []


def test_pydantic_lazy_names_are_not_imported() -> None:
    code = (
        "import sys, pydantic; from outlast import serde\n"
        "assert 'pydantic.deprecated.tools' not in sys.modules\n"
        "try:\n"
        "    serde.loads(b'{\"__o\":\"pd\",\"c\":\"pydantic:parse_obj_as\",\"v\":{}}')\n"
        "except serde.UnreadableValue as e:\n"
        "    print('refused', e.type_name)\n"
        "print('imported' if 'pydantic.deprecated.tools' in sys.modules else 'not imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["refused pydantic.parse_obj_as", "not imported"]


def test_class_not_found_is_unreadable_value_naming_the_type() -> None:
    data = b'{"__o":"dc","c":"not_imported_anywhere_mod:Params","v":{}}'
    with pytest.raises(UnreadableValue, match="import not_imported_anywhere_mod") as info:
        serde.loads(data, what="arguments of run 'r1'")
    assert info.value.type_name == "not_imported_anywhere_mod.Params"
    assert info.value.what == "arguments of run 'r1'"
    assert isinstance(info.value, SerializationError)
    # A name that exists but is the wrong kind is corrupt data, not an unreadable value.
    with pytest.raises(SerializationError) as wrong:
        serde.loads(b'{"__o":"dc","c":"os:getcwd","v":{}}')
    assert not isinstance(wrong.value, UnreadableValue)


# --- fuzz -----------------------------------------------------------------------------------

TAGS = ["t", "d", "s", "fs", "f", "b", "ba", "dt", "ti", "da", "td", "u", "D", "e", "nt", "dc",
        "pd", "ref", "lc", "zz"]
CLASSES = [f"{__name__}:Point", "builtins:SystemExit", "builtins:int", "pydantic:parse_obj_as",
           "os:system", "__main__:Params", "nope_mod:Nope", "enum:Enum", "outlast.errors:Suspend"]
ERRORS = ["builtins:ValueError", "builtins:OSError", "builtins:SystemExit",
          "builtins:UnicodeDecodeError", "builtins:ExceptionGroup", "builtins:KeyError",
          "outlast.errors:RetryableError", "outlast.errors:Suspend", "openai:BadRequestError",
          "nope_mod:Nope", "builtins:print"]
LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
          | st.text(max_size=12))


def trees(hashes: list[str]) -> st.SearchStrategy[Any]:
    """JSON-ish values with outlast's tags, referring to ``hashes`` (and to a missing one)."""
    hash_ = st.sampled_from([*hashes, "0" * 32])

    def tagged(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.fixed_dictionaries(
            {"__o": st.sampled_from(TAGS)},
            optional={"v": children, "c": st.sampled_from(CLASSES), "n": st.text(max_size=4),
                      "h": st.lists(hash_, max_size=30) | hash_, "k": st.sampled_from("sbx"),
                      "z": st.sampled_from(["UTC", "Europe/Paris", "../../etc/passwd", "x"]),
                      "f": st.integers(0, 1)},
        )

    return st.recursive(
        LEAVES,
        lambda ch: st.lists(ch, max_size=5) | st.dictionaries(st.text(max_size=4), ch, max_size=4)
        | tagged(ch),
        max_leaves=25,
    )


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=True)


@st.composite
def stores(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes]]:
    """A payload and blobs that may refer to each other (later blobs to earlier ones)."""
    blobs: dict[str, bytes] = {}
    for _ in range(draw(st.integers(0, 4))):
        _blob(_text(draw(trees(list(blobs)))), blobs)
    return _text(draw(trees(list(blobs)))).encode(), blobs


def must_load(data: bytes, blobs: Any = None) -> None:
    with contextlib.suppress(SerializationError):
        serde.loads(data, blobs=blobs)


def must_load_error(data: bytes) -> None:
    try:
        err = serde_errors.load_error(data, step="s")
    except SerializationError:
        return
    assert isinstance(err, Exception)  # never SystemExit, KeyboardInterrupt or control flow


FUZZ = settings(max_examples=100, deadline=timedelta(seconds=5),
                suppress_health_check=[HealthCheck.too_slow])
FUZZ_SMALL = settings(FUZZ, max_examples=40)


def small_caps() -> Any:
    return mock.patch.multiple(serde, MAX_DECODED_ITEMS=20_000, MAX_DECODED_BYTES=2_000_000,
                               MAX_UNPACKED_BYTES=2_000_000)


@FUZZ
@given(st.binary(max_size=2048) | st.binary(max_size=512).map(lambda b: zlib.compress(b)))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    with small_caps():
        must_load(data)
        must_load(data, blobs={})
        must_load_error(data)


@FUZZ_SMALL
@given(stores())
def test_fuzz_tagged_json_with_blobs(case: tuple[bytes, dict[str, bytes]]) -> None:
    data, blobs = case
    with small_caps():
        must_load(data)
        must_load(data, blobs=blobs)
        must_load(data, blobs=lambda wanted: {h: blobs[h] for h in wanted if h in blobs})
        must_load(serde.pack(data) if len(data) > 600 else zlib.compress(data), blobs=blobs)


@FUZZ_SMALL
@given(st.fixed_dictionaries(
    {"c": st.sampled_from(ERRORS), "m": st.text(max_size=10)},
    optional={"a": trees([]), "x": trees([]), "h": trees([]), "os": trees([]), "k": trees([])},
))
def test_fuzz_recorded_errors(doc: dict[str, Any]) -> None:
    with small_caps():
        must_load_error(_text(doc).encode())
        must_load_error(_text({**doc, "a": {"__o": "t", "v": doc.get("a")}}).encode())
