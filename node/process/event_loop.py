"""The event loop a peer runs on: uvloop where it is installed, else asyncio's own.

uvloop (MagicStack; asyncio's event loop API over libuv, in Cython) runs the same code with
less CPU per event: the loop itself, its transports and its callbacks are most of a small
request's cost here (``bench/small.py --profile``: no function of ours above 5% of a peer).
``bench/small.py --trees "asyncio=.@--event-loop=asyncio,uvloop=." --sizes 4K,1M --rounds 2
--seconds 10`` (7 peers and 16 clients sharing this 2-core VM, 2026-12-03; two runs, the first
against the tree before): 4 KiB PUT 532 -> 571 and 574 -> 628/s (server CPU 2.77 -> 2.54 and
2.62 -> 2.36 ms each), GET 965 -> 1,071 and 1,086 -> 1,183/s (1.46 -> 1.30, 1.32 -> 1.21 ms);
1 MiB PUT 69 -> 76 and 75 -> 81/s (22.8 -> 20.6, 21.1 -> 19.4 ms), GET 218 -> 244 and
230 -> 238/s (6.9 -> 6.1, 6.6 -> 6.2 ms). A 1 GiB PUT or GET moves within the machine's
spread, cold or warm (docs/architecture.md).

What it costs: 2-3.5 MiB more resident per peer (libuv and the extension; a 1 GiB PUT's
coordinator peaked at 85.3-85.5 MiB against 82.2-83.1 with 1 MiB blocks), and uvloop has
no ``loop.sendfile`` (``node.disk.sendfile`` sends files on either loop). ``--event-loop
asyncio`` keeps asyncio's loop, and the ``auto`` default falls back to it where uvloop is
not installed (it has no Windows build; ringstore does not ask for it there).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EVENT_LOOPS = ("auto", "uvloop", "asyncio")  # what ``--event-loop`` takes


def chosen(choice: str) -> str:
    """The loop ``choice`` (one of ``EVENT_LOOPS``) names: ``auto`` is uvloop where it is
    installed, else asyncio. Raises ValueError for uvloop where it is not installed, or an
    unknown choice."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {choice!r} (one of {', '.join(EVENT_LOOPS)})")
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise ValueError("--event-loop uvloop: uvloop is not installed")
    if choice == "auto":
        return "uvloop" if installed else "asyncio"
    return choice


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` to its end on a new loop of kind ``loop`` (``chosen``'s answer), as
    ``asyncio.run`` does (then close the loop, its async generators and its executor)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def running() -> str:
    """The running loop's kind, for the start's log line: ``uvloop`` or ``asyncio``."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
