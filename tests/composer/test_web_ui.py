"""The web UI end to end in Debian's chromium (headless), driven by selenium through Debian's
chromedriver: the seed's web-console update (edit the blueprint's packages with the search box,
"+", "Commit" bumps the version, "Create Image" edge-commit with the previous commit as parent,
watch it finish, download it), against a real ``atomicedge composer serve`` on 127.0.0.1 with
a token. Builds are real (``test`` profile, offline apt repository); the parent repository is
the first compose's tar, served over HTTP on loopback as the seed serves its commit.

Elements are found by their label or accessible name (XPath on ``label``/``aria-label``), and
chromium's computed accessible name is checked for the controls the user acts on.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.composer.conftest import (
    Server,
    blueprint,
    push,
    start_compose,
    wait_for,
    wait_state,
)

REF = "debian/12/x86_64/edge"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1500")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Debian's chromium through Debian's chromedriver; every process is stopped by PID."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    service = Service("/usr/bin/chromedriver", log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    started = [service.process.pid, *_descendants(service.process.pid)]
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                               {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver
    finally:
        started += _descendants(service.process.pid)
        driver.quit()
        for pid in started:                      # whatever quit() left behind
            try:
                if b"chrom" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass


@pytest.fixture
def repo_http(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """Serve a directory over HTTP on 127.0.0.1 (the seed's ``python3 -m http.server``)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(root: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(root))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# ---- finding things the way a user (or a screen reader) does ------------------------------

def by_label(driver: WebDriver, label: str) -> WebElement:
    """The visible form field labelled ``label`` (views open after an API call: wait)."""
    lab = driver.find_element(By.XPATH, f"//label[normalize-space()={_xq(label)}]")
    field = driver.find_element(By.ID, lab.get_attribute("for"))
    wait_for(field.is_displayed, 30, f"the field {label!r} shown")
    assert field.accessible_name == label
    return field


def button(driver: WebDriver, name: str, scope: WebElement | None = None) -> WebElement:
    """A visible button whose accessible name is ``name`` (aria-label or its text)."""
    root: Any = scope or driver
    xpath = (f".//button[@aria-label={_xq(name)} or "
             f"(not(@aria-label) and normalize-space()={_xq(name)})]")

    def visible() -> WebElement | None:
        for el in root.find_elements(By.XPATH, xpath):
            if el.is_displayed() and el.is_enabled():
                return el
        return None
    el = wait_for(visible, 30, f"button {name!r}")
    assert el.accessible_name == name
    assert el.aria_role == "button"
    return el


def _xq(text: str) -> str:
    return f'"{text}"' if '"' not in text else f"'{text}'"


def text_of(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def alert_text(driver: WebDriver) -> str:
    box = driver.find_element(By.ID, "alert")
    return box.text if box.is_displayed() else ""


def script_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Errors the page's scripts raised or logged (network status lines are the API's own
    error answers, which the page shows)."""
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and e.get("source") != "network"]


# ---- the test -----------------------------------------------------------------------------

def _first_compose(api: Any, tmp_path: Path) -> tuple[str, Path]:
    """v1 over the API (the previous compose), its tar unpacked: (commit, repo dir)."""
    push(api, blueprint("gateway", "1.0.0"))
    build = start_compose(api, "gateway")
    state = wait_state(api, build, ("FINISHED", "FAILED"), 240)
    assert state["queue_status"] == "FINISHED", api.text(f"compose/log/{build}")
    api.download(f"compose/image/{build}", tmp_path / "v1.tar")
    with tarfile.open(tmp_path / "v1.tar") as tar:
        tar.extractall(tmp_path / "v1")
    commit = json.loads((tmp_path / "v1" / "compose.json").read_text())["ostree-commit"]
    return commit, tmp_path / "v1"


def test_browser_adds_a_package_commits_and_builds_an_update_on_the_previous_commit(
        servers: Callable[..., Server], browser: webdriver.Chrome, repo_http: Callable[[Path], str],
        tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    (tmp_path / "token").write_text(token + "\n")
    port = _free_port()
    srv = servers(workers=1, extra=("--listen", f"127.0.0.1:{port}",
                                    "--token-file", str(tmp_path / "token"))).start()
    api = srv.client()
    parent, v1_dir = _first_compose(api, tmp_path)
    repo_url = repo_http(v1_dir) + "/repo/"

    drv = browser
    drv.get(f"http://127.0.0.1:{port}/ui/#token={token}")
    wait_for(lambda: drv.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), 30,
             "the UI to load")
    assert "token" not in drv.current_url                 # dropped from the address bar
    assert "weldr API v1" in text_of(drv, "server")
    row = drv.find_element(By.XPATH, "//tr[@data-blueprint='gateway']")
    assert "1.0.0" in row.text and "composer test image" in row.text

    # Edit packages: search the apt sources, "+" the package, the chip appears.
    button(drv, "Edit blueprint gateway").click()
    search = by_label(drv, "Filter packages by name")
    search.send_keys("agent", Keys.ENTER)
    result = wait_for(lambda: drv.find_elements(By.XPATH, "//tr[@data-package='edge-agent']"),
                      30, "edge-agent in the search results")[0]
    assert result.find_element(By.XPATH, "./td[1]").text == "1.0"
    assert re.match(r"\d+ packages? match(es)? agent", text_of(drv, "search-note"))
    assert result.find_element(By.XPATH, "./td[2]").text          # the package's summary
    button(drv, "Add edge-agent", result).click()
    chips = drv.find_element(By.ID, "selected-packages")
    assert {li.text.split()[0] for li in chips.find_elements(By.TAG_NAME, "li")} == \
        {"edge-hello", "edge-agent"}
    assert by_label(drv, "User name") and "admin" in drv.find_element(By.ID, "user-rows").text
    by_label(drv, "Firewall ports").send_keys("8080:tcp")

    # Commit, confirm in the dialog: the version bumps in the page and over the API.
    assert text_of(drv, "editor-version") == "1.0.0"
    button(drv, "Commit").click()
    dialog = drv.find_element(By.ID, "commit-dialog")
    assert "add package edge-agent" in dialog.text
    button(drv, "Commit", dialog).click()
    wait_for(lambda: text_of(drv, "editor-version") == "1.0.1", 30, "version 1.0.1 in the page")
    assert "1.0.0 → 1.0.1" in text_of(drv, "notice")
    bp = api.get("blueprints/info/gateway")["blueprints"][0]
    assert bp["version"] == "1.0.1"
    assert {p["name"] for p in bp["packages"]} == {"edge-hello", "edge-agent"}
    assert bp["customizations"]["firewall"]["ports"] == ["8080:tcp"]
    assert bp["customizations"]["kernel"]["name"] == "edge-test-kernel"   # kept as it was
    assert bp["customizations"]["user"][0]["password"].startswith("$6$")  # hash kept

    # Create image: a parent commit without a repository URL is refused with its error id.
    button(drv, "Create image").click()
    Select(by_label(drv, "Type")).select_by_value("edge-commit")
    assert Select(by_label(drv, "Blueprint")).first_selected_option.text == "gateway"
    by_label(drv, "Parent commit").send_keys(parent)
    image_dialog = drv.find_element(By.ID, "image-dialog")
    button(drv, "Create", image_dialog).click()
    error = wait_for(lambda: (e := drv.find_element(By.ID, "image-error")).is_displayed()
                     and e.text, 30, "the dialog's error")
    assert "ManifestCreationFailed" in error and "no URL" in error, error
    by_label(drv, "Ref").send_keys(REF)
    by_label(drv, "Repository URL").send_keys(repo_url)
    button(drv, "Create", image_dialog).click()
    queued = wait_for(lambda: re.search(r"Compose ([0-9a-f-]{36}) queued",
                                        text_of(drv, "notice")), 60, "the compose queued")
    build = queued.group(1)
    assert not image_dialog.is_displayed()

    # Watch it: RUNNING with a progress bar, then FINISHED, without reloading the page.
    short = build[:8]
    seen: set[str] = set()

    def status() -> str | None:
        try:
            badge = drv.find_element(By.XPATH, f"//tr[@data-compose-id='{build}']"
                                               "//span[@data-status]")
            st = badge.get_attribute("data-status")
            name = badge.accessible_name
            badge.is_enabled()      # stale (the next poll replaced it) -> read again
            if not name:
                return None
            assert name == f"Status of compose {short}: {st}"
            if st == "RUNNING" and drv.find_elements(
                    By.XPATH, f"//progress[@aria-label='Progress of compose {short}']"):
                seen.add("progress")
        except (StaleElementReferenceException, IndexError):
            return None
        seen.add(str(st))
        return st if st in ("FINISHED", "FAILED") else None

    final = wait_for(status, 240, "the compose to end in the page")
    assert final == "FINISHED", api.text(f"compose/log/{build}")
    assert {"RUNNING", "progress"} <= seen, seen
    info = api.get(f"compose/info/{build}")
    assert info["queue_status"] == "FINISHED" and info["blueprint"]["version"] == "1.0.1"

    # The log view shows the build's log.
    button(drv, f"Show log of compose {short}").click()
    wait_for(lambda: f"commit {info['commit']} on {REF}" in text_of(drv, "log-text"), 30,
             "the log in the page")

    # Download through the page (bearer token, streamed into a file) and check the tar.
    button(drv, f"Download image of compose {short}").click()
    downloads = tmp_path / "downloads"
    tar_path = wait_for(lambda: [p for p in downloads.iterdir() if p.name.endswith(".tar")
                                 and not p.name.endswith(".crdownload")], 60,
                        "the downloaded tar")[0]
    wait_for(lambda: "Downloaded" in text_of(drv, "notice"), 30, "the download to finish")
    assert tar_path.name == f"{build}-commit.tar"
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "v2")
    assert "compose.json" in names and "repo/config" in names
    meta = json.loads((tmp_path / "v2" / "compose.json").read_text())
    assert meta["ostree-commit"] == info["commit"] and meta["ref"] == REF
    assert meta["ostree-version"] == "1.0.1" and meta["ostree-parent"] == parent
    shown = subprocess.run(["ostree", f"--repo={tmp_path / 'v2' / 'repo'}", "log", REF],
                           capture_output=True, text=True, check=False).stdout
    assert info["commit"] in shown and parent in shown
    ls = subprocess.run(["ostree", f"--repo={tmp_path / 'v2' / 'repo'}", "ls", REF,
                         "/usr/bin/edge-agent"], capture_output=True, text=True, check=True)
    assert "edge-agent" in ls.stdout

    # The blueprint list shows the new version; no error banner anywhere.
    button(drv, "Back to blueprints").click()
    wait_for(lambda: "1.0.1" in drv.find_element(
        By.XPATH, "//tr[@data-blueprint='gateway']").text, 30, "1.0.1 in the list")
    assert alert_text(drv) == ""
    assert not script_errors(drv)
    drv.save_screenshot(str(tmp_path / "web-ui.png"))
    assert (tmp_path / "web-ui.png").stat().st_size > 10_000


def test_browser_without_the_token_is_told_how_to_pass_it(
        servers: Callable[..., Server], browser: webdriver.Chrome, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(secrets.token_urlsafe(24) + "\n")
    port = _free_port()
    servers(workers=0, extra=("--listen", f"127.0.0.1:{port}",
                              "--token-file", str(tmp_path / "token"))).start()
    browser.get(f"http://127.0.0.1:{port}/ui/#token=wrong-token-0123456789")
    text = wait_for(lambda: alert_text(browser), 30, "the error banner")
    assert "API token is missing or wrong" in text and "#token=" in text, text
    assert "401" in text
    assert text_of(browser, "server") == "not connected"
