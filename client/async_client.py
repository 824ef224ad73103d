"""``AsyncClient``: the source of truth of the client API; ``Client`` only wraps it.

The client keeps one aiohttp session (pooled keep-alive connections), created on first use
in the running loop. Names are percent-encoded segment by segment, keeping ``/``, and sent
raw so that the server, not a URL library, decides whether a name is valid.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import aiohttp

from client.body import BodySource, ProgressCallback, RequestBody
from client.credentials import find_credentials
from client.errors import FileNotFound, InvalidName, InvalidRequest, UnexpectedResponse
from client.reader import DEFAULT_CHUNK_SIZE, AsyncFileReader
from client.records import (
    META_PREFIX,
    ClusterView,
    FileEntry,
    FileStat,
    Folder,
    Manifest,
    PutResult,
    entity_tag,
)
from client.transport import PeerList, RetryPolicy, Transport, read_json

PEERS_ENV = "RINGSTORE_PEERS"
DEFAULT_PEER = "http://127.0.0.1:8000"
# Entries per page of a listing: the server's bound on ``limit`` (``MAX_LIST`` in
# ``node.api.public``), checked here too so a bad page size fails before any request.
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = MAX_PAGE_SIZE

_Record = TypeVar("_Record")
_Entry = TypeVar("_Entry")  # what one listing yields: FileEntry, or FileEntry | Folder


def default_peers() -> list[str]:
    """Peer URLs from ``$RINGSTORE_PEERS`` (comma-separated), else ``http://127.0.0.1:8000``."""
    return split_peers(os.environ.get(PEERS_ENV, "")) or [DEFAULT_PEER]


def split_peers(text: str) -> list[str]:
    """``"http://a:8000, http://b:8000"`` as a list of URLs (empty items dropped)."""
    return [url.strip() for url in text.split(",") if url.strip()]


def file_path(name: str, base: str = "/files/") -> str:
    """The percent-encoded request path of a file name; raises InvalidName if not UTF-8."""
    try:
        encoded = quote(name.encode("utf-8"), safe="/")
    except UnicodeEncodeError:
        raise InvalidName(f"names must be valid UTF-8: {name!r}") from None
    return base + encoded


class AsyncClient:
    """Talks to a ringstore cluster through any of its peers, failing over between them.

    ``peers`` is a URL, a comma-separated string of URLs or a sequence of them (default:
    ``$RINGSTORE_PEERS``, else ``http://127.0.0.1:8000``). A request that finds its peer
    unreachable or answering 503 is tried on the next peer, up to ``attempts`` tries in all
    (default: one per peer, at least 3) with exponential ``backoff`` seconds between tries.
    ``timeout`` is how long a peer may stay silent mid-request, ``connect_timeout`` how long
    connecting may take. ``cafile`` is a PEM bundle of the CAs that HTTPS peers are checked
    against instead of the system's (a cluster's own CA, e.g. ``DATA/tls/ca.pem`` of
    ``ringstore up --tls``); peers must present a certificate it signed for the address
    called. The access key is ``access_key`` and ``secret_key``, else the ``[default]``
    profile of ``credentials_file``, else ``$RINGSTORE_ACCESS_KEY`` and
    ``$RINGSTORE_SECRET_KEY``, else none (anonymous: public-read namespaces only; see
    ``client.credentials``). Use as ``async with AsyncClient(...) as client:`` or call
    ``aclose``. Raises ValueError for a malformed peer URL or half a key, OSError or
    ssl.SSLError for an unusable ``cafile``, OSError or ValueError for an unusable
    ``credentials_file``.
    """

    def __init__(
        self,
        peers: str | Sequence[str] | None = None,
        *,
        attempts: int | None = None,
        backoff: float = 0.05,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        cafile: str | os.PathLike[str] | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        credentials_file: str | os.PathLike[str] | None = None,
    ) -> None:
        credentials = find_credentials(access_key, secret_key, credentials_file)
        if peers is None:
            urls = default_peers()
        elif isinstance(peers, str):
            urls = split_peers(peers)
        else:
            urls = list(peers)
        peer_list = PeerList(urls)
        retry = RetryPolicy(max(3, len(peer_list)) if attempts is None else attempts, backoff)
        timeouts = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        tls = None if cafile is None else _trusting(cafile)
        self._transport = Transport(peer_list, retry, timeouts, tls, credentials)

    def __repr__(self) -> str:
        return f"AsyncClient({self._transport!r})"

    @property
    def peers(self) -> tuple[str, ...]:
        """The peer URLs this client may ask, normalised, in order."""
        return self._transport.peers.urls

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections. The client cannot be used afterwards."""
        await self._transport.aclose()

    async def put(
        self,
        name: str,
        data: BodySource,
        *,
        content_type: str | None = None,
        progress: ProgressCallback | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_encoding: str | None = None,
        content_disposition: str | None = None,
        cache_control: str | None = None,
        content_language: str | None = None,
        expires: str | datetime | None = None,
    ) -> PutResult:
        """Store ``data`` as ``name``, replacing any previous version; return the new version.

        ``data`` is bytes, a path (``os.PathLike``), a binary file object (read from its
        current position) or an iterator or async iterator of bytes. ``progress`` is called
        with (bytes sent, total or None); it restarts from 0 if the upload is retried.
        Bytes, paths and seekable files are retried on another peer; an iterator or a pipe
        only if the failure came before its first piece was taken.

        The bytes are stored as given: ``content_encoding`` (e.g. ``"gzip"`` for data you
        compressed) only says what they are, and reads give it back with the same bytes.
        ``content_disposition``, ``cache_control``, ``content_language`` and ``expires`` (an
        HTTP date, or a timezone-aware datetime) are kept and given back likewise, and so is
        ``metadata``: your own ``{name: value}`` pairs (names are case-insensitive and come
        back lower-case; at most 2 KiB in all, no control characters).


        ``if_match=etag`` stores only over that version (compare-and-swap; ``"*"``: over
        any); ``if_none_match="*"`` only if no file has the name (create, never overwrite).
        The condition is checked atomically as the new version is committed: of two
        writers holding the same etag, one succeeds and the other gets PreconditionFailed.
        (A retry after a connection lost mid-commit can find its own write and fail so.)

        Raises InvalidName, InvalidRequest (bad or too much metadata), PreconditionFailed,
        Unavailable, PeerUnreachable, InsufficientStorage, TypeError for unsupported data,
        ValueError for a naive ``expires`` datetime, and OSError for a file that cannot be
        read.
        """
        headers = _representation_headers(
            metadata,
            {
                "Content-Encoding": content_encoding,
                "Content-Disposition": content_disposition,
                "Cache-Control": cache_control,
                "Content-Language": content_language,
                "Expires": _http_date(expires),
            },
        )
        async with await RequestBody.prepare(data, progress) as body:
            headers.update(_conditions(if_match, if_none_match))
            if content_type is not None:
                _check_field("Content-Type", content_type)
                headers["Content-Type"] = content_type
            if body.size is not None:
                headers["Content-Length"] = str(body.size)
            path = file_path(name)
            peer, response = await self._transport.send("PUT", path, headers=headers, body=body)
            record = await read_json(response, peer, f"PUT {path}")
        return _parse(PutResult.from_json, record, peer, f"PUT {path}")

    async def get(self, name: str) -> bytes:
        """The whole content of ``name``. Raises FileNotFound, InvalidName, Unavailable,
        ChecksumMismatch (``open``)."""
        async with self.open(name) as reader:
            return await reader.read()

    async def get_range(
        self, name: str, start: int, end: int | None = None, *, if_match: str | None = None
    ) -> bytes:
        """Bytes ``[start, end)`` of ``name``, like ``data[start:end]``; with ``if_match``
        (an etag), of that version only.

        ``end`` past the end of the file is clipped; ``end=None`` reads to the end; a
        negative ``start`` with no ``end`` gives the last ``-start`` bytes (all of a shorter
        file, ``b""`` of an empty one). Raises InvalidRange when ``start`` is at or past the
        end of the file, ValueError when ``end <= start``, FileNotFound,
        PreconditionFailed when ``if_match`` is not the current version's etag, and
        ChecksumMismatch when the range is the whole file and its bytes do not hash to the
        etag (``open``).
        """
        async with self.open(name, start=start, end=end, if_match=if_match) as reader:
            return await reader.read()

    @asynccontextmanager
    async def open(
        self,
        name: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        if_match: str | None = None,
        verify: bool = True,
    ) -> AsyncIterator[AsyncFileReader]:
        """Stream ``name`` (or bytes ``[start, end)`` of it) without holding it in memory.

        ``async with client.open(name) as reader:`` then ``async for piece in reader`` or
        ``await reader.read(n)``; ``reader.stat`` describes the file. A connection that dies
        mid-way is resumed on the next peer. A whole file (or a range that is all of it)
        is hashed as it arrives and compared with its etag, unless ``verify`` is False:
        ChecksumMismatch instead of its last piece, and at every later read, when they
        differ. Raises FileNotFound, InvalidRange, FileChanged.
        """
        reader = await AsyncFileReader.open(
            self._transport,
            name,
            file_path(name),
            start=start,
            end=end,
            chunk_size=chunk_size,
            if_match=if_match,
            verify=verify,
        )
        try:
            yield reader
        finally:
            await reader.aclose()

    async def iter(
        self, name: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Yield the content of ``name`` in pieces of at most ``chunk_size`` bytes.

        If you may stop early, wrap it in ``contextlib.aclosing`` (or use ``open``) so the
        connection is closed at once. Raises FileNotFound and what ``open`` raises.
        """
        async with self.open(name, chunk_size=chunk_size) as reader:
            async for piece in reader:
                yield piece

    async def download(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
        verify: bool = True,
    ) -> FileStat:
        """Write ``name`` to the local file ``path`` and return what was downloaded.

        Streams into a temporary file in the same directory, fsyncs it and renames it over
        ``path``, so ``path`` is either untouched or complete: with ``verify``, complete
        only when the bytes hash to the file's etag. ``progress`` is called with (bytes
        received, total). Raises FileNotFound, ChecksumMismatch, OSError for the local file,
        and what ``open`` raises.
        """
        target = Path(path)
        async with self.open(name, verify=verify) as reader:
            temp = target.with_name(_temporary_name(target.name))
            try:
                file = await asyncio.to_thread(temp.open, "xb")
            except OSError as exc:  # name the file asked for, not the temporary one
                raise type(exc)(exc.errno, exc.strerror, str(target)) from exc
            try:
                done = 0
                if progress is not None:
                    progress(0, reader.stat.size)
                async for piece in reader:
                    await asyncio.to_thread(file.write, piece)
                    done += len(piece)
                    if progress is not None:
                        progress(done, reader.stat.size)
                await asyncio.to_thread(_sync_and_close, file)
                await asyncio.to_thread(os.replace, temp, target)
            except BaseException:
                await asyncio.to_thread(_discard, file, temp)
                raise
            return reader.stat

    async def stat(self, name: str) -> FileStat:
        """Size, version, etag, content type and modification time of ``name``.

        Raises FileNotFound, InvalidName, Unavailable.
        """
        path = file_path(name)
        peer, response = await self._transport.send(
            "HEAD", path, implied_code={404: "file_not_found", 400: "invalid_name"}
        )
        response.release()
        return _parse(
            lambda headers: FileStat.from_headers(name, headers),
            response.headers,
            peer,
            f"HEAD {path}",
        )

    async def exists(self, name: str) -> bool:
        """True if a live file is named ``name``. Raises InvalidName, Unavailable."""
        try:
            await self.stat(name)
        except FileNotFound:
            return False
        return True

    async def delete(self, name: str, *, if_match: str | None = None) -> None:
        """Delete ``name`` (its chunks are freed shortly after).

        With ``if_match=etag``, only if that is still the current version (checked
        atomically as the deletion is committed). Raises FileNotFound if there is no such
        file, PreconditionFailed, InvalidName, Unavailable.
        """
        headers = _conditions(if_match, None)
        _, response = await self._transport.send("DELETE", file_path(name), headers=headers)
        response.release()

    async def list(
        self, prefix: str = "", *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[FileEntry]:
        """Yield every live file whose name starts with ``prefix``, in name order.

        Fetches pages of up to ``page_size`` entries as the iteration goes. Raises
        InvalidRequest for a ``page_size`` outside 1..``MAX_PAGE_SIZE`` (1000, the server's
        bound) before any request, Unavailable.
        """
        _check_page_size(page_size)
        params = {"prefix": prefix, "limit": str(page_size)}
        async for entry in self._paged(params, _page):
            yield entry

    async def _paged(
        self,
        params: dict[str, str],
        parse: Callable[[Any], tuple[builtins.list[_Entry], str | None]],
    ) -> AsyncIterator[_Entry]:
        """Every entry of a ``GET /files`` listing with ``params``, page after page."""
        after = ""
        while True:
            page = await self._transport.json(
                "GET", "/files", params={**params, "start_after": after}
            )
            entries, following = _parse(parse, page, None, "GET /files")
            for entry in entries:
                yield entry
            if not following:
                return
            if following == after:
                raise UnexpectedResponse(f"GET /files: the listing stopped at {after!r}")
            after = following

    async def list_folder(
        self, prefix: str = "", *, delimiter: str = "/", page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[FileEntry | Folder]:
        """Yield what is in the "folder" ``prefix``, in name order: a ``FileEntry`` for each
        live file whose name has no ``delimiter`` after ``prefix``, and one ``Folder`` for
        each name up to the next ``delimiter`` that live files share (``prefix="photos/"``:
        ``photos/cat.jpg`` and ``Folder("photos/2026/")``), as S3 lists with a delimiter.

        ``delimiter`` is any string of 1 to 64 characters. A folder counts as one entry of a
        page of ``page_size`` (1 to ``MAX_PAGE_SIZE``) and shows once whatever the pages.
        Raises InvalidRequest for a bad ``page_size`` or ``delimiter``, Unavailable.
        """
        _check_page_size(page_size)
        if not delimiter:
            raise InvalidRequest("a folder listing needs a delimiter (list() lists flat)")
        params = {"prefix": prefix, "delimiter": delimiter, "limit": str(page_size)}
        async for entry in self._paged(params, _folder_page):
            yield entry

    async def manifest(self, name: str) -> Manifest:
        """The manifest of ``name``: layout and which peer holds each chunk.

        Raises FileNotFound, InvalidName, Unavailable.
        """
        path = file_path(name, "/manifests/")
        record = await self._transport.json("GET", path)
        return _parse(Manifest.from_json, record, None, f"GET {path}")

    # --- access keys and namespaces (admin keys; listing namespaces: any key) -------------

    async def create_key(
        self,
        name: str = "",
        *,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
        create: bool = False,
        admin: bool = False,
    ) -> dict[str, Any]:
        """Create an access key with these grants (namespaces, or ``"*"`` for all) and
        return ``{"access_key", "secret_key", "name", "grants", "created_ms"}``: the secret
        is shown only this once. Raises Unauthenticated, Forbidden (not an admin key),
        InvalidRequest, Unavailable."""
        document = {
            "name": name,
            "read": list(read),
            "write": list(write),
            "create": create,
            "admin": admin,
        }
        return dict(await self._transport.json("POST", "/keys", document=document))

    async def keys(self) -> builtins.list[dict[str, Any]]:
        """Every live access key (without secrets). Raises Forbidden for a non-admin key."""
        return list((await self._transport.json("GET", "/keys"))["keys"])

    async def revoke_key(self, access_key: str) -> None:
        """Revoke a key: every peer refuses it within seconds. Raises NotFound, Forbidden."""
        await self._transport.json("DELETE", "/keys/" + quote(access_key, safe=""))

    async def create_namespace(self, name: str, *, public_read: bool = False) -> dict[str, Any]:
        """Create namespace ``name`` (an S3 bucket name). Raises Conflict if it exists,
        InvalidRequest for a bad name, Forbidden without the grant."""
        path = "/namespaces/" + quote(name, safe="")
        return dict(await self._transport.json("PUT", path, document={"public_read": public_read}))

    async def namespaces(self) -> builtins.list[dict[str, Any]]:
        """The namespaces this key may read (an admin key: all)."""
        return list((await self._transport.json("GET", "/namespaces"))["namespaces"])

    async def remove_namespace(self, name: str) -> None:
        """Remove an empty namespace. Raises Conflict if it holds files, NotFound."""
        await self._transport.json("DELETE", "/namespaces/" + quote(name, safe=""))

    async def cluster(self) -> ClusterView:
        """What the current peer believes about the cluster: ring, members, their fill.

        Raises Unavailable or PeerUnreachable.
        """
        record = await self._transport.json("GET", "/cluster")
        return _parse(ClusterView.from_json, record, None, "GET /cluster")


def _conditions(if_match: str | None, if_none_match: str | None) -> dict[str, str]:
    headers = {}
    if if_match is not None:
        headers["If-Match"] = entity_tag(if_match)
    if if_none_match is not None:
        headers["If-None-Match"] = entity_tag(if_none_match)
    return headers


def _representation_headers(
    metadata: Mapping[str, str] | None, fields: Mapping[str, str | None]
) -> dict[str, str]:
    """The headers of a PUT that carry its representation fields and user metadata.
    Raises InvalidRequest for a metadata name that is no HTTP token or a value with a
    control character (aiohttp would raise a bare ValueError, or send it to be refused)."""
    headers = {header: value for header, value in fields.items() if value is not None}
    for key, value in (metadata or {}).items():
        if not _TOKEN.fullmatch(key):
            raise InvalidRequest(f"metadata names are HTTP tokens (RFC 9110 5.6.2), not {key!r}")
        headers[META_PREFIX + key.lower()] = value
    for header, value in headers.items():
        _check_field(header, value)
    return headers


MAX_NAME_BYTES = 255  # a file name's bytes at most on Linux's file systems (NAME_MAX)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_field(header: str, value: str) -> None:
    """Raise InvalidRequest for a header value with a control character (CR and LF
    would end the header)."""
    if _CONTROL.search(value):
        raise InvalidRequest(f"{header} has a control character: {value[:80]!r}")


def _temporary_name(name: str) -> str:
    """The name a download is written under before its rename: ``.NAME.RANDOM.part``, the
    name cut (whole characters) so that it fits a file system's 255 bytes where ``NAME``
    does (a 250-byte name failed with "File name too long")."""
    suffix = f".{secrets.token_hex(4)}.part"
    room = MAX_NAME_BYTES - 1 - len(suffix)
    stem = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return f".{stem}{suffix}"


def _http_date(moment: str | datetime | None) -> str | None:
    """``moment`` as an HTTP date (a string is sent as it is); raises ValueError for a
    datetime without a time zone."""
    if not isinstance(moment, datetime):
        return moment
    if moment.tzinfo is None:
        raise ValueError("expires must be a timezone-aware datetime")
    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def _folder_page(record: Any) -> tuple[list[FileEntry | Folder], str | None]:
    """A page of a folder listing: files and folders merged in name order."""
    files, following = _page(record)
    folders = [Folder(str(name)) for name in record["prefixes"]]
    merged: list[FileEntry | Folder] = [*files, *folders]
    merged.sort(key=lambda entry: entry.name)
    return merged, following


def _check_page_size(page_size: int) -> None:
    """Raise InvalidRequest unless 1 <= ``page_size`` <= ``MAX_PAGE_SIZE``."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size}")


def _page(record: Any) -> tuple[list[FileEntry], str | None]:
    entries = [FileEntry.from_json(entry) for entry in record["files"]]
    following = record["next"]
    return entries, None if following is None else str(following)


def _parse(build: Callable[[Any], _Record], record: Any, peer: str | None, what: str) -> _Record:
    """``build(record)``, with a malformed answer raised as UnexpectedResponse."""
    try:
        return build(record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnexpectedResponse(
            f"{what}: unexpected answer: missing or bad {exc!r}", peer=peer
        ) from exc


def _sync_and_close(file: BinaryIO) -> None:
    with file:
        file.flush()
        os.fsync(file.fileno())


def _discard(file: BinaryIO, temp: Path) -> None:
    file.close()
    temp.unlink(missing_ok=True)


def _trusting(cafile: str | os.PathLike[str]) -> ssl.SSLContext:
    """A context that trusts only the CAs in ``cafile``, hostname checks on, TLS 1.2 up."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
