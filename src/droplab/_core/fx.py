"""droplab under ``torch.fx.symbolic_trace``: each op and module is one node.

Symbolic tracing runs ``forward`` on :class:`torch.fx.Proxy` objects, which
have no values: droplab's checks and its stream arithmetic (a mask's size is
``x.numel()``) cannot run on them. So a droplab function called on a proxy
records itself as one ``call_function`` node, and a droplab module as one
``call_module`` node (the way fx treats ``torch.nn``'s own modules). The
traced ``GraphModule`` then calls the same function, or the very module
object of the traced model, on real tensors: the same checks, the same
stream, the same masks. torchvision's ``create_feature_extractor`` traces
this way too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.fx import Proxy

from droplab._validation import fail

__all__ = ["Proxy", "as_module_node", "function_node", "traced_as_node"]

F = TypeVar("F", bound=Callable[..., Any])


def function_node(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """The ``call_function`` node of ``fn(*args, **kwargs)`` (``args[0]`` a proxy)."""
    tracer = args[0].tracer
    return tracer.create_proxy("call_function", fn, tuple(args), dict(kwargs))


def traced_as_node(fn: F) -> F:
    """``fn``, recorded as one node when its first argument is an fx proxy."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], Proxy):
            return function_node(wrapper, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def as_module_node(module: torch.nn.Module, args: Any, kwargs: Any) -> Any:
    """The ``call_module`` node of ``module(*args, **kwargs)`` (``args[0]`` a proxy)."""
    tracer = args[0].tracer
    path = tracer.path_of_module(module)
    if not path:  # the traced root itself: there is no module to call
        raise fail(
            "root",
            type(module).__name__,
            "a model that contains the droplab module (trace its parent, or "
            "call the functional form in a forward of your own)",
            owner="torch.fx.symbolic_trace",
            kind=TypeError,
        )
    return tracer.create_proxy("call_module", path, tuple(args), dict(kwargs))
