"""Zone labels on the wire: a peer's default zone is its URL's host, carried only when given."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from node.cluster.protocol import MemberRecord
from node.config import PeerConfig
from node.model.zones import check_zone, default_zone
from ring import Member

PEER = "0b9d2c52-3c5b-4bd5-9a47-9d1cb1d1b0f1"


def test_the_default_zone_is_the_urls_host() -> None:
    long_host = "ringstore-0.ringstore-headless.storage-prod.svc.cluster.local.example"
    zone = default_zone(f"http://{long_host}:8000")  # past 64 characters: still a zone
    assert check_zone(zone) == zone
    assert zone.startswith("ringstore-0.ringstore-headless")
    assert zone != default_zone(f"http://{long_host}x:8000")
    assert default_zone("http://10.0.0.5:8000") == "10.0.0.5"
    assert default_zone("https://Peer-3.Example.org:443") == "peer-3.example.org"
    assert default_zone("http://[::1]:9000") == "[::1]"


@pytest.mark.parametrize("zone", ["a" * 65, "rack 1", "r/1", "zone\n"])
def test_a_zone_label_is_checked(zone: str) -> None:
    with pytest.raises(ValueError, match="a zone is"):
        check_zone(zone)
    with pytest.raises(ValueError, match="a zone is"):
        MemberRecord(PEER, "http://127.0.0.1:8000", 1, zone).member()


def test_a_member_record_carries_a_zone_only_when_it_is_not_the_hosts() -> None:
    host = Member(PEER, "http://10.0.0.5:8000", 1, "10.0.0.5")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(MemberRecord.of(host))) == {
        "id": PEER,
        "url": "http://10.0.0.5:8000",
        "weight": 1,
    }
    assert MemberRecord(PEER, "http://10.0.0.5:8000", 1).member() == host
    rack = Member(PEER, "http://10.0.0.5:8000", 1, "rack-2")
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(MemberRecord.of(rack)), type=MemberRecord)
    assert again.member() == rack


def test_a_peer_is_not_started_with_a_bad_zone(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a zone is"):
        PeerConfig(tmp_path, zone="rack 1")
    assert PeerConfig(tmp_path, zone="rack-1").zone == "rack-1"
    with pytest.raises(ValueError, match="a zone is"):
        check_zone("")
