"""Zone labels: a peer's failure domain (``--zone``), as placement spreads chunks over them.

A zone is 1 to 64 letters, digits, ``.``, ``_``, ``:``, ``~``, ``[``, ``]`` or ``-`` (a host
name or address fits). A peer given none is in the zone named by its URL's host, so peers on one
machine share a zone and peers on different machines do not, without any setting.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

_ZONE = re.compile(r"[A-Za-z0-9._:~\[\]-]{1,64}")


def check_zone(zone: str) -> str:
    """Return ``zone`` if it is a valid label; raise ValueError saying why otherwise."""
    if _ZONE.fullmatch(zone) is None:
        raise ValueError(
            f"a zone is 1 to 64 letters, digits, '.', '_', ':', '~', '[', ']' or '-', "
            f"not {zone[:80]!r}"
        )
    return zone


def default_zone(url: str) -> str:
    """The zone of a peer given none: its URL's host (``http://10.0.0.5:8000`` -> ``10.0.0.5``),
    lower case. A host that is no valid label (longer than 64 characters, as Kubernetes
    names can be) is named by its first 40 characters and a hash, so every URL has one."""
    host = urlsplit(url).netloc.rpartition(":")[0].lower() or "none"
    if _ZONE.fullmatch(host) is None:
        digest = hashlib.blake2b(host.encode(), digest_size=8).hexdigest()
        host = f"{re.sub(r'[^A-Za-z0-9._-]', '-', host[:40])}~{digest}"
    return host
