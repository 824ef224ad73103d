"""``ringstore up`` serves S3 beside the files API: peer i on --port + 1000 + i (with
``--s3-shared``: every peer on --port + 1000), with the awscli line it prints, and boto3
reading through one peer (or the shared port) what it wrote through another, with the
credentials file ``up`` writes."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from client.credentials import read_credentials
from node.disk.data_dir import CREDENTIALS_FILE
from tests.harness import free_port_block
from tests.harness.up import ringstore_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
PEERS = 3


def round_trip(data: Path, base: int, shared: bool = False) -> bytes:
    """Through boto3: a bucket and an object written via peer 0's S3 port, read via peer 2's
    (``shared``: both through the one port, each client on a connection of its own)."""
    key = read_credentials(data / CREDENTIALS_FILE)
    config = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})

    def client(index: int) -> BaseClient:
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{base + 1000 + index}",
            aws_access_key_id=key.access_key,
            aws_secret_access_key=key.secret_key,
            region_name="us-east-1",
            config=config,
        )

    writer, reader = client(0), client(0 if shared else PEERS - 1)
    try:
        writer.create_bucket(Bucket="e2e-s3")
        writer.put_object(Bucket="e2e-s3", Key="dir/hello.txt", Body=b"hello over S3")
        body: bytes = reader.get_object(Bucket="e2e-s3", Key="dir/hello.txt")["Body"].read()
        return body
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize("shared", [False, True], ids=["own-ports", "shared-port"])
async def test_ringstore_up_serves_s3_on_port_plus_1000(tmp_path: Path, shared: bool) -> None:
    base = free_port_block(PEERS)  # (its S3 ports too)
    data = tmp_path / "data"
    flags = ["--s3-shared"] if shared else []
    async with ringstore_up(data, base, PEERS, *flags, until="--endpoint-url") as printed:
        assert re.search(
            rf"AWS_SHARED_CREDENTIALS_FILE=\S+/credentials aws "
            rf"--endpoint-url http://127\.0\.0\.1:{base + 1000} s3 ls",
            printed,
        ), printed
        assert (f"shared by all {PEERS} peers" in printed) == shared, printed
        assert await asyncio.to_thread(round_trip, data, base, shared) == b"hello over S3"
