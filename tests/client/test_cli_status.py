"""``ringstore status``: the table of every peer's figures, and ``--watch`` (plain off a
terminal, redrawn in place on one: a real process on a pseudo-terminal, stopped by Ctrl-C).

The figures are checked against what the peers themselves hold (chunk stores, quotas,
the ring's own ``ring_balance``), not only that the command ran.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import random
import shutil
import signal
import sys
import time
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ring import ring_balance
from tests.client.test_cli import cli_env, ok, ringstore, ringstore_command
from tests.harness import LocalCluster, LocalPeer, eventually
from tests.harness.processes import sigint_reaches_children

QUOTA = 8 << 20  # every peer's --max-bytes: fill is then exactly used / quota
FILE_SIZE = 60_000  # 5 data chunks of 3 blocks (4 KiB blocks): 12 KiB a chunk


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    # Deletions wait long enough to be seen pending; scrubbing is slow enough to be seen
    # under way (6 KiB a second: about 2 s a chunk, several for a peer's few).
    return {"max_bytes": QUOTA, "delete_grace": 60.0, "scrub_rate": 6144}


async def store(http: aiohttp.ClientSession, url: str, name: str, seed: int) -> None:
    body = io.BytesIO(random.Random(seed).randbytes(FILE_SIZE))
    async with http.put(f"{url}/files/{name}", data=body) as answer:
        assert answer.status == 201, await answer.text()


async def cluster_json(http: aiohttp.ClientSession, peer: LocalPeer) -> dict[str, Any]:
    async with http.get(f"{peer.url}/cluster") as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()  # type: ignore[no-any-return]


def row_of(text: str, peer: LocalPeer) -> str:
    rows = [line for line in text.splitlines() if peer.id[:8] in line and peer.url in line]
    assert len(rows) == 1, text
    return rows[0]


async def test_the_table_shows_each_peers_own_figures(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    answering = cluster[1]  # `ringstore` (tests.client.test_cli) asks the second peer
    for i in range(4):
        await store(http, cluster[0].url, f"status/f{i}", seed=i)

    def idle(rebalance: dict[str, int | float]) -> bool:
        return not rebalance.get("pending") and not rebalance.get("remaining_bytes")

    def gossiped() -> bool:
        """Every peer's chunk count reached the answering peer, from a moment when its
        rebalancer had nothing queued (each replica a PUT stores is queued for a look until
        its next pass: figures gossiped just then show "rebalance 1 queued")."""
        view = {m.id: answering.membership.liveness(m.id).figures for m in cluster.peers}
        return idle(answering.rebalancer.progress.to_json()) and all(
            view[p.id].chunks == p.chunks.chunk_count and idle(view[p.id].rebalance)
            for p in cluster.peers
            if p is not answering
        )

    await eventually(gossiped, what="every peer's chunk count, idle, at the answering peer")
    text = ok(await ringstore(cluster, "status")).stdout
    lines = text.splitlines()
    assert lines[0].split() == [
        "peer", "url", "state", "clock", "weight", "fill", "used", "chunks", "ring", "share",
        "upkeep",
    ]  # fmt: skip
    balance = ring_balance(answering.membership.ring)
    for peer in cluster.peers:
        row = row_of(text, peer)
        share = balance.share(peer.id)
        assert share is not None
        used = peer.chunks.used_bytes
        cells = row.lstrip("* ").split()
        assert cells[:5] == [peer.id[:8], peer.url, "up", cells[3], "1"]
        assert (
            f" {round(used / QUOTA, 4):4.0%}" in row
        )  # the fill bar's figure: used of --max-bytes
        token, fair = round(share.share, 6), round(share.fair, 6)  # as /cluster sends them
        shares = [f"{token:.1%}", f"{token / fair:.2f}x"]
        assert cells[-4:] == [str(peer.chunks.chunk_count), *shares, "idle"]
        assert row.startswith("*") == (peer is answering)
    assert sum(p.chunks.chunk_count for p in cluster.peers) == 4 * 7
    assert "7 of 7 peers up" in text
    low, high, cv = (round(x, 4) for x in (balance.min_ratio, balance.max_ratio, balance.cv))
    ratios = f"{low:.3f}..{high:.3f}, cv {cv:.3f}"  # as /cluster rounds them, then shown
    assert f"token share over weight's share {ratios}" in text
    assert "!" not in text  # in-process peers share one clock: none is skewed

    # Upkeep under way shows in the row of the peer doing it: the answering peer's own
    # pending deletions (an overwrite leaves the old chunks for --delete-grace), and
    # another's scrub pass, as gossip tells it.
    await store(http, answering.url, "status/f0", seed=99)
    scrubbing = cluster[4]
    scrubbing.scrubber.wake()

    async def scrub_seen() -> bool:
        view = await cluster_json(http, answering)
        peer = next(p for p in view["peers"] if p["id"] == scrubbing.id)
        return bool(peer["scrub"]["pass_chunks"])

    await eventually(scrub_seen, what="the scrub pass to reach the answering peer's view")
    text = ok(await ringstore(cluster, "status")).stdout
    assert row_of(text, answering).endswith("1 deletion pending")
    assert f"/{scrubbing.chunks.chunk_count}" in row_of(text, scrubbing).split("scrub ")[1]
    view = json.loads(ok(await ringstore(cluster, "status", "--json")).stdout)
    me = next(p for p in view["peers"] if p["id"] == answering.id)
    assert me["upkeep"]["deletions_pending"] == 1
    assert me["capacity_bytes"] == me["max_bytes"] == QUOTA
    assert me["fill"] == pytest.approx(me["used_bytes"] / QUOTA, abs=1e-4)
    assert view["ring"]["max_ratio"] == pytest.approx(balance.max_ratio, abs=1e-4)

    # A member gone: shown down, with the figures it last sent and how old they are.
    gone = cluster[6]

    async def figures_current() -> bool:  # the store above may have added a chunk to it
        view = await cluster_json(http, answering)
        peer = next(p for p in view["peers"] if p["id"] == gone.id)
        return bool(peer["chunks"] == gone.chunks.chunk_count)

    await eventually(figures_current, what="the gone peer's last figures to be gossiped")
    await gone.stop()
    await cluster.wait_down(gone)
    text = ok(await ringstore(cluster, "status")).stdout
    row = row_of(text, gone)
    assert row.split()[2] == "down"
    assert f" {gone.chunks.chunk_count} " in row
    assert "s ago" in row.split("x ")[-1]  # "idle, as of 2s ago" or the like
    assert "6 of 7 peers up" in text


async def test_watch_refreshes_until_stopped(cluster: LocalCluster, tmp_path: Path) -> None:
    started = time.monotonic()
    text = ok(await ringstore(cluster, "status", "--watch", "0.5", "--count", "3")).stdout
    assert time.monotonic() - started >= 1.0  # two waits between three tables
    assert text.count("7 of 7 peers up") == 3
    lines = ok(await ringstore(cluster, "status", "--watch", "--json", "--count", "2")).stdout
    views = [json.loads(line) for line in lines.splitlines()]
    assert [len(v["peers"]) for v in views] == [7, 7]

    # On a terminal: redrawn in place (rich.live) until Ctrl-C, which ends it cleanly.
    screen = await watch_on_a_terminal(cluster, until=lambda seen: seen.count(b"peers up") >= 3)
    assert b"7 of 7 peers up" in screen
    assert b"\x1b[" in screen  # drawn with terminal controls, not as plain text


async def test_long_transfers_draw_a_progress_bar_on_a_terminal(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    data = random.Random(5).randbytes(6 << 20)  # over PROGRESS_MIN (4 MiB)
    (tmp_path / "big.bin").write_bytes(data)
    screen = await on_a_terminal(cluster, ["put", str(tmp_path / "big.bin"), "status/big.bin"])
    assert b"put status/big.bin" in screen
    assert b"6.0/6.0 MiB" in screen  # rich.progress's DownloadColumn, at the end
    screen = await on_a_terminal(cluster, ["get", "status/big.bin", str(tmp_path / "back.bin")])
    assert b"get status/big.bin" in screen
    assert b"6.0/6.0 MiB" in screen
    assert (tmp_path / "back.bin").read_bytes() == data


async def watch_on_a_terminal(cluster: LocalCluster, until: Any) -> bytes:
    """Run ``ringstore status --watch 0.5`` on a pseudo-terminal until ``until(output)``,
    then send SIGINT as Ctrl-C does; the process must exit 0 by itself."""
    return await on_a_terminal(cluster, ["status", "--watch", "0.5"], until)


async def on_a_terminal(cluster: LocalCluster, args: list[str], until: Any = None) -> bytes:
    """Run ``ringstore ARGS`` with its output on a pseudo-terminal, and return what it
    drew; with ``until``, send it SIGINT (Ctrl-C) once ``until(output)`` holds. The
    process must exit 0 by itself."""
    leader, follower = pty.openpty()
    env = cli_env(TERM="xterm-256color", COLUMNS="200")
    with sigint_reaches_children():  # as from an interactive shell
        process = await asyncio.create_subprocess_exec(
            *ringstore_command(*args, "--peer", cluster[1].url),
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=env,
        )
    os.close(follower)
    os.set_blocking(leader, False)
    seen = bytearray()

    def read() -> bool:
        try:
            while chunk := os.read(leader, 1 << 16):
                seen.extend(chunk)
        except OSError:  # nothing more for now (EAGAIN), or the terminal closed (EIO)
            pass
        return until is None or bool(until(bytes(seen)))

    async def ended() -> bool:
        read()
        return process.returncode is not None

    try:
        if until is not None:
            await eventually(read, 30, "enough drawn on the terminal")
            process.send_signal(signal.SIGINT)
        try:
            await eventually(ended, 30, "ringstore to stop by itself")  # reading all the while
        except AssertionError as exc:
            stacks = await stacks_of(process.pid)
            raise AssertionError(f"{exc}\n{stacks}\n{bytes(seen[-2000:])!r}") from None
        read()
        assert process.returncode == 0, bytes(seen).decode(errors="replace")
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
        os.close(leader)
    return bytes(seen)


async def stacks_of(pid: int) -> str:
    """What every thread of process ``pid`` is doing (py-spy, where installed), for the
    message of a test that waited for it in vain."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        dump = await asyncio.create_subprocess_exec(
            spy, "dump", "--pid", str(pid), stdout=PIPE, stderr=STDOUT
        )
    except OSError as exc:
        return f"(no stacks: {exc!r})"
    try:
        out, _ = await asyncio.wait_for(dump.communicate(), 20)
    except asyncio.TimeoutError:
        dump.kill()
        await dump.wait()
        return "(no stacks: py-spy took over 20 s)"
    return out.decode(errors="replace")
