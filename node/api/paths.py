"""Public paths that several layers treat alike, named once.

Probes (``/health``, ``/ready``) answer without an access key; they and ``/metrics``
(``node.api.monitoring``) take no request slot, so they answer under load, and are logged
at DEBUG, so scrapes and probes do not drown the access log.
"""

from __future__ import annotations

HEALTH = "/health"
READY = "/ready"
METRICS = "/metrics"
PROBES = frozenset({HEALTH, READY})  # open: no access key
MONITORING = PROBES | {METRICS}  # no request slot, logged at DEBUG
