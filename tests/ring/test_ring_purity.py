"""The ring package is pure: no I/O, networking or event-loop modules, at import or later."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import ring

PACKAGE_DIR = Path(ring.__file__).resolve().parent
IMPORT_ROOT = PACKAGE_DIR.parent

FORBIDDEN = {
    "aiohttp",
    "asyncio",
    "concurrent",
    "multiprocessing",
    "selectors",
    "socket",
    "ssl",
    "subprocess",
    "threading",
    "zeroconf",
}
ALLOWED_IMPORTS = {
    "__future__",
    "bisect",
    "collections",
    "dataclasses",
    "hashlib",
    "itertools",
    "msgpack",
    "ring",
    "typing",
    "uhashring",
}


def test_importing_ring_loads_no_io_modules() -> None:
    code = "import json, sys; import ring; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(IMPORT_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert "ring" in loaded
    assert "uhashring" in loaded
    assert loaded.isdisjoint(FORBIDDEN), sorted(loaded & FORBIDDEN)


def test_ring_sources_import_only_allowed_modules() -> None:
    sources = sorted(PACKAGE_DIR.glob("*.py"))
    assert sources
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{source.name}: use absolute imports"
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= ALLOWED_IMPORTS, f"{source.name} imports {sorted(roots)}"
