"""The cluster as one peer sees it: members, liveness, placement, and calls to other peers.

- ``membership``: the address book, each member's liveness, the ring, and placement sets;
- ``placement``: who holds a key (members, primary, handoffs): one answer for every caller;
- ``gossip``: the heartbeat loop that spreads members, clocks and storage figures;
- ``discovery``: finding addresses of the cluster's peers by mDNS on the serving address;
- ``auth``: proof of membership: HMAC signatures of peer calls and their answers;
- ``protocol``: the peer-to-peer routes and their typed bodies (msgspec records);
- ``transport``: the ``Transport`` interface and its HTTP implementation;
- ``peers``: the peer-call interface every caller uses; it records liveness as it goes.

May import: ``node.disk`` (to persist the member list), ``node.model``, the shared modules
and ``ring``. Never the data path, upkeep or the frontends.
"""
