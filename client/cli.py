"""The file commands of ``ringstore``: put, get, ls, rm, stat and status.

``register`` adds them to the ``ringstore`` group of ``node.process.cli``. Every command talks
to the cluster through a sync ``Client`` built from ``--peer`` (repeatable) or ``$RINGSTORE_PEERS``.
A failure is one ``error: <message>`` line on stderr and exit status 1 (2 for bad usage).
Data goes to stdout only when asked for (``get NAME -``, ``--json``); progress bars go to
stderr, and only on a terminal, for files of ``PROGRESS_MIN`` bytes or more, unless ``--quiet``.
Text from the cluster (names, etags, URLs, error messages) is printed through ``_shown``, so a
name with terminal escapes or newlines (refused by peers, but a peer may be buggy or old)
cannot rewrite the terminal or fake lines of a listing; ``--json`` output is JSON-escaped.
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import os
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import click

from client.async_client import split_peers
from client.errors import RingstoreError
from client.records import ClusterView, Manifest
from client.sync_client import Client

CA_BUNDLE_ENV = "RINGSTORE_CA_BUNDLE"
PROGRESS_MIN = 4 << 20  # smaller transfers finish before a bar would tell anything
BAR_WIDTH = 24

_Command = TypeVar("_Command", bound=Callable[..., Any])


def register(group: click.Group) -> None:
    """Add the file commands to ``group`` (the ``ringstore`` command)."""
    for command in (put, get, ls, rm, stat, status):
        group.add_command(command)


def _peer_option(command: _Command) -> _Command:
    """``--peer`` and ``--cacert``: which cluster to talk to, and the CA its HTTPS peers use."""
    option = click.option(
        "--peer",
        "peers",
        multiple=True,
        metavar="URL",
        help="A peer to talk to; repeat for failover. "
        "Default: $RINGSTORE_PEERS (comma-separated), else http://127.0.0.1:8000.",
    )
    cacert = click.option(
        "--cacert",
        envvar=CA_BUNDLE_ENV,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        metavar="FILE",
        help="Check HTTPS peers against the CA certificates in FILE (PEM) instead of the "
        f"system's, e.g. DATA/tls/ca.pem of `ringstore up --tls`. Default: ${CA_BUNDLE_ENV}.",
    )
    return cacert(option(command))


def _json_option(command: _Command) -> _Command:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(command)


def _quiet_option(command: _Command) -> _Command:
    option = click.option("-q", "--quiet", is_flag=True, help="Print no progress or summary.")
    return option(command)


def _shown(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {_shown(message)}", err=True)
    sys.exit(1)


@contextmanager
def _client(peers: tuple[str, ...], cacert: Path | None) -> Iterator[Client]:
    """A client for ``--peer`` URLs and ``--cacert``; reports every client or local-file
    error on stderr."""
    urls = [url for option in peers for url in split_peers(option)]
    try:
        client = Client(urls or None, cafile=cacert)
    except ssl.SSLError as exc:  # the file is there (click checked) but holds no CA
        message = f"{cacert}: not a PEM CA bundle ({exc})"
        raise click.BadParameter(message, param_hint="--cacert") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--peer") from None
    try:
        with client:
            yield client
    except RingstoreError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        # The reader of our stdout went away (``| head``): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))


def _human(size: float) -> str:
    """``1536`` as ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class _Progress:
    """A transfer's progress on stderr: a bar with rate and ETA when the size is known, a
    running count when it is not. Silent when quiet, off a terminal, or for small transfers.

    Used as the client's ``progress`` callback, which the sync client calls from its loop
    thread; click draws from there as well as from any other.
    """

    def __init__(self, label: str, quiet: bool) -> None:
        self._label = label
        self._stream = sys.stderr
        self._enabled = not quiet and self._stream.isatty()
        self._bar: Any = None  # click's ProgressBar, once the size is known to be big
        self._shown = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def __enter__(self) -> _Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.render_finish()
        elif self._drawn:
            self._stream.write("\n")

    def _rate(self, done: int) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        return f"{_human(done / elapsed)}/s"

    def __call__(self, done: int, total: int | None) -> None:
        if not self._enabled:
            return
        if total is not None:
            if total < PROGRESS_MIN:
                return
            if self._bar is None:
                self._bar = click.progressbar(
                    length=total,
                    label=self._label,
                    file=self._stream,
                    width=BAR_WIDTH,
                    item_show_func=lambda rate: rate,
                )
                self._bar.render_progress()
            self._bar.update(done - self._shown, self._rate(done))
            self._shown = done
            return
        now = time.monotonic()
        if done >= PROGRESS_MIN and now - self._drawn >= 0.2:
            self._drawn = now
            self._stream.write(f"\r{self._label}: {_human(done)} at {self._rate(done)}  ")
            self._stream.flush()


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.argument("name", required=False)
@click.option("--content-type", metavar="TYPE", help="Default: guessed from NAME.")
@_quiet_option
@_peer_option
def put(
    path: str,
    name: str | None,
    content_type: str | None,
    quiet: bool,
    peers: tuple[str, ...],
    cacert: Path | None,
) -> None:
    """Upload the file PATH as NAME (default: PATH's file name).

    PATH - reads standard input; NAME is then required.
    """
    if name is None:
        if path == "-":
            raise click.UsageError("NAME is required when PATH is - (standard input)")
        name = Path(path).name
    content_type = content_type or mimetypes.guess_type(name)[0]
    data = click.open_file("-", "rb") if path == "-" else Path(path)
    with _client(peers, cacert) as client, _Progress(f"put {_shown(name)}", quiet) as progress:
        result = client.put(name, data, content_type=content_type, progress=progress)
    if not quiet:
        note = "  (degraded: a peer was down; fewer chunks stored)" if result.degraded else ""
        click.echo(f"{_shown(result.name)}: {result.size} bytes, version {result.version}{note}")


@click.command()
@click.argument("name")
@click.argument("destination", required=False, metavar="[PATH|-]")
@click.option(
    "-o",
    "--output",
    metavar="PATH|-",
    help="Where to write (same as the PATH argument). Default: NAME's last segment, here.",
)
@_quiet_option
@_peer_option
def get(
    name: str,
    destination: str | None,
    output: str | None,
    quiet: bool,
    peers: tuple[str, ...],
    cacert: Path | None,
) -> None:
    """Download NAME to PATH; - writes to standard output.

    The file appears whole or not at all: it is written beside PATH and renamed.
    """
    if destination is not None and output is not None:
        raise click.UsageError("give PATH or --output, not both")
    target = output or destination or PurePosixPath(name).name
    with _client(peers, cacert) as client, _Progress(f"get {_shown(name)}", quiet) as progress:
        if target == "-":
            stdout = click.open_file("-", "wb")
            with client.open(name) as reader:
                done = 0
                progress(done, reader.stat.size)
                for piece in reader:
                    stdout.write(piece)
                    done += len(piece)
                    progress(done, reader.stat.size)
            stdout.flush()
            return
        path = Path(target)
        if path.is_dir():
            path /= PurePosixPath(name).name
        client.download(name, path, progress=progress)


@click.command()
@click.argument("prefix", default="")
@_json_option
@_peer_option
def ls(prefix: str, as_json: bool, peers: tuple[str, ...], cacert: Path | None) -> None:
    """List files whose names start with PREFIX: size in bytes and name."""
    with _client(peers, cacert) as client:
        entries = client.list(prefix)
        if not as_json:
            for entry in entries:
                click.echo(f"{entry.size:>14}  {_shown(entry.name)}")
            return
        # One entry at a time: a listing may be longer than memory would like.
        separator = "\n"
        click.echo("[", nl=False)
        for entry in entries:
            click.echo(f"{separator}  {json.dumps(dataclasses.asdict(entry))}", nl=False)
            separator = ",\n"
        click.echo("\n]" if separator != "\n" else "]")


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@_peer_option
def rm(names: tuple[str, ...], peers: tuple[str, ...], cacert: Path | None) -> None:
    """Delete files (their chunks are freed shortly after)."""
    with _client(peers, cacert) as client:
        for name in names:
            client.delete(name)


@click.command()
@click.argument("name")
@_json_option
@_peer_option
def stat(name: str, as_json: bool, peers: tuple[str, ...], cacert: Path | None) -> None:
    """Show a file's size, version and layout, and which peer holds each chunk."""
    with _client(peers, cacert) as client:
        manifest = client.manifest(name)
        view = client.cluster()
    if as_json:
        click.echo(json.dumps(_manifest_json(manifest, view), indent=2))
        return
    rows = [
        ("name", manifest.name),
        ("size", f"{manifest.size} bytes ({_human(manifest.size)})"),
        ("version", manifest.version),
        ("etag", manifest.etag),
        ("content type", manifest.content_type),
        (
            "layout",
            f"{manifest.k} data + {manifest.m} parity chunks of {manifest.chunk_size} bytes,"
            f" {manifest.stripes} stripes of {manifest.block_size}-byte blocks",
        ),
        ("degraded", "yes: fewer chunks stored than the layout has" if manifest.degraded else "no"),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<14}{_shown(value)}")
    click.echo(f"chunks:       {len(manifest.chunks)}")
    click.echo(f"  {'#':>2}  {'kind':<6}  {'peer':<36}  {'url':<24}  state")
    for chunk in manifest.chunks:
        peer = view.peer(chunk.holder)
        url, state = (_shown(peer.url), peer.state) if peer else ("?", "unknown")
        holder = _shown(chunk.holder)
        click.echo(f"  {chunk.index:>2}  {chunk.kind:<6}  {holder:<36}  {url:<24}  {state}")


def _manifest_json(manifest: Manifest, view: ClusterView) -> dict[str, Any]:
    record = dataclasses.asdict(manifest)
    for chunk in record["chunks"]:
        peer = view.peer(chunk["holder"])
        chunk["holder_url"] = peer.url if peer else None
    return record


@click.command()
@_json_option
@_peer_option
def status(as_json: bool, peers: tuple[str, ...], cacert: Path | None) -> None:
    """Show every peer's state, fill and chunk count, and how even the ring is."""
    with _client(peers, cacert) as client:
        view = client.cluster()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(view), indent=2))
        return
    fullest = max((p.used_bytes for p in view.peers), default=0) or 1
    full, empty = ("█", "░") if _unicode_stdout() else ("#", "-")
    click.echo(
        f"  {'peer':<8}  {'url':<24}  {'state':<5}  {'fill':<{BAR_WIDTH}}  {'used':>10}  chunks"
    )
    for peer in view.peers:
        filled = round(BAR_WIDTH * peer.used_bytes / fullest)
        bar = full * filled + empty * (BAR_WIDTH - filled)
        mark = "*" if peer.id == view.self_id else " "
        click.echo(
            f"{mark} {_shown(peer.id[:8]):<8}  {_shown(peer.url):<24}  {peer.state:<5}  {bar}"
            f"  {_human(peer.used_bytes):>10}  {peer.chunks:>6}"
        )
    up = sum(p.state == "up" for p in view.peers)
    ring = view.ring
    click.echo(f"{up} of {len(view.peers)} peers up; fill bars compare with the fullest peer")
    click.echo(
        f"ring: {ring.members} members, {ring.vnodes} vnodes, evenness {ring.evenness:.3f}"
        f" (1.000 is perfectly even), digest {ring.digest[:12]}"
    )
    click.echo(f"* answered: {view.self_id}, of cluster {_shown(view.cluster_id)}")


def _unicode_stdout() -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or ""
    return encoding.lower().replace("-", "") == "utf8"
