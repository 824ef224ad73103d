"""Run pytest in a private network namespace when possible: ``python tests/isolated.py [ARGS]``.

zeroconf listens on ``0.0.0.0:5353`` even when bound to 127.0.0.1, so mDNS tests run only
in a namespace of their own, which has nothing but ``lo`` and vanishes with the session.
As root on Linux with ``unshare`` and ``ip``, this re-executes the whole pytest session in
such a namespace with ``RINGSTORE_TEST_NETNS=1`` set (the mDNS tests skip without it);
otherwise it runs pytest as is and says why. The exit code is pytest's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from typing import NoReturn

FLAG = "RINGSTORE_TEST_NETNS"


def namespace_prefix() -> tuple[list[str] | None, str]:
    """The command prefix that runs a command in a fresh namespace with ``lo`` up, or why not."""
    if not sys.platform.startswith("linux"):
        return None, f"not on Linux ({sys.platform})"
    if os.geteuid() != 0:
        return None, "not running as root"
    unshare = shutil.which("unshare")
    ip = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None
    )
    if unshare is None or ip is None:
        return None, "`unshare` or `ip` is not installed"
    script = f'{shlex.quote(ip)} link set lo up && exec "$0" "$@"'
    prefix = [unshare, "--net", "--", "sh", "-c", script]
    # Root is not always enough (a container without CAP_SYS_ADMIN): try it once.
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        error = " ".join(probe.stderr.split()) or f"exit code {probe.returncode}"
        return None, f"cannot make a network namespace: {error}"
    return prefix, ""


def main(args: list[str]) -> NoReturn:
    """Replace this process with pytest (so signals and the exit code are pytest's)."""
    command = [sys.executable, "-m", "pytest", *args]
    prefix, reason = namespace_prefix()
    env = dict(os.environ)
    if prefix is None:
        env.pop(FLAG, None)
        print(f"tests/isolated.py: not isolated ({reason}); mDNS tests will skip", flush=True)
    else:
        env[FLAG] = "1"
        command = [*prefix, *command]
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
