"""Process start-up: wiring one peer together, serving it, the ``ringstore`` command, ``up``.

- ``wiring``: builds a peer's components in dependency order onto its aiohttp app;
- ``serve``: runs one peer until SIGTERM or SIGINT;
- ``connections``: the HTTP server of a peer: limits and timeouts per connection, and
  errors found before the app answered as the app answers them;
- ``supervisor``: runs N peer processes for ``ringstore up``;
- ``cli``: the command line; ``peer``'s options are generated from ``node.config``;
- ``identity``: which cluster a starting peer belongs to, and join tokens for ``token``;
- ``tls``, ``certificates``: TLS contexts of a peer, and the local CA of ``up --tls``.

May import every room. Nothing in ``node`` imports it.
"""
