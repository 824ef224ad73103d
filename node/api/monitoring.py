"""What orchestrators, load balancers and Prometheus ask a peer: ``/health``, ``/ready``,
``/metrics``.

- ``GET /health``: 200 whenever the process serves (liveness: restart it if this fails).
  ``{"status": "ok", "id", "members"}``. No credentials.
- ``GET /ready``: 200 ``{"status": "ready", ...}`` when the peer should get traffic, else
  503 ``{"status": "not ready", "reasons": [...]}``. No credentials. Ready means, as
  ``not_ready`` decides from facts: *joined* (another member is up, or the peer has no one
  to join: a cluster of one), *ring known* (the ring holds exactly the members known; it is
  rebuilt off the loop shortly after one is learned) and *disk writable* (a small file
  was just written, fsynced and removed where chunks arrive: ``node.disk.data_dir``).
- ``GET /metrics``: Prometheus's text format (``node.api.metrics``), behind any valid access
  key unless ``--metrics-auth public`` (as MinIO: probes open, metrics behind credentials
  unless the operator opens them).

None of them takes a request slot (``node.api.limits``): they must answer under load.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from node.api.access import require_key
from node.api.keys import CONFIG, GOSSIP, MEMBERSHIP, METRICS, WRITE_PROBE
from node.api.paths import HEALTH, READY
from node.api.paths import METRICS as METRICS_PATH
from node.cluster.gossip import Gossip
from node.cluster.membership import Membership


def add_routes(app: web.Application) -> None:
    app.router.add_get(HEALTH, get_health)
    app.router.add_get(READY, get_ready)
    app.router.add_get(METRICS_PATH, get_metrics)


@dataclass(frozen=True)
class ReadyFacts:
    """What readiness is decided from (``not_ready``)."""

    seeded: bool  # the peer has addresses of others to join through
    members: int  # members known, itself included
    others_up: int  # other members up
    ring_current: bool  # the ring holds exactly the members known
    disk_problem: str | None  # why the data directory takes no writes, or None
    refused: int = 0  # addresses that refused this peer's credentials lately


def not_ready(facts: ReadyFacts) -> list[str]:
    """Why a peer with ``facts`` should get no traffic yet ([]: it is ready)."""
    reasons = []
    if facts.others_up == 0 and (facts.seeded or facts.members > 1):
        known = facts.members - 1
        reasons.append(
            f"not joined: none of the {known} other members known is up"
            if known
            else "not joined: no member has answered at the join addresses yet"
        )
        if facts.refused:  # a count: the probe names no address (docs/security.md)
            reasons.append(
                f"credentials refused by {facts.refused} address(es) (named in this peer's "
                "log): its cluster secret is not theirs (another cluster's, or retired by a "
                "rotation)"
            )
    if not facts.ring_current:
        reasons.append("ring not known: it is being rebuilt for members just learned")
    if facts.disk_problem is not None:
        reasons.append(f"disk not writable: {facts.disk_problem}")
    return reasons


def _facts(membership: Membership, gossip: Gossip, disk_problem: str | None) -> ReadyFacts:
    members = membership.members()
    ring_ids = {m.id for m in membership.ring.members}
    return ReadyFacts(
        seeded=gossip.seeded,
        members=len(members),
        others_up=len(membership.up_ids() - {membership.me.id}),
        ring_current=ring_ids == {m.id for m in members},
        disk_problem=disk_problem,
        refused=len(gossip.refused_by()),
    )


async def get_health(request: web.Request) -> web.Response:
    membership = request.app[MEMBERSHIP]
    return web.json_response(
        {"status": "ok", "id": membership.me.id, "members": len(membership.members())}
    )


async def reasons_not_ready(app: web.Application) -> list[str]:
    """Why the peer of ``app`` should get no traffic yet ([]: it is ready), as ``/ready``
    says."""
    problem = await app[WRITE_PROBE].problem()
    return not_ready(_facts(app[MEMBERSHIP], app[GOSSIP], problem))


async def get_ready(request: web.Request) -> web.Response:
    membership = request.app[MEMBERSHIP]
    problem = await request.app[WRITE_PROBE].problem()
    facts = _facts(membership, request.app[GOSSIP], problem)
    reasons = not_ready(facts)
    body: dict[str, object] = {
        "status": "not ready" if reasons else "ready",
        "id": membership.me.id,
        "members": facts.members,
        "members_up": facts.others_up + 1,
    }
    if reasons:
        body["reasons"] = reasons
    return web.json_response(body, status=503 if reasons else 200)


async def get_metrics(request: web.Request) -> web.StreamResponse:
    if request.app[CONFIG].metrics_auth != "public":
        require_key(request)
    return await request.app[METRICS].handler(request)
