"""The test harness: clusters of real peers, an in-process network, and the helpers tests and
benchmarks share.

- ``local``: in-process peers on 127.0.0.1 (``LocalCluster``, ``LocalPeer``, ``Served``).
- ``processes``: real ``ringstore peer`` processes (``ProcessCluster``), stopped by pid.
- ``grid``: the data path wired in-process with no sockets at all (``Grid``), after
  Tahoe-LAFS's NoNetworkGrid: break and hang peers, count what was called.
- ``polling``: ``eventually``, the only way a test waits for a condition.
- ``ports``, ``files``, ``disk``: free ports, public-API shortcuts, data-directory surgery.
- ``peer_api``: ``internal``, a signed call to a peer's ``/internal/`` API.
- ``clients``: public-API requests made in one place (aiohttp and raw sockets), for the
  limits and fuzz tests; ``fuzzing``: what the fuzz suites share.

``bench/`` imports this package too, so a benchmark's cluster is started and stopped like a
test's.
"""

from tests.harness.disk import (
    chunk_bytes,
    chunk_files_in,
    chunk_files_size,
    flip_byte,
    incoming_files_in,
    manifest_record,
    manifest_replica,
    new_secret_file,
    sidecar_of,
)
from tests.harness.files import (
    all_see_all_up,
    check_files,
    fully_redundant,
    get_file,
    get_manifest,
    put_file,
)
from tests.harness.local import FAST, HANG_DETECTION, LocalCluster, LocalPeer, Served
from tests.harness.peer_api import internal
from tests.harness.polling import eventually, spin
from tests.harness.ports import free_port, free_port_block, free_ports
from tests.harness.processes import (
    NetnsPeerProcess,
    ProcessCluster,
    own_record,
    peer_id_of,
    process_gone,
)

__all__ = [
    "FAST",
    "HANG_DETECTION",
    "LocalCluster",
    "LocalPeer",
    "NetnsPeerProcess",
    "ProcessCluster",
    "Served",
    "all_see_all_up",
    "check_files",
    "chunk_bytes",
    "chunk_files_in",
    "chunk_files_size",
    "eventually",
    "flip_byte",
    "free_port",
    "free_port_block",
    "free_ports",
    "fully_redundant",
    "get_file",
    "get_manifest",
    "incoming_files_in",
    "internal",
    "manifest_record",
    "manifest_replica",
    "new_secret_file",
    "own_record",
    "peer_id_of",
    "process_gone",
    "put_file",
    "sidecar_of",
    "spin",
]
