"""The S3 frontend with boto3, the real client, against seven in-process peers.

Each peer serves S3 on a port of its own (``s3_port=0``). boto3 is synchronous: every call
runs in a worker thread (``s3``), so the peers keep serving on the module's loop. The
refusals come first: wrong secret, unknown key, expired presigned URL, skewed clock, a
body that is not the one signed (nothing stored), a key without the grant; then ranges,
folder listings across pages, and buckets that are not empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar
from unittest import mock

import aiohttp
import boto3
import pytest
import pytest_asyncio
import yarl
from aiohttp.typedefs import LooseHeaders
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.crt import auth as botocore_crt_auth
from botocore.exceptions import ClientError
from multidict import CIMultiDict

from node.api.keys import GATEKEEPER
from tests.harness import LocalCluster, eventually
from tests.harness.access import ADMIN, ADMIN_HEADERS

pytestmark = pytest.mark.asyncio(loop_scope="module")
T = TypeVar("T")
FAILING_PEER = 6  # refusals cost their address a growing delay on the peer: keep them on one
DOMAIN = "s3.test"  # the peers' --s3-domain: <bucket>.s3.test is virtual-hosted style


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    return {"s3_port": 0, "s3_domain": DOMAIN}


def client(
    url: str, key: tuple[str, str] = ADMIN, signature_version: str | None = None
) -> BaseClient:
    """A plain boto3 S3 client for ``url``, as a user makes one (path-style, one try)."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        region_name="us-east-1",
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
            connect_timeout=10,
            read_timeout=60,
            signature_version=signature_version,
        ),
    )


async def s3(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one blocking boto3 call in a worker thread."""
    return await asyncio.to_thread(call, *args, **kwargs)


@pytest_asyncio.fixture(loop_scope="module")
async def admin(cluster: LocalCluster) -> AsyncIterator[list[BaseClient]]:
    """An admin client per peer."""
    made = [await s3(client, peer.s3_url) for peer in cluster.peers]
    yield made
    for each in made:
        each.close()


async def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, int]:
    """The S3 error code and status a call fails with."""
    with pytest.raises(ClientError) as failed:
        await s3(call, *args, **kwargs)
    error = failed.value.response
    return error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]


async def new_bucket(admin: BaseClient, name: str) -> str:
    await s3(admin.create_bucket, Bucket=name)
    return name


async def new_key(cluster: LocalCluster, **grants: Any) -> tuple[str, str]:
    async with (
        aiohttp.ClientSession(headers=ADMIN_HEADERS) as http,
        http.post(f"{cluster[0].url}/keys", json=grants) as answer,
    ):
        assert answer.status == 201
        made = await answer.json()
    return made["access_key"], made["secret_key"]


@contextlib.contextmanager
def signed_at(moment: dt.datetime) -> Iterator[None]:
    """botocore signs as if it were ``moment`` (UTC), with its own signers or, where awscrt is
    installed (a ringstore dependency), with the CRT's."""
    utc = moment.astimezone(dt.timezone.utc)

    def now(remove_tzinfo: bool = True) -> dt.datetime:
        return utc.replace(tzinfo=None) if remove_tzinfo else utc

    with (
        mock.patch.object(botocore_auth, "get_current_datetime", now),
        mock.patch.object(botocore_crt_auth, "get_current_datetime", now),
    ):
        yield


# --- refusals ------------------------------------------------------------------------------


async def test_wrong_secret_and_unknown_key_are_refused(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "s3-refusals")
    url = cluster[FAILING_PEER].s3_url
    wrong = await s3(client, url, (ADMIN[0], ADMIN[1] + "x"))
    unknown = await s3(client, url, ("RSAAAAAAAAAAAAAAAAAA", ADMIN[1]))
    try:
        assert await refused(wrong.list_buckets) == ("SignatureDoesNotMatch", 403)
        code = await refused(wrong.put_object, Bucket=bucket, Key="k", Body=b"x")
        assert code == ("SignatureDoesNotMatch", 403)
        assert await refused(unknown.list_buckets) == ("InvalidAccessKeyId", 403)
    finally:
        wrong.close()
        unknown.close()
    assert await refused(admin[1].head_object, Bucket=bucket, Key="k") == ("404", 404)


def fetch(address: str) -> tuple[int, bytes]:
    """GET ``address`` with urllib (no S3 client): the status and the body."""
    try:
        with urllib.request.urlopen(address, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


async def test_presigned_urls_work_until_they_expire(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """Signature V4 presigned URLs (``signature_version="s3v4"``)."""
    bucket = await new_bucket(admin[0], "s3-presigned")
    await s3(admin[0].put_object, Bucket=bucket, Key="doc.txt", Body=b"presigned body")
    params = {"Bucket": bucket, "Key": "doc.txt"}
    signer = await s3(client, cluster[FAILING_PEER].s3_url, ADMIN, "s3v4")
    try:
        url = await s3(signer.generate_presigned_url, "get_object", Params=params, ExpiresIn=60)
        with signed_at(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)):
            old = await s3(signer.generate_presigned_url, "get_object", Params=params, ExpiresIn=60)
    finally:
        signer.close()
    assert "X-Amz-Signature=" in url
    assert await s3(fetch, url) == (200, b"presigned body")
    status, body = await s3(fetch, old)
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert b"expired" in body
    tampered = url.replace("doc.txt", "other.txt")
    status, body = await s3(fetch, tampered)
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True)


async def test_presigned_urls_of_botocore_s_default_signer(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """boto3 presigns with Signature V2 unless told otherwise: those URLs work too."""
    bucket = await new_bucket(admin[0], "s3-presigned-v2")
    await s3(admin[0].put_object, Bucket=bucket, Key="a b+c.txt", Body=b"v2 body")
    params = {"Bucket": bucket, "Key": "a b+c.txt"}
    signer = await s3(client, cluster[FAILING_PEER].s3_url)
    try:
        url = await s3(signer.generate_presigned_url, "get_object", Params=params, ExpiresIn=60)
    finally:
        signer.close()
    assert "AWSAccessKeyId=" in url
    assert await s3(fetch, url) == (200, b"v2 body")
    expires = re.search(r"Expires=(\d+)", url)
    assert expires is not None
    past = url.replace(expires.group(0), "Expires=1000000000")
    status, body = await s3(fetch, past)
    assert (status, b"expired" in body) == (403, True)
    status, body = await s3(fetch, url.replace("a%20b", "a%20c"))
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True)


async def test_a_skewed_clock_is_refused(cluster: LocalCluster, admin: list[BaseClient]) -> None:
    skewed = await s3(client, cluster[FAILING_PEER].s3_url)
    try:
        with signed_at(dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=16)):
            assert await refused(skewed.list_buckets) == ("RequestTimeTooSkewed", 403)
        with signed_at(dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)):
            await s3(skewed.list_buckets)  # within 15 minutes
    finally:
        skewed.close()


async def raw(
    method: str, url: str, headers: LooseHeaders | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    """One request with aiohttp, exactly as given (the URL not normalised: yarl would
    decode ``%62`` to ``b``): the status and the body."""
    target = yarl.URL(url, encoded=True)
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as http,
        http.request(method, target, headers=headers or {}, data=body) as answer,
    ):
        return answer.status, await answer.read()


@pytest.mark.parametrize("signature_version", ["s3v4", None])  # None: botocore's V2 default
async def test_a_presigned_put_with_an_added_copy_source_copies_nothing(
    cluster: LocalCluster, admin: list[BaseClient], signature_version: str | None
) -> None:
    """x-amz-* headers the signer did not sign are refused: a presigned upload must not
    become a copy of what its signer may read."""
    private = await new_bucket(admin[0], f"s3-private-{signature_version or 'v2'}")
    uploads = await new_bucket(admin[0], f"s3-uploads-{signature_version or 'v2'}")
    await s3(admin[0].put_object, Bucket=private, Key="secret.txt", Body=b"the secret")
    key = await new_key(
        cluster, name=f"s3-dropper-{signature_version}", read=[private], write=[uploads]
    )
    signer = await s3(client, cluster[FAILING_PEER].s3_url, key, signature_version)
    try:
        params = {"Bucket": uploads, "Key": "drop.txt"}
        url = await s3(signer.generate_presigned_url, "put_object", Params=params, ExpiresIn=60)
    finally:
        signer.close()
    status, body = await raw(
        "PUT", url, {"x-amz-copy-source": f"{private}/secret.txt"}, b"uploaded"
    )
    assert status == 403, body
    assert b"<Code>AccessDenied</Code>" in body or b"SignatureDoesNotMatch" in body
    assert await refused(admin[1].head_object, Bucket=uploads, Key="drop.txt") == ("404", 404)
    assert await raw("PUT", url, {}, b"uploaded") == (200, b"")
    got = await s3(admin[2].get_object, Bucket=uploads, Key="drop.txt")
    assert await s3(got["Body"].read) == b"uploaded"


@pytest.mark.parametrize("signature_version", ["s3v4", None])
async def test_a_presigned_put_with_another_content_type_is_refused(
    cluster: LocalCluster, admin: list[BaseClient], signature_version: str | None
) -> None:
    bucket = await new_bucket(admin[0], f"s3-typed-{signature_version or 'v2'}")
    signer = await s3(client, cluster[FAILING_PEER].s3_url, ADMIN, signature_version)
    try:
        params = {"Bucket": bucket, "Key": "page", "ContentType": "text/plain"}
        url = await s3(signer.generate_presigned_url, "put_object", Params=params, ExpiresIn=60)
    finally:
        signer.close()
    status, _ = await raw("PUT", url, {"Content-Type": "text/html"}, b"<script>")
    assert status == 403
    assert await refused(admin[1].head_object, Bucket=bucket, Key="page") == ("404", 404)
    status, _ = await raw("PUT", url, {"Content-Type": "text/plain"}, b"plain")
    assert status == 200
    head = await s3(admin[2].head_object, Bucket=bucket, Key="page")
    assert head["ContentType"] == "text/plain"


async def test_signatures_outside_their_alphabet_are_refused_not_crashed_on(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "s3-alphabet")
    await s3(admin[0].put_object, Bucket=bucket, Key="k", Body=b"k")
    base = f"{cluster[FAILING_PEER].s3_url}/{bucket}/k"
    expires = int(dt.datetime.now(dt.timezone.utc).timestamp()) + 60
    v2 = f"{base}?AWSAccessKeyId={ADMIN[0]}&Expires={expires}&Signature=%C3%A9"
    status, body = await raw("GET", v2)
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True)
    signer = await s3(client, cluster[FAILING_PEER].s3_url, ADMIN, "s3v4")
    try:
        params = {"Bucket": bucket, "Key": "k"}
        url = await s3(signer.generate_presigned_url, "get_object", Params=params, ExpiresIn=60)
    finally:
        signer.close()
    bad = re.sub(r"X-Amz-Signature=[0-9a-f]+", "X-Amz-Signature=%C3%A9", url)
    status, body = await raw("GET", bad)
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True)
    status, body = await raw("GET", url + "&X-Amz-Content-Sha256=zz")
    assert (status, b"<Code>InvalidArgument</Code>" in body) == (400, True)
    header = "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/s3/aws4_request, Signature=00"
    twice = CIMultiDict([("Authorization", header), ("Authorization", header)])
    status, body = await raw("GET", base, twice)  # one Authorization, not two
    assert (status, b"<Code>InvalidArgument</Code>" in body) == (400, True)


async def test_v2_presigned_urls_live_at_most_seven_days(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "s3-v2-week")
    await s3(admin[0].put_object, Bucket=bucket, Key="k", Body=b"week")
    signer = await s3(client, cluster[FAILING_PEER].s3_url)
    params = {"Bucket": bucket, "Key": "k"}
    try:
        week = await s3(
            signer.generate_presigned_url, "get_object", Params=params, ExpiresIn=604_000
        )
        longer = await s3(
            signer.generate_presigned_url, "get_object", Params=params, ExpiresIn=604_900
        )
    finally:
        signer.close()
    assert await raw("GET", week) == (200, b"week")
    status, body = await raw("GET", longer)
    assert (status, b"<Code>AccessDenied</Code>" in body) == (403, True)


async def test_a_percent_encoded_bucket_is_the_bucket_it_decodes_to(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """Grants are checked on the bucket the object is in: ``a%62`` is ``ab``, for the
    grant as for the name, and a bucket that decodes to a ``%`` is refused."""
    bucket = await new_bucket(admin[0], "s3-ab")
    await s3(admin[0].put_object, Bucket=bucket, Key="k", Body=b"in ab")
    reader = await new_key(cluster, name="s3-ab-reader", read=[bucket])
    other = await new_key(cluster, name="s3-ab-other", read=["s3-refusals"])
    spelled = await new_key(cluster, name="s3-ab-spelled", read=["s3-a%62"])
    urls = {}
    for who, key in (("reader", reader), ("other", other), ("spelled", spelled)):
        signer = await s3(client, cluster[FAILING_PEER].s3_url, key, "s3v4")
        try:
            params = {"Bucket": bucket, "Key": "k"}
            url = await s3(signer.generate_presigned_url, "get_object", Params=params)
        finally:
            signer.close()
        # the canonical URI of /s3-a%62/k is /s3-ab/k: the signature still holds
        urls[who] = url.replace(f"/{bucket}/k", "/s3-a%62/k")
    assert await raw("GET", urls["reader"]) == (200, b"in ab")
    for who in ("other", "spelled"):  # a grant on the spelling is no grant on ab
        status, body = await raw("GET", urls[who])
        assert (status, b"<Code>AccessDenied</Code>" in body) == (403, True)
    status, body = await raw("GET", f"{cluster[FAILING_PEER].s3_url}/s3-a%2562/k")
    assert (status, b"<Code>InvalidBucketName</Code>" in body) == (400, True)


def chunked_put(url: str, key: tuple[str, str], chunk_signature: str) -> tuple[str, dict[str, str]]:
    """A PUT of ``hello`` as a signed aws-chunked body, its header signed by botocore's
    own signer, its one data chunk signed with ``chunk_signature``: ``(body, headers)``."""
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": "5",
        },
    )

    class StreamingAuth(botocore_auth.S3SigV4Auth):
        def payload(self, request: Any) -> str:  # what botocore signs aws-chunked bodies as
            return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"

    StreamingAuth(Credentials(key[0], key[1]), "s3", "us-east-1").add_auth(request)
    body = f"5;chunk-signature={chunk_signature}\r\nhello\r\n0;chunk-signature={'0' * 64}\r\n\r\n"
    return body, {name: str(value) for name, value in request.headers.items()}


async def test_refusals_after_the_signature_check_cost_the_address_a_penalty(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """An unsigned x-amz-* header and a wrong chunk signature are bad signatures too: the
    Gatekeeper's penalty counts them against the sender's address."""
    bucket = await new_bucket(admin[0], "s3-penalties")
    peer = cluster[FAILING_PEER]
    penalty = peer.app[GATEKEEPER].penalty
    signer = await s3(client, peer.s3_url, ADMIN, "s3v4")
    try:
        params = {"Bucket": bucket, "Key": "drop"}
        url = await s3(signer.generate_presigned_url, "put_object", Params=params, ExpiresIn=60)
    finally:
        signer.close()
    with mock.patch.object(penalty, "failed", wraps=penalty.failed) as failed:
        status, _ = await raw("PUT", url, {"x-amz-meta-added": "1"}, b"x")
        assert (status, failed.call_count) == (403, 1)
        target = f"{peer.s3_url}/{bucket}/chunked"
        body, headers = chunked_put(target, ADMIN, "0" * 64)
        status, answer = await raw("PUT", target, headers, body.encode())
        assert b"SignatureDoesNotMatch" in answer
        assert b"of a chunk" in answer
        assert (status, failed.call_count) == (403, 2)
    assert await refused(admin[1].head_object, Bucket=bucket, Key="chunked") == ("404", 404)


@pytest.mark.parametrize("size", [100, 70_000])  # one stripe or less, and several
async def test_a_body_that_is_not_the_one_signed_stores_nothing(
    cluster: LocalCluster, admin: list[BaseClient], size: int
) -> None:
    bucket = f"s3-mismatch-{size}"
    await new_bucket(admin[0], bucket)
    await s3(admin[0].put_object, Bucket=bucket, Key="kept", Body=b"first version")
    sender = await s3(client, cluster[2].s3_url)

    def swap_body(request: Any, **_: Any) -> None:  # after signing, before sending
        request.body = b"y" * size

    sender.meta.events.register("before-send.s3.PutObject", swap_body)
    try:
        for key in ("kept", "new"):
            code = await refused(sender.put_object, Bucket=bucket, Key=key, Body=b"x" * size)
            assert code == ("XAmzContentSHA256Mismatch", 400)
    finally:
        sender.close()
    got = await s3(admin[3].get_object, Bucket=bucket, Key="kept")
    assert await s3(got["Body"].read) == b"first version"
    assert await refused(admin[4].head_object, Bucket=bucket, Key="new") == ("404", 404)


async def test_a_key_without_the_grant_is_refused(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = await new_bucket(admin[0], "s3-grants")
    await s3(admin[0].put_object, Bucket=bucket, Key="seed", Body=b"seed")
    reader_key = await new_key(cluster, name="s3-reader", read=[bucket])
    reader = await s3(client, cluster[1].s3_url, reader_key)
    try:
        got = await s3(reader.get_object, Bucket=bucket, Key="seed")
        assert await s3(got["Body"].read) == b"seed"
        listed = await s3(reader.list_objects_v2, Bucket=bucket)
        assert [o["Key"] for o in listed["Contents"]] == ["seed"]
        assert await refused(reader.put_object, Bucket=bucket, Key="x", Body=b"x") == (
            "AccessDenied",
            403,
        )
        assert await refused(reader.delete_object, Bucket=bucket, Key="seed") == (
            "AccessDenied",
            403,
        )
        assert await refused(reader.create_bucket, Bucket="s3-not-mine") == ("AccessDenied", 403)
        assert await refused(reader.list_objects_v2, Bucket="s3-refusals") == (
            "AccessDenied",
            403,
        )
        names = [b["Name"] for b in (await s3(reader.list_buckets))["Buckets"]]
        assert names == [bucket]
    finally:
        reader.close()
    got = await s3(admin[2].get_object, Bucket=bucket, Key="seed")
    assert await s3(got["Body"].read) == b"seed"


async def test_missing_buckets_and_keys(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "s3-missing")
    assert await refused(admin[1].get_object, Bucket=bucket, Key="none") == ("NoSuchKey", 404)
    assert await refused(admin[1].get_object, Bucket="s3-nobucket", Key="k") == (
        "NoSuchBucket",
        404,
    )
    assert await refused(admin[2].head_bucket, Bucket="s3-nobucket") == ("404", 404)
    assert await refused(admin[2].put_object, Bucket="s3-nobucket", Key="k", Body=b"x") == (
        "NoSuchBucket",
        404,
    )
    assert await refused(admin[3].create_bucket, Bucket=bucket) == (
        "BucketAlreadyOwnedByYou",
        409,
    )
    assert await refused(admin[3].create_bucket, Bucket="Not_A_Bucket") == (
        "InvalidBucketName",
        400,
    )
    await s3(admin[4].delete_object, Bucket=bucket, Key="never-there")  # 204, as S3


@pytest.mark.parametrize(
    "body", [b"junk", b"<Delete><Object><Key>k</Key></Object></Delete>", b"<x"]
)
async def test_a_create_bucket_body_that_is_not_its_configuration_is_refused(
    admin: list[BaseClient], body: bytes
) -> None:
    name = f"s3-configured-{len(body)}"
    configured = {"LocationConstraint": "anywhere"}  # read, and not used: one region
    await s3(admin[0].create_bucket, Bucket=name, CreateBucketConfiguration=configured)
    await s3(admin[1].head_bucket, Bucket=name)

    def replace_body(request: Any, **_: Any) -> None:
        request.data = body  # before the signature: signed as sent

    other = admin[2]
    other.meta.events.register("before-sign.s3.CreateBucket", replace_body)
    try:
        code = await refused(other.create_bucket, Bucket=f"{name}-junk")
    finally:
        other.meta.events.unregister("before-sign.s3.CreateBucket", replace_body)
    assert code == ("MalformedXML", 400)
    assert await refused(admin[3].head_bucket, Bucket=f"{name}-junk") == ("404", 404)


# --- objects -------------------------------------------------------------------------------


async def test_put_get_head_with_metadata_and_ranges(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "s3-objects")
    data = bytes(range(256)) * 400  # several stripes
    put = await s3(
        admin[1].put_object,
        Bucket=bucket,
        Key="dir/file.bin",
        Body=data,
        ContentType="application/x-test",
        Metadata={"Owner": "ringstore", "note": "a b"},
    )
    head = await s3(admin[2].head_object, Bucket=bucket, Key="dir/file.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'  # as rclone checks
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"owner": "ringstore", "note": "a b"}
    whole = await s3(admin[3].get_object, Bucket=bucket, Key="dir/file.bin")
    assert await s3(whole["Body"].read) == data
    part = await s3(admin[4].get_object, Bucket=bucket, Key="dir/file.bin", Range="bytes=10-99")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 10-99/{len(data)}"
    assert await s3(part["Body"].read) == data[10:100]
    tail = await s3(admin[5].get_object, Bucket=bucket, Key="dir/file.bin", Range="bytes=-7")
    assert await s3(tail["Body"].read) == data[-7:]
    code = await refused(
        admin[5].get_object, Bucket=bucket, Key="dir/file.bin", Range=f"bytes={len(data)}-"
    )
    assert code == ("InvalidRange", 416)
    for invalid in ["bytes=abc", "bytes=99-10", "bytes=1-2,5-6"]:  # ignored, as AWS does
        got = await s3(admin[1].get_object, Bucket=bucket, Key="dir/file.bin", Range=invalid)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 200, invalid
        assert "ContentRange" not in got, invalid
        assert await s3(got["Body"].read) == data, invalid
    same = await refused(
        admin[0].get_object, Bucket=bucket, Key="dir/file.bin", IfNoneMatch=put["ETag"]
    )
    assert same == ("304", 304)
    await s3(admin[6].delete_object, Bucket=bucket, Key="dir/file.bin")
    assert await refused(admin[1].head_object, Bucket=bucket, Key="dir/file.bin") == ("404", 404)


async def test_upload_file_and_download_file(
    admin: list[BaseClient], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("s3-files")
    source, target = folder / "up.bin", folder / "down.bin"
    source.write_bytes(b"0123456789" * 10_000)
    bucket = await new_bucket(admin[0], "s3-transfer")
    await s3(admin[1].upload_file, str(source), bucket, "up.bin")
    await s3(admin[2].download_file, bucket, "up.bin", str(target))
    assert target.read_bytes() == source.read_bytes()


async def test_keys_that_are_not_file_names_are_refused(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "s3-odd-keys")
    for key in ("a//b", "dir/", "./x"):
        code = await refused(admin[1].put_object, Bucket=bucket, Key=key, Body=b"x")
        assert code == ("InvalidArgument", 400), key
    long_type = "application/" + "x" * 1100  # past what a manifest holds: not a 503
    code = await refused(
        admin[1].put_object, Bucket=bucket, Key="typed", Body=b"x", ContentType=long_type
    )
    assert code == ("InvalidArgument", 400)
    for key in ("sp ace+plus%percent", "ünï/cødé", "tilde~and(paren)"):
        await s3(admin[1].put_object, Bucket=bucket, Key=key, Body=key.encode())
        got = await s3(admin[2].get_object, Bucket=bucket, Key=key)
        assert await s3(got["Body"].read) == key.encode()
    listed = await s3(admin[3].list_objects_v2, Bucket=bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(
        ["sp ace+plus%percent", "ünï/cødé", "tilde~and(paren)"]
    )


# --- listings and buckets ------------------------------------------------------------------


async def test_listing_with_a_delimiter_across_pages(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "s3-listing")
    keys = ["a/1", "a/2", "a/sub/3", "b/x", "c", "d/e/f", "e", "f/g", "z"]
    for index, key in enumerate(keys):
        await s3(admin[index % 7].put_object, Bucket=bucket, Key=key, Body=key.encode())
    pages = admin[1].get_paginator("list_objects_v2")

    def walk(**kwargs: Any) -> tuple[list[str], list[str], int]:
        found: list[str] = []
        folders: list[str] = []
        count = 0
        for page in pages.paginate(Bucket=bucket, **kwargs):
            count += 1
            assert page["KeyCount"] <= kwargs.get("PaginationConfig", {}).get("PageSize", 1000)
            found += [o["Key"] for o in page.get("Contents", [])]
            folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        return found, folders, count

    found, folders, count = await s3(walk, Delimiter="/", PaginationConfig={"PageSize": 2})
    assert found == ["c", "e", "z"]
    assert folders == ["a/", "b/", "d/", "f/"]
    assert count == 4  # 7 entries, 2 a page
    found, folders, _ = await s3(walk, Prefix="a/", Delimiter="/", PaginationConfig={"PageSize": 1})
    assert (found, folders) == (["a/1", "a/2"], ["a/sub/"])
    found, folders, count = await s3(walk, PaginationConfig={"PageSize": 4})
    assert (found, folders, count) == (keys, [], 3)
    after = await s3(admin[2].list_objects_v2, Bucket=bucket, StartAfter="c", MaxKeys=3)
    assert [o["Key"] for o in after["Contents"]] == ["d/e/f", "e", "f/g"]
    assert after["IsTruncated"] is True
    v1 = await s3(admin[3].list_objects, Bucket=bucket, Delimiter="/", Marker="b/")
    assert [o["Key"] for o in v1["Contents"]] == ["c", "e", "z"]
    assert [p["Prefix"] for p in v1["CommonPrefixes"]] == ["d/", "f/"]
    none = await s3(admin[3].list_objects_v2, Bucket=bucket, MaxKeys=0)
    assert (none["KeyCount"], none["IsTruncated"]) == (0, False)


async def test_listings_name_each_object_s_owner_as_s3_does(admin: list[BaseClient]) -> None:
    # ListObjects (v1) and ListObjectVersions always; ListObjectsV2 only with FetchOwner.
    bucket = await new_bucket(admin[0], "s3-owners")
    await s3(admin[0].put_object, Bucket=bucket, Key="a", Body=b"a")
    owner = {"ID": ADMIN[0], "DisplayName": ADMIN[0]}  # who lists (no ACLs are kept)
    v2 = await s3(admin[1].list_objects_v2, Bucket=bucket)
    assert "Owner" not in v2["Contents"][0]
    v2 = await s3(admin[2].list_objects_v2, Bucket=bucket, FetchOwner=False)
    assert "Owner" not in v2["Contents"][0]
    v2 = await s3(admin[3].list_objects_v2, Bucket=bucket, FetchOwner=True)
    assert v2["Contents"][0]["Owner"] == owner
    v1 = await s3(admin[4].list_objects, Bucket=bucket)
    assert v1["Contents"][0]["Owner"] == owner
    versions = await s3(admin[5].list_object_versions, Bucket=bucket)
    assert versions["Versions"][0]["Owner"] == owner


async def test_only_an_empty_bucket_is_deleted(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "s3-doomed")
    await s3(admin[1].put_object, Bucket=bucket, Key="one/file", Body=b"1")
    assert await refused(admin[2].delete_bucket, Bucket=bucket) == ("BucketNotEmpty", 409)
    await s3(admin[3].head_bucket, Bucket=bucket)
    await s3(admin[4].delete_object, Bucket=bucket, Key="one/file")
    await s3(admin[5].delete_bucket, Bucket=bucket)
    assert await refused(admin[6].head_bucket, Bucket=bucket) == ("404", 404)
    names = [b["Name"] for b in (await s3(admin[0].list_buckets))["Buckets"]]
    assert bucket not in names
    assert "s3-objects" in names or "s3-listing" in names or names  # others' buckets stay


async def test_unserved_operations_say_so(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "s3-unserved")
    code = await refused(admin[1].get_bucket_acl, Bucket=bucket)
    assert code == ("NotImplemented", 501)
    await s3(admin[1].put_object, Bucket=bucket, Key="k", Body=b"v")
    code = await refused(admin[1].get_object, Bucket=bucket, Key="k", VersionId="v2")
    assert code == ("NotImplemented", 501)  # never another version than asked for
    got = await s3(admin[1].get_object, Bucket=bucket, Key="k", VersionId="null")
    assert await s3(got["Body"].read) == b"v"
    location = await s3(admin[2].get_bucket_location, Bucket=bucket)
    assert location["LocationConstraint"] == "us-east-1"
    # What a PutObject asks for and this store does not do is refused, not dropped (an
    # SSE-C object was stored in the clear and read back without its key; a COMPLIANCE
    # lock was deleted at once; tags were lost).
    retain = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    asks: list[dict[str, Any]] = [
        {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32},
        {"ServerSideEncryption": "aws:kms"},
        {"ServerSideEncryption": "AES256"},
        {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": retain},
        {"ObjectLockLegalHoldStatus": "ON"},
        {"Tagging": "a=b"},
        {"WebsiteRedirectLocation": "/elsewhere"},
    ]
    for ask in asks:
        code = await refused(admin[0].put_object, Bucket=bucket, Key="asked", Body=b"x", **ask)
        assert code == ("NotImplemented", 501), ask
    code = await refused(
        admin[0].put_object, Bucket=bucket, Key="asked", Body=b"x", ACL="public-read"
    )
    assert code == ("AccessControlListNotSupported", 400)  # as AWS's "bucket owner enforced"
    await refused(admin[0].head_object, Bucket=bucket, Key="asked")  # none was stored
    for acl in ("private", "bucket-owner-full-control"):  # what such a bucket takes
        await s3(admin[0].put_object, Bucket=bucket, Key="owned", Body=b"x", ACL=acl)


async def test_the_cluster_view_names_every_peer_s_s3_url(cluster: LocalCluster) -> None:
    wanted = {peer.id: peer.s3_url for peer in cluster.peers}

    async def shown() -> bool:
        async with (
            aiohttp.ClientSession(headers=ADMIN_HEADERS) as http,
            http.get(f"{cluster[3].url}/cluster") as answer,
        ):
            view = await answer.json()
        return {p["id"]: p["s3_url"] for p in view["peers"]} == wanted

    await eventually(shown, 15, "every peer's S3 URL in /cluster (gossiped)")


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA256", "SHA1"])
async def test_a_body_not_matching_its_checksum_header_stores_nothing(
    cluster: LocalCluster, admin: list[BaseClient], algorithm: str
) -> None:
    """boto3 sends x-amz-checksum-crc32 with every PUT over HTTP: it is checked (and the
    others it can be asked for). The header is changed after signing, so the signature
    still holds and only the checksum is wrong."""
    bucket = f"s3-checksum-{algorithm.lower()}"
    await new_bucket(admin[0], bucket)
    data = b"checked " * 10_000
    await s3(admin[1].put_object, Bucket=bucket, Key="good", Body=data, ChecksumAlgorithm=algorithm)
    sender = await s3(client, cluster[2].s3_url)
    header = f"x-amz-checksum-{algorithm.lower()}"

    def spoil(request: Any, **_: Any) -> None:  # before signing: the signature covers it
        del request.headers[header]  # (setting adds a second line)
        request.headers[header] = {"CRC32": "AAAAAA==", "CRC32C": "AAAAAA=="}.get(
            algorithm, "AAAAAAAAAAA=" if algorithm == "CRC64NVME" else "A" * 43 + "="
        )

    sender.meta.events.register("before-sign.s3.PutObject", spoil)
    try:
        code = await refused(
            sender.put_object, Bucket=bucket, Key="bad", Body=data, ChecksumAlgorithm=algorithm
        )
    finally:
        sender.close()
    assert code == ("BadDigest", 400)
    listed = await s3(admin[3].list_objects_v2, Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["good"]


async def test_public_read_buckets_are_read_anonymously_and_never_written(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    async with (
        aiohttp.ClientSession(headers=ADMIN_HEADERS) as http,
        http.put(f"{cluster[0].url}/namespaces/s3-public", json={"public_read": True}) as made,
    ):
        assert made.status == 201
    await s3(admin[1].put_object, Bucket="s3-public", Key="open.txt", Body=b"for all")
    url = cluster[5].s3_url
    assert await s3(fetch, f"{url}/s3-public/open.txt") == (200, b"for all")
    status, listing = await s3(fetch, f"{url}/s3-public?list-type=2")
    assert status == 200
    assert b"<Key>open.txt</Key>" in listing
    status, body = await s3(fetch, f"{url}/s3-objects?list-type=2")
    assert (status, b"<Code>AccessDenied</Code>" in body) == (403, True)
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.put(f"{url}/s3-public/new.txt", data=b"x") as put:
            assert put.status == 403
            assert "<Code>AccessDenied</Code>" in await put.text()
            assert put.headers["x-amz-request-id"]
        async with anonymous.get(url) as buckets:  # ListBuckets needs a key
            assert buckets.status == 403


async def test_no_secret_or_signature_reaches_a_log_line(
    cluster: LocalCluster, admin: list[BaseClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = await new_bucket(admin[0], "s3-logs")
    await s3(admin[1].put_object, Bucket=bucket, Key="k", Body=b"logged?")
    signer = await s3(client, cluster[FAILING_PEER].s3_url, ADMIN, "s3v4")
    wrong = await s3(client, cluster[FAILING_PEER].s3_url, (ADMIN[0], "not-the-secret"))
    try:
        params = {"Bucket": bucket, "Key": "k"}
        url = await s3(signer.generate_presigned_url, "get_object", Params=params, ExpiresIn=60)
        assert (await s3(fetch, url))[0] == 200
        assert (await s3(fetch, url.replace("/k?", "/other?")))[0] == 403
        await refused(wrong.get_object, Bucket=bucket, Key="k")
    finally:
        signer.close()
        wrong.close()
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    logged = "\n".join(  # the peers' lines (botocore's own debug lines show what it signs)
        r.getMessage() for r in caplog.records if not r.name.startswith(("botocore", "boto3"))
    )
    assert "refused a signed request" in logged  # the refusals were logged, without:
    for secret in (ADMIN[1], "not-the-secret", signature):
        assert secret not in logged


async def test_copy_object_within_and_across_buckets(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    source = await new_bucket(admin[0], "s3-copy-from")
    target = await new_bucket(admin[0], "s3-copy-to")
    data = bytes(range(256)) * 300  # several stripes
    await s3(
        admin[1].put_object,
        Bucket=source,
        Key="orig",
        Body=data,
        ContentType="text/x-orig",
        Metadata={"kept": "yes"},
    )
    origin = {"Bucket": source, "Key": "orig"}
    copied = await s3(admin[2].copy_object, Bucket=target, Key="dir/copy", CopySource=origin)
    assert copied["CopyObjectResult"]["ETag"]
    head = await s3(admin[3].head_object, Bucket=target, Key="dir/copy")
    assert (head["ContentType"], head["Metadata"]) == ("text/x-orig", {"kept": "yes"})
    got = await s3(admin[4].get_object, Bucket=target, Key="dir/copy")
    assert await s3(got["Body"].read) == data
    null = {**origin, "VersionId": "null"}  # the one version of an unversioned bucket
    await s3(admin[1].copy_object, Bucket=target, Key="dir/null", CopySource=null)
    got = await s3(admin[2].get_object, Bucket=target, Key="dir/null")
    assert await s3(got["Body"].read) == data
    versioned = {**origin, "VersionId": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"}
    code = await refused(admin[3].copy_object, Bucket=target, Key="x", CopySource=versioned)
    assert code == ("NotImplemented", 501)
    await s3(
        admin[5].copy_object,
        Bucket=source,
        Key="orig",
        CopySource=origin,
        MetadataDirective="REPLACE",
        ContentType="text/plain",
        Metadata={"new": "1"},
    )
    head = await s3(admin[6].head_object, Bucket=source, Key="orig")
    assert (head["ContentType"], head["Metadata"]) == ("text/plain", {"new": "1"})
    code = await refused(admin[0].copy_object, Bucket=source, Key="orig", CopySource=origin)
    assert code == ("InvalidRequest", 400)  # onto itself, nothing changed
    missing = {"Bucket": source, "Key": "none"}
    code = await refused(admin[1].copy_object, Bucket=target, Key="x", CopySource=missing)
    assert code == ("NoSuchKey", 404)
    writer_key = await new_key(cluster, name="s3-copier", write=[target])
    writer = await s3(client, cluster[2].s3_url, writer_key)
    try:  # may write the target, may not read the source
        code = await refused(writer.copy_object, Bucket=target, Key="y", CopySource=origin)
        assert code == ("AccessDenied", 403)
    finally:
        writer.close()


async def test_delete_objects_deletes_a_batch(admin: list[BaseClient]) -> None:
    bucket = await new_bucket(admin[0], "s3-batch")
    keys = [f"k{i}" for i in range(6)]
    for key in keys:
        await s3(admin[1].put_object, Bucket=bucket, Key=key, Body=key.encode())
    doomed = [{"Key": k} for k in [*keys[:3], "never-there", "a//b"]]
    result = await s3(admin[2].delete_objects, Bucket=bucket, Delete={"Objects": doomed})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["k0", "k1", "k2", "never-there"]
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("a//b", "InvalidArgument")]
    quiet = {"Objects": [{"Key": "k3"}], "Quiet": True}
    result = await s3(admin[3].delete_objects, Bucket=bucket, Delete=quiet)
    assert "Deleted" not in result
    listed = await s3(admin[4].list_objects_v2, Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["k4", "k5"]


async def test_delete_objects_never_deletes_for_a_version_it_does_not_keep(
    admin: list[BaseClient],
) -> None:
    """Versions are not kept: a VersionId other than null is a per-key error, and the
    current object stays (deleting it would lose what the caller did not name)."""
    bucket = await new_bucket(admin[0], "s3-batch-versions")
    for key in ("kept", "null-version", "plain"):
        await s3(admin[1].put_object, Bucket=bucket, Key=key, Body=key.encode())
    doomed = [
        {"Key": "kept", "VersionId": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"},
        {"Key": "null-version", "VersionId": "null"},
        {"Key": "plain"},
    ]
    result = await s3(admin[2].delete_objects, Bucket=bucket, Delete={"Objects": doomed})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["null-version", "plain"]
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("kept", "NotImplemented")]
    got = await s3(admin[3].get_object, Bucket=bucket, Key="kept")
    assert await s3(got["Body"].read) == b"kept"
    listed = await s3(admin[4].list_objects_v2, Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["kept"]


async def test_response_overrides_set_a_download_s_headers(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    bucket = "s3-overrides"
    async with (
        aiohttp.ClientSession(headers=ADMIN_HEADERS) as http,
        http.put(f"{cluster[0].url}/namespaces/{bucket}", json={"public_read": True}) as made,
    ):
        assert made.status == 201
    await s3(admin[1].put_object, Bucket=bucket, Key="report.csv", Body=b"a,b\n")
    params = {
        "Bucket": bucket,
        "Key": "report.csv",
        "ResponseContentDisposition": 'attachment; filename="r.csv"',
        "ResponseContentType": "text/csv",
    }
    got = await s3(admin[2].get_object, **params)
    assert got["ContentDisposition"] == 'attachment; filename="r.csv"'
    assert got["ContentType"] == "text/csv"
    assert await s3(got["Body"].read) == b"a,b\n"
    bad = {**params, "ResponseContentType": "text/csv\r\nX-Injected: 1"}
    assert await refused(admin[3].get_object, **bad) == ("InvalidArgument", 400)
    public = f"{cluster[4].s3_url}/{bucket}/report.csv"
    assert await s3(fetch, public) == (200, b"a,b\n")
    status, _ = await s3(fetch, public + "?response-content-type=text/html")
    assert status == 400  # anonymous requests may not set them


# --- virtual-hosted style --------------------------------------------------------------------


@contextlib.contextmanager
def wildcard_dns() -> Iterator[None]:
    """``DOMAIN`` and every name under it resolve to 127.0.0.1 in this process, as a wildcard
    DNS record makes them for real clients (nothing else is resolved differently)."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (host == DOMAIN or host.endswith(f".{DOMAIN}")):
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    with mock.patch.object(socket, "getaddrinfo", getaddrinfo):
        yield


async def test_virtual_hosted_style_requests_name_the_bucket_in_the_host(
    cluster: LocalCluster,
) -> None:
    """boto3 in virtual-hosted style (Host ``<bucket>.s3.test``: SigV4 headers, SigV2 and
    SigV4 presigned URLs) and path-style clients see the same bucket."""
    port = yarl.URL(cluster[2].s3_url).port
    with wildcard_dns():
        virtual = boto3.client(
            "s3",
            endpoint_url=f"http://{DOMAIN}:{port}",
            aws_access_key_id=ADMIN[0],
            aws_secret_access_key=ADMIN[1],
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "virtual"}),
        )
        try:
            await s3(virtual.create_bucket, Bucket="s3-virtual")
            await s3(virtual.put_object, Bucket="s3-virtual", Key="a/b.txt", Body=b"hosted")
            got = await s3(virtual.get_object, Bucket="s3-virtual", Key="a/b.txt")
            assert await s3(got["Body"].read) == b"hosted"
            listed = await s3(virtual.list_objects_v2, Bucket="s3-virtual", Delimiter="/")
            assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["a/"]
            params = {"Bucket": "s3-virtual", "Key": "a/b.txt"}
            for version in ("s3", "s3v4"):
                signer = boto3.client(
                    "s3",
                    endpoint_url=f"http://{DOMAIN}:{port}",
                    aws_access_key_id=ADMIN[0],
                    aws_secret_access_key=ADMIN[1],
                    region_name="us-east-1",
                    config=Config(s3={"addressing_style": "virtual"}, signature_version=version),
                )
                url = await s3(signer.generate_presigned_url, "get_object", Params=params)
                assert yarl.URL(url).host == f"s3-virtual.{DOMAIN}"
                assert await s3(fetch, url) == (200, b"hosted"), version
                signer.close()
        finally:
            virtual.close()
    path_style = client(cluster[5].s3_url)
    got = await s3(path_style.get_object, Bucket="s3-virtual", Key="a/b.txt")
    assert await s3(got["Body"].read) == b"hosted"
    path_style.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_signs_virtual_hosted_requests(cluster: LocalCluster, tmp_path: Any) -> None:
    """curl's own SigV4 (--aws-sigv4) to ``<bucket>.s3.test``, resolved by --resolve."""
    admin = client(cluster[0].s3_url)
    await new_bucket(admin, "s3-curl")
    admin.close()
    port = yarl.URL(cluster[3].s3_url).port
    host = f"s3-curl.{DOMAIN}"
    source = tmp_path / "up.bin"
    source.write_bytes(bytes(range(256)) * 64)
    common = [
        "curl", "--silent", "--show-error", "--fail-with-body", "--max-time", "60",
        "--resolve", f"{host}:{port}:127.0.0.1",
        "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", f"{ADMIN[0]}:{ADMIN[1]}",
        # S3 wants it with SigV4; curl (7.88) signs it when given, and computes none itself
        "--header", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
    ]  # fmt: skip
    url = f"http://{host}:{port}/curl/up.bin"
    for command in ([*common, "--upload-file", str(source), url], [*common, url]):
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, timeout=90, check=False
        )
        assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout == source.read_bytes()


async def test_a_host_label_that_is_no_bucket_name_is_refused(cluster: LocalCluster) -> None:
    port = yarl.URL(cluster[FAILING_PEER].s3_url).port
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{port}/key", headers={"Host": f"Bad_Name.{DOMAIN}:{port}"}
        ) as answer,
    ):
        assert answer.status == 400
        assert "<Code>InvalidBucketName</Code>" in await answer.text()


async def test_an_unversioned_bucket_lists_each_object_as_version_null(
    admin: list[BaseClient],
) -> None:
    """ListObjectVersions and GetBucketVersioning answer as S3 does for a bucket whose
    versioning was never on: ceph/s3-tests cleans up with them, s3fs asks before deleting."""
    bucket = await new_bucket(admin[0], "s3-null-versions")
    for key in ("a/1", "a/2", "b", "c"):
        await s3(admin[1].put_object, Bucket=bucket, Key=key, Body=key.encode())
    assert "Status" not in await s3(admin[2].get_bucket_versioning, Bucket=bucket)
    first = await s3(admin[2].list_object_versions, Bucket=bucket, MaxKeys=2)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in first["Versions"]] == [
        ("a/1", "null", True),
        ("a/2", "null", True),
    ]
    assert first["Versions"][0]["Size"] == 3
    assert (first["IsTruncated"], first["NextKeyMarker"]) == (True, "a/2")
    rest = await s3(
        admin[3].list_object_versions,
        Bucket=bucket,
        KeyMarker=first["NextKeyMarker"],
        VersionIdMarker=first["NextVersionIdMarker"],
    )
    assert [v["Key"] for v in rest["Versions"]] == ["b", "c"]
    assert rest["IsTruncated"] is False
    folders = await s3(admin[4].list_object_versions, Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in folders["CommonPrefixes"]] == ["a/"]
    assert [v["Key"] for v in folders["Versions"]] == ["b", "c"]
    code = await refused(
        admin[5].put_bucket_versioning,
        Bucket=bucket,
        VersioningConfiguration={"Status": "Enabled"},
    )
    assert code == ("NotImplemented", 501)
    assert await refused(admin[5].list_object_versions, Bucket="s3-no-such") == (
        "NoSuchBucket",
        404,
    )


async def test_list_buckets_in_pages_and_by_prefix(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """Paginated ListBuckets (MaxBuckets, ContinuationToken, Prefix), as boto3 sends it."""
    names = [await new_bucket(admin[0], f"s3-paged-{i}") for i in range(3)]
    first = await s3(admin[1].list_buckets, MaxBuckets=2, Prefix="s3-paged-")
    assert [b["Name"] for b in first["Buckets"]] == names[:2]
    assert first["Prefix"] == "s3-paged-"
    rest = await s3(
        admin[2].list_buckets,
        MaxBuckets=2,
        Prefix="s3-paged-",
        ContinuationToken=first["ContinuationToken"],
    )
    assert [b["Name"] for b in rest["Buckets"]] == names[2:]
    assert "ContinuationToken" not in rest
    everything = await s3(admin[3].list_buckets)
    assert set(names) <= {b["Name"] for b in everything["Buckets"]}
    assert "ContinuationToken" not in everything
    reader = await new_key(cluster, name="s3-paged-reader", read=[names[1]])
    narrow = await s3(client, cluster[4].s3_url, reader)
    try:
        seen = await s3(narrow.list_buckets, MaxBuckets=1, Prefix="s3-paged-")
        assert [b["Name"] for b in seen["Buckets"]] == [names[1]]  # only what it may read
        assert "ContinuationToken" not in seen
    finally:
        narrow.close()
    code = await refused(admin[5].list_buckets, MaxBuckets=10_001)
    assert code == ("InvalidArgument", 400)
    # A token this frontend cannot have made: refused, not read as the start (base64's
    # decoder skipped "!" and an empty result meant no token).
    for token in ("!", "!!!", "a!b"):
        code = await refused(admin[5].list_buckets, ContinuationToken=token)
        assert code == ("InvalidArgument", 400), token
        code = await refused(admin[5].list_objects_v2, Bucket=names[0], ContinuationToken=token)
        assert code == ("InvalidArgument", 400), token


async def test_a_copy_that_sends_a_body_too_is_refused_and_copies_nothing(
    cluster: LocalCluster, admin: list[BaseClient]
) -> None:
    """CopyObject and UploadPartCopy take no body: one that comes signed with the request
    (a client that meant to upload) is UnexpectedContent (400), as Amazon S3 answers, not
    a copy that drops it. Without a body, the same calls copy."""
    bucket = await new_bucket(admin[0], "s3-copy-body")
    await s3(admin[0].put_object, Bucket=bucket, Key="orig", Body=b"the original")
    origin = {"Bucket": bucket, "Key": "orig"}
    sender = await s3(client, cluster[2].s3_url)

    def add_body(request: Any, **_: Any) -> None:  # before signing: the body is signed too
        request.data = b"meant as the data"

    try:
        upload = await s3(sender.create_multipart_upload, Bucket=bucket, Key="parts")
        for operation in ("CopyObject", "UploadPartCopy"):
            sender.meta.events.register(f"before-sign.s3.{operation}", add_body)
        code = await refused(sender.copy_object, Bucket=bucket, Key="copy", CopySource=origin)
        assert code == ("UnexpectedContent", 400)
        part = {"Bucket": bucket, "Key": "parts", "UploadId": upload["UploadId"]}
        code = await refused(sender.upload_part_copy, **part, PartNumber=1, CopySource=origin)
        assert code == ("UnexpectedContent", 400)
        assert await refused(admin[1].head_object, Bucket=bucket, Key="copy") == ("404", 404)
        listed = await s3(admin[1].list_parts, **part)
        assert listed.get("Parts", []) == []
        await s3(admin[3].copy_object, Bucket=bucket, Key="copy", CopySource=origin)
        copied = await s3(admin[4].get_object, Bucket=bucket, Key="copy")
        assert await s3(copied["Body"].read) == b"the original"
        await s3(admin[3].upload_part_copy, **part, PartNumber=1, CopySource=origin)
        assert len((await s3(admin[1].list_parts, **part))["Parts"]) == 1
        await s3(admin[0].abort_multipart_upload, **part)
    finally:
        sender.close()


async def test_copy_source_conditions_are_checked_on_the_source(admin: list[BaseClient]) -> None:
    """x-amz-copy-source-if-* (ceph/s3-tests' test_copy_object_if*): 412 when one does not
    hold, never 304, and nothing is copied then."""
    bucket = await new_bucket(admin[0], "s3-copy-if")
    put = await s3(admin[1].put_object, Bucket=bucket, Key="src", Body=b"source body")
    etag = put["ETag"]
    origin = {"Bucket": bucket, "Key": "src"}
    past = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    holding = [
        {"CopySourceIfMatch": etag},
        {"CopySourceIfNoneMatch": '"0123"'},
        {"CopySourceIfModifiedSince": past},
        {"CopySourceIfUnmodifiedSince": future},
        {"CopySourceIfMatch": etag, "CopySourceIfUnmodifiedSince": past},  # if-match wins
    ]
    for number, condition in enumerate(holding):
        key = f"copy-{number}"
        await s3(admin[2].copy_object, Bucket=bucket, Key=key, CopySource=origin, **condition)
        got = await s3(admin[3].get_object, Bucket=bucket, Key=key)
        assert await s3(got["Body"].read) == b"source body"
    failing = [
        {"CopySourceIfMatch": '"0123"'},
        {"CopySourceIfNoneMatch": etag},
        {"CopySourceIfModifiedSince": future},
        {"CopySourceIfUnmodifiedSince": past},
        {"CopySourceIfNoneMatch": etag, "CopySourceIfModifiedSince": past},  # if-none wins
    ]
    for condition in failing:
        code = await refused(
            admin[4].copy_object, Bucket=bucket, Key="never", CopySource=origin, **condition
        )
        assert code == ("PreconditionFailed", 412), condition
    assert await refused(admin[5].head_object, Bucket=bucket, Key="never") == ("404", 404)
