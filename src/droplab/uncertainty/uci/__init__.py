"""The UCI regression benchmark of Gal & Ghahramani (2016), as a package.

- :mod:`~droplab.uncertainty.uci.folder`: the data folder layout and its checks.
- :mod:`~droplab.uncertainty.uci.stacked`: K networks trained in one batched step.
- :mod:`~droplab.uncertainty.uci.protocol`: grid, retrain, test, resume.
- :mod:`~droplab.uncertainty.uci.summary`: per-split means and the paired
  comparison with the published numbers.
"""

from droplab.uncertainty.uci.folder import UCIFolder as UCIFolder
from droplab.uncertainty.uci.folder import UCIFormatError as UCIFormatError
from droplab.uncertainty.uci.folder import load_uci_folder as load_uci_folder
from droplab.uncertainty.uci.protocol import ProtocolSettings as ProtocolSettings
from droplab.uncertainty.uci.protocol import run_protocol as run_protocol
from droplab.uncertainty.uci.protocol import run_splits as run_splits
from droplab.uncertainty.uci.summary import summarize as summarize

__all__ = [
    "ProtocolSettings",
    "UCIFolder",
    "UCIFormatError",
    "load_uci_folder",
    "run_protocol",
    "run_splits",
    "summarize",
]
