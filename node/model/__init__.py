"""The store's records, pure: layouts, versions, names, digests, manifests and chunk sidecars.

What a file version *is*, independent of where it is kept or how it travels:

- ``layout``: striping arithmetic (k equal data chunks, m parity, stripes of blocks);
- ``version``: hybrid-logical-clock versions and the clock that issues them;
- ``names``: which names are valid, and the ring key of a name;
- ``digests``: block digests (xxh3-128) and chunk digests;
- ``manifest``: the manifest, chunk references, sidecars and replica-write records, with
  their msgpack encodings (msgspec Structs; formats pinned by tests);
- ``identity``: a cluster's id and secrets, the secret file and the join token;
- ``preconditions``: conditional requests (RFC 9110, 13): If-Match and the other four
  fields parsed, and evaluated against a current version in the order of 13.2.2.

May import: ``node.errors``, ``ring`` and libraries. No I/O, no asyncio, no other room.
"""
