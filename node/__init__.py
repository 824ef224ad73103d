"""A ringstore peer, in rooms from the top (may import those below) to the bottom:

    process   start-up, wiring, the ringstore command, `up`
    api       HTTP frontends: public files API, peer-to-peer API, error mapping
    upkeep    rebalancing, repair, scrub, garbage collection
    datapath  coordinator, stripe pipeline, chunk streams, replica quorums, holder
    cluster   membership, placement, gossip, discovery, peer calls
    disk      chunk store, manifest store, data directory
    config | waiting    settings; waiting without losing cancellations
    model     layouts, versions, names, digests, manifests
    errors    the domain exceptions

``lint-imports`` (in ``tox -e lint``) holds the code to this order; docs/architecture.md
draws it.
"""
