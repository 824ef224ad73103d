"""AWS Signature Version 4 for S3, sans I/O: what a request's signature must be.

Pure functions over a request's parts (method, raw path, raw query, headers) and a secret;
nothing here reads a socket or a clock (the caller passes ``now``). Following AWS's
"Signature Version 4 signing process" and "Authenticating Requests: Using Query
Parameters" (S3 API reference):

* the canonical request is the method, the canonical URI (each path segment decoded, then
  URI-encoded once: S3 does not normalise ``.``/``..`` or double-encode), the canonical
  query (every parameter but ``X-Amz-Signature``, URI-encoded, sorted), the signed headers
  as ``name:trimmed value`` lines, their names, and the payload hash (a hex SHA-256,
  ``UNSIGNED-PAYLOAD``, or a ``STREAMING-...`` marker);
* the string to sign is ``AWS4-HMAC-SHA256``, the request time, the credential scope
  (``date/region/s3/aws4_request``) and the canonical request's SHA-256;
* the signing key is an HMAC-SHA256 chain from ``"AWS4" + secret`` over the scope.

Any region name is accepted (a cluster is one region); the service must be ``s3``.
Signatures are compared in constant time (``hmac.compare_digest``). ``SigV4Error`` says
which S3 error code a refusal is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote, unquote_plus

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PREFIX = "STREAMING-"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = timedelta(minutes=15)  # header-signed requests: clock difference allowed
MAX_EXPIRES = 7 * 24 * 3600  # seconds a presigned URL may be valid (AWS's bound)
SIGNATURE_PARAM = "X-Amz-Signature"
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNRESERVED = "-_.~"


class SigV4Error(Exception):
    """A request whose signature cannot be accepted; ``code`` is S3's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Signed:
    """What a request claims about its signature (from its header or its query)."""

    access_key: str
    date: str  # YYYYMMDD of the scope
    region: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: datetime  # X-Amz-Date (UTC)
    payload_hash: str  # hex SHA-256, UNSIGNED-PAYLOAD or STREAMING-...
    presigned: bool = False
    expires: int = 0  # presigned: seconds after timestamp
    excluded_params: frozenset[str] = field(default=frozenset())

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/s3/aws4_request"

    def __repr__(self) -> str:  # never the signature
        return f"Signed({self.access_key}, {self.scope}, presigned={self.presigned})"


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """The decoded ``(name, value)`` pairs of a raw query string, in order; a parameter
    without ``=`` has the value ``""``. ``+`` is a space, as form encoding has it: botocore
    sends a space in a query value as ``+`` (``urlencode``) and signs it as ``%20``, and
    sends a plus sign as ``%2B``."""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def uri_encode(text: str, keep_slash: bool = False) -> str:
    """AWS's URI encoding: every byte but the unreserved ones as ``%XX`` (upper-case)."""
    return quote(text, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_uris(raw_path: str) -> list[str]:
    """The canonical URIs a signer may have used for ``raw_path``: decoded and encoded
    once (AWS's rule), and the path as sent when that differs (clients that sign what
    they send, with characters AWS would encode left plain)."""
    decoded = unquote(raw_path)
    canonical = uri_encode(decoded, keep_slash=True) or "/"
    return [canonical] if canonical == raw_path else [canonical, raw_path]


def canonical_query(pairs: Iterable[tuple[str, str]], excluded: Iterable[str] = ()) -> str:
    left_out = set(excluded)
    encoded = sorted(
        (uri_encode(name), uri_encode(value)) for name, value in pairs if name not in left_out
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers: Mapping[str, Sequence[str]], names: Sequence[str]) -> str:
    """``name:value`` lines of the signed headers (values trimmed, inner runs of spaces
    made one, several lines of one name joined with ``,``). Raises SigV4Error when a
    signed header is missing."""
    lines = []
    for name in names:
        values = headers.get(name)
        if values is None:
            raise SigV4Error(
                "SignatureDoesNotMatch", f"signed header {name!r} is not in the request"
            )
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    uri: str,
    query: str,
    headers: Mapping[str, Sequence[str]],
    signed: Signed,
) -> str:
    names = signed.signed_headers
    return "\n".join(
        [
            method.upper(),
            uri,
            query,
            canonical_headers(headers, names),
            ";".join(names),
            signed.payload_hash,
        ]
    )


def string_to_sign(signed: Signed, request: str) -> str:
    return "\n".join(
        [
            ALGORITHM,
            signed.timestamp.strftime(_TIME_FORMAT),
            signed.scope,
            hashlib.sha256(request.encode("utf-8")).hexdigest(),
        ]
    )


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, signed: Signed, request: str) -> str:
    key = signing_key(secret, signed.date, signed.region)
    return hmac.new(key, string_to_sign(signed, request).encode(), hashlib.sha256).hexdigest()


def verifies(
    secret: str,
    signed: Signed,
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
) -> bool:
    """Whether ``signed.signature`` is the request's signature under ``secret``
    (constant-time comparison). Raises SigV4Error when a signed header is missing."""
    canonical_q = canonical_query(query, signed.excluded_params)
    for uri in canonical_uris(raw_path):
        request = canonical_request(method, uri, canonical_q, headers, signed)
        given = signed.signature.encode("utf-8")
        if hmac.compare_digest(signature(secret, signed, request).encode(), given):
            return True
    return False


def _timestamp(text: str) -> datetime:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise SigV4Error("AccessDenied", "X-Amz-Date must be YYYYMMDDTHHMMSSZ") from None


def _credential(text: str, malformed: str) -> tuple[str, str, str]:
    """``(access key, date, region)`` of ``KEY/date/region/s3/aws4_request``."""
    parts = text.split("/")
    if len(parts) != 5:
        raise SigV4Error(malformed, "the credential must be KEY/DATE/REGION/s3/aws4_request")
    access_key, date, region, service, terminator = parts
    if service != "s3" or terminator != "aws4_request" or not re.fullmatch(r"\d{8}", date):
        raise SigV4Error(malformed, "the credential must be KEY/DATE/REGION/s3/aws4_request")
    return access_key, date, region


def _signed_header_names(text: str, malformed: str) -> tuple[str, ...]:
    names = tuple(text.split(";"))
    if not text or any(not n or n != n.lower() for n in names) or "host" not in names:
        raise SigV4Error(malformed, "SignedHeaders must list lower-case names, host among them")
    return names


def _payload_hash(value: str | None) -> str:
    if value is None:
        raise SigV4Error("InvalidRequest", "header-signed requests need x-amz-content-sha256")
    if value == UNSIGNED_PAYLOAD or value.startswith(STREAMING_PREFIX) or _HEX64.fullmatch(value):
        return value
    raise SigV4Error("InvalidArgument", "x-amz-content-sha256 must be a hex SHA-256")


def from_header(authorization: str, amz_date: str | None, content_sha256: str | None) -> Signed:
    """The claims of an ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
    Signature=...`` header; raises SigV4Error (AuthorizationHeaderMalformed...)."""
    malformed = "AuthorizationHeaderMalformed"
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme != ALGORITHM:
        raise SigV4Error(malformed, f"only {ALGORITHM} is supported")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SigV4Error(malformed, "the Authorization header is malformed")
        fields[name] = value
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise SigV4Error(malformed, "Credential, SignedHeaders and Signature are required")
    access_key, date, region = _credential(fields["Credential"], malformed)
    if amz_date is None:
        raise SigV4Error("AccessDenied", "header-signed requests need X-Amz-Date")
    timestamp = _timestamp(amz_date)
    if timestamp.strftime("%Y%m%d") != date:
        raise SigV4Error(malformed, "the credential's date is not the day of X-Amz-Date")
    return Signed(
        access_key=access_key,
        date=date,
        region=region,
        signed_headers=_signed_header_names(fields["SignedHeaders"], malformed),
        signature=fields["Signature"],
        timestamp=timestamp,
        payload_hash=_payload_hash(content_sha256),
    )


def from_query(query: Sequence[tuple[str, str]]) -> Signed:
    """The claims of a presigned URL's ``X-Amz-*`` parameters; raises SigV4Error."""
    params = dict(query)
    needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires")
    if any(name not in params for name in (*needed, "X-Amz-SignedHeaders", SIGNATURE_PARAM)):
        raise SigV4Error("AuthorizationQueryParametersError", "a presigned URL lacks X-Amz-*")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise SigV4Error("AuthorizationQueryParametersError", f"only {ALGORITHM} is supported")
    malformed = "AuthorizationQueryParametersError"
    access_key, date, region = _credential(params["X-Amz-Credential"], malformed)
    timestamp = _timestamp(params["X-Amz-Date"])
    expires_text = params["X-Amz-Expires"]
    if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 7:
        raise SigV4Error(malformed, "X-Amz-Expires must be a number of seconds")
    expires = int(expires_text)
    if not 1 <= expires <= MAX_EXPIRES:
        raise SigV4Error(malformed, f"X-Amz-Expires must be 1..{MAX_EXPIRES} seconds")
    return Signed(
        access_key=access_key,
        date=date,
        region=region,
        signed_headers=_signed_header_names(params["X-Amz-SignedHeaders"], malformed),
        signature=params[SIGNATURE_PARAM],
        timestamp=timestamp,
        payload_hash=_payload_hash(params.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD)),
        presigned=True,
        expires=expires,
        excluded_params=frozenset({SIGNATURE_PARAM}),
    )


def check_time(signed: Signed, now: datetime) -> None:
    """Raise SigV4Error when a request is not valid at ``now``: a header-signed one more
    than ``MAX_SKEW`` away (RequestTimeTooSkewed), a presigned one expired or not yet
    valid (AccessDenied)."""
    if signed.presigned:
        if now < signed.timestamp - MAX_SKEW:
            raise SigV4Error("AccessDenied", "Request is not valid yet")
        if now > signed.timestamp + timedelta(seconds=signed.expires):
            raise SigV4Error("AccessDenied", "Request has expired")
        return
    if abs(now - signed.timestamp) > MAX_SKEW:
        raise SigV4Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the server's time is too large.",
        )
