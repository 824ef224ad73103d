"""``ringstore key`` and ``ringstore ns``, and where the file commands find their key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result

from client.credentials import ACCESS_KEY_ENV, SECRET_KEY_ENV
from node.disk.data_dir import save_credentials
from node.process.cli import main
from tests.harness import LocalCluster
from tests.harness.access import ADMIN

NO_KEY = {ACCESS_KEY_ENV: None, SECRET_KEY_ENV: None}


async def ringstore(cluster: LocalCluster, *args: str, **env: str | None) -> Result:
    """Run ``ringstore ARGS --peer <third peer>`` in a thread (the cluster runs on this loop)."""
    runner = CliRunner(env={"RINGSTORE_PEERS": None, **env})
    command = [*args, "--peer", cluster[2].url]
    return await asyncio.to_thread(runner.invoke, main, command, input=b"data")


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def failed(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one line, never a traceback
    return lines[0]


async def test_keys_and_namespaces_from_the_command_line(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # the harness's admin key comes from the environment
    ok(await ringstore(cluster, "ns", "create", "shared", "--public-read"))
    ok(await ringstore(cluster, "ns", "create", "private"))
    made = json.loads(
        ok(await ringstore(cluster, "key", "create", "ci", "--write", "shared", "--json"))
    )
    assert set(made) == {"access_key", "secret_key"}
    listed = ok(await ringstore(cluster, "key", "ls"))
    assert f"{made['access_key']}  ci  write:shared" in listed
    assert made["secret_key"] not in listed
    assert {
        ns["name"] for ns in json.loads(ok(await ringstore(cluster, "ns", "ls", "--json")))
    } >= {
        "shared",
        "private",
    }

    # the new key, three ways: options, environment, a credentials file
    as_ci = ("--access-key", made["access_key"], "--secret-key", made["secret_key"])
    ok(await ringstore(cluster, "put", "-", "shared/a.txt", *as_ci, **NO_KEY))
    env = {ACCESS_KEY_ENV: made["access_key"], SECRET_KEY_ENV: made["secret_key"]}
    ok(await ringstore(cluster, "put", "-", "shared/b.txt", **env))
    save_credentials(tmp_path / "credentials", made["access_key"], made["secret_key"])
    ok(await ringstore(cluster, "put", "-", "shared/c.txt", "--data-dir", str(tmp_path), **NO_KEY))
    denied = failed(await ringstore(cluster, "put", "-", "private/x", **env))
    assert denied.startswith("error: access key ")
    assert "may not write" in denied
    # public-read: no key needed to read, one needed to write
    assert ok(await ringstore(cluster, "get", "shared/a.txt", "-", **NO_KEY)) == "data"
    refused = failed(await ringstore(cluster, "put", "-", "shared/d.txt", **NO_KEY))
    assert "needs an access key" in refused
    assert ACCESS_KEY_ENV in refused  # says how to give one
    wrong = failed(
        await ringstore(cluster, "ls", "private/", "--access-key", ADMIN[0], "--secret-key", "x")
    )
    assert "wrong secret" in wrong
    assert "x" * 3 not in wrong

    # not empty, then empty
    assert "holds files" in failed(await ringstore(cluster, "ns", "rm", "shared"))
    ok(await ringstore(cluster, "rm", "shared/a.txt", "shared/b.txt", "shared/c.txt"))
    ok(await ringstore(cluster, "ns", "rm", "shared"))
    ok(await ringstore(cluster, "key", "revoke", made["access_key"]))
    assert made["access_key"] not in ok(await ringstore(cluster, "key", "ls"))
    gone = failed(await ringstore(cluster, "ls", "private/", *as_ci, **NO_KEY))
    assert "wrong secret" in gone


async def test_the_cluster_secret_makes_a_key_when_no_key_is_left(
    cluster: LocalCluster,
) -> None:
    data_dir = cluster[4].data_dir  # a peer's data dir: the cluster secret, no credentials
    out = ok(
        await ringstore(
            cluster, "key", "create", "rescue", "--admin", "--data-dir", str(data_dir), **NO_KEY
        )
    )
    access_key = out.splitlines()[0].removeprefix("access key: ")
    secret = out.splitlines()[1].removeprefix("secret key: ")
    as_rescue = ("--access-key", access_key, "--secret-key", secret)
    assert access_key in ok(await ringstore(cluster, "key", "ls", *as_rescue, **NO_KEY))
