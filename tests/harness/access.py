"""The admin access key every test cluster has, and how a cluster gets it.

Every cluster the harness starts stores the same admin key (``ADMIN``) the way a new
cluster stores its first key: written to the first peer's ``credentials`` with the pending
marker before it starts (``seed_admin_key``), and stored on the ring by that peer once the
cluster can take writes (``node.access.startup``). So the ``http`` fixture's session and
every client a test makes (through ``$RINGSTORE_ACCESS_KEY``) are admins of any test
cluster; tests of other grants create their own keys.
"""

from __future__ import annotations

from pathlib import Path

from client.credentials import Credentials
from node.disk.data_dir import (
    CREDENTIALS_FILE,
    PENDING_KEY_FILE,
    prepare_data_dir,
    save_credentials,
)
from tests.harness.polling import eventually

ADMIN = ("RSTESTADMINKEY234567", "test-admin-secret-of-the-ringstore-harness")
ADMIN_HEADERS = {"Authorization": Credentials(*ADMIN).authorization}


def seed_admin_key(data_dir: Path) -> None:
    """Have the peer of ``data_dir`` (not started yet) store ``ADMIN`` as a new cluster's
    admin key."""
    prepare_data_dir(data_dir)
    if not (data_dir / "peer-id").exists():
        save_credentials(data_dir / CREDENTIALS_FILE, *ADMIN)
        (data_dir / PENDING_KEY_FILE).write_text(ADMIN[0] + "\n")


async def wait_admin_key(data_dir: Path, timeout: float = 20.0) -> None:
    """Wait until the peer of ``data_dir`` stored the pending admin key on the ring."""
    pending = data_dir / PENDING_KEY_FILE
    await eventually(lambda: not pending.exists(), timeout, "the admin key to be stored")
