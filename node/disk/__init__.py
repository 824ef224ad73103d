"""One peer's disk: chunks, manifest replicas, its id, and the atomic-write rules they share.

- ``chunk_store``: chunks and their sidecars (``incoming/``, fsync, rename into place);
- ``manifest_store``: the manifest replicas this peer holds, with an in-memory index;
- ``data_dir``: the peer id file and the file system's free space;
- ``durable``: crash-safe small-file writes; ``locks``: per-key asyncio locks.

Blocking work runs in worker threads. May import: ``node.model``, ``node.config``,
``node.waiting``, ``node.errors``. Never the network, the cluster or anything above it.
"""
