"""droplab in models it did not build: :func:`convert` and :func:`intercept`.

A layer above the dropout family (it maps torch's dropout modules and
functions to droplab's) and below the applications (``mc_predict`` uses the
interception). See docs/compile.md for compiling the result.
"""

from droplab.interop.convert import ConversionPlan as ConversionPlan
from droplab.interop.convert import conversion_plan as conversion_plan
from droplab.interop.convert import convert as convert
from droplab.interop.convert import revert as revert
from droplab.interop.intercept import Interception as Interception
from droplab.interop.intercept import intercept as intercept
from droplab.interop.weight_scaling import weight_scaled as weight_scaled

__all__ = [
    "ConversionPlan",
    "Interception",
    "conversion_plan",
    "convert",
    "intercept",
    "revert",
    "weight_scaled",
]
