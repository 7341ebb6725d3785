"""Dropout and the dropout family as functions: ``droplab.functional``.

A façade (re-exports only, as ``torch.nn.functional`` is to users): the code
lives in :mod:`droplab._core.dropout` (:func:`dropout`) and in one file per
variant under :mod:`droplab.variants`, whose registry (``FUNCTIONS``) lists
every variant below; ``check_bool`` and ``check_floating_tensor`` are the
argument checks of :mod:`droplab._validation`, public here since 0.1.
Library code never imports this module.

- Paper: Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout:
  a simple way to prevent neural networks from overfitting", JMLR 15, 2014.
  https://jmlr.org/papers/v15/srivastava14a.html
"""

from droplab._core.dropout import dropout as dropout
from droplab._validation import check_bool as check_bool
from droplab._validation import check_floating_tensor as check_floating_tensor
from droplab.variants import FUNCTIONS
from droplab.variants import alpha_dropout as alpha_dropout
from droplab.variants import concrete_dropout as concrete_dropout
from droplab.variants import drop_block2d as drop_block2d
from droplab.variants import drop_connect_linear as drop_connect_linear
from droplab.variants import drop_path as drop_path
from droplab.variants import dropout1d as dropout1d
from droplab.variants import dropout2d as dropout2d
from droplab.variants import dropout3d as dropout3d
from droplab.variants import feature_alpha_dropout as feature_alpha_dropout
from droplab.variants import gaussian_dropout as gaussian_dropout
from droplab.variants import linear_drop_rates as linear_drop_rates
from droplab.variants import locked_dropout as locked_dropout
from droplab.variants import (
    shared_dims_from_noise_shape as shared_dims_from_noise_shape,
)

# The names of the variants come from their registry, droplab.variants.FUNCTIONS.
__all__ = ["check_bool", "check_floating_tensor", "dropout", *FUNCTIONS]
