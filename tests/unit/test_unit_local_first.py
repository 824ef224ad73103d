"""``LocalFirst``: a peer's manifest calls to itself go to its holder, others to the remote
transport, and a failure its holder does not explain reads as an unreachable peer, as the
HTTP route's 500 would."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, cast

import msgspec
import pytest

from node.cluster.transport import Address, Transport
from node.datapath.holder import Holder, LocalFirst
from node.errors import FileNotFound, PeerUnavailable
from node.model.manifest import ChunkMeta

ME = Address("http://127.0.0.1:1", "me")
OTHER = Address("http://127.0.0.1:2", "other")


class FakeHolder:
    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure
        self.asked: list[str] = []

    async def get_manifest(self, name: str) -> None:
        self.asked.append(name)
        if self.failure is not None:
            raise self.failure

    async def write_chunk(
        self, chunk_id: str, pieces: AsyncIterable[bytes], size: int | None, owner: ChunkMeta
    ) -> ChunkMeta:
        self.asked.append(chunk_id)
        stored = b"".join([piece async for piece in pieces])
        return msgspec.structs.replace(owner, size=len(stored))

    @contextlib.asynccontextmanager
    async def open_chunk(self, chunk_id: str, offset: int, length: int) -> AsyncIterator[None]:
        self.asked.append(f"{chunk_id}@{offset}+{length}")
        if self.failure is not None:
            raise self.failure
        yield None

    def list_manifests(self, *args: Any) -> tuple[list[Any], bool]:
        if self.failure is not None:
            raise self.failure
        return [], False


class FakeRemote:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def get_manifest(self, to: Address, name: str) -> None:
        self.asked.append((to.peer_id or "", name))

    async def put_chunk(self, to: Address, chunk_id: str, *args: Any) -> int:
        self.asked.append((to.peer_id or "", chunk_id))
        return 0

    def open_chunk(self, to: Address, chunk_id: str, offset: int, length: int) -> Any:
        self.asked.append((to.peer_id or "", chunk_id))
        return contextlib.nullcontext()


def local_first(holder: FakeHolder | None) -> tuple[LocalFirst, FakeRemote]:
    remote = FakeRemote()
    calls = LocalFirst(cast(Transport, remote), "me")
    calls.holder = cast(Holder, holder)
    return calls, remote


async def test_calls_to_itself_go_to_the_holder_and_others_over_the_transport() -> None:
    holder = FakeHolder()
    calls, remote = local_first(holder)
    assert await calls.get_manifest(ME, "a") is None
    assert await calls.get_manifest(OTHER, "b") is None
    assert holder.asked == ["a"]
    assert remote.asked == [("other", "b")]


async def test_a_chunk_of_its_own_is_read_from_its_holder_and_others_over_the_transport() -> None:
    holder = FakeHolder()
    calls, remote = local_first(holder)
    async with calls.open_chunk(ME, "c-0", 100, 50):
        pass
    calls.open_chunk(OTHER, "c-1", 0, 0)
    assert holder.asked == ["c-0@100+50"]
    assert remote.asked == [("other", "c-1")]


async def test_a_disk_error_reading_its_own_chunk_reads_as_an_unreachable_peer() -> None:
    calls, _ = local_first(FakeHolder(OSError(5, "Input/output error")))
    with pytest.raises(PeerUnavailable, match="Input/output error"):
        async with calls.open_chunk(ME, "c-0", 0, 0):
            pass


async def test_a_chunk_for_itself_is_written_by_its_holder_and_others_sent() -> None:
    holder = FakeHolder()
    calls, remote = local_first(holder)
    owner = ChunkMeta("a", "v", 0, 1 << 20)

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"de"

    assert await calls.put_chunk(ME, "c1", body(), 5, owner) == 5
    await calls.put_chunk(OTHER, "c2", body(), 5, owner)
    assert holder.asked == ["c1"]
    assert remote.asked == [("other", "c2")]


async def test_before_the_holder_is_set_every_call_goes_over_the_transport() -> None:
    calls, remote = local_first(None)
    await calls.get_manifest(ME, "a")
    assert remote.asked == [("me", "a")]


@pytest.mark.parametrize("call", ["get", "list"])
async def test_an_unexplained_failure_here_reads_as_an_unreachable_peer(call: str) -> None:
    calls, _ = local_first(FakeHolder(OSError(5, "Input/output error")))
    made = calls.get_manifest(ME, "a") if call == "get" else calls.list_manifests(ME, "", "", 10)
    with pytest.raises(PeerUnavailable, match="Input/output error"):
        await made


async def test_a_failure_the_holder_explains_is_raised_as_it_is() -> None:
    calls, _ = local_first(FakeHolder(FileNotFound("no such name")))
    with pytest.raises(FileNotFound):
        await calls.get_manifest(ME, "a")
