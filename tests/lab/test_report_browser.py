"""The real quick report, opened in headless Chromium: every figure loads, no sideways scrolling on a phone.

Skipped cleanly when Chromium is not installed (``.ci/run`` installs Debian's
``chromium``). The page under test is a copy of the report with a probe script
appended; the report itself has no scripts.
"""

from __future__ import annotations

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
  const wide = document.documentElement.scrollWidth > window.innerWidth + 1;
  document.body.setAttribute("data-probe", images.length + "/" + loaded + "/" + (wide ? "wide" : "fits"));
});
</script>
</body>"""


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


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`droplab report --preset quick` for two experiments, end to end."""
    out = tmp_path_factory.mktemp("browser") / "report"
    status = cli.main(
        ["report", "--preset", "quick", "--only", "masks,gradients", "--out", str(out)]
    )
    assert status == 0
    return out / "index.html"


@pytest.mark.parametrize("width", [390, 1200], ids=["phone", "desktop"])
def test_every_figure_loads_and_the_page_fits(
    report: Path, tmp_path: Path, width: int
) -> None:
    probe = tmp_path / "probe.html"
    probe.write_text(
        report.read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8"
    )
    run = _chromium(
        tmp_path / "profile", f"--window-size={width},900", "--virtual-time-budget=10000",
        "--dump-dom", probe.as_uri(),
    )  # fmt: skip
    found = re.search(r'data-probe="(\d+)/(\d+)/(\w+)"', run.stdout)
    assert found, run.stderr[-2000:]
    total, loaded, fit = int(found[1]), int(found[2]), found[3]
    assert total == 2 and loaded == total
    assert fit == "fits"


def test_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run = _chromium(
        tmp_path / "profile",
        "--window-size=390,2400",
        f"--screenshot={shot}",
        report.as_uri(),
    )
    assert shot.exists(), run.stderr[-2000:]
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(header[16:20], "big") == 390  # the phone width we asked for


def test_the_probe_notices_a_broken_figure(report: Path, tmp_path: Path) -> None:
    """Guard against a probe that always passes: corrupt one embedded PNG."""
    html = report.read_text(encoding="utf-8").replace("base64,iVBOR", "base64,AAAA", 1)
    probe = tmp_path / "broken.html"
    probe.write_text(html.replace("</body>", PROBE), encoding="utf-8")
    run = _chromium(
        tmp_path / "profile",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    )
    found = re.search(r'data-probe="(\d+)/(\d+)/(\w+)"', run.stdout)
    assert found, run.stderr[-2000:]
    assert (int(found[1]), int(found[2])) == (2, 1)
