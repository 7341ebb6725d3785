"""The dropout engine (private): streams, the masked-scale op, dropout, modules.

- :mod:`droplab._core.stream`: ``(seed, offset)`` as torch tensors (uniforms,
  normals, keep masks); ``seed=None`` is resolved by :func:`droplab.rng.draw_seed`.
- :mod:`droplab._core.op`: :class:`StochasticOp`, the one declaration of every
  random op (its eager autograd Functions, its registered operator, its
  DTensor path); ``MASKED_SCALE``, ``t * mask * scale``, is the op of
  :func:`dropout` and of every variant that scales kept units.
- :mod:`droplab._core.module`: :class:`StochasticModule`, the base of every module
  that draws; :mod:`droplab._core.base`: :class:`DropoutBase`, its hyper-parameters
  checked once and one ``extra_repr`` rule, the base of the dropout modules.
- :mod:`droplab._core.dropout`: :func:`dropout` and :class:`Dropout`.
- :mod:`droplab._core.modes`: :func:`mc_dropout`, the training-flag rule of
  Monte-Carlo sampling (weight scaling, which knows foreign classes, is
  :mod:`droplab.interop.weight_scaling`).

Nothing here imports the public façades (``droplab``, ``droplab.functional``,
``droplab.nn``); they re-export from here.
"""
