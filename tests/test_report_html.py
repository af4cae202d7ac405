"""`tokentrail report --html`: every dashboard's panels in one self-contained page, checked the
way a user sees it: headless Chromium draws the charts with data, offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.chromium import run_chromium
from tests.fixtures.dashboard_seed import NOW, START
from tokentrail.dashboards.panels import DASHBOARDS
from tokentrail.storage.embedded import EmbeddedStore
from tokentrail.storage.reads import reader_name

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHARTS = sum(1 for spec in DASHBOARDS for p in spec.sql_panels if p.kind in ("timeseries", "barchart", "heatmap"))


def tokentrail(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")}
    env["TOKENTRAIL_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "tokentrail", *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )


@pytest.fixture(scope="module")
def report(seeded_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the HTML report of the seed's two weeks, the home it was made from: a copy of the seed)."""
    home = tmp_path_factory.mktemp("report-home")
    shutil.copytree(seeded_home / "clickhouse", home / "clickhouse", symlinks=True)  # Atomic db links
    page = home / "report.html"
    result = tokentrail(home, "report", "--html", str(page), "--since", START.isoformat(), "--until", NOW.isoformat())
    assert result.returncode == 0, result.stderr
    assert f"wrote {page}" in result.stdout
    return page, home


class Elements(HTMLParser):
    """Counts what plotly drew inside each chart container of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[dict[str, int | str]] = []
        self.scripts_with_src = 0
        self.links = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "div" and "chart" in classes:
            self.charts.append(
                {"kind": attributes.get("data-kind") or "", "lines": 0, "points": 0, "bars": 0, "images": 0}
            )
        if tag == "script" and attributes.get("src"):
            self.scripts_with_src += 1
        if tag == "link" and attributes.get("href", "").startswith("http"):
            self.links += 1
        if not self.charts:
            return
        chart = self.charts[-1]
        d = attributes.get("d") or ""
        if tag == "path" and "js-line" in classes and d.count("L") >= 1:
            chart["lines"] = int(chart["lines"]) + 1
        if tag == "path" and "point" in classes:  # a marker
            chart["points"] = int(chart["points"]) + 1
        if tag == "path" and re.match(r"M[\d.]+,[\d.]+V[\d.]+H[\d.]+V", d):  # a bar: a rectangle
            chart["bars"] = int(chart["bars"]) + 1
        if tag == "image" and (attributes.get("xlink:href") or "").startswith("data:image/png"):  # heatmap raster
            chart["images"] = int(chart["images"]) + 1


def test_the_page_is_self_contained(report):
    page, _ = report
    text = page.read_text()
    assert "https://" not in re.sub(r"<script>.*?</script>", "", text, flags=re.S)
    parsed = Elements()
    parsed.feed(text)
    assert parsed.scripts_with_src == 0 and parsed.links == 0
    for spec in DASHBOARDS:
        assert f'id="{spec.uid}"' in text
        for panel in spec.panels:
            assert panel.title.replace("&", "&amp;") in text


def test_chromium_draws_every_chart_with_data(chromium, report):
    page, _ = report
    result = run_chromium(chromium, page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    drawn = Elements()
    drawn.feed(result.stdout)
    assert len(drawn.charts) == CHARTS
    assert sum(int(chart["lines"]) for chart in drawn.charts) >= 10
    for chart in drawn.charts:
        if chart["kind"] == "timeseries":  # a series of one point is a marker without a line
            assert int(chart["lines"]) + int(chart["points"]) >= 1, chart
        elif chart["kind"] == "barchart":
            assert chart["bars"] >= 1, chart
        else:
            assert chart["images"] == 1, chart


def test_the_screenshot_shows_charts_not_a_blank_page(chromium, report, tmp_path):
    page, _ = report
    shot = tmp_path / "report.png"
    result = run_chromium(chromium, page, f"--screenshot={shot}", "--window-size=1400,2400")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 2400)
    # The first dashboard's charts sit in the upper third; plotly's lines, bars and heatmaps
    # in the palette's colors (not the page's greys) must be there, in quantity.
    top = image.crop((0, 300, 1400, 1100))
    palette = {(0x33, 0x66, 0xCC), (0xDC, 0x39, 0x12), (0xFF, 0x99, 0x00)}
    colored = sum(count for count, rgb in top.getcolors(maxcolors=1 << 20) if _near(rgb, palette))
    assert colored > 5000, f"only {colored} chart-colored pixels"


def _near(rgb: tuple[int, int, int], palette: set[tuple[int, int, int]]) -> bool:
    return any(sum(abs(a - b) for a, b in zip(rgb, color, strict=True)) < 40 for color in palette)


def test_the_report_records_its_read(report):
    _, home = report
    store = EmbeddedStore(home / "clickhouse")
    try:
        rows = store.query(
            "SELECT tenant_id, surface, since, until FROM reads WHERE reader = {reader:String}",
            {"reader": reader_name()},
        )
    finally:
        store.close()
    assert rows == [{"tenant_id": "", "surface": "report html", "since": START, "until": NOW}]


def test_one_tenant_and_bad_arguments(seeded_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(seeded_home / "clickhouse", home / "clickhouse", symlinks=True)  # Atomic db links
    page = tmp_path / "globex.html"
    ok = tokentrail(
        home,
        "report",
        "--html",
        str(page),
        "--tenant",
        "globex",
        "--since",
        START.isoformat(),
        "--until",
        NOW.isoformat(),
    )
    assert ok.returncode == 0, ok.stderr
    text = page.read_text()
    assert "tenant globex" in text and "<td>globex</td>" in text and "<td>acme</td>" not in text

    bad = tokentrail(home, "report", "--html", str(page), "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "tokentrail report: --since: not an ISO 8601 timestamp: 'yesterday' (e.g. 2026-03-01T10:00:00Z)"
    )
    backwards = tokentrail(home, "report", "--html", str(page), "--since", "2026-03-02", "--until", "2026-03-01")
    assert backwards.returncode == 2 and "is not before --until" in backwards.stderr
    nowhere = tokentrail(home, "report", "--html", str(tmp_path / "missing" / "r.html"))
    assert nowhere.returncode == 2 and "no such directory" in nowhere.stderr
    neither = tokentrail(home, "report")
    assert neither.returncode == 2 and "choose a report" in neither.stderr
