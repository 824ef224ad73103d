"""The store's records, pure: layouts, versions, names, digests, manifests and chunk sidecars.

What a file version *is*, independent of where it is kept or how it travels: striping
arithmetic (``layout``), hybrid-logical-clock versions (``version``), name rules and keys
(``names``), block and chunk digests (``digests``), and the manifest and sidecar records with
their byte encodings (``manifest``).

May import: ``node.errors``, ``ring`` and libraries. No I/O, no asyncio, no other room.
"""
