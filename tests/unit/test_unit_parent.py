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

from node.process.parent import STOP_WITH_PARENT, environment_for_tied_child
from node.process.supervisor import PeerProcess, Supervisor
from tests.harness import process_gone

TIE = textwrap.dedent(
    """
    import os
    from node.process.parent import STOP_WITH_PARENT, named_parent, stop_with_parent
    parent = named_parent()
    assert STOP_WITH_PARENT not in os.environ  # taken out: not passed on
    if parent is None:
        print("not tied")
    else:
        print("tied" if stop_with_parent(parent, lambda: print("stopped", flush=True)) else "no")
    """
)

# Waits for the SIGTERM a tied process gets once the one that started it is gone.
WAIT_FOR_TERM = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from node.process.parent import named_parent, stop_with_parent
    marker, ready = sys.argv[1], sys.argv[2]

    def say(path, what):  # whole or not at all: the test reads it as soon as it exists
        Path(path + ".part").write_text(what)
        os.replace(path + ".part", path)

    signal.signal(signal.SIGTERM, lambda *_: (say(marker, "term"), sys.exit(0)))
    parent = named_parent()
    assert parent is not None and stop_with_parent(parent, lambda: say(marker, "gone already"))
    say(ready, "tied")
    time.sleep(60)  # (a bound: the test kills what is left by pid)
    """
)

# The parent in between: starts the tied child, says its pid, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from node.process.parent import environment_for_tied_child
    command = [sys.executable, "-c", sys.argv[1], *sys.argv[2:]]
    child = subprocess.Popen(command, env=environment_for_tied_child())
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


def test_environment_for_tied_child_names_this_process() -> None:
    assert environment_for_tied_child()[STOP_WITH_PARENT] == str(os.getpid())


def test_peers_are_tied_only_where_asked(tmp_path: Path) -> None:
    """``ringstore up`` ties its peers; the test harness's and a hand-made PeerProcess not."""
    assert not PeerProcess(tmp_path, "127.0.0.1", 1, [], []).stop_with_parent
    supervisor = Supervisor(2, tmp_path, 8000, "127.0.0.1", "info", discovery="none")
    assert all(peer.stop_with_parent for peer in supervisor.peers)


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(2) is Linux's")
def test_a_child_of_the_process_named_is_tied_and_keeps_running() -> None:
    assert run_tie(str(os.getpid())) == "tied\n"  # this process started it


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(2) is Linux's")
def test_a_child_whose_named_parent_is_gone_already_stops_at_once() -> None:
    # It names a process that is not its parent (this one's, alive), as an orphan would.
    assert run_tie(str(os.getppid())) == "stopped\ntied\n"


@pytest.mark.parametrize("value", [None, "", "not a pid"])
def test_a_child_started_otherwise_is_not_tied(value: str | None) -> None:
    assert run_tie(value) == "not tied\n"


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
        if child is not None and not process_gone(child):
            os.kill(child, signal.SIGKILL)
