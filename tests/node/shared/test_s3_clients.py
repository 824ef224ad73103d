"""The S3 frontend with the real command-line and filesystem clients: awscli, rclone, s3fs.

awscli runs as a subprocess (``python -m awscli``, from the same environment) against one
peer's S3 port, with the credentials file ``ringstore up`` writes (``DATA/credentials``, the
first peer's here, written by the same function) and a config file of its own; nothing but
``AWS_*`` variables pointed at those files reaches it, and it talks to 127.0.0.1 only.
``multipart_chunksize`` is S3's 5 MiB part minimum in that config, so ``aws s3 cp`` of a
file above awscli's 8 MiB threshold goes in two parts. s3fs (fsspec) runs its
blocking API in a worker thread, so the peers keep serving on the module's loop.

rclone (Debian's, a system program: ``require_tool``) runs the same way, configured by
``RCLONE_CONFIG_<REMOTE>_*`` variables alone (its config file an empty one of the test's,
its home a temporary folder), with ``--s3-upload-cutoff`` and ``--s3-chunk-size`` low
enough that one file goes in two parts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import s3fs

from node.disk.data_dir import CREDENTIALS_FILE
from tests.harness import LocalCluster
from tests.harness.access import ADMIN
from tests.harness.tools import require_tool

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
    pytest.mark.clients,
]
AWS_TIMEOUT = 90.0  # one aws command, start-up (~1 s of imports) included
BIG = 9 * 1024 * 1024 + 7  # above awscli's 8 MiB multipart threshold
PART = 5 * 1024 * 1024  # awscli's part size here: BIG goes in 2 parts


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    # 64 KiB blocks: the 9 MiB file is 29 stripes, not 460 of the shared cluster's 4 KiB
    return {"s3_port": 0, "block_size": 64 * 1024}


class AwsCli:
    """``aws`` against one peer, with a throw-away config and home."""

    def __init__(self, cluster: LocalCluster, home: Path) -> None:
        self.endpoint = cluster[1].s3_url
        config = home / "aws-config"
        config.write_text(
            "[default]\n"
            "region = us-east-1\n"
            "max_attempts = 1\n"
            "s3 =\n"
            "  addressing_style = path\n"
            "  multipart_threshold = 8MB\n"
            f"  multipart_chunksize = {PART}\n"
        )
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "AWS_SHARED_CREDENTIALS_FILE": str(cluster[0].data_dir / CREDENTIALS_FILE),
            "AWS_CONFIG_FILE": str(config),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            "NO_PROXY": "127.0.0.1",
        }

    async def __call__(self, *args: str, stdin: bytes = b"") -> str:
        """Run ``aws --endpoint-url URL ARGS`` with ``stdin``; its stdout. Fails the test on a
        non-zero exit."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "awscli", "--endpoint-url", self.endpoint, *args,
            env=self.env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin), AWS_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, f"aws {' '.join(args)}: {err.decode()}{out.decode()}"
        return out.decode()


@pytest.fixture
def aws(cluster: LocalCluster, tmp_path: Path) -> AwsCli:
    home = tmp_path / "home"
    home.mkdir()
    return AwsCli(cluster, home)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_aws_s3_mb_cp_up_and_down_and_head_object(aws: AwsCli, tmp_path: Path) -> None:
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"hello from awscli\n")
    big.write_bytes(os.urandom(BIG))
    assert "make_bucket: aws-cp" in await aws("s3", "mb", "s3://aws-cp")
    await aws("s3", "cp", str(small), "s3://aws-cp/notes/small.txt")
    await aws("s3", "cp", str(big), "s3://aws-cp/blobs/big.bin", "--content-type", "x/y")
    back = tmp_path / "back"
    await aws("s3", "cp", "s3://aws-cp/notes/small.txt", str(back / "small.txt"))
    await aws("s3", "cp", "s3://aws-cp/blobs/big.bin", str(back / "big.bin"))
    assert (back / "small.txt").read_bytes() == small.read_bytes()
    assert hashlib.sha256((back / "big.bin").read_bytes()).digest() == (
        hashlib.sha256(big.read_bytes()).digest()
    )
    head = json.loads(
        await aws("s3api", "head-object", "--bucket", "aws-cp", "--key", "blobs/big.bin")
    )
    assert head["ContentLength"] == BIG
    assert head["ContentType"] == "x/y"
    parts = [big.read_bytes()[i : i + PART] for i in range(0, BIG, PART)]
    md5s = b"".join(hashlib.md5(part, usedforsecurity=False).digest() for part in parts)
    assert head["ETag"] == f'"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-2"'


async def test_aws_s3_sync_twice_uploads_only_once(aws: AwsCli, tmp_path: Path) -> None:
    local = tmp_path / "site"
    files = {"index.html": b"<p>hi</p>", "css/a.css": b"a{}", "img/x/y.bin": b"\0" * 70_000}
    for name, body in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(body)
    await aws("s3", "mb", "s3://aws-sync")
    first = await aws("s3", "sync", str(local), "s3://aws-sync/site")
    assert first.count("upload:") == 3, first
    second = await aws("s3", "sync", str(local), "s3://aws-sync/site")
    assert "upload:" not in second, second
    (local / "css/a.css").write_bytes(b"a{color:red}")
    third = await aws("s3", "sync", str(local), "s3://aws-sync/site")
    assert third.count("upload:") == 1, third
    assert "css/a.css" in third
    down = tmp_path / "down"
    await aws("s3", "sync", "s3://aws-sync/site", str(down))
    assert tree(down) == tree(local)


async def test_aws_s3_ls_recursive_and_folders_then_rm_recursive(aws: AwsCli) -> None:
    await aws("s3", "mb", "s3://aws-ls")
    for key in ("top.txt", "docs/a.txt", "docs/b.txt", "docs/deep/c.txt", "logs/1.log"):
        await aws("s3", "cp", "-", f"s3://aws-ls/{key}", stdin=key.encode())
    assert "aws-ls" in await aws("s3", "ls")
    top = await aws("s3", "ls", "s3://aws-ls/")
    assert {"PRE docs/", "PRE logs/"} <= {line.strip() for line in top.splitlines()}
    assert "top.txt" in top
    assert "a.txt" not in top
    folder = await aws("s3", "ls", "s3://aws-ls/docs/")
    assert "PRE deep/" in folder
    assert sorted(line.split()[-1] for line in folder.splitlines()) == ["a.txt", "b.txt", "deep/"]
    everything = await aws("s3", "ls", "--recursive", "s3://aws-ls/")
    keys = sorted(line.split()[-1] for line in everything.splitlines())
    assert keys == ["docs/a.txt", "docs/b.txt", "docs/deep/c.txt", "logs/1.log", "top.txt"]
    removed = await aws("s3", "rm", "--recursive", "s3://aws-ls/docs/")
    assert removed.count("delete:") == 3, removed
    left = await aws("s3", "ls", "--recursive", "s3://aws-ls/")
    assert sorted(line.split()[-1] for line in left.splitlines()) == ["logs/1.log", "top.txt"]
    await aws("s3", "rm", "--recursive", "s3://aws-ls/")
    await aws("s3", "rb", "s3://aws-ls")
    assert "aws-ls" not in await aws("s3", "ls")


# --- rclone ----------------------------------------------------------------------------------

RCLONE_TIMEOUT = 90.0  # one rclone command


class Rclone:
    """``rclone`` with remote ``rs:`` on one peer's S3 port, configured by environment
    variables only (as docs/s3.md's config file says it), one try per request."""

    def __init__(self, program: str, endpoint: str, home: Path) -> None:
        config = home / "rclone.conf"
        config.write_text("")  # (none of the user's: the remote is in the environment)
        self.command = [
            program, "--config", str(config), "--retries", "1", "--low-level-retries", "1",
            "--contimeout", "10s", "--timeout", "60s", "--s3-upload-cutoff", "1M",
            "--s3-chunk-size", "5M",
        ]  # fmt: skip
        remote = {
            "TYPE": "s3",
            "PROVIDER": "Other",
            "ENDPOINT": endpoint,
            "ACCESS_KEY_ID": ADMIN[0],
            "SECRET_ACCESS_KEY": ADMIN[1],
            "REGION": "us-east-1",
            "FORCE_PATH_STYLE": "true",
        }
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "NO_PROXY": "127.0.0.1",
            **{f"RCLONE_CONFIG_RS_{field}": value for field, value in remote.items()},
        }

    async def __call__(self, *args: str) -> tuple[str, str]:
        """Run ``rclone ARGS``: its stdout and stderr (its log). Fails the test on a
        non-zero exit; the process is killed past ``RCLONE_TIMEOUT``."""
        process = await asyncio.create_subprocess_exec(
            *self.command, *args, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), RCLONE_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, f"rclone {' '.join(args)}: {err.decode()}{out.decode()}"
        return out.decode(), err.decode()

    async def listing(self, path: str) -> dict[str, dict[str, Any]]:
        """``lsjson --recursive --hash`` of ``path``: each file's entry by path."""
        out, _ = await self("lsjson", "--recursive", "--hash", "--files-only", path)
        return {entry["Path"]: entry for entry in json.loads(out)}


def md5s(root: Path) -> dict[str, str]:
    return {
        name: hashlib.md5(body, usedforsecurity=False).hexdigest()
        for name, body in tree(root).items()
    }


async def test_rclone_copy_check_sync_and_purge(cluster: LocalCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    rclone = Rclone(require_tool("rclone"), cluster[3].s3_url, home)
    local = tmp_path / "album"
    files = {
        "a.txt": b"first\n",
        "notes/b.txt": b"second\n" * 100,
        "notes/deep/c.md": b"# third\n",
        "big.bin": os.urandom(7 * 1024 * 1024 + 11),  # past the 1M cutoff: parts of 5M + 2M
    }
    for name, body in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(body)
    await rclone("mkdir", "rs:rclone-album")
    await rclone("copy", str(local), "rs:rclone-album/2026")
    listed = await rclone.listing("rs:rclone-album/2026")
    assert {name: entry["Size"] for name, entry in listed.items()} == {
        name: len(body) for name, body in files.items()
    }
    # every MD5 known, the multipart one's too (rclone keeps it as X-Amz-Meta-Md5chksum)
    assert {name: entry["Hashes"]["md5"] for name, entry in listed.items()} == md5s(local)
    big = await cluster[0].coordinator.stat("rclone-album/2026/big.bin")
    assert len(big.segments) == 2  # (a multipart upload: 5M + 2M)
    _, checked = await rclone("check", str(local), "rs:rclone-album/2026")
    assert "0 differences found" in checked, checked
    assert "4 matching files" in checked, checked
    assert "hashes could not be checked" not in checked, checked
    out, _ = await rclone("ls", "rs:rclone-album")
    assert sorted(line.split()[-1] for line in out.splitlines()) == sorted(
        f"2026/{name}" for name in files
    )
    # a change, a removal and an addition: sync makes the remote the same again
    (local / "a.txt").write_bytes(b"first, changed\n")
    (local / "notes/b.txt").unlink()
    (local / "new.txt").write_bytes(b"fourth\n")
    await rclone("sync", str(local), "rs:rclone-album/2026")
    _, checked = await rclone("check", str(local), "rs:rclone-album/2026")
    assert "0 differences found" in checked, checked
    listed = await rclone.listing("rs:rclone-album/2026")
    assert {name: entry["Hashes"]["md5"] for name, entry in listed.items()} == md5s(local)
    down = tmp_path / "down"
    await rclone("copy", "rs:rclone-album/2026", str(down))
    assert tree(down) == tree(local)
    await rclone("delete", "rs:rclone-album/2026/notes")
    assert set(await rclone.listing("rs:rclone-album")) == {
        "2026/a.txt", "2026/big.bin", "2026/new.txt"
    }  # fmt: skip
    await rclone("purge", "rs:rclone-album")
    buckets, _ = await rclone("lsd", "rs:")
    assert "rclone-album" not in buckets


# --- s3fs ------------------------------------------------------------------------------------


def s3fs_round_trip(endpoint: str) -> dict[str, Any]:
    """Through s3fs's blocking API: make a bucket, write, read, list, remove."""
    fs = s3fs.S3FileSystem(
        key=ADMIN[0],
        secret=ADMIN[1],
        endpoint_url=endpoint,
        client_kwargs={"region_name": "us-east-1"},
        config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    seen: dict[str, Any] = {}
    fs.mkdir("fsspec-bucket")
    with fs.open("fsspec-bucket/tables/data.csv", "wb") as out:
        out.write(b"a,b\n1,2\n")
    fs.pipe("fsspec-bucket/tables/more.csv", b"a,b\n3,4\n" * 10_000)
    with fs.open("fsspec-bucket/tables/data.csv", "rb") as read:
        seen["read"] = read.read()
    seen["ranged"] = fs.cat_file("fsspec-bucket/tables/more.csv", start=4, end=8)
    seen["ls"] = sorted(fs.ls("fsspec-bucket/tables", detail=False))
    seen["size"] = fs.info("fsspec-bucket/tables/more.csv")["size"]
    seen["folders"] = fs.ls("fsspec-bucket", detail=False)
    fs.rm("fsspec-bucket/tables/data.csv")
    seen["after_rm"] = fs.ls("fsspec-bucket/tables", detail=False)
    seen["exists"] = fs.exists("fsspec-bucket/tables/data.csv")
    fs.rm("fsspec-bucket", recursive=True)
    seen["buckets"] = [b for b in fs.ls("", detail=False) if b.startswith("fsspec-")]
    return seen


async def test_s3fs_writes_reads_lists_and_removes(cluster: LocalCluster) -> None:
    seen = await asyncio.to_thread(s3fs_round_trip, cluster[2].s3_url)
    assert seen["read"] == b"a,b\n1,2\n"
    assert seen["ranged"] == b"3,4\n"
    assert seen["ls"] == ["fsspec-bucket/tables/data.csv", "fsspec-bucket/tables/more.csv"]
    assert seen["size"] == 80_000
    assert seen["folders"] == ["fsspec-bucket/tables"]
    assert seen["after_rm"] == ["fsspec-bucket/tables/more.csv"]
    assert seen["exists"] is False
    assert seen["buckets"] == []
