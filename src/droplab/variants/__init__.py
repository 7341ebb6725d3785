"""The dropout family on droplab's (seed, offset) contract: one file per variant.

A private package, and the registry of the family: ``MODULES`` and
``FUNCTIONS`` name what :mod:`droplab.nn` and :mod:`droplab.functional`
re-export (tests/variants/test_exports.py holds the façades to this list).
Adding a variant: its file here (function and module side by side, a header
citing the paper), its names in the imports and tuples below, and the same
re-export lines in the two façades. Model transforms (``weight_scaled``,
``mc_dropout``) need no change: they ask the module. See docs/variants.md for
the map to PyTorch, Keras and Flax and for which variants save nothing for
backward.
"""

from droplab.variants.alpha import AlphaDropout as AlphaDropout
from droplab.variants.alpha import FeatureAlphaDropout as FeatureAlphaDropout
from droplab.variants.alpha import alpha_dropout as alpha_dropout
from droplab.variants.alpha import feature_alpha_dropout as feature_alpha_dropout
from droplab.variants.channel import Dropout1d as Dropout1d
from droplab.variants.channel import Dropout2d as Dropout2d
from droplab.variants.channel import Dropout3d as Dropout3d
from droplab.variants.channel import dropout1d as dropout1d
from droplab.variants.channel import dropout2d as dropout2d
from droplab.variants.channel import dropout3d as dropout3d
from droplab.variants.channel import (
    shared_dims_from_noise_shape as shared_dims_from_noise_shape,
)
from droplab.variants.concrete import ConcreteDropout as ConcreteDropout
from droplab.variants.concrete import concrete_dropout as concrete_dropout
from droplab.variants.dropblock import DropBlock2d as DropBlock2d
from droplab.variants.dropblock import drop_block2d as drop_block2d
from droplab.variants.dropconnect import DropConnectLinear as DropConnectLinear
from droplab.variants.dropconnect import drop_connect_linear as drop_connect_linear
from droplab.variants.droppath import DropPath as DropPath
from droplab.variants.droppath import drop_path as drop_path
from droplab.variants.droppath import linear_drop_rates as linear_drop_rates
from droplab.variants.gaussian import GaussianDropout as GaussianDropout
from droplab.variants.gaussian import gaussian_dropout as gaussian_dropout
from droplab.variants.locked import LockedDropout as LockedDropout
from droplab.variants.locked import locked_dropout as locked_dropout
from droplab.variants.weight_drop import WeightDropLSTM as WeightDropLSTM

MODULES = (
    "AlphaDropout",
    "ConcreteDropout",
    "DropBlock2d",
    "DropConnectLinear",
    "DropPath",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "LockedDropout",
    "WeightDropLSTM",
)
FUNCTIONS = (
    "alpha_dropout",
    "concrete_dropout",
    "drop_block2d",
    "drop_connect_linear",
    "drop_path",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "linear_drop_rates",
    "locked_dropout",
    "shared_dims_from_noise_shape",
)

__all__ = [*MODULES, *FUNCTIONS]
