"""Recorded exceptions replay as themselves: class, args, attributes, and the path a workflow
takes when it catches them; control flow and unloaded classes replay as StepFailed."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import outlast
from outlast import serde, serde_errors
from outlast.errors import Cancelled, LeaseLost, Pause, Release, StepFailed, Suspend
from outlast.serde_errors import RecordedRequest, RecordedResponse


class QuotaError(Exception):
    """A typical API error: keyword-only fields, so ``QuotaError(*e.args)`` fails."""

    def __init__(self, message: str, *, code: str, retry_in: float) -> None:
        super().__init__(message)
        self.code = code
        self.retry_in = retry_in


class Described(Exception):
    """``__str__`` built from attributes, and one attribute that cannot be stored."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field
        self.conn = object()

    def __str__(self) -> str:
        return f"field {self.field} is wrong"


class Crash(BaseException):
    """Stands in for the process dying after the fallback ran."""


def bad_request() -> openai.BadRequestError:
    request = httpx.Request(
        "POST", "https://api.example.test/v1/chat/completions?api-key=secret",
        headers={"Authorization": "Bearer sk-secret"},
    )
    body = {"message": "model not found", "type": "invalid_request_error", "param": "model",
            "code": "model_not_found"}
    response = httpx.Response(
        400, json={"error": body}, request=request,
        headers={"x-request-id": "req_1", "retry-after": "3", "set-cookie": "session=abc"},
    )
    return openai.BadRequestError("Error code: 400 - model not found", response=response,
                                  body=body)


def replay(exc: BaseException) -> BaseException:
    return serde_errors.load_error(serde_errors.dump_error(exc), step="s")


# --- the class and its attributes -----------------------------------------------------------


def test_error_whose_init_takes_keywords_keeps_class_and_attributes() -> None:
    back = replay(QuotaError("out of quota", code="quota", retry_in=2.5))
    assert type(back) is QuotaError
    assert (back.args, str(back), back.code, back.retry_in) == (
        ("out of quota",), "out of quota", "quota", 2.5,
    )


def test_str_from_attributes_survives_and_unstorable_attributes_are_left_out() -> None:
    back = replay(Described("email"))
    assert type(back) is Described and str(back) == "field email is wrong"
    assert not hasattr(back, "conn")


def test_openai_error_replays_as_itself_with_what_handlers_read() -> None:
    back = replay(bad_request())
    assert type(back) is openai.BadRequestError and isinstance(back, openai.APIStatusError)
    assert str(back) == "Error code: 400 - model not found"
    assert (back.status_code, back.code, back.type, back.param, back.request_id) == (
        400, "model_not_found", "invalid_request_error", "model", "req_1",
    )
    assert back.message == "Error code: 400 - model not found"
    assert back.body == {"message": "model not found", "type": "invalid_request_error",
                         "param": "model", "code": "model_not_found"}
    response = back.response
    assert isinstance(response, RecordedResponse)
    assert response.status_code == 400 and response.is_error and not response.is_success
    assert response.json()["error"]["code"] == "model_not_found"
    assert response.headers["Retry-After"] == "3" and response.headers.get("x-request-id")
    assert "set-cookie" not in response.headers  # never kept: it may be a session
    assert isinstance(back.request, RecordedRequest) and back.request.method == "POST"
    # Credentials in the query or in headers are not stored.
    assert back.request.url == "https://api.example.test/v1/chat/completions"
    stored = serde_errors.dump_error(bad_request())
    assert b"secret" not in stored and b"session=abc" not in stored


def test_oserror_keeps_errno_strerror_and_filename() -> None:
    exc = FileNotFoundError(errno.ENOENT, "No such file or directory", "/tmp/x.json")
    back = replay(exc)
    assert type(back) is FileNotFoundError
    assert (back.errno, back.strerror, back.filename) == (
        errno.ENOENT, "No such file or directory", "/tmp/x.json",
    )
    assert str(back) == str(exc)


def test_oserror_subclass_with_its_own_init_keeps_errno() -> None:
    class_src = '''
class ConfigMissing(OSError):
    def __init__(self, path):
        super().__init__(2, "config missing", path)
'''
    namespace: dict[str, Any] = {"__name__": __name__}
    exec(textwrap.dedent(class_src), namespace)
    cls = namespace["ConfigMissing"]
    globals()["ConfigMissing"] = cls  # found by name, like a module-level class
    try:
        back = replay(cls("/etc/app.toml"))
        assert type(back) is cls and isinstance(back, OSError)
        assert (back.errno, back.strerror, back.filename) == (2, "config missing", "/etc/app.toml")
    finally:
        del globals()["ConfigMissing"]


# --- control flow is never rebuilt ----------------------------------------------------------


CONTROL = [
    ("builtins:SystemExit", [0]),
    ("builtins:KeyboardInterrupt", []),
    ("builtins:GeneratorExit", []),
    ("outlast.errors:Suspend", ["hibernate"]),
    ("outlast.errors:Cancelled", ["cancel"]),
    ("outlast.errors:Release", ["release"]),
    ("outlast.errors:Pause", ["pause"]),
    ("outlast.errors:LeaseLost", ["lost"]),
    ("outlast.errors:ContinueAsNew", ["again"]),
    ("outlast.errors:Interrupt", ["x"]),
    ("outlast.serde:_Unsupported", ["x"]),
]


def control_row(name: str, args: list[Any]) -> bytes:
    return serde.dumps({"c": name, "m": "stored by someone", "a": tuple(args)})


@pytest.mark.parametrize(("name", "args"), CONTROL)
def test_control_flow_in_a_recorded_error_loads_as_step_failed(name: str, args: list[Any]) -> None:
    back = serde_errors.load_error(control_row(name, args), step="s")
    assert type(back) is StepFailed
    assert back.error_type == name.replace(":", ".") and back.error_message == "stored by someone"
    assert name.replace(":", ".") in str(back) and "only Exception subclasses" in str(back)
    assert not isinstance(back, SystemExit | KeyboardInterrupt | Suspend | Cancelled | Release
                          | Pause | LeaseLost)


def test_real_control_flow_exceptions_dumped_also_load_as_step_failed() -> None:
    for exc in (SystemExit(3), KeyboardInterrupt(), Cancelled("c"), Suspend("s", wake_at=1.0)):
        assert type(replay(exc)) is StepFailed


def catching_app(url: str, seen: list[str]) -> tuple[outlast.App, Any]:
    app = outlast.App(url)

    @app.step
    def step_one() -> str:
        raise ValueError("first")

    @app.workflow
    def wf() -> str:
        try:
            return step_one()
        except ValueError:
            seen.append("ValueError")
            raise Crash() from None  # the process "dies" after the failure is recorded

    return app, wf


def overwrite_failed_entry(url: str, run_id: str, output: bytes) -> int:
    """What someone with write access to the database does: rewrite a recorded failure."""
    sql = "UPDATE {t} SET output = %s WHERE run_id = %s AND status = 'failed'"
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
            return db.execute(sql.format(t="outlast_journal").replace("%s", "?"),
                              (output, run_id)).rowcount
    import psycopg

    base, schema = url.split("?schema=")
    with psycopg.connect(base) as conn:
        return conn.execute(sql.format(t=f"{schema}.journal"), (output, run_id)).rowcount


@pytest.mark.parametrize("name", ["builtins:SystemExit", "builtins:KeyboardInterrupt",
                                  "outlast.errors:Suspend", "outlast.errors:Cancelled"])
def test_recorded_control_flow_fails_the_run_and_does_not_exit(store_url: str,
                                                               name: str) -> None:
    """A journal row rewritten by someone with database access to name SystemExit (or
    outlast's control flow): the resumed run gets StepFailed, a normal failure it can catch
    or fail with, instead of exiting the process or hibernating forever."""
    seen: list[str] = []
    app, wf = catching_app(store_url, seen)
    with pytest.raises(Crash):
        app.run(wf, run_id="r1")
    app.close()
    assert overwrite_failed_entry(store_url, "r1", control_row(name, [0])) == 1
    again, wf2 = catching_app(store_url, seen)
    try:
        with pytest.raises(StepFailed, match=f"{name.replace(':', '.')}: stored by someone"):
            again.run(wf2, run_id="r1")
        assert again.get_run("r1").status == "failed"
    finally:
        again.close()
    assert seen == ["ValueError"]  # StepFailed is no ValueError: the handler did not run


# --- a workflow that catches the error takes the same path on replay ------------------------


def build(url: str, make_error: Callable[[], Exception], catch: type[Exception],
          path: list[str], crash: list[bool], calls: list[str]) -> tuple[outlast.App, Any]:
    app = outlast.App(url)

    @app.step
    def call_api() -> str:
        calls.append("call_api")
        raise make_error()

    @app.step
    def fallback(detail: str) -> str:
        calls.append("fallback")
        return f"fallback: {detail}"

    @app.step
    def checkpoint() -> None:
        if crash:
            crash.pop()
            raise Crash()

    @app.workflow
    def agent() -> str:
        try:
            return call_api()
        except catch as exc:
            detail = describe(exc)
            path.append(f"caught {type(exc).__name__}: {detail}")
            result = fallback(detail)
            checkpoint()
            return result

    return app, agent


def describe(exc: Exception) -> str:
    if isinstance(exc, QuotaError):
        return f"{exc.code} in {exc.retry_in}"
    if isinstance(exc, openai.APIStatusError):
        return f"{exc.status_code} {exc.code} {exc.response.json()['error']['param']}"
    return str(exc)


@pytest.mark.parametrize(
    ("make_error", "catch", "detail"),
    [
        (lambda: QuotaError("quota", code="insufficient_quota", retry_in=60.0), QuotaError,
         "insufficient_quota in 60.0"),
        (bad_request, openai.BadRequestError, "400 model_not_found model"),
    ],
    ids=["custom", "openai"],
)
def test_caught_error_takes_the_same_path_after_a_crash(
    store_url: str, make_error: Callable[[], Exception], catch: type[Exception], detail: str
) -> None:
    path: list[str] = []
    calls: list[str] = []
    app, agent = build(store_url, make_error, catch, path, [True], calls)
    with pytest.raises(Crash):
        app.run(agent, run_id="r1")
    app.close()
    first = list(path)
    assert first == [f"caught {catch.__name__}: {detail}"]
    # A fresh App (another process, as far as outlast knows) replays the recorded error.
    fresh, agent2 = build(store_url, make_error, catch, path, [], calls)
    try:
        assert fresh.run(agent2, run_id="r1") == f"fallback: {detail}"
    finally:
        fresh.close()
    assert path == first * 2  # the same branch, with the same details
    assert calls == ["call_api", "fallback"]  # replayed, not run again


# --- a class that is not loaded -------------------------------------------------------------


def test_error_class_loaded_only_in_another_process_is_step_failed(tmp_path: Path) -> None:
    module = tmp_path / "far_away_errors.py"
    module.write_text("class Far(Exception):\n    def __init__(self, m, *, code):\n"
                      "        super().__init__(m)\n        self.code = code\n")
    code = ("import sys; from outlast import serde_errors; import far_away_errors as f; "
            "sys.stdout.buffer.write(serde_errors.dump_error(f.Far('gone', code=7)))")
    data = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          check=True, timeout=60).stdout
    back = serde_errors.load_error(data, step="s")
    assert type(back) is StepFailed and back.error_type == "far_away_errors.Far"
    assert "far_away_errors" not in sys.modules


class NeedsClient(Exception):
    """``__str__`` reads an attribute that cannot be stored."""

    def __init__(self, client: object) -> None:
        super().__init__("client failed")
        self.client = client

    def __str__(self) -> str:
        return f"client {self.client.name} failed"  # type: ignore[attr-defined]


def test_error_whose_str_needs_what_was_not_stored_is_step_failed() -> None:
    client = type("Client", (), {"name": "db"})()
    back = replay(NeedsClient(client))
    assert type(back) is StepFailed and back.error_message == "client db failed"
