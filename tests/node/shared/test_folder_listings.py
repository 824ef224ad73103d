"""Folder listings (``GET /files?prefix=&delimiter=``) through seven real peers.

Names below the prefix roll up at the delimiter into ``prefixes``, each one entry toward
``limit``; paging through a tree with small limits gives exactly, and once, what a flat
listing rolled up here gives; a key's listing shows nothing of namespaces it cannot read.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest

from client.credentials import Credentials
from tests.harness import LocalCluster
from tests.harness.access import ADMIN_HEADERS

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def put(http: aiohttp.ClientSession, url: str, name: str, data: bytes = b"x") -> None:
    async with http.put(f"{url}/files/{name}", data=data) as response:
        assert response.status == 201, await response.text()


async def delete(http: aiohttp.ClientSession, url: str, name: str) -> None:
    async with http.delete(f"{url}/files/{name}") as response:
        assert response.status == 204, await response.text()


async def listing(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None, **params: Any
) -> dict[str, Any]:
    query = {key: str(value) for key, value in params.items()}
    async with http.get(f"{url}/files", params=query, headers=headers or {}) as response:
        assert response.status == 200, await response.text()
        page: dict[str, Any] = await response.json()
        return page


async def every_page(
    http: aiohttp.ClientSession, urls: list[str], limit: int, **params: Any
) -> list[list[str]]:
    """Page through a listing (each page from the next peer), checking each page's shape;
    return each page's items (file names and folders) in order."""
    pages: list[list[str]] = []
    after = ""
    while True:
        url = urls[len(pages) % len(urls)]
        page = await listing(http, url, limit=limit, start_after=after, **params)
        items = sorted([f["name"] for f in page["files"]] + page["prefixes"])
        assert len(items) <= limit
        pages.append(items)
        if page["next"] is None:
            return pages
        if params.get("delimiter"):  # (a flat page may end on a deleted name's cut-off)
            assert items, f"an empty page with a next ({page['next']!r})"
            assert page["next"] == items[-1]  # the last item shown, file or folder
        after = page["next"]
        assert len(pages) < 10_000


def rolled_up(names: set[str], prefix: str, delimiter: str) -> list[str]:
    """The folder listing of ``names`` computed here: each name below ``prefix`` as itself,
    or up to the first delimiter after the prefix."""
    items = set()
    for name in names:
        if not name.startswith(prefix):
            continue
        at = name.find(delimiter, len(prefix))
        items.add(name if at < 0 else name[: at + len(delimiter)])
    return sorted(items)


async def test_names_below_the_next_delimiter_roll_up_into_prefixes(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    url = cluster[0].url
    names = ["pfx/a/1", "pfx/a/2", "pfx/b/x/y", "pfx/c", "pfx/d-e/f", "pfx/e::f/g", "pfx/e::g"]
    for name in names:
        await put(http, url, name)
    page = await listing(http, cluster[1].url, prefix="pfx/", delimiter="/")
    assert set(page) == {"files", "prefixes", "next"}
    assert [f["name"] for f in page["files"]] == ["pfx/c", "pfx/e::g"]
    assert page["prefixes"] == ["pfx/a/", "pfx/b/", "pfx/d-e/", "pfx/e::f/"]
    assert page["next"] is None
    assert page["files"][0]["size"] == 1
    page = await listing(http, cluster[2].url, prefix="pfx/b/", delimiter="/")
    assert (page["files"], page["prefixes"]) == ([], ["pfx/b/x/"])
    page = await listing(http, cluster[3].url, prefix="pfx/", delimiter="::")
    assert page["prefixes"] == ["pfx/e::"]
    assert [f["name"] for f in page["files"]] == [
        "pfx/a/1",
        "pfx/a/2",
        "pfx/b/x/y",
        "pfx/c",
        "pfx/d-e/f",
    ]
    page = await listing(http, cluster[4].url, prefix="pfx/a", delimiter="/")
    assert (page["files"], page["prefixes"]) == ([], ["pfx/a/"])
    page = await listing(http, cluster[5].url, prefix="", delimiter="/")  # an admin: all
    assert "pfx/" in page["prefixes"]
    assert not page["files"]
    # A folder whose files are all deleted is gone; one with a file left stays.
    await delete(http, url, "pfx/b/x/y")
    await delete(http, url, "pfx/a/1")
    page = await listing(http, cluster[6].url, prefix="pfx/", delimiter="/")
    assert page["prefixes"] == ["pfx/a/", "pfx/d-e/", "pfx/e::f/"]


@pytest.mark.parametrize("delimiter", ["", "x" * 65])
async def test_a_delimiter_is_bounded(
    cluster: LocalCluster, http: aiohttp.ClientSession, delimiter: str
) -> None:
    params = {"prefix": "pfx/", "delimiter": delimiter}
    async with http.get(f"{cluster[0].url}/files", params=params) as response:
        if delimiter:  # too long: refused
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "invalid_request"
        else:  # empty: a flat listing
            assert response.status == 200
            assert (await response.json())["prefixes"] == []


async def test_paging_a_large_tree_with_small_limits_is_exact(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(11)
    parts = ["a", "b", "c-d", "e", "f-g"]
    names: set[str] = set()
    while len(names) < 160:
        depth = rng.randint(0, 3)
        names.add("/".join(["big", *(rng.choice(parts) for _ in range(depth)), f"f{len(names)}"]))
    urls = cluster.urls
    for batch in range(0, len(names), 16):
        chunk = sorted(names)[batch : batch + 16]
        await asyncio.gather(*(put(http, urls[i % 7], n) for i, n in enumerate(chunk)))
    # Deletions: some files, and every file of one folder (which must then not show).
    gone = {n for n in names if n.startswith("big/e/")} | set(rng.sample(sorted(names), 20))
    for name in sorted(gone):
        await delete(http, urls[0], name)
    live = names - gone
    assert rolled_up(live, "big/", "/").count("big/e/") == 0

    cases = [("big/", "/", 1), ("big/", "/", 2), ("big/a/", "/", 3), ("big/", "-", 4)]
    cases += [("big/b/", "/", 1), ("big/", "/", 1000), ("big/a", "/", 2), ("big/", "c-d/", 3)]
    for prefix, delimiter, limit in cases:
        pages = await every_page(http, urls, limit, prefix=prefix, delimiter=delimiter)
        shown = [item for page in pages for item in page]
        assert shown == rolled_up(live, prefix, delimiter), (prefix, delimiter, limit)
    flat = await every_page(http, urls, 7, prefix="big/")  # and the flat listing agrees
    assert [item for page in flat for item in page] == sorted(live)


async def test_a_restricted_keys_folder_listing_shows_nothing_of_other_namespaces(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    url = cluster[0].url
    for name in ["fold-mine/a/1", "fold-mine/b", "fold-other/a/1", "fold-zz/x", "folder/q/1"]:
        await put(http, url, name)
    async with http.post(f"{url}/keys", json={"read": ["fold-mine"]}) as response:
        assert response.status == 201, await response.text()
        made = await response.json()
    mine = {"Authorization": Credentials(made["access_key"], made["secret_key"]).authorization}
    assert mine != ADMIN_HEADERS

    page = await listing(http, cluster[1].url, mine, prefix="", delimiter="/")
    assert (page["files"], page["prefixes"], page["next"]) == ([], ["fold-mine/"], None)
    page = await listing(http, cluster[2].url, mine, prefix="fold", delimiter="-")
    assert page["prefixes"] == ["fold-"]  # from its own namespace's names only
    page = await listing(http, cluster[3].url, mine, prefix="fold-", delimiter="/")
    assert page["prefixes"] == ["fold-mine/"]
    page = await listing(http, cluster[4].url, mine, prefix="fold-mine/", delimiter="/")
    assert ([f["name"] for f in page["files"]], page["prefixes"]) == (
        ["fold-mine/b"],
        ["fold-mine/a/"],
    )
    # Paging one item at a time: every continuation is its own item, never another's.
    after, seen = "", []
    while True:
        page = await listing(http, url, mine, prefix="", delimiter="/", limit=1, start_after=after)
        seen += page["prefixes"] + [f["name"] for f in page["files"]]
        if page["next"] is None:
            break
        assert page["next"].startswith("fold-mine/"), page["next"]
        after = page["next"]
    assert seen == ["fold-mine/"]
    # The admin sees them all, as folders.
    page = await listing(http, url, prefix="fold", delimiter="/")
    assert page["prefixes"] == ["fold-mine/", "fold-other/", "fold-zz/", "folder/"]
