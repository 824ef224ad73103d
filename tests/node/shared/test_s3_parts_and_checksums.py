"""S3 reads of one part (``partNumber``) and checksums kept with objects, with boto3.

GetObject and HeadObject with ``PartNumber``: a multipart object's part N is a 206 of its
bytes with their Content-Range and ``x-amz-mp-parts-count``; an object not uploaded in parts
is one part; a number past the last part is InvalidPartNumber (416), a Range beside one is
InvalidRequest, as AWS answers. The ``x-amz-checksum-*`` a PutObject sent is checked, echoed,
kept and given back with ``ChecksumMode=ENABLED`` (never on a partial read).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from botocore.client import BaseClient

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
