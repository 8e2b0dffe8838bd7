"""The HTML report opened in a real browser (headless Chromium): plots and checks are there,
and the page paints. A missing browser fails the test; it is never skipped."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from paychaos.reporting.html import write_html_report
from paychaos.reporting.plots import PLOTS, plot_id

BROWSERS = ("chromium", "chromium-browser")


def chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is needed to check the HTML report: apt-get install chromium")


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}", "--no-first-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_report_renders_in_chromium(tmp_path: Path, journal: dict[str, Any]) -> None:
    browser = chromium()
    report = tmp_path / "report.html"
    write_html_report([("acquirer-slowdown", journal)], "pre-campaign", report)

    dom = headless(browser, tmp_path / "profile", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for spec in PLOTS:
        assert f'id="{plot_id(spec.slug, "acquirer-slowdown")}"' in dom.stdout
    assert 'id="checks-acquirer-slowdown"' in dom.stdout and "acquirer.opens" in dom.stdout

    shot = tmp_path / "report.png"
    painted = headless(browser, tmp_path / "profile", "--window-size=1280,2000", f"--screenshot={shot}", report.as_uri())
    assert painted.returncode == 0 and shot.exists(), painted.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1280, 2000)
    # A blank white page of this size compresses to a few kilobytes; plots and tables do not.
    assert len(png) > 50_000
