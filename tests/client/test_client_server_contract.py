"""The client's copies of the server's contract stay in sync with the server.

The client cannot import the peer (``client/`` talks HTTP only), so it keeps its own table of
error codes and its own records of the JSON answers. These tests hold those copies against
the server: every error class the server can answer with reaches the client as its
counterpart, and every field of every JSON answer is either read by the client's record
with the right type or listed here as deliberately not exposed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

import client.errors
from client.records import (
    ChunkInfo,
    ClusterView,
    FileEntry,
    Manifest,
    PeerInfo,
    PutResult,
    RingInfo,
)
from node import errors as server
from node.api.errors import status_of
from tests.harness import LocalCluster


def every_server_error() -> list[type[server.RingstoreError]]:
    """Every error class a peer can answer with (StartRefused stops a peer before it serves)."""
    found: list[type[server.RingstoreError]] = []
    pending = [server.RingstoreError]
    while pending:
        cls = pending.pop()
        if cls is not server.StartRefused:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.code)


def counterpart(cls: type[server.RingstoreError]) -> type[client.errors.RingstoreError]:
    """The client class a server error should become: the nearest ancestor the client names
    (the server's root, ``internal``, is an unexplained failure: ServerError)."""
    if cls is server.RingstoreError:
        return client.errors.ServerError
    for ancestor in cls.__mro__:
        named = getattr(client.errors, ancestor.__name__, None)
        if isinstance(named, type) and issubclass(named, client.errors.RingstoreError):
            return named
    raise AssertionError(f"no client counterpart for {cls.__name__}")


@pytest.mark.parametrize("cls", every_server_error(), ids=lambda cls: cls.code)
def test_every_server_error_reaches_the_client_as_its_counterpart(
    cls: type[server.RingstoreError],
) -> None:
    status = status_of(cls.__new__(cls))
    body = json.dumps({"error": {"code": cls.code, "message": "m"}}).encode()
    error = client.errors.error_from_response(status, body, peer="http://p")
    assert type(error) is counterpart(cls), f"{cls.code} ({status})"
    assert (error.code, error.status) == (cls.code, status)
    # A HEAD answer has no body: the code travels in a header and must still map.
    headless = client.errors.error_from_response(status, b"", peer="p", implied_code=cls.code)
    assert type(headless) is counterpart(cls)


def assert_record_matches(
    record: type[Any],
    answer: Mapping[str, Any],
    not_exposed: set[str],
    renamed: Mapping[str, str] = {},
    built_from: Mapping[str, set[str]] = {},
) -> None:
    """Every field of ``record`` is in ``answer`` with its type (a field in ``built_from``:
    every key it is built from is); every other key of ``answer`` is one the client
    deliberately leaves out."""
    scalar = {"str": str, "int": int, "float": (int, float), "bool": bool}
    names = {
        renamed.get(f.name, f.name): f
        for f in dataclasses.fields(record)
        if f.name not in built_from
    }
    for key, field in names.items():
        assert key in answer, f"{record.__name__}.{field.name}: the server sends no {key!r}"
        if str(field.type) in scalar:
            kind = scalar[str(field.type)]
            assert isinstance(answer[key], kind), f"{record.__name__}.{field.name} is {kind}"
    for name, keys in built_from.items():
        for key in keys:
            assert key in answer, f"{record.__name__}.{name}: the server sends no {key!r}"
    known = set(names).union(*built_from.values())
    extra = set(answer) - known
    assert extra == not_exposed, f"{record.__name__}: fields the client does not know: {extra}"


async def test_every_json_answer_matches_the_client_s_records(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    url = cluster[0].url
    async with http.put(f"{url}/files/contract/a.txt", data=b"x" * 30_000) as response:
        put = await response.json()
    assert_record_matches(PutResult, put, set())
    async with http.get(f"{url}/files", params={"prefix": "contract/"}) as response:
        listing = await response.json()
    assert set(listing) == {"files", "prefixes", "next"}
    params = {"prefix": "contract/", "delimiter": "."}
    async with http.get(f"{url}/files", params=params) as response:
        folders = await response.json()
    assert folders == {"files": [], "prefixes": ["contract/a."], "next": None}
    assert_record_matches(FileEntry, listing["files"][0], {"modified"})
    async with http.get(f"{url}/manifests/contract/a.txt") as response:
        manifest = await response.json()
    assert_record_matches(Manifest, manifest, {"modified", "revision"})
    assert_record_matches(ChunkInfo, manifest["chunks"][0], set())
    async with http.get(f"{url}/cluster") as response:
        view = await response.json()
    assert_record_matches(
        ClusterView, view, {"discovery"}, {"self_id": "self", "cluster_id": "cluster"}
    )
    balance = {"max_ratio": {"balance"}, "min_ratio": {"balance"}, "cv": {"balance"}}
    assert_record_matches(RingInfo, view["ring"], set(), built_from=balance)
    upkeep = {"upkeep": {"rebalance", "repair_queued", "scrub", "deletions_pending"}}
    assert_record_matches(
        PeerInfo, view["peers"][0], {"disk_total_bytes", "disk_free_bytes"}, built_from=upkeep
    )
    # And the records build from these answers.
    assert ClusterView.from_json(view).peer(cluster[0].id) is not None
    assert ClusterView.from_json(view).max_clock_offset_ms == view["max_clock_offset_ms"]
    assert Manifest.from_json(manifest).chunks
