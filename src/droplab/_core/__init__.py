"""The dropout engine (private): streams, the masked-scale op, dropout, modules.

- :mod:`droplab._core.stream`: ``(seed, offset)`` as torch tensors (the
  ``seed=None`` draw, uniforms, normals, keep masks).
- :mod:`droplab._core.op`: the one autograd Function, ``t * mask * scale``, used
  by :func:`dropout` and by every variant that scales kept units.
- :mod:`droplab._core.module`: :class:`StochasticModule`, the base of every module
  that draws.
- :mod:`droplab._core.dropout`: :func:`dropout` and :class:`Dropout`.
- :mod:`droplab._core.modes`: model transforms (:func:`mc_dropout`,
  :func:`weight_scaled`) that ask each module rather than switch on classes.

Nothing here imports the public façades (``droplab``, ``droplab.functional``,
``droplab.nn``); they re-export from here.
"""
