"""The cluster as one peer sees it: members, liveness, the ring, and calls to other peers.

``membership`` is the address book and each member's liveness, ``discovery`` finds members
by mDNS, ``transport`` is the HTTP client of the peer-to-peer API.

May import: ``node.disk`` (to persist the member list), ``node.model``, the shared modules
and ``ring``. Never the data path, upkeep or the frontends.
"""
