"""S3 reads of one part (``partNumber``) and checksums kept with objects, with boto3.

GetObject and HeadObject with ``PartNumber``: a multipart object's part N is a 206 of its
bytes with their Content-Range and ``x-amz-mp-parts-count``; an object not uploaded in parts
is one part; a number past the last part is InvalidPartNumber (416), a Range beside one is
InvalidRequest, as AWS answers. The ``x-amz-checksum-*`` a PutObject sent is checked, echoed,
kept and given back with ``ChecksumMode=ENABLED`` (never with a Range or a part).
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from botocore.client import BaseClient

from node.api.keys import CONFIG
from node.model.multipart import MIN_PART_SIZE
from tests.harness import LocalCluster
from tests.node.shared.test_s3 import client, new_bucket, refused, s3

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    # 64 KiB blocks: 5 MiB parts in fewer stripes than the shared 4 KiB would make.
    return {"s3_port": 0, "block_size": 64 << 10}


@pytest_asyncio.fixture(loop_scope="module")
async def admin(cluster: LocalCluster) -> AsyncIterator[list[BaseClient]]:
    made = [await s3(client, peer.s3_url) for peer in cluster.peers[:3]]
    yield made
    for each in made:
        each.close()


async def multipart_object(admin: BaseClient, bucket: str, key: str, parts: list[bytes]) -> str:
    """Upload ``parts`` as one object, in order; its ETag."""
    upload = await s3(admin.create_multipart_upload, Bucket=bucket, Key=key)
    listed = []
    for number, body in enumerate(parts, start=1):
        sent = await s3(
            admin.upload_part,
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body,
        )
        listed.append({"ETag": sent["ETag"], "PartNumber": number})
    done = await s3(
        admin.complete_multipart_upload,
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": listed},
    )
    etag: str = done["ETag"]
    return etag


# --- partNumber ----------------------------------------------------------------------------


async def test_get_and_head_of_each_part_of_a_multipart_object(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "part-reads")
    parts = [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE + 3), b"tail of it"]
    etag = await multipart_object(admin[0], bucket, "obj", parts)
    start = 0
    for number, body in enumerate(parts, start=1):
        got = await s3(admin[1].get_object, Bucket=bucket, Key="obj", PartNumber=number)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert await s3(got["Body"].read) == body
        assert got["ContentLength"] == len(body)
        last = start + len(body) - 1
        assert got["ContentRange"] == f"bytes {start}-{last}/{sum(map(len, parts))}"
        assert got["PartsCount"] == 3
        assert got["ETag"] == etag  # the object's, not the part's
        head = await s3(admin[2].head_object, Bucket=bucket, Key="obj", PartNumber=number)
        assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert (head["ContentLength"], head["PartsCount"], head["ETag"]) == (len(body), 3, etag)
        start += len(body)
    whole = await s3(admin[0].head_object, Bucket=bucket, Key="obj")
    assert "PartsCount" not in whole  # (AWS gives the count only to a read of a part)
    get, head = admin[0].get_object, admin[0].head_object
    assert await refused(get, Bucket=bucket, Key="obj", PartNumber=4) == ("InvalidPartNumber", 416)
    assert await refused(head, Bucket=bucket, Key="obj", PartNumber=4) == ("416", 416)
    ranged = await refused(get, Bucket=bucket, Key="obj", PartNumber=1, Range="bytes=0-9")
    assert ranged == ("InvalidRequest", 400)
    # the conditions are the whole object's: its ETag holds for every part
    matched = await s3(get, Bucket=bucket, Key="obj", PartNumber=3, IfMatch=etag)
    assert await s3(matched["Body"].read) == parts[2]
    other = await refused(get, Bucket=bucket, Key="obj", PartNumber=3, IfMatch='"0"')
    assert other == ("PreconditionFailed", 412)


async def test_an_object_put_whole_is_one_part(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "part-single")
    put = await s3(admin[0].put_object, Bucket=bucket, Key="one", Body=b"body")
    got = await s3(admin[1].get_object, Bucket=bucket, Key="one", PartNumber=1)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206  # (AWS: 206, bytes 0-3/4)
    assert got["ContentRange"] == "bytes 0-3/4"
    assert (await s3(got["Body"].read), got["ETag"]) == (b"body", put["ETag"])
    assert "PartsCount" not in got
    get = admin[0].get_object
    assert await refused(get, Bucket=bucket, Key="one", PartNumber=2) == ("InvalidPartNumber", 416)
    assert await refused(get, Bucket=bucket, Key="one", PartNumber=0) == ("InvalidArgument", 400)
    high = await refused(get, Bucket=bucket, Key="one", PartNumber=10_001)
    assert high == ("InvalidArgument", 400)
    await s3(admin[0].put_object, Bucket=bucket, Key="empty", Body=b"")
    empty = await s3(admin[2].get_object, Bucket=bucket, Key="empty", PartNumber=1)
    assert empty["ResponseMetadata"]["HTTPStatusCode"] == 200  # no Content-Range of no bytes
    assert await s3(empty["Body"].read) == b""
    missing = await refused(get, Bucket=bucket, Key="nothing", PartNumber=1)
    assert missing == ("NoSuchKey", 404)


# --- checksums -----------------------------------------------------------------------------

A_KIB = b"A" * 1024
A_KIB_SHA256 = "arcu6553sHVAiX4MjW0j7I7vD4w6R+Gz9Ok0Q9lTa+0="  # (ceph/s3-tests' figures)
A_KIB_CRC64NVME = "Qeh8oXvGiSo="


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def test_a_sent_checksum_is_echoed_kept_and_given_back_when_asked(
    admin: list[BaseClient],
) -> None:
    bucket = await new_bucket(admin[0], "checksums")
    assert base64.b64encode(hashlib.sha256(A_KIB).digest()).decode() == A_KIB_SHA256
    put = await s3(
        admin[0].put_object, Bucket=bucket, Key="sha", Body=A_KIB, ChecksumSHA256=A_KIB_SHA256
    )
    assert (put["ChecksumSHA256"], put["ChecksumType"]) == (A_KIB_SHA256, "FULL_OBJECT")
    plain = await s3(admin[1].head_object, Bucket=bucket, Key="sha")
    assert "ChecksumSHA256" not in plain
    head = await s3(admin[1].head_object, Bucket=bucket, Key="sha", ChecksumMode="ENABLED")
    assert (head["ChecksumSHA256"], head["ChecksumType"]) == (A_KIB_SHA256, "FULL_OBJECT")
    got = await s3(admin[2].get_object, Bucket=bucket, Key="sha", ChecksumMode="ENABLED")
    assert await s3(got["Body"].read) == A_KIB
    assert got["ChecksumSHA256"] == A_KIB_SHA256
    # a part of the bytes is not what the checksum is of: none then
    ranged = await s3(
        admin[2].get_object, Bucket=bucket, Key="sha", Range="bytes=0-9", ChecksumMode="ENABLED"
    )
    assert await s3(ranged["Body"].read) == A_KIB[:10]
    assert "ChecksumSHA256" not in ranged
    # an invalid Range is passed over: the whole object, and so its checksum
    ignored = await s3(
        admin[1].get_object, Bucket=bucket, Key="sha", Range="bytes=9-0", ChecksumMode="ENABLED"
    )
    assert await s3(ignored["Body"].read) == A_KIB
    assert ignored["ChecksumSHA256"] == A_KIB_SHA256
    one = await s3(
        admin[2].get_object, Bucket=bucket, Key="sha", PartNumber=1, ChecksumMode="ENABLED"
    )
    assert await s3(one["Body"].read) == A_KIB
    assert "ChecksumSHA256" not in one
    # CRC64NVME (awscrt's), and the CRC32 boto3 sends by itself when asked for none
    put = await s3(
        admin[0].put_object,
        Bucket=bucket,
        Key="nvme",
        Body=A_KIB,
        ChecksumCRC64NVME=A_KIB_CRC64NVME,
    )
    assert put["ChecksumCRC64NVME"] == A_KIB_CRC64NVME
    head = await s3(admin[1].head_object, Bucket=bucket, Key="nvme", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == A_KIB_CRC64NVME
    await s3(admin[0].put_object, Bucket=bucket, Key="default", Body=b"plain")
    head = await s3(admin[1].head_object, Bucket=bucket, Key="default", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32(b"plain")
    # a copy has the same bytes, so the same checksum
    source = {"Bucket": bucket, "Key": "sha"}
    await s3(admin[0].copy_object, Bucket=bucket, Key="copy", CopySource=source)
    head = await s3(admin[2].head_object, Bucket=bucket, Key="copy", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == A_KIB_SHA256
    await s3(
        admin[0].copy_object,
        Bucket=bucket,
        Key="copy",
        CopySource=source,
        MetadataDirective="REPLACE",
        ContentType="text/plain",
    )
    head = await s3(admin[2].head_object, Bucket=bucket, Key="copy", ChecksumMode="ENABLED")
    assert (head["ChecksumSHA256"], head["ContentType"]) == (A_KIB_SHA256, "text/plain")


async def test_a_wrong_checksum_stores_nothing(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "checksums-bad")
    await s3(admin[0].put_object, Bucket=bucket, Key="k", Body=b"before")
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    put = admin[0].put_object
    code = await refused(put, Bucket=bucket, Key="k", Body=A_KIB, ChecksumSHA256=wrong)
    assert code == ("BadDigest", 400)
    code = await refused(put, Bucket=bucket, Key="k", Body=A_KIB, ChecksumCRC64NVME="AAAAAAAAAAA=")
    assert code == ("BadDigest", 400)
    for malformed in ({"ChecksumSHA256": "bad"}, {"ChecksumCRC32": "bad"}):  # (no body matches)
        code = await refused(put, Bucket=bucket, Key="k", Body=A_KIB, **malformed)
        assert code == ("BadDigest", 400)
    got = await s3(admin[1].get_object, Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert await s3(got["Body"].read) == b"before"
    assert got["ChecksumCRC32"] == crc32(b"before")  # boto3's own, of the object kept


async def test_content_md5_is_checked_on_the_etag_s_own_digest(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """Under ``--etag md5`` the coordinator checks a Content-MD5 against the etag's MD5
    (the body hashed once): a wrong one still stores nothing, inline or in chunks."""
    assert all(peer.app is not None and peer.app[CONFIG].etag == "md5" for peer in cluster)
    bucket = await new_bucket(admin[0], "content-md5")
    for size in (100, 3 * (1 << 20) + 5):  # inline, and several stripes of chunks
        body = os.urandom(size)
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        put = await s3(
            admin[0].put_object, Bucket=bucket, Key=f"k{size}", Body=body,
            ContentMD5=base64.b64encode(md5).decode(),
        )  # fmt: skip
        assert put["ETag"] == f'"{md5.hex()}"'
        wrong = base64.b64encode(hashlib.md5(b"x", usedforsecurity=False).digest()).decode()
        code = await refused(
            admin[1].put_object, Bucket=bucket, Key=f"k{size}", Body=os.urandom(size),
            ContentMD5=wrong,
        )  # fmt: skip
        assert code == ("BadDigest", 400)
        got = await s3(admin[2].get_object, Bucket=bucket, Key=f"k{size}")
        assert await s3(got["Body"].read) == body
        code = await refused(
            admin[1].put_object, Bucket=bucket, Key=f"new{size}", Body=body, ContentMD5=wrong
        )
        assert code == ("BadDigest", 400)
        missing = await refused(admin[2].head_object, Bucket=bucket, Key=f"new{size}")
        assert missing == ("404", 404)
