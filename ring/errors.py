"""Exceptions raised by the placement package.

Every error the package raises on purpose derives from one root, so callers can
catch ``RingError`` alone. Subclasses also derive from the matching builtin, so
code that expects ``LookupError``/``KeyError`` keeps working::

    RingError(Exception)
    ├── EmptyRing(RingError, LookupError)      a lookup on a ring with no members
    └── UnknownMember(RingError, KeyError)     a member id the ring does not hold

Argument validation (bad weight, bad ``n``, duplicate ids) raises the plain
builtins ``ValueError``/``TypeError``: those are programming errors, not ring states.
"""

from __future__ import annotations

__all__ = ["EmptyRing", "RingError", "UnknownMember"]


class RingError(Exception):
    """Root of every error the ring package raises on purpose."""


class EmptyRing(RingError, LookupError):
    """A lookup was made on a ring that has no members."""


class UnknownMember(RingError, KeyError):
    """A member id was looked up that the ring does not hold."""

    def __init__(self, member_id: str) -> None:
        super().__init__(member_id)
        self.member_id = member_id

    def __str__(self) -> str:
        return f"unknown ring member {self.member_id!r}"
