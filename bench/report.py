"""What every benchmark shares: reading a process's CPU and memory from /proc, and saving
its figures as JSON + markdown under ``bench/results/`` with a note on the machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds ``pid`` has used so far (proc(5): fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    return sum(cpu_times(pid))


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """``pid``'s resident memory now (``VmRSS``) or at its peak (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


PROFILERS = ("py-spy", "py-spy-gil", "perf")


def _profiler_command(profiler: str, pid: int, out: Path, label: str) -> list[str]:
    """The command that samples ``pid`` with ``profiler`` (one of ``PROFILERS``) into
    ``out/LABEL-PID.*`` until it gets SIGINT."""
    if profiler == "perf":
        # call graphs of every thread at 499 Hz
        data = out / f"{label}-{pid}.perf.data"
        return ["perf", "record", "-g", "-F", "499", "-p", str(pid), "-o", str(data)]
    # py-spy (pip install py-spy) may be in this environment's bin/ without it being on PATH
    beside = Path(sys.executable).parent / "py-spy"
    spy = str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"
    record = [spy, "record", "--format", "raw", "--nonblocking", "--rate", "200"]
    if profiler == "py-spy-gil":
        record.append("--gil")
    return [*record, "--pid", str(pid), "--output", str(out / f"{label}-{pid}.txt")]


@contextlib.asynccontextmanager
async def profiled(
    pids: Iterable[int], out: Path | None, label: str, profiler: str = "py-spy"
) -> AsyncIterator[None]:
    """Sample each of ``pids`` while the block runs, into ``out/LABEL-PID.*``; nothing
    when ``out`` is None. ``profiler``:

    - ``py-spy``: raw collapsed stacks at 200 Hz, never pausing the process (``.txt``;
      summarise them with ``python bench/stacks.py``). It counts a thread that is runnable
      but waiting for a core as busy, at the line it was preempted on: on a machine whose
      cores are all in use, a ``transport.write`` that wakes the receiving peer shows
      there as 15-18% "self" time that is not this process's CPU.
    - ``py-spy-gil``: only the thread holding the GIL (``--gil``): I/O and lock waits drop out.
    - ``perf``: ``perf record -g`` (``.perf.data``; root or a permissive
      ``perf_event_paranoid``), CPU time only: how it splits between the interpreter,
      native libraries (hashing, coding, the event loop, libc's copies) and the kernel.
      Read it with ``perf report -i FILE --no-children --sort dso,sym``. Which Python
      functions spend it is py-spy's to say: perf names them (Python 3.12+,
      ``PYTHONPERFSUPPORT=1``) only where it can walk their callers, and this machine's
      Python builds have no frame pointers to walk.

    Each profiler is stopped by its own pid (SIGINT makes both write what they sampled)
    when the block ends."""
    if out is None:
        yield
        return
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    profilers = [
        await asyncio.create_subprocess_exec(
            *_profiler_command(profiler, pid, out, label),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for pid in pids
    ]
    try:
        yield
    finally:
        for process in profilers:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        for process in profilers:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")  # cgroup v1's memory controller
CGROUP_V2 = Path("/sys/fs/cgroup")


class MemoryGroup:
    """A memory cgroup of its own (``memory_group``): ``add`` moves a process into it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.procs = path / "cgroup.procs"  # a pid written here moves that process in

    def add(self, pid: int) -> None:
        self.procs.write_text(str(pid))


@contextlib.contextmanager
def memory_group(limit_mib: int) -> Iterator[MemoryGroup]:
    """A memory cgroup limited to ``limit_mib`` MiB, for the resident memory of the
    processes added to it (and of their children started after) and the page cache they
    fill together, while the block runs.

    Why: on these VMs a page the guest has not used lately costs ~5 ms of system CPU per
    MiB at its first touch (free page reporting; ``bench/page_cache.py``), so a benchmark
    that writes into a page cache growing into fresh memory measures that more than the
    code. A limit makes the kernel reclaim and reuse the group's own pages, as on a server
    whose memory has long been full. cgroup v1 (``memory.limit_in_bytes``) or v2
    (``memory.max``, with the memory controller enabled at the root); needs root. The
    processes still in it at the end go back to the root group, then it is removed.
    """
    if (CGROUP_V1_MEMORY / "memory.limit_in_bytes").exists():
        root, limit_file = CGROUP_V1_MEMORY, "memory.limit_in_bytes"
    elif "memory" in _read(CGROUP_V2 / "cgroup.subtree_control").split():
        root, limit_file = CGROUP_V2, "memory.max"
    else:
        raise SystemExit("a memory limit needs cgroup v1's memory controller or v2's, as root")
    path = root / f"ringstore-bench-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    try:
        (path / limit_file).write_text(str(limit_mib << 20))
        yield MemoryGroup(path)
    finally:
        for pid in _read(path / "cgroup.procs").split():
            with contextlib.suppress(ProcessLookupError):  # (it ended meanwhile)
                (root / "cgroup.procs").write_text(pid)
        path.rmdir()


@contextlib.contextmanager
def memory_limited(pids: Iterable[int], limit_mib: int | None) -> Iterator[MemoryGroup | None]:
    """``pids`` in a ``memory_group`` of ``limit_mib`` MiB while the block runs (the group,
    for processes started later); nothing when ``limit_mib`` is None."""
    if limit_mib is None:
        yield None
        return
    with memory_group(limit_mib) as group:
        for pid in pids:
            group.add(pid)
        yield group


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def cpu_list(text: str) -> set[int]:
    """The CPUs of a cpuset list (cpuset(7)'s "List format": ``0``, ``0-1``, ``0,2-3``)."""
    cpus: set[int] = set()
    for item in text.split(","):
        first, _, last = item.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def pin(pid: int, cpus: set[int]) -> None:
    """Let every thread of ``pid`` run on ``cpus`` only (``taskset -a -p``); threads it
    starts later inherit that from the thread that starts them (sched_setaffinity(2) sets one
    thread's mask)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def machine() -> str:
    """One line on where the figures were measured."""
    return (
        f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )


def save(name: str, rows: list[dict[str, object]], table: str, out: Path = RESULTS) -> Path:
    """Write ``rows`` (JSON) and ``table`` (markdown, under the machine line) as
    ``out/NAME-STAMP.{json,md}``; return the markdown file's path."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"{name}-{stamp}.json").write_text(json.dumps({"machine": machine(), "rows": rows}))
    markdown = out / f"{name}-{stamp}.md"
    markdown.write_text(f"{machine()}\n\n{table}\n")
    return markdown


def run_benchmark(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, with SIGTERM stopping it as Ctrl-C does: the benchmark's
    ``finally`` blocks run and stop the peer processes it started, by their pids (killed
    with SIGTERM, a benchmark once left its 7 peers running)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return asyncio.run(main)


def publish(name: str, rows: list[dict[str, object]], table: str, note: str = "") -> None:
    """Print ``table`` (and ``note`` under it) and save it with ``rows`` (``save``)."""
    saved = save(name, rows, table if not note else f"{table}\n\n{note}")
    print(f"\n{table}\n\n{note + chr(10) if note else ''}saved to {saved}")
