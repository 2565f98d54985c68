"""The dashboard in a real browser: a real daemon with its TLS listener (``--listen``) on a free
port, the example project (examples/jupiter.yaml, on the suite's own image, so no registry), and
Debian's chromium, headless, driven by selenium through Debian's chromedriver (never one that
selenium-manager would download).

One daemon and one browser serve the whole module (starting them costs seconds on a loaded
machine); each test signs in afresh: its cookies cleared, a new one-time link from
``mariposa ui``, opened in the browser.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import IMAGE, MARIPOSA, ROOT, Daemon
from tests.integration.test_remote import free_port, grant, make_token

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
ARTIFACTS = ROOT / "tests" / "artifacts"
PROJECT = "jupiter"
VIEWER = "victor"
EXAMPLE = ROOT / "examples" / "jupiter.yaml"


@pytest.fixture(scope="session", autouse=True)
def docker_engine(docker_images):
    """The example runs on the real Docker Engine, with the suite's own images built."""


class Dash:
    """The daemon behind the dashboard and what the tests know about it."""

    def __init__(self, daemon: Daemon, port: int, viewer_token: str) -> None:
        self.daemon, self.port, self.viewer_token = daemon, port, viewer_token
        self.base = f"https://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def signin_url(self) -> str:
        """A fresh one-time link, as ``mariposa ui`` prints it (the daemon's socket's user: root)."""
        out = self.daemon.cli("ui").stdout.strip().splitlines()
        url = out[-1].strip()
        assert url.startswith(self.base + "/ui/signin?code="), out
        return url


@pytest.fixture(scope="module")
def dash(tmp_path_factory) -> Iterator[Dash]:
    """A daemon on TLS whose store knows a viewer, running the example project."""
    tmp = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    d = Daemon(tmp).start()
    try:
        d.kill(signal.SIGTERM)
        grant(d.state_dir, VIEWER, "viewer")  # the policy reads users and bindings at start
        d.start("--listen", f"127.0.0.1:{port}")
        assert IMAGE in EXAMPLE.read_text(), "the example runs on the suite's image (tests/integration/images.py)"
        # the example itself, named as the README's run names it (the project page shows the name)
        r = subprocess.run([MARIPOSA, "project", "add", PROJECT, str(EXAMPLE.relative_to(ROOT)), "--wait"], cwd=ROOT,
                           env={**os.environ, "MARIPOSA_SOCKET": d.socket}, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"project add exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        yield Dash(d, port, make_token(d, VIEWER, "--name", "browser-test"))
    finally:
        d.cleanup()


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver (tests/run.sh does)",
                        pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--ignore-certificate-errors", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    # the console (CSP refusals show there) and the network (what the pages ask for)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # Debian's driver, by path: selenium-manager is never asked (it would download one)
    service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(90)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def signed_in(browser, dash):
    """The browser signed in as root through a fresh one-time link; on the overview."""
    from selenium.webdriver.common.by import By

    browser.get(dash.url("/ui/signin"))  # cookies can only be cleared on the dashboard's own origin
    browser.delete_all_cookies()
    browser.get(dash.signin_url())
    wait_for(browser, lambda: browser.find_elements(By.ID, "overview"), what="the overview after sign-in")
    return browser


def sign_in_with_token(browser, dash: Dash, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(dash.url("/ui/signin"))
    browser.delete_all_cookies()
    browser.get(dash.url("/ui/signin"))
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/signin'] button[type=submit]").click()
    wait_for(browser, lambda: browser.find_elements(By.ID, "overview"), what="the overview after a token sign-in")


def wait_for(browser, predicate, timeout: float = 20, interval: float = 0.05, what: str = "condition"):
    """``predicate()``'s first truthy value, polled; a clear failure with the page's URL otherwise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - a stale element while htmx swaps: look again
            last, value = exc, None
        if value:
            return value
        time.sleep(interval)
    try:
        shown = browser.execute_script("return (document.querySelector('main') || document.body).innerText;")
    except Exception as exc:  # noqa: BLE001 - the message says what it can
        shown = f"(unreadable: {exc!r})"
    raise AssertionError(f"timed out after {timeout} s waiting for {what} on {browser.current_url}"
                         + (f" (last error: {last!r})" if last else "") + f"; the page shows:\n{shown[:1500]}")


LIVE = """
    const streams = [...document.querySelectorAll('[sse-connect]')];
    return streams.length > 0 && streams.every(e => {
      const data = e['htmx-internal-data'];  // htmx's own, where its SSE extension keeps the EventSource
      return data && data.sseEventSource && data.sseEventSource.readyState === 1;
    });
"""


def live(browser, timeout: float = 20) -> None:
    """Until the page's server-sent events stream is open: the server follows from then on, so a
    change made now reaches the page (one made before would be in the page already, or missed)."""
    wait_for(browser, lambda: browser.execute_script(LIVE), timeout=timeout, what="the page's event stream open")


def screenshot(browser, name: str) -> Path:
    """The page as the browser shows it, to tests/artifacts/NAME.png (not committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    browser.save_screenshot(str(path))
    if name == "project" and os.environ.get("MARIPOSA_DASHBOARD_PNG") == "1":
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(path, docs / "dashboard.png")  # the README's picture; committed once, by hand
    return path


def requested(browser) -> list[str]:
    """The URLs the browser asked for since the last call (Chrome's performance log)."""
    import json

    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def axe_violations(browser) -> list[dict]:
    """axe-core (vendored from npm) run in the page: its violations, each id/impact/help/nodes."""
    browser.execute_script(AXE.read_text())
    return browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document).then(
          r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                             nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))),
          e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
    """)
