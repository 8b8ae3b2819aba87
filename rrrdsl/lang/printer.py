"""Canonical text and Graphviz dot for energy graphs.

``to_text`` emits the one canonical spelling of a graph; ``parse_expr(to_text(g)) == g`` for
every graph (the printer inserts only the parentheses that precedence needs).
"""

from __future__ import annotations

import json
import math
from typing import Optional

from .ir import Expr, Leaf, Mixture, Power, Product, Region, Unit, View, Weighted

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


def _text(expr: Expr) -> tuple[str, int]:
    """Text of ``expr`` and its binding strength."""
    if isinstance(expr, Weighted):
        if isinstance(expr.term, Unit):
            return format_number(expr.weight), _ATOM
        if isinstance(expr.term, Mixture):
            raw = [expr.weight * w for w in expr.term.weights]
            if all(abs(r - 1.0) < 1e-12 for r in raw):
                return " + ".join(_wrap(t, _PRODUCT) for t in expr.term.terms), _MIXTURE
        return f"{format_number(expr.weight)} * {_wrap(expr.term, _PRODUCT)}", _PRODUCT
    if isinstance(expr, Unit):
        return "1", _ATOM
    if isinstance(expr, Leaf):
        return _leaf(expr), _ATOM
    if isinstance(expr, View):
        return f"crop({to_text(expr.term)}, {format_region(expr.region)})", _ATOM
    if isinstance(expr, Power):
        return f"{_wrap(expr.term, _ATOM)} ** {format_number(expr.exponent)}", _POWER
    if isinstance(expr, Product):
        # factors in graph order (order is part of the graph); a negative power after the
        # first factor reads as a quotient
        text = _wrap(expr.terms[0], _PRODUCT + 1)
        for t in expr.terms[1:]:
            if isinstance(t, Power) and t.exponent < 0:
                inverse: Expr = t.term if t.exponent == -1 else Power(t.term, -t.exponent)
                text += " / " + _wrap(inverse, _PRODUCT + 1)
            else:
                text += " * " + _wrap(t, _PRODUCT + 1)
        return text, _PRODUCT
    if isinstance(expr, Mixture):
        return " + ".join(f"{format_number(w)} * {_wrap(t, _PRODUCT)}" for t, w in zip(expr.terms, expr.weights)), _MIXTURE
    raise TypeError(f"not a graph node: {expr!r}")


def _wrap(expr: Expr, strength: int) -> str:
    text, own = _text(expr)
    return text if own >= strength else f"({text})"


def to_text(expr: Expr) -> str:
    """Canonical source text of ``expr``."""
    return _text(expr)[0]


def to_dot(expr: Expr, name: Optional[str] = None) -> str:
    """Graphviz ``dot`` text: one node per distinct subgraph (shared leaves appear once)."""
    ids: dict[Expr, str] = {}
    lines = [f"digraph {json.dumps(name or 'energy')} {{", "  rankdir=BT;", '  node [fontname="Helvetica"];']

    def node_id(e: Expr) -> str:
        key = e.base
        if key in ids:
            return ids[key]
        nid = f"n{len(ids)}"
        ids[key] = nid
        if isinstance(key, Leaf):
            lines.append(f"  {nid} [shape=box, label={json.dumps(_leaf(key))}];")
        elif isinstance(key, Product):
            lines.append(f'  {nid} [shape=circle, label="×"];')
            for t in key.terms:
                lines.append(f"  {node_id(t)} -> {nid};")
        elif isinstance(key, Power):
            lines.append(f"  {nid} [shape=circle, label={json.dumps('^ ' + format_number(key.exponent))}];")
            lines.append(f"  {node_id(key.term)} -> {nid};")
        elif isinstance(key, Mixture):
            lines.append(f'  {nid} [shape=circle, label="+"];')
            for t, w in zip(key.terms, key.weights):
                lines.append(f"  {node_id(t)} -> {nid} [label={json.dumps(format_number(w))}];")
        elif isinstance(key, View):
            lines.append(f"  {nid} [shape=hexagon, label={json.dumps('crop ' + format_region(key.region))}];")
            lines.append(f"  {node_id(key.term)} -> {nid};")
        elif isinstance(key, Unit):
            lines.append(f'  {nid} [shape=plaintext, label="1"];')
        return nid

    node_id(expr)
    lines.append("}")
    return "\n".join(lines) + "\n"
