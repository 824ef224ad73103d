"""Which secrets a starting peer takes from a secret file: the steps of a rotation, and never
a secret a rotation retired (docs/security.md, "Rotating the secret")."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import PeerConfig
from node.disk.data_dir import save_identity
from node.errors import StartRefused
from node.model.identity import ClusterIdentity
from node.process.identity import cluster_identity


def start_with(data_dir: Path, secret_file: Path, identity: ClusterIdentity) -> ClusterIdentity:
    """Start (as far as the identity goes) with ``identity`` in ``secret_file``."""
    save_identity(secret_file, identity)
    taken, _ = cluster_identity(PeerConfig(data_dir=data_dir, cluster_secret_file=secret_file))
    return taken


def test_no_secret_a_rotation_retired_comes_back_from_an_older_file(tmp_path: Path) -> None:
    """An attack restarted a peer with the step-1 file after step 3: the file held the
    secret the peer signed with, so it was taken; the peer signed with the dropped secret
    again and admitted a peer holding a token from before the rotation (a member for good).
    Also the step-2 file (which quietly made the dropped secret accepted again), and the
    step-1 file after step 2 (which made the demoted one sign)."""
    data, file = tmp_path / "peer", tmp_path / "secret.json"
    data.mkdir()
    first = ClusterIdentity.create()
    cluster, old = first.cluster_id, first.signing_secret
    new = ClusterIdentity.create().signing_secret
    step1, step2, step3 = (
        ClusterIdentity(cluster, [old, new]),
        ClusterIdentity(cluster, [new, old]),
        ClusterIdentity(cluster, [new]),
    )
    assert start_with(data, file, first) == first
    for step in (step1, step2, step2, step3):  # (a step repeated is taken again)
        assert start_with(data, file, step) == step
    for older in (step1, step2, first):
        with pytest.raises(StartRefused, match="old secret file"):
            start_with(data, file, older)
    assert start_with(data, file, step3) == step3

    again = tmp_path / "again"
    again.mkdir()
    for step in (first, step1, step2):
        start_with(again, file, step)
    with pytest.raises(StartRefused, match="stopped signing with"):
        start_with(again, file, step1)
    assert start_with(again, file, step3) == step3
