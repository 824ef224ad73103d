"""Readiness decided from facts, request ids, and the two log formats."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.api.metrics import Metrics
from node.api.monitoring import ReadyFacts, not_ready
from node.disk.data_dir import WriteProbe
from node.process.cli import main
from node.process.logs import ContextFilter, JsonFormatter, TextFormatter, formatter
from node.process.supervisor import Supervisor
from node.tracing import PEER, REQUEST_ID, new_request_id, sane_request_id, start_for_peer

READY = ReadyFacts(seeded=True, members=3, others_up=2, ring_current=True, disk_problem=None)


@pytest.mark.parametrize(
    ("facts", "reasons"),
    [
        (READY, []),
        (ReadyFacts(False, 1, 0, True, None), []),  # a cluster of one
        (
            ReadyFacts(True, 1, 0, True, None),
            ["not joined: no member has answered at the join addresses yet"],
        ),
        (
            ReadyFacts(False, 3, 0, True, None),
            ["not joined: none of the 2 other members known is up"],
        ),
        (  # its secret was rotated away while it was down: the members answer 401
            ReadyFacts(False, 3, 0, True, None, refused=2),
            [
                "not joined: none of the 2 other members known is up",
                "credentials refused by 2 address(es) (named in this peer's log): its cluster "
                "secret is not theirs (another cluster's, or retired by a rotation)",
            ],
        ),
        (ReadyFacts(True, 3, 1, True, None, refused=1), []),  # joined: a rotation under way
        (
            ReadyFacts(True, 3, 1, False, "read-only"),
            [
                "ring not known: it is being rebuilt for members just learned",
                "disk not writable: read-only",
            ],
        ),
    ],
)
def test_readiness_from_facts(facts: ReadyFacts, reasons: list[str]) -> None:
    assert not_ready(facts) == reasons


async def test_the_write_probe_reports_a_directory_that_takes_no_writes(tmp_path: Path) -> None:
    (tmp_path / "incoming").mkdir()
    probe = WriteProbe(tmp_path, every=0.0)
    assert await probe.problem() is None
    assert list((tmp_path / "incoming").iterdir()) == []  # the probe file is gone
    (tmp_path / "incoming").rmdir()
    (tmp_path / "incoming").write_bytes(b"")  # no directory there: ENOTDIR, root or not
    problem = await probe.problem()
    assert problem is not None
    assert problem.startswith("the data directory takes no writes")


@pytest.mark.parametrize("sent", ["abc", "A-1.b_2:c", "x" * 128])
def test_sane_request_ids_are_kept(sent: str) -> None:
    assert sane_request_id(sent) == sent


@pytest.mark.parametrize("sent", [None, "", "x" * 129, "a b", "a\nb", "ä", "a;b", "a/b"])
def test_other_request_ids_are_refused(sent: str | None) -> None:
    assert sane_request_id(sent) is None


def test_new_request_ids_are_sane_and_distinct() -> None:
    made = {new_request_id() for _ in range(100)}
    assert len(made) == 100
    assert all(sane_request_id(i) == i and len(i) == 16 for i in made)


async def test_tasks_started_for_a_peer_name_it_and_leave_the_caller_alone() -> None:
    async def whose() -> str | None:
        return PEER.get()

    tasks = start_for_peer("peer-a", [whose()])
    assert await tasks[0] == "peer-a"
    assert PEER.get() is None


def record(message: str = "PUT %r", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("node.api.public", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_json_lines_have_the_fields_of_a_request() -> None:
    line = record("PUT %r", "ns/f", file="ns/f", size=10, duration=0.25)
    id_token, peer_token = REQUEST_ID.set("REQ1"), PEER.set("peer-1")
    try:
        ContextFilter().filter(line)
    finally:
        REQUEST_ID.reset(id_token)
        PEER.reset(peer_token)
    parsed = json.loads(JsonFormatter("127.0.0.1:8000").format(line))
    assert parsed["time"].endswith("Z")
    assert parsed["time"][:2] == "20"
    assert {k: v for k, v in parsed.items() if k != "time"} == {
        "level": "INFO",
        "peer": "peer-1",
        "logger": "node.api.public",
        "event": "PUT 'ns/f'",
        "request_id": "REQ1",
        "name": "ns/f",
        "size": 10,
        "duration": 0.25,
    }


def test_json_lines_without_a_request_name_the_process_and_keep_tracebacks() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        line = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    ContextFilter().filter(line)
    text = JsonFormatter("127.0.0.1:8000").format(line)
    assert "\n" not in text  # one object per line, whatever the message holds
    parsed = json.loads(text)
    assert parsed["peer"] == "127.0.0.1:8000"
    assert "request_id" not in parsed
    assert "ValueError: boom" in parsed["exception"]


def test_text_lines_name_the_request_when_there_is_one() -> None:
    text = TextFormatter("127.0.0.1:8000")
    assert "[127.0.0.1:8000] [req=R2] node.api.public: PUT 'a'" in text.format(
        record("PUT %r", "a", request_id="R2")
    )
    assert "[127.0.0.1:8000] node.api.public: PUT 'b'" in text.format(record("PUT %r", "b"))


def test_log_formats_on_the_command_line() -> None:
    with pytest.raises(ValueError, match="no log format"):
        formatter("xml", "tag")
    for command in ("peer", "up"):
        shown = CliRunner().invoke(main, [command, "--help"]).output
        assert "--log-format [text|json]" in shown
    supervisor = Supervisor(1, Path("/nonexistent"), 8000, "127.0.0.1", "info", log_format="json")
    command = supervisor.peers[0]._command
    assert command[command.index("--log-format") + 1] == "json"


def test_a_method_label_takes_only_known_methods() -> None:
    """Any token is a method to aiohttp's pure-Python parser: unknown ones share one label,
    so clients cannot grow the series without bound."""
    metrics = Metrics()
    for method in ("GET", "BREW", "WHEN", "PROPFIND"):
        metrics.observe("public", "unmatched", method, 405, 0.001, 0, 10)
    methods = {
        sample.labels["method"]
        for family in metrics.registry.collect()
        if family.name == "ringstore_http_requests"
        for sample in family.samples
        if "method" in sample.labels
    }
    assert methods == {"GET", "PROPFIND", "other"}
