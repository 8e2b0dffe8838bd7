"""The HTML report: one self-contained file, a plot per series with faults shaded, the checks."""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from paychaos.reporting.html import html_report, write_html_report
from paychaos.reporting.plots import PLOTS, plot_id

SLUGS = ["throughput", "error-ratio", "p99", "breaker", "consumer-lag"]


class _Document(HTMLParser):
    """Every element's tag and attributes, to ask what the page holds without a browser."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


def parse(text: str) -> list[tuple[str, dict[str, str | None]]]:
    document = _Document()
    document.feed(text)
    return document.elements


@pytest.fixture(scope="module")
def report(_journal_data: dict[str, Any]) -> str:
    return html_report([("acquirer-slowdown", _journal_data), ("zone-loss-az-a", None)], "pre-campaign")


def test_every_plot_is_an_inline_svg_with_a_stable_id(report: str) -> None:
    assert [p.slug for p in PLOTS] == SLUGS
    svgs = {attrs.get("id") for tag, attrs in parse(report) if tag == "svg"}
    assert {plot_id(slug, "acquirer-slowdown") for slug in SLUGS} <= svgs
    assert 'class="plot"' in report


def test_the_checks_table_has_every_check(report: str) -> None:
    table = report.split('<table id="checks-acquirer-slowdown" class="checks">', 1)[1].split("</table>", 1)[0]
    assert table.count('<tr class="check-passed">') == 16
    assert "<code>breaker/acquirer.opens</code>" in table and "breaker open after 5.8s" in table
    assert "&lt;= 15s" in table  # thresholds are escaped text
    assert "<details><summary>evidence</summary>" in table


def test_fault_windows_are_shaded(report: str) -> None:
    throughput = report.split(f'<svg id="{plot_id("throughput", "acquirer-slowdown")}"', 1)[1].split("</svg>", 1)[0]
    assert "fill: #f4a261" in throughput
    assert "slowDownstream on proxy acquirer: latency +3000ms ±200ms, at 15 s for 30 s" in report


def test_the_page_needs_no_network(report: str) -> None:
    elements = parse(report)
    assert not [tag for tag, _ in elements if tag in ("script", "link", "img", "iframe")]
    assert not [attrs for _, attrs in elements if "src" in attrs]
    # Namespace names in the SVG are identifiers, not fetched; nothing else may point outside.
    outside = re.findall(r"https?://[^\s\"'<>)]+", report)
    assert {u for u in outside if not u.startswith(("http://www.w3.org/", "http://purl.org/", "http://creativecommons.org/", "https://matplotlib.org/"))} == set()


def test_ids_are_unique_across_plots(report: str) -> None:
    ids = Counter(attrs["id"] for _, attrs in parse(report) if attrs.get("id"))
    assert [i for i, n in ids.items() if n > 1] == []
    references = set(re.findall(r"url\(#([^)]+)\)", report))
    assert references and references <= set(ids)


def test_a_run_without_a_journal_has_its_section(report: str) -> None:
    section = report.split('<section class="experiment" id="experiment-zone-loss-az-a">', 1)[1]
    assert "no journal" in section and "no check was judged" in section
    assert 'id="plot-throughput-zone-loss-az-a"' not in report


def test_text_from_the_journal_is_escaped(journal: dict[str, Any]) -> None:
    journal["paychaos"]["checks"][0]["detail"] = "<script>alert(1)</script>"
    text = html_report([("acquirer-slowdown", journal)], "<b>gate</b>")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>gate</b>" not in text


def test_series_a_run_did_not_measure_say_so(journal: dict[str, Any]) -> None:
    for sample in journal["paychaos"]["samples"]:
        sample["consumer_lag:campaign"] = sample["backlog:outbox"] = None
    text = html_report([("acquirer-slowdown", journal)], "gate")
    lag = text.split(f'<svg id="{plot_id("consumer-lag", "acquirer-slowdown")}"', 1)[1].split("</svg>", 1)[0]
    assert "not measured in this run" in lag


def test_the_report_is_the_same_for_the_same_journals(report: str, _journal_data: dict[str, Any]) -> None:
    assert html_report([("acquirer-slowdown", _journal_data), ("zone-loss-az-a", None)], "pre-campaign") == report


def test_written_to_a_path(tmp_path: Path, journal: dict[str, Any]) -> None:
    path = tmp_path / "out" / "report.html"
    write_html_report([("acquirer-slowdown", journal)], "gate", path)
    assert path.read_text(encoding="utf-8").startswith("<!doctype html>")
