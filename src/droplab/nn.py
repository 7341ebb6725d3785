"""Dropout and the dropout family as modules: ``droplab.nn``.

A façade (re-exports only): :class:`Dropout` is a drop-in for
``torch.nn.Dropout`` that owns its stream (:mod:`droplab._core.dropout`);
:class:`StochasticModule` is the base of every module that draws
(:mod:`droplab._core.module`); :func:`mc_dropout` turns sampling on in the
dropout modules of a model, and only in them (:mod:`droplab._core.modes`);
the variants live one per file under :mod:`droplab.variants`, whose registry
(``MODULES``) lists every module below. Library code never imports this module.

- Paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout:
  a simple way to prevent neural networks from overfitting", JMLR 15, 2014.
  https://jmlr.org/papers/v15/srivastava14a.html
- Monte-Carlo dropout: Gal and Ghahramani, "Dropout as a Bayesian
  approximation", ICML 2016. https://proceedings.mlr.press/v48/gal16.html
"""

from droplab._core.dropout import Dropout as Dropout
from droplab._core.modes import mc_dropout as mc_dropout
from droplab._core.module import StochasticModule as StochasticModule
from droplab.interop.kinds import DROPOUT_TYPES as DROPOUT_TYPES
from droplab.variants import MODULES
from droplab.variants import AlphaDropout as AlphaDropout
from droplab.variants import ConcreteDropout as ConcreteDropout
from droplab.variants import DropBlock2d as DropBlock2d
from droplab.variants import DropConnectLinear as DropConnectLinear
from droplab.variants import Dropout1d as Dropout1d
from droplab.variants import Dropout2d as Dropout2d
from droplab.variants import Dropout3d as Dropout3d
from droplab.variants import DropPath as DropPath
from droplab.variants import FeatureAlphaDropout as FeatureAlphaDropout
from droplab.variants import GaussianDropout as GaussianDropout
from droplab.variants import LockedDropout as LockedDropout
from droplab.variants import WeightDropLSTM as WeightDropLSTM

# The names of the variants come from their registry, droplab.variants.MODULES.
__all__ = ["DROPOUT_TYPES", "Dropout", "StochasticModule", "mc_dropout", *MODULES]
