"""Rebuilding chunks from the others: the repairer's one data-path operation.

Chunks named as targets (index -> new holder) are recomputed stripe by stripe from any k
readable chunks of the file version (``StripeRead``, re-encoded with ``codec``), streamed
to their targets, checked against the block digests the manifest recorded, and the manifest
is committed at the next revision with the new holders (over exactly the manifest it started
from, so a concurrent move or repair cannot both win).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from node.cluster.membership import Membership
from node.cluster.peers import Peers
from node.config import PeerConfig
from node.datapath.chunk_streams import BlockBudget, ChunkWriter, ChunkWriters
from node.datapath.replicas import ManifestReplicas
from node.datapath.stripes import StripeRead, encode
from node.errors import CorruptData, Unavailable
from node.model.manifest import ChunkRef, Manifest


class Rebuilder:
    """Recomputes lost or corrupt chunks onto new holders and commits where they live."""

    def __init__(
        self,
        config: PeerConfig,
        membership: Membership,
        peers: Peers,
        replicas: ManifestReplicas,
        buffers: BlockBudget,
    ) -> None:
        self._config = config
        self._membership = membership
        self._peers = peers
        self._replicas = replicas
        self._buffers = buffers  # shared with the peer's GETs

    def __repr__(self) -> str:
        return f"Rebuilder(peer={self._membership.me.id[:8]})"

    async def rebuild(
        self, manifest: Manifest, targets: dict[int, str], base: Manifest | None = None
    ) -> Manifest:
        """Recompute chunks ``targets`` (index -> new holder) from the others and commit.

        The chunks named in ``targets`` are not read. ``base`` is the manifest the replicas
        hold when ``manifest`` is a new layout of it (more parity: ``with_parity``); the
        commit goes through only over it. Returns the committed manifest.
        Raises Unavailable (too few readable chunks, a target failed, no quorum) or
        CorruptData (a rebuilt chunk differs from what the manifest recorded).
        """
        config, layout = self._config, manifest.layout
        writers = {
            index: ChunkWriter(
                self._peers,
                holder,
                manifest.chunk_id(index),
                manifest.chunk_owner(index),
                layout.chunk_size,
                self._buffers,
                config.stall_timeout,
            )
            for index, holder in targets.items()
        }
        digests = {index: bytearray() for index in targets}
        reading = StripeRead(
            self._peers,
            manifest,
            range(layout.stripes),
            set(targets),
            self._membership.down_ids(),
            self._buffers,
            config.peer_timeout,
        ).stripes()
        async with ChunkWriters(writers) as group:
            async with contextlib.aclosing(reading) as read:
                async for _, data in read:
                    blocks, stripe_digests = await asyncio.to_thread(
                        encode, data, layout.m, layout.codec
                    )
                    for index in digests:
                        digests[index] += stripe_digests[index]
                    await group.send(blocks)
            stored = await group.finish()
        failed = [i for i, size in stored.items() if size != layout.chunk_size]
        if failed:
            raise Unavailable(f"rebuilding {manifest.name!r}: chunks {failed} were not stored")
        known = {ref.index: ref for ref in manifest.chunks}
        for index in targets:
            if index in known and known[index].block_digests != bytes(digests[index]):
                raise CorruptData(f"rebuilt chunk {index} of {manifest.name!r} differs")
        chunks = [ref for ref in manifest.chunks if ref.index not in targets]
        chunks += [ChunkRef(i, targets[i], bytes(digests[i])) for i in targets]
        updated = dataclasses.replace(
            manifest,
            chunks=tuple(sorted(chunks, key=lambda ref: ref.index)),
            revision=(base or manifest).revision + 1,
        )
        await self._replicas.commit(updated, base=base or manifest)
        return updated
