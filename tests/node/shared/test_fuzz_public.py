"""Fuzzing the public API: random requests to every public route, against seven peers.

Hypothesis draws methods, routes (every public one, and none), names of every kind, query
strings, headers (Range, Content-Type, Expect, encodings, conditionals, peer headers, any)
and bodies, and sends them with aiohttp through ``public_request``, most with the
harness's admin key (so that they reach the routes' handlers: names are mostly
``NAMESPACE/NAME``, and a first write makes its namespace), some without a key; a second
test sends random and mutated bytes over raw sockets (their valid heads keyed). Every
answer must be below 500 (a 401 or 403 is an answer too), nothing may be logged at ERROR,
and afterwards every listed file must read back whole with its etag, only files whose PUT
succeeded may be listed, and the cluster must still store and serve a file. ``CASES``
counts the requests (printed at the end of the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.harness import LocalCluster
from tests.harness.access import ADMIN_HEADERS
from tests.harness.clients import RawClient, public_request, raw_request
from tests.harness.fuzzing import CASES, ErrorLog, LoopDriver
from tests.harness.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_FILE = 32 << 10
# Hypothesis's database is off: the suite must not write into the repository.
FUZZ = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
RAW = settings(FUZZ, max_examples=150)

# the shared cluster stores the harness's admin key: every raw request sends it
keyed_request = functools.partial(raw_request, keyed=True)


@pytest.fixture(scope="module")
def shared_overrides() -> dict[str, Any]:
    # Small limits, so that the fuzz reaches them: bodies past the file limit, heads that
    # never end (408 quickly), bodies shorter than their Content-Length.
    return {"max_file_size": MAX_FILE, "header_timeout": 0.3, "client_timeout": 0.5}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """Sends the harness's admin key (the shared cluster stores it) with every request."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        timeout=timeout, auto_decompress=False, headers=ADMIN_HEADERS
    ) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    """Sends no credentials (401 on every route but /health and public-read reads)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def errors() -> AsyncIterator[ErrorLog]:
    with ErrorLog() as log:
        yield log


STORED: set[str] = set()  # names the peers answered 201 to a PUT of


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def seeded(cluster: LocalCluster, session: aiohttp.ClientSession) -> None:
    """Files for the fuzz to find: ranges, conditionals and deletes of real files."""
    for name in SEEDS:
        url = f"{cluster[0].url}/files/{name}"
        async with public_request(session, "PUT", url, data=os.urandom(9000)) as response:
            assert response.status == 201
        STORED.add(name)


SEEDS = ["fuzz/seed", "fuzz/a", "fuzz/dir/x"]  # stored before the fuzz starts
# Weighted towards what reaches code: the routes with names, names that exist, GET, Range.
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
numbers = st.one_of(
    st.integers(0, 20_000).map(str),
    st.integers(0, 10**40).map(str),
    st.just("9" * 5000),
    st.sampled_from(["0" * 3000 + "1", "", "-1", "+1", "1_0", "\u0661", str(2**63), str(2**64)]),
)
names = st.one_of(
    st.sampled_from(SEEDS),
    st.sampled_from(SEEDS),
    st.sampled_from(["..", ".", "a/../b", "a//b", "%2e%2e", "%00", "%ff", "a\nb", " "]),
    st.text(max_size=30),
    st.text(max_size=30).map("fuzz/".__add__),  # past the name check, to the handlers
    st.text(st.characters(codec="ascii"), min_size=1000, max_size=1100),
)
routes = st.sampled_from(
    ["/files/{}"] * 5
    + ["/files", "/manifests/{}", "/cluster", "/health", "/scrub", "/{}"]
    + ["/keys", "/keys/{}", "/namespaces", "/namespaces/{}"]
)
methods = st.one_of(
    st.sampled_from(["GET"] * 4 + ["HEAD", "HEAD", "PUT", "PUT", "DELETE", "POST", "OPTIONS"]),
    st.from_regex(r"[A-Z]{1,12}", fullmatch=True),
)
ranges = st.one_of(
    st.builds("bytes={}-{}".format, numbers, numbers),
    st.builds("bytes={}-".format, numbers),
    st.builds("bytes=-{}".format, numbers),
    st.builds("bytes={}-{},{}-{}".format, numbers, numbers, numbers, numbers),
    printable,
)
header_values = {
    "Range": ranges,
    "Content-Type": st.one_of(printable, st.sampled_from(["text/html", "application/json"])),
    "If-None-Match": st.one_of(printable, st.just('"x"')),
    "Expect": st.one_of(st.just("100-continue"), printable),
    "Content-Encoding": st.one_of(st.sampled_from(["gzip", "identity", "br"]), printable),
    "Accept-Encoding": st.sampled_from(["gzip", "br", "*"]),
    "X-Ringstore-Peer": printable,
    "X-Ringstore-Version": printable,
    "Origin": st.just("https://evil.example"),
    "Connection": st.sampled_from(["close", "keep-alive", "upgrade"]),
    "Upgrade": st.sampled_from(["websocket", "h2c"]),
    "X-Anything": printable,
}
headers = st.fixed_dictionaries(
    {},
    optional={"Range": ranges, "Range ": ranges},  # two chances for Range
).flatmap(
    lambda chosen: st.dictionaries(
        st.sampled_from(sorted(header_values)), st.none(), max_size=3
    ).flatmap(
        lambda more: st.fixed_dictionaries(
            {name: header_values[name] for name in more},
        ).map(lambda extra: {**{k.strip(): v for k, v in chosen.items()}, **extra})
    )
)
queries = st.dictionaries(
    st.sampled_from(["prefix", "start_after", "limit", "x"]),
    st.one_of(printable, numbers),
    max_size=3,
)
bodies = st.one_of(
    st.none(), st.binary(max_size=2000), st.binary(min_size=MAX_FILE - 10, max_size=MAX_FILE + 10)
)


def target(route: str, name: str, quoted: bool) -> str:
    """``route`` with ``name`` in it, percent-encoded (``quoted``: its % signs too)."""
    return route.format(quote(name, safe="/" if quoted else "/%"))


async def public_case(
    cluster: LocalCluster,
    sessions: dict[bool, aiohttp.ClientSession],
    errors: ErrorLog,
    case: Case,
) -> None:
    """Send one drawn request (keyed or not: ``sessions[case.keyed]``); fail on a 5xx or
    anything logged at ERROR meanwhile."""
    session = sessions[case.keyed]
    logged = len(errors.records)
    url = URL(cluster[case.peer].url + target(case.route, case.name, case.quoted), encoded=True)
    if case.query:
        url = url.with_query(case.query)
    try:
        async with public_request(
            session, case.method, url, headers=case.headers, data=case.body, allow_redirects=False
        ) as response:
            answer = await response.read()
            status = response.status
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
        status, answer = 0, b""  # the peer closed the connection (Connection: upgrade ...)
    CASES["public requests"] += 1
    assert status < 500, f"{case.method} {url}: {status} {answer[:300]!r}"
    assert len(errors.records) == logged, "\n".join(errors.lines()[logged:])
    if case.method == "PUT" and status == 201:
        STORED.add(json.loads(answer)["name"])


@dataclass(frozen=True)
class Case:
    peer: int
    method: str
    route: str
    name: str
    quoted: bool
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None
    keyed: bool


keyed = st.sampled_from([True, True, True, False])  # mostly with the admin key
anything = st.builds(
    Case,
    peer=st.integers(0, 6),
    method=methods,
    route=routes,
    name=names,
    quoted=st.booleans(),
    query=queries,
    headers=headers,
    body=bodies,
    keyed=keyed,
)
reads = st.builds(  # reads of files that exist, with every kind of Range and conditional
    Case,
    peer=st.integers(0, 6),
    method=st.sampled_from(["GET", "GET", "HEAD"]),
    route=st.just("/files/{}"),
    name=st.sampled_from(SEEDS),
    quoted=st.just(True),
    query=st.just({}),
    headers=headers,
    body=st.none(),
    keyed=keyed,
)
writes = st.builds(  # PUTs and DELETEs of names of every kind
    Case,
    peer=st.integers(0, 6),
    method=st.sampled_from(["PUT", "PUT", "DELETE"]),
    route=st.just("/files/{}"),
    name=names,
    quoted=st.booleans(),
    query=st.just({}),
    headers=headers,
    body=bodies,
    keyed=keyed,
)
cases = st.one_of(reads, writes, anything)


async def test_random_requests_to_public_routes_get_no_5xx(
    cluster: LocalCluster,
    session: aiohttp.ClientSession,
    anonymous: aiohttp.ClientSession,
    errors: ErrorLog,
    seeded: None,
) -> None:
    driver = LoopDriver(asyncio.get_running_loop())
    sessions = {True: session, False: anonymous}

    @FUZZ
    @given(case=cases)
    def fuzz(case: Case) -> None:
        driver.call(public_case(cluster, sessions, errors, case))

    await driver.run(fuzz)


VALID_HEADS = [
    keyed_request("GET", "/health"),
    keyed_request("GET", "/files/fuzz/seed", {"Range": "bytes=0-1"}),
    keyed_request("PUT", "/files/fuzz/raw", {"Content-Length": "5"}, b"hello"),
    keyed_request(
        "PUT", "/files/fuzz/raw", {"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n"
    ),
    keyed_request("DELETE", "/files/fuzz/raw"),
    keyed_request("GET", "/files?prefix=a&limit=2"),
    keyed_request("GET", "/files/fuzz/seed", {"Expect": "100-continue"}),
]


def mutate(base: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``base`` with each (position, bytes removed, bytes inserted) edit applied."""
    data = bytearray(base)
    for position, removed, inserted in edits:
        at = position % (len(data) + 1)
        data[at : at + removed] = inserted
    return bytes(data)


raw_inputs = st.one_of(
    st.binary(max_size=200),
    st.builds(
        mutate,
        st.sampled_from(VALID_HEADS),
        st.lists(
            st.tuples(st.integers(0, 400), st.integers(0, 4), st.binary(max_size=4)), max_size=4
        ),
    ),
    st.builds(b"".join, st.lists(st.sampled_from(VALID_HEADS), max_size=4)),  # pipelined
)


async def raw_case(cluster: LocalCluster, errors: ErrorLog, peer: int, data: bytes) -> None:
    """Send drawn bytes on a connection of their own; fail on a 5xx or an ERROR logged."""
    logged = len(errors.records)
    async with await RawClient.connect(cluster[peer]) as client:
        with contextlib.suppress(ConnectionError):
            await client.send(data)
        try:
            status, _, body = await client.answer(timeout=10)
        except (asyncio.IncompleteReadError, ConnectionError):
            status, body = 0, b""  # closed without an answer (or while sending it)
    CASES["raw requests"] += 1
    assert status < 500, f"{data!r}: {status} {body[:300]!r}"
    assert len(errors.records) == logged, "\n".join(errors.lines()[logged:])
    if status == 201:
        STORED.add(json.loads(body)["name"])


async def test_random_bytes_get_no_5xx_and_no_traceback(
    cluster: LocalCluster, errors: ErrorLog
) -> None:
    driver = LoopDriver(asyncio.get_running_loop())

    @RAW
    @given(peer=st.integers(0, 6), data=raw_inputs)
    def fuzz(peer: int, data: bytes) -> None:
        driver.call(raw_case(cluster, errors, peer, data))

    await driver.run(fuzz)


async def _whole_or_gone(session: aiohttp.ClientSession, url: str, name: str) -> bool:
    """Whether ``name`` is listed no more, or reads back whole at the listed size and etag."""
    params = {"prefix": name, "limit": "1"}
    async with public_request(session, "GET", f"{url}/files", params=params) as response:
        assert response.status == 200
        entries = [e for e in (await response.json())["files"] if e["name"] == name]
    if not entries:
        return True
    file_url = URL(f"{url}/files/{quote(name, safe='/')}", encoded=True)
    async with public_request(session, "GET", file_url) as response:
        if response.status != 200:
            return False
        data = await response.read()
    entry = entries[0]
    return len(data) == entry["size"] and hashlib.md5(data).hexdigest() == entry["etag"]


async def test_afterwards_every_listed_file_is_whole_and_the_cluster_serves(
    cluster: LocalCluster, session: aiohttp.ClientSession, errors: ErrorLog
) -> None:
    url = cluster[0].url
    listed: list[dict[str, Any]] = []
    after = ""
    while True:
        params = {"start_after": after} if after else {}
        async with public_request(session, "GET", f"{url}/files", params=params) as response:
            assert response.status == 200
            page = await response.json()
        listed += page["files"]
        if not page["next"]:
            break
        after = page["next"]
    for entry in listed:
        assert entry["name"] in STORED, f"{entry['name']!r} was listed, never stored whole"
        # A pipelined write of the raw fuzz may still be committing when this test starts
        # (its client left after the first answer): a listed file must be whole, or stop
        # being listed, once that write settles.
        await eventually(
            functools.partial(_whole_or_gone, session, url, entry["name"]),
            timeout=10,
            what=f"{entry['name']!r} to be whole (or no longer listed)",
        )
    data = os.urandom(MAX_FILE)
    put_url = f"{cluster[3].url}/files/fuzz/after-the-fuzz"
    async with public_request(session, "PUT", put_url, data=data) as response:
        assert response.status == 201
    async with public_request(session, "GET", put_url.replace(cluster[3].url, cluster[5].url)) as r:
        assert await r.read() == data
    assert not errors.records, "\n".join(errors.lines())
