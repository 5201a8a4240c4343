"""Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium, or a skip that says why not.

The browser comes from the distribution (scripts/install_browser.sh, run by ./dev test), never
from a download at test time: Selenium is given the system chromedriver and chromium binary, so
Selenium Manager has nothing to fetch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
FLAGS = (
    "--headless",
    "--no-sandbox",  # runs as root in CI; the sandbox needs an unprivileged user namespace
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)


def _executable(names: tuple[str, ...], fallback: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return fallback if os.access(fallback, os.X_OK) else None


def start_chromium(profile: Path) -> WebDriver:
    """A headless Chromium, or pytest.skip naming what is missing (never a failure for that)."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (it is a dev dependency: ./dev sets it up)")
    chromium = _executable(("chromium", "chromium-browser"), "/usr/bin/chromium")
    driver_path = _executable(("chromedriver",), "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed and could not be "
            "(scripts/install_browser.sh installs them as root with apt; ./dev test runs it)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    try:
        return webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.skip(f"headless Chromium could not start here: {exc.msg}")


def screenshot(driver: WebDriver, name: str, directory: Path) -> Path:
    """A PNG of the whole page in `directory`; also into docs/screenshots/ when
    CHARTGATE_UPDATE_SCREENSHOTS=1 (so an ordinary test run leaves the committed ones alone)."""
    width = 1280
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(max(height + 120, 600), 4000))
    time.sleep(0.2)  # let the resized page lay out before the capture
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(width, 900)
    if os.environ.get("CHARTGATE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)
    return path


def fresh_profile() -> Path:
    return Path(tempfile.mkdtemp(prefix="chartgate-chromium-"))


def page_text(driver: WebDriver) -> str:
    from selenium.webdriver.common.by import By

    text: Any = driver.find_element(By.TAG_NAME, "main").text
    return str(text)
