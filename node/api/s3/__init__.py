"""The S3 frontend: S3's REST API over the peer's own operations, on its own port.

A bucket is a namespace, an object the file ``bucket/key``, an S3 access key a ringstore
access key (its secret the same secret): a second frontend over the coordinator, the
access store and the Gatekeeper, not a second store.

- ``sigv4``: Signature V4, pure (canonical requests, signing keys, claims of a header or a
  presigned query, time checks);
- ``auth``: the middleware that turns a signed request into a Principal, and the check of
  a body against its signed SHA-256 while it streams; ``sigv2``: V2 presigned URLs;
- ``chunked``: ``aws-chunked`` bodies decoded, chunk signatures and trailers checked, pure;
- ``bodies``: S3's XML documents; ``errors``: S3's error codes and XML error answers;
- ``routes``: the operations.

Imports the native API's modules beside it (access checks, bodies, ranges, conditions);
``node.process.wiring`` builds its app. docs/s3.md says what is served.
"""
