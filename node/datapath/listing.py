"""Folder listings across peers: rounds of peer pages, merged and decided by
``node.model.folders.walk``, until a page of items is full or nothing is left.

Each round asks every up peer for its replicas after the cursor, rolled up into folders
(``ManifestStore.list``: a folder costs a peer one replica when its first one is live), and
walks the merged pages. A folder whose first live replica is stale elsewhere, or that a
cut-off split before any live replica, is *pending*: a flat listing of that folder after
that point finds whether any file in it is live, and the next round continues past the
folder. Pending folders are resolved before a page ends, so every ``next`` is an item (or
the cut-off of names all deleted) that ``start_after`` continues after exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from node.model.folders import Item, Page, merge_flat, name_of, walk
from node.model.manifest import Manifest

# Rounds one page may take before it is answered short (names left after many deletions
# cost a round per peer page of them; the page says where to go on).
MAX_ROUNDS = 16
MIN_ASK = 16  # replicas asked of each peer per round at least (a page of 1 still scans)
# Replicas asked of each peer per round at most past what the page wants: each round after
# the first asks twice the one before, so a run of deleted names (tombstones, kept for
# --tombstone-grace) costs a few rounds, not one round per MIN_ASK of them.
MAX_ASK = 1024

# (prefix, start_after, limit, delimiter, base) -> every answering peer's page
AskPeers = Callable[[str, str, int, str, str], Awaitable[list[Page]]]
# (prefix, start_after, limit) -> live files in order, and the name to continue after
ListFlat = Callable[[str, str, int], Awaitable[tuple[list[Manifest], str]]]
# (prefix, start_after, limit) -> every answering peer's flat page
AskFlat = Callable[[str, str, int], Awaitable[list[Page]]]


def asked(want: int, round_: int) -> int:
    """Replicas to ask of each peer in round ``round_`` (0, 1, ...) of a page that still
    wants ``want`` items: at least ``MIN_ASK``, doubling each round up to ``MAX_ASK``."""
    return max(want, min(MIN_ASK << round_, MAX_ASK))


async def list_flat(
    ask: AskFlat, prefix: str, start_after: str, limit: int
) -> tuple[list[Manifest], str]:
    """Up to ``limit`` live files with ``prefix`` after ``start_after`` in name order, and
    the name to continue after ("" when done). Rounds go on past deleted names until the
    page is full or the names end (or ``MAX_ROUNDS``: then a short page and where to go on),
    so a page holds fewer than ``limit`` files only at the end: clients that look for one
    file with a page of 1 (s3fs's exists) found none behind a deleted name."""
    files: list[Manifest] = []
    cursor = start_after
    for round_ in range(MAX_ROUNDS):
        want = limit - len(files)
        live, following = merge_flat(await ask(prefix, cursor, asked(want, round_)), want)
        files.extend(live)
        if len(files) >= limit or not following:
            return files, following
        cursor = following
    return files, cursor


async def list_folder(
    ask: AskPeers,
    flat: ListFlat,
    base: str,
    delimiter: str,
    start_after: str,
    limit: int,
    scope: str | None = None,
) -> tuple[list[Item], str]:
    """Up to ``limit`` items (live files, and folders holding one) below ``base`` rolled up
    at ``delimiter``, after ``start_after`` (skipping the folder it is in), in order, and
    what to continue after ("" when done). ``scope``: only names with this prefix (which
    starts with ``base``); default ``base``. Raises what ``ask`` and ``flat`` raise.
    """
    scope = base if scope is None else scope
    items: list[Item] = []
    cursor = start_after
    for round_ in range(MAX_ROUNDS):
        want = limit - len(items) + 1  # one more than the page: is there a next page?
        pages = await ask(scope, cursor, asked(want, round_), delimiter, base)
        decided = walk(pages, base, delimiter, cursor, want)
        items.extend(decided.items)
        if len(items) > limit:
            return items[:limit], name_of(items[limit - 1])
        if decided.pending is not None:
            folder, after = decided.pending
            inside = folder if len(folder) > len(scope) else scope  # one is a prefix of the other
            if await holds_a_live_file(flat, inside, after, max(want, MIN_ASK)):
                items.append(folder)
                if len(items) > limit:
                    return items[:limit], name_of(items[limit - 1])
            cursor = folder
            continue
        if decided.done:
            return items, ""
        cursor = decided.cursor
    # Out of rounds: answer what there is; the cursor is an item or a cut-off, both exact.
    return items, name_of(items[-1]) if len(items) == limit else cursor


async def holds_a_live_file(flat: ListFlat, prefix: str, after: str, limit: int) -> bool:
    """Whether a live file with ``prefix`` sorts after ``after`` (a flat, merged look)."""
    while True:
        live, following = await flat(prefix, after, limit)
        if live:
            return True
        if not following:
            return False
        after = following
