"""Folder listings without a network: rolling up, one peer's pages, and the merged walk.

The property at the end runs ``node.datapath.listing.list_folder`` over simulated peers
whose replicas disagree (stale live copies, deletions one peer missed, peers of before
folders that list flat) and pages through with small limits: the pages, joined, must be
exactly the folder listing computed from the newest replica of every name, each item once.
Through real peers: ``tests/node/shared/test_folder_listings.py``.
"""

from __future__ import annotations

import asyncio
import bisect
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.datapath.listing import list_flat, list_folder
from node.errors import InvalidRequest
from node.model.folders import (
    MAX_DELIMITER,
    Item,
    Page,
    check_delimiter,
    folder_of,
    item_of,
    merge_flat,
    name_of,
    past,
    replica_page,
    walk,
)
from node.model.layout import Layout
from node.model.manifest import Manifest
from node.model.version import Version


def live(name: str, wall: int = 1) -> Manifest:
    return Manifest(name, Version(wall, 0, "p"), Layout(10, 5, 2, 4096), etag=f"e{wall}")


def gone(name: str, wall: int = 2) -> Manifest:
    return Manifest(name, Version(wall, 0, "p"), Layout(0, 5, 0), deleted=True)


def page_of(*replicas: Manifest, **kw: object) -> Page:
    """A peer holding ``replicas``, asked for everything below ``n/`` rolled up at ``/``."""
    index = {m.name: m for m in replicas}
    args = {"prefix": "n/", "start_after": "", "limit": 100, "delimiter": "/", **kw}
    return replica_page(sorted(index), index, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "base", "delimiter", "folder"),
    [
        ("n/a/b", "n/", "/", "n/a/"),
        ("n/a/b/c", "n/", "/", "n/a/"),
        ("n/a/b/c", "n/a/", "/", "n/a/b/"),
        ("n/file", "n/", "/", None),  # no delimiter after the base: itself
        ("n/a-b-c", "n/", "-", "n/a-"),
        ("n/a-", "n/", "-", "n/a-"),  # a name may equal its folder
        ("n/a::b", "n/", "::", "n/a::"),  # any delimiter string
        ("n/a:b", "n/", "::", None),
        ("photos/x", "", "/", "photos/"),  # below the root: namespaces are folders
        ("photos/x", "", "o", "pho"),  # even inside a namespace's name
        ("m/a/b", "n/", "/", None),  # not below the base
        ("n/a/b", "n/", "", None),  # no delimiter: flat
    ],
)
def test_a_name_rolls_up_at_the_first_delimiter_after_the_base(
    name: str, base: str, delimiter: str, folder: str | None
) -> None:
    assert folder_of(name, base, delimiter) == folder
    assert item_of(name, base, delimiter) == (folder or name)


@pytest.mark.parametrize(
    ("prefix", "after"),
    [("n/a/", "n/a0"), ("ab", "ac"), ("a" + chr(sys.maxunicode), "b"), ("n/\u00ff", "n/\u0100")],
)
def test_past_a_prefix_is_the_least_string_after_all_its_names(prefix: str, after: str) -> None:
    assert past(prefix) == after
    assert prefix + chr(sys.maxunicode) * 3 < past(prefix)


def test_nothing_is_past_the_greatest_characters() -> None:
    with pytest.raises(ValueError, match="past"):
        past(chr(sys.maxunicode) * 2)


def test_a_delimiter_is_bounded() -> None:
    assert check_delimiter("/" * MAX_DELIMITER) == "/" * MAX_DELIMITER
    with pytest.raises(InvalidRequest, match="delimiter"):
        check_delimiter("/" * (MAX_DELIMITER + 1))


def test_a_peer_lists_a_folder_up_to_its_first_live_replica() -> None:
    entries, more = page_of(gone("n/a/1"), gone("n/a/2"), live("n/a/3"), live("n/a/4"), live("n/b"))
    assert [m.name for m in entries] == ["n/a/1", "n/a/2", "n/a/3", "n/b"]
    assert not more


def test_a_peer_skips_the_folder_start_after_is_in() -> None:
    replicas = (live("n/a/1"), live("n/a/2"), live("n/a0"), live("n/b/1"))
    for start_after in ("n/a/", "n/a/1", "n/a/zzz"):
        entries, _ = page_of(*replicas, start_after=start_after)
        assert [m.name for m in entries] == ["n/a0", "n/b/1"], start_after
    entries, _ = page_of(*replicas, start_after="n/a", delimiter="")  # flat: plain
    assert [m.name for m in entries] == ["n/a/1", "n/a/2", "n/a0", "n/b/1"]


def test_a_peer_rolls_up_below_the_base_within_the_prefix() -> None:
    replicas = (live("pa/1"), live("photos/a/1"), live("photos/b"), live("pq/1"))
    entries, _ = page_of(*replicas, prefix="photos/", base="", delimiter="o")
    assert [m.name for m in entries] == ["photos/a/1"]  # all of "pho", once


def test_a_peer_says_when_it_has_more() -> None:
    replicas = [live(f"n/{i}/x") for i in range(5)]
    entries, more = page_of(*replicas, limit=3)
    assert (len(entries), more) == (3, True)
    entries, more = page_of(*replicas, limit=5)
    assert (len(entries), more) == (5, False)


def test_the_walk_trusts_a_folder_only_when_its_first_live_name_is_live_everywhere() -> None:
    # Peer 1 missed the deletion of n/a/1; peer 2 holds it. n/a/ is pending from n/a/1.
    stale = page_of(live("n/a/1", wall=1), live("n/b/1"))
    fresh = page_of(gone("n/a/1", wall=2), live("n/b/1"))
    decided = walk([stale, fresh], "n/", "/", "", 10)
    assert decided.pending == ("n/a/", "n/a/1")
    assert decided.items == []
    # With the deletion not anywhere, the folder is live, and so is n/b/.
    decided = walk([stale, page_of(live("n/b/1"))], "n/", "/", "", 10)
    assert decided.items == ["n/a/", "n/b/"]
    assert decided.done


def test_the_walk_drops_an_all_deleted_folder_and_stops_at_a_cut_off() -> None:
    one = page_of(gone("n/a/1"), gone("n/a/2"), live("n/c"), live("n/d/1"))
    two = page_of(gone("n/a/1"), live("n/c"), live("n/d/1"), live("n/e"), limit=3)
    decided = walk([one, two], "n/", "/", "", 10)
    names = [name_of(item) for item in decided.items]
    assert names == ["n/c", "n/d/"]  # "n/e" is past the cut-off (peer two had more)
    assert (decided.cursor, decided.done) == ("n/d/1", False)


def test_the_walk_leaves_a_folder_cut_off_before_any_live_name_pending() -> None:
    two = page_of(gone("n/a/1"), gone("n/a/2"), live("n/a/3"), limit=2)
    decided = walk([two], "n/", "/", "", 10)
    assert decided.pending == ("n/a/", "n/a/2")


# --- the whole listing, paged, over peers that disagree -----------------------------------

SEGMENTS = st.sampled_from(["a", "b", "c", "a-b", "a/b", "b/c/d", "c-", "ab"])
NAMES = st.lists(
    st.tuples(SEGMENTS, SEGMENTS).map(lambda t: f"n/{t[0]}/{t[1]}") | SEGMENTS.map("n/".__add__),
    min_size=0,
    max_size=30,
    unique=True,
)
PEERS = 4


@st.composite
def replicas(draw: st.DrawFn) -> list[dict[str, Manifest]]:
    """Each name's history (live or deleted per version); each peer holds some version of
    it, or none: the newest replica is the truth, older ones are stale copies."""
    held: list[dict[str, Manifest]] = [{} for _ in range(PEERS)]
    for name in draw(NAMES):
        versions = draw(st.lists(st.booleans(), min_size=1, max_size=3))  # True: live
        for peer in range(PEERS):
            which = draw(st.integers(-1, len(versions) - 1))  # -1: no replica
            if which >= 0:
                wall = which + 1
                held[peer][name] = live(name, wall) if versions[which] else gone(name, wall)
    return held


def expected(held: list[dict[str, Manifest]], base: str, delimiter: str) -> list[str]:
    newest: dict[str, Manifest] = {}
    for replicas_of in held:
        for name, manifest in replicas_of.items():
            if name not in newest or newest[name].precedence < manifest.precedence:
                newest[name] = manifest
    live_names = [n for n, m in newest.items() if not m.deleted and n.startswith(base)]
    return sorted({item_of(name, base, delimiter) for name in live_names})


def peers_of(held: list[dict[str, Manifest]], old: set[int]) -> tuple:  # type: ignore[type-arg]
    """``ask`` and ``flat`` over simulated peers; peers in ``old`` know no folders."""

    async def ask(prefix: str, after: str, limit: int, delimiter: str, base: str) -> list[Page]:
        pages = []
        for peer, replicas_of in enumerate(held):
            names = sorted(replicas_of)
            folding = ("", None) if peer in old else (delimiter, base)
            pages.append(replica_page(names, replicas_of, prefix, after, limit, *folding))
        return pages

    async def flat(prefix: str, after: str, limit: int) -> tuple[list[Manifest], str]:
        pages = [replica_page(sorted(r), r, prefix, after, limit) for r in held]
        return merge_flat(pages, limit)

    return ask, flat


async def every_page(
    held: list[dict[str, Manifest]], old: set[int], base: str, delimiter: str, limit: int
) -> list[list[Item]]:
    ask, flat = peers_of(held, old)
    pages: list[list[Item]] = []
    after = ""
    while True:
        items, following = await list_folder(ask, flat, base, delimiter, after, limit)
        pages.append(items)
        assert len(items) <= limit
        if not following:
            return pages
        assert items, f"an empty page with a next ({following!r})"
        assert following == name_of(items[-1])  # next is the last item shown
        after = following


@settings(max_examples=300, deadline=None)
@given(
    held=replicas(),
    old=st.sets(st.integers(0, PEERS - 1), max_size=2),
    base=st.sampled_from(["n/", "n/a/", ""]),
    delimiter=st.sampled_from(["/", "-", "b", "a/b"]),
    limit=st.integers(1, 4),
)
def test_pages_joined_are_the_folder_listing_of_the_newest_replicas(
    held: list[dict[str, Manifest]], old: set[int], base: str, delimiter: str, limit: int
) -> None:
    pages = asyncio.run(every_page(held, old, base, delimiter, limit))
    shown = [name_of(item) for page in pages for item in page]
    assert shown == expected(held, base, delimiter)
    for page in pages:
        for item in page:  # a folder is a string; a file is its newest live replica
            if isinstance(item, Manifest):
                assert folder_of(item.name, base, delimiter) is None
                assert not item.deleted


def test_a_folder_the_page_ends_on_is_not_shown_again() -> None:
    held = [{n: live(n) for n in ["n/a/1", "n/a/2", "n/b/1", "n/c"]}]
    first = asyncio.run(every_page(held, set(), "n/", "/", 1))
    assert [[name_of(i) for i in page] for page in first] == [["n/a/"], ["n/b/"], ["n/c"]]
    names = sorted(held[0])
    assert bisect.bisect_right(names, "n/a/") == 0  # a folder sorts before its names


@settings(max_examples=200, deadline=None)
@given(held=replicas(), limit=st.integers(1, 4))
def test_flat_pages_are_short_only_at_the_end(held: list[dict[str, Manifest]], limit: int) -> None:
    """A flat page was one round of each peer's first ``limit`` replicas: behind deleted
    names it came back empty with a next (s3fs's exists, a page of 1, found no file in a
    folder that had one; a namespace with a deleted first name was removed as empty)."""
    asked: list[int] = []

    async def ask(prefix: str, after: str, size: int) -> list[Page]:
        asked.append(size)
        return [replica_page(sorted(r), r, prefix, after, size) for r in held]

    async def pages() -> list[list[Manifest]]:
        found: list[list[Manifest]] = []
        after = ""
        while True:
            files, after = await list_flat(ask, "n/", after, limit)
            found.append(files)
            if not after:
                return found
            assert len(files) == limit, "a short page before the end"

    shown = [m.name for page in asyncio.run(pages()) for m in page]
    assert shown == [n for n in expected(held, "n/", "") if n.startswith("n/")]


def test_rounds_past_many_deleted_names_ask_more_each_time() -> None:
    """3,000 deleted names before a live one took 3,000 one-name rounds (35 s through S3)."""
    held = {f"n/x{i:04d}": gone(f"n/x{i:04d}") for i in range(3000)} | {"n/z": live("n/z")}
    asked: list[int] = []

    async def ask(prefix: str, after: str, size: int) -> list[Page]:
        asked.append(size)
        return [replica_page(sorted(held), held, prefix, after, size)]

    files, following = asyncio.run(list_flat(ask, "n/", "", 1))
    assert ([m.name for m in files], following) == (["n/z"], "")
    assert asked == [16, 32, 64, 128, 256, 512, 1024, 1024]  # 3,056 names asked for
