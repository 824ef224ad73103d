"""Opening and reading files only where it needs no disk I/O, so the event loop may do it.

A worker-thread hop (``asyncio.to_thread``) costs 0.23-0.34 ms of CPU on the VMs this
project measures on (docs/architecture.md, "The manifest log"), as much as the rest of a
small read's work; opening and reading a file whose directory entries and pages are in
memory costs a few µs. Both calls here answer "not without the disk" instead of waiting
for it, and the caller goes to a thread then:

- ``open_cached``: ``openat2(2)`` with ``RESOLVE_CACHED`` (Linux 5.12+, made for io_uring's
  non-blocking opens): it fails with EAGAIN unless every component of the path is in the
  kernel's lookup cache.
- ``pread_cached``: ``preadv2(2)`` with ``RWF_NOWAIT`` (Linux 4.14+): it reads what is in the
  page cache and fails with EAGAIN, or reads short, where the rest would need the disk.
  A miss is not free: the kernel starts readahead for the pages missed before it answers
  (submitting I/O, which may briefly wait for a full device queue), so a caller stops
  asking for a file once it missed.
- ``in_cache``: whether a range is in the page cache and read: ``cachestat(2)`` (Linux
  6.5+) counts its pages present, and ``preadv2`` with ``RWF_NOWAIT`` of its first and last
  byte fails for a page the kernel is still reading in. A sendfile(2) of the range then
  starts no disk read (``node.disk.sendfile``).

Each raises ``Unsupported`` where the kernel or the file system cannot tell (an older
kernel, tmpfs for ``RWF_NOWAIT``, a seccomp filter): the caller stops asking. Files are
opened ``O_NOATIME`` where the system allows it (the file's owner): a read that updated
the access time would be an inode update, which can wait on the file system's journal.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from pathlib import Path

# openat2(2)'s number: 437 on these architectures (the unified table of Linux 5.6+; alpha,
# MIPS and ia64 number it otherwise, and are not looked for).
_SYS_OPENAT2 = (
    437
    if sys.platform == "linux"
    and platform.machine() in ("x86_64", "aarch64", "riscv64", "ppc64le", "s390x")
    else None
)
_RESOLVE_CACHED = 0x20  # linux/openat2.h
# cachestat(2)'s number (Linux 6.5+, the unified table as for openat2).
_SYS_CACHESTAT = 451 if _SYS_OPENAT2 is not None else None
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_AT_FDCWD = -100
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.E2BIG, errno.EOPNOTSUPP)


class Unsupported(OSError):
    """The kernel or file system cannot open or read without possibly waiting for the disk."""


class _OpenHow(ctypes.Structure):
    """``struct open_how`` (linux/openat2.h): openat2's flags, mode and resolve flags."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


class _CachestatRange(ctypes.Structure):
    """``struct cachestat_range`` (linux/mman.h): a byte range of a file."""

    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    """``struct cachestat`` (linux/mman.h): page counts of the range asked about."""

    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True) if _SYS_OPENAT2 is not None else None
if _libc is not None:  # a variadic call: every argument given its full width
    _libc.syscall.restype = ctypes.c_long
_HOW_NOATIME = _OpenHow(os.O_RDONLY | os.O_CLOEXEC | _O_NOATIME, 0, _RESOLVE_CACHED)


def open_cached(path: Path) -> int | None:
    """A read-only ``O_NOATIME`` descriptor of ``path``, or None where its lookup needs the
    disk or the open fails otherwise (not this process's file: EPERM; ask ``open_noatime``
    in a thread, which raises the error then). Raises FileNotFoundError; Unsupported
    without openat2 or RESOLVE_CACHED."""
    if _libc is None or _SYS_OPENAT2 is None or not _O_NOATIME:
        raise Unsupported(errno.ENOSYS, "openat2 is not available here")
    how = _HOW_NOATIME
    fd: int = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_long(_AT_FDCWD),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd >= 0:
        return fd
    code = ctypes.get_errno()
    if code == errno.ENOENT:
        raise FileNotFoundError(code, os.strerror(code), str(path))
    if code in _UNSUPPORTED:
        raise Unsupported(code, f"openat2 with RESOLVE_CACHED: {os.strerror(code)}")
    return None  # EAGAIN: not all cached; EPERM: not ours (or a seccomp filter), and others


def open_noatime(path: Path, flags: int = os.O_RDONLY, mode: int = 0o644) -> tuple[int, bool]:
    """``os.open(path, flags, mode)`` with ``O_NOATIME`` where the system allows it (blocking);
    the descriptor and whether it has ``O_NOATIME`` (not for another user's file: EPERM, a
    plain open then). Raises as ``os.open``."""
    if _O_NOATIME:
        try:
            return os.open(path, flags | os.O_CLOEXEC | _O_NOATIME, mode), True
        except PermissionError:
            pass
    return os.open(path, flags | os.O_CLOEXEC, mode), False


def pread_cached(fd: int, length: int, offset: int) -> bytes | None:
    """The ``length`` bytes of ``fd`` at ``offset`` (-1: at its position, which moves past
    them) if all of them are in the page cache, else None (some are not, or the file ends
    before them). Raises Unsupported where the system or file system cannot tell, OSError
    for a failed read."""
    buffer = bytearray(length)
    got = preadinto_cached(fd, memoryview(buffer), offset)
    return bytes(buffer) if got == length else None


def preadinto_cached(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` what the page cache holds of ``fd`` from ``offset`` (-1: from its
    position, which moves past what is read): the bytes read; fewer than asked where one is
    not cached or the file ends (0: the first). Raises Unsupported, OSError as
    ``pread_cached``."""
    if not hasattr(os, "RWF_NOWAIT"):
        raise Unsupported(errno.ENOSYS, "preadv2 with RWF_NOWAIT is not available here")
    try:
        return os.preadv(fd, [view], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return 0
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            raise Unsupported(exc.errno, f"preadv2 with RWF_NOWAIT: {exc.strerror}") from exc
        raise


# cachestat(2)'s number while the kernel takes it (None: without, or once refused)
_cachestat: list[int | None] = [_SYS_CACHESTAT]


def in_cache(fd: int, offset: int, length: int) -> bool:
    """Whether bytes ``[offset, offset + length)`` of ``fd`` are in the page cache and read
    (a range past the file's end is not), asking without waiting for the disk:
    ``cachestat(2)`` counts the range's pages present (Linux 6.5+; it reads nothing and
    starts no read), then its first and last bytes are read with ``preadv2`` and
    ``RWF_NOWAIT``, which fails for a page still being read from the disk (the kernel puts a
    page in the cache before its read ends, and cachestat counts it). A page between them
    may still be on its way in (read ahead with the others): a sendfile(2) of the range then
    waits for a read already under way, not for one it starts. Without cachestat (or where
    a seccomp filter refuses it) the two bytes alone, whose miss starts the kernel's
    readahead (as ``pread_cached``'s); without ``RWF_NOWAIT`` (the file system cannot tell)
    cachestat alone. Raises Unsupported where neither works, OSError for another failure."""
    if length <= 0:
        return True
    present = _cachestat_covers(fd, offset, length)
    if present is False:
        return False
    probe = memoryview(bytearray(1))
    try:
        return all(preadinto_cached(fd, probe, at) == 1 for at in (offset, offset + length - 1))
    except Unsupported:
        if present is None:
            raise
        return True


def _cachestat_covers(fd: int, offset: int, length: int) -> bool | None:
    """Whether ``cachestat(2)`` counts every page of the range in the cache; None where the
    kernel has no cachestat or refuses it (then never asked again). Raises OSError."""
    number = _cachestat[0]
    if number is None or _libc is None:
        return None
    span = _CachestatRange(offset, length)
    counts = _Cachestat()
    done = _libc.syscall(
        ctypes.c_long(number),
        ctypes.c_long(fd),
        ctypes.byref(span),
        ctypes.byref(counts),
        ctypes.c_long(0),
    )
    if done == 0:
        pages = (offset + length - 1) // _PAGE - offset // _PAGE + 1
        return int(counts.nr_cache) >= pages
    code = ctypes.get_errno()
    if code not in (*_UNSUPPORTED, errno.EPERM):
        raise OSError(code, f"cachestat: {os.strerror(code)}")
    _cachestat[0] = None
    return None
