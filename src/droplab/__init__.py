"""droplab: dropout that is reproducible on every backend, and a lab that explains it.

The same ``(seed, offset)`` gives the same mask in NumPy, in the PyTorch CPU path
and in the GPU kernel. See docs/DESIGN.md for the contracts and the layers.
"""

from droplab._core.dropout import Dropout as Dropout
from droplab._core.dropout import dropout as dropout
from droplab._core.modes import mc_dropout as mc_dropout
from droplab._core.modes import weight_scaled as weight_scaled
from droplab._core.module import StochasticModule as StochasticModule
from droplab._validation import InputDtypeError as InputDtypeError
from droplab._validation import InputRankError as InputRankError
from droplab.interop import conversion_plan as conversion_plan
from droplab.interop import convert as convert
from droplab.interop import intercept as intercept
from droplab.interop import revert as revert
from droplab.masks import bernoulli_mask as bernoulli_mask
from droplab.masks import fixed_count_mask as fixed_count_mask
from droplab.masks import keep_threshold as keep_threshold
from droplab.rng import philox4x32 as philox4x32
from droplab.rng import random_words as random_words
from droplab.uncertainty.mc import mc_predict as mc_predict

__version__ = "0.1.0"

__all__ = [
    "Dropout",
    "InputDtypeError",
    "InputRankError",
    "StochasticModule",
    "__version__",
    "bernoulli_mask",
    "conversion_plan",
    "convert",
    "dropout",
    "fixed_count_mask",
    "intercept",
    "keep_threshold",
    "mc_dropout",
    "mc_predict",
    "philox4x32",
    "random_words",
    "revert",
    "weight_scaled",
]
