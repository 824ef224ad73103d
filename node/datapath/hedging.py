"""When to send a hedged request: the recent latency of one kind of peer call.

A quorum read asks only as many replicas as it needs; if they have not all answered by the
time most such calls have, it asks one more (a *hedged request*: Dean and Barroso, "The Tail
at Scale", CACM 56(2), 2013, which hedges at the 95th-percentile expected latency; Cassandra's
``speculative_retry`` does the same for its reads). This keeps a hung replica, not yet seen
down, from holding a read for the whole peer timeout, at the cost of at most about 5% more
calls (0.5-1% of 4 KiB and 1 MiB GETs under 16 clients in ``bench/small.py``). A call's
time is as its caller sees it: under load, that includes waiting for the batch it leaves
in (``node.cluster.batching``), which is part of what a slow replica costs a read.
"""

from __future__ import annotations

import collections

WINDOW = 256  # calls remembered
RECOMPUTE_EVERY = 32  # calls between two computations of the percentile
PERCENTILE = 0.95
FLOOR = 0.005  # seconds: never hedge sooner (a loopback call's scheduling noise)
CEILING = 1.0  # seconds: never wait longer than this before hedging
INITIAL = 0.05  # seconds: the delay until RECOMPUTE_EVERY calls have been timed


class HedgeDelay:
    """The delay before a hedged request: the 95th percentile of the last ``WINDOW``
    successful calls' durations (seconds), kept within ``[FLOOR, CEILING]``.

    ``observe`` costs an append; the percentile is recomputed (a sort of ``WINDOW`` floats)
    every ``RECOMPUTE_EVERY`` calls.
    """

    def __init__(self) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self._since = 0
        self.seconds = INITIAL
        self.hedged = 0  # hedged requests sent, for /metrics

    def __repr__(self) -> str:
        return f"HedgeDelay({self.seconds * 1000:.1f} ms, hedged={self.hedged})"

    def observe(self, seconds: float) -> None:
        """Count a successful call that took ``seconds``."""
        self._recent.append(seconds)
        self._since += 1
        if self._since >= RECOMPUTE_EVERY:
            self._since = 0
            ordered = sorted(self._recent)
            at = ordered[min(len(ordered) - 1, int(PERCENTILE * len(ordered)))]
            self.seconds = min(CEILING, max(FLOOR, at))
