"""``ringstore peer``'s options come from ``PeerConfig``: names, defaults and units agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from node.config import PeerConfig
from node.process.cli import config_from_options, peer, up


def parse(command: click.Command, *args: str) -> dict[str, Any]:
    with command.make_context(command.name or "", list(args)) as context:
        return dict(context.params)


PROCESS_OPTIONS = {"log_level", "log_format", "event_loop"}  # the process's, not the config's


def peer_config(*args: str) -> PeerConfig:
    params = parse(peer, "--data-dir", "d", *args)
    for name in PROCESS_OPTIONS:
        params.pop(name)
    return config_from_options(params)


def test_no_options_give_exactly_the_config_defaults() -> None:
    assert peer_config() == PeerConfig(data_dir=Path("d"))


def test_every_option_field_is_an_option_and_nothing_else_is() -> None:
    with_option = {f.name for f in dataclasses.fields(PeerConfig) if "option" in f.metadata}
    params = {p.name for p in peer.params} - PROCESS_OPTIONS
    assert params == with_option
    assert {"k", "write_quorum", "manifest_replicas", "vnodes"}.isdisjoint(params)


@pytest.mark.parametrize(
    ("args", "field", "value"),
    [
        (("--rebalance-rate", "7"), "rebalance_rate", 7e6),
        (("--scrub-rate", "0.5"), "scrub_rate", 0.5e6),
        (("--parity", "1"), "m", 1),
        (("--join", "http://a:1", "--join", "http://b:2"), "join", ("http://a:1", "http://b:2")),
        (("--max-bytes", "1000"), "max_bytes", 1000),
        (("--discovery", "none"), "discovery", "none"),
        (("--interface", "127.0.0.2"), "interface", "127.0.0.2"),
        (("--s3-port", "9000", "--s3-reuse-port"), "s3_reuse_port", True),
        (("--s3-port", "9000", "--no-s3-reuse-port"), "s3_reuse_port", False),
        (("--shared-port", "10000"), "shared_port", 10000),
    ],
)
def test_options_reach_their_field_in_its_unit(
    args: tuple[str, ...], field: str, value: object
) -> None:
    assert getattr(peer_config(*args), field) == value


@pytest.mark.parametrize(
    "args",
    [
        ("--port", "0"),
        ("--weight", "1001"),
        ("--parity", "11"),
        ("--discovery", "bonjour"),
        ("--block-size", "0"),
        ("--block-size", "511"),
        ("--block-size", str((64 << 20) + 1)),
    ],
)
def test_out_of_range_options_are_refused(args: tuple[str, ...]) -> None:
    with pytest.raises(click.BadParameter):
        peer_config(*args)


@pytest.mark.parametrize("args", [(), ("--s3-port", "0")])
def test_a_shared_s3_port_needs_a_given_s3_port(args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="--s3-port"):
        peer_config(*args, "--s3-reuse-port")


def test_the_s3_port_is_not_the_files_port() -> None:
    """Refused at once, not left to fail binding with 'another process holds it'."""
    with pytest.raises(ValueError, match="--s3-port must differ from --port"):
        peer_config("--port", "18311", "--s3-port", "18311", "--s3-reuse-port")


@pytest.mark.parametrize(
    "args",
    [
        ("--port", "18311", "--shared-port", "18311"),
        ("--s3-port", "9000", "--shared-port", "9000"),
    ],
)
def test_the_shared_port_is_neither_the_peer_port_nor_s3s(args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="--shared-port must differ"):
        peer_config(*args)


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:9000"), ("::1", "http://[::1]:9000")],
)
def test_a_peer_url_brackets_an_ipv6_host(host: str, url: str) -> None:
    config = PeerConfig(data_dir=Path("d"), host=host, port=9000)
    assert config.url == url
    assert config.url_at(9000) == url


def test_up_refuses_a_shared_s3_port_without_s3(tmp_path: Path) -> None:
    result = CliRunner().invoke(up, ["--data-dir", str(tmp_path), "--no-s3", "--s3-shared"])
    assert result.exit_code == 2, result.output
    assert "--s3-shared needs S3" in result.output
    assert not list(tmp_path.iterdir())  # refused before anything was made


def test_up_refuses_a_shared_files_port_past_the_last_port(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        up, ["--data-dir", str(tmp_path), "--port", "64000", "--files-shared"]
    )
    assert result.exit_code == 2, result.output
    assert "past 65535" in result.output
    assert not list(tmp_path.iterdir())


def test_up_shares_the_peer_defaults() -> None:
    params = parse(up)
    defaults = PeerConfig(data_dir=Path("d"))
    assert params["discovery"] == defaults.discovery
    assert params["host"] == defaults.host
    assert params["port"] == defaults.port


@pytest.mark.parametrize(
    ("options", "said"),
    [
        # Once peer 6 failed on its own (a usage error of `ringstore peer`) after 0-5 started.
        (["--port", "65533", "-n", "7"], "peer 6 would serve on --port + 6 (65539): past 65535"),
        # Once every peer failed: the shared S3 port was dropped, --s3-reuse-port kept.
        (["--port", "64600", "--s3-shared"], "--s3-shared serves on --port + 1000 (65600)"),
    ],
)
def test_up_refuses_ports_past_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], said: str
) -> None:
    def started(*_: object, **__: object) -> None:
        raise AssertionError("a cluster was started")

    monkeypatch.setattr("node.process.supervisor.Supervisor", started)
    result = CliRunner().invoke(up, ["--data-dir", str(tmp_path), *options])
    assert result.exit_code == 2, result.output
    assert said in result.output
    assert not list(tmp_path.iterdir())
