"""Signature V4 without a server: AWS's published S3 examples, and requests signed by
botocore's own signers (header and presigned) verified by ``node.api.s3.sigv4``."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from collections.abc import Iterator
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from node.api.s3 import sigv2, sigv4
from node.api.s3.auth import check_amz_headers_signed
from node.api.s3.errors import DOMAIN_CODES, STATUS, S3Error
from node.api.s3.sigv4 import SigV4Error

# The example credentials and requests of AWS's "Signature Calculations for the
# Authorization Header" and "Authenticating Requests: Using Query Parameters" (S3 API
# reference, Signature Version 4 examples).
EXAMPLE_KEY = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE_TIME = dt.datetime(2013, 5, 24, tzinfo=dt.timezone.utc)


def _headers(pairs: dict[str, str]) -> dict[str, list[str]]:
    return {name.lower(): [value] for name, value in pairs.items()}


def test_aws_example_get_object_with_a_range() -> None:
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={EXAMPLE_KEY}/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    headers = _headers(
        {
            "Host": "examplebucket.s3.amazonaws.com",
            "Range": "bytes=0-9",
            "x-amz-content-sha256": sigv4.EMPTY_SHA256,
            "x-amz-date": "20130524T000000Z",
        }
    )
    signed = sigv4.from_header(authorization, "20130524T000000Z", sigv4.EMPTY_SHA256)
    assert sigv4.verifies(EXAMPLE_SECRET, signed, "GET", "/test.txt", [], headers)
    assert not sigv4.verifies(EXAMPLE_SECRET + "x", signed, "GET", "/test.txt", [], headers)
    assert not sigv4.verifies(EXAMPLE_SECRET, signed, "GET", "/test.txt2", [], headers)
    assert "f0e8bd" not in repr(signed)  # never the signature in a log line


def test_aws_example_presigned_get() -> None:
    query = sigv4.parse_query(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={EXAMPLE_KEY}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    headers = _headers({"Host": "examplebucket.s3.amazonaws.com"})
    signed = sigv4.from_query(query)
    assert sigv4.verifies(EXAMPLE_SECRET, signed, "GET", "/test.txt", query, headers)
    sigv4.check_time(signed, EXAMPLE_TIME + dt.timedelta(hours=23))
    with pytest.raises(SigV4Error, match="expired") as expired:
        sigv4.check_time(signed, EXAMPLE_TIME + dt.timedelta(hours=24, seconds=1))
    assert expired.value.code == "AccessDenied"


SIGNED_AT = dt.datetime(2026, 3, 1, 12, 30, 5, tzinfo=dt.timezone.utc)


@contextlib.contextmanager
def frozen_botocore() -> Iterator[None]:
    """botocore's signers read ``SIGNED_AT`` as the time (naive UTC, as botocore's own)."""
    moment = SIGNED_AT.replace(tzinfo=None)
    with mock.patch.object(botocore_auth, "get_current_datetime", return_value=moment):
        yield


def _parts(request: AWSRequest) -> tuple[str, list[tuple[str, str]], dict[str, list[str]]]:
    url = urlsplit(request.url)
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    headers.setdefault("host", [url.netloc])
    return url.path, sigv4.parse_query(url.query), headers


keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40
).filter(lambda k: all(s not in ("", ".", "..") for s in k.split("/")))
values = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)


@settings(max_examples=50, deadline=None)
@given(key=keys, prefix=values, payload=st.binary(max_size=64))
def test_botocore_header_signatures_verify(key: str, prefix: str, payload: bytes) -> None:
    path = "/bucket/" + percent_encode(key, safe="/~")  # as botocore sends keys
    request = AWSRequest(
        method="PUT",
        url=f"http://127.0.0.1:9000{path}",
        params={"prefix": prefix, "list-type": "2"},
        data=payload,
        headers={"Content-Type": "text/plain"},
    )
    with frozen_botocore():
        signer = botocore_auth.S3SigV4Auth(Credentials("RSKEY", "secret/+="), "s3", "eu-west-3")
        signer.add_auth(request)
    prepared = request.prepare()
    raw_path, query, headers = _parts(prepared)  # type: ignore[arg-type]
    signed = sigv4.from_header(
        headers["authorization"][0], headers["x-amz-date"][0], headers["x-amz-content-sha256"][0]
    )
    assert signed.region == "eu-west-3"
    assert sigv4.verifies("secret/+=", signed, "PUT", raw_path, query, headers)
    assert not sigv4.verifies("secret/+", signed, "PUT", raw_path, query, headers)
    assert not sigv4.verifies("secret/+=", signed, "GET", raw_path, query, headers)
    sigv4.check_time(signed, SIGNED_AT + dt.timedelta(minutes=14))
    with pytest.raises(SigV4Error) as skewed:
        sigv4.check_time(signed, SIGNED_AT - dt.timedelta(minutes=16))
    assert skewed.value.code == "RequestTimeTooSkewed"


def test_botocore_presigned_urls_verify() -> None:
    request = AWSRequest(method="GET", url="http://127.0.0.1:9000/bucket/a%20b/c~d.txt")
    with frozen_botocore():
        botocore_auth.S3SigV4QueryAuth(
            Credentials("RSKEY", "s3cr3t"), "s3", "us-east-1", expires=60
        ).add_auth(request)
    raw_path, query, headers = _parts(request)
    signed = sigv4.from_query(query)
    assert signed.presigned
    assert signed.expires == 60
    assert sigv4.verifies("s3cr3t", signed, "GET", raw_path, query, headers)
    sigv4.check_time(signed, SIGNED_AT + dt.timedelta(seconds=59))
    with pytest.raises(SigV4Error, match="expired"):
        sigv4.check_time(signed, SIGNED_AT + dt.timedelta(seconds=61))
    tampered = [(n, "bucket" if n == "X-Amz-Expires" else v) for n, v in query]
    with pytest.raises(SigV4Error):
        sigv4.from_query(tampered)
    longer = [(n, "3600" if n == "X-Amz-Expires" else v) for n, v in query]
    assert not sigv4.verifies("s3cr3t", sigv4.from_query(longer), "GET", raw_path, longer, headers)


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (
            "AWS4-HMAC-SHA256 Credential=K/20260301/r/s3/aws4_request",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=K/20260301/r/sqs/aws4_request,SignedHeaders=host,"
            "Signature=00",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=K/20260302/r/s3/aws4_request,SignedHeaders=host,"
            "Signature=00",
            "AuthorizationHeaderMalformed",  # the scope's day is not X-Amz-Date's
        ),
        (
            "AWS4-HMAC-SHA256 Credential=K/20260301/r/s3/aws4_request,SignedHeaders=date,"
            "Signature=00",
            "AuthorizationHeaderMalformed",  # host must be signed
        ),
        ("AWS4-HMAC-SHA512 Credential=x", "AuthorizationHeaderMalformed"),
    ],
)
def test_malformed_authorization_headers_are_refused(authorization: str, code: str) -> None:
    with pytest.raises(SigV4Error) as refused:
        sigv4.from_header(authorization, "20260301T000000Z", sigv4.EMPTY_SHA256)
    assert refused.value.code == code


def test_payload_hash_must_be_given_and_well_formed() -> None:
    good = (
        "AWS4-HMAC-SHA256 Credential=K/20260301/r/s3/aws4_request,SignedHeaders=host,Signature=00"
    )
    with pytest.raises(SigV4Error):
        sigv4.from_header(good, "20260301T000000Z", None)
    with pytest.raises(SigV4Error):
        sigv4.from_header(good, "20260301T000000Z", "not-a-hash")
    for accepted in (sigv4.UNSIGNED_PAYLOAD, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "ab" * 32):
        assert sigv4.from_header(good, "20260301T000000Z", accepted).payload_hash == accepted


def test_every_s3_code_the_domain_maps_to_has_a_status() -> None:
    assert all(code in STATUS for _, code in DOMAIN_CODES)


def test_signatures_outside_ascii_do_not_verify() -> None:
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={EXAMPLE_KEY}/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=é"
    )
    headers = _headers(
        {
            "Host": "examplebucket.s3.amazonaws.com",
            "x-amz-content-sha256": sigv4.EMPTY_SHA256,
            "x-amz-date": "20130524T000000Z",
        }
    )
    signed = sigv4.from_header(authorization, "20130524T000000Z", sigv4.EMPTY_SHA256)
    assert not sigv4.verifies(EXAMPLE_SECRET, signed, "GET", "/test.txt", [], headers)
    signed_v2 = sigv2.SignedV2(EXAMPLE_KEY, "é", 2_000_000_000)
    assert not sigv2.verifies(EXAMPLE_SECRET, signed_v2, "GET", "/b/k", [])


def test_a_presigned_payload_hash_must_be_hex() -> None:
    query = [
        ("X-Amz-Algorithm", sigv4.ALGORITHM),
        ("X-Amz-Credential", f"{EXAMPLE_KEY}/20130524/us-east-1/s3/aws4_request"),
        ("X-Amz-Date", "20130524T000000Z"),
        ("X-Amz-Expires", "60"),
        ("X-Amz-SignedHeaders", "host"),
        ("X-Amz-Signature", "0" * 64),
        ("X-Amz-Content-Sha256", "zz"),
    ]
    with pytest.raises(SigV4Error) as refused:
        sigv4.from_query(query)
    assert refused.value.code == "InvalidArgument"


def test_boto3_signs_every_x_amz_header_it_sends() -> None:
    """boto3's own requests pass the rule that every x-amz-* header is signed: over HTTPS
    (aws-chunked with a checksum trailer), with x-amz-checksum-* headers, DeleteObjects."""
    s3 = boto3.client(
        "s3",
        endpoint_url="https://127.0.0.1:1",
        aws_access_key_id=EXAMPLE_KEY,
        aws_secret_access_key=EXAMPLE_SECRET,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    seen: list[dict[str, list[str]]] = []

    class Sent(Exception):
        pass

    def grab(request: AWSRequest, **_: object) -> None:
        text = {
            k: v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()
        }
        seen.append({k.lower(): [v] for k, v in text.items()})
        raise Sent

    s3.meta.events.register("before-send.s3.*", grab)
    calls = [
        lambda: s3.put_object(Bucket="b", Key="k", Body=b"x" * 10),
        lambda: s3.put_object(
            Bucket="b", Key="k", Body=io.BytesIO(b"x"), ChecksumAlgorithm="SHA256"
        ),
        lambda: s3.delete_objects(Bucket="b", Delete={"Objects": [{"Key": "a"}]}),
    ]
    for call in calls:
        with pytest.raises(Sent):
            call()
    s3.close()
    assert "x-amz-trailer" in seen[0]
    assert "x-amz-checksum-crc32" in seen[2]
    for headers in seen:
        authorization = headers["authorization"][0]
        signed = sigv4.from_header(
            authorization, headers["x-amz-date"][0], headers["x-amz-content-sha256"][0]
        )
        check_amz_headers_signed(signed, headers)
        headers["x-amz-copy-source"] = ["private/secret"]
        with pytest.raises(S3Error, match="must be signed"):
            check_amz_headers_signed(signed, headers)
