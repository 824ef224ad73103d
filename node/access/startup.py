"""Access work a peer does once after it starts: store a new cluster's admin key, and make
namespaces of the files written before access keys existed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from node.access.store import AccessStore
from node.disk.data_dir import (
    ADOPTED_FILE,
    CREDENTIALS_FILE,
    PENDING_KEY_FILE,
    load_credentials,
)
from node.disk.durable import write_atomically
from node.errors import RingstoreError
from node.model.access import Grants

log = logging.getLogger(__name__)

ADMIN_KEY_NAME = "admin"


async def store_admin_key(store: AccessStore, data_dir: Path, retry: float) -> None:
    """Store the admin key a new cluster made (``DATA/credentials``) on the ring, retrying
    every ``retry`` seconds until the cluster can take the write (it needs a write quorum
    of peers); then drop the marker that says it is pending."""
    pending = data_dir / PENDING_KEY_FILE
    if not await asyncio.to_thread(pending.exists):
        return
    try:
        given = await asyncio.to_thread(load_credentials, data_dir / CREDENTIALS_FILE)
    except ValueError as exc:
        given = None
        log.error("%s", exc)
    if given is None:
        log.error("%s says an admin key is pending, but %s holds none", pending, CREDENTIALS_FILE)
        return
    while True:
        try:
            await store.create_key(ADMIN_KEY_NAME, Grants(admin=True), given)
        except RingstoreError as exc:
            log.info("storing the admin access key %s later: %s", given[0], exc)
            await asyncio.sleep(retry)
            continue
        await asyncio.to_thread(pending.unlink, missing_ok=True)
        log.info("admin access key %s is stored in the cluster", given[0])
        return


async def adopt_namespaces(
    store: AccessStore, data_dir: Path, names: Callable[[], list[str]], retry: float
) -> None:
    """Once per data directory (the first start of this release): adopt the namespaces of
    ``names()``, the live file names this peer holds manifest replicas of. Starts after
    ``retry`` seconds (the ring is learned first) and retries as often while the cluster
    cannot take it; ``ADOPTED_FILE`` marks it done, so a later start never overwrites a
    namespace's settings with an adopted record."""
    done = data_dir / ADOPTED_FILE
    if await asyncio.to_thread(done.exists):
        return
    while True:
        await asyncio.sleep(retry)
        try:
            created = await store.adopt(names())
        except RingstoreError as exc:
            log.info("adopting namespaces of existing files later: %s", exc)
            continue
        await asyncio.to_thread(write_atomically, done, b"")
        if created:
            log.info("adopted %d namespace(s) of files written before access keys", created)
        return


async def reseal_keys(store: AccessStore, retry: float) -> None:
    """Seal every access key under the cluster's signing secret (after a rotation added a
    new one), retrying every ``retry`` seconds while the cluster cannot take it yet."""
    while True:
        await asyncio.sleep(retry)
        try:
            count = await store.reseal()
        except (RingstoreError, ValueError) as exc:
            log.info("sealing access keys under the new cluster secret later: %s", exc)
            continue
        if count:
            log.info("sealed %d access key(s) under the current cluster secret", count)
        return
