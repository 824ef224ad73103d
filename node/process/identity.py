"""Which cluster a starting peer belongs to: its data directory's, a token's or a secret file's.

Decided once, before the peer serves (``cluster_identity``), from what the operator gave and
what the data directory holds:

=====================  ==========================  =============================================
given                  data directory holds        then
=====================  ==========================  =============================================
token or secret file   nothing                     join that cluster; keep its identity
token                  an identity of its cluster  the stored one (a token is needed only once)
secret file            an identity of its cluster  take the file's secrets if they include the
                                                   stored signing secret, none it dropped and
                                                   not one it stopped signing with to sign (a
                                                   rotation step: ``Retired``), else refuse (an
                                                   old file would revive a retired secret)
token or secret file   another cluster             refuse to start (a data dir has one cluster)
nothing                an identity                 the cluster it holds
nothing                nothing, never a peer       a new cluster of one, unless --join is given
nothing                nothing, but data (old)     refuse: say how to give it an identity
=====================  ==========================  =============================================

Refusals raise ``StartRefused`` with a message that says what to do; no message holds a
secret.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from node.cluster.protocol import MemberRecord
from node.config import PeerConfig
from node.disk.data_dir import (
    CREDENTIALS_FILE,
    MEMBERS_FILE,
    PENDING_KEY_FILE,
    RETIRED_FILE,
    is_fresh,
    load_identity,
    save_credentials,
    save_identity,
)
from node.disk.durable import write_atomically
from node.errors import StartRefused
from node.model.access import new_access_key, new_secret
from node.model.identity import ClusterIdentity, join_token, key_id, parse_join_token

log = logging.getLogger(__name__)

# Member addresses a token names at most: enough to find a cluster with a few peers down.
TOKEN_URLS = 8

MIGRATION = (
    "{dir} holds data of a ringstore peer from before cluster secrets. Give the cluster an "
    "identity once: `ringstore token --create --data-dir DIR` on one stopped member prints "
    "a join token; restart that member as before and every other one with --join-token "
    "TOKEN (docs/security.md, 'Existing clusters')"
)


def _given(config: PeerConfig) -> tuple[ClusterIdentity | None, list[str], str]:
    """The identity and seeds the options give, and where they came from."""
    token = config.join_token
    if config.join_token_file is not None:
        if token is not None:
            raise StartRefused("give --join-token or --join-token-file, not both")
        try:
            token = config.join_token_file.read_text()
        except OSError as exc:
            raise StartRefused(f"cannot read {config.join_token_file}: {exc.strerror}") from None
    if token is not None and config.cluster_secret_file is not None:
        raise StartRefused("give a join token or --cluster-secret-file, not both")
    if token is not None:
        try:
            identity, seeds = parse_join_token(token)
        except ValueError as exc:
            raise StartRefused(f"--join-token: {exc}") from None
        return identity, seeds, "the join token"
    if config.cluster_secret_file is not None:
        try:
            from_file = load_identity(config.cluster_secret_file)
        except ValueError as exc:
            raise StartRefused(str(exc)) from None
        if from_file is None:
            raise StartRefused(f"--cluster-secret-file {config.cluster_secret_file}: no such file")
        return from_file, [], str(config.cluster_secret_file)
    return None, [], ""


class Retired(msgspec.Struct, frozen=True):
    """Key ids (never secrets) of the secrets a data directory's rotations retired:
    ``dropped`` (no longer accepted) and ``demoted`` (no longer signing), kept in
    ``RETIRED_FILE`` so that an older secret file cannot bring them back: the stored
    signing secret alone did not tell (an attack restarted a peer with the step-1 file after
    step 3; it signed with the dropped secret again and admitted a peer with a token from
    before the rotation, a member for good)."""

    dropped: frozenset[str] = frozenset()
    demoted: frozenset[str] = frozenset()

    def after(self, stored: ClusterIdentity, given: ClusterIdentity) -> Retired:
        """What is retired once ``given`` replaces ``stored``."""
        dropped = self.dropped | (set(stored.by_key_id) - set(given.by_key_id))
        demoted = set(self.demoted)
        if given.signing_secret != stored.signing_secret:
            demoted.add(key_id(stored.signing_secret))
        return Retired(frozenset(dropped), frozenset(demoted))


def _load_retired(data_dir: Path) -> Retired:
    try:
        return msgspec.json.decode((data_dir / RETIRED_FILE).read_bytes(), type=Retired)
    except FileNotFoundError:
        return Retired()
    except (OSError, msgspec.DecodeError) as exc:  # (refusing would need the operator)
        log.error("%s is unreadable (%s): taken as empty", data_dir / RETIRED_FILE, exc)
        return Retired()


def _save_retired(data_dir: Path, retired: Retired) -> None:
    write_atomically(data_dir / RETIRED_FILE, msgspec.json.encode(retired))


def cluster_identity(config: PeerConfig) -> tuple[ClusterIdentity, list[str]]:
    """This peer's cluster identity and the seeds its token names (blocking: file I/O).

    Writes the identity into the data directory (mode 0600) when it is new or changed.
    Raises StartRefused with what to do when the peer must not start.
    """
    data_dir: Path = config.data_dir
    given, seeds, source = _given(config)
    try:
        stored = load_identity(data_dir)
    except ValueError as exc:
        raise StartRefused(str(exc)) from None
    if given is not None:
        if stored is not None and stored.cluster_id != given.cluster_id:
            raise StartRefused(
                f"{data_dir} belongs to cluster {stored.cluster_id}, but {source} is for "
                f"cluster {given.cluster_id}: a data directory holds one cluster's data"
            )
        if stored is None:
            save_identity(data_dir, given)
            log.info("joining cluster %s (from %s): %r", given.cluster_id, source, given)
            return given, seeds
        if stored == given:
            return stored, seeds
        if config.cluster_secret_file is None:
            log.warning(
                "this peer already belongs to cluster %s: the join token is not needed (nor "
                "used) after the first start; secrets change only with --cluster-secret-file",
                stored.cluster_id,
            )
            return stored, seeds
        if stored.signing_secret not in given.secrets:
            raise StartRefused(
                f"{source} does not hold the secret {data_dir} signs with now (key "
                f"{key_id(stored.signing_secret)}): an old secret file would bring back a "
                "retired secret. Rotate in the steps of docs/security.md"
            )
        retired = _load_retired(data_dir)
        if back := [kid for kid in given.by_key_id if kid in retired.dropped]:
            raise StartRefused(
                f"{source} holds secrets {data_dir} dropped in a rotation (keys "
                f"{', '.join(back)}): an old secret file would bring them back. Rotate in the "
                "steps of docs/security.md"
            )
        if (signing := key_id(given.signing_secret)) in retired.demoted:
            raise StartRefused(
                f"{source} signs with a secret {data_dir} stopped signing with (key "
                f"{signing}): an old secret file. Rotate in the steps of docs/security.md"
            )
        _save_retired(data_dir, retired.after(stored, given))
        save_identity(data_dir, given)
        log.info("new secrets for cluster %s (from %s): %r", given.cluster_id, source, given)
        return given, seeds
    if stored is not None:
        return stored, []
    if not is_fresh(data_dir):
        raise StartRefused(MIGRATION.format(dir=data_dir))
    if config.join:
        raise StartRefused(
            "--join finds a cluster but does not admit this peer to it: give --join-token "
            "(`ringstore token --data-dir DIR` on a member prints one) or --cluster-secret-file"
        )
    identity = ClusterIdentity.create()
    save_identity(data_dir, identity)
    access_key = new_admin_credentials(data_dir)
    log.info(
        "created cluster %s and its admin access key %s (secret in %s, mode 0600; stored in "
        "the cluster once it can take writes); `ringstore token --data-dir %s` prints a "
        "token to join it",
        identity.cluster_id,
        access_key,
        data_dir / CREDENTIALS_FILE,
        data_dir,
    )
    return identity, []


def new_admin_credentials(data_dir: Path) -> str:
    """Make the admin access key of a new cluster: its id and secret go to
    ``DATA/credentials`` (0600) and a marker saying the peer must still store it on the
    ring (``PENDING_KEY_FILE``). Returns the access key id."""
    access_key, secret = new_access_key(), new_secret()
    save_credentials(data_dir / CREDENTIALS_FILE, access_key, secret)
    write_atomically(data_dir / PENDING_KEY_FILE, f"{access_key}\n".encode(), mode=0o600)
    return access_key


def _known_urls(data_dir: Path) -> list[str]:
    """Member URLs persisted in ``data_dir`` (a peer's) or its ``peer-*`` (``up``'s)."""
    urls: set[str] = set()
    for path in [data_dir / MEMBERS_FILE, *sorted(data_dir.glob(f"peer-*/{MEMBERS_FILE}"))]:
        try:
            records = msgspec.msgpack.decode(path.read_bytes(), type=list[MemberRecord])
        except (OSError, msgspec.DecodeError):
            continue
        urls.update(r.url for r in records)
    return sorted(urls)


def token_for(data_dir: Path, urls: list[str], create: bool) -> tuple[str, ClusterIdentity]:
    """A join token for the cluster of ``data_dir`` (a peer's or ``ringstore up``'s), naming
    ``urls`` or else the members the directory knows (at most ``TOKEN_URLS``).

    ``create`` gives a data directory from before cluster secrets a new identity first.
    Raises StartRefused saying what is missing.
    """
    try:
        identity = load_identity(data_dir)
    except ValueError as exc:
        raise StartRefused(str(exc)) from None
    if create:
        if identity is not None:
            raise StartRefused(f"{data_dir} already belongs to cluster {identity.cluster_id}")
        if is_fresh(data_dir) and not list(data_dir.glob("peer-*")):
            raise StartRefused(f"{data_dir} is not a peer's data directory")
        identity = ClusterIdentity.create()
        save_identity(data_dir, identity)
    if identity is None:
        raise StartRefused(
            f"{data_dir} holds no cluster secret: is it a peer's or `ringstore up`'s data "
            "directory? (--create gives one to a data directory from before cluster secrets)"
        )
    urls = urls or _known_urls(data_dir)[:TOKEN_URLS]
    if not urls:
        raise StartRefused(f"no member address is known in {data_dir}; name one with --url")
    return join_token(identity, urls), identity
