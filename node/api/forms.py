"""Form uploads: a ``multipart/form-data`` body (RFC 7578) read as it arrives.

``FormUpload`` parses the body that ``body_pieces`` yields (so a form has the same stall
timeout, ``100 Continue`` and size bound as a PUT) with a push parser that never holds more
than one piece and a header: the small fields before the file are kept (at most
``MAX_PARTS`` parts, ``MAX_FIELD_BYTES`` each), the file part is handed on piece by piece,
and whatever follows it is read to the closing boundary before the file's pieces end, so
a body that is cut off, malformed, or holds a second file fails the upload as a broken PUT
body does (the coordinator sends its last stripe only after the body ends: nothing is
committed).

Which part is the file: the one named ``file`` (``curl -F file=@x``, ``<input type=file
name=file>``). Fields the server reads (``name``; the console's ``csrf_token``) must come
before it, as browsers and curl send a form's fields in order.

Browsers send forms to any site without asking (a "simple" request, no CORS preflight), with
the Basic credentials they hold for the peer: ``same_origin`` refuses a form that a page of
another origin sent (its ``Sec-Fetch-Site`` or ``Origin`` header says so; curl sends
neither). A session-based console adds its CSRF token check through the ``FORM_GUARD`` hook.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import multipart
from aiohttp import hdrs, web
from aiohttp.helpers import parse_mimetype

from node.api.representation import content_type_of
from node.errors import Forbidden, InvalidRequest, TooLarge, UnsupportedMediaType

FILE_FIELD = "file"  # the name of the part that holds the file
MAX_PARTS = 16  # parts of a form, the file's included
MAX_FIELD_BYTES = 4096  # bytes of one field that is not the file (a name is <= 1024)
MAX_HEADER_BYTES = 4096  # bytes of one header line of a part
MAX_HEADERS = 8  # header lines of a part (RFC 7578 uses at most 3)
# What a form may add to its file's bytes: the other parts, every part's headers and the
# boundaries (at most 70 bytes each, RFC 2046 §5.1.1), so a file of --max-file-size fits.
OVERHEAD = MAX_PARTS * (MAX_FIELD_BYTES + MAX_HEADERS * (MAX_HEADER_BYTES + 2) + 80)

# The console's CSRF check: given the request and the fields sent before the file, raise
# (Forbidden) to refuse the upload before anything of it is stored. node.process.wiring
# sets it (node.api.browser.form_guard); unset, forms are checked by ``same_origin`` and
# keys alone.
FormGuard = Callable[[web.Request, Mapping[str, str]], Awaitable[None]]
FORM_GUARD: web.AppKey[FormGuard] = web.AppKey("form_guard")


def same_origin(request: web.Request) -> None:
    """Refuse (Forbidden) a form that a browser sent from a page of another origin.

    Fetch Metadata's ``Sec-Fetch-Site`` (W3C Fetch Metadata Request Headers §2.1) must be
    ``same-origin`` or ``none`` (typed by the user) when present, and ``Origin`` (RFC 6454
    §7) must name this peer's own host when present; a client that sends neither (curl,
    scripts) is not a browser page and is not affected.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        raise Forbidden(f"a form sent from another site ({site}) is refused")
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
        raise Forbidden("a form sent from a page of another origin is refused")


def boundary_of(request: web.Request) -> str:
    """The boundary of a ``multipart/form-data`` request; raises UnsupportedMediaType."""
    mimetype = parse_mimetype(request.headers.get(hdrs.CONTENT_TYPE, ""))
    if (mimetype.type, mimetype.subtype) != ("multipart", "form-data"):
        raise UnsupportedMediaType("send a multipart/form-data body (a form with a file)")
    boundary = mimetype.parameters.get("boundary", "")
    if not 1 <= len(boundary) <= 70:  # RFC 2046 §5.1.1
        raise InvalidRequest("a multipart/form-data body needs a boundary of 1-70 characters")
    return boundary


@dataclass(frozen=True)
class FilePart:
    """The file part's headers: its filename (None when not given) and Content-Type."""

    filename: str | None
    content_type: str


class FormUpload:
    """One form body, read once: ``open`` reads up to the file, ``file_pieces`` the rest.

    ``pieces`` is the request body (``body_pieces``, which raises on a stall, a cut body or
    one past its bound). ``max_file_size`` bounds the file part (TooLarge past it).
    """

    def __init__(self, pieces: AsyncIterator[bytes], boundary: str, max_file_size: int) -> None:
        self._events = _events(pieces, boundary)
        self._max_file_size = max_file_size
        self.fields: dict[str, str] = {}
        self.file: FilePart | None = None

    def __repr__(self) -> str:
        return f"FormUpload(fields={sorted(self.fields)}, file={self.file})"

    async def open(self) -> FilePart:
        """Read the fields before the file part and that part's headers.

        Raises InvalidRequest (a malformed body, a field that is not UTF-8, a field given
        twice, no file part, another part with a filename before it), TooLarge (a field past
        MAX_FIELD_BYTES) and what the body raises.
        """
        async for event in self._events:
            if not isinstance(event, multipart.MultipartSegment):
                raise AssertionError("the parser gives a part's headers before its data")
            if event.name == FILE_FIELD:
                self.file = _file_part(event)
                return self.file
            _not_a_file(event)
            name, value = await self._field(event)
            if name in self.fields:
                raise InvalidRequest(f"the form gives the field {name!r} twice")
            self.fields[name] = value
        raise InvalidRequest(f"the form has no file part (a part named {FILE_FIELD!r})")

    async def file_pieces(self) -> AsyncIterator[bytes]:
        """The file part's bytes as they arrive; after its last, the rest of the body is
        read to its end, so the iteration ends only for a whole, well-formed form.

        Raises TooLarge past ``max_file_size``, InvalidRequest for a malformed rest (a second
        file, a field the server reads sent after the file) and what the body raises.
        """
        size = 0
        async for event in self._events:
            if event is None:
                break
            if isinstance(event, multipart.MultipartSegment):
                raise AssertionError("a part's data ends before the next part starts")
            size += len(event)
            if size > self._max_file_size:
                raise TooLarge(f"a file may be at most {self._max_file_size} bytes")
            yield event if isinstance(event, bytes) else bytes(event)
        async for event in self._events:  # the rest of the form: small fields, bounded
            if not isinstance(event, multipart.MultipartSegment):
                raise AssertionError("the parser gives a part's headers before its data")
            if event.name == FILE_FIELD:
                raise InvalidRequest(f"a form holds one file (one part named {FILE_FIELD!r})")
            _not_a_file(event)
            name, _ = await self._field(event)
            if name in self.fields or name == "name":
                raise InvalidRequest(f"the field {name!r} must come before the file part")

    async def _field(self, segment: multipart.MultipartSegment) -> tuple[str, str]:
        """A field's name and value (UTF-8, RFC 7578 §5.1), read to the end of its part."""
        data = bytearray()
        async for event in self._events:
            if event is None:
                break
            if isinstance(event, multipart.MultipartSegment):
                raise AssertionError("a part's data ends before the next part starts")
            data += event
            if len(data) > MAX_FIELD_BYTES:
                raise TooLarge(f"a form field other than the file is at most {MAX_FIELD_BYTES} B")
        try:
            return str(segment.name or ""), data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"the field {segment.name!r} is not UTF-8") from None


async def _events(
    pieces: AsyncIterator[bytes], boundary: str
) -> AsyncIterator[multipart.MultipartSegment | bytes | bytearray | None]:
    """The parser's events for the body: a part's headers (a MultipartSegment), its data
    (non-empty pieces), then None at its end; for a whole form only (else InvalidRequest)."""
    try:
        parser = multipart.PushMultipartParser(
            boundary,
            max_header_size=MAX_HEADER_BYTES,
            max_header_count=MAX_HEADERS,
            max_segment_count=MAX_PARTS,
        )
        async for piece in pieces:  # an epilogue after the closing boundary is ignored
            for event in parser.parse(piece):
                yield event
        parser.close()  # raises unless the closing boundary came
    except multipart.MultipartError as exc:
        raise InvalidRequest(f"a malformed multipart/form-data body: {exc}") from None


def _file_part(segment: multipart.MultipartSegment) -> FilePart:
    filename = segment.filename
    if filename == "":  # HTML: a file input with no file chosen sends filename=""
        raise InvalidRequest("the form's file part holds no file (none was chosen)")
    return FilePart(filename, content_type_of(dict(segment.headerlist).get("Content-Type")))


def _not_a_file(segment: multipart.MultipartSegment) -> None:
    if segment.filename is not None:
        raise InvalidRequest(
            f"a form holds one file, in a part named {FILE_FIELD!r}; "
            f"the part {segment.name!r} has a filename too"
        )
