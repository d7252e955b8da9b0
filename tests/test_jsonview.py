"""outlast.jsonview: every storable value has a valid JSON view; the CLI's --json uses it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import namedtuple
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import outlast
from outlast import jsonview, serde
from test_serde import values

ROOT = Path(__file__).resolve().parent.parent


def strict(text: str) -> Any:
    """json.loads that refuses NaN/Infinity, as browsers and jq do."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Point:
    x: int
    y: float


class User(BaseModel):
    name: str
    tags: set[str]


Pair = namedtuple("Pair", "a b")


def test_tagged_forms() -> None:
    view = jsonview.to_json({
        (1, 2): "tuple key", 3: "int key", "plain": [math.nan, math.inf, -math.inf, -0.0],
        "big": [10**30, -(2**53) - 1, 2**53], "bytes": b"\x00\xff", "set": {3, 1, 2},
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "day": date(2026, 1, 2),
        "delta": timedelta(seconds=90), "id": UUID(int=1), "money": Decimal("1.10"),
        "point": Point(1, math.nan), "user": User(name="ann", tags={"b", "a"}),
        "pair": Pair(1, (2,)), "err": KeyError("k"), "bad": "a\ud800b",
    })
    items = {json.dumps(k): v for k, v in view["$map"]}
    assert items['{"$tuple": [1, 2]}'] == "tuple key" and items["3"] == "int key"
    assert items['"plain"'] == [{"$float": "NaN"}, {"$float": "Infinity"}, {"$float": "-Infinity"}, -0.0]
    assert items['"big"'] == [{"$int": str(10**30)}, {"$int": str(-(2**53) - 1)}, 2**53]
    assert items['"bytes"'] == {"$bytes": "AP8="}
    assert items['"set"'] == {"$set": [1, 2, 3]}
    assert items['"when"'] == {"$datetime": "2026-01-02T03:04:05+00:00"}
    assert items['"day"'] == {"$date": "2026-01-02"} and items['"delta"'] == {"$timedelta": 90.0}
    assert items['"id"'] == {"$uuid": str(UUID(int=1))} and items['"money"'] == {"$decimal": "1.10"}
    assert items['"point"'] == {"$dataclass": f"{__name__}:Point", "fields": {"x": 1, "y": {"$float": "NaN"}}}
    assert items['"user"'] == {"$model": f"{__name__}:User", "fields": {"name": "ann", "tags": {"$set": ["a", "b"]}}}
    assert items['"pair"'] == {"$namedtuple": f"{__name__}:Pair", "fields": {"a": 1, "b": {"$tuple": [2]}}}
    assert items['"err"'] == {"$error": "builtins:KeyError", "message": "'k'", "args": ["k"]}
    assert items['"bad"'] == {"$str": "a\\ud800b"}
    strict(json.dumps(view, allow_nan=False))


def test_user_dicts_never_read_as_tags() -> None:
    assert jsonview.to_json({"$ref": 1, "a": 2}) == {"$ref": 1, "a": 2}
    assert jsonview.to_json({"$bytes": "x"}) == {"$map": [["$bytes", "x"]]}


def test_huge_ints_and_deep_values_still_give_json() -> None:
    assert jsonview.to_json(10**5000)["$int"].startswith("0x")
    deep: Any = 1
    for _ in range(1000):
        deep = [deep]
    text = jsonview.dumps(deep)
    assert "$truncated" in text and strict(text)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(values)
def test_every_storable_value_has_valid_json(value: Any) -> None:
    for v in (value, serde.loads(serde.dumps(value))):
        text = json.dumps(jsonview.to_json(v), allow_nan=False, ensure_ascii=False)
        strict(text)
        text.encode("utf-8")  # no lone surrogate left: the text is valid UTF-8


@given(st.text())
def test_any_text_is_valid_utf8_json(text: str) -> None:
    jsonview.dumps({text: text}).encode("utf-8")


def test_cli_json_output_is_valid_json(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)

    @app.workflow
    def odd(ctx: outlast.Context) -> Any:
        return {(1, "a"): [math.nan, math.inf], "big": 10**30, "raw": b"\x00"}

    app.run(odd, run_id="odd-1")
    app.close()
    for args in (["show", "odd-1"], ["runs"]):
        out = subprocess.run(
            [sys.executable, "-m", "outlast.cli", *args, "--db", sqlite_url, "--json"],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        data = strict(out.stdout)
        run = data if isinstance(data, dict) else data[0]
        assert run["result"]["$map"][0] == [{"$tuple": [1, "a"]}, [{"$float": "NaN"}, {"$float": "Infinity"}]]
