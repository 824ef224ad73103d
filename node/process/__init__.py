"""Process start-up: wiring one peer together, serving it, the ``ringstore`` command, ``up``.

``wiring`` builds a peer's components in order and attaches them to the aiohttp app,
``serve`` runs one peer until a signal, ``supervisor`` runs N of them for ``ringstore up``,
``cli`` is the command line.

May import every room. Nothing in ``node`` imports it.
"""
