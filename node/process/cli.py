"""The ``ringstore`` command: ``peer`` and ``up`` run the store; the client adds file commands.

``peer``'s options are generated from ``PeerConfig``'s fields and their ``Option`` metadata
(``config_options``), so names, defaults, ranges and help cannot drift from the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from node.config import Option, PeerConfig
from node.process.event_loop import EVENT_LOOPS, chosen, run
from node.process.logs import FORMATS, setup_logging

F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED = 128 + signal.SIGINT  # the exit status of a command Ctrl-C ended


class _Commands(click.Group):
    """The ``ringstore`` group. The file, key and namespace commands (``client.cli``) are
    added only when one of them, or the list of all, is asked for: a peer process never
    imports the client and rich (~4 MiB of each peer's resident set)."""

    _added = False

    def _add_client_commands(self) -> None:
        if not self._added:
            self._added = True
            from client.cli import register

            register(self, _key_as_cluster)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None:
            self._add_client_commands()
            found = super().get_command(ctx, cmd_name)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_client_commands()
        return super().list_commands(ctx)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _interruptible():  # (reading the options)
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _interruptible():
            return super().invoke(ctx)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C (SIGINT) ends the command with status 130, 128 + SIGINT, as a shell reports
    a process that SIGINT ended, not click's 1: a script can tell an interrupted transfer
    from a failed one. (A peer, and ``up`` once it started them, stop cleanly on SIGINT
    and exit 0; so does ``status --watch``, which ends on it.)"""
    try:
        yield
    except KeyboardInterrupt:
        click.echo("\nAborted!", err=True)
        raise click.exceptions.Exit(INTERRUPTED) from None


@click.group(cls=_Commands)
@click.version_option(package_name="ringstore")
def main() -> None:
    """ringstore: a peer-to-peer file store on a consistent-hash ring."""


def config_default(name: str) -> Any:
    """The default of ``PeerConfig`` field ``name``."""
    return next(f.default for f in dataclasses.fields(PeerConfig) if f.name == name)


def _click_type(kind: Any, spec: Option) -> Any:
    """The click parameter type for a field of type ``kind``; raises TypeError for a type
    this generator does not know (a new kind of field must not quietly become text)."""
    if spec.choices:
        return click.Choice(spec.choices)
    if kind is int:
        return str if spec.auto is not None else _int_range(spec)  # str: see _int_or_auto
    if kind is float:
        return click.FloatRange(spec.low, spec.high)
    if kind is Path and spec.file:
        return click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
    if kind is Path:
        return click.Path(file_okay=False, path_type=Path)
    if kind is str:
        return str
    raise TypeError(f"no command-line type for config fields of type {kind!r}")


def _int_or_auto(
    numbers: click.IntRange, auto: int
) -> Callable[[click.Context, click.Parameter, Any], int]:
    """A callback reading an int in ``numbers``' range, or the word ``auto`` (``auto``)."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> int:
        if value in ("auto", auto):
            return auto
        converted: int = numbers.convert(value, param, ctx)
        return converted

    return convert


def _option(field: dataclasses.Field[Any], kind: Any, spec: Option) -> Callable[[F], F]:
    """The click option of one config field (``X | None``: optional; ``tuple``: repeatable;
    ``bool``: a ``--name/--no-name`` switch)."""
    flag = spec.flag or "--" + field.name.replace("_", "-")
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    multiple = typing.get_origin(kind) is tuple
    if multiple:
        (kind, _) = typing.get_args(kind)
    if kind is bool:  # a switch: --name / --no-name
        name = flag.removeprefix("--")
        return click.option(
            f"{flag}/--no-{name}",
            field.name,
            default=field.default,
            show_default=True,
            help=spec.help,
        )
    required = field.default is dataclasses.MISSING and not multiple
    default = None if required else field.default
    if isinstance(default, float) and spec.scale != 1.0:
        default = default / spec.scale
    return click.option(
        flag,
        field.name,
        type=_click_type(kind, spec),
        default=default,
        required=required,
        multiple=multiple,
        metavar=spec.metavar,
        hidden=spec.hidden,
        show_default=not required and default is not None and not multiple and not spec.secret,
        show_envvar=spec.envvar is not None,
        envvar=spec.envvar,
        help=spec.help,
        callback=None if spec.auto is None else _int_or_auto(_int_range(spec), spec.auto),
    )


def _int_range(spec: Option) -> click.IntRange:
    low, high = (None if bound is None else int(bound) for bound in (spec.low, spec.high))
    return click.IntRange(low, high)


def config_options(func: F) -> F:
    """Add a click option for every ``PeerConfig`` field that has ``Option`` metadata."""
    hints = typing.get_type_hints(PeerConfig)
    for field in reversed(dataclasses.fields(PeerConfig)):
        spec = field.metadata.get("option")
        if spec is not None:
            func = _option(field, hints[field.name], spec)(func)
    return func


def config_from_options(values: dict[str, Any]) -> PeerConfig:
    """A ``PeerConfig`` from the values of ``config_options`` (scaled back to its units)."""
    fields = {f.name: f for f in dataclasses.fields(PeerConfig)}
    settings = {}
    for name, value in values.items():
        spec: Option = fields[name].metadata["option"]
        settings[name] = value * spec.scale if spec.scale != 1.0 and value is not None else value
    return PeerConfig(**settings)


LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)
log_format_option = click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(FORMATS),
    help="Log lines as text, or as one JSON object each (docs/operations.md).",
)


@main.command()
@config_options
@click.option("--log-level", default="info", show_default=True, type=LOG_LEVELS, help="Log detail.")
@log_format_option
@click.option(
    "--event-loop",
    default="auto",
    show_default=True,
    type=click.Choice(EVENT_LOOPS),
    help="uvloop (auto: where installed) or asyncio's own loop (node/process/event_loop.py).",
)
def peer(log_level: str, log_format: str, event_loop: str, **options: Any) -> None:
    """Run one peer."""
    from node.process.serve import serve

    try:
        config = config_from_options(options)
        loop = chosen(event_loop)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(log_level, f"{config.host}:{config.port}", log_format)
    run(serve(config), loop)


@main.command()
@click.option(
    "-n",
    "--peers",
    "count",
    default=7,
    show_default=True,
    type=click.IntRange(1, 64),
    help="How many peers to start.",
)
@click.option(
    "--data-dir",
    default=Path("data"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the peers keep their data: DATA_DIR/peer-0, peer-1, ...",
)
@click.option(
    "--port",
    default=config_default("port"),
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port of the first peer; peer i serves on PORT+i.",
)
@click.option(
    "--host",
    default=config_default("host"),
    show_default=True,
    help="Address every peer serves on.",
)
@click.option(
    "--discovery",
    type=click.Choice(["zeroconf", "none"]),
    default=config_default("discovery"),
    show_default=True,
    help="Let peers (and peers started later) find each other with mDNS, or not.",
)
@click.option("--service-type", default=None, hidden=True)
@click.option("--log-level", default="info", show_default=True, type=LOG_LEVELS, help="Log detail.")
@log_format_option
@click.option(
    "--tls",
    is_flag=True,
    help="Serve HTTPS: make (or reuse) a local CA and peer certificates in DATA_DIR/tls.",
)
@click.option(
    "--s3/--no-s3",
    default=True,
    show_default=True,
    help="Serve S3 too: peer i on port --port + 1000 + i (docs/s3.md).",
)
@click.option(
    "--s3-shared",
    is_flag=True,
    help="All peers serve S3 on port --port + 1000, shared (--s3-reuse-port: one endpoint "
    "over every peer's core; docs/operations.md).",
)
@click.option(
    "--files-shared",
    is_flag=True,
    help="All peers also serve the files API on port --port + 2000, shared (--shared-port: "
    "one endpoint over every peer's core; docs/operations.md).",
)
def up(
    count: int,
    data_dir: Path,
    port: int,
    host: str,
    discovery: str,
    service_type: str | None,
    log_level: str,
    log_format: str,
    tls: bool,
    s3: bool,
    s3_shared: bool,
    files_shared: bool,
) -> None:
    """Start N peers on this machine and supervise them until Ctrl-C."""
    from node.process.supervisor import S3_PORT_OFFSET, SHARED_PORT_OFFSET, Supervisor

    if s3_shared and not s3:
        raise click.UsageError("--s3-shared needs S3 (not --no-s3)")
    if port + count - 1 > 65535:
        last = port + count - 1
        raise click.UsageError(
            f"peer {count - 1} would serve on --port + {count - 1} ({last}): past 65535"
        )
    for flag, wanted, offset in [
        ("--s3-shared", s3_shared, S3_PORT_OFFSET),
        ("--files-shared", files_shared, SHARED_PORT_OFFSET),
    ]:
        if wanted and port + offset > 65535:
            shared = port + offset
            raise click.UsageError(f"{flag} serves on --port + {offset} ({shared}): past 65535")
    setup_logging(log_level, "up", log_format)
    supervisor = Supervisor(
        count,
        data_dir,
        port,
        host,
        log_level,
        discovery,
        service_type,
        tls,
        s3,
        log_format,
        s3_shared=s3_shared,
        files_shared=files_shared,
    )
    raise SystemExit(asyncio.run(supervisor.run()))


@main.command()
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A peer's data directory, or the one `ringstore up` was given.",
)
@click.option(
    "--url",
    "urls",
    multiple=True,
    metavar="URL",
    help="A member address to name (repeatable; default: the members DATA_DIR knows).",
)
@click.option(
    "--create",
    is_flag=True,
    help="First give DATA_DIR (a stopped member from before cluster secrets) an identity.",
)
def token(data_dir: Path, urls: tuple[str, ...], create: bool) -> None:
    """Print a join token for DATA_DIR's cluster (a secret: whoever holds it is a member)."""
    from node.errors import StartRefused
    from node.process.identity import token_for

    try:
        text, identity = token_for(data_dir, list(urls), create)
    except StartRefused as exc:
        raise click.ClickException(str(exc)) from None
    verb = "created cluster" if create else "cluster"
    click.echo(
        f"{verb} {identity.cluster_id}; join with: ringstore peer --join-token TOKEN", err=True
    )
    click.echo(text)


def _key_as_cluster(
    data_dir: Path, urls: list[str], name: str, grants: dict[str, Any]
) -> tuple[str, str]:
    """``ringstore key create --data-dir DIR`` when DIR holds no key: sign as the cluster."""
    from node.errors import RingstoreError
    from node.model.access import Grants, InvalidNamespace
    from node.process.admin import create_key_as_cluster

    try:
        wanted = Grants.of(**grants)
    except InvalidNamespace as exc:
        raise click.BadParameter(str(exc)) from None
    cafile = data_dir / "tls" / "ca.pem"
    try:
        made = asyncio.run(
            create_key_as_cluster(
                data_dir, urls, name, wanted, cafile=cafile if cafile.exists() else None
            )
        )
    except RingstoreError as exc:
        raise click.ClickException(str(exc)) from None
    return made.access_key, made.secret_key
