"""Canonical text, Graphviz dot and (through Graphviz) SVG for energy graphs.

``to_text`` emits the one canonical spelling of a graph; ``parse_expr(to_text(g)) == g`` for
every graph (the printer inserts only the parentheses that precedence needs).
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
from typing import TYPE_CHECKING, Mapping, Optional

from .nodes import Expr, Leaf, Mixture, Power, Product, Region, Unit, View, Weighted, postorder

if TYPE_CHECKING:
    from .program import Load

# binding strength, loosest first
_MIXTURE, _PRODUCT, _UNARY, _POWER, _ATOM = range(5)

_PARAM_ORDER = {"gmm": ("means", "std", "weights"), "box": ("low", "high")}


def format_number(value: float) -> str:
    """Shortest text that parses back to the same float; integral values without ``.0``."""
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


def format_value(value: object) -> str:
    """A leaf parameter value as source text."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return format_number(value)  # type: ignore[arg-type]


def format_region(region: Region) -> str:
    parts = []
    for axis in ("rows", "cols", "dims"):
        r = getattr(region, axis)
        if r is not None:
            parts.append(f"{axis}={r[0]}:{r[1]}")
    return ", ".join(parts)


def _leaf(leaf: Leaf) -> str:
    args = [json.dumps(leaf.name, ensure_ascii=False)] if leaf.name is not None else []
    params = dict(leaf.params)
    order = [k for k in _PARAM_ORDER.get(leaf.kind, ()) if k in params]
    order += sorted(k for k in params if k not in order)
    args += [f"{k}={format_value(params[k])}" for k in order]
    return f"{leaf.kind}({', '.join(args)})"


#: a node's text and its binding strength
Spelled = tuple[str, int]


def _spell(node: Expr, done: Mapping[int, Spelled]) -> Spelled:
    """Text of ``node`` and its binding strength, from its children's (in ``done``, by id)."""

    def wrap(child: Expr, strength: int) -> str:
        text, own = done[id(child)]
        return text if own >= strength else f"({text})"

    match node:
        case Weighted(term=Unit()):
            return format_number(node.weight), _ATOM
        case Weighted(term=Mixture(terms=terms, weights=weights)) if all(
            abs(node.weight * w - 1.0) < 1e-12 for w in weights
        ):
            return " + ".join(wrap(t, _PRODUCT) for t in terms), _MIXTURE
        case Weighted(term=term):
            return f"{format_number(node.weight)} * {wrap(term, _PRODUCT)}", _PRODUCT
        case Unit():
            return "1", _ATOM
        case Leaf():
            return _leaf(node), _ATOM
        case View(term=term, region=region):
            return f"crop({done[id(term)][0]}, {format_region(region)})", _ATOM
        case Power(term=term, exponent=exponent):
            return f"{wrap(term, _ATOM)} ** {format_number(exponent)}", _POWER
        case Product(terms=terms):
            # factors in graph order (order is part of the graph); a negative power after the
            # first factor reads as a quotient
            parts = [wrap(terms[0], _PRODUCT + 1)]
            for t in terms[1:]:
                match t:
                    case Power(term=base, exponent=-1.0):
                        parts.append(" / " + wrap(base, _PRODUCT + 1))
                    case Power(term=base, exponent=exponent) if exponent < 0:
                        parts.append(f" / {wrap(base, _ATOM)} ** {format_number(-exponent)}")
                    case _:
                        parts.append(" * " + wrap(t, _PRODUCT + 1))
            return "".join(parts), _PRODUCT
        case Mixture(terms=terms, weights=weights):
            return " + ".join(f"{format_number(w)} * {wrap(t, _PRODUCT)}" for t, w in zip(terms, weights)), _MIXTURE
    raise TypeError(f"not a graph node: {node!r}")


def to_text(expr: Expr) -> str:
    """Canonical source text of ``expr`` (children spelled first, each distinct node once)."""
    done: dict[int, Spelled] = {}
    for node in postorder(expr):
        done[id(node)] = _spell(node, done)
    return done[id(expr)][0]


def load_text(statement: "Load") -> str:
    """A ``load`` statement as canonical text, ``load "sd15" as "sd" levels=50``, options in their
    order; it parses back to an equal statement (property-tested)."""
    options = "".join(f" {key}={format_value(value)}" for key, value in statement.options)
    return f"load {format_value(statement.path)} as {format_value(statement.name)}{options}"


def _shape(node: Expr) -> str:
    """The dot attributes of one node."""
    match node:
        case Leaf():
            return f"shape=box, label={json.dumps(_leaf(node))}"
        case Product():
            return 'shape=circle, label="×"'
        case Power(exponent=exponent):
            return f"shape=circle, label={json.dumps('^ ' + format_number(exponent))}"
        case Mixture():
            return 'shape=circle, label="+"'
        case View(region=region):
            return f"shape=hexagon, label={json.dumps('crop ' + format_region(region))}"
        case Unit():
            return 'shape=plaintext, label="1"'
    raise TypeError(f"not a graph node: {node!r}")


def _edge_label(node: Expr, index: int) -> str:
    """The label of the edge from the ``index``-th child of ``node``: a mixture's weight."""
    match node:
        case Mixture(weights=weights):
            return f" [label={json.dumps(format_number(weights[index]))}]"
    return ""


def to_dot(expr: Expr, name: Optional[str] = None) -> str:
    """Graphviz ``dot`` text: one node per distinct subgraph (shared leaves appear once).

    Depth-first without recursion: a node is declared when first reached, and the edge to its
    parent follows its own sub-graph.
    """
    ids: dict[Expr, str] = {}
    lines = [f"digraph {json.dumps(name or 'energy')} {{", "  rankdir=BT;", '  node [fontname="Helvetica"];']

    def declare(node: Expr) -> str:
        ids[node] = f"n{len(ids)}"
        lines.append(f"  {ids[node]} [{_shape(node)}];")
        return ids[node]

    root = expr.base
    # frames: (node, its id, next child, the edge line to emit once its sub-graph is done)
    stack: list[tuple[Expr, str, int, str]] = [(root, declare(root), 0, "")]
    while stack:
        node, nid, index, edge = stack.pop()
        if index == len(node.children):
            if edge:
                lines.append(edge)
            continue
        stack.append((node, nid, index + 1, edge))
        child = node.children[index].base
        line = f"{nid}{_edge_label(node, index)};"
        if child in ids:
            lines.append(f"  {ids[child]} -> {line}")
        else:
            cid = declare(child)
            stack.append((child, cid, 0, f"  {cid} -> {line}"))
    lines.append("}")
    return "\n".join(lines) + "\n"


#: graphs with more distinct nodes than this are not drawn (Graphviz's layout time grows fast)
SVG_NODES = 200


def to_svg(expr: Expr, timeout: float = 10.0) -> Optional[str]:
    """An SVG drawing of the graph, laid out by Graphviz's ``dot`` (Jupyter shows it).

    None, so that the canonical text is shown instead, when ``dot`` is not on the ``PATH``,
    fails or takes longer than ``timeout`` seconds, or the graph has more than
    :data:`SVG_NODES` distinct nodes.
    """
    dot = shutil.which("dot")
    if dot is None or len(list(itertools.islice(postorder(expr), SVG_NODES + 1))) > SVG_NODES:
        return None
    try:
        done = subprocess.run([dot, "-Tsvg"], input=to_dot(expr), capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout
