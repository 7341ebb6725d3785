"""Channel dropout: Dropout1d, Dropout2d, Dropout3d, and Keras' ``noise_shape``.

- Paper: Tompson, Goroshin, Jain, LeCun and Bregler, "Efficient object
  localization using convolutional networks", CVPR 2015 (SpatialDropout).
  https://arxiv.org/abs/1411.4280

Adjacent pixels of a feature map are strongly correlated, so dropping single
pixels barely regularises a convolution; dropping whole channels does. Here a
channel dropout is :func:`droplab.functional.dropout` with the mask shared along
the spatial dimensions (``shared_dims``), so it keeps the (seed, offset)
contract and saves nothing for backward.

PyTorch's input rules are kept, including its two warnings for
:func:`dropout2d` and :func:`dropout3d` (3-d input to ``dropout2d`` is read as
``(N, C, L)``, as PyTorch does today). A wrong rank raises
:class:`droplab.InputRankError`, a ValueError (droplab's rule for bad values)
that is also the RuntimeError PyTorch raises.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from droplab._core.base import DropoutBase
from droplab._core.dropout import _dropout, check_arguments
from droplab._validation import check_floating_tensor, fail, fail_ndim

__all__ = [
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "shared_dims_from_noise_shape",
]

_SPATIAL = {"dropout1d": 1, "dropout2d": 2, "dropout3d": 3}


def shared_dims_from_noise_shape(
    noise_shape: Sequence[int | None], shape: Sequence[int]
) -> tuple[int, ...]:
    """Translate a Keras ``noise_shape`` into droplab's ``shared_dims``.

    Keras draws the mask in ``noise_shape`` and broadcasts it to the input, so a
    1 in ``noise_shape`` where the input is larger means "shared along this
    dimension". ``None`` (Keras' "as the input") or the input's size means an
    independent draw along it.

    Args:
        noise_shape: one entry per input dimension: 1, None or the input's size.
        shape: the input's shape.

    Returns:
        The sorted tuple of shared dimensions, for ``shared_dims=``.

    Examples:
        >>> shared_dims_from_noise_shape((None, 1, 16), (8, 20, 16))  # Keras SpatialDropout1D
        (1,)
    """
    owner = "shared_dims_from_noise_shape"
    try:
        entries = tuple(noise_shape)
    except TypeError:
        raise fail(
            "noise_shape",
            noise_shape,
            "a sequence of ints or None",
            owner=owner,
            kind=TypeError,
        ) from None
    shape = tuple(int(s) for s in shape)
    if len(entries) != len(shape):
        raise fail(
            "noise_shape",
            noise_shape,
            f"a sequence of {len(shape)} entries, one per input dimension of {shape}",
            owner=owner,
        )
    shared = []
    for d, (entry, size) in enumerate(zip(entries, shape, strict=True)):
        if entry is None or entry == size:
            continue
        if entry == 1:
            shared.append(d)
        else:
            raise fail(
                "noise_shape",
                noise_shape,
                f"1, None or the input's size in each entry (input shape {shape})",
                owner=owner,
            )
    return tuple(shared)


def _check_rank(ndim: int, name: str) -> None:
    """Refuse the ranks PyTorch refuses (before a module advances its stream)."""
    if name == "dropout1d" and ndim not in (2, 3):
        raise fail_ndim(
            ndim,
            "be a 2-d (C, L) or 3-d (N, C, L) tensor",
            owner="dropout1d",
            # torch's own phrase, which its tests and its users match on
            note=(
                f"Expected 2D or 3D input, but received a {ndim}D input: dropout1d "
                "drops whole channels of inputs with one spatial dimension."
            ),
        )
    if name == "dropout2d" and ndim < 2:
        raise fail_ndim(ndim, "have at least 2 dimensions (N, C, ...)", owner=name)
    if name == "dropout3d" and ndim < 1:  # unbatched, it gains a batch dim
        raise fail_ndim(ndim, "have at least 1 dimension (C, ...)", owner=name)


def _batched(x: torch.Tensor, name: str) -> bool:
    """Check the rank as PyTorch does; True if ``x`` already has a batch dim."""
    spatial = _SPATIAL[name]
    ndim = x.ndim
    _check_rank(ndim, name)
    if name == "dropout1d":
        return ndim == 3
    if ndim not in (spatial + 1, spatial + 2):
        warnings.warn(
            f"{name}: Received a {ndim}-D input to {name}, which is deprecated and "
            f"will result in an error in a future release. To retain the behavior "
            f"and silence this warning, please use dropout instead. Note that {name} "
            f"exists to provide channel-wise dropout on inputs with {spatial} spatial "
            f"dimensions, a channel dimension, and an optional batch dimension (i.e. "
            f"{spatial + 1}D or {spatial + 2}D inputs).",
            stacklevel=5,
        )
    if name == "dropout2d":
        if ndim == 3:
            warnings.warn(
                "dropout2d: Received a 3D input to dropout2d and assuming that "
                "channel-wise 1D dropout behavior is desired - input is interpreted "
                "as shape (N, C, L), where C is the channel dim. This behavior will "
                "change in a future release to interpret the input as one without a "
                "batch dimension, i.e. shape (C, H, W). To maintain the 1D "
                "channel-wise dropout behavior, please switch to using dropout1d "
                "instead.",
                stacklevel=5,
            )
        return True
    return ndim == spatial + 2


def _channel_dropout(
    name: str,
    x: Any,
    p: Any,
    training: Any,
    seed: Any,
    offset: Any,
    scale: Any,
    sampler: Any,
    inplace: Any,
) -> torch.Tensor:
    """The public door of :func:`dropout1d` / 2d / 3d: checks, then applies."""
    x = check_floating_tensor(x, owner=name)
    p, training, seed, offset, scale, sampler, inplace = check_arguments(
        name, p, training, seed, offset, scale, sampler, inplace
    )
    return _apply(name, x, p, training, seed, offset, scale, sampler, inplace)


def _apply(
    name: str,
    x: torch.Tensor,
    p: float,
    training: bool,
    seed: Any,
    offset: Any,
    scale: str,
    sampler: str,
    inplace: bool,
) -> torch.Tensor:
    """Channel dropout on checked arguments (the rank is checked here, as
    torch checks it, with its warnings)."""
    batched = _batched(x, name)
    work = x if batched else x.unsqueeze(0)  # a view: in-place writes reach x
    shared = tuple(range(2, work.ndim))
    out = _dropout(work, p, training, seed, offset, scale, sampler, shared, inplace)
    if inplace or out is work:  # in place, or evaluation with an identity rule
        return x
    return out if batched else out.squeeze(0)


def _doc(name: str, spatial: int) -> str:
    shapes = {
        1: "(N, C, L) or (C, L)",
        2: "(N, C, H, W) or (N, C, L)",
        3: "(N, C, D, H, W) or (C, D, H, W)",
    }[spatial]
    return f"""Zero whole channels with probability ``p`` ({spatial} spatial dim).

    Args:
        x: input of shape {shapes}.
        p: probability of dropping a *channel* (not the keep probability).
        training: drop if True; else the evaluation rule of ``scale``.
        seed, offset, scale, sampler, inplace: as :func:`droplab.functional.dropout`;
            the draw uses ``N * C`` stream elements (``C`` if unbatched). Rows of
            ``fixed``/``realized`` are samples: ``round(C(1-p))`` channels kept each.

    Returns:
        A tensor of ``x``'s shape and dtype.
    """


def dropout1d(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
    scale: str = "inverted",
    sampler: str = "bernoulli",
    inplace: bool = False,
) -> torch.Tensor:
    return _channel_dropout(
        "dropout1d", x, p, training, seed, offset, scale, sampler, inplace
    )


def dropout2d(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
    scale: str = "inverted",
    sampler: str = "bernoulli",
    inplace: bool = False,
) -> torch.Tensor:
    return _channel_dropout(
        "dropout2d", x, p, training, seed, offset, scale, sampler, inplace
    )


def dropout3d(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    offset: int = 0,
    scale: str = "inverted",
    sampler: str = "bernoulli",
    inplace: bool = False,
) -> torch.Tensor:
    return _channel_dropout(
        "dropout3d", x, p, training, seed, offset, scale, sampler, inplace
    )


dropout1d.__doc__ = _doc("dropout1d", 1)
dropout2d.__doc__ = (
    _doc("dropout2d", 2)
    + """
    Examples:
        >>> y = dropout2d(torch.ones(2, 3, 4, 4), 0.5, seed=0)
        >>> y.amax(dim=(2, 3)).tolist() == y.amin(dim=(2, 3)).tolist()  # whole channels
        True
    """
)
dropout3d.__doc__ = _doc("dropout3d", 3)


def channel_elements(shape: Sequence[int], name: str) -> int:
    """Stream elements a channel dropout ``name`` (``"dropout1d"``, ...) draws
    for an input of ``shape``: the channels of the batched view, ``N * C``, or
    ``C`` for an unbatched input (torch's rule for which is which).

    >>> channel_elements((8, 16, 5, 5), "dropout2d"), channel_elements((16, 5, 5), "dropout3d")
    (128, 16)
    """
    spatial = _SPATIAL[name]
    batched = len(shape) == spatial + 2 or (name == "dropout2d" and len(shape) >= 2)
    lead = shape[:2] if batched else shape[:1]
    return math.prod(lead)


class _ChannelDropout(DropoutBase):
    _name = "dropout1d"
    traceable = True  # draws only through dropout(): compiles into the graph
    repr_always = ("p", "inplace")
    repr_defaults = (("scale", "inverted"), ("sampler", "bernoulli"))

    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        *,
        seed: int | None = None,
        scale: str = "inverted",
        sampler: str = "bernoulli",
    ) -> None:
        super().__init__(seed=seed)
        self.p, self.inplace, self.scale, self.sampler = p, inplace, scale, sampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_floating_tensor(x, owner=type(self).__name__)
        _check_rank(x.ndim, self._name)  # a refused call draws nothing
        seed, offset = None, 0
        if self.training:
            seed, offset = self.next_stream(
                channel_elements(tuple(x.shape), self._name), x
            )
        return _apply(
            self._name,
            x,
            self.p,
            self.training,
            seed,
            offset,
            self.scale,
            self.sampler,
            self.inplace,
        )

    def mask_elements(self, x: torch.Tensor) -> int:
        """Stream elements a training call on ``x`` draws: one per (sample, channel)."""
        return channel_elements(tuple(x.shape), self._name)

    def replica_elements(self, x: torch.Tensor) -> int:
        """:meth:`mask_elements`: each (sample, channel) has its own element."""
        return self.mask_elements(x)


class Dropout1d(_ChannelDropout):
    """Module form of :func:`dropout1d`; a drop-in for ``torch.nn.Dropout1d``.

    Examples:
        >>> m = Dropout1d(0.5, seed=3)
        >>> y = m(torch.ones(4, 8, 10))
        >>> m.offset  # 4 x 8 channels drawn
        32
    """

    _name = "dropout1d"


class Dropout2d(_ChannelDropout):
    """Module form of :func:`dropout2d`; a drop-in for ``torch.nn.Dropout2d``."""

    _name = "dropout2d"


class Dropout3d(_ChannelDropout):
    """Module form of :func:`dropout3d`; a drop-in for ``torch.nn.Dropout3d``."""

    _name = "dropout3d"
