"""``RingstoreFileSystem``: the cluster as an fsspec filesystem, ``ringstore://NS/NAME``.

Registered under the ``fsspec.specs`` entry point, so ``fsspec.filesystem("ringstore")``,
``fsspec.open("ringstore://ns/a.csv")`` and ``pandas.read_csv("ringstore://ns/a.csv")`` find
it once the package is installed (with its ``fsspec`` extra). It drives the blocking
``Client``; options are the client's (``peers``, ``access_key``/``secret_key``,
``credentials_file``, ``cafile``, ``timeout``...), else the client's environment
(``$RINGSTORE_PEERS``, ``$RINGSTORE_ACCESS_KEY``...).

Paths are file names: the first segment is the namespace (a directory at the root), ``/``
separates folders, which exist while a file is in them (listings with a delimiter, as
S3's). ``mkdir`` of a namespace creates it, of a folder does nothing; ``rmdir`` of a
namespace removes it (empty; an admin key). Reads are ranged GETs of ``block_size`` bytes
(fsspec's read-ahead cache); a write streams to one PUT as it is written, holding at most
about three blocks, and stores the file only when it is closed without an error: a file
left by an exception, or never closed, stores nothing. Errors are the builtins fsspec
callers expect: FileNotFoundError, PermissionError, FileExistsError (mode ``"xb"``),
NotImplementedError for what the store does not do (append, transactions).
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import queue
import threading
import weakref
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from client.errors import (
    ChecksumMismatch,
    Conflict,
    FileNotFound,
    Forbidden,
    InvalidRange,
    NotFound,
    PreconditionFailed,
    Unauthenticated,
)
from client.records import FileEntry, FileStat, Folder, PutResult
from client.sync_client import Client

PROTOCOL = "ringstore"
QUEUED_BLOCKS = 1  # blocks written but not yet taken by the upload: the writer waits past it


@contextlib.contextmanager
def os_errors(path: str) -> Iterator[None]:
    """Raise the client's errors as the builtins fsspec's callers catch: bytes that do
    not hash to the file's etag are an I/O error (EIO), as a disk's unreadable sector."""
    try:
        yield
    except NotFound as exc:
        raise FileNotFoundError(errno.ENOENT, str(exc), path) from exc
    except (Forbidden, Unauthenticated) as exc:
        raise PermissionError(errno.EACCES, str(exc), path) from exc
    except ChecksumMismatch as exc:
        raise OSError(errno.EIO, str(exc), path) from exc


class RingstoreFileSystem(AbstractFileSystem):
    """A ringstore cluster through fsspec; ``storage_options`` are ``Client``'s arguments.

    Raises ValueError (a malformed peer URL, half a key) as ``Client`` does.
    """

    protocol = PROTOCOL
    root_marker = ""
    async_impl = False

    def __init__(
        self,
        peers: str | list[str] | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        credentials_file: str | None = None,
        cafile: str | None = None,
        attempts: int | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        **storage_options: Any,
    ) -> None:
        super().__init__(**storage_options)
        self.client = Client(
            peers,
            attempts=attempts,
            timeout=timeout,
            connect_timeout=connect_timeout,
            cafile=cafile,
            access_key=access_key,
            secret_key=secret_key,
            credentials_file=credentials_file,
        )
        # fsspec keeps instances for reuse and has no close: the client's thread and
        # connections end when this filesystem is collected, or at exit.
        self._closer = weakref.finalize(self, self.client.close)

    def __repr__(self) -> str:
        return f"RingstoreFileSystem({self.client!r})"

    def close(self) -> None:
        """Close the client's connections and stop its thread. Idempotent."""
        self._closer()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """A URL or path as a name: ``ringstore://ns/a/`` and ``/ns/a`` are ``ns/a``."""
        if isinstance(path, list):
            return [cls._strip_protocol(each) for each in path]
        return super()._strip_protocol(path).lstrip("/")

    # --- metadata ----------------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """The entries of a directory (files and folders, one level), or ``[info]`` of a file.

        The root lists the namespaces the key may read. Raises FileNotFoundError when there
        is neither, PermissionError without the grant.
        """
        path = self._strip_protocol(path)
        if not path:
            with os_errors(path):
                found = [_directory(record["name"]) for record in self.client.namespaces()]
        else:
            with os_errors(path):
                listed = self.client.list_folder(path + "/", delimiter="/")
                found = [_entry(item) for item in listed]
            if not found:
                found = [self.info(path)]
                if found[0]["type"] == "directory":
                    found = []  # an empty namespace
        return found if detail else [entry["name"] for entry in found]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """A file's size, etag, version, content type and time, or ``{"type": "directory"}``
        for a namespace or a folder (a prefix that a live file is in). Raises
        FileNotFoundError."""
        path = self._strip_protocol(path)
        if not path:
            return _directory("")
        with os_errors(path), contextlib.suppress(FileNotFound):
            return _file(self.client.stat(path))
        with os_errors(path):
            if next(self.client.list_folder(path + "/", delimiter="/", page_size=1), None):
                return _directory(path)
            if "/" not in path and any(
                record["name"] == path for record in self.client.namespaces()
            ):
                return _directory(path)
        raise FileNotFoundError(2, "no such file or folder", path)

    def modified(self, path: str) -> datetime:
        """When the file's current version was written (timezone-aware)."""
        when: datetime = self._file_info(path)["last_modified"]
        return when

    def ukey(self, path: str) -> str:
        """The file's ETag: it changes exactly when the content does."""
        etag: str = self._file_info(path)["etag"]
        return etag

    def _file_info(self, path: str) -> dict[str, Any]:
        found = self.info(path)
        if found["type"] != "file":
            raise IsADirectoryError(21, "a folder has no such attribute", path)
        return found

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every file below ``path`` (one flat listing; fsspec's walk when ``maxdepth`` or
        ``withdirs`` asks for levels or folders)."""
        if maxdepth is not None or withdirs:
            return super().find(path, maxdepth, withdirs, detail, **kwargs)
        path = self._strip_protocol(path)
        with os_errors(path):
            files = {entry.name: _entry(entry) for entry in self.client.list(_prefix(path))}
            if path and not files:
                with contextlib.suppress(FileNotFound):
                    files[path] = _file(self.client.stat(path))
        return files if detail else sorted(files)

    # --- content -----------------------------------------------------------------------

    def cat_file(
        self,
        path: str,
        start: int | None = None,
        end: int | None = None,
        if_match: str | None = None,
        **kwargs: Any,
    ) -> bytes:
        """Bytes ``[start, end)`` of the file (negative: from its end; None: its start or
        end), in one ranged GET; with ``if_match`` (an etag, ``start`` and ``end`` not
        negative), of that version only. Raises FileNotFoundError, PreconditionFailed."""
        path = self._strip_protocol(path)
        with os_errors(path):
            if start is None and end is None:
                return self.client.get(path)
            if (start or 0) < 0 and end is None:
                return self.client.get_range(path, start or 0)
            if (start or 0) < 0 or (end or 0) < 0:  # a negative end needs the size
                size = self.client.stat(path).size
                start = max(0, size + start) if start and start < 0 else start
                end = size + end if end is not None and end < 0 else end
            start = start or 0
            if end is not None and end <= start:
                return b""
            try:
                return self.client.get_range(path, start, end, if_match=if_match)
            except InvalidRange:
                return b""  # at or past the end, as a file's read gives

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Store ``value`` as the file (``mode="create"``: only if it does not exist)."""
        path = self._strip_protocol(path)
        with _exists_error(path), os_errors(path):
            self.client.put(
                path,
                value,
                content_type=kwargs.get("content_type") or mimetypes.guess_type(path)[0],
                if_none_match="*" if mode == "create" else None,
            )

    def put_file(self, lpath: str, rpath: str, callback: Any = None, **kwargs: Any) -> None:
        """Upload the local file ``lpath`` (streamed from disk) as ``rpath``."""
        if Path(lpath).is_dir():
            return  # folders exist through their files
        rpath = self._strip_protocol(rpath)
        with os_errors(rpath):
            self.client.put(rpath, Path(lpath), content_type=mimetypes.guess_type(rpath)[0])

    def get_file(self, rpath: str, lpath: str, callback: Any = None, **kwargs: Any) -> None:
        """Download ``rpath`` (streamed to disk) as the local file ``lpath``."""
        rpath = self._strip_protocol(rpath)
        if self.isdir(rpath):
            Path(lpath).mkdir(parents=True, exist_ok=True)
            return
        with os_errors(rpath):
            self.client.download(rpath, lpath)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy a file, streamed through this client (the native API has no server-side copy;
        the S3 port's CopyObject has)."""
        path1, path2 = self._strip_protocol(path1), self._strip_protocol(path2)
        with os_errors(path1):
            stat = self.client.stat(path1)
            self.client.put(path2, self.client.iter(path1), content_type=stat.content_type)

    def rm(
        self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None
    ) -> None:
        """Delete files; ``recursive``: every file below a folder too. A folder goes with
        its last file, a namespace stays (``rmdir`` removes it). Raises FileNotFoundError
        for a path that is neither a file nor a folder."""
        paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        for each in paths:
            self._rm(each, found=recursive)

    def _rm(self, path: str, found: bool = False) -> None:
        """Delete one file; a folder needs nothing. ``found``: ``path`` was listed, so one
        that is gone now was a folder (emptied by this delete) or deleted meanwhile."""
        path = self._strip_protocol(path)
        with os_errors(path), contextlib.suppress(FileNotFound):
            self.client.delete(path)
            return
        if not found and self.info(path)["type"] != "directory":  # FileNotFoundError
            raise FileNotFoundError(2, "no such file", path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Create the namespace of ``path`` if it does not exist (a key with a create grant,
        or admin); a folder below it needs nothing: it exists once a file is in it."""
        path = self._strip_protocol(path)
        namespace = path.split("/", 1)[0]
        if not namespace:
            raise PermissionError(13, "the root holds namespaces only", path)
        if "/" in path and not create_parents:
            self.info(namespace)  # FileNotFoundError when the namespace does not exist
            return
        with os_errors(path), contextlib.suppress(Conflict):  # made meanwhile
            if not self.exists(namespace):
                self.client.create_namespace(namespace)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        if not exist_ok and self.exists(path):
            raise FileExistsError(17, "exists", path)
        self.mkdir(path)

    def rmdir(self, path: str) -> None:
        """Remove an empty namespace (an admin key); a folder needs nothing."""
        path = self._strip_protocol(path)
        if "/" in path:
            return
        with os_errors(path):
            self.client.remove_namespace(path)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | str | None = "default",
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> RingstoreFile:
        if not autocommit:
            raise NotImplementedError("ringstore files are stored on close (no transactions)")
        if mode == "ab":
            raise NotImplementedError("ringstore files cannot be appended to")
        return RingstoreFile(
            self,
            self._strip_protocol(path),
            mode,
            block_size,
            cache_options=cache_options,
            **kwargs,
        )


class RingstoreFile(AbstractBufferedFile):
    """A file of the cluster open for reading (ranged GETs through fsspec's cache) or
    writing (``"wb"``, or ``"xb"``: only if it does not exist), streamed as written."""

    DEFAULT_BLOCK_SIZE = 4 << 20  # the client's and server's pieces are 1 MiB

    def __init__(
        self,
        fs: RingstoreFileSystem,
        path: str,
        mode: str = "rb",
        block_size: int | str | None = "default",
        content_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._upload: StreamedUpload | None = None
        self._content_type = content_type or mimetypes.guess_type(path)[0]
        self.stored: PutResult | None = None  # what the PUT answered, once closed
        with os_errors(path):
            super().__init__(fs, path, mode, block_size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the version opened (its etag, from ``info`` at open):
        each block is a ranged GET of its own, so a file replaced meanwhile would otherwise
        be read as a splice of two versions, or cut short. Raises OSError (ESTALE) then."""
        try:
            data: bytes = self.fs.cat_file(self.path, start, end, self.details.get("etag"))
        except PreconditionFailed as exc:
            message = f"{self.path} was replaced while it was open for reading"
            raise OSError(errno.ESTALE, message, self.path) from exc
        return data

    def _initiate_upload(self) -> None:
        exclusive = self.mode == "xb"
        self._upload = StreamedUpload(self.fs.client, self.path, self._content_type, exclusive)

    def _upload_chunk(self, final: bool = False) -> bool:
        if self._upload is None:
            raise ValueError("the upload was discarded")
        data = self.buffer.getvalue()
        with _exists_error(self.path), os_errors(self.path):
            if data:
                self._upload.send(data)
            if final:
                self.stored = self._upload.finish()
        return True

    def discard(self) -> None:
        """Abandon the upload: nothing of this file is stored."""
        if self._upload is not None:
            self._upload.abort()
            self._upload = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and self.writable():
            self.discard()
            self.closed = True
            return
        self.close()

    def __del__(self) -> None:
        if not self.closed and self.writable():  # never closed: stored never
            self.discard()
            self.closed = True


class _Aborted(Exception):
    """Put in place of the rest of a body whose writer gave it up."""


_END = object()


class StreamedUpload:
    """One PUT on a thread of its own whose body is the pieces ``send`` hands it.

    ``send`` waits while ``QUEUED_BLOCKS`` pieces wait to be taken (the upload's pace is the
    writer's limit, so memory stays bounded); ``finish`` ends the body and returns the PUT's
    result, ``abort`` fails the body, so the server stores nothing. Errors of the PUT are
    raised by ``send`` (once the upload has ended) and ``finish``.
    """

    def __init__(
        self, client: Client, name: str, content_type: str | None, exclusive: bool
    ) -> None:
        self._client = client
        self._name = name
        self._content_type = content_type
        self._exclusive = exclusive
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUED_BLOCKS)
        self._result: PutResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"ringstore-put {name}")
        self._thread.daemon = True
        self._thread.start()

    def __repr__(self) -> str:
        state = "running" if self._thread.is_alive() else "done"
        return f"StreamedUpload({self._name!r}, {state})"

    def _body(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def _run(self) -> None:
        try:
            self._result = self._client.put(
                self._name,
                self._body(),
                content_type=self._content_type,
                if_none_match="*" if self._exclusive else None,
            )
        except BaseException as exc:  # handed to the writer's thread
            self._error = exc

    def _hand(self, item: object) -> bool:
        """Queue ``item`` for the upload; False if the upload ended first."""
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def send(self, data: bytes) -> None:
        """Hand the next piece of the body over; raises the PUT's error if it failed."""
        if not self._hand(data):
            self._raise()

    def finish(self) -> PutResult:
        """End the body, wait for the PUT and return its result (or raise its error)."""
        self._hand(_END)
        self._thread.join()
        self._raise()
        assert self._result is not None
        return self._result

    def abort(self) -> None:
        """Fail the body so that nothing is stored, and wait for the PUT to end."""
        self._hand(_Aborted("the writer discarded the file"))
        self._thread.join()

    def _raise(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError(f"the upload of {self._name!r} ended without a result")


@contextlib.contextmanager
def _exists_error(path: str) -> Iterator[None]:
    try:
        yield
    except PreconditionFailed as exc:
        raise FileExistsError(17, "the file exists", path) from exc


def _prefix(path: str) -> str:
    return path + "/" if path else ""


def _directory(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def _entry(item: FileEntry | Folder) -> dict[str, Any]:
    if isinstance(item, Folder):
        return _directory(item.name.rstrip("/"))
    return {
        "name": item.name,
        "size": item.size,
        "type": "file",
        "etag": item.etag,
        "version": item.version,
        "content_type": item.content_type,
    }


def _file(stat: FileStat) -> dict[str, Any]:
    return {
        "name": stat.name,
        "size": stat.size,
        "type": "file",
        "etag": stat.etag,
        "version": stat.version,
        "content_type": stat.content_type,
        "last_modified": stat.last_modified,
    }
