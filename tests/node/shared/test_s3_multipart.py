"""S3 multipart uploads with boto3 against seven in-process peers.

boto3's own ``upload_file`` and ``download_file`` (with the multipart threshold lowered to
S3's 5 MiB part minimum, so a 20 MiB file goes in 4 parts), the operations one by one, the
errors S3 defines for them, reads of the segmented object through S3 and the native API
(ranges across part boundaries, two peers stopped), and what happens to the parts when the
object is deleted, the upload aborted or left unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import boto3
import boto3.s3.transfer
import pytest
import pytest_asyncio
from botocore.client import BaseClient
from botocore.exceptions import IncompleteReadError, ResponseStreamingError

from node.api.keys import UPLOADS
from node.datapath.uploads import Uploads
from node.errors import ChunkNotFound, Unavailable, UploadNotFound
from node.model.manifest import Manifest
from node.model.multipart import (
    ABORTED,
    COMPLETED,
    COMPLETING,
    MAX_PARTS,
    MIN_PART_SIZE,
    Segment,
    UploadRecord,
    new_attempt_id,
    part_name,
    part_number,
    part_prefix,
    upload_record_name,
)
from tests.harness import LocalCluster, eventually
from tests.harness.access import ADMIN_HEADERS
from tests.node.shared.test_s3 import client, new_bucket, refused, s3

pytestmark = pytest.mark.asyncio(loop_scope="module")
MiB = 1 << 20
GRACE = 2.0  # the module's --multipart-grace (s): only passes the GC test starts collect


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    # 64 KiB blocks: 20 MiB objects in fewer stripes than the shared 4 KiB would make.
    return {"s3_port": 0, "block_size": 64 << 10, "multipart_grace": GRACE}


@pytest_asyncio.fixture(loop_scope="module")
async def admin(cluster: LocalCluster) -> AsyncIterator[list[BaseClient]]:
    made = [await s3(client, peer.s3_url) for peer in cluster.peers]
    yield made
    for each in made:
        each.close()


def md5_of_md5s(etags: list[str]) -> str:
    """S3's multipart ETag from the parts' ETags (hex MD5s, quoted as S3 sends them)."""
    digests = b"".join(bytes.fromhex(etag.strip('"')) for etag in etags)
    return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(etags)}"'


async def part_manifests(cluster: LocalCluster, upload_id: str) -> list[Manifest]:
    """The live parts of an upload, with their chunk lists (read from a quorum)."""
    listed, _ = await cluster[0].coordinator.list(part_prefix(upload_id), "", 10_000)
    found = [await cluster[0].replicas.read(m.name) for m in listed]
    return [m for m in found if m is not None and not m.deleted]


def stored(cluster: LocalCluster, chunks: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of ``(holder, chunk id)`` are still on their holder's disk."""
    kept = set()
    for holder, chunk in chunks:
        with contextlib.suppress(ChunkNotFound):
            cluster.holder(holder).chunks.path(chunk)
            kept.add((holder, chunk))
    return kept


async def parts_gone(cluster: LocalCluster, upload_id: str, chunks: set[tuple[str, str]]) -> None:
    """Wait until an upload's parts have tombstones and their chunks are deleted."""

    async def gone() -> bool:
        return not await part_manifests(cluster, upload_id) and not stored(cluster, chunks)

    await eventually(gone, timeout=30, what=f"the parts of {upload_id} deleted")


async def native_get(url: str, name: str, headers: dict[str, str] | None = None) -> bytes:
    async with (
        aiohttp.ClientSession(headers=ADMIN_HEADERS) as http,
        http.get(f"{url}/files/{name}", headers=headers or {}) as response,
    ):
        assert response.status in (200, 206), await response.text()
        return await response.read()


# --- boto3's managed transfer --------------------------------------------------------------


async def test_upload_file_in_parts_reads_back_whole_and_by_range(
    cluster: LocalCluster, admin: list[BaseClient], tmp_path: Path
) -> None:
    bucket = await new_bucket(admin[0], "mp-transfer")
    data = os.urandom(20 * MiB)
    source, target = tmp_path / "up.bin", tmp_path / "down.bin"
    source.write_bytes(data)
    seen: dict[str, Any] = {"etags": {}}

    def created(parsed: dict[str, Any], **_: Any) -> None:
        seen["upload_id"] = parsed["UploadId"]

    def part_sent(parsed: dict[str, Any], params: dict[str, Any], **_: Any) -> None:
        seen["etags"][params["PartNumber"]] = parsed["ETag"]

    uploader = admin[1]
    uploader.meta.events.register("after-call.s3.CreateMultipartUpload", created)
    uploader.meta.events.register("provide-client-params.s3.UploadPart", _remember_params)
    uploader.meta.events.register("after-call.s3.UploadPart", _with_params(seen, part_sent))
    config = boto3.s3.transfer.TransferConfig(
        multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4
    )
    await s3(uploader.upload_file, str(source), bucket, "big/file.bin", Config=config)

    etags = [seen["etags"][number] for number in sorted(seen["etags"])]
    assert len(etags) == 4
    head = await s3(admin[2].head_object, Bucket=bucket, Key="big/file.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == md5_of_md5s(etags)
    chunks = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    assert etags == [f'"{hashlib.md5(c, usedforsecurity=False).hexdigest()}"' for c in chunks]
    single = await s3(admin[3].put_object, Bucket=bucket, Key="part-one", Body=data[: 5 * MiB])
    assert single["ETag"] == etags[0]  # a part's ETag is the digest a PUT of it gives

    await s3(admin[4].download_file, bucket, "big/file.bin", str(target), Config=config)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()

    boundary = 5 * MiB
    ranged = await s3(
        admin[5].get_object,
        Bucket=bucket,
        Key="big/file.bin",
        Range=f"bytes={boundary - 1000}-{2 * boundary + 999}",
    )
    assert await s3(ranged["Body"].read) == data[boundary - 1000 : 2 * boundary + 1000]
    assert ranged["ContentRange"] == f"bytes {boundary - 1000}-{2 * boundary + 999}/{len(data)}"

    native = await native_get(cluster[6].url, f"{bucket}/big/file.bin")
    assert hashlib.sha256(native).digest() == hashlib.sha256(data).digest()
    tail = await native_get(
        cluster[0].url, f"{bucket}/big/file.bin", {"Range": f"bytes=-{boundary + 7}"}
    )
    assert tail == data[-(boundary + 7) :]
    manifest = await cluster[0].coordinator.stat(f"{bucket}/big/file.bin")
    assert [part_number(s.name) for s in manifest.segments] == [1, 2, 3, 4]
    assert all(s.name.startswith(part_prefix(seen["upload_id"])) for s in manifest.segments)
    assert not manifest.chunks  # the parts' chunks are referenced, never copied

    # the upload is over: its record says so, and only the object lists
    record = await cluster[0].replicas.read(
        upload_record_name(bucket, "big/file.bin", seen["upload_id"])
    )
    assert record is not None
    done = UploadRecord.from_bytes(record.inline)
    assert (done.state, done.object_version) == (COMPLETED, str(manifest.version))
    listed = await s3(admin[0].list_objects_v2, Bucket=bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == ["big/file.bin", "part-one"]
    uploads = await s3(admin[0].list_multipart_uploads, Bucket=bucket)
    assert "Uploads" not in uploads

    # deleting the object deletes its parts, chunks and all
    parts = await part_manifests(cluster, seen["upload_id"])
    chunks = {pair for part in parts for pair in part.placed_chunks()}
    assert len(parts) == 4
    assert stored(cluster, chunks) == chunks
    await s3(admin[1].delete_object, Bucket=bucket, Key="big/file.bin")
    await parts_gone(cluster, seen["upload_id"], chunks)
    assert await refused(admin[2].head_object, Bucket=bucket, Key="big/file.bin") == ("404", 404)


def _remember_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """Keep an UploadPart's parameters in its request's context, for ``_with_params``."""
    context["mp_params"] = dict(params)


def _with_params(seen: dict[str, Any], handler: Callable[..., None]) -> Callable[..., None]:
    def call(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        handler(parsed=parsed, params=context["mp_params"])

    return call


# --- the operations one by one -------------------------------------------------------------


async def upload_parts(
    admin: BaseClient, bucket: str, key: str, parts: list[bytes]
) -> tuple[str, list[dict[str, Any]]]:
    """Create an upload and send ``parts``; its id and the Parts list Complete takes."""
    created = await s3(admin.create_multipart_upload, Bucket=bucket, Key=key)
    upload_id: str = created["UploadId"]
    listed = []
    for number, part in enumerate(parts, 1):
        sent = await s3(
            admin.upload_part,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=part,
        )
        listed.append({"PartNumber": number, "ETag": sent["ETag"]})
    return upload_id, listed


async def test_a_segmented_object_reads_with_two_peers_stopped(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "mp-degraded")
    parts = [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), b"tail" * 1000]
    upload_id, listed = await upload_parts(admin[1], bucket, "k", parts)
    done = await s3(
        admin[2].complete_multipart_upload,
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": listed},
    )
    assert done["ETag"] == md5_of_md5s([p["ETag"] for p in listed])
    stopped = [cluster[1], cluster[2]]
    try:
        for peer in stopped:
            await peer.stop()
        for peer in stopped:
            await cluster.wait_down(peer)
        got = await s3(admin[0].get_object, Bucket=bucket, Key="k")
        assert await s3(got["Body"].read) == b"".join(parts)
        native = await native_get(cluster[3].url, f"{bucket}/k", {"Range": "bytes=5242870-5242890"})
        assert native == b"".join(parts)[5242870:5242891]
    finally:
        for peer in stopped:
            await peer.restart()
        await cluster.wait_converged()


async def complete(admin: BaseClient, bucket: str, key: str, upload_id: str, parts: Any) -> Any:
    return await s3(
        admin.complete_multipart_upload,
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
    )


async def not_completed(
    admin: BaseClient, bucket: str, key: str, upload_id: str, parts: Any
) -> tuple[str, int]:
    return await refused(
        admin.complete_multipart_upload,
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
    )


async def record_of(
    cluster: LocalCluster, bucket: str, upload_id: str, key: str = "k"
) -> UploadRecord | None:
    found = await cluster[0].replicas.read(upload_record_name(bucket, key, upload_id))
    return None if found is None or found.deleted else UploadRecord.from_bytes(found.inline)


def uploads_of(peer: Any) -> Uploads:
    assert peer.app is not None
    uploads: Uploads = peer.app[UPLOADS]
    return uploads


async def held(data: bytes, started: asyncio.Event, release: asyncio.Event) -> AsyncIterator[bytes]:
    """A part's body that stops after its first bytes until ``release``."""
    yield data[:100]
    started.set()
    await release.wait()
    yield data[100:]


async def test_an_abort_after_a_half_failed_complete_keeps_the_object_s_parts(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """Complete commits the object, then fails to mark its record completed (a peer lost
    in between): the object is there, so the client is told so; the record stays held
    (completing), so an Abort is refused (OperationAborted) until the lease, after which it
    finds the object committed and marks the upload completed. The object reads whole
    throughout."""
    bucket = await new_bucket(admin[0], "mp-half-complete")
    parts = [os.urandom(MIN_PART_SIZE), b"end" * 1000]
    upload_id, listed = await upload_parts(admin[1], bucket, "k", parts)
    coordinating = uploads_of(cluster[2])
    change = coordinating._change

    async def failing_mark(current: Manifest, record: UploadRecord) -> Manifest:
        if record.state == COMPLETED:
            raise Unavailable("the record's replicas are gone (test)")
        return await change(current, record)

    with mock.patch.object(coordinating, "_change", failing_mark):
        done = await complete(admin[2], bucket, "k", upload_id, listed)
    assert done["ETag"] == md5_of_md5s([p["ETag"] for p in listed])
    held_record = await record_of(cluster, bucket, upload_id)
    assert held_record is not None
    assert held_record.state == COMPLETING
    code = await refused(
        admin[3].abort_multipart_upload, Bucket=bucket, Key="k", UploadId=upload_id
    )
    assert code == ("OperationAborted", 409)
    got = await s3(admin[4].get_object, Bucket=bucket, Key="k")
    assert await s3(got["Body"].read) == b"".join(parts)

    with mock.patch.object(uploads_of(cluster[3]), "_stale", return_value=True):
        code = await refused(
            admin[3].abort_multipart_upload, Bucket=bucket, Key="k", UploadId=upload_id
        )
    assert code == ("NoSuchUpload", 404)  # taken back: completed, so not abortable
    recovered = await record_of(cluster, bucket, upload_id)
    assert recovered is not None
    assert recovered.state == COMPLETED
    again = await complete(admin[5], bucket, "k", upload_id, listed)  # answered as the first
    assert again["ETag"] == done["ETag"]
    got = await s3(admin[4].get_object, Bucket=bucket, Key="k")
    assert await s3(got["Body"].read) == b"".join(parts)


async def test_a_complete_that_died_before_its_commit_is_rolled_back_after_the_lease(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """The object's commit fails (503): the record stays held, since the commit may yet
    surface; a Complete sent again within the lease is refused (OperationAborted), one
    after it finds no object, puts the upload back to open and completes it."""
    bucket = await new_bucket(admin[0], "mp-dead-complete")
    parts = [os.urandom(MIN_PART_SIZE), b"end" * 1000]
    upload_id, listed = await upload_parts(admin[1], bucket, "k", parts)
    coordinator = uploads_of(cluster[2])._coordinator

    async def unavailable(*args: Any, **kwargs: Any) -> Manifest:
        raise Unavailable("manifest replicas lost (test)")

    given = [(p["PartNumber"], p["ETag"]) for p in listed]
    with (
        mock.patch.object(coordinator, "put_segmented", unavailable),
        pytest.raises(Unavailable),
    ):
        await uploads_of(cluster[2]).complete(bucket, upload_id, f"{bucket}/k", given)
    assert await not_completed(admin[3], bucket, "k", upload_id, listed) == (
        "OperationAborted",
        409,
    )
    with mock.patch.object(uploads_of(cluster[3]), "_stale", return_value=True):
        done = await complete(admin[3], bucket, "k", upload_id, listed)
    assert done["ETag"] == md5_of_md5s([p["ETag"] for p in listed])
    got = await s3(admin[4].get_object, Bucket=bucket, Key="k")
    assert await s3(got["Body"].read) == b"".join(parts)


async def test_an_abort_or_another_complete_while_a_complete_commits_is_refused(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """A Complete is held between its reading of the parts and its commit: an Abort and a
    Complete with another part list are refused with S3's OperationAborted (409, "try
    again") and drop nothing; once the first is done, the object reads whole and the
    upload is over (NoSuchUpload)."""
    bucket = await new_bucket(admin[0], "mp-abort-race")
    parts = [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), b"end" * 1000]
    upload_id, listed = await upload_parts(admin[1], bucket, "k", parts)
    coordinator = uploads_of(cluster[2])._coordinator
    commit = coordinator.put_segmented
    entered, release = asyncio.Event(), asyncio.Event()

    async def held_commit(*args: Any, **kwargs: Any) -> Manifest:
        entered.set()
        await release.wait()
        return await commit(*args, **kwargs)

    with mock.patch.object(coordinator, "put_segmented", held_commit):
        first = asyncio.create_task(complete(admin[2], bucket, "k", upload_id, listed))
        try:
            await asyncio.wait_for(entered.wait(), 30)
            code = await refused(
                admin[3].abort_multipart_upload, Bucket=bucket, Key="k", UploadId=upload_id
            )
            assert code == ("OperationAborted", 409)
            other = [listed[0], listed[2]]
            code = await not_completed(admin[4], bucket, "k", upload_id, other)
            assert code == ("OperationAborted", 409)
            # nor does the collection take it back, however short --multipart-grace is
            name = upload_record_name(bucket, "k", upload_id)
            record = await cluster[0].replicas.read(name)
            assert record is not None
            primary = uploads_of(cluster.holder(cluster[0].membership.replicas(name).primary))

            def past_the_grace() -> bool:
                return time.time() - record.version.wall_ms / 1000 > GRACE

            await eventually(past_the_grace, timeout=GRACE + 10, what="the record past the grace")
            assert not await primary.collect_stale(record)
            held_record = await record_of(cluster, bucket, upload_id)
            assert held_record is not None
            assert held_record.state == COMPLETING
        finally:
            release.set()
            done = await first
    assert done["ETag"] == md5_of_md5s([p["ETag"] for p in listed])
    got = await s3(admin[5].get_object, Bucket=bucket, Key="k")
    assert await s3(got["Body"].read) == b"".join(parts)
    code = await refused(
        admin[6].abort_multipart_upload, Bucket=bucket, Key="k", UploadId=upload_id
    )
    assert code == ("NoSuchUpload", 404)
    got = await s3(admin[0].get_object, Bucket=bucket, Key="k")
    assert await s3(got["Body"].read) == b"".join(parts)


async def test_a_part_sent_again_that_ends_after_complete_never_replaces_the_object_s(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """A client's retry of part 2 (the first try timed out) is still being stored when the
    client completes with the first try's ETag: the retry's attempt has a name of its own,
    so it replaces nothing the object names, and it is dropped when it finds the upload
    completed without it (NoSuchUpload)."""
    bucket = await new_bucket(admin[0], "mp-retry-race")
    parts = [os.urandom(MIN_PART_SIZE), os.urandom(200_000)]
    upload_id, listed = await upload_parts(admin[1], bucket, "k", parts)
    started, release = asyncio.Event(), asyncio.Event()
    retry = asyncio.create_task(
        uploads_of(cluster[3]).put_part(
            bucket, upload_id, f"{bucket}/k", 2, held(parts[1], started, release), len(parts[1])
        )
    )
    try:
        await asyncio.wait_for(started.wait(), 30)
        await complete(admin[2], bucket, "k", upload_id, listed)
    finally:
        release.set()
    with pytest.raises(UploadNotFound):
        await retry
    got = await s3(admin[4].get_object, Bucket=bucket, Key="k")
    assert await s3(got["Body"].read) == b"".join(parts)
    named = {s.name for s in (await cluster[5].coordinator.stat(f"{bucket}/k")).segments}
    assert {p.name for p in await part_manifests(cluster, upload_id)} == named


async def test_a_part_stored_after_the_abort_s_pass_is_swept_by_the_collection(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """A part is being stored when its upload is aborted: the Abort's pass over the parts
    misses it, and the peer storing it stops before it can drop it (its look at the record
    fails). The aborted record is kept for the grace; its collection sweeps the parts
    again and takes that one."""
    bucket = await new_bucket(admin[0], "mp-late-part")
    upload_id, _ = await upload_parts(admin[1], bucket, "k", [b"a" * 1000])
    storing = uploads_of(cluster[3])
    started, release = asyncio.Event(), asyncio.Event()
    data = os.urandom(100_000)
    late = asyncio.create_task(
        storing.put_part(
            bucket, upload_id, f"{bucket}/k", 2, held(data, started, release), len(data)
        )
    )
    try:
        await asyncio.wait_for(started.wait(), 30)
        await s3(admin[4].abort_multipart_upload, Bucket=bucket, Key="k", UploadId=upload_id)
        stopping = Unavailable("the peer is stopping (test)")
        with mock.patch.object(storing, "_read", side_effect=stopping):
            release.set()
            with pytest.raises(Unavailable):
                await late
    finally:
        release.set()
    left = await part_manifests(cluster, upload_id)
    assert [part_number(p.name) for p in left] == [2]
    chunks = {pair for part in left for pair in part.placed_chunks()}
    aborted = await record_of(cluster, bucket, upload_id)
    assert aborted is not None
    assert aborted.state == ABORTED
    record = upload_record_name(bucket, "k", upload_id)
    primary = cluster.holder(cluster[0].membership.replicas(record).primary)

    async def swept() -> bool:
        await primary.anti_entropy.check_pass()
        return await record_of(cluster, bucket, upload_id) is None

    await eventually(swept, timeout=30, interval=0.5, what="the aborted upload collected")
    await parts_gone(cluster, upload_id, chunks)


async def test_complete_refuses_what_s3_refuses(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "mp-refusals")
    small = [b"a" * 1000, b"b" * 1000]
    upload_id, listed = await upload_parts(admin[1], bucket, "k", small)

    async def complete(parts: list[dict[str, Any]], upload: str = upload_id) -> tuple[str, int]:
        return await refused(
            admin[2].complete_multipart_upload,
            Bucket=bucket,
            Key="k",
            UploadId=upload,
            MultipartUpload={"Parts": parts},
        )

    assert await complete(listed) == ("EntityTooSmall", 400)
    assert await complete(listed[::-1]) == ("InvalidPartOrder", 400)
    wrong = [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]
    assert await complete(wrong) == ("InvalidPart", 400)
    assert await complete([{"PartNumber": 3, "ETag": listed[0]["ETag"]}]) == ("InvalidPart", 400)
    assert await complete(listed, "f" * 32) == ("NoSuchUpload", 404)
    assert await complete(listed, "not-an-id") == ("NoSuchUpload", 404)
    other_key = await refused(admin[3].list_parts, Bucket=bucket, Key="other", UploadId=upload_id)
    assert other_key == ("NoSuchUpload", 404)
    bad_number = await refused(
        admin[3].upload_part,
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        PartNumber=10_001,
        Body=b"x",
    )
    assert bad_number == ("InvalidArgument", 400)
    # a single part may be small: it is the last
    done = await s3(
        admin[4].complete_multipart_upload,
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": listed[:1]},
    )
    assert done["ETag"] == md5_of_md5s([listed[0]["ETag"]])
    got = await s3(admin[5].get_object, Bucket=bucket, Key="k")
    assert await s3(got["Body"].read) == small[0]
    # the upload is over: no more parts; a Complete sent again gets the same answer
    late = await refused(
        admin[6].upload_part, Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"x"
    )
    assert late == ("NoSuchUpload", 404)
    again = await s3(
        admin[0].complete_multipart_upload,
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": listed[:1]},
    )
    assert again["ETag"] == done["ETag"]
    assert await refused(
        admin[0].abort_multipart_upload, Bucket=bucket, Key="k", UploadId=upload_id
    ) == ("NoSuchUpload", 404)
    await s3(admin[0].put_object, Bucket=bucket, Key="k", Body=b"replaced")
    assert await complete(listed[:1]) == ("NoSuchUpload", 404)  # (its object is gone)
    long_key = "k" * 1000  # a valid key, with no room left for its upload's record name
    assert await refused(admin[0].create_multipart_upload, Bucket=bucket, Key=long_key) == (
        "InvalidArgument",
        400,
    )
    assert await refused(admin[0].create_multipart_upload, Bucket="mp-no-such-bucket", Key="k") == (
        "NoSuchBucket",
        404,
    )


async def test_list_parts_and_uploads_then_abort(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "mp-listing")
    parts = [b"%d" % n * 100 for n in range(1, 6)]
    upload_id, listed = await upload_parts(admin[1], bucket, "dir/one", parts)
    second, _ = await upload_parts(admin[1], bucket, "dir/two", [b"x"])
    third, _ = await upload_parts(admin[1], bucket, "other", [b"y"])

    page = await s3(
        admin[2].list_parts, Bucket=bucket, Key="dir/one", UploadId=upload_id, MaxParts=2
    )
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2]
    assert page["IsTruncated"]
    assert page["NextPartNumberMarker"] == 2
    assert [p["ETag"] for p in page["Parts"]] == [listed[0]["ETag"], listed[1]["ETag"]]
    assert [p["Size"] for p in page["Parts"]] == [100, 100]
    rest = await s3(
        admin[3].list_parts, Bucket=bucket, Key="dir/one", UploadId=upload_id, PartNumberMarker=2
    )
    assert [p["PartNumber"] for p in rest["Parts"]] == [3, 4, 5]
    assert not rest["IsTruncated"]

    uploads = await s3(admin[4].list_multipart_uploads, Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in uploads["Uploads"]] == [
        ("dir/one", upload_id),
        ("dir/two", second),
        ("other", third),
    ]
    prefixed = await s3(admin[4].list_multipart_uploads, Bucket=bucket, Prefix="dir/", MaxUploads=1)
    assert [u["Key"] for u in prefixed["Uploads"]] == ["dir/one"]
    assert prefixed["IsTruncated"]
    following = await s3(
        admin[4].list_multipart_uploads,
        Bucket=bucket,
        Prefix="dir/",
        KeyMarker=prefixed["NextKeyMarker"],
        UploadIdMarker=prefixed["NextUploadIdMarker"],
    )
    assert [u["Key"] for u in following["Uploads"]] == ["dir/two"]
    folded = await s3(admin[4].list_multipart_uploads, Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in folded["CommonPrefixes"]] == ["dir/"]
    assert [u["Key"] for u in folded["Uploads"]] == ["other"]
    # no listing of objects shows uploads or parts
    assert "Contents" not in await s3(admin[5].list_objects_v2, Bucket=bucket)

    chunks = {
        pair for part in await part_manifests(cluster, upload_id) for pair in part.placed_chunks()
    }
    assert len(chunks) == 5 * 7
    await s3(admin[6].abort_multipart_upload, Bucket=bucket, Key="dir/one", UploadId=upload_id)
    await parts_gone(cluster, upload_id, chunks)
    assert await refused(admin[0].list_parts, Bucket=bucket, Key="dir/one", UploadId=upload_id) == (
        "NoSuchUpload",
        404,
    )
    assert await refused(
        admin[0].abort_multipart_upload, Bucket=bucket, Key="dir/one", UploadId=upload_id
    ) == ("NoSuchUpload", 404)
    for key, other in (("dir/two", second), ("other", third)):
        await s3(admin[0].abort_multipart_upload, Bucket=bucket, Key=key, UploadId=other)
    assert "Uploads" not in await s3(admin[1].list_multipart_uploads, Bucket=bucket)


async def test_list_multipart_uploads_pages_by_key_past_completed_uploads_and_the_walk_limit(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """boto3's paginator lists every upload in progress once, by key (bytes) then upload id,
    past completed uploads (their records stay for the grace) and with the walk limit at 3
    records a request: a page the limit cut short is truncated where the walk stopped,
    never silently short."""
    bucket = await new_bucket(admin[0], "mp-list-pages")
    keys = ["b", "a b", "a", "a/b", "a!", "b", "c d/e", "c d/f", "a b"]
    started = []
    for key in keys:
        created = await s3(admin[1].create_multipart_upload, Bucket=bucket, Key=key)
        started.append((key, created["UploadId"]))
    finished = {started[0][1], started[4][1], started[8][1]}
    for key, upload_id in started:
        if upload_id in finished:
            sent = await s3(
                admin[2].upload_part,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=1,
                Body=b"x",
            )
            parts = [{"PartNumber": 1, "ETag": sent["ETag"]}]
            await complete(admin[2], bucket, key, upload_id, parts)
    expected = sorted(
        ((k, u) for k, u in started if u not in finished), key=lambda k: (k[0].encode(), k[1])
    )

    def paginate(**kwargs: Any) -> list[dict[str, Any]]:
        pages = (
            admin[3]
            .get_paginator("list_multipart_uploads")
            .paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}, **kwargs)
        )
        return list(pages)

    with mock.patch("node.datapath.uploads.MAX_WALKED", 3):
        pages = await s3(paginate)
        folded = await s3(paginate, Delimiter="/")
    listed = [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]
    assert listed == expected
    assert any(len(page.get("Uploads", [])) < 2 for page in pages[:-1])  # cut by the walk
    assert all(page["IsTruncated"] for page in pages[:-1])
    rolled = [p["Prefix"] for page in folded for p in page.get("CommonPrefixes", [])]
    assert rolled == ["a/", "c d/"]
    flat = [u["Key"] for page in folded for u in page.get("Uploads", [])]
    assert flat == [k for k, _ in expected if "/" not in k]
    for key, upload_id in expected:
        await s3(admin[4].abort_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id)
    assert "Uploads" not in await s3(admin[5].list_multipart_uploads, Bucket=bucket)


async def test_upload_part_copy_takes_a_range_of_an_object_even_a_segmented_one(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "mp-copy")
    source = [os.urandom(MIN_PART_SIZE), os.urandom(3000)]
    source_id, source_parts = await upload_parts(admin[1], bucket, "src", source)
    await s3(
        admin[1].complete_multipart_upload,
        Bucket=bucket,
        Key="src",
        UploadId=source_id,
        MultipartUpload={"Parts": source_parts},
    )
    whole = b"".join(source)
    created = await s3(admin[2].create_multipart_upload, Bucket=bucket, Key="dst")
    upload_id = created["UploadId"]
    first, last = 100, 100 + MIN_PART_SIZE - 1  # across the source's part boundary
    copied = await s3(
        admin[3].upload_part_copy,
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes={first}-{last}",
    )
    second = await s3(
        admin[4].upload_part_copy,
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=2,
        CopySource=f"{bucket}/src",
        CopySourceRange="bytes=0-9",
    )
    beyond = await refused(
        admin[4].upload_part_copy,
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=3,
        CopySource=f"{bucket}/src",
        CopySourceRange=f"bytes=0-{len(whole)}",
    )
    assert beyond == ("InvalidRange", 416)
    missing = await refused(
        admin[4].upload_part_copy,
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=3,
        CopySource=f"{bucket}/no-such-key",
    )
    assert missing == ("NoSuchKey", 404)
    conditional = await refused(
        admin[4].upload_part_copy,
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=3,
        CopySource=f"{bucket}/src",
        CopySourceIfMatch='"anything"',
    )
    assert conditional == ("NotImplemented", 501)
    etags = [copied["CopyPartResult"]["ETag"], second["CopyPartResult"]["ETag"]]
    done = await s3(
        admin[5].complete_multipart_upload,
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]
        },
    )
    assert done["ETag"] == md5_of_md5s(etags)
    got = await s3(admin[6].get_object, Bucket=bucket, Key="dst")
    assert await s3(got["Body"].read) == whole[first : last + 1] + whole[:10]

    # overwriting a segmented object retires its parts, as deleting it does
    parts = await part_manifests(cluster, source_id)
    chunks = {pair for part in parts for pair in part.placed_chunks()}
    await s3(admin[0].put_object, Bucket=bucket, Key="src", Body=b"plain now")
    await parts_gone(cluster, source_id, chunks)
    got = await s3(admin[1].get_object, Bucket=bucket, Key="src")
    assert await s3(got["Body"].read) == b"plain now"


async def test_an_unfinished_upload_is_collected_after_the_grace(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """The module's peers run with ``--multipart-grace`` of GRACE seconds; the primary
    replica of the upload's record collects it in an anti-entropy pass."""
    bucket = await new_bucket(admin[0], "mp-stale")
    upload_id, _ = await upload_parts(admin[1], bucket, "forgotten", [os.urandom(100_000)])
    chunks = {
        pair for part in await part_manifests(cluster, upload_id) for pair in part.placed_chunks()
    }
    assert len(chunks) == 7
    record = upload_record_name(bucket, "forgotten", upload_id)
    primary = cluster.holder(cluster[0].membership.replicas(record).primary)
    collected = primary.app[UPLOADS].collected if primary.app else 0

    async def gone() -> bool:
        await primary.anti_entropy.check_pass()
        found = await cluster[0].replicas.read(record)
        return found is not None and found.deleted

    await eventually(gone, timeout=30, interval=0.5, what="the stale upload collected")
    await parts_gone(cluster, upload_id, chunks)
    assert primary.app is not None
    assert primary.app[UPLOADS].collected == collected + 1
    code = await refused(admin[2].list_parts, Bucket=bucket, Key="forgotten", UploadId=upload_id)
    assert code == ("NoSuchUpload", 404)


async def test_an_object_that_lost_a_part_is_an_error_never_other_bytes(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "mp-lost")
    upload_id, listed = await upload_parts(admin[1], bucket, "k", [b"a" * MIN_PART_SIZE, b"b"])
    await s3(
        admin[1].complete_multipart_upload,
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": listed},
    )
    named = (await cluster[0].coordinator.stat(f"{bucket}/k")).segments[1].name
    await cluster[0].coordinator.put(named, _body(b"c"), 1, "text/plain")
    # a read that starts in the lost part is an error answer; one that reaches it after the
    # headers went out is cut short (as a file with too few chunks left is)
    lost = f"bytes={MIN_PART_SIZE}-"
    code = await refused(admin[2].get_object, Bucket=bucket, Key="k", Range=lost)
    assert code == ("InternalError", 500)
    whole = await s3(admin[2].get_object, Bucket=bucket, Key="k")
    with pytest.raises((ResponseStreamingError, IncompleteReadError)):
        await s3(whole["Body"].read)
    first = await s3(admin[3].get_object, Bucket=bucket, Key="k", Range="bytes=0-9")
    assert await s3(first["Body"].read) == b"a" * 10  # the parts still there still read
    async with (
        aiohttp.ClientSession(headers=ADMIN_HEADERS) as http,
        http.get(f"{cluster[4].url}/files/{bucket}/k", headers={"Range": lost}) as response,
    ):
        assert response.status == 500
        assert "lost a part" in (await response.json())["error"]["message"]


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_part_s_lost_chunk_is_found_and_rebuilt_as_any_file_s(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """Parts are files: anti-entropy finds a chunk gone from its holder and repair rebuilds
    it, with nothing told about multipart uploads."""
    bucket = await new_bucket(admin[0], "mp-repair")
    parts = [os.urandom(MIN_PART_SIZE), os.urandom(70_000)]
    upload_id, listed = await upload_parts(admin[1], bucket, "k", parts)
    await s3(
        admin[1].complete_multipart_upload,
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": listed},
    )
    part = next(p for p in await part_manifests(cluster, upload_id) if p.size == 70_000)
    holder, chunk = sorted(part.placed_chunks())[0]
    path = cluster.holder(holder).chunks.path(chunk)
    path.unlink()
    primary = cluster.holder(cluster[0].membership.replicas(part.name).primary)
    await primary.anti_entropy.check_pass()
    await eventually(path.is_file, timeout=20, what="the part's chunk rebuilt on its holder")
    got = await s3(admin[2].get_object, Bucket=bucket, Key="k")
    assert await s3(got["Body"].read) == b"".join(parts)


async def test_a_manifest_of_ten_thousand_segments_is_stored_read_and_deleted(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """The most parts S3 allows fit a manifest on the wire and on disk; a ranged read
    fetches only the parts it covers. (Built through the coordinator: 10,000 real uploads
    would take too long here; every segment names one 3-byte part.)"""
    bucket = await new_bucket(admin[0], "mp-many")
    stored = part_name("e" * 32, 1, new_attempt_id())
    part = await cluster[1].coordinator.put(stored, _body(b"abc"), 3, "x/y")
    segment = Segment(part.name, part.version, part.size, part.etag)
    made = await cluster[2].coordinator.put_segmented(
        f"{bucket}/many", (segment,) * MAX_PARTS, "etag-10000", "text/plain"
    )
    assert made.size == 3 * MAX_PARTS
    head = await s3(admin[3].head_object, Bucket=bucket, Key="many")
    assert head["ContentLength"] == 3 * MAX_PARTS
    got = await s3(admin[4].get_object, Bucket=bucket, Key="many", Range="bytes=-4")
    assert await s3(got["Body"].read) == b"cabc"
    await s3(admin[5].delete_object, Bucket=bucket, Key="many")

    async def part_deleted() -> bool:
        found = await cluster[0].replicas.read(part.name)
        return found is not None and found.deleted

    await eventually(part_deleted, timeout=30, what="the one part retired")
