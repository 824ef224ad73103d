"""The file commands of ``ringstore``: through click's CliRunner, and once as real processes.

CliRunner runs a command in a worker thread (``asyncio.to_thread``) because the command's
sync client blocks while this test's loop serves the in-process cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result

from node.process.cli import main
from tests.harness import LocalCluster, ProcessCluster, Served, eventually, free_port
from tests.harness.clients import damaging_proxy
from tests.harness.processes import sigint_reaches_children

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a real ``ringstore`` process a test runs: this checkout's code,
    and no peers but those its command names."""
    return {**os.environ, "PYTHONPATH": str(REPO), "RINGSTORE_PEERS": "", **extra}


def ringstore_command(*args: str) -> list[str]:
    """The command line of a real ``ringstore ARGS`` process (with ``cli_env``)."""
    return [sys.executable, "-m", "node", *args]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def ringstore(
    cluster: LocalCluster, *args: str, stdin: bytes | None = None, **env: str
) -> Result:
    """Run ``ringstore ARGS --peer <second peer>`` the way a shell would, in a thread."""
    runner = CliRunner(env={"RINGSTORE_PEERS": None, **env})
    peers = ("--peer", cluster[1].url) if "RINGSTORE_PEERS" not in env else ()
    return await asyncio.to_thread(runner.invoke, main, [*args, *peers], input=stdin)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stderr == ""
    return result


def failed(result: Result, code: int = 1) -> str:
    """The one error line of a failed command."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 or code == 2, result.stderr
    return lines[-1]


async def test_put_and_get_files_and_pipes(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(100_000, seed=1)
    source = tmp_path / "photo.jpg"
    source.write_bytes(data)
    out = ok(await ringstore(cluster, "put", str(source), "photos/"))
    assert out.stdout.startswith("photos/photo.jpg: 100000 bytes, version ")
    ok(await ringstore(cluster, "put", str(source), "trips/été/photo.jpg", "--quiet"))
    assert ok(await ringstore(cluster, "put", "-", "pipes/piped.txt", stdin=b"from stdin")).stdout

    monkeypatch.chdir(tmp_path / ".")
    (tmp_path / "down").mkdir()
    assert ok(await ringstore(cluster, "get", "pipes/piped.txt", "-")).stdout_bytes == b"from stdin"
    assert (
        ok(await ringstore(cluster, "get", "pipes/piped.txt", "-o", "-")).stdout_bytes
        == b"from stdin"
    )
    ok(await ringstore(cluster, "get", "trips/été/photo.jpg", "down"))  # into a directory
    assert (tmp_path / "down" / "photo.jpg").read_bytes() == data
    ok(await ringstore(cluster, "get", "trips/été/photo.jpg", "-o", "down/renamed.jpg"))
    assert (tmp_path / "down" / "renamed.jpg").read_bytes() == data
    ok(await ringstore(cluster, "get", "pipes/piped.txt"))  # default: its last segment, here
    assert (tmp_path / "piped.txt").read_bytes() == b"from stdin"
    ok(await ringstore(cluster, "put", "-", "pipes/-", stdin=b"a file named -"))
    assert ok(await ringstore(cluster, "get", "pipes/-")).stdout_bytes == b""  # not stdout
    assert (tmp_path / "-").read_bytes() == b"a file named -"

    stat = json.loads(ok(await ringstore(cluster, "stat", "photos/photo.jpg", "--json")).stdout)
    assert stat["content_type"] == "image/jpeg"  # guessed from the name
    stat = json.loads(ok(await ringstore(cluster, "stat", "pipes/piped.txt", "--json")).stdout)
    assert stat["content_type"] == "text/plain"

    usage = failed(await ringstore(cluster, "put", "-", stdin=b"x"), code=2)
    assert "give NAME" in usage
    failed(await ringstore(cluster, "get", "pipes/piped.txt", "a", "-o", "b"), code=2)
    failed(await ringstore(cluster, "put", str(tmp_path / "absent")), code=2)


async def test_ls_stat_and_status_for_people_and_scripts(cluster: LocalCluster) -> None:
    for i in range(3):
        ok(await ringstore(cluster, "put", "-", f"dir/f{i}", stdin=b"x" * (i + 1) * 1000))
    ok(await ringstore(cluster, "put", "-", "other/y", stdin=b"y"))

    lines = ok(await ringstore(cluster, "ls", "dir/")).stdout.splitlines()
    assert [line.split() for line in lines] == [
        ["1000", "dir/f0"],
        ["2000", "dir/f1"],
        ["3000", "dir/f2"],
    ]
    listing = json.loads(ok(await ringstore(cluster, "ls", "-r", "--json")).stdout)
    assert [(e["name"], e["size"]) for e in listing] == [
        ("dir/f0", 1000),
        ("dir/f1", 2000),
        ("dir/f2", 3000),
        ("other/y", 1),
    ]
    assert json.loads(ok(await ringstore(cluster, "ls", "nothing/", "--json")).stdout) == []
    # By default, folders: `ls` alone shows the namespaces, as `aws s3 ls` the buckets.
    lines = ok(await ringstore(cluster, "ls")).stdout.splitlines()
    assert [line.split() for line in lines] == [["PRE", "dir/"], ["PRE", "other/"]]
    folders = json.loads(ok(await ringstore(cluster, "ls", "--json")).stdout)
    assert folders == [{"prefix": "dir/"}, {"prefix": "other/"}]
    ok(await ringstore(cluster, "put", "-", "dir/sub/deep/g", stdin=b"g"))
    lines = ok(await ringstore(cluster, "ls", "dir/")).stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["dir/f0", "dir/f1", "dir/f2", "dir/sub/"]
    lines = ok(await ringstore(cluster, "ls", "dir/", "--delimiter", "f")).stdout.splitlines()
    assert [line.split() for line in lines] == [["PRE", "dir/f"], ["1", "dir/sub/deep/g"]]
    assert ok(await ringstore(cluster, "ls", "-r", "dir/sub")).stdout.split() == [
        "1",
        "dir/sub/deep/g",
    ]
    ok(await ringstore(cluster, "rm", "dir/sub/deep/g"))

    text = ok(await ringstore(cluster, "stat", "dir/f2")).stdout
    assert "size:         3000 bytes" in text
    assert "5 data + 2 parity chunks" in text
    manifest = json.loads(ok(await ringstore(cluster, "stat", "dir/f2", "--json")).stdout)
    assert manifest["size"] == 3000
    assert len(manifest["chunks"]) == 7
    assert {c["holder_url"] for c in manifest["chunks"]} == set(cluster.urls)
    for chunk in manifest["chunks"]:
        assert chunk["holder"] in text
        assert chunk["holder_url"] in text

    text = ok(await ringstore(cluster, "status")).stdout
    for peer in cluster.peers:
        assert peer.url in text
        assert peer.id[:8] in text
    assert "7 of 7 peers up" in text
    assert "clock" in text.splitlines()[0]  # each peer's offset from the answering one's
    assert "!" not in text  # in-process peers share one clock: none is skewed
    assert "evenness" in text
    view = json.loads(ok(await ringstore(cluster, "status", "--json")).stdout)
    assert view["self_id"] == cluster[1].id
    assert {p["url"] for p in view["peers"]} == set(cluster.urls)
    assert view["ring"]["evenness"] >= 1.0

    ok(await ringstore(cluster, "rm", "dir/f0", "dir/f1"))
    assert ok(await ringstore(cluster, "ls", "-r")).stdout.split()[1::2] == ["dir/f2", "other/y"]
    ok(await ringstore(cluster, "rm", "other/y"))  # a folder shows only while a file is in it
    assert ok(await ringstore(cluster, "ls")).stdout.split() == ["PRE", "dir/"]


async def test_stat_shows_stored_headers_and_metadata(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    headers = {
        "Content-Encoding": "gzip",
        "Cache-Control": "max-age=60",
        "X-Ringstore-Meta-Owner": "ops",
        "X-Ringstore-Meta-Note": "line\u2028two",  # a Unicode line separator: shown escaped
    }
    async with http.put(f"{cluster[0].url}/files/cli/meta", data=b"x", headers=headers) as r:
        assert r.status == 201, await r.text()
    text = ok(await ringstore(cluster, "stat", "cli/meta")).stdout
    assert "encoding:     gzip\n" in text
    assert "cache control: max-age=60\n" in text
    assert "metadata:\n  note: line\\u2028two\n  owner: ops\n" in text
    assert "expires" not in text
    shown = json.loads(ok(await ringstore(cluster, "stat", "cli/meta", "--json")).stdout)
    assert shown["content_encoding"] == "gzip"
    assert shown["expires"] is None
    assert shown["metadata"] == {"owner": "ops", "note": "line\u2028two"}


async def test_failures_are_one_line_on_stderr(cluster: LocalCluster, tmp_path: Path) -> None:
    missing = "error: no file named 'cli/missing'"
    assert failed(await ringstore(cluster, "get", "cli/missing", "-")) == missing
    assert (
        failed(await ringstore(cluster, "get", "cli/missing", "-o", str(tmp_path / "m"))) == missing
    )
    assert not (tmp_path / "m").exists()
    assert failed(await ringstore(cluster, "rm", "cli/missing")) == missing
    # A missing name among several: said, and the others still deleted (rm stopped there).
    ok(await ringstore(cluster, "put", "-", "cli/after-missing", stdin=b"x"))
    assert failed(await ringstore(cluster, "rm", "cli/missing", "cli/after-missing")) == missing
    gone = "error: no file named 'cli/after-missing'"
    assert failed(await ringstore(cluster, "stat", "cli/after-missing")) == gone
    assert failed(await ringstore(cluster, "stat", "cli/missing")) == missing
    assert failed(await ringstore(cluster, "put", "-", "a//b", stdin=b"x")).startswith(
        "error: empty, '.' and '..' segments are not allowed"
    )
    assert failed(
        await ringstore(cluster, "get", "cli/x", str(tmp_path / "no" / "dir"))
    ).startswith("error: ")
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = failed(await ringstore(cluster, "ls", RINGSTORE_PEERS=dead))
    assert unreachable.startswith("error: GET /files failed after 3 tries: peer " + dead)
    assert "--peer" in failed(await ringstore(cluster, "ls", "--peer", "nonsense"), code=2)

    # A dead peer first: the commands fail over to the next one, stdin included.
    env = {"RINGSTORE_PEERS": f"{dead},{cluster[2].url}"}
    ok(await ringstore(cluster, "put", "-", "cli/failed-over", stdin=b"still here", **env))
    assert ok(await ringstore(cluster, "get", "cli/failed-over", "-", **env)).stdout_bytes == (
        b"still here"
    )


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_pipes_through_real_processes(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    processes = ProcessCluster(tmp_path / "peers", 5)
    try:
        await processes.start(http)
        dead = f"http://127.0.0.1:{free_port()}"
        live = processes.urls[2]
        ringstore = f"{sys.executable} -m node"

        # The commands run in tmp_path but import this checkout, as the peers do.
        env = cli_env()

        def shell(command: str) -> subprocess.CompletedProcess[Any]:
            return subprocess.run(
                ["sh", "-c", command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )

        put = await asyncio.to_thread(
            shell,
            "head -c 3000000 /dev/urandom | tee in.bin"
            f" | {ringstore} put - piped/random.bin --peer {dead} --peer {live}",
        )
        assert put.returncode == 0, put.stderr
        assert put.stdout.startswith(b"piped/random.bin: 3000000 bytes")
        get = await asyncio.to_thread(
            shell, f"{ringstore} get piped/random.bin - --peer {processes.urls[4]} > out.bin"
        )
        assert get.returncode == 0, get.stderr
        assert get.stderr == b""
        assert (tmp_path / "out.bin").read_bytes() == (tmp_path / "in.bin").read_bytes()
        assert (tmp_path / "out.bin").stat().st_size == 3_000_000

        missing = await asyncio.to_thread(shell, f"{ringstore} get piped/nope - --peer {live}")
        assert (missing.returncode, missing.stdout) == (1, b"")
        assert missing.stderr == b"error: no file named 'piped/nope'\n"
    finally:
        await processes.stop()


def reading_a_pipe(pid: int) -> bool:
    """Whether a thread of process ``pid`` waits in a read of a pipe (Linux's wchan)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # (a thread that ended meanwhile)
            if "pipe" in (task / "wchan").read_text():
                return True
    return False


@pytest.mark.parametrize("then", ["input-open", "input-ends"])
async def test_ctrl_c_ends_a_transfer_with_status_130_and_stores_nothing(
    cluster: LocalCluster, http: aiohttp.ClientSession, then: str
) -> None:
    """Ctrl-C during ``ringstore put -`` (a real process, its standard input a pipe) ends
    it with 130 (128 + SIGINT, as a shell reports), not click's 1 that a failed transfer
    also gives, and the file half sent is not stored: whether its input stays open (a
    producer that ignores Ctrl-C: the command hung, or missed the signal) or ends right
    after the signal (a producer the same Ctrl-C ended: that end was taken for the file's,
    and a file cut short stored)."""
    name = f"cut/short-{then}.bin"
    reading, writing = os.pipe()
    try:
        with sigint_reaches_children():
            process = await asyncio.create_subprocess_exec(
                *ringstore_command("put", "-", name, "--peer", cluster[1].url),
                stdin=reading,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=cli_env(),
            )
        os.close(reading)
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            await asyncio.to_thread(os.write, writing, payload(3 << 19))  # 1.5 MiB
            # then it waits in a read of the pipe for more: the signal comes then
            await eventually(lambda: reading_a_pipe(process.pid), 30, "a read of the pipe")
            process.send_signal(signal.SIGINT)
            if then == "input-ends":
                os.close(writing)  # at once, as a producer the Ctrl-C ended closes it
                writing = -1
            stdout, stderr, _ = await asyncio.wait_for(
                asyncio.gather(process.stdout.read(), process.stderr.read(), process.wait()),
                30,
            )
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        if writing >= 0:
            os.close(writing)
    assert (process.returncode, stderr, stdout) == (130, b"\nAborted!\n", b"")
    async with http.get(f"{cluster[0].url}/files/{name}") as response:
        assert response.status == 404


def test_text_from_the_cluster_is_printed_with_controls_escaped() -> None:
    from client.cli import _shown

    assert _shown("docs/ünïcode ok.txt") == "docs/ünïcode ok.txt"
    assert _shown("red\x1b[31m\nnext\x85\u202eline\x7f") == (
        "red\\x1b[31m\\nnext\\x85\\u202eline\\x7f"
    )


def test_a_peer_process_never_imports_the_client_commands() -> None:
    """``ringstore peer`` leaves the file commands (the client, rich) unimported: ~4 MiB
    of every peer's resident set; ``ringstore put`` finds them."""
    script = (
        "import sys\n"
        "from node.process.cli import main\n"
        "main([sys.argv[1], '--help'], standalone_mode=False)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'client', 'rich'}))\n"
    )

    def imported(command: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, command],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.splitlines()[-1]

    assert imported("peer") == "[]"
    assert imported("put") == "['client', 'rich']"


async def test_get_refuses_bytes_that_do_not_hash_to_the_etag(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(50_000, seed=4)
    source = tmp_path / "report.pdf"
    source.write_bytes(data)
    ok(await ringstore(cluster, "put", str(source), "checked/report.pdf", "--quiet"))
    proxy = Served()
    await proxy.serve(damaging_proxy(cluster[2].url))
    try:
        env = {"RINGSTORE_PEERS": f"http://127.0.0.1:{proxy.port}"}
        down = tmp_path / "down"
        down.mkdir()
        monkeypatch.chdir(down)
        line = failed(await ringstore(cluster, "get", "checked/report.pdf", "--quiet", **env))
        assert "do not hash to its etag" in line
        assert list(down.iterdir()) == []
        ok(await ringstore(cluster, "get", "checked/report.pdf", "--no-verify", "-q", **env))
        assert (down / "report.pdf").read_bytes() != data
    finally:
        await proxy.stop()
