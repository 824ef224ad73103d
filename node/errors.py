"""The peer's domain exceptions: one root, no HTTP in sight.

The store, codec and coordinator raise these; ``node.api.errors`` maps each class to an HTTP
status and a JSON body in one place, and the client maps them back.

    RingstoreError
    ├── InvalidRequest (ValueError)        bad input from a client
    │   ├── InvalidName
    │   ├── InvalidRange
    │   ├── IncompleteBody                 the body ended before Content-Length
    │   ├── TooLarge                       a body past its limit (--max-file-size)
    │   ├── RequestTimeout                 a body stalled or too slow (--client-timeout, -min-rate)
    │   ├── UnsupportedMediaType           a body not of the type the route takes
    │   ├── MetadataTooLarge               user metadata past its bound
    │   ├── InvalidDigest                  a malformed Content-MD5 or digest field
    │   ├── BadDigest                      a body that does not match its digest
    │   │   └── PayloadHashMismatch        a body not the one its signature covers (S3)
    │   ├── Forbidden                      a request this peer never serves (a browser's)
    │   └── InvalidPart                    a multipart Complete naming a part it cannot use
    │       ├── InvalidPartOrder           parts not in ascending order
    │       └── EntityTooSmall             a part but the last below the minimum part size
    ├── PreconditionFailed                 a condition of the request (If-Match...) does not hold
    ├── Conflict                           the target is in a state that refuses the request
    │   ├── NamespaceNotEmpty, NamespaceExists
    │   └── UploadBusy                     an upload a Complete holds (S3: OperationAborted)
    ├── NotFound (KeyError)
    │   ├── FileNotFound
    │   ├── ChunkNotFound
    │   └── UploadNotFound                 no multipart upload of that id (S3: NoSuchUpload)
    ├── Unavailable                        not enough healthy peers to serve the request
    │   ├── PeerUnavailable                one peer could not be reached or failed
    │   │   └── WrongPeer                  another peer answers at that peer's address
    │   ├── Undecided                      the newest manifest awaits its verdict; retry soon
    │   └── Overloaded                     this peer is at its limit of requests; retry soon
    ├── Unauthenticated                    a peer call without valid proof of membership
    │   ├── UnknownAccessKey               no live key of that id (S3: InvalidAccessKeyId)
    │   └── BadSignature                   a signed request whose signature is wrong
    ├── StartRefused                       a peer must not start as configured (says why)
    ├── InsufficientStorage                a disk is full
    └── CorruptData                        stored bytes fail their digest
"""

from __future__ import annotations


class RingstoreError(Exception):
    """Root of every error ringstore raises on purpose."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(RingstoreError, ValueError):
    code = "invalid_request"


class InvalidName(InvalidRequest):
    code = "invalid_name"


class InvalidRange(InvalidRequest):
    code = "invalid_range"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class IncompleteBody(InvalidRequest):
    code = "incomplete_body"


class TooLarge(InvalidRequest):
    code = "too_large"


class RequestTimeout(InvalidRequest):
    code = "request_timeout"


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


class MetadataTooLarge(InvalidRequest):
    code = "metadata_too_large"


class InvalidDigest(InvalidRequest):
    code = "invalid_digest"


class BadDigest(InvalidRequest):
    code = "bad_digest"


class PayloadHashMismatch(BadDigest):
    """A body whose SHA-256 is not the ``x-amz-content-sha256`` its signature covers."""

    code = "payload_hash_mismatch"


class Forbidden(InvalidRequest):
    code = "forbidden"


class AccessDenied(Forbidden):
    """The access key is valid but has no grant for what was asked."""

    code = "access_denied"


class InvalidPart(InvalidRequest):
    code = "invalid_part"


class InvalidPartOrder(InvalidPart):
    code = "invalid_part_order"


class EntityTooSmall(InvalidPart):
    code = "entity_too_small"


class InvalidNamespace(InvalidRequest):
    code = "invalid_namespace"


class Conflict(RingstoreError):
    code = "conflict"


class NamespaceNotEmpty(Conflict):
    code = "namespace_not_empty"


class NamespaceExists(Conflict):
    code = "namespace_exists"


class UploadBusy(Conflict):
    """A multipart upload that a Complete is committing: an Abort or another Complete is
    refused until it is done (S3's OperationAborted, 409: "try again")."""

    code = "upload_busy"


class PreconditionFailed(RingstoreError):
    """A condition of the request (If-Match, If-None-Match, If-Unmodified-Since) does not
    hold for the current version; nothing was changed."""

    code = "precondition_failed"


class NotFound(RingstoreError, KeyError):
    code = "not_found"


class FileNotFound(NotFound):
    code = "file_not_found"


class ChunkNotFound(NotFound):
    code = "chunk_not_found"


class UploadNotFound(NotFound):
    code = "upload_not_found"


class NamespaceNotFound(NotFound):
    code = "namespace_not_found"


class AccessKeyNotFound(NotFound):
    code = "access_key_not_found"


class Unavailable(RingstoreError):
    code = "unavailable"


class WriteContended(Unavailable):
    """A conditional write that racing writers kept from the write quorum (the replicas
    split among them, none won): nothing was changed, and trying again may succeed."""


class PeerUnavailable(Unavailable):
    """A peer call that failed for the peer's sake. ``counted``: whether it counts against
    the peer's liveness (``Peers``); not when another call already counted the same failed
    request (a batch's other calls, ``node.cluster.batching``)."""

    code = "peer_unavailable"

    def __init__(self, peer: str, reason: str, counted: bool = True) -> None:
        super().__init__(f"peer {peer}: {reason}")
        self.peer = peer
        self.reason = reason
        self.counted = counted


class WrongPeer(PeerUnavailable):
    code = "wrong_peer"


class CredentialsRefused(PeerUnavailable):
    """A peer answered ``401`` to a signed call: to it this peer is no member (its cluster
    secret is another cluster's, or one that cluster's rotations retired)."""

    code = "credentials_refused"


class Undecided(Unavailable):
    """Work that copies or destroys on a manifest's word met a conditional write not yet
    decided as the newest (``ManifestReplicas.read(decided=True)``)."""

    code = "undecided"


class Overloaded(Unavailable):
    code = "overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, for Retry-After


class Unauthenticated(RingstoreError):
    code = "unauthenticated"


class UnknownAccessKey(Unauthenticated):
    """A signed request (S3) names an access key that is unknown or revoked."""

    code = "unknown_access_key"


class BadSignature(Unauthenticated):
    """A signed request (S3) whose signature is not the one its key's secret gives."""

    code = "bad_signature"


class StartRefused(RingstoreError):
    code = "start_refused"


class InsufficientStorage(RingstoreError):
    code = "insufficient_storage"


class CorruptData(RingstoreError):
    code = "corrupt_data"


def _codes(cls: type[RingstoreError]) -> dict[str, type[RingstoreError]]:
    found = {cls.code: cls}
    for sub in cls.__subclasses__():
        found.update(_codes(sub))
    return found


# Classes rebuilt from an error code alone; those needing more (a size, a peer) are left out.
BY_CODE = {
    code: cls
    for code, cls in _codes(RingstoreError).items()
    if not issubclass(cls, (InvalidRange, PeerUnavailable)) and cls is not RingstoreError
}


def error_from_code(code: str, message: str) -> RingstoreError | None:
    """The exception another peer reported with ``code``, or None for an unknown code."""
    cls = BY_CODE.get(code)
    return cls(message) if cls is not None else None
