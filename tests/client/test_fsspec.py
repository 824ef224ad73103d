"""The ``ringstore://`` fsspec filesystem against seven in-process peers, through fsspec's
own API and pandas.

fsspec and pandas block, so every call runs in a worker thread while this module's loop
serves the cluster (as the sync client's contract tests do). The entry point is what an
installed package registers (tox installs this tree); a development environment whose
installed copy predates it gets the same declaration registered by ``declared_entry_point``.
"""

from __future__ import annotations

import asyncio
import errno
import io
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import fsspec
import pandas as pd
import pytest
import pytest_asyncio
from fsspec.registry import known_implementations

from client import Client
from client.filesystem import RingstoreFile, RingstoreFileSystem
from tests.harness import LocalCluster, Served
from tests.harness.clients import damaging_proxy

pytestmark = pytest.mark.asyncio(loop_scope="module")

T = TypeVar("T")
BLOCK = 4096  # the cluster's block size: one stripe is 5 blocks
PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def declared_entry_point() -> str:
    """The ``fsspec.specs`` entry point of ``ringstore`` as pyproject.toml declares it."""
    text = PYPROJECT.read_text()
    section = text.split('[project.entry-points."fsspec.specs"]', 1)[1].split("\n[", 1)[0]
    found = re.search(r'^ringstore\s*=\s*"([^"]+)"', section, re.MULTILINE)
    assert found, "pyproject.toml declares the ringstore fsspec entry point"
    return found.group(1)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), block_size=BLOCK)
    try:
        await local.start(7)
        yield local
    finally:
        await local.stop()


@pytest.fixture(scope="module")
def registered() -> Iterator[None]:
    """fsspec knows ``ringstore``: from the installed entry point, else the declared one."""
    value = declared_entry_point().replace(":", ".")
    known = known_implementations.get("ringstore", {}).get("class")
    if known is None:
        fsspec.register_implementation("ringstore", value)
    else:
        assert known == value
    yield
    for instance in list(RingstoreFileSystem._cache.values()):
        instance.close()
    RingstoreFileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def options(cluster: LocalCluster, registered: None) -> dict[str, Any]:
    """storage_options that reach the cluster (the key: the harness's, from the environment)."""
    return {"peers": cluster.urls[1:4]}


@pytest.fixture(scope="module")
def fs(options: dict[str, Any]) -> RingstoreFileSystem:
    made = fsspec.filesystem("ringstore", **options)
    assert isinstance(made, RingstoreFileSystem)
    return made


async def off_loop(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(call, *args, **kwargs)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_the_entry_point_names_the_filesystem() -> None:
    module, _, name = declared_entry_point().partition(":")
    assert (module, name) == ("client.filesystem", "RingstoreFileSystem")
    assert RingstoreFileSystem.protocol == "ringstore"


async def test_listings_info_and_exists(fs: RingstoreFileSystem) -> None:
    files = {
        "lists/a.txt": b"a",
        "lists/b/one.bin": b"one",
        "lists/b/c/two.bin": b"two!",
        "lists/d.csv": b"x,y\n",
    }
    for name, data in files.items():
        await off_loop(fs.pipe_file, name, data)
    listing = await off_loop(fs.ls, "ringstore://lists", detail=True)
    assert [(e["name"], e["type"]) for e in listing] == [
        ("lists/a.txt", "file"),
        ("lists/b", "directory"),
        ("lists/d.csv", "file"),
    ]
    assert listing[0]["size"] == 1
    assert listing[2]["content_type"] == "text/csv"  # guessed from the name
    assert await off_loop(fs.ls, "lists/b/", detail=False) == ["lists/b/c", "lists/b/one.bin"]
    assert "lists" in await off_loop(fs.ls, "", detail=False)
    file_listing = await off_loop(fs.ls, "lists/a.txt", detail=False)
    assert file_listing == ["lists/a.txt"]
    assert await off_loop(fs.ls, "/lists/b/c/", detail=False) == ["lists/b/c/two.bin"]
    info = await off_loop(fs.info, "ringstore://lists/b/c/two.bin")
    assert (info["type"], info["size"]) == ("file", 4)
    assert await off_loop(fs.ukey, "lists/b/c/two.bin") == info["etag"]
    assert (await off_loop(fs.info, "lists/b/c"))["type"] == "directory"
    assert await off_loop(fs.isdir, "lists")
    assert await off_loop(fs.isfile, "lists/d.csv")
    assert not await off_loop(fs.exists, "lists/nothing")
    assert not await off_loop(fs.exists, "nosuchnamespace")
    with pytest.raises(FileNotFoundError):
        await off_loop(fs.info, "lists/b/nothing")
    with pytest.raises(FileNotFoundError):
        await off_loop(fs.ls, "lists/nothing")
    assert sorted(await off_loop(fs.find, "lists")) == sorted(files)
    assert await off_loop(fs.find, "lists", maxdepth=1) == ["lists/a.txt", "lists/d.csv"]
    assert (await off_loop(fs.modified, "lists/a.txt")).tzinfo is not None
    assert await off_loop(fs.du, "lists") == sum(len(d) for d in files.values())


async def test_cat_file_with_ranges(fs: RingstoreFileSystem) -> None:
    data = payload(50_000, seed=1)  # many stripes
    await off_loop(fs.pipe_file, "ranges/data.bin", data)
    for start, end in [
        (None, None),
        (0, 10),
        (2, 5),
        (4095, 20_481),
        (-3, None),
        (2, -1),
        (-5, -2),
        (49_990, 60_000),
        (50_000, None),
        (10**9, None),
        (7, 7),
        (9, 3),
    ]:
        got = await off_loop(fs.cat_file, "ringstore://ranges/data.bin", start, end)
        assert got == data[start:end], (start, end)
    assert await off_loop(fs.cat, "ranges/data.bin") == data
    with pytest.raises(FileNotFoundError):
        await off_loop(fs.cat_file, "ranges/missing.bin")


async def test_open_reads_in_ranged_blocks(fs: RingstoreFileSystem) -> None:
    data = payload(100_000, seed=2)
    await off_loop(fs.pipe_file, "reads/data.bin", data)

    def read_around() -> list[bytes]:
        with fs.open("reads/data.bin", "rb", block_size=10_000) as file:
            assert isinstance(file, RingstoreFile)
            got = [file.read(15_000)]
            file.seek(90_000)
            got.append(file.read())
            file.seek(-100, io.SEEK_END)
            got.append(file.read(40))
            file.seek(0)
            got.append(file.read())
        return got

    assert await off_loop(read_around) == [
        data[:15_000],
        data[90_000:],
        data[-100:-60],
        data,
    ]
    with pytest.raises(FileNotFoundError):
        await off_loop(fs.open, "reads/missing.bin", "rb")


async def test_a_file_replaced_while_open_is_not_read_as_a_splice(fs: RingstoreFileSystem) -> None:
    """Each block is a ranged GET of its own: a file replaced between two blocks was read as
    the first version's start and the second's rest (or cut short), without an error."""
    await off_loop(fs.pipe_file, "reads/replaced.bin", b"A" * 30_000)

    def read_across_a_replacement() -> bytes:
        with fs.open("reads/replaced.bin", "rb", block_size=10_000) as file:
            first = file.read(10_000)
            fs.pipe_file("reads/replaced.bin", b"B" * 30_000)
            return first + file.read()

    with pytest.raises(OSError, match="replaced while it was open") as raised:
        await off_loop(read_across_a_replacement)
    assert raised.value.errno == errno.ESTALE


async def test_open_for_writing_streams_and_stores_on_close(
    fs: RingstoreFileSystem, cluster: LocalCluster
) -> None:
    data = payload(300_000, seed=3)
    name = "writes/streamed.csv"

    def streaming() -> bool:
        return any(peer.chunks.writing for peer in cluster.peers)

    def write() -> RingstoreFile:
        with Client(cluster.urls[4]) as watcher, fs.open(name, "wb", block_size=64 << 10) as file:
            for start in range(0, len(data), 50_000):
                file.write(data[start : start + 50_000])
                # streamed as written, but invisible until the file is closed
                assert not watcher.exists(name)
            deadline = time.monotonic() + 30
            while not streaming():  # chunks of it are on their way to their holders
                assert time.monotonic() < deadline, "no chunk of the file was sent before close"
                time.sleep(0.01)
        assert isinstance(file, RingstoreFile)
        return file

    written = await off_loop(write)
    assert written.stored is not None
    assert written.stored.size == len(data)
    assert await off_loop(fs.cat_file, name) == data
    assert (await off_loop(fs.info, name))["content_type"] == "text/csv"


async def test_a_write_left_by_an_error_stores_nothing(fs: RingstoreFileSystem) -> None:
    name = "writes/abandoned.bin"

    def write_then_fail() -> None:
        with fs.open(name, "wb", block_size=16 << 10) as file:
            file.write(payload(100_000, seed=4))  # several blocks already sent
            raise RuntimeError("the writer gives up")

    with pytest.raises(RuntimeError, match="gives up"):
        await off_loop(write_then_fail)
    assert not await off_loop(fs.exists, name)


async def test_exclusive_writes_append_and_transactions(fs: RingstoreFileSystem) -> None:
    await off_loop(fs.pipe_file, "writes/once.txt", b"first")

    def write(mode: str, **kwargs: Any) -> None:
        with fs.open("writes/once.txt", mode, **kwargs) as file:
            file.write(b"second")

    with pytest.raises(FileExistsError):
        await off_loop(write, "xb")
    with pytest.raises(NotImplementedError):
        await off_loop(write, "ab")
    with pytest.raises(NotImplementedError):
        await off_loop(write, "wb", autocommit=False)
    assert await off_loop(fs.cat_file, "writes/once.txt") == b"first"
    with pytest.raises(FileExistsError):
        await off_loop(fs.pipe_file, "writes/once.txt", b"x", mode="create")
    await off_loop(fs.rm, "writes/once.txt")
    await off_loop(write, "xb")
    assert await off_loop(fs.cat_file, "writes/once.txt") == b"second"


async def test_rm_copy_put_get_mkdir_and_rmdir(fs: RingstoreFileSystem, tmp_path: Path) -> None:
    for name in ["trees/a/1.bin", "trees/a/2.bin", "trees/a/b/3.bin", "trees/keep.bin"]:
        await off_loop(fs.pipe_file, name, name.encode())
    await off_loop(fs.rm, "trees/a", recursive=True)
    assert await off_loop(fs.find, "trees") == ["trees/keep.bin"]
    with pytest.raises(FileNotFoundError):
        await off_loop(fs.rm, "trees/gone.bin")
    await off_loop(fs.cp_file, "trees/keep.bin", "trees/copy.bin")
    assert await off_loop(fs.cat_file, "trees/copy.bin") == b"trees/keep.bin"
    local = tmp_path / "up.txt"
    local.write_bytes(payload(30_000, seed=5))
    await off_loop(fs.put, str(local), "trees/up.txt")
    await off_loop(fs.get, "trees/up.txt", str(tmp_path / "down.txt"))
    assert (tmp_path / "down.txt").read_bytes() == local.read_bytes()

    await off_loop(fs.mkdir, "made-by-mkdir/some/folder")  # the namespace; folders need nothing
    assert "made-by-mkdir" in await off_loop(fs.ls, "", detail=False)
    assert await off_loop(fs.ls, "made-by-mkdir") == []
    await off_loop(fs.makedirs, "made-by-mkdir", exist_ok=True)
    with pytest.raises(FileExistsError):
        await off_loop(fs.makedirs, "made-by-mkdir")
    await off_loop(fs.rmdir, "made-by-mkdir")
    assert not await off_loop(fs.exists, "made-by-mkdir")


async def test_a_key_without_the_grant_gets_permission_errors(
    fs: RingstoreFileSystem, options: dict[str, Any]
) -> None:
    await off_loop(fs.pipe_file, "guarded/file.txt", b"secret")
    key = await off_loop(fs.client.create_key, "fsspec-reader", read=["guarded"])
    try:
        reader = RingstoreFileSystem(
            **options, access_key=key["access_key"], secret_key=key["secret_key"]
        )
        assert await off_loop(reader.cat_file, "guarded/file.txt") == b"secret"
        with pytest.raises(PermissionError):
            await off_loop(reader.pipe_file, "guarded/other.txt", b"x")

        def write() -> None:
            with reader.open("guarded/streamed.txt", "wb", block_size=8192) as file:
                file.write(b"x" * 20_000)

        with pytest.raises(PermissionError):
            await off_loop(write)
        assert not await off_loop(fs.exists, "guarded/streamed.txt")
    finally:
        await off_loop(fs.client.revoke_key, key["access_key"])


async def test_pandas_round_trip(options: dict[str, Any]) -> None:
    frame = pd.DataFrame({"peer": [f"p{i}" for i in range(2000)], "chunks": range(2000)})
    url = "ringstore://frames/data.csv"
    await off_loop(frame.to_csv, url, index=False, storage_options=options)
    back = await off_loop(pd.read_csv, url, storage_options=options)
    pd.testing.assert_frame_equal(back, frame)

    def first_line() -> bytes:
        with fsspec.open(url, "rb", **options) as file:
            line: bytes = file.readline()
        return line

    assert await off_loop(first_line) == b"peer,chunks\n"


async def test_bytes_damaged_on_their_way_are_an_io_error(
    fs: RingstoreFileSystem, cluster: LocalCluster, tmp_path: Path
) -> None:
    """A whole file that does not hash to its etag is EIO to fsspec's callers (cat, get)."""
    data = payload(40_000, seed=8)
    await off_loop(fs.pipe_file, "damaged/table.bin", data)
    proxy = Served()
    await proxy.serve(damaging_proxy(cluster[2].url))
    try:
        damaging = RingstoreFileSystem(f"http://127.0.0.1:{proxy.port}", skip_instance_cache=True)
        for call, args in ((damaging.cat_file, ()), (damaging.get_file, (str(tmp_path / "t"),))):
            with pytest.raises(OSError, match="do not hash to its etag") as raised:
                await off_loop(call, "damaged/table.bin", *args)
            assert raised.value.errno == errno.EIO
        assert not (tmp_path / "t").exists()
        await off_loop(damaging.close)
    finally:
        await proxy.stop()
