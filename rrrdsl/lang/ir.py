"""The energy graph in one import: nodes (:mod:`~rrrdsl.lang.nodes`), the smart constructors
and walks (:mod:`~rrrdsl.lang.algebra`) and the leaf functions (:mod:`~rrrdsl.lang.functions`).

``from rrrdsl.lang.ir import Expr, Leaf, product, simplify, model, ...`` is how the rest of the
package reaches the graph.
"""

from .algebra import constant, leaves, mixture, number, power, product, simplify, view
from .functions import box, classifier, crop, gmm, model, oracle
from .nodes import (
    SIGNIFICANT_DIGITS,
    Expr,
    Leaf,
    Mixture,
    Power,
    Product,
    Region,
    Unit,
    Value,
    View,
    Weighted,
    canonical_float,
    postorder,
)

__all__ = [
    "SIGNIFICANT_DIGITS",
    "Expr",
    "Leaf",
    "Mixture",
    "Power",
    "Product",
    "Region",
    "Unit",
    "Value",
    "View",
    "Weighted",
    "box",
    "canonical_float",
    "classifier",
    "constant",
    "crop",
    "gmm",
    "leaves",
    "mixture",
    "model",
    "number",
    "oracle",
    "postorder",
    "power",
    "product",
    "simplify",
    "view",
]
