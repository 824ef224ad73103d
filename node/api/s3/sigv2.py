"""Presigned URLs of AWS Signature Version 2 (query auth), sans I/O.

boto3 and botocore still presign S3 URLs with Signature V2 unless told ``signature_version=
"s3v4"`` (seen with botocore 1.44: ``?AWSAccessKeyId=..&Signature=..&Expires=..``), so
a user's plain ``generate_presigned_url`` must work. Only that query form is served;
requests signed with V2 in their ``Authorization`` header are refused (use V4).

Following AWS's "Signing and Authenticating REST Requests" (S3, legacy): the signature is
base64(HMAC-SHA1(secret, string to sign)), where the string is the method, the request's
Content-MD5 and Content-Type, the ``Expires`` time, the ``x-amz-*`` headers and parameters
as ``name:value`` lines ("CanonicalizedAmzHeaders"), and the resource: the path as sent and
the sub-resources among the parameters, sorted. Every header a route obeys is thus signed:
whoever holds a URL cannot add an ``x-amz-copy-source`` or change its Content-Type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from node.api.s3.sigv4 import MAX_EXPIRES, SigV4Error

# Parameters that are part of the signed resource (botocore's ``HmacV1Auth.QSAOfInterest``).
SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory",
        "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
        "partNumber", "policy", "replication", "requestPayment", "response-cache-control",
        "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "restore",
        "select", "select-type", "storageClass", "tagging", "torrent", "uploadId", "uploads",
        "versionId", "versioning", "versions", "website",
    }
)  # fmt: skip
PARAMS = ("AWSAccessKeyId", "Signature", "Expires")


@dataclass(frozen=True)
class SignedV2:
    access_key: str
    signature: str
    expires: int  # Unix time after which the URL is refused

    def __repr__(self) -> str:  # never the signature
        return f"SignedV2({self.access_key}, expires={self.expires})"


def presigned_v2(query: Sequence[tuple[str, str]]) -> bool:
    """Whether a query carries V2 presigned-URL parameters."""
    return any(name == "AWSAccessKeyId" for name, _ in query)


def from_query(query: Sequence[tuple[str, str]]) -> SignedV2:
    """The claims of a V2 presigned URL; raises SigV4Error (S3's codes) when malformed."""
    params = dict(query)
    if any(name not in params for name in PARAMS):
        raise SigV4Error("AccessDenied", "a presigned URL needs AWSAccessKeyId, Signature, Expires")
    expires = params["Expires"]
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        raise SigV4Error("AccessDenied", "Expires must be a Unix time in seconds")
    return SignedV2(params["AWSAccessKeyId"], params["Signature"], int(expires))


def check_time(signed: SignedV2, now: float) -> None:
    """Refuse a URL past its ``Expires``, or one valid for longer than ``MAX_EXPIRES``
    from ``now`` (AWS's bound for V4 presigning): V2 carries no signing time, so without
    the bound a URL could be made to last for decades."""
    if now > signed.expires:
        raise SigV4Error("AccessDenied", "Request has expired")
    if signed.expires - now > MAX_EXPIRES:
        raise SigV4Error("AccessDenied", f"Expires must be at most {MAX_EXPIRES} seconds from now")


def string_to_sign(
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    expires: int,
    headers: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """AWS's V2 string to sign for query auth. Content-MD5, Content-Type and the
    ``x-amz-*`` values are the request's headers (what the routes obey) and, where a
    header is absent, the parameters botocore moved into the URL; an ``x-amz-*`` name in
    both has both values, joined with ``,`` ("CanonicalizedAmzHeaders": names lower-cased
    and sorted, values trimmed)."""
    sent = headers or {}
    params = {name.lower(): value for name, value in query}
    amz: dict[str, list[str]] = {}
    for name, value in query:
        if name.lower().startswith("x-amz-"):
            amz.setdefault(name.lower(), []).append(value.strip())
    for name, values in sent.items():
        if name.lower().startswith("x-amz-"):
            amz.setdefault(name.lower(), []).extend(v.strip() for v in values)

    def standard(name: str) -> str:
        values = sent.get(name)
        return ",".join(v.strip() for v in values) if values else params.get(name, "")

    resource = raw_path
    subresources = sorted((n, v) for n, v in query if n in SUBRESOURCES)
    if subresources:
        resource += "?" + "&".join(f"{n}={v}" if v else n for n, v in subresources)
    lines = [
        method.upper(),
        standard("content-md5"),
        standard("content-type"),
        str(expires),
        *(f"{name}:{','.join(values)}" for name, values in sorted(amz.items())),
        resource,
    ]
    return "\n".join(lines)


def verifies(
    secret: str,
    signed: SignedV2,
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """Whether the URL's signature is right under ``secret`` (constant-time comparison of
    bytes: a signature with characters outside ASCII is simply wrong, not a TypeError)."""
    text = string_to_sign(method, raw_path, query, signed.expires, headers)
    digest = hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(base64.b64encode(digest), signed.signature.encode("utf-8"))
