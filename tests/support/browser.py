"""Debian's Chromium, driven through Debian's chromedriver (Selenium, W3C WebDriver).

Both come from ``scripts/infra.sh`` (packages ``chromium`` and ``chromium-driver``, one
source package, so their versions always match). The paths are given, so Selenium's
own driver manager never runs and nothing is downloaded. The flags are the ones this
machine needs offline: no background networking, no component updates, no sync, and
a fresh, empty profile per browser.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
DESKTOP, PHONE = 1280, 390
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--lang=zh-CN", "--hide-scrollbars")

T = TypeVar("T")


def _gone(element) -> bool:
    """Whether ``element`` belongs to a page the browser has left (selenium's
    ``staleness_of``, and one more answer that means the same).

    Asked at the very moment the new page replaces the old one, Chromium's driver can
    answer for the old page's node with an "unknown error" ("Node with given id does not
    belong to the document"), not "stale element reference": it failed a test once, in
    CI, with another pytest process beside it."""
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in (exc.msg or ""):
            return True
        raise


class Browser:
    """One Chromium with its own profile (its own cookies): one person at a screen."""

    def __init__(self, base_url: str, width: int = DESKTOP, height: int = 900,
                 javascript: bool = True):
        for path in (CHROMIUM, CHROMEDRIVER):
            if not Path(path).exists():
                raise RuntimeError(f"{path} is missing: run scripts/infra.sh (it installs "
                                   "Debian's chromium and chromium-driver)")
        self.base_url = base_url
        self.profile = tempfile.mkdtemp(prefix="whistle-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        if not javascript:  # a page as a browser without script shows it (2: blocked)
            options.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(30)

    def open(self, path: str) -> Browser:
        self.driver.get(self.base_url + path)
        return self

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fill(self, css: str, text: str) -> None:
        element = self.find(css)
        element.clear()
        element.send_keys(text)

    def submit(self, css: str, timeout: float = 15.0) -> None:
        """Click what sends a form (or follows a link), then wait for the page the server
        answers with. A click returns once the navigation has started: reading at once
        may read the page it came from, whose notice ("已分拣。") or missing element
        then fails the test on a busy machine."""
        page = self.find("html")
        self.find(css).click()
        WebDriverWait(self.driver, timeout).until(lambda _: _gone(page))
        self.wait(lambda: self.driver.execute_script("return document.readyState")
                  == "complete", timeout, "the page answered")

    def text(self, css: str = "body") -> str:
        return self.find(css).text

    def wait(self, condition: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        """``condition()``'s first truthy value, polled every 50 ms."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = condition()
                if value:
                    return value
            except Exception as exc:  # the element is being re-drawn: look again
                last_error = exc
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}"
                             f"{f' (last error: {last_error!r})' if last_error else ''}")

    def sign_in(self, token: str) -> None:
        self.open("/signin")
        self.fill("#token", token)
        self.find("form[action='/signin'] button[type=submit]").click()
        self.wait(lambda: "/signin" not in self.driver.current_url, what="signed in")

    def screenshot(self, name: str, widths: tuple[int, ...] = (DESKTOP, PHONE)) -> list[Path]:
        """The current page at each width (the viewport's own width, as a phone of that
        width shows it), full height, into build/screenshots/."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        paths = []
        for width in widths:
            metrics = {"width": width, "height": 900, "deviceScaleFactor": 1,
                       "mobile": width < 700}
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            height = self.driver.execute_script(
                "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
            metrics["height"] = min(max(int(height), 600), 4000)
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            path = SCREENSHOTS / f"{name}-{width}.png"
            self.driver.save_screenshot(str(path))
            paths.append(path)
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return paths

    def severe_console_errors(self) -> list[str]:
        """What the page's console said at level SEVERE: a CSP violation shows there."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
