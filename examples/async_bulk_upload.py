"""Upload many files at once with the async client, at most N at a time.

    python examples/async_bulk_upload.py logs/*.gz --prefix logs/ --concurrency 8

One ``AsyncClient`` shares its pooled connections between all uploads; a semaphore bounds
how many run together, so a thousand files do not open a thousand connections. Peers come
from --peer, else $RINGSTORE_PEERS, else http://127.0.0.1:8000 (``make up``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from client import AsyncClient, PutResult, RingstoreError


async def upload_all(
    client: AsyncClient, paths: list[Path], prefix: str, concurrency: int
) -> list[PutResult | BaseException]:
    """Upload every path as PREFIX + its file name; return each result or its error."""
    gate = asyncio.Semaphore(concurrency)

    async def upload(path: Path) -> PutResult:
        async with gate:
            result = await client.put(prefix + path.name, path)
            print(f"{result.size:>12}  {result.name}")
            return result

    return await asyncio.gather(*(upload(p) for p in paths), return_exceptions=True)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="files to upload")
    parser.add_argument("--prefix", default="", help="prepended to each file name")
    parser.add_argument("--concurrency", type=int, default=4, help="uploads at once (default 4)")
    parser.add_argument(
        "--peer", action="append", metavar="URL", help="a peer URL (repeatable for failover)"
    )
    args = parser.parse_args()
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")

    started = time.monotonic()
    async with AsyncClient(args.peer) as client:
        results = await upload_all(client, args.paths, args.prefix, args.concurrency)
    failed = 0
    for path, result in zip(args.paths, results, strict=True):
        if isinstance(result, (RingstoreError, OSError)):
            failed += 1
            print(f"FAILED {path}: {result}", file=sys.stderr)
        elif isinstance(result, BaseException):
            raise result
    stored = sum(r.size for r in results if isinstance(r, PutResult))
    elapsed = time.monotonic() - started
    print(
        f"{len(results) - failed} files, {stored / 2**20:.1f} MiB in {elapsed:.1f}s;"
        f" {failed} failed",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
