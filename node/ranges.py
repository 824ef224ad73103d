"""HTTP ``Range: bytes=...`` parsing (RFC 9110 section 14), pure and single-range.

Multi-range requests are answered with the whole body (the RFC allows ignoring Range).
"""

from __future__ import annotations

from node.errors import InvalidRange


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the half-open byte range ``(start, end)`` a Range header asks for.

    ``None`` means "send the whole file" (no header, another unit, or several ranges).
    Raises InvalidRange when the range cannot be satisfied (416) or is malformed.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        raise InvalidRange(f"malformed range {header!r}", size)
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or size == 0:
                raise InvalidRange(f"range {header!r} not satisfiable for {size} bytes", size)
            return max(0, size - suffix), size
        start = int(first)
        end = size - 1 if last == "" else min(int(last), size - 1)
    except ValueError:
        raise InvalidRange(f"malformed range {header!r}", size) from None
    if start < 0 or start >= size or end < start:
        raise InvalidRange(f"range {header!r} not satisfiable for {size} bytes", size)
    return start, end + 1
