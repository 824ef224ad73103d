"""mDNS discovery: announce this peer and learn where the other peers of its cluster are.

Discovery is only an address book. It announces ``<peer-id>.<service_type>`` with the peer's
id, cluster id (never the secret), weight and URL in TXT, browses the same type, and hands
the URL of every peer of the same cluster it resolves to gossip as a seed. Nothing heard
over mDNS makes a member: gossip then calls that address, and only a peer that signs its
answer with the cluster secret is learned.
Liveness never comes from mDNS (a killed peer stays in mDNS caches for ~19 minutes), so
removals are ignored and members are never dropped.

Invariants:
- mDNS runs on exactly one IPv4 address, ``config.zeroconf_address``; never on all interfaces
  (``InterfaceChoice.Default``/``All`` would send queries out of the machine's real network).
- Everything runs on the caller's event loop (the zeroconf instance is created inside it), so
  no thread is started; ``stop`` awaits the goodbye packets and every task it started.
- If multicast cannot work, zeroconf often only logs a warning and hears nothing, not even
  itself. A background self-check waits to see our own announcement and, failing that, warns
  that the peer continues with its ``--join`` seeds only. Discovery never stops a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import uuid
from collections.abc import Callable

from zeroconf import DNSQuestionType, Error, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from node.cluster.protocol import check_member_url
from node.config import PeerConfig
from node.model.zones import check_zone, default_zone
from node.waiting import within
from ring import Member

log = logging.getLogger(__name__)

# Seconds to wait, once our announcement is out, to hear it back before warning.
SELF_CHECK_TIMEOUT = 5.0
# Milliseconds one resolution of a found service may take; a few tries per announcement.
RESOLVE_TIMEOUT_MS = 3000
RESOLVE_ATTEMPTS = 3


class Discovery:
    """Announces this peer over mDNS and tells ``found`` the URLs of its cluster's peers.

    ``state`` is one of: ``stopped``, ``announcing`` (probing and announcing our name),
    ``working`` (we heard our own announcement), ``not working`` (we did not, or zeroconf
    could not start; the peer runs on seeds only).
    """

    def __init__(
        self, config: PeerConfig, cluster_id: str, me: Member, found: Callable[[str], None]
    ) -> None:
        self._config = config
        self._cluster = cluster_id
        self._found = found
        self._me = me
        self._type = config.service_type
        self._name = f"{self._me.id}.{config.service_type}"
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._announce: asyncio.Task[None] | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._heard_self = asyncio.Event()
        self.state = "stopped"
        self.learned: set[str] = set()  # ids of peers of our cluster found here
        self.ignored: set[str] = set()  # service names of other clusters or unreadable records
        self._foreign: set[str | None] = set()  # ids of other clusters heard

    def __repr__(self) -> str:
        return (
            f"Discovery({self._config.zeroconf_address}, {self._type}, "
            f"cluster={self._cluster}, state={self.state!r}, "
            f"learned={len(self.learned)}, ignored={len(self.ignored)}, "
            f"resolving={len(self._resolving)})"
        )

    @property
    def address(self) -> str:
        return self._config.zeroconf_address

    async def start(self) -> None:
        """Open mDNS on ``zeroconf_address``, browse, and announce in the background.

        Never raises for a network problem: it logs a warning and leaves the peer on seeds.
        """
        if self.state != "stopped":
            raise RuntimeError(f"{self} is already started")
        self._heard_self.clear()
        try:
            _check_address(self.address)
            info = self._service_info()
            self._azc = AsyncZeroconf(interfaces=[self.address], ip_version=IPVersion.V4Only)
            # QM questions: on a shared loopback a unicast (QU) reply to port 5353 reaches
            # only one of the sockets sharing it, which need not be the one that asked.
            self._browser = AsyncServiceBrowser(
                self._azc.zeroconf,
                self._type,
                handlers=[self._on_change],
                question_type=DNSQuestionType.QM,
            )
        except (OSError, ValueError, Error) as exc:
            self._not_working(f"{type(exc).__name__}: {exc}")
            await self._close()
            return
        self.state = "announcing"
        self._announce = asyncio.ensure_future(self._announce_and_check(info))

    async def stop(self) -> None:
        """Cancel our tasks, say goodbye (awaited, so others hear it) and close the sockets."""
        tasks = [t for t in (self._announce, *self._resolving.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):  # a bug: report it, but still close the sockets
                log.error("mDNS task failed", exc_info=result)
        self._announce = None
        self._resolving.clear()
        await self._close()
        self.state = "stopped"

    async def _close(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            azc, self._azc = self._azc, None
            await azc.async_unregister_all_services()
            await azc.async_close()

    def _service_info(self) -> AsyncServiceInfo:
        config = self._config
        return AsyncServiceInfo(
            self._type,
            self._name,
            port=config.port,
            properties={
                "id": self._me.id,
                "cluster": self._cluster,
                "weight": str(self._me.weight),
                "url": self._me.url,
                "zone": self._me.zone,
            },
            server=f"ringstore-{self._me.id}.local.",
            addresses=[_announced_address(config).packed],
        )

    async def _announce_and_check(self, info: AsyncServiceInfo) -> None:
        assert self._azc is not None
        try:
            # The first await probes for name conflicts (~1.2 s), the second sends announcements.
            await (await self._azc.async_register_service(info))
        except Error as exc:  # e.g. NonUniqueNameException: a copied data directory
            self._not_working(f"cannot announce {self._name}: {type(exc).__name__}: {exc}")
            return
        try:
            await within(self._heard_self.wait(), SELF_CHECK_TIMEOUT)
        except asyncio.TimeoutError:
            self._not_working(f"did not hear our own announcement within {SELF_CHECK_TIMEOUT}s")
            return
        self.state = "working"
        log.info("mDNS discovery working on %s (%s)", self.address, self._type)

    def _not_working(self, reason: str) -> None:
        self.state = "not working"
        log.warning(
            "mDNS discovery is not working on %s; continuing with --join seeds only (%s)",
            self.address,
            reason,
        )

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Called by the browser on our loop; must not block.
        if state_change is ServiceStateChange.Removed:
            return  # liveness is HTTP's job; a removed peer stays a member
        if name == self._name:
            self._heard_self.set()
            return
        if name in self._resolving or name in self.ignored:
            return
        task = asyncio.ensure_future(self._resolve(name))
        self._resolving[name] = task
        task.add_done_callback(functools.partial(self._resolved, name))

    def _resolved(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("mDNS resolution failed", exc_info=task.exception())

    async def _resolve(self, name: str) -> None:
        azc = self._azc
        if azc is None:
            return
        info = AsyncServiceInfo(self._type, name)
        for _ in range(RESOLVE_ATTEMPTS):
            if await info.async_request(
                azc.zeroconf, RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QM
            ):
                break
        else:
            log.info("mDNS: could not resolve %s; waiting for its next announcement", name)
            return
        member = self._member(name, info)
        if member is not None:
            if member.id not in self.learned:
                log.info("mDNS found %s at %s", member.id, member.url)
            self.learned.add(member.id)
            self._found(member.url)

    def _member(self, name: str, info: AsyncServiceInfo) -> Member | None:
        """The member a resolved service describes, or None if it is not one of ours."""
        props = info.decoded_properties
        cluster = props.get("cluster")
        if cluster != self._cluster:
            self.ignored.add(name)
            if cluster not in self._foreign:  # once per cluster: a peer meant for it may be us
                self._foreign.add(cluster)
                log.warning(
                    "mDNS: peers of another cluster (%r) are on this network; this peer is of "
                    "cluster %s (to join theirs instead: --join-token, see docs/security.md)",
                    cluster,
                    self._cluster,
                )
            return None
        try:
            member_id = str(uuid.UUID(props.get("id") or ""))
            weight = int(props.get("weight") or "")
            url = check_member_url((props.get("url") or _url_from(info)).rstrip("/"))
            zone = props.get("zone")
            member = Member(member_id, url, weight, check_zone(zone) if zone else default_zone(url))
        except ValueError as exc:
            self.ignored.add(name)
            log.warning("mDNS: ignoring %s, unreadable record %s (%s)", name, props, exc)
            return None
        if member_id == self._me.id:
            return None
        return member


def _check_address(address: str) -> None:
    """Raises ValueError unless ``address`` is one IPv4 address, OSError unless it is ours.

    ``0.0.0.0`` would let the kernel pick the default-route interface: the real network. An
    address no interface has makes zeroconf raise ENODEV and leak its listening socket, so it
    is caught here first (binding is instant: no packet is sent).
    """
    ip = ipaddress.ip_address(address)
    if not isinstance(ip, ipaddress.IPv4Address) or ip.is_unspecified:
        raise ValueError(f"mDNS needs one specific IPv4 address (--interface), not {address}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))


def _announced_address(config: PeerConfig) -> ipaddress.IPv4Address:
    """The address others reach this peer on: its serving host if specific, else mDNS's."""
    with contextlib.suppress(ValueError):
        host = ipaddress.ip_address(config.host)
        if isinstance(host, ipaddress.IPv4Address) and not host.is_unspecified:
            return host
    return ipaddress.IPv4Address(config.zeroconf_address)


def _url_from(info: AsyncServiceInfo) -> str:
    addresses = info.parsed_addresses(IPVersion.V4Only)
    if not addresses or not info.port:
        raise ValueError("no url, address or port")
    return f"http://{addresses[0]}:{info.port}"
