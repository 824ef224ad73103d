"""Which cluster a starting peer joins (node.process.identity): every row of its table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.config import PeerConfig
from node.disk.data_dir import load_identity, load_peer_id, save_identity
from node.errors import StartRefused
from node.model.identity import ClusterIdentity, join_token, parse_join_token
from node.process.identity import cluster_identity, token_for


def config(data_dir: Path, **options: Any) -> PeerConfig:
    return PeerConfig(data_dir=data_dir, **options)


def test_a_fresh_peer_alone_makes_a_new_private_cluster(tmp_path: Path) -> None:
    identity, seeds = cluster_identity(config(tmp_path))
    assert seeds == []
    assert load_identity(tmp_path) == identity
    assert (tmp_path / "cluster-secret.json").stat().st_mode & 0o777 == 0o600
    again, _ = cluster_identity(config(tmp_path))  # a restart keeps it
    assert again == identity


def test_join_alone_does_not_make_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(StartRefused, match="does not admit"):
        cluster_identity(config(tmp_path, join=("http://127.0.0.1:8000",)))
    assert load_identity(tmp_path) is None


def test_a_token_joins_and_its_urls_become_seeds(tmp_path: Path) -> None:
    theirs = ClusterIdentity.create()
    token = join_token(theirs, ["http://127.0.0.1:8001"])
    identity, seeds = cluster_identity(config(tmp_path, join_token=token))
    assert (identity, seeds) == (theirs, ["http://127.0.0.1:8001"])
    assert load_identity(tmp_path) == theirs
    file = tmp_path / "token"
    file.write_text(token + "\n")
    assert cluster_identity(config(tmp_path, join_token_file=file))[0] == theirs


def test_a_secret_file_joins_and_a_new_one_rotates(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.json"
    first = ClusterIdentity.create()
    save_identity(secret_file, first)
    data = tmp_path / "data"
    data.mkdir()
    assert cluster_identity(config(data, cluster_secret_file=secret_file))[0] == first
    rotated = ClusterIdentity(first.cluster_id, [bytes(32), first.signing_secret])
    save_identity(secret_file, rotated)
    assert cluster_identity(config(data, cluster_secret_file=secret_file))[0] == rotated
    assert load_identity(data) == rotated


def test_a_data_directory_keeps_its_cluster(tmp_path: Path) -> None:
    ours, _ = cluster_identity(config(tmp_path))
    other = join_token(ClusterIdentity.create(), ["http://127.0.0.1:8001"])
    with pytest.raises(StartRefused, match=f"belongs to cluster {ours.cluster_id}"):
        cluster_identity(config(tmp_path, join_token=other))
    assert load_identity(tmp_path) == ours


def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.json"
    save_identity(secret_file, ClusterIdentity.create())
    secret_file.chmod(0o644)
    with pytest.raises(StartRefused, match="readable by others"):
        cluster_identity(config(tmp_path / "data", cluster_secret_file=secret_file))


def test_an_old_data_directory_is_told_how_to_get_an_identity(tmp_path: Path) -> None:
    load_peer_id(tmp_path)  # what every peer of the previous release left behind
    with pytest.raises(StartRefused, match="ringstore token --create"):
        cluster_identity(config(tmp_path))
    token, identity = token_for(tmp_path, ["http://127.0.0.1:8000"], create=True)
    assert parse_join_token(token) == (identity, ["http://127.0.0.1:8000"])
    assert cluster_identity(config(tmp_path))[0] == identity
    with pytest.raises(StartRefused, match="already belongs"):
        token_for(tmp_path, [], create=True)


def test_a_token_needs_an_identity_and_an_address(tmp_path: Path) -> None:
    with pytest.raises(StartRefused, match="holds no cluster secret"):
        token_for(tmp_path, [], create=False)
    cluster_identity(config(tmp_path))
    with pytest.raises(StartRefused, match="--url"):
        token_for(tmp_path, [], create=False)


def test_a_stale_token_or_secret_file_cannot_revive_a_retired_secret(tmp_path: Path) -> None:
    old = ClusterIdentity.create()
    token = join_token(old, ["http://127.0.0.1:8001"])
    assert cluster_identity(config(tmp_path, join_token=token))[0] == old
    # The three rotation steps, through secret files.
    new = ClusterIdentity.create().signing_secret
    steps = [[old.signing_secret, new], [new, old.signing_secret], [new]]
    secret_file = tmp_path / "secret.json"
    for secrets in steps:
        save_identity(secret_file, ClusterIdentity(old.cluster_id, secrets))
        cluster_identity(config(tmp_path, cluster_secret_file=secret_file))
    rotated = load_identity(tmp_path)
    assert rotated is not None
    assert rotated.secrets == (new,)
    # The first token, still in a unit file's environment: not used, the new secret stays.
    assert cluster_identity(config(tmp_path, join_token=token))[0] == rotated
    # The first secret file: refused.
    save_identity(secret_file, old)
    with pytest.raises(StartRefused, match="retired secret"):
        cluster_identity(config(tmp_path, cluster_secret_file=secret_file))
    assert load_identity(tmp_path) == rotated
