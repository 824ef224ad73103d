"""``Client``: the blocking twin of ``AsyncClient``, running it on a private loop thread.

Every method has the async method's signature and only hands the call to the loop thread
(``client.loop_thread``); behaviour, retries and errors are the async client's. Callbacks
(``progress``) run on the loop thread. The client may be shared between threads.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any

from client.async_client import DEFAULT_PAGE_SIZE, AsyncClient
from client.body import BodySource, ProgressCallback
from client.loop_thread import LoopThread
from client.reader import DEFAULT_CHUNK_SIZE, AsyncFileReader
from client.records import ClusterView, FileEntry, FileStat, Folder, Manifest, PutResult


class FileReader:
    """A file streaming from the cluster, as a read-only binary file object.

    ``for piece in reader`` yields pieces of at most ``chunk_size`` bytes; ``read(n)``
    returns the next ``n`` bytes (fewer only at the end, ``b""`` after it), so it works with
    ``shutil.copyfileobj``. Get one from ``Client.open``, which closes it.
    """

    def __init__(self, reader: AsyncFileReader, loop: LoopThread) -> None:
        self._reader = reader
        self._loop = loop

    def __repr__(self) -> str:
        return repr(self._reader).replace("AsyncFileReader", "FileReader", 1)

    @property
    def stat(self) -> FileStat:
        """What the file's headers said when it was opened."""
        return self._reader.stat

    @property
    def start(self) -> int:
        """Offset of the first byte this reader delivers."""
        return self._reader.start

    @property
    def end(self) -> int:
        """Offset just past the last byte this reader delivers."""
        return self._reader.end

    @property
    def position(self) -> int:
        """Offset in the file of the next byte this reader delivers."""
        return self._reader.position

    @property
    def remaining(self) -> int:
        """Bytes left to deliver."""
        return self._reader.remaining

    def readable(self) -> bool:
        """Always True: this is a file object to read from."""
        return True

    def read(self, n: int = -1) -> bytes:
        """The next ``n`` bytes (all that remain when ``n`` < 0); fewer only at the end."""
        return self._loop.run(self._reader.read(n))

    def __iter__(self) -> Iterator[bytes]:
        return self._loop.iterate(aiter(self._reader))


class Client:
    """Talks to a ringstore cluster through any of its peers, blocking until each call is done.

    Takes the same arguments as ``AsyncClient`` and behaves the same. Use as
    ``with Client(...) as client:`` or call ``close``; it owns a thread until then.
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
        self._async = AsyncClient(
            peers,
            attempts=attempts,
            backoff=backoff,
            timeout=timeout,
            connect_timeout=connect_timeout,
            cafile=cafile,
            access_key=access_key,
            secret_key=secret_key,
            credentials_file=credentials_file,
        )
        self._loop = LoopThread()

    def __repr__(self) -> str:
        return f"Client({self._async!r}, {self._loop!r})"

    @property
    def peers(self) -> tuple[str, ...]:
        """The peer URLs this client may ask, normalised, in order."""
        return self._async.peers

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections and stop the loop thread. Idempotent."""
        if not self._loop.closed:
            self._loop.run(self._async.aclose())
            self._loop.close()

    def put(
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
        """Store ``data`` as ``name``; see ``AsyncClient.put``."""
        return self._loop.run(
            self._async.put(
                name,
                data,
                content_type=content_type,
                progress=progress,
                if_match=if_match,
                if_none_match=if_none_match,
                metadata=metadata,
                content_encoding=content_encoding,
                content_disposition=content_disposition,
                cache_control=cache_control,
                content_language=content_language,
                expires=expires,
            )
        )

    def get(self, name: str) -> bytes:
        """The whole content of ``name``; see ``AsyncClient.get``."""
        return self._loop.run(self._async.get(name))

    def get_range(
        self, name: str, start: int, end: int | None = None, *, if_match: str | None = None
    ) -> bytes:
        """Bytes ``[start, end)`` of ``name``; see ``AsyncClient.get_range``."""
        return self._loop.run(self._async.get_range(name, start, end, if_match=if_match))

    @contextmanager
    def open(
        self,
        name: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        verify: bool = True,
    ) -> Iterator[FileReader]:
        """Stream ``name`` as a file object: ``with client.open(name) as f:``.

        See ``AsyncClient.open``.
        """
        opening = self._async.open(name, start=start, end=end, chunk_size=chunk_size, verify=verify)
        reader = self._loop.run(_enter(opening))
        try:
            yield FileReader(reader, self._loop)
        finally:
            self._loop.run(_exit(opening))

    def iter(self, name: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the content of ``name`` in pieces; see ``AsyncClient.iter``.

        Leaving the loop early and dropping (or ``close()``-ing) the iterator closes the
        connection.
        """
        return self._loop.iterate(self._async.iter(name, chunk_size=chunk_size))

    def download(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
        verify: bool = True,
    ) -> FileStat:
        """Write ``name`` to the local file ``path``; see ``AsyncClient.download``."""
        return self._loop.run(self._async.download(name, path, progress=progress, verify=verify))

    def stat(self, name: str) -> FileStat:
        """Size, version, etag, content type and modification time of ``name``."""
        return self._loop.run(self._async.stat(name))

    def exists(self, name: str) -> bool:
        """True if a live file is named ``name``."""
        return self._loop.run(self._async.exists(name))

    def delete(self, name: str, *, if_match: str | None = None) -> None:
        """Delete ``name``; see ``AsyncClient.delete``."""
        self._loop.run(self._async.delete(name, if_match=if_match))

    def list(self, prefix: str = "", *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[FileEntry]:
        """Yield every live file whose name starts with ``prefix``; see ``AsyncClient.list``."""
        return self._loop.iterate(self._async.list(prefix, page_size=page_size))

    def list_folder(
        self, prefix: str = "", *, delimiter: str = "/", page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[FileEntry | Folder]:
        """Yield the files and folders in the folder ``prefix``; see
        ``AsyncClient.list_folder``."""
        return self._loop.iterate(
            self._async.list_folder(prefix, delimiter=delimiter, page_size=page_size)
        )

    def manifest(self, name: str) -> Manifest:
        """The manifest of ``name``; see ``AsyncClient.manifest``."""
        return self._loop.run(self._async.manifest(name))

    def cluster(self) -> ClusterView:
        """What the current peer believes about the cluster; see ``AsyncClient.cluster``."""
        return self._loop.run(self._async.cluster())

    def create_key(
        self,
        name: str = "",
        *,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
        create: bool = False,
        admin: bool = False,
    ) -> dict[str, Any]:
        """Create an access key; see ``AsyncClient.create_key``."""
        made = self._async.create_key(name, read=read, write=write, create=create, admin=admin)
        return self._loop.run(made)

    def keys(self) -> builtins.list[dict[str, Any]]:
        """Every live access key; see ``AsyncClient.keys``."""
        return self._loop.run(self._async.keys())

    def revoke_key(self, access_key: str) -> None:
        """Revoke a key; see ``AsyncClient.revoke_key``."""
        self._loop.run(self._async.revoke_key(access_key))

    def create_namespace(self, name: str, *, public_read: bool = False) -> dict[str, Any]:
        """Create a namespace; see ``AsyncClient.create_namespace``."""
        return self._loop.run(self._async.create_namespace(name, public_read=public_read))

    def namespaces(self) -> builtins.list[dict[str, Any]]:
        """The namespaces this key may read; see ``AsyncClient.namespaces``."""
        return self._loop.run(self._async.namespaces())

    def remove_namespace(self, name: str) -> None:
        """Remove an empty namespace; see ``AsyncClient.remove_namespace``."""
        self._loop.run(self._async.remove_namespace(name))


async def _enter(manager: AbstractAsyncContextManager[AsyncFileReader]) -> AsyncFileReader:
    return await manager.__aenter__()


async def _exit(manager: AbstractAsyncContextManager[AsyncFileReader]) -> None:
    await manager.__aexit__(None, None, None)
