"""Access keys on the client side: where a client finds its key, and the file that holds it.

A key is taken from, in order: the arguments (``access_key`` and ``secret_key``), a
credentials file named explicitly, the environment (``RINGSTORE_ACCESS_KEY`` and
``RINGSTORE_SECRET_KEY``). A credentials file is AWS's shared-credentials INI format
(``[default]`` with ``aws_access_key_id`` and ``aws_secret_access_key``), the one
``ringstore up`` writes to ``DATA/credentials``, so the same file serves awscli and boto3.
Requests carry the key as HTTP Basic credentials (RFC 7617); use HTTPS off the host.
"""

from __future__ import annotations

import base64
import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY_ENV = "RINGSTORE_ACCESS_KEY"
SECRET_KEY_ENV = "RINGSTORE_SECRET_KEY"
PROFILE = "default"


@dataclass(frozen=True)
class Credentials:
    """An access key id and its secret; the secret never shows in a repr."""

    access_key: str
    secret_key: str = field(repr=False)

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value: HTTP Basic (RFC 7617), UTF-8."""
        pair = f"{self.access_key}:{self.secret_key}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def read_credentials(path: str | os.PathLike[str], profile: str = PROFILE) -> Credentials:
    """The key of ``profile`` in shared-credentials file ``path``.

    Raises OSError when the file cannot be read, ValueError when it holds no such key.
    """
    # No interpolation: a "%" is part of a secret, as awscli reads it. An error says where,
    # never what: configparser quotes the offending line, which may be the secret.
    ini = configparser.ConfigParser(interpolation=None)
    try:
        ini.read_string(Path(path).read_text())
    except configparser.Error as exc:
        lines = [n for n, _ in getattr(exc, "errors", [])] or [getattr(exc, "lineno", None)]
        where = f" at line {lines[0]}" if lines[0] is not None else ""
        what = (
            "no [section] line first"
            if isinstance(exc, configparser.MissingSectionHeaderError)
            else "malformed"
        )
        raise ValueError(f"{path} is not a credentials file: {what}{where}") from None
    try:
        section = ini[profile]
        return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"])
    except KeyError:
        raise ValueError(f"{path} holds no [{profile}] access key") from None


def find_credentials(
    access_key: str | None = None,
    secret_key: str | None = None,
    credentials_file: str | os.PathLike[str] | None = None,
) -> Credentials | None:
    """The credentials to use, or None for anonymous requests.

    Raises ValueError when only half a key is given, OSError or ValueError for an unusable
    ``credentials_file``.
    """
    if access_key or secret_key:
        if not (access_key and secret_key):
            raise ValueError("give both the access key and its secret key")
        return Credentials(access_key, secret_key)
    if credentials_file is not None:
        return read_credentials(credentials_file)
    env_key, env_secret = os.environ.get(ACCESS_KEY_ENV), os.environ.get(SECRET_KEY_ENV)
    if env_key or env_secret:
        if not (env_key and env_secret):
            raise ValueError(f"set both {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}")
        return Credentials(env_key, env_secret)
    return None
