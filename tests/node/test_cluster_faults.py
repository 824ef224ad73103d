"""Faults against an in-process cluster: stopped, hung and corrupted peers, cut-off uploads."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.cluster.protocol import FRAME_CHUNK_MAX
from tests.harness import (
    HANG_DETECTION,
    LocalCluster,
    LocalPeer,
    eventually,
    flip_byte,
)
from tests.harness.access import ADMIN_HEADERS
from tests.node.shared.test_cluster_files import get, payload, put, stored_chunk_ids


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    """Peers that give up on a hung peer quickly: these tests hang peers on purpose."""
    return dict(HANG_DETECTION)


async def manifest_of(http: aiohttp.ClientSession, url: str, name: str) -> dict:  # type: ignore[type-arg]
    async with http.get(f"{url}/manifests/{name}") as response:
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]


def data_holders(cluster: LocalCluster, manifest: dict) -> list[LocalPeer]:  # type: ignore[type-arg]
    return [cluster.holder(c["holder"]) for c in manifest["chunks"] if c["kind"] == "data"]


def chunk_path(cluster: LocalCluster, chunk: dict) -> Path:  # type: ignore[type-arg]
    return cluster.holder(chunk["holder"]).chunks.path(chunk["id"])


async def decoded(http: aiohttp.ClientSession, peer: LocalPeer) -> dict[str, float]:
    """The peer's ``ringstore_decoded_reads_total`` by reason, and ``stripes``, as scraped."""
    async with http.get(f"{peer.url}/metrics") as answer:
        text = await answer.text()
    found = {"stripes": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ringstore_decoded_reads_total":
                found[sample.labels["reason"]] = sample.value
            elif sample.name == "ringstore_decoded_stripes_total":
                found["stripes"] = sample.value
    return found


def grew(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The reasons (and ``stripes``) whose count went up, by how much."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}


async def test_get_survives_two_stopped_data_holders(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(200_003, seed=11)
    await put(http, cluster[0].url, "faults/precious", data)
    manifest = await manifest_of(http, cluster[0].url, "faults/precious")
    victims = data_holders(cluster, manifest)[:2]
    reader = next(p for p in cluster.peers if p not in victims)

    async def read_whole_without_decoding() -> bool:
        # A read slower than the 2 s hang timeout (a loaded machine) is rightly decoded, as
        # "slow": read again. A reader that always decodes fails at the deadline.
        healthy = await decoded(http, reader)
        assert await get(http, reader.url, "faults/precious") == data
        return grew(healthy, await decoded(http, reader)) == {}

    await eventually(read_whole_without_decoding, 30, "a healthy read that decodes nothing")
    for victim in victims:
        await victim.stop()
    # At once, before heartbeats notice, and again once they have: each read is counted
    # once, under the first reason met, with every stripe it decoded.
    before = await decoded(http, reader)
    assert await get(http, reader.url, "faults/precious") == data
    stripes = -(-len(data) // (5 * 4096))
    first = grew(before, await decoded(http, reader))
    assert first.pop("stripes") == stripes
    assert list(first.values()) == [1]
    assert set(first) <= {"unreachable", "down"}  # down: if gossip noticed it first
    for victim in victims:
        await cluster.wait_down(victim)
    before = await decoded(http, reader)
    assert await get(http, reader.url, "faults/precious") == data
    assert grew(before, await decoded(http, reader)) == {"down": 1, "stripes": stripes}


async def test_three_lost_chunks_fail_loudly_never_with_wrong_bytes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(100_000, seed=12)
    await put(http, cluster[0].url, "faults/fragile", data)
    manifest = await manifest_of(http, cluster[0].url, "faults/fragile")
    # Broken in the last stripe only: found after the headers went out.
    for chunk in manifest["chunks"][:3]:
        flip_byte(chunk_path(cluster, chunk), chunk["size"] - 1)  # its last byte
    async with http.get(f"{cluster[1].url}/files/faults/fragile") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    # Missing from the start: found before the headers, so a clean 503.
    for chunk in manifest["chunks"][:3]:
        chunk_path(cluster, chunk).unlink()
    async with http.get(f"{cluster[1].url}/files/faults/fragile") as response:
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "unavailable"


async def test_get_survives_a_hung_data_holder(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(150_000, seed=13)
    await put(http, cluster[0].url, "faults/patient", data)
    manifest = await manifest_of(http, cluster[0].url, "faults/patient")
    victim = data_holders(cluster, manifest)[0]
    reader = next(p for p in cluster.peers if p is not victim)
    before = await decoded(http, reader)
    victim.hang()
    try:
        assert await get(http, reader.url, "faults/patient") == data
    finally:
        victim.unhang()
    counted = grew(before, await decoded(http, reader))
    assert counted.pop("stripes") >= 1
    # The holder's silence ends the read either at the block timeout or at the peer
    # call's own read timeout, whichever comes first: both --peer-timeout; or, on a busy
    # machine, gossip's probe (as long) saw it down first and the read skipped it.
    assert list(counted.values()) == [1]
    assert set(counted) <= {"slow", "unreachable", "down"}


async def test_corrupt_chunk_bytes_are_detected_and_decoded_around(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(77_777, seed=14)
    await put(http, cluster[0].url, "faults/rotting", data)
    manifest = await manifest_of(http, cluster[0].url, "faults/rotting")
    for chunk in manifest["chunks"][1:3]:  # two data chunks, one byte each
        path = chunk_path(cluster, chunk)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    before = await decoded(http, cluster[4])
    assert await get(http, cluster[4].url, "faults/rotting") == data
    counted = grew(before, await decoded(http, cluster[4]))
    # The stripes from the one with the flipped byte on: the earlier ones read whole.
    assert 1 <= counted.pop("stripes") < -(-len(data) // (5 * 4096))
    assert counted == {"corrupt": 1}
    async with http.get(
        f"{cluster[5].url}/files/faults/rotting", headers={"Range": "bytes=30000-40000"}
    ) as response:
        assert await response.read() == data[30000:40001]


async def test_fewer_than_five_peers_up_is_503(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    for victim in cluster.peers[4:]:
        await victim.stop()
    for victim in cluster.peers[4:]:
        await cluster.wait_down(victim)
    async with http.put(f"{cluster[0].url}/files/faults/nope", data=b"data") as response:
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "unavailable"
    # A name never stored reads 404 on the word of 2 of its 3 home replicas (N - W + 1);
    # with 2 of them down, the one left cannot say it was never written to those two: 503.
    down = {victim.id for victim in cluster.peers[4:]}
    homes_down = {
        name: len(down & set(cluster[0].membership.home_replicas(name).members))
        for name in (f"faults/nope-{i}" for i in range(200))
    }
    answerable = next(name for name, count in homes_down.items() if count <= 1)
    unknowable = next(name for name, count in homes_down.items() if count >= 2)
    async with http.get(f"{cluster[0].url}/files/{answerable}") as response:
        assert response.status == 404
    async with http.get(f"{cluster[0].url}/files/{unknowable}") as response:
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "unavailable"


@pytest.mark.parametrize(
    "size",
    [400_000, 6_000_000],
    ids=["chunks-as-frames", "chunks-streamed"],  # a chunk over 1 MiB streams as a request
)
async def test_put_survives_a_peer_dying_mid_stream(
    cluster: LocalCluster, http: aiohttp.ClientSession, size: int
) -> None:
    data = payload(size, seed=15)
    piece, half = size // 20, size // 2
    # The namespace first: while a PUT makes it (a record read and written on every
    # replica), the client's body runs ahead into socket buffers and stops the peer before
    # the file is placed, so the file would be laid out for 6 peers (whole, not degraded).
    await put(http, cluster[0].url, f"faults/first-{size}", b"x")

    def receiving() -> bool:
        return bool(cluster[6].chunks.writing)  # (under 1 MiB: in memory, not incoming/)

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), piece):
            if start == half:
                # Mid-stream for sure: a streamed chunk's holder is receiving it (the client's
                # body can run ahead of a coordinator still checking the key and namespace);
                # a framed chunk leaves once the body is in: the peer is placed, not yet sent.
                if size > FRAME_CHUNK_MAX * 5:
                    await eventually(receiving, 10, "peer 6 to receive its chunk")
                await cluster[6].stop()  # every peer holds a chunk of a 7-peer file
            yield data[start : start + piece]

    headers = {"Content-Length": str(len(data))}
    async with http.put(
        f"{cluster[0].url}/files/faults/survivor-{size}", data=body(), headers=headers
    ) as response:
        assert response.status == 201, await response.text()
        reply = await response.json()
    assert reply["chunks"] == 6
    assert reply["degraded"] is True
    assert await get(http, cluster[3].url, f"faults/survivor-{size}") == data


async def test_put_drops_a_hung_peer_after_the_stall_timeout(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(2_000_000, seed=16)
    cluster[6].hang()
    try:
        reply = await put(http, cluster[0].url, "faults/impatient", data)
    finally:
        cluster[6].unhang()
    assert reply["chunks"] == 6
    assert await get(http, cluster[1].url, "faults/impatient") == data


async def test_cut_off_upload_leaves_nothing(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    class Cut(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 100_000
        raise Cut

    headers = {"Content-Length": "1000000"}
    with pytest.raises((Cut, aiohttp.ClientError)):
        async with http.put(f"{cluster[0].url}/files/faults/half", data=body(), headers=headers):
            pass
    async with http.get(f"{cluster[1].url}/files/faults/half") as response:
        assert response.status == 404

    def nothing_stored() -> bool:
        incoming = [f for p in cluster.peers for f in (p.data_dir / "incoming").iterdir()]
        return not incoming and not stored_chunk_ids(cluster)

    await eventually(nothing_stored, what="no chunks and nothing in incoming/")


async def test_short_body_with_content_length_leaves_nothing(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    # A client that promises more than it sends and then closes the connection.
    _, writer = await asyncio.open_connection("127.0.0.1", cluster[0].port)
    authorization = ADMIN_HEADERS["Authorization"].encode()
    writer.write(
        b"PUT /files/faults/liar HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + authorization
        + b"\r\nContent-Length: 50000\r\n\r\n"
        + b"y" * 1000
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: not stored_chunk_ids(cluster), what="no chunks")
    async with http.get(f"{cluster[1].url}/files/faults/liar") as response:
        assert response.status == 404


async def test_restart_of_every_peer_keeps_files_and_members(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    data = payload(90_000, seed=17)
    await put(http, cluster[0].url, "faults/durable", data)
    ids = {p.id for p in cluster.peers}
    for peer in cluster.peers:
        await peer.stop()
    for peer in cluster.peers:
        await peer.start()
    assert {p.id for p in cluster.peers} == ids
    assert all(len(p.membership.members()) == 7 for p in cluster.peers)
    await cluster.wait_converged()
    assert await get(http, cluster[6].url, "faults/durable") == data


async def test_manifest_survives_a_lost_replica(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    await put(http, cluster[0].url, "faults/meta", b"payload")
    holders = [p for p in cluster.peers if await p.manifests.get("faults/meta") is not None]
    assert len(holders) == 3
    await holders[0].stop()
    reader = next(p for p in cluster.peers if p.running)
    assert await get(http, reader.url, "faults/meta") == b"payload"
    body = io.BytesIO(b"newer")
    async with http.put(f"{reader.url}/files/faults/meta", data=body) as response:
        assert response.status == 201
    assert await get(http, reader.url, "faults/meta") == b"newer"
