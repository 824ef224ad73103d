"""Fuzzing the peer API with valid credentials: random and cut-off msgpack to every route.

A member is trusted to be a member, not to be correct: every ``/internal/`` route must
answer random bodies, truncated valid bodies, random owners, ids, versions and query
strings with a 4xx (or a success, when the input happens to be valid), never a 5xx or an
ERROR in the log. Each request is signed as a fellow member would sign it (``internal``),
and carries no access key, as a member's does not. Afterwards the cluster must still see
every member up and store and serve a file (public requests: with the harness's admin key).
``CASES`` counts the requests (printed at the end of the session).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.cluster.protocol import MSGPACK, ManifestCalls, ManifestOffer, ManifestRead, PullOrder
from tests.harness import LocalCluster, all_see_all_up, eventually, internal
from tests.harness.access import ADMIN_HEADERS
from tests.harness.clients import public_request
from tests.harness.fuzzing import CASES, ErrorLog, LoopDriver

pytestmark = pytest.mark.asyncio(loop_scope="module")

FUZZ = settings(
    max_examples=800, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SAMPLE = "fuzz/sample"  # a file stored before the fuzz, whose parts the fuzz bends


@dataclass(frozen=True)
class Samples:
    """Valid bodies and fields of this cluster, for the fuzz to cut and bend."""

    manifest: bytes  # a sealed manifest replica
    gossip: bytes  # a gossip message
    pull: bytes  # a pull order
    batch: bytes  # manifest calls: an offer of the manifest and a read
    chunk_id: str
    version: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def samples(cluster: LocalCluster) -> Samples:
    peer = cluster[0]
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers=ADMIN_HEADERS) as http:
        url = f"{peer.url}/files/{SAMPLE}"
        async with public_request(http, "PUT", url, data=os.urandom(30_000)) as response:
            assert response.status == 201
    manifest = await peer.coordinator.stat(SAMPLE)
    ref = manifest.chunks[0]
    order = PullOrder(
        cluster.holder(ref.holder).url,
        ref.holder,
        manifest.layout.chunk_size,
        manifest.layout.block_size,
        ref.digest,
        manifest.name,
        str(manifest.version),
    )
    return Samples(
        manifest=manifest.to_bytes(),
        gossip=msgspec.msgpack.encode(peer.gossip.message()),
        pull=msgspec.msgpack.encode(order),
        batch=msgspec.msgpack.encode(
            ManifestCalls([ManifestOffer(manifest.to_bytes()), ManifestRead(SAMPLE, "fuzz")])
        ),
        chunk_id=manifest.chunk_id(ref.index),
        version=str(manifest.version),
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """For the signed peer calls: no access key (the peer API takes none)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def errors() -> AsyncIterator[ErrorLog]:
    with ErrorLog() as log:
        yield log


def cut(data: bytes, at: int) -> bytes:
    return data[: at % (len(data) + 1)]


def bend(data: bytes, at: int, byte: int) -> bytes:
    if not data:
        return data
    at %= len(data)
    return data[:at] + bytes([byte]) + data[at + 1 :]


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
text = st.text(max_size=40)
# What a header can carry unchanged (HTTP trims the ends and refuses control characters,
# and a signature covers the value sent): visible ASCII, inner spaces.
header_text = st.from_regex(r"([!-~]([ -~]{0,30}[!-~])?)?", fullmatch=True)
numbers = st.one_of(st.integers(-1, 2**70).map(str), text, st.just("9" * 5000))
header_numbers = st.one_of(st.integers(-1, 2**70).map(str), header_text, st.just("9" * 5000))


@st.composite
def bodies(draw: st.DrawFn, valid: bytes) -> bytes:
    """A body for a route that takes ``valid``: cut, bent, another shape, or noise."""
    how = draw(st.sampled_from(["cut", "bend", "msgpack", "noise", "valid"]))
    if how == "cut":
        return cut(valid, draw(st.integers(0, len(valid))))
    if how == "bend":
        return bend(valid, draw(st.integers(0, 10**6)), draw(st.integers(0, 255)))
    if how == "msgpack":
        return msgspec.msgpack.encode(draw(plain))
    if how == "noise":
        return draw(st.binary(max_size=300))
    return valid


@dataclass(frozen=True)
class Call:
    peer: int
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


@st.composite
def calls(draw: st.DrawFn, samples: Samples) -> Call:
    """A signed call to one of the peer routes, with drawn input."""
    chunk = draw(
        st.one_of(
            st.just(samples.chunk_id),
            st.from_regex(r"[0-9a-f]{32}-[0-9]{1,3}", fullmatch=True),
            text.map(lambda t: quote(t, safe="")),
        )
    )
    route = draw(st.sampled_from(["chunk", "pull", "manifest", "batch", "list", "gossip"]))
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    body = b""
    if route == "chunk":
        method = draw(st.sampled_from(["PUT", "GET", "DELETE"]))
        path = f"/internal/chunks/{chunk}"
        if method == "PUT":
            headers = {
                "X-Ringstore-Name": draw(st.one_of(st.just("fuzz/fuzzed"), text.map(quote))),
                "X-Ringstore-Version": draw(st.one_of(st.just(samples.version), header_text)),
                "X-Ringstore-Block-Size": draw(st.one_of(st.just("4096"), header_numbers)),
            }
            body = draw(st.binary(max_size=5000))
        elif method == "GET" and draw(st.booleans()):
            spec = st.builds("bytes={}-{}".format, header_numbers, header_numbers)
            headers = {"Range": draw(spec)}
    elif route == "pull":
        method, path = "POST", f"/internal/chunks/{chunk}/pull"
        headers, body = {"Content-Type": MSGPACK}, draw(bodies(samples.pull))
    elif route == "manifest":
        method = draw(st.sampled_from(["GET", "PUT", "DELETE"]))
        path = "/internal/manifests"
        params = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.one_of(st.just(SAMPLE), text),
                    "expect": st.one_of(st.just(f"{samples.version}/0"), text),
                    "version": st.one_of(st.just(samples.version), text),
                    "revision": numbers,
                },
            )
        )
        if method == "PUT":
            headers, body = {"Content-Type": MSGPACK}, draw(bodies(samples.manifest))
    elif route == "batch":
        method, path = "POST", "/internal/manifests/batch"
        headers, body = {"Content-Type": MSGPACK}, draw(bodies(samples.batch))
    elif route == "list":
        method, path = "GET", "/internal/manifests/list"
        params = draw(
            st.fixed_dictionaries(
                {}, optional={"prefix": text, "start_after": text, "limit": numbers}
            )
        )
    else:
        method, path = "POST", "/internal/gossip"
        headers, body = {"Content-Type": MSGPACK}, draw(bodies(samples.gossip))
    return Call(draw(st.integers(0, 6)), method, path, params, headers, body)


def upstream_failure(call: Call, status: int, answer: bytes) -> bool:
    """A pull answering for its source: the one 5xx a valid-looking call may get. A pull
    copies a chunk from the member its order names; when that member has no such chunk
    (503 unavailable) or its bytes fail the order's digest (500 corrupt_data: the target
    cannot tell a wrong order from a corrupt source), the target did its part."""
    if not call.path.endswith("/pull") or status not in (500, 503):
        return False
    error = json.loads(answer)["error"]
    return (error["code"], status) in {("unavailable", 503), ("corrupt_data", 500)} and (
        "source" in error["message"] or "fails its digest" in error["message"]
    )


async def peer_case(
    cluster: LocalCluster, session: aiohttp.ClientSession, errors: ErrorLog, call: Call
) -> None:
    """Make one signed call; fail on a 5xx or anything logged at ERROR meanwhile."""
    logged = len(errors.records)
    async with internal(
        session,
        cluster[call.peer],
        call.method,
        call.path,
        data=call.body,
        headers=call.headers,
        params=call.params,
    ) as response:
        answer = await response.read()
    CASES["peer requests"] += 1
    if not upstream_failure(call, response.status, answer):
        assert response.status < 500, f"{call}: {response.status} {answer[:300]!r}"
    assert response.status != 401, f"{call}: the signature was refused"
    assert len(errors.records) == logged, "\n".join(errors.lines()[logged:])


async def test_random_and_cut_msgpack_to_every_peer_route_gets_no_5xx(
    cluster: LocalCluster, session: aiohttp.ClientSession, errors: ErrorLog, samples: Samples
) -> None:
    driver = LoopDriver(asyncio.get_running_loop())

    @FUZZ
    @given(call=calls(samples))
    def fuzz(call: Call) -> None:
        driver.call(peer_case(cluster, session, errors, call))

    await driver.run(fuzz)


async def test_afterwards_the_cluster_is_whole_and_serves(
    cluster: LocalCluster, http: aiohttp.ClientSession, errors: ErrorLog
) -> None:
    assert await all_see_all_up(http, cluster.urls)
    await eventually(lambda: all_see_all_up(http, cluster.urls), what="every member up")
    data = os.urandom(50_000)
    async with public_request(http, "PUT", f"{cluster[2].url}/files/fuzz/after", data=data) as r:
        assert r.status == 201
    async with public_request(http, "GET", f"{cluster[6].url}/files/fuzz/after") as r:
        assert await r.read() == data
    async with public_request(http, "GET", f"{cluster[1].url}/files/{SAMPLE}") as r:
        assert r.status == 200, "the sample file survived the fuzz"
    assert not errors.records, "\n".join(errors.lines())
