"""Capacity: --weight auto from the peer's capacity, and when a member counts as full."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from node.cluster.membership import crowded, is_full
from node.cluster.placement import place_roomy
from node.cluster.protocol import PeerFigures
from node.config import AUTO_WEIGHT, WEIGHT_UNIT, auto_weight
from node.process.cli import config_from_options, config_options
from ring import Member, Ring


def test_auto_weight_is_one_per_tib_within_the_weight_range() -> None:
    assert auto_weight(0) == 1
    assert auto_weight(WEIGHT_UNIT // 3) == 1
    assert auto_weight(4 * WEIGHT_UNIT) == 4
    assert auto_weight(16 * WEIGHT_UNIT + WEIGHT_UNIT // 3) == 16
    assert auto_weight(10**20) == 1000


@pytest.mark.parametrize(("given", "weight"), [("auto", AUTO_WEIGHT), ("3", 3)])
def test_weight_reads_auto_or_a_number(tmp_path: Path, given: str, weight: int) -> None:

    seen = {}

    @click.command()
    @config_options
    def peer(**values: object) -> None:
        seen["config"] = config_from_options(values)

    result = CliRunner().invoke(peer, ["--data-dir", str(tmp_path), "--weight", given])
    assert result.exit_code == 0, result.output
    assert seen["config"].weight == weight
    refused = CliRunner().invoke(peer, ["--data-dir", str(tmp_path), "--weight", "1001"])
    assert refused.exit_code == 2
    assert "1001" in refused.output


def test_a_member_is_full_past_98_percent_of_its_cap_or_of_its_disk() -> None:
    assert not is_full(PeerFigures())
    assert is_full(PeerFigures(used_bytes=98, max_bytes=100))
    assert not is_full(PeerFigures(used_bytes=97, max_bytes=100))
    assert is_full(PeerFigures(disk_total_bytes=1000, disk_free_bytes=19))
    assert not is_full(PeerFigures(disk_total_bytes=1000, disk_free_bytes=21))


def test_crowded_members_are_full_or_past_the_cluster_fill_most_filled_first() -> None:
    figures = {
        "a": PeerFigures(used_bytes=50, max_bytes=100),  # the cluster: 150 of 400, 37.5%
        "b": PeerFigures(used_bytes=39, max_bytes=100),  # past 37.5% + the 1-point slack
        "c": PeerFigures(used_bytes=38, max_bytes=100),  # within it
        "d": PeerFigures(used_bytes=23, max_bytes=100),
    }
    assert crowded(figures) == ["a", "b"]
    assert crowded(figures, slack=0.2) == []
    disks = {  # no --max-bytes: the disk's fill counts; full ones (98%) come first
        "e": PeerFigures(disk_total_bytes=1000, disk_free_bytes=10),
        "f": PeerFigures(disk_total_bytes=1000, disk_free_bytes=100),
        "g": PeerFigures(disk_total_bytes=1000, disk_free_bytes=900),
    }
    assert crowded(disks) == ["e", "f"]
    assert crowded({"h": PeerFigures(), "i": PeerFigures()}) == []  # nothing reported yet


def test_a_write_passes_over_as_many_crowded_members_as_leave_a_full_set() -> None:
    ring = Ring([Member(f"m{i}", "http://x") for i in range(9)], 64)
    plain = ring.placement("key", 7)
    assert place_roomy(ring, "key", 7, (), []).members == plain
    crowded_ones = [plain[0], plain[1], plain[2]]  # most crowded first
    roomy = place_roomy(ring, "key", 7, (), crowded_ones)
    # 9 members, 7 needed: the two most crowded are passed over, the least asked again
    assert plain[0] not in roomy.members
    assert plain[1] not in roomy.members
    assert plain[2] in roomy.members
    assert len(roomy.members) == 7
    assert place_roomy(ring, "key", 7, {plain[3], plain[4]}, crowded_ones).members == (
        ring.placement("key", 7, {plain[3], plain[4]})
    )


def test_disks_1_2_4_fill_within_5_points_when_writes_pass_over_crowded_members() -> None:
    """21 members of 1, 2 and 4 TiB (weights 1, 2, 4) take files of 7 chunks of 1 GiB as a
    PUT places them, to 75% of the cluster: fills end within 5 points with crowded members
    passed over, and more than 15 apart with the weights alone (bench/capacity.py)."""
    ids = [f"peer-{i:02}" for i in range(21)]
    capacity = {m: (1, 2, 4)[i % 3] * WEIGHT_UNIT for i, m in enumerate(ids)}
    ring = Ring([Member(m, "http://x", capacity[m] // WEIGHT_UNIT) for m in ids], 256)

    def spread(bounded: bool) -> float:
        used = dict.fromkeys(ids, 0)
        for number in range(sum(capacity.values()) * 3 // 4 // (7 << 30)):
            figures = {m: PeerFigures(used_bytes=used[m], max_bytes=capacity[m]) for m in ids}
            passed_over = crowded(figures) if bounded else []
            for holder in place_roomy(ring, f"file-{number}", 7, (), passed_over).members:
                used[holder] += 1 << 30
        fills = [100 * used[m] / capacity[m] for m in ids]
        return max(fills) - min(fills)

    assert spread(bounded=True) <= 5
    assert spread(bounded=False) > 15
