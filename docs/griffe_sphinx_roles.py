"""A griffe extension for the API reference: Sphinx roles become inline code.

droplab's docstrings name other objects with Sphinx roles (``:class:`Dropout```,
``:func:`droplab.uncertainty.uci.protocol.run_splits```), which Markdown would show verbatim. This
turns each into inline code with the object's name (``~`` keeps the last part).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    name = match[2].split(".")[-1] if match[1] else match[2]
    return f"`{name}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the roles in every docstring as griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_plain, obj.docstring.value)
