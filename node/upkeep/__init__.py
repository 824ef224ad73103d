"""Background upkeep: rebalancing after joins, repair, scrub and garbage collection.

- ``rebalancer``: after a join, each file's one displaced chunk moves to the newcomer;
- ``repairer``: rebuilds chunks that are lost, corrupt, long down or never stored;
- ``scrubber``: re-reads every local chunk, slowly, and collects garbage;
- ``decisions``: the rules as pure functions (collection verdicts, repair targets).

Loops find work and carry it out through the data path. May import: ``node.datapath``,
``node.cluster``, ``node.disk``, ``node.model`` and the shared modules. Never the frontends.
"""
