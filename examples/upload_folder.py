"""Upload a folder recursively: every file under FOLDER becomes PREFIX/<relative path>.

    python examples/upload_folder.py ~/Pictures/2026 --prefix photos/2026

Uses the blocking ``Client``; peers come from --peer, else $RINGSTORE_PEERS, else
http://127.0.0.1:8000 (``make up``). Exits with status 1 if any file failed.
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
from pathlib import Path, PurePosixPath

from client import Client, RingstoreError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the folder to upload")
    parser.add_argument("--prefix", default="", help="name prefix in the store (default: none)")
    parser.add_argument(
        "--peer", action="append", metavar="URL", help="a peer URL (repeatable for failover)"
    )
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")

    failures = 0
    with Client(args.peer) as client:
        for path in sorted(p for p in args.folder.rglob("*") if p.is_file()):
            relative = PurePosixPath(path.relative_to(args.folder).as_posix())
            name = str(PurePosixPath(args.prefix) / relative) if args.prefix else str(relative)
            try:
                result = client.put(name, path, content_type=mimetypes.guess_type(name)[0])
            except (RingstoreError, OSError) as exc:
                failures += 1
                print(f"FAILED {name}: {exc}", file=sys.stderr)
                continue
            print(f"{result.size:>12}  {result.name}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
