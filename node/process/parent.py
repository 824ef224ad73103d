"""A peer that ``ringstore up`` started stops when ``ringstore up`` is gone, however it ended.

``ringstore up`` stops its peers in order on Ctrl-C or SIGTERM; killed outright (SIGKILL, the
out-of-memory killer), it stopped none, and its peers served on, holding their ports and
data directories: the next ``ringstore up`` on them failed until someone found and killed
them by hand. It names itself to each peer it starts (``STOP_WITH_PARENT``, its pid, in the
peer's environment), and the peer asks Linux for a SIGTERM when its parent ends
(``prctl(PR_SET_PDEATHSIG)``, prctl(2)): the SIGTERM it stops on cleanly. A parent already
gone when the peer asks is seen as the peer's parent pid no longer being the one named. A
peer started any other way (by hand, by a service manager) is not tied to its parent.
Elsewhere than Linux there is no such call: the peer logs that it will outlive a killed
``ringstore up``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

STOP_WITH_PARENT = "RINGSTORE_STOP_WITH_PARENT"  # the parent's pid, for a peer to stop with it
PR_SET_PDEATHSIG = 1  # prctl(2)'s option (linux/prctl.h)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_prctl = getattr(_libc, "prctl", None)
if _prctl is not None:  # int prctl(int option, unsigned long arg2, ...): made explicit
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _prctl.restype = ctypes.c_int


def environment_for_tied_child() -> dict[str, str]:
    """The environment for a child that is to stop when this process is gone. Linux ties a
    child to the *thread* that started it: start such children from a thread that lives as
    long as this process (the event loop's), never from a worker thread."""
    return {**os.environ, STOP_WITH_PARENT: str(os.getpid())}


def named_parent() -> int | None:
    """The pid of the process this one is to stop with, taken out of the environment (so
    that nothing this process starts inherits it); None where it was started otherwise.
    Call it before any thread starts: changing the environment is not thread-safe."""
    named = os.environ.pop(STOP_WITH_PARENT, None)
    if not named:
        return None
    try:
        return int(named)
    except ValueError:
        log.warning("%s=%r is no pid: this peer is not tied to its parent", STOP_WITH_PARENT, named)
        return None


def stop_with_parent(parent: int, stop: Callable[[], None]) -> bool:
    """Have Linux send this process a SIGTERM when its parent ends (``prctl(2)``,
    ``PR_SET_PDEATHSIG``), and call ``stop`` at once if the parent is no longer ``parent``
    (it ended before the call: no signal will come). True when tied (``stop`` may have been
    called); False where the system cannot tie it (logged). Raises nothing."""
    if _prctl is None:  # (not Linux: as the module says)
        log.info("this peer will outlive its parent (pid %d) if that is killed", parent)
        return False
    if _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        why = os.strerror(ctypes.get_errno())
        log.warning("this peer will outlive its parent (pid %d) if that is killed: %s", parent, why)
        return False
    if os.getppid() != parent:
        log.warning("the process that started this peer (pid %d) is gone: stopping", parent)
        stop()
    else:
        log.debug("tied to its parent (pid %d): a SIGTERM comes when that ends", parent)
    return True
