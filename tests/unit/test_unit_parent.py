"""A peer started tied to its parent stops when the parent is gone (``node.process.parent``).

Each case runs in a child process of its own: the call changes the calling process (Linux
sends it a SIGTERM when its parent ends), which the test runner must not be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from node.process.parent import STOP_WITH_PARENT, tied_to_parent

TIE = textwrap.dedent(
    """
    from node.process.parent import stop_with_parent
    print("tied" if stop_with_parent(lambda: print("stopped", flush=True)) else "not tied")
    """
)

# Waits for the SIGTERM a tied process gets once the one that started it is gone.
WAIT_FOR_TERM = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from node.process.parent import stop_with_parent
    marker = Path(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *_: (marker.write_text("term"), sys.exit(0)))
    assert stop_with_parent(lambda: marker.write_text("gone already"))
    Path(sys.argv[2]).write_text("tied")
    time.sleep(60)  # (a bound: the test kills what is left by pid)
    """
)

# The parent in between: starts the tied child, says its pid, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from node.process.parent import tied_to_parent
    command = [sys.executable, "-c", sys.argv[1], *sys.argv[2:]]
    child = subprocess.Popen(command, env=tied_to_parent())
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def run_tie(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != STOP_WITH_PARENT}
    if value is not None:
        env[STOP_WITH_PARENT] = value
    done = subprocess.run(
        [sys.executable, "-c", TIE],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tied_to_parent_names_this_process() -> None:
    assert tied_to_parent()[STOP_WITH_PARENT] == str(os.getpid())


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(2) is Linux's")
def test_a_child_of_the_process_named_is_tied_and_keeps_running() -> None:
    assert run_tie(str(os.getpid())) == "tied\n"  # this process started it


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(2) is Linux's")
def test_a_child_whose_named_parent_is_gone_already_stops_at_once() -> None:
    assert run_tie("1") == "stopped\ntied\n"  # its parent is this process, not pid 1


@pytest.mark.parametrize("value", [None, "", "not a pid"])
def test_a_child_started_otherwise_is_not_tied(value: str | None) -> None:
    assert run_tie(value) == "not tied\n"


def _gone(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(2) is Linux's")
def test_a_tied_child_gets_sigterm_when_its_parent_is_killed(tmp_path: Path) -> None:
    marker, ready = tmp_path / "marker", tmp_path / "ready"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, WAIT_FOR_TERM, str(marker), str(ready)],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while not ready.exists():  # polled with a deadline: the child ties itself first
            assert time.monotonic() < deadline, "the child never tied itself"
            time.sleep(0.02)
        assert not marker.exists()
        parent.kill()  # SIGKILL: the parent runs no code of its own on the way out
        parent.wait(timeout=30)
        while not marker.exists():
            assert time.monotonic() < deadline + 30, "no SIGTERM reached the child"
            time.sleep(0.02)
        assert marker.read_text() == "term"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        if parent.stdout is not None:
            parent.stdout.close()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
