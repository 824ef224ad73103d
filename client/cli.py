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

import contextlib
import dataclasses
import io
import json
import mimetypes
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, NoReturn, TypeVar

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from client.async_client import default_peers, split_peers
from client.credentials import ACCESS_KEY_ENV, SECRET_KEY_ENV, find_credentials
from client.errors import InvalidRequest, NotFound, RingstoreError, Unauthenticated
from client.records import ClusterView, FileEntry, Folder, Manifest, PeerInfo
from client.sync_client import Client

CA_BUNDLE_ENV = "RINGSTORE_CA_BUNDLE"
NO_KEY_HINT = (
    f"give an access key: ${ACCESS_KEY_ENV} and ${SECRET_KEY_ENV}, --credentials FILE or "
    "--data-dir DIR"
)
PROGRESS_MIN = 4 << 20  # smaller transfers finish before a bar would tell anything
BAR_WIDTH = 24

_Command = TypeVar("_Command", bound=Callable[..., Any])


# Makes an access key by acting as the cluster itself (``DATA_DIR``, peer URLs, key name,
# grants) -> (access key, secret); supplied by the peer side, which holds that power.
ClusterKeyMaker = Callable[[Path, list[str], str, dict[str, Any]], tuple[str, str]]
_AUTH = "ringstore.credentials"  # click context meta: the credential options given


def register(group: click.Group, cluster_key_maker: ClusterKeyMaker | None = None) -> None:
    """Add the file, key and namespace commands to ``group`` (the ``ringstore`` command).
    ``cluster_key_maker`` lets ``key create --data-dir`` work without any key yet."""
    for command in (put, get, ls, rm, stat, status, key, ns):
        group.add_command(command)
    _MAKERS[:] = [cluster_key_maker] if cluster_key_maker is not None else []


_MAKERS: list[ClusterKeyMaker] = []


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_AUTH, {})[param.name] = value
    return value


def _credential_options(command: _Command) -> _Command:
    """The access key to send: ``--access-key``/``--secret-key`` (or their environment
    variables), or ``--credentials FILE``, or ``DATA_DIR/credentials`` with ``--data-dir``."""
    options = [
        click.option(
            "--access-key",
            metavar="ID",
            expose_value=False,
            callback=_remember,
            help=f"Access key id (default: ${ACCESS_KEY_ENV}).",
        ),
        click.option(
            "--secret-key",
            metavar="SECRET",
            expose_value=False,
            callback=_remember,
            help=f"Its secret; prefer ${SECRET_KEY_ENV} (a command line is visible to others).",
        ),
        click.option(
            "--credentials",
            metavar="FILE",
            expose_value=False,
            callback=_remember,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Read the key from FILE (AWS shared-credentials format, [default]).",
        ),
        click.option(
            "--data-dir",
            metavar="DIR",
            expose_value=False,
            callback=_remember,
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="Read the key from DIR/credentials (a peer's or `ringstore up`'s data dir).",
        ),
    ]
    for option in options:
        command = option(command)
    return command


def _credentials_file() -> Path | None:
    given = click.get_current_context().meta.get(_AUTH, {})
    if given.get("credentials") is not None:
        return Path(given["credentials"])
    if given.get("data_dir") is not None:
        path = Path(given["data_dir"]) / "credentials"
        return path if path.exists() else None
    return None


def _peer_option(command: _Command) -> _Command:
    """``--peer`` and ``--cacert``: which cluster to talk to, and the CA its HTTPS peers use;
    and the access key to send (``_credential_options``)."""
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
    return _credential_options(cacert(option(command)))


def _json_option(command: _Command) -> _Command:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(command)


def _quiet_option(command: _Command) -> _Command:
    option = click.option("-q", "--quiet", is_flag=True, help="Print no progress or summary.")
    return option(command)


def _shown(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _say_error(message: str) -> None:
    click.echo(f"error: {_shown(message)}", err=True)


def _fail(message: str) -> NoReturn:
    _say_error(message)
    sys.exit(1)


@contextmanager
def _client(
    peers: tuple[str, ...],
    cacert: Path | None,
    timeout: float = 60.0,
    connect_timeout: float = 5.0,
) -> Iterator[Client]:
    """A client for ``--peer`` URLs and ``--cacert``, with ``Client``'s timeouts; reports
    every client or local-file error on stderr."""
    urls = [url for option in peers for url in split_peers(option)]
    given = click.get_current_context().meta.get(_AUTH, {})
    try:
        credentials = find_credentials(
            given.get("access_key"), given.get("secret_key"), _credentials_file()
        )
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        client = Client(
            urls or None,
            cafile=cacert,
            access_key=credentials.access_key if credentials else None,
            secret_key=credentials.secret_key if credentials else None,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
    except ssl.SSLError as exc:  # the file is there (click checked) but holds no CA
        message = f"{cacert}: not a PEM CA bundle ({exc})"
        raise click.BadParameter(message, param_hint="--cacert") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--peer") from None
    try:
        with client:
            yield client
    except Unauthenticated as exc:
        _fail(f"{exc} ({NO_KEY_HINT})")
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
    """A transfer's progress on stderr (rich.progress): a bar with bytes, rate and time left
    when the size is known, a running count and rate when it is not. Silent when quiet, off
    a terminal, or for transfers under ``PROGRESS_MIN`` bytes.

    Used as the client's ``progress`` callback, which the sync client calls from its loop
    thread; rich's Progress takes updates from any thread and redraws from its own.
    """

    def __init__(self, label: str, quiet: bool) -> None:
        self._label = label
        self._console = Console(stderr=True, markup=False, emoji=False, highlight=False)
        self._enabled = not quiet and self._console.is_terminal
        self._bar: Progress | None = None  # once the transfer is known to be big
        self._task = TaskID(0)  # the bar's one task, once drawn

    def __repr__(self) -> str:
        return f"_Progress({self._label!r}, {'drawn' if self._bar else 'not drawn'})"

    def __enter__(self) -> _Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, done: int, total: int | None) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            if (done if total is None else total) < PROGRESS_MIN:
                return
            self._bar = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(bar_width=BAR_WIDTH),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                refresh_per_second=5,
            )
            self._task = self._bar.add_task(self._label, total=total)
            self._bar.start()
        self._bar.update(self._task, completed=done, total=total)


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
    """Upload the file PATH as NAME (NAMESPACE/NAME); a NAME ending in / gets PATH's file
    name appended (`put photo.jpg photos/2026/`).

    PATH - reads standard input; NAME must then be whole.
    """
    if name is None:
        raise click.UsageError("give NAME: NAMESPACE/NAME, or NAMESPACE/ to keep PATH's name")
    if name.endswith("/"):
        if path == "-":
            raise click.UsageError("NAME must be whole when PATH is - (standard input)")
        name += Path(path).name
    content_type = content_type or mimetypes.guess_type(name)[0]
    with (
        _standard_input() if path == "-" else contextlib.nullcontext(Path(path)) as data,
        _client(peers, cacert) as client,
        _Progress(f"put {_shown(name)}", quiet) as progress,
    ):
        result = client.put(name, data, content_type=content_type, progress=progress)
    if not quiet:
        note = "  (degraded: a peer was down; fewer chunks stored)" if result.degraded else ""
        click.echo(f"{_shown(result.name)}: {result.size} bytes, version {result.version}{note}")


@contextmanager
def _standard_input() -> Iterator[IO[bytes]]:
    """Standard input for ``put -``: unbuffered where it is a descriptor, so that a read of
    it left blocked when Ctrl-C ends the command holds no lock the interpreter's exit needs
    (``client.body._read_detached``), and its end refused when a Ctrl-C came with it
    (``_StandardInput``; POSIX: on Windows the client's event loop claims the wakeup
    descriptor ``_SigintSeen`` needs); else as click gives it (a test runner's). Fails
    with one line when the command was started with standard input closed."""
    if sys.stdin is None:  # (started with <&-)
        _fail("standard input is closed")
    try:
        descriptor = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is both)
        yield click.open_file("-", "rb")
        return
    if sys.platform == "win32":
        yield open(descriptor, "rb", buffering=0, closefd=False)  # noqa: SIM115
        return
    with _SigintSeen() as seen:
        yield _StandardInput(descriptor, seen)


class _SigintSeen:
    """Whether a SIGINT came, asked from any thread: the C-level handler of the thread
    that takes it writes the signal's number to the wakeup descriptor
    (``signal.set_wakeup_fd``, this object's socket pair while it is entered: made and
    left in the main thread) before Python's handler runs in the main thread. Asked while
    a signal is being taken (the kernel has it off the pending list, the handler has yet to
    write), it waits ``RECHECK`` seconds and looks again: at the end of an input that the
    same Ctrl-C ended, the first look missed the signal in 1-5 runs of 100."""

    RECHECK = 0.02  # seconds

    def __enter__(self) -> _SigintSeen:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._seen = False
        return self

    def __exit__(self, *_: object) -> None:
        signal.set_wakeup_fd(self._previous)
        self._reader.close()
        self._writer.close()

    def _taken(self) -> bool:
        try:
            written = self._reader.recv(256)
        except OSError:  # nothing written (BlockingIOError), or no longer entered
            return self._seen
        self._seen = self._seen or signal.SIGINT in written
        return self._seen

    def __call__(self) -> bool:
        if self._taken():
            return True
        time.sleep(self.RECHECK)
        return self._taken()


class _StandardInput(io.FileIO):
    """Standard input, unbuffered, whose end does not count when a Ctrl-C came with it.

    A Ctrl-C at a terminal signals every process of the pipeline: a producer it ends
    closes its output, and ``put -`` read that end as the end of the file, so a file cut
    short could be stored (and replace the whole one) while the command said ``Aborted!``
    (3 runs of 28 stored 16-31 MB of a larger file). An end read after a SIGINT raises
    InterruptedError instead, and the upload is aborted, never committed."""

    def __init__(self, descriptor: int, interrupted: Callable[[], bool]) -> None:
        super().__init__(descriptor, "rb", closefd=False)
        self._interrupted = interrupted

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(size)
        if piece == b"" and size != 0 and self._interrupted():
            raise InterruptedError("standard input ended with a Ctrl-C: the file may be cut short")
        return piece


@click.command()
@click.argument("name")
@click.argument("destination", required=False, metavar="[PATH|-]")
@click.option(
    "-o",
    "--output",
    metavar="PATH|-",
    help="Where to write (same as the PATH argument). Default: NAME's last segment, here.",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Do not compare the bytes' MD5 (or xxh3) with the file's etag.",
)
@_quiet_option
@_peer_option
def get(
    name: str,
    destination: str | None,
    output: str | None,
    no_verify: bool,
    quiet: bool,
    peers: tuple[str, ...],
    cacert: Path | None,
) -> None:
    """Download NAME to PATH; - writes to standard output.

    The file appears whole or not at all: it is written beside PATH and renamed once its
    bytes hash to its etag. To standard output, a mismatch withholds the last piece (exit 1).
    """
    if destination is not None and output is not None:
        raise click.UsageError("give PATH or --output, not both")
    # A name's own last segment is a file's name, even "-" (standard output only when given)
    target = output or destination or f"./{PurePosixPath(name).name}"
    with _client(peers, cacert) as client, _Progress(f"get {_shown(name)}", quiet) as progress:
        if target == "-":
            stdout = click.open_file("-", "wb")
            with client.open(name, verify=not no_verify) as reader:
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
        client.download(name, path, progress=progress, verify=not no_verify)


@click.command()
@click.argument("prefix", default="")
@click.option(
    "-r", "--recursive", is_flag=True, help="List every file whose name starts with PREFIX."
)
@click.option(
    "--delimiter",
    default="/",
    show_default=True,
    metavar="TEXT",
    help="What separates folders in names (1-64 characters).",
)
@_json_option
@_peer_option
def ls(
    prefix: str,
    recursive: bool,
    delimiter: str,
    as_json: bool,
    peers: tuple[str, ...],
    cacert: Path | None,
) -> None:
    """List the folder PREFIX, like `aws s3 ls`: each file (size in bytes and name) and each
    folder below it (`PRE` and its name, which ends with the delimiter). `ls` alone lists
    the namespaces; `ls photos/` what is in photos. With -r, every file whose name starts
    with PREFIX, however deep."""
    with _client(peers, cacert) as client:
        entries: Iterator[FileEntry | Folder] = (
            client.list(prefix) if recursive else client.list_folder(prefix, delimiter=delimiter)
        )
        if not as_json:
            for entry in entries:
                size = "PRE" if isinstance(entry, Folder) else entry.size
                click.echo(f"{size:>14}  {_shown(entry.name)}")
            return
        # One entry at a time: a listing may be longer than memory would like.
        separator = "\n"
        click.echo("[", nl=False)
        for entry in entries:
            record = (
                {"prefix": entry.name} if isinstance(entry, Folder) else dataclasses.asdict(entry)
            )
            click.echo(f"{separator}  {json.dumps(record)}", nl=False)
            separator = ",\n"
        click.echo("\n]" if separator != "\n" else "]")


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@_peer_option
def rm(names: tuple[str, ...], peers: tuple[str, ...], cacert: Path | None) -> None:
    """Delete files (their chunks are freed shortly after). A name that cannot be deleted
    is said on stderr and the others are still deleted; the exit status is then 1."""
    failed = False
    with _client(peers, cacert) as client:
        for name in names:
            try:
                client.delete(name)
            except (NotFound, InvalidRequest) as exc:  # (403 too) this name's: the next may go
                _say_error(str(exc))
                failed = True
    if failed:
        sys.exit(1)


@click.command()
@click.argument("name")
@_json_option
@_peer_option
def stat(name: str, as_json: bool, peers: tuple[str, ...], cacert: Path | None) -> None:
    """Show a file's size, version, layout, stored headers and metadata, and which peer
    holds each chunk."""
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
            "inline: in the manifest's replicas, no chunks"
            if manifest.inline
            else "packed: in a pack of small files, erasure-coded"
            if manifest.packed
            else f"{manifest.k} data + {manifest.m} parity chunks of {manifest.chunk_size} bytes,"
            f" {manifest.stripes} stripes of {manifest.block_size}-byte blocks",
        ),
        ("degraded", "yes: fewer chunks stored than the layout has" if manifest.degraded else "no"),
    ]
    given = {
        "encoding": manifest.content_encoding,
        "disposition": manifest.content_disposition,
        "cache control": manifest.cache_control,
        "language": manifest.content_language,
        "expires": manifest.expires,
    }
    rows += [(label, value) for label, value in given.items() if value is not None]
    for label, value in rows:
        click.echo(f"{label + ':':<13} {_shown(value)}")
    if manifest.metadata:
        click.echo("metadata:")
        for key, value in sorted(manifest.metadata.items()):
            click.echo(f"  {_shown(key)}: {_shown(value)}")
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


WATCH_DEFAULT = 2.0  # seconds between refreshes of `status --watch`
WATCH_MIN = 0.5  # no faster: each refresh is a GET /cluster and a redraw
WATCH_TIMEOUT = 10.0  # seconds a refresh may wait for a peer's answer (connect: 3)
PLAIN_WIDTH = 1000  # off a terminal a table is never cut to fit a width


@click.command()
@click.option(
    "--watch",
    type=click.FloatRange(min=WATCH_MIN),
    is_flag=False,
    flag_value=WATCH_DEFAULT,
    default=None,
    metavar="[SECONDS]",
    help=f"Refresh every SECONDS (default {WATCH_DEFAULT:g}, at least {WATCH_MIN:g}) until "
    "Ctrl-C: redrawn in place on a terminal, one table after another elsewhere (with "
    "--json: one JSON document a line).",
)
@click.option("--count", type=click.IntRange(min=1), hidden=True, help="Stop after N tables.")
@_json_option
@_peer_option
def status(
    watch: float | None,
    count: int | None,
    as_json: bool,
    peers: tuple[str, ...],
    cacert: Path | None,
) -> None:
    """Show every peer's state, zone, weight, fill, chunk count and the upkeep it runs
    (rebalancing, repair, scrub, pending deletions), and how even the ring is."""
    if watch is None:
        with _client(peers, cacert) as client:
            view = client.cluster()
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(view), indent=2))
        else:
            _console().print(_status_view(view))
        return
    with (
        contextlib.suppress(KeyboardInterrupt),  # Ctrl-C: the way a watch ends (closing too)
        _client(peers, cacert, WATCH_TIMEOUT, connect_timeout=3.0) as client,
    ):
        _watch(client, watch, count, as_json)


def _watch(client: Client, interval: float, count: int | None, as_json: bool) -> None:
    """Show the cluster every ``interval`` seconds, ``count`` times (None: until Ctrl-C).
    A refresh that fails is said under the last view, and the next one tries again."""
    console = _console()
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    shown = 0
    last: ClusterView | None = None
    with live or contextlib.nullcontext():
        while count is None or shown < count:
            started = time.monotonic()
            problem = None
            try:
                last = client.cluster()
            except Unauthenticated:
                raise
            except RingstoreError as exc:  # a peer down or slow: say so, try again
                problem = f"refresh failed at {time.strftime('%H:%M:%S')}: {_shown(str(exc))}"
            if as_json:  # a failed refresh: said on stderr, no line on stdout
                if problem is not None or last is None:
                    click.echo(problem, err=True)
                else:
                    click.echo(json.dumps(dataclasses.asdict(last)))
            else:
                view = _status_view(last, problem)
                if live is not None:
                    live.update(view, refresh=True)
                else:
                    console.print(view)
                    console.print()
            shown += 1
            if count is None or shown < count:
                time.sleep(max(0.0, interval - (time.monotonic() - started)))


def _console() -> Console:
    """A console on stdout: styled on a terminal; plain text, never cut, anywhere else.
    Markup and emoji are off: the cluster's strings are shown as they are (``_shown``)."""
    terminal = sys.stdout.isatty()
    return Console(
        file=sys.stdout,
        force_terminal=terminal,
        color_system="auto" if terminal else None,
        width=None if terminal else PLAIN_WIDTH,
        markup=False,
        emoji=False,
        highlight=False,
    )


def _status_view(view: ClusterView | None, problem: str | None = None) -> Group:
    """The status table and the lines under it (``problem``: a failed refresh)."""
    parts: list[RenderableType] = []
    if view is not None:
        parts += [_peer_table(view), *_status_lines(view)]
    if problem is not None:
        parts.append(Text(problem, style="bold red"))
    return Group(*parts)


def _peer_table(view: ClusterView) -> Table:
    zoned = len({p.zone for p in view.peers}) > 1  # a zone column only when it tells apart
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    for name, justify in (
        ("", "left"),
        ("peer", "left"),
        ("url", "left"),
        *([("zone", "left")] if zoned else []),
        ("state", "left"),
        ("clock", "right"),
        ("weight", "right"),
        ("fill", "left"),
        ("used", "right"),
        ("chunks", "right"),
        ("ring share", "right"),
        ("upkeep", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "upkeep")  # type: ignore[arg-type]
    for peer in view.peers:
        mark = "*" if peer.id == view.self_id else " "
        state = Text(peer.state, style="green" if peer.state == "up" else "bold red")
        row: list[RenderableType] = [mark, _shown(peer.id[:8]), _shown(peer.url)]
        if zoned:
            row.append(_shown(peer.zone))
        row += [
            state,
            Text(_offset(peer), style="bold red" if peer.skewed else ""),
            str(peer.weight),
            _fill_bar(peer),
            _human(peer.used_bytes),
            str(peer.chunks),
            _share(peer),
            _upkeep(peer),
        ]
        table.add_row(*row)
    return table


def _fill_bar(peer: PeerInfo) -> Text:
    """``██████░░░░  62%``: the peer's fill (of its quota, else of its disk), red past
    90%, yellow past 80%."""
    fill = peer.fill
    if fill is None:
        return Text(" " * BAR_WIDTH + "    ?")
    full, empty = ("█", "░") if _unicode_stdout() else ("#", "-")
    filled = min(BAR_WIDTH, round(BAR_WIDTH * fill))
    style = "red" if fill > 0.9 else "yellow" if fill > 0.8 else "green"
    bar = Text(full * filled, style=style)
    bar.append(empty * (BAR_WIDTH - filled), style="dim")
    bar.append(f" {fill:4.0%}")
    return bar


def _share(peer: PeerInfo) -> Text:
    """``14.6% 1.02x``: its token share of the ring, and that over its weight's share."""
    ratio = peer.share_ratio
    if peer.token_share is None or ratio is None:
        return Text("-")
    style = "red" if abs(ratio - 1) > 0.25 else "yellow" if abs(ratio - 1) > 0.1 else ""
    return Text(f"{peer.token_share:5.1%} {ratio:.2f}x", style=style)


def _upkeep(peer: PeerInfo) -> Text:
    """What the peer's background work is doing now, or ``idle``."""
    work = peer.upkeep
    parts = []
    if work.rebalance_pending or work.rebalance_remaining_bytes:
        parts.append(
            f"rebalance {work.rebalance_pending} queued, "
            f"{_human(work.rebalance_remaining_bytes)} to move"
        )
    if work.repair_queued:
        parts.append(f"repair {work.repair_queued} queued")
    if work.scrub_pass_chunks:
        parts.append(f"scrub {work.scrub_pass_checked}/{work.scrub_pass_chunks}")
    if work.deletions_pending:
        plural = "s" if work.deletions_pending > 1 else ""
        parts.append(f"{work.deletions_pending} deletion{plural} pending")
    if peer.state != "up" and peer.figures_age_s is not None:
        parts.append(f"as of {peer.figures_age_s:.0f}s ago")
    return Text(", ".join(parts) or "idle", style="" if parts else "dim")


def _status_lines(view: ClusterView) -> list[Text]:
    up = sum(p.state == "up" for p in view.peers)
    ring = view.ring
    lines = [f"{up} of {len(view.peers)} peers up; fill: of each one's --max-bytes, else disk"]
    skewed = sum(p.skewed for p in view.peers)
    if skewed:
        lines.append(
            f"clock: {skewed} peer(s) marked ! are off the answering peer's clock by more than"
            " the cluster allows: check their time synchronisation (NTP)"
        )
    line = (
        f"ring: {ring.members} members, {ring.vnodes} vnodes, evenness {ring.evenness:.3f}"
        " (placement sets; 1.000 is perfectly even)"
    )
    if ring.max_ratio is not None and ring.min_ratio is not None and ring.cv is not None:
        line += (
            f"; token share over weight's share {ring.min_ratio:.3f}..{ring.max_ratio:.3f},"
            f" cv {ring.cv:.3f}"
        )
    lines += [
        line + f", digest {ring.digest[:12]}",
        f"* answered: {view.self_id}, of cluster {_shown(view.cluster_id)}",
    ]
    return [Text(line) for line in lines]


def _offset(peer: PeerInfo) -> str:
    """A peer's clock offset for the status table: ``+0.012s``, ``!+3600.0s``, ``?``."""
    if peer.clock_offset_ms is None:
        return "?"
    seconds = peer.clock_offset_ms / 1000
    shown = f"{seconds:+.3f}s" if abs(seconds) < 100 else f"{seconds:+.0f}s"
    return ("!" if peer.skewed else "") + shown


def _unicode_stdout() -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or ""
    return encoding.lower().replace("-", "") == "utf8"


# --- access keys and namespaces -------------------------------------------------------------


@click.group()
def key() -> None:
    """Access keys: create, list, revoke (an admin key's commands)."""


@key.command("create")
@click.argument("name", default="")
@click.option("--read", "read", multiple=True, metavar="NS", help="May read NS ('*': all).")
@click.option("--write", "write", multiple=True, metavar="NS", help="May write NS ('*': all).")
@click.option("--create-ns", "create", is_flag=True, help="May create namespaces.")
@click.option("--admin", is_flag=True, help="May do everything: keys, namespaces, all files.")
@_json_option
@_peer_option
def key_create(
    name: str,
    read: tuple[str, ...],
    write: tuple[str, ...],
    create: bool,
    admin: bool,
    as_json: bool,
    peers: tuple[str, ...],
    cacert: Path | None,
) -> None:
    """Create an access key named NAME with these grants; its secret is shown only now.

    With --data-dir DIR and no key to use (DIR has no credentials file), the key is made
    with the cluster secret in DIR instead: how a cluster from before access keys, or one
    whose admin keys are lost, gets an admin key again.
    """
    given = click.get_current_context().meta.get(_AUTH, {})
    data_dir = given.get("data_dir")
    has_key = given.get("access_key") or given.get("credentials") is not None
    if data_dir is not None and not has_key and _credentials_file() is None and _MAKERS:
        urls = [url for option in peers for url in split_peers(option)] or default_peers()
        grants = {"read": read, "write": write, "create": create, "admin": admin}
        try:
            access_key, secret = _MAKERS[0](Path(data_dir), urls, name, grants)
        except Exception as exc:  # the maker's own errors: one line, like every failure
            _fail(str(exc))
        made: dict[str, Any] = {"access_key": access_key, "secret_key": secret}
    else:
        with _client(peers, cacert) as client:
            made = client.create_key(name, read=read, write=write, create=create, admin=admin)
    if as_json:
        click.echo(json.dumps({"access_key": made["access_key"], "secret_key": made["secret_key"]}))
        return
    click.echo(f"access key: {_shown(made['access_key'])}")
    click.echo(f"secret key: {_shown(made['secret_key'])}")
    click.echo("the secret is shown only now: keep it safe", err=True)


@key.command("ls")
@_json_option
@_peer_option
def key_ls(as_json: bool, peers: tuple[str, ...], cacert: Path | None) -> None:
    """List the live access keys and their grants (never their secrets)."""
    with _client(peers, cacert) as client:
        keys = client.keys()
    if as_json:
        click.echo(json.dumps(keys, indent=2))
        return
    for record in keys:
        grants = record["grants"]
        parts = ["admin"] if grants["admin"] else []
        parts += [f"read:{ns}" for ns in grants["read"]] + [f"write:{ns}" for ns in grants["write"]]
        parts += ["create-ns"] if grants["create"] else []
        line = f"{record['access_key']}  {record['name'] or '-'}  {' '.join(parts) or '(none)'}"
        click.echo(_shown(line))


@key.command("revoke")
@click.argument("key_id", metavar="ID")
@_peer_option
def key_revoke(key_id: str, peers: tuple[str, ...], cacert: Path | None) -> None:
    """Revoke access key ID: every peer refuses it within seconds."""
    with _client(peers, cacert) as client:
        client.revoke_key(key_id)


@click.group()
def ns() -> None:
    """Namespaces (the first segment of a file's name; an S3 bucket): create, list, remove."""


@ns.command("create")
@click.argument("name")
@click.option("--public-read", is_flag=True, help="Anyone may read and list it, unauthenticated.")
@_peer_option
def ns_create(name: str, public_read: bool, peers: tuple[str, ...], cacert: Path | None) -> None:
    """Create namespace NAME (3-63 lower-case letters, digits, '-' and '.')."""
    with _client(peers, cacert) as client:
        client.create_namespace(name, public_read=public_read)


@ns.command("ls")
@_json_option
@_peer_option
def ns_ls(as_json: bool, peers: tuple[str, ...], cacert: Path | None) -> None:
    """List the namespaces this key may read."""
    with _client(peers, cacert) as client:
        found = client.namespaces()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for record in found:
        notes = [n for n in ("public-read", "adopted") if record[n.replace("-", "_")]]
        click.echo(_shown(f"{record['name']}  {' '.join(notes)}".rstrip()))


@ns.command("rm")
@click.argument("name")
@_peer_option
def ns_rm(name: str, peers: tuple[str, ...], cacert: Path | None) -> None:
    """Remove namespace NAME; it must hold no files."""
    with _client(peers, cacert) as client:
        client.remove_namespace(name)
