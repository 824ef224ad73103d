"""The HTTP frontends: the public files API and the peer-to-peer API, and the error mapping.

- ``public``: ``/files``, ``/manifests``, ``/cluster``, ``/scrub``;
- ``forms``: form uploads (``multipart/form-data``) parsed as they stream in;
- ``console``: the web console at ``/ui/`` (login, pages, static modules, the ring drawing);
  ``browser``: what a console session's cookie stands for, and its CSRF checks;
- ``monitoring``: ``/health``, ``/ready`` and ``/metrics``; ``metrics``: the peer's registry;
- ``access_log``: request ids, and a log line and metrics sample per answered request;
- ``peer``: the ``/internal/`` routes, adapting requests to ``Holder`` and ``Gossip``;
- ``errors``: the one middleware that turns domain exceptions into statuses and JSON;
- ``input``, ``ranges``, ``numbers``: request bodies (bounded in size and time), query
  parameters, ``Range`` headers and the numbers in them;
- ``limits``: how many public requests a peer serves at once, and refusals logged sparingly;
- ``conditions``: precondition fields (If-Match...) read from requests, 304 and 412 answers;
- ``keys``: the typed app keys the routes read components from.

Routes parse, call the room below and shape answers; the other frontends (S3, the web
console) live here beside them. May import every room below. Only ``node.process`` imports it.
"""
