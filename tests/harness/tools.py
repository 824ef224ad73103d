"""System programs that some tests drive (Chromium, ChromeDriver, rclone).

They come from the distribution, not from pip: ``make test`` installs them where it may
(Debian's packages, as root), and CI sets ``RINGSTORE_REQUIRE_TOOLS=1`` so that a missing
one fails the run instead of quietly skipping what it tests.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ENV = "RINGSTORE_REQUIRE_TOOLS"


def require_tool(name: str) -> str:
    """The path of the program ``name`` on ``PATH``.

    Skips the test when it is missing, or fails it when ``RINGSTORE_REQUIRE_TOOLS=1``.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (Debian: see the Makefile's system-tools target)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)
