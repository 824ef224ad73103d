"""Capacity: --weight auto from the peer's capacity, and when a member counts as full."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from node.cluster.membership import is_full
from node.cluster.protocol import PeerFigures
from node.config import AUTO_WEIGHT, WEIGHT_UNIT, auto_weight
from node.process.cli import config_from_options, config_options


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
