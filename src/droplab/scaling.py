"""What happens to the kept units: the four scaling rules, in one place.

| name        | during training                      | at evaluation              |
| ----------- | ------------------------------------ | -------------------------- |
| ``inverted``| kept units x 1/(1-p) (the default)   | identity                   |
| ``classic`` | kept units x 1 (Srivastava 2014)     | outputs x (1-p)            |
| ``realized``| kept units x n/k, k kept in the row  | identity                   |
| ``none``    | kept units x 1 (analysis only)       | identity                   |

``inverted`` keeps the *expected* output equal to the input; ``realized``
compensates for the number of units actually kept in each row (the forum's
"more precise divisor"); ``classic`` moves the compensation to test time, which
equals multiplying the next layer's weights by (1-p). With ``p = 1`` every unit
is dropped and every rule gives zeros (scale 0, never a division by zero).

Rows are defined in :mod:`droplab.masks`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from droplab._validation import check_choice, check_probability

__all__ = [
    "SCALES",
    "compute_dtype",
    "eval_scale",
    "realized_row_scale",
    "train_scale",
]

SCALES = ("inverted", "classic", "realized", "none")


def train_scale(p: float, scale: str) -> float:
    """The factor applied to kept units during training, for the per-element rules.

    ``realized`` has no single factor (it depends on each row's count), so it
    returns ``nan`` here; use :func:`realized_row_scale`.

    >>> train_scale(0.5, "inverted"), train_scale(0.5, "classic"), train_scale(1.0, "inverted")
    (2.0, 1.0, 0.0)
    """
    p = check_probability(p, owner="train_scale")
    scale = check_choice(scale, "scale", SCALES, owner="train_scale")
    if scale == "inverted":
        return 0.0 if p == 1.0 else 1.0 / (1.0 - p)  # p = 1: everything dropped
    if scale == "realized":
        return float("nan")
    return 1.0


def eval_scale(p: float, scale: str) -> float:
    """The factor applied to every unit at evaluation: ``1 - p`` for ``classic``, else 1.

    >>> eval_scale(0.2, "classic"), eval_scale(0.2, "inverted")
    (0.8, 1.0)
    """
    p = check_probability(p, owner="eval_scale")
    scale = check_choice(scale, "scale", SCALES, owner="eval_scale")
    return 1.0 - p if scale == "classic" else 1.0


def realized_row_scale(kept: npt.ArrayLike, n: int) -> npt.NDArray[np.float64]:
    """``n / k`` for each row that kept ``k > 0`` of its ``n`` units, 0 where ``k = 0``.

    >>> realized_row_scale([2, 4, 0], 4)
    array([2., 1., 0.])
    """
    k = np.asarray(kept, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(k > 0, n / np.where(k > 0, k, 1.0), 0.0)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a scale is applied in: float64 for float64, float32 otherwise.

    The one numerics rule every path shares (kernels, the reference, the
    variants' noise): factors and noise are rounded to this dtype, the product
    is computed in it, and the result is rounded back to the input's dtype.

    >>> compute_dtype(torch.float16), compute_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.float64 if dtype == torch.float64 else torch.float32
