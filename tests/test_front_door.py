"""app.run/start/enqueue refuse wrong arguments and non-workflows before recording a run."""

from __future__ import annotations

import pytest

import outlast


def _app(url: str) -> tuple[outlast.App, object, object, object]:
    app = outlast.App(url)

    @app.step
    def fetch(x: int) -> int:
        return x

    @app.workflow
    def add(ctx: outlast.Context, a: int, b: int = 1, *, scale: int = 1) -> int:
        return (fetch(a) + b) * scale

    @app.workflow
    def bare(a: int) -> int:
        return a

    return app, fetch, add, bare


@pytest.mark.parametrize("verb", ["run", "start", "enqueue"])
def test_wrong_arguments_are_refused_and_the_run_id_stays_free(store_url: str, verb: str) -> None:
    app, _, add, _ = _app(store_url)
    call = getattr(app, verb)
    cases = [
        ((), {}, "missing a required argument: 'a'"),
        ((1, 2, 3), {}, "too many positional arguments"),
        ((1,), {"nope": 2}, "unexpected keyword argument 'nope'"),
    ]
    for args, kwargs, problem in cases:
        with pytest.raises(TypeError) as info:
            call(add, *args, run_id="r-1", **kwargs)
        text = str(info.value)
        assert "workflow 'add'" in text and problem in text and "no run was recorded" in text
        assert "declared as add(a, b=1, *, scale=1) (ctx is passed by outlast)" in text
    assert app.list_runs() == []
    # The id was not used up: the right call with it works.
    handle = call(add, 2, run_id="r-1", scale=3)
    result = handle if verb == "run" else handle.result(timeout=30)
    assert result == 9
    app.close()


def test_a_workflow_without_ctx_is_checked_too(sqlite_url: str) -> None:
    app, _, _, bare = _app(sqlite_url)
    with pytest.raises(TypeError, match=r"workflow 'bare' cannot take these arguments: missing"):
        app.run(bare)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'b'"):
        app.run("bare", 1, b=2)
    assert app.run(bare, 4) == 4
    app.close()


def test_misuse_says_what_is_wrong(sqlite_url: str) -> None:
    app, fetch, _, _ = _app(sqlite_url)

    def plain(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"that is a step, not a workflow"):
        app.run(fetch, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"app.enqueue\('fetch'\): that is a step"):
        app.enqueue(fetch, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"plain function, not a workflow; decorate it"):
        app.start(plain, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes a workflow .* got int 5"):
        app.run(5)  # type: ignore[arg-type]
    assert app.list_runs() == []
    app.close()


def test_run_async_checks_arguments(sqlite_url: str) -> None:
    import asyncio

    app, _, add, _ = _app(sqlite_url)
    with pytest.raises(TypeError, match=r"workflow 'add' cannot take"):
        asyncio.run(app.run_async(add))
    assert app.list_runs() == []
    app.close()
