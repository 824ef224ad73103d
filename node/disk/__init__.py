"""One peer's disk: chunks, manifest replicas, and the atomic-write rules they share.

``chunk_store`` keeps chunks and their sidecars (``incoming/`` then fsync and rename),
``manifest_store`` the manifest replicas this peer holds, ``durable`` the crash-safe small
file writes, ``locks`` per-key asyncio locks. Blocking work runs in worker threads.

May import: ``node.model``, ``node.errors``, ``node.config``, ``node.waiting``. Never the
network, the cluster or anything above it.
"""
