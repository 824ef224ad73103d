"""Background upkeep: rebalancing after joins, repair, scrub and garbage collection.

Loops that find work (a ring change, a lost holder, a corrupt or unreferenced chunk) and carry
it out through the data path.

May import: ``node.datapath``, ``node.cluster``, ``node.disk``, ``node.model`` and the shared
modules. Never the frontends.
"""
