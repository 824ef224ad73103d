"""The data path: turning public operations into chunk and manifest operations on peers.

``coordinator`` carries out PUT, GET, DELETE and listings from any peer; ``codec`` erasure-codes
stripes.

May import: ``node.cluster``, ``node.model`` and the shared modules. Not ``node.disk``: the
data path reaches every holder, itself included, through the peer-call interface.
"""
