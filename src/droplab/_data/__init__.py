"""Data that ship inside the package, found with :mod:`importlib.resources`.

``uci-gal2016/``: the five UCI regression data sets in the layout of
:mod:`droplab.uncertainty.uci.folder`, every file gzipped (``data.txt.gz``, ...; the loader
reads ``NAME.gz`` where ``NAME`` is absent). Sources and licences are in that
folder's README.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["shipped_uci_datasets", "uci_data_dir"]

UCI_FOLDER = "uci-gal2016"


def uci_data_dir() -> Path:
    """The packaged UCI folder (one sub-folder per data set).

    A regular install (wheel, editable or source tree) keeps package data as
    files on disk, which is what the loader and the worker processes (they get
    the folder's path) need; a zipped install is refused with a clear message.
    """
    folder = resources.files(__name__).joinpath(UCI_FOLDER)
    if not isinstance(folder, Path):  # pragma: no cover - zipimport only
        raise RuntimeError(
            f"droplab's UCI data are inside an archive ({folder}); install droplab "
            "unzipped, or pass --data DIR / set DROPLAB_UCI_DATA"
        )
    return folder


def shipped_uci_datasets() -> list[str]:
    """Names of the packaged UCI data sets, sorted.

    >>> shipped_uci_datasets()
    ['bostonHousing', 'concrete', 'energy', 'wine-quality-red', 'yacht']
    """
    return sorted(p.name for p in uci_data_dir().iterdir() if p.is_dir())
