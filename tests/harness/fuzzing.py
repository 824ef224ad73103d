"""What the fuzz suites share: a count of cases, a watch on ERROR logs, a loop driver.

``CASES`` counts requests sent by kind; ``tests/node/shared/conftest.py`` prints it at the
end of the session. ``ErrorLog`` collects every record logged at ERROR or above, by any
logger, while it is installed: a fuzz case may be refused, never logged as a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

CASES: Counter[str] = Counter()


class ErrorLog(logging.Handler):
    """Records at ERROR and above, from every logger, while used as a context manager."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorLog:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        logging.getLogger().removeHandler(self)

    def lines(self) -> list[str]:
        """Each record's message, with its traceback when it has one."""
        return [self.format(record) for record in self.records]


class LoopDriver:
    """Runs coroutines on the test's event loop from the thread hypothesis runs in.

    A hypothesis test drawn on the loop's own thread would stop the loop between examples
    (while hypothesis draws and shrinks): the peers would stop too, and the loop watchdog
    would see stalls that no code under test caused. So the fuzz runs ``given`` functions
    in a worker thread (``await driver.run(fuzz)``), and each example sends its requests to
    the running loop (``driver.call(coroutine)``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 60.0) -> None:
        self._loop = loop
        self._timeout = timeout

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self._timeout)

    async def run(self, fuzz: Callable[[], None]) -> None:
        await asyncio.to_thread(fuzz)
