"""Run a chosen subset of ceph/s3-tests against a local ringstore cluster, with a list of
known failures that must stay honest.

``python tests/s3tests/run.py [PYTEST ARGS]`` from the repository root (``tox -e s3tests``):

1. copies the unmodified snapshot of ceph/s3-tests (``../shared/third_party/s3-tests``, or
   ``$RINGSTORE_S3TESTS_DIR``) to a temporary folder, since the suite and pytest write files
   beside it and the snapshot is read-only;
2. starts ``ringstore up`` (real peer processes on 127.0.0.1, S3 on each peer's port), makes
   the three access keys the suite signs with (``s3 main``: admin, as the suite deletes
   buckets; ``s3 alt`` and ``s3 tenant``: the create grant only) through the files API's
   ``POST /keys`` with the admin key ``up`` wrote to ``DATA/credentials``, and writes an
   ``s3tests.conf`` naming them;
3. runs pytest on the selection below and reads its JUnit XML report;
4. stops the cluster by its pid (``up`` stops its peers on SIGTERM).

Exit status 0 when the outcome matches ``known_failures.txt`` exactly: every selected test
passes or skips except those listed there, and every listed test fails. A test that fails
and is not listed, or one that is listed and passes, makes the run fail, so the list cannot
drift out of date. pytest's own output is kept in the temporary folder (``--keep``).
"""

from __future__ import annotations

import argparse
import base64
import configparser
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SNAPSHOT = REPO.parent / "shared" / "third_party" / "s3-tests"
KNOWN_FAILURES = HERE / "known_failures.txt"
PEERS = 7  # a file of more than one stripe needs 5 peers up: a full default cluster
START_TIMEOUT = 90.0
KEY_TIMEOUT = 30.0
SUITE_TIMEOUT = 600.0

# The object, listing, bucket and auth tests that apply to ringstore. Features ringstore
# does not serve (answered NotImplemented, see docs/s3.md) are left out by the suite's own
# markers and by name: ACLs, policies, versioning, lifecycle, SSE, tagging, object lock,
# website, logging, CORS, STS/IAM, S3 Select, storage classes, POST object (browser forms),
# torrents, and the suite's RGW-only checks (fails_on_aws). Multipart uploads are selected.
TEST_FILES = ["s3tests/functional/test_s3.py", "s3tests/functional/test_headers.py"]
UNSERVED_MARKERS = [
    "abac_test", "appendobject", "bucket_policy", "bucket_encryption", "bucket_logging",
    "bucket_logging_cleanup", "cloud_transition", "cloud_restore", "encryption", "fails_on_aws",
    "group", "group_policy", "iam_account", "iam_cross_account", "iam_role", "iam_tenant",
    "iam_user", "lifecycle", "lifecycle_expiration", "lifecycle_transition", "object_lock",
    "object_ownership", "role_policy", "session_policy", "s3select", "s3website",
    "s3website_routing_rules", "s3website_redirect_location", "sns", "sse_s3",
    "storage_class", "tagging", "test_of_sts", "user_policy", "versioning", "webidentity_test",
    "delete_marker", "fails_with_subdomain", "auth_aws2", "fails_on_rgw",
]  # fmt: skip
UNSERVED_WORDS = [
    "acl", "policy", "versioning", "versioned", "version", "lifecycle", "lc_", "tagging",
    "tags", "encryption", "sse", "lock", "website", "logging", "cors",
    "post_object", "torrent", "storage_class", "ownership", "append",
    "restore", "object_attributes", "attrs", "bucket_create_naming_dns", "grant",
    "bucket_owner", "nonowner", "upload_owner", "public_block", "block_public",
    "get_obj_attrs",
]  # fmt: skip


def free_port_block(count: int) -> int:
    """A base port with ``count`` free ports after it and after base + 1000 (S3)."""
    for base in range(24000 + os.getpid() % 1000 * 20, 60000, 37):
        sockets: list[socket.socket] = []
        try:
            for port in [base + i for i in range(count)] + [base + 1000 + i for i in range(count)]:
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports")


def read_known_failures(path: Path) -> dict[str, str]:
    """``test name -> reason`` from lines ``NAME  # REASON`` (blank and ``#`` lines skipped)."""
    known: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{path}:{number}: {name.strip()} has no reason")
        known[name.strip()] = reason.strip()
    return known


def start_cluster(data: Path, base: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "node", "up", "-n", str(PEERS), "--port", str(base),
        "--data-dir", str(data), "--discovery", "none",
    ]  # fmt: skip
    with log.open("wb") as out:
        up = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + START_TIMEOUT
    while "--endpoint-url" not in log.read_text(errors="replace"):
        if up.poll() is not None:
            raise RuntimeError(f"ringstore up exited ({up.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            stop_cluster(up)
            raise RuntimeError(f"ringstore up not ready in {START_TIMEOUT:.0f} s")
        time.sleep(0.2)
    return up


def stop_cluster(up: subprocess.Popen[bytes]) -> None:
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)


def make_key(
    url: str, admin: tuple[str, str], name: str, grants: dict[str, object]
) -> tuple[str, str]:
    """A new access key through ``POST /keys``, retried until the cluster takes it."""
    token = base64.b64encode(f"{admin[0]}:{admin[1]}".encode()).decode()
    body = json.dumps({"name": name, **grants}).encode()
    deadline = time.monotonic() + KEY_TIMEOUT
    while True:
        request = urllib.request.Request(
            f"{url}/keys", data=body, method="POST",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                made = json.load(answer)
            return made["access_key"], made["secret_key"]
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not make key {name}: {exc}") from exc
            time.sleep(0.5)


def write_config(path: Path, base: int, keys: dict[str, tuple[str, str]]) -> None:
    ini = configparser.RawConfigParser()
    ini["DEFAULT"] = {"host": "127.0.0.1", "port": str(base + 1000), "is_secure": "False",
                      "ssl_verify": "False"}  # fmt: skip
    ini["fixtures"] = {"bucket prefix": "s3t-{random}-"}
    people = {"main": "M. Tester", "alt": "john.doe", "tenant": "testx$tenanteduser"}
    for role, (access, secret) in keys.items():
        ini[f"s3 {role}"] = {
            "display_name": people[role], "user_id": access, "email": f"{role}@example.com",
            "access_key": access, "secret_key": secret,
        }  # fmt: skip
    ini["s3 tenant"]["tenant"] = "testx"
    # The suite reads these sections unconditionally; ringstore serves no IAM or STS, and
    # the tests that use them are not selected.
    for section in ("iam", "iam root", "iam alt root"):
        access, secret = keys["alt"]
        ini[section] = {"email": "iam@example.com", "user_id": "iam", "access_key": access,
                        "secret_key": secret, "display_name": "iam"}  # fmt: skip
    with path.open("w") as out:
        ini.write(out)


def outcomes(report: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``test name -> passed | failed | skipped`` from pytest's JUnit XML, and ``test name
    -> failure text`` of the failed ones."""
    result: dict[str, str] = {}
    why: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            result[name] = "failed"
            why[name] = (failure.text or failure.get("message") or "")[-3000:]
        elif case.find("skipped") is not None:
            result[name] = "skipped"
        else:
            result[name] = "passed"
    return result, why


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path(os.environ.get(
        "RINGSTORE_S3TESTS_DIR", SNAPSHOT)))  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cluster is stopped
    if not (args.suite / "s3tests" / "functional").is_dir():
        print(f"no ceph/s3-tests snapshot at {args.suite}", file=sys.stderr)
        return 2
    known = read_known_failures(KNOWN_FAILURES)
    work = Path(tempfile.mkdtemp(prefix="ringstore-s3tests-"))
    up = None
    try:
        suite = work / "s3-tests"
        shutil.copytree(args.suite, suite)
        for each in suite.rglob("*"):
            each.chmod(each.stat().st_mode | 0o200)
        suite.chmod(0o755)
        base = free_port_block(PEERS)
        up = start_cluster(work / "data", base, work / "up.log")
        admin_ini = configparser.ConfigParser()
        admin_ini.read(work / "data" / "credentials")
        admin = (admin_ini["default"]["aws_access_key_id"],
                 admin_ini["default"]["aws_secret_access_key"])  # fmt: skip
        url = f"http://127.0.0.1:{base}"
        keys = {
            "main": make_key(url, admin, "s3tests-main", {"admin": True}),
            "alt": make_key(url, admin, "s3tests-alt", {"create": True}),
            "tenant": make_key(url, admin, "s3tests-tenant", {"create": True}),
        }
        conf = work / "s3tests.conf"
        write_config(conf, base, keys)
        report = work / "report.xml"
        markers = " or ".join(UNSERVED_MARKERS)
        words = " or ".join(UNSERVED_WORDS)
        command = [
            sys.executable, "-m", "pytest", *TEST_FILES, "-p", "no:cacheprovider", "-q",
            "-m", f"not ({markers})", "-k", f"not ({words})", f"--junitxml={report}",
            "-o", "junit_family=xunit1", "--timeout=60", *args.pytest_args,
        ]  # fmt: skip
        env = {**os.environ, "S3TEST_CONF": str(conf), "AWS_EC2_METADATA_DISABLED": "true",
               "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
        for leak in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            env.pop(leak, None)
        log = work / "pytest.log"
        with log.open("wb") as out:  # (shown only when the outcome is not the expected one)
            ran = subprocess.run(
                command, cwd=suite, env=env, timeout=SUITE_TIMEOUT, check=False,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        if ran.returncode not in (0, 1) or not report.exists():
            print(log.read_text(errors="replace")[-20000:])
            print(f"pytest did not run the suite (exit {ran.returncode})", file=sys.stderr)
            return 1
        result, why = outcomes(report)
    finally:
        if up is not None:
            stop_cluster(up)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    failed = {name for name, outcome in result.items() if outcome == "failed"}
    unexpected = sorted(failed - known.keys())
    fixed = sorted(name for name in known if result.get(name) == "passed")
    missing = sorted(name for name in known if name not in result)
    passed = sum(1 for v in result.values() if v == "passed")
    skipped = sum(1 for v in result.values() if v == "skipped")
    for name in unexpected:
        print(f"UNEXPECTED FAILURE: {name}\n{why[name]}\n")
    for name in fixed:
        print(f"KNOWN FAILURE NOW PASSES (remove it from {KNOWN_FAILURES.name}): {name}")
    for name in missing:
        print(f"KNOWN FAILURE NOT RUN (remove it or select it): {name}")
    print(f"ceph/s3-tests: {len(result)} selected; {len(failed & known.keys())} failed as "
          f"{KNOWN_FAILURES.name} expects")  # fmt: skip
    # The closing line counts as failed what was not expected: an unlisted failure or a
    # listed test that passed.
    print(f"s3tests: {passed} passed, {len(unexpected) + len(fixed)} failed, {skipped} skipped")
    return 1 if unexpected or fixed else 0


if __name__ == "__main__":
    sys.exit(main())
