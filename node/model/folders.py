"""Folder listings: names rolled up at a delimiter into folders, as S3's common prefixes.

A listing of ``prefix`` with a ``delimiter`` shows each name below its *base* (the listing's
prefix) either as itself, when the rest of the name after the base holds no delimiter, or
as its *folder*: the name up to and including the first delimiter after the base
(``folder_of``). A folder is shown once, and only if a live file is in it.

Items (files and folders) are ordered as strings. The names in a folder ``F`` are exactly
the strings in ``[F, past(F))``, so a folder sorts before every name in it, and skipping a
folder is one bisect. A listing continues after an item: ``start_after`` skips every item
at or before ``item_of(start_after)``, so a ``start_after`` equal to a folder, or inside
one, skips that whole folder and a folder never shows on two pages.

Peers hold replicas, not the truth: a name's newest version is known only by merging every
peer's replica of it (``merge_flat``; ``node.datapath.listing`` for folders). So a peer
listing with a delimiter returns, of each folder, its replicas in name order up to and
including the first live one and then skips the rest (``replica_page``); ``walk`` merges
such pages and decides which folders hold a live file, as data: a folder whose first live
replica turns out to be stale (deleted elsewhere) is left *pending*, for a flat look
further into it.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from node.errors import InvalidRequest
from node.model.manifest import Manifest
from node.model.names import RESERVED

MAX_DELIMITER = 64  # characters of a delimiter at most
_LAST = chr(sys.maxunicode)  # the greatest character
_AFTER_RESERVED = chr(ord(RESERVED) + 1)  # the first name past every reserved one

Item = Manifest | str  # a live file's summary, or a folder (its name, ending in the delimiter)
Page = tuple[list[Manifest], bool]  # one peer's replicas, and whether it had more


def check_delimiter(delimiter: str) -> str:
    """Return ``delimiter`` if a listing may roll up at it (``""``: no rolling up); raise
    InvalidRequest if it is longer than ``MAX_DELIMITER`` characters."""
    if len(delimiter) > MAX_DELIMITER:
        raise InvalidRequest(f"a delimiter is at most {MAX_DELIMITER} characters")
    return delimiter


def folder_of(name: str, base: str, delimiter: str) -> str | None:
    """The folder ``name`` rolls up into below ``base``, or None if it shows as itself (no
    delimiter after the base, no delimiter at all, or a name not below the base)."""
    if not delimiter or not name.startswith(base):
        return None
    at = name.find(delimiter, len(base))
    return None if at < 0 else name[: at + len(delimiter)]


def item_of(name: str, base: str, delimiter: str) -> str:
    """What ``name`` shows as in a listing of ``base``: its folder, or itself."""
    return folder_of(name, base, delimiter) or name


def past(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix``.

    Raises ValueError for a prefix of greatest characters only (no name is past it).
    """
    kept = prefix.rstrip(_LAST)
    if not kept:
        raise ValueError(f"no string is past every one starting with {prefix!r}")
    return kept[:-1] + chr(ord(kept[-1]) + 1)


def name_of(item: Item) -> str:
    """The string an item is ordered and continued by: a file's name, or the folder."""
    return item if isinstance(item, str) else item.name


def replica_page(
    names: Sequence[str],
    index: Mapping[str, Manifest],
    prefix: str,
    start_after: str,
    limit: int,
    delimiter: str = "",
    base: str | None = None,
) -> Page:
    """One peer's page of its replicas: the summaries in ``index`` of the ``names`` (sorted)
    with ``prefix`` after ``start_after``, tombstones included, at most ``limit``, and
    whether more remain.

    With a ``delimiter``, names roll up into folders below ``base`` (default: the prefix,
    which must start with it): of each folder, only the replicas up to and including its
    first live one are listed and the rest of it is skipped; a ``start_after`` in a folder
    (or equal to it) skips that whole folder. Cluster records (reserved names, which sort
    together between ``.`` and ``0``) are listed only for a prefix that starts with the
    reserved character.
    """
    base = prefix if base is None else base
    position = bisect.bisect_left(names, prefix)
    if start_after:
        passed = folder_of(start_after, base, delimiter)
        if passed is not None:
            position = max(position, bisect.bisect_left(names, past(passed)))
        else:
            position = max(position, bisect.bisect_right(names, start_after))
    skip_reserved = not prefix.startswith(RESERVED)
    found: list[Manifest] = []
    while position < len(names):
        name = names[position]
        if not name.startswith(prefix):
            break
        if skip_reserved and name.startswith(RESERVED):
            position = bisect.bisect_left(names, _AFTER_RESERVED)
            continue
        if len(found) == limit:
            return found, True
        entry = index[name]
        found.append(entry)
        position += 1
        folder = None if entry.deleted else folder_of(name, base, delimiter)
        if folder is not None:  # a live file in it: the rest of the folder is not needed
            position = max(position, bisect.bisect_left(names, past(folder)))
    return found, False


def merge_flat(pages: list[Page], limit: int) -> tuple[list[Manifest], str]:
    """Merge peers' flat pages: the live files, by their newest replica, up to the cut-off
    (the least last name of a page that had more), at most ``limit``, and the name to
    continue after ("" when every page was complete)."""
    newest: dict[str, Manifest] = {}
    cutoff: str | None = None  # names past a truncated answer are not known completely
    for entries, truncated in pages:
        for entry in entries:
            known = newest.get(entry.name)
            if known is None or known.precedence < entry.precedence:
                newest[entry.name] = entry
        if truncated and entries and (cutoff is None or entries[-1].name < cutoff):
            cutoff = entries[-1].name
    names = sorted(n for n in newest if cutoff is None or n <= cutoff)
    live = [newest[n] for n in names if not newest[n].deleted]
    if len(live) > limit:
        return live[:limit], live[limit - 1].name
    return live, cutoff or ""


@dataclass(frozen=True)
class Round:
    """What one round of peer pages decided.

    ``items``: live files and folders with a live file, in order. ``cursor``: where the next
    round starts (its ``start_after``). ``pending``: a folder, and the name after which to
    look for a live file in it (flat), before anything past it can be decided. ``done``:
    nothing is left past what was walked.
    """

    items: list[Item]
    cursor: str
    pending: tuple[str, str] | None = None
    done: bool = False


def walk(pages: list[Page], base: str, delimiter: str, start_after: str, want: int) -> Round:
    """Merge the pages peers answered to a folder listing after ``start_after``, and decide
    up to ``want`` items in order.

    Every peer's page holds all of its replicas in name order, except the names of a
    folder past its first live replica there, and except past its last name when it says
    it had more (the *cut-off*: the least such last name; nothing past it is known). So a
    name up to the cut-off is decided by the newest of its replicas, and a folder by the
    least name any peer holds live in it (``first``): all peers have shown their replicas
    of ``first``, so its newest replica says whether the folder holds a live file. If that
    replica is a deletion, or the cut-off falls in the folder before any live replica, the
    folder is pending.
    """
    newest: dict[str, Manifest] = {}
    first: dict[str, str] = {}  # folder -> the least name a peer holds live in it
    cutoff: str | None = None
    for entries, truncated in pages:
        for entry in entries:
            known = newest.get(entry.name)
            if known is None or known.precedence < entry.precedence:
                newest[entry.name] = entry
            folder = folder_of(entry.name, base, delimiter)
            if folder is not None and not entry.deleted:
                first[folder] = min(first.get(folder, entry.name), entry.name)
        if truncated and entries and (cutoff is None or entries[-1].name < cutoff):
            cutoff = entries[-1].name
    passed = item_of(start_after, base, delimiter) if start_after else ""
    items: list[Item] = []
    cursor = start_after
    for name in sorted(newest):
        if cutoff is not None and name > cutoff:
            break
        folder = folder_of(name, base, delimiter)
        item = folder or name  # (a name may equal its folder: "a-" with delimiter "-")
        if item <= passed:
            continue  # continued past already (a peer that cannot skip folders sent it)
        passed = item
        if folder is None:
            if not newest[name].deleted:
                items.append(newest[name])
        else:
            live = first.get(item)
            if live is not None and (cutoff is None or live <= cutoff):
                if newest[live].deleted:  # that replica was stale: look further, flat
                    return Round(items, cursor, pending=(item, live))
                items.append(item)
            elif cutoff is not None and cutoff.startswith(item):
                return Round(items, cursor, pending=(item, cutoff))
            # else: every peer showed all of the folder and none of it is live
        cursor = item
        if len(items) == want:
            return Round(items, cursor)
    if cutoff is None:
        return Round(items, cursor, done=True)
    return Round(items, max(cursor, cutoff))
