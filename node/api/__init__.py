"""The HTTP frontends: the public files API and the peer-to-peer API, and the error mapping.

- ``public``: ``/files``, ``/manifests``, ``/cluster``, ``/health``, ``/scrub``;
- ``peer``: the ``/internal/`` routes, adapting requests to ``Holder`` and ``Gossip``;
- ``errors``: the one middleware that turns domain exceptions into statuses and JSON;
- ``input``, ``ranges``: request bodies, query parameters and ``Range`` headers;
- ``conditions``: precondition fields (If-Match...) read from requests, 304 and 412 answers;
- ``keys``: the typed app keys the routes read components from.

Routes parse, call the room below and shape answers; later frontends (S3, the web console)
live here beside them. May import every room below. Only ``node.process`` imports it.
"""
