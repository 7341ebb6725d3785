"""Copy the UCI folder of ``../shared/data/uci-gal2016`` into the package, gzipped.

Usage (from the repository root): ``python tools/pack_uci_data.py [SOURCE]``.

Every file but the README is written as ``NAME.gz`` (gzip level 9, no name and
no time stamp in the header, so packing twice gives the same bytes) under
``src/droplab/_data/uci-gal2016/``; the package's own README there is kept.
``tests/test_packaged_data.py`` checks the packed copy against the source, bit
for bit, whenever the source is beside the checkout.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "src" / "droplab" / "_data" / "uci-gal2016"


def pack(source: Path, target: Path = TARGET) -> int:
    """Write the gzipped copy; returns the number of files written."""
    count = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.name == "README.md":
            continue
        out = target / path.relative_to(source).with_name(path.name + ".gz")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
        count += 1
    return count


if __name__ == "__main__":
    default = ROOT.parent / "shared" / "data" / "uci-gal2016"
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    print(f"packed {pack(source)} files from {source} into {TARGET}")
