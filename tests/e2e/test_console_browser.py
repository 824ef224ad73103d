"""The web console in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against seven in-process peers on real ports.

One walk through it, as a user would: a wrong key is refused; log in; see all seven peers
up and the ring drawn; upload a 30 MiB file with the file input and watch it finish; find
it in the folder listing and see its chunk map; download it and compare its SHA-256; delete
it (confirming); make a key, change its grants and revoke it; log out. Every wait polls
with a deadline.

With ``RINGSTORE_SCREENSHOTS=DIR`` set, each page is saved as ``DIR/NAME.png`` (1280x900);
docs/console/ holds the ones the README shows, made this way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from tests.harness import LocalCluster
from tests.harness.access import ADMIN, ADMIN_HEADERS
from tests.harness.tools import require_tool

pytestmark = pytest.mark.e2e

FILE_SIZE = 30 << 20
FOLDER = "console/"
WAIT = 60.0  # seconds any one step may take on a loaded machine
SCREENSHOTS_ENV = "RINGSTORE_SCREENSHOTS"


@pytest.fixture
def cluster_overrides() -> dict[str, Any]:
    return {"block_size": 1 << 20}  # the default: a 30 MiB file in 6 stripes


def chrome(download_dir: Path, profile: Path) -> Any:
    """A headless Chromium under ChromeDriver, downloading into ``download_dir``."""
    options = Options()
    options.binary_location = require_tool("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    service = Service(require_tool("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def status_of(url: str, method: str = "GET") -> int:
    """The status of a request for ``url`` with the admin key (urllib: this runs in a
    thread)."""
    request = urllib.request.Request(url, headers=ADMIN_HEADERS, method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def walk(
    url: str, upload: Path, second: Path, downloads: Path, profile: Path, shots: Path | None
) -> None:
    """The user's walk through the console at ``url`` (blocking: runs in a thread)."""

    def revoke(access_key: str) -> int:
        return status_of(f"{url}/keys/{access_key}", "DELETE")

    driver = chrome(downloads, profile)
    try:
        # A row the page re-renders between finding it and reading it is stale: look again.
        wait = WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException])

        def shot(name: str) -> None:
            if shots is not None:
                driver.save_screenshot(str(shots / f"{name}.png"))

        def log_in(secret: str) -> None:
            driver.find_element(By.ID, "access_key").send_keys(ADMIN[0])
            driver.find_element(By.ID, "secret_key").send_keys(secret)
            driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()

        # A wrong key is refused; the form says so and no page opens.
        driver.get(url + "/ui/")
        wait.until(seen.presence_of_element_located((By.ID, "login")))
        assert driver.current_url == url + "/ui/login"
        shot("login")
        log_in("not-the-secret")
        error = wait.until(seen.presence_of_element_located((By.ID, "login-error")))
        assert "wrong secret" in error.text
        assert not driver.get_cookies()  # no session

        # The right key: the cluster page, seven peers up, the ring drawn.
        log_in(ADMIN[1])
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#peers tr.state-up")) == 7)
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#ring-drawing .arc")))
        assert driver.find_elements(By.CSS_SELECTOR, "#ring-drawing .newcomer-arc")
        (cookie,) = driver.get_cookies()
        assert cookie["name"].startswith("ringstore_session_")
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        assert driver.execute_script("return document.cookie") == ""  # HttpOnly
        shot("cluster")

        # Upload 30 MiB with the file input; the progress bar fills.
        driver.get(f"{url}/ui/upload?prefix={FOLDER}")
        wait.until(seen.presence_of_element_located((By.ID, "file-input"))).send_keys(str(upload))
        assert driver.find_element(By.ID, "name").get_attribute("value") == upload.name
        driver.find_element(By.ID, "upload").click()
        stored = WebDriverWait(driver, 4 * WAIT).until(
            seen.presence_of_element_located((By.ID, "stored"))
        )
        name = FOLDER + upload.name
        assert stored.text == name
        progress = driver.find_element(By.ID, "progress")
        assert progress.get_attribute("value") == progress.get_attribute("max")
        shot("upload")

        # A second file picked takes its own name (the first's stayed: the second upload
        # overwrote the first file); a folder with a ".." segment is refused on the page
        # (the browser would resolve it and store the file elsewhere).
        driver.get(f"{url}/ui/upload?prefix={FOLDER}")
        picker = wait.until(seen.presence_of_element_located((By.ID, "file-input")))
        picker.send_keys(str(upload))
        picker.send_keys(str(second))
        assert driver.find_element(By.ID, "name").get_attribute("value") == second.name
        folder = driver.find_element(By.ID, "folder")
        folder.clear()
        folder.send_keys("console/../elsewhere/")
        driver.find_element(By.ID, "upload").click()
        refused = wait.until(
            seen.presence_of_element_located((By.CSS_SELECTOR, "#upload-result .error"))
        )
        assert '".." segments are not allowed' in refused.text
        assert status_of(f"{url}/files/elsewhere/{second.name}") == 404

        # The folder lists it with its size; its details show the chunk map.
        driver.get(f"{url}/ui/files?prefix={FOLDER}")
        row = wait.until(
            seen.presence_of_element_located((By.CSS_SELECTOR, f'tr.file[data-name="{name}"]'))
        )
        assert row.find_element(By.CSS_SELECTOR, ".size").text == "30.0 MiB"
        shot("files")
        assert not driver.execute_script(  # a last page once showed the text "null"
            "return [...document.getElementById('main').childNodes]"
            ".some((node) => node.nodeType === 3 && node.textContent === 'null')"
        )
        row.find_element(By.CSS_SELECTOR, "a.details").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chunk-map tr.chunk")) == 7)
        chunks = driver.find_elements(By.CSS_SELECTOR, "#chunk-map tr.chunk")
        assert all("healthy" in chunk.get_attribute("class") for chunk in chunks)
        kinds = [chunk.find_elements(By.TAG_NAME, "td")[1].text for chunk in chunks]
        assert kinds == ["data"] * 5 + ["parity"] * 2
        shot("file")

        # Download it: the same bytes.
        driver.find_element(By.ID, "download").click()
        target = downloads / upload.name
        wait.until(lambda _: target.exists() and target.stat().st_size == FILE_SIZE)
        wait.until(lambda _: not list(downloads.glob("*.crdownload")))
        assert _sha256(target) == _sha256(upload)

        # A crafted link with dot segments shows no other file (it showed, and deleted,
        # the file the browser resolved it to).
        driver.get(f"{url}/ui/file?name=console%2Fx%2F..%2F{upload.name}")
        refused = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#main .error")))
        assert '".." segments are not allowed' in refused.text
        assert not driver.find_elements(By.ID, "delete")
        driver.back()
        wait.until(seen.presence_of_element_located((By.ID, "delete")))

        # Delete it, confirming; the listing no longer has it, nor does the API.
        driver.find_element(By.ID, "delete").click()
        wait.until(seen.alert_is_present()).accept()
        wait.until(lambda d: "/ui/files?prefix=" in d.current_url)
        wait.until(seen.presence_of_element_located((By.ID, "crumbs")))
        assert not driver.find_elements(By.CSS_SELECTOR, f'tr.file[data-name="{name}"]')
        assert status_of(f"{url}/files/{name}") == 404

        # Keys (an admin's page): make one, change its grants, revoke it.
        driver.get(url + "/ui/keys")
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#keys tbody tr")))
        driver.find_element(By.ID, "key-name").send_keys("browser-made")
        driver.find_element(By.ID, "key-read").send_keys("console")
        driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
        secret = wait.until(seen.presence_of_element_located((By.ID, "secret-value")))
        assert len(secret.text) >= 40
        made = driver.find_element(By.CSS_SELECTOR, "#new-secret code").text
        row = f'#keys tr[data-key="{made}"]'
        assert driver.find_element(By.CSS_SELECTOR, f"{row} .grants").text == "read: console"
        shot("keys")
        driver.find_element(By.CSS_SELECTOR, f"{row} .edit-grants").click()
        driver.find_element(By.CSS_SELECTOR, f"{row} .grant-write").send_keys("console")
        driver.find_element(By.CSS_SELECTOR, f"{row} .grants-form button").click()
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, f"{row} .grants").text
                == "read: console; write: console"
            )
        )
        # Revoked meanwhile elsewhere: the button says so (it failed without a word).
        assert revoke(made) == 204
        driver.find_element(By.CSS_SELECTOR, f"{row} .revoke").click()
        wait.until(seen.alert_is_present()).accept()
        refused = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, f"{row} .error")))
        assert "no access key" in refused.text
        driver.refresh()
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#keys tbody tr")))
        assert not driver.find_elements(By.CSS_SELECTOR, row)

        # Log out: the session is gone.
        driver.find_element(By.ID, "logout").click()
        wait.until(seen.presence_of_element_located((By.ID, "login")))
        driver.get(url + "/ui/files")
        wait.until(seen.presence_of_element_located((By.ID, "login")))
        assert driver.current_url == url + "/ui/login"
    finally:
        driver.quit()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while piece := file.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


async def test_the_console_in_chromium(cluster: LocalCluster, tmp_path: Path) -> None:
    require_tool("chromium")
    require_tool("chromedriver")
    upload = tmp_path / "thirty-mib.bin"
    await asyncio.to_thread(upload.write_bytes, os.urandom(FILE_SIZE))
    second = tmp_path / "second.txt"
    second.write_bytes(b"the second file")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    shots_dir = os.environ.get(SCREENSHOTS_ENV)
    shots = Path(shots_dir) if shots_dir else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        await asyncio.to_thread(
            walk, cluster[0].url, upload, second, downloads, Path(profile), shots
        )
