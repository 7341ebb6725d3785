"""The real quick report, opened in headless Chromium at 390 and 1280 px.

Every figure loads and lies within the window (on a phone, each multi-panel
figure shows its stacked phone version near its own size, not shrunk), nothing
scrolls sideways, the summary of findings comes before the first section with a
row per experiment, and every link resolves.

Skipped cleanly when Chromium is not installed (``.ci/run`` installs Debian's
``chromium``). The page under test is a copy of the report with a probe script
appended; the report itself has no scripts. Headless Chromium lays out a window
narrower than 500 px at 500 px (and a screenshot then crops it), so the page is
opened in an iframe of exactly the width under test, and the probe checks the
width its page was laid out at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from droplab import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  const wide = document.documentElement.scrollWidth > window.innerWidth;
  const summary = document.getElementById("summary");
  const first = document.querySelector("section:not(#summary)");
  const before = summary !== null && first !== null &&
    (summary.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING) !== 0;
  const rows = summary ? summary.querySelectorAll("tbody tr").length : 0;
  // The narrowest summary cell, in % of the table's width (a phone stacks them).
  const table = summary ? summary.querySelector("table.summary") : null;
  const cells = table ? Array.from(table.querySelectorAll("tbody td")) : [];
  const narrowest = cells.length === 0 ? 0 : Math.floor(Math.min(...cells.map(
    (td) => 100 * td.getBoundingClientRect().width / table.getBoundingClientRect().width)));
  const links = Array.from(document.querySelectorAll("a[href]"));
  const broken = links.filter((a) => {
    const href = a.getAttribute("href");
    return !href.startsWith("#") || document.getElementById(href.slice(1)) === null;
  }).length;
  // Figures cut by the window's edge, and the smallest shown / own width, in %.
  const boxes = images.map((img) => img.getBoundingClientRect());
  const cut = boxes.filter((b) => b.left < 0 || b.right > window.innerWidth + 0.5).length;
  const scale = images.length === 0 ? 0 : Math.floor(Math.min(...images.map(
    (img, i) => 100 * boxes[i].width / Math.max(1, img.naturalWidth))));
  const probe = [images.length, loaded, wide ? "wide" : "fits",
    before ? "summary-first" : "summary-late", rows, links.length, broken, narrowest,
    cut, scale, window.innerWidth].join("/");
  document.body.setAttribute("data-probe", probe);
  window.parent.postMessage(probe, "*");  // to the frame around it
});
</script>
</body>"""
PROBED = re.compile(
    r'data-probe="(\d+)/(\d+)/(\w+)/([\w-]+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)"'
)
NARROWEST_WINDOW = 500  # headless Chromium lays out a narrower window at this width
WIDTHS = [390, 1280]


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=180, check=False
    )


EXPERIMENTS = 14  # every figure of the lab, and the forest plot


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`droplab report --preset quick` of every experiment, end to end."""
    out = tmp_path_factory.mktemp("browser") / "report"
    assert cli.main(["report", "--preset", "quick", "--out", str(out)]) == 0
    return out / "index.html"


def _framed(page: Path, width: int, height: int) -> Path:
    """A page holding ``page`` in an iframe exactly ``width`` px wide (the window
    may be wider: see the module's docstring); it takes the probe's message."""
    frame = page.with_name(f"frame-{page.name}")
    frame.write_text(
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe src="{page.name}" style="display:block;border:0;width:{width}px;'
        f'height:{height}px"></iframe><script>window.addEventListener("message", '
        '(e) => document.body.setAttribute("data-probe", e.data));</script>'
        "</body></html>",
        encoding="utf-8",
    )
    return frame


def _probe(html: str, tmp_path: Path, width: int) -> re.Match[str]:
    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(html.replace("</body>", PROBE), encoding="utf-8")
    run = _chromium(
        tmp_path / f"profile-{width}",
        f"--window-size={max(width, NARROWEST_WINDOW)},900",
        "--virtual-time-budget=10000", "--dump-dom", _framed(probe, width, 900).as_uri(),
    )  # fmt: skip
    found = PROBED.search(run.stdout)
    assert found, run.stderr[-2000:]
    assert int(found[11]) == width  # the page was laid out at the width under test
    return found


@pytest.mark.parametrize("width", WIDTHS, ids=["phone", "desktop"])
def test_every_figure_loads_the_page_fits_and_the_summary_comes_first(
    report: Path, tmp_path: Path, width: int
) -> None:
    found = _probe(report.read_text(encoding="utf-8"), tmp_path, width)
    total, loaded, fit, order = int(found[1]), int(found[2]), found[3], found[4]
    rows, links, broken = int(found[5]), int(found[6]), int(found[7])
    assert total == EXPERIMENTS + 1 and loaded == total
    assert fit == "fits"  # no sideways scroll: scrollWidth <= the viewport's width
    assert order == "summary-first" and rows == EXPERIMENTS  # one row each
    assert links >= 2 * EXPERIMENTS and broken == 0  # summary and back links resolve
    cut, scale = int(found[9]), int(found[10])
    assert cut == 0  # every figure lies within the window
    if width == 390:  # shown near its own size: its 8-10 point text stays readable
        assert scale >= 85, scale
    narrowest = int(found[8])
    if width == 390:  # stacked: each cell spans the table, no word-high columns
        assert narrowest >= 95, narrowest
    else:  # three columns side by side
        assert 15 <= narrowest <= 40, narrowest


@pytest.mark.parametrize("width", WIDTHS, ids=["phone", "desktop"])
def test_screenshot(report: Path, tmp_path: Path, width: int) -> None:
    """A screenshot at each width, laid out at that width (set
    DROPLAB_SCREENSHOTS=DIR to keep them)."""
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(report.read_text(encoding="utf-8"), encoding="utf-8")
    shot = tmp_path / f"report-{width}.png"
    run = _chromium(
        tmp_path / "profile",
        f"--window-size={max(width, NARROWEST_WINDOW)},2400",
        "--virtual-time-budget=10000",
        f"--screenshot={shot}",
        _framed(page, width, 2400).as_uri(),
    )
    assert shot.exists(), run.stderr[-2000:]
    with Image.open(shot) as image:
        image.crop((0, 0, width, image.height)).save(shot)  # the frame, no more
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(header[16:20], "big") == width  # the width we asked for
    keep = os.environ.get("DROPLAB_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)


def test_the_probe_notices_a_broken_figure(report: Path, tmp_path: Path) -> None:
    """Guard against a probe that always passes: corrupt one embedded PNG."""
    html = report.read_text(encoding="utf-8").replace(
        'src="data:image/png;base64,iVBOR', 'src="data:image/png;base64,AAAA', 1
    )
    found = _probe(html, tmp_path, 1280)
    assert (int(found[1]), int(found[2])) == (EXPERIMENTS + 1, EXPERIMENTS)


def test_the_probe_notices_a_figure_cut_at_a_phones_edge(
    report: Path, tmp_path: Path
) -> None:
    """The old way: a multi-panel figure at its own size, wider than the phone."""
    html = report.read_text(encoding="utf-8")
    html = re.sub(r'<picture><source media="\(max-width: 600px\)" srcset="[^"]+">',
                  "<picture>", html, count=1)  # fmt: skip
    html = html.replace("</style>", "figure img { max-width: none; }</style>", 1)
    found = _probe(html, tmp_path, 390)
    assert int(found[9]) >= 1


def test_the_probe_notices_a_broken_link_a_wide_page_and_a_late_summary(
    report: Path, tmp_path: Path
) -> None:
    html = report.read_text(encoding="utf-8")
    html = html.replace('href="#masks"', 'href="#nowhere"', 1)
    html = html.replace("</main>", '<div style="width:2000px">wide</div></main>')
    summary = re.search(r'<section id="summary">.*?</section>\n', html, re.S)
    assert summary is not None
    html = html.replace(summary[0], "").replace("</main>", summary[0] + "</main>")
    found = _probe(html, tmp_path, 390)
    assert found[3] == "wide" and found[4] == "summary-late" and int(found[7]) == 1
