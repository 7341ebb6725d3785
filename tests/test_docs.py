"""The docs site builds offline, with no warning and no broken link or cross-reference:
the guides (docs/*.md) beside the API reference (docs/reference/).

``mkdocs build --strict`` turns every warning (griffe's docstring checks, a
``:::`` that names no module, a link or cross-reference that resolves to
nothing) into a failure. The docs tools are in the ``test`` extra, so CI runs
this; the skip is only for an environment installed without them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


DOCS_TOOLS = pytest.mark.skipif(
    importlib.util.find_spec("mkdocstrings_handlers") is None
    or importlib.util.find_spec("mkdocs") is None,
    reason='the docs tools are not installed (pip install ".[docs]")',
)


@DOCS_TOOLS
def test_the_api_reference_builds_without_warnings(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    nn = (tmp_path / "reference" / "dropout.html").read_text(encoding="utf-8")
    assert "droplab.nn.Dropout" in nn and "keep_threshold" in nn
    uci = (tmp_path / "reference" / "uci.html").read_text(encoding="utf-8")
    assert "load_uci_folder" in uci and "shipped_uci_datasets" in uci
    for page in tmp_path.rglob("*.html"):  # Sphinx roles became inline code
        assert ":class:`" not in page.read_text(encoding="utf-8"), page.name
    # every guide is a page of the site, linked from its home page (and in the
    # nav: the strict build fails on a page left out of it)
    home = (tmp_path / "index.html").read_text(encoding="utf-8")
    for guide in sorted((ROOT / "docs").glob("*.md")):
        if guide.name == "index.md":
            continue
        assert (tmp_path / guide.with_suffix(".html").name).exists(), guide.name
        assert f'href="{guide.with_suffix(".html").name}"' in home, guide.name


def _build_one_page(tmp_path: Path, page: str) -> subprocess.CompletedProcess[str]:
    """The strict build of the project's configuration on one page, ``page``."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    config = config.replace("docs_dir: docs\n", "docs_dir: pages\n")
    config = config.replace("paths: [src]", f"paths: [{ROOT / 'src'}]")
    config = config.replace("- docs/", f"- {ROOT / 'docs'}/")
    config = config.split("nav:")[0] + "plugins:" + config.split("plugins:")[1]
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "index.md").write_text(page, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
         str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@DOCS_TOOLS
@pytest.mark.parametrize(
    ("page", "named"),
    [
        ("See [the module][droplab.no_such_module].", "droplab.no_such_module"),
        ("See [the other guide](no-such-guide.md).", "no-such-guide.md"),
    ],
    ids=["cross-reference", "link-between-guides"],
)
def test_the_strict_build_fails_on_a_broken_reference(
    tmp_path: Path, page: str, named: str
) -> None:
    """Guard against a check that always passes: one page, one dangling reference
    (to the API, or to another guide)."""
    run = _build_one_page(tmp_path, f"# Broken\n\n{page}\n")
    assert run.returncode != 0
    assert named in run.stdout + run.stderr
