"""The energy graph walks itself: children, postorder, and graphs too big or deep to recurse."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from rrrdsl.lang import grammar
from rrrdsl.lang.ir import Leaf, Mixture, Power, Product, Unit, View, Weighted, constant, crop, leaves, oracle, postorder, simplify
from rrrdsl.lang.lower import reserved
from rrrdsl.lang.parse import parse_expr
from rrrdsl.lang.algebra import product
from rrrdsl.lang.printer import SVG_NODES, to_dot, to_text

a, b, c = oracle("a"), oracle("b"), oracle("c")


def test_every_node_exposes_its_children() -> None:
    assert a.children == () and Unit().children == ()
    product = a * b**2 / c
    assert isinstance(product, Product) and product.children == product.terms == (a, b**2, c**-1)
    assert isinstance(b**2, Power) and (b**2).children == (b,)
    mixture = (0.3 * a + 0.7 * b).base
    assert isinstance(mixture, Mixture) and mixture.children == (a, b)
    view = crop(a, dims=(0, 1))
    assert isinstance(view, View) and view.children == (a,)
    weighted = 2 * a
    assert isinstance(weighted, Weighted) and weighted.children == (a,)
    assert constant(3).children == (Unit(),)


def test_postorder_yields_children_first_and_shared_nodes_once() -> None:
    shared = a * b
    g = (shared + c) ** 0.5 * crop(shared, dims=(0, 1))
    order = list(postorder(g))
    position = {id(node): i for i, node in enumerate(order)}
    assert order[-1] is g and len(position) == len(order)  # each distinct node once
    assert all(position[id(child)] < position[id(node)] for node in order for child in node.children)
    assert [n for n in order if isinstance(n, Leaf)] == [a, b, c]
    assert leaves(g) == [a, b, c]


def test_hash_and_equality_are_structural() -> None:
    assert hash(a * b) == hash(oracle("a") * oracle("b")) and a * b == oracle("a") * oracle("b")
    assert a * b != b * a and a**2 != a**3 and (a + b) != (0.3 * a + 0.7 * b)
    assert 2 * a == a and hash(2 * a) == hash(a)


def test_a_product_of_10000_distinct_leaves_parses_prints_and_simplifies() -> None:
    text = " * ".join(f"gmm(means=[[{i}.0, 0.0]], std=1.0)" for i in range(10_000))
    g = parse_expr(text)
    assert isinstance(g, Product) and len(g.children) == 10_000
    assert len(leaves(g)) == 10_000 and simplify(g) == g
    printed = to_text(g)
    assert printed.count("gmm(") == 10_000 and parse_expr(printed) == g
    assert to_dot(g).count("shape=box") == 10_000


def test_a_depth_500_nesting_prints_and_parses_back() -> None:
    g = a
    for i in range(500):  # alternating mixtures and powers: 1,000 levels
        g = (g + oracle(f"b{i}")) ** 0.5
    text = to_text(g)
    assert text.count("(") >= 500
    assert parse_expr(text) == g
    assert simplify(g) == g and len(leaves(g)) == 501
    assert to_dot(g).startswith("digraph")


def test_keywords_are_read_from_the_grammar() -> None:
    words = dict(re.findall(r'^([A-Z]+): "([a-z]+)"$', grammar.grammar_text(), flags=re.M))
    assert grammar.keywords() == words == {
        "SAMPLE": "sample", "USING": "using", "PLOT": "plot", "SHOW": "show", "LOAD": "load", "AS": "as", "TRUE": "true", "FALSE": "false"
    }
    assert grammar.statement_keywords() == ("load", "plot", "sample", "show")
    assert reserved() >= set(words.values()) | {"model", "oracle", "gmm", "box", "classifier", "crop"}
    head = grammar.statement_head()
    assert head.match("p = 1") and head.match("sample p") and not head.match("samples") and not head.match("p ** 2")
    assert grammar.assign_head().match("  p2 = 1").group(1) == "p2"


def test_jupyter_draws_a_graph_with_graphviz_when_dot_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ``dot`` on the PATH records its input and answers an SVG; none: no drawing."""
    g = oracle("ring") * oracle("bar") ** 2
    monkeypatch.setenv("PATH", str(tmp_path))
    assert g._repr_svg_() is None
    dot = tmp_path / "dot"
    dot.write_text(f'#!/bin/sh\ntest "$1" = -Tsvg && cat > {tmp_path}/input.dot && echo "<svg/>"\n')
    dot.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.defpath}")  # the stand-in first, then cat
    assert g._repr_svg_() == "<svg/>\n"
    assert (tmp_path / "input.dot").read_text() == to_dot(g)
    big = product(*(oracle("ring") ** (k + 2) * crop(oracle("bar"), dims=(k, k + 2)) for k in range(SVG_NODES)))
    assert big._repr_svg_() is None  # too large to lay out
    dot.write_text("#!/bin/sh\nexit 1\n")
    assert g._repr_svg_() is None  # dot failed
