"""S3's errors: the one place where a failed S3 request becomes S3's XML error answer.

Routes raise the peer's domain errors (``node.errors``) or, for what only S3 has,
``S3Error``; ``s3_errors`` (the S3 app's outermost middleware after the request id) turns
either into ``<Error><Code>..</Code><Message>..</Message><Resource>..</Resource>
<RequestId>..</RequestId></Error>`` with S3's status for that code. Every answer carries
``x-amz-request-id`` (the id ``node.api.access_log`` gave the request, also its
``X-Request-Id``); an answer to HEAD has no body, so the code is also in
``x-amz-error-code`` (as the native API's ``X-Ringstore-Error``). 5xx messages name no peer.
"""

from __future__ import annotations

import logging
import re
import secrets

from aiohttp import hdrs, web

from node.api.errors import NOSNIFF, SERVER, Handler, close_after_error
from node.api.keys import REQUEST_ID as TRACED_ID  # node.api.access_log.traced sets it
from node.api.s3.bodies import XML_TYPE, MalformedXML, error_document
from node.api.s3.sigv4 import SigV4Error
from node.errors import (
    AccessDenied,
    BadDigest,
    BadSignature,
    Conflict,
    EntityTooSmall,
    IncompleteBody,
    InsufficientStorage,
    InvalidDigest,
    InvalidName,
    InvalidNamespace,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    MetadataTooLarge,
    NamespaceExists,
    NamespaceNotEmpty,
    NamespaceNotFound,
    NotFound,
    Overloaded,
    PayloadHashMismatch,
    PreconditionFailed,
    RequestTimeout,
    RingstoreError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnknownAccessKey,
    UploadNotFound,
)

log = logging.getLogger(__name__)

REQUEST_ID = web.RequestKey("s3_request_id", str)
REQUEST_ID_HEADER = "x-amz-request-id"
ERROR_CODE_HEADER = "x-amz-error-code"
_URL = re.compile(r"\bhttps?://[^\s'\"]+")

# S3's status of each error code this frontend answers with.
STATUS: dict[str, int] = {
    "AccessControlListNotSupported": 400,
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartNumber": 416,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "MalformedXML": 400,
    "MetadataTooLarge": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NotImplemented": 501,
    "OperationAborted": 409,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "RequestTimeout": 400,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "UnexpectedContent": 400,
    "XAmzContentSHA256Mismatch": 400,
}

# Domain errors by S3 code, most specific class first (the first match wins).
DOMAIN_CODES: tuple[tuple[type[RingstoreError], str], ...] = (
    (UnknownAccessKey, "InvalidAccessKeyId"),
    (BadSignature, "SignatureDoesNotMatch"),
    (Unauthenticated, "AccessDenied"),
    (AccessDenied, "AccessDenied"),
    (NamespaceNotFound, "NoSuchBucket"),
    (UploadNotFound, "NoSuchUpload"),
    (NotFound, "NoSuchKey"),
    (NamespaceNotEmpty, "BucketNotEmpty"),
    (NamespaceExists, "BucketAlreadyOwnedByYou"),
    (Conflict, "OperationAborted"),
    (InvalidNamespace, "InvalidBucketName"),
    (InvalidRange, "InvalidRange"),
    (PayloadHashMismatch, "XAmzContentSHA256Mismatch"),
    (BadDigest, "BadDigest"),
    (InvalidDigest, "InvalidDigest"),
    (TooLarge, "EntityTooLarge"),
    (IncompleteBody, "IncompleteBody"),
    (RequestTimeout, "RequestTimeout"),
    (MetadataTooLarge, "MetadataTooLarge"),
    (InvalidPartOrder, "InvalidPartOrder"),
    (EntityTooSmall, "EntityTooSmall"),
    (InvalidPart, "InvalidPart"),
    (InvalidName, "InvalidArgument"),
    (InvalidRequest, "InvalidArgument"),
    (PreconditionFailed, "PreconditionFailed"),
    (Overloaded, "SlowDown"),
    (Unavailable, "ServiceUnavailable"),
    (InsufficientStorage, "ServiceUnavailable"),
)


class S3Error(Exception):
    """An S3 refusal with no domain error behind it: ``code`` is one of ``STATUS``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def s3_code(error: RingstoreError) -> str:
    for cls, code in DOMAIN_CODES:
        if isinstance(error, cls):
            return code
    return "InternalError"


def error_answer(request: web.Request, code: str, message: str) -> web.Response:
    status = STATUS.get(code, 500)
    if status >= 500:
        message = _URL.sub("<peer>", message)
    body = None
    if request.method != hdrs.METH_HEAD:
        body = error_document(code, message, request.path, request.get(REQUEST_ID, ""))
    response = web.Response(status=status, body=body, content_type=XML_TYPE, charset="utf-8")
    response.headers[ERROR_CODE_HEADER] = code
    if request.body_exists and not request.content.is_eof():
        # A body left unread: its client may never send it (boto3 sends a body only after
        # 100 Continue, which a refusal never gets), so the connection cannot carry the
        # next request; close it instead of reading on into that request's bytes.
        response.force_close()
    if code == "SlowDown":
        response.headers[hdrs.RETRY_AFTER] = "1"
    return response


@web.middleware
async def s3_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take the request's id, and turn whatever it fails with into S3's XML error."""
    request[REQUEST_ID] = request.get(TRACED_ID) or secrets.token_hex(8).upper()
    try:
        return await handler(request)
    except S3Error as error:
        return error_answer(request, error.code, error.message)
    except SigV4Error as error:
        return error_answer(request, error.code, error.message)
    except MalformedXML as error:  # a request document (node.api.s3.bodies)
        return error_answer(request, "MalformedXML", str(error))
    except RingstoreError as error:
        code = s3_code(error)
        if STATUS.get(code, 500) >= 500 and not isinstance(error, Overloaded):
            log.warning("S3 %s %s: %s", request.method, request.path, error)
        return error_answer(request, code, error.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "MethodNotAllowed" if exc.status == 405 else "InvalidRequest"
        return error_answer(request, code, exc.reason)
    except ConnectionError as exc:
        log.debug("S3 %s %s: the client went away (%r)", request.method, request.path, exc)
        return web.Response(status=499)  # never sent: nobody is left to read it
    except Exception:
        log.exception("S3 %s %s failed", request.method, request.path)
        return error_answer(request, "InternalError", "internal error; see the peer's log")


async def common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every S3 answer: its request id, no version banner, no content sniffing; a 503
    (SlowDown, ServiceUnavailable) closes its connection (``close_after_error``)."""
    response.headers[REQUEST_ID_HEADER] = request.get(REQUEST_ID, "")
    response.headers[hdrs.SERVER] = SERVER
    response.headers[NOSNIFF[0]] = NOSNIFF[1]
    close_after_error(request, response)
