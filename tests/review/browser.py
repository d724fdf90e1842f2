"""Headless Debian Chromium under Selenium, for the review page's browser test and its screenshots.

The browser and its driver are the system's (``make system-deps`` installs ``chromium`` and
``chromium-driver`` as root), given to Selenium by path so Selenium Manager never looks for a download.
Every wait has a bound: page loads, scripts and each call to the driver time out rather than hang.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="chromium or chromedriver is absent (make system-deps installs chromium, chromium-driver)",
)
# Seconds: a page load or a script, one call to chromedriver (a hung browser fails the test, never stalls it).
LOAD_S, CALL_S = 30, 60


@contextlib.contextmanager
def chromium(profile: Path, width: int = 1400, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile in ``profile``, its window ``width`` x ``height`` pixels;
    it makes no request of its own (updates, field trials, first-run pages) beyond what the page asks."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.command_executor.client_config.timeout = CALL_S
        driver.set_page_load_timeout(LOAD_S)
        driver.set_script_timeout(LOAD_S)
        yield driver
    finally:
        driver.quit()
