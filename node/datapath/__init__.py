"""The data path: public operations carried out as chunk and manifest operations on peers.

Coordinator side (any peer that got a request):

- ``coordinator``: PUT, GET, DELETE and listings;
- ``stripes``: the stripe pipeline (cut, encode, send; read, verify, decode, trim);
- ``chunk_streams``: one chunk's writer (bounded queue, stall timeout) and reader;
- ``replicas``: manifest quorums, read repair, commits and what they retire;
- ``rebuild``: recomputing lost chunks onto new holders (repair's one operation);
- ``codec``: Reed-Solomon erasure coding of one stripe (ISA-L's Cauchy code, ``isal``; or
  zfec, for files written before it).

Holder side (the peer that keeps the bytes): ``holder``, the logic behind the peer API.

May import: ``node.cluster``, ``node.disk`` (the holder only), ``node.model`` and the
shared modules. The coordinator side reaches every holder, itself included, through
``node.cluster.peers``.
"""
