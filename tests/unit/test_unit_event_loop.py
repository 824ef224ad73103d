"""Which event loop a peer runs on (``node.process.event_loop``)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from node.process import event_loop
from node.process.event_loop import chosen, run, running


async def _kind() -> str:
    await asyncio.sleep(0)
    return running()


def test_auto_is_uvloop_where_installed_and_each_loop_runs() -> None:
    pytest.importorskip("uvloop")  # a dependency where it has a build (not Windows)
    assert chosen("auto") == "uvloop"
    assert run(_kind(), chosen("auto")) == "uvloop"
    assert run(_kind(), chosen("asyncio")) == "asyncio"
    assert run(_kind(), chosen("uvloop")) == "uvloop"


def test_without_uvloop_auto_is_asyncio_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        event_loop.importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "uvloop" else real(name, *rest),
    )
    assert chosen("auto") == "asyncio"
    assert chosen("asyncio") == "asyncio"
    with pytest.raises(ValueError, match="uvloop is not installed"):
        chosen("uvloop")
    with pytest.raises(ValueError, match="unknown event loop"):
        chosen("trio")
